"""The plots draw with matplotlib's own defaults, whatever a matplotlibrc in the working folder
says: with the default store that folder is the store's, which any store writer can write."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


def test_a_matplotlibrc_in_the_working_folder_is_ignored(tmp_path):
    (tmp_path / "matplotlibrc").write_text("text.usetex: True\nlines.linewidth: 7\nbackend: pdf\n", encoding="utf-8")
    probe = (
        "import matplotlib; planted = matplotlib.rcParams['lines.linewidth']\n"
        "import evaluators.plots, matplotlib as m\n"
        "print(planted, m.rcParams['lines.linewidth'], m.rcParams['text.usetex'], m.get_backend())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "MPLCONFIGDIR": str(tmp_path / "mpl")}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "7.0", "the planted file was not read: the test proves nothing"
    assert [out[1], out[2], out[3].lower()] == ["1.5", "False", "agg"], out


def test_figures_a_writer_garbled_are_drawn_without_a_crash(tmp_path):
    """Without a key, compare plots whatever the evaluation runs hold, and any store writer can
    re-log them: an interval that does not contain its estimate, NaN or infinite figures, and a
    negative size still give a plot (the garbled interval draws no bar)."""
    from evaluators.plots import pareto_png

    rows = [
        {
            "label": "v2 ok",
            "latency_p50_ms": 3.0,
            "macro_f1": 0.9,
            "size_mb": 20.0,
            "speedup_vs_parent": 2.0,
            "speedup_ci_low": 1.8,
            "speedup_ci_high": 2.2,
            "speedup_ci_level": 0.95,
        },
        {
            "label": "v3 inverted",
            "latency_p50_ms": 4.0,
            "macro_f1": 0.8,
            "size_mb": 20.0,
            "speedup_vs_parent": 1.5,
            "speedup_ci_low": 3.0,
            "speedup_ci_high": 1.0,
        },
        {
            "label": "v4 nan",
            "latency_p50_ms": float("nan"),
            "macro_f1": float("inf"),
            "size_mb": -5.0,
            "speedup_vs_parent": float("inf"),
        },
        {
            "label": "v5 text",
            "latency_p50_ms": 5.0,
            "macro_f1": 0.7,
            "size_mb": float("nan"),
            "speedup_vs_parent": 1.2,
            "speedup_ci_level": float("nan"),
        },
    ]
    out = pareto_png(rows, tmp_path / "p.png")
    assert out.stat().st_size > 1000
