"""Issue 17: the holes an adversarial run found, each tried again the way the adversary did it -
through MLflow's public API, the artifact store's files and the `quantgate` command line.

Every test here failed on the code before issue 17 (the docstrings say what happened then).
The webhook receiver's cases (9) are in test_adversarial_receiver.py.
Cheap versions (a trivial pyfunc with a real evaluation run, tests/promote_helpers.py) stand in
for the gate's inputs wherever the model itself does not matter; the pipeline's real versions
are used where it does (the pyfunc code, MLmodel, meta.json).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient

from flows.cli import cli
from quantgate.tracking import logged_model_id

from conftest import TEST_MODEL, free_port
from promote_helpers import log_trivial_model, register_evaluated_version

LENIENT = {"min_macro_f1": 0.5, "max_latency_p95_ms": 50.0}
RELATIVE = {"max_macro_f1_drop_points": 5.0, "max_worst_class_f1_drop_points": 15.0, "min_top1_agreement": 0.9}


def _yaml(tmp_path: Path, values: dict | str, name: str = "t") -> str:
    path = tmp_path / f"{name}-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(values if isinstance(values, str) else yaml.safe_dump(values))
    return str(path)


def _quantgate(*args: str):
    return CliRunner().invoke(cli, list(args))


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert lines[-1].startswith("error: "), result.output
    return lines[-1]


def _gate(model: str, version: str, thresholds: str, alias: str, *more: str):
    """The key holder's ``quantgate promote --version`` of ``model`` for ``alias``."""
    return _quantgate(
        "promote", "--version", version, "--model-name", model, "--thresholds", thresholds, "--alias", alias, *more
    )


