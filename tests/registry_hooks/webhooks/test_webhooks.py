"""Registry webhooks: signature checks, idempotency, and a real MLflow server driving the gate."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mlflow
import pytest
import requests
import yaml
from mlflow import MlflowClient

from quantgate.data import news9_labels
from quantgate.packaging import SERVING_MODEL_FILE, SIGNATURE, manifest
from registry_hooks.webhooks.events import REEVALUATE_TAG, SeenDeliveries, delivery_problem, is_candidate, plan, sign
from registry_hooks.webhooks.receiver import Receiver

from conftest import LENIENT, TEST_MODEL, free_port

LABELS = news9_labels()  # the test models are trained on news9

SECRET = "test-secret-" + "s" * 20
WATCHED = "hooks-test"


def delivery(kind: str, data: dict, *, secret: str = SECRET, age_s: float = 0, delivery_id: str | None = None):
    entity, action = kind.split(".")
    body = json.dumps({"entity": entity, "action": action, "timestamp": "2026-01-01T00:00:00Z", "data": data}).encode()
    did, ts = delivery_id or str(uuid.uuid4()), str(int(time.time() - age_s))
    headers = {
        "X-MLflow-Delivery-Id": did,
        "X-MLflow-Timestamp": ts,
        "X-MLflow-Signature": sign(secret, did, ts, body),
        "Content-Type": "application/json",
    }
    return headers, body


# ----------------------------------------------------------------- pure parts
def test_authentic_fresh_delivery_passes():
    headers, body = delivery("model_version.created", {"name": WATCHED, "version": "2"})
    assert delivery_problem(headers, body, SECRET, time.time()) is None


def test_forged_unsigned_stale_and_tampered_deliveries_are_refused():
    headers, body = delivery(
        "model_version.created", {"name": WATCHED, "version": "2"}, secret="another-secret-xxxxxxxx"
    )
    assert delivery_problem(headers, body, SECRET, time.time()) == "bad signature"
    headers, body = delivery("model_version.created", {"name": WATCHED, "version": "2"})
    assert delivery_problem(headers, body.replace(b'"2"', b'"3"'), SECRET, time.time()) == "bad signature"
    unsigned = {k: v for k, v in headers.items() if k != "X-MLflow-Signature"}
    assert delivery_problem(unsigned, body, SECRET, time.time()).startswith("unsigned")
    headers, body = delivery("model_version.created", {"name": WATCHED, "version": "2"}, age_s=3600)
    assert delivery_problem(headers, body, SECRET, time.time()).startswith("stale")


def test_plan_reads_events():
    body = lambda kind, data: delivery(kind, data)[1]  # noqa: E731
    job, _ = plan(body("model_version.created", {"name": WATCHED, "version": "4"}), WATCHED)
    assert (job.name, job.version) == (WATCHED, "4")
    job, _ = plan(
        body("model_version_tag.set", {"name": WATCHED, "version": "4", "key": REEVALUATE_TAG, "value": "1"}), WATCHED
    )
    assert job is not None and job.version == "4"
    assert (
        plan(
            body("model_version_tag.set", {"name": WATCHED, "version": "4", "key": "gate.decision", "value": "x"}),
            WATCHED,
        )[0]
        is None
    )
    assert plan(body("model_version.created", {"name": "other", "version": "1"}), WATCHED)[0] is None
    with pytest.raises(ValueError, match="not an MLflow webhook payload"):
        plan(b'{"hello": 1}', WATCHED)


def test_only_variants_with_a_parent_are_candidates():
    assert not is_candidate({"variant": "fp32"})[0]
    assert not is_candidate({"variant": "onnx-int8-dynamic"})[0]
    assert is_candidate({"variant": "onnx-int8-dynamic", "parent_version": "1"})[0]


def test_seen_deliveries_is_bounded_and_can_forget():
    seen = SeenDeliveries(capacity=2)
    assert seen.first_time("a") and not seen.first_time("a")
    seen.first_time("b"), seen.first_time("c")
    assert seen.first_time("a")  # forgotten: oldest out first
    seen.forget("c")
    assert seen.first_time("c")


def test_receiver_answers_fast_queues_once_and_sheds_load():
    r = Receiver(secret=SECRET, model_name=WATCHED, thresholds=None, queue_size=1)
    headers, body = delivery("model_version.created", {"name": WATCHED, "version": "2"})
    assert r.handle(headers, body)[0] == 202
    assert r.handle(headers, body) == (200, {"status": "duplicate delivery: already handled"})
    assert r.jobs.qsize() == 1
    forged_headers, forged = delivery("model_version.created", {"name": WATCHED, "version": "3"}, secret="x" * 20)
    assert r.handle(forged_headers, forged)[0] == 401 and r.jobs.qsize() == 1
    full_headers, full = delivery("model_version.created", {"name": WATCHED, "version": "5"})
    assert r.handle(full_headers, full)[0] == 503  # queue full: refused, not marked seen
    r.jobs.get_nowait()
    assert r.handle(full_headers, full)[0] == 202  # MLflow's retry of the same delivery is taken


# ----------------------------------------------------------------- end to end
@contextlib.contextmanager
def tracking(uri: str):
    old = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(old)


def _wait_http(url: str, proc, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url} process exited: {log.read_text()[-2000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not come up: {log.read_text()[-2000:]}")


def _webhook_env(server_url: str) -> dict[str, str]:
    """The environment of the MLflow server, the receiver and `hooks register`: webhooks to loopback
    allowed, one secret-encryption key for every server worker, the receiver's shared secret."""
    from cryptography.fernet import Fernet

    return {
        **os.environ,
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        # without a fixed key each server worker encrypts webhook secrets with its own random key
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",
        "MLFLOW_TRACKING_URI": server_url,
        "QUANTGATE_WEBHOOK_SECRET": SECRET,
    }


