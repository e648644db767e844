"""quantise_trt: TensorRT FP16 and INT8 engines of a registered FP32 version, registered as
versions ``trt-fp16`` / ``trt-int8`` (``runtime=tensorrt``, ``device=gpu``).

TensorRT's networks are strongly typed: there are no FP16/INT8 builder flags, the precision of
every layer is decided in the ONNX graph before the engine is built. So this flow has two
halves:

1. **Precision graph, on the CPU.** The FP32 parent is exported to plain ONNX (standard ops
   only: ONNX Runtime's fused contrib ops are not TensorRT ops), then
   * ``trt-fp16``: ONNX Runtime's float16 converter (``quantise_onnx.convert_fp16``) with
     inputs/outputs kept in their types and LayerNormalization and Softmax kept FP32;
   * ``trt-int8``: ONNX Runtime's Q/DQ quantiser (``quantize_static``), calibrated on a seeded
     slice of news9 train (``quantise_onnx.calibration_texts`` / ``calibration_reader``, as
     ``onnx-int8-static`` is). Chosen over NVIDIA Model Optimizer because it is already a
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
2. **Engine, on an NVIDIA GPU** (:mod:`flows.trt_runtime`): a strongly typed network with one
   optimisation profile (``--batch`` and ``--seq-len`` as ``min,opt,max``), serialised, then
   registered with ``engine_meta.json`` (GPU, compute capability, TensorRT/CUDA versions,
   label order, I/O description) in its artifact and on its tags. The engine is also run on a
   held-out news9 slice and its agreement with the parent logged.

Without an NVIDIA GPU (or without ``pip install -e .[gpu]``) the flow stops before loading
the model or touching the registry, prints why, and exits with status 3 (``EXIT_NO_GPU``);
it never falls back to the CPU. ``--precision-graph-only`` runs half 1 anywhere: the graphs
(and a CPU check of them with ONNX Runtime against the parent) are logged as run artifacts
under ``precision_graphs/`` and nothing is registered - they are not engines.

A version built before from the same recipe, parent, code, libraries, calibration data, GPU
architecture and TensorRT version is reused, not registered again.
"""
from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import click
import mlflow
import numpy as np
from mlflow.entities.model_registry import ModelVersion

from flows import packaging
from flows.quantise_common import (
    LATEST,
    build_digest,
    load_parent,
    resolve_source,
    split_reusable,
)
from flows.quantise_onnx import (
    calibration_reader,
    calibration_texts,
    convert_fp16,
    export_onnx,
    stamp_labels,
)
from flows.recipes import CALIBRATION_METHODS, Recipe, RecipeError
from flows.serving_model import sha256_file
from flows.tracking import DEFAULT_MODEL_NAME, configure_tracking
from flows.trt_logic import (
    EXIT_NO_GPU,
    GpuInfo,
    Profile,
    ShapeRange,
    TrtError,
    check_profile_fits,
    parse_range,
    require_gpu,
)
from registry_hooks.thresholds import (
    DEFAULT_THRESHOLDS,
    ThresholdError,
    load_thresholds,
)

CODE_FILES = ("quantise_onnx.py", "quantise_trt.py", "trt_logic.py", "trt_runtime.py")
TRT_VARIANTS = ("trt-fp16", "trt-int8")
HELP = """quantise_trt: TensorRT FP16 and INT8 engines of a registered FP32 version, registered as
versions ``trt-fp16`` / ``trt-int8`` (``runtime=tensorrt``, ``device=gpu``).

Precision is decided in the ONNX graph, on the CPU (FP16 with LayerNorm/Softmax kept FP32;
symmetric INT8 Q/DQ calibrated on news9 train), then a strongly typed engine with one
optimisation profile (``--batch``, ``--seq-len`` as min,opt,max) is built on the GPU. The
GPU, compute capability and TensorRT/CUDA versions travel with the engine; loading it
elsewhere fails with a message to rebuild.

Needs an NVIDIA GPU and ``pip install -e .[gpu]``: without them the flow stops before
touching the model or the registry and exits 3. ``--precision-graph-only`` builds, checks
and logs just the two ONNX graphs on any machine, registering nothing.
"""


