"""Quantisation recipes: one frozen, validated config per variant, with named hardware presets.

Every recipe class - CPU (:mod:`.cpu`) and GPU (:mod:`.gpu`) alike, and any a plugin backend
registers with :func:`register_recipe` - is in :data:`RECIPE_CLASSES`, so :func:`build_recipe`
validates it and :func:`recipe_from_json` rebuilds it from its ``quant_config.json``.
"""

from __future__ import annotations

import json
from dataclasses import fields

from quantgate.recipes.base import (
    CALIBRATION_METHODS,
    PRESET_CHOICES,
    PRESETS,
    HardwarePreset,
    Recipe,
    RecipeError,
    detect_preset,
    get_preset,
)
from quantgate.recipes.cpu import (
    OnnxFp16Recipe,
    OnnxFp32Recipe,
    OnnxInt8DynamicRecipe,
    OnnxInt8StaticRecipe,
    OpenVinoFp32Recipe,
    OpenVinoInt8Recipe,
    TorchInt8DynamicRecipe,
)
from quantgate.recipes.gpu import TrtFp16Recipe, TrtInt8Recipe, TrtRecipe

RECIPE_CLASSES: dict[str, type[Recipe]] = {}


def register_recipe(cls: type[Recipe]) -> type[Recipe]:
    """Make a recipe class known to :func:`build_recipe` and :func:`recipe_from_json` (the
    built-in ones below; a plugin backend registers its own). Usable as a class decorator."""
    known = RECIPE_CLASSES.get(cls.variant)
    if known is not None and known is not cls:
        raise RecipeError(f"variant: {cls.variant!r} is already the recipe {known.__qualname__}")
    RECIPE_CLASSES[cls.variant] = cls
    return cls


for _cls in (
    TorchInt8DynamicRecipe,
    OnnxFp32Recipe,
    OnnxInt8DynamicRecipe,
    OnnxInt8StaticRecipe,
    OnnxFp16Recipe,
    OpenVinoFp32Recipe,
    OpenVinoInt8Recipe,
    TrtFp16Recipe,
    TrtInt8Recipe,
):
    register_recipe(_cls)


def variants_for(runtime: str) -> tuple[str, ...]:
    """The variants a runtime builds, in registration order."""
    return tuple(v for v, c in RECIPE_CLASSES.items() if c.runtime == runtime)


ONNX_VARIANTS = variants_for("onnxruntime")
TORCH_VARIANTS = variants_for("torchscript")
OPENVINO_VARIANTS = variants_for("openvino")
TRT_VARIANTS = variants_for("tensorrt")


def _preset_defaults(cls: type[Recipe], preset: HardwarePreset) -> dict:
    """The fields a preset decides, for the recipe classes that have them."""
    names = {f.name for f in fields(cls)}
    values = {
        "weight_type": preset.weight_type,
        "per_channel": preset.per_channel,
        "reduce_range": preset.reduce_range,
        "torch_engine": preset.torch_engine,
    }
    if cls is OnnxInt8StaticRecipe:
        # s8 Q/DQ weights on every ISA; full-range weights measured better here (9 vs 11 flips
        # on news9 test with avx2's 7-bit weights), so reduce_range stays an explicit choice.
        values.pop("weight_type")
        values.pop("reduce_range")
    return {k: v for k, v in values.items() if k in names}


def build_recipe(variant: str, preset: str = "auto", **overrides) -> Recipe:
    """The recipe for ``variant`` with the preset's formats, then any explicit overrides. A
    recipe for a device other than the CPU (TensorRT's) takes no CPU preset."""
    if variant not in RECIPE_CLASSES:
        raise RecipeError(f"variant: {variant!r} is not one of {list(RECIPE_CLASSES)}")
    cls = RECIPE_CLASSES[variant]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise RecipeError(f"{unknown[0]}: not a field of the {variant} recipe (fields: {sorted(known)})")
    if cls.device != "cpu":
        return cls(**overrides)
    hw = get_preset(preset)
    return cls(**{**_preset_defaults(cls, hw), **overrides, "preset": hw.name})


def recipe_from_json(text: str) -> Recipe:
    """Rebuild a recipe from its ``quant_config.json`` (validation runs again)."""
    raw = json.loads(text)
    if raw.get("variant") not in RECIPE_CLASSES:
        raise RecipeError(f"variant: {raw.get('variant')!r} is not a known recipe ({list(RECIPE_CLASSES)})")
    cls = RECIPE_CLASSES[raw["variant"]]
    kwargs = {f.name: raw[f.name] for f in fields(cls) if f.name in raw}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return cls(**kwargs)


__all__ = [
    "RecipeError",
    "HardwarePreset",
    "PRESETS",
    "PRESET_CHOICES",
    "CALIBRATION_METHODS",
    "detect_preset",
    "get_preset",
    "Recipe",
    "TorchInt8DynamicRecipe",
    "OnnxFp32Recipe",
    "OnnxInt8DynamicRecipe",
    "OnnxInt8StaticRecipe",
    "OnnxFp16Recipe",
    "OpenVinoFp32Recipe",
    "OpenVinoInt8Recipe",
    "TrtRecipe",
    "TrtFp16Recipe",
    "TrtInt8Recipe",
    "RECIPE_CLASSES",
    "ONNX_VARIANTS",
    "TORCH_VARIANTS",
    "OPENVINO_VARIANTS",
    "TRT_VARIANTS",
    "register_recipe",
    "variants_for",
    "build_recipe",
    "recipe_from_json",
]
