"""The TensorRT backend: FP16 and INT8 engines (``trt-fp16`` / ``trt-int8``, ``device=gpu``).

TensorRT's networks are strongly typed: there are no FP16/INT8 builder flags, the precision of
every layer is decided in the ONNX graph before the engine is built. So this flow has two
halves:

1. **Precision graph, on the CPU.** The FP32 parent is exported to plain ONNX (standard ops
   only: ONNX Runtime's fused contrib ops are not TensorRT ops), then
   * ``trt-fp16``: ONNX Runtime's float16 converter (``onnx_graph.convert_fp16``) with
     inputs/outputs kept in their types and LayerNormalization and Softmax kept FP32;
   * ``trt-int8``: ONNX Runtime's Q/DQ quantiser (``quantize_static``), calibrated on a seeded
     slice of the parent's training split (``onnx_graph.calibration_texts`` /
     ``calibration_reader``, as ``onnx-int8-static`` is). Chosen over NVIDIA Model Optimizer because it is already a
     dependency, runs here on the CPU, and shares calibration slice and reader with the ORT
     variants, so the two INT8 variants differ only in what TensorRT needs: symmetric INT8
     activations and weights (zero point 0 - TensorRT's explicit quantisation accepts nothing
     else, and the flow checks it), per-channel weights on MatMul's output axis, biases left
     FP32, and Q/DQ only on the weight MatMuls and the pooler/classifier Gemms (the
     attention's activation x activation MatMuls stay FP32 unless
     ``--quantise-attention-matmuls``). ModelOpt would add a large
     dependency for the same kind of graph.

     Q/DQ go on the *inputs* of those layers and nowhere else (NVIDIA's placement for
     explicit quantisation: TensorRT fuses a DQ into the MatMul that reads it). ONNX Runtime's
     QDQ quantiser does two more things by default, both of which cost accuracy and neither
     of which TensorRT needs: it puts a Q/DQ pair on every MatMul's *output* (so the pre-bias
     result is rounded to INT8 per tensor - TensorRT would then emit INT8 from the MatMul),
     and it shares one Q/DQ pair between all readers of a quantised tensor, so the residual
     Adds read the LayerNorm outputs rounded to INT8 as well. See :class:`TrtInt8Recipe`
     (``qdq_matmul_outputs``, ``float_residual``) for the measurements.
2. **Engine, on an NVIDIA GPU** (:mod:`quantgate.trt_runtime`): a strongly typed network with one
   optimisation profile (``--batch`` and ``--seq-len`` as ``min,opt,max``), serialised, then
   registered with ``engine_meta.json`` (GPU, compute capability, TensorRT/CUDA versions,
   label order, I/O description) in its artifact and on its tags. The engine is also run on a
   held-out news9 slice and its agreement with the parent logged.

Without an NVIDIA GPU (or without ``pip install -e .[gpu]``) :func:`preflight` says why, before
the model is loaded or the registry touched; it never falls back to the CPU. The precision
graphs alone (:func:`precision_graph`) build anywhere.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from quantgate.backends import Backend, Built, register_backend
from quantgate.onnx_graph import (
    calibration_data,
    calibration_reader,
    calibration_texts,
    convert_fp16,
    export_onnx,
    input_names,
    stamp_labels,
)
from quantgate.recipes import Recipe, RecipeError, TrtFp16Recipe, TrtInt8Recipe, TrtRecipe
from quantgate.trt_checks import require_gpu
from quantgate.trt_shapes import TrtError, check_profile_fits

PACKAGES = ("mlflow", "tensorrt", "pycuda", "transformers", "tokenizers", "numpy", "pandas")


def qdq_nodes(model, op_types: tuple[str, ...], include_activation_matmuls: bool) -> list[str]:
    """The nodes that get Q/DQ: MatMuls (and Gemms) whose second input is a weight, plus (on
    request) the attention's activation x activation MatMuls."""
    weights = {init.name for init in model.graph.initializer}
    return [
        n.name
        for n in model.graph.node
        if n.op_type in op_types and (n.input[1] in weights or (include_activation_matmuls and n.op_type == "MatMul"))
    ]


