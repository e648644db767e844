"""quantise_trt without a GPU: the flow refusing to run here with a clear message and an empty
registry, a TensorRT variant refusing to load, and the CPU half (the FP16 and INT8 Q/DQ precision
graphs logged by --precision-graph-only). The pure TensorRT checks are tested in
tests/quantgate/test_trt_*.py and tests/quantgate/backends/test_trt_graphs.py, the real graphs in
test_quantise_trt_graphs.py and real engines (``pytest -m gpu``) in test_quantise_trt_gpu.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from flows import quantise_trt
from quantgate.backends import tensorrt
from quantgate.data import news9_labels
from quantgate.trt_checks import EXIT_NO_GPU

from conftest import REPO, TEST_MODEL

LABELS = news9_labels()  # the test models are trained on news9


# --------------------------------------------------------------------------- the flow, no GPU
def _empty_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models() == []
    return uri


def _registry_is_empty(uri):
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return client.search_registered_models() == [] and client.search_model_versions() == []


def _env_for(uri: str) -> dict[str, str]:
    """This process's environment pointed at ``uri``, minus the experiment/run that earlier
    in-process tests selected (mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID, which
    names an experiment the empty store does not have)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")
    }
    return {**env, "MLFLOW_TRACKING_URI": uri, "HF_HUB_OFFLINE": "1"}


@pytest.mark.parametrize("hide", [False, True], ids=["this-machine", "cuda-visible-devices-empty"])
def test_without_a_gpu_the_flow_stops_at_once_and_registers_nothing(tmp_path, hide):
    if not hide and shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi; the hidden-GPU case covers it")
    uri = _empty_store(tmp_path)
    env = _env_for(uri)
    if hide:
        env["CUDA_VISIBLE_DEVICES"] = ""
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "flows.quantise_trt", "--model-name", TEST_MODEL],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    took = time.monotonic() - t0
    assert done.returncode == EXIT_NO_GPU, done.stderr
    assert "TensorRT engines need an NVIDIA GPU; none found: " in done.stderr
    assert "Run this flow on a machine with an NVIDIA GPU and `pip install -e .[gpu]`" in done.stderr
    assert "Traceback" not in done.stderr
    assert took < 30, took
    assert _registry_is_empty(uri)
    assert (
        MlflowClient(tracking_uri=uri).search_runs(
            [e.experiment_id for e in MlflowClient(tracking_uri=uri).search_experiments()]
        )
        == []
    )


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has an NVIDIA driver")
def test_mlflow_run_of_the_entry_point_fails_without_a_gpu(tmp_path):
    uri = _empty_store(tmp_path)
    env = _env_for(uri)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlflow",
            "run",
            str(REPO),
            "-e",
            "quantise_trt",
            "--env-manager",
            "local",
            "-P",
            f"model_name={TEST_MODEL}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "TensorRT engines need an NVIDIA GPU; none found" in done.stdout + done.stderr
    assert _registry_is_empty(uri)


def test_a_tensorrt_variant_refuses_to_load_here_instead_of_falling_back(pipeline, tmp_path):
    """An artifact that claims runtime=tensorrt: on a machine without TensorRT the pyfunc
    stops with the reason, and does not quietly run some other backend."""
    path = tmp_path / "copy"
    shutil.copytree(mlflow.artifacts.download_artifacts(f"models:/{TEST_MODEL}/{pipeline['int8'].version}"), path)
    meta_path = next(path.glob("artifacts/meta.json"))
    meta = json.loads(meta_path.read_text())
    meta["runtime"] = "tensorrt"
    meta_path.write_text(json.dumps(meta))
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(MlflowException, match="needs an NVIDIA GPU and quantgate\\[gpu\\]"):
            mlflow.pyfunc.load_model(str(path))
    else:
        with pytest.raises(MlflowException):
            mlflow.pyfunc.load_model(str(path))


