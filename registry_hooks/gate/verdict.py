"""One version's verdict and how it is written down on the registry.

A ``Verdict`` pairs a version with the gate's decision and the evidence behind it. The rest of
this module names where a decision is recorded (``gate.*`` tags, or ``gate.<target>.*`` for a
target; ``gate.passed.<alias>`` for a pass) and writes it: the version tags, the note appended
to the version description, and the body of the promote run's ``decision.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from quantgate.contract import DESCRIPTION_BLOCK_TAG, EVAL_SIGNATURE_TAG, MODEL_DIGEST_TAG
from quantgate.description import pair_seals, put_note
from quantgate.description_write import update_description
from quantgate.evidence_signing import GATE_PASS, block_seal, gate_pass_payload, sign, signature_problem
from registry_hooks.gate.decision import Decision, decide
from registry_hooks.gate.evidence import Evidence, gather
from registry_hooks.gate.report import gate_note, reasons_digest
from registry_hooks.gate.thresholds import Thresholds


@dataclass
class Verdict:
    """One version's decision and the evidence behind it."""

    mv: ModelVersion
    decision: Decision
    evidence: Evidence
    action: str = ""

    @property
    def version(self) -> str:
        """The version number, as text."""
        return str(self.mv.version)


def default_alias(target: str | None) -> str:
    """``staging``, or ``staging-<target>`` for a target."""
    return "staging" if target is None else f"staging-{target}"


def tag_prefix(target: str | None) -> str:
    """Where a decision is written: ``gate.*`` for the default gate, ``gate.<target>.*`` for a
    target, so a ``--target cpu`` verdict never overwrites the default gate's."""
    return "gate." if target is None else f"gate.{target}."


def pass_tag(alias: str) -> str:
    """Set on a version when it passes the gate for ``alias``, removed when it is rejected for it:
    the version's own recorded pass, which an alias holder must have."""
    return f"gate.passed.{alias}"


def pass_signature_tag(alias: str) -> str:
    """With an evidence key: the HMAC of the pass recorded in :func:`pass_tag`, which binds it to
    this version's files, so a pass tag copied or typed by hand does not verify."""
    return f"gate.passed.{alias}.signature"


def pass_signature(key: bytes, name: str, version: str, alias: str, tags: Mapping[str, str], recorded: str) -> str:
    """The signature a gate writes beside a pass it records (``tags``: the version's, as judged)."""
    payload = gate_pass_payload(
        name=name,
        version=version,
        alias=alias,
        model_sha256=tags.get(MODEL_DIGEST_TAG, ""),
        recorded=recorded,
        evaluation=tags.get(EVAL_SIGNATURE_TAG, ""),
    )
    return sign(key, GATE_PASS, payload)


def decision_tag(alias: str) -> str:
    """The gate's latest decision for ``alias`` on this version: ``passed <time>`` or
    ``rejected <time>``. A pass tag counts only beside ``passed`` at the pass's own time, so pass
    tags put back after a rejection (or with the alias tags removed) do not."""
    return f"gate.decision.{alias}"


def withdrawn_pass(tags: Mapping[str, str], alias: str, *, strict: bool = False) -> str | None:
    """Why the version's pass tag for ``alias`` is not backed by the gate's latest decision for
    that alias (``None`` when it is). ``strict`` (an evidence key is set): the per-alias decision
    must exist; without it, a version gated before that tag existed is judged by the
    ``gate.alias`` / ``gate.decision`` pair instead."""
    when = (tags.get(pass_tag(alias)) or "").split(" ")[0]
    decided = tags.get(decision_tag(alias))
    if decided is not None:
        return None if decided == f"passed {when}" else f"the latest decision for @{alias} is {decided!r}"
    if strict:
        return f"no {decision_tag(alias)} decision backs it"
    for key, value in tags.items():
        if key.startswith("gate.") and key.endswith(".alias") and value == alias:
            decision = tags.get(key.removesuffix("alias") + "decision")
            if decision != "passed":
                return f"its latest decision for @{alias} ({key.removesuffix('alias')}decision) is {decision!r}"
    return None


