"""Issue 17, the forty-second adversarial run (on d3f0a96).

A: the block memory was keyed by the version's identity, which includes its creation time; a
sqlite writer moved ``creation_time`` by 1 ms, the memory forgot, and run 41's attack (delete
quantgate's newer blocks, put an older tag back) rewrote a person's quote again. Now the seal
alone is remembered.

B: the commands quantgate prints and the README shows for MLflow's own servers (`mlflow ui`,
`mlflow models serve`, `mlflow server`) ran in the store's folder, where uvicorn imports first: a
planted ``mlflow`` package ran in the key holder's server, read the key file and changed the
staged version's answers. Now they start from a fresh private folder, with quantgate's secrets
unset. C: the README's key generation, ``python -c "import secrets…"``, imported a planted
``secrets.py`` from the working folder; it is ``python -P -c`` now."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

from mlflow import MlflowClient
from test_adversarial import LENIENT, _fresh, _quantgate, _yaml, trivial  # noqa: F401
from test_adversarial_fortyfirst_run import revived_older_tag

from quantgate.evidence_signing import plain_mlflow_command

PROJECT = Path(__file__).resolve().parents[1]


def test_a_moving_the_versions_creation_time_does_not_make_this_machine_forget(trivial, tmp_path):  # noqa: F811
    model = "adv42-forget"
    database = unquote(urlparse(os.environ["MLFLOW_TRACKING_URI"]).path)[1:]

    def move_creation_time(version: str) -> None:
        with sqlite3.connect(database) as db:
            db.execute(
                "UPDATE model_versions SET creation_time = creation_time + 1 WHERE name = ? AND version = ?",
                (model, int(version)),
            )

    version, quote = revived_older_tag(model, trivial, _yaml(tmp_path, LENIENT), move_creation_time)
    assert MlflowClient().get_model_version(model, version).description.startswith(quote)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ui(command: str, cwd: Path, marker: Path, port: int) -> tuple[bool, bool]:
    """Start ``command`` in ``cwd``; return (the planted package ran, the UI answered /health)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "MLFLOW_"))}
    proc = subprocess.Popen(
        ["bash", "-c", command], cwd=cwd, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    healthy = False
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not marker.exists() and not healthy:
            try:
                healthy = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
            except OSError:
                time.sleep(1)
        time.sleep(2)  # the workers import after the supervisor answers
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    return marker.exists(), healthy


def test_b_the_ui_command_quantgate_prints_runs_no_package_planted_beside_the_store(tmp_path):
    store = tmp_path / "store"
    (store / "mlflow").mkdir(parents=True)
    marker = tmp_path / "planted-ran"
    (store / "mlflow" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nraise ImportError\n")
    uri = f"sqlite:///{store}/mlflow.db"
    port = _free_port()
    printed = plain_mlflow_command(f"ui --backend-store-uri {uri} --host 127.0.0.1 --port {port}")
    ran, healthy = _run_ui(printed, store, marker, port)
    assert not ran and healthy, printed
    port = _free_port()
    ran, _ = _run_ui(f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port {port}", store, marker, port)
    assert ran, "the planted package did not run from the store's folder: the test proves nothing"


def test_b_promote_prints_no_bare_mlflow_command_and_unsets_the_key(trivial, tmp_path, monkeypatch):  # noqa: F811
    model = "adv42-printed"
    version = _fresh(model, trivial)
    monkeypatch.setenv("QUANTGATE_WEBHOOK_SECRET", "x" * 40)
    result = _quantgate(
        "promote", "--version", version, "--model-name", model, "--thresholds", _yaml(tmp_path, LENIENT)
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "mlflow models serve" in line]
    assert lines and all('cd "$(mktemp -d)" && env -u QUANTGATE_WEBHOOK_SECRET' in line for line in lines), lines
    assert "MLFLOW_TRACKING_URI=sqlite:////" in lines[0], lines


def test_c_the_readme_starts_mlflow_servers_and_python_one_liners_safely():
    blocks = re.findall(r"```bash\n(.*?)```", (PROJECT / "README.md").read_text(encoding="utf-8"), re.S)
    lines = [line.split("#")[0] for block in blocks for line in block.splitlines()]  # commands, not comments
    unsafe_python = [line for line in lines if re.search(r"\bpython3?(\.\d+)? -c\b", line)]
    servers = [line for line in lines if re.search(r"\bmlflow (ui|server|models serve)\b", line)]
    assert not unsafe_python, unsafe_python
    assert servers and all('cd "$(mktemp -d)"' in line for line in servers), servers
