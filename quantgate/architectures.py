"""What differs between encoder families: LoRA target modules, ONNX Runtime's optimiser
``model_type`` and the inputs a model takes. Pure functions over a transformers config."""

from __future__ import annotations

from dataclasses import dataclass

from quantgate.contract import TOKEN_INPUTS
from quantgate.errors import UserError


@dataclass(frozen=True)
class Family:
    lora_targets: tuple[str, ...]  # every linear layer of the encoder blocks (module-name suffixes)
    modules_to_save: tuple[str, ...] = ()  # head layers beyond peft's own "classifier"/"score"
    ort_model_type: str | None = "bert"  # onnxruntime.transformers.optimizer model_type; None: no fusion


# LoRA goes on every linear layer of the encoder blocks - attention Q/K/V and output, both FFN
# layers - not only query/value: adapting all linear layers is what brings LoRA close to full
# fine-tuning (the QLoRA paper's finding), and on news9 it lifted test macro F1 from 0.9185 to
# 0.9459 at r=8 (README, "Training defaults"). The suffixes are chosen so that no head layer
# matches (pooler.dense, RoBERTa's classifier.dense): the head trains whole, as modules_to_save.
BERT_LINEAR = ("query", "key", "value", "output.dense", "intermediate.dense")
# ONNX Runtime's optimiser has one encoder fusion set, "bert" (its MODEL_TYPES lists no roberta
# or distilbert): RoBERTa, XLM-R and DistilBERT graphs are fused with it, as Optimum does.
FAMILIES: dict[str, Family] = {
    # BERT classifies from its pooler (dense + tanh over [CLS]): it is part of the head, so it
    # trains with the classifier, as RoBERTa's classifier.dense and DistilBERT's pre_classifier do.
    "bert": Family(BERT_LINEAR, modules_to_save=("pooler",)),
    "roberta": Family(BERT_LINEAR),
    "xlm-roberta": Family(BERT_LINEAR),
    "camembert": Family(BERT_LINEAR),
    "electra": Family(BERT_LINEAR),
    # DistilBERT's head has a randomly initialised pre_classifier: train it with the classifier.
    "distilbert": Family(("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"), modules_to_save=("pre_classifier",)),
    "deberta-v2": Family(
        ("query_proj", "key_proj", "value_proj", "output.dense", "intermediate.dense"),
        modules_to_save=("pooler",),
        ort_model_type=None,
    ),
    "mpnet": Family(("q", "k", "v", "o", "intermediate.dense", "output.dense"), ort_model_type=None),
}
AUTO = "auto"


class ArchitectureError(UserError):
    """A base model this flow has no defaults for; the message says what to pass."""


def family(model_type: str) -> Family | None:
    return FAMILIES.get(model_type)


def lora_targets(model_type: str, option: str = AUTO) -> list[str]:
    """``--lora-targets``: ``auto`` picks the family's encoder linear layers; anything else is a
    comma-separated list of module names used as given (e.g. ``query,value`` for the original
    LoRA set-up)."""
    if option and option.strip() != AUTO:
        targets = [t.strip() for t in option.split(",") if t.strip()]
        if not targets:
            raise ArchitectureError(f"--lora-targets {option!r} names no module")
        return targets
    fam = family(model_type)
    if fam is None:
        raise ArchitectureError(
            f"no default LoRA target modules for model_type {model_type!r} (known: {sorted(FAMILIES)}); "
            "pass --lora-targets with its linear layers' names, e.g. --lora-targets query,key,value"
        )
    return list(fam.lora_targets)


def modules_to_save(model_type: str) -> list[str]:
    fam = family(model_type)
    return list(fam.modules_to_save) if fam else []


def ort_model_type(model_type: str) -> str | None:
    """The optimiser's ``model_type`` for this family, or None when its fusions do not apply
    (the graph is then quantised unfused)."""
    fam = family(model_type)
    return fam.ort_model_type if fam else None


def model_inputs(forward_params, tokenizer_outputs) -> list[str]:
    """The tokenizer outputs the model's forward() takes, in the standard order: RoBERTa,
    XLM-R and DistilBERT tokenizers give no token_type_ids, and DistilBERT takes none."""
    return [n for n in TOKEN_INPUTS if n in tokenizer_outputs and n in forward_params]
