"""quantise_onnx: export a registered FP32 version to ONNX and register an ONNX Runtime
dynamic INT8 variant of it.

Reads: ``--source`` (a registered FP32 version: number, ``name@alias`` or ``models:/`` URI;
default the newest ``variant=fp32`` version). Hands on: a new version tagged
``variant=onnx-int8-dynamic`` and ``parent_version=<source version>``, and the run tag
``quantgate.version.onnx-int8-dynamic``.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from flows.packaging import log_variant
from flows.serving_model import ONNX_LABELS_KEY
from flows.tracking import DEFAULT_MODEL_NAME, configure_tracking, resolve_version, version_uri

OPSET = 17
LATEST = "latest-fp32"
_WEIGHT_TYPES = ("QInt8", "QUInt8")


@dataclass(frozen=True)
class DynamicInt8Recipe:
    """ONNX Runtime dynamic INT8: weights quantised offline, activations at run time."""

    weight_type: str = "QInt8"
    per_channel: bool = False
    reduce_range: bool = False
    fuse_graph: bool = True  # ORT transformer fusions (attention, skip-LayerNorm, GELU) first

    def __post_init__(self):
        if self.weight_type not in _WEIGHT_TYPES:
            raise ValueError(f"weight_type must be one of {_WEIGHT_TYPES}, got {self.weight_type!r}")


def latest_fp32_version(model_name: str) -> ModelVersion:
    found = MlflowClient().search_model_versions(f"name='{model_name}' and tags.variant='fp32'")
    if not found:
        raise click.ClickException(
            f"no version of {model_name!r} is tagged variant=fp32: run `quantgate train` first"
        )
    return max(found, key=lambda mv: int(mv.version))


def export_onnx(model, tokenizer, out: Path) -> Path:
    """Trace the torch model to ONNX with dynamic batch and sequence axes."""
    import torch

    enc = tokenizer(["an example headline for tracing"], return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in enc]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(
            model, tuple(enc[n] for n in names), str(out), input_names=names,
            output_names=["logits"], dynamic_axes=axes, opset_version=OPSET, dynamo=False,
        )
    return out


def fuse(path: Path, out: Path, num_heads: int, hidden_size: int) -> Path:
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size)
    optimized.save_model_to_file(str(out))
    return out


def quantise_dynamic(path: Path, out: Path, recipe: DynamicInt8Recipe) -> Path:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(path), str(out), weight_type=getattr(QuantType, recipe.weight_type),
        per_channel=recipe.per_channel, reduce_range=recipe.reduce_range,
        # the fused graph's custom ops carry no type info for the quantiser
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return out


def stamp_labels(path: Path, labels: list[str]) -> None:
    """Write the label order into the ONNX file itself; the pyfunc checks it at load."""
    import onnx

    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key != ONNX_LABELS_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=ONNX_LABELS_KEY, value=json.dumps(labels))
    onnx.save(model, str(path))


def quantise(source: ModelVersion, recipe: DynamicInt8Recipe) -> ModelVersion:
    parent = mlflow.pyfunc.load_model(version_uri(source)).unwrap_python_model()
    if parent.meta["runtime"] != "torch":
        raise click.ClickException(f"version {source.version} is a {parent.meta['runtime']} model; export needs a torch one")
    mlflow.set_tags({"quantgate.step": "quantise_onnx", "quantgate.source_version": source.version})
    mlflow.log_params({"source_version": source.version, **{f"recipe.{k}": v for k, v in asdict(recipe).items()}})
    config = parent.model.config
    with tempfile.TemporaryDirectory(prefix="quantgate-onnx-") as tmp:
        tmp = Path(tmp)
        graph = export_onnx(parent.model, parent.tokenizer, tmp / "model.onnx")
        if recipe.fuse_graph:
            graph = fuse(graph, tmp / "model.fused.onnx", config.num_attention_heads, config.hidden_size)
        model_file = quantise_dynamic(graph, tmp / "model.int8.onnx", recipe)
        stamp_labels(model_file, parent.labels)
        mv = log_variant(
            model_path=model_file,
            tokenizer_dir=parent.artifact_paths["tokenizer"],
            runtime="onnxruntime",
            variant="onnx-int8-dynamic",
            precision="int8",
            registered_model_name=source.name,
            parent_version=source.version,
            max_length=parent.max_length,
            extra_tags={"recipe": json.dumps(asdict(recipe), sort_keys=True)},
        )
    click.echo(f"registered {mv.name} version {mv.version} (onnx-int8-dynamic, parent {source.version})")
    return mv


@click.command("quantise_onnx", help=__doc__)
@click.option("--source", default=LATEST, show_default=True, help=f"FP32 version to quantise: 3, name@alias, models:/… or {LATEST} for the newest variant=fp32 version.")
@click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True)
@click.option("--weight-type", type=click.Choice(_WEIGHT_TYPES), default="QInt8", show_default=True)
@click.option("--per-channel/--per-tensor", default=False, show_default=True)
@click.option("--fuse-graph/--no-fuse-graph", default=True, show_default=True, help="Apply ONNX Runtime's BERT fusions before quantising.")
def cli(source, model_name, weight_type, per_channel, fuse_graph):
    configure_tracking()
    recipe = DynamicInt8Recipe(weight_type=weight_type, per_channel=per_channel, fuse_graph=fuse_graph)
    src = latest_fp32_version(model_name) if source in ("", LATEST) else resolve_version(source, model_name)
    with mlflow.start_run(run_name="quantise_onnx"):
        quantise(src, recipe)


if __name__ == "__main__":
    cli()
