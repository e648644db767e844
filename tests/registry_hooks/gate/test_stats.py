"""The paired bootstrap of the macro F1 drop, and the paired metrics the gate derives from a
predictions table with it. Pure; no MLflow store."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluators.metrics import macro_f1, per_class_f1
from registry_hooks.gate.decision import decide
from registry_hooks.gate.evidence import consistency_problems, paired_metrics
from registry_hooks.gate.stats import paired_bootstrap_f1_drop, per_class_f1_drop_points
from registry_hooks.gate.thresholds import Thresholds

from gate_figures import LIMITS


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
