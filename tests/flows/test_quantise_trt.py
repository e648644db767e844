"""quantise_trt without a GPU: the pure functions that decide whether a TensorRT engine labels
correctly (over a fake engine I/O description, which is what they take, and over the I/O
description of the real FP16/INT8 precision graphs of the `pipeline` fixture's model, run
through ONNX Runtime), the flow refusing to run here with a clear message and an empty
registry, and the CPU half (the FP16 and INT8 Q/DQ precision graphs).

Tests marked ``gpu`` (``pytest -m gpu``) build, register, evaluate, load and serve real
TensorRT engines; without an NVIDIA GPU and ``quantgate[gpu]`` they skip with the reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from evaluators.metrics import prob_deltas, softmax
from flows import quantise_trt
from quantgate.backends import tensorrt
from quantgate.contract import TOKEN_INPUTS
from quantgate.data import news9_labels
from quantgate.recipes import TRT_VARIANTS, RecipeError, TrtFp16Recipe, TrtInt8Recipe
from quantgate.trt_checks import (
    EXIT_NO_GPU,
    GpuInfo,
    bind_inputs,
    check_compatible,
    check_label_map,
    gpu_from_probe,
    logits_to_labels,
    logits_width,
    read_logits,
    require_gpu,
)
from quantgate.trt_shapes import (
    Profile,
    ShapeRange,
    TensorSpec,
    TrtError,
    check_io,
    check_profile_fits,
    fit_to_profile,
    pad_values_for,
    parse_range,
    specs_from_onnx,
)
from registry_hooks.gate import parity as gate_parity

from conftest import REPO, TEST_MODEL

LABELS = news9_labels()  # the test models are trained on news9

PROFILE = Profile(ShapeRange(1, 8, 32, "batch"), ShapeRange(8, 64, 128, "seq_len"))
# An engine whose tensors are declared in an order unlike the tokenizer's, with mixed dtypes.
SPECS = [
    TensorSpec("logits", "output", "float32", (-1, 9)),
    TensorSpec("token_type_ids", "input", "int32", (-1, -1)),
    TensorSpec("input_ids", "input", "int32", (-1, -1)),
    TensorSpec("attention_mask", "input", "int64", (-1, -1)),
]
ENV = {"gpu_name": "NVIDIA H100", "compute_capability": "9.0", "tensorrt_version": "11.0.0"}


def _feed(batch=2, seq=10, vocab=30000):
    rng = np.random.default_rng(0)
    return {  # the tokenizer's order, int64 as the pyfunc encodes
        "input_ids": rng.integers(0, vocab, (batch, seq), dtype=np.int64),
        "attention_mask": np.ones((batch, seq), dtype=np.int64),
        "token_type_ids": np.zeros((batch, seq), dtype=np.int64),
    }


# --------------------------------------------------------------------------- binding
def test_inputs_are_bound_by_name_with_the_engines_dtype_in_any_order():
    feed = _feed()
    for specs in (SPECS, list(reversed(SPECS))):
        bound = bind_inputs(specs, dict(reversed(list(feed.items()))), PROFILE)
        assert set(bound) == {"input_ids", "attention_mask", "token_type_ids"}
        assert bound["input_ids"].dtype == np.int32 and bound["token_type_ids"].dtype == np.int32
        assert bound["attention_mask"].dtype == np.int64
        for name in feed:  # each buffer holds its own tensor's values, not a neighbour's
            assert np.array_equal(bound[name], feed[name])
        assert all(a.flags["C_CONTIGUOUS"] for a in bound.values())


def test_ids_that_do_not_fit_int32_are_refused_not_wrapped():
    feed = _feed()
    feed["input_ids"][0, 3] = 2**31  # wraps to -2**31 under a plain astype
    with pytest.raises(TrtError, match="do not fit the engine's int32"):
        bind_inputs(SPECS, feed, PROFILE)
    feed = _feed()
    feed["input_ids"] = feed["input_ids"].astype(np.float32)
    with pytest.raises(TrtError, match="must be integers"):
        bind_inputs(SPECS, feed, PROFILE)


def test_a_missing_or_an_unexpected_input_name_is_refused():
    feed = _feed()
    del feed["token_type_ids"]
    with pytest.raises(TrtError, match=r"needs input\(s\) \['token_type_ids'\]"):
        bind_inputs(SPECS, feed, PROFILE)
    feed = {**_feed(), "position_ids": np.zeros((2, 10), dtype=np.int64)}
    with pytest.raises(TrtError, match=r"\['position_ids'\], which the engine does not take"):
        bind_inputs(SPECS, feed, PROFILE)
    with pytest.raises(TrtError, match="several tensors"):
        bind_inputs([*SPECS, TensorSpec("input_ids", "input", "int64", (-1, -1))], _feed(), PROFILE)


def test_the_engine_io_must_be_exactly_the_expected_names():
    check_io(SPECS, ["input_ids", "attention_mask", "token_type_ids"])
    with pytest.raises(TrtError, match=r"missing \['token_type_ids'\]"):
        check_io(SPECS[:1] + SPECS[2:], ["input_ids", "attention_mask", "token_type_ids"])
    with pytest.raises(TrtError, match=r"unexpected \['probs'\]"):
        check_io(
            [*SPECS, TensorSpec("probs", "output", "float32", (-1, 9))],
            ["input_ids", "attention_mask", "token_type_ids"],
        )
    with pytest.raises(TrtError, match="mode"):
        TensorSpec("x", "inout", "int32", (-1,))


def test_shapes_are_checked_against_the_profile_and_each_other():
    with pytest.raises(TrtError, match="outside the engine's profile"):
        bind_inputs(SPECS, _feed(batch=33), PROFILE)
    with pytest.raises(TrtError, match="outside the engine's profile"):
        bind_inputs(SPECS, _feed(seq=4), PROFILE)
    feed = _feed()
    feed["attention_mask"] = feed["attention_mask"][:, :9]
    with pytest.raises(TrtError, match="disagree in shape"):
        bind_inputs(SPECS, feed, PROFILE)
    feed = _feed()
    feed["input_ids"] = feed["input_ids"][0]
    with pytest.raises(TrtError, match="does not fit the engine's"):
        bind_inputs(SPECS, feed, PROFILE)


# --------------------------------------------------------------------------- profiles
def test_profiles_need_min_le_opt_le_max():
    assert parse_range("1, 8,32", "batch") == ShapeRange(1, 8, 32)
    for bad, match in (
        ("8,1,32", "min <= opt <= max"),
        ("1,64,32", "min <= opt <= max"),
        ("0,8,32", "positive"),
        ("1,8", "three values"),
        ("1,x,8", "integers"),
    ):
        with pytest.raises(TrtError, match=match):
            parse_range(bad, "batch")
    with pytest.raises(TrtError, match="different optimisation profiles"):
        Profile.from_engine({"input_ids": ((1, 8), (8, 64), (32, 128)), "attention_mask": ((1, 8), (8, 64), (16, 128))})
    got = Profile.from_engine(
        {"input_ids": ((1, 8), (8, 64), (32, 128)), "attention_mask": ((1, 8), (8, 64), (32, 128))}
    )
    assert got == PROFILE and got.shapes() == ((1, 8), (8, 64), (32, 128))
    with pytest.raises(TrtError, match="below the model's max_length 128"):
        check_profile_fits(Profile(ShapeRange(1, 8, 32), ShapeRange(8, 64, 96)), 128)


def test_batches_are_split_and_padded_to_fit_the_profile_never_cut():
    feed = _feed(batch=70, seq=3)
    chunks = fit_to_profile(feed, PROFILE, pad_values_for(0))
    assert [real for _, real in chunks] == [32, 32, 6]
    first, _ = chunks[0]
    assert first["input_ids"].shape == (32, 8)
    assert np.array_equal(first["input_ids"][:, :3], feed["input_ids"][:32])
    assert not first["attention_mask"][:, 3:].any() and not first["input_ids"][:, 3:].any()
    rows = fit_to_profile(
        _feed(batch=1, seq=10), Profile(ShapeRange(4, 8, 32), ShapeRange(8, 64, 128)), pad_values_for(0)
    )
    assert rows[0][1] == 1 and rows[0][0]["input_ids"].shape == (4, 10) and not rows[0][0]["attention_mask"][1:].any()
    with pytest.raises(TrtError, match="above the engine's profile max 128"):
        fit_to_profile(_feed(seq=129), PROFILE, pad_values_for(0))


# --------------------------------------------------------------------------- labels
def test_the_label_map_must_match_the_parent_order_and_the_logits_width():
    labels = list(LABELS)
    check_label_map(labels, labels, logits_width(SPECS))
    swapped = [labels[1], labels[0], *labels[2:]]
    with pytest.raises(TrtError, match="label order mismatch"):
        check_label_map(swapped, labels, 9)
    with pytest.raises(TrtError, match="outputs 8 logits for 9 labels"):
        check_label_map(labels, labels, 8)
    with pytest.raises(TrtError, match="no output named"):
        logits_width(SPECS[1:])


def test_logits_map_to_labels_by_index_and_the_width_is_checked():
    logits = np.full((3, 9), -1.0, dtype=np.float16)
    for row, j in enumerate((4, 0, 8)):
        logits[row, j] = 5.0
    assert logits_to_labels(logits, list(LABELS)) == ["security", "World", "climate"]
    with pytest.raises(TrtError, match="cannot be mapped"):
        logits_to_labels(logits[:, :8], list(LABELS))
    assert read_logits({"logits": logits}, 3, list(LABELS)).dtype == np.float32
    with pytest.raises(TrtError, match=r"expected \(2, 9\)"):
        read_logits({"logits": logits}, 2, list(LABELS))
    with pytest.raises(TrtError, match="no 'logits' output"):
        read_logits({"output_0": logits}, 3, list(LABELS))


# --------------------------------------------------------------------------- compatibility, GPU
def test_an_engine_from_another_gpu_or_tensorrt_is_refused_with_a_rebuild_hint():
    check_compatible(ENV, dict(ENV))
    with pytest.raises(
        TrtError, match=r"compute capability 9.0 \(NVIDIA H100\), this GPU is 8.6 \(NVIDIA A10\).*rebuild"
    ):
        check_compatible(ENV, {**ENV, "compute_capability": "8.6", "gpu_name": "NVIDIA A10"})
    with pytest.raises(TrtError, match="built with TensorRT 11.0.0, this machine has 11.1.0.*quantise_trt"):
        check_compatible(ENV, {**ENV, "tensorrt_version": "11.1.0"})


def test_gpu_detection_reads_nvidia_smi_and_cuda_visible_devices():
    assert gpu_from_probe(None, None, None, "") == "nvidia-smi is not installed (no NVIDIA driver)"
    assert "hides every GPU" in gpu_from_probe("", "/usr/bin/nvidia-smi", 0, "NVIDIA H200, 9.0, 560.1")
    assert "nvidia-smi failed (NVIDIA-SMI has failed" in gpu_from_probe(
        None, "/x", 9, "NVIDIA-SMI has failed because it couldn't communicate"
    )
    assert gpu_from_probe(None, "/x", 0, "") == "nvidia-smi lists no GPU"
    assert gpu_from_probe("0", "/x", 0, "NVIDIA H200, 9.0, 560.35.03\nNVIDIA H200, 9.0, 560.35.03\n") == GpuInfo(
        "NVIDIA H200", "9.0", "560.35.03"
    )
    with pytest.raises(TrtError, match="^TensorRT engines need an NVIDIA GPU; none found: no driver. Run this flow"):
        require_gpu(probe=lambda: "no driver", find_spec=lambda m: object())
    with pytest.raises(TrtError, match=r"found NVIDIA H200 .* \['tensorrt', 'pycuda'\] not installed.*\[gpu\]"):
        require_gpu(probe=lambda: GpuInfo("NVIDIA H200", "9.0", "560"), find_spec=lambda m: None)
    assert (
        require_gpu(probe=lambda: GpuInfo("NVIDIA H200", "9.0", "560"), find_spec=lambda m: object()).name
        == "NVIDIA H200"
    )


# --------------------------------------------------------------------------- recipes
def test_trt_recipes_are_validated_and_the_profile_is_part_of_their_identity():
    fp16, int8 = quantise_trt.recipes_for("all", batch="1,8,32", seq_len="8,64,128", calibration_size=64)
    assert (fp16.variant, fp16.precision, fp16.runtime) == ("trt-fp16", "fp16", "tensorrt")
    assert int8.calibration_size == 64 and int8.batch == (1, 8, 32) and int8.profile() == PROFILE
    assert fp16.sha256("x") != TrtFp16Recipe(batch=(1, 8, 64)).sha256("x")
    for bad, match in (({"batch": "4,2,8"}, "batch"), ({"seq_len": "8,64"}, "seq_len"), ({"preset": "avx2"}, "preset")):
        with pytest.raises(RecipeError, match=match):
            TrtFp16Recipe(**bad)
    with pytest.raises(RecipeError, match="LayerNormalization and Softmax"):
        TrtFp16Recipe(keep_fp32_ops=("Softmax",))
    with pytest.raises(RecipeError, match="calibration_size"):
        TrtInt8Recipe(calibration_size=2)
    # Q/DQ on the weight layers' inputs only, the residual stream in float, the head INT8 too
    assert (int8.qdq_matmul_outputs, int8.float_residual, int8.op_types) == (False, True, ("MatMul", "Gemm"))
    assert int8.sha256("x") != TrtInt8Recipe(calibration_size=64, float_residual=False).sha256("x")
    for bad, match in (
        ({"qdq_matmul_outputs": "no"}, "qdq_matmul_outputs"),
        ({"float_residual": 1}, "float_residual"),
        ({"op_types": ("Gemm",)}, "op_types"),
        ({"op_types": ["MatMul"]}, "op_types"),
        ({"op_types": ("MatMul", "Conv")}, "op_types"),
    ):
        with pytest.raises(RecipeError, match=match):
            TrtInt8Recipe(**bad)


def test_an_asymmetric_qdq_graph_is_refused(tmp_path):
    from onnx import TensorProto, helper, numpy_helper, save

    scale = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "s")
    zp = numpy_helper.from_array(np.array(3, dtype=np.uint8), "zp")
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q0"),
            helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq0"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        initializer=[scale, zp],
    )
    save(helper.make_model(graph), str(tmp_path / "asym.onnx"))
    with pytest.raises(TrtError, match="TensorRT needs symmetric INT8"):
        tensorrt.check_trt_qdq(tmp_path / "asym.onnx")


def test_readers_other_than_the_matmuls_get_the_float_tensor_back():
    from onnx import TensorProto, helper, numpy_helper

    s = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "s")
    zp = numpy_helper.from_array(np.array(0, dtype=np.int8), "zp")
    w = numpy_helper.from_array(np.ones((2, 2), dtype=np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="qx"),
            helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dqx"),
            helper.make_node("MatMul", ["xd", "w"], ["m"], name="mm"),
            helper.make_node("Add", ["m", "xd"], ["r"], name="residual"),  # reads x, not its INT8 copy
            helper.make_node("QuantizeLinear", ["r", "s", "zp"], ["rq"], name="qr"),
            helper.make_node("DequantizeLinear", ["rq", "s", "zp"], ["rd"], name="dqr"),
            helper.make_node("Relu", ["rd"], ["y"], name="only_reader"),
        ],  # no MatMul: pair dropped
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        initializer=[s, zp, w],
    )
    model = helper.make_model(graph)
    assert tensorrt.float_readers(model) == 2
    nodes = {n.name: n for n in model.graph.node}
    assert list(nodes["residual"].input) == ["m", "x"] and list(nodes["mm"].input) == ["xd", "w"]
    assert list(nodes["only_reader"].input) == ["r"] and not {"qr", "dqr"} & set(nodes)


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
def test_precision_graph_only_logs_fp16_and_symmetric_int8_graphs_and_registers_nothing(pipeline, tmp_path):
    import onnx

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

    int8 = onnx.load(str(local / "trt-int8.onnx"))
    assert tensorrt.check_trt_qdq(local / "trt-int8.onnx") > 0
    ops = {n.op_type for n in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert not ops & {"DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul"}  # no ORT-only integer ops
    config = json.loads((local / "trt-int8.quant_config.json").read_text())
    assert config["calibration_size"] == 16 and config["seq_len"] == [8, 32, 64] and config["runtime"] == "tensorrt"

    metrics = client.get_run(run.info.run_id).data.metrics
    assert metrics["trt-fp16.cpu_max_abs_prob_diff"] < 1e-2
    assert metrics["trt-int8.cpu_max_abs_prob_diff"] < 0.2
    assert 0.0 <= metrics["trt-int8.cpu_agreement"] <= 1.0
    # checked on news9 test against the gate's parity limits, both graphs on the same headlines
    assert metrics["trt-fp16.cpu_agreement"] >= 0.9
    assert metrics["trt-fp16.cpu_parent_macro_f1"] == metrics["trt-int8.cpu_parent_macro_f1"]
    assert metrics["trt-fp16.cpu_within_gate_limits"] in (0.0, 1.0)


def test_parity_is_judged_by_the_gates_limits_on_the_f1_drops_upper_bound():
    from registry_hooks.gate.thresholds import Thresholds

    rng = np.random.default_rng(0)
    y = list(rng.integers(0, 9, size=400))
    parent = np.eye(9)[y] * 5 + rng.normal(0, 1, size=(400, 9))  # a parent that is mostly right
    limits = Thresholds(min_top1_agreement=0.95, max_macro_f1_drop_points=2.0)
    same = gate_parity.parity(parent, parent + 1e-4, y, limits)
    assert same["agreement"] == 1.0 and same["f1_drop_points"] == 0.0 and same["within_gate_limits"] == 1.0
    swapped = parent.copy()
    swapped[:, [0, 1]] = swapped[:, [1, 0]]  # two labels' logits exchanged: a mislabelling graph
    bad = gate_parity.parity(parent, swapped, y, limits)
    assert bad["agreement"] < 0.95 and bad["f1_drop_points"] > 2.0 and bad["within_gate_limits"] == 0.0
    # a small drop whose interval still reaches past the limit fails on the upper bound
    noisy = parent.copy()
    flip = rng.choice(400, size=8, replace=False)
    noisy[flip] = np.roll(noisy[flip], 1, axis=1)
    near = gate_parity.parity(parent, noisy, y, Thresholds(min_top1_agreement=0.9, max_macro_f1_drop_points=2.5))
    assert near["f1_drop_points"] < 2.5 < near["f1_drop_ci_high"] and near["within_gate_limits"] == 0.0


# --------------------------------------------------------------------------- the real graph's I/O, on the CPU
# The engine is built from these graphs, so its I/O description is theirs (TensorRT may take the
# token ids as int32): bind_inputs, check_io and check_label_map are run here against it, and the
# bound arrays through ONNX Runtime on the graph itself, as TrtClassifier.logits runs the engine.
GRAPH_IO = [
    ("input_ids", "input", "int64", (-1, -1)),
    ("attention_mask", "input", "int64", (-1, -1)),
    ("token_type_ids", "input", "int64", (-1, -1)),
    ("logits", "output", "float32", (-1, len(LABELS))),
]
FP16_LOGITS_ATOL = 1e-3  # FP16 graph (LayerNorm/Softmax FP32) vs the torch FP32 parent: ~7e-5 seen


def _int32_input_graph(path: Path, out: Path) -> Path:
    """The same graph taking int32 ids (a Cast to int64 in front), as an engine built with int32
    inputs takes them."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    casts = []
    for value in model.graph.input:
        if value.type.tensor_type.elem_type != TensorProto.INT64:
            continue
        inner = f"{value.name}__int64"
        for node in model.graph.node:
            for i, name in enumerate(node.input):
                if name == value.name:
                    node.input[i] = inner
        value.type.tensor_type.elem_type = TensorProto.INT32
        casts.append(
            helper.make_node("Cast", [value.name], [inner], name=f"{value.name}_to_int64", to=TensorProto.INT64)
        )
    for cast in reversed(casts):
        model.graph.node.insert(0, cast)
    onnx.save(model, str(out))
    return out


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _positional_binder(specs, feed, profile=None):
    """The seed lab's binder: the feed's arrays in the feed's order, to the engine's inputs in its order."""
    ins = [s for s in specs if s.mode == "input"]
    return {s.name: np.ascontiguousarray(np.asarray(a).astype(s.dtype)) for s, a in zip(ins, feed.values())}


