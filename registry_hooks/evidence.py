"""What the gate decides on, read from the registry (the MLflow edge for reading).

For one registered version this collects, in order, stopping at the first group of problems:

1. the version's tags: evaluated (``eval_status=complete``), on the files registered now
   (``eval_manifest_sha256 == manifest_sha256``), for the target's device;
2. its evaluation run: finished, about this version and these files, measured on a host that
   matches the target's ``host:`` requirements;
3. the files themselves: SHA-256 recomputed over the registered version's artifacts and
   compared with the manifest the evaluation recorded. MLflow keeps no checksums, so tags
   alone would not notice a file changed in the artifact store after evaluation;
4. paired statistics from the evaluation's per-example predictions: the bootstrap interval
   of the macro-F1 drop and the worst class's F1 drop.

Nothing is written here.
"""
from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd
import yaml
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from flows.packaging import manifest, manifest_digest
from registry_hooks.gate import host_mismatches
from registry_hooks.stats import paired_bootstrap_f1_drop, per_class_f1_drop_points
from registry_hooks.thresholds import Thresholds

EVAL_PREDICTIONS = "eval_predictions.json"  # written by flows/evaluate.py: one row per test example
# The tags a verdict relies on; promote re-reads them under the lock before moving the alias.
SNAPSHOT_TAGS = ("eval_run_id", "eval_status", "eval_manifest_sha256", "manifest_sha256")
PAIRED_RULES = ("max_macro_f1_drop_points", "max_worst_class_f1_drop_points")


@dataclass
class Evidence:
    """Metrics to judge (evaluation run + gate-computed), or the problems that forbid judging."""

    metrics: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # context for people (worst class, bootstrap size)
    snapshot: dict[str, str | None] = field(default_factory=dict)


def tag_problems(tags: Mapping[str, str], target: str | None = None) -> list[str]:
    """Why the version's own tags say its evaluation cannot be trusted (empty when it can)."""
    problems = []
    if tags.get("eval_status") != "complete":
        problems.append(f"evaluation missing or incomplete (eval_status={tags.get('eval_status')!r})")
    if not tags.get("eval_run_id"):
        problems.append("no eval_run_id tag: the version was never evaluated")
    manifest_tag, evaluated = tags.get("manifest_sha256"), tags.get("eval_manifest_sha256")
    if not manifest_tag:
        problems.append("no manifest_sha256 tag: the version's files were never fingerprinted")
    elif manifest_tag != evaluated:
        problems.append(f"stale evaluation: files' manifest {manifest_tag!r} differs from the evaluated {evaluated!r}")
    if target is not None and tags.get("device") != target:
        problems.append(f"version is built for device {tags.get('device')!r}, not for target {target!r}")
    return problems


def run_problems(version: str, tags: Mapping[str, str], run_status: str, run_tags: Mapping[str, str]) -> list[str]:
    """Why the evaluation run named by the version's ``eval_run_id`` is not its evaluation."""
    problems = []
    run_id = tags.get("eval_run_id")
    if run_status != "FINISHED":
        problems.append(f"evaluation run {run_id} is {run_status}, not FINISHED")
    measured = run_tags.get("quantgate.evaluated_version")
    if measured != str(version):
        problems.append(f"evaluation run {run_id} measured version {measured!r}, not version {version}")
    if run_tags.get("manifest_sha256") != tags.get("manifest_sha256"):
        problems.append(
            f"evaluation run {run_id} measured files with manifest {run_tags.get('manifest_sha256')!r}, "
            f"the version's are {tags.get('manifest_sha256')!r}"
        )
    return problems


def changed_files(actual: Mapping[str, Mapping[str, str]], recorded: Mapping[str, Mapping[str, str]]) -> list[str]:
    """``artifact/file`` names whose digest differs between two manifests (or exist in one only)."""
    out = []
    for key in sorted(set(actual) | set(recorded)):
        a, r = actual.get(key, {}), recorded.get(key, {})
        out += [f"{key}/{name}" for name in sorted(set(a) | set(r)) if a.get(name) != r.get(name)]
    return out


def registered_files_manifest(mv: ModelVersion) -> tuple[dict, dict]:
    """Download the version's files and recompute their SHA-256 manifest.

    Returns (recomputed manifest, manifest recorded in the model's ``meta.json``). The
    recomputed one covers every pyfunc artifact except ``meta`` (which holds the manifest), the
    same way ``flows.packaging`` built it when the version was registered.
    """
    with tempfile.TemporaryDirectory(prefix="quantgate-gate-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{mv.name}/{mv.version}", dst_path=tmp))
        mlmodel = yaml.safe_load((local / "MLmodel").read_text(encoding="utf-8"))
        artifacts = mlmodel.get("flavors", {}).get("python_function", {}).get("artifacts") or {}
        paths = {key: str(local / spec["path"]) for key, spec in artifacts.items() if key != "meta"}
        actual = manifest(paths)
        recorded = {}
        if "meta" in artifacts:
            try:
                recorded = json.loads((local / artifacts["meta"]["path"]).read_text(encoding="utf-8")).get("manifest", {})
            except (OSError, ValueError):
                recorded = {}
    return actual, recorded


