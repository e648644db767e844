"""quantise_trt: TensorRT FP16 and INT8 engines of a registered FP32 version, registered as
versions ``trt-fp16`` / ``trt-int8`` (``runtime=tensorrt``, ``device=gpu``).

The engines are built by :mod:`quantgate.backends.tensorrt` through the one quantise step
(:mod:`flows.quantise`); this module is its TensorRT command: the engine profile's options,
the GPU check that exits 3 (``EXIT_NO_GPU``) without an NVIDIA GPU, and
``--precision-graph-only``, which builds the FP16/INT8 precision graphs on any machine, checks
them with ONNX Runtime on the CPU against the parent, and logs them as run artifacts under
``precision_graphs/`` without registering anything (they are not engines).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click
import mlflow
import numpy as np
from mlflow.entities.model_registry import ModelVersion

from flows.quantise import (
    LATEST,
    ParityCheck,
    calibrate_on_parent_data,
    check_split,
    load_parent,
    quantise,
    resolve_source,
    trained_on,
)
from quantgate.artifact_log import log_file
from quantgate.backends.tensorrt import BACKEND, int8_weight_matmuls, precision_graph
from quantgate.recipes import (
    CALIBRATION_METHODS,
    RECIPE_CLASSES,
    TRT_VARIANTS,
    RecipeError,
    TrtInt8Recipe,
    TrtRecipe,
    build_recipe,
)
from quantgate.tracking import DEFAULT_MODEL_NAME, configure_tracking
from quantgate.trt_checks import EXIT_NO_GPU
from quantgate.trt_shapes import TrtError
from registry_hooks.gate.parity import describe, parity
from registry_hooks.gate.thresholds import DEFAULT_THRESHOLDS, ThresholdError, load_thresholds

HELP = """quantise_trt: TensorRT FP16 and INT8 engines of a registered FP32 version, registered as
versions ``trt-fp16`` / ``trt-int8`` (``runtime=tensorrt``, ``device=gpu``).

