"""Applying a gate decision to the registry: the alias and stage moves and the read-back.

``plan`` says what the gate will do (pure). ``move_alias`` does it under the promotion lock:
it re-checks the best passing version, refuses to keep an alias holder the gate cannot vouch
for, moves the alias (and, for ``staging``, stage ``Staging``) and reads the registry back; a
version found not to be the one judged after the move is rolled back (``roll_back``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from quantgate.printable import shown
from quantgate.tracking import all_versions, is_version_number, name_filter, version_identity, version_order
from registry_hooks.gate.decision import Decision, Reason, explain_ranking, rank_candidates
from registry_hooks.gate.evidence import SNAPSHOT_TAGS, tag_problems
from registry_hooks.gate.lock import promotion_lock
from registry_hooks.gate.provenance import superseded
from registry_hooks.gate.thresholds import Thresholds
from registry_hooks.gate.verdict import Verdict, recorded_pass

STAGE = "Staging"  # deprecated in MLflow but still read by users; mirrors the `staging` alias


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
    """The version that ``alias`` names now (``None``: the alias is unset)."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def staged_versions(client: MlflowClient, name: str) -> list[str]:
    """The versions in stage Staging, in version order."""
    return sorted(
        (str(mv.version) for mv in all_versions(client, name_filter(name)) if mv.current_stage == STAGE),
        key=version_order,
    )


def _transition(client: MlflowClient, name: str, version: str, stage: str, archive: bool = False) -> None:
    """Move a version to ``stage`` (``archive``: archive the other Staging versions first)."""
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
    if version_identity(fresh) != version_identity(verdict.mv):
        # deleted and registered again under the same number, tags copied (the seventeenth
        # adversarial run did it while the gate read the predictions table): not what was judged
        drift.insert(0, "the version itself: registered again")
    problems = tag_problems(fresh.tags, target)
    if drift:
        problems.insert(0, f"version changed while it was being gated ({', '.join(drift)}); gate it again")
    return problems


def apply_plan(
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


def holder_anomaly(
    client: MlflowClient, name: str, alias: str, holder: str | None, target: str | None, key: bytes | None = None
) -> list[str]:
    """Why the alias holder must not be trusted: no pass of its own recorded by this gate (an
    alias set by hand; with an evidence key, a pass the key did not sign), or an evaluation that
    no longer holds."""
    if holder is None:
        return []
    if not is_version_number(holder):  # an alias row raw SQL pointed at text
        return [f"ANOMALY: @{alias} names {shown(holder)!r}, which is no version number; nothing moved"]
    mv = client.get_model_version(name, holder)
    tags = mv.tags
    problems = []
    if not recorded_pass(tags, alias, target, name=name, version=holder, key=key):
        problems.append(
            f"ANOMALY: @{alias} is on v{holder}, which has no recorded pass of the gate for @{alias} "
            f"(set by hand?); nothing moved. Gate v{holder} (`quantgate promote --version {holder}`) "
            f"or remove the alias"
        )
    unevaluated = tag_problems(tags) or superseded(client, mv, key)
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
    judged: bool = False,
    target: str | None = None,
    key: bytes | None = None,
) -> list[str]:
    """Read the registry back: the alias names ``expected``, that version carries its own
    recorded pass and is evaluated, and (for ``staging``) it is the only version in stage Staging.

    Under the lock, stray Staging versions can only come from a writer outside the gate, and
    are archived (``repair``) - but only around a holder with its own recorded pass: a version
    never moves into Staging on the strength of an alias alone. Nor does a holder the gate did
    not just judge (``expected`` with ``judged``): its pass says nothing of its files now, which
    a writer may have edited before taking it out of Staging (the eighteenth adversarial run).
    Without the lock, repairs by concurrent gates would fight each other, so problems are only
    reported.
    """
    problems = []
    holder = alias_holder(client, name, alias)
    if holder != expected:
        problems.append(
            f"@{alias} names v{holder}, but the gate set v{expected}: another writer moved it "
            "(a gate without the lock, or a direct registry call)"
        )
    anomaly = holder_anomaly(client, name, alias, holder, target, key)
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
            if holder and holder not in staged and judged and holder == expected:
                _transition(client, name, holder, STAGE)
            staged = staged_versions(client, name)
        if staged != want:
            problems.append(f"stage {STAGE} holds {staged}, expected {want}")
            if holder and holder not in staged and not (judged and holder == expected):
                problems.append(
                    f"v{holder}, the @{alias} holder, is not in stage {STAGE} (moved by hand?); the gate puts only a "
                    f"version it has just judged into {STAGE}: gate v{holder} again (`quantgate promote --version "
                    f"{holder}`) to bring it back"
                )
    return problems


def not_as_judged(
    client: MlflowClient, verdict: Verdict, alias: str, target: str | None, key: bytes | None, read_back_failed: bool
) -> list[str]:
    """After the alias moved onto ``verdict``'s version: why that version is not the one judged
    (empty: it is). A writer can delete the model and register it again, tags copied, in the
    instant between the last check and the move (the seventeenth adversarial run's race). Its
    identity and tags are compared after every move; whether its pass still holds is asked again
    only when the read-back (which asks it of the alias holder) failed."""
    name, version = verdict.mv.name, verdict.version
    try:
        wrong = recheck(client, verdict, target)
        if read_back_failed and not wrong and alias_holder(client, name, alias) == version:
            wrong = holder_anomaly(client, name, alias, version, target, key)
        if not wrong:
            wrong = files_changed(client.get_model_version(name, version))
    except MlflowException as exc:  # deleted meanwhile
        wrong = [f"v{version} cannot be read back: {exc.message}"]
    except Exception as exc:  # noqa: BLE001 - whatever stops the check, the move is not vouched for
        # the forty-ninth adversarial run planted a UNIX socket among the files after the gate's
        # check: opening it raised, past the roll-back, and the alias stayed on a swapped build
        wrong = [f"v{version}'s files cannot be read back ({type(exc).__name__}); gate it again"]
    return wrong


