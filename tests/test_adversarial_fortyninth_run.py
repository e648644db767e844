"""Issue 17, the forty-ninth adversarial run (on 6692292). Case 1: a version number made text in
the database crashed the gate. Cases 2 and 3: a stored ``MLmodel`` naming an artifact outside the
model had the gate hash the key holder's folder (the key file included) and list its files in
its reasons, or read ``/proc/self/pagemap`` for good. Case 5: ``quantgate hooks --help`` printed a
``python -c`` without ``-P`` (run 42's planted ``secrets.py`` chose the secret it printed). Case 4
(a UNIX socket planted among a version's files after the gate's check) is covered where the fix
lives: ``tests/quantgate/test_artifact_download.py`` and the gate's post-move re-check.

At the end, the fiftieth run (on b484013), which found gaps in the same post-move code: sqlite
triggers that swap the judged version's files and refuse the roll-back, and BLOB-typed text."""

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
    _holder,
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


# ---------------------------------------------------------------- the fiftieth run (on b484013)
def _evil_copy(model: str, version: str, tmp_path) -> str:
    """A copy of the version's stored files with other weights: a build the gate never judged."""
    import shutil

    evil = tmp_path / "evil" / "artifacts"
    shutil.copytree(_stored_root(model, version), evil)
    weights = next(p for p in evil.rglob("*.bin"))
    weights.write_bytes(os.urandom(weights.stat().st_size))
    return str(evil)


@pytest.mark.parametrize("refused", ["alias delete", "stage move"])
def test_fiftieth_run_triggers_that_swap_the_files_and_refuse_the_roll_back_leave_no_pass(
    trivial,  # noqa: F811
    tmp_path,
    refused,
):
    """A sqlite trigger repointed the judged version's files at another build when the gate set
    the alias, and a second one aborted the roll-back's alias delete (or the stage move): the
    exception left @staging and a signed pass on the swapped version."""
    model = f"adv50-trigger-{refused.split()[1]}"
    good = _fresh(model, trivial)
    evil = _evil_copy(model, good, tmp_path)
    abort = (
        "BEFORE DELETE ON registered_model_aliases WHEN OLD.name = '{m}' AND OLD.alias = 'staging'"
        if refused == "alias delete"
        else "BEFORE UPDATE OF current_stage ON model_versions WHEN NEW.name = '{m}' AND NEW.current_stage = 'Staging'"
    ).format(m=model)
    with sqlite3.connect(_database()) as db:
        db.execute(
            f"CREATE TRIGGER adv50_swap AFTER INSERT ON registered_model_aliases WHEN NEW.name = '{model}' "
            f"BEGIN UPDATE model_versions SET storage_location = '{evil}' WHERE name = '{model}' "
            f"AND version = NEW.version; END"
        )
        db.execute(f"CREATE TRIGGER adv50_refuse {abort} BEGIN SELECT RAISE(ABORT, 'refused'); END")
    try:
        result = _gate(model, good, _yaml(tmp_path, LENIENT), "staging")
    finally:
        with sqlite3.connect(_database()) as db:
            db.execute("DROP TRIGGER adv50_swap")
            db.execute("DROP TRIGGER adv50_refuse")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output, result.output
    assert "ROLL" in result.output, result.output  # ROLLED BACK, or ROLL-BACK FAILED: remove it by hand
    tags = MlflowClient().get_model_version(model, good).tags
    assert tags.get("gate.decision.staging", "").startswith("rejected") and "gate.passed.staging" not in tags, tags


def test_fiftieth_run_a_description_and_a_tag_stored_as_blobs_crash_nothing(trivial, tmp_path):  # noqa: F811
    from test_adversarial_fortyeighth_run import _key_holders_quantgate

    model = "adv50-blobs"
    good = _fresh(model, trivial)
    theirs = _fresh(model, trivial, latency_p95_ms=1.0)
    with sqlite3.connect(_database()) as db:
        row = "name = ? AND version = ?"
        db.execute(f"UPDATE model_versions SET description = x'68656c6c6f' WHERE {row}", (model, theirs))
        blob = "UPDATE model_version_tags SET value = CAST(value AS BLOB)"
        db.execute(f"{blob} WHERE {row} AND key = 'variant'", (model, theirs))
    thresholds = _yaml(tmp_path, LENIENT)
    for args in (
        ("promote", "--candidates", "--model-name", model, "--thresholds", thresholds, "--alias", "staging"),
        ("compare", "--name", model, "--out", str(tmp_path / "p.png")),
    ):
        result = _key_holders_quantgate(*args)
        output = result.stdout + result.stderr
        assert "Traceback" not in output and "b'" not in output, output
        assert result.returncode in (0, 1) and "gate " in output or args[0] == "compare", output
    assert str(MlflowClient().get_model_version_by_alias(model, "staging").version) in (good, theirs)


def _listing(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_fiftieth_run_case_3_an_experiment_pointed_at_the_state_folder_gets_nothing_made_there(
    trivial,  # noqa: F811
    tmp_path,
    block_memory,
):
    """The writer rewrote the experiment's ``artifact_location`` to the key holder's state folder,
    and the key holder's ``promote`` made ``<run id>/artifacts/decision.json`` there."""
    model = "adv50-experiment-location"
    good = _fresh(model, trivial)
    before = _listing(block_memory)
    with sqlite3.connect(_database()) as db:
        saved = db.execute("SELECT experiment_id, artifact_location FROM experiments").fetchall()
        db.execute("UPDATE experiments SET artifact_location = ?", (str(block_memory),))
    try:
        result = _gate(model, good, _yaml(tmp_path, LENIENT), "staging")
    finally:
        with sqlite3.connect(_database()) as db:
            restore = "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?"
            db.executemany(restore, [(a, i) for i, a in saved])
    assert _listing(block_memory) == before, result.output
    assert "Traceback" not in result.output, result.output
    assert "decision.json was not logged" in result.output and "state folder" in result.output, result.output
    # the decision stands, recorded where the registry keeps it
    assert MlflowClient().get_model_version(model, good).tags["gate.decision.staging"].startswith("passed")


def test_a_version_stored_in_the_state_folder_is_never_read(trivial, tmp_path, block_memory):  # noqa: F811
    model = "adv50-version-location"
    good = _fresh(model, trivial)
    (block_memory / "MLmodel").write_text("planted: true\n")  # what the gate would read first
    with sqlite3.connect(_database()) as db:
        db.execute(
            "UPDATE model_versions SET storage_location = ? WHERE name = ? AND version = ?",
            (str(block_memory), model, good),
        )
    try:
        result = _gate(model, good, _yaml(tmp_path, LENIENT), "staging")
    finally:
        (block_memory / "MLmodel").unlink()
    assert "Traceback" not in result.output, result.output
    assert "is not read: it holds or lies in quantgate's state folder" in result.output, result.output
    assert _holder(model, "staging") is None
