"""What the quantise steps share: finding the FP32 parent, the build identity that makes a
second run reuse a version instead of registering a duplicate, and registering a variant
with its recipe.

Reuse works through the version tag ``recipe_sha256``: the SHA-256 of the resolved recipe
together with the *build digest* (the parent version and its files, the code that shapes
the artifact, the library versions that produce it, and any data it was calibrated on).
Before building, a step searches the registry for a version of the same model carrying that
tag; if one exists, it is handed on instead.
"""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import tempfile
from pathlib import Path

import click
import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from flows.packaging import log_variant
from flows.recipes import Recipe
from flows.tracking import resolve_version, version_uri

LATEST = "latest-fp32"
FLOWS_DIR = Path(__file__).resolve().parent
# Modules whose code decides what a variant's files are (the serving pyfunc is copied into it).
SHARED_CODE = ("quantise_common.py", "recipes.py", "packaging.py", "serving_model.py", "labels.py")
LIBRARIES = ("torch", "onnx", "onnxruntime", "transformers")


def latest_fp32_version(model_name: str) -> ModelVersion:
    found = MlflowClient().search_model_versions(f"name='{model_name}' and tags.variant='fp32'")
    if not found:
        raise click.ClickException(
            f"no version of {model_name!r} is tagged variant=fp32: run `quantgate train` first"
        )
    return max(found, key=lambda mv: int(mv.version))


def resolve_source(source: str, model_name: str) -> ModelVersion:
    """``latest-fp32`` (or empty) means the newest variant=fp32 version; anything else is a
    version reference (number, name@alias, models:/ URI)."""
    if source in ("", LATEST):
        return latest_fp32_version(model_name)
    return resolve_version(source, model_name)


def load_parent(source: ModelVersion):
    """The FP32 parent's pyfunc (manifest-verified on load); quantising needs its torch model."""
    parent = mlflow.pyfunc.load_model(version_uri(source)).unwrap_python_model()
    if parent.meta["runtime"] != "torch":
        raise click.ClickException(
            f"version {source.version} is a {parent.meta['runtime']} model; quantising needs the FP32 torch parent"
        )
    return parent


def build_digest(source: ModelVersion, code_files: tuple[str, ...], data_digest: str = "") -> str:
    """SHA-256 of everything besides the recipe that decides the built files."""
    h = hashlib.sha256()
    h.update(f"{source.name}/{source.version}/{source.tags.get('manifest_sha256', '')}".encode())
    for name in sorted({*SHARED_CODE, *code_files}):
        h.update(name.encode())
        h.update((FLOWS_DIR / name).read_bytes())
    for lib in LIBRARIES:
        try:
            h.update(f"{lib}=={md.version(lib)}".encode())
        except md.PackageNotFoundError:
            h.update(f"{lib} missing".encode())
    h.update(data_digest.encode())
    return h.hexdigest()


def find_existing(source: ModelVersion, recipe_sha256: str) -> ModelVersion | None:
    """The newest version of the source's model that was built with this exact identity."""
    found = MlflowClient().search_model_versions(
        f"name='{source.name}' and tags.recipe_sha256='{recipe_sha256}'"
    )
    return max(found, key=lambda mv: int(mv.version)) if found else None


def reuse(mv: ModelVersion, recipe: Recipe) -> ModelVersion:
    """Hand on an existing version as if just built: same run tag that `main` reads."""
    mlflow.set_tag(f"quantgate.version.{recipe.variant}", mv.version)
    click.echo(f"reusing {mv.name} version {mv.version} ({recipe.variant}: same recipe, parent, code and libraries)")
    return mv


def split_reusable(source: ModelVersion, recipes, identity) -> tuple[list[tuple[Recipe, str]], dict[str, ModelVersion]]:
    """Log each recipe's params; hand on the version an identical earlier build registered
    (``identity(recipe)`` is its ``recipe_sha256``), and return the rest, with their
    identities, still to build."""
    todo, done = [], {}
    for recipe in recipes:
        mlflow.log_params(recipe.params())
        sha = identity(recipe)
        existing = find_existing(source, sha)
        if existing:
            done[recipe.variant] = reuse(existing, recipe)
        else:
            todo.append((recipe, sha))
    return todo, done


def quantise_with(step: str, source: ModelVersion, recipes, identity, build) -> dict[str, ModelVersion]:
    """The shape every quantise step shares, inside the active run: reuse what an identical
    earlier build registered (``identity(recipe)`` is its ``recipe_sha256``), build the rest
    with ``build(recipe, parent, workdir) -> model path`` and register each as a version."""
    mlflow.set_tags({"quantgate.step": step, "quantgate.source_version": source.version})
    mlflow.log_params({"source_version": source.version})
    todo, done = split_reusable(source, recipes, identity)
    if not todo:
        return done
    parent = load_parent(source)
    with tempfile.TemporaryDirectory(prefix=f"quantgate-{step}-") as tmp:
        for recipe, sha in todo:
            model_path = build(recipe, parent, Path(tmp))
            done[recipe.variant] = register(recipe, model_path=model_path, parent=parent, source=source, recipe_sha256=sha)
    return done


def register(
    recipe: Recipe, *, model_path: Path, parent, source: ModelVersion, recipe_sha256: str
) -> ModelVersion:
    """Log the built file as a pyfunc version of the parent's registered model, with the
    resolved recipe inside the artifact (quant_config.json) and on the version's tags.

    Each variant is logged from a child run of its own, named after it, holding only its
    recipe: the logged model's params are that recipe (MLflow copies the logging run's params
    onto the model), and the version's source run - what the UI's "Compare" of versions puts
    side by side - is this variant's alone, so evaluate can record its figures there."""
    config = recipe.resolved()
    params = {"source_version": source.version, **{k: v for k, v in config.items() if k != "variant"}}
    step_run = mlflow.active_run()
    with mlflow.start_run(run_name=recipe.variant, nested=step_run is not None,
                          experiment_id=step_run.info.experiment_id if step_run else None):
        mlflow.log_params({k: str(v) for k, v in params.items()})
        mlflow.set_tags({"quantgate.step": "register", "quantgate.variant": recipe.variant})
        mv = log_variant(
            model_path=model_path,
            tokenizer_dir=parent.artifact_paths["tokenizer"],
            runtime=recipe.runtime,
            variant=recipe.variant,
            precision=recipe.precision,
            registered_model_name=source.name,
            labels=parent.labels,
            parent_version=source.version,
            max_length=parent.max_length,
            quant_config=config,
            params=params,
            extra_tags={
                "recipe": json.dumps(config, sort_keys=True),
                "recipe_sha256": recipe_sha256,
                "preset": recipe.preset,
            },
        )
    if step_run is not None:  # how `main` finds what the quantise step handed on
        mlflow.set_tag(f"quantgate.version.{recipe.variant}", mv.version)
    click.echo(f"registered {mv.name} version {mv.version} ({recipe.variant}, parent {source.version})")
    return mv


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
