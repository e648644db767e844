"""Gate figures and limits shared by the gate's tests: a version's metrics shaped like the bundled
pipeline's INT8 version, and a set of limits it passes."""

from __future__ import annotations

from registry_hooks.gate.thresholds import Thresholds

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
