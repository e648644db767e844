"""Recipes of the CPU runtimes: PyTorch dynamic INT8 (TorchScript), ONNX Runtime and OpenVINO."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from quantgate.recipes.base import (
    CALIBRATE_ON_PARENT,
    CALIBRATION_METHODS,
    QUANT_TYPES,
    TORCH_ENGINES,
    Recipe,
    RecipeError,
    _check_bool,
    _check_choice,
    _check_int,
    _check_ops,
    check_calibration,
)


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

    weight_type: str = "QUInt8"  # the avx2 preset's (the class defaults are that preset)
    per_channel: bool = True
    reduce_range: bool = False
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

    calibration_dataset: str = CALIBRATE_ON_PARENT  # its train split; anything load_dataset reads
    calibration_options: str = ""  # JSON of load_dataset's keywords (columns, labels), as dataset_options holds
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
        check_calibration(self.calibration_dataset, self.calibration_options)
        _check_choice("calibration_method", self.calibration_method, CALIBRATION_METHODS)
        _check_int("calibration_size", self.calibration_size, 8, 5000)
        _check_int("calibration_seed", self.calibration_seed, 0, 2**31 - 1)
        if (
            isinstance(self.percentile, bool)
            or not isinstance(self.percentile, (int, float))
            or not 90.0 <= self.percentile < 100.0
        ):
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
            raise RecipeError(
                "fuse_graph: static INT8 is built on the fused graph (unfused, it also "
                "quantises the attention's activation x activation MatMuls and loses agreement)"
            )


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
        if not isinstance(self.keep_fp32_ops, tuple) or not {"LayerNormalization", "Softmax"} <= set(
            self.keep_fp32_ops
        ):
            raise RecipeError(
                "keep_fp32_ops: must be a tuple keeping at least "
                f"LayerNormalization and Softmax, got {self.keep_fp32_ops!r}"
            )
        _check_int("fp16_storage_min_elements", self.fp16_storage_min_elements, 1, 2**40)
        if not self.fuse_graph:
            raise RecipeError(
                "fuse_graph: FP16 is converted from the fused graph (the unfused one fails to load on the CPU provider)"
            )


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

    calibration_dataset: str = CALIBRATE_ON_PARENT  # its train split; anything load_dataset reads
    calibration_options: str = ""  # JSON of load_dataset's keywords (columns, labels), as dataset_options holds
    calibration_size: int = 300
    calibration_seed: int = 13
    nncf_preset: str = "mixed"  # symmetric weights, asymmetric activations
    fast_bias_correction: bool = True
    accuracy_control: bool = False
    max_drop: float = 0.01  # accuracy_control only: agreement with FP32 on the validation split

    def validate(self):
        super().validate()
        check_calibration(self.calibration_dataset, self.calibration_options)
        _check_int("calibration_size", self.calibration_size, 8, 5000)
        _check_int("calibration_seed", self.calibration_seed, 0, 2**31 - 1)
        _check_choice("nncf_preset", self.nncf_preset, NNCF_PRESETS)
        _check_bool("fast_bias_correction", self.fast_bias_correction)
        _check_bool("accuracy_control", self.accuracy_control)
        if isinstance(self.max_drop, bool) or not isinstance(self.max_drop, (int, float)) or not 0 < self.max_drop < 1:
            raise RecipeError(f"max_drop: must be a number in (0, 1), got {self.max_drop!r}")
