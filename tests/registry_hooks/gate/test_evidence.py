"""The evidence a gate needs before it judges anything: a finished evaluation of this version and
these files, on this device. Pure; no MLflow store."""

from __future__ import annotations

import pytest

from registry_hooks.gate.evidence import changed_files, predictions_problems, run_problems, tag_problems

FRESH = {
    "eval_status": "complete",
    "eval_run_id": "r1",
    "manifest_sha256": "a" * 64,
    "eval_manifest_sha256": "a" * 64,
    "device": "cpu",
    "model_sha256": "m" * 64,
    "eval_model_sha256": "m" * 64,
    "eval_metrics_sha256": "d" * 64,
}


@pytest.mark.parametrize(
    "change,message",
    [
        ({"eval_status": "failed: RuntimeError"}, "evaluation missing or incomplete"),
        ({"eval_status": None}, "evaluation missing or incomplete"),
        ({"eval_run_id": None}, "never evaluated"),
        ({"eval_manifest_sha256": "b" * 64}, "stale evaluation"),
        ({"manifest_sha256": None}, "never fingerprinted"),
        ({"model_sha256": None}, "re-register it"),
        ({"eval_model_sha256": "n" * 64}, "stale evaluation"),
        ({"eval_metrics_sha256": None}, "evaluate it again"),
    ],
)
def test_tag_problems(change, message):
    tags = {k: v for k, v in {**FRESH, **change}.items() if v is not None}
    assert any(message in p for p in tag_problems(tags))
    assert tag_problems(FRESH) == []


def test_a_version_for_another_device_is_refused_for_a_target():
    assert tag_problems(FRESH, "cpu") == []
    assert tag_problems(FRESH, "gpu") == ["version is built for device 'cpu', not for target 'gpu'"]


def test_the_eval_run_must_be_about_this_version_and_these_files():
    good = {"quantgate.evaluated_version": "3", "manifest_sha256": "a" * 64, "model_sha256": "m" * 64}
    assert run_problems("3", FRESH, "FINISHED", good) == []
    assert (
        "measured version '4', not version 3"
        in run_problems("3", FRESH, "FINISHED", {**good, "quantgate.evaluated_version": "4"})[0]
    )
    assert "measured files with manifest" in run_problems("3", FRESH, "FINISHED", {**good, "manifest_sha256": "c"})[0]
    assert "is RUNNING, not FINISHED" in run_problems("3", FRESH, "RUNNING", good)[0]
    assert "is deleted, not active" in run_problems("3", FRESH, "FINISHED", good, "deleted")[0]
    assert "measured model files" in run_problems("3", FRESH, "FINISHED", {**good, "model_sha256": "x"})[0]


def test_the_predictions_table_must_be_the_one_the_evaluation_recorded():
    run_tags, tags = {"quantgate.predictions_sha256": "p" * 64}, {"eval_predictions_sha256": "p" * 64}
    assert predictions_problems("r1", run_tags, tags, "p" * 64) == []
    assert "changed after evaluation" in predictions_problems("r1", run_tags, tags, "q" * 64)[0]
    assert (
        "changed after evaluation"
        in predictions_problems("r1", run_tags, {"eval_predictions_sha256": "q" * 64}, "q" * 64)[0]
    )
    assert "evaluate again" in predictions_problems("r1", {}, tags, "p" * 64)[0]  # never recorded: not trusted


def test_changed_files_names_each_differing_file():
    recorded = {"model": {"model.onnx": "1"}, "tokenizer": {"vocab.txt": "2", "tok.json": "3"}}
    actual = {"model": {"model.onnx": "X"}, "tokenizer": {"vocab.txt": "2", "extra.txt": "4"}}
    assert changed_files(actual, recorded) == ["model/model.onnx", "tokenizer/extra.txt", "tokenizer/tok.json"]
    assert changed_files(recorded, recorded) == []
