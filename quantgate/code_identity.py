"""What code a step or a build runs, as one digest that survives moves and reformatting.

``code_identity("flows.train")`` hashes the definitions of a module and of every quantgate module
it imports, transitively (read from the import statements; nothing is executed). Each top-level
statement is reduced to its syntax tree with docstrings, comments, import lines and positions
left out, and the digest is taken over those trees sorted by name, not by file. So:

* editing what a function does, a constant, or a class changes the digest: `main` runs the
  step again and a quantise step builds again;
* moving a function to another module, renaming a file, reformatting, or editing a docstring
  or a comment does not: finished steps and built versions are reused.

One digest serves both reuse checks: `main`'s step reuse (``quantgate.inputs_digest``) and the
quantise steps' ``recipe_sha256``.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

PROJECT_PACKAGES = ("quantgate", "flows", "evaluators", "registry_hooks")


def _source_file(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _imports(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]  # `from quantgate import data`
    return names


class _Strip(ast.NodeTransformer):
    """Drops docstrings and import statements: neither changes what the code computes."""

    def generic_visit(self, node):
        super().generic_visit(node)
        body = getattr(node, "body", None)
        if isinstance(body, list):
            body[:] = [
                s
                for s in body
                if not isinstance(s, (ast.Import, ast.ImportFrom))
                and not (
                    isinstance(s, ast.Expr)
                    and isinstance(getattr(s, "value", None), ast.Constant)
                    and isinstance(s.value.value, str)
                )
            ]
            if not body and not isinstance(node, ast.Module):
                body.append(ast.Pass())
        return node


def _statement_name(node: ast.stmt) -> str:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name
    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id
    return ""


@lru_cache(maxsize=None)
def _definitions(path: Path, mtime: float) -> tuple[tuple[str, str], ...]:
    tree = _Strip().visit(ast.parse(path.read_text(encoding="utf-8")))
    return tuple((_statement_name(s), ast.dump(s, annotate_fields=False)) for s in tree.body)


def closure(module: str) -> dict[str, Path]:
    """``module`` and every project module it imports, transitively: name -> source file."""
    roots = {*PROJECT_PACKAGES, module.split(".")[0]}
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or name.split(".")[0] not in roots:
            continue
        path = _source_file(name)
        if path is None:
            continue
        seen[name] = path
        todo += _imports(ast.parse(path.read_text(encoding="utf-8")))
    return seen


def code_identity(module: str) -> str:
    """SHA-256 of the definitions ``module`` runs (see the module docstring)."""
    parts = sorted({d for path in set(closure(module).values()) for d in _definitions(path, path.stat().st_mtime)})
    h = hashlib.sha256()
    for name, dump in parts:
        h.update(name.encode())
        h.update(b"\0")
        h.update(dump.encode())
        h.update(b"\n")
    return h.hexdigest()
