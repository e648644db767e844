"""Issue 17, the two promotions the third adversarial run still got (B8, B9): the attacker edits
the evidence *and* recomputes every digest tag the gate checks. Those digests live in the same
store, so only a key the store does not hold can tell; with ``QUANTGATE_EVIDENCE_KEY`` set,
``evaluate`` signs its evidence and ``promote`` signs the pass that ``serve`` requires.

Each case is tried the way the adversary did it: the artifact store's files, MLflow's public
API and the `quantgate` command line. Every test here failed on the code before signing (the
key was ignored and the edited evidence promoted).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from test_adversarial import LENIENT, RELATIVE, _fresh, _holder, _one_error_line, _quantgate, _yaml, trivial  # noqa: F401
from test_adversarial_second_run import _stored_artifact

from conftest import TEST_MODEL

KEY = "k" * 16 + "0123456789abcdef0123"
COPY = "adv3-signed"


@pytest.fixture(scope="module")
def signed(pipeline, tmp_path_factory):
    """The pipeline's FP32 and INT8 versions copied into their own registered model (so the
    shared versions stay as other tests expect them), the INT8 copy evaluated with the key set."""
    client = MlflowClient()
    fp32, int8 = pipeline["fp32"], pipeline["int8"]
    copies = {}
    for mv in (fp32, int8):
        copy = client.copy_model_version(f"models:/{TEST_MODEL}/{mv.version}", COPY)
        source = client.get_model_version(TEST_MODEL, mv.version).tags
        for key, value in source.items():
            if not key.startswith(("eval_", "gate.")):
                client.set_model_version_tag(COPY, copy.version, key, value)
        copies[mv.version] = str(copy.version)
    client.set_model_version_tag(COPY, copies[int8.version], "parent_version", copies[fp32.version])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
        result = _quantgate("evaluate", "--version", copies[int8.version], "--model-name", COPY, "--latency-runs", "5")
    assert result.exit_code == 0, result.output
    thresholds = tmp_path_factory.mktemp("signed") / "relative.yaml"
    thresholds.write_text(json.dumps(RELATIVE))  # JSON is YAML
    return {"fp32": copies[fp32.version], "int8": copies[int8.version], "thresholds": str(thresholds)}


def _promote(version: str, thresholds: str, alias: str):
    return _quantgate(
        "promote", "--version", version, "--model-name", COPY, "--thresholds", thresholds, "--alias", alias
    )


def _rewrite_digest_tags(run_id: str, version: str, run_tag: str, version_tag: str, value: str) -> None:
    """What the adversary did after editing the evidence: recompute its digest and write it on
    the evaluation run and on the version, as evaluate would have."""
    client = MlflowClient()
    client.set_tag(run_id, run_tag, value)
    client.set_model_version_tag(COPY, version, version_tag, value)


def test_the_signed_evaluation_passes_and_its_signature_is_on_the_run_and_the_version(signed, monkeypatch):
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    tags = MlflowClient().get_model_version(COPY, signed["int8"]).tags
    run_tags = MlflowClient().get_run(tags["eval_run_id"]).data.tags
    assert tags["eval_evidence_signature"].startswith("hmac-sha256:")
    assert run_tags["quantgate.evidence_signature"] == tags["eval_evidence_signature"]
    result = _promote(signed["int8"], signed["thresholds"], "adv3-ok")
    assert result.exit_code == 0, result.output
    assert _holder(COPY, "adv3-ok") == signed["int8"]
    assert MlflowClient().get_model_version(COPY, signed["int8"]).tags["gate.passed.adv3-ok.signature"]


def test_b8_predictions_edited_and_both_digest_tags_recomputed_are_refused(signed, monkeypatch):
    """Before: rows of eval_predictions.json repeated, its SHA-256 recomputed and written on the
    run and the version: the narrowed F1-drop interval passed and the version was promoted."""
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client = MlflowClient()
    tags = client.get_model_version(COPY, signed["int8"]).tags
    run_id = tags["eval_run_id"]
    path = _stored_artifact(run_id, "eval_predictions.json")
    original = path.read_bytes()
    table = json.loads(original)
    table["data"] = table["data"] * 40
    path.write_text(json.dumps(table))
    forged = hashlib.sha256(path.read_bytes()).hexdigest()
    _rewrite_digest_tags(run_id, signed["int8"], "quantgate.predictions_sha256", "eval_predictions_sha256", forged)
    try:
        result = _promote(signed["int8"], signed["thresholds"], "adv3-b8")
        assert result.exit_code == 1, result.output
        assert "not vouched for by the evidence key" in result.output and "edited after it was signed" in result.output
        assert _holder(COPY, "adv3-b8") is None
    finally:
        path.write_bytes(original)
        _rewrite_digest_tags(
            run_id,
            signed["int8"],
            "quantgate.predictions_sha256",
            "eval_predictions_sha256",
            tags["eval_predictions_sha256"],
        )
    again = _promote(signed["int8"], signed["thresholds"], "adv3-b8")
    assert again.exit_code == 0, again.output  # the refusal was about the edit, nothing else


def test_b9_a_metric_relogged_and_both_metric_digests_recomputed_are_refused(signed, monkeypatch, tmp_path):
    """Before: `latency_p95_ms` re-logged far below the limit, the metrics digest recomputed
    (as quantgate.model_files.metrics_digest defines it) and written on run and version: promoted."""
    from quantgate.model_files import metrics_digest

    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client = MlflowClient()
    tags = client.get_model_version(COPY, signed["int8"]).tags
    run_id = tags["eval_run_id"]
    real_p95 = client.get_run(run_id).data.metrics["latency_p95_ms"]
    strict = _yaml(tmp_path, {**RELATIVE, "max_latency_p95_ms": real_p95 / 10})
    client.log_metric(run_id, "latency_p95_ms", real_p95 / 100)
    forged = metrics_digest(client.get_run(run_id).data.metrics)
    _rewrite_digest_tags(run_id, signed["int8"], "quantgate.metrics_sha256", "eval_metrics_sha256", forged)
    try:
        result = _promote(signed["int8"], strict, "adv3-b9")
        assert result.exit_code == 1, result.output
        assert "not vouched for by the evidence key" in result.output
        assert _holder(COPY, "adv3-b9") is None
    finally:  # the real figure logged again (the latest value counts) and the real digests back
        client.log_metric(run_id, "latency_p95_ms", real_p95)
        _rewrite_digest_tags(
            run_id, signed["int8"], "quantgate.metrics_sha256", "eval_metrics_sha256", tags["eval_metrics_sha256"]
        )
    assert _promote(signed["int8"], signed["thresholds"], "adv3-b9").exit_code == 0  # only the edit was refused


def test_a_fabricated_or_unsigned_evaluation_is_refused_when_the_gate_has_a_key(trivial, monkeypatch, tmp_path):  # noqa: F811
    """An evaluation run written by hand (or by an evaluate without the key) carries every
    digest tag, correctly computed; the gate with a key refuses it."""
    version = _fresh("adv3-unsigned", trivial)
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    result = _quantgate(
        "promote", "--version", version, "--model-name", "adv3-unsigned", "--thresholds", _yaml(tmp_path, LENIENT)
    )
    assert result.exit_code == 1, result.output
    assert "not vouched for by the evidence key: it is not signed" in result.output
    assert _holder("adv3-unsigned", "staging") is None


def test_a_signature_made_with_another_key_is_refused(signed, monkeypatch):
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY.upper())
    result = _promote(signed["int8"], signed["thresholds"], "adv3-other")
    assert result.exit_code == 1, result.output
    assert "was signed with key" in result.output and "not with this machine's key" in result.output


def test_a_copied_gate_pass_does_not_let_a_hand_set_alias_be_served(signed, monkeypatch):
    """A gate pass and its signature copied from the version that earned them onto the FP32
    parent, then the alias set by hand: serve and the next gate refuse it, since the signature
    binds the pass to the version and its files."""
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client = MlflowClient()
    assert _promote(signed["int8"], signed["thresholds"], "adv3-copy").exit_code == 0
    earned = client.get_model_version(COPY, signed["int8"]).tags
    for tag in ("gate.passed.adv3-copy", "gate.passed.adv3-copy.signature"):
        client.set_model_version_tag(COPY, signed["fp32"], tag, earned[tag])
    client.set_registered_model_alias(COPY, "adv3-copy", signed["fp32"])
    served = _quantgate("serve", "--model", f"models:/{COPY}@adv3-copy", "--port", "1")
    line = _one_error_line(served)
    assert "not vouched for by the evidence key" in line and "edited after it was signed" in line
    regate = _promote(signed["int8"], signed["thresholds"], "adv3-copy")
    assert _holder(COPY, "adv3-copy") == signed["int8"], regate.output  # the gate moved it back to what passed


def test_a_short_or_unreadable_key_is_one_line_and_changes_nothing(signed, monkeypatch, tmp_path):
    before = MlflowClient().get_model_version(COPY, signed["int8"]).tags
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", "short")
    line = _one_error_line(_promote(signed["int8"], signed["thresholds"], "adv3-short"))
    assert "has 5 characters; use at least 32" in line
    monkeypatch.delenv("QUANTGATE_EVIDENCE_KEY")
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY_FILE", str(tmp_path / "missing.key"))
    line = _one_error_line(_quantgate("evaluate", "--version", signed["int8"], "--model-name", COPY))
    assert "cannot read the evidence key from QUANTGATE_EVIDENCE_KEY_FILE" in line
    assert MlflowClient().get_model_version(COPY, signed["int8"]).tags == before
    assert Path(tmp_path / "missing.key").exists() is False