# --------------------------------------------------------------------------- recipes
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
        if not isinstance(self.keep_fp32_ops, tuple) or not {"LayerNormalization", "Softmax"} <= set(self.keep_fp32_ops):
            raise RecipeError(f"keep_fp32_ops: must keep at least LayerNormalization and Softmax, got {self.keep_fp32_ops!r}")


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

    calibration_dataset: str = "news9"
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
        if not isinstance(self.calibration_dataset, str) or not self.calibration_dataset.strip():
            raise RecipeError(f"calibration_dataset: must name a dataset, got {self.calibration_dataset!r}")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise RecipeError(f"calibration_method: {self.calibration_method!r} is not one of {list(CALIBRATION_METHODS)}")
        for name, lo, hi in (("calibration_size", 8, 5000), ("calibration_seed", 0, 2**31 - 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise RecipeError(f"{name}: must be an integer in [{lo}, {hi}], got {value!r}")
        if isinstance(self.percentile, bool) or not isinstance(self.percentile, (int, float)) or not 90.0 <= self.percentile < 100.0:
            raise RecipeError(f"percentile: must be in [90, 100), got {self.percentile!r}")
        for name in ("per_channel", "quantise_attention_matmuls", "qdq_matmul_outputs", "float_residual"):
            if not isinstance(getattr(self, name), bool):
                raise RecipeError(f"{name}: must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.op_types, tuple) or "MatMul" not in self.op_types or not set(self.op_types) <= set(QDQ_OP_TYPES):
            raise RecipeError(f"op_types: must be a tuple with MatMul, drawn from {list(QDQ_OP_TYPES)}, got {self.op_types!r}")


TRT_RECIPES: dict[str, type[TrtRecipe]] = {c.variant: c for c in (TrtFp16Recipe, TrtInt8Recipe)}


def recipes_for(precision: str, **fields) -> list[TrtRecipe]:
    """``all``/``fp16``/``int8`` -> the recipes, each given the fields it has."""
    variants = list(TRT_VARIANTS) if precision == "all" else [f"trt-{precision}"]
    out = []
    for variant in variants:
        cls = TRT_RECIPES[variant]
        known = set(cls.__dataclass_fields__)
        out.append(cls(**{k: v for k, v in fields.items() if k in known and v is not None}))
    return out


# --------------------------------------------------------------------------- precision graphs
def qdq_nodes(model, op_types: tuple[str, ...], include_activation_matmuls: bool) -> list[str]:
    """The nodes that get Q/DQ: MatMuls (and Gemms) whose second input is a weight, plus (on
    request) the attention's activation x activation MatMuls."""
    weights = {init.name for init in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type in op_types
            and (n.input[1] in weights or (include_activation_matmuls and n.op_type == "MatMul"))]


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
            raise TrtError(f"{node.name}: zero point {zp.name} is not an all-zero int8 tensor; TensorRT needs symmetric INT8")
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
    float_of = {n.output[0]: q_src[n.input[0]] for n in nodes if n.op_type == "DequantizeLinear" and n.input[0] in q_src}
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
        dead = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not read & set(n.output)]
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
        str(path), str(out), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=list(recipe.op_types),
        nodes_to_quantize=nodes, per_channel=recipe.per_channel, reduce_range=False,
        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, recipe.calibration_method),
        extra_options={
            "ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
            "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}, "CalibPercentile": float(recipe.percentile),
            "OpTypesToExcludeOutputQuantization": [] if recipe.qdq_matmul_outputs else list(recipe.op_types),
        },
    )
    if recipe.float_residual:
        quantised = onnx.load(str(out))
        float_readers(quantised)
        onnx.save(quantised, str(out))
    check_trt_qdq(out)
    return out


class PrecisionGraphs:
    """Exports the parent once, then one precision graph per recipe, label order stamped in."""

    def __init__(self, parent, workdir: Path):
        self.parent, self.workdir, self._plain = parent, workdir, {}

    def plain(self, opset: int) -> Path:
        if opset not in self._plain:
            self._plain[opset] = export_onnx(self.parent.model, self.parent.tokenizer, self.workdir / f"model.opset{opset}.onnx", opset)
        return self._plain[opset]

    def build(self, recipe: TrtRecipe) -> Path:
        out = self.workdir / f"{recipe.variant}.onnx"
        plain = self.plain(recipe.opset)
        if isinstance(recipe, TrtFp16Recipe):
            convert_fp16(plain, out, recipe)
        elif isinstance(recipe, TrtInt8Recipe):
            quantise_qdq(plain, out, recipe, calibration_texts(recipe), self.parent.tokenizer, self.parent.max_length)
        else:
            raise RecipeError(f"variant: {recipe.variant!r} is not a TensorRT recipe")
        stamp_labels(out, self.parent.labels)
        return out


def input_names(path: Path) -> list[str]:
    import onnx

    return [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]