def freshness_problems(mv: ModelVersion) -> list[str]:
    """Refuse a version whose files, hashed now, differ from the files its evaluation measured."""
    evaluated = mv.tags.get("eval_manifest_sha256", "")
    try:
        actual, recorded = registered_files_manifest(mv)
    except (MlflowException, OSError, ValueError, KeyError) as exc:
        return [f"cannot read the registered files to check them: {exc}"]
    digest = manifest_digest(actual)
    if digest == evaluated:
        return []
    changed = changed_files(actual, recorded)
    where = f" (differs: {', '.join(changed)})" if changed else ""
    return [
        f"files changed since evaluation: SHA-256 manifest of the registered files is {digest[:16]}…, "
        f"the evaluation measured {evaluated[:16]}…{where}"
    ]


def paired_metrics(table: pd.DataFrame, n_classes: int, thresholds: Thresholds) -> tuple[dict[str, float], list[str], list[str]]:
    """Bootstrap interval of the macro-F1 drop and the worst class's F1 drop, from the
    per-example predictions. Returns (metrics, notes, problems); pure (no MLflow)."""
    needed = ["label_id", "pred_id", "parent_pred_id"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        why = " (a version without a parent has nothing to compare with)" if "parent_pred_id" in missing else ""
        return {}, [], [f"{EVAL_PREDICTIONS} lacks column(s) {missing}{why}: the F1-drop limits cannot be checked"]
    if table[needed].isna().any().any() or len(table) == 0:
        return {}, [], [f"{EVAL_PREDICTIONS} is empty or has blank ids: the F1-drop limits cannot be checked"]
    y, a, b = (table[c].astype(int).to_numpy() for c in needed)
    try:
        interval = paired_bootstrap_f1_drop(
            y, a, b, n_classes,
            level=thresholds.confidence_level, resamples=thresholds.bootstrap_resamples, seed=thresholds.bootstrap_seed,
        )
        per_class = per_class_f1_drop_points(y, a, b, n_classes)
    except ValueError as exc:
        return {}, [], [f"{EVAL_PREDICTIONS}: {exc}"]
    names = dict(zip(table["label_id"].astype(int), table["label"].astype(str))) if "label" in table else {}
    worst = int(per_class.argmax())
    metrics = {
        "macro_f1_drop_points_bootstrap_point": interval.point,
        "macro_f1_drop_points_ci_low": interval.low,
        "macro_f1_drop_points_ci_high": interval.high,
        "macro_f1_drop_points_ci_level": interval.level,
        "worst_class_f1_drop_points": float(per_class[worst]),
    }
    notes = [
        f"paired bootstrap: {interval.resamples} resamples of {len(y)} test examples (seed {thresholds.bootstrap_seed}); "
        f"the models disagree on {int((a != b).sum())} of them",
        f"worst class: {names.get(worst, worst)}, F1 down {per_class[worst]:.2f} points from the parent (point estimate)",
    ]
    return metrics, notes, []


def consistency_problems(metrics: Mapping[str, float]) -> list[str]:
    """The predictions table must reproduce the recorded drop, or it is not this evaluation's."""
    recorded, recomputed = metrics.get("macro_f1_drop_points"), metrics.get("macro_f1_drop_points_bootstrap_point")
    if recorded is None or recomputed is None or abs(recorded - recomputed) <= 1e-4:
        return []
    return [f"{EVAL_PREDICTIONS} gives a macro-F1 drop of {recomputed:.4f} points, the evaluation recorded {recorded:.4f}"]


def _n_classes(metrics: Mapping[str, float], table: pd.DataFrame) -> int:
    """Macro F1 averages over every label of the model; the evaluator logs one ``f1.<label>`` each."""
    per_class = sum(1 for k in metrics if k.startswith("f1."))
    if per_class:
        return per_class
    cols = [c for c in ("label_id", "pred_id", "parent_pred_id") if c in table]
    return int(table[cols].max().max()) + 1


def gather(mv: ModelVersion, thresholds: Thresholds, client: MlflowClient | None = None) -> Evidence:
    """Everything the gate needs about one version; stops at the first group of problems."""
    client = client or MlflowClient()
    tags = dict(mv.tags)
    ev = Evidence(snapshot={k: tags.get(k) for k in SNAPSHOT_TAGS})
    ev.problems = tag_problems(tags, thresholds.target)
    if ev.problems:
        return ev
    try:
        run = client.get_run(tags["eval_run_id"])
    except MlflowException as exc:
        ev.problems = [f"evaluation run {tags['eval_run_id']} unreadable: {exc.message}"]
        return ev
    ev.metrics = dict(run.data.metrics)
    ev.problems = run_problems(mv.version, tags, run.info.status, run.data.tags)
    ev.problems += host_mismatches(thresholds.host_requirements(), run.data.tags)
    if ev.problems:
        return ev
    ev.problems = freshness_problems(mv)
    if ev.problems:
        return ev
    if any(getattr(thresholds, key) is not None for key in PAIRED_RULES):
        try:
            # the run's own experiment: mlflow.load_table would search the *active* one, and
            # an evaluation made under `main` lives in another experiment than a later gate
            table = client.load_table(run.info.experiment_id, EVAL_PREDICTIONS, run_ids=[run.info.run_id])
        except MlflowException as exc:
            ev.problems = [f"evaluation run {run.info.run_id} has no readable {EVAL_PREDICTIONS}: {exc.message}"]
            return ev
        paired, ev.notes, ev.problems = paired_metrics(table, _n_classes(ev.metrics, table), thresholds)
        ev.metrics.update(paired)
        ev.problems += consistency_problems(ev.metrics)
    return ev
