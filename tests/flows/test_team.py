"""Team scale, against a real stack: mlflow server on PostgreSQL with artifacts in S3 (SeaweedFS),
the gate's PostgreSQL advisory lock, registry webhooks from that server, and Spark batch scoring.

Marked `team`: `python -m pytest -m team`. .ci/run starts the stack (deploy/stack) and sets
$QUANTGATE_STACK_DIR; without it these tests start a stack of their own and stop it after.
Sizes: $QUANTGATE_TEAM_ROWS (20000) rows scored, $QUANTGATE_TEAM_ROUNDS (20) promotion rounds.
"""

from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from mlflow import MlflowClient

from conftest import LENIENT, free_port
from team_helpers import REPO, gate_one_locked, init_team_worker, require_team_pieces, team_stack

pytestmark = pytest.mark.team

ROWS = int(os.environ.get("QUANTGATE_TEAM_ROWS", "20000"))
ROUNDS = int(os.environ.get("QUANTGATE_TEAM_ROUNDS", "20"))
RUN = uuid.uuid4().hex[:6]  # a stack outlives a test run: names stay unique
# Local shortcut on a slow machine: reuse a model already on the stack (its @staging version and
# that version's parent) instead of training one; the pipeline test then skips. CI never sets it.
REUSE = os.environ.get("QUANTGATE_TEAM_REUSE_MODEL")
MODEL = REUSE or f"team-news-{RUN}"
SECRET = "team-test-secret-0123456789abcdef"


def _bench():
    spec = importlib.util.spec_from_file_location("batch_scoring", REPO / "benchmarks" / "batch_scoring.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    require_team_pieces()
    root = tmp_path_factory.mktemp("team")
    with team_stack() as env, pytest.MonkeyPatch.context() as mp_:
        old_uri, old_cwd = mlflow.get_tracking_uri(), os.getcwd()
        for key, value in env.items():
            mp_.setenv(key, value)
        mp_.setenv("MLFLOW_EXPERIMENT_NAME", f"quantgate-team-{RUN}")
        mp_.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        os.chdir(root)
        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        mlflow.set_experiment(f"quantgate-team-{RUN}")
        try:
            yield {**env, "root": root}
        finally:
            os.chdir(old_cwd)
            mlflow.set_tracking_uri(old_uri)
    if "MLFLOW_TRACKING_URI" in os.environ:  # give the session store (conftest) its experiment back
        with contextlib.suppress(Exception):
            mlflow.set_experiment("quantgate-tests")


def _s3():
    import boto3

    return boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"])


def _bucket_keys(prefix: str = "") -> list[str]:
    s3 = _s3()
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=os.environ["QUANTGATE_S3_BUCKET"], Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.fixture(scope="module")
def team_pipeline(stack):
    """train (a few steps) -> quantise -> evaluate -> promote, every step talking to the server."""
    from flows.evaluate import evaluate
    from flows.promote import run_gate
    from flows.quantise import quantise_one as quantise
    from flows.train import TrainConfig, train
    from quantgate.recipes import OnnxInt8DynamicRecipe as DynamicInt8Recipe

    thresholds = stack["root"] / "lenient.yaml"
    thresholds.write_text(yaml.safe_dump(LENIENT))
    client = MlflowClient()
    if REUSE:
        int8 = client.get_model_version_by_alias(MODEL, "staging")
        return {
            "code": None,
            "thresholds": thresholds,
            "int8": int8,
            "fp32": client.get_model_version(MODEL, int8.tags["parent_version"]),
        }
    with mlflow.start_run(run_name="team-train"):
        fp32 = train(TrainConfig(max_epochs=1, train_limit=96, batch_size=16, max_length=32), MODEL)
    with mlflow.start_run(run_name="team-quantise"):
        int8 = quantise(fp32, DynamicInt8Recipe())
    with mlflow.start_run(run_name="team-evaluate"):
        evaluate(int8, latency_runs=20)
    code = run_gate(
        version_ref=str(int8.version),
        candidates=False,
        model_name=MODEL,
        thresholds_path=str(thresholds),
        lock_uri=stack["QUANTGATE_LOCK_URI"],
    )
    return {
        "code": code,
        "thresholds": thresholds,
        "fp32": client.get_model_version(MODEL, fp32.version),
        "int8": client.get_model_version(MODEL, int8.version),
    }


def test_the_pipeline_lands_in_postgresql_and_the_s3_bucket(stack, team_pipeline):
    import psycopg

    from registry_hooks.gate.lock import libpq_uri

    if REUSE:
        pytest.skip("QUANTGATE_TEAM_REUSE_MODEL: no pipeline was run")
    fp32, int8 = team_pipeline["fp32"], team_pipeline["int8"]
    assert team_pipeline["code"] == 0
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(MODEL, "staging").version) == str(int8.version)
    with psycopg.connect(libpq_uri(stack["QUANTGATE_LOCK_URI"])) as conn:
        rows = conn.execute(
            "SELECT version, current_stage FROM model_versions WHERE name = %s ORDER BY version", (MODEL,)
        ).fetchall()
        assert rows == [(int(fp32.version), "None"), (int(int8.version), "Staging")]
        tag = conn.execute(
            "SELECT value FROM model_version_tags WHERE name = %s AND version = %s AND key = %s",
            (MODEL, int(int8.version), "manifest_sha256"),
        ).fetchone()
        assert tag == (int8.tags["manifest_sha256"],)
        metrics = dict(
            conn.execute(
                "SELECT key, value FROM latest_metrics WHERE run_uuid = %s", (int8.tags["eval_run_id"],)
            ).fetchall()
        )
        assert 0.0 <= metrics["macro_f1"] <= 1.0 and metrics["latency_p95_ms"] > 0
    # the artifacts went through the server into the bucket: the model's files and the evaluation's table
    model_id = int8.source[len("models:/") :]
    keys = _bucket_keys("mlartifacts/")
    model_files = [k for k in keys if f"/models/{model_id}/artifacts/" in k]
    assert any(k.endswith("/MLmodel") for k in model_files) and any(k.endswith(".onnx") for k in model_files)
    assert any(k.endswith(f"{int8.tags['eval_run_id']}/artifacts/eval_predictions.json") for k in keys)


