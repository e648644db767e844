"""Issue 17, the eighteenth and nineteenth adversarial runs: what they got past the gate, tried
the way they did it (MLflow's public API, the file system and the `quantgate` command line)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from mlflow import MlflowClient
from test_adversarial import LENIENT, _fresh, _holder, _one_error_line, _quantgate, _yaml, trivial  # noqa: F401


def _stage(model: str, version: str) -> str:
    return MlflowClient().get_model_version(model, version).current_stage


@pytest.mark.parametrize("how", ["--version", "--candidates"])
def test_f1_the_gate_does_not_put_an_alias_holder_it_did_not_judge_back_into_staging(trivial, tmp_path, how):  # noqa: F811
    """Before: the attacker edited the @staging holder's files (its pass tags untouched), took it
    out of Staging and registered another version; the key holder's gate of that version rejected
    it and "repaired" the stage by moving the edited holder back into Staging, where a plain
    `models:/name/Staging` load served it. Now the gate says so and moves nothing into Staging."""
    model, client = f"adv18-stage{how}", MlflowClient()
    holder = _fresh(model, trivial)
    promoted = _quantgate(
        "promote", "--version", holder, "--model-name", model, "--thresholds", _yaml(tmp_path, LENIENT)
    )
    assert promoted.exit_code == 0 and _stage(model, holder) == "Staging", promoted.output
    client.transition_model_version_stage(model, holder, "Archived")  # by hand, files edited before
    if how == "--candidates":  # so that --candidates skips it as a parent instead of judging it
        client.set_model_version_tag(model, holder, "variant", "fp32")
    other = _fresh(model, trivial)
    strict = _yaml(tmp_path, {"min_macro_f1": 0.99})
    chosen = ["--version", other] if how == "--version" else ["--candidates"]
    result = _quantgate("promote", *chosen, "--model-name", model, "--thresholds", strict)
    assert result.exit_code == 1, result.output
    assert f"v{holder}, the @staging holder, is not in stage Staging" in result.output, result.output
    assert _stage(model, holder) == "Archived" and _stage(model, other) == "None"
    assert _holder(model, "staging") == holder  # the alias is the writer's doing; the gate reports it


@pytest.mark.parametrize("link", ["symlink", "hard link", "fifo"])
def test_f2_a_lock_file_that_is_a_link_is_refused_and_nothing_is_written(trivial, tmp_path, link):  # noqa: F811
    """Before: the gate opened its lock file through a symlink, emptied it and wrote `pid N on
    host` into it: pointed at the evidence key file, one promote replaced the key with a
    guessable one, and the attacker signed a tampered evaluation with it."""
    model = f"adv18-lock-{link.replace(' ', '-')}"
    version = _fresh(model, trivial)
    key_file = tmp_path / "evidence.key"
    key_file.write_text("k" * 64)
    lock = tmp_path / "promote.lock"
    if link == "symlink":
        lock.symlink_to(key_file)
    elif link == "hard link":
        lock.hardlink_to(key_file)
    else:
        os.mkfifo(lock)
    before = dict(MlflowClient().get_model_version(model, version).tags)
    result = _quantgate(
        "promote", "--version", version, "--model-name", model, "--thresholds", _yaml(tmp_path, LENIENT),
        "--lock-file", str(lock),
    )  # fmt: skip
    assert "never writes through one" in _one_error_line(result), result.output
    assert key_file.read_text() == "k" * 64
    assert dict(MlflowClient().get_model_version(model, version).tags) == before
    assert _holder(model, "staging") is None


def test_f3_a_person_saving_as_the_gate_writes_its_note_loses_nothing(trivial, tmp_path, monkeypatch):  # noqa: F811
    """Before: the gate read the description, wrote its block tag, then wrote the description it
    had built from what it read; a person's save timed on that tag write was overwritten (5 of 56
    saves lost). Now the description is written only if unchanged since read, else rebuilt. The
    saves here land just after the gate's read of the description it builds on (the tag is now
    written with the description, in one transaction)."""
    import sys

    model, client = "adv18-desc", MlflowClient()
    version = _fresh(model, trivial)
    client.update_model_version(model, version, description="Alice: reviewed the data card.")
    real, saves = MlflowClient.get_model_version, []

    def person_saves_after_the_read(self, name, v):
        read = real(self, name, v)
        if name == model and sys._getframe(1).f_code.co_name == "update_description" and len(saves) < 2:
            line = f"Bob: note {len(saves)} saved while the gate wrote."
            saves.append(line)
            now = real(MlflowClient(), model, version).description or ""
            MlflowClient().update_model_version(model, version, description=now + "\n" + line)
        return read

    monkeypatch.setattr(MlflowClient, "get_model_version", person_saves_after_the_read)
    result = _quantgate(
        "promote", "--version", version, "--model-name", model, "--thresholds", _yaml(tmp_path, LENIENT)
    )
    monkeypatch.undo()
    assert result.exit_code == 0, result.output
    final = client.get_model_version(model, version).description
    assert len(saves) == 2 and all(line in final for line in saves), final
    assert "Alice: reviewed the data card." in final and "<!-- quantgate:begin" in final and "PASSED" in final.upper()


def test_f3_the_description_is_written_only_if_unchanged_since_read(trivial):  # noqa: F811
    """The compare-and-set itself, on the SQL store: a save made after quantgate's read makes its
    write change nothing (MLflow's own update has no such condition)."""
    from quantgate.description_write import write_if_unchanged

    model, client = "adv18-cas", MlflowClient()
    version = _fresh(model, trivial)
    assert write_if_unchanged(client, model, version, None, "first")  # a fresh version: no description
    client.update_model_version(model, version, description="first\nCarol: a person's line")
    assert not write_if_unchanged(client, model, version, "first", "first + quantgate's block")
    assert client.get_model_version(model, version).description == "first\nCarol: a person's line"
    assert write_if_unchanged(client, model, version, "first\nCarol: a person's line", "kept + block")
    assert client.get_model_version(model, version).description == "kept + block"


# ------------------------------------------------------------------ the nineteenth run
def test_nineteenth_f3_evaluate_writes_no_artifact_through_a_link_planted_in_its_run(pipeline, tmp_path, monkeypatch):
    """Before: while `evaluate` ran, the attacker created the run's `quantgate/` artifact folder
    with `label_flips.json` linking to the evidence key file; MLflow copied the folder of
    artifacts in following the link, and the key became a JSON file the attacker could predict.
    quantgate now logs each file into a local store itself (quantgate.artifact_log): the link's
    name gets the new file by a rename, and what the link pointed at is untouched (MLflow refused
    the file instead, failing the evaluation)."""
    from test_adversarial_signed import copy_pair

    import evaluators.plugin
    import quantgate.artifact_log

    fp32, int8 = copy_pair(pipeline, "adv19-links")
    secret = tmp_path / "evidence.key"
    secret.write_text("s" * 64)
    secret.chmod(0o400)
    real = quantgate.artifact_log.log_file
    planted = []

    def plant_then_log(run_id, local_path, artifact_path=None):  # as the evaluator logs its first file
        folder = Path(unquote(urlparse(MlflowClient().get_run(run_id).info.artifact_uri).path)) / "quantgate"
        if not folder.exists():
            folder.mkdir(parents=True)
            (folder / "label_flips.json").symlink_to(secret)
            planted.append(folder / "label_flips.json")
        return real(run_id, local_path, artifact_path)

    monkeypatch.setattr(quantgate.artifact_log, "log_file", plant_then_log)
    monkeypatch.setattr(evaluators.plugin, "log_file", plant_then_log)
    result = _quantgate("evaluate", "--version", int8, "--model-name", "adv19-links", "--latency-runs", "5")
    assert planted, "the link was never planted; the test proved nothing"
    assert secret.read_text() == "s" * 64 and stat.S_IMODE(secret.stat().st_mode) == 0o400
    assert result.exit_code == 0, result.output
    assert not planted[0].is_symlink() and json.loads(planted[0].read_text()) is not None
