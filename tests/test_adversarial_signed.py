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
from urllib.parse import unquote, urlparse

import pytest
from mlflow import MlflowClient
from test_adversarial import (  # noqa: F401
    LENIENT,
    RELATIVE,
    _fresh,
    _holder,
    _one_error_line,
    _quantgate,
    _yaml,
    trivial,
)
from test_adversarial_second_run import _stored_artifact

from conftest import TEST_MODEL

KEY = "k" * 16 + "0123456789abcdef0123"
COPY = "adv3-signed"


@pytest.fixture(scope="module")
def signed(pipeline, tmp_path_factory):
    """The pipeline's FP32 and INT8 versions copied into their own registered model (so the
    shared versions stay as other tests expect them), the FP32 copy attested and the INT8 copy
    evaluated with the key set."""
    fp32, int8 = copy_pair(pipeline, COPY)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
        attested = _quantgate("attest", "--version", fp32, "--model-name", COPY)
        assert attested.exit_code == 0, attested.output
        result = _quantgate("evaluate", "--version", int8, "--model-name", COPY, "--latency-runs", "5")
    assert result.exit_code == 0, result.output
    thresholds = tmp_path_factory.mktemp("signed") / "relative.yaml"
    thresholds.write_text(json.dumps(RELATIVE))  # JSON is YAML
    return {"fp32": fp32, "int8": int8, "thresholds": str(thresholds)}


def copy_pair(pipeline, name: str) -> tuple[str, str]:
    """The pipeline's FP32 and INT8 versions copied (files and registration tags, no evaluation
    or gate tags) into registered model ``name``, the INT8 copy's parent the FP32 copy; their
    version numbers."""
    client = MlflowClient()
    copies = {}
    for mv in (pipeline["fp32"], pipeline["int8"]):
        copy = client.copy_model_version(f"models:/{TEST_MODEL}/{mv.version}", name)
        for key, value in client.get_model_version(TEST_MODEL, mv.version).tags.items():
            if not key.startswith(("eval_", "gate.")):
                client.set_model_version_tag(name, copy.version, key, value)
        copies[mv.version] = str(copy.version)
    fp32, int8 = copies[pipeline["fp32"].version], copies[pipeline["int8"].version]
    client.set_model_version_tag(name, int8, "parent_version", fp32)
    return fp32, int8


