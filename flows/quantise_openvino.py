"""quantise_openvino: OpenVINO variants of a registered FP32 version: openvino-fp32 (the ONNX
export read by OpenVINO) and openvino-int8 (NNCF post-training INT8, calibrated on the
training data), one registered version each.

Reads: ``--source`` (a registered FP32 version; default the newest ``variant=fp32``) and
``--recipe`` (one variant or ``all``). Hands on: per recipe, a version tagged ``variant``,
``runtime=openvino``, ``parent_version``, ``recipe`` and ``recipe_sha256``, whose artifact holds
``model.xml``/``model.bin`` (OpenVINO IR, label order in its ``rt_info``) and
``quant_config.json``, and the run tag ``quantgate.version.<variant>``. A version built before
from the same recipe, parent, code, libraries and calibration data is reused.

Why OpenVINO: on x86 CPUs its INT8 kernels also cover what ONNX Runtime leaves in FP32
(LayerNorm, attention, GELU around the INT8 MatMuls), which is where a dynamically quantised
ONNX graph spends most of its time at 64 tokens. It reads the plain ONNX export;
ONNX Runtime's fused contrib ops (QAttention, SkipLayerNormalization) have no OpenVINO rule.
"""
from __future__ import annotations

import json
from pathlib import Path

import click
import mlflow
import numpy as np
from mlflow.entities.model_registry import ModelVersion

from flows.quantise_common import LATEST, build_digest, parse_overrides, quantise_with, resolve_source
from flows.quantise_onnx import calibration_texts, export_onnx
from flows.recipes import OPENVINO_VARIANTS, PRESET_CHOICES, OpenVinoInt8Recipe, Recipe, RecipeError, build_recipe
from flows.serving_model import OPENVINO_LABELS_KEY
from flows.tracking import DEFAULT_MODEL_NAME, configure_tracking

CODE_FILES = ("quantise_openvino.py", "quantise_onnx.py")
IR_FILE = "model.xml"


def encoded_items(texts: list[str], tokenizer, input_names: list[str], max_length: int) -> list[dict[str, np.ndarray]]:
    """One batch-1 feed per text, keyed by the model's own input names (never by position)."""
    items = []
    for text in texts:
        enc = tokenizer([text], truncation=True, max_length=max_length, return_tensors="np")
        items.append({name: enc[name].astype(np.int64) for name in input_names})
    return items


def stamp_labels(model, labels: list[str]) -> None:
    """Write the label order into the IR's rt_info; the pyfunc checks it at load."""
    model.set_rt_info(json.dumps(list(labels)), [*OPENVINO_LABELS_KEY])


def _nncf_preset(name: str):
    import nncf

    return {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}[name]


def quantise_int8(model, recipe: OpenVinoInt8Recipe, parent, input_names: list[str]):
    """NNCF PTQ (optionally with accuracy control against the FP32 model on the validation split)."""
    import nncf

    calibration = nncf.Dataset(encoded_items(calibration_texts(recipe), parent.tokenizer, input_names, parent.max_length))
    common = dict(preset=_nncf_preset(recipe.nncf_preset), subset_size=recipe.calibration_size,
                  fast_bias_correction=recipe.fast_bias_correction, model_type=nncf.ModelType.TRANSFORMER)
    if not recipe.accuracy_control:
        return nncf.quantize(model, calibration, **common)
    from flows.data import load_dataset

    texts = load_dataset(recipe.calibration_dataset, ("train", "validation"))["validation"].texts
    items = encoded_items(texts, parent.tokenizer, input_names, parent.max_length)
    reference = [int(parent.infer(item).argmax()) for item in items]

    def agreement_with_fp32(compiled, data) -> float:
        output = compiled.output(0)
        preds = [int(np.asarray(compiled(item)[output]).argmax()) for item in data]
        return float(np.mean(np.asarray(preds) == np.asarray(reference[: len(preds)])))

    return nncf.quantize_with_accuracy_control(model, calibration, nncf.Dataset(items), agreement_with_fp32,
                                               max_drop=recipe.max_drop, **common)


def build_ir(recipe: Recipe, parent, workdir: Path) -> Path:
    """A folder holding the recipe's OpenVINO IR (model.xml + model.bin), labels stamped in."""
    import openvino as ov

    onnx_path = workdir / f"model.opset{recipe.opset}.onnx"
    if not onnx_path.exists():
        export_onnx(parent.model, parent.tokenizer, onnx_path, recipe.opset)
    model = ov.convert_model(str(onnx_path))
    if isinstance(recipe, OpenVinoInt8Recipe):
        model = quantise_int8(model, recipe, parent, [i.get_any_name() for i in model.inputs])
    stamp_labels(model, parent.labels)
    out = workdir / recipe.variant
    out.mkdir()
    ov.save_model(model, str(out / IR_FILE), compress_to_fp16=False)  # FP16 storage is a precision choice, not ours
    return out


def recipe_identity(recipe: Recipe, source: ModelVersion) -> str:
    """recipe_sha256: the recipe plus parent, code, libraries and (INT8) calibration data."""
    data = ""
    if isinstance(recipe, OpenVinoInt8Recipe):
        from flows.data import dataset_digest, load_dataset

        splits = ("train", "validation") if recipe.accuracy_control else ("train",)
        data = dataset_digest(load_dataset(recipe.calibration_dataset, splits))
    return recipe.sha256(build_digest(source, CODE_FILES, data) + _library_versions())


def _library_versions() -> str:
    import importlib.metadata as md

    return ";".join(f"{lib}=={md.version(lib)}" for lib in ("openvino", "nncf"))


def quantise_all(source: ModelVersion, recipes: list[Recipe]) -> dict[str, ModelVersion]:
    """Register (or reuse) one version per recipe, inside the active run."""
    return quantise_with("quantise_openvino", source, recipes, lambda recipe: recipe_identity(recipe, source), build_ir)


def recipes_for(choice: str, preset: str, overrides: dict[str, dict]) -> list[Recipe]:
    variants = list(OPENVINO_VARIANTS) if choice == "all" else [choice]
    stray = sorted(set(overrides) - set(variants))
    if stray:
        raise RecipeError(f"--set: overrides for {stray}, which this run does not build ({variants})")
    return [build_recipe(v, preset, **overrides.get(v, {})) for v in variants]


@click.command("quantise_openvino", help=__doc__)
@click.option("--source", default=LATEST, show_default=True, help=f"FP32 version to quantise: 3, name@alias, models:/… or {LATEST}.")
@click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True)
@click.option("--recipe", "recipe_choice", type=click.Choice(["all", *OPENVINO_VARIANTS]), default="all", show_default=True)
@click.option("--preset", type=click.Choice(PRESET_CHOICES), default="auto", show_default=True, help="CPU family (recorded; OpenVINO picks its kernels itself).")
@click.option("--set", "overrides", multiple=True, metavar="VARIANT.FIELD=VALUE",
              help="Override one recipe field, e.g. openvino-int8.accuracy_control=true (repeatable).")
def cli(source, model_name, recipe_choice, preset, overrides):
    configure_tracking(model_name=model_name)
    recipes = recipes_for(recipe_choice, preset, parse_overrides(overrides))
    src = resolve_source(source, model_name)
    with mlflow.start_run(run_name="quantise_openvino"):
        quantise_all(src, recipes)


if __name__ == "__main__":
    from flows.errors import run

    run(cli)
