"""Issue 17, the forty-sixth adversarial run (on d8fc25e): a text lost, a write through a planted
link and two crashes on store data. Each case is played as the run played it: MLflow's public
API, the sqlite file and the file system for the store writer, the `quantgate` command line for
the key holder."""

from __future__ import annotations

import os
import sqlite3
from urllib.parse import unquote, urlparse

import mlflow
from mlflow import MlflowClient
from test_adversarial import LENIENT, _fresh, _gate, _quantgate, _yaml, trivial  # noqa: F401

from conftest import TEST_MODEL


def test_case_1_a_tag_deleted_before_a_write_does_not_make_this_machine_forget_the_block_it_left(trivial, tmp_path):  # noqa: F811
    """The writer deleted the block's tag just before the key holder's gate, which then wrote a new
    block and left the old one as text without remembering its seal; the writer deleted
    quantgate's blocks, put the old tag back, and the next gate rewrote a person's verbatim copy."""
    model, client = "adv46-forget", MlflowClient()
    version = _fresh(model, trivial)
    args = ("promote", "--version", version, "--model-name", model, "--thresholds", _yaml(tmp_path, LENIENT))
    assert _quantgate(*args).exit_code == 0
    mv = client.get_model_version(model, version)
    old_block, old_tag = mv.description, mv.tags["description_block_sha256"]
    quote = "Ann (reviewer), for the audit:\n" + old_block + "\nAnn: end of quote."
    client.update_model_version(model, version, description=old_block + "\n\n" + quote)
    client.delete_model_version_tag(model, version, "description_block_sha256")
    assert _quantgate(*args).exit_code == 0  # a new block; the old one and the copy stay as text
    client.update_model_version(model, version, description=quote)  # quantgate's blocks removed
    client.set_model_version_tag(model, version, "description_block_sha256", old_tag)
    assert _quantgate(*args).exit_code == 0
    after = client.get_model_version(model, version).description
    assert after.startswith(quote), after


def test_case_4_metrics_named_like_compares_own_fields_are_not_taken_for_them(trivial, tmp_path):  # noqa: F811
    model, client = "adv46-fields", MlflowClient()
    version = _fresh(model, trivial)
    with mlflow.start_run(run_name="attacker-scratch") as run:
        mlflow.log_metrics({"where": 1.0, "version": 1.0, "macro_f1": 0.5})
    client.set_model_version_tag(model, version, "eval_run_id", run.info.run_id)
    client.set_model_version_tag(model, version, "eval_status", "complete")
    result = _quantgate("compare", "--name", model, "--out", str(tmp_path / "p.png"))
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert any(line.split()[:1] == [version] for line in result.output.splitlines()), result.output
    assert not any(line.startswith("1.0 ") for line in result.output.splitlines()), result.output


def test_case_5_a_text_start_time_on_the_evaluation_run_is_a_refusal_not_a_crash(pipeline, tmp_path):
    int8 = pipeline["int8"]
    run_id = MlflowClient().get_model_version(TEST_MODEL, int8.version).tags["eval_run_id"]
    database = unquote(urlparse(os.environ["MLFLOW_TRACKING_URI"]).path)[1:]
    with sqlite3.connect(database) as db:
        (original,) = db.execute("SELECT start_time FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
        db.execute("UPDATE runs SET start_time = 'abc' WHERE run_uuid = ?", (run_id,))
    try:
        gated = _gate(TEST_MODEL, int8.version, _yaml(tmp_path, LENIENT), "adv46-start", "--dry-run")
        assert gated.exit_code == 1 and "Traceback" not in gated.output, gated.output
        assert "has no start time a store writes (abc)" in gated.output, gated.output
        compared = _quantgate("compare", "--name", TEST_MODEL, "--out", str(tmp_path / "p.png"))
        assert compared.exit_code == 0 and "Traceback" not in compared.output, compared.output
    finally:
        with sqlite3.connect(database) as db:
            db.execute("UPDATE runs SET start_time = ? WHERE run_uuid = ?", (original, run_id))
