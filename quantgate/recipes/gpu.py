"""Recipes of the TensorRT runtime (NVIDIA GPUs). No CPU preset applies: an engine is built for
the GPU it is built on, recorded on the version; the precision of every layer is decided in
the ONNX graph (see :mod:`quantgate.backends.tensorrt`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from quantgate.recipes.base import CALIBRATE_ON_PARENT, CALIBRATION_METHODS, Recipe, RecipeError, check_calibration
from quantgate.trt_shapes import Profile, ShapeRange, TrtError, parse_range


def _range(name: str, value) -> ShapeRange:
    try:
        return parse_range(value, name)
    except TrtError as exc:
        raise RecipeError(str(exc)) from None


@dataclass(frozen=True)
class TrtRecipe(Recipe):
    """Fields every TensorRT recipe has: the export opset and the optimisation profile. No CPU
    preset applies: the engine is built for the GPU it is built on (recorded on the version)."""

    runtime: ClassVar[str] = "tensorrt"
    device: ClassVar[str] = "gpu"

    preset: str = "gpu"
    opset: int = 17
    batch: tuple[int, ...] = (1, 8, 32)
    seq_len: tuple[int, ...] = (8, 64, 128)
    workspace_mib: int = 4096

    def __post_init__(self):
        if self.preset != "gpu":
            raise RecipeError(f"preset: TensorRT recipes take no CPU preset, got {self.preset!r}")
        for name in ("batch", "seq_len"):
            object.__setattr__(self, name, tuple(_range(name, getattr(self, name)).as_list()))
        for name, lo, hi in (("opset", 17, 21), ("workspace_mib", 64, 1 << 20)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise RecipeError(f"{name}: must be an integer in [{lo}, {hi}], got {value!r}")
        self.validate()

    def profile(self) -> Profile:
        return Profile(ShapeRange(*self.batch, what="batch"), ShapeRange(*self.seq_len, what="seq_len"))


@dataclass(frozen=True)
class TrtFp16Recipe(TrtRecipe):
    """FP16 graph for a strongly typed engine; LayerNormalization and Softmax stay FP32 (FP16
    LayerNorm overflows: TensorRT issues 1500, 2564), ids in and logits out keep their types."""

    variant: ClassVar[str] = "trt-fp16"
    precision: ClassVar[str] = "fp16"

    keep_io_types: bool = True
    keep_fp32_ops: tuple[str, ...] = ("LayerNormalization", "Softmax")
    fp16_storage_min_elements: int = 1 << 20  # read by convert_fp16

    def validate(self):
        if self.keep_io_types is not True:
            raise RecipeError("keep_io_types: must be true; the engine takes token ids and gives FP32 logits")
        if not isinstance(self.keep_fp32_ops, tuple) or not {"LayerNormalization", "Softmax"} <= set(
            self.keep_fp32_ops
        ):
            raise RecipeError(
                f"keep_fp32_ops: must keep at least LayerNormalization and Softmax, got {self.keep_fp32_ops!r}"
            )


QDQ_OP_TYPES = ("MatMul", "Gemm")  # weight layers TensorRT fuses Q/DQ into (Conv: none here)


@dataclass(frozen=True)
class TrtInt8Recipe(TrtRecipe):
    """INT8 Q/DQ graph (symmetric, per-channel weights) calibrated on a news9 train slice;
    everything without Q/DQ (embeddings, LayerNorm, Softmax, GELU, the residual Adds, the
    biases) runs FP32. All 38 weight layers are INT8: the 36 MatMuls of the six encoder
    layers and the pooler and classifier Gemms (``op_types``; the Gemms were left FP32
    before, and quantising them changes no prediction: same numbers as below).

    ``qdq_matmul_outputs`` (default false) and ``float_residual`` (default true) decide where
    the activation Q/DQ go; the defaults put them on the weight layers' inputs only. Measured on the
    registered news9 model (version 3), 430 news9 test headlines, ONNX Runtime CPU running
    the Q/DQ graph, against the gate's parity limits (agreement >= 0.95, upper 95 % bound of
    the macro-F1 drop <= 2.0 points):

    * before (ORT's defaults: outputs quantised, Q/DQ shared with the residual Adds):
      agreement 0.9186, drop 4.87 points, upper bound 7.33 (MinMax; Percentile 0.9116,
      Entropy 0.9163) - outside. Leaving out one group at a time showed the cause: only
      excluding the FFN output dense (``output/dense``) helps (agreement 0.9907, upper bound
      1.42; without Q, K, V, attention-output or FFN-intermediate: 0.909-0.921, and without
      any single encoder layer: 0.916-0.944), and quantising *only* that role is as bad as
      all of them (0.9093). Its MatMul output - the branch that writes BERT's outlier
      channels into the residual stream - was rounded to one per-tensor INT8 scale by the
      output Q/DQ; its input (the GELU output) is harmless once that is gone.
    * ``qdq_matmul_outputs=False`` alone: agreement 0.9791, drop -0.93, upper bound +0.24.
      (``float_residual`` alone, outputs still quantised: 0.9186, upper bound 6.27.)
    * both (the defaults): agreement 0.9884, drop -0.03, upper bound +0.89 (MinMax, 128
      headlines); Percentile 0.9837 / +0.75, Entropy 0.9837 / -0.18; MinMax with 64 / 256 /
      512 headlines 0.9837 / 0.9814 / 0.9744, calibration seeds 1 / 2: 0.9744 / 0.9791 -
      all within the limits with margin, with no weight MatMul left in float.
      ``--quantise-attention-matmuls`` too: 0.9814, upper bound +1.17. Per-tensor weights
      (``per_channel=False``) are not enough: 0.9558, upper bound 2.00.
    """

    variant: ClassVar[str] = "trt-int8"
    precision: ClassVar[str] = "int8"

    calibration_dataset: str = CALIBRATE_ON_PARENT  # its train split; anything load_dataset reads
    calibration_options: str = ""  # JSON of load_dataset's keywords (columns, labels), as dataset_options holds
    calibration_method: str = "MinMax"
    calibration_size: int = 128
    calibration_seed: int = 13
    percentile: float = 99.999
    per_channel: bool = True
    # the weight layers that get Q/DQ: the encoder's MatMuls, and the pooler/classifier Gemms
    op_types: tuple[str, ...] = ("MatMul", "Gemm")
    quantise_attention_matmuls: bool = False
    # ORT's QDQ default, Q/DQ on each MatMul's output too: true reproduces the old, inaccurate graph
    qdq_matmul_outputs: bool = False
    # readers of a quantised activation other than the MatMuls (residual Adds, Shape) read it in float
    float_residual: bool = True

    def validate(self):
        check_calibration(self.calibration_dataset, self.calibration_options)
        if self.calibration_method not in CALIBRATION_METHODS:
            raise RecipeError(
                f"calibration_method: {self.calibration_method!r} is not one of {list(CALIBRATION_METHODS)}"
            )
        for name, lo, hi in (("calibration_size", 8, 5000), ("calibration_seed", 0, 2**31 - 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise RecipeError(f"{name}: must be an integer in [{lo}, {hi}], got {value!r}")
        if (
            isinstance(self.percentile, bool)
            or not isinstance(self.percentile, (int, float))
            or not 90.0 <= self.percentile < 100.0
        ):
            raise RecipeError(f"percentile: must be in [90, 100), got {self.percentile!r}")
        for name in ("per_channel", "quantise_attention_matmuls", "qdq_matmul_outputs", "float_residual"):
            if not isinstance(getattr(self, name), bool):
                raise RecipeError(f"{name}: must be true or false, got {getattr(self, name)!r}")
        if (
            not isinstance(self.op_types, tuple)
            or "MatMul" not in self.op_types
            or not set(self.op_types) <= set(QDQ_OP_TYPES)
        ):
            raise RecipeError(
                f"op_types: must be a tuple with MatMul, drawn from {list(QDQ_OP_TYPES)}, got {self.op_types!r}"
            )
