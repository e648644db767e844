"""Figures a person reads faster than tables: confusion matrix, confidence bars, Pareto."""

from __future__ import annotations

from pathlib import Path

import matplotlib

# Matplotlib's own defaults, whatever a matplotlibrc in the working folder (with the default
# store, the store's: any writer's) says (text.usetex would run LaTeX on a host that has it).
matplotlib.rcdefaults()
matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def confusion_png(matrix: np.ndarray, labels: list[str], path: str | Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = matrix.max() or 1
    for i in range(len(labels)):
        for j in range(len(labels)):
            if matrix[i, j]:
                ax.text(
                    j,
                    i,
                    int(matrix[i, j]),
                    ha="center",
                    va="center",
                    color="white" if matrix[i, j] > top / 2 else "black",
                    fontsize=8,
                )
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def confidence_bars_png(
    texts: list[str], probs: dict[str, np.ndarray], labels: list[str], path: str | Path, top: int = 5
) -> Path:
    """For each headline, the top labels of the first model with every model's probability
    beside them: the seed lab's per-headline chart, with the same label order for all."""
    names = list(probs)
    top = min(top, len(labels))  # a 3-label task has only 3 bars to show
    fig, axes = plt.subplots(len(texts), 1, figsize=(8, 2.1 * len(texts)), squeeze=False)
    width = 0.8 / len(names)
    for row, (ax, text) in enumerate(zip(axes[:, 0], texts)):
        order = np.argsort(-probs[names[0]][row])[:top]
        for k, name in enumerate(names):
            ax.barh(np.arange(top) + k * width, probs[name][row][order], height=width, label=name)
        ax.set_yticks(np.arange(top) + width * (len(names) - 1) / 2, [labels[i] for i in order])
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_title(text if len(text) < 90 else text[:87] + "...", fontsize=9, loc="left")
    axes[0, 0].legend(fontsize=8, loc="lower right")
    axes[-1, 0].set_xlabel("probability")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower x (latency) and higher y (F1), in
    order of x. A point equal to another on both is kept once (the first)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def pareto_png(rows: list[dict], path: str | Path) -> Path:
    """Left: latency p50 (x) against macro F1 (y), marker area by size, the Pareto frontier
    joined. Right: each variant's speed-up over its parent with its confidence interval as an
    error bar, against macro F1 (versions without a parent have no speed-up and are left out)."""
    fig, (ax, ax_speed) = plt.subplots(1, 2, figsize=(12, 5))
    # figures are drawn as logged, and any store writer can re-log them: a point needs finite
    # figures, and a bar an interval that holds its estimate (matplotlib raises on a negative one)
    rows = [r for r in rows if _finite(r.get("latency_p50_ms")) and _finite(r.get("macro_f1"))]
    pts = [(r["latency_p50_ms"], r["macro_f1"], _size(r.get("size_mb")), r["label"]) for r in rows]  # size: marker only
    for x, y, size, label in pts:
        ax.scatter(x, y, s=size, alpha=0.6)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    front = [pts[i][:2] for i in pareto_front([p[:2] for p in pts])]
    if front:
        ax.plot(*zip(*front), "k--", lw=1, marker="o", mfc="none", label="Pareto frontier")
        ax.legend(fontsize=8)
    ax.set_xlabel("batch-1 latency p50 (ms)")
    ax.set_ylabel("macro F1 (test split)")
    ax.set_title("latency vs F1 (marker area ~ size on disk)")
    speed = [r for r in rows if _finite(r.get("speedup_vs_parent"))]
    for r in speed:
        low, high = r.get("speedup_ci_low"), r.get("speedup_ci_high")
        held = _finite(low) and _finite(high) and low <= r["speedup_vs_parent"] <= high
        xerr = [[r["speedup_vs_parent"] - low], [high - r["speedup_vs_parent"]]] if held else None
        ax_speed.errorbar(r["speedup_vs_parent"], r["macro_f1"], xerr=xerr, fmt="o", capsize=4)
        ax_speed.annotate(
            r["label"], (r["speedup_vs_parent"], r["macro_f1"]), textcoords="offset points", xytext=(6, 4), fontsize=8
        )
    ax_speed.axvline(1.0, color="grey", lw=0.8, ls=":")
    level = next(
        (
            int(round(100 * r["speedup_ci_level"]))
            for r in speed
            if _finite(r.get("speedup_ci_level")) and 0 < r["speedup_ci_level"] < 1
        ),
        95,
    )
    ax_speed.set_xlabel(f"speed-up over parent (p50 inference; bars: {level}% interval)")
    ax_speed.set_ylabel("macro F1 (test split)")
    ax_speed.set_title("speed-up vs F1" if speed else "speed-up vs F1 (no variant with a parent evaluated)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and np.isfinite(value)


def _size(value) -> float:
    """Marker area for a size in MB (a missing or garbled size draws the smallest marker)."""
    return max(20.0, value * 3) if _finite(value) else 20.0
