"""Any encoder: tiny random BERT, DistilBERT, RoBERTa and XLM-R models (built offline) each go
through train -> onnx-int8-dynamic -> evaluate -> gate on the support3 task."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import onnx
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient

from quantgate.architectures import ArchitectureError, lora_targets, model_inputs, ort_model_type

import tiny_encoders
from conftest import LENIENT, REPO

SUPPORT3 = str(REPO / "data" / "support3")
BERT_LINEAR = ["query", "key", "value", "output.dense", "intermediate.dense"]
EXPECTED = {  # family -> (LoRA targets, ONNX inputs)
    "bert": (BERT_LINEAR, ["input_ids", "attention_mask", "token_type_ids"]),
    "distilbert": (["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"], ["input_ids", "attention_mask"]),
    "roberta": (BERT_LINEAR, ["input_ids", "attention_mask"]),
    "xlm-roberta": (BERT_LINEAR, ["input_ids", "attention_mask"]),
}


def test_lora_targets_per_architecture_and_override():
    assert lora_targets("distilbert") == ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"]
    assert lora_targets("xlm-roberta", "auto") == BERT_LINEAR
    assert lora_targets("distilbert", "q_lin, k_lin,v_lin") == ["q_lin", "k_lin", "v_lin"]
    with pytest.raises(ArchitectureError, match="no default LoRA target modules for model_type 'gpt2'.*--lora-targets"):
        lora_targets("gpt2")


def test_ort_optimiser_model_type_and_inputs():
    from onnxruntime.transformers.optimizer import MODEL_TYPES

    for family in ("bert", "distilbert", "roberta", "xlm-roberta"):
        assert ort_model_type(family) in MODEL_TYPES
    assert ort_model_type("mpnet") is None and ort_model_type("unknown") is None
    assert model_inputs({"input_ids", "attention_mask"}, {"input_ids", "attention_mask", "token_type_ids"}) == [
        "input_ids",
        "attention_mask",
    ]


@pytest.mark.parametrize("family", tiny_encoders.FAMILIES)
def test_tiny_encoder_trains_quantises_evaluates_and_passes_the_gate(family, store, tmp_path):
    from flows import promote
    from flows.evaluate import evaluate
    from flows.quantise import quantise_one as quantise
    from flows.train import TrainConfig, train
    from quantgate.recipes import OnnxInt8DynamicRecipe as DynamicInt8Recipe

    base = tiny_encoders.build(family, tmp_path / family)
    name = f"tiny-{family}"
    cfg = TrainConfig(dataset=SUPPORT3, base_model=str(base), max_epochs=1, batch_size=32, max_length=32)
    with mlflow.start_run(run_name=f"{name}-train") as run:
        fp32 = train(cfg, name)
    params = MlflowClient().get_run(run.info.run_id).data.params
    targets, inputs = EXPECTED[family]
    assert params["architecture"] == family and params["lora_target_modules"] == ",".join(sorted(targets))
    with mlflow.start_run(run_name=f"{name}-quantise"):
        int8 = quantise(fp32, DynamicInt8Recipe())
    for mv in (fp32, int8):
        with mlflow.start_run(run_name=f"{name}-evaluate-{mv.version}"):
            metrics = evaluate(mv, dataset="auto", latency_runs=10)
        assert 0.0 <= metrics["macro_f1"] <= 1.0
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{int8.version}"))
    graph = onnx.load(str(next(local.glob("artifacts/*.onnx"))), load_external_data=False)
    assert [i.name for i in graph.graph.input] == inputs
    assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul", "QAttention") for n in graph.graph.node)
    thresholds = tmp_path / "lenient.yaml"
    thresholds.write_text(yaml.safe_dump(LENIENT))
    gate = CliRunner().invoke(
        promote.cli, ["--version", int8.version, "--model-name", name, "--thresholds", str(thresholds)]
    )
    assert gate.exit_code == 0, gate.output
    out = mlflow.pyfunc.load_model(f"models:/{name}@staging").predict(pd.DataFrame({"text": ["I was charged twice"]}))
    assert out["label"].iloc[0] in ("billing", "bug", "account")


@pytest.fixture(scope="module")
def renamed_support3(tmp_path_factory) -> Path:
    """support3 with its columns renamed (body, topic): a user's own data in its own shape."""
    folder = tmp_path_factory.mktemp("support3-renamed")
    for split in ("train", "validation", "test"):
        frame = pd.read_csv(Path(SUPPORT3) / f"{split}.csv")
        frame.rename(columns={"text": "body", "label": "topic"}).to_csv(folder / f"{split}.csv", index=False)
    (folder / "labels.txt").write_text((Path(SUPPORT3) / "labels.txt").read_text())
    return folder


