"""Issue 17, the sixth independent adversarial run (helper-14): what it got past the gate, tried
again its way (the artifact store's files, MLflow's public API and the `quantgate` command
line). Every sixth-run test here failed on 0e0e4b1; the seventh run's (helper-15: a names file
in a tag read as labels, leaking the key; one file of data/ taken as a bundled dataset; a
malformed options tag's traceback) failed on 6bf4f5d.

- H1: a version's `dataset` tag pointed `evaluate --dataset auto` at a test split of only the
  texts the (label-swapped) model gets right; the defender's keyed evaluation signed it.
- H2: 1,000 empty experiments pushed the newer evaluation's experiment out of the one page
  `search_experiments` returns, so an older, better evaluation put back was judged.
- H3: `quantgate score` took a hand-set alias and checked neither the gate pass nor the code.
- H4: a person's note quoting quantgate's BEGIN marker lost everything after the quote.
- H5: `parent_version` naming the version itself made every parity limit pass.
"""

from __future__ import annotations

import shutil

import pytest
from mlflow import MlflowClient
from test_adversarial import _one_error_line, _quantgate  # noqa: F401
from test_adversarial_signed import (  # noqa: F401
    COPY,
    KEY,
    _older_evaluation_put_back,
    _promote,
    _put_back,
    _stored_copy_root,
    signed,
)

from quantgate.data import BUNDLED_DIR
from quantgate.description import BEGIN


def test_h1_a_dataset_tag_does_not_choose_the_test_data_when_a_key_is_set(signed, monkeypatch, tmp_path):  # noqa: F811
    """The tag is set on the attested FP32 parent: with a key, a variant's own data tags are not
    read at all (twenty-sixth run, tests/test_adversarial_twentysixth_run.py)."""
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client = MlflowClient()
    version, parent = signed["int8"], signed["fp32"]
    before, parent_before = client.get_model_version(COPY, version).tags, client.get_model_version(COPY, parent).tags
    chosen = tmp_path / "easy"  # the attacker's folder: here a copy of news9 (what it holds does not matter)
    shutil.copytree(BUNDLED_DIR / "news9", chosen)
    client.set_model_version_tag(COPY, parent, "dataset", str(chosen))
    try:
        result = _quantgate("evaluate", "--version", version, "--model-name", COPY, "--latency-runs", "5")
        line = _one_error_line(result)
        assert "does not choose the data a verdict rests on" in line and "QUANTGATE_TRUSTED_DATA" in line, line
        assert client.get_model_version(COPY, version).tags == before  # nothing measured, nothing signed
    finally:
        if "dataset" in parent_before:
            client.set_model_version_tag(COPY, parent, "dataset", parent_before["dataset"])
        else:
            client.delete_model_version_tag(COPY, parent, "dataset")


def test_h2_a_thousand_experiments_do_not_hide_the_newer_evaluation(signed, monkeypatch):  # noqa: F811
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client = MlflowClient()
    version = signed["int8"]
    _, latest = _older_evaluation_put_back(version)
    flood = [client.create_experiment(f"flood-{i:04d}") for i in range(1000)]
    try:
        result = _promote(version, signed["thresholds"], "adv6-flood")
        assert result.exit_code == 1 and "is not the version's latest" in result.output, result.output
    finally:
        for experiment_id in flood:
            client.delete_experiment(experiment_id)
        _put_back(version, latest)


def test_h3_score_refuses_a_hand_set_alias_and_edited_code(signed, monkeypatch, tmp_path):  # noqa: F811
    client = MlflowClient()
    version = signed["int8"]
    inputs = tmp_path / "in.csv"
    inputs.write_text("text\nshares rose after the earnings report\n")
    client.set_registered_model_alias(COPY, "adv6-score", version)  # by hand: no gate pass for it
    result = _quantgate(
        "score", "--input", str(inputs), "--output", str(tmp_path / "out.parquet"), "--model", f"{COPY}@adv6-score"
    )
    assert "without a recorded gate pass" in _one_error_line(result)
    code = _stored_copy_root(version) / "serving_model.py"
    original = code.read_bytes()
    code.write_bytes(original + b"\n# the attacker's payload would go here\n")
    try:
        monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
        result = _quantgate(
            "score", "--input", str(inputs), "--output", str(tmp_path / "o2.parquet"), "--model", f"{COPY}/{version}"
        )
        assert "model files changed since registration" in _one_error_line(result)
        assert not (tmp_path / "o2.parquet").exists()
    finally:
        code.write_bytes(original)
        client.delete_registered_model_alias(COPY, "adv6-score")


