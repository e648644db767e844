"""Issue 17, the thirty-ninth adversarial run (on 3f026e1).

- C2: a store writer held the promotion lock's folder and, once a keyed gate had opened the lock
  file, put a link to the evidence key file in its place; the gate's timeout message read "the
  holder" by name, through the link, and printed the key.
- C3: ``host.gpu`` is signed but quantgate's host fingerprint lacked it, so the keyed evaluate
  signed the value a writer put on its running run; and a cpu build's copy tagged
  ``device=gpu`` was rebuilt and signed.
- C1: a genuine build's copy whose ``MLmodel`` gave ``top_k`` a default of 1 was signed and
  staged (the evaluator calls the model directly; MLflow applies the signature when serving).
"""

from __future__ import annotations

import json
import threading
import time

import mlflow
import pytest
import yaml
from mlflow import MlflowClient
from test_adversarial import _quantgate
from test_adversarial_signed import KEY, _stored_copy_root, attested_pair

from quantgate.model_files import digest, download, model_manifest
from registry_hooks.gate.lock import LockTimeout, promotion_lock

MODEL = "adv39"


def test_c2_a_lock_timeout_never_reads_the_lock_file_by_name(tmp_path):
    secret = tmp_path / "evidence.key"
    secret.write_text("k" * 64, encoding="utf-8")
    lock = tmp_path / "mlflow.db.promote.lock"
    caught: list[BaseException] = []

    def waiting_gate() -> None:
        try:
            with promotion_lock(lock, timeout_s=1.0):
                pass
        except LockTimeout as exc:
            caught.append(exc)

    with promotion_lock(lock):  # the holder (the writer holds the folder the same way)
        gate = threading.Thread(target=waiting_gate)
        gate.start()
        time.sleep(0.4)  # the waiting gate has opened the lock file by now
        link = tmp_path / "planted"
        link.symlink_to(secret)
        link.replace(lock)
        gate.join()
    assert caught, "the second gate got in"
    assert "k" * 64 not in str(caught[0]) and "still held after 1s" in str(caught[0]), caught[0]


@pytest.fixture(scope="module")
def attested(pipeline):
    """The pipeline's FP32 and INT8 copied into ``adv39``, the FP32 copy attested under the key."""
    return attested_pair(pipeline, MODEL)


def _evaluate(version: str):
    return _quantgate("evaluate", "--version", version, "--model-name", MODEL, "--latency-runs", "3")


def test_c1_a_copy_whose_mlmodel_changes_a_params_default_is_refused(attested, tmp_path, monkeypatch):
    mlmodel = _stored_copy_root(attested["int8"], MODEL) / "MLmodel"
    original = mlmodel.read_bytes()
    tag = MlflowClient().get_model_version(MODEL, attested["int8"]).tags["model_sha256"]
    doc = yaml.safe_load(original)
    params = json.loads(doc["signature"]["params"])
    params[0]["default"] = 1
    doc["signature"]["params"] = json.dumps(params)
    mlmodel.write_text(yaml.safe_dump(doc), encoding="utf-8")
    refit = digest(model_manifest(download(f"models:/{MODEL}/{attested['int8']}", tmp_path / "dl")))
    MlflowClient().set_model_version_tag(MODEL, attested["int8"], "model_sha256", refit)
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    try:
        result = _evaluate(attested["int8"])
    finally:
        mlmodel.write_bytes(original)
        MlflowClient().set_model_version_tag(MODEL, attested["int8"], "model_sha256", tag)
    assert result.exit_code != 0 and "signature" in result.output, result.output


def test_c3_a_cpu_build_tagged_gpu_is_refused(attested, monkeypatch):
    MlflowClient().set_model_version_tag(MODEL, attested["int8"], "device", "gpu")
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    try:
        result = _evaluate(attested["int8"])
    finally:
        MlflowClient().set_model_version_tag(MODEL, attested["int8"], "device", "cpu")
    assert result.exit_code != 0 and "'device' tag says 'gpu'" in result.output, result.output


def test_c3_a_host_tag_a_writer_sets_on_the_running_evaluation_is_not_signed(attested, monkeypatch):
    """The writer's watcher sets host.gpu on the evaluation run while it measures (here: as the
    evaluation logs its figures' digest); the signature covers the host quantgate measured on,
    so the gate refuses the evaluation as it is stored."""
    real = mlflow.set_tags

    def writer_watches(tags):
        real(tags)
        if "quantgate.metrics_sha256" in tags:
            MlflowClient().set_tag(mlflow.active_run().info.run_id, "host.gpu", "NVIDIA H100 80GB HBM3")

    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    monkeypatch.setattr(mlflow, "set_tags", writer_watches)
    result = _evaluate(attested["int8"])
    monkeypatch.undo()
    assert result.exit_code == 0, result.output
    run_id = MlflowClient().get_model_version(MODEL, attested["int8"]).tags["eval_run_id"]
    assert MlflowClient().get_run(run_id).data.tags.get("host.gpu") == "NVIDIA H100 80GB HBM3"
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    gate = _quantgate("promote", "--version", attested["int8"], "--model-name", MODEL, "--dry-run")
    assert gate.exit_code != 0 and "signature" in gate.output, gate.output


def test_score_runs_the_installed_spark_not_one_above_its_working_folder(tmp_path):
    """pyspark looks for its home in the working folder's parent first and runs the
    ``bin/spark-submit`` it finds there: a key holder scoring from a folder inside the store
    would run a store writer's (noted by the thirty-ninth run)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    store = tmp_path / "store"
    (store / "jars").mkdir(parents=True)
    (store / "bin").mkdir()
    marker = tmp_path / "ran-planted-spark-submit"
    submit = store / "bin" / "spark-submit"
    submit.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n", encoding="utf-8")
    submit.chmod(0o755)
    (store / "work").mkdir()
    probe = (
        "from flows.score import spark_session\n"
        "spark = spark_session(None, batch_size=8, threads=1, partitions=1)\n"
        "print(spark.range(3).count())\n"
        "spark.stop()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SPARK_HOME"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=store / "work", env=env, capture_output=True, text=True, timeout=300
    )
    assert not marker.exists(), "the planted spark-submit ran"
    assert done.returncode == 0 and done.stdout.strip().endswith("3"), done.stderr[-2000:]
