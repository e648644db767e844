"""The ONNX Runtime backend: onnx-fp32, onnx-int8-dynamic, onnx-int8-static and onnx-fp16.

Every variant starts from the parent's ONNX export, fused with ONNX Runtime's transformer
optimiser where the architecture has fusions (exported and fused once per work folder,
however many recipes ask for it), then quantised or converted as its recipe says. The label
order is stamped into the file's metadata; the pyfunc checks it at load.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from quantgate.architectures import ort_model_type
from quantgate.backends import Backend, Built, register_backend
from quantgate.onnx_graph import (
    calibration_data,
    calibration_reader,
    calibration_texts,
    convert_fp16,
    export_onnx,
    float_default,
    fuse,
    stamp_labels,
)
from quantgate.recipes import (
    OnnxFp16Recipe,
    OnnxFp32Recipe,
    OnnxInt8DynamicRecipe,
    OnnxInt8StaticRecipe,
    Recipe,
    RecipeError,
)

PACKAGES = ("mlflow", "onnxruntime", "transformers", "tokenizers", "numpy", "pandas")


def quantise_dynamic(path: Path, out: Path, recipe: OnnxInt8DynamicRecipe) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(path),
        str(out),
        weight_type=getattr(QuantType, recipe.weight_type),
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        op_types_to_quantize=list(recipe.op_types),
        extra_options=float_default(),
    )
    return out


GELU_OPS = ("Gelu", "BiasGelu", "FastGelu")


def after_gelu(model) -> list[str]:
    """MatMuls fed by a GELU: the FFN down-projections, whose inputs carry the outliers a
    calibrated static range clips (news9 test: 15 label flips with them static, 9 dynamic)."""
    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and producers.get(n.input[0]) in GELU_OPS]


def quantise_static(
    path: Path, out: Path, recipe: OnnxInt8StaticRecipe, texts: list[str], tokenizer, max_length: int
) -> Path:
    """Calibrated Q/DQ MatMuls, then dynamic INT8 for the ops a static range does not suit."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    # The calibrators only see tensors of known type; ORT's symbolic shape inference knows
    # the fused contrib ops (onnx's own does not, and untyped MatMuls would silently stay FP32).
    model = SymbolicShapeInference.infer_shapes(onnx.load(str(path)), auto_merge=True)
    shaped = out.with_suffix(".shapes.onnx")
    onnx.save(model, str(shaped))
    dynamic_matmuls = after_gelu(model) if recipe.dynamic_after_gelu else []
    names = [i.name for i in model.graph.input]
    reader = calibration_reader(texts, tokenizer, names, max_length, pad=recipe.calibration_method != "MinMax")
    qdq = out.with_suffix(".qdq.onnx")
    quantize_static(
        str(shaped),
        str(qdq),
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(recipe.op_types),
        nodes_to_exclude=dynamic_matmuls,
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        activation_type=getattr(QuantType, recipe.activation_type),
        weight_type=getattr(QuantType, recipe.weight_type),
        calibrate_method=getattr(CalibrationMethod, recipe.calibration_method),
        extra_options={**float_default(), "CalibPercentile": float(recipe.percentile)},
    )
    dynamic_nodes = dynamic_matmuls + [n.name for n in model.graph.node if n.op_type in recipe.dynamic_ops]
    if not dynamic_nodes:
        shutil.copyfile(qdq, out)
        return out
    quantize_dynamic(
        str(qdq),
        str(out),
        weight_type=getattr(QuantType, recipe.weight_type),
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        nodes_to_quantize=dynamic_nodes,
        op_types_to_quantize=["MatMul", *recipe.dynamic_ops],
        extra_options=float_default(),
    )
    return out


def graph(parent, workdir: Path, opset: int, fused: bool) -> tuple[Path, list[str]]:
    """The parent's ONNX graph (exported, and fused where asked and possible), built once per
    work folder; with a note when the architecture has no fusions."""
    plain = workdir / f"model.opset{opset}.onnx"
    if not plain.exists():
        export_onnx(parent.model, parent.tokenizer, plain, opset)
    if not fused:
        return plain, []
    cfg = parent.model.config
    kind = ort_model_type(cfg.model_type)
    if kind is None:  # no ONNX Runtime fusions for this family: quantise the plain graph
        return plain, [f"note: no ONNX Runtime fusions for model_type {cfg.model_type!r}; using the unfused graph"]
    out = workdir / f"model.opset{opset}.fused.onnx"
    if not out.exists():
        fuse(plain, out, cfg.num_attention_heads, cfg.hidden_size, kind)
    return out, []


def build(recipe: Recipe, parent, workdir: Path) -> Built:
    """The ONNX file for one recipe, label order stamped in."""
    source, notes = graph(parent, workdir, recipe.opset, recipe.fuse_graph)
    out = workdir / f"{recipe.variant}.onnx"
    if isinstance(recipe, OnnxInt8DynamicRecipe):
        quantise_dynamic(source, out, recipe)
    elif isinstance(recipe, OnnxInt8StaticRecipe):
        quantise_static(source, out, recipe, calibration_texts(recipe), parent.tokenizer, parent.max_length)
    elif isinstance(recipe, OnnxFp16Recipe):
        convert_fp16(source, out, recipe)
    elif type(recipe) is OnnxFp32Recipe:
        shutil.copyfile(source, out)
    else:
        raise RecipeError(f"variant: {recipe.variant!r} is not an ONNX recipe")
    stamp_labels(out, parent.labels)
    return Built(out, notes=notes)


def identity(recipe: Recipe) -> str:
    """Static INT8 also depends on its calibration data."""
    if not isinstance(recipe, OnnxInt8StaticRecipe):
        return ""
    from quantgate.data import dataset_digest

    return dataset_digest(calibration_data(recipe))


BACKEND = register_backend(Backend(runtime="onnxruntime", packages=PACKAGES, build=build, identity=identity))