def pass_problem(tags: Mapping[str, str], alias: str, *, name: str, version: str, key: bytes | None) -> str | None:
    """With an evidence key, why the version's recorded pass for ``alias`` is not the gate's own
    (``None`` when it is, or when no key is set)."""
    if key is None:
        return None
    payload = gate_pass_payload(
        name=name,
        version=version,
        alias=alias,
        model_sha256=tags.get(MODEL_DIGEST_TAG, ""),
        recorded=tags.get(pass_tag(alias), ""),
        evaluation=tags.get(EVAL_SIGNATURE_TAG, ""),
    )
    return signature_problem(key, GATE_PASS, payload, tags.get(pass_signature_tag(alias)))


def recorded_pass(
    tags: Mapping[str, str],
    alias: str,
    target: str | None,
    *,
    name: str = "",
    version: str = "",
    key: bytes | None = None,
) -> bool:
    """Does the version carry its own recorded pass for ``alias`` (not just a hand-set alias),
    backed by the gate's latest decision for it? With an evidence key, only a pass signed by the
    gate for this version's files and evaluation counts."""
    if tags.get(pass_tag(alias)):
        if withdrawn_pass(tags, alias, strict=key is not None):
            return False
        return pass_problem(tags, alias, name=name, version=version, key=key) is None
    if key is not None:
        return False
    prefix = tag_prefix(target)  # a version gated before pass tags existed
    return tags.get(f"{prefix}decision") == "passed" and tags.get(f"{prefix}alias") == alias


def assess(
    mv: ModelVersion, thresholds: Thresholds, client: MlflowClient | None = None, key: bytes | None = None
) -> Verdict:
    """Gather the evidence and decide; reads the registry, writes nothing. ``key``: the
    evidence key, when one is set (the evaluation's signature is then required)."""
    evidence = gather(mv, thresholds, client, key)
    return Verdict(mv, decide(evidence.metrics, thresholds, evidence.problems), evidence)


def decision_tags(
    verdict: Verdict, *, alias: str, now: str, thresholds: Thresholds, key: bytes | None = None
) -> dict[str, str | None]:
    """The ``gate.*`` tags of one decision (the UI's version page shows them); ``gate.<target>.*``
    for a target. ``None`` means: delete that tag (a rejection withdraws an earlier pass). With
    an evidence key, a pass is signed (:func:`pass_signature_tag`)."""
    prefix = tag_prefix(thresholds.target)
    recorded = f"{now} thresholds {thresholds.digest()[:12]}" if verdict.decision.passed else None
    signature = None
    if recorded and key is not None:
        signature = pass_signature(key, verdict.mv.name, verdict.version, alias, verdict.mv.tags, recorded)
    return {
        f"{prefix}decision": "passed" if verdict.decision.passed else "rejected",
        f"{prefix}reasons": verdict.decision.summary()[:5000],
        f"{prefix}reasons_sha256": reasons_digest(verdict.decision),
        f"{prefix}thresholds_sha256": thresholds.digest(),
        f"{prefix}time": now,
        f"{prefix}alias": alias,
        pass_tag(alias): recorded,
        pass_signature_tag(alias): signature,
        decision_tag(alias): f"{'passed' if verdict.decision.passed else 'rejected'} {now}",
    }


def set_tags(client: MlflowClient, verdict: Verdict, tags: Mapping[str, str | None]) -> None:
    """Set the version's tags; a ``None`` value deletes that tag if present."""
    for key, value in tags.items():
        if value is not None:
            client.set_model_version_tag(verdict.mv.name, verdict.version, key, value)
        elif key in client.get_model_version(verdict.mv.name, verdict.version).tags:
            client.delete_model_version_tag(verdict.mv.name, verdict.version, key)


def append_description(
    client: MlflowClient,
    verdict: Verdict,
    *,
    alias: str,
    now: str,
    thresholds: Thresholds,
    run_id: str,
    key: bytes | None,
) -> bool:
    """Append the decision's note to the version description (read, append, write back only if
    unchanged meanwhile: :func:`quantgate.description_write.update_description`; the block found
    and sealed as :func:`quantgate.evidence_signing.block_seal` says). False: not written."""
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
    name, version = verdict.mv.name, verdict.version
    seal, owner = block_seal(key, name, version), f"{name} v{version}"
    return update_description(
        client,
        name,
        version,
        # own: the block quantgate wrote last, by its tag, read with the description on each try
        lambda text, own: put_note(text, note, own=own, seal=seal, owner=owner),
        DESCRIPTION_BLOCK_TAG,
        lambda text: pair_seals(text, seal, owner),
    )


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
