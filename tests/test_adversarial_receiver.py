"""Issue 17, case 9: the webhook receiver's holes an adversarial run found, tried again the way
the adversary did it - a signed delivery replayed after a restart, a deeply nested body, and a
receiver started against a tracking server without a promotion lock. The other cases are in
test_adversarial.py; each docstring says what happened before issue 17."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from registry_hooks.webhooks.events import sign

from conftest import free_port

# ------------------------------------------------------------------ 9. webhooks
SECRET = "adversary-secret-" + "s" * 20


def _signed(body: bytes, delivery_id: str | None = None) -> dict:
    did, ts = delivery_id or str(uuid.uuid4()), str(int(time.time()))
    return {
        "X-MLflow-Delivery-Id": did,
        "X-MLflow-Timestamp": ts,
        "X-MLflow-Signature": sign(SECRET, did, ts, body),
        "Content-Type": "application/json",
    }


def _receiver(tmp_path: Path, env: dict, port: int, cwd: Path | None = None):
    log = open(tmp_path / f"hooks-{port}.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "hooks", "serve", "--port", str(port), "--model-name", "adv-hooks"],
        env=env,
        cwd=cwd or tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / f"hooks-{port}.log").read_text()
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except requests.RequestException:
            time.sleep(0.5)
    pytest.fail("receiver did not come up")


def test_9_a_replay_after_a_receiver_restart_is_a_duplicate_and_deep_json_gets_400(tmp_path):
    """Before: the seen-delivery set lived in memory, so a replay after a restart was accepted;
    a signed, deeply nested body dropped the connection. The second adversarial run found the
    default seen-delivery file relative to the working folder: the restart here is elsewhere."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'hooks.db'}",
        "QUANTGATE_WEBHOOK_SECRET": SECRET,
        "XDG_STATE_HOME": str(tmp_path / "state"),  # the default --seen-db lives under it
    }
    body = json.dumps(
        {
            "entity": "model_version",
            "action": "created",
            "timestamp": "x",
            "data": {"name": "adv-hooks", "version": "7"},
        }
    ).encode()
    headers = _signed(body)
    port = free_port()
    proc = _receiver(tmp_path, env, port)
    try:
        first = requests.post(f"http://127.0.0.1:{port}/", data=body, headers=headers, timeout=10)
        assert first.status_code == 202, first.text
        deep = b'{"entity": "model_version", "action": "created", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        answer = requests.post(f"http://127.0.0.1:{port}/", data=deep, headers=_signed(deep), timeout=10)
        assert answer.status_code == 400 and "nested deeper" in answer.json()["error"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = _receiver(tmp_path, env, port, cwd=elsewhere)  # restarted, from another folder
    try:
        replay = requests.post(f"http://127.0.0.1:{port}/", data=body, headers=headers, timeout=10)
        assert replay.status_code == 200 and "duplicate" in replay.json()["status"]
        assert requests.get(f"http://127.0.0.1:{port}/health", timeout=5).json()["queued"] == 0
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_9_the_receiver_does_not_gate_unlocked_against_a_tracking_server(tmp_path):
    """Before: against an http store the receiver's gates ran without the promotion lock."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "QUANTGATE_WEBHOOK_SECRET": SECRET}
    env.pop("QUANTGATE_PROMOTE_LOCK", None)
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "hooks", "serve", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "--lock-file" in proc.stderr.strip().splitlines()[-1] and "Traceback" not in proc.stderr


def _raw_post(port: int, headers: dict[str, bytes], body: bytes = b"{}") -> bytes:
    """A POST with header bytes exactly as given (requests would fix Content-Length)."""
    import socket

    lines = [b"POST / HTTP/1.1", b"Host: 127.0.0.1", *(k.encode() + b": " + v for k, v in headers.items())]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        conn.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_fiftysecond_run_number_headers_no_int_takes_get_an_answer(tmp_path):
    """A timestamp of 400 or 5,000 digits, or ``²`` (``str.isdigit`` says yes, ``int`` no), in the
    timestamp or the body length: the handler raised, and the sender got no answer at all."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'h.db'}", "QUANTGATE_WEBHOOK_SECRET": SECRET}
    port = free_port()
    proc = _receiver(tmp_path, env, port)
    signed = {k: v.encode() for k, v in _signed(b"{}").items()}
    try:
        for timestamp, why in ((b"9" * 400, b"stale"), (b"9" * 5000, b"stale"), (b"\xb2", b"malformed timestamp")):
            answer = _raw_post(port, {**signed, "X-MLflow-Timestamp": timestamp, "Content-Length": b"2"})
            assert answer.startswith(b"HTTP/1.0 401") and why in answer, answer[:200]
        for length, status in ((b"\xb2", b"411"), (b"9" * 400, b"413")):
            answer = _raw_post(port, {**signed, "Content-Length": length})
            assert answer.startswith(b"HTTP/1.0 " + status), answer[:200]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert "Traceback" not in (tmp_path / f"hooks-{port}.log").read_text(errors="replace")