def _engine_logits(session, specs, encoded, profile, labels, pad_id, binder=bind_inputs):
    """What TrtClassifier.logits does, with ONNX Runtime running the graph in the engine's place."""
    out = []
    for chunk, real in fit_to_profile(encoded, profile, pad_values_for(pad_id)):
        bound = binder(specs, chunk, profile)
        rows = next(iter(bound.values())).shape[0]
        outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, bound)))
        out.append(read_logits(outputs, rows, labels)[:real])
    return np.concatenate(out)


@pytest.fixture(scope="module")
def real_graphs(pipeline, tmp_path_factory):
    """The registered FP32 parent of the `pipeline` fixture and the FP16 / INT8 precision graphs
    the TensorRT backend's precision_graph builds from it (exported, converted, label order stamped)."""
    import onnx

    from flows.quantise import load_parent
    from quantgate.data import load_dataset

    workdir = tmp_path_factory.mktemp("trt-graphs")
    parent = load_parent(pipeline["fp32"])
    fp16, int8 = quantise_trt.recipes_for("all", calibration_size=16)
    paths = {
        "trt-fp16": tensorrt.precision_graph(fp16, parent, workdir),
        "trt-int8": tensorrt.precision_graph(int8, parent, workdir),
    }
    texts = load_dataset("news9", ("test",))["test"].texts[:40]
    texts = [*texts, "Rates"]  # 41 rows: two engine calls (batch max 32)
    return {
        "parent": parent,
        "paths": paths,
        "profile": fp16.profile(),
        "texts": texts,
        "models": {v: onnx.load(str(p)) for v, p in paths.items()},
        "workdir": workdir,
    }