@pytest.mark.parametrize("family", tiny_encoders.FAMILIES)
def test_every_cpu_recipe_builds_and_serves_for_each_family_calibrated_on_the_parents_data(
    family, renamed_support3, store, tmp_path
):
    """Before: torch-int8-dynamic traced token_type_ids, which RoBERTa, XLM-R and DistilBERT
    tokenizers do not give (and DistilBERT's third forward() parameter is head_mask); and the
    static INT8 recipes calibrated on news9 whatever the parent was trained on."""
    from flows.quantise import quantise
    from flows.train import TrainConfig, train
    from quantgate.recipes import OnnxInt8StaticRecipe, OpenVinoInt8Recipe, TorchInt8DynamicRecipe

    base = tiny_encoders.build(family, tmp_path / family)
    name = f"tiny-{family}-recipes"
    cfg = TrainConfig(
        dataset=str(renamed_support3),
        base_model=str(base),
        max_epochs=1,
        batch_size=32,
        max_length=32,
        text_column="body",
        label_column="topic",
    )
    with mlflow.start_run(run_name=f"{name}-train"):
        fp32 = train(cfg, name)
    recipes = [
        OnnxInt8StaticRecipe(calibration_size=8),
        OpenVinoInt8Recipe(calibration_size=8),
        TorchInt8DynamicRecipe(),
    ]
    with mlflow.start_run(run_name=f"{name}-quantise"):
        built = quantise(fp32, recipes)
    texts = pd.DataFrame({"text": ["I was charged twice this month", "The app crashes when I log in"]})
    for variant, mv in built.items():
        recipe = json.loads(mv.tags["recipe"])
        if "calibration_dataset" in recipe:
            assert recipe["calibration_dataset"] == str(renamed_support3), variant
            assert json.loads(recipe["calibration_options"]) == {"label_column": "topic", "text_column": "body"}
        out = mlflow.pyfunc.load_model(f"models:/{name}/{mv.version}").predict(texts)
        assert set(out["label"]) <= {"billing", "bug", "account"}, variant


@pytest.mark.parametrize("family", tiny_encoders.FAMILIES)
def test_lora_covers_every_encoder_linear_layer_and_the_head_trains_whole(family, tmp_path):
    """LoRA on the encoder blocks' linear layers (not only query/value), never on a head layer;
    the head (BERT's pooler too) trains in full."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from flows.train import TrainConfig, build_model

    base = tiny_encoders.build(family, tmp_path / family)
    plain = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=3)
    blocks = {n for n, m in plain.named_modules() if isinstance(m, torch.nn.Linear) and ".layer." in n}
    _, model = build_model(TrainConfig(base_model=str(base)), ["a", "b", "c"])
    lora = [n for n, _ in model.named_parameters() if ".lora_A" in n]
    adapted = {n.rsplit(".lora_A", 1)[0].removeprefix("base_model.model.") for n in lora}
    assert blocks and adapted == blocks, (sorted(adapted), sorted(blocks))
    head = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
    assert head and all(("classifier" in n or "pooler" in n) for n in head), head
    if family == "bert":
        assert any("pooler" in n for n in head)