Precision is decided in the ONNX graph, on the CPU (FP16 with LayerNorm/Softmax kept FP32;
symmetric INT8 Q/DQ calibrated on the parent's training data), then a strongly typed engine with one
optimisation profile (``--batch``, ``--seq-len`` as min,opt,max) is built on the GPU. The
GPU, compute capability and TensorRT/CUDA versions travel with the engine; loading it
elsewhere fails with a message to rebuild.

Needs an NVIDIA GPU and ``pip install -e .[gpu]``: without them the flow stops before
touching the model or the registry and exits 3. ``--precision-graph-only`` builds, checks
and logs just the two ONNX graphs on any machine, registering nothing.
"""


def recipes_for(precision: str, **fields) -> list[TrtRecipe]:
    """``all``/``fp16``/``int8`` -> the recipes, each given the fields it has."""
    variants = list(TRT_VARIANTS) if precision == "all" else [f"trt-{precision}"]
    out = []
    for variant in variants:
        known = set(RECIPE_CLASSES[variant].__dataclass_fields__)
        out.append(build_recipe(variant, **{k: v for k, v in fields.items() if k in known and v is not None}))
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


def log_precision_graphs(source: ModelVersion, recipes: list[TrtRecipe], check_size: int, thresholds) -> dict[str, str]:
    """The CPU half only: precision graphs as run artifacts, nothing registered."""
    mlflow.set_tags(
        {
            "quantgate.step": "quantise_trt",
            "quantgate.source_version": source.version,
            "quantgate.precision_graph_only": "true",
        }
    )
    mlflow.log_params({"source_version": source.version, "check_size": check_size})
    recipes = [calibrate_on_parent_data(r, source) for r in recipes]
    logged = {}
    with load_parent(source) as parent, tempfile.TemporaryDirectory(prefix="quantgate-trt-") as tmp:
        texts, y_true = check_split(check_size, parent.labels, *trained_on(source))
        for recipe in recipes:
            mlflow.log_params(recipe.params())
            path = precision_graph(recipe, parent, Path(tmp))
            config = Path(tmp) / f"{recipe.variant}.quant_config.json"
            config.write_text(json.dumps(recipe.resolved(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
            log_file(mlflow.active_run().info.run_id, path, "precision_graphs")
            log_file(mlflow.active_run().info.run_id, config, "precision_graphs")
            if texts:
                check = cpu_check(parent, path, texts, y_true, thresholds)
                mlflow.log_metrics({f"{recipe.variant}.cpu_{k}": v for k, v in check.items()})
                click.echo(
                    describe(recipe.variant, f"ONNX Runtime CPU, {len(texts)} test headlines", check, thresholds)
                )
            if isinstance(recipe, TrtInt8Recipe):
                int8, floats = int8_weight_matmuls(path)
                mlflow.log_metrics(
                    {f"{recipe.variant}.int8_weight_matmuls": int8, f"{recipe.variant}.float_weight_matmuls": floats}
                )
                click.echo(f"{recipe.variant}: {int8} weight MatMul/Gemm nodes INT8, {floats} float")
            click.echo(
                f"logged precision graph precision_graphs/{path.name} "
                f"({recipe.variant}; not registered: it is not an engine)"
            )
            logged[recipe.variant] = path.name
    return logged


@click.command("quantise_trt", help=HELP)
@click.option(
    "--source", default=LATEST, show_default=True, help=f"FP32 version: 3, name@alias, models:/… or {LATEST}."
)
@click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True)
@click.option("--precision", type=click.Choice(["all", "fp16", "int8"]), default="all", show_default=True)
@click.option(
    "--batch", default="1,8,32", show_default=True, help="Optimisation profile of the batch axis: min,opt,max."
)
@click.option(
    "--seq-len",
    default="8,64,128",
    show_default=True,
    help="Optimisation profile of the sequence axis: min,opt,max (max >= the model's max_length).",
)
@click.option(
    "--calibration-size",
    type=int,
    default=128,
    show_default=True,
    help="news9 train headlines the INT8 ranges are calibrated on.",
)
@click.option("--calibration-method", type=click.Choice(list(CALIBRATION_METHODS)), default="MinMax", show_default=True)
@click.option(
    "--quantise-attention-matmuls", is_flag=True, help="Also Q/DQ the attention's activation x activation MatMuls."
)
@click.option("--workspace-mib", type=int, default=4096, show_default=True, help="TensorRT builder workspace.")
@click.option(
    "--check-size",
    type=int,
    default=0,
    show_default=True,
    help=(
        "news9 test headlines the graphs/engines are checked on against the "
        "parent, by the gate's parity limits (0: all of them; -1: skip)."
    ),
)
@click.option(
    "--thresholds",
    "thresholds_path",
    type=click.Path(exists=True, dir_okay=False),
    default=str(DEFAULT_THRESHOLDS),
    show_default=True,
    help="Gate thresholds whose parity limits the check reports against (the gpu: section where present).",
)
@click.option(
    "--precision-graph-only",
    type=bool,
    is_flag=False,
    flag_value=True,
    default=False,
    show_default=True,
    help=(
        "Build and log only the FP16/INT8 precision ONNX graphs "
        "(CPU; nothing registered). Takes an optional true/false."
    ),
)
def cli(
    source,
    model_name,
    precision,
    batch,
    seq_len,
    calibration_size,
    calibration_method,
    quantise_attention_matmuls,
    workspace_mib,
    check_size,
    thresholds_path,
    precision_graph_only,
):
    try:
        policy = load_thresholds(thresholds_path)
        thresholds = policy.targets.get("gpu", policy.base)
    except ThresholdError as exc:
        raise click.BadParameter(str(exc), param_hint="--thresholds") from None
    try:
        recipes = recipes_for(
            precision,
            batch=batch,
            seq_len=seq_len,
            calibration_size=calibration_size,
            calibration_method=calibration_method,
            workspace_mib=workspace_mib,
            quantise_attention_matmuls=quantise_attention_matmuls,
        )
    except RecipeError as exc:
        raise click.BadParameter(str(exc)) from None
    if not precision_graph_only:  # first: before the model is loaded or the registry touched
        try:
            BACKEND.preflight()
        except TrtError as exc:
            click.echo(f"quantise_trt: {exc}", err=True)
            click.echo(
                "(`--precision-graph-only` builds and logs the FP16/INT8 ONNX graphs on this machine.)", err=True
            )
            sys.exit(EXIT_NO_GPU)
    configure_tracking(model_name=model_name)
    src = resolve_source(source, model_name)
    try:
        with mlflow.start_run(run_name="quantise_trt" + ("-precision-graphs" if precision_graph_only else "")):
            if precision_graph_only:
                log_precision_graphs(src, recipes, check_size, thresholds)
            else:
                check = ParityCheck(src, check_size, thresholds, prefix="engine") if check_size >= 0 else None
                quantise(src, recipes, step="quantise_trt", check=check)
    except TrtError as exc:  # e.g. a profile that misses max_length, a TensorRT parse failure
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    from flows.errors import run

    run(cli)
