"""promote: the fail-closed promotion gate.

Gates one version (``--version``) or every non-FP32 variant (``--candidates``) against a
thresholds file. A version passes only when its evaluation is complete, was made on the files
registered now (SHA-256 recomputed, not just tags), on a host that matches the target, and
every limit holds: F1 drop on the upper bound of a paired bootstrap interval, speedup on the
lower bound of its interval. When several pass, the champion is chosen by the thresholds'
``champion_order`` (default: lowest p95 latency, ties by macro F1).

The champion gets the alias (``staging``, or ``staging-cpu``/``staging-gpu`` with
``--target``) and, for ``staging``, stage ``Staging`` with previous holders archived. A rejected
version that held the alias loses it. Every decision, pass or fail, is written as version tags
(``gate.*``), a note in the version description and ``decision.json`` in a promote run.
Promotions take a lock (beside a sqlite registry, ``--lock-file``, or a PostgreSQL advisory lock
with ``--lock-uri``) and read the registry
back afterwards. Exits 1 when nothing was promoted. ``--dry-run`` decides and reports only.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import click
import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from flows.errors import UserError, UserErrorExit, debugging, one_line
from quantgate.artifact_download import LinkInStoreError
from quantgate.artifact_log import log_dict
from quantgate.evidence_signing import load_key, plain_mlflow_command
from quantgate.printable import shown
from quantgate.tracking import (
    DEFAULT_MODEL_NAME,
    all_versions,
    configure_tracking,
    is_version_number,
    name_filter,
    readable_model,
    resolve_version,
)
from registry_hooks.gate.apply import alias_holder, move_alias, plan
from registry_hooks.gate.decision import rank_candidates
from registry_hooks.gate.lock import promotion_lock, resolve_lock
from registry_hooks.gate.provenance import variant_problem
from registry_hooks.gate.thresholds import (
    DEFAULT_THRESHOLDS,
    TARGETS,
    Thresholds,
    check_unreplaceable,
    load_thresholds,
)
from registry_hooks.gate.verdict import (
    Verdict,
    append_description,
    assess,
    decision_body,
    decision_tags,
    default_alias,
    set_tags,
    tag_prefix,
)


def candidate_versions(client: MlflowClient, name: str, target: str | None) -> list[ModelVersion]:
    """Every variant other than FP32 (for a target: built for its device), oldest first. A row
    whose version number is text (raw SQL: the forty-ninth adversarial run) is no version."""
    versions = all_versions(client, name_filter(name))
    keep = [
        mv
        for mv in versions
        if is_version_number(mv.version)
        and variant_problem(mv.tags, str(mv.version)) is None
        and (target is None or mv.tags.get("device") == target)
    ]
    return sorted(keep, key=lambda mv: int(mv.version))


def log_decision_run(
    body: dict, *, run_name: str, alias: str, champion: str | None, verdicts: Sequence[Verdict]
) -> str:
    """Record the promote run: ``decision.json`` and the run's tags; returns its id."""
    with mlflow.start_run(run_name=run_name, nested=mlflow.active_run() is not None) as run:
        try:
            log_dict(run.info.run_id, body, "decision.json")
        except LinkInStoreError as exc:  # the decision stands: it is in the version's tags and description
            click.echo(f"warning: decision.json was not logged: {exc}", err=True)
        mlflow.set_tags(
            {
                "quantgate.step": "promote",
                "gate.alias": alias,
                "gate.champion": champion or "none",
                "quantgate.gated_versions": ",".join(v.version for v in verdicts),
            }
        )
    return run.info.run_id


