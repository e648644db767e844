"""A real `mlflow models serve` of @staging on 127.0.0.1."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests

from conftest import TEST_MODEL, free_port
from flows.labels import LABELS


@pytest.fixture(scope="module")
def server(staged, store):
    assert staged.exit_code == 0, staged.output
    port = free_port()
    log = open(store / "serve.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{TEST_MODEL}@staging",
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ}, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}: {(store / 'serve.log').read_text()[-3000:]}")
        try:
            if requests.get(f"{base}/ping", timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        time.sleep(1)
    else:
        proc.kill()
        pytest.fail("server did not answer /ping within 180 s")
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _post(base, payload, **kw):
    return requests.post(f"{base}/invocations", json=payload, timeout=30, **kw)


def test_two_headlines_get_labels_from_the_label_set(server):
    r = _post(server, {"dataframe_records": [{"text": "Central bank holds rates"}, {"text": "Wildfire season lengthens as planet warms"}]})
    assert r.status_code == 200, r.text
    rows = r.json()["predictions"]
    assert len(rows) == 2
    for row in rows:
        assert row["label"] in LABELS
        assert 0.0 <= row["probability"] <= 1.0


def test_payload_without_text_is_a_4xx_and_the_server_keeps_answering(server):
    r = _post(server, {"dataframe_records": [{"headline": "no text column here"}]})
    assert 400 <= r.status_code < 500, r.text
    r = _post(server, {"dataframe_records": [{"text": ""}]})
    assert 400 <= r.status_code < 500, r.text
    assert requests.get(f"{server}/ping", timeout=5).status_code == 200
    r = _post(server, {"dataframe_split": {"columns": ["text"], "data": [["Striker signs four-year deal"]]}})
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] in LABELS
