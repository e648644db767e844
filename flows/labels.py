"""The one label list. Its order is part of the model contract: logit i means LABELS[i]."""
from __future__ import annotations

import json
from pathlib import Path

LABELS: tuple[str, ...] = (
    "World",
    "Sports",
    "Business",
    "Sci/Tech",
    "security",
    "health",
    "education",
    "tech-policy",
    "climate",
)
LABEL2ID: dict[str, int] = {name: i for i, name in enumerate(LABELS)}
ID2LABEL: dict[int, str] = dict(enumerate(LABELS))


def label_map() -> dict[str, str]:
    """The label map as saved with every model: {"0": "World", ...} (JSON keys are strings)."""
    return {str(i): name for i, name in enumerate(LABELS)}


def save_label_map(path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(label_map(), indent=2) + "\n", encoding="utf-8")
    return path


def load_label_map(path: str | Path) -> list[str]:
    """Read a saved label map and return the labels in id order; refuses gaps or duplicates."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    try:
        ids = sorted(int(k) for k in raw)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: label map keys must be integer ids, got {list(raw)!r}") from exc
    if ids != list(range(len(ids))):
        raise ValueError(f"{path}: label ids must be 0..{len(ids) - 1} without gaps, got {ids}")
    labels = [raw[str(i)] for i in ids]
    if len(set(labels)) != len(labels):
        raise ValueError(f"{path}: duplicate label names in {labels}")
    return labels
