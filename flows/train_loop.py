"""The fine-tuning loop of ``flows.train``: length-bucketed batches, one epoch, validation after
each, early stopping on validation macro-F1, and restoring the best epoch's weights."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import torch
from tqdm.auto import tqdm

from evaluators.metrics import accuracy, macro_f1
from flows.train_config import TrainConfig
from quantgate.batching import bucketed_batches
from quantgate.data import Dataset, Split


@dataclass
class TrainingSetup:
    """What one training run works on: its data, the model and tokenizer, and the token lengths."""

    cfg: TrainConfig
    data: Dataset
    train_split: Split
    tokenizer: Any
    model: Any
    lengths: list[int]  # tokens per train text, before truncation
    max_length: int

    @property
    def labels(self) -> list[str]:
        """The label list, in logit order."""
        return list(self.data.labels)


@dataclass
class FitOutcome:
    """The best validation epoch so far, the epochs without gain since, and the training time."""

    best_f1: float = -1.0
    best_epoch: int = 0
    best_state: dict | None = None
    stale: int = 0
    seen: int = 0
    train_seconds: float = 0.0


def token_lengths(tokenizer, texts: list[str]) -> list[int]:
    """Tokens per text, special tokens included, before any truncation."""
    return [len(ids) for ids in tokenizer(texts, truncation=False, add_special_tokens=True)["input_ids"]]


def index_batches(lengths: list[int], cfg: TrainConfig, max_length: int, rng: random.Random | None) -> list[list[int]]:
    """Text indices grouped into length-bucketed batches (in random order when ``rng`` is given)."""
    return bucketed_batches(
        lengths, batch_size=cfg.batch_size, max_tokens=cfg.max_batch_tokens, max_length=max_length, rng=rng
    )


def batches(split: Split, tokenizer, groups: list[list[int]], max_length: int):
    """Each batch padded only to its own longest text (dynamic padding)."""
    texts, labels = split.texts, split.label_ids
    for idx in groups:
        enc = tokenizer(
            [texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        yield enc, torch.tensor([labels[i] for i in idx])


@torch.inference_mode()
def predict_ids(model, split: Split, tokenizer, cfg: TrainConfig, max_length: int, desc: str) -> list[int]:
    """The predicted label id of every text of ``split``, in split order."""
    model.eval()
    groups = index_batches(token_lengths(tokenizer, split.texts), cfg, max_length, None)
    preds = [0] * len(split)
    for idx, (enc, _) in zip(
        groups, tqdm(batches(split, tokenizer, groups, max_length), total=len(groups), desc=desc, leave=False)
    ):
        for i, p in zip(idx, model(**enc).logits.argmax(-1).tolist()):
            preds[i] = p
    return preds


def optimiser_and_schedule(setup: TrainingSetup):
    """AdamW over the trainable weights, with a 10% linear warm-up then linear decay to zero."""
    cfg = setup.cfg
    optimiser = torch.optim.AdamW([p for p in setup.model.parameters() if p.requires_grad], lr=cfg.learning_rate)
    steps_per_epoch = len(index_batches(setup.lengths, cfg, setup.max_length, random.Random(cfg.seed)))
    total_steps = steps_per_epoch * cfg.max_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / max(1, total_steps // 10)) * max(0.0, 1 - s / total_steps)
    )
    return optimiser, scheduler


def train_epoch(setup: TrainingSetup, groups: list[list[int]], optimiser, scheduler, desc: str):
    """One pass over the train batches. Returns (losses, texts seen, seconds)."""
    model = setup.model
    model.train()
    losses = []
    bar = tqdm(
        batches(setup.train_split, setup.tokenizer, groups, setup.max_length),
        total=len(groups),
        desc=desc,
        unit="batch",
    )
    start, done = time.perf_counter(), 0
    for enc, labels in bar:
        loss = model(**enc, labels=labels).loss
        loss.backward()
        optimiser.step()
        scheduler.step()
        optimiser.zero_grad()
        losses.append(loss.item())
        done += len(labels)
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", samples_s=f"{done / (time.perf_counter() - start):.1f}")
    return losses, done, time.perf_counter() - start


def validate(setup: TrainingSetup) -> tuple[float, float]:
    """Macro F1 and accuracy on the validation split."""
    val = setup.data["validation"]
    preds = predict_ids(setup.model, val, setup.tokenizer, setup.cfg, setup.max_length, "validation")
    return macro_f1(val.label_ids, preds, len(setup.labels)), accuracy(val.label_ids, preds)


def keep_if_best(outcome: FitOutcome, epoch: int, f1: float, model, patience: int) -> bool:
    """Remember the trainable weights of a new best epoch; True when it is time to stop early."""
    if f1 > outcome.best_f1:
        outcome.best_f1, outcome.best_epoch, outcome.stale = f1, epoch, 0
        outcome.best_state = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
        return False
    outcome.stale += 1
    if outcome.stale >= patience:
        tqdm.write(f"early stop: no validation gain for {patience} epochs")
        return True
    return False


def fit(setup: TrainingSetup) -> FitOutcome:
    """Train epoch by epoch, validating and logging after each, until ``max_epochs`` or early
    stopping; then restore the best epoch's LoRA and head weights."""
    cfg = setup.cfg
    optimiser, scheduler = optimiser_and_schedule(setup)
    rng = random.Random(cfg.seed)
    outcome = FitOutcome()
    for epoch in range(1, cfg.max_epochs + 1):
        groups = index_batches(setup.lengths, cfg, setup.max_length, rng)
        losses, done, epoch_seconds = train_epoch(
            setup, groups, optimiser, scheduler, desc=f"epoch {epoch}/{cfg.max_epochs}"
        )
        outcome.seen, outcome.train_seconds = outcome.seen + done, outcome.train_seconds + epoch_seconds
        f1, acc = validate(setup)
        mlflow.log_metrics(
            {
                "train_loss": float(np.mean(losses)),
                "val_macro_f1": f1,
                "val_accuracy": acc,
                "train_samples_per_s": done / epoch_seconds,
            },
            step=epoch,
        )
        tqdm.write(f"epoch {epoch}: loss {np.mean(losses):.4f}  val macro-F1 {f1:.4f}  acc {acc:.4f}")
        if keep_if_best(outcome, epoch, f1, setup.model, cfg.patience):
            break
    with torch.no_grad():  # restore the best epoch's LoRA and head weights
        params = dict(setup.model.named_parameters())
        for k, v in outcome.best_state.items():
            params[k].copy_(v)
    return outcome
