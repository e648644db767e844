"""Quantisation recipes: one frozen, validated config per variant, with named hardware presets.

A recipe says *how* a variant is built from its FP32 parent. It is

* frozen: a recipe cannot change between the moment it is logged and the moment it is used;
* validated at construction: a bad value fails with the field's name before any work starts
  (:class:`RecipeError`, a ``ValueError``);
* resolved: :func:`build_recipe` fills the preset-dependent fields from a
  :class:`HardwarePreset`, and :meth:`Recipe.resolved` is what gets logged as run params,
  written into the artifact as ``quant_config.json`` and hashed (:meth:`Recipe.sha256`) so a
  second run with the same inputs can find the version the first one registered.

Presets follow Optimum's ``AutoQuantizationConfig`` (``avx512_vnni``, ``avx2``, ``arm64``);
``auto`` picks one from the host's CPU flags. The preset matters for INT8 accuracy and speed:
without VNNI, x86 u8*s8 kernels multiply-add pairs into int16 (VPMADDUBSW) and can saturate.
Optimum's ``avx2`` preset avoids that with uint8 weights (slower u8*u8 kernels); ours keeps
int8 weights at 7 bits (``reduce_range``: 2 x 255 x 64 < 32767), which cannot saturate.
This module imports no ML library: configs are checked and logged without loading torch/ORT.
"""
from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import ClassVar

from flows.errors import UserError


class RecipeError(UserError):
    """A recipe or preset value that cannot work; the message names the field."""


QUANT_TYPES = ("QInt8", "QUInt8")
CALIBRATION_METHODS = ("MinMax", "Percentile", "Entropy")
TORCH_ENGINES = ("x86", "fbgemm", "qnnpack", "onednn")


# --------------------------------------------------------------------------- checks
def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise RecipeError(f"{name}: {value!r} is not one of {list(choices)}")


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise RecipeError(f"{name}: must be true or false, got {value!r}")


