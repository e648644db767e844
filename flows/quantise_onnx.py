"""quantise_onnx: export a registered FP32 version to ONNX and register one ONNX Runtime
variant per recipe: onnx-fp32, onnx-int8-dynamic, onnx-int8-static, onnx-fp16.

Reads: ``--source`` (a registered FP32 version: number, ``name@alias`` or ``models:/`` URI;
default the newest ``variant=fp32`` version), ``--recipe`` (one variant or ``all``) and
``--preset`` (the CPU family the INT8 formats are chosen for; ``auto`` reads the host).
Hands on: per recipe, a version tagged ``variant``, ``parent_version``, ``recipe``,
``recipe_sha256`` and ``preset``, with ``quant_config.json`` in its artifact, and the run
tag ``quantgate.version.<variant>``. A version built before from the same recipe, parent,
code and libraries is reused, not registered again.
"""
from __future__ import annotations

import json
import random
import shutil
from functools import lru_cache
from pathlib import Path

import click
import mlflow
from mlflow.entities.model_registry import ModelVersion

from flows.quantise_common import (
    LATEST,
    build_digest,
    latest_fp32_version,  # noqa: F401  (re-exported: older callers import it from here)
    parse_overrides,
    quantise_with,
    resolve_source,
)
from flows.recipes import (
    ONNX_VARIANTS,
    PRESET_CHOICES,
    OnnxFp16Recipe,
    OnnxFp32Recipe,
    OnnxInt8DynamicRecipe,
    OnnxInt8StaticRecipe,
    Recipe,
    RecipeError,
    build_recipe,
)
from flows.serving_model import ONNX_LABELS_KEY
from flows.tracking import DEFAULT_MODEL_NAME, configure_tracking

OPSET = 17
CODE_FILES = ("quantise_onnx.py",)
# Kept for callers of the walking skeleton (`quantise(mv, DynamicInt8Recipe())`).
DynamicInt8Recipe = OnnxInt8DynamicRecipe


# --------------------------------------------------------------------------- graph steps
def export_onnx(model, tokenizer, out: Path, opset: int = OPSET) -> Path:
    """Trace the torch model to ONNX with dynamic batch and sequence axes."""
    import torch

    import inspect

    from flows.architectures import model_inputs

    enc = tokenizer(["an example headline for tracing"], return_tensors="pt")
    names = model_inputs(inspect.signature(model.forward).parameters, enc)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(
            model, tuple(enc[n] for n in names), str(out), input_names=names,
            output_names=["logits"], dynamic_axes=axes, opset_version=opset, dynamo=False,
        )
    return out


def fuse(path: Path, out: Path, num_heads: int, hidden_size: int, model_type: str = "bert") -> Path:
    """ONNX Runtime's transformer fusions (for ``bert``: Attention, SkipLayerNorm, BiasGelu,
    EmbedLayerNorm), with the optimiser's ``model_type`` for the architecture."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(path), model_type=model_type, num_heads=num_heads, hidden_size=hidden_size)
    optimized.save_model_to_file(str(out))
    return out


def _float_default():
    import onnx

    # the fused graph's contrib ops carry no type info for the quantiser
    return {"DefaultTensorType": onnx.TensorProto.FLOAT}


def quantise_dynamic(path: Path, out: Path, recipe: OnnxInt8DynamicRecipe) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(path), str(out), weight_type=getattr(QuantType, recipe.weight_type),
        per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
        op_types_to_quantize=list(recipe.op_types), extra_options=_float_default(),
    )
    return out


def calibration_texts(recipe: OnnxInt8StaticRecipe) -> list[str]:
    """A seeded random slice of the calibration dataset's train split."""
    from flows.data import load_dataset

    texts = list(load_dataset(recipe.calibration_dataset, ("train",))["train"].texts)
    random.Random(recipe.calibration_seed).shuffle(texts)
    return texts[: recipe.calibration_size]