def attested_pair(pipeline, name: str) -> dict[str, str]:
    """:func:`copy_pair` into ``name``, its FP32 copy attested under the key: {"fp32", "int8"}."""
    fp32, int8 = copy_pair(pipeline, name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
        assert _quantgate("attest", "--version", fp32, "--model-name", name).exit_code == 0
    return {"fp32": fp32, "int8": int8}


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


def _eval_tags(version: str) -> dict[str, str]:
    return {k: v for k, v in MlflowClient().get_model_version(COPY, version).tags.items() if k.startswith("eval_")}


def _put_back(version: str, tags: dict[str, str]) -> None:
    for tag, value in tags.items():
        MlflowClient().set_model_version_tag(COPY, version, tag, value)


def _older_evaluation_put_back(version: str) -> tuple[dict[str, str], dict[str, str]]:
    """The defender evaluates the version again (with the key); the attacker, without it, puts the
    version's eval_* tags back on the earlier evaluation. Returns (earlier, latest) eval_* tags."""
    first = _eval_tags(version)
    again = _quantgate("evaluate", "--version", version, "--model-name", COPY, "--latency-runs", "5")
    assert again.exit_code == 0, again.output
    latest = _eval_tags(version)
    assert latest["eval_run_id"] != first["eval_run_id"]
    _put_back(version, first)
    return first, latest


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
    for tag in ("gate.passed.adv3-copy", "gate.passed.adv3-copy.signature", "gate.decision.adv3-copy"):
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


# ------------------------------------------------------------------ the fourth independent run (helper-12)
def test_e1_evaluate_with_the_key_refuses_model_code_that_is_not_quantgates_own(signed, monkeypatch, tmp_path):
    """Before: a version whose serving_model.py copied QUANTGATE_EVIDENCE_KEY into a file was
    evaluated by the defender with the key set; the attacker then signed forged evidence with it."""
    from quantgate.model_files import digest, download, model_manifest

    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client = MlflowClient()
    version = signed["int8"]
    before = client.get_model_version(COPY, version).tags
    stolen = tmp_path / "stolen.key"
    location = client.get_model_version_download_uri(COPY, version)
    path = Path(unquote(urlparse(location).path) if location.startswith("file:") else location) / "serving_model.py"
    original = path.read_bytes()
    theft = f"open({str(stolen)!r}, 'w').write(__import__('os').environ.get('QUANTGATE_EVIDENCE_KEY', ''))"
    path.write_bytes(original + f"\n{theft}\n".encode())
    forged = digest(model_manifest(download(f"models:/{COPY}/{version}", tmp_path / "dl")))
    client.set_model_version_tag(COPY, version, "model_sha256", forged)  # the attacker re-fingerprints
    try:
        result = _quantgate("evaluate", "--version", version, "--model-name", COPY, "--latency-runs", "5")
        line = _one_error_line(result)
        assert "serving_model.py is not the one this quantgate installs" in line
        assert not stolen.exists()
        served = _quantgate("serve", "--model", f"models:/{COPY}/{version}", "--port", "1")
        assert "serving_model.py is not the one this quantgate installs" in _one_error_line(served)
        assert not stolen.exists()
    finally:
        path.write_bytes(original)
        for tag in ("model_sha256", "eval_status"):
            client.set_model_version_tag(COPY, version, tag, before[tag])


def test_a11_a_saved_pass_put_back_after_a_rejection_is_not_served_nor_staged(signed, monkeypatch, tmp_path):
    """Before: the attacker saved the signed pass tags, the gate rejected the version under
    stricter limits (deleting them), the attacker put them back and set the alias by hand:
    serve served it, and the next gate moved stage Staging onto it."""
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client = MlflowClient()
    version, alias = signed["int8"], "staging"
    first = _promote(version, signed["thresholds"], alias)
    assert first.exit_code == 0, first.output
    saved = {k: v for k, v in client.get_model_version(COPY, version).tags.items() if k.startswith("gate.passed.")}
    strict = _yaml(tmp_path, {**RELATIVE, "max_size_mb": 0.001})
    assert _promote(version, strict, alias).exit_code == 1
    assert _holder(COPY, alias) is None
    for tag, value in saved.items():  # the attacker, without the key
        client.set_model_version_tag(COPY, version, tag, value)
    client.set_registered_model_alias(COPY, alias, version)
    served = _quantgate("serve", "--model", f"models:/{COPY}@{alias}", "--port", "1")
    assert "was withdrawn" in _one_error_line(served)
    other = _quantgate(
        "promote", "--version", signed["fp32"], "--allow-fp32", "--model-name", COPY, "--thresholds", strict
    )
    assert other.exit_code == 1 and "ANOMALY" in other.output, other.output
    assert client.get_model_version(COPY, version).current_stage != "Staging"


def test_a28_an_older_signed_evaluation_put_back_is_not_judged(signed, monkeypatch):
    """Before: the version was evaluated twice with the key; the attacker pointed its eval_* tags
    back at the first (faster) evaluation, and the gate promoted on figures the latest one did
    not support."""
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client = MlflowClient()
    version = signed["int8"]
    _, latest = _older_evaluation_put_back(version)
    try:
        result = _promote(version, signed["thresholds"], "adv4-replay")
        assert result.exit_code == 1, result.output
        assert "is not the version's latest" in result.output
        assert _holder(COPY, "adv4-replay") is None
        client.delete_run(latest["eval_run_id"])  # deleting the newer evaluation does not help
        assert "is not the version's latest" in _promote(version, signed["thresholds"], "adv4-replay").output
    finally:
        client.restore_run(latest["eval_run_id"])
        _put_back(version, latest)
    assert _promote(version, signed["thresholds"], "adv4-replay").exit_code == 0


@pytest.mark.parametrize("put_back", ["every eval tag", "the signature only"])
def test_twelfth_h1_a_pass_on_an_older_evaluation_is_neither_served_nor_kept(signed, monkeypatch, put_back):
    """The twelfth run: the holder of an alias was evaluated again (and did worse); the attacker
    put its eval_* tags back on the earlier evaluation, which made its signed pass verify again.
    Only the gate's look at the candidate asked whether an evaluation is the latest: serve (and
    score) served the holder, and gating another version kept it without an ANOMALY. The
    thirteenth run put back only the evaluation signature (the pass binds it), leaving
    eval_run_id on the newest run: nothing newer than that, so serve served."""
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    version, alias = signed["int8"], "adv12-held"
    assert _promote(version, signed["thresholds"], alias).exit_code == 0
    first, latest = _older_evaluation_put_back(version)
    if put_back == "the signature only":
        _put_back(version, {**latest, "eval_evidence_signature": first["eval_evidence_signature"]})
    why = "is not the version's latest" if put_back == "every eval tag" else "not vouched for by the evidence key"
    try:
        served = _quantgate("serve", "--model", f"models:/{COPY}@{alias}", "--port", "1")
        assert why in _one_error_line(served)
        other = _quantgate(
            "promote", "--version", signed["fp32"], "--allow-fp32", "--model-name", COPY,
            "--thresholds", signed["thresholds"], "--alias", alias,
        )  # fmt: skip
        assert other.exit_code == 1 and why in other.output, other.output
        assert _holder(COPY, alias) == version  # reported, nothing moved
    finally:
        _put_back(version, latest)
        MlflowClient().delete_registered_model_alias(COPY, alias)


def test_fourteenth_a1_deleting_the_evaluation_run_tag_does_not_revive_a_pass(signed, monkeypatch, tmp_path):
    """The fourteenth run: after the holder was evaluated again, the attacker put the older
    evaluation's tags back and deleted eval_run_id. With no run named, the check of the
    evaluation a pass rests on had nothing to look at, and serve (and score) accepted the pass
    the newer evaluation had withdrawn."""
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    version, alias = signed["int8"], "adv14-held"
    assert _promote(version, signed["thresholds"], alias).exit_code == 0
    _, latest = _older_evaluation_put_back(version)
    MlflowClient().delete_model_version_tag(COPY, version, "eval_run_id")
    try:
        for verb in ("serve", "score"):
            (tmp_path / "in.csv").write_text("text\nStocks fell sharply today\n")
            args = ["--port", "1"] if verb == "serve" else ["--input", str(tmp_path / "in.csv"), "--output", "out"]
            result = _quantgate(verb, "--model", f"models:/{COPY}@{alias}", *args)
            assert "name no evaluation run" in _one_error_line(result), result.output
    finally:
        _put_back(version, latest)
        MlflowClient().delete_registered_model_alias(COPY, alias)


def test_serve_with_a_bad_key_prints_only_the_error(signed, monkeypatch):
    """Before: serve printed its "serving … on http://…" banner and a curl example before the
    one-line key error, though nothing was served."""
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", "short")
    served = _quantgate("serve", "--model", f"models:/{COPY}/{signed['int8']}", "--port", "1")
    assert "has 5 characters" in _one_error_line(served)
    assert "serving" not in served.output and "curl" not in served.output


# ------------------------------------------------------------------ the fifth independent run (helper-13)
def _stored_copy_root(version: str, model: str = COPY) -> Path:
    """The registered version's files in the artifact store (not a copy)."""
    location = MlflowClient().get_model_version_download_uri(model, version)
    return Path(unquote(urlparse(location).path) if location.startswith("file:") else location)


def _refit(version: str, tmp_path) -> None:
    """What the attacker does after editing files: record their digest as the registered one."""
    from quantgate.model_files import digest, download, model_manifest

    local = download(f"models:/{COPY}/{version}", tmp_path / f"dl-{len(list(tmp_path.iterdir()))}")
    MlflowClient().set_model_version_tag(COPY, version, "model_sha256", digest(model_manifest(local)))


@pytest.mark.parametrize("attack", ["data-redirect", "plugin-loader"])
def test_e1b_e1c_model_code_cannot_come_from_outside_the_model_or_a_plugin_loader(
    attack, signed, monkeypatch, tmp_path
):
    """Before: MLmodel's python_function.data pointed at a folder outside the version with its
    own serving_model.py (E1b), or meta.json named the installed joblib as a plugin loader of a
    pickled "model" (E1c): either way the defender's evaluate ran attacker code with the key."""
    import yaml

    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client = MlflowClient()
    version = signed["int8"]
    before = client.get_model_version(COPY, version).tags
    root = _stored_copy_root(version)
    edited = root / ("MLmodel" if attack == "data-redirect" else "artifacts/meta.json")
    original = edited.read_bytes()
    if attack == "data-redirect":
        conf = yaml.safe_load(original)
        conf["flavors"]["python_function"]["data"] = str(tmp_path / "elsewhere")
        edited.write_text(yaml.safe_dump(conf))
        expected = "loads data from"
    else:
        meta = json.loads(original)
        meta.update(runtime="custom", loader="joblib")
        edited.write_text(json.dumps(meta))
        expected = "not in $QUANTGATE_TRUSTED_LOADERS"
    _refit(version, tmp_path)
    try:
        line = _one_error_line(
            _quantgate("evaluate", "--version", version, "--model-name", COPY, "--latency-runs", "5")
        )
        assert expected in line, line
    finally:
        edited.write_bytes(original)
        for tag in ("model_sha256", "eval_status"):
            client.set_model_version_tag(COPY, version, tag, before[tag])


@pytest.mark.parametrize("hide", ["retag", "failed"])
def test_a28b_a_newer_evaluation_hidden_by_a_tag_or_status_still_counts(hide, signed, monkeypatch):
    """Before: the newer evaluation was found by its editable `quantgate.evaluated_version` tag
    and only when FINISHED: re-tagging it, or marking it FAILED, let the gate judge an older one."""
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client = MlflowClient()
    version = signed["int8"]
    _, latest = _older_evaluation_put_back(version)
    if hide == "retag":
        client.set_tag(latest["eval_run_id"], "quantgate.evaluated_version", "x")
    else:
        client.set_terminated(latest["eval_run_id"], "FAILED")
    try:
        result = _promote(version, signed["thresholds"], "adv5-replay")
        assert result.exit_code == 1 and "is not the version's latest" in result.output, result.output
    finally:
        client.set_tag(latest["eval_run_id"], "quantgate.evaluated_version", version)
        client.set_terminated(latest["eval_run_id"], "FINISHED")
        _put_back(version, latest)


def test_a11b_pass_tags_put_back_with_the_alias_tag_deleted_are_not_served(signed, monkeypatch, tmp_path):
    """Before: the pass tags put back after a rejection, with `gate.alias` deleted, left nothing
    that contradicted them: serve served the rejected version and the gate kept it."""
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client = MlflowClient()
    version, alias = signed["int8"], "staging"
    first = _promote(version, signed["thresholds"], alias)
    assert first.exit_code == 0, first.output
    saved = {k: v for k, v in client.get_model_version(COPY, version).tags.items() if k.startswith("gate.passed.")}
    assert _promote(version, _yaml(tmp_path, {**RELATIVE, "max_size_mb": 0.001}), alias).exit_code == 1
    for tag, value in saved.items():
        client.set_model_version_tag(COPY, version, tag, value)
    client.delete_model_version_tag(COPY, version, "gate.alias")
    client.set_registered_model_alias(COPY, alias, version)
    served = _quantgate("serve", "--model", f"models:/{COPY}@{alias}", "--port", "1")
    assert "was withdrawn" in _one_error_line(served) and "rejected" in served.output


def test_fifteenth_r1_a_rename_there_and_back_does_not_hide_a_newer_evaluation(signed, monkeypatch):
    """The fifteenth run: the model was renamed, the key holder attested the parent and evaluated
    the holder again under the new name, and the model was renamed back; the attacker put the
    older evaluation's tags and the parent's older attestation back. The search for a newer
    evaluation looked only for `models:/<current name>/<version>`, so serve served the pass
    the newer evaluation withdrew and the gate judged the older one."""
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client = MlflowClient()
    version, alias, renamed = signed["int8"], "adv15-held", f"{COPY}-renamed"
    assert _promote(version, signed["thresholds"], alias).exit_code == 0
    first, attestation = _eval_tags(version), client.get_model_version(COPY, signed["fp32"]).tags["fp32_attestation"]
    client.rename_registered_model(COPY, renamed)
    try:
        assert _quantgate("attest", "--version", signed["fp32"], "--model-name", renamed).exit_code == 0
        again = _quantgate("evaluate", "--version", version, "--model-name", renamed, "--latency-runs", "5")
        assert again.exit_code == 0, again.output
    finally:
        client.rename_registered_model(renamed, COPY)
    _put_back(version, first)
    client.set_model_version_tag(COPY, signed["fp32"], "fp32_attestation", attestation)
    try:
        served = _quantgate("serve", "--model", f"models:/{COPY}@{alias}", "--port", "1")
        assert "is not the version's latest" in _one_error_line(served)
        promoted = _promote(version, signed["thresholds"], "adv15-other")
        assert promoted.exit_code == 1 and "is not the version's latest" in promoted.output, promoted.output
    finally:  # the module's later tests expect the version's latest evaluation under its own name
        assert _quantgate("evaluate", "--version", version, "--model-name", COPY, "--latency-runs", "5").exit_code == 0
        client.delete_registered_model_alias(COPY, alias)


def test_sixteenth_a2c_versions_copied_into_the_freed_name_do_not_inherit_a_signed_evaluation(signed, monkeypatch):
    """The sixteenth run: the model was renamed and its holder evaluated again under the new name;
    the attacker then copied the renamed model's versions into the freed old name (same numbers,
    same files) and put the older evaluation's tags on the copy. The signature bound only name
    and number, and the newer evaluation named neither, so the gate promoted the copy. The
    signature binds the version's identity now, which a copy does not share."""
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client, version, source = MlflowClient(), signed["int8"], f"{COPY}-moved"
    assert _promote(version, signed["thresholds"], "adv16-ok").exit_code == 0  # the original passes
    client.rename_registered_model(COPY, source)
    try:
        for mv in sorted(client.search_model_versions(f"name = '{source}'"), key=lambda mv: int(mv.version)):
            copy = client.copy_model_version(f"models:/{source}/{mv.version}", COPY)  # tags come along
            assert copy.version == mv.version  # the freed name numbers its copies from 1 again
        result = _promote(version, signed["thresholds"], "adv16-copy")
        assert result.exit_code == 1 and "not vouched for by the evidence key" in result.output, result.output
        assert _holder(COPY, "adv16-copy") is None
    finally:
        client.delete_registered_model(COPY)
        client.rename_registered_model(source, COPY)


def _staged(model: str) -> list[str]:
    return sorted(
        str(mv.version)
        for mv in MlflowClient().search_model_versions(f"name = '{model}'")
        if mv.current_stage == "Staging"
    )


def _act_when_the_alias_moves(monkeypatch, version: str, attack) -> None:
    """Run ``attack`` in the instant between the gate's last check under the lock and its alias
    move: the moment MLflow is asked to set ``@staging`` on ``version`` (once). The adversary
    timed it with inotify on the files the gate reads; this is that instant, exactly."""
    real, fired = MlflowClient.set_registered_model_alias, []

    def racing(self, name, alias, target_version):
        if not fired and name == COPY and alias == "staging" and str(target_version) == version:
            fired.append(True)
            attack()
        return real(self, name, alias, target_version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", racing)


def test_seventeenth_r1_a_version_registered_again_as_the_alias_moves_is_rolled_back(signed, monkeypatch):
    """The seventeenth run's race, at its last instant: the model deleted (here: renamed away) and
    its versions registered again under the old name, tags copied, between the gate's last check
    and the alias move. The check after the move failed (exit 1) and moved nothing back, so a
    plain `mlflow models serve models:/...@staging` served files the gate never judged. Now the
    alias is removed and the version leaves Staging."""
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client, version, source = MlflowClient(), signed["int8"], f"{COPY}-raced"

    def reregister():
        client.rename_registered_model(COPY, source)
        for mv in sorted(client.search_model_versions(f"name = '{source}'"), key=lambda mv: int(mv.version)):
            assert client.copy_model_version(f"models:/{source}/{mv.version}", COPY).version == mv.version

    _act_when_the_alias_moves(monkeypatch, version, reregister)
    try:
        result = _promote(version, signed["thresholds"], "staging")
        assert result.exit_code == 1, result.output
        assert "registered again" in result.output and "ROLLED BACK: @staging removed" in result.output, result.output
        assert _holder(COPY, "staging") is None and _staged(COPY) == []
        assert client.get_model_version(COPY, version).tags["gate.decision"] == "rejected"
    finally:
        monkeypatch.undo()
        if client.search_registered_models(f"name = '{source}'"):
            client.delete_registered_model(COPY)
            client.rename_registered_model(source, COPY)


def test_nineteenth_f1_a_rollback_moves_nothing_back_onto_the_previous_holder(signed, monkeypatch):
    """The nineteenth run: the attacker edited the @staging holder's files and archived it, then
    changed the next champion's tags the moment the alias reached it. The rollback put the alias
    and stage Staging back on the edited holder, whose files it never hashed. Now a rollback
    only removes: the alias is unset and nothing enters Staging."""
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client, version = MlflowClient(), signed["int8"]
    holder = str(client.copy_model_version(f"models:/{COPY}/{version}", COPY).version)
    evaluated = _quantgate("evaluate", "--version", holder, "--model-name", COPY, "--latency-runs", "5")
    assert evaluated.exit_code == 0, evaluated.output
    first = _promote(holder, signed["thresholds"], "staging")
    assert first.exit_code == 0 and _holder(COPY, "staging") == holder, first.output
    client.transition_model_version_stage(COPY, holder, "Archived")  # by hand, its files edited before
    digest = client.get_model_version(COPY, version).tags["model_sha256"]
    _act_when_the_alias_moves(
        monkeypatch, version, lambda: client.set_model_version_tag(COPY, version, "model_sha256", "0" * 64)
    )
    try:
        result = _promote(version, signed["thresholds"], "staging")
        assert result.exit_code == 1, result.output
        assert "ROLLED BACK: @staging removed" in result.output, result.output
        assert _holder(COPY, "staging") is None and _staged(COPY) == []
    finally:
        monkeypatch.undo()
        client.set_model_version_tag(COPY, version, "model_sha256", digest)
