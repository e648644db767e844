"""The `quantgate` MLflow evaluator: size, latency, accuracy, parity and contract of a variant.

Registered under the ``mlflow.model_evaluator`` entry-point group, so after
``pip install -e .`` it is available to plain MLflow::

    mlflow.models.evaluate(
        "models:/news-classifier/2", test_df, model_type="classifier", targets="label",
        evaluators=["quantgate"],
        evaluator_config={"quantgate": {"parent_model_uri": "models:/news-classifier/1"}},
    )

The model must be a quantgate pyfunc (``quantgate/serving_model.py``): the evaluator times its
``encode`` (tokenisation) and ``infer`` (the network) separately. Config keys are the fields
of :class:`EvaluatorConfig`; unknown keys are an error.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models.evaluation.artifacts import ImageEvaluationArtifact, JsonEvaluationArtifact
from mlflow.models.evaluation.base import EvaluationArtifact, EvaluationResult, ModelEvaluator
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS as LOGGED_ARTIFACTS_TAG

from evaluators.measure import (
    accuracy_metrics,
    batch1_latency,
    batch_invariance,
    interleaved_speedup,
    parameter_count,
    parity_metrics,
    throughput,
)
from evaluators.metrics import confusion, flip_matrix
from evaluators.plots import confidence_bars_png, confusion_png
from quantgate.artifact_log import log_dict, log_file
from quantgate.contract import PREDICTIONS_TABLE
from quantgate.model_files import model_bytes


@dataclass(frozen=True)
class EvaluatorConfig:
    parent_model_uri: str | None = None  # the FP32 parent: parity, contract and speedup need it
    latency_runs: int = 200  # timed batch-1 calls
    warmup: int = 20  # untimed calls first
    threads: int = 2  # torch intra-op threads (ONNX Runtime reads QUANTGATE_THREADS at load)
    throughput_batch: int = 32
    speedup_blocks: int = 10  # alternating parent/variant blocks for the speedup
    ci_level: float = 0.95
    seed: int = 0
    sample_headlines: int = 4  # headlines in the confidence bar chart

    def __post_init__(self):
        checks = {
            "latency_runs": self.latency_runs >= 1,
            "warmup": self.warmup >= 0,
            "threads": self.threads >= 1,
            "throughput_batch": self.throughput_batch >= 1,
            "speedup_blocks": self.speedup_blocks >= 2,
            "ci_level": 0 < self.ci_level < 1,
            "sample_headlines": self.sample_headlines >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise MlflowException(f"quantgate evaluator config out of range: {bad}", error_code=INVALID_PARAMETER_VALUE)

    @classmethod
    def from_dict(cls, raw: dict | None) -> EvaluatorConfig:
        raw = dict(raw or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise MlflowException(
                f"unknown quantgate evaluator config key(s) {unknown}; known: {sorted(known)}",
                error_code=INVALID_PARAMETER_VALUE,
            )
        return cls(**raw)


def contract_problems(model, parent, pyfunc_metadata) -> list[str]:
    """Ways the variant breaks the contract it shares with its parent (empty when it holds)."""
    problems = []
    inputs = pyfunc_metadata.get_input_schema()
    if inputs is None or inputs.input_names() != ["text"]:
        problems.append(f"input schema must be one 'text' column, got {inputs}")
    outputs = pyfunc_metadata.get_output_schema()
    produced = list(model.predict(None, pd.DataFrame({"text": ["contract check headline"]})).columns)
    if outputs is None or outputs.input_names() != produced:
        problems.append(
            f"predict returns columns {produced} but the signature declares {outputs and outputs.input_names()}"
        )
    if parent is not None:
        if parent.labels != model.labels:
            problems.append(f"label map {model.labels} differs from the parent's {parent.labels}")
        mine, theirs = model.meta["manifest"].get("tokenizer"), parent.meta["manifest"].get("tokenizer")
        if mine != theirs:
            changed = sorted(
                k for k in set(mine or {}) | set(theirs or {}) if (mine or {}).get(k) != (theirs or {}).get(k)
            )
            problems.append(f"tokenizer files differ from the parent's: {changed}")
    return problems


def runtime_settings(model, cfg: EvaluatorConfig) -> dict[str, str]:
    """The thread and precision settings the figures were measured under (latency depends on them)."""
    import os

    recipe = model._recipe() if hasattr(model, "_recipe") else {}
    return {
        "runtime.intra_op_num_threads": os.environ.get("QUANTGATE_THREADS", "").strip() or "0 (runtime default)",
        "runtime.torch_threads": str(cfg.threads),
        "runtime.spinning": {"0": "off", "1": "on"}.get(os.environ.get("QUANTGATE_SPINNING", "").strip(), "default"),
        "runtime.inference_precision_hint": str(recipe.get("inference_precision_hint", "n/a")),
    }


def label_ids(labels, names: list[str]) -> list[int]:
    index = {name: i for i, name in enumerate(names)}
    out = []
    for i, label in enumerate(labels):
        if label not in index:
            raise MlflowException(
                f"target row {i}: label {label!r} is not one of the model's labels {names}",
                error_code=INVALID_PARAMETER_VALUE,
            )
        out.append(index[label])
    return out


def measure(model, parent, texts: list[str], y_true: list[int], cfg: EvaluatorConfig):
    """All figures for one variant. Returns (metrics, per-example frame, probs, parent probs)."""
    import torch

    torch.set_num_threads(cfg.threads)
    probs = model.predict_proba(texts, batch_size=cfg.throughput_batch)
    metrics = accuracy_metrics(y_true, probs, model.labels)
    metrics.update(batch_invariance(model, texts, probs.argmax(axis=1), batch=cfg.throughput_batch))
    metrics["size_mb"] = model_bytes(model.artifact_paths["model"]) / 1e6
    metrics["parameters"] = float(parameter_count(model))
    per_example = pd.DataFrame(
        {
            "text": texts,
            "label": [model.labels[i] for i in y_true],
            "label_id": y_true,
            "pred_id": probs.argmax(axis=1),
            "prob": probs.max(axis=1),
        }
    )
    parent_probs = None
    if parent is not None:
        parent_probs = parent.predict_proba(texts)
        metrics.update(parity_metrics(y_true, probs, parent_probs, len(model.labels)))
        metrics["parent_size_mb"] = model_bytes(parent.artifact_paths["model"]) / 1e6
        per_example["parent_pred_id"] = parent_probs.argmax(axis=1)
        per_example["parent_prob"] = parent_probs.max(axis=1)
    metrics.update(batch1_latency(model, texts, warmup=cfg.warmup, runs=cfg.latency_runs))
    metrics[f"throughput_b{cfg.throughput_batch}_per_s"] = throughput(model, texts, batch=cfg.throughput_batch)
    if parent is not None:
        metrics.update(
            interleaved_speedup(model, parent, texts, blocks=cfg.speedup_blocks, level=cfg.ci_level, seed=cfg.seed)
        )
    return metrics, per_example, probs, parent_probs


def write_artifacts(
    out: Path, model, per_example: pd.DataFrame, probs, parent_probs, cfg: EvaluatorConfig
) -> dict[str, Path]:
    labels, n = model.labels, len(model.labels)
    files = {
        "confusion_matrix": confusion_png(
            confusion(per_example["label_id"], per_example["pred_id"], n),
            labels,
            out / "confusion_matrix.png",
            "test split: true vs predicted",
        )
    }
    if parent_probs is None:
        picks = list(range(min(cfg.sample_headlines, len(per_example))))
        bars = {"this version": probs}
    else:
        disagree = np.flatnonzero(per_example["pred_id"].to_numpy() != per_example["parent_pred_id"].to_numpy())
        agree = [i for i in range(len(per_example)) if i not in set(disagree)]
        picks = (list(disagree) + agree)[: cfg.sample_headlines]  # disagreements first: where it matters
        bars = {"parent (FP32)": parent_probs, "this version": probs}
        flips = flip_matrix(per_example["parent_pred_id"], per_example["pred_id"], n)
        (out / "label_flips.json").write_text(
            json.dumps({"rows_parent_columns_variant": labels, "matrix": flips.tolist()}, indent=1)
        )
        files["label_flips"] = out / "label_flips.json"
        rows = per_example.iloc[disagree]
        (out / "disagreements.json").write_text(
            json.dumps(
                [
                    {
                        "text": r.text,
                        "label": r.label,
                        "parent": labels[r.parent_pred_id],
                        "variant": labels[r.pred_id],
                        "parent_prob": round(float(r.parent_prob), 4),
                        "variant_prob": round(float(r.prob), 4),
                    }
                    for r in rows.itertuples()
                ],
                indent=1,
            )
        )
        files["disagreements"] = out / "disagreements.json"
    texts = per_example["text"].tolist()
    files["confidence_bars"] = confidence_bars_png(
        [texts[i] for i in picks], {k: v[picks] for k, v in bars.items()}, labels, out / "confidence_bars.png"
    )
    return files


class QuantgateEvaluator(ModelEvaluator):
    @classmethod
    def can_evaluate(cls, *, model_type, evaluator_config, **kwargs) -> bool:
        return model_type in ("classifier", "text")

    def evaluate(
        self,
        *,
        model_type,
        dataset,
        run_id,
        evaluator_config,
        model=None,
        extra_metrics=None,
        custom_artifacts=None,
        predictions=None,
        **kwargs,
    ):
        import mlflow

        if model is None:
            raise MlflowException(
                "the quantgate evaluator measures a model; static predictions cannot be timed",
                error_code=INVALID_PARAMETER_VALUE,
            )
        cfg = EvaluatorConfig.from_dict(evaluator_config)
        inner = model.unwrap_python_model()
        if not hasattr(inner, "encode") or not hasattr(inner, "infer"):
            raise MlflowException(
                "the quantgate evaluator needs a quantgate pyfunc (quantgate/serving_model.py)",
                error_code=INVALID_PARAMETER_VALUE,
            )
        parent = mlflow.pyfunc.load_model(cfg.parent_model_uri).unwrap_python_model() if cfg.parent_model_uri else None
        problems = contract_problems(inner, parent, model.metadata)
        if problems:
            raise MlflowException("contract violated: " + "; ".join(problems), error_code=INVALID_PARAMETER_VALUE)
        features = dataset.features_data
        texts = (features["text"] if isinstance(features, pd.DataFrame) else pd.Series(np.ravel(features))).tolist()
        y_true = label_ids(list(np.ravel(dataset.labels_data)), inner.labels)
        metrics, per_example, probs, parent_probs = measure(inner, parent, texts, y_true, cfg)

        client = MlflowClient()
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, float(v), now, 0) for k, v in metrics.items()])
        settings = runtime_settings(inner, cfg)
        client.log_batch(run_id, tags=[mlflow.entities.RunTag(k, v) for k, v in settings.items()])
        log_dict(run_id, {"config": asdict(cfg), "runtime": settings, "metrics": metrics}, "quantgate/evaluation.json")
        with tempfile.TemporaryDirectory(prefix="quantgate-eval-") as tmp:
            table = log_predictions_table(client, run_id, per_example, Path(tmp))
            files = write_artifacts(Path(tmp), inner, per_example, probs, parent_probs, cfg)
            # file by file: MLflow writes a single file to a local store through a temporary name
            # and a rename, but copies a folder into place following any link already there (the
            # nineteenth adversarial run planted one and the upload overwrote the evidence key file)
            for path in sorted(p for p in Path(tmp).rglob("*") if p.is_file()):
                inside = path.parent.relative_to(tmp).as_posix()
                log_file(run_id, path, "quantgate" if inside == "." else f"quantgate/{inside}")
        base = client.get_run(run_id).info.artifact_uri.rstrip("/") + "/quantgate/"
        artifacts = {
            name: (ImageEvaluationArtifact if p.suffix == ".png" else JsonEvaluationArtifact)(uri=base + p.name)
            for name, p in files.items()
        }
        # the table as this process wrote it: a caller checks the stored copy against it
        artifacts[PREDICTIONS_ARTIFACT] = WrittenText(
            client.get_run(run_id).info.artifact_uri.rstrip("/") + "/" + PREDICTIONS_TABLE, table
        )
        return EvaluationResult(metrics=metrics, artifacts=artifacts, run_id=run_id)


PREDICTIONS_ARTIFACT = "predictions_table"  # the EvaluationResult artifact that holds the table as written


class WrittenText(EvaluationArtifact):
    """A text artifact whose ``content`` is the text this process wrote, byte for byte (never
    parsed, and never read back from the store, which a writer may have changed since)."""

    def __init__(self, uri: str, text: str):
        super().__init__(uri, text)

    def _load_content_from_file(self, local_artifact_path):
        return Path(local_artifact_path).read_text(encoding="utf-8")

    def _save(self, output_artifact_path):
        Path(output_artifact_path).write_text(self._content, encoding="utf-8")


def log_predictions_table(client: MlflowClient, run_id: str, table: pd.DataFrame, tmp: Path) -> str:
    """Log the per-example table as MLflow's ``log_table`` writes a .json table (split orient,
    and listed for the UI's artifact view), from a file written here; returns its content as
    written, byte for byte (two JSON parsers may read one text differently: the thirty-sixth
    adversarial run wrote an id as 0.99999999999999999, 1 to ``json`` and 0 to pandas).
    ``log_table`` itself appends to a table already at that path (one a store writer put there
    first), and its caller could only read the result back from the store."""
    path = tmp / PREDICTIONS_TABLE
    table.to_json(path, orient="split", index=False, date_format="iso")
    log_file(run_id, path)
    try:  # only the UI's list of tables: one a writer garbled is started afresh
        listed = json.loads(client.get_run(run_id).data.tags.get(LOGGED_ARTIFACTS_TAG, "[]"))
    except ValueError:
        listed = []
    listed = listed if isinstance(listed, list) else []
    entry = {"path": PREDICTIONS_TABLE, "type": "table"}
    if entry not in listed:
        client.set_tag(run_id, LOGGED_ARTIFACTS_TAG, json.dumps([*listed, entry]))
    return path.read_text(encoding="utf-8")