def _start_mlflow_server(root: Path, port: int, env: dict, log: Path) -> subprocess.Popen:
    """`mlflow server` on loopback, one worker, its sqlite store and artifacts under ``root``."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'server.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        cwd=root,
    )


def _start_receiver(root: Path, port: int, env: dict, log: Path, thresholds: Path) -> subprocess.Popen:
    """`quantgate hooks serve` on loopback for the watched model, its promotion lock under ``root``."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "hooks",
            "serve",
            "--port",
            str(port),
            "--model-name",
            WATCHED,
            "--thresholds",
            str(thresholds),
            "--latency-runs",
            "20",
            "--lock-file",
            str(root / "promote.lock"),
        ],
        env=env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        cwd=root,
    )


def _register_hook(hook_url: str, env: dict, root: Path) -> subprocess.CompletedProcess:
    """`quantgate hooks register` of the receiver's URL for the watched model."""
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", "hooks", "register", "--url", hook_url, "--model-name", WATCHED],
        env=env,
        capture_output=True,
        text=True,
        cwd=root,
    )


@pytest.fixture(scope="module")
def hooked(tmp_path_factory, pipeline):
    """A real `mlflow server` (sqlite) + the receiver on loopback, with the webhook registered."""
    root = tmp_path_factory.mktemp("hooks")
    mlflow_port, hook_port = free_port(), free_port()
    server_url = f"http://127.0.0.1:{mlflow_port}"
    env = _webhook_env(server_url)
    procs = []
    logs = {n: root / f"{n}.log" for n in ("mlflow", "hooks")}
    procs.append(_start_mlflow_server(root, mlflow_port, env, logs["mlflow"]))
    _wait_http(f"{server_url}/health", procs[0], logs["mlflow"])
    thresholds = root / "lenient.yaml"
    thresholds.write_text(yaml.safe_dump(LENIENT))
    procs.append(_start_receiver(root, hook_port, env, logs["hooks"], thresholds))
    hook_url = f"http://127.0.0.1:{hook_port}/"
    _wait_http(f"{hook_url}health", procs[1], logs["hooks"])
    registered = _register_hook(hook_url, env, root)
    assert registered.returncode == 0, registered.stderr
    again = _register_hook(hook_url, env, root)
    assert "updated webhook" in again.stdout  # idempotent
    time.sleep(1.5)  # MLflow caches the webhook list for MLFLOW_WEBHOOK_CACHE_TTL seconds
    yield {"server": server_url, "hook": hook_url, "root": root, "logs": logs}
    for p in procs:
        p.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=20)


