"""promote: the fail-closed promotion gate for one registered version.

Reads: the version's tags (``eval_run_id``, ``eval_status``, ``eval_manifest_sha256``,
``manifest_sha256``), the metrics of its evaluation run, and a thresholds YAML.
Does, only when every threshold holds: sets the alias (``staging``) and, while MLflow
offers stages, moves the version to stage ``Staging`` archiving the previous holder.
Always: writes the decision and its reasons as version tags (``gate.*``), appends them to
the version description, logs ``decision.json`` and exits non-zero on rejection.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

import click
import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from flows.tracking import DEFAULT_MODEL_NAME, configure_tracking, resolve_version
from registry_hooks.gate import Decision, Reason, decide
from registry_hooks.thresholds import DEFAULT_THRESHOLDS, ThresholdError, Thresholds, load_thresholds


def preconditions(mv: ModelVersion) -> list[str]:
    """Why this version's evaluation cannot be trusted (empty when it can)."""
    problems = []
    if mv.tags.get("eval_status") != "complete":
        problems.append(f"evaluation missing or incomplete (eval_status={mv.tags.get('eval_status')!r})")
    if not mv.tags.get("eval_run_id"):
        problems.append("no eval_run_id tag: the version was never evaluated")
    manifest, evaluated = mv.tags.get("manifest_sha256"), mv.tags.get("eval_manifest_sha256")
    if not manifest or manifest != evaluated:
        problems.append(f"stale evaluation: files' manifest {manifest!r} differs from the evaluated {evaluated!r}")
    return problems


def gate(mv: ModelVersion, thresholds: Thresholds) -> tuple[Decision, dict[str, float]]:
    problems = preconditions(mv)
    metrics: dict[str, float] = {}
    if not problems:
        try:
            metrics = dict(MlflowClient().get_run(mv.tags["eval_run_id"]).data.metrics)
        except MlflowException as exc:
            problems.append(f"evaluation run {mv.tags['eval_run_id']} unreadable: {exc.message}")
    decision = decide(metrics, thresholds)
    if problems:  # fail closed: the metrics cannot be trusted
        extra = tuple(Reason(p, None, 0.0, "min", False) for p in problems)
        decision = Decision(False, extra + decision.reasons)
    return decision, metrics


def record(mv: ModelVersion, decision: Decision, thresholds: Thresholds, alias: str, thresholds_path: str) -> dict:
    client = MlflowClient()
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    th_digest = hashlib.sha256(json.dumps(asdict(thresholds), sort_keys=True).encode()).hexdigest()
    verdict = "passed" if decision.passed else "rejected"
    body = {
        "version": mv.version,
        "decision": verdict,
        "alias": alias,
        "time": now,
        "thresholds_file": thresholds_path,
        "thresholds": asdict(thresholds),
        "thresholds_sha256": th_digest,
        "reasons": [{**asdict(r), "text": str(r)} for r in decision.reasons],
    }
    for key, value in {
        "gate.decision": verdict,
        "gate.reasons": decision.summary()[:5000],
        "gate.thresholds_sha256": th_digest,
        "gate.time": now,
        "gate.alias": alias,
    }.items():
        client.set_model_version_tag(mv.name, mv.version, key, value)
    lines = "\n".join(f"- {r}" for r in decision.reasons)
    note = f"\n\n### Gate {verdict} for `@{alias}` ({now})\n{lines}\n"
    client.update_model_version(mv.name, mv.version, description=(mv.description or "") + note)
    mlflow.log_dict(body, "decision.json")
    mlflow.set_tags({"quantgate.step": "promote", "quantgate.gated_version": mv.version, "gate.decision": verdict})
    if decision.passed:
        client.set_registered_model_alias(mv.name, alias, mv.version)
        if alias == "staging":
            with warnings.catch_warnings():  # stages are deprecated but still read by users
                warnings.simplefilter("ignore", FutureWarning)
                client.transition_model_version_stage(mv.name, mv.version, "Staging", archive_existing_versions=True)
    return body


def promote(mv: ModelVersion, thresholds: Thresholds, *, alias: str = "staging", dry_run: bool = False, thresholds_path: str = "") -> Decision:
    decision, _ = gate(mv, thresholds)
    click.echo(f"gate for {mv.name} v{mv.version} ({mv.tags.get('variant')}): {'PASSED' if decision.passed else 'REJECTED'}")
    for r in decision.reasons:
        click.echo(f"  {r}")
    if dry_run:
        click.echo("dry run: registry unchanged")
    else:
        record(mv, decision, thresholds, alias, thresholds_path)
        if decision.passed:
            click.echo(f"alias @{alias} -> version {mv.version}; serve it with:\n"
                       f"  mlflow models serve -m 'models:/{mv.name}@{alias}' --env-manager local --port 5001")
    return decision


@click.command("promote", help=__doc__)
@click.option("--version", "version_ref", required=True, help="Version to gate: 3, news-classifier/3 or models:/…")
@click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True)
@click.option("--thresholds", "thresholds_path", default=str(DEFAULT_THRESHOLDS), show_default=True, type=click.Path(dir_okay=False))
@click.option("--alias", default="staging", show_default=True, help="Alias to set when the gate passes.")
@click.option("--dry-run", is_flag=True, help="Decide and report; change nothing in the registry.")
def cli(version_ref, model_name, thresholds_path, alias, dry_run):
    try:
        thresholds = load_thresholds(thresholds_path)  # before anything else runs
    except ThresholdError as exc:
        raise click.ClickException(str(exc)) from None
    configure_tracking()
    mv = resolve_version(version_ref, model_name)
    if dry_run:
        decision = promote(mv, thresholds, alias=alias, dry_run=True)
    else:
        with mlflow.start_run(run_name=f"promote-v{mv.version}"):
            decision = promote(mv, thresholds, alias=alias, thresholds_path=str(Path(thresholds_path)))
    sys.exit(0 if decision.passed else 1)


if __name__ == "__main__":
    cli()
