"""Issue 17, the twenty-second and twenty-third adversarial runs: an ONNX graph is a program, and
the rebuild that keeps a writer's graph from running must read only data the user trusts. Tried
the way the runs did it: the writer's own version, built from a genuine variant's files with
quantgate's `log_variant`; then the key holder's `quantgate evaluate` on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import onnx
import pandas as pd
from mlflow import MlflowClient
from onnx import TensorProto, helper
from test_adversarial import _one_error_line, _quantgate  # noqa: F401
from test_adversarial_signed import COPY, KEY, signed  # noqa: F401

from quantgate import packaging
from quantgate.contract import RECIPE_SHA_TAG, RECIPE_TAG
from quantgate.data import news9_labels
from quantgate.recipes import build_recipe


def _batch_triggered(graph_file: Path, out: Path, above: int) -> Path:
    """The genuine graph, its logits rolled by one label when a batch holds more than ``above``
    texts: every batch the evaluator runs (1 and 32) answers as before, one larger batch does not."""
    model = onnx.load(str(graph_file))
    logits = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = ["raw" if name == logits else name for name in node.output]
    width = len(news9_labels())
    rolled = helper.make_tensor("roll", TensorProto.INT64, [width], [(i + 1) % width for i in range(width)])
    typed = helper.make_tensor_value_info(logits, TensorProto.FLOAT, None)
    then = helper.make_graph(
        [helper.make_node("Gather", ["raw", "roll"], [logits], axis=1)], "then", [], [typed], [rolled]
    )
    same = helper.make_graph([helper.make_node("Identity", ["raw"], [logits])], "else", [], [typed])
    model.graph.initializer.extend(
        [
            helper.make_tensor("zero", TensorProto.INT64, [], [0]),
            helper.make_tensor("above", TensorProto.INT64, [], [above]),
        ]
    )
    model.graph.node.extend(
        [
            helper.make_node("Shape", ["input_ids"], ["shape"]),
            helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
            helper.make_node("Greater", ["batch", "above"], ["big"]),
            helper.make_node("If", ["big"], [logits], then_branch=then, else_branch=same),
        ]
    )
    onnx.save(model, str(out))
    return out


def test_a_graph_that_answers_otherwise_for_larger_batches_is_not_run_with_a_key(signed, monkeypatch, tmp_path):  # noqa: F811
    """Before: the graph passed evaluate and the gate with every figure of the genuine variant's
    (batch invariance 1.0 included: the evaluator runs batches of 1 and 32), and `quantgate serve`
    then answered 43 test texts sent together at accuracy 0.07 (0.93 one by one); `score`, at its
    default batch of 64, likewise. Now, with a key, evaluate rebuilds the variant from its attested
    parent with its recorded recipe and refuses a file that build did not write."""
    client = MlflowClient()
    genuine = client.get_model_version(COPY, signed["int8"])
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{COPY}/{genuine.version}", dst_path=str(tmp_path)))
    arts = local / "artifacts"
    graph = _batch_triggered(next(arts.glob("*.onnx")), tmp_path / "onnx-int8-dynamic.onnx", above=32)
    meta = json.loads((arts / "meta.json").read_text())
    with mlflow.start_run(run_name="adv22-batch-trigger"):
        mv = packaging.log_variant(
            model_path=graph, tokenizer_dir=arts / "tokenizer", runtime="onnxruntime", variant="onnx-int8-dynamic",
            precision="int8", registered_model_name=COPY, labels=news9_labels(), parent_version=signed["fp32"],
            max_length=meta["max_length"], quant_config=json.loads((arts / "quant_config.json").read_text()),
            packages=["onnxruntime"],
            extra_tags={RECIPE_TAG: genuine.tags[RECIPE_TAG], RECIPE_SHA_TAG: genuine.tags[RECIPE_SHA_TAG]},
        )  # fmt: skip
    try:
        served = mlflow.pyfunc.load_model(f"models:/{COPY}/{mv.version}")  # the attack is real:
        texts = pd.DataFrame({"text": [f"Headline number {i} about markets and football" for i in range(40)]})
        together = served.predict(texts)["label"].tolist()
        alone = [served.predict(texts.iloc[[i]])["label"].iloc[0] for i in range(len(texts))]
        assert np.mean(np.array(together) == np.array(alone)) == 0.0

        monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
        line = _one_error_line(
            _quantgate("evaluate", "--version", mv.version, "--model-name", COPY, "--latency-runs", "5")
        )
        assert "is not what its recipe (onnx-int8-dynamic) builds from" in line, line
        assert "eval_evidence_signature" not in client.get_model_version(COPY, mv.version).tags  # nothing signed
    finally:
        client.delete_model_version(COPY, mv.version)


def test_a_variant_without_a_recipe_is_not_run_with_a_key(signed, monkeypatch, tmp_path):  # noqa: F811
    """The same files registered with no recipe tag (the run's own versions had none): nothing to
    rebuild them from, so nothing is measured under the key."""
    client = MlflowClient()
    copy = client.copy_model_version(f"models:/{COPY}/{signed['int8']}", COPY)
    try:
        for key, value in client.get_model_version(COPY, signed["int8"]).tags.items():
            if not key.startswith(("eval_", "gate.")):
                client.set_model_version_tag(COPY, copy.version, key, value)
        client.delete_model_version_tag(COPY, copy.version, RECIPE_TAG)
        monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY", KEY)
        line = _one_error_line(
            _quantgate("evaluate", "--version", str(copy.version), "--model-name", COPY, "--latency-runs", "5")
        )
        assert "has no 'recipe' tag to rebuild it from" in line, line
    finally:
        client.delete_model_version(COPY, copy.version)


def test_a_recipe_tag_cannot_make_the_rebuild_read_the_key_into_a_tag(signed, monkeypatch, tmp_path):  # noqa: F811
    """Twenty-third run, C1. The writer's version carried a `recipe` tag for onnx-int8-static whose
    calibration_options named the evidence key file as its labels file: the key holder's rebuild
    read it, the data error quoted the "labels", and evaluate wrote that into the version's
    `eval_status` tag, where the writer read the key (and then promoted what it liked). Now the
    names file must be trusted data, as for `evaluate --dataset auto`, and the key is blanked out
    of any status evaluate writes."""
    client = MlflowClient()
    key_file = tmp_path / "evidence.key"
    key_file.write_text(KEY)
    key_file.chmod(0o400)
    genuine = client.get_model_version(COPY, signed["int8"])
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{COPY}/{genuine.version}", dst_path=str(tmp_path)))
    arts = local / "artifacts"
    options = json.dumps({"labels": str(key_file)})  # the key file, as a names file
    recipe = build_recipe("onnx-int8-static", "auto", calibration_dataset="news9", calibration_options=options)
    with mlflow.start_run(run_name="adv23-key-as-labels"):
        mv = packaging.log_variant(
            model_path=next(arts.glob("*.onnx")), tokenizer_dir=arts / "tokenizer", runtime="onnxruntime",
            variant="onnx-int8-static", precision="int8", registered_model_name=COPY, labels=news9_labels(),
            parent_version=signed["fp32"], max_length=json.loads((arts / "meta.json").read_text())["max_length"],
            quant_config=recipe.resolved(), packages=["onnxruntime"],
            extra_tags={RECIPE_TAG: json.dumps(recipe.resolved(), sort_keys=True)},
        )  # fmt: skip
    try:
        monkeypatch.delenv("QUANTGATE_EVIDENCE_KEY", raising=False)
        monkeypatch.setenv("QUANTGATE_EVIDENCE_KEY_FILE", str(key_file))
        result = _quantgate("evaluate", "--version", mv.version, "--model-name", COPY, "--latency-runs", "5")
        assert result.exit_code != 0 and KEY not in result.output, result.output
        assert "calibrates on data a tag names" in result.output, result.output
        tags = client.get_model_version(COPY, mv.version).tags
        assert not [name for name, value in tags.items() if KEY in value], tags
    finally:
        client.delete_model_version(COPY, mv.version)


def test_the_key_is_blanked_out_of_text_bound_for_a_tag():
    from quantgate.evidence_signing import redact

    assert redact(f"label 'World' is not one of ['{KEY}']", KEY.encode()) == (
        "label 'World' is not one of ['[evidence key]']"
    )
    assert redact("nothing to hide", None) == "nothing to hide"


def test_a_names_file_path_with_a_comma_is_still_checked_as_a_file(tmp_path):
    """Twenty-fourth run: the trust check skipped a `labels` value with a comma in it (taken for
    an inline `a,b,c` list), but the loader tries it as a file first, so `/tmp/x,y/../../<key
    file>` was read by the keyed rebuild and by `evaluate --dataset auto`. Now any value the loader
    would read as a file is checked like one."""
    from flows.rebuild import pinned_calibration
    from quantgate.labels import read_as_file

    folder = tmp_path / "x,y"
    folder.mkdir()
    secret = tmp_path / "evidence.key"
    secret.write_text(KEY)
    sneaky = f"{folder}/../{secret.name}"
    assert read_as_file(sneaky) and read_as_file("names.txt") and not read_as_file("World,Sports")
    recipe = build_recipe(
        "onnx-int8-static", "auto", calibration_dataset="news9", calibration_options=json.dumps({"labels": sneaky})
    )
    problem = pinned_calibration(recipe, [])[1]
    assert problem and "not a bundled dataset and not inside a trusted folder" in problem, problem
    inline = build_recipe(
        "onnx-int8-static", "auto", calibration_dataset="news9", calibration_options=json.dumps({"labels": "a,b,c"})
    )
    assert pinned_calibration(inline, [])[1] is None