def _log_plainly(src: Path, *, tags: dict, labels: list[str] | None = None) -> str:
    """Register a copy of a quantgate model with plain MLflow calls, as any notebook could."""
    flavor = yaml.safe_load((src / "MLmodel").read_text())["flavors"]["python_function"]
    paths = {key: str(src / spec["path"]) for key, spec in flavor["artifacts"].items()}
    if labels is not None:  # a deliberately broken variant: permuted labels, self-consistent
        from quantgate.onnx_graph import stamp_labels

        Path(paths["label_map"]).write_text(json.dumps({str(i): n for i, n in enumerate(labels)}))
        stamp_labels(Path(paths["model"]), labels)
        meta = json.loads(Path(paths["meta"]).read_text())
        meta["manifest"] = manifest({k: v for k, v in paths.items() if k in meta["manifest"]})
        Path(paths["meta"]).write_text(json.dumps(meta))
    client = MlflowClient()
    exp = client.get_experiment_by_name("notebook")
    with mlflow.start_run(experiment_id=exp.experiment_id if exp else client.create_experiment("notebook")):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(SERVING_MODEL_FILE),
            artifacts=paths,
            registered_model_name=WATCHED,
            pip_requirements=["mlflow"],
            signature=SIGNATURE,
        )
    version = str(info.registered_model_version)
    for k, v in tags.items():
        client.set_model_version_tag(WATCHED, version, k, v)
    return version


def _wait_for_status(version: str, timeout_s: float = 300) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = MlflowClient().get_model_version(WATCHED, version).tags.get("hooks.status", "")
        if status.startswith(("evaluated", "evaluation failed", "failed", "skipped")):
            return status
        time.sleep(2)
    pytest.fail(f"version {version} was not handled within {timeout_s} s")


def test_new_variant_is_evaluated_and_promoted_and_a_broken_one_is_rejected(hooked, pipeline, tmp_path):
    srcs = {}
    for key in ("fp32", "int8"):
        srcs[key] = Path(
            shutil.copytree(
                mlflow.artifacts.download_artifacts(f"models:/{TEST_MODEL}/{pipeline[key].version}"), tmp_path / key
            )
        )
    broken_src = Path(shutil.copytree(srcs["int8"], tmp_path / "broken"))
    with tracking(hooked["server"]):
        parent = _log_plainly(srcs["fp32"], tags={"variant": "fp32", "precision": "fp32", "runtime": "torch"})
        assert _wait_for_status(parent).startswith("skipped")
        good = _log_plainly(
            srcs["int8"],
            tags={
                "variant": "onnx-int8-dynamic",
                "parent_version": parent,
                "manifest_sha256": pipeline["int8"].tags["manifest_sha256"],
            },
        )
        status = _wait_for_status(good)
        client = MlflowClient()
        assert status.startswith("evaluated; gate passed"), status
        assert f"promoted: @staging -> v{good}" in status and "it/s" not in status  # the verdict, not tqdm text
        assert str(client.get_model_version_by_alias(WATCHED, "staging").version) == good

        swapped = list(LABELS)
        swapped[0], swapped[2] = swapped[2], swapped[0]
        bad = _log_plainly(broken_src, labels=swapped, tags={"variant": "onnx-int8-dynamic", "parent_version": parent})
        status = _wait_for_status(bad)
        assert status.startswith("evaluation failed") and "gate rejected" in status, status
        mv = client.get_model_version(WATCHED, bad)
        assert mv.tags["eval_status"].startswith("failed") and "contract violated" in mv.tags["eval_status"]
        assert str(client.get_model_version_by_alias(WATCHED, "staging").version) == good  # unchanged


def _registry_state(client: MlflowClient):
    versions = {v.version: dict(v.tags) for v in client.search_model_versions(f"name='{WATCHED}'")}
    aliases = client.get_registered_model(WATCHED).aliases if versions else {}
    return versions, aliases


def test_forged_and_replayed_deliveries_change_nothing(hooked):
    with tracking(hooked["server"]):
        client = MlflowClient()
        before = _registry_state(client)
    headers, body = delivery(
        "model_version_tag.set",
        {"name": WATCHED, "version": "1", "key": REEVALUATE_TAG, "value": "1"},
        secret="forged-secret-xxxxxxxxxx",
    )
    r = requests.post(hooked["hook"], data=body, headers=headers, timeout=10)
    assert r.status_code == 401
    headers, body = delivery("model_version_tag.set", {"name": WATCHED, "version": "99", "key": "note", "value": "x"})
    assert requests.post(hooked["hook"], data=body, headers=headers, timeout=10).status_code == 200
    replay = requests.post(hooked["hook"], data=body, headers=headers, timeout=10)
    assert replay.status_code == 200 and "duplicate" in replay.json()["status"]
    stale_headers, stale = delivery("model_version.created", {"name": WATCHED, "version": "1"}, age_s=3600)
    assert requests.post(hooked["hook"], data=stale, headers=stale_headers, timeout=10).status_code == 401
    time.sleep(2)
    with tracking(hooked["server"]):
        assert _registry_state(client) == before
