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
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import click
import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from flows.errors import UserError, UserErrorExit, debugging, one_line
from quantgate.tracking import DEFAULT_MODEL_NAME, configure_tracking, resolve_version
from registry_hooks.gate.decision import Decision, Reason, decide, explain_ranking, rank_candidates
from registry_hooks.gate.evidence import SNAPSHOT_TAGS, Evidence, gather, tag_problems
from registry_hooks.gate.lock import promotion_lock, resolve_lock
from registry_hooks.gate.report import append_note, gate_note, reasons_digest
from registry_hooks.gate.thresholds import DEFAULT_THRESHOLDS, TARGETS, Thresholds, load_thresholds

STAGE = "Staging"  # deprecated in MLflow but still read by users; mirrors the `staging` alias


@dataclass
class Verdict:
    """One version's decision and the evidence behind it."""

    mv: ModelVersion
    decision: Decision
    evidence: Evidence
    action: str = ""

    @property
    def version(self) -> str:
        return str(self.mv.version)


def default_alias(target: str | None) -> str:
    return "staging" if target is None else f"staging-{target}"


def tag_prefix(target: str | None) -> str:
    """Where a decision is written: ``gate.*`` for the default gate, ``gate.<target>.*`` for a
    target, so a ``--target cpu`` verdict never overwrites the default gate's."""
    return "gate." if target is None else f"gate.{target}."


def pass_tag(alias: str) -> str:
    """Set on a version when it passes the gate for ``alias``, removed when it is rejected for it:
    the version's own recorded pass, which an alias holder must have."""
    return f"gate.passed.{alias}"


def recorded_pass(tags: Mapping[str, str], alias: str, target: str | None) -> bool:
    """Does the version carry its own recorded pass for ``alias`` (not just a hand-set alias)?"""
    prefix = tag_prefix(target)
    return bool(tags.get(pass_tag(alias))) or (
        tags.get(f"{prefix}decision") == "passed" and tags.get(f"{prefix}alias") == alias
    )


def assess(mv: ModelVersion, thresholds: Thresholds, client: MlflowClient | None = None) -> Verdict:
    """Gather the evidence and decide; reads the registry, writes nothing."""
    evidence = gather(mv, thresholds, client)
    return Verdict(mv, decide(evidence.metrics, thresholds, evidence.problems), evidence)


def candidate_versions(client: MlflowClient, name: str, target: str | None) -> list[ModelVersion]:
    """Every variant other than FP32 (for a target: built for its device), oldest first."""
    versions = client.search_model_versions(f"name='{name}'")
    keep = [
        mv
        for mv in versions
        if mv.tags.get("variant")
        and mv.tags.get("variant") != "fp32"
        and (target is None or mv.tags.get("device") == target)
    ]
    return sorted(keep, key=lambda mv: int(mv.version))


def plan(
    passed: Mapping[str, bool], ranking: Sequence[str], holder: str | None, alias: str
) -> tuple[str | None, str | None, dict[str, str]]:
    """What the gate will do: (champion, version losing the alias, action per version).

    The best-ranked passing version takes the alias. When none passes, the alias stays where
    it is, unless its holder was among the rejected: a fail-closed gate never leaves the alias
    on a version it has just rejected.
    """
    champion = ranking[0] if ranking else None
    release = holder if champion is None and holder is not None and passed.get(holder) is False else None
    after = champion or (None if release else holder)
    actions = {}
    for version, ok in passed.items():
        if version == champion:
            actions[version] = f"promoted: @{alias} -> v{version}"
        elif ok:
            actions[version] = f"passed, not champion: @{alias} -> v{champion}"
        elif version == release:
            actions[version] = f"rejected: @{alias} removed from v{version}, which held it"
        else:
            actions[version] = f"rejected: @{alias} {'stays with v' + after if after else 'stays unset'}"
    return champion, release, actions


