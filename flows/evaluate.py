"""evaluate: measure one registered version with the `quantgate` MLflow evaluator.

Reads: ``--version`` (number, ``name@alias`` or ``models:/`` URI) and its ``parent_version``
tag, if any (an FP32 version; with an evidence key set, one attested by ``quantgate attest``).
Runs ``mlflow.models.evaluate(..., evaluators=["quantgate"])`` on the test split, which
records in this run and on the version's logged model: macro F1, accuracy and
per-class F1; size and parameter count; batch-1 latency p50/p90/p95/p99 after warm-up
(tokenisation timed apart) and batch-32 throughput; parity with the parent (agreement, F1
drop, |Δprob|, KL, label flips) and speedup over it measured interleaved, with a bootstrap
interval; plus a confusion matrix, confidence bars and the disagreeing headlines.
Hands on: version tags ``eval_run_id``, ``eval_status`` and ``eval_manifest_sha256`` (which
files were measured), read by ``promote``; the short headline tags ``macro_f1``, ``p95_ms``,
``size_mb`` and ``speedup`` a person compares versions by; a model card in the version
description; and the same metrics on the version's source run, which the UI's "Compare" of
versions reads.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import tempfile
import time
from pathlib import Path

import click
import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from evaluators.measure import host_fingerprint
from evaluators.plugin import PREDICTIONS_ARTIFACT
from evaluators.report import headline_tags, model_card
from flows.data_options import DataOptions, data_options, pop_data_options
from flows.errors import debugging, one_line
from flows.rebuild import rebuild_problem
from quantgate.artifact_download import download_artifacts
from quantgate.contract import (
    DESCRIPTION_BLOCK_TAG,
    EVAL_SIGNATURE_TAG,
    EVALUATED_DATA_TAG,
    EVIDENCE_SIGNATURE_TAG,
    PARENT_VERSION_TAG,
    PREDICTIONS_TABLE,
)
from quantgate.data import (
    SPLITS,
    DataError,
    Dataset,
    TaggedData,
    dataset_digest,
    evaluated_digest,
    load_dataset,
    pin_tagged_data,
)
from quantgate.description import pair_seals, put_card
from quantgate.description_write import update_description
from quantgate.errors import UserError
from quantgate.evidence_signing import (
    EVALUATION,
    attestation_problem,
    attested_data_problem,
    block_seal,
    evaluation_payload,
    load_key,
    redact,
    sign,
)
from quantgate.model_files import (
    EVAL_METRICS_DIGEST_TAG,
    EVAL_MODEL_DIGEST_TAG,
    EVAL_PREDICTIONS_DIGEST_TAG,
    METRICS_DIGEST_TAG,
    MODEL_DIGEST_TAG,
    PREDICTIONS_DIGEST_TAG,
    ModelIntegrityError,
    digest,
    digest_problem,
    download,
    metrics_digest,
    model_manifest,
    sha256_file,
    untrusted_code,
)
from quantgate.tracking import (
    DEFAULT_MODEL_NAME,
    configure_tracking,
    log_params_once,
    logged_model_id,
    resolve_version,
    version_identity,
    version_uri,
)
from registry_hooks.gate.provenance import evaluations_of_files

TRUSTED_DATA_ENV = "QUANTGATE_TRUSTED_DATA"  # with a key: folders (os.pathsep-separated) `auto` may follow tags to
MIN_TEST_ROWS = 2  # F1, accuracy and a bootstrap need a test split; one row cannot be split into one
AUTO = "auto"


def data_source(mv: ModelVersion, parent_first: bool = False) -> ModelVersion:
    """The version whose tags name the training data: the version itself when it has a
    ``dataset`` tag or no parent, else its FP32 parent. ``parent_first`` (an evidence key is set):
    the parent whenever there is one, as a variant's own tags are any writer's (the twenty-sixth
    adversarial run pointed a variant's ``dataset`` tag at the training file)."""
    parent = mv.tags.get("parent_version")
    if parent and (parent_first or "dataset" not in mv.tags):
        return MlflowClient().get_model_version(mv.name, parent)
    return mv


def trained_on(mv: ModelVersion) -> tuple[str, DataOptions]:
    """The dataset (and options) the version's FP32 model was trained on, from the ``dataset`` /
    ``dataset_options`` tags of :func:`data_source`; news9 for versions that predate them."""
    return dataset_tags(data_source(mv))


def dataset_tags(source: ModelVersion) -> tuple[str, DataOptions]:
    """The dataset and data options ``source``'s own tags name."""
    raw = source.tags.get("dataset_options") or "{}"
    try:
        options = DataOptions(**json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"version {source.version}'s dataset_options tag is not options quantgate wrote ({type(exc).__name__}); "
            "pass --dataset and the data options yourself"
        ) from None
    return source.tags.get("dataset", "news9"), options


def pinned_tags(source: ModelVersion) -> tuple[str, DataOptions, TaggedData, dict]:
    """The data ``source``'s ``dataset`` tags name, pinned where its trust check looks (bundled, or
    inside ``$QUANTGATE_TRUSTED_DATA``): the tagged dataset, its options, the pin (``untrusted``
    says why it is not trusted) and the loader's keyword arguments for what was checked, so the
    loader reads that, not the tag's names looked up again (a link repointed meanwhile)."""
    dataset, options = dataset_tags(source)
    pinned = pin_tagged_data(dataset, options.labels, os.environ.get(TRUSTED_DATA_ENV, "").split(os.pathsep))
    return dataset, options, pinned, {**options.kwargs(), "labels": pinned.labels}


def model_labels(mv: ModelVersion) -> list[str]:
    """The version's label map, read from its artifact (logit order)."""
    from quantgate.labels import load_label_map

    try:
        with tempfile.TemporaryDirectory(prefix="quantgate-labels-") as tmp:
            path = download_artifacts(artifact_uri=f"{version_uri(mv)}/artifacts/label_map.json", dst_path=tmp)
            return load_label_map(path)
    except (MlflowException, OSError, ValueError) as exc:  # logged outside quantgate, removed, or malformed
        detail = exc.message if isinstance(exc, MlflowException) else f"{type(exc).__name__}: {exc}"
        raise UserError(
            f"version {mv.version} has no readable label map (artifacts/label_map.json), so it is no model "
            f"quantgate can evaluate: {detail}"
        ) from None


def check_test_labels(test_labels, model_labels: list[str], origin: str) -> None:
    unknown = sorted(set(test_labels) - set(model_labels))
    if unknown:
        raise DataError(
            f"{origin}: label(s) {unknown} are not among the model's {len(model_labels)} labels {model_labels}"
        )


def load_test_data(
    mv: ModelVersion, dataset: str, options: DataOptions | None = None
) -> tuple[str, DataOptions, Dataset]:
    """The dataset's train and test splits (``auto``: what the version's FP32 model was trained
    on), refused in one line (``DataError``) when the test split is too small to measure anything
    on or holds labels the model does not know. Returns (dataset, options, data)."""
    if dataset == AUTO:
        if options is not None and options.changed():
            flags = ", ".join("--" + name.replace("_", "-") for name in options.changed())
            raise DataError(
                f"{flags} apply to a dataset you name; --dataset auto reads version {mv.version}'s training data "
                "with the options it was trained with: pass --dataset <file or folder> as well"
            )
        keyed = load_key() is not None
        source = data_source(mv, parent_first=keyed)
        dataset, options, pinned, kwargs = pinned_tags(source)
        if pinned.untrusted and keyed:
            raise DataError(
                f"--dataset auto follows version {source.version}'s tags to {dataset!r}, and with an evidence key "
                f"set a tag (which any store writer can set) does not choose the data a verdict rests on: "
                f"{pinned.untrusted}; pass --dataset <your test data>, or list its folder in ${TRUSTED_DATA_ENV}"
            )
        if keyed:
            data = trained_data(source, dataset, pinned.dataset, kwargs)
        else:
            data = load_dataset(pinned.dataset, ("train", "test"), **kwargs)
    else:
        options = options or DataOptions()
        data = load_dataset(dataset, ("train", "test"), **options.kwargs())
    if len(data["test"]) < MIN_TEST_ROWS:
        raise DataError(
            f"{dataset}: its test split has {len(data['test'])} row(s); evaluation needs at least "
            f"{MIN_TEST_ROWS} (give a larger file, or a folder with a test file)"
        )
    check_test_labels(data["test"].frame["label"], model_labels(mv), data["test"].origin)
    return dataset, options, data


def trained_data(source: ModelVersion, named: str, pinned: str, kwargs: dict) -> Dataset:
    """The train and test splits of the data ``source`` was trained on, refused in one line unless
    every split (validation included) has the digest its attestation signed (``fp32_dataset_digest``,
    its training run's ``dataset_digest`` when a key holder attested it): with a key, tags only say
    where the data lies, the attestation says which data it is. (The twenty-sixth adversarial run
    named a trusted folder's ``train.csv``, split it 70/10/20, and judged a variant on training
    texts; the twenty-eighth did the same after adding the param a notebook's run lacked, or
    rewriting it in the sqlite file: a run param is not signed.)"""
    # checked again on this copy, whose tag is read next: checked_parent read the parent earlier
    full = load_dataset(pinned, SPLITS, **kwargs)
    problem = attested_data_problem(load_key(), source.name, source.version, source.tags, dataset_digest(full))
    if problem:
        raise DataError(
            f"--dataset auto: {named!r} (version {source.version}'s tags): {problem}; with an evidence key set a "
            "verdict rests only on the data the model was trained and split with: pass --dataset <your test data>"
        )
    return Dataset(full.source, {n: full[n] for n in ("train", "test")}, full.labels, full.dropped)


def fingerprint_if_missing(client: MlflowClient, mv: ModelVersion) -> ModelVersion:
    """A version registered outside quantgate (a notebook's plain ``log_model``) has no
    ``model_sha256``: record the digest of the files this evaluation measures, so the gate can
    later refuse any file changed after evaluation. Never overwrites a recorded digest."""
    if mv.tags.get(MODEL_DIGEST_TAG):
        return mv
    with tempfile.TemporaryDirectory(prefix="quantgate-fingerprint-") as tmp:
        recorded = digest(model_manifest(download(version_uri(mv), tmp)))
    client.set_model_version_tag(mv.name, mv.version, MODEL_DIGEST_TAG, recorded)
    click.echo(
        f"note: {mv.name} v{mv.version} had no {MODEL_DIGEST_TAG} (registered outside quantgate); "
        f"recorded the digest of its files as they are now ({recorded[:12]}…)"
    )
    return client.get_model_version(mv.name, mv.version)


def evaluate(
    mv: ModelVersion,
    *,
    dataset: str = "news9",
    latency_runs: int = 200,
    threads: int = 2,
    options: DataOptions | None = None,
    data: Dataset | None = None,
) -> dict[str, float]:
    """Evaluate ``mv`` inside the active run and record the outcome on the version.
    ``dataset="auto"``: the dataset (and options) its FP32 model was trained on; ``data``: the
    splits already loaded by :func:`load_test_data`."""
    client = MlflowClient()
    key = load_key()  # a bad key fails before anything is measured
    os.environ["QUANTGATE_THREADS"] = str(threads)  # read by the ONNX Runtime backend at load
    mv = fingerprint_if_missing(client, mv)
    parent = checked_parent(client, mv, key)
    if data is None:
        dataset, options, data = load_test_data(mv, dataset, options)
    click.echo(f"test data: {data['test'].origin} ({len(data['test'])} texts)")
    options = options or DataOptions()
    metrics, table = run_evaluator(mv, data, latency_runs, threads, parent, trusted_only=key is not None)
    host = {**host_fingerprint(), "threads": str(threads)}
    measured = evaluated_digest(data)
    log_run_context(mv, host, dataset=dataset, options=options, data=data, measured=measured, latency_runs=latency_runs)
    run_id = mlflow.active_run().info.run_id
    # the figures and the predictions table this process logged, checked against the store's
    # copies (the gate reads those): the gate refuses them if anything is re-logged or rewritten
    # later, and a change made meanwhile fails this evaluation (the thirty-third adversarial run
    # re-logged a latency figure, and swapped the table, while evaluate ran: the key signed the
    # digests of what it read back)
    logged = stored_metrics_digest(client, run_id, metrics)
    predictions = stored_table_sha256(run_id, table)
    mlflow.set_tags({METRICS_DIGEST_TAG: logged, PREDICTIONS_DIGEST_TAG: predictions})
    written = {**host, METRICS_DIGEST_TAG: logged, PREDICTIONS_DIGEST_TAG: predictions, EVALUATED_DATA_TAG: measured}
    signature = sign_evidence(mv, run_id, key, parent, written) if key else None
    copy_to_source_run(client, mv, metrics, run_id)
    record_on_version(
        client,
        mv,
        metrics,
        host,
        run_id=run_id,
        metrics_sha256=logged,
        predictions_sha256=predictions,
        signature=signature,
        key=key,
    )
    shown = {k: round(v, 4) for k, v in metrics.items() if not k.startswith("f1.")}
    click.echo(f"{mv.name} v{mv.version} ({mv.tags.get('variant')}): {json.dumps(shown)}")
    return metrics


def stored_metrics_digest(client: MlflowClient, run_id: str, metrics: dict[str, float]) -> str:
    """The digest of the figures this evaluation logged (``metrics``), once the run's metrics in
    the store are exactly those; refused (``ModelIntegrityError``) when anything else is there."""
    stored = client.get_run(run_id).data.metrics
    if metrics_digest(stored) != metrics_digest(metrics):
        changed = sorted(k for k in set(stored) | set(metrics) if repr(stored.get(k)) != repr(metrics.get(k)))
        raise ModelIntegrityError(
            f"evaluation run {run_id}'s metrics in the store are not the figures it logged "
            f"(differs: {', '.join(changed[:5]) or 'values'}): someone logged into the run while it measured"
        )
    return metrics_digest(metrics)


def stored_table_sha256(run_id: str, table: str) -> str:
    """SHA-256 of the predictions table as the artifact store holds it, once its bytes are
    ``table`` (the text the evaluator wrote); refused (``ModelIntegrityError``) when they are not."""
    with tempfile.TemporaryDirectory(prefix="quantgate-artifact-") as tmp:
        path = Path(download_artifacts(run_id=run_id, artifact_path=PREDICTIONS_TABLE, dst_path=tmp))
        if path.read_bytes() != table.encode("utf-8"):
            raise ModelIntegrityError(
                f"evaluation run {run_id}'s {PREDICTIONS_TABLE} in the store is not the table it wrote: "
                "someone replaced it while the evaluation ran"
            )
        return sha256_file(path)


def sign_evidence(mv: ModelVersion, run_id: str, key: bytes, parent: ModelVersion | None, written: dict) -> str:
    """Sign what this evaluation recorded (quantgate.evidence_signing), the parent's files and
    attestation as checked before measuring included, and tag the run with it; the version gets
    the same signature from :func:`record_on_version`. ``written``: the run tags it wrote (host,
    digests of its figures, table and test split), signed as this process computed them, not
    read back from the store, where a writer (a sqlite trigger, say) could have changed them:
    the signature then no longer matches the tags. A tag it did not write is signed empty, never
    as the store holds it (the thirty-ninth adversarial run set ``host.gpu``, which the host
    fingerprint lacked, on the running evaluation, and the key signed an H100)."""
    parent_tags = dict(parent.tags) if parent is not None else None
    run_tags = dict(written)
    payload = evaluation_payload(
        mv.name, mv.version, run_id, mv.tags, run_tags, parent_tags, identity=version_identity(mv)
    )
    signature = sign(key, EVALUATION, payload)
    mlflow.set_tag(EVIDENCE_SIGNATURE_TAG, signature)
    return signature


def verified_copy(client: MlflowClient, mv: ModelVersion, dst: Path, trusted_only: bool = False) -> Path:
    """The version's files, downloaded once and checked against the registry's ``model_sha256``.
    The evaluation measures this copy, so files changed in the store during it (and put back
    after) cannot colour its figures. ``trusted_only`` (an evidence key is set): refuse a model
    whose code is not the serving code this quantgate installs, since this process holds the key."""
    mv = fingerprint_if_missing(client, mv)
    local = download(version_uri(mv), dst)
    problem = digest_problem(local, dict(mv.tags), what=f"version {mv.version}")
    if problem is None and trusted_only:
        problem = untrusted_code(local)
    if problem:
        raise ModelIntegrityError(f"refusing to evaluate with {mv.name} v{mv.version}: {problem}")
    return local


def checked_parent(client: MlflowClient, mv: ModelVersion, key: bytes | None) -> ModelVersion | None:
    """The FP32 version ``mv``'s ``parent_version`` names (``None`` without one), refused in one
    line when it is the version itself or a variant, or, with an evidence key, when no valid
    attestation vouches for its files (``quantgate attest``): parity with a parent says nothing
    unless the parent is the model that was trained."""
    parent = mv.tags.get(PARENT_VERSION_TAG)
    if not parent:
        # with a key, a version without a parent is measured only as the FP32 model the key holder
        # attested: anything else would run unrebuilt (the twenty-seventh adversarial run had a
        # re-saved graph with no parent tag evaluated and signed)
        unattested = attestation_problem(key, mv.name, mv.version, mv.tags) if key else None
        if unattested:
            raise ModelIntegrityError(
                f"refusing to evaluate {mv.name} v{mv.version}: it has no {PARENT_VERSION_TAG} tag, so with an "
                f"evidence key it is run only as an attested FP32 model, and {unattested}; if it is the model you "
                f"trained, run `quantgate attest --version {mv.version}` and evaluate again"
            )
        return None
    refusal = f"refusing to evaluate {mv.name} v{mv.version}: its {PARENT_VERSION_TAG} tag names v{parent}"
    try:
        parent_mv = client.get_model_version(mv.name, parent)
    except MlflowException as exc:
        raise ModelIntegrityError(f"{refusal}, which cannot be read ({exc.message})") from None
    itself = str(parent_mv.version) == str(mv.version)
    if itself or parent_mv.tags.get(PARENT_VERSION_TAG):
        raise ModelIntegrityError(
            f"{refusal}, which is {'the version itself' if itself else 'a variant, not an FP32 model'}; "
            f"parity is measured against the FP32 model a variant was built from"
        )
    unattested = attestation_problem(key, mv.name, parent, parent_mv.tags) if key else None
    if unattested:
        raise ModelIntegrityError(
            f"{refusal}, which the evidence key does not vouch for as an FP32 parent: {unattested}; "
            f"if v{parent} is the model you trained, run `quantgate attest --version {parent}` and evaluate again"
        )
    return parent_mv


def run_evaluator(
    mv: ModelVersion,
    data: Dataset,
    latency_runs: int,
    threads: int,
    parent: ModelVersion | None = None,
    trusted_only: bool = False,
) -> tuple[dict[str, float], str]:
    """Run the ``quantgate`` evaluator on the test split (against ``parent``, if any); its metrics,
    and its predictions table as it wrote it (the file's text).
    Both the version and its parent are verified copies (``trusted_only``: see :func:`verified_copy`)."""
    client = MlflowClient()
    config = {"latency_runs": latency_runs, "threads": threads}
    with tempfile.TemporaryDirectory(prefix="quantgate-evaluate-") as tmp:
        model = verified_copy(client, mv, Path(tmp) / "model", trusted_only)
        if parent is not None:
            parent_copy = verified_copy(client, parent, Path(tmp) / "parent", trusted_only)
            config["parent_model_uri"] = str(parent_copy)
            if trusted_only:  # a graph is a program: run only what quantgate's recipe rebuilds from the parent
                trusted = os.environ.get(TRUSTED_DATA_ENV, "").split(os.pathsep)
                problem = rebuild_problem(model, parent_copy, mv, parent, trusted)
                if problem:
                    raise ModelIntegrityError(f"refusing to evaluate {mv.name} v{mv.version}: {problem}")
        # From here the run is an evaluation of this version, found as such by the gate's
        # newer_evaluations (registry_hooks.gate.provenance): one that fails or is killed while
        # measuring supersedes the earlier one, whatever the version's tags are put back to.
        # A refusal above (files that are not the registered ones, code not quantgate's) measured
        # nothing and does not count.
        log_params_once(
            {
                "model_uri": version_uri(mv),
                "version_identity": version_identity(mv),  # the version under any later name
                "model_sha256": mv.tags[MODEL_DIGEST_TAG],
            }
        )
        result = mlflow.models.evaluate(
            str(model),
            data["test"].frame[["text", "label"]],
            targets="label",
            model_type="classifier",
            evaluators=["quantgate"],
            evaluator_config={"quantgate": config},
            model_id=logged_model_id(mv),  # MLflow then attaches the metrics to the logged model too
        )
    return dict(result.metrics), result.artifacts[PREDICTIONS_ARTIFACT].content


def log_run_context(
    mv: ModelVersion,
    host: dict,
    *,
    dataset: str,
    options: DataOptions,
    data: Dataset,
    measured: str,
    latency_runs: int,
) -> None:
    """Tag the evaluation run with what was measured and where (``measured``: the test split's
    :func:`~quantgate.data.evaluated_digest`), and log its params."""
    mlflow.set_tags(
        {
            "quantgate.step": "evaluate",
            EVALUATED_DATA_TAG: measured,  # signed with the figures (sign_evidence)
            "quantgate.evaluated_version": str(mv.version),
            "quantgate.variant": mv.tags.get("variant", ""),
            "manifest_sha256": mv.tags.get("manifest_sha256", ""),
            MODEL_DIGEST_TAG: mv.tags.get(MODEL_DIGEST_TAG, ""),
            **host,
            **{f"lib.{p}": md.version(p) for p in ("torch", "onnxruntime", "transformers", "mlflow")},
        }
    )
    log_params_once(
        {
            "model_uri": version_uri(mv),
            "dataset": dataset,
            "dataset_used": dataset,
            "dataset_digest": dataset_digest(data),
            "latency_runs": latency_runs,
            **{f"data.{k}": v for k, v in options.changed().items()},
        }
    )


def record_on_version(
    client: MlflowClient,
    mv: ModelVersion,
    metrics: dict[str, float],
    host: dict,
    *,
    run_id: str,
    metrics_sha256: str,
    predictions_sha256: str,
    signature: str | None = None,
    key: bytes | None = None,
) -> None:
    """Tag the version with its evaluation (run, status, digests, headline figures, and the
    evidence signature when a key is set) and put the model card in its description (its block
    sealed with ``key``, :func:`quantgate.evidence_signing.block_seal`)."""
    for tag, value in {
        "eval_run_id": run_id,
        "eval_status": "complete",
        "eval_manifest_sha256": mv.tags.get("manifest_sha256", ""),
        EVAL_MODEL_DIGEST_TAG: mv.tags.get(MODEL_DIGEST_TAG, ""),
        EVAL_METRICS_DIGEST_TAG: metrics_sha256,
        EVAL_PREDICTIONS_DIGEST_TAG: predictions_sha256,
        **headline_tags(metrics),
    }.items():
        client.set_model_version_tag(mv.name, mv.version, tag, value)
    if signature:
        client.set_model_version_tag(mv.name, mv.version, EVAL_SIGNATURE_TAG, signature)
    elif EVAL_SIGNATURE_TAG in mv.tags:  # an earlier evaluation's signature vouches for nothing now
        client.delete_model_version_tag(mv.name, mv.version, EVAL_SIGNATURE_TAG)
    tags = client.get_model_version(mv.name, mv.version).tags
    card = model_card(mv.name, str(mv.version), tags, metrics, host)
    # quantgate's block is the one it wrote last (by its seal): a block quoted in a person's text stays theirs
    seal, owner = block_seal(key, mv.name, mv.version), f"{mv.name} v{mv.version}"
    written = update_description(
        client,
        mv.name,
        str(mv.version),
        lambda text, own: put_card(text, card, own=own, seal=seal, owner=owner),
        DESCRIPTION_BLOCK_TAG,  # names the block it writes: see quantgate.description_write
        lambda text: pair_seals(text, seal, owner),
    )
    if not written:
        click.echo(
            f"note: v{mv.version}'s description kept changing; the evaluation itself is recorded (run {run_id})",
            err=True,
        )


def copy_to_source_run(client: MlflowClient, mv: ModelVersion, metrics: dict[str, float], eval_run_id: str) -> None:
    """Also record the figures on the run that logged the version: the registry's "Compare" of
    versions shows their source runs' metrics side by side, not the evaluation runs'."""
    if not mv.run_id or mv.run_id == eval_run_id:
        return
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, 0) for k, v in metrics.items() if isinstance(v, (int, float))]
    for i in range(0, len(batch), 500):  # log_batch takes at most 1000 entries
        client.log_batch(mv.run_id, metrics=batch[i : i + 500])
    client.set_tag(mv.run_id, "quantgate.eval_run_id", eval_run_id)


