"""The OpenVINO runtime on the tiny trained model of the `pipeline` fixture: openvino-fp32 and
openvino-int8 (NNCF) register as tagged versions, are served by the same pyfunc, evaluated with
batch invariance recorded, gated, reused on a second run; a permuted label order refuses to load."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flows import promote
from flows.evaluate import evaluate
from flows.quantise import quantise
from quantgate.recipes import OPENVINO_VARIANTS, build_recipe, recipe_from_json

from conftest import LENIENT, TEST_MODEL, resign

TEXTS = ["Striker signs for Lisbon club", "Ransomware hits city council", "Central bank holds rates"]


def _recipes():
    return [
        build_recipe(v, "auto", **({"calibration_size": 16} if v == "openvino-int8" else {})) for v in OPENVINO_VARIANTS
    ]


@pytest.fixture(scope="module")
def ov_versions(pipeline):
    with mlflow.start_run(run_name="test-quantise-openvino"):
        built = quantise(pipeline["fp32"], _recipes(), step="quantise_openvino")
    client = MlflowClient()
    return {v: client.get_model_version(TEST_MODEL, mv.version) for v, mv in built.items()}


def test_both_variants_register_with_lineage_and_recipe(pipeline, ov_versions):
    assert set(ov_versions) == {"openvino-fp32", "openvino-int8"}
    for variant, mv in ov_versions.items():
        assert mv.tags["variant"] == variant and mv.tags["runtime"] == "openvino"
        assert mv.tags["parent_version"] == str(pipeline["fp32"].version)
        assert recipe_from_json(mv.tags["recipe"]).variant == variant
        assert mv.tags["manifest_sha256"] and mv.tags["recipe_sha256"]


def test_served_by_the_pyfunc_close_to_the_parent(pipeline, ov_versions):
    parent = mlflow.pyfunc.load_model(f"models:/{TEST_MODEL}/{pipeline['fp32'].version}").unwrap_python_model()
    want = parent.predict_proba(TEXTS)
    for variant, mv in ov_versions.items():
        model = mlflow.pyfunc.load_model(f"models:/{TEST_MODEL}/{mv.version}")
        out = model.predict(pd.DataFrame({"text": TEXTS}))
        assert set(out["label"]) <= set(parent.labels)
        got = model.unwrap_python_model().predict_proba(TEXTS)
        tolerance = 1e-4 if variant == "openvino-fp32" else 0.15
        assert np.abs(got - want).max() < tolerance, variant


def test_a_set_thread_count_leaves_cores_unpinned(ov_versions, monkeypatch):
    """Serving workers and Spark tasks set QUANTGATE_THREADS; were OpenVINO to pin their threads,
    every process would run on the same first core (measured: Spark local[2] on one core)."""
    mv = ov_versions["openvino-int8"]
    monkeypatch.setenv("QUANTGATE_THREADS", "1")
    compiled = mlflow.pyfunc.load_model(f"models:/{TEST_MODEL}/{mv.version}").unwrap_python_model().compiled
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert compiled.get_property("ENABLE_CPU_PINNING") is False


def test_int8_is_smaller_than_fp32(ov_versions):
    sizes = {}
    for variant, mv in ov_versions.items():
        local = mlflow.artifacts.download_artifacts(f"models:/{TEST_MODEL}/{mv.version}")
        sizes[variant] = sum(p.stat().st_size for p in __import__("pathlib").Path(local).rglob("model.bin"))
    assert sizes["openvino-int8"] < 0.5 * sizes["openvino-fp32"]


def test_second_run_reuses_both(pipeline, ov_versions):
    with mlflow.start_run(run_name="test-quantise-openvino-again"):
        again = quantise(pipeline["fp32"], _recipes(), step="quantise_openvino")
    assert {v: mv.version for v, mv in again.items()} == {v: mv.version for v, mv in ov_versions.items()}


def test_permuted_rt_info_labels_refuse_to_load(ov_versions, tmp_path):
    local = tmp_path / "copy"
    shutil.copytree(
        mlflow.artifacts.download_artifacts(f"models:/{TEST_MODEL}/{ov_versions['openvino-fp32'].version}"), local
    )
    xml = next(local.glob("artifacts/**/model.xml"))
    tree = ET.parse(xml)
    node = tree.getroot().find("rt_info/quantgate/labels")
    labels = json.loads(node.get("value"))
    node.set("value", json.dumps([labels[1], labels[0], *labels[2:]]))
    tree.write(xml)
    resign(local, "model", xml.parent)  # the manifest matches: only the label check can catch it
    with pytest.raises(MlflowException, match="label order mismatch"):
        mlflow.pyfunc.load_model(str(local))


def test_evaluated_with_batch_invariance_and_gated(ov_versions, tmp_path):
    mv = ov_versions["openvino-int8"]
    with mlflow.start_run(run_name="test-evaluate-openvino"):
        metrics = evaluate(mv, latency_runs=10)
    assert 0.0 <= metrics["batch_invariance_agreement"] <= 1.0
    assert metrics["size_mb"] > 0 and metrics["parameters"] > 0
    run = MlflowClient().get_run(MlflowClient().get_model_version(TEST_MODEL, mv.version).tags["eval_run_id"])
    assert run.data.tags["runtime.inference_precision_hint"] == "f32"
    path = tmp_path / "lenient.yaml"
    path.write_text(yaml.safe_dump(LENIENT))
    result = CliRunner().invoke(
        promote.cli, ["--version", mv.version, "--model-name", TEST_MODEL, "--thresholds", str(path), "--dry-run"]
    )
    assert result.exit_code == 0 and "PASSED" in result.output, result.output


def test_a_rebuild_repeats_each_variant_byte_for_byte(pipeline, ov_versions, tmp_path):
    """With an evidence key, evaluate runs a variant only when its recipe rebuilds it byte for
    byte from the parent (flows/rebuild.py). OpenVINO numbered the nodes it created from a
    counter that runs on across a process, so a second build in one process differed in those
    names alone, and every OpenVINO variant would have been refused; they are renumbered in
    graph order now. The versions here were built earlier in this process."""
    from flows.rebuild import rebuild_problem

    parent = mlflow.artifacts.download_artifacts(f"models:/{TEST_MODEL}/{pipeline['fp32'].version}")
    for variant, mv in ov_versions.items():
        uri = f"models:/{TEST_MODEL}/{mv.version}"
        local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / variant)))
        assert rebuild_problem(local, Path(parent), mv, pipeline["fp32"], []) is None, variant