def test_specs_are_read_from_the_real_fp16_and_int8_graphs(real_graphs):
    for variant, model in real_graphs["models"].items():
        specs = specs_from_onnx(model)
        assert [(s.name, s.mode, s.dtype, s.shape) for s in specs] == GRAPH_IO, variant
        check_io(specs, TOKEN_INPUTS)
        assert logits_width(specs) == len(real_graphs["parent"].labels)
        assert specs_from_onnx(real_graphs["paths"][variant]) == specs  # a path reads the same
        as32 = specs_from_onnx(model, int_dtype="int32")
        assert [s.dtype for s in as32] == ["int32", "int32", "int32", "float32"]  # outputs keep their type
        assert [(s.name, s.shape) for s in as32] == [(s.name, s.shape) for s in specs]
    with pytest.raises(TrtError, match="must be an integer dtype"):
        specs_from_onnx(real_graphs["models"]["trt-fp16"], int_dtype="float16")


def test_int8_qdq_sits_on_the_weight_layers_inputs_only(real_graphs):
    """Every weight MatMul/Gemm is INT8, and a dequantised activation is read by MatMuls/Gemms
    only: no Q/DQ on their outputs, the residual Adds read the LayerNorm outputs in float."""
    import onnx

    model, path = real_graphs["models"]["trt-int8"], real_graphs["paths"]["trt-int8"]
    plain = onnx.load(str(real_graphs["workdir"] / "model.opset17.onnx"))  # the export it was made from
    weights = {i.name for i in plain.graph.initializer}
    weight_layers = [n for n in plain.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights]
    assert len(weight_layers) >= 8  # Q, K, V, attention out, FFN in/out, pooler, classifier
    assert tensorrt.int8_weight_matmuls(path) == (len(weight_layers), 0)
    producer = {o: n for n in model.graph.node for o in n.output}
    dq_out = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    for n in model.graph.node:
        if n.op_type not in ("MatMul", "Gemm"):
            assert not dq_out & set(n.input), f"{n.name} ({n.op_type}) reads a dequantised tensor"
        if n.op_type == "QuantizeLinear" and n.input[0] in producer:
            assert producer[n.input[0]].op_type not in ("MatMul", "Gemm"), f"{n.name} quantises a MatMul output"
    layer_norms = {n.output[0] for n in model.graph.node if n.op_type == "LayerNormalization"}
    assert any(n.op_type == "Add" and layer_norms & set(n.input) for n in model.graph.node)  # the float residual
    assert not any(n.domain == "com.microsoft" for n in model.graph.node)


