"""The thresholds file: the bundled defaults, per-target sections, refusals that name the key and
the file, and the digest that records which limits a gate used. Pure; no MLflow store."""

from __future__ import annotations

import pytest

from registry_hooks.gate.decision import decide
from registry_hooks.gate.thresholds import (
    DEFAULT_THRESHOLDS,
    ThresholdError,
    Thresholds,
    load_thresholds,
    parse_thresholds,
)

from gate_figures import GOOD, LIMITS


def test_default_thresholds_file_loads_with_a_cpu_target_and_a_speedup_limit():
    policy = load_thresholds(DEFAULT_THRESHOLDS)
    t = policy.base
    assert t.min_macro_f1 == 0.85 and t.max_latency_p95_ms == 50.0 and t.max_macro_f1_drop_points == 2.0
    assert t.min_speedup == 1.2  # decided on the evaluator's speedup_ci_low
    assert t.confidence_level == 0.95 and t.champion_order == ("latency_p95_ms ASC", "macro_f1 DESC")
    assert policy.for_target("cpu").target == "cpu"
    assert policy.for_target("cpu").min_macro_f1 == t.min_macro_f1


def test_default_thresholds_pass_the_bundled_int8_figures():
    assert decide(GOOD, load_thresholds().base).passed
    no_speedup = {k: v for k, v in GOOD.items() if not k.startswith("speedup")}
    assert not decide(no_speedup, load_thresholds().base).passed  # fail-closed on the missing interval


def test_a_target_section_overrides_the_default_and_can_require_a_host():
    policy = parse_thresholds(
        {
            "min_macro_f1": 0.85,
            "max_latency_p95_ms": 50,
            "gpu": {"max_latency_p95_ms": 5, "host": {"gpu": "H100", "isa": ["avx2", "avx512f"]}},
        }
    )
    gpu = policy.for_target("gpu")
    assert (gpu.min_macro_f1, gpu.max_latency_p95_ms, gpu.target) == (0.85, 5, "gpu")
    assert gpu.host_requirements() == {"gpu": "H100", "isa": "avx2,avx512f"}
    assert policy.base.max_latency_p95_ms == 50 and policy.base.host == ()
    with pytest.raises(ThresholdError, match=r"no `cpu:` section"):
        policy.for_target("cpu")


@pytest.mark.parametrize(
    "raw,message",
    [
        ({"min_macro_f1": 0.8, "min_f1": 0.9}, r"t.yaml: unknown key\(s\) \['min_f1'\]"),
        ({"min_macro_f1": "high"}, "t.yaml: min_macro_f1: must be a number, got str"),
        ({"min_macro_f1": True}, "min_macro_f1: must be a number, got bool"),
        ({"min_macro_f1": None}, "min_macro_f1: no value given"),
        ({"min_top1_agreement": float("nan")}, "min_top1_agreement: NaN is not a limit"),
        ({"min_macro_f1": 1.5}, r"min_macro_f1: 1.5 is outside the possible range"),
        ({"max_latency_p95_ms": -1}, r"max_latency_p95_ms: -1 is outside"),
        ({"max_size_mb": 0}, r"max_size_mb: 0 is outside"),
        ({"max_worst_class_f1_drop_points": 101}, r"max_worst_class_f1_drop_points: 101 is outside"),
        ({"min_speedup": "2x"}, "min_speedup: must be a number"),
        ({}, "no limits set"),
        ({"confidence_level": 0.95}, "no limits set"),
        ([0.8], "expected a mapping"),
        ({"min_macro_f1": 0.8, "confidence_level": 1.0}, r"confidence_level: must be a number in \[0.5, 1\)"),
        ({"min_macro_f1": 0.8, "bootstrap_resamples": 2000.5}, "bootstrap_resamples: must be a whole number"),
        ({"min_macro_f1": 0.8, "bootstrap_seed": -1}, "bootstrap_seed: must be a whole number >= 0"),
        ({"min_macro_f1": 0.8, "champion_order": ["latency_p95_ms fastest"]}, "champion_order: entries read"),
        ({"min_macro_f1": 0.8, "champion_order": {"a": 1}}, "champion_order: must be a list"),
        ({"min_macro_f1": 0.8, "host": {"os": "linux"}}, r"host.os: unknown host key"),
        ({"min_macro_f1": 0.8, "host": "x86_64"}, "host: must be a non-empty mapping"),
        (
            {"min_macro_f1": 0.8, "cpu": {"max_latency_p95_ms": "fast"}},
            "t.yaml: cpu.max_latency_p95_ms: must be a number",
        ),
        ({"min_macro_f1": 0.8, "gpu": {"min_macro_f1": 2}}, r"t.yaml: gpu.min_macro_f1: 2 is outside"),
        ({"min_macro_f1": 0.8, "cpu": {"gpu": {}}}, r"t.yaml: cpu: unknown key\(s\) \['gpu'\]"),
        ({"min_macro_f1": 0.8, "cpu": [1]}, "t.yaml: cpu: must be a mapping of overrides"),
        ({"min_macro_f1": 0.8, "cpu": {"host": {"machine": None}}}, "cpu.host.machine: must be a text or a number"),
    ],
)
def test_bad_thresholds_are_refused_naming_the_key(raw, message):
    with pytest.raises(ThresholdError, match=message):
        parse_thresholds(raw, "t.yaml")


def test_invalid_yaml_file_names_the_file(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("min_macro_f1: [unclosed\n")
    with pytest.raises(ThresholdError, match="t.yaml: not valid YAML"):
        load_thresholds(p)


def test_thresholds_digest_changes_with_any_value():
    assert (
        LIMITS.digest()
        == Thresholds(**{**LIMITS.as_dict(), "champion_order": LIMITS.champion_order, "host": ()}).digest()
    )
    assert (
        LIMITS.digest()
        != Thresholds(
            **{**LIMITS.as_dict(), "champion_order": LIMITS.champion_order, "host": (), "confidence_level": 0.9}
        ).digest()
    )
