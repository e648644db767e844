"""What the gate decides on, read from the registry (the MLflow edge for reading).

For one registered version this collects, in order, stopping at the first group of problems:

1. the version's tags: evaluated (``eval_status=complete``), on the files registered now
   (``eval_manifest_sha256 == manifest_sha256`` and ``eval_model_sha256 == model_sha256``),
   with a digest of the evaluation's logged figures, for the target's device;
2. its evaluation run: active (not deleted), FINISHED, about this version and these files,
   its logged metrics unchanged since evaluation (their SHA-256, recorded by ``evaluate`` on
   the run and on the version, is recomputed), measured on a host that matches the target's
   ``host:`` requirements;
3. the files themselves, downloaded from the registry: the SHA-256 of *every* file of the
   logged model (``MLmodel``, the pyfunc code, requirements, every artifact incl. ``meta.json``)
   must equal the registry's ``model_sha256`` tag, and the artifacts' manifest the evaluated
   one. MLflow keeps no checksums, so tags alone would not notice a file changed in the
   artifact store after evaluation. The size limit is judged on the size recomputed from
   these files, never on the logged figure;
4. paired statistics from the evaluation's per-example predictions: the bootstrap interval
   of the macro-F1 drop and the worst class's F1 drop.

Step 2 also requires the run to be the version's latest evaluation, and, when an evidence key
is set (``QUANTGATE_EVIDENCE_KEY``, see ``quantgate.evidence_signing``), the evaluation's
signature and the parent's attestation (``registry_hooks.gate.provenance``): the digests above
are plain SHA-256 values in the same store, which a writer to it could recompute; a signature
needs a key it does not hold.

Nothing is written here.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from quantgate.artifact_download import LinkInStoreError, download_artifacts
from quantgate.contract import (
    EVAL_COMPLETE,
    EVAL_MANIFEST_TAG,
    EVAL_METRICS_DIGEST_TAG,
    EVAL_MODEL_DIGEST_TAG,
    EVAL_PREDICTIONS_DIGEST_TAG,
    EVAL_RUN_TAG,
    EVAL_SIGNATURE_TAG,
    EVAL_STATUS_TAG,
    MANIFEST_TAG,
    METRICS_DIGEST_TAG,
    MODEL_DIGEST_TAG,
    PREDICTIONS_DIGEST_TAG,
    PREDICTIONS_TABLE,
)
from quantgate.model_files import digest_problem, metrics_digest, model_bytes, pyfunc_artifacts
from quantgate.packaging import manifest, manifest_digest
from quantgate.serving_model import sha256_file
from registry_hooks.gate.decision import host_mismatches
from registry_hooks.gate.provenance import run_superseded
from registry_hooks.gate.stats import paired_bootstrap_f1_drop, per_class_f1_drop_points
from registry_hooks.gate.thresholds import Thresholds

# The tags a verdict relies on; promote re-reads them under the lock before moving the alias.
SNAPSHOT_TAGS = (
    EVAL_RUN_TAG,
    EVAL_STATUS_TAG,
    EVAL_MANIFEST_TAG,
    MANIFEST_TAG,
    MODEL_DIGEST_TAG,
    EVAL_MODEL_DIGEST_TAG,
    EVAL_METRICS_DIGEST_TAG,
    EVAL_PREDICTIONS_DIGEST_TAG,
    EVAL_SIGNATURE_TAG,
)
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
    if tags.get(EVAL_STATUS_TAG) != EVAL_COMPLETE:
        problems.append(f"evaluation missing or incomplete (eval_status={tags.get('eval_status')!r})")
    if not tags.get(EVAL_RUN_TAG):
        problems.append("no eval_run_id tag: the version was never evaluated")
    manifest_tag, evaluated = tags.get(MANIFEST_TAG), tags.get(EVAL_MANIFEST_TAG)
    if not manifest_tag:
        problems.append("no manifest_sha256 tag: the version's files were never fingerprinted")
    elif manifest_tag != evaluated:
        problems.append(f"stale evaluation: files' manifest {manifest_tag!r} differs from the evaluated {evaluated!r}")
    model_tag = tags.get(MODEL_DIGEST_TAG)
    if not model_tag:
        problems.append(
            f"no {MODEL_DIGEST_TAG} tag: the version's files (MLmodel, code, artifacts) were never "
            "fingerprinted; re-register it with a current quantgate and evaluate it again"
        )
    elif model_tag != tags.get(EVAL_MODEL_DIGEST_TAG):
        problems.append(
            f"stale evaluation: the model's files {model_tag[:16]}… are not the evaluated "
            f"{(tags.get(EVAL_MODEL_DIGEST_TAG) or 'none')[:16]}…; evaluate it again"
        )
    if not tags.get(EVAL_METRICS_DIGEST_TAG):
        problems.append(
            f"no {EVAL_METRICS_DIGEST_TAG} tag: the evaluation's figures cannot be checked for later "
            "edits; evaluate it again"
        )
    if target is not None and tags.get("device") != target:
        problems.append(f"version is built for device {tags.get('device')!r}, not for target {target!r}")
    return problems


def run_problems(
    version: str,
    tags: Mapping[str, str],
    run_status: str,
    run_tags: Mapping[str, str],
    lifecycle_stage: str = "active",
    metrics: Mapping[str, float] | None = None,
) -> list[str]:
    """Why the evaluation run named by the version's ``eval_run_id`` is not its evaluation
    (or its figures are no longer the ones it recorded)."""
    problems = []
    run_id = tags.get(EVAL_RUN_TAG)
    if lifecycle_stage != "active":
        problems.append(f"evaluation run {run_id} is {lifecycle_stage}, not active: a deleted run is no evidence")
    if run_status != "FINISHED":
        problems.append(f"evaluation run {run_id} is {run_status}, not FINISHED")
    measured = run_tags.get("quantgate.evaluated_version")
    if measured != str(version):
        problems.append(f"evaluation run {run_id} measured version {measured!r}, not version {version}")
    if run_tags.get(MANIFEST_TAG) != tags.get(MANIFEST_TAG):
        problems.append(
            f"evaluation run {run_id} measured files with manifest {run_tags.get('manifest_sha256')!r}, "
            f"the version's are {tags.get('manifest_sha256')!r}"
        )
    if run_tags.get(MODEL_DIGEST_TAG) != tags.get(MODEL_DIGEST_TAG):
        problems.append(
            f"evaluation run {run_id} measured model files {run_tags.get(MODEL_DIGEST_TAG)!r}, "
            f"the version's are {tags.get(MODEL_DIGEST_TAG)!r}"
        )
    if metrics is not None:
        now = metrics_digest(metrics)
        recorded = {run_tags.get(METRICS_DIGEST_TAG), tags.get(EVAL_METRICS_DIGEST_TAG)}
        if recorded != {now}:
            problems.append(
                f"evaluation run {run_id}'s metrics changed after evaluation (SHA-256 now {now[:16]}…, "
                f"recorded {sorted(str(r)[:16] for r in recorded)}): a figure was re-logged by hand; "
                "evaluate again"
            )
    return problems


def predictions_problems(run_id: str, run_tags: Mapping[str, str], tags: Mapping[str, str], now: str) -> list[str]:
    """Why the predictions table the bootstrap would read is not the one the evaluation wrote
    (``now``: its SHA-256 as the artifact store holds it): repeated or edited rows narrow or
    shift the F1-drop interval without moving its point estimate."""
    recorded = {run_tags.get(PREDICTIONS_DIGEST_TAG), tags.get(EVAL_PREDICTIONS_DIGEST_TAG)}
    if recorded & {None, ""}:
        return [
            f"evaluation run {run_id} has no recorded SHA-256 of its {PREDICTIONS_TABLE} (evaluated by an older "
            "quantgate, or the tag was removed): the F1-drop limits cannot trust it; evaluate again"
        ]
    if recorded != {now}:
        return [
            f"evaluation run {run_id}'s {PREDICTIONS_TABLE} changed after evaluation (SHA-256 now {now[:16]}…, "
            f"recorded {sorted(str(r)[:16] for r in recorded)}); evaluate again"
        ]
    return []


def predictions_table(run, tags: Mapping[str, str]) -> tuple[pd.DataFrame | None, list[str]]:
    """The evaluation run's predictions table, downloaded once: its bytes are hashed and checked
    (:func:`predictions_problems`) before they are parsed, so the table judged is the table hashed."""
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory(prefix="quantgate-gate-") as tmp:
        try:
            path = download_artifacts(run_id=run_id, artifact_path=PREDICTIONS_TABLE, dst_path=tmp)
        except MlflowException as exc:
            return None, [f"evaluation run {run_id} has no readable {PREDICTIONS_TABLE}: {exc.message}"]
        except LinkInStoreError as exc:
            return None, [f"evaluation run {run_id}'s {PREDICTIONS_TABLE}: {exc}"]
        problems = predictions_problems(run_id, run.data.tags, tags, sha256_file(path))
        # read as mlflow.load_table reads a .json table
        return (None, problems) if problems else (pd.read_json(path, orient="split"), [])


def changed_files(actual: Mapping[str, Mapping[str, str]], recorded: Mapping[str, Mapping[str, str]]) -> list[str]:
    """``artifact/file`` names whose digest differs between two manifests (or exist in one only)."""
    out = []
    for key in sorted(set(actual) | set(recorded)):
        a, r = actual.get(key, {}), recorded.get(key, {})
        out += [f"{key}/{name}" for name in sorted(set(a) | set(r)) if a.get(name) != r.get(name)]
    return out


@dataclass
class RegisteredFiles:
    """What the gate re-derives from the version's files, downloaded from the registry."""

    actual: dict  # artifacts' manifest, recomputed
    recorded: dict  # the manifest in the model's own meta.json (only to name changed files)
    model_problem: str | None  # whole-model digest vs the registry's model_sha256 tag
    size_mb: float | None  # size of the ``model`` artifact, as the evaluator defines it


