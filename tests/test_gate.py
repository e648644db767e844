"""The gate's pure parts: threshold parsing and the decision."""
from __future__ import annotations

import math

import pytest

from registry_hooks.gate import decide
from registry_hooks.thresholds import DEFAULT_THRESHOLDS, ThresholdError, Thresholds, load_thresholds, parse_thresholds

GOOD = {"macro_f1": 0.91, "macro_f1_drop_points": 0.4, "top1_agreement": 0.99, "latency_p95_ms": 4.2}
LIMITS = Thresholds(min_macro_f1=0.85, max_macro_f1_drop_points=2.0, min_top1_agreement=0.95, max_latency_p95_ms=50)


def test_default_thresholds_file_loads():
    t = load_thresholds(DEFAULT_THRESHOLDS)
    assert t.min_macro_f1 == 0.85 and t.max_latency_p95_ms == 50.0


def test_all_limits_met_passes_with_a_reason_per_limit():
    d = decide(GOOD, LIMITS)
    assert d.passed
    assert [r.metric for r in d.reasons] == ["macro_f1", "macro_f1_drop_points", "top1_agreement", "latency_p95_ms"]
    assert all(r.passed for r in d.reasons)


@pytest.mark.parametrize("metric,value", [
    ("macro_f1", 0.80), ("macro_f1_drop_points", 2.5), ("top1_agreement", 0.9), ("latency_p95_ms", 51.0),
])
def test_one_missed_limit_rejects_and_names_metric_value_and_limit(metric, value):
    d = decide({**GOOD, metric: value}, LIMITS)
    assert not d.passed
    failed = [r for r in d.reasons if not r.passed]
    assert [r.metric for r in failed] == [metric]
    assert f"{metric} = {value:.4g}" in str(failed[0]) and "FAIL" in str(failed[0])


def test_limits_are_inclusive():
    assert decide({**GOOD, "macro_f1": 0.85, "latency_p95_ms": 50.0}, LIMITS).passed


@pytest.mark.parametrize("bad", [None, math.nan, "0.9", True])
def test_missing_nan_or_non_numeric_metric_fails_closed(bad):
    metrics = dict(GOOD)
    if bad is None:
        del metrics["top1_agreement"]
    else:
        metrics["top1_agreement"] = bad
    d = decide(metrics, LIMITS)
    assert not d.passed


def test_missing_metric_reason_says_missing():
    metrics = {k: v for k, v in GOOD.items() if k != "macro_f1"}
    assert "macro_f1 is missing" in decide(metrics, LIMITS).summary()


def test_inactive_limits_are_not_checked():
    d = decide({"macro_f1": 0.9}, Thresholds(min_macro_f1=0.85))
    assert d.passed and len(d.reasons) == 1


@pytest.mark.parametrize("raw,message", [
    ({"min_macro_f1": 0.8, "min_f1": 0.9}, r"unknown key\(s\) \['min_f1'\]"),
    ({"min_macro_f1": "high"}, "min_macro_f1: must be a number, got str"),
    ({"min_macro_f1": True}, "min_macro_f1: must be a number, got bool"),
    ({"min_top1_agreement": float("nan")}, "min_top1_agreement: NaN is not a limit"),
    ({"min_macro_f1": 1.5}, r"min_macro_f1: 1.5 is outside the possible range"),
    ({"max_latency_p95_ms": -1}, r"max_latency_p95_ms: -1 is outside"),
    ({}, "no thresholds set"),
    ([0.8], "expected a mapping"),
])
def test_bad_thresholds_are_refused_naming_the_key(raw, message):
    with pytest.raises(ThresholdError, match=message):
        parse_thresholds(raw, "t.yaml")


def test_invalid_yaml_file_names_the_file(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("min_macro_f1: [unclosed\n")
    with pytest.raises(ThresholdError, match="t.yaml: not valid YAML"):
        load_thresholds(p)