def calibration_reader(texts: list[str], tokenizer, input_names: list[str], max_length: int, pad: bool):
    """Feeds one headline per call, inputs named as the graph names them. The histogram
    calibrators (Percentile, Entropy) stack every batch, so they get fixed-length padding."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._texts = iter(texts)

        def get_next(self):
            text = next(self._texts, None)
            if text is None:
                return None
            enc = tokenizer([text], truncation=True, max_length=max_length,
                            padding="max_length" if pad else False, return_tensors="np")
            return {n: enc[n].astype(np.int64) for n in input_names}

    return Reader()


GELU_OPS = ("Gelu", "BiasGelu", "FastGelu")


def after_gelu(model) -> list[str]:
    """MatMuls fed by a GELU: the FFN down-projections, whose inputs carry the outliers a
    calibrated static range clips (news9 test: 15 label flips with them static, 9 dynamic)."""
    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and producers.get(n.input[0]) in GELU_OPS]


def quantise_static(path: Path, out: Path, recipe: OnnxInt8StaticRecipe, texts: list[str], tokenizer, max_length: int) -> Path:
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
        str(shaped), str(qdq), reader, quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(recipe.op_types), nodes_to_exclude=dynamic_matmuls,
        per_channel=recipe.per_channel, reduce_range=recipe.reduce_range, activation_type=getattr(QuantType, recipe.activation_type),
        weight_type=getattr(QuantType, recipe.weight_type),
        calibrate_method=getattr(CalibrationMethod, recipe.calibration_method),
        extra_options={**_float_default(), "CalibPercentile": float(recipe.percentile)},
    )
    dynamic_nodes = dynamic_matmuls + [n.name for n in model.graph.node if n.op_type in recipe.dynamic_ops]
    if not dynamic_nodes:
        shutil.copyfile(qdq, out)
        return out
    quantize_dynamic(
        str(qdq), str(out), weight_type=getattr(QuantType, recipe.weight_type), per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range, nodes_to_quantize=dynamic_nodes, op_types_to_quantize=["MatMul", *recipe.dynamic_ops],
        extra_options=_float_default(),
    )
    return out


def convert_fp16(path: Path, out: Path, recipe: OnnxFp16Recipe) -> Path:
    """FP16 with ORT's transformer converter; kept-FP32 ops stay FP32, and big FP32 weights
    that only they read are stored as FP16 with a Cast back (same numbers, half the bytes)."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(path)))
    model.convert_float_to_float16(
        keep_io_types=recipe.keep_io_types, op_block_list=[*DEFAULT_OP_BLOCK_LIST, *recipe.keep_fp32_ops]
    )
    store_big_fp32_weights_as_fp16(model.model, recipe.fp16_storage_min_elements)
    model.save_model_to_file(str(out))
    return out


