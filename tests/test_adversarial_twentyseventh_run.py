"""Issue 17, the twenty-seventh adversarial run: with a key, the rebuild compared a variant's
model file only, so a genuine graph beside a `meta.json` whose `max_length` the writer had raised
was evaluated, promoted and served (it failed on long texts the test split did not hold); and a
version with no `parent_version` tag was evaluated and signed without any rebuild. Done as the
run did it: the writer's own versions, logged with quantgate's `log_variant`, then the key
holder's `quantgate evaluate` on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from test_adversarial import _one_error_line, _quantgate  # noqa: F401
from test_adversarial_signed import COPY, KEY, signed  # noqa: F401

from quantgate import packaging
from quantgate.contract import RECIPE_SHA_TAG, RECIPE_TAG
from quantgate.data import dataset_digest, load_dataset, news9_labels


def _writers_copy(signed, tmp_path, run_name: str, **changes):  # noqa: F811
    """The genuine INT8 variant's own files and recipe, registered again by the writer with
    ``changes`` to what `log_variant` is given."""
    client = MlflowClient()
    genuine = client.get_model_version(COPY, signed["int8"])
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{COPY}/{genuine.version}", dst_path=str(tmp_path)))
    arts = local / "artifacts"
    meta = json.loads((arts / "meta.json").read_text())
    given = dict(
        model_path=next(arts.glob("*.onnx")), tokenizer_dir=arts / "tokenizer", runtime="onnxruntime",
        variant="onnx-int8-dynamic", precision="int8", registered_model_name=COPY, labels=news9_labels(),
        parent_version=signed["fp32"], max_length=meta["max_length"],
        quant_config=json.loads((arts / "quant_config.json").read_text()), packages=["onnxruntime"],
        extra_tags={RECIPE_TAG: genuine.tags[RECIPE_TAG], RECIPE_SHA_TAG: genuine.tags[RECIPE_SHA_TAG]},
    )  # fmt: skip
    given.update(changes)
    with mlflow.start_run(run_name=run_name):
        # as the run did: the writer's run names news9's digest, which anyone can compute
        mlflow.log_param("dataset_digest", dataset_digest(load_dataset("news9")))
        return packaging.log_variant(**given)


def test_a_variant_whose_meta_json_differs_from_the_build_is_not_run_with_a_key(signed, monkeypatch, tmp_path):  # noqa: F811
    """Case 1: the genuine graph, `max_length` 1000 instead of the parent's. Before: evaluated
    with every figure of the genuine variant (exit 0), promoted, served. Now refused in one line."""
    mv = _writers_copy(signed, tmp_path, "adv27-max-length", max_length=1000)
    try:
        monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
        line = _one_error_line(
            _quantgate("evaluate", "--version", mv.version, "--model-name", COPY, "--latency-runs", "5")
        )
        assert "meta.json holds" in line and "'max_length': 1000" in line, line
    finally:
        MlflowClient().delete_model_version(COPY, mv.version)


def test_a_version_without_a_parent_is_run_with_a_key_only_as_an_attested_fp32_model(signed, monkeypatch, tmp_path):  # noqa: F811
    """Case 2: the writer's graph registered with no `parent_version` tag. Before: evaluated and
    signed with no rebuild (exit 0). Now refused in one line; nothing signed."""
    mv = _writers_copy(signed, tmp_path, "adv27-no-parent", parent_version=None)
    try:
        monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
        line = _one_error_line(
            _quantgate("evaluate", "--version", mv.version, "--model-name", COPY, "--latency-runs", "5")
        )
        assert "run only as an attested FP32 model" in line, line
        assert "eval_evidence_signature" not in MlflowClient().get_model_version(COPY, mv.version).tags
    finally:
        MlflowClient().delete_model_version(COPY, mv.version)
