"""Issue 17, the independent adversarial runs after the fixes: two holes the second run found in
evidence the gate trusted (the predictions table, the parent's files), and a bad alias name the
third run found; each tried again the way the adversary did it, through the artifact store's
files and the `quantgate` command line. Every test failed on the code before its fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

from mlflow import MlflowClient
from test_adversarial import LENIENT, _fresh, _holder, _one_error_line, _quantgate, _stored_root, _yaml, trivial  # noqa: F401

from conftest import TEST_MODEL


def _stored_artifact(run_id: str, name: str) -> Path:
    """A run artifact's file in the artifact store itself (not a downloaded copy)."""
    location = MlflowClient().get_run(run_id).info.artifact_uri
    root = Path(unquote(urlparse(location).path)) if location.startswith("file:") else Path(location)
    return root / name


def test_rows_repeated_in_the_predictions_table_after_evaluation_are_refused(trivial, tmp_path):  # noqa: F811
    """Before: repeating every row of eval_predictions.json 40 times left the F1-drop point
    estimate as it was but narrowed its bootstrap interval, and a version the gate had just
    rejected on `max_macro_f1_drop_points` was promoted."""
    model = "adv2-preds"
    version = _fresh(model, trivial)
    thresholds = _yaml(tmp_path, {**LENIENT, "max_macro_f1_drop_points": 50.0})
    path = _stored_artifact(
        MlflowClient().get_model_version(model, version).tags["eval_run_id"], "eval_predictions.json"
    )
    original = path.read_bytes()
    table = json.loads(original)
    table["data"] = table["data"] * 40
    path.write_text(json.dumps(table))
    try:
        result = _quantgate("promote", "--version", version, "--model-name", model, "--thresholds", thresholds)
        assert result.exit_code == 1, result.output
        assert "eval_predictions.json changed after evaluation" in result.output
        assert _holder(model, "staging") is None
    finally:
        path.write_bytes(original)
    again = _quantgate("promote", "--version", version, "--model-name", model, "--thresholds", thresholds)
    assert again.exit_code == 0, again.output  # the refusal was about the edit, nothing else
    assert _holder(model, "staging") == version


def test_evaluate_refuses_a_parent_whose_files_changed_in_the_store(pipeline):
    """Before: the evaluator loaded the FP32 parent straight from the store without checking its
    registered digest; slowing the parent's serving_model.py during a variant's evaluation (and
    restoring it after) inflated the speed-up and left no trace."""
    client = MlflowClient()
    fp32, int8 = pipeline["fp32"].version, pipeline["int8"].version
    path = _stored_root(TEST_MODEL, fp32) / "serving_model.py"
    original = path.read_bytes()
    path.write_bytes(original + b"\nimport time  # slowed by an adversary\n")
    before = client.get_model_version(TEST_MODEL, int8).tags
    try:
        result = _quantgate("evaluate", "--version", int8, "--model-name", TEST_MODEL, "--latency-runs", "5")
        line = _one_error_line(result)
        assert f"refusing to evaluate with {TEST_MODEL} v{fp32}" in line and "changed since registration" in line
        after = client.get_model_version(TEST_MODEL, int8).tags
        # fail closed: the attempt is recorded, and the gate refuses the version until it is evaluated again
        assert after["eval_status"].startswith("failed: ModelIntegrityError")
        assert {k: v for k, v in after.items() if k != "eval_status"} == {
            k: v for k, v in before.items() if k != "eval_status"
        }
    finally:
        path.write_bytes(original)
        client.set_model_version_tag(TEST_MODEL, int8, "eval_status", before["eval_status"])  # for later tests


def test_an_alias_mlflow_would_refuse_is_a_usage_error_before_anything_is_written(trivial, tmp_path):  # noqa: F811
    """Before: `--alias 'bad alias!'` ran the gate, wrote `gate.alias` and `gate.time` on the
    version, then ended in a 43-line traceback when MLflow refused the tag `gate.passed.bad alias!`."""
    model = "adv2-alias"
    version = _fresh(model, trivial)
    before = MlflowClient().get_model_version(model, version).tags
    for alias in ("bad alias!", "latest", "v3"):
        result = _quantgate("promote", "--version", version, "--model-name", model, "--alias", alias)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert "is not a usable alias" in result.output
    assert MlflowClient().get_model_version(model, version).tags == before


def test_serve_refuses_an_alias_set_by_hand(trivial, tmp_path):  # noqa: F811
    """Before: `quantgate serve --model models:/m@staging` served whatever version held the alias
    once its files matched, even one that never passed the gate (third run's observation)."""
    model = "adv2-serve"
    version = _fresh(model, trivial)
    MlflowClient().set_registered_model_alias(model, "staging", version)  # by hand, no gate
    result = _quantgate("serve", "--model", f"models:/{model}@staging", "--port", "1")
    line = _one_error_line(result)
    assert "without a recorded gate pass" in line and f"models:/{model}/{version}" in line
