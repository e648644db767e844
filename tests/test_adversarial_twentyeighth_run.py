"""Issue 17, the twenty-eighth adversarial run: with a key, `evaluate --dataset auto` accepted the
data an attested parent's tags name when every split had the digest its training run's
`dataset_digest` param recorded, but nothing the key signed covered that param. The writer
(1) rewrote the param in the store's sqlite file after the parent was attested, or (1b) added it
through MLflow's API to the run of a parent registered from a notebook, which had logged none
(MLflow refuses to change a param, not to add one). Either way the parent's `dataset` tag then
named a trusted folder's `train.csv`, the loader split it 70/10/20, a variant the gate rejected on
the real test split was judged on training texts, promoted and served. Now `attest` signs the
digest (tag `fp32_dataset_digest`) and only the signed value counts. Done as the run did it:
MLflow's public API, the sqlite file, then the key holder's `quantgate` commands."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from test_adversarial import _one_error_line, _quantgate  # noqa: F401
from test_adversarial_signed import COPY, KEY, signed  # noqa: F401

from quantgate.data import NEWS9_DIR, dataset_digest, load_dataset


def _trusted_train_file(tmp_path, monkeypatch) -> Path:
    """The key holder's own trusted folder holding news9, as the README advises; its train.csv."""
    trusted = tmp_path / "trusted"
    shutil.copytree(NEWS9_DIR, trusted / "news9")
    monkeypatch.setenv("QUANTGATE_TRUSTED_DATA", str(trusted))
    return trusted / "news9" / "train.csv"


@contextmanager
def _tag(version: str, tag: str, value: str):
    """A store writer's tag on ``version``, put back afterwards."""
    client = MlflowClient()
    before = client.get_model_version(COPY, version).tags.get(tag)
    client.set_model_version_tag(COPY, version, tag, value)
    try:
        yield
    finally:
        if before is None:
            client.delete_model_version_tag(COPY, version, tag)
        else:
            client.set_model_version_tag(COPY, version, tag, before)


@contextmanager
def _param_rewritten_in_sqlite(run_id: str, key: str, value: str):
    """One UPDATE on the store's sqlite file, as a writer with access to it can do; put back after."""
    db = mlflow.get_tracking_uri().removeprefix("sqlite:///")
    with sqlite3.connect(db) as con:
        (before,) = con.execute("SELECT value FROM params WHERE run_uuid=? AND key=?", (run_id, key)).fetchone()
        con.execute("UPDATE params SET value=? WHERE run_uuid=? AND key=?", (value, run_id, key))
    try:
        yield
    finally:
        with sqlite3.connect(db) as con:
            con.execute("UPDATE params SET value=? WHERE run_uuid=? AND key=?", (before, run_id, key))


def _split_digest(path: Path) -> str:
    """What the loader makes of one file given as a dataset (split 70/10/20), as its digest."""
    return dataset_digest(load_dataset(str(path)))


def test_a_training_runs_digest_rewritten_in_the_store_after_attest_does_not_choose_the_data(
    signed,  # noqa: F811
    monkeypatch,
    tmp_path,
):
    """Case 1: the attested parent's `dataset` tag names the trusted train.csv, and its training
    run's `dataset_digest` is rewritten in sqlite to that file's digest. Before: evaluated on
    training texts, exit 0. Now refused in one line: the signed digest is news9's."""
    train_file = _trusted_train_file(tmp_path, monkeypatch)
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    parent = MlflowClient().get_model_version(COPY, signed["fp32"])
    with (
        _tag(signed["fp32"], "dataset", str(train_file)),
        _param_rewritten_in_sqlite(parent.run_id, "dataset_digest", _split_digest(train_file)),
    ):
        line = _one_error_line(
            _quantgate("evaluate", "--version", signed["int8"], "--model-name", COPY, "--latency-runs", "5")
        )
    assert "is not the data it was attested with" in line, line


def test_a_digest_added_to_a_notebook_parents_run_after_attest_does_not_choose_the_data(
    signed,  # noqa: F811
    monkeypatch,
    tmp_path,
):
    """Case 1b: the key holder registers the FP32 files from a notebook run that logs no params,
    attests it and makes a variant of it. The writer then adds `dataset_digest` to that run
    (MLflow allows adding a param) and points the parent's `dataset` tag at the trusted
    train.csv. Before: evaluated on training texts, exit 0. Now refused in one line: the parent
    was attested without a digest."""
    train_file = _trusted_train_file(tmp_path, monkeypatch)
    client = MlflowClient()
    genuine = client.get_model_version(COPY, signed["fp32"])
    local = mlflow.artifacts.download_artifacts(f"models:/{COPY}/{genuine.version}", dst_path=str(tmp_path / "nb"))
    with mlflow.start_run(run_name="adv28-notebook") as run:  # the key holder's notebook: no params
        mlflow.log_artifacts(local, "model")
    fp32 = client.create_model_version(COPY, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    int8 = client.copy_model_version(f"models:/{COPY}/{signed['int8']}", COPY)
    try:
        for tag in ("variant", "dataset", "dataset_options", "manifest_sha256", "model_sha256"):
            if tag in genuine.tags:
                client.set_model_version_tag(COPY, fp32.version, tag, genuine.tags[tag])
        for tag in client.get_model_version(COPY, int8.version).tags:
            if tag.startswith(("eval_", "gate.")):  # a fresh variant: no evaluation, no verdict
                client.delete_model_version_tag(COPY, int8.version, tag)
        client.set_model_version_tag(COPY, int8.version, "parent_version", str(fp32.version))
        monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
        attested = _quantgate("attest", "--version", str(fp32.version), "--model-name", COPY)
        assert attested.exit_code == 0, attested.output
        assert "its run logged no dataset_digest" in attested.output, attested.output

        # the writer, without the key
        client.log_param(run.info.run_id, "dataset_digest", _split_digest(train_file))
        client.set_model_version_tag(COPY, fp32.version, "dataset", str(train_file))
        line = _one_error_line(
            _quantgate("evaluate", "--version", str(int8.version), "--model-name", COPY, "--latency-runs", "5")
        )
        assert "was attested without a dataset_digest" in line, line
        assert "eval_evidence_signature" not in client.get_model_version(COPY, int8.version).tags
    finally:
        client.delete_model_version(COPY, int8.version)
        client.delete_model_version(COPY, fp32.version)


def test_the_signed_digest_cannot_be_re_tagged(signed, monkeypatch, tmp_path):  # noqa: F811
    """The writer sets the parent's `fp32_dataset_digest` tag to the train.csv digest too: the
    attestation no longer verifies, so nothing is measured."""
    train_file = _trusted_train_file(tmp_path, monkeypatch)
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    with (
        _tag(signed["fp32"], "dataset", str(train_file)),
        _tag(signed["fp32"], "fp32_dataset_digest", _split_digest(train_file)),
    ):
        result = _quantgate("evaluate", "--version", signed["int8"], "--model-name", COPY, "--latency-runs", "5")
    assert result.exit_code != 0, result.output
    assert "attest" in result.output and "Traceback" not in result.output, result.output