def alias_holder(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def staged_versions(client: MlflowClient, name: str) -> list[str]:
    return sorted(
        (str(mv.version) for mv in client.search_model_versions(f"name='{name}'") if mv.current_stage == STAGE), key=int
    )


def _transition(client: MlflowClient, name: str, version: str, stage: str, archive: bool = False) -> None:
    with warnings.catch_warnings():  # stages are deprecated (FutureWarning) but still offered
        warnings.simplefilter("ignore", FutureWarning)
        if archive:
            # Archive the other holders one by one rather than with archive_existing_versions=True:
            # on a PostgreSQL store MLflow 3.17 builds that query comparing an integer column with
            # a VARCHAR and fails (mlflow/mlflow#24592). Same effect; we hold the lock here.
            for other in staged_versions(client, name) if stage == STAGE else []:
                if other != str(version):
                    client.transition_model_version_stage(name, other, "Archived", archive_existing_versions=False)
        client.transition_model_version_stage(name, version, stage, archive_existing_versions=False)


def recheck(client: MlflowClient, verdict: Verdict, target: str | None) -> list[str]:
    """Under the lock, just before moving the alias: is the version still what was judged?
    (An evaluation or re-registration may have run while the gate was computing.)"""
    fresh = client.get_model_version(verdict.mv.name, verdict.version)
    drift = [k for k in SNAPSHOT_TAGS if fresh.tags.get(k) != verdict.evidence.snapshot.get(k)]
    problems = tag_problems(fresh.tags, target)
    if drift:
        problems.insert(0, f"version changed while it was being gated ({', '.join(drift)}); gate it again")
    return problems


def apply(
    client: MlflowClient, name: str, alias: str, set_stage: bool, champion: str | None, release: str | None
) -> str:
    """Move the alias (and stage); returns what happened to the stage, for the record."""
    detail = ""
    if champion:
        before = staged_versions(client, name) if set_stage else []
        client.set_registered_model_alias(name, alias, champion)
        if set_stage:
            _transition(client, name, champion, STAGE, archive=True)
            archived = [v for v in before if v != champion]
            detail = f"; stage {STAGE}" + (f" (archived v{', v'.join(archived)})" if archived else "")
    elif release:
        client.delete_registered_model_alias(name, alias)
        if set_stage and release in staged_versions(client, name):
            _transition(client, name, release, "Archived")
            detail = "; stage Archived"
    return detail


def holder_anomaly(client: MlflowClient, name: str, alias: str, holder: str | None, target: str | None) -> list[str]:
    """Why the alias holder must not be trusted: no pass of its own recorded by this gate (an
    alias set by hand), or an evaluation that no longer holds."""
    if holder is None:
        return []
    tags = client.get_model_version(name, holder).tags
    problems = []
    if not recorded_pass(tags, alias, target):
        problems.append(
            f"ANOMALY: @{alias} is on v{holder}, which has no recorded pass of the gate for @{alias} "
            f"(set by hand?); nothing moved. Gate v{holder} (`quantgate promote --version {holder}`) "
            f"or remove the alias"
        )
    unevaluated = tag_problems(tags)
    if unevaluated:
        problems.append(f"@{alias} holder v{holder} is not properly evaluated: {'; '.join(unevaluated)}")
    return problems


def verify(
    client: MlflowClient,
    name: str,
    alias: str,
    set_stage: bool,
    expected: str | None,
    *,
    repair: bool = True,
    target: str | None = None,
) -> list[str]:
    """Read the registry back: the alias names ``expected``, that version carries its own
    recorded pass and is evaluated, and (for ``staging``) it is the only version in stage Staging.

    Under the lock, stray Staging versions can only come from a writer outside the gate, and
    are archived (``repair``) - but only around a holder with its own recorded pass: a version
    never moves into Staging on the strength of an alias alone. Without the lock, repairs by
    concurrent gates would fight each other, so problems are only reported.
    """
    problems = []
    holder = alias_holder(client, name, alias)
    if holder != expected:
        problems.append(
            f"@{alias} names v{holder}, but the gate set v{expected}: another writer moved it "
            "(a gate without the lock, or a direct registry call)"
        )
    anomaly = holder_anomaly(client, name, alias, holder, target)
    problems += anomaly
    if anomaly:
        repair = False
    if set_stage:
        want = [holder] if holder else []
        staged = staged_versions(client, name)
        for _ in range(3 if repair else 0):
            if staged == want:
                break
            for version in staged:
                if version != holder:
                    _transition(client, name, version, "Archived")
            if holder and holder not in staged:
                _transition(client, name, holder, STAGE)
            staged = staged_versions(client, name)
        if staged != want:
            problems.append(f"stage {STAGE} holds {staged}, expected {want}")
    return problems


def decision_tags(verdict: Verdict, *, alias: str, now: str, thresholds: Thresholds) -> dict[str, str | None]:
    """The ``gate.*`` tags of one decision (the UI's version page shows them); ``gate.<target>.*``
    for a target. ``None`` means: delete that tag (a rejection withdraws an earlier pass)."""
    prefix = tag_prefix(thresholds.target)
    return {
        f"{prefix}decision": "passed" if verdict.decision.passed else "rejected",
        f"{prefix}reasons": verdict.decision.summary()[:5000],
        f"{prefix}reasons_sha256": reasons_digest(verdict.decision),
        f"{prefix}thresholds_sha256": thresholds.digest(),
        f"{prefix}time": now,
        f"{prefix}alias": alias,
        pass_tag(alias): f"{now} thresholds {thresholds.digest()[:12]}" if verdict.decision.passed else None,
    }


def set_tags(client: MlflowClient, verdict: Verdict, tags: Mapping[str, str | None]) -> None:
    for key, value in tags.items():
        if value is not None:
            client.set_model_version_tag(verdict.mv.name, verdict.version, key, value)
        elif key in client.get_model_version(verdict.mv.name, verdict.version).tags:
            client.delete_model_version_tag(verdict.mv.name, verdict.version, key)


def append_description(
    client: MlflowClient, verdict: Verdict, *, alias: str, now: str, thresholds: Thresholds, run_id: str
) -> None:
    """Append the decision's note to the version description (read, append, write back)."""
    note = gate_note(
        passed=verdict.decision.passed,
        alias=alias,
        time=now,
        decision=verdict.decision,
        notes=verdict.evidence.notes,
        action=verdict.action,
        thresholds_sha256=thresholds.digest(),
        confidence_level=thresholds.confidence_level,
        run_id=run_id,
    )
    current = client.get_model_version(verdict.mv.name, verdict.version).description
    client.update_model_version(verdict.mv.name, verdict.version, description=append_note(current, note))


def decision_body(
    verdicts: Sequence[Verdict],
    *,
    name: str,
    alias: str,
    target: str | None,
    now: str,
    thresholds: Thresholds,
    thresholds_path: str,
    champion: str | None,
    ranking_text: str,
) -> dict:
    """What ``decision.json`` holds: every verdict, its reasons, figures and action."""
    return {
        "model": name,
        "alias": alias,
        "target": target,
        "time": now,
        "thresholds_file": thresholds_path,
        "thresholds": thresholds.as_dict(),
        "thresholds_sha256": thresholds.digest(),
        "champion": champion,
        "champion_choice": ranking_text,
        "decisions": [
            {
                "version": v.version,
                "variant": v.mv.tags.get("variant"),
                "decision": "passed" if v.decision.passed else "rejected",
                "action": v.action,
                "reasons": [
                    {
                        "text": str(r),
                        "metric": r.metric,
                        "value": r.value,
                        "limit": r.limit,
                        "kind": r.kind,
                        "passed": r.passed,
                        "point": r.point,
                        "ci": r.ci,
                        "level": r.level,
                    }
                    for r in v.decision.reasons
                ],
                "reasons_sha256": reasons_digest(v.decision),
                "notes": v.evidence.notes,
                "metrics": v.evidence.metrics,
            }
            for v in verdicts
        ],
    }


def _reject(verdict: Verdict, problems: list[str]) -> None:
    verdict.decision = Decision(False, tuple(Reason.check(p) for p in problems) + verdict.decision.reasons)


@dataclass
class Outcome:
    """What the locked section did to the alias, for the record."""

    champion: str | None
    actions: dict[str, str]  # per version, e.g. "promoted: @staging -> v2; stage Staging (archived v1)"
    ranking_text: str
    changed: list[Verdict]  # judged "passed" but found changed under the lock, so rejected
    problems: list[str]  # what the read-back found wrong


def move_alias(
    verdicts: list[Verdict],
    *,
    client: MlflowClient,
    name: str,
    alias: str,
    target: str | None,
    thresholds: Thresholds,
    lock_path: Path | None,
) -> Outcome:
    """Under the lock: re-check the best passing version, move alias (and stage), read back."""
    set_stage = alias == "staging"
    by_version = {v.version: v for v in verdicts}
    with promotion_lock(lock_path):
        holder = alias_holder(client, name, alias)
        ranking = rank_candidates(
            {v.version: v.evidence.metrics for v in verdicts if v.decision.passed}, thresholds.champion_order
        )
        changed = []
        while ranking:  # the best passing version that has not changed since it was judged
            problems = recheck(client, by_version[ranking[0]], target)
            if not problems:
                break
            changed.append(by_version[ranking.pop(0)])
            _reject(changed[-1], problems)
        champion, release, actions = plan({v.version: v.decision.passed for v in verdicts}, ranking, holder, alias)
        anomaly = [] if champion or release else holder_anomaly(client, name, alias, holder, target)
        if anomaly:  # the gate would keep a holder it cannot vouch for: report it, move nothing
            return Outcome(
                None,
                actions={v: a + "; " + "; ".join(anomaly) for v, a in actions.items()},
                ranking_text="",
                changed=changed,
                problems=anomaly,
            )
        stage_detail = apply(client, name, alias, set_stage, champion, release)
        expected = champion or (None if release else holder)
        problems = verify(client, name, alias, set_stage, expected, repair=lock_path is not None, target=target)
    ranking_text = (
        explain_ranking(ranking, {v: by_version[v].evidence.metrics for v in ranking}, thresholds.champion_order)
        if ranking
        else ""
    )
    for version in actions:
        if version in (champion, release):
            actions[version] += stage_detail
        elif by_version[version].decision.passed:
            actions[version] += f" ({ranking_text})"
        if problems:
            actions[version] += "; REGISTRY CHECK FAILED: " + "; ".join(problems)
    return Outcome(champion, actions, ranking_text, changed, problems)


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
) -> str | None:
    """Record every decision and move the alias. Returns the champion (``None``: nothing promoted).

    1. Before the lock, each version gets its decision tags, so the alias never reaches a
       version whose tags do not yet say "passed".
    2. Under the lock, only the alias moves (``move_alias``). Keeping this section short keeps
       concurrent gates fast.
    3. After it: the promote run with ``decision.json``, the action tags, and the description
       notes (each appended under the lock, so two gates of one version cannot lose a note).
    """
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for v in verdicts:
        set_tags(client, v, decision_tags(v, alias=alias, now=now, thresholds=thresholds))
    outcome = move_alias(
        verdicts, client=client, name=name, alias=alias, target=target, thresholds=thresholds, lock_path=lock_path
    )
    for v in outcome.changed:
        set_tags(client, v, decision_tags(v, alias=alias, now=now, thresholds=thresholds))
    for v in verdicts:
        v.action = outcome.actions[v.version]
    with mlflow.start_run(run_name=run_name, nested=mlflow.active_run() is not None) as run:
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
        mlflow.log_dict(body, "decision.json")
        mlflow.set_tags(
            {
                "quantgate.step": "promote",
                "gate.alias": alias,
                "gate.champion": outcome.champion or "none",
                "quantgate.gated_versions": ",".join(v.version for v in verdicts),
            }
        )
    prefix = tag_prefix(target)
    for v in verdicts:
        set_tags(client, v, {f"{prefix}action": v.action[:5000], f"{prefix}run_id": run.info.run_id})
        with promotion_lock(lock_path):
            append_description(client, v, alias=alias, now=now, thresholds=thresholds, run_id=run.info.run_id)
    if outcome.problems:
        raise click.ClickException("registry check after promotion failed: " + "; ".join(outcome.problems))
    return outcome.champion


