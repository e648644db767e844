"""The gate's pure parts: threshold parsing, the decision, the bootstrap, host matching,
champion choice, the plan and the description notes. No MLflow store is needed here."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from evaluators.metrics import macro_f1, per_class_f1
from flows.promote import choose_lock
from quantgate.description import split
from registry_hooks.gate.apply import plan
from registry_hooks.gate.decision import decide, explain_ranking, host_mismatches, rank_candidates
from registry_hooks.gate.evidence import changed_files, consistency_problems, paired_metrics, run_problems, tag_problems
from registry_hooks.gate.lock import LockTimeout, default_lock_path, promotion_lock
from registry_hooks.gate.report import NOTE_MARK, append_note
from registry_hooks.gate.stats import paired_bootstrap_f1_drop, per_class_f1_drop_points
from registry_hooks.gate.thresholds import (
    DEFAULT_THRESHOLDS,
    RULES,
    ThresholdError,
    Thresholds,
    load_thresholds,
    parse_thresholds,
)

# Figures shaped like the bundled pipeline's INT8 version (FP32 parent macro F1 0.911).
GOOD = {
    "macro_f1": 0.916,
    "latency_p95_ms": 5.4,
    "size_mb": 22.9,
    "top1_agreement": 0.974,
    "macro_f1_drop_points": -0.45,
    "macro_f1_drop_points_ci_low": -1.96,
    "macro_f1_drop_points_ci_high": 0.93,
    "macro_f1_drop_points_ci_level": 0.95,
    "worst_class_f1_drop_points": 2.5,
    "speedup_vs_parent": 4.2,
    "speedup_ci_low": 3.9,
    "speedup_ci_high": 4.5,
    "speedup_ci_level": 0.95,
    "batch_invariance_agreement": 0.99,
}
LIMITS = Thresholds(
    min_macro_f1=0.85,
    max_latency_p95_ms=50.0,
    max_size_mb=50.0,
    max_macro_f1_drop_points=2.0,
    max_worst_class_f1_drop_points=5.0,
    min_top1_agreement=0.95,
    min_speedup=1.5,
    min_batch_invariance=0.95,
)
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


# ---------------------------------------------------------------- thresholds file
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


# ---------------------------------------------------------------- bootstrap
def _predictions(n: int, variant_wrong: int, parent_wrong: int, n_classes: int = 3):
    """Parent and variant agree except: the variant misses ``variant_wrong`` items the parent
    gets right, the parent misses ``parent_wrong`` others the variant gets right."""
    y = np.arange(n) % n_classes
    variant, parent = y.copy(), y.copy()
    variant[:variant_wrong] = (y[:variant_wrong] + 1) % n_classes
    parent[variant_wrong : variant_wrong + parent_wrong] = (
        y[variant_wrong : variant_wrong + parent_wrong] + 1
    ) % n_classes
    return y, variant, parent


def test_the_bootstrap_upper_bound_rejects_a_drop_whose_point_estimate_passes():
    y, variant, parent = _predictions(200, variant_wrong=5, parent_wrong=2)
    iv = paired_bootstrap_f1_drop(y, variant, parent, 3, level=0.95, resamples=2000, seed=0)
    assert 1.0 < iv.point < 2.0 < iv.high  # the point says "within 2 points"; the data cannot rule out more
    metrics = {
        "macro_f1_drop_points": iv.point,
        "macro_f1_drop_points_ci_low": iv.low,
        "macro_f1_drop_points_ci_high": iv.high,
        "macro_f1_drop_points_ci_level": iv.level,
    }
    limits = Thresholds(max_macro_f1_drop_points=2.0)
    assert not decide(metrics, limits).passed
    # judged on the point estimate alone, the same figures would have passed
    assert decide({**metrics, "macro_f1_drop_points_ci_high": iv.point}, limits).passed


def test_the_bootstrap_passes_a_small_drop_measured_on_many_examples():
    y, variant, parent = _predictions(3000, variant_wrong=12, parent_wrong=6)
    iv = paired_bootstrap_f1_drop(y, variant, parent, 3)
    assert iv.low < iv.point < iv.high < 2.0


def test_bootstrap_point_is_the_macro_f1_difference_and_is_reproducible():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 9, 300)
    parent = np.where(rng.random(300) < 0.9, y, rng.integers(0, 9, 300))
    variant = np.where(rng.random(300) < 0.95, parent, rng.integers(0, 9, 300))
    iv = paired_bootstrap_f1_drop(y, variant, parent, 9, seed=7)
    assert iv.point == pytest.approx((macro_f1(y, parent, 9) - macro_f1(y, variant, 9)) * 100, abs=1e-9)
    assert iv == paired_bootstrap_f1_drop(y, variant, parent, 9, seed=7)
    assert iv.low <= iv.point <= iv.high
    wide = paired_bootstrap_f1_drop(y, variant, parent, 9, seed=7, level=0.99)
    narrow = paired_bootstrap_f1_drop(y, variant, parent, 9, seed=7, level=0.8)
    assert wide.low <= iv.low <= narrow.low and narrow.high <= iv.high <= wide.high


def test_identical_predictions_have_a_zero_width_interval():
    y, variant, parent = _predictions(100, 0, 0)
    iv = paired_bootstrap_f1_drop(y, variant, parent, 3)
    assert (iv.point, iv.low, iv.high) == (0.0, 0.0, 0.0)


def test_per_class_drop_matches_the_evaluators_per_class_f1():
    y, variant, parent = _predictions(90, 4, 1)
    expected = (per_class_f1(y, parent, 3) - per_class_f1(y, variant, 3)) * 100
    np.testing.assert_allclose(per_class_f1_drop_points(y, variant, parent, 3), expected)


@pytest.mark.parametrize(
    "args,message",
    [
        (([0, 1], [0], [0, 1], 2), "one prediction per example"),
        (([], [], [], 2), "no examples"),
        (([0, 5], [0, 1], [0, 1], 2), r"label ids must lie in 0..1"),
    ],
)
def test_bootstrap_refuses_inconsistent_input(args, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap_f1_drop(*args)


def test_paired_metrics_from_a_predictions_table():
    y, variant, parent = _predictions(200, 5, 2)
    table = pd.DataFrame({"label": [f"c{i}" for i in y], "label_id": y, "pred_id": variant, "parent_pred_id": parent})
    metrics, notes, problems = paired_metrics(table, 3, LIMITS)
    assert problems == []
    assert metrics["macro_f1_drop_points_ci_level"] == 0.95
    assert (
        metrics["macro_f1_drop_points_ci_low"]
        < metrics["macro_f1_drop_points_bootstrap_point"]
        < metrics["macro_f1_drop_points_ci_high"]
    )
    assert metrics["worst_class_f1_drop_points"] == pytest.approx(per_class_f1_drop_points(y, variant, parent, 3).max())
    assert any("the models disagree on 7 of them" in n for n in notes)
    assert any(n.startswith("worst class: c") for n in notes)


def test_paired_metrics_without_parent_predictions_is_a_problem():
    table = pd.DataFrame({"label": ["a"], "label_id": [0], "pred_id": [0]})
    _, _, problems = paired_metrics(table, 3, LIMITS)
    assert problems and "lacks column(s) ['parent_pred_id']" in problems[0] and "without a parent" in problems[0]


def test_a_predictions_table_that_disagrees_with_the_recorded_drop_is_a_problem():
    assert consistency_problems({"macro_f1_drop_points": 0.5, "macro_f1_drop_points_bootstrap_point": 0.5}) == []
    assert consistency_problems({"macro_f1_drop_points": 0.5, "macro_f1_drop_points_bootstrap_point": 3.0})


# ---------------------------------------------------------------- evidence preconditions (pure)
FRESH = {
    "eval_status": "complete",
    "eval_run_id": "r1",
    "manifest_sha256": "a" * 64,
    "eval_manifest_sha256": "a" * 64,
    "device": "cpu",
    "model_sha256": "m" * 64,
    "eval_model_sha256": "m" * 64,
    "eval_metrics_sha256": "d" * 64,
}


@pytest.mark.parametrize(
    "change,message",
    [
        ({"eval_status": "failed: RuntimeError"}, "evaluation missing or incomplete"),
        ({"eval_status": None}, "evaluation missing or incomplete"),
        ({"eval_run_id": None}, "never evaluated"),
        ({"eval_manifest_sha256": "b" * 64}, "stale evaluation"),
        ({"manifest_sha256": None}, "never fingerprinted"),
        ({"model_sha256": None}, "re-register it"),
        ({"eval_model_sha256": "n" * 64}, "stale evaluation"),
        ({"eval_metrics_sha256": None}, "evaluate it again"),
    ],
)
def test_tag_problems(change, message):
    tags = {k: v for k, v in {**FRESH, **change}.items() if v is not None}
    assert any(message in p for p in tag_problems(tags))
    assert tag_problems(FRESH) == []


def test_a_version_for_another_device_is_refused_for_a_target():
    assert tag_problems(FRESH, "cpu") == []
    assert tag_problems(FRESH, "gpu") == ["version is built for device 'cpu', not for target 'gpu'"]


def test_the_eval_run_must_be_about_this_version_and_these_files():
    good = {"quantgate.evaluated_version": "3", "manifest_sha256": "a" * 64, "model_sha256": "m" * 64}
    assert run_problems("3", FRESH, "FINISHED", good) == []
    assert (
        "measured version '4', not version 3"
        in run_problems("3", FRESH, "FINISHED", {**good, "quantgate.evaluated_version": "4"})[0]
    )
    assert "measured files with manifest" in run_problems("3", FRESH, "FINISHED", {**good, "manifest_sha256": "c"})[0]
    assert "is RUNNING, not FINISHED" in run_problems("3", FRESH, "RUNNING", good)[0]
    assert "is deleted, not active" in run_problems("3", FRESH, "FINISHED", good, "deleted")[0]
    assert "measured model files" in run_problems("3", FRESH, "FINISHED", {**good, "model_sha256": "x"})[0]


def test_changed_files_names_each_differing_file():
    recorded = {"model": {"model.onnx": "1"}, "tokenizer": {"vocab.txt": "2", "tok.json": "3"}}
    actual = {"model": {"model.onnx": "X"}, "tokenizer": {"vocab.txt": "2", "extra.txt": "4"}}
    assert changed_files(actual, recorded) == ["model/model.onnx", "tokenizer/extra.txt", "tokenizer/tok.json"]
    assert changed_files(recorded, recorded) == []


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


# ---------------------------------------------------------------- description notes
def test_append_note_keeps_human_text_and_trims_oldest_gate_notes():
    desc = "Written by a person."
    for i in range(50):
        desc = append_note(desc, f"{NOTE_MARK}passed for `@staging` (t{i})\n" + "- ok: x\n" * 20, limit=1000)
        assert len(desc) <= 1000
    assert desc.startswith("Written by a person.")
    assert "(t49)" in desc and "(t0)" not in desc


def test_append_note_cuts_only_what_cannot_fit():
    # Issue 17: human text is never cut; only quantgate's own block shrinks (the note's end).
    # (Before, this test demanded that the person's text be cut to make room for the note.)
    note = f"{NOTE_MARK}rejected for `@staging` (t)\n"
    alone = append_note(None, note)
    assert note in alone and split(alone).notes == [note] and split(alone).above == split(alone).below == ""
    out = append_note("h" * 100, note, limit=400)
    assert len(out) <= 400 and out.startswith("h" * 100) and note in out
    assert append_note("h" * 100, note, limit=60) == "h" * 100  # no room: the person's text, whole
    cut = append_note("h" * 100, note + "x" * 500, limit=400)
    assert len(cut) <= 400 and cut.startswith("h" * 100) and NOTE_MARK + "rejected" in cut


# ---------------------------------------------------------------- the promotion lock
def test_the_default_lock_lies_beside_a_sqlite_registry_and_nowhere_else(tmp_path):
    assert default_lock_path(f"sqlite:///{tmp_path}/mlflow.db") == tmp_path / "mlflow.db.promote.lock"
    assert default_lock_path("sqlite:///:memory:") is None
    assert default_lock_path("http://127.0.0.1:5000") is None
    assert default_lock_path("postgresql://u@db/mlflow") is None


def test_a_registry_without_a_default_lock_is_promoted_unlocked_with_a_warning(tmp_path, capsys):
    assert choose_lock("http://127.0.0.1:5000", None, False) is None
    assert "no promotion lock for registry 'http://127.0.0.1:5000'" in capsys.readouterr().err
    assert choose_lock("http://127.0.0.1:5000", str(tmp_path / "gate.lock"), False) == tmp_path / "gate.lock"
    assert choose_lock(f"sqlite:///{tmp_path}/mlflow.db", None, True) is None
    assert capsys.readouterr().err == ""


def test_the_lock_excludes_a_second_holder_until_released(tmp_path):
    path = tmp_path / "x.lock"
    with promotion_lock(path):
        with pytest.raises(LockTimeout, match="still held after 0.1s by pid"):
            with promotion_lock(path, timeout_s=0.1):
                pass
    with promotion_lock(path, timeout_s=0.1):  # free again
        pass
