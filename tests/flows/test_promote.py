"""The gate against a real sqlite store and the pipeline's real versions (tests/conftest.py).

Each test gates under its own alias, so the session's `staging` (which serving tests use) is
left alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import numpy as np
import onnx
import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient
from onnx import helper, numpy_helper

from flows import promote
from quantgate.tracking import logged_model_id
from registry_hooks.gate.apply import alias_holder
from registry_hooks.gate.thresholds import DEFAULT_THRESHOLDS

from conftest import TEST_MODEL
from promote_helpers import derive_evaluation

# Limits relative to the parent only: the tiny session model is far below the default absolute
# limits, but its INT8 variant tracks its FP32 parent closely.
RELATIVE = {"max_macro_f1_drop_points": 5.0, "max_worst_class_f1_drop_points": 15.0, "min_top1_agreement": 0.9}


def _thresholds(tmp_path: Path, name: str, values: dict) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def _promote(*args: str):
    return CliRunner().invoke(promote.cli, ["--model-name", TEST_MODEL, *args])


def _holder(alias: str) -> str | None:
    return alias_holder(MlflowClient(), TEST_MODEL, alias)


def _stored_model_file(mv) -> Path:
    """The registered version's model file as it lies in the artifact store (not a copy)."""
    location = MlflowClient().get_logged_model(logged_model_id(mv)).artifact_location
    root = Path(unquote(urlparse(location).path)) if location.startswith("file:") else Path(location)
    return next((root / "artifacts").glob("*.onnx"))


def _decision_json(mv) -> dict:
    run_id = MlflowClient().get_model_version(TEST_MODEL, mv.version).tags["gate.run_id"]
    return mlflow.artifacts.load_dict(f"runs:/{run_id}/decision.json")


@pytest.fixture(scope="module")
def permuted(pipeline, tmp_path_factory):
    """A deliberately broken variant: the INT8 model with two output classes swapped (the seed
    lab's bug: logits in one label order, the label list in another), registered like any
    variant.

    Its evaluation is derived from the INT8 version's real one instead of re-running the
    evaluator (which costs minutes here): the permutation is exact, so its per-example
    predictions are INT8's with World and Sports swapped. The test checks that on the loaded
    model before relying on it.
    """
    from quantgate.labels import load_label_map
    from quantgate.packaging import log_variant

    int8, fp32 = pipeline["int8"], pipeline["fp32"]
    work = tmp_path_factory.mktemp("permuted")
    src = Path(mlflow.artifacts.download_artifacts(f"models:/{TEST_MODEL}/{int8.version}", dst_path=str(work / "src")))
    model = onnx.load(str(next((src / "artifacts").glob("*.onnx"))))
    logits = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{logits}_in_training_order" if o == logits else o for o in node.output]
    order = np.arange(model.graph.output[0].type.tensor_type.shape.dim[1].dim_value, dtype=np.int64)
    order[[0, 1]] = order[[1, 0]]  # World <-> Sports
    model.graph.initializer.append(numpy_helper.from_array(order, "label_permutation"))
    model.graph.node.append(
        helper.make_node("Gather", [f"{logits}_in_training_order", "label_permutation"], [logits], axis=1)
    )
    path = work / "model.permuted.onnx"
    onnx.save(model, str(path))
    meta = json.loads((src / "artifacts" / "meta.json").read_text())
    with mlflow.start_run(run_name="test-permuted-variant"):
        mv = log_variant(
            model_path=path,
            tokenizer_dir=src / "artifacts" / "tokenizer",
            runtime="onnxruntime",
            variant="onnx-int8-permuted",
            precision="int8",
            registered_model_name=TEST_MODEL,
            labels=load_label_map(src / "artifacts" / "label_map.json"),
            parent_version=fp32.version,
            max_length=meta.get("max_length", 128),
        )
    texts = ["Striker signs four-year deal", "Ransomware gang hits city council", "Central bank holds rates"]
    broken = mlflow.pyfunc.load_model(f"models:/{TEST_MODEL}/{mv.version}").unwrap_python_model().predict_proba(texts)
    good = mlflow.pyfunc.load_model(f"models:/{TEST_MODEL}/{int8.version}").unwrap_python_model().predict_proba(texts)
    np.testing.assert_allclose(broken, good[:, order], atol=1e-6)
    derive_evaluation(mv, int8.tags["eval_run_id"], order)
    return MlflowClient().get_model_version(TEST_MODEL, mv.version)