def echo_verdict(v: Verdict, alias: str) -> None:
    click.echo(
        f"gate {v.mv.name} v{v.version} ({v.mv.tags.get('variant')}) for @{alias}: "
        f"{'PASSED' if v.decision.passed else 'REJECTED'}"
    )
    for r in v.decision.reasons:
        click.echo(f"  {r}")
    for n in v.evidence.notes:
        click.echo(f"  note: {n}")
    if v.action:
        click.echo(f"  -> {v.action}")


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
    if not allow_fp32 and (mv.tags.get("variant") == "fp32" or not mv.tags.get("parent_version")):
        raise UserError(
            f"v{mv.version} of {mv.name} is not a quantised variant (variant {mv.tags.get('variant')!r}, "
            "no parent_version): the FP32 parent is not a promotion candidate; pass --allow-fp32 to gate it anyway"
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
    if bool(version_ref) == bool(candidates):
        raise click.UsageError("give exactly one of --version N or --candidates")
    alias = alias or default_alias(target)
    configure_tracking(model_name=model_name)
    lock_path = None if dry_run else choose_lock(mlflow.get_registry_uri(), lock_file, no_lock, lock_uri)
    client = MlflowClient()
    versions = select_versions(client, version_ref, candidates, model_name, target, allow_fp32)
    verdicts = [assess(mv, thresholds, client) for mv in versions]
    hint = unevaluated_hint(verdicts) if candidates else None
    if dry_run:
        code = dry_run_report(client, verdicts, alias, thresholds)
        if hint:
            click.echo(hint)
        return code
    name = versions[0].name
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
    )
    for v in verdicts:
        echo_verdict(v, alias)
    if hint:
        click.echo(hint)
    if champion:
        click.echo(
            f"@{alias} -> version {champion}; serve it with:\n"
            f"  mlflow models serve -m 'models:/{name}@{alias}' --env-manager local --port 5001"
        )
    return 0 if champion else 1


# The promotion lock options, shared with `quantgate hooks serve` (whose gates take the same lock).
lock_file_option = click.option(
    "--lock-file",
    default=None,
    type=click.Path(dir_okay=False),
    envvar="QUANTGATE_PROMOTE_LOCK",
    help="Lock file shared by all gates [default: <database>.promote.lock beside a sqlite registry; "
    "env QUANTGATE_PROMOTE_LOCK].",
)
lock_uri_option = click.option(
    "--lock-uri",
    default=None,
    envvar="QUANTGATE_LOCK_URI",
    help="postgresql:// URI of a database every gate reaches: a PostgreSQL advisory lock, which holds "
    "across machines (use it with a tracking server; env QUANTGATE_LOCK_URI).",
)


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
    "--alias", default=None, help="Alias to set when the gate passes [default: staging, or staging-<target>]."
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
