"""train -> quantise_onnx -> evaluate -> promote on a real sqlite MLflow store."""

from __future__ import annotations

import shutil

import mlflow
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flows import promote
from quantgate.data import news9_labels

from conftest import LENIENT, TEST_MODEL, swap_labels

LABELS = news9_labels()  # the test models are trained on news9


def test_fp32_and_int8_versions_are_registered_with_their_tags(pipeline):
    fp32, int8 = pipeline["fp32"], pipeline["int8"]
    assert (fp32.tags["variant"], fp32.tags["precision"], fp32.tags["runtime"]) == ("fp32", "fp32", "torch")
    assert int8.tags["variant"] == "onnx-int8-dynamic"
    assert int8.tags["parent_version"] == str(fp32.version)
    assert int8.tags["runtime"] == "onnxruntime" and int8.tags["precision"] == "int8"
    assert len(int8.tags["manifest_sha256"]) == 64


def test_evaluation_is_recorded_on_the_version(pipeline):
    int8 = pipeline["int8"]
    assert int8.tags["eval_status"] == "complete"
    assert int8.tags["eval_manifest_sha256"] == int8.tags["manifest_sha256"]
    recorded = MlflowClient().get_run(int8.tags["eval_run_id"]).data.metrics
    for key in (
        "macro_f1",
        "accuracy",
        "size_mb",
        "latency_p50_ms",
        "latency_p95_ms",
        "top1_agreement",
        "macro_f1_drop_points",
    ):
        assert key in recorded, key
    assert 0.0 <= recorded["top1_agreement"] <= 1.0
    # INT8 with the embeddings quantised is far smaller than the FP32 safetensors
    assert recorded["size_mb"] < 0.5 * recorded["parent_size_mb"]
    assert recorded["latency_p50_ms"] <= recorded["latency_p95_ms"]


def test_every_variant_predicts_labels_from_the_label_set(pipeline):
    for mv in (pipeline["fp32"], pipeline["int8"]):
        model = mlflow.pyfunc.load_model(f"models:/{TEST_MODEL}/{mv.version}")
        out = model.predict(pd.DataFrame({"text": ["Striker signs for Lisbon club", "Ransomware hits city council"]}))
        assert list(out.columns) == ["label", "probability", "top_k", "truncated"]
        assert set(out["label"]) <= set(LABELS)
        assert out["probability"].between(0, 1).all()
        for label, p, top in zip(out["label"], out["probability"], out["top_k"]):
            assert len(top) == 3 and top[0] == {"label": label, "probability": p}
            assert top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
        assert not out["truncated"].any()


def _local_copy(mv, tmp_path):
    src = mlflow.artifacts.download_artifacts(f"models:/{TEST_MODEL}/{mv.version}")
    dst = tmp_path / "model"
    shutil.copytree(src, dst)
    return dst


def test_a_variant_whose_labels_disagree_with_its_model_refuses_to_load(pipeline, tmp_path):
    """Swap two labels in label_map.json and re-sign the manifest: only the label check is left
    to catch it, and it must (the seed lab's TensorRT engine mislabelled silently)."""
    path = _local_copy(pipeline["int8"], tmp_path)
    swap_labels(path)
    with pytest.raises(MlflowException, match="label order mismatch"):
        mlflow.pyfunc.load_model(str(path))


def test_a_changed_model_file_refuses_to_load(pipeline, tmp_path):
    path = _local_copy(pipeline["int8"], tmp_path)
    onnx_file = next(path.glob("artifacts/*.onnx"))
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(MlflowException, match="does not match its recorded SHA-256 manifest"):
        mlflow.pyfunc.load_model(str(path))


def _run_promote(version, thresholds: dict, tmp_path, alias: str):
    path = tmp_path / f"{alias}.yaml"
    path.write_text(yaml.safe_dump(thresholds))
    return CliRunner().invoke(
        promote.cli, ["--version", version, "--model-name", TEST_MODEL, "--thresholds", str(path), "--alias", alias]
    )


def test_gate_refuses_a_version_that_misses_a_threshold(pipeline, tmp_path):
    int8 = pipeline["int8"]
    result = _run_promote(int8.version, {"min_macro_f1": 0.99, "max_latency_p95_ms": 5000.0}, tmp_path, "strict")
    assert result.exit_code == 1, result.output
    assert "REJECTED" in result.output and "FAIL: macro_f1" in result.output
    client = MlflowClient()
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(TEST_MODEL, "strict")
    mv = client.get_model_version(TEST_MODEL, int8.version)
    assert mv.tags["gate.decision"] == "rejected"
    assert "FAIL: macro_f1" in mv.tags["gate.reasons"]
    assert "Gate rejected" in mv.description


def test_gate_refuses_an_unevaluated_version(pipeline, tmp_path):
    client = MlflowClient()
    mv = pipeline["int8"]
    client.set_model_version_tag(TEST_MODEL, mv.version, "eval_manifest_sha256", "0" * 64)  # stale
    try:
        result = _run_promote(mv.version, LENIENT, tmp_path, "stale-check")
        assert result.exit_code == 1
        assert "stale evaluation" in result.output
        with pytest.raises(MlflowException):
            client.get_model_version_by_alias(TEST_MODEL, "stale-check")
    finally:
        client.set_model_version_tag(TEST_MODEL, mv.version, "eval_manifest_sha256", mv.tags["manifest_sha256"])


def test_gate_passes_and_sets_alias_and_stage(pipeline, staged):
    int8 = pipeline["int8"]
    assert staged.exit_code == 0, staged.output
    client = MlflowClient()
    assert client.get_model_version_by_alias(TEST_MODEL, "staging").version == int8.version
    mv = client.get_model_version(TEST_MODEL, int8.version)
    assert mv.current_stage == "Staging"
    assert "Gate passed" in mv.description  # other tests gate this version again afterwards
