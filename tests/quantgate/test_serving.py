"""A real `mlflow models serve` of @staging on 127.0.0.1: answers, bad input, integrity."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path

import mlflow
import pytest
import requests

from quantgate.data import news9_labels

from conftest import TEST_MODEL
from serve_helpers import start_server, stop, wait_until_up

LABELS = news9_labels()  # the test models are trained on news9


class Server(str):
    """The base URL, and which server answers there."""

    kind: str


@pytest.fixture(scope="module", params=["mlflow", "quantgate"])
def server(request, staged, store):
    assert staged.exit_code == 0, staged.output
    log_path = store / f"serve-{request.param}.log"
    proc, base, log = start_server(
        f"models:/{TEST_MODEL}@staging", log_path, {"QUANTGATE_MAX_BATCH": "64"}, request.param
    )
    if not wait_until_up(proc, base, log_path):
        pytest.fail(f"server exited with {proc.returncode}: {log_path.read_text()[-3000:]}")
    url = Server(base)
    url.kind = request.param
    yield url
    stop(proc, log)


def _post(base, payload, **kw):
    return requests.post(f"{base}/invocations", json=payload, timeout=60, **kw)


def test_two_headlines_get_labels_from_the_label_set(server):
    r = _post(
        server,
        {
            "dataframe_records": [
                {"text": "Central bank holds rates"},
                {"text": "Wildfire season lengthens as planet warms"},
            ]
        },
    )
    assert r.status_code == 200, r.text
    rows = r.json()["predictions"]
    assert len(rows) == 2
    for row in rows:
        assert row["label"] in LABELS
        assert 0.0 <= row["probability"] <= 1.0
        assert [t["label"] for t in row["top_k"]][0] == row["label"] and len(row["top_k"]) == 3
        assert row["truncated"] is False


def test_concurrent_requests_all_succeed_and_match_sequential_answers(server):
    # MLflow's scoring server runs predict() on a thread pool; a fast tokenizer used from two
    # threads at once raises "Already borrowed" (that failed 20-40% of requests at
    # concurrency 4-16 before the pyfunc locked it).
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"Hospital ransomware attack number {i} disrupts city services" for i in range(12)]
    expected = {t: _post(server, {"dataframe_records": [{"text": t}]}).json()["predictions"][0]["label"] for t in texts}

    def ask(i: int):
        t = texts[i % len(texts)]
        r = _post(server, {"dataframe_records": [{"text": t}]})
        return t, r.status_code, r.json()["predictions"][0]["label"] if r.status_code == 200 else r.text

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, range(160)))
    assert Counter(code for _, code, _ in answers) == Counter({200: 160}), [a for a in answers if a[1] != 200][:3]
    assert all(label == expected[t] for t, _, label in answers)


def test_top_k_is_a_param(server):
    r = _post(server, {"dataframe_records": [{"text": "Striker signs four-year deal"}], "params": {"top_k": 9}})
    assert r.status_code == 200, r.text
    top = r.json()["predictions"][0]["top_k"]
    assert sorted(t["label"] for t in top) == sorted(LABELS)
    assert abs(sum(t["probability"] for t in top) - 1.0) < 1e-6


def test_over_long_text_is_truncated_and_flagged(server):
    r = _post(server, {"dataframe_records": [{"text": "Markets rally " * 2000}, {"text": "Short headline here"}]})
    assert r.status_code == 200, r.text
    assert [row["truncated"] for row in r.json()["predictions"]] == [True, False]


def test_payload_without_text_is_a_4xx_and_the_server_keeps_answering(server):
    r = _post(server, {"dataframe_records": [{"headline": "no text column here"}]})
    assert 400 <= r.status_code < 500, r.text
    assert "'text' column" in r.json()["message"]
    assert requests.get(f"{server}/ping", timeout=5).status_code == 200
    r = _post(server, {"dataframe_split": {"columns": ["text"], "data": [["Striker signs four-year deal"]]}})
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] in LABELS


@pytest.mark.parametrize("value", [123, None, True, ""])
def test_non_string_null_or_empty_text_is_refused_without_echo_or_trace(server, value):
    secret = "do-not-echo-" + "x" * 30
    r = _post(server, {"dataframe_records": [{"text": "fine headline " + secret}, {"text": value}]})
    assert r.status_code == 400, r.text
    body = r.json()
    assert "row 1" in body["message"] and "text" in body["message"]
    assert secret not in r.text, "the error must not echo the payload"
    assert "Traceback" not in r.text and "stack_trace" not in body


def _bad_payloads(rng: random.Random):
    """(kind, body bytes, content type) for >= 15 kinds of bad request."""

    def js(obj):
        return json.dumps(obj).encode()

    word = lambda: "".join(rng.choice("abcdefghij ") for _ in range(rng.randint(1, 30)))  # noqa: E731
    kinds = {
        "malformed-json": lambda: b'{"dataframe_records": [{"text": "' + word().encode() + b'"',
        "wrong-orient": lambda: js({"dataframe_records": {"text": word()}}),
        "split-without-columns": lambda: js({"dataframe_split": {"data": [[word()]]}}),
        "unknown-key": lambda: js({"records": [{"text": word()}]}),
        "missing-text": lambda: js({"dataframe_records": [{"headline": word()}]}),
        "number": lambda: js({"dataframe_records": [{"text": rng.randint(-(10**9), 10**9)}]}),
        "float": lambda: js({"dataframe_records": [{"text": rng.random()}]}),
        "null": lambda: js({"dataframe_records": [{"text": None}]}),
        "nan": lambda: b'{"dataframe_records": [{"text": NaN}]}',
        "empty-string": lambda: js({"dataframe_records": [{"text": " " * rng.randint(0, 5)}]}),
        "list-as-text": lambda: js({"dataframe_records": [{"text": [word(), word()]}]}),
        "object-as-text": lambda: js({"dataframe_records": [{"text": {"a": word()}}]}),
        "bool": lambda: js({"dataframe_records": [{"text": rng.random() < 0.5}]}),
        "extra-columns": lambda: js({"dataframe_records": [{"text": word() + " x", "extra": word(), "n": 3}]}),
        "too-many-rows": lambda: js({"dataframe_records": [{"text": f"headline {i}"} for i in range(10_000)]}),
        "one-megabyte": lambda: js({"dataframe_records": [{"text": "w" * 1_000_000}]}),
        "non-utf8": lambda: b'{"dataframe_records": [{"text": "\xff\xfe\xfa bad"}]}',
        "empty-body": lambda: b"",
        "empty-records": lambda: js({"dataframe_records": []}),
        "bad-top-k": lambda: js(
            {"dataframe_records": [{"text": word() + " y"}], "params": {"top_k": rng.choice([0, 10, -1, "three", 2.5])}}
        ),
        "json-scalar": lambda: js(rng.choice([1, "text", None, True])),
        "deep-nesting": lambda: b'{"dataframe_records": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    }
    content_types = {"wrong-content-type": "text/plain", "csv-garbage": "text/csv"}
    out = []
    for kind, make in kinds.items():
        for _ in range(22):
            out.append((kind, make(), "application/json"))
    for kind, ctype in content_types.items():
        for _ in range(15):
            out.append(
                (
                    kind,
                    ('\u00e9",' + word() + "\n,,\n").encode() if kind == "csv-garbage" else js({"text": word()}),
                    ctype,
                )
            )
    return out


def test_hundreds_of_bad_payloads_get_no_5xx_and_the_server_survives(server):
    payloads = _bad_payloads(random.Random(7))
    assert len(payloads) >= 500 and len({k for k, _, _ in payloads}) >= 15
    statuses: dict[str, Counter] = {}
    for kind, body, ctype in payloads:
        r = requests.post(f"{server}/invocations", data=body, headers={"Content-Type": ctype}, timeout=120)
        statuses.setdefault(kind, Counter())[r.status_code] += 1
    server_errors = {k: dict(c) for k, c in statuses.items() if any(code >= 500 for code in c)}
    # MLflow's own server answers JSON nested deeper than Python's recursion limit with a 500
    # (RecursionError in its parser, before any model code runs); `quantgate serve` guards it.
    # If MLflow fixes it, this fails: then drop the exception.
    known_upstream = {"deep-nesting": {500: 22}} if server.kind == "mlflow" else {}
    assert server_errors == known_upstream, f"5xx answers: {server_errors}"
    # the refusals are refusals, not silent successes
    for kind in (
        "missing-text",
        "number",
        "null",
        "nan",
        "empty-string",
        "too-many-rows",
        "non-utf8",
        "bad-top-k",
        "malformed-json",
    ):
        assert all(400 <= code < 500 for code in statuses[kind]), (kind, dict(statuses[kind]))
    assert requests.get(f"{server}/ping", timeout=5).status_code == 200
    r = _post(server, {"dataframe_records": [{"text": "Parliament passes budget after all-night session"}]})
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] in LABELS


def test_a_flipped_byte_in_the_served_model_file_stops_the_server_loading(pipeline, store, tmp_path):
    path = Path(
        shutil.copytree(
            mlflow.artifacts.download_artifacts(f"models:/{TEST_MODEL}/{pipeline['int8'].version}"), tmp_path / "model"
        )
    )
    onnx_file = next(path.glob("artifacts/*.onnx"))
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 3] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    proc, base, log = start_server(str(path), tmp_path / "serve.log")
    try:
        assert not wait_until_up(proc, base, tmp_path / "serve.log"), "a tampered model must not serve"
        assert proc.returncode != 0
        assert "does not match its recorded SHA-256 manifest" in (tmp_path / "serve.log").read_text()
    finally:
        stop(proc, log)


def test_quantgate_serve_refuses_bodies_above_its_limit(server):
    if server.kind != "quantgate":
        pytest.skip("only quantgate serve has a body-size limit (MLflow's server has none)")
    r = requests.post(
        f"{server}/invocations", data=b"x" * 9_000_000, headers={"Content-Type": "application/json"}, timeout=60
    )
    assert r.status_code == 413 and "above the limit" in r.json()["message"]
    assert requests.get(f"{server}/ping", timeout=5).status_code == 200