def _holder(model: str, alias: str) -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(model, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


@pytest.fixture(scope="module")
def trivial(store):
    return log_trivial_model("adversary")


def _fresh(model: str, trivial, **kw) -> str:
    kw.setdefault("latency_p95_ms", 2.0)
    return register_evaluated_version(model, *trivial, **kw)


def _stored_root(model: str, version: str) -> Path:
    """The registered version's folder in the artifact store (the files themselves, not a copy)."""
    mv = MlflowClient().get_model_version(model, version)
    location = MlflowClient().get_logged_model(logged_model_id(mv)).artifact_location
    return Path(unquote(urlparse(location).path)) if location.startswith("file:") else Path(location)


# ------------------------------------------------------------------ 1. the manifest covers every file
@pytest.mark.parametrize("edit", ["serving_model.py", "MLmodel", "artifacts/meta.json"])
def test_1_editing_the_pyfunc_code_mlmodel_or_meta_after_evaluation_is_refused(pipeline, tmp_path, edit):
    """Before: `serving_model.py` and `MLmodel` were not covered at all, and meta.json (which
    holds the manifest) could be rewritten freely - e.g. its max_length - and still passed."""
    int8 = pipeline["int8"]
    path = _stored_root(TEST_MODEL, int8.version) / edit
    original = path.read_bytes()
    if edit == "serving_model.py":  # every label shifts by one
        changed = original.replace(
            b'self.labels = read_label_map(arts["label_map"])',
            b'self.labels = read_label_map(arts["label_map"]); self.labels = self.labels[1:] + self.labels[:1]',
        )
        assert changed != original
    elif edit == "MLmodel":
        changed = original + b"\n# edited after evaluation\n"
    else:
        meta = json.loads(original)
        meta["max_length"] = 4
        changed = json.dumps(meta).encode()
    path.write_bytes(changed)
    try:
        result = _quantgate(
            "promote",
            "--version",
            int8.version,
            "--model-name",
            TEST_MODEL,
            "--thresholds",
            _yaml(tmp_path, RELATIVE),
            "--alias",
            "adv-files",
        )
        assert result.exit_code == 1, result.output
        assert "REJECTED" in result.output and "model files changed since registration" in result.output
        assert _holder(TEST_MODEL, "adv-files") is None
        served = _quantgate("serve", "--model", f"models:/{TEST_MODEL}/{int8.version}", "--port", str(free_port()))
        assert "refusing to serve" in _one_error_line(served) and "changed since registration" in served.output
    finally:
        path.write_bytes(original)
    again = _quantgate(
        "promote",
        "--version",
        int8.version,
        "--model-name",
        TEST_MODEL,
        "--thresholds",
        _yaml(tmp_path, RELATIVE),
        "--alias",
        "adv-files",
    )
    assert again.exit_code == 0, again.output  # the refusal was about the edit, nothing else
    assert _holder(TEST_MODEL, "adv-files") == str(int8.version)


def test_1_the_digest_is_recorded_outside_the_model_and_old_versions_are_refused(pipeline, trivial, tmp_path):
    client = MlflowClient()
    int8 = client.get_model_version(TEST_MODEL, pipeline["int8"].version)
    digest = int8.tags["model_sha256"]
    assert int8.tags["eval_model_sha256"] == digest
    assert client.get_run(int8.tags["eval_run_id"]).data.tags["model_sha256"] == digest
    recorded = mlflow.artifacts.load_dict(f"runs:/{int8.run_id}/quantgate/model_manifest_v{int8.version}.json")
    assert recorded["sha256"] == digest and {"MLmodel", "serving_model.py", "artifacts/meta.json"} <= set(
        recorded["files"]
    )
    # a version registered before issue 17 has no whole-model digest: refused, with what to do
    old = _fresh("adv-old", trivial)
    client.delete_model_version_tag("adv-old", old, "model_sha256")
    result = _quantgate(
        "promote", "--version", old, "--model-name", "adv-old", "--thresholds", _yaml(tmp_path, LENIENT)
    )
    assert result.exit_code == 1 and "re-register it" in result.output
    assert _holder("adv-old", "staging") is None


# ------------------------------------------------------------------ 2. duplicate keys in the thresholds
def test_2_a_duplicate_thresholds_key_is_refused_naming_it_and_the_line(trivial, tmp_path):
    """Before: the second `max_size_mb` silently replaced the first."""
    version = _fresh("adv-dup", trivial)
    text = "max_size_mb: 0.0001\nmin_macro_f1: 0.5\nmax_size_mb: 100\n"
    result = _quantgate(
        "promote", "--version", version, "--model-name", "adv-dup", "--thresholds", _yaml(tmp_path, text)
    )
    line = _one_error_line(result)
    assert "line 3: duplicate key 'max_size_mb' (first given on line 1)" in line
    assert _holder("adv-dup", "staging") is None


# ------------------------------------------------------------------ 3. the FP32 parent
def test_3_the_fp32_parent_is_not_promoted_by_version_unless_allowed(trivial, tmp_path):
    """Before: `promote --version <parent>` with absolute limits promoted the parent itself."""
    version = _fresh("adv-fp32", trivial)
    client = MlflowClient()
    client.set_model_version_tag("adv-fp32", version, "variant", "fp32")
    client.delete_model_version_tag("adv-fp32", version, "parent_version")
    result = _quantgate(
        "promote", "--version", version, "--model-name", "adv-fp32", "--thresholds", _yaml(tmp_path, LENIENT)
    )
    assert "not a promotion candidate" in _one_error_line(result) and "--allow-fp32" in result.output
    assert _holder("adv-fp32", "staging") is None
    allowed = _quantgate(
        "promote",
        "--version",
        version,
        "--model-name",
        "adv-fp32",
        "--thresholds",
        _yaml(tmp_path, {"min_macro_f1": 0.5, "max_latency_p95_ms": 50.0}),
        "--allow-fp32",
    )
    assert allowed.exit_code == 0, allowed.output
    assert _holder("adv-fp32", "staging") == version


# ------------------------------------------------------------------ 4. deleted evaluation runs
def test_4_a_deleted_evaluation_run_does_not_count(trivial, tmp_path):
    version = _fresh("adv-deleted", trivial)
    client = MlflowClient()
    client.delete_run(client.get_model_version("adv-deleted", version).tags["eval_run_id"])
    result = _quantgate(
        "promote", "--version", version, "--model-name", "adv-deleted", "--thresholds", _yaml(tmp_path, LENIENT)
    )
    assert result.exit_code == 1 and "is deleted, not active" in result.output
    assert _holder("adv-deleted", "staging") is None


# ------------------------------------------------------------------ 5. figures re-logged by hand
def test_5_a_metric_relogged_on_the_evaluation_run_is_refused(trivial, tmp_path):
    """Before: `size_mb`/latency re-logged by hand on the evaluation run were believed."""
    version = _fresh("adv-relog", trivial, latency_p95_ms=20.0)
    strict = _yaml(tmp_path, {"min_macro_f1": 0.5, "max_latency_p95_ms": 10.0})
    client = MlflowClient()
    client.log_metric(client.get_model_version("adv-relog", version).tags["eval_run_id"], "latency_p95_ms", 1.0)
    result = _quantgate("promote", "--version", version, "--model-name", "adv-relog", "--thresholds", strict)
    assert result.exit_code == 1 and "metrics changed after evaluation" in result.output
    assert _holder("adv-relog", "staging") is None


def test_5_the_size_is_recomputed_from_the_files_not_taken_from_the_run(trivial, tmp_path):
    # the trivial model's weights are 256 bytes (0.000256 MB); its evaluation claims 0.00001 MB
    version = _fresh("adv-size", trivial, size_mb=0.00001)
    result = _quantgate(
        "promote",
        "--version",
        version,
        "--model-name",
        "adv-size",
        "--thresholds",
        _yaml(tmp_path, {"max_size_mb": 0.0001}),
    )
    assert result.exit_code == 1 and "FAIL: size_mb = 0.000256" in result.output, result.output
    assert _holder("adv-size", "staging") is None


# ------------------------------------------------------------------ 6. a hand-set alias
@pytest.mark.parametrize("intruder", ["rejected", "never-evaluated"])
def test_6_a_hand_set_alias_is_an_anomaly_and_nothing_moves(trivial, tmp_path, intruder):
    """Before: the next gate's "repair" moved the hand-picked version into Staging and archived
    the version that had passed."""
    model = f"adv-alias-{intruder}"
    client = MlflowClient()
    good = _fresh(model, trivial)
    assert (
        _quantgate(
            "promote", "--version", good, "--model-name", model, "--thresholds", _yaml(tmp_path, LENIENT)
        ).exit_code
        == 0
    )
    strict = _yaml(tmp_path, {"min_macro_f1": 0.99})
    if intruder == "rejected":
        bad = _fresh(model, trivial)
        assert _quantgate("promote", "--version", bad, "--model-name", model, "--thresholds", strict).exit_code == 1
    else:
        bad = str(mlflow.register_model(trivial[0], model).version)
    client.set_registered_model_alias(model, "staging", bad)  # by hand
    other = _fresh(model, trivial)
    result = _quantgate("promote", "--version", other, "--model-name", model, "--thresholds", strict)
    assert result.exit_code == 1, result.output
    assert "ANOMALY" in result.output and f"v{bad}" in result.output
    assert client.get_model_version(model, good).current_stage == "Staging"  # nothing moved
    assert client.get_model_version(model, bad).current_stage == "None"
    assert _holder(model, "staging") == bad  # left for a person to look at, not repaired around


# ------------------------------------------------------------------ 7. per-target decision tags
def test_7_a_target_rejection_does_not_overwrite_the_default_gates_decision(trivial, tmp_path):
    model = "adv-target"
    version = _fresh(model, trivial)
    th = _yaml(tmp_path, {**LENIENT, "cpu": {"min_macro_f1": 0.99}})
    assert _quantgate("promote", "--version", version, "--model-name", model, "--thresholds", th).exit_code == 0
    assert (
        _quantgate(
            "promote", "--version", version, "--model-name", model, "--thresholds", th, "--target", "cpu"
        ).exit_code
        == 1
    )
    tags = MlflowClient().get_model_version(model, version).tags
    assert tags["gate.decision"] == "passed" and tags["gate.alias"] == "staging"
    assert tags["gate.cpu.decision"] == "rejected" and "macro_f1" in tags["gate.cpu.reasons"]
    assert _holder(model, "staging") == version and _holder(model, "staging-cpu") is None


# ------------------------------------------------------------------ 8. human text in descriptions
def test_8_human_text_above_below_and_long_survives_gates_whole(trivial, tmp_path):
    """Before: a 4,600-character note was cut to 4,178 characters, and a note above the model
    card was deleted."""
    model = "adv-desc"
    client = MlflowClient()
    version = _fresh(model, trivial)
    above = "Reviewed by Ana: do not ship before the audit. " * 98  # ~4,600 characters
    client.update_model_version(model, version, description=above)
    for thresholds in (LENIENT, {"min_macro_f1": 0.99}, LENIENT):
        _quantgate("promote", "--version", version, "--model-name", model, "--thresholds", _yaml(tmp_path, thresholds))
    desc = client.get_model_version(model, version).description
    assert desc.startswith(above) and len(desc) <= 5000
    # a person adds a line below quantgate's block; the next gate keeps both notes whole
    below = "\n\nFollow-up: audit done 2026-12-01."
    client.update_model_version(model, version, description=desc + below)
    _quantgate("promote", "--version", version, "--model-name", model, "--thresholds", _yaml(tmp_path, LENIENT))
    desc = client.get_model_version(model, version).description
    assert desc.startswith(above) and desc.endswith(below.strip())


def test_8_evaluate_keeps_a_note_written_above_the_model_card(pipeline):
    client = MlflowClient()
    version = pipeline["int8"].version
    current = client.get_model_version(TEST_MODEL, version).description
    note = "NOTE from the on-call engineer: watch the climate class.\n"
    client.update_model_version(TEST_MODEL, version, description=note + current)
    result = _quantgate("evaluate", "--version", version, "--model-name", TEST_MODEL, "--latency-runs", "5")
    assert result.exit_code == 0, result.output
    desc = client.get_model_version(TEST_MODEL, version).description
    assert desc.startswith(note.strip()) and desc.count("<!-- end quantgate model card -->") == 1


# ------------------------------------------------------------------ 10. user mistakes: one line, exit 2
@pytest.mark.parametrize("ref", ["999", "abc", "adv-errors@no-such-alias"])
def test_10_a_bad_version_or_alias_is_one_line_exit_2(trivial, ref):
    _fresh("adv-errors", trivial)
    result = _quantgate("promote", "--version", ref, "--model-name", "adv-errors")
    _one_error_line(result)


@pytest.mark.parametrize("dataset", ["missing.csv", "one-row.csv"])
def test_10_a_missing_or_one_row_dataset_is_one_line_exit_2_and_touches_nothing(trivial, tmp_path, dataset):
    """Before: a 1-row CSV ended in a traceback ("accuracy of an empty set is undefined") and
    marked the version's evaluation as failed."""
    version = _fresh("adv-data", trivial)
    (tmp_path / "one-row.csv").write_text("text,label\nRansomware gang hits city council,security\n")
    before = MlflowClient().get_model_version("adv-data", version).tags
    result = _quantgate(
        "evaluate", "--version", version, "--model-name", "adv-data", "--dataset", str(tmp_path / dataset)
    )
    assert dataset in _one_error_line(result)
    assert MlflowClient().get_model_version("adv-data", version).tags == before


# ------------------------------------------------------------------ 11a. candidates never evaluated
def test_11a_candidates_name_the_command_for_versions_never_evaluated(trivial, tmp_path):
    model = "adv-cand"
    client = MlflowClient()
    evaluated = _fresh(model, trivial)
    raw = str(mlflow.register_model(trivial[0], model).version)
    client.set_model_version_tag(model, raw, "variant", "onnx-int8-static")
    client.set_model_version_tag(model, raw, "parent_version", "1")
    result = _quantgate("promote", "--candidates", "--model-name", model, "--thresholds", _yaml(tmp_path, LENIENT))
    assert result.exit_code == 0, result.output
    assert f"quantgate evaluate --version {raw} --model-name {model}" in result.output
    assert _holder(model, "staging") == evaluated