def test_a_changed_byte_in_the_registered_model_file_is_refused(pipeline, tmp_path):
    """Tags still say "evaluated on these files"; only hashing the files again can tell."""
    int8 = pipeline["int8"]
    path = _stored_model_file(int8)
    original = path.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    try:
        result = _promote(
            "--version", int8.version, "--thresholds", _thresholds(tmp_path, "rel", RELATIVE), "--alias", "tamper-check"
        )
    finally:
        path.write_bytes(original)
    assert result.exit_code == 1, result.output
    assert "REJECTED" in result.output
    assert "files changed since evaluation" in result.output and f"model/{path.name}" in result.output
    mv = MlflowClient().get_model_version(TEST_MODEL, int8.version)
    assert mv.tags["eval_manifest_sha256"] == mv.tags["manifest_sha256"]  # the tags could not tell
    assert mv.tags["gate.decision"] == "rejected" and "files changed since evaluation" in mv.tags["gate.reasons"]
    assert _holder("tamper-check") is None
    # the restored file passes again: the refusal was about the byte, nothing else
    again = _promote(
        "--version", int8.version, "--thresholds", _thresholds(tmp_path, "rel", RELATIVE), "--alias", "tamper-check"
    )
    assert again.exit_code == 0, again.output
    assert _holder("tamper-check") == str(int8.version)


def test_default_thresholds_reject_a_variant_with_permuted_labels(permuted):
    result = _promote(
        "--version", permuted.version, "--thresholds", str(DEFAULT_THRESHOLDS), "--alias", "permuted-check"
    )
    assert result.exit_code == 1, result.output
    mv = MlflowClient().get_model_version(TEST_MODEL, permuted.version)
    assert mv.tags["gate.decision"] == "rejected"
    # what a person reads on the version page in the UI
    note = mv.description.split("### Gate rejected for `@permuted-check`")[-1]
    assert "FAIL: top1_agreement = " in note and "(needs >= 0.95)" in note
    assert "FAIL: macro_f1_drop_points upper 95% bound = " in note
    assert "worst class: " in note
    assert _holder("permuted-check") is None


def test_candidates_mode_promotes_the_champion_and_records_every_decision(pipeline, permuted, tmp_path):
    result = _promote(
        "--candidates", "--thresholds", _thresholds(tmp_path, "rel", RELATIVE), "--alias", "candidates-check"
    )
    assert result.exit_code == 0, result.output
    client = MlflowClient()
    int8 = client.get_model_version(TEST_MODEL, pipeline["int8"].version)
    broken = client.get_model_version(TEST_MODEL, permuted.version)
    assert int8.tags["gate.decision"] == "passed" and broken.tags["gate.decision"] == "rejected"
    body = _decision_json(int8)
    assert body["champion"] == _holder("candidates-check")
    gated = {d["version"]: d for d in body["decisions"]}
    assert str(pipeline["fp32"].version) not in gated  # the FP32 parent is not a candidate
    assert gated[str(broken.version)]["decision"] == "rejected"
    assert gated[str(int8.version)]["decision"] == "passed"
    assert body["thresholds"]["confidence_level"] == 0.95 and len(body["thresholds_sha256"]) == 64
    assert broken.tags["gate.run_id"] == int8.tags["gate.run_id"]  # one promote run, one decision.json


def test_dry_run_decides_but_changes_nothing(pipeline, tmp_path):
    client = MlflowClient()
    before = client.get_model_version(TEST_MODEL, pipeline["int8"].version)
    result = _promote(
        "--version",
        pipeline["int8"].version,
        "--thresholds",
        _thresholds(tmp_path, "rel", RELATIVE),
        "--alias",
        "dry-check",
        "--dry-run",
    )
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output and "dry run, registry unchanged; would be promoted: @dry-check" in result.output
    after = client.get_model_version(TEST_MODEL, pipeline["int8"].version)
    assert (after.tags, after.description, after.current_stage) == (
        before.tags,
        before.description,
        before.current_stage,
    )
    assert _holder("dry-check") is None