def settle(
    verdicts: list[Verdict],
    *,
    client: MlflowClient,
    name: str,
    alias: str,
    target: str | None,
    thresholds: Thresholds,
    thresholds_path: str,
    lock_path: Path | None,
    run_name: str,
    key: bytes | None = None,
) -> str | None:
    """Record every decision and move the alias. Returns the champion (``None``: nothing promoted).

    1. First, each version gets its decision tags (under the lock, all at once, so a concurrent
       gate checking the alias holder never sees a pass tag from one decision beside the
       per-alias decision of another), so the alias never reaches a version whose tags do not
       yet say "passed".
    2. Then, under the lock again, only the alias moves (``move_alias``). Keeping each section
       short keeps concurrent gates fast.
    3. After it: the promote run with ``decision.json``, the action tags, and the description
       notes (each appended under the lock, so two gates of one version cannot lose a note).
    """
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    with promotion_lock(lock_path):  # a concurrent gate never reads half of a version's decision tags
        for v in verdicts:
            set_tags(client, v, decision_tags(v, alias=alias, now=now, thresholds=thresholds, key=key))
    outcome = move_alias(
        verdicts,
        client=client,
        name=name,
        alias=alias,
        target=target,
        thresholds=thresholds,
        lock_path=lock_path,
        key=key,
    )
    with promotion_lock(lock_path):
        for v in outcome.changed:  # judged "passed", then found changed: the pass is withdrawn
            try:
                set_tags(client, v, decision_tags(v, alias=alias, now=now, thresholds=thresholds, key=key))
            except Exception as exc:  # noqa: BLE001 - a store that refuses the write: say so, loudly
                outcome.problems.append(
                    f"v{v.version}'s pass could not be withdrawn ({type(exc).__name__}): delete its gate tags by hand"
                )
    for v in verdicts:
        v.action = outcome.actions[v.version]
    body = decision_body(
        verdicts,
        name=name,
        alias=alias,
        target=target,
        now=now,
        thresholds=thresholds,
        thresholds_path=thresholds_path,
        champion=outcome.champion,
        ranking_text=outcome.ranking_text,
    )
    run_id = log_decision_run(body, run_name=run_name, alias=alias, champion=outcome.champion, verdicts=verdicts)
    prefix = tag_prefix(target)
    for v in verdicts:
        set_tags(client, v, {f"{prefix}action": v.action[:5000], f"{prefix}run_id": run_id})
        with promotion_lock(lock_path):
            noted = append_description(client, v, alias=alias, now=now, thresholds=thresholds, run_id=run_id, key=key)
        if not noted:
            click.echo(f"note: v{v.version}'s description kept changing; the verdict is in run {run_id} only", err=True)
    if outcome.problems:
        raise click.ClickException("registry check after promotion failed: " + "; ".join(outcome.problems))
    return outcome.champion


def echo_verdict(v: Verdict, alias: str) -> None:
    click.echo(
        f"gate {shown(v.mv.name)} v{v.version} ({shown(v.mv.tags.get('variant'))}) for @{alias}: "
        f"{'PASSED' if v.decision.passed else 'REJECTED'}"
    )
    for r in v.decision.reasons:
        click.echo(f"  {r}")
    for n in v.evidence.notes:
        click.echo(f"  note: {shown(n)}")
    if v.action:
        click.echo(f"  -> {shown(v.action)}")


def choose_lock(registry_uri: str, lock_file: str | None, no_lock: bool, lock_uri: str | None = None):
    """The lock every gate of this registry shares (``None``: promote unlocked, with a warning):
    see ``registry_hooks.gate.lock.resolve_lock``."""
    return resolve_lock(
        registry_uri,
        lock_file=lock_file,
        lock_uri=lock_uri,
        no_lock=no_lock,
        warn=lambda message: click.echo(message, err=True),
    )


def select_versions(
    client: MlflowClient,
    version_ref: str | None,
    candidates: bool,
    model_name: str,
    target: str | None,
    allow_fp32: bool = False,
) -> list[ModelVersion]:
    if candidates:
        versions = candidate_versions(client, model_name, target)
        if not versions:
            raise UserError(f"{model_name} has no non-fp32 versions{f' for device {target}' if target else ''} to gate")
        return versions
    mv = resolve_version(version_ref, model_name)
    not_variant = variant_problem(mv.tags, str(mv.version))
    if not allow_fp32 and not_variant:
        raise UserError(
            f"v{mv.version} of {mv.name} is not a quantised variant ({not_variant}); "
            "pass --allow-fp32 to gate an FP32 model on its own"
        )
    return [mv]


