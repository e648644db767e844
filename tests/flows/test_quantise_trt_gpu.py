"""quantise_trt on an NVIDIA GPU (``pytest -m gpu``): real TensorRT engines are built, registered,
evaluated, loaded and served. Without an NVIDIA GPU and ``quantgate[gpu]`` every test here skips
(before the pipeline fixture trains anything) with the flow's own reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from quantgate.contract import TOKEN_INPUTS
from quantgate.data import news9_labels
from quantgate.recipes import TRT_VARIANTS
from quantgate.trt_checks import GpuInfo, logits_width, require_gpu
from quantgate.trt_shapes import TensorSpec, TrtError, check_io, specs_from_onnx

from conftest import TEST_MODEL

LABELS = news9_labels()  # the test models are trained on news9

# --------------------------------------------------------------------------- on an NVIDIA GPU (-m gpu)
# Real engines: quantise_trt builds and registers trt-fp16 and trt-int8 from the pipeline's FP32
# version, then one is evaluated, loaded and served. Without a GPU and quantgate[gpu] every test
# here skips (before the pipeline fixture trains anything) with the flow's own reason.
GPU_FLOW_TIMEOUT_S = 1800


@pytest.fixture(scope="session")
def gpu() -> GpuInfo:
    try:
        return require_gpu()
    except TrtError as exc:
        pytest.skip(f"GPU test: {exc}")


def _flow(args: list[str], cwd: Path, timeout: int = GPU_FLOW_TIMEOUT_S) -> subprocess.CompletedProcess:
    """A flow as its own process against the session's store (MLFLOW_TRACKING_URI is set by `store`)."""
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


def _trt_version(variant: str):
    found = MlflowClient().search_model_versions(f"name='{TEST_MODEL}' and tags.variant='{variant}'")
    return max(found, key=lambda mv: int(mv.version)) if found else None


@pytest.fixture(scope="module")
def trt_versions(gpu, pipeline, store):
    """`python -m flows.quantise_trt` for real on the pipeline's FP32 version: {variant: version}."""
    done = _flow(
        [
            "flows.quantise_trt",
            "--source",
            str(pipeline["fp32"].version),
            "--model-name",
            TEST_MODEL,
            "--precision",
            "all",
            "--calibration-size",
            "64",
            "--check-size",
            "64",
        ],
        store,
    )
    found = {v: _trt_version(v) for v in TRT_VARIANTS}
    assert all(found.values()), f"not registered: {found}\n{done.stdout[-3000:]}"
    return found


def _headlines(n: int) -> list[str]:
    from quantgate.data import load_dataset

    return load_dataset("news9", ("test",))["test"].texts[:n]


def _check_engine_tags(mv, variant: str, precision: str, gpu: GpuInfo, fp32) -> None:
    """A registered engine version's tags: what it is, whose child, and the GPU and TensorRT it is for."""
    import tensorrt

    tags = mv.tags
    assert (tags["variant"], tags["precision"], tags["runtime"], tags["device"]) == (
        variant,
        precision,
        "tensorrt",
        "gpu",
    )
    assert tags["parent_version"] == str(fp32.version)
    assert tags["gpu_name"] == gpu.name and tags["compute_capability"] == gpu.compute_capability
    assert tags["tensorrt_version"] == tensorrt.__version__
    assert tags["cuda_version"] and tags["cuda_driver_version"]
    assert json.loads(tags["profile"]) == {"batch": [1, 8, 32], "seq_len": [8, 64, 128]}
    assert len(tags["recipe_sha256"]) == 64 and len(tags["manifest_sha256"]) == 64


def _check_engine_meta(mv, variant: str, gpu: GpuInfo, fp32, dst: Path) -> list[TensorSpec]:
    """engine_meta.json inside the artifact, read back from the engine itself; returns the engine's I/O."""
    import tensorrt

    local = Path(mlflow.artifacts.download_artifacts(f"models:/{TEST_MODEL}/{mv.version}", dst_path=str(dst)))
    meta = json.loads(next(local.glob("artifacts/*/engine_meta.json")).read_text())
    assert next(local.glob("artifacts/*/model.plan")).stat().st_size > 0
    assert meta["labels"] == list(LABELS) and meta["variant"] == variant
    assert meta["parent"] == {"name": TEST_MODEL, "version": str(fp32.version)}
    assert (meta["compute_capability"], meta["tensorrt_version"]) == (gpu.compute_capability, tensorrt.__version__)
    engine_specs = [TensorSpec.from_dict(d) for d in meta["io"]]
    check_io(engine_specs, TOKEN_INPUTS)
    assert logits_width(engine_specs) == len(LABELS)
    return engine_specs


def _check_engine_io_is_the_graphs(mv, variant: str, engine_specs: list[TensorSpec], dst: Path) -> None:
    """The engine's I/O is the precision graph's, the ids as int64 or int32."""
    import onnx

    graph_dir = Path(
        mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="precision_graphs", dst_path=str(dst))
    )
    graph = {
        s.name: s for s in specs_from_onnx(onnx.load(str(graph_dir / f"{variant}.onnx"), load_external_data=False))
    }
    assert set(graph) == {s.name for s in engine_specs}
    for spec in engine_specs:
        assert spec.dtype == graph[spec.name].dtype or (spec.mode == "input" and spec.dtype == "int32"), spec
        assert len(spec.shape) == len(graph[spec.name].shape), spec