def registered_files(mv: ModelVersion) -> RegisteredFiles:
    """Download the version's files; recompute the artifacts' manifest, the whole-model
    digest and the model's size.

    The artifacts' manifest covers every pyfunc artifact except ``meta`` (which holds the
    manifest), the way ``quantgate.packaging`` built it; the whole-model digest covers every file.
    """
    with tempfile.TemporaryDirectory(prefix="quantgate-gate-") as tmp:
        local = Path(download_artifacts(artifact_uri=f"models:/{mv.name}/{mv.version}", dst_path=tmp))
        model_problem = digest_problem(local, dict(mv.tags))
        artifacts = pyfunc_artifacts(local)  # a garbled MLmodel: ModelIntegrityError, a ValueError
        paths = {key: str(local / path) for key, path in artifacts.items() if key != "meta"}
        actual = manifest(paths)
        size_mb = model_bytes(paths["model"]) / 1e6 if "model" in paths and Path(paths["model"]).exists() else None
        recorded = {}
        if "meta" in artifacts:
            try:
                recorded = json.loads((local / artifacts["meta"]).read_text(encoding="utf-8")).get("manifest", {})
            except (OSError, ValueError):
                recorded = {}
    return RegisteredFiles(actual, recorded, model_problem, size_mb)


def freshness_problems(mv: ModelVersion) -> tuple[list[str], float | None]:
    """Refuse a version whose files, hashed now, differ from the files its evaluation measured.
    Returns (problems, the model's size in MB recomputed from the files)."""
    evaluated = mv.tags.get(EVAL_MANIFEST_TAG, "")
    try:
        files = registered_files(mv)
    except (MlflowException, OSError, ValueError, KeyError) as exc:
        return [f"cannot read the registered files to check them: {exc}"], None
    problems = []
    digest = manifest_digest(files.actual)
    if digest != evaluated:
        changed = changed_files(files.actual, files.recorded)
        where = f" (differs: {', '.join(changed)})" if changed else ""
        problems.append(
            f"files changed since evaluation: SHA-256 manifest of the registered files is {digest[:16]}…, "
            f"the evaluation measured {evaluated[:16]}…{where}"
        )
    if files.model_problem:
        problems.append(files.model_problem)
    if files.size_mb is None:
        problems.append("the registered model has no `model` artifact to measure its size from")
    return problems, files.size_mb


