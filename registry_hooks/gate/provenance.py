"""Whose evidence it is: the gate's checks that an evaluation run is the version's latest, that
the evaluation key signed it, and that the parent it was compared with was attested.

Read-only MLflow calls and pure checks; nothing is written here.
"""

from __future__ import annotations

from collections.abc import Mapping

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from quantgate.contract import (
    EVAL_RUN_TAG,
    EVAL_SIGNATURE_TAG,
    EVIDENCE_SIGNATURE_TAG,
    FP32_ATTESTATION_TAG,
    PARENT_VERSION_TAG,
)
from quantgate.evidence_signing import EVALUATION, attestation_problem, evaluation_payload, signature_problem
from quantgate.printable import shown
from quantgate.tracking import filter_string, version_identity


def variant_problem(tags: Mapping[str, str], version: str) -> str | None:
    """Why a version is not a quantised variant the gate may judge as one (``None`` when it is):
    FP32, no parent, its own parent, or attested as an FP32 model (the twelfth adversarial run
    retagged the FP32 parent as a variant, and ``--candidates`` gated it)."""
    variant, parent = tags.get("variant"), tags.get(PARENT_VERSION_TAG)
    if not variant or variant == "fp32":
        return f"variant {variant!r}: the FP32 parent is not a promotion candidate"
    if not parent:
        return "no parent_version tag: not a quantgate variant"
    try:
        itself = int(parent) == int(version)  # as MLflow reads a version: "01", " 1", "+1", "١" are v1
    except ValueError:
        itself = False
    if itself:
        return f"parent_version {parent!r} is the version itself"
    if tags.get(FP32_ATTESTATION_TAG):
        return "it is attested as an FP32 model (fp32_attestation), whatever its variant tag says"
    return None


def parent_tags(client: MlflowClient, mv: ModelVersion) -> dict[str, str] | None:
    """The tags of the version's parent (``None`` without one; empty when it cannot be read: a
    signature over the parent's digest then fails, which is what an unreadable parent deserves)."""
    parent = mv.tags.get(PARENT_VERSION_TAG)
    if not parent:
        return None
    try:
        return dict(client.get_model_version(mv.name, parent).tags)
    except MlflowException:
        return {}


def signature_problems(
    key: bytes | None,
    mv: ModelVersion,
    run_id: str,
    run_tags: Mapping[str, str],
    parent: Mapping[str, str] | None,
) -> list[str]:
    """With an evidence key: why the evaluation's signature does not vouch for the evidence the
    gate is about to trust, or the parent it was measured against (a version without one: the
    version itself) is not attested as it stands now (none without a key). ``parent``: the
    parent's tags (:func:`parent_tags`)."""
    if key is None:
        return []
    tags = dict(mv.tags)
    payload = evaluation_payload(mv.name, mv.version, run_id, tags, run_tags, parent, identity=version_identity(mv))
    problem = signature_problem(key, EVALUATION, payload, tags.get(EVAL_SIGNATURE_TAG))
    if problem is None and run_tags.get(EVIDENCE_SIGNATURE_TAG) != tags.get(EVAL_SIGNATURE_TAG):
        problem = "the evaluation run's signature differs from the version's"
    problems = []
    if problem is not None:
        problems.append(
            f"evidence not vouched for by the evidence key: {problem}; only an evaluation run with "
            f"QUANTGATE_EVIDENCE_KEY set can sign it, so evaluate again there"
        )
    if parent is not None:
        parent_version = tags[PARENT_VERSION_TAG]
        unattested = attestation_problem(key, mv.name, parent_version, parent)
        if unattested:
            problems.append(
                f"parity was measured against v{parent_version}, which the evidence key does not vouch for as "
                f"an FP32 parent: {unattested}; if it is the model you trained, `quantgate attest --version "
                f"{parent_version}`, then evaluate again"
            )
    else:  # judged as an FP32 model itself (--allow-fp32): it must be one a key holder vouched for
        unattested = attestation_problem(key, mv.name, mv.version, tags)
        if unattested:
            problems.append(
                f"v{mv.version} has no parent, and the evidence key does not vouch for it as an FP32 model: "
                f"{unattested}; if it is the model you trained, `quantgate attest --version {mv.version}`"
            )
    return problems


