"""Paired statistics the gate decides on: pure functions over per-example predictions.

Why a bootstrap: on a test split of a few hundred headlines, a one-point difference in
macro F1 between an INT8 variant and its FP32 parent is within noise. The gate therefore
limits the *upper bound* of a confidence interval of the drop, not the point estimate, so a
variant passes only when the data show its drop is small.

Why *paired*: parent and variant are scored on the same examples. Resampling example indices
once and scoring both models on the same resample keeps that pairing, so the interval
reflects only the examples on which the two models disagree (the shared difficulty of the
test set cancels out), which makes it much narrower than two independent intervals.

No MLflow and no I/O here; ``promote`` feeds these functions the evaluation's
``eval_predictions.json`` table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_CHUNK = 256  # resamples scored at once: bounds memory at _CHUNK x n_examples counts


@dataclass(frozen=True)
class Interval:
    """A point estimate and its two-sided percentile-bootstrap interval at ``level``."""

    point: float
    low: float
    high: float
    level: float
    resamples: int


def _one_hot(ids: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes, dtype=np.float64)[ids]


def weighted_per_class_f1(weights: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class F1 for each row of ``weights`` (how often each example is counted).

    ``weights`` has shape (R, n); the result has shape (R, n_classes). A class with no true
    and no predicted examples scores 0, as in ``evaluators.metrics.per_class_f1`` (and
    scikit-learn), so the macro mean divides by all ``n_classes``.
    """
    truth, pred = _one_hot(y_true, n_classes), _one_hot(y_pred, n_classes)
    tp = weights @ (truth * pred)
    denom = weights @ truth + weights @ pred  # 2tp + fp + fn
    return np.divide(2.0 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def _check(y_true, pred, parent_pred, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, a, b = (np.asarray(v, dtype=np.int64) for v in (y_true, pred, parent_pred))
    if not (len(y) == len(a) == len(b)):
        raise ValueError(f"need one prediction per example: {len(y)} labels, {len(a)} and {len(b)} predictions")
    if len(y) == 0:
        raise ValueError("no examples to compare")
    for name, v in (("label", y), ("prediction", a), ("parent prediction", b)):
        if v.min() < 0 or v.max() >= n_classes:
            raise ValueError(f"{name} ids must lie in 0..{n_classes - 1}, got {v.min()}..{v.max()}")
    return y, a, b


def per_class_f1_drop_points(
    y_true: Sequence[int], pred: Sequence[int], parent_pred: Sequence[int], n_classes: int
) -> np.ndarray:
    """Parent's F1 minus the variant's, per class, in points (positive = the variant is worse)."""
    y, a, b = _check(y_true, pred, parent_pred, n_classes)
    ones = np.ones((1, len(y)))
    drop = weighted_per_class_f1(ones, y, b, n_classes) - weighted_per_class_f1(ones, y, a, n_classes)
    return drop[0] * 100.0


def paired_bootstrap_f1_drop(
    y_true: Sequence[int],
    pred: Sequence[int],
    parent_pred: Sequence[int],
    n_classes: int,
    *,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Macro-F1 drop (parent minus variant, in points) with a paired percentile-bootstrap interval.

    Each resample draws ``n`` example indices with replacement and scores *both* models on
    that same draw. The interval is two-sided: ``low``/``high`` are the (1-level)/2 and
    (1+level)/2 quantiles of the resampled drops. A fixed ``seed`` makes the gate's verdict
    reproducible.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    y, a, b = _check(y_true, pred, parent_pred, n_classes)
    n = len(y)

    def drops(weights: np.ndarray) -> np.ndarray:
        f1_variant = weighted_per_class_f1(weights, y, a, n_classes).mean(axis=1)
        f1_parent = weighted_per_class_f1(weights, y, b, n_classes).mean(axis=1)
        return (f1_parent - f1_variant) * 100.0

    point = float(drops(np.ones((1, n)))[0])
    rng = np.random.default_rng(seed)
    samples = []
    for start in range(0, resamples, _CHUNK):
        size = min(_CHUNK, resamples - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)
        samples.append(drops(counts))
    dist = np.concatenate(samples)
    low, high = np.quantile(dist, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return Interval(point=point, low=float(low), high=float(high), level=float(level), resamples=int(resamples))