def test_int64_ids_bind_to_int64_and_int32_engines_and_give_the_parents_logits(real_graphs):
    parent, profile = real_graphs["parent"], real_graphs["profile"]
    encoded = parent.encode(real_graphs["texts"])
    assert {a.dtype for a in encoded.values()} == {np.dtype(np.int64)}  # what the pyfunc feeds
    reference = parent.infer(encoded)  # the parent pyfunc's torch backend

    # int64 engine: bound as int64, run on the real FP16 graph -> the parent's logits
    fp16 = real_graphs["paths"]["trt-fp16"]
    specs64 = specs_from_onnx(real_graphs["models"]["trt-fp16"])
    head = {n: a[: profile.batch.max] for n, a in encoded.items()}  # one engine call's worth
    bound = bind_inputs(specs64, head, profile)
    assert {n: a.dtype.name for n, a in bound.items()} == dict.fromkeys(TOKEN_INPUTS, "int64")
    got = _engine_logits(_session(fp16), specs64, encoded, profile, parent.labels, parent.tokenizer.pad_token_id)
    assert got.shape == reference.shape
    np.testing.assert_allclose(got, reference, atol=FP16_LOGITS_ATOL, rtol=0)
    short = parent.encode(["Rates", "Oil"])  # 3 tokens: padded to seq_len.min 8 (mask 0) to fit the profile
    np.testing.assert_allclose(
        _engine_logits(_session(fp16), specs64, short, profile, parent.labels, parent.tokenizer.pad_token_id),
        parent.infer(short),
        atol=FP16_LOGITS_ATOL,
        rtol=0,
    )

    # int32 engine: the override describes exactly the graph that takes int32 ids ...
    fp16_int32 = _int32_input_graph(fp16, real_graphs["workdir"] / "trt-fp16.int32-inputs.onnx")
    specs32 = specs_from_onnx(real_graphs["models"]["trt-fp16"], int_dtype="int32")
    assert specs32 == specs_from_onnx(fp16_int32)
    bound = bind_inputs(specs32, head, profile)
    assert {n: a.dtype.name for n, a in bound.items()} == dict.fromkeys(TOKEN_INPUTS, "int32")
    for name in TOKEN_INPUTS:  # the bytes the engine reads as int32 are the ids, not halves of int64s
        assert np.array_equal(np.frombuffer(bound[name].tobytes(), np.int32).reshape(head[name].shape), head[name])
        if head[name].any():  # (all-zero token types read the same either way)
            assert not np.array_equal(
                np.frombuffer(head[name].tobytes(), np.int32)[: head[name].size], head[name].ravel()
            )
    # ... it refuses the tokenizer's int64 arrays unbound, and gives the same logits once bound
    session32 = _session(fp16_int32)
    with pytest.raises(Exception, match=r"tensor\(int64\).*tensor\(int32\)"):
        session32.run(None, {n: encoded[n] for n in TOKEN_INPUTS})
    np.testing.assert_array_equal(
        _engine_logits(session32, specs32, encoded, profile, parent.labels, parent.tokenizer.pad_token_id), got
    )

    # the INT8 Q/DQ graph binds the same way and stays close to the parent
    int8 = _engine_logits(
        _session(real_graphs["paths"]["trt-int8"]),
        specs_from_onnx(real_graphs["models"]["trt-int8"]),
        encoded,
        profile,
        parent.labels,
        parent.tokenizer.pad_token_id,
    )
    assert prob_deltas(softmax(reference), softmax(int8))[0] < 0.2


