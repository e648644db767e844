"""Parity of a freshly built variant with its parent, judged by the gate's own ``decide``.

A quantise step checks what it built on the parent's test split before anyone evaluates it.
The verdict is the gate's: the same rules (top-1 agreement; the upper bound of the paired
bootstrap interval of the macro-F1 drop), the same limits from the thresholds file, decided by
:func:`registry_hooks.gate.decision.decide` over the parity rules alone. There is no second
copy of the rules here.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from evaluators.metrics import agreement as top1_agreement
from evaluators.metrics import macro_f1, prob_deltas, softmax
from quantgate import contract as c
from registry_hooks.gate.decision import Decision, decide
from registry_hooks.gate.stats import paired_bootstrap_f1_drop
from registry_hooks.gate.thresholds import RULES, Thresholds

PARITY_KEYS = ("min_top1_agreement", "max_macro_f1_drop_points")


def parity_thresholds(thresholds: Thresholds) -> Thresholds | None:
    """``thresholds`` with every limit but the parity ones switched off (None: it sets neither)."""
    if all(getattr(thresholds, key) is None for key in PARITY_KEYS):
        return None
    off = {rule.key: None for rule in RULES if rule.key not in PARITY_KEYS}
    return dataclasses.replace(thresholds, **off, host=())


def parity_metrics(
    parent_logits: np.ndarray, logits: np.ndarray, y_true: list[int], thresholds: Thresholds
) -> dict[str, float]:
    """The figures the parity rules read, under the evaluator's names, and a few for people."""
    n = parent_logits.shape[1]
    pred, parent_pred = logits.argmax(axis=1), parent_logits.argmax(axis=1)
    drop = paired_bootstrap_f1_drop(
        y_true,
        pred,
        parent_pred,
        n,
        level=thresholds.confidence_level,
        resamples=thresholds.bootstrap_resamples,
        seed=thresholds.bootstrap_seed,
    )
    return {
        c.TOP1_AGREEMENT: top1_agreement(parent_pred, pred),
        c.MACRO_F1: macro_f1(y_true, pred, n),
        "parent_macro_f1": macro_f1(y_true, parent_pred, n),
        c.MACRO_F1_DROP: drop.point,
        f"{c.MACRO_F1_DROP}_ci_low": drop.low,
        f"{c.MACRO_F1_DROP}_ci_high": drop.high,
        f"{c.MACRO_F1_DROP}_ci_level": drop.level,
        "max_abs_prob_diff": prob_deltas(softmax(parent_logits), softmax(logits))[0],
    }


def judge_parity(metrics: dict[str, float], thresholds: Thresholds) -> Decision | None:
    """The gate's decision over the parity rules (None: the thresholds set no parity limit)."""
    subset = parity_thresholds(thresholds)
    return decide(metrics, subset) if subset is not None else None


def parity(
    parent_logits: np.ndarray, logits: np.ndarray, y_true: list[int], thresholds: Thresholds
) -> dict[str, float]:
    """The build check's figures, under the names quantise steps have always logged them
    (``<variant>.cpu_agreement``, …), and ``within_gate_limits``: 1.0 only when the gate's
    parity rules pass."""
    m = parity_metrics(parent_logits, logits, y_true, thresholds)
    decision = judge_parity(m, thresholds)
    return {
        "agreement": m[c.TOP1_AGREEMENT],
        "max_abs_prob_diff": m["max_abs_prob_diff"],
        "macro_f1": m[c.MACRO_F1],
        "parent_macro_f1": m["parent_macro_f1"],
        "f1_drop_points": m[c.MACRO_F1_DROP],
        "f1_drop_ci_high": m[f"{c.MACRO_F1_DROP}_ci_high"],
        "within_gate_limits": float(decision.passed) if decision is not None else 1.0,  # no parity limit set
    }


def describe(variant: str, where: str, m: dict[str, float], thresholds: Thresholds) -> str:
    """One line for people: the figures of :func:`parity` and the verdict."""
    verdict = "within" if m["within_gate_limits"] else "OUTSIDE"
    return (
        f"{variant} ({where}): agreement {m['agreement']:.4f}, macro F1 {m['macro_f1']:.4f} vs parent "
        f"{m['parent_macro_f1']:.4f} (drop {m['f1_drop_points']:+.2f} pts, upper "
        f"{thresholds.confidence_level:.0%} bound {m['f1_drop_ci_high']:+.2f}), max |dprob| "
        f"{m['max_abs_prob_diff']:.4f}: {verdict} the gate's parity limits"
    )
