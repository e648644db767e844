"""quantise_torch: register a PyTorch dynamic INT8 variant of a registered FP32 version,
saved as TorchScript so that it loads without pickle.

Reads: ``--source`` (a registered FP32 version; default the newest ``variant=fp32``) and
``--preset`` (the CPU family; picks the quantised kernel engine). Hands on: a version tagged
``variant=torch-int8-dynamic``, ``runtime=torchscript``, ``parent_version``, ``recipe`` and
``recipe_sha256``, with ``quant_config.json`` in its artifact, and the run tag
``quantgate.version.torch-int8-dynamic``. A version built before from the same recipe,
parent, code and libraries is reused.

Why TorchScript: eager dynamic INT8 modules keep their weights in packed, engine-specific
objects that safetensors cannot hold and ``torch.export`` failed on (field notes). A
state_dict loaded with ``weights_only=True`` into a freshly quantised skeleton also works,
but then every load re-runs ``quantize_dynamic`` (deprecated, slated for removal from
torch.ao) and needs the transformers model code. A traced, frozen TorchScript archive holds
graph and INT8 weights in one file, runs without Python model code, and ``torch.jit.load``
rebuilds it with TorchScript's restricted unpickler (tensors and TorchScript types, no
Python globals) instead of Python's pickle. The archive is still code (TorchScript
bytecode), so, like every variant, it is only loaded after its SHA-256 manifest matches.
"""
from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import click
import mlflow
from mlflow.entities.model_registry import ModelVersion

from flows.quantise_common import LATEST, build_digest, find_existing, load_parent, parse_overrides, register, resolve_source, reuse
from flows.recipes import PRESET_CHOICES, RecipeError, TorchInt8DynamicRecipe, build_recipe
from flows.serving_model import TORCHSCRIPT_INPUTS_FILE, TORCHSCRIPT_LABELS_FILE
from flows.tracking import DEFAULT_MODEL_NAME, configure_tracking

CODE_FILES = ("quantise_torch.py",)
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
TRACE_TEXTS = ["an example headline for tracing the graph", "short one"]
# Texts of other lengths and a padded batch: a traced graph must give the same logits on them.
CHECK_TEXTS = ["Striker signs four-year deal with Lisbon club after long talks over the summer", "Rates"]


def load_for_tracing(model_dir: str):
    """The parent's HF model in TorchScript mode (tuple outputs) with eager attention, whose
    ops trace into a graph that generalises over batch and sequence length."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(
        model_dir, torchscript=True, attn_implementation="eager"
    ).eval()


def quantise_modules(model, recipe: TorchInt8DynamicRecipe):
    """Eager-mode dynamic INT8: Linear weights int8 (per channel), activations quantised per
    call; embeddings stored 8-bit with a scale per row (weight-only)."""
    import torch
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        float_qparams_weight_only_qconfig,
        per_channel_dynamic_qconfig,
        quantize_dynamic,
    )

    torch.backends.quantized.engine = recipe.torch_engine
    spec = {torch.nn.Linear: per_channel_dynamic_qconfig if recipe.per_channel else default_dynamic_qconfig}
    if recipe.quantise_embeddings:
        spec[torch.nn.Embedding] = float_qparams_weight_only_qconfig
    with warnings.catch_warnings():
        # torch 2.13 warns that eager-mode quantisation moves to torchao; it still works.
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*are deprecated and will be removed.*")
        return quantize_dynamic(model, spec)


def _encode(tokenizer, texts: list[str]):
    enc = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    return tuple(enc[n] for n in INPUT_NAMES)


def trace(qmodel, tokenizer, freeze: bool):
    import torch

    with torch.inference_mode(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # transformers builds its mask from a Python constant (1.0): a constant is what we want
        warnings.filterwarnings("ignore", message=".*torch.tensor results are registered as constants.*")
        traced = torch.jit.trace(qmodel, _encode(tokenizer, TRACE_TEXTS), strict=False)
        return torch.jit.freeze(traced) if freeze else traced


def check_trace(traced, qmodel, tokenizer, atol: float = 1e-4) -> float:
    """Tracing records one path through the code: refuse a graph that disagrees with the
    eager quantised model on other batch sizes and lengths."""
    import torch

    worst = 0.0
    with torch.inference_mode():
        for texts in (CHECK_TEXTS, CHECK_TEXTS[:1], CHECK_TEXTS[1:]):
            inputs = _encode(tokenizer, texts)
            worst = max(worst, float((traced(*inputs)[0] - qmodel(*inputs)[0]).abs().max()))
    if worst > atol:
        raise click.ClickException(f"traced TorchScript differs from the eager INT8 model by {worst:.2e} (> {atol})")
    return worst


def save_torchscript(traced, out: Path, labels: list[str]) -> Path:
    """Label order and input names go into the archive's extra files, checked at load."""
    import torch

    torch.jit.save(traced, str(out), _extra_files={
        TORCHSCRIPT_LABELS_FILE: json.dumps(list(labels)),
        TORCHSCRIPT_INPUTS_FILE: json.dumps(list(INPUT_NAMES)),
    })
    return out