def paired_metrics(
    table: pd.DataFrame, n_classes: int, thresholds: Thresholds
) -> tuple[dict[str, float], list[str], list[str]]:
    """Bootstrap interval of the macro-F1 drop and the worst class's F1 drop, from the
    per-example predictions. Returns (metrics, notes, problems); pure (no MLflow)."""
    needed = ["label_id", "pred_id", "parent_pred_id"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        why = " (a version without a parent has nothing to compare with)" if "parent_pred_id" in missing else ""
        return {}, [], [f"{PREDICTIONS_TABLE} lacks column(s) {missing}{why}: the F1-drop limits cannot be checked"]
    if table[needed].isna().any().any() or len(table) == 0:
        return {}, [], [f"{PREDICTIONS_TABLE} is empty or has blank ids: the F1-drop limits cannot be checked"]
    y, a, b = (table[c].astype(int).to_numpy() for c in needed)
    try:
        interval = paired_bootstrap_f1_drop(
            y,
            a,
            b,
            n_classes,
            level=thresholds.confidence_level,
            resamples=thresholds.bootstrap_resamples,
            seed=thresholds.bootstrap_seed,
        )
        per_class = per_class_f1_drop_points(y, a, b, n_classes)
    except ValueError as exc:
        return {}, [], [f"{PREDICTIONS_TABLE}: {exc}"]
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
        f"paired bootstrap: {interval.resamples} resamples of "
        f"{len(y)} test examples (seed {thresholds.bootstrap_seed}); "
        f"the models disagree on {int((a != b).sum())} of them",
        f"worst class: {names.get(worst, worst)}, F1 down "
        f"{per_class[worst]:.2f} points from the parent (point estimate)",
    ]
    return metrics, notes, []


