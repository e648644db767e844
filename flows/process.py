"""What every quantgate process sets up before its step runs: the ``quantgate`` command line
(its group's callback) and ``python -m flows.<step>`` (``flows.errors.run``), which ``mlflow
run`` and ``main`` start. Not on import: MLflow imports ``flows`` in every process that imports
``mlflow`` (the default-experiment provider), and those processes are not quantgate's to change.
"""

from __future__ import annotations

from quantgate.private_tmp import use_private_tmpdir
from quantgate.tracking import read_sqlite_text_leniently


def set_up_process() -> None:
    """Its own temporary folder, before a library writes fixed names there
    (:mod:`quantgate.private_tmp`), and a sqlite store's text read without crashing on bytes that
    are not UTF-8 (:func:`quantgate.tracking.read_sqlite_text_leniently`)."""
    use_private_tmpdir()
    read_sqlite_text_leniently()
