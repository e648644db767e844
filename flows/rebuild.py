"""With an evidence key, a variant is measured only when quantgate's own recipe rebuilds it, byte
for byte, from its attested FP32 parent.

An ONNX graph is a program, not a table of weights: ``Shape``, ``If`` and arithmetic on a
tensor's dimensions let it answer one way for the batches and lengths the evaluator runs and
another way for those serving and scoring run (the twenty-second adversarial run registered a
graph that permuted the labels for batches of more than 32 texts, and another for texts padded
past 20 tokens; both passed the gate and were served). No finite evaluation sees every shape,
so the key holder does not run a graph a store writer wrote: ``evaluate`` rebuilds the variant
with the backend and the recipe recorded on the version (its ``recipe`` tag) from the parent's
verified files, and refuses the version unless its ``model`` artifact is what that build wrote.
ONNX Runtime and OpenVINO builds are deterministic on one host and library set; a TensorRT
engine is not (its kernels are chosen by timing), so with a key it is refused like TorchScript.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion

from quantgate.backends import backend_for
from quantgate.contract import DEVICE_TAG, PRECISION_TAG, RECIPE_TAG, VARIANT_TAG
from quantgate.data import pin_tagged_data
from quantgate.errors import UserError
from quantgate.model_files import artifact_path, model_manifest
from quantgate.recipes import RecipeError, recipe_from_json
from quantgate.serving_model import sha256_file

# Runtimes whose builds cannot be repeated byte for byte, and why.
NOT_REPRODUCIBLE = {
    "tensorrt": "a TensorRT engine is not built reproducibly (its kernels are chosen by timing runs)",
}


def _digests(path: Path) -> dict[str, str]:
    return model_manifest(path) if path.is_dir() else {"": sha256_file(path)}


def pinned_calibration(recipe, trusted_data: list[str]) -> tuple[object, str | None]:
    """The recipe with its calibration data pinned where the trust check looked (see
    :func:`quantgate.data.pin_tagged_data`), and why that data is not data the user vouched for
    (``None``: it is, or the recipe calibrates on nothing): its dataset, and a names file its
    ``calibration_options`` give as ``labels``, as ``evaluate --dataset auto`` asks of a dataset
    tag. The recipe is a tag any writer sets, and this process holds the key: the twenty-third
    adversarial run named the key file as the names file, and the twenty-fifth repointed a link
    between the check and the build."""
    dataset = getattr(recipe, "calibration_dataset", None)
    if not dataset:
        return recipe, None
    try:
        options = json.loads(recipe.calibration_options or "{}")
    except (ValueError, TypeError):
        return recipe, "its calibration_options are not JSON"
    if not isinstance(options, dict):
        return recipe, "its calibration_options are not a JSON object"
    pinned = pin_tagged_data(dataset, options.get("labels", ""), trusted_data)
    if pinned.labels:
        options["labels"] = pinned.labels
    pinned_options = json.dumps(options, sort_keys=True) if options else ""
    return replace(recipe, calibration_dataset=pinned.dataset, calibration_options=pinned_options), pinned.untrusted


def packaging_problem(local: Path, meta: dict, recipe_json: str, recipe, parent, backend) -> str | None:
    """Why the files the pyfunc reads beside the model are not what `quantgate quantise` writes
    for this recipe and parent (``None``: they are). The serving model reads ``meta.json``'s
    ``max_length`` and the precision hint in ``quant_config.json``; the twenty-seventh adversarial
    run raised a genuine variant's ``max_length`` from 24 to 1000, passed the keyed rebuild (it
    compared the model file only) and the gate, and the served model failed on long texts the
    test split did not hold. The tokenizer and label map are held to the parent's elsewhere."""
    expected = {
        "runtime": recipe.runtime,
        "variant": recipe.variant,
        "precision": recipe.precision,
        "max_length": parent.max_length,
        **({"loader": Path(backend.loader).stem} if backend.loader else {}),
    }
    found = {k: v for k, v in meta.items() if k != "manifest"}
    if found != expected:
        return f"its meta.json holds {found}, not what quantise writes for this recipe and parent ({expected})"
    config_path = artifact_path(local, "quant_config")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path and config_path.is_file() else None
    except (OSError, ValueError) as exc:
        return f"its quant_config.json cannot be read: {exc}"
    if config != json.loads(recipe_json):
        return "its quant_config.json is not its recipe tag's recipe"
    return None