def consistency_problems(metrics: Mapping[str, float]) -> list[str]:
    """The predictions table must reproduce the recorded drop, or it is not this evaluation's."""
    recorded, recomputed = metrics.get("macro_f1_drop_points"), metrics.get("macro_f1_drop_points_bootstrap_point")
    if recorded is None or recomputed is None or abs(recorded - recomputed) <= 1e-4:
        return []
    return [
        f"{PREDICTIONS_TABLE} gives a macro-F1 drop of {recomputed:.4f} points, the evaluation recorded {recorded:.4f}"
    ]


def _n_classes(metrics: Mapping[str, float], table: pd.DataFrame) -> int:
    """Macro F1 averages over every label of the model; the evaluator logs one ``f1.<label>`` each."""
    per_class = sum(1 for k in metrics if k.startswith("f1."))
    if per_class:
        return per_class
    cols = [c for c in ("label_id", "pred_id", "parent_pred_id") if c in table]
    return int(table[cols].max().max()) + 1


def gather(
    mv: ModelVersion, thresholds: Thresholds, client: MlflowClient | None = None, key: bytes | None = None
) -> Evidence:
    """Everything the gate needs about one version; stops at the first group of problems.
    ``key``: the evidence key, when one is set (the evaluation's signature is then required)."""
    client = client or MlflowClient()
    tags = dict(mv.tags)
    ev = Evidence(snapshot={k: tags.get(k) for k in SNAPSHOT_TAGS})
    ev.problems = tag_problems(tags, thresholds.target)
    if ev.problems:
        return ev
    try:
        run = client.get_run(tags[EVAL_RUN_TAG])
    except MlflowException as exc:
        ev.problems = [f"evaluation run {tags['eval_run_id']} unreadable: {exc.message}"]
        return ev
    ev.metrics = dict(run.data.metrics)
    ev.problems = run_problems(mv.version, tags, run.info.status, run.data.tags, run.info.lifecycle_stage, ev.metrics)
    ev.problems += host_mismatches(thresholds.host_requirements(), run.data.tags)
    ev.problems += run_superseded(client, mv, run, key) if not ev.problems else []
    if ev.problems:
        return ev
    ev.problems, size_mb = freshness_problems(mv)
    if ev.problems:
        return ev
    # re-derived from the files just hashed, not taken from the run
    logged_size = ev.metrics.get("size_mb")
    ev.metrics["size_mb"] = size_mb
    if logged_size is not None and abs(logged_size - size_mb) > 1e-6:
        ev.notes.append(
            f"size_mb recomputed from the registered files: {size_mb:.4g} (the run logged {logged_size:.4g})"
        )
    if any(getattr(thresholds, key) is not None for key in PAIRED_RULES):
        table, ev.problems = predictions_table(run, tags)
        if ev.problems:
            return ev
        paired, ev.notes, ev.problems = paired_metrics(table, _n_classes(ev.metrics, table), thresholds)
        ev.metrics.update(paired)
        ev.problems += consistency_problems(ev.metrics)
    return ev
