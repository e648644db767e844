"""The parity check a precision graph or an engine is held to: judged by the gate's limits, on the
upper bound of the macro F1 drop, from logits alone (numpy, no model)."""

from __future__ import annotations

import numpy as np

from registry_hooks.gate import parity as gate_parity


def test_parity_is_judged_by_the_gates_limits_on_the_f1_drops_upper_bound():
    from registry_hooks.gate.thresholds import Thresholds

    rng = np.random.default_rng(0)
    y = list(rng.integers(0, 9, size=400))
    parent = np.eye(9)[y] * 5 + rng.normal(0, 1, size=(400, 9))  # a parent that is mostly right
    limits = Thresholds(min_top1_agreement=0.95, max_macro_f1_drop_points=2.0)
    same = gate_parity.parity(parent, parent + 1e-4, y, limits)
    assert same["agreement"] == 1.0 and same["f1_drop_points"] == 0.0 and same["within_gate_limits"] == 1.0
    swapped = parent.copy()
    swapped[:, [0, 1]] = swapped[:, [1, 0]]  # two labels' logits exchanged: a mislabelling graph
    bad = gate_parity.parity(parent, swapped, y, limits)
    assert bad["agreement"] < 0.95 and bad["f1_drop_points"] > 2.0 and bad["within_gate_limits"] == 0.0
    # a small drop whose interval still reaches past the limit fails on the upper bound
    noisy = parent.copy()
    flip = rng.choice(400, size=8, replace=False)
    noisy[flip] = np.roll(noisy[flip], 1, axis=1)
    near = gate_parity.parity(parent, noisy, y, Thresholds(min_top1_agreement=0.9, max_macro_f1_drop_points=2.5))
    assert near["f1_drop_points"] < 2.5 < near["f1_drop_ci_high"] and near["within_gate_limits"] == 0.0
