"""The recipe base: validation helpers, hardware presets and :class:`Recipe`.

Quantisation recipes: one frozen, validated config per variant, with named hardware presets.

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
Our ``avx2`` preset, like Optimum's, avoids that with uint8 weights (u8*u8 kernels). The other
cure, int8 weights at 7 bits (``reduce_range``: 2 x 255 x 64 < 32767), is faster but coarser,
and on an AVX2-only host it cost the quick start's variant its gate pass (see ``PRESETS``).
This module imports no ML library: configs are checked and logged without loading torch/ORT.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

from quantgate.errors import UserError


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
        HardwarePreset(
            "avx512_vnni",
            "QInt8",
            "QUInt8",
            True,
            False,
            "x86",
            "VPDPBUSD multiplies u8 activations by s8 weights into int32: no saturation",
        ),
        HardwarePreset(
            "avx2",
            "QUInt8",
            "QUInt8",
            True,
            False,
            "x86",
            "no VNNI: u8*s8 goes through VPMADDUBSW, whose int16 sums saturate at 8-bit "
            "weights, so weights are uint8 (u8*u8, Optimum's avx2 choice). Measured on an "
            "AVX2-only EPYC, news9 MiniLM, 430 test texts: 7-bit int8 weights (reduce_range) "
            "were 12-15 % faster at batch 1 but moved 8 labels (F1 drop upper bound 2.30 "
            "points, over the default gate's 2), uint8 weights 6 (1.52)",
        ),
        HardwarePreset(
            "arm64",
            "QInt8",
            "QUInt8",
            True,
            False,
            "qnnpack",
            "u8*s8 is as fast as u8*u8 on ARM64 and faster on small cores",
        ),
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


# --------------------------------------------------------------------------- calibration data
# A recipe's calibration_dataset default: the data its FP32 parent was trained on, resolved by
# the quantise step from the parent's ``dataset`` / ``dataset_options`` tags before anything is
# built (a backend never sees "auto").
CALIBRATE_ON_PARENT = "auto"
CALIBRATION_OPTION_KEYS = ("text_column", "label_column", "labels", "dedupe")  # load_dataset's keywords


def check_calibration(dataset, options) -> None:
    """``calibration_dataset`` names a dataset (or ``auto``); ``calibration_options`` is "" or a
    JSON object of :func:`quantgate.data.load_dataset` keywords, as the FP32 version's
    ``dataset_options`` tag holds them."""
    if not isinstance(dataset, str) or not dataset.strip():
        raise RecipeError(f"calibration_dataset: must name a dataset (or {CALIBRATE_ON_PARENT!r}), got {dataset!r}")
    if not isinstance(options, str):
        raise RecipeError(f"calibration_options: must be JSON text, got {options!r}")
    try:
        parsed = json.loads(options) if options.strip() else {}
    except json.JSONDecodeError as exc:
        raise RecipeError(f"calibration_options: not JSON ({exc.msg}): {options!r}") from None
    if not isinstance(parsed, dict) or set(parsed) - set(CALIBRATION_OPTION_KEYS):
        raise RecipeError(
            f"calibration_options: must be a JSON object with keys among {list(CALIBRATION_OPTION_KEYS)}, "
            f"got {options!r}"
        )


def calibration_kwargs(recipe) -> dict:
    """The load_dataset keywords of a recipe's calibration data."""
    if recipe.calibration_dataset == CALIBRATE_ON_PARENT:
        raise RecipeError(
            f"calibration_dataset: {CALIBRATE_ON_PARENT!r} is resolved by the quantise step to the parent's "
            "training data; a backend called directly needs a dataset name"
        )
    return json.loads(recipe.calibration_options) if recipe.calibration_options.strip() else {}


# --------------------------------------------------------------------------- recipes
@dataclass(frozen=True)
class Recipe:
    """Fields every recipe has. Subclasses set the ClassVars and add their own fields."""

    variant: ClassVar[str]
    precision: ClassVar[str]
    runtime: ClassVar[str]  # the backend that builds it and the serving loader in meta.json
    device: ClassVar[str] = "cpu"  # "gpu": no CPU preset applies

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
