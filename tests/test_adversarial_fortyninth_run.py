"""Issue 17, the forty-ninth adversarial run (on 6692292). Case 1: a version number made text in
the database crashed the gate. Cases 2 and 3: a stored ``MLmodel`` naming an artifact outside the
model had the gate hash the key holder's folder (the key file included) and list its files in
its reasons, or read ``/proc/self/pagemap`` for good. Case 5: ``quantgate hooks --help`` printed a
``python -c`` without ``-P`` (run 42's planted ``secrets.py`` chose the secret it printed). Case 4
(a UNIX socket planted among a version's files after the gate's check) is covered where the fix
lives: ``tests/quantgate/test_artifact_download.py`` and the gate's post-move re-check."""

from __future__ import annotations

import os
import re
import sqlite3
from urllib.parse import unquote, urlparse

import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient
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

from flows.cli import cli


def _database() -> str:
    return unquote(urlparse(os.environ["MLFLOW_TRACKING_URI"]).path)[1:]


def test_case_1_a_version_number_made_text_does_not_crash_the_gate(trivial, tmp_path):  # noqa: F811
    model = "adv49-text-version"
    good = _fresh(model, trivial)
    theirs = _fresh(model, trivial, latency_p95_ms=1.0)
    with sqlite3.connect(_database()) as db:
        db.execute("PRAGMA foreign_keys=OFF")
        for table in ("model_version_tags", "model_versions"):
            db.execute(f"UPDATE {table} SET version = 'x' WHERE name = ? AND version = ?", (model, theirs))
    thresholds = _yaml(tmp_path, LENIENT)
    for args in (
        ("promote", "--version", good, "--model-name", model, "--thresholds", thresholds, "--alias", "staging"),
        ("promote", "--candidates", "--model-name", model, "--thresholds", thresholds, "--alias", "staging"),
    ):
        # MLflow itself cannot read the model back, nor write a tag of any of its versions: the
        # gate records nothing and says so in one line
        line = _one_error_line(_quantgate(*args))
        assert f"the registry cannot read registered model '{model}' back" in line
    with sqlite3.connect(_database()) as db:
        aliases = db.execute("SELECT alias FROM registered_model_aliases WHERE name = ?", (model,)).fetchall()
    assert aliases == []


@pytest.mark.parametrize("where", ["folder", "/proc/self/pagemap"])
def test_case_2_3_an_artifact_named_outside_the_model_is_never_read(trivial, tmp_path, where):  # noqa: F811
    holders = tmp_path / "keyholder"
    holders.mkdir()
    (holders / "evidence.key").write_text("k" * 64)
    model = f"adv49-outside-{'folder' if where == 'folder' else 'proc'}"
    version = _fresh(model, trivial)
    stored = _stored_root(model, version) / "MLmodel"
    original = stored.read_text()
    conf = yaml.safe_load(original)
    target = str(holders) if where == "folder" else where
    conf["flavors"]["python_function"]["artifacts"]["tokenizer"] = {"path": target, "uri": target}
    stored.write_text(yaml.safe_dump(conf))
    try:
        result = _gate(model, version, _yaml(tmp_path, LENIENT), "staging")
    finally:
        stored.write_text(original)
    mv = MlflowClient().get_model_version(model, version)
    assert result.exit_code == 1, result.output
    shown = result.output + repr(mv.tags) + (mv.description or "")
    assert "evidence.key" not in shown, shown
    # refused before anything is read (on the old code /proc/self/pagemap kept the gate reading
    # for minutes, the adversary killed it at 90 s)
    assert "reads the artifact 'tokenizer' from outside the model's files" in result.output, result.output


def test_case_5_no_help_text_prints_a_python_command_that_imports_from_the_working_folder():
    commands = [[]] + [[name] for name in cli.commands] + [["hooks", name] for name in cli.commands["hooks"].commands]
    unsafe = re.compile(r"\bpython3?\s+(?!-P\b)-[cm]\b")
    for path in commands:
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, result.output
        assert not unsafe.search(result.output), (path, result.output)