def build_file(parent, recipe: TorchInt8DynamicRecipe, out: Path) -> Path:
    model = load_for_tracing(parent.artifact_paths["model"])
    qmodel = quantise_modules(model, recipe)
    traced = trace(qmodel, parent.tokenizer, recipe.freeze)
    mlflow.log_metric(f"{recipe.variant}.trace_max_abs_diff", check_trace(traced, qmodel, parent.tokenizer))
    return save_torchscript(traced, out, parent.labels)


def quantise_torch(source: ModelVersion, recipe: TorchInt8DynamicRecipe) -> ModelVersion:
    """Register (or reuse) the torch dynamic INT8 version, inside the active run."""
    mlflow.set_tags({"quantgate.step": "quantise_torch", "quantgate.source_version": source.version})
    mlflow.log_params({"source_version": source.version, **recipe.params()})
    sha = recipe.sha256(build_digest(source, CODE_FILES))
    existing = find_existing(source, sha)
    if existing:
        return reuse(existing, recipe)
    parent = load_parent(source)
    with tempfile.TemporaryDirectory(prefix="quantgate-torch-") as tmp:
        model_file = build_file(parent, recipe, Path(tmp) / "model.int8.torchscript.pt")
        return register(recipe, model_path=model_file, parent=parent, source=source, recipe_sha256=sha)


@click.command("quantise_torch", help=__doc__)
@click.option("--source", default=LATEST, show_default=True, help=f"FP32 version to quantise: 3, name@alias, models:/… or {LATEST}.")
@click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True)
@click.option("--recipe", "recipe_choice", type=click.Choice(["all", TorchInt8DynamicRecipe.variant]), default="all", show_default=True)
@click.option("--preset", type=click.Choice(PRESET_CHOICES), default="auto", show_default=True, help="CPU family; picks the quantised kernel engine (x86 or qnnpack).")
@click.option("--set", "overrides", multiple=True, metavar="VARIANT.FIELD=VALUE", help="Override one recipe field, e.g. torch-int8-dynamic.per_channel=false.")
def cli(source, model_name, recipe_choice, preset, overrides):
    configure_tracking(model_name=model_name)
    parsed = parse_overrides(overrides)
    stray = sorted(set(parsed) - {TorchInt8DynamicRecipe.variant})
    if stray:
        raise click.BadParameter(f"overrides for {stray}, which quantise_torch does not build", param_hint="--set")
    try:
        recipe = build_recipe(TorchInt8DynamicRecipe.variant, preset, **parsed.get(TorchInt8DynamicRecipe.variant, {}))
    except RecipeError as exc:
        raise click.BadParameter(str(exc)) from None
    src = resolve_source(source, model_name)
    with mlflow.start_run(run_name="quantise_torch"):
        quantise_torch(src, recipe)


if __name__ == "__main__":
    from flows.errors import run

    run(cli)
