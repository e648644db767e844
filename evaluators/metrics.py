"""Metric maths as plain functions over lists and arrays (no MLflow, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """Row = true class, column = predicted class."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)), 1)
    return m


def per_class_f1(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """F1 per class; a class with no true and no predicted items scores 0 (sklearn's default)."""
    m = confusion(y_true, y_pred, n_classes)
    tp = np.diag(m).astype(float)
    denom = m.sum(axis=0) + m.sum(axis=1)  # predicted + actual = 2tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros(n_classes), where=denom > 0)


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> float:
    """Unweighted mean of per-class F1 over all ``n_classes`` classes."""
    return float(per_class_f1(y_true, y_pred, n_classes).mean())


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    if not len(y_true):
        raise ValueError("accuracy of an empty set is undefined")
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def agreement(pred_a: Sequence[int], pred_b: Sequence[int]) -> float:
    """Share of items where two models pick the same top-1 label."""
    return accuracy(pred_a, pred_b)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, shifted by each row's max so large logits cannot overflow."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def prob_deltas(p_a: np.ndarray, p_b: np.ndarray) -> tuple[float, float]:
    """(max, mean) absolute difference between two probability matrices of equal shape."""
    if p_a.shape != p_b.shape:
        raise ValueError(f"probability shapes differ: {p_a.shape} vs {p_b.shape}")
    d = np.abs(np.asarray(p_a, dtype=float) - np.asarray(p_b, dtype=float))
    return float(d.max()), float(d.mean())


def percentiles_ms(seconds: Sequence[float], qs=(50, 90, 95, 99)) -> dict[str, float]:
    """Latency percentiles in milliseconds, keyed ``p50`` etc. (linear interpolation)."""
    if not len(seconds):
        raise ValueError("no timings")
    values = np.percentile(np.asarray(seconds, dtype=float) * 1000.0, qs)
    return {f"p{q}": float(v) for q, v in zip(qs, values)}


def mean_kl_divergence(p_ref: np.ndarray, p_new: np.ndarray, eps: float = 1e-12) -> float:
    """Mean over rows of KL(p_ref || p_new), in nats: how much information the variant's
    probabilities lose against the reference's. Zero when they are equal."""
    p = np.clip(np.asarray(p_ref, dtype=float), eps, 1.0)
    q = np.clip(np.asarray(p_new, dtype=float), eps, 1.0)
    if p.shape != q.shape:
        raise ValueError(f"probability shapes differ: {p.shape} vs {q.shape}")
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


def flip_matrix(parent_pred: Sequence[int], pred: Sequence[int], n_classes: int) -> np.ndarray:
    """Row = the parent's label, column = the variant's: off-diagonal cells are label flips."""
    return confusion(parent_pred, pred, n_classes)


def block_bootstrap_speedup(
    baseline_blocks: Sequence[Sequence[float]],
    candidate_blocks: Sequence[Sequence[float]],
    *,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Speedup = median(baseline time) / median(candidate time), with a percentile interval.

    Timings come in blocks measured alternately (baseline block i, candidate block i, ...), so
    machine noise that lasts a while hits both; the bootstrap resamples whole block *pairs*,
    which keeps that pairing and the within-block correlation. Returns (point, low, high).
    """
    if len(baseline_blocks) != len(candidate_blocks) or len(baseline_blocks) < 2:
        raise ValueError("need at least two paired blocks of timings")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    base = [np.asarray(b, dtype=float) for b in baseline_blocks]
    cand = [np.asarray(c, dtype=float) for c in candidate_blocks]
    if any(len(x) == 0 for x in base + cand) or any((x <= 0).any() for x in base + cand):
        raise ValueError("every block needs positive timings")
    point = float(np.median(np.concatenate(base)) / np.median(np.concatenate(cand)))
    rng = np.random.default_rng(seed)
    n = len(base)
    ratios = np.empty(resamples)
    for r in range(resamples):
        idx = rng.integers(0, n, size=n)
        ratios[r] = np.median(np.concatenate([base[i] for i in idx])) / np.median(
            np.concatenate([cand[i] for i in idx])
        )
    alpha = (1 - level) / 2
    low, high = np.quantile(ratios, [alpha, 1 - alpha])
    return point, float(low), float(high)
