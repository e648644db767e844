"""Another task end to end: the bundled 3-label support3 dataset (with leaked test rows that
--dedupe drops) through train -> onnx-int8-dynamic -> evaluate -> gate -> serve."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient

from conftest import LENIENT, REPO

SUPPORT3 = REPO / "data" / "support3"
MODEL = "support-test"
LABELS = ["billing", "bug", "account"]
LEAKED = 4


@pytest.fixture(scope="module")
def leaky(tmp_path_factory) -> Path:
    """support3 with LEAKED training rows copied into test (reworded case/punctuation only)."""
    folder = tmp_path_factory.mktemp("support3-leaky")
    for f in ("train.csv", "validation.csv", "labels.txt"):
        shutil.copy(SUPPORT3 / f, folder / f)
    train, test = pd.read_csv(SUPPORT3 / "train.csv"), pd.read_csv(SUPPORT3 / "test.csv")
    leak = train.iloc[:LEAKED].assign(text=lambda f: f["text"].str.upper() + "!")
    pd.concat([test, leak]).to_csv(folder / "test.csv", index=False)
    return folder


def _env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_EXPERIMENT_ID"}  # set by other tests' runs
    return {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "HF_HUB_OFFLINE": "1"}


def test_cross_split_duplicates_fail_in_one_line_with_exit_2(leaky, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "flows.train", "--dataset", str(leaky), "--max-epochs", "1"],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:] and errors[0].startswith("error: test split overlaps train in 4 text(s)"), proc.stderr
    assert "--dedupe" in errors[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args,problem",
    [
        (["--text-column", "body"], r"train\.csv: missing column\(s\) \['body'\]"),
        (["--labels", "billing,bug"], r"train\.csv, row \d+: label 'account' is not one of the 2 labels"),
    ],
)
def test_bad_data_options_fail_in_one_line_from_mlflow_run(args, problem, tmp_path):
    import re

    params = [x for a, v in zip(args[::2], args[1::2]) for x in ("-P", f"{a[2:].replace('-', '_')}={v}")]
    proc = subprocess.run(
        [
            "mlflow",
            "run",
            str(SUPPORT3.parent.parent),
            "-e",
            "train",
            "--env-manager",
            "local",
            "-P",
            f"dataset={SUPPORT3}",
            "-P",
            "max_epochs=1",
            *params,
        ],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and re.search(problem, errors[0]), proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def support_pipeline(store, leaky, tmp_path_factory):
    from flows import promote
    from flows.evaluate import evaluate
    from flows.quantise import quantise_one as quantise
    from flows.train import TrainConfig, train
    from quantgate.recipes import OnnxInt8DynamicRecipe as DynamicInt8Recipe

    cfg = TrainConfig(dataset=str(leaky), dedupe=True, max_epochs=2, batch_size=16, max_length=32, learning_rate=5e-3)
    with mlflow.start_run(run_name="support3-train") as run:
        fp32 = train(cfg, MODEL)
    with mlflow.start_run(run_name="support3-quantise"):
        int8 = quantise(fp32, DynamicInt8Recipe())
    metrics = {}
    for mv in (fp32, int8):
        with mlflow.start_run(run_name=f"support3-evaluate-{mv.version}"):
            metrics[mv.version] = evaluate(mv, dataset="auto", latency_runs=20)  # the data fp32 was trained on
    path = tmp_path_factory.mktemp("support3-thresholds") / "lenient.yaml"
    path.write_text(yaml.safe_dump(LENIENT))
    gate = CliRunner().invoke(
        promote.cli, ["--version", int8.version, "--model-name", MODEL, "--thresholds", str(path)]
    )
    return {"run_id": run.info.run_id, "fp32": fp32, "int8": int8, "metrics": metrics, "gate": gate}


def test_training_run_logs_labels_counts_and_what_dedupe_dropped(support_pipeline):
    run = MlflowClient().get_run(support_pipeline["run_id"])
    assert run.data.metrics["dedupe_dropped"] == LEAKED
    assert run.data.params["dedupe_dropped.test"] == str(LEAKED)
    assert run.data.params["num_labels"] == "3"
    assert run.data.params["label_counts.train"].startswith("billing=52, bug=50, account=49")
    assert run.data.params["label_counts.test"] == "billing=15, bug=14, account=14"  # the leaked copies are gone
    counts = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="label_counts.csv"))
    assert counts["label"].tolist() == LABELS and counts["total"].sum() == 151 + 22 + 43


def test_the_model_has_the_datasets_three_outputs(support_pipeline):
    from transformers import AutoConfig

    local = mlflow.artifacts.download_artifacts(f"models:/{MODEL}/{support_pipeline['fp32'].version}")
    config = AutoConfig.from_pretrained(next(Path(local).glob("artifacts/model")))
    assert config.num_labels == 3 and [config.id2label[i] for i in range(3)] == LABELS


def test_evaluation_scores_the_int8_variant_against_its_parent_on_support3(support_pipeline):
    int8 = support_pipeline["int8"]
    m = support_pipeline["metrics"][int8.version]
    assert 0.0 <= m["macro_f1"] <= 1.0 and 0.0 <= m["top1_agreement"] <= 1.0
    params = (
        MlflowClient().get_run(MlflowClient().get_model_version(MODEL, int8.version).tags["eval_run_id"]).data.params
    )
    assert params["dataset_used"].endswith("support3-leaky0") and params["data.dedupe"] == "True"


def test_gate_promotes_and_the_served_model_answers_only_its_three_labels(support_pipeline):
    gate = support_pipeline["gate"]
    assert gate.exit_code == 0, gate.output
    staged = MlflowClient().get_model_version_by_alias(MODEL, "staging")
    assert staged.version == support_pipeline["int8"].version
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@staging")
    texts = [
        "I was charged twice this month",
        "The export button crashes the app",
        "How do I reset my password?",
        "Striker signs for Lisbon club",
    ]
    out = model.predict(pd.DataFrame({"text": texts}), params={"top_k": 3})
    assert set(out["label"]) <= set(LABELS)
    assert all(sorted(t["label"] for t in top) == sorted(LABELS) for top in out["top_k"])
    with pytest.raises(Exception, match="top_k must be an integer from 1 to 3"):
        model.predict(pd.DataFrame({"text": texts[:1]}), params={"top_k": 4})
