"""The real FP16/INT8 precision graphs of the `pipeline` fixture's model, on the CPU: their I/O
description is the engine's, so the pure TensorRT checks are run against it, and the bound arrays
through ONNX Runtime on the graph itself, in the engine's place."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluators.metrics import prob_deltas, softmax
from flows import quantise_trt
from quantgate.backends import tensorrt
from quantgate.contract import TOKEN_INPUTS
from quantgate.data import news9_labels
from quantgate.trt_checks import bind_inputs, check_label_map, logits_width, read_logits
from quantgate.trt_shapes import TrtError, check_io, fit_to_profile, pad_values_for, specs_from_onnx

LABELS = news9_labels()  # the test models are trained on news9


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
    with load_parent(pipeline["fp32"]) as parent:
        fp16, int8 = quantise_trt.recipes_for("all", calibration_size=16, calibration_dataset="news9")
        paths = {
            "trt-fp16": tensorrt.precision_graph(fp16, parent, workdir),
            "trt-int8": tensorrt.precision_graph(int8, parent, workdir),
        }
        texts = load_dataset("news9", ("test",))["test"].texts[:40]
        texts = [*texts, "Rates"]  # 41 rows: two engine calls (batch max 32)
        yield {
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
