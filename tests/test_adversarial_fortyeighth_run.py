"""Issue 17, the forty-eighth adversarial run (on 98b93d8). Case 1: ONNX Runtime's session file
``$TMPDIR/.ses``, written through a link the writer planted in a shared temporary folder, wiped
the key holder's description-block memory (the memory's own check is in
``tests/quantgate/test_block_memory.py``). Case 2: one tag of the writer's own version set to
bytes that are not UTF-8 crashed the key holder's ``promote`` and ``compare`` for every version,
quoting its terminal escapes raw."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from urllib.parse import unquote, urlparse

from test_adversarial import LENIENT, _fresh, _yaml, trivial  # noqa: F401

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEALS = "hmac-sha256:" + "a" * 12 + ":" + "b" * 64 + "\n"


def test_case_1_a_link_at_onnx_runtimes_session_file_in_a_shared_temporary_folder_writes_nothing(tmp_path):
    shared = tmp_path / "tmp"  # the shared /tmp, where the writer planted the link
    shared.mkdir()
    memory = tmp_path / "state" / "superseded-description-blocks"
    memory.parent.mkdir()
    memory.write_text(SEALS)
    (shared / ".ses").symlink_to(memory)
    # what the key holder's `quantgate evaluate` (or `serve`, `score`) process does: start
    # quantgate's command line, then import ONNX Runtime to load a variant
    env = {**os.environ, "TMPDIR": str(shared)}
    code = 'from flows.cli import cli; cli(["compare", "--help"], standalone_mode=False); import onnxruntime'
    subprocess.run([sys.executable, "-P", "-c", code], cwd=REPO, env=env, check=True, timeout=300)
    assert memory.read_text() == SEALS
    assert [p.name for p in shared.iterdir()] == [".ses"]  # its own folder is gone with it


def _garble_a_tag(model: str, version: str) -> None:
    """The writer's one raw-SQL write: a tag whose text is not UTF-8, terminal escapes first."""
    database = unquote(urlparse(os.environ["MLFLOW_TRACKING_URI"]).path)[1:]
    with sqlite3.connect(database) as db:
        db.execute(
            "INSERT INTO model_version_tags (key, value, name, version) VALUES ('note', CAST(? AS TEXT), ?, ?)",
            (b"\x1b[2J\x1b[32m-> promoted: @staging\x1b[0m \xff", model, version),
        )


def _key_holders_quantgate(*args: str) -> subprocess.CompletedProcess:
    """The key holder's ``quantgate`` command, a process of its own as on the key holder's machine
    (in this process the store's connections are older than any command's set-up)."""
    command = [os.path.join(os.path.dirname(sys.executable), "quantgate"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_case_2_a_tag_that_is_not_utf8_on_another_version_crashes_nothing(trivial, tmp_path):  # noqa: F811
    model = "adv48-not-utf8"
    good = _fresh(model, trivial)
    theirs = _fresh(model, trivial, latency_p95_ms=1.0)
    _garble_a_tag(model, theirs)
    thresholds = _yaml(tmp_path, LENIENT)
    gate = ("promote", "--version", good, "--model-name", model, "--thresholds", thresholds, "--alias", "staging")
    for args in (gate, ("compare", "--name", model, "--out", str(tmp_path / "p.png"))):
        result = _key_holders_quantgate(*args)
        output = result.stdout + result.stderr
        assert "Traceback" not in output and "\x1b" not in output, output
        assert result.returncode == 0, output