def check_trt_qdq(path: Path) -> int:
    """TensorRT takes only symmetric INT8 Q/DQ: every zero point an all-zero int8 tensor.
    Returns the number of QuantizeLinear/DequantizeLinear nodes."""
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(path))
    consts = {i.name: i for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    for node in qdq:
        zp = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if zp is None:
            continue
        if zp.data_type != TensorProto.INT8 or np.any(numpy_helper.to_array(zp) != 0):
            raise TrtError(
                f"{node.name}: zero point {zp.name} is not an all-zero int8 tensor; TensorRT needs symmetric INT8"
            )
    if not qdq:
        raise TrtError(f"{path.name}: no Q/DQ nodes: nothing was quantised")
    return len(qdq)


def float_readers(model) -> int:
    """Give every reader of a dequantised activation that is not a MatMul/Gemm (the residual
    Adds, Shape) the float tensor the Q/DQ pair was made from, and drop pairs nobody reads
    any more. ORT shares one pair between all readers of a tensor (``DedicatedQDQPair`` only
    splits it where two or more *quantised* nodes read it), so without this the residual
    stream is rounded to INT8 after every LayerNorm. Returns the number of inputs rewired."""
    nodes = list(model.graph.node)
    q_src = {n.output[0]: n.input[0] for n in nodes if n.op_type == "QuantizeLinear"}
    float_of = {
        n.output[0]: q_src[n.input[0]] for n in nodes if n.op_type == "DequantizeLinear" and n.input[0] in q_src
    }
    rewired = 0
    for node in nodes:
        if node.op_type in ("MatMul", "Gemm", "QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(node.input):
            if name in float_of:
                node.input[i] = float_of[name]
                rewired += 1
    outputs = {o.name for o in model.graph.output}
    while True:  # a DQ nobody reads, then its Q
        read = {x for n in model.graph.node for x in n.input} | outputs
        dead = [
            n
            for n in model.graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not read & set(n.output)
        ]
        if not dead:
            return rewired
        for n in dead:
            model.graph.node.remove(n)


def int8_weight_matmuls(path: Path) -> tuple[int, int]:
    """(INT8, float) counts of the MatMul/Gemm nodes whose second input is a weight: INT8 when
    both of its inputs come out of a DequantizeLinear."""
    import onnx

    model = onnx.load(str(path))
    weights = {i.name for i in model.graph.initializer}
    dq = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    int8 = floats = 0
    for n in model.graph.node:
        if n.op_type not in ("MatMul", "Gemm"):
            continue
        if n.input[1] in dq and dq[n.input[1]] in weights and n.input[0] in dq:
            int8 += 1
        elif n.input[1] in weights:
            floats += 1
    return int8, floats


def quantise_qdq(path: Path, out: Path, recipe: TrtInt8Recipe, texts: list[str], tokenizer, max_length: int) -> Path:
    """ONNX Runtime's static Q/DQ quantiser with the settings TensorRT's explicit
    quantisation needs, Q/DQ on the MatMul inputs only (see the module docstring and
    :class:`TrtInt8Recipe`)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    model = onnx.load(str(path))
    nodes = qdq_nodes(model, recipe.op_types, recipe.quantise_attention_matmuls)
    names = [i.name for i in model.graph.input]
    reader = calibration_reader(texts, tokenizer, names, max_length, pad=recipe.calibration_method != "MinMax")
    quantize_static(
        str(path),
        str(out),
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(recipe.op_types),
        nodes_to_quantize=nodes,
        per_channel=recipe.per_channel,
        reduce_range=False,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, recipe.calibration_method),
        extra_options={
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
            "CalibPercentile": float(recipe.percentile),
            "OpTypesToExcludeOutputQuantization": [] if recipe.qdq_matmul_outputs else list(recipe.op_types),
        },
    )
    if recipe.float_residual:
        quantised = onnx.load(str(out))
        float_readers(quantised)
        onnx.save(quantised, str(out))
    check_trt_qdq(out)
    return out


def precision_graph(recipe: Recipe, parent, workdir: Path) -> Path:
    """The recipe's precision ONNX graph (CPU only), label order stamped in; the parent is
    exported once per work folder."""
    if not isinstance(recipe, TrtRecipe):
        raise RecipeError(f"variant: {recipe.variant!r} is not a TensorRT recipe")
    check_profile_fits(recipe.profile(), parent.max_length)
    plain = workdir / f"model.opset{recipe.opset}.onnx"
    if not plain.exists():
        export_onnx(parent.model, parent.tokenizer, plain, recipe.opset)
    out = workdir / f"{recipe.variant}.onnx"
    if isinstance(recipe, TrtFp16Recipe):
        convert_fp16(plain, out, recipe)
    elif isinstance(recipe, TrtInt8Recipe):
        quantise_qdq(plain, out, recipe, calibration_texts(recipe), parent.tokenizer, parent.max_length)
    stamp_labels(out, parent.labels)
    return out


@functools.lru_cache(maxsize=1)
def preflight() -> dict:
    """An NVIDIA GPU with TensorRT and pycuda, or a :class:`TrtError` saying what is missing;
    returns the facts an engine is specific to (GPU, compute capability, TensorRT/CUDA)."""
    require_gpu()
    from quantgate import trt_runtime

    return dict(trt_runtime.environment())


def build(recipe: Recipe, parent, workdir: Path) -> Built:
    """Precision graph on the CPU, then a strongly typed engine with the recipe's profile,
    with ``engine_meta.json`` (GPU, versions, label order, I/O) beside it."""
    import json

    from quantgate import trt_runtime
    from quantgate.serving_model import sha256_file

    env = dict(preflight())
    graph = precision_graph(recipe, parent, workdir)
    engine = trt_runtime.build_engine(graph, recipe.profile(), recipe.workspace_mib)
    meta = {
        **env,
        "variant": recipe.variant,
        "precision": recipe.precision,
        "labels": list(parent.labels),
        "token_inputs": input_names(graph),
        "parent": dict(getattr(parent, "registered", {})),
        "onnx_sha256": sha256_file(graph),
    }
    engine_dir = trt_runtime.write_engine_dir(workdir / recipe.variant, engine, meta)
    tags = {"profile": json.dumps(recipe.profile().as_dict(), sort_keys=True), **{k: str(v) for k, v in env.items()}}
    return Built(
        engine_dir,
        tags=tags,
        notes=[
            f"built {recipe.variant} on {env.get('gpu_name', 'the GPU')} (compute capability "
            f"{env.get('compute_capability')}, TensorRT {env.get('tensorrt_version')})"
        ],
    )


def identity(recipe: Recipe) -> str:
    """The GPU architecture and TensorRT version, and for INT8 the calibration data."""
    env = preflight()
    data = f"cc={env['compute_capability']};trt={env['tensorrt_version']}"
    if isinstance(recipe, TrtInt8Recipe):
        from quantgate.data import dataset_digest

        data += dataset_digest(calibration_data(recipe))
    return data


BACKEND = register_backend(
    Backend(runtime="tensorrt", packages=PACKAGES, build=build, identity=identity, preflight=preflight, device="gpu")
)
