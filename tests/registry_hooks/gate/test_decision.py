"""The gate's decision: every limit at its edge, fail-closed on missing figures, interval bounds
rather than points, host matching, the champion and the plan. Pure; no MLflow store."""

from __future__ import annotations

import math

import pytest

from registry_hooks.gate.apply import plan
from registry_hooks.gate.decision import decide, explain_ranking, host_mismatches, rank_candidates
from registry_hooks.gate.thresholds import RULES, Thresholds

from gate_figures import GOOD, LIMITS

# For every limit: the metric the limit is compared with, a value just inside, one just outside.
EDGES = {
    "min_macro_f1": ("macro_f1", 0.85, 0.8499),
    "max_macro_f1_drop_points": ("macro_f1_drop_points_ci_high", 2.0, 2.001),
    "max_worst_class_f1_drop_points": ("worst_class_f1_drop_points", 5.0, 5.001),
    "min_top1_agreement": ("top1_agreement", 0.95, 0.9499),
    "max_latency_p95_ms": ("latency_p95_ms", 50.0, 50.01),
    "max_size_mb": ("size_mb", 50.0, 50.01),
    "min_speedup": ("speedup_ci_low", 1.5, 1.499),
    "min_batch_invariance": ("batch_invariance_agreement", 0.95, 0.9499),
}


def test_every_rule_has_edge_cases():
    assert set(EDGES) == {r.key for r in RULES}


# ---------------------------------------------------------------- decide
def test_all_limits_met_passes_with_a_reason_per_limit():
    d = decide(GOOD, LIMITS)
    assert d.passed
    assert [r.key for r in d.reasons] == [r.key for r in RULES]
    assert all(r.passed for r in d.reasons)


@pytest.mark.parametrize("key", sorted(EDGES))
def test_each_limit_passes_at_its_edge_and_fails_just_beyond(key):
    metric, inside, outside = EDGES[key]
    assert decide({**GOOD, metric: inside}, LIMITS).passed
    d = decide({**GOOD, metric: outside}, LIMITS)
    assert not d.passed
    failed = [r for r in d.reasons if not r.passed]
    assert [r.key for r in failed] == [key]
    text = str(failed[0])
    assert text.startswith("FAIL: ") and f"{outside:.4g}" in text and f"{getattr(LIMITS, key):g}" in text


@pytest.mark.parametrize("key", sorted(EDGES))
@pytest.mark.parametrize("bad", [None, math.nan, "0.9", True])
def test_a_missing_nan_or_non_numeric_metric_fails_closed(key, bad):
    metric = EDGES[key][0]
    metrics = dict(GOOD)
    if bad is None:
        del metrics[metric]
    else:
        metrics[metric] = bad
    d = decide(metrics, LIMITS)
    assert not d.passed
    assert [r.key for r in d.reasons if not r.passed] == [key]


def test_missing_metric_reason_says_missing():
    metrics = {k: v for k, v in GOOD.items() if k != "macro_f1"}
    assert "FAIL: macro_f1 is missing (needs >= 0.85)" in decide(metrics, LIMITS).summary()


def test_a_drop_without_its_interval_fails_even_when_the_point_is_fine():
    metrics = {k: v for k, v in GOOD.items() if not k.startswith("macro_f1_drop_points_ci")}
    d = decide(metrics, Thresholds(max_macro_f1_drop_points=2.0))
    assert not d.passed
    assert "no confidence interval (missing macro_f1_drop_points_ci_low" in d.summary()


def test_interval_reasons_report_the_bound_point_interval_and_level():
    d = decide(GOOD, LIMITS)
    drop = next(r for r in d.reasons if r.key == "max_macro_f1_drop_points")
    assert str(drop) == (
        "ok: macro_f1_drop_points upper 95% bound = 0.93 (point -0.45, 95% CI [-1.96, 0.93]; needs <= 2)"
    )
    speed = next(r for r in d.reasons if r.key == "min_speedup")
    assert str(speed) == "ok: speedup_vs_parent lower 95% bound = 3.9 (point 4.2, 95% CI [3.9, 4.5]; needs >= 1.5)"