def store_big_fp32_weights_as_fp16(model, min_elements: int) -> list[str]:
    """Replace each FP32 initializer of at least ``min_elements`` values with an FP16 copy
    and a Cast to FP32 in front of its readers. ORT folds the Cast at session start."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    changed = []
    for init in list(model.graph.initializer):
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "_fp16")
        model.graph.initializer.remove(init)
        model.graph.initializer.append(half)
        model.graph.node.insert(0, helper.make_node("Cast", [half.name], [init.name], name=init.name + "_to_fp32", to=TensorProto.FLOAT))
        changed.append(init.name)
    return changed


def stamp_labels(path: Path, labels: list[str]) -> None:
    """Write the label order into the ONNX file itself; the pyfunc checks it at load."""
    import onnx

    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key != ONNX_LABELS_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=ONNX_LABELS_KEY, value=json.dumps(labels))
    onnx.save(model, str(path))


# --------------------------------------------------------------------------- building
class _Graphs:
    """Exports and fuses once per (opset, fused) however many recipes ask for the graph."""

    def __init__(self, parent, workdir: Path):
        self.parent, self.workdir = parent, workdir

    @lru_cache(maxsize=None)
    def get(self, opset: int, fused: bool) -> Path:
        plain = export_onnx(self.parent.model, self.parent.tokenizer, self.workdir / f"model.opset{opset}.onnx", opset)
        if not fused:
            return plain
        from flows.architectures import ort_model_type

        cfg = self.parent.model.config
        kind = ort_model_type(cfg.model_type)
        if kind is None:  # no ONNX Runtime fusions for this family: quantise the plain graph
            click.echo(f"note: no ONNX Runtime fusions for model_type {cfg.model_type!r}; using the unfused graph")
            return plain
        return fuse(plain, self.workdir / f"model.opset{opset}.fused.onnx", cfg.num_attention_heads, cfg.hidden_size, kind)


def build_file(recipe: Recipe, graphs: _Graphs, workdir: Path) -> Path:
    """The ONNX file for one recipe, label order stamped in."""
    graph = graphs.get(recipe.opset, recipe.fuse_graph)
    out = workdir / f"{recipe.variant}.onnx"
    if isinstance(recipe, OnnxInt8DynamicRecipe):
        quantise_dynamic(graph, out, recipe)
    elif isinstance(recipe, OnnxInt8StaticRecipe):
        parent = graphs.parent
        quantise_static(graph, out, recipe, calibration_texts(recipe), parent.tokenizer, parent.max_length)
    elif isinstance(recipe, OnnxFp16Recipe):
        convert_fp16(graph, out, recipe)
    elif type(recipe) is OnnxFp32Recipe:
        shutil.copyfile(graph, out)
    else:
        raise RecipeError(f"variant: {recipe.variant!r} is not an ONNX recipe")
    stamp_labels(out, graphs.parent.labels)
    return out


def recipe_identity(recipe: Recipe, source: ModelVersion) -> str:
    """recipe_sha256: the recipe plus parent, code, libraries and (static) calibration data."""
    data = ""
    if isinstance(recipe, OnnxInt8StaticRecipe):
        from flows.data import dataset_digest, load_dataset

        data = dataset_digest(load_dataset(recipe.calibration_dataset, ("train",)))
    return recipe.sha256(build_digest(source, CODE_FILES, data))


def quantise_all(source: ModelVersion, recipes: list[Recipe]) -> dict[str, ModelVersion]:
    """Register (or reuse) one version per recipe, inside the active run. The parent is
    exported and fused once per (opset, fused), however many recipes ask for the graph."""
    graphs: dict[str, _Graphs] = {}

    def build(recipe: Recipe, parent, workdir: Path) -> Path:
        return build_file(recipe, graphs.setdefault("parent", _Graphs(parent, workdir)), workdir)

    return quantise_with("quantise_onnx", source, recipes, lambda recipe: recipe_identity(recipe, source), build)


def quantise(source: ModelVersion, recipe: Recipe) -> ModelVersion:
    """One recipe; returns its version (the walking skeleton's entry, used by tests)."""
    return quantise_all(source, [recipe])[recipe.variant]


def recipes_for(choice: str, preset: str, overrides: dict[str, dict]) -> list[Recipe]:
    variants = list(ONNX_VARIANTS) if choice == "all" else [choice]
    stray = sorted(set(overrides) - set(variants))
    if stray:
        raise click.BadParameter(f"overrides for {stray}, which this run does not build ({variants})", param_hint="--set")
    return [build_recipe(v, preset, **overrides.get(v, {})) for v in variants]


@click.command("quantise_onnx", help=__doc__)
@click.option("--source", default=LATEST, show_default=True, help=f"FP32 version to quantise: 3, name@alias, models:/… or {LATEST} for the newest variant=fp32 version.")
@click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True)
@click.option("--recipe", "recipe_choice", type=click.Choice(["all", *ONNX_VARIANTS]), default="all", show_default=True, help="Which variant to build.")
@click.option("--preset", type=click.Choice(PRESET_CHOICES), default="auto", show_default=True, help="CPU family the INT8 number formats suit; auto reads the host's CPU flags.")
@click.option("--set", "overrides", multiple=True, metavar="VARIANT.FIELD=VALUE", help="Override one recipe field, e.g. onnx-int8-static.calibration_method=Percentile (repeatable).")
def cli(source, model_name, recipe_choice, preset, overrides):
    configure_tracking(model_name=model_name)
    try:
        recipes = recipes_for(recipe_choice, preset, parse_overrides(overrides))
    except RecipeError as exc:
        raise click.BadParameter(str(exc)) from None
    src = resolve_source(source, model_name)
    with mlflow.start_run(run_name="quantise_onnx"):
        quantise_all(src, recipes)


if __name__ == "__main__":
    from flows.errors import run

    run(cli)
