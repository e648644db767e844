"""Promotion thresholds: a YAML file read into a frozen, validated dataclass.

Every problem is reported with the key that caused it, before anything runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

DEFAULT_THRESHOLDS = Path(__file__).resolve().parent / "thresholds.yaml"


class ThresholdError(ValueError):
    """A thresholds file that cannot be used; the message names the key."""


@dataclass(frozen=True)
class Rule:
    key: str  # the thresholds key
    metric: str  # the evaluation metric it limits
    kind: str  # "min" or "max"
    lo: float  # allowed range of the limit itself
    hi: float


RULES = (
    Rule("min_macro_f1", "macro_f1", "min", 0.0, 1.0),
    Rule("max_macro_f1_drop_points", "macro_f1_drop_points", "max", 0.0, 100.0),
    Rule("min_top1_agreement", "top1_agreement", "min", 0.0, 1.0),
    Rule("max_latency_p95_ms", "latency_p95_ms", "max", 1e-6, math.inf),
)
RULES_BY_KEY = {r.key: r for r in RULES}


@dataclass(frozen=True)
class Thresholds:
    min_macro_f1: float | None = None
    max_macro_f1_drop_points: float | None = None
    min_top1_agreement: float | None = None
    max_latency_p95_ms: float | None = None

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            rule = RULES_BY_KEY[f.name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ThresholdError(f"{f.name}: must be a number, got {type(value).__name__} {value!r}")
            if math.isnan(value):
                raise ThresholdError(f"{f.name}: NaN is not a limit")
            if not rule.lo <= value <= rule.hi:
                raise ThresholdError(f"{f.name}: {value} is outside the possible range [{rule.lo}, {rule.hi}]")
        if all(getattr(self, f.name) is None for f in fields(self)):
            raise ThresholdError(f"no thresholds set; give at least one of {[r.key for r in RULES]}")

    def active(self) -> list[tuple[Rule, float]]:
        return [(RULES_BY_KEY[f.name], float(getattr(self, f.name))) for f in fields(self) if getattr(self, f.name) is not None]


def parse_thresholds(raw: object, origin: str = "thresholds") -> Thresholds:
    if not isinstance(raw, dict):
        raise ThresholdError(f"{origin}: expected a mapping of threshold names to numbers, got {type(raw).__name__}")
    unknown = sorted(set(map(str, raw)) - set(RULES_BY_KEY))
    if unknown:
        raise ThresholdError(f"{origin}: unknown key(s) {unknown}; known keys are {sorted(RULES_BY_KEY)}")
    try:
        return Thresholds(**raw)
    except ThresholdError as exc:
        raise ThresholdError(f"{origin}: {exc}") from None


def load_thresholds(path: str | Path = DEFAULT_THRESHOLDS) -> Thresholds:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ThresholdError(f"{path}: cannot read thresholds file: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ThresholdError(f"{path}: not valid YAML: {exc}") from exc
    return parse_thresholds(raw, str(path))