def rebuild_problem(
    local: Path, parent_local: Path, mv: ModelVersion, parent_mv: ModelVersion, trusted_data: list[str]
) -> str | None:
    """Why the verified copy at ``local`` is not what its recipe builds from the verified parent
    copy at ``parent_local`` (``None``: it is, byte for byte). A static recipe's calibration data
    is read only from a bundled dataset or inside ``trusted_data`` (a tag names it)."""
    raw = mv.tags.get(RECIPE_TAG)
    if not raw:
        return f"it has no {RECIPE_TAG!r} tag to rebuild it from (it was not built by `quantgate quantise`)"
    try:
        recipe = recipe_from_json(raw)
    except (RecipeError, ValueError, TypeError, AttributeError) as exc:
        return f"its {RECIPE_TAG!r} tag is not a recipe this quantgate builds: {exc}"
    if recipe.runtime in NOT_REPRODUCIBLE:
        return f"{NOT_REPRODUCIBLE[recipe.runtime]}, so no build can vouch for its file"
    meta_path = artifact_path(local, "meta")
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path and meta_path.is_file() else {}
    if (meta.get("runtime"), meta.get("variant")) != (recipe.runtime, recipe.variant):
        return (
            f"its meta.json says {meta.get('variant')!r} on {meta.get('runtime')!r}, "
            f"its recipe {recipe.variant!r} on {recipe.runtime!r}"
        )
    said = (mv.tags.get(VARIANT_TAG), mv.tags.get(PRECISION_TAG))
    if said != (recipe.variant, recipe.precision):  # the thirty-third run passed an fp16 build off as int8
        built = f"{recipe.variant!r} ({recipe.precision!r})"
        return f"its tags call it {said[0]!r} ({said[1]!r}), but its recipe builds {built}"
    recipe, untrusted = pinned_calibration(recipe, trusted_data)  # built below from what was checked
    if untrusted:
        return f"its recipe calibrates on data a tag names ({untrusted}); list it in $QUANTGATE_TRUSTED_DATA"
    try:
        backend = backend_for(recipe.runtime)
    except UserError as exc:
        return f"its runtime {recipe.runtime!r} has no builder here ({exc})"
    if mv.tags.get(DEVICE_TAG, "") != backend.device:  # the thirty-ninth run signed a cpu build tagged gpu
        return f"its {DEVICE_TAG!r} tag says {mv.tags.get(DEVICE_TAG)!r}, but its recipe builds for {backend.device!r}"
    stored = artifact_path(local, "model")
    if stored is None or not stored.exists():
        return "it has no model artifact"
    parent = mlflow.pyfunc.load_model(str(parent_local)).unwrap_python_model()
    parent.registered = {"name": parent_mv.name, "version": str(parent_mv.version)}
    packaged = packaging_problem(local, meta, raw, recipe, parent, backend)
    if packaged:
        return packaged
    with tempfile.TemporaryDirectory(prefix="quantgate-rebuild-") as tmp:
        try:
            built = backend.build(recipe, parent, Path(tmp))
        except (UserError, RecipeError, ValueError, OSError, RuntimeError) as exc:
            return f"its recipe could not be rebuilt here: {type(exc).__name__}: {exc}"
        if _digests(built.path) != _digests(stored):
            return (
                f"its model file is not what its recipe ({recipe.variant}) builds from v{parent_mv.version} here; "
                "with an evidence key only variants quantgate rebuilds byte for byte are run (a graph is a "
                "program): quantise it again on this host, with these library versions"
            )
    return None
