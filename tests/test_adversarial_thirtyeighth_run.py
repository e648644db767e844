"""Issue 17, the thirty-eighth adversarial run (on 8f19c49), case 3: a copy of a genuine variant
whose ``requirements.txt`` ended with ``-r <a file>`` passed the keyed rebuild (it compares the
model file, ``meta.json`` and ``quant_config.json``), and ``mlflow.pyfunc.load_model`` in the
keyed ``evaluate`` followed the include and logged the file's lines: with ``-r`` naming the
evidence key file, the key holder's terminal showed the key, and the webhook receiver's status
tag held it behind an exact-match redaction only. Now a keyed process loads a model only when
its environment files are quantgate's pinned requirements, and the receiver's status holds
quantgate's own error line, never a library's."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from test_adversarial import _quantgate
from test_adversarial_signed import KEY, _stored_copy_root, attested_pair

from quantgate.model_files import digest, download, model_manifest
from registry_hooks.webhooks.receiver import step_outcome

MODEL = "adv38"
SECRET = "CanarySecret0123456789abcdefABCDEF0123456789zz"


@pytest.fixture(scope="module")
def attested(pipeline):
    """The pipeline's FP32 and INT8 copied into ``adv38``, the FP32 copy attested under the key."""
    return attested_pair(pipeline, MODEL)


@pytest.mark.parametrize("line", ["-r {canary}", "this==1.0"])
def test_a_keyed_evaluate_refuses_requirements_that_read_a_file_or_import_a_name(attested, tmp_path, monkeypatch, line):
    canary = tmp_path / "canary.txt"
    canary.write_text(SECRET + "\n", encoding="utf-8")
    requirements = _stored_copy_root(attested["int8"], MODEL) / "requirements.txt"
    original = requirements.read_bytes()
    tag = MlflowClient().get_model_version(MODEL, attested["int8"]).tags["model_sha256"]
    requirements.write_bytes(original + (line.format(canary=canary) + "\n").encode())
    # what the writer does after editing files: record their digest as the registered one
    refit = digest(model_manifest(download(f"models:/{MODEL}/{attested['int8']}", tmp_path / "dl")))
    MlflowClient().set_model_version_tag(MODEL, attested["int8"], "model_sha256", refit)
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    try:
        result = _quantgate("evaluate", "--version", attested["int8"], "--model-name", MODEL, "--latency-runs", "3")
    finally:
        requirements.write_bytes(original)
        MlflowClient().set_model_version_tag(MODEL, attested["int8"], "model_sha256", tag)
    assert result.exit_code != 0, result.output
    assert "requirements.txt" in result.output and SECRET not in result.output, result.output


def test_the_receivers_status_holds_quantgates_error_line_only():
    output = (
        "WARNING mlflow.utils.requirements_utils: Detected one or more mismatches\n"
        f" - {SECRET} (current: uninstalled, required: {SECRET})\n"
        "Error: evaluation of m v6 failed: refusing to load: its files changed\n"
        f"a line after it: {SECRET}\n"
    )
    assert (
        step_outcome("flows.evaluate", 1, output)
        == "Error: evaluation of m v6 failed: refusing to load: its files changed"
    )
    assert step_outcome("flows.promote", 1, f"{SECRET}\n") == "no error line; see the receiver's log"


def _private_limits(tmp_path):
    private = tmp_path / "keyholder"
    private.mkdir(mode=0o700)
    limits = private / "strict.yaml"
    limits.write_text("max_size_mb: 50.0\n", encoding="utf-8")
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    return limits, store


def test_a_link_in_the_store_folder_to_the_key_holders_file_is_refused(tmp_path):
    """Case 1b: a convenience link in the working folder (the store's) named the key holder's
    own file; the writer re-pointed it at lenient limits before the real gate."""
    from registry_hooks.gate.thresholds import ThresholdError, check_unreplaceable

    limits, store = _private_limits(tmp_path)
    link = store / "kh_gate.yaml"
    link.symlink_to(limits)
    with pytest.raises(ThresholdError, match="the tracking store's folder"):
        check_unreplaceable(link, f"sqlite:///{store}/mlflow.db")
    check_unreplaceable(limits, f"sqlite:///{store}/mlflow.db")  # the file itself, named directly


def test_a_database_moved_behind_a_link_still_makes_its_named_folder_the_stores(tmp_path):
    """Case 1a: the writer moved mlflow.db into a subfolder and left a link in its place; the
    store's folder was taken to be the subfolder, and a thresholds file beside the link passed."""
    from registry_hooks.gate.thresholds import ThresholdError, check_unreplaceable

    _, store = _private_limits(tmp_path)
    (store / "inner").mkdir()
    (store / "inner" / "mlflow.db").write_bytes(b"")
    (store / "mlflow.db").symlink_to(store / "inner" / "mlflow.db")
    beside = store / "kh_strict.yaml"
    beside.write_text("max_size_mb: 50.0\n", encoding="utf-8")
    with pytest.raises(ThresholdError, match="the tracking store's folder"):
        check_unreplaceable(beside, f"sqlite:///{store}/mlflow.db")