def test_a_speedup_interval_narrower_than_required_fails():
    d = decide({**GOOD, "speedup_ci_level": 0.9}, LIMITS)
    assert not d.passed
    assert "interval level 0.9 is below the required 0.95" in d.summary()
    assert decide({**GOOD, "speedup_ci_level": 0.99}, LIMITS).passed  # wider is more pessimistic: fine


def test_the_speedup_is_judged_on_its_lower_bound_not_the_point():
    d = decide({**GOOD, "speedup_vs_parent": 1.8, "speedup_ci_low": 1.2, "speedup_ci_high": 2.4}, LIMITS)
    assert not d.passed and "speedup_vs_parent lower 95% bound = 1.2" in d.summary()


def test_limits_are_inclusive():
    assert decide(
        {**GOOD, "macro_f1": 0.85, "latency_p95_ms": 50.0, "macro_f1_drop_points_ci_high": 2.0}, LIMITS
    ).passed


def test_inactive_limits_are_not_checked():
    d = decide({"macro_f1": 0.9}, Thresholds(min_macro_f1=0.85))
    assert d.passed and len(d.reasons) == 1


def test_problems_reject_before_any_limit_is_judged():
    d = decide(GOOD, LIMITS, problems=["files changed since evaluation"])
    assert not d.passed
    assert [str(r) for r in d.reasons] == ["FAIL: files changed since evaluation"]


# ---------------------------------------------------------------- host fingerprint
HOST = {
    "host.cpu": "Intel Xeon",
    "host.isa": "avx2,avx512f,avx512_vnni",
    "host.cores": "2",
    "host.machine": "x86_64",
    "threads": "2",
}


def test_a_matching_host_passes_and_isa_order_does_not_matter():
    assert host_mismatches({"machine": "x86_64", "isa": "avx512_vnni,avx2,avx512f", "threads": "2"}, HOST) == []
    assert host_mismatches({}, HOST) == []


def test_a_different_or_unrecorded_host_is_named():
    problems = host_mismatches({"isa": "avx2,avx512f", "gpu": "H100", "machine": "aarch64"}, HOST)
    assert problems == [
        "evaluation host fingerprint lacks host.gpu (target needs 'H100')",
        "evaluated on another host: host.isa = 'avx2,avx512f,avx512_vnni', target needs 'avx2,avx512f'",
        "evaluated on another host: host.machine = 'x86_64', target needs 'aarch64'",
    ]


# ---------------------------------------------------------------- champion and plan
def test_the_champion_is_the_lowest_p95_with_ties_broken_by_f1_then_newest():
    passing = {
        "2": {"latency_p95_ms": 5.0, "macro_f1": 0.90},
        "3": {"latency_p95_ms": 4.0, "macro_f1": 0.88},
        "4": {"latency_p95_ms": 4.0, "macro_f1": 0.91},
        "5": {"latency_p95_ms": 4.0, "macro_f1": 0.91},
        "6": {"macro_f1": 0.99},  # no latency: ranks last
    }
    order = ("latency_p95_ms ASC", "macro_f1 DESC")
    assert rank_candidates(passing, order) == ["5", "4", "3", "2", "6"]
    assert rank_candidates(passing, ("macro_f1 DESC",))[0] == "6"
    assert explain_ranking(["4", "2"], passing, order).startswith("champion v4 by latency_p95_ms ASC, macro_f1 DESC")
    assert rank_candidates({}, order) == []


def test_plan_promotes_the_champion_and_keeps_or_releases_the_alias():
    champion, release, actions = plan({"2": True, "3": True, "4": False}, ["3", "2"], "9", "staging")
    assert (champion, release) == ("3", None)
    assert actions == {
        "2": "passed, not champion: @staging -> v3",
        "3": "promoted: @staging -> v3",
        "4": "rejected: @staging stays with v3",
    }
    assert plan({"4": False}, [], "9", "staging")[:2] == (None, None)  # alias stays with v9
    assert plan({"4": False}, [], "9", "staging")[2]["4"] == "rejected: @staging stays with v9"
    champion, release, actions = plan({"4": False}, [], "4", "staging")  # the holder was rejected
    assert (champion, release) == (None, "4") and "removed from v4" in actions["4"]
    assert plan({"4": False}, [], None, "staging")[2]["4"] == "rejected: @staging stays unset"
