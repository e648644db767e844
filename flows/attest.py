"""attest: vouch, with the evidence key, that an FP32 version is the model you trained.

With ``QUANTGATE_EVIDENCE_KEY`` set, ``evaluate`` measures a variant's parity only against a
parent a key holder attested, and the gate refuses parity measured against any other. ``train``
runs without the key, so without this step nothing in the store tells the FP32 model it
registered from one any store writer registered: a label-swapped copy, which a variant with the
same swap agrees with perfectly.

Before signing it checks that the version exists, is an FP32 model (no ``parent_version``, no
other ``variant``), and that its files, downloaded now, are the files its ``model_sha256`` tag
records (and its artifacts, its ``manifest_sha256``); it prints what it attests (source run,
dataset, creation time, digest), so you can check it is yours. The signature (version tag
``fp32_attestation``) covers the model's name, version, ``model_sha256`` and
``manifest_sha256``, and the ``dataset_digest`` its training run logged (tag
``fp32_dataset_digest``): a parent whose files or digest tags change afterwards is no longer
attested, and ``evaluate --dataset auto`` accepts only data with the signed digest. ``main``
attests the FP32 version its own train step registered, as the step's receipt (a local file,
outside the store) names it, with the data digest the step computed.
"""

from __future__ import annotations

import datetime as dt

import click
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from flows.evaluate import fingerprint_if_missing, pinned_tags
from quantgate.contract import (
    ATTESTED_DATA_TAG,
    ATTESTED_TRAINING_TAG,
    DATA_DIGEST_PARAM,
    FP32_ATTESTATION_TAG,
    MANIFEST_TAG,
    MODEL_DIGEST_TAG,
    NONE_RECORDED,
    PARENT_VERSION_TAG,
    VARIANT_TAG,
    version_run_tag,
)
from quantgate.data import SPLITS, dataset_digest, load_dataset
from quantgate.errors import UserError
from quantgate.evidence_signing import (
    FP32_ATTESTATION,
    KEY_ENV,
    attestation_payload,
    attestation_problem,
    load_key,
    sign,
)
from quantgate.model_files import ModelIntegrityError
from quantgate.packaging import manifest_digest
from quantgate.printable import shown
from quantgate.tracking import DEFAULT_MODEL_NAME, configure_tracking, name_filter, resolve_version
from registry_hooks.gate.evidence import registered_files


def not_a_parent(mv: ModelVersion) -> str | None:
    """Why ``mv`` cannot be an FP32 parent (``None`` when it can)."""
    if mv.tags.get(PARENT_VERSION_TAG):
        return f"it is a variant of v{mv.tags[PARENT_VERSION_TAG]} ({PARENT_VERSION_TAG} tag)"
    variant = mv.tags.get(VARIANT_TAG)
    if variant and variant != "fp32":
        return f"it is tagged {VARIANT_TAG}={variant!r}, not an FP32 model"
    return None


def trained_data_digest(client: MlflowClient, mv: ModelVersion) -> str:
    """The ``dataset_digest`` param of the run that registered ``mv`` (``none``: no run, or it
    logged none, as a notebook's run does)."""
    if not mv.run_id:
        return NONE_RECORDED
    try:
        return client.get_run(mv.run_id).data.params.get(DATA_DIGEST_PARAM) or NONE_RECORDED
    except MlflowException:
        return NONE_RECORDED


