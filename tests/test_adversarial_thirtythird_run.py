"""Issue 17, the thirty-third adversarial run (on d5703a8): three roots, each tried here as the
run did it, through the sqlite file, the artifact store, MLflow's public API and the CLI.

- A keyed ``evaluate`` signed the digests of its figures and predictions table as it read them
  back from the store: a sqlite trigger (or one ``log_metric`` into the running evaluation)
  rewrote ``latency_p95_ms``, a watcher swapped ``eval_predictions.json``, and the key signed
  the forgeries. Now it signs what it logged, and fails when the store holds anything else.
- ``main`` took any version tagged ``variant=onnx-int8-dynamic`` with the right parent as its
  int8: an FP16 build, and a static build with degraded settings, were staged. Now the version's
  recipe must be the one main asked for, a keyed rebuild refuses tags that do not match the
  recipe, and the evaluation's signature binds variant, precision and recipe.
- The key holder's thresholds file lay in the store's folder; a writer renamed a lenient one over
  it. Now, with a key, a thresholds file a store writer could replace is refused.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from test_adversarial import _one_error_line, _quantgate
from test_adversarial_signed import COPY, KEY, copy_pair, signed  # noqa: F401

from evaluators.plugin import log_predictions_table
from flows.evaluate import stored_table_sha256
from flows.main import evaluated_as_asked, variant_problem
from quantgate.errors import UserError
from quantgate.model_files import ModelIntegrityError
from quantgate.serving_model import sha256_file

VARIANT = "onnx-int8-dynamic"


def _sqlite_file() -> str:
    uri = mlflow.get_tracking_uri()
    assert uri.startswith("sqlite:///"), uri
    return uri.removeprefix("sqlite:///")


def _planted_run(params: dict, names: str) -> mlflow.entities.Run:
    """A finished run tagged as main's quantise step, whose version tag names ``names``."""
    with mlflow.start_run(run_name="adv33-planted") as run:
        mlflow.log_params(params)
        mlflow.set_tags({"quantgate.entry_point": "quantise_onnx", f"quantgate.version.{VARIANT}": names})
    return MlflowClient().get_run(run.info.run_id)


def test_a_metric_rewritten_while_a_keyed_evaluation_runs_is_not_signed(pipeline, monkeypatch):
    """Case 2: triggers set ``latency_p95_ms`` to 0.42 as the evaluator logs it. Before, the
    evaluation passed and signed 0.42 (the real p95 was 2.8 ms), and the gate promoted under a
    1 ms limit; now the evaluation fails, naming the figure, and nothing is signed."""
    fp32, int8 = copy_pair(pipeline, "adv33-metrics")
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    assert _quantgate("attest", "--version", fp32, "--model-name", "adv33-metrics").exit_code == 0
    db = sqlite3.connect(_sqlite_file())
    forged = (
        "WHEN NEW.key = 'latency_p95_ms' AND NEW.value != 0.42 BEGIN UPDATE {t} SET value = 0.42 "
        "WHERE run_uuid = NEW.run_uuid AND key = NEW.key; END"
    )
    for table in ("metrics", "latest_metrics"):
        for event in ("INSERT", "UPDATE"):
            db.execute(f"CREATE TRIGGER adv33_{table}_{event} AFTER {event} ON {table} {forged.format(t=table)}")
    db.commit()
    try:
        result = _quantgate("evaluate", "--version", int8, "--model-name", "adv33-metrics", "--latency-runs", "5")
    finally:
        for table in ("metrics", "latest_metrics"):
            for event in ("INSERT", "UPDATE"):
                db.execute(f"DROP TRIGGER adv33_{table}_{event}")
        db.commit()
        db.close()
    assert result.exit_code != 0, result.output
    assert "are not the figures it logged (differs: latency_p95_ms)" in result.output
    tags = MlflowClient().get_model_version("adv33-metrics", int8).tags
    assert "eval_evidence_signature" not in tags and tags["eval_status"].startswith("failed")


def test_the_predictions_table_is_the_one_the_evaluator_wrote(store, tmp_path):
    """Case 6: the table swapped in the artifact store after the evaluator logged it was hashed
    and signed. The stored copy is now checked against the table as written; and a table planted
    at that path before the evaluator logs is replaced, not appended to (``log_table`` appends)."""
    import pandas as pd

    client = MlflowClient()
    table = pd.DataFrame({"label_id": [0, 1, 2], "pred_id": [0, 1, 1], "parent_pred_id": [0, 1, 2]})
    with mlflow.start_run(run_name="adv33-table") as run:
        run_id = run.info.run_id
        planted = tmp_path / "planted" / "eval_predictions.json"
        planted.parent.mkdir()
        table.iloc[:1].to_json(planted, orient="split", index=False)
        client.log_artifact(run_id, str(planted))  # the writer's rows, there first
        written = log_predictions_table(client, run_id, table, tmp_path)
    assert len(json.loads(written)["data"]) == 3
    stored = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="eval_predictions.json"))
    assert stored_table_sha256(run_id, written) == sha256_file(stored)
    artifact = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://")) / "eval_predictions.json"
    forged = json.loads(artifact.read_text())
    forged["data"] = [[row[0], row[2], row[2]] for row in forged["data"]]  # the parent's answers
    artifact.write_text(json.dumps(forged))
    with pytest.raises(ModelIntegrityError, match="is not the table it wrote"):
        stored_table_sha256(run_id, written)