@click.command("evaluate", help=__doc__)
@click.option(
    "--version",
    "version_ref",
    required=True,
    help="Version to evaluate: 3, news-classifier/3, news-classifier@staging or models:/…",
)
@click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True)
@click.option(
    "--dataset",
    default=AUTO,
    show_default=True,
    help=(
        "Test data: 'auto' (what the version's FP32 model was trained "
        "on, with its options), news9, or a local file or folder."
    ),
)
@click.option(
    "--latency-runs",
    default=200,
    show_default=True,
    type=click.IntRange(min=1),  # refused before any run: a typo must not mark the version's evaluation failed
    help="Timed batch-1 calls (after 20 warm-up calls).",
)
@click.option(
    "--threads",
    default=2,
    show_default=True,
    type=click.IntRange(min=1),
    help="Intra-op threads for torch and ONNX Runtime.",
)
@click.option(
    "--unmeasured-only",
    is_flag=True,
    help=(
        "Measure only files no evaluation has measured before, in any registered model (what the "
        "webhook receiver asks with an evidence key: a version registered as a copy of measured "
        "files is not measured again until noise passes)."
    ),
)
@data_options
def cli(version_ref, model_name, dataset, latency_runs, threads, unmeasured_only, **options):
    key = load_key()  # a bad evidence key stops here: no run, the version's tags untouched
    configure_tracking(model_name=model_name)
    requested = pop_data_options(options)
    mv = resolve_version(version_ref, model_name)
    if unmeasured_only:
        mv = fingerprint_if_missing(MlflowClient(), mv)  # a copy with its digest tag deleted is found too
        recorded = mv.tags[MODEL_DIGEST_TAG]
        if not re.fullmatch("[0-9a-f]{64}", recorded):  # (and a quote in it would break the search)
            raise UserError(
                f"{mv.name} v{mv.version}'s {MODEL_DIGEST_TAG} tag {recorded[:24]!r} is not a SHA-256 digest: "
                f"its files cannot be vouched for"
            )
        earlier = evaluations_of_files(MlflowClient(), recorded)
        if earlier:
            raise UserError(
                f"{mv.name} v{mv.version}'s files were measured before (evaluation run(s) {', '.join(earlier[:3])}), "
                f"and --unmeasured-only measures new files only; a key holder who wants them measured again runs "
                f"`quantgate evaluate --version {mv.version} --model-name {mv.name}`"
            )
    # a dataset mistake stops here, and so does a parent that cannot be measured against: no run,
    # the version's tags untouched (with --dataset auto the parent first: the data is the parent's)
    auto = dataset == AUTO
    if auto:
        checked_parent(MlflowClient(), mv, key)
    dataset, requested, data = load_test_data(mv, dataset, requested)
    if not auto:
        checked_parent(MlflowClient(), mv, key)
    with mlflow.start_run(run_name=f"evaluate-v{mv.version}"):
        try:
            evaluate(mv, dataset=dataset, latency_runs=latency_runs, threads=threads, options=requested, data=data)
        except Exception as exc:
            status = redact(f"failed: {type(exc).__name__}: {exc}", key)  # redacted before it is cut
            MlflowClient().set_model_version_tag(mv.name, mv.version, "eval_status", status[:500])
            if isinstance(exc, MlflowException) and not debugging():  # a refused model: one line, not a traceback
                raise click.ClickException(
                    one_line(f"evaluation of {mv.name} v{mv.version} failed: {exc.message}")
                ) from None
            raise


if __name__ == "__main__":
    from flows.errors import run

    run(cli)
