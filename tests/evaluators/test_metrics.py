"""Metric maths, checked against scikit-learn and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from evaluators.metrics import (
    accuracy,
    agreement,
    confusion,
    macro_f1,
    per_class_f1,
    percentiles_ms,
    prob_deltas,
    softmax,
)


def test_macro_f1_matches_sklearn_on_random_labels():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y_true = rng.integers(0, 9, size=200)
        y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, 9, size=200))
        expected = f1_score(y_true, y_pred, average="macro", labels=list(range(9)), zero_division=0)
        assert macro_f1(y_true.tolist(), y_pred.tolist(), 9) == pytest.approx(expected)


def test_macro_f1_is_not_weighted():
    # class 0: 8 items all right; class 1: 2 items all wrong -> macro 0.444.., weighted would be ~0.71
    y_true = [0] * 8 + [1] * 2
    y_pred = [0] * 10
    assert macro_f1(y_true, y_pred, 2) == pytest.approx((2 * 8 / 18 + 0) / 2)


def test_absent_class_scores_zero_in_macro_average():
    assert per_class_f1([0, 0], [0, 0], 3).tolist() == [1.0, 0.0, 0.0]


def test_confusion_rows_are_truth_columns_are_predictions():
    m = confusion([0, 1, 1], [1, 1, 0], 2)
    assert m.tolist() == [[0, 1], [1, 1]]


def test_accuracy_and_agreement():
    assert accuracy([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75
    assert agreement([1, 2], [1, 2]) == 1.0
    with pytest.raises(ValueError):
        accuracy([1], [1, 2])
    with pytest.raises(ValueError):
        accuracy([], [])


def test_prob_deltas():
    a = np.array([[0.9, 0.1], [0.5, 0.5]])
    b = np.array([[0.8, 0.2], [0.5, 0.5]])
    max_d, mean_d = prob_deltas(a, b)
    assert max_d == pytest.approx(0.1) and mean_d == pytest.approx(0.05)
    with pytest.raises(ValueError, match="shapes differ"):
        prob_deltas(a, b[:1])


def test_percentiles_are_in_milliseconds():
    p = percentiles_ms([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert p["p50"] == pytest.approx(50.5)
    assert p["p99"] == pytest.approx(99.01)
    with pytest.raises(ValueError):
        percentiles_ms([])


def test_softmax_hand_computed_and_safe_for_large_logits():
    p = softmax(np.array([[0.0, np.log(3.0)], [1000.0, 1000.0]]))
    assert np.allclose(p, [[0.25, 0.75], [0.5, 0.5]])  # 1/(1+3), 3/(1+3); no overflow at 1000


def test_confidence_bars_work_for_fewer_labels_than_bars(tmp_path):
    import numpy as np

    from evaluators.plots import confidence_bars_png

    probs = {"parent (FP32)": np.array([[0.7, 0.2, 0.1]]), "this version": np.array([[0.6, 0.3, 0.1]])}
    path = confidence_bars_png(["a ticket"], probs, ["billing", "bug", "account"], tmp_path / "bars.png")
    assert path.stat().st_size > 1000
