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
