"""The promotion decision: a pure function of measured metrics and thresholds."""
from __future__ import annotations

import math
from dataclasses import dataclass

from registry_hooks.thresholds import Thresholds


@dataclass(frozen=True)
class Reason:
    metric: str
    value: float | None
    limit: float
    kind: str  # "min" or "max"
    passed: bool

    def __str__(self) -> str:
        op = ">=" if self.kind == "min" else "<="
        verdict = "ok" if self.passed else "FAIL"
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return f"{verdict}: {self.metric} is missing (needs {op} {self.limit:g})"
        return f"{verdict}: {self.metric} = {self.value:.4g} (needs {op} {self.limit:g})"


@dataclass(frozen=True)
class Decision:
    passed: bool
    reasons: tuple[Reason, ...]

    def summary(self) -> str:
        return "; ".join(str(r) for r in self.reasons)


def decide(metrics: dict[str, float], thresholds: Thresholds) -> Decision:
    """Pass only when every active threshold holds; a missing or NaN metric fails (fail-closed)."""
    reasons = []
    for rule, limit in thresholds.active():
        value = metrics.get(rule.metric)
        ok = (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and not math.isnan(value)
            and (value >= limit if rule.kind == "min" else value <= limit)
        )
        reasons.append(Reason(rule.metric, value, limit, rule.kind, bool(ok)))
    return Decision(passed=bool(reasons) and all(r.passed for r in reasons), reasons=tuple(reasons))
