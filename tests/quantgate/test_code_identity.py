"""The code identity behind step reuse and recipe_sha256 follows what code does, not where it
lives: moving a function, renaming a module, reformatting or editing a docstring keep it;
changing a function's body, a constant or an imported helper change it."""

from __future__ import annotations

import sys
import textwrap

import pytest

from quantgate.code_identity import closure, code_identity


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A tiny project package `qgtoy` on sys.path; write(name, source) (re)writes a module."""
    root = tmp_path / "qgtoy"
    root.mkdir()
    (root / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, source: str) -> None:
        (root / f"{name}.py").write_text(textwrap.dedent(source))
        for mod in [m for m in sys.modules if m.startswith("qgtoy")]:
            del sys.modules[mod]

    return write


STEP = '''
    """The step."""
    from qgtoy.helpers import scale

    def run(x):
        """Doubles, then scales."""
        return scale(x * 2)
'''
HELPERS = """
    FACTOR = 3

    def scale(x):
        return x * FACTOR  # by the factor
"""


def test_moves_renames_and_formatting_keep_the_identity(project):
    project("step", STEP)
    project("helpers", HELPERS)
    before = code_identity("qgtoy.step")
    assert set(closure("qgtoy.step")) == {"qgtoy.step", "qgtoy.helpers"}
    # the helper moves to another module, reformatted, with new comments and docstrings
    project("helpers", "")
    project("maths", 'FACTOR = 3\n\n\ndef scale(x):\n    """Scaled."""\n    return (\n        x * FACTOR\n    )\n')
    project("step", STEP.replace("qgtoy.helpers", "qgtoy.maths").replace("Doubles, then scales.", "x2, scaled"))
    assert code_identity("qgtoy.step") == before


@pytest.mark.parametrize(
    "module, old, new",
    [
        ("step", "x * 2", "x * 4"),  # the step's own code
        ("helpers", "FACTOR = 3", "FACTOR = 4"),  # a constant it reads through an import
        ("helpers", "return x * FACTOR", "return x + FACTOR"),  # an imported helper's body
    ],
)
def test_changing_what_the_code_does_changes_the_identity(project, module, old, new):
    project("step", STEP)
    project("helpers", HELPERS)
    before = code_identity("qgtoy.step")
    project(module, (STEP if module == "step" else HELPERS).replace(old, new))
    assert code_identity("qgtoy.step") != before