def test_main_takes_no_build_of_another_recipe_tagged_as_its_variant(signed, monkeypatch):  # noqa: F811
    """Cases 1 and 5: the writer built ``onnx-fp16`` of the attested FP32 version (a genuine
    quantgate build), tagged it ``variant=onnx-int8-dynamic`` and planted a run naming it (or
    re-pointed main's fresh run at it). main staged it. Now main names the recipe, and a keyed
    evaluate refuses tags that are not its recipe's."""
    built = _quantgate("quantise-onnx", "--source", signed["fp32"], "--model-name", COPY, "--recipe", "onnx-fp16")
    assert built.exit_code == 0, built.output
    client = MlflowClient()
    fp16 = max(
        int(mv.version)
        for mv in client.search_model_versions(f"name='{COPY}'")
        if mv.tags.get("variant") == "onnx-fp16"
    )
    for tag, value in {"variant": VARIANT, "precision": "int8"}.items():
        client.set_model_version_tag(COPY, str(fp16), tag, value)
    params = {"source": signed["fp32"], "model_name": COPY, "recipe": VARIANT, "preset": "avx2"}
    problem = variant_problem(COPY, signed["fp32"], VARIANT, params, _planted_run(params, str(fp16)))
    assert problem == f"v{fp16} was not built with the onnx-int8-dynamic recipe (preset avx2) main asks for"
    assert variant_problem(COPY, signed["fp32"], VARIANT, params, _planted_run(params, signed["int8"])) is None
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    refused = _quantgate("evaluate", "--version", str(fp16), "--model-name", COPY, "--latency-runs", "5")
    assert refused.exit_code != 0
    assert "its tags call it 'onnx-int8-dynamic' ('int8'), but its recipe builds 'onnx-fp16' ('fp16')" in refused.output


def test_tags_switched_after_a_keyed_evaluation_stop_main_before_the_gate(signed, monkeypatch):  # noqa: F811
    """The same hole after evaluation: tags switched once main has checked them (a trigger on
    the evaluate run's creation, say) would have the gate judge another build. The evaluation's
    signature binds variant, precision and recipe, and main checks both before it gates."""
    # main asks for this host's preset; the shared pipeline's int8 is built with the recipe's
    # default (avx2), which on a VNNI host main would rightly call another build
    monkeypatch.setattr("flows.main.detect_preset", lambda: "avx2")
    key, client = KEY.encode(), MlflowClient()
    evaluated_as_asked(COPY, signed["fp32"], signed["int8"], key)  # the genuine int8: gated
    for tag, value in {"precision": "fp16", "recipe": json.dumps({"variant": "onnx-fp16"})}.items():
        before = client.get_model_version(COPY, signed["int8"]).tags[tag]
        client.set_model_version_tag(COPY, signed["int8"], tag, value)
        try:
            with pytest.raises(ModelIntegrityError, match=f"not gating v{signed['int8']}: "):
                evaluated_as_asked(COPY, signed["fp32"], signed["int8"], key)
        finally:
            client.set_model_version_tag(COPY, signed["int8"], tag, before)


def test_with_a_key_a_thresholds_file_a_store_writer_could_replace_is_refused(signed, store, tmp_path, monkeypatch):  # noqa: F811
    """Case 4: ``strict.yaml`` beside ``mlflow.db`` was renamed over by a writer; the gate then
    passed what it had rejected. With a key, such a file is refused in one line."""
    from registry_hooks.gate.thresholds import check_unreplaceable

    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    thresholds = Path(signed["thresholds"]).read_text()
    beside_store = store / "strict.yaml"
    beside_store.write_text(thresholds)
    line = _one_error_line(
        _quantgate(
            "promote", "--version", signed["int8"], "--model-name", COPY, "--thresholds", str(beside_store), "--dry-run"
        )
    )
    assert "no store writer can replace" in line and "the tracking store's folder" in line
    shared = tmp_path / "shared.yaml"
    shared.write_text(thresholds)
    shared.chmod(0o666)
    with pytest.raises(UserError, match="writable by group or others"):
        check_unreplaceable(shared, mlflow.get_tracking_uri())
    shared.chmod(0o644)
    check_unreplaceable(shared, mlflow.get_tracking_uri())  # the owner's own file: fine
    monkeypatch.delenv("QUANTGATE_EVIDENCE_KEY")
    check_unreplaceable(beside_store, "http://127.0.0.1:5000")  # a server's store: no local folder
