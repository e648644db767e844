"""The evidence key and its signatures (pure functions, no MLflow)."""

from __future__ import annotations

import pytest

from quantgate.contract import HOST_KEYS
from quantgate.evidence_signing import (
    EVALUATION,
    GATE_PASS,
    EvidenceKeyError,
    evaluation_payload,
    key_id,
    load_key,
    sign,
    signature_problem,
)

KEY = b"0123456789abcdef0123456789abcdef"
VERSION_TAGS = {"manifest_sha256": "m" * 64, "model_sha256": "d" * 64, "device": "cpu", "parent_version": "1"}
RUN_TAGS = {"quantgate.metrics_sha256": "a" * 64, "quantgate.predictions_sha256": "p" * 64, "host.cpu": "EPYC"}


def test_no_key_configured_means_none():
    assert load_key({}) is None
    assert load_key({"QUANTGATE_EVIDENCE_KEY": "  "}) is None


def test_the_key_comes_from_the_variable_or_a_file(tmp_path):
    assert load_key({"QUANTGATE_EVIDENCE_KEY": KEY.decode() + "\n"}) == KEY
    path = tmp_path / "evidence.key"
    path.write_text(KEY.decode() + "\n")
    assert load_key({"QUANTGATE_EVIDENCE_KEY_FILE": str(path)}) == KEY


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
    payload = evaluation_payload("m", "2", "run1", VERSION_TAGS, RUN_TAGS, "f" * 64)
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
        ("run", "host.cpu"),
        ("run", "threads"),
    ],
)
def test_every_field_the_gate_relies_on_is_covered(where, key):
    signature = sign(KEY, EVALUATION, evaluation_payload("m", "2", "run1", VERSION_TAGS, RUN_TAGS, "f" * 64))
    version_tags, run_tags = dict(VERSION_TAGS), dict(RUN_TAGS)
    (version_tags if where == "version" else run_tags)[key] = "edited"
    payload = evaluation_payload("m", "2", "run1", version_tags, run_tags, "f" * 64)
    assert "edited after it was signed" in signature_problem(KEY, EVALUATION, payload, signature)


def test_name_version_run_and_parent_files_are_covered():
    signature = sign(KEY, EVALUATION, evaluation_payload("m", "2", "run1", VERSION_TAGS, RUN_TAGS, "f" * 64))
    for args in (("n", "2", "run1", "f" * 64), ("m", "3", "run1", "f" * 64), ("m", "2", "run2", "f" * 64)):
        name, version, run_id, parent = args
        payload = evaluation_payload(name, version, run_id, VERSION_TAGS, RUN_TAGS, parent)
        assert signature_problem(KEY, EVALUATION, payload, signature) is not None
    payload = evaluation_payload("m", "2", "run1", VERSION_TAGS, RUN_TAGS, "e" * 64)
    assert signature_problem(KEY, EVALUATION, payload, signature) is not None
    assert set(HOST_KEYS.values()) <= {k.removeprefix("host:") for k in payload if k.startswith("host:")}