def checked_data_digest(client: MlflowClient, mv: ModelVersion) -> tuple[str, str | None]:
    """The training data's digest to sign for ``mv``, and why it is ``none`` when it is. Its run's
    ``dataset_digest`` counts only when the data its ``dataset`` tags name (bundled, or in
    ``$QUANTGATE_TRUSTED_DATA``, as ``evaluate --dataset auto`` demands) has that digest now: a
    writer can add the param to a run that has none, or rewrite it in a sqlite file, then get the
    parent's attestation broken so that its owner attests it again (the twenty-ninth adversarial
    run had a re-attest sign a training file's digest)."""
    recorded = trained_data_digest(client, mv)
    if recorded == NONE_RECORDED:
        return NONE_RECORDED, f"its run logged no {DATA_DIGEST_PARAM}"
    try:
        dataset, _, pinned, kwargs = pinned_tags(mv)
        if pinned.untrusted:
            return NONE_RECORDED, f"the data its tags name is neither bundled nor trusted ({pinned.untrusted})"
        found = dataset_digest(load_dataset(pinned.dataset, SPLITS, **kwargs))
    except (UserError, OSError, ValueError) as exc:
        return NONE_RECORDED, f"the data its tags name cannot be read ({exc})"
    if found != recorded:
        return NONE_RECORDED, (
            f"its run logged {DATA_DIGEST_PARAM} {recorded[:12]}, but the data its tags name ({dataset}) has "
            f"{found[:12]}: the run or the data changed after training"
        )
    return recorded, None


def describe(mv: ModelVersion) -> str:
    """One line a person can check a version against: when, from which run, on which data."""
    created = dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return shown(
        f"{mv.name} v{mv.version} ({mv.tags.get(VARIANT_TAG) or 'no variant tag'}): registered {created} "
        f"from run {mv.run_id or '(none)'}, trained on {mv.tags.get('dataset', '(no dataset tag)')}"
    )


def origin_problem(client: MlflowClient, mv: ModelVersion) -> str | None:
    """Why the run :func:`describe` names is not where the version's files came from (``None``
    when it is, or when no run is named, which ``describe`` shows as such). Whoever registers a
    version chooses its ``run_id``: the twelfth adversarial run registered a label-swapped copy
    under the real train run's id, and ``attest`` printed the same origin as for the real model.
    Follows a copy (``models:/<name>/<version>``) to the version it copies; the logged model (or
    the artifact path) must belong to that run, and the run's own record of what it registered
    (``quantgate.version.fp32``), where it has one, must name that version."""
    if not mv.run_id:
        return None
    origin, source = mv, mv.source or ""
    try:
        for _ in range(8):  # a copy of a copy …
            name, _, version = source.removeprefix("models:/").partition("/")
            if not (source.startswith("models:/") and version.isdigit()):
                break
            origin = client.get_model_version(name, version)
            source = origin.source or ""
        run = client.get_run(mv.run_id)
        if source.startswith("models:/m-"):
            logged_by = client.get_logged_model(source.removeprefix("models:/")).source_run_id
        else:
            logged_by = mv.run_id if source.startswith((run.info.artifact_uri, f"runs:/{mv.run_id}/")) else None
    except MlflowException as exc:
        return f"cannot trace where its files came from: {exc.message}"
    if logged_by != mv.run_id:
        where = f"by run {logged_by}" if logged_by else "outside it"
        return f"it names run {mv.run_id}, but its files were logged {where}"
    registered = run.data.tags.get(version_run_tag("fp32"))
    if registered and registered != str(origin.version):
        return f"run {mv.run_id} registered v{registered} ({version_run_tag('fp32')}), not v{origin.version}"
    # A writer can also log files under the train run's name and re-tag the run (the thirteenth
    # run): but a train run registers one FP32 model, so a second one from it is not attested.
    # (A copy of the same files, e.g. by copy_model_version, is the same model: its files are
    # checked against the digest next.)
    siblings = client.search_model_versions(f"{name_filter(mv.name)} and run_id='{mv.run_id}'")
    attested = [
        v.version
        for v in siblings
        if str(v.version) != str(mv.version)
        and v.tags.get(FP32_ATTESTATION_TAG)
        and v.tags.get(MODEL_DIGEST_TAG) != mv.tags.get(MODEL_DIGEST_TAG)
    ]
    if attested:
        return f"run {mv.run_id} already registered v{attested[0]}, which is attested and has other files"
    return None


def files_problem(mv: ModelVersion) -> str | None:
    """Why the version's files, downloaded now, are not the ones its tags record: every file
    against ``model_sha256``, and the artifacts against ``manifest_sha256`` where it has one."""
    try:
        files = registered_files(mv)
    except (MlflowException, OSError, ValueError, KeyError) as exc:
        return f"cannot read its files to check them: {exc}"
    recorded, actual = mv.tags.get(MANIFEST_TAG), manifest_digest(files.actual)
    if files.model_problem is None and recorded and actual != recorded:
        return f"its artifacts' SHA-256 manifest is {actual[:16]}…, the registry recorded {recorded[:16]}…"
    return files.model_problem