def test_concurrent_promotions_from_processes_leave_one_holder_every_round(stack):
    from registry_hooks.gate.apply import alias_holder, staged_versions
    from registry_hooks.gate.evidence import tag_problems

    from promote_helpers import log_trivial_model, register_evaluated_version

    name = f"team-concurrency-{RUN}"
    model_uri, digest = log_trivial_model(name)
    passing = [register_evaluated_version(name, model_uri, digest, latency_p95_ms=3.0 + i) for i in range(7)]
    failing = [
        register_evaluated_version(name, model_uri, digest, latency_p95_ms=1.0, eval_status="failed: RuntimeError"),
        register_evaluated_version(name, model_uri, digest, latency_p95_ms=1.0, stale=True),
        register_evaluated_version(name, model_uri, digest, latency_p95_ms=1.0, macro_f1=0.5),
    ]
    thresholds = stack["root"] / "concurrency.yaml"
    thresholds.write_text(yaml.safe_dump({"min_macro_f1": 0.8, "max_latency_p95_ms": 50.0}))
    versions, client = passing + failing, MlflowClient()
    if client.get_experiment_by_name("quantgate") is None:  # created once here, not raced for by the workers
        client.create_experiment("quantgate")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["mlflow", "flows.promote", "promote_helpers", "team_helpers"])
    barrier = ctx.Barrier(len(versions))
    started, holders = time.monotonic(), []
    with ctx.Pool(
        len(versions),
        initializer=init_team_worker,
        initargs=(stack["MLFLOW_TRACKING_URI"], stack["QUANTGATE_LOCK_URI"], barrier),
    ) as pool:
        for round_no in range(ROUNDS):
            results = pool.map(gate_one_locked, [(v, name, str(thresholds)) for v in versions], chunksize=1)
            errors = [f"v{v}: {err}" for v, code, err in results if code not in (0, 1)]
            assert not errors, f"round {round_no}: " + "\n".join(errors)
            assert {v: c for v, c, _ in results} == {**{v: 0 for v in passing}, **{v: 1 for v in failing}}
            holder = alias_holder(client, name, "staging")
            assert holder in passing, f"round {round_no}: @staging is {holder}"
            assert staged_versions(client, name) == [holder], f"round {round_no}"
            mv = client.get_model_version(name, holder)
            assert mv.tags["gate.decision"] == "passed" and tag_problems(mv.tags) == []
            holders.append(holder)
    print(f"{ROUNDS} rounds x {len(versions)} promotions on the server in {time.monotonic() - started:.1f}s; {holders}")