def all_experiment_ids(client: MlflowClient) -> list[str]:
    """Every experiment's id, deleted ones included, page by page: one call returns at most
    1,000, newest first, so a store writer who creates 1,000 empty experiments would push the
    evaluation's own experiment out of a single page."""
    from mlflow.entities import ViewType

    ids, token = [], None
    while True:
        page = client.search_experiments(view_type=ViewType.ALL, max_results=1000, page_token=token)
        ids += [e.experiment_id for e in page]
        token = page.token
        if not token:
            return ids


def evaluation_runs(client: MlflowClient, filter_string: str, max_results: int = 50) -> list:
    """Evaluation runs matching ``filter_string`` in every experiment, deleted runs and
    experiments included (raises MlflowException when the store cannot be searched)."""
    from mlflow.entities import ViewType

    return client.search_runs(
        all_experiment_ids(client), filter_string=filter_string, run_view_type=ViewType.ALL, max_results=max_results
    )


def newer_evaluations(client: MlflowClient, mv: ModelVersion, run) -> list[str]:
    """Why ``run`` is not the version's latest evaluation: evaluations of the same version
    started after it, whatever their status (finished, failed, still running) and deleted ones
    included, found by their ``model_uri`` and ``version_identity`` params, which MLflow never
    lets anyone change (a tag would be editable): pointing ``eval_run_id`` back at an older
    evaluation that passed, or hiding the newer one (by a rename, say), must not choose the
    figures judged."""
    try:  # a store writer can put any text in the column (the forty-sixth adversarial run: 'abc')
        after = f"attributes.start_time > {int(run.info.start_time)}"
    except (TypeError, ValueError):
        return [
            f"evaluation run {run.info.run_id} has no start time a store writes ({shown(run.info.start_time)}), "
            "so no later evaluation can be ruled out; evaluate again"
        ]
    try:
        uri = filter_string(f"models:/{mv.name}/{mv.version}", "model URI")  # a name may hold an apostrophe
        runs = evaluation_runs(client, f"params.model_uri = {uri} and {after}")
        runs += evaluation_runs(client, f"params.version_identity = '{version_identity(mv)}' and {after}")
    except MlflowException as exc:
        return [f"cannot list the version's evaluations to check {run.info.run_id} is the latest: {exc.message}"]
    newer = sorted({f"{r.info.run_id} ({r.info.status.lower()})" for r in runs if r.info.run_id != run.info.run_id})
    if not newer:
        return []
    return [
        f"evaluation run {run.info.run_id} is not the version's latest: {len(newer)} later evaluation(s) "
        f"({', '.join(newer[:3])}) measured it again; the gate judges the latest (evaluate again to supersede it)"
    ]


def evaluations_of_files(client: MlflowClient, model_sha256: str) -> list[str]:
    """The evaluation runs that measured files with this whole-model digest, in any registered
    model, by their ``model_sha256`` param (logged when measuring starts; a param cannot be
    changed): a version registered as a copy of measured files is found however it is tagged."""
    return [r.info.run_id for r in evaluation_runs(client, f"params.model_sha256 = '{model_sha256}'")]


def superseded(client: MlflowClient, mv: ModelVersion, key: bytes | None = None) -> list[str]:
    """Why the evaluation a version's pass rests on no longer holds (:func:`run_superseded`, for
    the run its ``eval_run_id`` names): what ``serve``, ``score`` and the gate's look at the alias
    holder ask, since a pass is worth only as much as the evaluation it rests on. A version
    whose tags name no evaluation run has none for a pass to rest on (the fourteenth adversarial
    run deleted ``eval_run_id`` after a newer evaluation, and serve served the old pass)."""
    run_id = mv.tags.get(EVAL_RUN_TAG)
    if not run_id:
        return [f"its tags name no evaluation run ({EVAL_RUN_TAG}), so no evaluation vouches for its pass"]
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        return [f"its evaluation run {run_id} cannot be read: {exc.message}"]
    return run_superseded(client, mv, run, key)


def run_superseded(client: MlflowClient, mv: ModelVersion, run, key: bytes | None) -> list[str]:
    """Why ``run`` is not the evaluation the version's figures may be judged on: with a key, the
    evaluation signature on the version was not made for it (:func:`signature_problems`), or it
    is not the version's latest evaluation (:func:`newer_evaluations`). Putting an older
    evaluation's tags back, or only its signature beside the newest run's id, must not
    re-validate a pass (the twelfth and thirteenth adversarial runs); the gate asks the same of
    a candidate's evaluation (registry_hooks.gate.evidence.gather)."""
    return signature_problems(key, mv, run.info.run_id, run.data.tags, parent_tags(client, mv)) or newer_evaluations(
        client, mv, run
    )