def files_changed(mv) -> list[str]:
    """Why the version's stored files, read again after the move, are not the registered ones
    (empty: they are). The fortieth adversarial run swapped a version's stored folder for a build
    the gate rejects, between the gate's check of its files and the alias move; a swap after this
    check is one after the gate, which ``quantgate serve`` and ``score`` refuse."""
    import tempfile

    from quantgate.model_files import ModelIntegrityError, digest_problem, download

    with tempfile.TemporaryDirectory(prefix="quantgate-recheck-") as tmp:
        try:
            local = download(f"models:/{mv.name}/{mv.version}", Path(tmp))
        except ModelIntegrityError as exc:
            return [f"v{mv.version}'s files cannot be read again: {exc}"]
        problem = digest_problem(local, dict(mv.tags), what=f"version {mv.version}")
    return [f"v{mv.version}'s files changed while it was being gated: {problem}"] if problem else []


def roll_back(client: MlflowClient, name: str, alias: str, set_stage: bool, champion: str) -> str:
    """Undo a move onto a version that turned out not to be the one judged: the alias is removed
    and the version leaves Staging. Nothing is moved back onto the version that held the alias
    before: the gate has not just judged it, and its files may have changed since its pass (the
    nineteenth adversarial run edited them, and a rollback that restored it served them).
    Returns what was done, for the record."""
    now = alias_holder(client, name, alias)
    if now not in (champion, None):  # another writer moved it since: theirs to answer for
        return f"ROLLED BACK: @{alias} left on v{now}, which another writer set"
    if now is not None:
        client.delete_registered_model_alias(name, alias)
    if set_stage and champion in staged_versions(client, name):
        _transition(client, name, champion, "Archived")
    return f"ROLLED BACK: @{alias} removed, v{champion} out of {STAGE}; gate again to promote"


def roll_back_or_say(client: MlflowClient, name: str, alias: str, set_stage: bool, champion: str) -> str:
    """:func:`roll_back`, or, where the registry refuses it, what is left and what to do: the
    fiftieth adversarial run's sqlite trigger aborted the alias delete, and the exception left
    ``@staging`` and a signed pass on a version whose files it had swapped. The caller rejects
    the version either way, so its pass is withdrawn."""
    try:
        return roll_back(client, name, alias, set_stage, champion)
    except Exception as exc:  # noqa: BLE001 - whatever stopped it, the state must be reported
        return (
            f"ROLL-BACK FAILED ({type(exc).__name__}): the registry would not take @{alias} off v{champion}; "
            f"its pass is withdrawn: remove the alias by hand (`mlflow` client: delete_registered_model_alias)"
        )


def _reject(verdict: Verdict, problems: list[str]) -> None:
    """Turn a verdict into a rejection, with ``problems`` as its first reasons."""
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
    key: bytes | None = None,
) -> Outcome:
    """Under the lock: re-check the best passing version, move alias (and stage), read back.
    ``key``: the evidence key, when one is set (an alias holder's pass must then be signed)."""
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
        anomaly = [] if champion or release else holder_anomaly(client, name, alias, holder, target, key)
        if anomaly:  # the gate would keep a holder it cannot vouch for: report it, move nothing
            return Outcome(
                None,
                actions={v: a + "; " + "; ".join(anomaly) for v, a in actions.items()},
                ranking_text="",
                changed=changed,
                problems=anomaly,
            )
        try:
            stage_detail, refused = apply_plan(client, name, alias, set_stage, champion, release), []
        except Exception as exc:  # noqa: BLE001 - the fiftieth run's trigger aborted the stage move
            stage_detail, refused = "", [f"the registry refused the move ({type(exc).__name__})"]
        expected = champion or (None if release else holder)
        try:
            problems = verify(
                client,
                name,
                alias,
                set_stage,
                expected,
                repair=lock_path is not None,
                judged=champion is not None,
                target=target,
                key=key,
            )
        except Exception as exc:  # noqa: BLE001 - a read-back that fails vouches for nothing: check again below
            problems = [f"the read-back after the move failed ({type(exc).__name__})"]
        problems = refused + problems
        wrong = []
        if champion:
            wrong = refused or not_as_judged(client, by_version[champion], alias, target, key, bool(problems))
        if wrong:  # the version now under the alias is not the one judged: undo the move
            undone = roll_back_or_say(client, name, alias, set_stage, champion)
            stage_detail = "; " + undone
            _reject(by_version[champion], wrong)
            changed.append(by_version[champion])
            problems = [*wrong, undone]  # the read-back's findings described the state now undone
            champion, rolled_back = None, champion
        else:
            rolled_back = None
    ranking_text = (
        explain_ranking(ranking, {v: by_version[v].evidence.metrics for v in ranking}, thresholds.champion_order)
        if ranking
        else ""
    )
    for version in actions:
        if version in (champion, release, rolled_back):
            actions[version] += stage_detail
        elif by_version[version].decision.passed:
            actions[version] += f" ({ranking_text})"
        if problems:
            actions[version] += "; REGISTRY CHECK FAILED: " + "; ".join(problems)
    return Outcome(champion, actions, ranking_text, changed, problems)