def unevaluated_hint(verdicts: Sequence[Verdict]) -> str | None:
    """One line naming the command to run for candidates that were never evaluated."""
    never = [v.version for v in verdicts if not v.mv.tags.get("eval_run_id")]
    if not never:
        return None
    return (
        f"never evaluated, so rejected: v{', v'.join(never)}; run "
        + " && ".join(f"quantgate evaluate --version {n} --model-name {verdicts[0].mv.name}" for n in never)
        + ", then gate again"
    )


def dry_run_report(client: MlflowClient, verdicts: list[Verdict], alias: str, thresholds: Thresholds) -> int:
    """Print what the gate would do; touch nothing."""
    name = verdicts[0].mv.name
    ranking = rank_candidates(
        {v.version: v.evidence.metrics for v in verdicts if v.decision.passed}, thresholds.champion_order
    )
    champion, _, actions = plan(
        {v.version: v.decision.passed for v in verdicts}, ranking, alias_holder(client, name, alias), alias
    )
    for v in verdicts:
        v.action = f"dry run, registry unchanged; would be {actions[v.version]}"
        echo_verdict(v, alias)
    return 0 if champion else 1


def run_gate(
    *,
    version_ref: str | None,
    candidates: bool,
    model_name: str,
    thresholds_path: str,
    target: str | None = None,
    alias: str | None = None,
    dry_run: bool = False,
    lock_file: str | None = None,
    no_lock: bool = False,
    lock_uri: str | None = None,
    allow_fp32: bool = False,
) -> int:
    """The CLI without ``sys.exit``: returns 0 when a version was promoted (or would be), else 1.
    User mistakes (thresholds, versions) raise ``UserError``."""
    thresholds = load_thresholds(thresholds_path).for_target(target)  # before anything else runs
    key = load_key()  # the evidence key, if this machine has one: signatures are then required
    if bool(version_ref) == bool(candidates):
        raise click.UsageError("give exactly one of --version N or --candidates")
    alias = alias or default_alias(target)
    configure_tracking(None)  # the experiment only once a promote run will be logged (not for a dry run)
    if key is not None:
        check_unreplaceable(thresholds_path, mlflow.get_tracking_uri())
        # read again, after the check: the thirty-eighth adversarial run flipped a link between
        # the first read and the check, and the limits came from a file the check never saw
        thresholds = load_thresholds(thresholds_path).for_target(target)
    lock_path = None if dry_run else choose_lock(mlflow.get_registry_uri(), lock_file, no_lock, lock_uri)
    client = MlflowClient()
    readable_model(client, model_name)  # a model MLflow cannot read back cannot be gated or recorded
    versions = select_versions(client, version_ref, candidates, model_name, target, allow_fp32)
    verdicts = [assess(mv, thresholds, client, key) for mv in versions]
    hint = unevaluated_hint(verdicts) if candidates else None
    if dry_run:
        code = dry_run_report(client, verdicts, alias, thresholds)
        if hint:
            click.echo(hint)
        return code
    name = versions[0].name
    configure_tracking(model_name=name)
    run_name = "promote-candidates" if candidates else f"promote-v{versions[0].version}"
    champion = settle(
        verdicts,
        client=client,
        name=name,
        alias=alias,
        target=target,
        thresholds=thresholds,
        thresholds_path=str(Path(thresholds_path)),
        lock_path=lock_path,
        run_name=run_name,
        key=key,
    )
    for v in verdicts:
        echo_verdict(v, alias)
    if hint:
        click.echo(hint)
    if champion:
        plain = f"models serve -m 'models:/{name}@{alias}' --env-manager local --port 5001"
        click.echo(
            f"@{alias} -> version {champion}; serve it with:\n"
            f"  quantgate serve --model 'models:/{name}@{alias}' --port 5001\n"
            f"  (plain MLflow: {plain_mlflow_command(plain, tracking_uri=mlflow.get_tracking_uri())})"
        )
    return 0 if champion else 1


