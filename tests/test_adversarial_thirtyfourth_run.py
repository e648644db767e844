"""Issue 17, the thirty-fourth adversarial run (on e07d96d): a Python package planted in the
working folder. With the default store that folder is the store's, which every store writer can
write, and Python puts the working folder first on the import path of every ``python -m`` and
``python -c`` it starts: the webhook receiver's steps ran a planted ``flows/evaluate.py`` with the
key, and ``serve``'s uvicorn workers and ``score``'s Spark workers a planted ``multiprocessing/``
and ``pyspark/``; each read the key. Now every Python quantgate starts imports installed code
only (``-P``, ``PYTHONSAFEPATH``). Tried as the run did: files in the folder, the real receiver
step and the real server."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from conftest import TEST_MODEL, free_port
from serve_helpers import stop, wait_until_up


def _plant(folder: Path, package: str, marker: Path, body: str = "") -> None:
    """A package named ``package`` in ``folder`` that leaves ``marker`` when imported."""
    (folder / package).mkdir(parents=True)
    (folder / package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n{body}")


def test_the_receivers_steps_do_not_import_a_planted_module(tmp_path, monkeypatch):
    """Case 1: the receiver started ``python -m flows.evaluate`` in its working folder, where the
    writer's ``flows/`` package stood first on the path."""
    from registry_hooks.webhooks.receiver import Receiver

    marker = tmp_path / "ran-planted-flows"
    _plant(tmp_path / "cwd", "flows", marker)
    (tmp_path / "cwd" / "flows" / "evaluate.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.chdir(tmp_path / "cwd")
    receiver = Receiver(secret="s" * 32, model_name="m", thresholds=None, tag_wait_s=0)
    # the status holds only the step's own error line: quantgate's evaluate answers a bad option
    # with click's (the planted module would have exited 0, silently)
    code, outcome = receiver._step("flows.evaluate", "--no-such-option")
    assert code == 2 and "No such option" in outcome, outcome
    assert not marker.exists()


def test_serve_workers_do_not_import_a_planted_package(staged, tmp_path):
    """Case 3: ``quantgate serve`` (two uvicorn workers, started by spawn: ``python -c``) in a
    folder holding the writer's ``multiprocessing/`` package; the workers imported it and
    answered for the writer. Started here as a person starts it: the console script."""
    import subprocess

    marker = tmp_path / "ran-planted-multiprocessing"
    cwd = tmp_path / "cwd"
    _plant(cwd, "multiprocessing", marker, "raise ImportError('planted')\n")
    port = free_port()
    script = Path(sys.executable).parent / "quantgate"
    log_path = tmp_path / "serve.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [str(script), "serve", "--model", f"models:/{TEST_MODEL}@staging", "--port", str(port), "--workers", "2"],
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"},  # as a person's shell has it
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_until_up(proc, f"http://127.0.0.1:{port}", log_path), log_path.read_text()[-2000:]
    finally:
        stop(proc, log)
    assert not marker.exists(), log_path.read_text()[-2000:]
