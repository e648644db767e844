"""The evidence key and its signatures (pure functions, no MLflow)."""

from __future__ import annotations

import pytest

from quantgate.contract import HOST_KEYS
from quantgate.evidence_signing import (
    EVALUATION,
    FP32_ATTESTATION,
    GATE_PASS,
    EvidenceKeyError,
    attestation_payload,
    attestation_problem,
    evaluation_payload,
    key_id,
    load_key,
    sign,
    signature_problem,
)

KEY = b"0123456789abcdef0123456789abcdef"
VERSION_TAGS = {"manifest_sha256": "m" * 64, "model_sha256": "d" * 64, "device": "cpu", "parent_version": "1"}
RUN_TAGS = {
    "quantgate.metrics_sha256": "a" * 64,
    "quantgate.predictions_sha256": "p" * 64,
    "quantgate.test_data_digest": "t" * 64,
    "host.cpu": "EPYC",
}
PARENT = {"model_sha256": "f" * 64, "manifest_sha256": "g" * 64, "fp32_attestation": "hmac-sha256:x:y"}


def test_no_key_configured_means_none():
    assert load_key({}) is None
    assert load_key({"QUANTGATE_EVIDENCE_KEY": "  "}) is None


def test_the_key_comes_from_the_variable_or_a_file(tmp_path):
    assert load_key({"QUANTGATE_EVIDENCE_KEY": KEY.decode() + "\n"}) == KEY
    path = tmp_path / "evidence.key"
    path.write_text(KEY.decode() + "\n")
    path.chmod(0o400)
    assert load_key({"QUANTGATE_EVIDENCE_KEY_FILE": str(path)}) == KEY


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o420])
def test_a_key_file_anyone_may_write_is_refused(tmp_path, mode):
    """The nineteenth adversarial run planted links where quantgate writes files (an evaluation's
    artifacts, compare's plot) and overwrote the key file with content it could predict."""
    path = tmp_path / "evidence.key"
    path.write_text(KEY.decode())
    path.chmod(mode)
    with pytest.raises(EvidenceKeyError, match="is writable .*chmod 400"):
        load_key({"QUANTGATE_EVIDENCE_KEY_FILE": str(path)})


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"QUANTGATE_EVIDENCE_KEY": "short"}, "has 5 characters; use at least 32"),
        ({"QUANTGATE_EVIDENCE_KEY_FILE": "/nonexistent/evidence.key"}, "cannot read the evidence key"),
    ],
)
def test_a_weak_or_unreadable_key_is_a_user_error(environ, message):
    with pytest.raises(EvidenceKeyError, match=message):
        load_key(environ)


def test_a_signature_verifies_only_for_its_payload_kind_and_key():
    payload = evaluation_payload("m", "2", "run1", VERSION_TAGS, RUN_TAGS, PARENT, identity="id2")
    signature = sign(KEY, EVALUATION, payload)
    assert signature.startswith(f"hmac-sha256:{key_id(KEY)}:")
    assert signature_problem(KEY, EVALUATION, payload, signature) is None
    assert signature_problem(KEY, GATE_PASS, payload, signature) is not None  # another kind of statement
    other = KEY[::-1]
    assert "signed with key" in signature_problem(other, EVALUATION, payload, signature)
    assert signature_problem(KEY, EVALUATION, payload, None) == "it is not signed"
    assert "not an hmac-sha256 signature" in signature_problem(KEY, EVALUATION, payload, "sha256:abc")


@pytest.mark.parametrize(
    "where, key",
    [
        ("version", "manifest_sha256"),
        ("version", "model_sha256"),
        ("version", "device"),
        ("version", "parent_version"),
        ("run", "quantgate.metrics_sha256"),
        ("run", "quantgate.predictions_sha256"),
        ("run", "quantgate.test_data_digest"),  # the data it measured (the thirty-second run's idea)
        ("run", "host.cpu"),
        ("run", "threads"),
    ],
)
def test_every_field_the_gate_relies_on_is_covered(where, key):
    signature = sign(
        KEY, EVALUATION, evaluation_payload("m", "2", "run1", VERSION_TAGS, RUN_TAGS, PARENT, identity="id2")
    )
    version_tags, run_tags = dict(VERSION_TAGS), dict(RUN_TAGS)
    (version_tags if where == "version" else run_tags)[key] = "edited"
    payload = evaluation_payload("m", "2", "run1", version_tags, run_tags, PARENT, identity="id2")
    assert "edited after it was signed" in signature_problem(KEY, EVALUATION, payload, signature)


def test_name_version_run_and_parent_files_and_attestation_are_covered():
    signature = sign(
        KEY, EVALUATION, evaluation_payload("m", "2", "run1", VERSION_TAGS, RUN_TAGS, PARENT, identity="id2")
    )
    for name, version, run_id in (("n", "2", "run1"), ("m", "3", "run1"), ("m", "2", "run2")):
        payload = evaluation_payload(name, version, run_id, VERSION_TAGS, RUN_TAGS, PARENT, identity="id2")
        assert signature_problem(KEY, EVALUATION, payload, signature) is not None
    # the same name and number registered again (or a copy): another identity (the sixteenth run)
    payload = evaluation_payload("m", "2", "run1", VERSION_TAGS, RUN_TAGS, PARENT, identity="other")
    assert signature_problem(KEY, EVALUATION, payload, signature) is not None
    for edited in ({**PARENT, "model_sha256": "e" * 64}, {**PARENT, "fp32_attestation": ""}, None):
        payload = evaluation_payload("m", "2", "run1", VERSION_TAGS, RUN_TAGS, edited, identity="id2")
        assert signature_problem(KEY, EVALUATION, payload, signature) is not None
    assert set(HOST_KEYS.values()) <= {k.removeprefix("host:") for k in payload if k.startswith("host:")}


FP32_TAGS = {"variant": "fp32", "model_sha256": "d" * 64, "manifest_sha256": "m" * 64}


def test_an_attestation_vouches_for_one_version_with_these_files_under_this_key():
    tags = {**FP32_TAGS, "fp32_attestation": sign(KEY, FP32_ATTESTATION, attestation_payload("m", "1", FP32_TAGS))}
    assert attestation_problem(KEY, "m", "1", tags) is None
    assert "signed with key" in attestation_problem(KEY[::-1], "m", "1", tags)
    for name, version in (("n", "1"), ("m", "2")):  # copied onto another version or model
        assert "edited after it was signed" in attestation_problem(KEY, name, version, tags)
    for key in ("model_sha256", "manifest_sha256"):  # files rewritten, digest tags re-set
        assert "edited after it was signed" in attestation_problem(KEY, "m", "1", {**tags, key: "e" * 64})
    assert attestation_problem(KEY, "m", "1", FP32_TAGS) == "it was never attested"
    assert "a variant is never a parent" in attestation_problem(KEY, "m", "1", {**tags, "parent_version": "1"})
    assert "no model_sha256" in attestation_problem(KEY, "m", "1", {**tags, "model_sha256": ""})
    # an evaluation's signature is not an attestation, nor the other way round
    evaluation = sign(KEY, EVALUATION, attestation_payload("m", "1", FP32_TAGS))
    assert attestation_problem(KEY, "m", "1", {**FP32_TAGS, "fp32_attestation": evaluation}) is not None