def attest(
    client: MlflowClient, mv: ModelVersion, key: bytes, data_digest: str | None = None, training: str | None = None
) -> str:
    """Check ``mv`` is an FP32 model whose files match its ``model_sha256`` (and
    ``manifest_sha256``) and sign it, with the digest of the data it was trained on
    (``data_digest``, else :func:`checked_data_digest`) and, from ``main``, the digest of its
    train step's parameters (``training``); returns the signature (also its
    ``fp32_attestation`` tag)."""
    refusal = not_a_parent(mv)
    if refusal:
        raise UserError(f"refusing to attest {mv.name} v{mv.version}: {refusal}; only an FP32 model is a parent")
    unclear = origin_problem(client, mv)
    if unclear:
        raise UserError(f"refusing to attest {mv.name} v{mv.version}: {unclear}; attest only a model you trained")
    mv = fingerprint_if_missing(client, mv)
    problem = files_problem(mv)
    if problem:
        raise ModelIntegrityError(f"refusing to attest {mv.name} v{mv.version}: {problem}")
    # the data it was trained on: signed below, so a param added to or rewritten in the run later
    # no longer moves what `evaluate --dataset auto` accepts
    unchecked = None
    if not data_digest:
        data_digest, unchecked = checked_data_digest(client, mv)
    training = training or NONE_RECORDED
    client.set_model_version_tag(mv.name, mv.version, ATTESTED_DATA_TAG, data_digest)
    client.set_model_version_tag(mv.name, mv.version, ATTESTED_TRAINING_TAG, training)
    # signed as written here, not as read back: a tag swapped in between breaks the attestation
    tags = {**mv.tags, ATTESTED_DATA_TAG: data_digest, ATTESTED_TRAINING_TAG: training}
    signature = sign(key, FP32_ATTESTATION, attestation_payload(mv.name, mv.version, tags))
    client.set_model_version_tag(mv.name, mv.version, FP32_ATTESTATION_TAG, signature)
    if unchecked:
        click.echo(
            f"note: attested with no training data ({unchecked}), so with the key `evaluate --dataset auto` "
            "refuses its variants: name their test data with --dataset"
        )
    return signature


@click.command("attest", help=__doc__)
@click.option(
    "--version", "version_ref", required=True, help="FP32 version to attest: 1, news-classifier/1 or models:/…"
)
@click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True)
def cli(version_ref, model_name):
    key = load_key()
    if key is None:
        raise UserError(f"attest signs with the evidence key, and none is set: set {KEY_ENV} (see the README)")
    configure_tracking(experiment=None, model_name=model_name)  # it logs no run: no experiment to create
    client = MlflowClient()
    mv = resolve_version(version_ref, model_name)
    click.echo(describe(mv))
    earlier = attestation_problem(key, mv.name, mv.version, mv.tags)
    if earlier is None:
        click.echo(f"already attested under key {mv.tags[FP32_ATTESTATION_TAG].split(':')[1]}; nothing changed")
        return
    if mv.tags.get(FP32_ATTESTATION_TAG):
        click.echo(f"its earlier attestation no longer holds: {earlier}")
    attest(client, mv, key)
    tags = client.get_model_version(mv.name, mv.version).tags
    click.echo(
        f"attested v{mv.version}: files {tags[MODEL_DIGEST_TAG][:16]}…; variants evaluated against it from now on "
        "can pass the gate"
    )
    if tags[ATTESTED_DATA_TAG] != NONE_RECORDED:
        click.echo(
            f"its training data: {tags.get('dataset', 'news9')} ({DATA_DIGEST_PARAM} {tags[ATTESTED_DATA_TAG][:16]}…, "
            "checked against its run; signed: `--dataset auto` accepts only this)"
        )


if __name__ == "__main__":
    from flows.errors import run

    run(cli)
