"""evaluate: measure one registered version and record the figures on it.

Reads: ``--version`` (number, ``name@alias`` or ``models:/`` URI) and its ``parent_version``
tag, if any. Records, in an MLflow run and on the version's logged model: macro F1,
accuracy and per-class F1 on the test split, size on disk (MB), batch-1 latency
p50/p90/p95/p99 after warm-up, and parity with the parent (top-1 agreement, F1 drop,
|delta prob|). Hands on: version tags ``eval_run_id``, ``eval_status`` and
``eval_manifest_sha256`` (which files were measured), read by ``promote``.
"""
from __future__ import annotations

import importlib.metadata as md
import json
import os

import click
import mlflow
import torch
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from evaluators.measure import accuracy_metrics, batch1_latency, host_fingerprint, parity_metrics, size_bytes
from flows.data import dataset_digest, load_dataset
from flows.tracking import DEFAULT_MODEL_NAME, configure_tracking, resolve_version, version_uri

EVAL_PREDICTIONS = "eval_predictions.json"  # artifact: one row per test item


def evaluate(mv: ModelVersion, *, dataset: str = "news9", latency_runs: int = 200, threads: int = 2) -> dict[str, float]:
    client = MlflowClient()
    torch.set_num_threads(threads)
    os.environ["QUANTGATE_THREADS"] = str(threads)  # read by the ONNX Runtime backend at load
    test = load_dataset(dataset, ("train", "test"))
    y_true = test["test"].label_ids
    model = mlflow.pyfunc.load_model(version_uri(mv)).unwrap_python_model()
    probs = model.predict_proba(test["test"].texts)
    metrics = accuracy_metrics(y_true, probs, model.labels)
    metrics["size_mb"] = size_bytes(model.artifact_paths["model"]) / 1e6
    parent = mv.tags.get("parent_version")
    if parent:
        parent_model = mlflow.pyfunc.load_model(f"models:/{mv.name}/{parent}").unwrap_python_model()
        if parent_model.labels != model.labels:
            raise click.ClickException(
                f"version {mv.version} labels {model.labels} differ from parent {parent}'s {parent_model.labels}"
            )
        parent_probs = parent_model.predict_proba(test["test"].texts)
        metrics.update(parity_metrics(y_true, probs, parent_probs, len(model.labels)))
        metrics["parent_size_mb"] = size_bytes(parent_model.artifact_paths["model"]) / 1e6
        del parent_model
    metrics.update(batch1_latency(model, test["test"].texts, runs=latency_runs))
    # Per-example outcomes: what paired statistics (bootstrap intervals in the gate) resample.
    per_example = test["test"].frame[["text", "label", "label_id"]].assign(
        pred_id=probs.argmax(axis=1), prob=probs.max(axis=1),
        **({"parent_pred_id": parent_probs.argmax(axis=1)} if parent else {}),
    )

    tags = {
        "quantgate.step": "evaluate",
        "quantgate.evaluated_version": mv.version,
        "quantgate.variant": mv.tags.get("variant", ""),
        "manifest_sha256": mv.tags.get("manifest_sha256", ""),
        "threads": str(threads),
        **host_fingerprint(),
        **{f"lib.{p}": md.version(p) for p in ("torch", "onnxruntime", "transformers", "mlflow")},
    }
    mlflow.set_tags(tags)
    mlflow.log_params({"model_uri": version_uri(mv), "dataset": dataset, "dataset_digest": dataset_digest(test), "latency_runs": latency_runs})
    mlflow.log_metrics(metrics)
    if mv.model_id:  # MLflow 3: the UI shows these per logged model
        mlflow.log_metrics(metrics, model_id=mv.model_id)
    mlflow.log_dict(metrics, "metrics.json")
    mlflow.log_table(per_example, EVAL_PREDICTIONS)
    run_id = mlflow.active_run().info.run_id
    for key, value in {
        "eval_run_id": run_id,
        "eval_status": "complete",
        "eval_manifest_sha256": mv.tags.get("manifest_sha256", ""),
    }.items():
        client.set_model_version_tag(mv.name, mv.version, key, value)
    shown = {k: round(v, 4) for k, v in metrics.items() if not k.startswith("f1.")}
    click.echo(f"{mv.name} v{mv.version} ({mv.tags.get('variant')}): {json.dumps(shown)}")
    return metrics


@click.command("evaluate", help=__doc__)
@click.option("--version", "version_ref", required=True, help="Version to evaluate: 3, news-classifier/3, news-classifier@staging or models:/…")
@click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True)
@click.option("--dataset", default="news9", show_default=True)
@click.option("--latency-runs", default=200, show_default=True, type=int, help="Timed batch-1 calls (after 20 warm-up calls).")
@click.option("--threads", default=2, show_default=True, type=int, help="Intra-op threads for torch and ONNX Runtime.")
def cli(version_ref, model_name, dataset, latency_runs, threads):
    configure_tracking()
    mv = resolve_version(version_ref, model_name)
    with mlflow.start_run(run_name=f"evaluate-v{mv.version}"):
        try:
            evaluate(mv, dataset=dataset, latency_runs=latency_runs, threads=threads)
        except Exception as exc:
            MlflowClient().set_model_version_tag(mv.name, mv.version, "eval_status", f"failed: {type(exc).__name__}")
            raise


if __name__ == "__main__":
    cli()
