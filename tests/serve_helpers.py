"""Start, wait for and stop a model server on loopback (`mlflow models serve` or `quantgate serve`):
shared by the serving tests and the TensorRT flow's GPU tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import free_port

SERVE_TIMEOUT_S = 180


def start_server(model_uri: str, log_path: Path, extra_env: dict | None = None, kind: str = "mlflow"):
    """`mlflow models serve` (kind "mlflow") or `quantgate serve` (kind "quantgate") on loopback."""
    port = free_port()
    log = open(log_path, "wb")
    if kind == "mlflow":
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            model_uri,
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "flows.cli",
            "serve",
            "--model",
            model_uri,
            "--port",
            str(port),
            "--max-batch",
            "64",
        ]
    proc = subprocess.Popen(cmd, env={**os.environ, **(extra_env or {})}, stdout=log, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}", log


def wait_until_up(proc, base: str, log_path: Path) -> bool:
    """True once /ping answers 200; False if the process exits first."""
    deadline = time.monotonic() + SERVE_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if requests.get(f"{base}/ping", timeout=2).status_code == 200:
                return True
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    proc.kill()
    pytest.fail(f"server neither came up nor exited in {SERVE_TIMEOUT_S} s: {log_path.read_text()[-2000:]}")


def stop(proc, log) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    log.close()
