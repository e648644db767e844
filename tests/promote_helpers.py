"""Helpers for gate tests: cheap but real registered versions with real evaluation runs, and
the worker that runs one promotion in a separate process."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import click
import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from quantgate.model_files import artifact_sha256, download, metrics_digest, model_manifest
from quantgate.model_files import digest as model_digest
from quantgate.packaging import manifest, manifest_digest

TRIVIAL_MODEL = Path(__file__).resolve().parent / "trivial_model.py"
HOST_TAGS = {"host.cpu": "test-cpu", "host.isa": "avx2", "host.cores": "2", "host.machine": "x86_64", "threads": "2"}


def log_trivial_model(name: str) -> tuple[str, str]:
    """Log one trivial pyfunc (from code, with a small weights file) into a run; return
    (model URI, its files' manifest digest, computed the way quantgate.packaging does)."""
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights.bin"
        weights.write_bytes(os.urandom(256))
        digest = manifest_digest(manifest({"model": str(weights)}))
        with mlflow.start_run(run_name=f"log-{name}"):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(TRIVIAL_MODEL),
                artifacts={"model": str(weights)},
                pip_requirements=["mlflow"],
            )
    return info.model_uri, digest


def _evaluation_metrics(macro_f1: float, latency_p95_ms: float, size_mb: float) -> dict[str, float]:
    """The figures an evaluation run logs, every quality figure equal to ``macro_f1``."""
    return {
        "macro_f1": macro_f1,
        "accuracy": macro_f1,
        "f1.a": macro_f1,
        "f1.b": macro_f1,
        "f1.c": macro_f1,
        "latency_p95_ms": latency_p95_ms,
        "size_mb": size_mb,
        "top1_agreement": 1.0,
        "parent_macro_f1": 1.0,
        "macro_f1_drop_points": 0.0,
    }


def _predictions_table() -> pd.DataFrame:
    """A per-example predictions table of 60 rows, every prediction right and equal to the parent's."""
    y = np.arange(60) % 3
    return pd.DataFrame(
        {
            "text": [f"t{i}" for i in y],
            "label": [f"c{i}" for i in y],
            "label_id": y,
            "pred_id": y,
            "prob": 0.9,
            "parent_pred_id": y,
        }
    )


def _log_evaluation_run(name: str, version: str, digest: str, model_sha256: str, metrics: dict) -> tuple[str, str, str]:
    """Log an evaluation run of ``version`` as flows.evaluate records it; return (run id, metrics
    digest, predictions table digest)."""
    with mlflow.start_run(run_name=f"evaluate-{name}-v{version}") as run:
        mlflow.log_metrics(metrics)
        mlflow.set_tags(
            {
                "quantgate.evaluated_version": version,
                "manifest_sha256": digest,
                "model_sha256": model_sha256,
                **HOST_TAGS,
            }
        )
        mlflow.log_table(_predictions_table(), "eval_predictions.json")
        figures = metrics_digest(MlflowClient().get_run(run.info.run_id).data.metrics)  # as flows.evaluate records it
        predictions = artifact_sha256(run.info.run_id, "eval_predictions.json")
        mlflow.set_tags({"quantgate.metrics_sha256": figures, "quantgate.predictions_sha256": predictions})
    return run.info.run_id, figures, predictions


