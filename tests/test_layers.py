"""The layers, read from the code's own import statements: steps -> gate/evaluators -> library.

Nothing in the library (quantgate/) imports a step, the gate or the evaluator; the gate and the
evaluator never import a step; the evaluator never imports the gate; no import cycle joins two
top-level folders. Backends build files and touch neither MLflow nor click; the serving pyfunc
imports nothing from quantgate (it is copied into every model), but for the TensorRT loader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

PACKAGES = ("quantgate", "flows", "registry_hooks", "evaluators")
# what each top-level folder may import from the others
ALLOWED = {
    "quantgate": set(),
    "evaluators": {"quantgate"},
    "registry_hooks": {"quantgate", "evaluators"},
    "flows": {"quantgate", "evaluators", "registry_hooks"},
}


def imports(path: Path) -> list[str]:
    """Every module an import statement in the file names (top level and inside functions)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_down_the_layers(package):
    wrong = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in sources(package)
        for name in imports(path)
        if name.split(".")[0] in PACKAGES
        and name.split(".")[0] != package
        and name.split(".")[0] not in ALLOWED[package]
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_top_level_folders():
    edges = {p: {n.split(".")[0] for f in sources(p) for n in imports(f)} & set(PACKAGES) - {p} for p in PACKAGES}

    def reaches(start: str, goal: str, seen: frozenset = frozenset()) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in edges[start])

    assert not [p for p in PACKAGES if reaches(p, p)]


def test_backends_build_files_and_touch_neither_mlflow_nor_click():
    for path in sources("quantgate/backends"):
        touched = [n for n in imports(path) if n.split(".")[0] in ("mlflow", "click", "flows", "registry_hooks")]
        assert not touched, f"{path.name} imports {touched}"


def test_the_serving_pyfunc_imports_nothing_from_quantgate_but_the_tensorrt_runtime():
    names = imports(REPO / "quantgate/serving_model.py")
    assert [n for n in names if n.split(".")[0] in PACKAGES] == ["quantgate"]  # `from quantgate import trt_runtime`
    tree = ast.parse((REPO / "quantgate/serving_model.py").read_text(encoding="utf-8"))
    lazy = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "quantgate"]
    assert [a.name for n in lazy for a in n.names] == ["trt_runtime"]
    assert all(n not in tree.body for n in lazy)  # inside the TensorRT loader, not at import time


SCRIPTS = ("benchmarks", "deploy")  # run by hand, not by the tests: a moved name breaks them silently


@pytest.mark.parametrize("path", [p for folder in SCRIPTS for p in sorted((REPO / folder).rglob("*.py"))], ids=str)
def test_scripts_import_names_the_project_still_has(path):
    """Every ``from <project module> import name`` in the benchmarks and deploy scripts, lazy
    imports included, names something that module has (the layout moved once already)."""
    import importlib

    missing = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            module = importlib.import_module(node.module)
            missing += [f"{node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)]
    assert not missing, f"{path.relative_to(REPO)} imports names that no longer exist: {missing}"
