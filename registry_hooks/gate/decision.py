"""The promotion decision and the champion choice: pure functions of measured figures.

``decide`` is fail-closed: a limit passes only when its metric is present, numeric and within
the limit. Limits with an interval (the macro-F1 drop, the speedup) are decided on the
interval's pessimistic end, so a variant whose point estimate looks fine but whose data
cannot rule out a bigger loss is rejected. Nothing here touches MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from quantgate.printable import shown
from registry_hooks.gate.thresholds import HOST_KEYS, Rule, Thresholds, parse_order


@dataclass(frozen=True)
class Reason:
    """One verdict line. For a limit: the metric, the value compared, the limit and its kind.

    ``kind`` is "min" or "max" for a limit, "check" for a precondition (``message`` says what).
    Limits decided on an interval also carry the point estimate, the interval and its level.
    """

    metric: str
    value: float | None
    limit: float | None
    kind: str
    passed: bool
    key: str = ""
    point: float | None = None
    ci: tuple[float, float] | None = None
    level: float | None = None
    message: str = ""

    @classmethod
    def check(cls, problem: str) -> Reason:
        """A failed precondition: the evaluation cannot be trusted, so no limit is judged."""
        return cls(metric="evidence", value=None, limit=None, kind="check", passed=False, message=problem)

    def __str__(self) -> str:
        verdict = "ok" if self.passed else "FAIL"
        if self.kind == "check":
            return f"{verdict}: {shown(self.message)}"
        op = ">=" if self.kind == "min" else "<="
        needs = f"needs {op} {self.limit:g}"
        if self.message:  # a limit that could not be judged, with why
            return f"{verdict}: {self.metric}: {shown(self.message)} ({needs})"
        if self.value is None:
            return f"{verdict}: {self.metric} is missing ({needs})"
        if self.ci is None:
            return f"{verdict}: {self.metric} = {self.value:.4g} ({needs})"
        pct = f"{self.level * 100:g}%"
        end = "upper" if self.kind == "max" else "lower"
        return (
            f"{verdict}: {self.metric} {end} {pct} bound = {self.value:.4g} "
            f"(point {self.point:.4g}, {pct} CI [{self.ci[0]:.4g}, {self.ci[1]:.4g}]; {needs})"
        )


@dataclass(frozen=True)
class Decision:
    passed: bool
    reasons: tuple[Reason, ...]

    def summary(self) -> str:
        return "; ".join(str(r) for r in self.reasons)


def number(metrics: Mapping[str, object], name: str) -> float | None:
    """The metric as a float, or ``None`` when it is missing, NaN or not a number."""
    value = metrics.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def _within(value: float, limit: float, kind: str) -> bool:
    return value >= limit if kind == "min" else value <= limit


def judge(rule: Rule, limit: float, metrics: Mapping[str, object], required_level: float) -> Reason:
    """One limit against the metrics; see ``Rule.bound_metric`` for what is compared."""
    base = dict(metric=rule.metric, limit=limit, kind=rule.kind, key=rule.key)
    if rule.ci is None:
        value = number(metrics, rule.metric)
        return Reason(value=value, passed=value is not None and _within(value, limit, rule.kind), **base)
    point = number(metrics, rule.metric)
    low, high = number(metrics, f"{rule.ci}_low"), number(metrics, f"{rule.ci}_high")
    level = number(metrics, f"{rule.ci}_level")
    if point is None or low is None or high is None or level is None:
        missing = [
            n
            for n, v in (
                (rule.metric, point),
                (f"{rule.ci}_low", low),
                (f"{rule.ci}_high", high),
                (f"{rule.ci}_level", level),
            )
            if v is None
        ]
        return Reason(
            value=None, passed=False, message=f"no confidence interval (missing {', '.join(missing)})", **base
        )
    value = high if rule.kind == "max" else low
    shown = dict(value=value, point=point, ci=(low, high), level=level, **base)
    if level < required_level - 1e-9:  # a narrower interval is less pessimistic than demanded
        return Reason(
            passed=False, message=f"interval level {level:g} is below the required {required_level:g}", **shown
        )
    return Reason(passed=_within(value, limit, rule.kind), **shown)


def decide(metrics: Mapping[str, object], thresholds: Thresholds, problems: Sequence[str] = ()) -> Decision:
    """Pass only when there is no precondition problem and every active limit holds.

    ``problems`` are reasons the evaluation cannot be trusted (missing, stale, tampered,
    measured on the wrong host); when there are any, no limit is judged.
    """
    if problems:
        return Decision(False, tuple(Reason.check(p) for p in problems))
    reasons = tuple(judge(rule, limit, metrics, thresholds.confidence_level) for rule, limit in thresholds.active())
    return Decision(passed=bool(reasons) and all(r.passed for r in reasons), reasons=reasons)


def host_mismatches(required: Mapping[str, str], run_tags: Mapping[str, str]) -> list[str]:
    """How the evaluation host (the eval run's ``host.*``/``threads`` tags) differs from the
    target's ``host:`` requirements. ``isa`` compares as a set of flags; the rest as text."""
    problems = []
    for key, want in sorted(required.items()):
        tag = HOST_KEYS[key]
        got = run_tags.get(tag)
        if got is None:
            problems.append(f"evaluation host fingerprint lacks {tag} (target needs {want!r})")
            continue
        if key == "isa":
            same = {f.strip() for f in got.split(",") if f.strip()} == {f.strip() for f in want.split(",") if f.strip()}
        else:
            same = got.strip() == want.strip()
        if not same:
            problems.append(f"evaluated on another host: {tag} = {got!r}, target needs {want!r}")
    return problems


def rank_candidates(passing: Mapping[str, Mapping[str, object]], order: Sequence[str]) -> list[str]:
    """Versions that passed, best first, by ``champion_order`` (e.g. lowest p95, then highest F1).

    A candidate missing an ordering metric ranks after those that have it; remaining ties go
    to the newest version, so the choice is deterministic.
    """
    keys = parse_order(tuple(order))

    def sort_key(version: str):
        parts = []
        for metric, descending in keys:
            value = number(passing[version], metric)
            parts.append((1, 0.0) if value is None else (0, -value if descending else value))
        return (*parts, -int(version))

    return sorted(passing, key=sort_key)


def explain_ranking(ranking: Sequence[str], passing: Mapping[str, Mapping[str, object]], order: Sequence[str]) -> str:
    """One line a person can read: who won, among whom, on which figures."""
    keys = parse_order(tuple(order))

    def figures(v: str) -> str:
        shown = []
        for metric, _ in keys:
            value = number(passing[v], metric)
            shown.append(f"{metric} {'missing' if value is None else format(value, '.4g')}")
        return ", ".join(shown)

    ranked = "; ".join(f"v{v} ({figures(v)})" for v in ranking)
    return f"champion v{ranking[0]} by {', '.join(order)} among passing {ranked}"