def test_h4_a_note_quoting_the_block_marker_is_kept_whole(signed, monkeypatch):  # noqa: F811
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client = MlflowClient()
    version = signed["int8"]
    note = f"Release note. The card below starts with {BEGIN}\n- it is generated.\nRollback contact: alice@example.org"
    current = client.get_model_version(COPY, version).description or ""
    client.update_model_version(COPY, version, description=note + "\n\n" + current)
    _promote(version, signed["thresholds"], "adv6-note")
    description = client.get_model_version(COPY, version).description
    assert description.startswith(note + "\n\n"), description[:400]
    assert description.count("### Gate ") >= 1


def test_h5_a_parent_version_naming_the_version_itself_is_refused(signed, monkeypatch):  # noqa: F811
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client = MlflowClient()
    version = signed["int8"]
    before = client.get_model_version(COPY, version).tags
    client.set_model_version_tag(COPY, version, "parent_version", version)
    try:
        result = _quantgate("evaluate", "--version", version, "--model-name", COPY, "--latency-runs", "5")
        line = _one_error_line(result)
        assert "the version itself" in line, line
        assert client.get_model_version(COPY, version).tags.get("eval_evidence_signature") == before.get(
            "eval_evidence_signature"
        )
    finally:
        for tag in ("parent_version", "eval_status"):
            if tag in before:
                client.set_model_version_tag(COPY, version, tag, before[tag])


def test_h5_parity_is_measured_only_against_an_fp32_parent(signed, monkeypatch):  # noqa: F811
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client = MlflowClient()
    version, fp32 = signed["int8"], signed["fp32"]
    before = client.get_model_version(COPY, version).tags
    client.set_model_version_tag(COPY, fp32, "parent_version", version)  # the "parent" is now a variant
    try:
        line = _one_error_line(
            _quantgate("evaluate", "--version", version, "--model-name", COPY, "--latency-runs", "5")
        )
        assert "a variant, not an FP32 model" in line, line
    finally:
        client.delete_model_version_tag(COPY, fp32, "parent_version")
        if "eval_status" in before:
            client.set_model_version_tag(COPY, version, "eval_status", before["eval_status"])


# ------------------------------------------------------------------ the seventh independent run (helper-15)
@pytest.mark.parametrize(
    ("tag", "value", "expected"),
    [
        ("dataset_options", '{"labels": "/proc/self/environ"}', "QUANTGATE_TRUSTED_DATA"),  # H3: the key leaked
        ("dataset", str(BUNDLED_DIR / "news9" / "train.csv"), "not a bundled dataset"),  # D1: one file of data/
        ("dataset_options", '{"sample": 3', "not options quantgate wrote"),  # was a traceback
    ],
)
def test_seventh_run_tags_cannot_steer_or_leak_through_the_test_data(tag, value, expected, signed, monkeypatch):  # noqa: F811
    """The tags are set on the attested FP32 parent: with a key, a variant's own data tags are
    not read at all (twenty-sixth run, tests/test_adversarial_twentysixth_run.py)."""
    monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
    client = MlflowClient()
    version, target = signed["int8"], signed["fp32"]
    before = client.get_model_version(COPY, target).tags
    client.set_model_version_tag(COPY, target, tag, value)
    if tag == "dataset_options":
        client.set_model_version_tag(COPY, target, "dataset", "news9")
    try:
        result = _quantgate("evaluate", "--version", version, "--model-name", COPY, "--latency-runs", "5")
        line = _one_error_line(result)
        assert expected in line, line
        assert KEY not in result.output
    finally:
        for name in (tag, "dataset"):
            if name in before:
                client.set_model_version_tag(COPY, target, name, before[name])
            else:
                client.delete_model_version_tag(COPY, target, name)