def _wait_http(url: str, proc, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url} process exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"{url} did not come up: {log.read_text()[-2000:]}")


def test_a_webhook_from_the_server_has_a_version_evaluated_and_gated(stack, team_pipeline):
    from registry_hooks.webhooks.events import REEVALUATE_TAG

    int8 = team_pipeline["int8"]
    env = {**os.environ, "QUANTGATE_WEBHOOK_SECRET": SECRET}
    port, log = free_port(), stack["root"] / "hooks.log"
    receiver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "hooks",
            "serve",
            "--port",
            str(port),
            "--model-name",
            MODEL,
            "--thresholds",
            str(team_pipeline["thresholds"]),
            "--latency-runs",
            "20",
        ],
        env=env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        cwd=stack["root"],
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_http(f"{url}health", receiver, log)
        reg = subprocess.run(
            [sys.executable, "-m", "flows.cli", "hooks", "register", "--url", url, "--model-name", MODEL],
            env=env,
            capture_output=True,
            text=True,
            cwd=stack["root"],
        )
        assert reg.returncode == 0, reg.stderr
        time.sleep(6)  # deploy/stack sets MLFLOW_WEBHOOK_CACHE_TTL=5 on the server
        client = MlflowClient()
        client.set_model_version_tag(MODEL, int8.version, REEVALUATE_TAG, "1")
        deadline, status = time.monotonic() + 900, ""
        while time.monotonic() < deadline and not status.startswith(("evaluated", "evaluation failed", "failed")):
            time.sleep(2)
            status = client.get_model_version(MODEL, int8.version).tags.get("hooks.status", "")
        assert status.startswith("evaluated; gate passed"), f"{status!r}; receiver log: {log.read_text()[-2000:]}"
        mv = client.get_model_version(MODEL, int8.version)
        assert mv.tags["eval_run_id"] != int8.tags["eval_run_id"]  # evaluated again, by the receiver
        assert str(client.get_model_version_by_alias(MODEL, "staging").version) == str(int8.version)
    finally:
        receiver.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            receiver.wait(timeout=20)


def _score_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", "score", "--master", "local[2]", *args]


def _reference(version, frame: pd.DataFrame, batch: int, monkeypatch) -> pd.DataFrame:
    """The pyfunc's own predictions, in chunks of ``batch`` rows, in input order."""
    monkeypatch.setenv("QUANTGATE_THREADS", "1")  # as each Spark task runs it
    monkeypatch.setenv("QUANTGATE_MAX_BATCH", str(max(batch, 256)))
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/{version}")
    parts = [model.predict(frame[["text"]].iloc[lo : lo + batch]) for lo in range(0, len(frame), batch)]
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def headlines(stack):
    frame = pd.DataFrame({"id": np.arange(ROWS), "text": _bench().synthetic_headlines(ROWS, seed=14)})
    local = stack["root"] / "headlines.parquet"
    frame.to_parquet(local, index=False)
    key = f"team-{RUN}/in/headlines.parquet"
    _s3().upload_file(str(local), os.environ["QUANTGATE_S3_BUCKET"], key)
    return {"frame": frame, "local": local, "s3": f"s3://{os.environ['QUANTGATE_S3_BUCKET']}/team-{RUN}/in/*.parquet"}


