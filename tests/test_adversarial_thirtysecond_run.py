"""Issue 17, the thirty-second adversarial run: while the key holder's `main` trained a new model,
two sqlite triggers (fired by the train step's own tag write) set an old, main-attested smoke
test's `model_versions.run_id` to the fresh train run and pointed the run's version tag back at
it. `attest_own` took "registered by this run and attested" as proof and skipped the step's
receipt, so main reused the smoke test's int8 and its signed evaluation, and staged it. Now a
fresh step's receipt is always checked, and a run without one (a reused run) must pass main's
full reuse check. Done as the run did it: the sqlite file and MLflow's API, then main's attest."""

from __future__ import annotations

import sqlite3

import mlflow
import pytest
from mlflow import MlflowClient
from test_adversarial_forged_parent import _register, _train_receipt
from test_adversarial_signed import KEY

from flows.main import attest_own
from quantgate.model_files import ModelIntegrityError

from conftest import TEST_MODEL

MODEL = "adv32-stand-in"
SMOKE = {"dataset": "news9", "model_name": MODEL, "max_epochs": 1, "train_limit": 96}


def test_a_fresh_train_run_re_pointed_at_an_attested_smoke_test_is_refused(pipeline, tmp_path):
    client = MlflowClient()
    old = _register(MODEL, TEST_MODEL, pipeline["fp32"].version, tmp_path / "old")  # the smoke test
    old_run = client.get_model_version(MODEL, old).run_id
    old_receipt = _train_receipt(MODEL, old, tmp_path / "old.json")  # tags the run, as the step does
    attest_own(MODEL, client.get_run(old_run), old_receipt, KEY.encode(), SMOKE)

    new = _register(MODEL, TEST_MODEL, pipeline["fp32"].version, tmp_path / "new")  # what main trains now
    new_run = client.get_model_version(MODEL, new).run_id
    receipt = _train_receipt(MODEL, new, tmp_path / "new.json")  # the fresh step's receipt
    db = mlflow.get_tracking_uri().removeprefix("sqlite:///")
    with sqlite3.connect(db) as con:  # what the writer's triggers did
        con.execute("UPDATE model_versions SET run_id=? WHERE name=? AND version=?", (new_run, MODEL, int(old)))
    client.set_tag(new_run, "quantgate.version.fp32", old)

    asked = {**SMOKE, "max_epochs": 3, "train_limit": 0}
    with pytest.raises(ModelIntegrityError, match="not attesting") as refused:
        attest_own(MODEL, client.get_run(new_run), receipt, KEY.encode(), asked)
    assert f"the train step registered v{new}" in str(refused.value), str(refused.value)