def _clear_rows(reference: np.ndarray, atol: float) -> np.ndarray:
    """Rows whose top label wins by more than ``atol`` twice over: no rounding can flip them."""
    top2 = np.sort(reference, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) > 2 * atol


def test_a_permuted_feed_binds_by_name_where_a_positional_binder_mislabels(real_graphs):
    parent, profile = real_graphs["parent"], real_graphs["profile"]
    pad_id = parent.tokenizer.pad_token_id
    encoded = parent.encode(real_graphs["texts"])  # the tokenizer's own order
    specs = specs_from_onnx(real_graphs["models"]["trt-fp16"])
    engine_order = [s.name for s in specs if s.mode == "input"]
    assert list(encoded) != engine_order  # (input_ids, token_type_ids, attention_mask) vs the graph's
    in_engine_order = {n: encoded[n] for n in engine_order}
    reversed_feed = {n: encoded[n] for n in reversed(list(encoded))}
    session = _session(real_graphs["paths"]["trt-fp16"])
    reference = parent.infer(encoded)
    clear = _clear_rows(reference, FP16_LOGITS_ATOL)
    assert clear.sum() >= len(clear) // 2

    head = {n: a[: profile.batch.max] for n, a in in_engine_order.items()}  # one engine call's worth
    canonical = bind_inputs(specs, head, profile)
    for feed, engine in (
        (encoded, specs),
        (reversed_feed, specs),
        (in_engine_order, specs[::-1]),
        (reversed_feed, specs[::-1]),
    ):
        bound = bind_inputs(engine, {n: a[: profile.batch.max] for n, a in feed.items()}, profile)
        assert all(np.array_equal(bound[n], canonical[n]) for n in canonical)
        logits = _engine_logits(session, engine, feed, profile, parent.labels, pad_id)
        np.testing.assert_allclose(logits, reference, atol=FP16_LOGITS_ATOL, rtol=0)
        assert np.array_equal(logits.argmax(1)[clear], reference.argmax(1)[clear])

    # A positional binder is right only while the feed happens to be in the engine's order;
    # with the tokenizer's order it hands the attention mask the token types (all 0) and the
    # token types the mask: the logits move far past FP16's error and clear-cut headlines flip.
    positional = _engine_logits(session, specs, in_engine_order, profile, parent.labels, pad_id, _positional_binder)
    np.testing.assert_allclose(positional, reference, atol=FP16_LOGITS_ATOL, rtol=0)
    wrong = _engine_logits(session, specs, encoded, profile, parent.labels, pad_id, _positional_binder)
    assert np.abs(wrong - reference).max() > 10 * FP16_LOGITS_ATOL
    assert not np.array_equal(wrong.argmax(1)[clear], reference.argmax(1)[clear])


