"""The TorchScript backend: PyTorch dynamic INT8 (torch-int8-dynamic), saved as TorchScript so
that it loads without pickle.

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
import warnings
from pathlib import Path

from quantgate.architectures import model_inputs
from quantgate.backends import Backend, Built, register_backend
from quantgate.contract import TORCHSCRIPT_INPUTS_FILE, TORCHSCRIPT_LABELS_FILE
from quantgate.errors import UserError
from quantgate.recipes import Recipe, RecipeError, TorchInt8DynamicRecipe

PACKAGES = ("mlflow", "torch", "transformers", "tokenizers", "numpy", "pandas")


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


def quantise_modules(model, recipe: TorchInt8DynamicRecipe, names: list[str]):
    """Eager-mode dynamic INT8: Linear weights int8 (per channel), activations quantised per
    call; embeddings stored 8-bit with a scale per row (weight-only). A model traced without
    ``token_type_ids`` (RoBERTa, XLM-R) reads its token-type table through a broadcast buffer,
    which the quantised embedding op refuses; that table (one or two rows) stays float."""
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
        skip = () if "token_type_ids" in names else ("token_type_embeddings",)
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Embedding) and not name.endswith(skip):
                spec[name] = float_qparams_weight_only_qconfig
    with warnings.catch_warnings():
        # torch 2.13 warns that eager-mode quantisation moves to torchao; it still works.
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*are deprecated and will be removed.*")
        return quantize_dynamic(model, spec)


def traced_inputs(model, tokenizer) -> list[str]:
    """The token inputs a trace takes, by position: those the tokenizer gives and ``forward()``
    takes (BERT: ids, mask, token types; RoBERTa, XLM-R and DistilBERT: ids and mask). They must
    be ``forward()``'s leading parameters, in this order, since a traced graph is called by
    position (DistilBERT's third parameter is ``head_mask``, not ``token_type_ids``)."""
    import inspect

    forward = list(inspect.signature(model.forward).parameters)
    names = model_inputs(forward, set(tokenizer("probe").keys()))
    if forward[: len(names)] != names:
        raise UserError(
            f"cannot trace {type(model).__name__}: its forward() takes {forward[:4]}…, not the token inputs "
            f"{names} first; use an ONNX or OpenVINO variant for this architecture"
        )
    return names


def _encode(tokenizer, texts: list[str], names: list[str]):
    enc = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    return tuple(enc[n] for n in names)


def trace(qmodel, tokenizer, freeze: bool, names: list[str]):
    import torch

    with torch.inference_mode(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # transformers builds its mask from a Python constant (1.0): a constant is what we want
        warnings.filterwarnings("ignore", message=".*torch.tensor results are registered as constants.*")
        traced = torch.jit.trace(qmodel, _encode(tokenizer, TRACE_TEXTS, names), strict=False)
        return torch.jit.freeze(traced) if freeze else traced


def check_trace(traced, qmodel, tokenizer, names: list[str], atol: float = 1e-4) -> float:
    """Tracing records one path through the code: refuse a graph that disagrees with the
    eager quantised model on other batch sizes and lengths."""
    import torch

    worst = 0.0
    with torch.inference_mode():
        for texts in (CHECK_TEXTS, CHECK_TEXTS[:1], CHECK_TEXTS[1:]):
            inputs = _encode(tokenizer, texts, names)
            worst = max(worst, float((traced(*inputs)[0] - qmodel(*inputs)[0]).abs().max()))
    if worst > atol:
        raise UserError(f"traced TorchScript differs from the eager INT8 model by {worst:.2e} (> {atol})")
    return worst


def save_torchscript(traced, out: Path, labels: list[str], names: list[str]) -> Path:
    """Label order and input names go into the archive's extra files, checked at load."""
    import torch

    torch.jit.save(
        traced,
        str(out),
        _extra_files={
            TORCHSCRIPT_LABELS_FILE: json.dumps(list(labels)),
            TORCHSCRIPT_INPUTS_FILE: json.dumps(list(names)),
        },
    )
    return out


def build(recipe: Recipe, parent, workdir: Path) -> Built:
    if not isinstance(recipe, TorchInt8DynamicRecipe):
        raise RecipeError(f"variant: {recipe.variant!r} is not a TorchScript recipe")
    model = load_for_tracing(parent.artifact_paths["model"])
    names = traced_inputs(model, parent.tokenizer)
    qmodel = quantise_modules(model, recipe, names)
    traced = trace(qmodel, parent.tokenizer, recipe.freeze, names)
    worst = check_trace(traced, qmodel, parent.tokenizer, names)
    out = save_torchscript(traced, workdir / "model.int8.torchscript.pt", parent.labels, names)
    return Built(out, metrics={f"{recipe.variant}.trace_max_abs_diff": worst})


BACKEND = register_backend(Backend(runtime="torchscript", packages=PACKAGES, build=build))