def register_evaluated_version(
    name: str,
    model_uri: str,
    digest: str,
    *,
    latency_p95_ms: float,
    macro_f1: float = 0.95,
    eval_status: str = "complete",
    stale: bool = False,
    device: str = "cpu",
    size_mb: float = 0.01,
) -> str:
    """Register ``model_uri`` as a new version of ``name`` with a real evaluation run: metrics,
    host tags, a per-example predictions table, and the version tags evaluate writes."""
    client = MlflowClient()
    mv = mlflow.register_model(model_uri, name)
    version = str(mv.version)
    with tempfile.TemporaryDirectory() as tmp:  # what quantgate.packaging records at registration
        model_sha256 = model_digest(model_manifest(download(model_uri, tmp)))
    metrics = _evaluation_metrics(macro_f1, latency_p95_ms, size_mb)
    run_id, figures, predictions = _log_evaluation_run(name, version, digest, model_sha256, metrics)
    tags = {
        "model_sha256": model_sha256,
        "eval_model_sha256": model_sha256,
        "eval_metrics_sha256": figures,
        "eval_predictions_sha256": predictions,
        "variant": "trivial-int8",
        "precision": "int8",
        "runtime": "onnxruntime",
        "device": device,
        "parent_version": "0",
        "manifest_sha256": digest,
        "eval_run_id": run_id,
        "eval_status": eval_status,
        "eval_manifest_sha256": "0" * 64 if stale else digest,
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    return version


# ------------------------------------------------------------ the worker of the concurrency test
_BARRIER = None


def init_worker(tracking_uri: str, barrier) -> None:
    """Pool initializer: point this process at the test store; keep the barrier for later."""
    global _BARRIER
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    os.environ["MLFLOW_EXPERIMENT_NAME"] = "quantgate"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    mlflow.set_tracking_uri(tracking_uri)
    _BARRIER = barrier


def gate_one(args: tuple[str, str, str]) -> tuple[str, int, str]:
    """Wait until every worker is ready, then promote one version through the CLI's code path.
    Returns (version, exit code, error text)."""
    from flows.promote import run_gate

    version, model_name, thresholds_path = args
    _BARRIER.wait(timeout=120)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = run_gate(
                version_ref=version, candidates=False, model_name=model_name, thresholds_path=thresholds_path
            )
        return version, code, ""
    except click.ClickException as exc:
        return version, 2, exc.format_message() + "\n" + out.getvalue()
    except Exception as exc:  # reported to the test, which fails with it
        return version, 3, f"{type(exc).__name__}: {exc}\n{out.getvalue()}"


def derive_evaluation(mv, source_run_id: str, order: np.ndarray) -> str:
    """Record an evaluation for ``mv``, a copy of an evaluated model whose outputs are the
    source's permuted by ``order`` (output i = source output order[i]): its predictions are
    the source evaluation's mapped through the permutation, its quality metrics recomputed
    from them, its timing and size figures the source's. Returns the new run's id."""
    from evaluators.metrics import accuracy, agreement, macro_f1, per_class_f1

    client = MlflowClient()
    source = client.get_run(source_run_id)
    # in the run's own experiment (mlflow.load_table searches only the active one, which other tests move)
    table = client.load_table(source.info.experiment_id, "eval_predictions.json", run_ids=[source_run_id])
    inverse = np.argsort(order)  # source class c now comes out as class inverse[c]
    table["pred_id"] = inverse[table["pred_id"].astype(int).to_numpy()]
    n = sum(1 for k in source.data.metrics if k.startswith("f1."))
    names = dict(zip(table["label_id"].astype(int), table["label"].astype(str)))  # id -> label
    y, pred, parent = (table[c].astype(int).tolist() for c in ("label_id", "pred_id", "parent_pred_id"))
    metrics = dict(source.data.metrics)
    metrics.update(
        {
            "macro_f1": macro_f1(y, pred, n),
            "accuracy": accuracy(y, pred),
            "top1_agreement": agreement(pred, parent),
            "macro_f1_drop_points": (macro_f1(y, parent, n) - macro_f1(y, pred, n)) * 100,
            **{f"f1.{names[i].replace('/', '_')}": float(f1) for i, f1 in enumerate(per_class_f1(y, pred, n))},
        }
    )
    with mlflow.start_run(run_name=f"derived-evaluate-v{mv.version}") as run:
        mlflow.log_metrics(metrics)
        mlflow.set_tags(
            {
                **{k: v for k, v in source.data.tags.items() if k.startswith("host.") or k == "threads"},
                "quantgate.evaluated_version": str(mv.version),
                "manifest_sha256": mv.tags["manifest_sha256"],
                "model_sha256": mv.tags["model_sha256"],
                "quantgate.derived_from_run": source_run_id,
            }
        )
        mlflow.log_table(table.drop(columns=[c for c in ("run_id",) if c in table]), "eval_predictions.json")
        figures = metrics_digest(client.get_run(run.info.run_id).data.metrics)
        predictions = artifact_sha256(run.info.run_id, "eval_predictions.json")
        mlflow.set_tags({"quantgate.metrics_sha256": figures, "quantgate.predictions_sha256": predictions})
    for key, value in {
        "eval_run_id": run.info.run_id,
        "eval_status": "complete",
        "eval_manifest_sha256": mv.tags["manifest_sha256"],
        "eval_model_sha256": mv.tags["model_sha256"],
        "eval_metrics_sha256": figures,
        "eval_predictions_sha256": predictions,
    }.items():
        client.set_model_version_tag(mv.name, mv.version, key, value)
    return run.info.run_id