# The promotion lock options, shared with `quantgate hooks serve` (whose gates take the same lock).
def _shared_lock_file(ctx, param, value: str | None) -> str | None:
    """A lock protects only gates that name the same file, so its folder must exist already:
    creating it would turn a typo into a lock no other gate takes."""
    if value and not Path(value).expanduser().parent.is_dir():
        raise click.BadParameter(
            f"folder {str(Path(value).parent)!r} does not exist; every gate must name the same lock file, "
            "so create the folder (or fix the path)"
        )
    return value


lock_file_option = click.option(
    "--lock-file",
    default=None,
    type=click.Path(dir_okay=False),
    callback=_shared_lock_file,
    envvar="QUANTGATE_PROMOTE_LOCK",
    help="Lock file shared by all gates, in a folder that exists [default: <database>.promote.lock beside a "
    "sqlite registry; env QUANTGATE_PROMOTE_LOCK].",
)
lock_uri_option = click.option(
    "--lock-uri",
    default=None,
    envvar="QUANTGATE_LOCK_URI",
    help="postgresql:// URI of a database every gate reaches: a PostgreSQL advisory lock, which holds "
    "across machines (use it with a tracking server; env QUANTGATE_LOCK_URI).",
)


ALIAS_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")


def check_alias(alias: str | None) -> str | None:
    """An alias MLflow accepts (letters, digits, ``_`` and ``-``; not ``latest`` nor ``v<N>``),
    checked before anything is written: MLflow would refuse it only after the gate ran."""
    if alias is None:
        return None
    if not ALIAS_NAME.fullmatch(alias) or alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise click.BadParameter(
            f"{alias!r} is not a usable alias: letters, digits, '_' and '-' only, and not 'latest' or 'v<N>'"
        )
    return alias


@click.command("promote", help=__doc__)
@click.option("--version", "version_ref", default=None, help="Version to gate: 3, news-classifier/3 or models:/…")
@click.option(
    "--candidates", is_flag=True, help="Gate every non-fp32 version; promote the champion among those that pass."
)
@click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True)
@click.option(
    "--thresholds",
    "thresholds_path",
    default=str(DEFAULT_THRESHOLDS),
    show_default=True,
    type=click.Path(dir_okay=False),
)
@click.option(
    "--target",
    type=click.Choice(TARGETS),
    default=None,
    help=(
        "Use the thresholds file's `cpu:`/`gpu:` section; alias "
        "staging-<target>; the version must be built for that device."
    ),
)
@click.option(
    "--alias",
    default=None,
    callback=lambda ctx, param, value: check_alias(value),
    help="Alias to set when the gate passes [default: staging, or staging-<target>].",
)
@lock_file_option
@lock_uri_option
@click.option(
    "--no-lock",
    is_flag=True,
    help="Promote without a lock (only where gates never run at once); the registry is still read back.",
)
@click.option("--dry-run", is_flag=True, help="Decide and report; change nothing in the registry.")
@click.option(
    "--allow-fp32", is_flag=True, help="Allow gating a version without a parent (the FP32 model itself) with --version."
)
def cli(
    version_ref,
    candidates,
    model_name,
    thresholds_path,
    target,
    alias,
    lock_file,
    lock_uri,
    no_lock,
    dry_run,
    allow_fp32,
):
    try:
        code = run_gate(
            version_ref=version_ref,
            candidates=candidates,
            model_name=model_name,
            thresholds_path=thresholds_path,
            target=target,
            alias=alias,
            dry_run=dry_run,
            lock_file=lock_file,
            no_lock=no_lock,
            lock_uri=lock_uri,
            allow_fp32=allow_fp32,
        )
    except UserError as exc:  # one line, exit 2 (``--debug`` / QUANTGATE_DEBUG=1: the traceback)
        if debugging():
            raise
        raise UserErrorExit(one_line(str(exc))) from None
    sys.exit(code)


if __name__ == "__main__":
    from flows.errors import run

    run(cli)
