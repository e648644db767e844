"""quantise: build variants of a registered FP32 version with one runtime's backend, check each
against its parent, and register each as a version of the same registered model.

Reads: ``--runtime`` (onnxruntime, torchscript, openvino, tensorrt, or a plugin's), ``--recipe``
(one variant of that runtime, or ``all``), ``--preset`` (the CPU family; ``auto`` reads the
host), ``--set VARIANT.FIELD=VALUE`` overrides, and ``--source`` (a registered FP32 version;
default the newest ``variant=fp32``).

Hands on: per recipe, a version tagged ``variant``, ``runtime``, ``precision``,
``parent_version``, ``recipe``, ``recipe_sha256`` and ``preset``, with ``quant_config.json`` in
its artifact, and the run tag ``quantgate.version.<variant>``. A version built before from the
same recipe, parent, code, libraries and data is reused, not registered again.

``--check-size N`` (default -1: off; 0: the whole test split) runs each new version through its
serving loader on the parent's test split and reports its parity with the parent, judged by
the gate's own parity rules from ``--thresholds``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata as md
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from flows.data_options import DataOptions
from flows.quantise_options import LATEST, common_options
from quantgate.backends import Backend, Built, backend_for, runtimes
from quantgate.code_identity import code_identity
from quantgate.contract import (
    PARENT_VERSION_TAG,
    RECIPE_SHA_TAG,
    RECIPE_TAG,
    VARIANT_TAG,
    version_run_tag,
)
from quantgate.data import SPLITS, dataset_digest, load_dataset
from quantgate.errors import UserError
from quantgate.evidence_signing import attestation_problem, attested_data_problem, key_in_reach, load_key
from quantgate.model_files import ModelIntegrityError, load_checked
from quantgate.packaging import log_variant
from quantgate.recipes import Recipe, RecipeError, build_recipe, variants_for
from quantgate.recipes.base import CALIBRATE_ON_PARENT
from quantgate.tracking import all_versions, configure_tracking, name_filter, resolve_version
from registry_hooks.gate.parity import describe, parity
from registry_hooks.gate.thresholds import DEFAULT_THRESHOLDS, load_thresholds

# LATEST ("latest-fp32"): the newest variant=fp32 version, the default --source
# Libraries every build depends on (the parent is loaded and exported with them).
LIBRARIES = ("torch", "onnx", "onnxruntime", "transformers")


# --------------------------------------------------------------------------- the parent
def latest_fp32_version(model_name: str) -> ModelVersion:
    """The newest version tagged variant=fp32; with an evidence key, the newest one attested (a
    tag is any writer's: the thirty-fifth adversarial run registered its own "fp32" version, and
    the key holder's `quantise` picked it)."""
    found = all_versions(MlflowClient(), f"{name_filter(model_name)} and tags.variant='fp32'")
    if not found:
        raise UserError(f"no version of {model_name!r} is tagged variant=fp32: run `quantgate train` first")
    key = load_key()
    if key is not None:
        found = [mv for mv in found if attestation_problem(key, mv.name, mv.version, mv.tags) is None]
        if not found:
            raise UserError(
                f"no FP32 version of {model_name!r} is attested under this key, and with an evidence key "
                "latest-fp32 means the newest attested one: `quantgate attest --version N`, or --source N"
            )
    return max(found, key=lambda mv: int(mv.version))


def resolve_source(source: str, model_name: str) -> ModelVersion:
    """``latest-fp32`` (or empty) means the newest variant=fp32 version; anything else is a
    version reference (number, name@alias, models:/ URI)."""
    if source in ("", LATEST):
        return latest_fp32_version(model_name)
    mv = resolve_version(source, model_name)
    variant, parent = mv.tags.get("variant"), mv.tags.get(PARENT_VERSION_TAG)
    if parent or variant not in (None, "fp32"):  # said before any run is logged
        raise UserError(
            f"version {mv.version} is the {variant or 'variant'} of v{parent or '?'}; quantise builds from the "
            f"FP32 model: --source {parent or 'latest-fp32'}"
        )
    return mv


@contextmanager
def load_parent(source: ModelVersion) -> Iterator:
    """Within: the FP32 parent's pyfunc (manifest-verified on load), from files checked against
    its ``model_sha256`` (and, with a key in reach, running only the installed serving code);
    quantising needs its torch model, and a build its tokenizer files. ``parent.registered``
    says which registry version it is (a backend may record it). Its files are removed on leaving."""
    with tempfile.TemporaryDirectory(prefix="quantgate-parent-") as tmp:
        parent = load_checked(source, Path(tmp), key_in_reach())
        if parent.meta["runtime"] != "torch":
            raise UserError(
                f"version {source.version} is a {parent.meta['runtime']} model; quantising needs the FP32 torch parent"
            )
        parent.registered = {"name": source.name, "version": str(source.version)}
        yield parent


# --------------------------------------------------------------------------- reuse
def build_digest(source: ModelVersion, backend: Backend, data: str = "") -> str:
    """SHA-256 of everything besides the recipe that decides the built files: the parent and its
    files, the code the backend runs, the libraries, and what the backend adds (``data``)."""
    h = hashlib.sha256()
    h.update(f"{source.name}/{source.version}/{source.tags.get('manifest_sha256', '')}".encode())
    h.update(code_identity(backend.build.__module__).encode())
    h.update(code_identity("quantgate.packaging").encode())  # the pyfunc and the packaging around the files
    for lib in LIBRARIES:
        try:
            h.update(f"{lib}=={md.version(lib)}".encode())
        except md.PackageNotFoundError:
            h.update(f"{lib} missing".encode())
    h.update(data.encode())
    return h.hexdigest()


def recipe_identity(recipe: Recipe, source: ModelVersion) -> str:
    """The version tag ``recipe_sha256``: the recipe plus its build digest."""
    backend = backend_for(recipe.runtime)
    return recipe.sha256(build_digest(source, backend, backend.identity(recipe)))


def find_existing(source: ModelVersion, recipe_sha256: str, variant: str) -> ModelVersion | None:
    """The newest ``variant`` of ``source`` built with this exact identity. The identity is a tag
    any writer can copy onto a version of their own, so only a version whose ``parent_version`` is
    ``source`` counts (the thirtieth adversarial run had main stage a variant of an older model as
    the new one's); with a key, evaluate then rebuilds it from that parent."""
    built = f"{name_filter(source.name)} and tags.{RECIPE_SHA_TAG}='{recipe_sha256}'"
    found = [
        mv
        for mv in all_versions(MlflowClient(), built)
        if mv.tags.get(PARENT_VERSION_TAG) == str(source.version) and mv.tags.get(VARIANT_TAG) == variant
    ]
    return max(found, key=lambda mv: int(mv.version)) if found else None


def reuse(mv: ModelVersion, recipe: Recipe) -> ModelVersion:
    """Hand on an existing version as if just built: same run tag that `main` reads."""
    mlflow.set_tag(version_run_tag(recipe.variant), mv.version)
    click.echo(f"reusing {mv.name} version {mv.version} ({recipe.variant}: same recipe, parent, code and libraries)")
    return mv


def split_reusable(
    source: ModelVersion, recipes: list[Recipe]
) -> tuple[list[tuple[Recipe, str]], dict[str, ModelVersion]]:
    """Log each recipe's params; hand on the version an identical earlier build registered,
    and return the rest, with their identities, still to build."""
    todo, done = [], {}
    for recipe in recipes:
        mlflow.log_params(recipe.params())
        sha = recipe_identity(recipe, source)
        existing = find_existing(source, sha, recipe.variant)
        if existing:
            done[recipe.variant] = reuse(existing, recipe)
        else:
            todo.append((recipe, sha))
    return todo, done


# --------------------------------------------------------------------------- build, check, register
def quantise(
    source: ModelVersion, recipes: list[Recipe], *, step: str = "quantise", check=None
) -> dict[str, ModelVersion]:
    """Inside the active run: reuse what an identical earlier build registered, build the rest
    with their backends, register each, and (``check``: a :class:`ParityCheck`) check it."""
    mlflow.set_tags({"quantgate.step": step, "quantgate.source_version": source.version})
    mlflow.log_params({"source_version": source.version})
    recipes = [calibrate_on_parent_data(r, source) for r in recipes]
    for runtime in sorted({r.runtime for r in recipes}):
        backend_for(runtime).preflight()  # before the parent is loaded: say early what this machine lacks
    todo, done = split_reusable(source, recipes)
    if not todo:
        return done
    with load_parent(source) as parent, tempfile.TemporaryDirectory(prefix=f"quantgate-{step}-") as tmp:
        for recipe, sha in todo:
            built = backend_for(recipe.runtime).build(recipe, parent, Path(tmp))
            for note in built.notes:
                click.echo(note)
            if built.metrics:
                mlflow.log_metrics(dict(built.metrics))
            mv = register(recipe, built, parent=parent, source=source, recipe_sha256=sha)
            if check is not None:
                check.run(recipe, mv, parent)
            done[recipe.variant] = mv
    return done


def quantise_one(source: ModelVersion, recipe: Recipe) -> ModelVersion:
    """One recipe, inside the active run; returns its version."""
    return quantise(source, [recipe], step=f"quantise_{recipe.runtime}")[recipe.variant]


def register(recipe: Recipe, built: Built, *, parent, source: ModelVersion, recipe_sha256: str) -> ModelVersion:
    """Log the built files as a pyfunc version of the parent's registered model, with the
    resolved recipe inside the artifact (quant_config.json) and on the version's tags.

    Each variant is logged from a child run of its own, named after it, holding only its
    recipe: the logged model's params are that recipe (MLflow copies the logging run's params
    onto the model), and the version's source run - what the UI's "Compare" of versions puts
    side by side - is this variant's alone, so evaluate can record its figures there."""
    config = recipe.resolved()
    params = {"source_version": source.version, **{k: v for k, v in config.items() if k != "variant"}}
    backend = backend_for(recipe.runtime)
    step_run = mlflow.active_run()
    with mlflow.start_run(
        run_name=recipe.variant,
        nested=step_run is not None,
        experiment_id=step_run.info.experiment_id if step_run else None,
    ):
        mlflow.log_params({k: str(v) for k, v in params.items()})
        mlflow.set_tags({"quantgate.step": "register", "quantgate.variant": recipe.variant})
        mv = log_variant(
            model_path=built.path,
            tokenizer_dir=parent.artifact_paths["tokenizer"],
            runtime=recipe.runtime,
            variant=recipe.variant,
            precision=recipe.precision,
            registered_model_name=source.name,
            labels=parent.labels,
            parent_version=source.version,
            max_length=parent.max_length,
            device=backend.device,
            quant_config=config,
            params=params,
            loader=backend.loader,
            packages=backend.packages,
            extra_tags={
                RECIPE_TAG: json.dumps(config, sort_keys=True),
                RECIPE_SHA_TAG: recipe_sha256,
                "preset": recipe.preset,
                **built.tags,
            },
        )
    if step_run is not None:  # how `main` finds what the quantise step handed on
        mlflow.set_tag(version_run_tag(recipe.variant), mv.version)
    click.echo(f"registered {mv.name} version {mv.version} ({recipe.variant}, parent {source.version})")
    return mv


class ParityCheck:
    """Runs a registered variant through its own serving loader on the parent's test split and
    logs its parity with the parent, judged by the gate's parity rules (``thresholds``)."""

    def __init__(self, source: ModelVersion, size: int, thresholds, prefix: str = "check"):
        self.source, self.size, self.thresholds, self.prefix = source, size, thresholds, prefix
        self._split = None

    def split(self, labels: list[str]) -> tuple[list[str], list[int]]:
        if self._split is None:
            self._split = check_split(self.size, labels, *trained_on(self.source))
        return self._split

    def run(self, recipe: Recipe, mv: ModelVersion, parent) -> dict[str, float] | None:
        texts, y_true = self.split(parent.labels)
        if not texts:
            return None
        mv = MlflowClient().get_model_version(mv.name, mv.version)  # with its digest tag
        with tempfile.TemporaryDirectory(prefix="quantgate-check-") as tmp:
            try:  # the registered files, as a store writer may have left them: checked before loading
                model = load_checked(mv, Path(tmp), key_in_reach())
            except ModelIntegrityError as exc:
                if not key_in_reach():
                    raise
                click.echo(f"{recipe.variant}: parity not checked here: {exc}")  # evaluate refuses it the same way
                return None
            ref = np.concatenate([parent.infer(parent.encode(texts[i : i + 32])) for i in range(0, len(texts), 32)])
            got = np.concatenate([model.infer(model.encode(texts[i : i + 32])) for i in range(0, len(texts), 32)])
        result = parity(ref, got, y_true, self.thresholds)
        mlflow.log_metrics({f"{recipe.variant}.{self.prefix}_{k}": v for k, v in result.items()})
        click.echo(describe(recipe.variant, f"{recipe.runtime}, {len(texts)} test texts", result, self.thresholds))
        return result


def check_split(
    size: int, labels: list[str], dataset: str = "news9", options: dict | None = None
) -> tuple[list[str], list[int]]:
    """The texts and label ids a build is checked on: the test split of the dataset the parent
    was trained on (the one the evaluator and the gate use; never used for calibration), all
    of it when ``size`` is 0, none when it is negative. Ids index ``labels``, the parent's order."""
    if size < 0:
        return [], []
    from quantgate.data import DataError, load_dataset

    test = load_dataset(dataset, ("train", "test"), **(options or {}))["test"]
    index = {name: i for i, name in enumerate(labels)}
    unknown = sorted(set(test.frame["label"]) - set(index))
    if unknown:
        raise DataError(f"{test.origin}: label(s) {unknown} are not in the model's label map {labels}")
    texts, ids = list(test.texts), [index[name] for name in test.frame["label"]]
    return (texts, ids) if size == 0 else (texts[:size], ids[:size])


def calibrate_on_parent_data(recipe: Recipe, source: ModelVersion) -> Recipe:
    """A recipe calibrating on ``auto`` calibrates on what the FP32 parent was trained on (its
    dataset, columns and labels), so a user's classifier is never calibrated on news9. With a key,
    only on data of the digest the parent's attestation signed: the thirty-sixth adversarial run
    re-pointed an attested parent's ``dataset`` tag at news9 for a moment, and the key holder's
    static build calibrated on it."""
    if getattr(recipe, "calibration_dataset", None) != CALIBRATE_ON_PARENT:
        return recipe
    dataset, options = trained_on(source)
    key = load_key()
    if key is not None:
        found = dataset_digest(load_dataset(dataset, SPLITS, **DataOptions(**options).kwargs()))
        problem = attested_data_problem(key, source.name, source.version, source.tags, found)
        if problem:
            raise UserError(
                f"calibrating {recipe.variant} on v{source.version}'s training data ({dataset!r}, which its tags "
                f"name): {problem}; with an evidence key a tag (any store writer's) does not choose calibration "
                f"data: pass --set {recipe.variant}.calibration_dataset=<bundled or trusted data>"
            )
    return dataclasses.replace(
        recipe, calibration_dataset=dataset, calibration_options=json.dumps(options, sort_keys=True) if options else ""
    )


def trained_on(source: ModelVersion) -> tuple[str, dict]:
    """The dataset (and its loading options) the FP32 version was trained on, from its tags."""
    options = json.loads(source.tags.get("dataset_options") or "{}")
    return source.tags.get("dataset", "news9"), options


# --------------------------------------------------------------------------- the command line
def parse_overrides(items: tuple[str, ...]) -> dict[str, dict]:
    """``--set onnx-int8-static.calibration_method=Percentile`` -> {variant: {field: value}}.
    Values are read as JSON where they parse (true, 128, 99.99, ["MatMul"]), else as text."""
    out: dict[str, dict] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        variant, dot, name = key.strip().rpartition(".")
        if not sep or not dot or not name:
            raise click.BadParameter(f"{item!r}: expected VARIANT.FIELD=VALUE", param_hint="--set")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(variant, {})[name] = tuple(value) if isinstance(value, list) else value
    return out


def recipes_for(runtime: str, choice: str, preset: str, overrides: dict[str, dict]) -> list[Recipe]:
    """``all`` or one variant of ``runtime``, with the preset's formats and the overrides."""
    known = variants_for(runtime)
    if not known:
        backend_for(runtime)  # a plugin registers its recipes when its backend is imported
        known = variants_for(runtime)
    if choice != "all" and choice not in known:
        raise RecipeError(f"--recipe: {choice!r} is not a {runtime} variant ({list(known)})")
    variants = list(known) if choice == "all" else [choice]
    stray = sorted(set(overrides) - set(variants))
    if stray:
        raise RecipeError(f"--set: overrides for {stray}, which this run does not build ({variants})")
    return [build_recipe(v, preset, **overrides.get(v, {})) for v in variants]


def parity_check(
    source: ModelVersion, check_size: int, thresholds_path: str, target: str | None = None, prefix: str = "check"
):
    """The check a build gets, or None when ``check_size`` is negative."""
    if check_size < 0:
        return None
    policy = load_thresholds(thresholds_path)
    return ParityCheck(source, check_size, policy.targets.get(target, policy.base) if target else policy.base, prefix)


def run_step(
    step: str,
    runtime: str,
    *,
    source: str,
    model_name: str,
    recipe_choice: str,
    preset: str,
    overrides: tuple[str, ...],
    check_size: int = -1,
    thresholds_path: str = str(DEFAULT_THRESHOLDS),
) -> dict[str, ModelVersion]:
    """What every quantise command does: check the request, then one run of ``quantise``."""
    try:
        recipes = recipes_for(runtime, recipe_choice, preset, parse_overrides(overrides))
    except RecipeError as exc:  # a usage error of this command: exit 2, as click's own
        raise click.BadParameter(str(exc)) from None
    backend = backend_for(runtime)
    backend.preflight()  # before the registry is touched
    configure_tracking(model_name=model_name)
    src = resolve_source(source, model_name)
    target = "gpu" if backend.device == "gpu" else None
    check = parity_check(src, check_size, thresholds_path, target, "engine" if runtime == "tensorrt" else "check")
    with mlflow.start_run(run_name=step):
        return quantise(src, recipes, step=step, check=check)


def alias_command(step: str, runtime: str, doc: str, *, preset_help: str, set_example: str) -> click.Command:
    """The command of one runtime (``quantise_onnx`` …): ``quantise --runtime <runtime>`` with
    that runtime's variants as ``--recipe`` choices, kept as an MLproject entry point."""

    @click.command(step, help=doc)
    @click.option(
        "--recipe",
        "recipe_choice",
        type=click.Choice(["all", *variants_for(runtime)]),
        default="all",
        show_default=True,
        help="Which variant to build.",
    )
    @common_options(preset_help=preset_help, set_example=set_example)
    def command(recipe_choice, source, model_name, preset, overrides):
        run_step(
            step,
            runtime,
            source=source,
            model_name=model_name,
            recipe_choice=recipe_choice,
            preset=preset,
            overrides=overrides,
        )

    return command


@click.command("quantise", help=__doc__)
@click.option("--runtime", required=True, help=f"The backend that builds the variants: {', '.join(runtimes())}.")
@click.option("--recipe", "recipe_choice", default="all", show_default=True, help="One variant of the runtime, or all.")
@common_options()
@click.option(
    "--check-size",
    type=int,
    default=-1,
    show_default=True,
    help="Test texts each new version is checked on against its parent (0: all of them; -1: skip).",
)
@click.option(
    "--thresholds",
    "thresholds_path",
    type=click.Path(dir_okay=False),
    default=str(DEFAULT_THRESHOLDS),
    show_default=True,
    help="Gate thresholds whose parity limits the check reports against.",
)
def cli(runtime, recipe_choice, source, model_name, preset, overrides, check_size, thresholds_path):
    run_step(
        f"quantise_{runtime}",
        runtime,
        source=source,
        model_name=model_name,
        recipe_choice=recipe_choice,
        preset=preset,
        overrides=overrides,
        check_size=check_size,
        thresholds_path=thresholds_path,
    )


if __name__ == "__main__":
    from flows.errors import run

    run(cli)