def test_a_swapped_or_misfitting_label_map_is_refused_against_the_registered_parent(real_graphs):
    from quantgate.serving_model import read_label_map

    parent = real_graphs["parent"]
    labels = read_label_map(parent.artifact_paths["label_map"])  # label_map.json of the registered FP32 version
    assert labels == parent.labels and len(labels) == len(LABELS)
    for model in real_graphs["models"].values():
        width = logits_width(specs_from_onnx(model))
        stamped = json.loads(next(p.value for p in model.metadata_props if p.key == "quantgate.labels"))
        check_label_map(stamped, labels, width)  # what quantise_trt records and serving checks
        swapped = [labels[1], labels[0], *labels[2:]]
        for bad in (swapped, labels[::-1], labels[1:] + labels[:1]):
            with pytest.raises(TrtError, match="label order mismatch"):
                check_label_map(bad, labels, width)
        with pytest.raises(TrtError, match=rf"outputs {width} logits for {width - 1} labels"):
            check_label_map(labels[:-1], labels[:-1], width)
        with pytest.raises(TrtError, match=rf"outputs {width} logits for {width + 1} labels"):
            check_label_map([*labels, "extra"], [*labels, "extra"], width)
    # and the logits the graph really gives are refused against a label map of the wrong width
    encoded = parent.encode(real_graphs["texts"][:4])
    session = _session(real_graphs["paths"]["trt-fp16"])
    outputs = {
        "logits": session.run(["logits"], bind_inputs(specs_from_onnx(real_graphs["models"]["trt-fp16"]), encoded))[0]
    }
    assert read_logits(outputs, 4, labels).shape == (4, len(labels))
    with pytest.raises(TrtError, match=rf"expected \(4, {len(labels) - 1}\)"):
        read_logits(outputs, 4, labels[:-1])


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


