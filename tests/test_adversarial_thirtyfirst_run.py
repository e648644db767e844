"""Issue 17, the thirty-first adversarial run, two ways a writer chose what `main` staged under a key:
A. it rewrote an old smoke-test train run's `max_epochs` and `train_limit` params in the sqlite
   file (and its public reuse tags): `main --max-epochs 3 --train-limit 0` reused the one-epoch
   model as the one asked for. Now `main` signs the digest of its train step's parameters into
   the attestation (`fp32_training_sha256`) and reuses a run only for the same ones.
B. it re-pointed a *fresh* quantise run's version tag at an older model's build while `main`
   ran; `main` gated and staged that build. Now `main` checks the version a fresh quantise run
   names as it checks a reused one: that variant, with the FP32 version just trained as parent.
Done as the run did it: the sqlite file and MLflow's API, then main's own checks."""

from __future__ import annotations

import sqlite3

import mlflow
from mlflow import MlflowClient
from test_adversarial_forged_parent import _register, _train_receipt
from test_adversarial_signed import COPY, KEY, signed  # noqa: F401

from flows.main import attest_own, attested_fp32, variant_problem

from conftest import TEST_MODEL

SMOKE = {"dataset": "news9", "model_name": "adv31-params", "max_epochs": 1, "train_limit": 96}


def test_main_does_not_reuse_a_smoke_test_whose_params_were_rewritten_in_sqlite(pipeline, tmp_path):
    """Case A. Before: the rewritten run was accepted as the three-epoch, full-data model."""
    model = SMOKE["model_name"]
    fp32 = _register(model, TEST_MODEL, pipeline["fp32"].version, tmp_path)
    client = MlflowClient()
    run_id = client.get_model_version(model, fp32).run_id
    for name, value in SMOKE.items():
        client.log_param(run_id, name, str(value))  # what the train step logged
    receipt = _train_receipt(model, fp32, tmp_path / "receipt.json")
    attest_own(model, client.get_run(run_id), receipt, KEY.encode(), SMOKE)  # main's attest
    assert attested_fp32(model, KEY.encode(), SMOKE)(client.get_run(run_id))  # the same inputs: reused

    asked = {**SMOKE, "max_epochs": 3, "train_limit": 0}
    db = mlflow.get_tracking_uri().removeprefix("sqlite:///")
    with sqlite3.connect(db) as con:  # the writer's rewrite
        for name in ("max_epochs", "train_limit"):
            con.execute("UPDATE params SET value=? WHERE run_uuid=? AND key=?", (str(asked[name]), run_id, name))
    rewritten = client.get_run(run_id)
    assert rewritten.data.params["max_epochs"] == "3"
    assert not attested_fp32(model, KEY.encode(), asked)(rewritten)


def test_a_quantise_run_whose_version_tag_was_repointed_is_not_main_s_variant(signed):  # noqa: F811
    """Case B: the run main just ran names, after the writer's re-point, the older model's int8.
    Before: main evaluated, gated and staged it. Now its check names the mismatch."""
    client = MlflowClient()
    new_fp32 = str(client.copy_model_version(f"models:/{COPY}/{signed['fp32']}", COPY).version)
    params = {"source": new_fp32, "model_name": COPY, "recipe": "onnx-int8-dynamic", "preset": "avx2"}
    with mlflow.start_run(run_name="adv31-fresh-quantise") as run:
        mlflow.log_params(params)
    client.set_tag(run.info.run_id, "quantgate.version.onnx-int8-dynamic", signed["int8"])  # re-pointed
    problem = variant_problem(COPY, new_fp32, "onnx-int8-dynamic", params, client.get_run(run.info.run_id))
    assert problem == f"v{signed['int8']} is not a onnx-int8-dynamic of v{new_fp32}", problem