def test_spark_scores_every_row_as_the_pyfunc_does_at_the_same_batch_size(stack, team_pipeline, headlines, monkeypatch):
    int8 = team_pipeline["int8"]
    out = stack["root"] / "scores.parquet"
    run = subprocess.run(
        _score_cmd(
            "--model", f"{MODEL}@staging", "--input", headlines["s3"], "--output", str(out), "--batch-size", "64"
        ),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"wrote {ROWS} rows" in run.stderr
    scored = pd.read_parquet(out).sort_values("row").reset_index(drop=True)
    frame = headlines["frame"]
    assert list(scored.columns) == ["row", "id", "text", "label", "probability", "model_version"]
    assert scored["row"].tolist() == list(range(ROWS)) and scored["id"].tolist() == frame["id"].tolist()
    assert set(scored["model_version"]) == {f"{MODEL}/{int8.version}"}
    ref = _reference(int8.version, frame, 64, monkeypatch)
    mismatched = np.flatnonzero(ref["label"].to_numpy() != scored["label"].to_numpy())
    assert mismatched.size == 0, f"{mismatched.size} of {ROWS} labels differ, first rows {mismatched[:10].tolist()}"
    np.testing.assert_array_equal(ref["probability"].to_numpy(), scored["probability"].to_numpy())
    assert not list(out.parent.glob(".scores.parquet.partial-*"))


def test_score_writes_one_s3_object_and_refuses_a_model_that_does_not_verify(
    stack, team_pipeline, headlines, monkeypatch
):
    int8 = team_pipeline["int8"]
    small = stack["root"] / "small.csv"
    headlines["frame"].head(300).to_csv(small, index=False)
    bucket = os.environ["QUANTGATE_S3_BUCKET"]
    target = f"s3://{bucket}/team-{RUN}/out/small-scores.csv"
    run = subprocess.run(
        _score_cmd("--model", f"{MODEL}/{int8.version}", "--input", str(small), "--output", target),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert _bucket_keys(f"team-{RUN}/out/") == [f"team-{RUN}/out/small-scores.csv"]
    got = stack["root"] / "got.csv"
    _s3().download_file(bucket, f"team-{RUN}/out/small-scores.csv", str(got))
    scored = pd.read_csv(got)
    ref = _reference(int8.version, headlines["frame"].head(300), 64, monkeypatch)
    assert scored["row"].tolist() == list(range(300)) and scored["label"].tolist() == ref["label"].tolist()
    again = subprocess.run(
        _score_cmd("--model", f"{MODEL}/{int8.version}", "--input", str(small), "--output", target),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 2 and "already exists; pass --overwrite" in again.stderr
    # a labelled table (text,label) is refused in one line: the output adds `label` (twenty-second
    # adversarial run: Spark scored every row, then failed with two tracebacks, COLUMN_ALREADY_EXISTS)
    labelled = stack["root"] / "labelled.csv"
    headlines["frame"].head(20).assign(label="World").to_csv(labelled, index=False)
    clash = subprocess.run(
        _score_cmd("--model", f"{MODEL}/{int8.version}", "--input", str(labelled), "--output", str(got) + ".x.csv"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert clash.returncode == 2 and "Traceback" not in clash.stderr, clash.stderr[-2000:]
    assert "the input already has column(s) ['label']" in clash.stderr, clash.stderr[-2000:]

    # a version whose files do not match its manifest_sha256 tag is refused before Spark starts
    client = MlflowClient()
    bad = mlflow.register_model(int8.source, MODEL)  # the same files, registered again...
    client.set_model_version_tag(MODEL, bad.version, "manifest_sha256", "0" * 64)  # ...with a digest they do not have
    out = stack["root"] / "refused.parquet"
    refused = subprocess.run(
        _score_cmd("--model", f"{MODEL}/{bad.version}", "--input", str(small), "--output", str(out)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"refusing to score models:/{MODEL}/{bad.version}" in refused.stderr, refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr
    assert not out.exists() and not list(out.parent.glob(".refused.parquet.partial-*"))


def test_a_killed_score_leaves_no_partial_output(stack, team_pipeline, headlines):
    from quantgate.score_io import remove_stale_partials

    out = stack["root"] / "killed.parquet"
    log = stack["root"] / "killed.log"
    proc = subprocess.Popen(
        _score_cmd("--model", f"{MODEL}@staging", "--input", str(headlines["local"]), "--output", str(out)),
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline, partials = time.monotonic() + 600, []
        while time.monotonic() < deadline and not partials:  # the scoring job has begun writing
            assert proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.5)
            partials = list(out.parent.glob(".killed.parquet.partial-*"))
        assert partials and "rows, batches of" in log.read_text(errors="replace"), log.read_text()[-2000:]
        time.sleep(2)  # Spark is scoring into the hidden sibling
        proc.send_signal(signal.SIGKILL)  # the command dies mid-write, with no chance to clean up
        proc.wait(timeout=30)
        assert not out.exists()
        time.sleep(5)  # the JVM and its workers notice their parent is gone; nothing may publish
        assert not out.exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the JVM and Python workers this test started
    assert sorted(remove_stale_partials(out)) == sorted(partials)  # the next run clears what the killed one left
    assert not list(out.parent.glob(".killed.parquet.partial-*"))