@pytest.mark.gpu
def test_gpu_quantise_trt_registers_fp16_and_int8_engines_for_this_gpu(gpu, trt_versions, pipeline, store, tmp_path):
    import onnx
    import tensorrt

    client = MlflowClient()
    fp32 = pipeline["fp32"]
    for variant, precision in (("trt-fp16", "fp16"), ("trt-int8", "int8")):
        mv = trt_versions[variant]
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
        # engine_meta.json inside the artifact: read back from the engine itself
        local = Path(
            mlflow.artifacts.download_artifacts(f"models:/{TEST_MODEL}/{mv.version}", dst_path=str(tmp_path / variant))
        )
        meta = json.loads(next(local.glob("artifacts/*/engine_meta.json")).read_text())
        assert next(local.glob("artifacts/*/model.plan")).stat().st_size > 0
        assert meta["labels"] == list(LABELS) and meta["variant"] == variant
        assert meta["parent"] == {"name": TEST_MODEL, "version": str(fp32.version)}
        assert (meta["compute_capability"], meta["tensorrt_version"]) == (gpu.compute_capability, tensorrt.__version__)
        engine_specs = [TensorSpec.from_dict(d) for d in meta["io"]]
        check_io(engine_specs, TOKEN_INPUTS)
        assert logits_width(engine_specs) == len(LABELS)
        # the engine's I/O is the precision graph's, the ids as int64 or int32
        graph_dir = Path(
            mlflow.artifacts.download_artifacts(
                run_id=mv.run_id, artifact_path="precision_graphs", dst_path=str(tmp_path / f"{variant}-graph")
            )
        )
        graph = {
            s.name: s for s in specs_from_onnx(onnx.load(str(graph_dir / f"{variant}.onnx"), load_external_data=False))
        }
        assert set(graph) == {s.name for s in engine_specs}
        for spec in engine_specs:
            assert spec.dtype == graph[spec.name].dtype or (spec.mode == "input" and spec.dtype == "int32"), spec
            assert len(spec.shape) == len(graph[spec.name].shape), spec
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
