"""Concurrent promotions against a real sqlite store leave exactly one, evaluated, alias holder.

Ten versions (seven that pass, one unevaluated, one stale, one below the F1 limit) are gated
at the same moment by ten processes, twenty times over. After every round the alias `staging`
must name one version that passed, that version must be the only one in stage Staging, and
every process must have reported the verdict its version deserves. (With the promotion lock
switched off, 6 rounds in 10 of this set-up ended with several versions in Staging, or the
alias on a version outside it.)
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from registry_hooks.gate.apply import alias_holder, staged_versions
from registry_hooks.gate.evidence import tag_problems

from promote_helpers import gate_one, init_worker, log_trivial_model, register_evaluated_version

MODEL = "concurrency-test"
ROUNDS = 20


@pytest.fixture()
def own_store(tmp_path, monkeypatch):
    """A separate sqlite store, so the parallel writers do not disturb the session's store."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    old_uri, session_store = mlflow.get_tracking_uri(), "MLFLOW_TRACKING_URI" in os.environ
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("quantgate")  # created once here, not raced for by the workers
    yield uri
    mlflow.set_tracking_uri(old_uri)
    if session_store:  # give the session store (tests/conftest.py) its experiment back
        mlflow.set_experiment("quantgate-tests")


def test_parallel_promotions_leave_exactly_one_evaluated_holder(own_store, tmp_path):
    model_uri, digest = log_trivial_model(MODEL)
    passing = [register_evaluated_version(MODEL, model_uri, digest, latency_p95_ms=3.0 + i) for i in range(7)]
    failing = [
        register_evaluated_version(MODEL, model_uri, digest, latency_p95_ms=1.0, eval_status="failed: RuntimeError"),
        register_evaluated_version(MODEL, model_uri, digest, latency_p95_ms=1.0, stale=True),
        register_evaluated_version(MODEL, model_uri, digest, latency_p95_ms=1.0, macro_f1=0.5),
    ]
    thresholds = tmp_path / "thresholds.yaml"
    thresholds.write_text(yaml.safe_dump({"min_macro_f1": 0.8, "max_latency_p95_ms": 50.0}))
    versions = passing + failing
    client = MlflowClient()

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["mlflow", "flows.promote", "promote_helpers"])
    barrier = ctx.Barrier(len(versions))
    holders, started = [], time.monotonic()
    with ctx.Pool(len(versions), initializer=init_worker, initargs=(own_store, barrier)) as pool:
        for round_no in range(ROUNDS):
            results = pool.map(gate_one, [(v, MODEL, str(thresholds)) for v in versions], chunksize=1)
            codes = {v: code for v, code, _ in results}
            errors = [f"v{v}: {err}" for v, code, err in results if code not in (0, 1)]
            assert not errors, f"round {round_no}: " + "\n".join(errors)
            assert codes == {**{v: 0 for v in passing}, **{v: 1 for v in failing}}, f"round {round_no}"

            holder = alias_holder(client, MODEL, "staging")
            assert holder in passing, f"round {round_no}: @staging is {holder}"
            assert staged_versions(client, MODEL) == [holder], f"round {round_no}"
            mv = client.get_model_version(MODEL, holder)
            assert mv.tags["gate.decision"] == "passed" and tag_problems(mv.tags) == []
            holders.append(holder)
    print(
        f"{ROUNDS} rounds x {len(versions)} parallel promotions in {time.monotonic() - started:.1f}s; holders {holders}"
    )
    for v in failing:  # every rejection is on record too
        assert client.get_model_version(MODEL, v).tags["gate.decision"] == "rejected"
