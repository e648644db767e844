"""Issue 17, the fifty-first adversarial run (on b9c3f16): nothing promoted, no key, no text lost.
Its one finding (case 2): a version's files pointed by the store at a file, at nothing, or at a
malformed ``label_map.json`` crashed the key holder's ``evaluate``, ``serve`` and ``score`` with a
raw traceback instead of a one-line refusal."""

from __future__ import annotations

import shutil
import sqlite3

import pytest
from test_adversarial import (  # noqa: F401
    LENIENT,
    _fresh,
    _gate,
    _one_error_line,
    _quantgate,
    _stored_root,
    _yaml,
    trivial,
)
from test_adversarial_fortyninth_run import _database


def _repoint(model: str, version: str, where: str) -> None:
    """The writer's raw SQL: the version's files are at ``where`` (its own row only: the logged
    model behind it is shared with other tests' versions)."""
    from mlflow import MlflowClient

    MlflowClient().delete_model_version_tag(model, version, "parent_version")  # evaluate reads no parent
    with sqlite3.connect(_database()) as db:
        db.execute(
            "UPDATE model_versions SET storage_location = ?, source = ? WHERE name = ? AND version = ?",
            (where, where, model, version),
        )


@pytest.mark.parametrize("where", ["a file", "nothing"])
def test_case_2_files_stored_at_a_file_or_at_nothing_are_one_line(trivial, tmp_path, where):  # noqa: F811
    model = f"adv51-root-{where.split()[-1]}"
    good = _fresh(model, trivial)
    assert _gate(model, good, _yaml(tmp_path, LENIENT), "staging").exit_code == 0
    target = tmp_path / "hostname"
    if where == "a file":
        target.write_text("host\n")
    _repoint(model, good, str(target))
    for args in (
        ("evaluate", "--version", good, "--model-name", model, "--dataset", "news9"),
        ("serve", "--model", f"models:/{model}@staging", "--port", "18999"),
    ):
        line = _one_error_line(_quantgate(*args))
        assert "cannot be opened" in line or "Not a directory" in line or "No such file" in line, line


@pytest.mark.parametrize("label_map", ["not json", "[]", '{"0": ["a"], "1": ["b"]}'])
def test_case_2_a_malformed_label_map_is_one_line(trivial, tmp_path, label_map):  # noqa: F811
    model = "adv51-label-map"
    good = _fresh(model, trivial)
    copy = tmp_path / "theirs"
    shutil.copytree(_stored_root(model, good), copy)
    (copy / "artifacts").mkdir(exist_ok=True)
    (copy / "artifacts" / "label_map.json").write_text(label_map)
    _repoint(model, good, str(copy))
    line = _one_error_line(_quantgate("evaluate", "--version", good, "--model-name", model, "--dataset", "news9"))
    assert "has no readable label map" in line, line
