"""Issue 17, the thirty-sixth adversarial run (on f712d01), two holes:

- ``evaluate`` compared the stored predictions table with the one it wrote by parsed values
  (``json``), while the gate reads it with pandas: an id written as ``0.99999999999999999`` is 1
  to the one and 0 to the other, so the key signed a table the gate judged differently. Now the
  stored bytes must be the bytes written.
- ``quantise`` calibrated a static build on whatever data the attested parent's ``dataset`` tag
  named at that moment (the writer re-pointed it at news9 and back). With a key, the tag's data
  must now be the data the parent was attested with.
"""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from test_adversarial import _quantgate
from test_adversarial_signed import COPY, KEY, signed  # noqa: F401

from evaluators.plugin import log_predictions_table
from flows.evaluate import stored_table_sha256
from quantgate.model_files import ModelIntegrityError


def test_a_table_the_gate_would_parse_otherwise_is_not_signed(store, tmp_path):
    """Case A: the watcher rewrote one id as 0.99999999999999999 (json: 1.0 == 1; pandas: 0)."""
    client = MlflowClient()
    table = pd.DataFrame({"label_id": [0, 1], "pred_id": [0, 1], "parent_pred_id": [0, 1]})
    with mlflow.start_run(run_name="adv36-table") as run:
        written = log_predictions_table(client, run.info.run_id, table, tmp_path)
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    forged = written.replace("[1,1,1]", "[1,0.99999999999999999,1]")
    assert forged != written
    (artifact / "eval_predictions.json").write_text(forged)
    client.log_artifact(run.info.run_id, str(artifact / "eval_predictions.json"))
    with pytest.raises(ModelIntegrityError, match="is not the table it wrote"):
        stored_table_sha256(run.info.run_id, written)


def test_with_a_key_a_static_build_calibrates_only_on_the_parents_attested_data(signed, monkeypatch):  # noqa: F811
    """Case B: the attested parent's dataset tag re-pointed (news9 -> support3 here) while the
    key holder ran quantise-onnx --recipe onnx-int8-static; it calibrated on the writer's pick."""
    client = MlflowClient()
    before = client.get_model_version(COPY, signed["fp32"]).tags.get("dataset", "news9")
    client.set_model_version_tag(COPY, signed["fp32"], "dataset", "support3")
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    try:
        args = ["--source", signed["fp32"], "--model-name", COPY, "--recipe", "onnx-int8-static"]
        refused = _quantgate("quantise-onnx", *args)
    finally:
        client.set_model_version_tag(COPY, signed["fp32"], "dataset", before)
    assert refused.exit_code == 2, refused.output
    assert "('support3', which its tags name)" in refused.output, refused.output
    assert "is not the data it was attested with" in refused.output, refused.output