# --------------------------------------------------------------------------- the CPU half
def _check_fp16_graph(local: Path) -> None:
    """The FP16 precision graph: int64 ids in, float logits out, standard ops, FP16 weights,
    LayerNorm kept in FP32 and the label order stamped."""
    import onnx

    fp16 = onnx.load(str(local / "trt-fp16.onnx"))
    types = {i.name: i.type.tensor_type.elem_type for i in (*fp16.graph.input, *fp16.graph.output)}
    assert types == {"input_ids": 7, "attention_mask": 7, "token_type_ids": 7, "logits": onnx.TensorProto.FLOAT}
    assert not any(n.domain == "com.microsoft" for n in fp16.graph.node)  # TensorRT parses standard ops only
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in fp16.graph.initializer)
    # LayerNorm stays FP32: its scale and bias are FP32, and its input comes through a Cast to FP32
    inits = {i.name: i for i in fp16.graph.initializer}
    casts = {n.output[0]: n for n in fp16.graph.node if n.op_type == "Cast"}
    layer_norms = [n for n in fp16.graph.node if n.op_type == "LayerNormalization"]
    assert layer_norms
    for ln in layer_norms:
        assert all(inits[x].data_type == onnx.TensorProto.FLOAT for x in ln.input[1:] if x in inits)
        feeder = casts.get(ln.input[0])
        assert feeder is None or next(a.i for a in feeder.attribute if a.name == "to") == onnx.TensorProto.FLOAT
    assert json.loads(next(p.value for p in fp16.metadata_props if p.key == "quantgate.labels")) == list(LABELS)


def _check_int8_graph(local: Path) -> None:
    """The INT8 precision graph: symmetric Q/DQ, none of ONNX Runtime's integer ops, and the recipe
    recorded beside it."""
    import onnx

    int8 = onnx.load(str(local / "trt-int8.onnx"))
    assert tensorrt.check_trt_qdq(local / "trt-int8.onnx") > 0
    ops = {n.op_type for n in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert not ops & {"DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul"}  # no ORT-only integer ops
    config = json.loads((local / "trt-int8.quant_config.json").read_text())
    assert config["calibration_size"] == 16 and config["seq_len"] == [8, 32, 64] and config["runtime"] == "tensorrt"


def test_precision_graph_only_logs_fp16_and_symmetric_int8_graphs_and_registers_nothing(pipeline, tmp_path):
    client = MlflowClient()
    before = len(client.search_model_versions(f"name='{TEST_MODEL}'"))
    result = CliRunner().invoke(
        quantise_trt.cli,
        [
            "--source",
            pipeline["fp32"].version,
            "--model-name",
            TEST_MODEL,
            "--precision-graph-only",
            "--calibration-size",
            "16",
            "--check-size",
            "16",
            "--seq-len",
            "8,32,64",
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(client.search_model_versions(f"name='{TEST_MODEL}'")) == before
    run = mlflow.last_active_run()
    assert run.data.tags["quantgate.precision_graph_only"] == "true"
    names = {a.path for a in client.list_artifacts(run.info.run_id, "precision_graphs")}
    assert {"precision_graphs/trt-fp16.onnx", "precision_graphs/trt-int8.onnx"} <= names
    local = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="precision_graphs", dst_path=str(tmp_path)
        )
    )

    _check_fp16_graph(local)
    _check_int8_graph(local)

    metrics = client.get_run(run.info.run_id).data.metrics
    assert metrics["trt-fp16.cpu_max_abs_prob_diff"] < 1e-2
    assert metrics["trt-int8.cpu_max_abs_prob_diff"] < 0.2
    assert 0.0 <= metrics["trt-int8.cpu_agreement"] <= 1.0
    # checked on news9 test against the gate's parity limits, both graphs on the same headlines
    assert metrics["trt-fp16.cpu_agreement"] >= 0.9
    assert metrics["trt-fp16.cpu_parent_macro_f1"] == metrics["trt-int8.cpu_parent_macro_f1"]
    assert metrics["trt-fp16.cpu_within_gate_limits"] in (0.0, 1.0)
