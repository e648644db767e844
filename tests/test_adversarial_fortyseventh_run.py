"""Issue 17, the forty-seventh adversarial run (on 4155eb9). Cases 5 and 6 (the key file made
0644 through a by-name chmod on a swapped temporary name) are covered where the fix lives:
``tests/quantgate/test_artifact_log.py`` (MLflow's single-file logging, now quantgate's own into
a local store) and ``flows/compare.py``'s ``publish`` (``fchmod``); case 3 (a ``runs:/`` source)
in ``tests/quantgate/test_artifact_download.py``; cases 1 and 2 (score's staging folder swapped)
in ``tests/quantgate/test_score_io.py``. Here: case 4, a store row a writer garbled."""

from __future__ import annotations

import os
import sqlite3
from urllib.parse import unquote, urlparse

from test_adversarial import _fresh, _one_error_line, _quantgate, trivial  # noqa: F401


def test_case_4_a_version_number_made_text_in_the_database_is_one_line_from_compare(trivial, tmp_path):  # noqa: F811
    model = "adv47-text-version"
    version = _fresh(model, trivial)
    database = unquote(urlparse(os.environ["MLFLOW_TRACKING_URI"]).path)[1:]
    with sqlite3.connect(database) as db:
        db.execute("PRAGMA foreign_keys=OFF")
        for table in ("model_version_tags", "model_versions"):
            db.execute(f"UPDATE {table} SET version = '7 (see notes)' WHERE name = ? AND version = ?", (model, version))
    result = _quantgate("compare", "--name", model, "--out", str(tmp_path / "p.png"))
    assert "Traceback" not in result.output, result.output
    if result.exit_code == 2:  # MLflow could not read the model back (as in the run): one line
        assert f"the registry cannot read registered model '{model}' back" in _one_error_line(result), result.output
    else:  # it could: the garbled version is a row of its own, last
        assert result.exit_code == 0, result.output
        assert "7 (see notes)" in result.output, result.output