@pytest.mark.gpu
def test_gpu_quantise_trt_registers_fp16_and_int8_engines_for_this_gpu(gpu, trt_versions, pipeline, store, tmp_path):
    client = MlflowClient()
    fp32 = pipeline["fp32"]
    for variant, precision in (("trt-fp16", "fp16"), ("trt-int8", "int8")):
        mv = trt_versions[variant]
        _check_engine_tags(mv, variant, precision, gpu, fp32)
        engine_specs = _check_engine_meta(mv, variant, gpu, fp32, tmp_path / variant)
        _check_engine_io_is_the_graphs(mv, variant, engine_specs, tmp_path / f"{variant}-graph")
        # the flow ran the engine against the parent on validation headlines
        metrics = client.get_run(mv.run_id).data.metrics
        assert 0.5 <= metrics[f"{variant}.engine_agreement"] <= 1.0
        assert metrics[f"{variant}.engine_max_abs_prob_diff"] < (0.05 if variant == "trt-fp16" else 0.2)
    # a second run on the same GPU reuses both versions instead of registering them again
    before = len(client.search_model_versions(f"name='{TEST_MODEL}'"))
    again = _flow(
        [
            "flows.quantise_trt",
            "--source",
            str(fp32.version),
            "--model-name",
            TEST_MODEL,
            "--calibration-size",
            "64",
            "--check-size",
            "64",
        ],
        store,
    )
    assert again.stdout.count("reusing ") == 2, again.stdout
    assert len(client.search_model_versions(f"name='{TEST_MODEL}'")) == before


@pytest.mark.gpu
def test_gpu_a_trt_version_is_evaluated_by_the_evaluate_flow(gpu, trt_versions, store):
    mv = trt_versions["trt-fp16"]
    _flow(["flows.evaluate", "--version", str(mv.version), "--model-name", TEST_MODEL, "--latency-runs", "20"], store)
    mv = MlflowClient().get_model_version(TEST_MODEL, mv.version)
    assert mv.tags["eval_status"] == "complete"
    assert mv.tags["eval_manifest_sha256"] == mv.tags["manifest_sha256"]
    recorded = MlflowClient().get_run(mv.tags["eval_run_id"]).data.metrics
    for key in ("macro_f1", "accuracy", "size_mb", "latency_p50_ms", "latency_p95_ms", "top1_agreement"):
        assert key in recorded, key
    assert recorded["top1_agreement"] >= 0.5
    assert recorded["latency_p50_ms"] <= recorded["latency_p95_ms"]


@pytest.mark.gpu
def test_gpu_trt_versions_load_as_pyfunc_and_agree_with_the_parent(gpu, trt_versions, pipeline):
    import pandas as pd

    # 129 rows: five chunks of the batch profile (max 32), one row shorter than seq_len.min. The tiny
    # pipeline model's logits are close together (top-2 margins ~0.01), so INT8 flips near-ties:
    # on the CPU its Q/DQ graph agrees with the parent on ~70% of test headlines; "most" is > 50%.
    texts = [*_headlines(128), "Rates"]
    frame = pd.DataFrame({"text": texts})
    parent = mlflow.pyfunc.load_model(f"models:/{TEST_MODEL}/{pipeline['fp32'].version}").predict(frame)
    for variant, mv in trt_versions.items():
        got = mlflow.pyfunc.load_model(f"models:/{TEST_MODEL}/{mv.version}").predict(frame)
        assert len(got) == len(texts)
        assert set(got["label"]) <= set(LABELS)
        assert all(0.0 <= p <= 1.0 for p in got["probability"])
        agree = float(np.mean(got["label"].to_numpy() == parent["label"].to_numpy()))
        assert agree >= 0.5, (variant, agree)


@pytest.mark.gpu
def test_gpu_a_trt_version_is_served_by_mlflow_models_serve(gpu, trt_versions, store):
    import pandas as pd
    import requests

    from serve_helpers import start_server, stop, wait_until_up

    mv = trt_versions["trt-fp16"]
    headlines = ["Central bank holds rates as inflation cools", "Wildfire season lengthens as planet warms"]
    log_path = store / "serve-trt.log"
    proc, base, log = start_server(f"models:/{TEST_MODEL}/{mv.version}", log_path)
    try:
        assert wait_until_up(proc, base, log_path), (
            f"server exited with {proc.returncode}: {log_path.read_text()[-3000:]}"
        )
        r = requests.post(
            f"{base}/invocations", json={"dataframe_records": [{"text": t} for t in headlines]}, timeout=120
        )
        assert r.status_code == 200, r.text
        rows = r.json()["predictions"]
        assert len(rows) == 2 and all(row["label"] in LABELS and 0.0 <= row["probability"] <= 1.0 for row in rows)
        local = mlflow.pyfunc.load_model(f"models:/{TEST_MODEL}/{mv.version}").predict(
            pd.DataFrame({"text": headlines})
        )
        assert [row["label"] for row in rows] == local["label"].tolist()
    finally:
        stop(proc, log)
