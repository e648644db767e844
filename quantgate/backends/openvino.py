"""The OpenVINO backend: openvino-fp32 (the ONNX export read by OpenVINO) and openvino-int8
(NNCF post-training INT8, calibrated on the training data), as an IR folder (``model.xml``/
``model.bin``) with the label order in its ``rt_info``.

Why OpenVINO: on x86 CPUs its INT8 kernels also cover what ONNX Runtime leaves in FP32
(LayerNorm, attention, GELU around the INT8 MatMuls), which is where a dynamically quantised
ONNX graph spends most of its time at 64 tokens. It reads the plain ONNX export;
ONNX Runtime's fused contrib ops (QAttention, SkipLayerNormalization) have no OpenVINO rule.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from quantgate.backends import Backend, Built, library_versions, register_backend
from quantgate.contract import OPENVINO_LABELS_KEY
from quantgate.onnx_graph import calibration_data, calibration_texts, encoded_items, export_onnx
from quantgate.recipes import OpenVinoFp32Recipe, OpenVinoInt8Recipe, Recipe, RecipeError

PACKAGES = ("mlflow", "openvino", "transformers", "tokenizers", "numpy", "pandas")
IR_FILE = "model.xml"


def stamp_labels(model, labels: list[str]) -> None:
    """Write the label order into the IR's rt_info; the pyfunc checks it at load."""
    model.set_rt_info(json.dumps(list(labels)), [*OPENVINO_LABELS_KEY])


def _nncf_preset(name: str):
    import nncf

    return {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}[name]


def quantise_int8(model, recipe: OpenVinoInt8Recipe, parent, input_names: list[str]):
    """NNCF PTQ (optionally with accuracy control against the FP32 model on the validation split)."""
    import nncf

    calibration = nncf.Dataset(
        encoded_items(calibration_texts(recipe), parent.tokenizer, input_names, parent.max_length)
    )
    common = dict(
        preset=_nncf_preset(recipe.nncf_preset),
        subset_size=recipe.calibration_size,
        fast_bias_correction=recipe.fast_bias_correction,
        model_type=nncf.ModelType.TRANSFORMER,
    )
    if not recipe.accuracy_control:
        return nncf.quantize(model, calibration, **common)
    texts = calibration_data(recipe, ("train", "validation"))["validation"].texts
    items = encoded_items(texts, parent.tokenizer, input_names, parent.max_length)
    reference = [int(parent.infer(item).argmax()) for item in items]

    def agreement_with_fp32(compiled, data) -> float:
        output = compiled.output(0)
        preds = [int(np.asarray(compiled(item)[output]).argmax()) for item in data]
        return float(np.mean(np.asarray(preds) == np.asarray(reference[: len(preds)])))

    return nncf.quantize_with_accuracy_control(
        model, calibration, nncf.Dataset(items), agreement_with_fp32, max_drop=recipe.max_drop, **common
    )


# OpenVINO names a node it creates after its type and a per-process counter (Constant_6049).
AUTO_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*_\d+")


def canonical_names(model) -> None:
    """Renumber OpenVINO's counter-named nodes in graph order. The counter runs on across a
    process, so the same build written twice differed in these names alone; with them fixed a
    build is repeatable byte for byte, which a keyed ``evaluate`` relies on when it rebuilds a
    variant to compare with the registered files (``flows/rebuild.py``)."""
    for i, op in enumerate(model.get_ordered_ops()):
        if AUTO_NAME.fullmatch(op.get_friendly_name()):
            op.set_friendly_name(f"{op.get_type_name()}_qg{i}")


def build(recipe: Recipe, parent, workdir: Path) -> Built:
    """A folder holding the recipe's OpenVINO IR (model.xml + model.bin), labels stamped in."""
    import openvino as ov

    onnx_path = workdir / f"model.opset{recipe.opset}.onnx"
    if not onnx_path.exists():
        export_onnx(parent.model, parent.tokenizer, onnx_path, recipe.opset)
    model = ov.convert_model(str(onnx_path))
    if not isinstance(recipe, OpenVinoFp32Recipe):
        raise RecipeError(f"variant: {recipe.variant!r} is not an OpenVINO recipe")
    if isinstance(recipe, OpenVinoInt8Recipe):
        model = quantise_int8(model, recipe, parent, [i.get_any_name() for i in model.inputs])
    stamp_labels(model, parent.labels)
    canonical_names(model)
    out = workdir / recipe.variant
    out.mkdir()
    ov.save_model(model, str(out / IR_FILE), compress_to_fp16=False)  # FP16 storage is a precision choice, not ours
    return Built(out)


def identity(recipe: Recipe) -> str:
    """OpenVINO's and NNCF's versions and, for INT8, the calibration data."""
    data = library_versions("openvino", "nncf")
    if isinstance(recipe, OpenVinoInt8Recipe):
        from quantgate.data import dataset_digest

        splits = ("train", "validation") if recipe.accuracy_control else ("train",)
        data += dataset_digest(calibration_data(recipe, splits))
    return data


BACKEND = register_backend(Backend(runtime="openvino", packages=PACKAGES, build=build, identity=identity))