def check_split(size: int, labels: list[str], dataset: str = "news9", options: dict | None = None) -> tuple[list[str], list[int]]:
    """The texts and label ids graphs/engines are checked on: the test split of the dataset the
    parent was trained on (the one the evaluator and the gate use; never used for calibration),
    all of it when ``size`` is 0. Ids index ``labels``, the parent's label order."""
    if size < 0:
        return [], []
    from flows.data import DataError, load_dataset

    test = load_dataset(dataset, ("train", "test"), **(options or {}))["test"]
    index = {name: i for i, name in enumerate(labels)}
    unknown = sorted(set(test.frame["label"]) - set(index))
    if unknown:
        raise DataError(f"{test.origin}: label(s) {unknown} are not in the model's label map {labels}")
    texts, ids = list(test.texts), [index[name] for name in test.frame["label"]]
    return (texts, ids) if size == 0 else (texts[:size], ids[:size])


def trained_on(source: ModelVersion) -> tuple[str, dict]:
    """The dataset (and its loading options) the FP32 version was trained on, from its tags."""
    options = json.loads(source.tags.get("dataset_options") or "{}")
    return source.tags.get("dataset", "news9"), options


def agreement(parent_logits: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    from evaluators.metrics import agreement as top1_agreement
    from evaluators.metrics import prob_deltas, softmax

    return {
        "agreement": top1_agreement(parent_logits.argmax(axis=1), logits.argmax(axis=1)),
        "max_abs_prob_diff": prob_deltas(softmax(parent_logits), softmax(logits))[0],
    }


def parity(parent_logits: np.ndarray, logits: np.ndarray, y_true: list[int], thresholds) -> dict[str, float]:
    """Agreement and macro F1 of a graph against its parent, judged by the gate's own
    relative limits (``thresholds``: a :class:`registry_hooks.thresholds.Thresholds`): the F1
    drop on the upper bound of its paired bootstrap interval, agreement on its value.
    ``within_gate_limits`` is 1.0 only when both hold."""
    from evaluators.metrics import macro_f1
    from registry_hooks.stats import paired_bootstrap_f1_drop

    out = agreement(parent_logits, logits)
    n = parent_logits.shape[1]
    pred, parent_pred = logits.argmax(axis=1), parent_logits.argmax(axis=1)
    out["macro_f1"] = macro_f1(y_true, pred, n)
    out["parent_macro_f1"] = macro_f1(y_true, parent_pred, n)
    drop = paired_bootstrap_f1_drop(y_true, pred, parent_pred, n, level=thresholds.confidence_level,
                                    resamples=thresholds.bootstrap_resamples, seed=thresholds.bootstrap_seed)
    out["f1_drop_points"], out["f1_drop_ci_high"] = drop.point, drop.high
    ok = True
    if thresholds.min_top1_agreement is not None:
        ok &= out["agreement"] >= thresholds.min_top1_agreement
    if thresholds.max_macro_f1_drop_points is not None:
        ok &= drop.high <= thresholds.max_macro_f1_drop_points
    out["within_gate_limits"] = float(ok)
    return out


def cpu_check(parent, graph: Path, texts: list[str], y_true: list[int], thresholds) -> dict[str, float]:
    """The precision graph run by ONNX Runtime on the CPU against the torch parent. For INT8
    this simulates TensorRT's arithmetic with the same scales (Q/DQ), not its kernels."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    out, ref = [], []
    for lo in range(0, len(texts), 32):
        enc = parent.encode(texts[lo : lo + 32])
        feed = {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()}
        out.append(session.run(["logits"], feed)[0])
        ref.append(parent.infer(enc))
    return parity(np.concatenate(ref), np.concatenate(out), y_true, thresholds)


def describe_check(variant: str, where: str, m: dict[str, float], thresholds) -> str:
    verdict = "within" if m["within_gate_limits"] else "OUTSIDE"
    return (f"{variant} ({where}): agreement {m['agreement']:.4f}, macro F1 {m['macro_f1']:.4f} vs parent "
            f"{m['parent_macro_f1']:.4f} (drop {m['f1_drop_points']:+.2f} pts, upper "
            f"{thresholds.confidence_level:.0%} bound {m['f1_drop_ci_high']:+.2f}), max |dprob| "
            f"{m['max_abs_prob_diff']:.4f}: {verdict} the gate's parity limits")


# --------------------------------------------------------------------------- flows
def log_precision_graphs(source: ModelVersion, recipes: list[TrtRecipe], check_size: int, thresholds) -> dict[str, Path]:
    """The CPU half only: precision graphs as run artifacts, nothing registered."""
    mlflow.set_tags({"quantgate.step": "quantise_trt", "quantgate.source_version": source.version,
                     "quantgate.precision_graph_only": "true"})
    mlflow.log_params({"source_version": source.version, "check_size": check_size})
    parent = load_parent(source)
    texts, y_true = check_split(check_size, parent.labels, *trained_on(source))
    logged = {}
    with tempfile.TemporaryDirectory(prefix="quantgate-trt-") as tmp:
        graphs = PrecisionGraphs(parent, Path(tmp))
        for recipe in recipes:
            mlflow.log_params(recipe.params())
            check_profile_fits(recipe.profile(), parent.max_length)
            path = graphs.build(recipe)
            config = Path(tmp) / f"{recipe.variant}.quant_config.json"
            config.write_text(json.dumps(recipe.resolved(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
            mlflow.log_artifact(str(path), "precision_graphs")
            mlflow.log_artifact(str(config), "precision_graphs")
            if texts:
                check = cpu_check(parent, path, texts, y_true, thresholds)
                mlflow.log_metrics({f"{recipe.variant}.cpu_{k}": v for k, v in check.items()})
                click.echo(describe_check(recipe.variant, f"ONNX Runtime CPU, {len(texts)} test headlines", check, thresholds))
            if isinstance(recipe, TrtInt8Recipe):
                int8, floats = int8_weight_matmuls(path)
                mlflow.log_metrics({f"{recipe.variant}.int8_weight_matmuls": int8, f"{recipe.variant}.float_weight_matmuls": floats})
                click.echo(f"{recipe.variant}: {int8} weight MatMul/Gemm nodes INT8, {floats} float")
            click.echo(f"logged precision graph precision_graphs/{path.name} ({recipe.variant}; not registered: it is not an engine)")
            logged[recipe.variant] = path.name
    return logged


def recipe_identity(recipe: TrtRecipe, source: ModelVersion, env: dict) -> str:
    """recipe_sha256: recipe, parent, code, libraries, calibration data, GPU arch, TensorRT."""
    data = f"cc={env['compute_capability']};trt={env['tensorrt_version']}"
    if isinstance(recipe, TrtInt8Recipe):
        from flows.data import dataset_digest, load_dataset

        data += dataset_digest(load_dataset(recipe.calibration_dataset, ("train",)))
    return recipe.sha256(build_digest(source, CODE_FILES, data))


def build_engines(source: ModelVersion, recipes: list[TrtRecipe], gpu: GpuInfo, check_size: int, thresholds) -> dict[str, ModelVersion]:
    """Register (or reuse) one TensorRT version per recipe, inside the active run."""
    from flows import trt_runtime

    env = trt_runtime.environment()
    mlflow.set_tags({"quantgate.step": "quantise_trt", "quantgate.source_version": source.version,
                     **{f"quantgate.{k}": str(v) for k, v in env.items()}})
    mlflow.log_params({"source_version": source.version, "check_size": check_size})
    todo, done = split_reusable(source, recipes, lambda recipe: recipe_identity(recipe, source, env))
    if not todo:
        return done
    parent = load_parent(source)
    texts, y_true = check_split(check_size, parent.labels, *trained_on(source))
    with tempfile.TemporaryDirectory(prefix="quantgate-trt-") as tmp:
        graphs = PrecisionGraphs(parent, Path(tmp))
        for recipe, sha in todo:
            check_profile_fits(recipe.profile(), parent.max_length)
            graph = graphs.build(recipe)
            mlflow.log_artifact(str(graph), "precision_graphs")
            click.echo(f"building {recipe.variant} on {gpu.name} (compute capability {env['compute_capability']}, TensorRT {env['tensorrt_version']})")
            engine = trt_runtime.build_engine(graph, recipe.profile(), recipe.workspace_mib)
            meta = {**env, "variant": recipe.variant, "precision": recipe.precision, "labels": list(parent.labels),
                    "token_inputs": input_names(graph), "parent": {"name": source.name, "version": str(source.version)},
                    "onnx_sha256": sha256_file(graph)}
            engine_dir = trt_runtime.write_engine_dir(Path(tmp) / recipe.variant, engine, meta)
            if texts:
                classifier = trt_runtime.TrtClassifier(engine_dir, parent.labels, parent.tokenizer.pad_token_id)
                ref = np.concatenate([parent.infer(parent.encode(texts[i : i + 32])) for i in range(0, len(texts), 32)])
                got = np.concatenate([classifier.logits(parent.encode(texts[i : i + 32])) for i in range(0, len(texts), 32)])
                check = parity(ref, got, y_true, thresholds)
                mlflow.log_metrics({f"{recipe.variant}.engine_{k}": v for k, v in check.items()})
                click.echo(describe_check(recipe.variant, f"TensorRT on {gpu.name}, {len(texts)} test headlines", check, thresholds))
            done[recipe.variant] = register(recipe, engine_dir, parent, source, sha, env)
    return done


def register(recipe: TrtRecipe, engine_dir: Path, parent, source: ModelVersion, sha: str, env: dict) -> ModelVersion:
    config = recipe.resolved()
    mv = packaging.log_variant(
        model_path=engine_dir, tokenizer_dir=parent.artifact_paths["tokenizer"], runtime=recipe.runtime,
        variant=recipe.variant, precision=recipe.precision, registered_model_name=source.name, labels=parent.labels, device="gpu",
        parent_version=source.version, max_length=parent.max_length, quant_config=config,
        extra_tags={
            "recipe": json.dumps(config, sort_keys=True), "recipe_sha256": sha,
            "profile": json.dumps(recipe.profile().as_dict(), sort_keys=True),
            **{k: str(v) for k, v in env.items()},
        },
    )
    click.echo(f"registered {mv.name} version {mv.version} ({recipe.variant}, parent {source.version})")
    return mv


@click.command("quantise_trt", help=HELP)
@click.option("--source", default=LATEST, show_default=True, help=f"FP32 version: 3, name@alias, models:/… or {LATEST}.")
@click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True)
@click.option("--precision", type=click.Choice(["all", "fp16", "int8"]), default="all", show_default=True)
@click.option("--batch", default="1,8,32", show_default=True, help="Optimisation profile of the batch axis: min,opt,max.")
@click.option("--seq-len", default="8,64,128", show_default=True, help="Optimisation profile of the sequence axis: min,opt,max (max >= the model's max_length).")
@click.option("--calibration-size", type=int, default=128, show_default=True, help="news9 train headlines the INT8 ranges are calibrated on.")
@click.option("--calibration-method", type=click.Choice(list(CALIBRATION_METHODS)), default="MinMax", show_default=True)
@click.option("--quantise-attention-matmuls", is_flag=True, help="Also Q/DQ the attention's activation x activation MatMuls.")
@click.option("--workspace-mib", type=int, default=4096, show_default=True, help="TensorRT builder workspace.")
@click.option("--check-size", type=int, default=0, show_default=True,
              help="news9 test headlines the graphs/engines are checked on against the parent, by the gate's parity limits (0: all of them; -1: skip).")
@click.option("--thresholds", "thresholds_path", type=click.Path(exists=True, dir_okay=False), default=str(DEFAULT_THRESHOLDS),
              show_default=True, help="Gate thresholds whose parity limits the check reports against (the gpu: section where present).")
@click.option("--precision-graph-only", type=bool, is_flag=False, flag_value=True, default=False, show_default=True,
              help="Build and log only the FP16/INT8 precision ONNX graphs (CPU; nothing registered). Takes an optional true/false.")
def cli(source, model_name, precision, batch, seq_len, calibration_size, calibration_method,
        quantise_attention_matmuls, workspace_mib, check_size, thresholds_path, precision_graph_only):
    try:
        policy = load_thresholds(thresholds_path)
        thresholds = policy.targets.get("gpu", policy.base)
    except ThresholdError as exc:
        raise click.BadParameter(str(exc), param_hint="--thresholds") from None
    try:
        recipes = recipes_for(precision, batch=batch, seq_len=seq_len, calibration_size=calibration_size,
                              calibration_method=calibration_method, workspace_mib=workspace_mib,
                              quantise_attention_matmuls=quantise_attention_matmuls)
    except RecipeError as exc:
        raise click.BadParameter(str(exc)) from None
    gpu = None
    if not precision_graph_only:  # first: before the model is loaded or the registry touched
        try:
            gpu = require_gpu()
        except TrtError as exc:
            click.echo(f"quantise_trt: {exc}", err=True)
            click.echo("(`--precision-graph-only` builds and logs the FP16/INT8 ONNX graphs on this machine.)", err=True)
            sys.exit(EXIT_NO_GPU)
    configure_tracking(model_name=model_name)
    src = resolve_source(source, model_name)
    try:
        with mlflow.start_run(run_name="quantise_trt" + ("-precision-graphs" if precision_graph_only else "")):
            if precision_graph_only:
                log_precision_graphs(src, recipes, check_size, thresholds)
            else:
                build_engines(src, recipes, gpu, check_size, thresholds)
    except TrtError as exc:  # e.g. a profile that misses max_length, a TensorRT parse failure
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    from flows.errors import run

    run(cli)