def test_a_target_has_its_own_alias_and_leaves_the_stage_alone(pipeline, tmp_path):
    th = _thresholds(tmp_path, "targets", {**RELATIVE, "cpu": {"max_latency_p95_ms": 5000.0}})
    stage_before = MlflowClient().get_model_version(TEST_MODEL, pipeline["int8"].version).current_stage
    result = _promote("--version", pipeline["int8"].version, "--thresholds", th, "--target", "cpu")
    assert result.exit_code == 0, result.output
    assert "ok: latency_p95_ms" in result.output  # the cpu section's extra limit was judged
    assert _holder("staging-cpu") == str(pipeline["int8"].version)
    assert MlflowClient().get_model_version(TEST_MODEL, pipeline["int8"].version).current_stage == stage_before


def test_a_target_refuses_the_wrong_device_and_a_foreign_host(pipeline, tmp_path):
    th = _thresholds(tmp_path, "hosts", {**RELATIVE, "cpu": {"host": {"machine": "riscv64"}}, "gpu": {}})
    version = pipeline["int8"].version
    gpu = _promote("--version", version, "--thresholds", th, "--target", "gpu", "--alias", "device-check")
    assert gpu.exit_code == 1 and "built for device 'cpu', not for target 'gpu'" in gpu.output
    cpu = _promote("--version", version, "--thresholds", th, "--target", "cpu", "--alias", "host-check")
    assert cpu.exit_code == 1 and "evaluated on another host: host.machine = " in cpu.output
    assert "target needs 'riscv64'" in cpu.output
    missing = _promote(
        "--version", version, "--thresholds", _thresholds(tmp_path, "nogpu", RELATIVE), "--target", "gpu"
    )
    assert missing.exit_code == 2 and "no `gpu:` section" in missing.output  # a user mistake: one line, exit 2


def test_a_rejected_holder_loses_the_alias(pipeline, tmp_path):
    version = pipeline["int8"].version
    assert (
        _promote(
            "--version", version, "--thresholds", _thresholds(tmp_path, "rel", RELATIVE), "--alias", "release-check"
        ).exit_code
        == 0
    )
    assert _holder("release-check") == str(version)
    strict = _promote(
        "--version",
        version,
        "--thresholds",
        _thresholds(tmp_path, "strict", {"min_macro_f1": 0.999}),
        "--alias",
        "release-check",
    )
    assert strict.exit_code == 1
    assert f"@release-check removed from v{version}, which held it" in strict.output
    assert _holder("release-check") is None


def test_a_malformed_thresholds_file_is_refused_before_anything_runs(pipeline, tmp_path):
    client = MlflowClient()
    runs_before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    bad = tmp_path / "bad.yaml"
    bad.write_text("min_macro_f1: 0.85\ncpu:\n  max_latency_p95_ms: fast\n")
    result = _promote("--version", pipeline["int8"].version, "--thresholds", str(bad))
    assert result.exit_code == 2  # a user mistake: one line, exit 2 (issue 17; was 1)
    assert f"{bad}: cpu.max_latency_p95_ms: must be a number, got str 'fast'" in result.output
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == runs_before


def test_a_version_and_candidates_together_are_refused(pipeline):
    result = _promote("--version", pipeline["int8"].version, "--candidates", "--thresholds", str(DEFAULT_THRESHOLDS))
    assert result.exit_code == 2 and "exactly one of --version N or --candidates" in result.output


def test_a_gate_in_another_experiment_still_reads_the_evaluations_predictions(pipeline, tmp_path, monkeypatch):
    # `main` evaluates inside its own experiment; a later `promote --candidates` runs in the
    # default one. The per-example table must be read from the evaluation run's experiment.
    before = mlflow.tracking.fluent._get_experiment_id()
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "gate-elsewhere")
    mlflow.set_experiment("gate-elsewhere")
    try:
        result = _promote(
            "--version",
            pipeline["int8"].version,
            "--thresholds",
            _thresholds(tmp_path, "rel", RELATIVE),
            "--alias",
            "elsewhere-check",
            "--dry-run",
        )
    finally:
        mlflow.set_experiment(experiment_id=before)
    assert result.exit_code == 0, result.output
    assert "eval_predictions.json" not in result.output