def _check_int(name: str, value, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise RecipeError(f"{name}: must be an integer in [{lo}, {hi}], got {value!r}")


def _check_ops(name: str, value, allowed) -> None:
    if not isinstance(value, tuple) or not value or any(op not in allowed for op in value):
        raise RecipeError(f"{name}: must be a non-empty tuple drawn from {list(allowed)}, got {value!r}")


# --------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class HardwarePreset:
    """INT8 number formats that suit one CPU family (values as in Optimum's presets)."""

    name: str
    weight_type: str  # ONNX Runtime QuantType name of the weights
    activation_type: str  # ... of the activations (dynamic quantisation always uses QUInt8)
    per_channel: bool
    reduce_range: bool  # 7-bit weights: the other cure for VPMADDUBSW saturation
    torch_engine: str  # torch.backends.quantized.engine for torch dynamic INT8
    why: str

    def __post_init__(self):
        _check_choice("weight_type", self.weight_type, QUANT_TYPES)
        _check_choice("activation_type", self.activation_type, QUANT_TYPES)
        _check_choice("torch_engine", self.torch_engine, TORCH_ENGINES)


PRESETS: dict[str, HardwarePreset] = {
    p.name: p
    for p in (
        HardwarePreset("avx512_vnni", "QInt8", "QUInt8", True, False, "x86",
                       "VPDPBUSD multiplies u8 activations by s8 weights into int32: no saturation"),
        HardwarePreset("avx2", "QInt8", "QUInt8", True, True, "x86",
                       "no VNNI: u8*s8 goes through VPMADDUBSW, whose int16 sums saturate at 8-bit "
                       "weights; 7-bit weights (reduce_range) cannot, and keep the u8*s8 kernel, "
                       "measured ~10 % faster than Optimum's u8*u8 choice on this ISA"),
        HardwarePreset("arm64", "QInt8", "QUInt8", True, False, "qnnpack",
                       "u8*s8 is as fast as u8*u8 on ARM64 and faster on small cores"),
    )
}
PRESET_CHOICES = ("auto", *PRESETS)


def cpu_flags() -> set[str]:
    """The host's CPU feature flags (empty where /proc/cpuinfo is unreadable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def detect_preset(flags: set[str] | None = None, machine: str | None = None) -> str:
    """The preset for this host: VNNI (AVX512 or AVX) first, then AVX2, then ARM64."""
    flags = cpu_flags() if flags is None else flags
    machine = (machine or platform.machine()).lower()
    if machine in ("aarch64", "arm64"):
        return "arm64"
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        return "avx512_vnni"
    if "avx2" in flags:
        return "avx2"
    raise RecipeError(f"preset: no preset fits this CPU ({machine}, no AVX2/VNNI/ARM64); name one of {list(PRESETS)}")


def get_preset(name: str) -> HardwarePreset:
    if name == "auto":
        name = detect_preset()
    try:
        return PRESETS[name]
    except KeyError:
        raise RecipeError(f"preset: unknown preset {name!r}; choose one of {list(PRESET_CHOICES)}") from None


# --------------------------------------------------------------------------- recipes
@dataclass(frozen=True)
class Recipe:
    """Fields every recipe has. Subclasses set the ClassVars and add their own fields."""

    variant: ClassVar[str]
    precision: ClassVar[str]
    runtime: ClassVar[str]  # the serving backend in meta.json: "onnxruntime" or "torchscript"

    preset: str = "avx2"  # the resolved preset name (never "auto" once built)

    def __post_init__(self):
        _check_choice("preset", self.preset, tuple(PRESETS))
        self.validate()

    def validate(self) -> None:  # overridden where there is more to check
        pass

    def resolved(self) -> dict:
        """Everything that decides the output, as plain JSON values."""
        return {"variant": self.variant, "precision": self.precision, "runtime": self.runtime, **_plain(asdict(self))}

    def params(self) -> dict[str, str]:
        """The resolved config as MLflow params, prefixed by variant (one run builds several)."""
        return {f"{self.variant}.{k}": str(v) for k, v in self.resolved().items() if k != "variant"}

    def sha256(self, build_digest: str = "") -> str:
        """Identity of what this recipe builds, with the code/library/parent digest mixed in."""
        blob = json.dumps({"recipe": self.resolved(), "build": build_digest}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def _plain(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@dataclass(frozen=True)
class TorchInt8DynamicRecipe(Recipe):
    """PyTorch eager dynamic INT8 of every nn.Linear (weights per channel), embeddings stored
    as 8-bit per-row, then traced to TorchScript so it loads without pickle."""

    variant: ClassVar[str] = "torch-int8-dynamic"
    precision: ClassVar[str] = "int8"
    runtime: ClassVar[str] = "torchscript"

    torch_engine: str = "x86"
    per_channel: bool = True
    quantise_embeddings: bool = True
    freeze: bool = True  # torch.jit.freeze: weights become constants, a little faster

    def validate(self):
        _check_choice("torch_engine", self.torch_engine, TORCH_ENGINES)
        for name in ("per_channel", "quantise_embeddings", "freeze"):
            _check_bool(name, getattr(self, name))


@dataclass(frozen=True)
class OnnxFp32Recipe(Recipe):
    """ONNX export plus ONNX Runtime's BERT fusions: the reference every ONNX variant starts from."""

    variant: ClassVar[str] = "onnx-fp32"
    precision: ClassVar[str] = "fp32"
    runtime: ClassVar[str] = "onnxruntime"

    opset: int = 17
    fuse_graph: bool = True  # Attention, SkipLayerNorm, BiasGelu, EmbedLayerNorm

    def validate(self):
        _check_int("opset", self.opset, 14, 21)
        _check_bool("fuse_graph", self.fuse_graph)


DYNAMIC_OPS = ("MatMul", "Attention", "EmbedLayerNormalization", "Gather")


@dataclass(frozen=True)
class OnnxInt8DynamicRecipe(OnnxFp32Recipe):
    """Dynamic INT8 on the fused graph: weights quantised offline, activations per call.
    Quantising the embeddings (EmbedLayerNormalization / Gather) is what brings size to ~25 %."""

    variant: ClassVar[str] = "onnx-int8-dynamic"
    precision: ClassVar[str] = "int8"

    weight_type: str = "QInt8"
    per_channel: bool = True
    reduce_range: bool = True
    op_types: tuple[str, ...] = DYNAMIC_OPS

    def validate(self):
        super().validate()
        _check_choice("weight_type", self.weight_type, QUANT_TYPES)
        _check_bool("per_channel", self.per_channel)
        _check_bool("reduce_range", self.reduce_range)
        _check_ops("op_types", self.op_types, DYNAMIC_OPS)


STATIC_OPS = ("MatMul",)
DYNAMIC_OPS_IN_STATIC = ("Attention", "EmbedLayerNormalization")


@dataclass(frozen=True)
class OnnxInt8StaticRecipe(OnnxFp32Recipe):
    """Calibrated static INT8 (Q/DQ) of the fused graph's MatMuls on a slice of news9 train.

    Static means the activation ranges are measured once on calibration headlines instead of
    per call. That suits inputs with a stable range and clips those with outliers, so:

    * Q/DQ is restricted to MatMul, uint8 activations and int8 per-channel weights; ORT's
      default static op set collapsed agreement to 34 % in the field notes;
    * MatMuls fed by a GELU (the FFN down-projections, outlier-heavy) are quantised
      dynamically instead (``dynamic_after_gelu``): static there cost agreement on news9;
    * the fused Attention and EmbedLayerNormalization ops hold the Q/K/V and embedding
      weights but have no Q/DQ form: ``dynamic_ops`` gives them ORT's dynamic integer ops
      (QAttention, QEmbedLayerNormalization); left FP32 the file stays at ~74 % of FP32.
    """

    variant: ClassVar[str] = "onnx-int8-static"
    precision: ClassVar[str] = "int8"

    calibration_dataset: str = "news9"  # its train split; anything flows.data.load_dataset reads
    calibration_method: str = "MinMax"
    calibration_size: int = 128
    calibration_seed: int = 13
    percentile: float = 99.999  # Percentile method only
    activation_type: str = "QUInt8"
    weight_type: str = "QInt8"
    per_channel: bool = True
    reduce_range: bool = False
    op_types: tuple[str, ...] = STATIC_OPS
    dynamic_after_gelu: bool = True
    dynamic_ops: tuple[str, ...] = DYNAMIC_OPS_IN_STATIC

    def validate(self):
        super().validate()
        if not isinstance(self.calibration_dataset, str) or not self.calibration_dataset.strip():
            raise RecipeError(f"calibration_dataset: must name a dataset, got {self.calibration_dataset!r}")
        _check_choice("calibration_method", self.calibration_method, CALIBRATION_METHODS)
        _check_int("calibration_size", self.calibration_size, 8, 5000)
        _check_int("calibration_seed", self.calibration_seed, 0, 2**31 - 1)
        if isinstance(self.percentile, bool) or not isinstance(self.percentile, (int, float)) or not 90.0 <= self.percentile < 100.0:
            raise RecipeError(f"percentile: must be in [90, 100), got {self.percentile!r}")
        _check_choice("activation_type", self.activation_type, QUANT_TYPES)
        _check_choice("weight_type", self.weight_type, QUANT_TYPES)
        _check_bool("per_channel", self.per_channel)
        _check_bool("reduce_range", self.reduce_range)
        _check_ops("op_types", self.op_types, STATIC_OPS)
        _check_bool("dynamic_after_gelu", self.dynamic_after_gelu)
        if self.dynamic_ops:
            _check_ops("dynamic_ops", self.dynamic_ops, DYNAMIC_OPS_IN_STATIC)
        if not self.fuse_graph:
            raise RecipeError("fuse_graph: static INT8 is built on the fused graph (unfused, it also "
                              "quantises the attention's activation x activation MatMuls and loses agreement)")


FP16_KEEP_FP32 = ("LayerNormalization", "SkipLayerNormalization", "EmbedLayerNormalization", "Softmax")


@dataclass(frozen=True)
class OnnxFp16Recipe(OnnxFp32Recipe):
    """FP16 weights from the fused graph with ONNX Runtime's float16 converter, inputs/outputs
    kept in their own types and the LayerNorm family and Softmax kept FP32 (FP16 LayerNorm
    overflows; TensorRT issues 1500, 2564).

    The fused graph has no standalone Softmax: it lives inside the Attention op, whose kernels
    accumulate the softmax in FP32. On the CPU provider ONNX Runtime has no FP16 kernels for
    these ops: at session start it casts the FP16 weights back to FP32 (checked in the
    optimised graph), so here FP16 halves the file and leaves the arithmetic FP32 - parity
    is checkable on CPU, and the same file is the starting point for a GPU build.
    """

    variant: ClassVar[str] = "onnx-fp16"
    precision: ClassVar[str] = "fp16"

    keep_io_types: bool = True
    keep_fp32_ops: tuple[str, ...] = FP16_KEEP_FP32
    # Big FP32 initializers that only kept-FP32 ops read (the word embeddings feed
    # EmbedLayerNormalization) are stored as FP16 plus a Cast, so size still halves.
    fp16_storage_min_elements: int = 1 << 20

    def validate(self):
        super().validate()
        _check_bool("keep_io_types", self.keep_io_types)
        if not self.keep_io_types:
            raise RecipeError("keep_io_types: must be true; the serving pyfunc feeds int64 ids and reads FP32 logits")
        if not isinstance(self.keep_fp32_ops, tuple) or not {"LayerNormalization", "Softmax"} <= set(self.keep_fp32_ops):
            raise RecipeError(f"keep_fp32_ops: must be a tuple keeping at least LayerNormalization and Softmax, got {self.keep_fp32_ops!r}")
        _check_int("fp16_storage_min_elements", self.fp16_storage_min_elements, 1, 2**40)
        if not self.fuse_graph:
            raise RecipeError("fuse_graph: FP16 is converted from the fused graph (the unfused one fails to load on the CPU provider)")


OV_PRECISION_HINTS = ("f32", "bf16")
NNCF_PRESETS = ("performance", "mixed")


@dataclass(frozen=True)
class OpenVinoFp32Recipe(Recipe):
    """The FP32 parent's ONNX export read by OpenVINO (``openvino.convert_model``) and saved as
    OpenVINO IR (``model.xml`` + ``model.bin``). The reference every OpenVINO variant starts from.

    OpenVINO converts the plain export, not ONNX Runtime's fused graph: its ``com.microsoft``
    contrib ops (Attention, QAttention, SkipLayerNormalization) have no conversion rule, and
    OpenVINO fuses attention and LayerNorm itself when it compiles the model."""

    variant: ClassVar[str] = "openvino-fp32"
    precision: ClassVar[str] = "fp32"
    runtime: ClassVar[str] = "openvino"

    opset: int = 17
    # What the CPU plugin computes in: f32, or bf16 where the CPU has AMX/AVX512-BF16. Measured
    # on an AMD EPYC (avx512_bf16): bf16 was no faster than f32 for this model (field notes).
    inference_precision_hint: str = "f32"

    def validate(self):
        _check_int("opset", self.opset, 14, 21)
        _check_choice("inference_precision_hint", self.inference_precision_hint, OV_PRECISION_HINTS)


@dataclass(frozen=True)
class OpenVinoInt8Recipe(OpenVinoFp32Recipe):
    """NNCF post-training INT8 of the OpenVINO model: activation ranges calibrated on a seeded
    slice of the training split, weights per channel, the transformer-aware scheme
    (``model_type=TRANSFORMER`` keeps the attention softmax and LayerNorm inputs in float).

    ``accuracy_control`` switches to ``nncf.quantize_with_accuracy_control``: layers are
    returned to float, most harmful first, until top-1 agreement with the FP32 model on the
    validation split drops by at most ``max_drop``."""

    variant: ClassVar[str] = "openvino-int8"
    precision: ClassVar[str] = "int8"

    calibration_dataset: str = "news9"  # its train split; anything flows.data.load_dataset reads
    calibration_size: int = 300
    calibration_seed: int = 13
    nncf_preset: str = "mixed"  # symmetric weights, asymmetric activations
    fast_bias_correction: bool = True
    accuracy_control: bool = False
    max_drop: float = 0.01  # accuracy_control only: agreement with FP32 on the validation split

    def validate(self):
        super().validate()
        if not isinstance(self.calibration_dataset, str) or not self.calibration_dataset.strip():
            raise RecipeError(f"calibration_dataset: must name a dataset, got {self.calibration_dataset!r}")
        _check_int("calibration_size", self.calibration_size, 8, 5000)
        _check_int("calibration_seed", self.calibration_seed, 0, 2**31 - 1)
        _check_choice("nncf_preset", self.nncf_preset, NNCF_PRESETS)
        _check_bool("fast_bias_correction", self.fast_bias_correction)
        _check_bool("accuracy_control", self.accuracy_control)
        if isinstance(self.max_drop, bool) or not isinstance(self.max_drop, (int, float)) or not 0 < self.max_drop < 1:
            raise RecipeError(f"max_drop: must be a number in (0, 1), got {self.max_drop!r}")


RECIPE_CLASSES: dict[str, type[Recipe]] = {
    cls.variant: cls
    for cls in (TorchInt8DynamicRecipe, OnnxFp32Recipe, OnnxInt8DynamicRecipe, OnnxInt8StaticRecipe, OnnxFp16Recipe,
                OpenVinoFp32Recipe, OpenVinoInt8Recipe)
}
ONNX_VARIANTS = tuple(v for v, c in RECIPE_CLASSES.items() if c.runtime == "onnxruntime")
TORCH_VARIANTS = tuple(v for v, c in RECIPE_CLASSES.items() if c.runtime == "torchscript")
OPENVINO_VARIANTS = tuple(v for v, c in RECIPE_CLASSES.items() if c.runtime == "openvino")


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
    """The recipe for ``variant`` with the preset's formats, then any explicit overrides."""
    _check_choice("variant", variant, tuple(RECIPE_CLASSES))
    cls = RECIPE_CLASSES[variant]
    hw = get_preset(preset)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise RecipeError(f"{unknown[0]}: not a field of the {variant} recipe (fields: {sorted(known)})")
    return cls(**{**_preset_defaults(cls, hw), **overrides, "preset": hw.name})


def recipe_from_json(text: str) -> Recipe:
    """Rebuild a recipe from its ``quant_config.json`` (validation runs again)."""
    raw = json.loads(text)
    cls = RECIPE_CLASSES[raw["variant"]]
    kwargs = {f.name: raw[f.name] for f in fields(cls) if f.name in raw}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return cls(**kwargs)


__all__ = [
    "RecipeError", "HardwarePreset", "PRESETS", "PRESET_CHOICES", "detect_preset", "get_preset",
    "Recipe", "TorchInt8DynamicRecipe", "OnnxFp32Recipe", "OnnxInt8DynamicRecipe",
    "OnnxInt8StaticRecipe", "OnnxFp16Recipe", "OpenVinoFp32Recipe", "OpenVinoInt8Recipe", "RECIPE_CLASSES",
    "ONNX_VARIANTS", "TORCH_VARIANTS", "OPENVINO_VARIANTS",
    "build_recipe", "recipe_from_json",
]
