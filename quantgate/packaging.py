"""Log a variant as a pyfunc that carries its model file, tokenizer and label map, and
register it as a tagged version of the registered model."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import Model, ModelSignature
from mlflow.types.schema import Array, ColSpec, Object, ParamSchema, ParamSpec, Property, Schema

from quantgate.artifact_log import log_dict, log_model_folder
from quantgate.labels import save_label_map
from quantgate.model_files import MODEL_DIGEST_TAG, digest, download, model_manifest
from quantgate.serving_model import DEFAULT_TOP_K, files_of, sha256_file

SERVING_MODEL_FILE = Path(__file__).resolve().parent / "serving_model.py"
SIGNATURE = ModelSignature(
    # `text` is declared optional on purpose: MLflow's own schema check answers a missing
    # column with the payload echoed back; the pyfunc refuses it itself with a short 400.
    inputs=Schema([ColSpec("string", "text", required=False)]),
    outputs=Schema(
        [
            ColSpec("string", "label"),
            ColSpec("double", "probability"),
            ColSpec(Array(Object([Property("label", "string"), Property("probability", "double")])), "top_k"),
            ColSpec("boolean", "truncated"),
        ]
    ),
    params=ParamSchema([ParamSpec("top_k", "long", DEFAULT_TOP_K)]),
)
INPUT_EXAMPLE = pd.DataFrame(
    {"text": ["Central bank holds rates as inflation cools", "Ransomware gang hits city council"]}
)
# What a served FP32 (torch) variant imports; a quantised one's come from its backend. Versions
# are pinned to what built it.
FP32_PACKAGES = ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas")
QUANT_CONFIG_FILE = "quant_config.json"


def pip_requirements(packages: Sequence[str]) -> list[str]:
    reqs = []
    for pkg in packages:
        try:
            v = version(pkg).split("+")[0]  # torch's "+cpu" is a local label pip cannot resolve
            reqs.append(f"{pkg}=={v}")
        except PackageNotFoundError:
            reqs.append(pkg)
    return reqs


def manifest(artifacts: dict[str, str]) -> dict[str, dict[str, str]]:
    """SHA-256 of every file of every artifact, keyed by artifact and relative path."""
    out = {}
    for key, path in artifacts.items():
        root = Path(path)
        out[key] = {
            (p.relative_to(root).as_posix() if root.is_dir() else p.name): sha256_file(p) for p in files_of(root)
        }
    return out


def manifest_digest(man: dict) -> str:
    return hashlib.sha256(json.dumps(man, sort_keys=True).encode()).hexdigest()


def record_model_manifest(model_uri: str, version: str) -> str:
    """Hash every file of the logged model as stored (MLmodel, pyfunc code, requirements, every
    artifact incl. meta.json); log the manifest as an artifact of the active run, outside the
    model, and return its digest (the version's ``model_sha256`` tag)."""
    with tempfile.TemporaryDirectory(prefix="quantgate-digest-") as tmp:
        files = model_manifest(download(model_uri, tmp))
    log_dict(
        mlflow.active_run().info.run_id,
        {"model_uri": model_uri, "version": version, "files": files, "sha256": digest(files)},
        f"quantgate/model_manifest_v{version}.json",
    )
    return digest(files)


def log_variant(
    *,
    model_path: str | Path,
    tokenizer_dir: str | Path,
    runtime: str,
    variant: str,
    precision: str,
    registered_model_name: str,
    labels: Sequence[str],
    device: str = "cpu",
    parent_version: str | None = None,
    max_length: int = 128,
    extra_tags: dict[str, str] | None = None,
    description: str | None = None,
    quant_config: Mapping | None = None,
    params: Mapping[str, object] | None = None,
    packages: Sequence[str] = FP32_PACKAGES,
    loader: Path | None = None,
    receipt: dict | None = None,
) -> ModelVersion:
    """Log the variant into the active run, register it and tag the new version.

    The logged model is named after the variant (``fp32``, ``onnx-int8-static``, …: the
    experiment's Models list shows that name) and carries ``params``, its own recipe; MLflow
    adds the active run's params to them, so a run that builds several variants logs each in
    a run of its own (``quantise_common.register``).
    ``quant_config`` (a quantised variant's resolved recipe) travels inside the artifact as
    ``quant_config.json``, covered by the SHA-256 manifest like every other file.
    ``labels`` (logit order) becomes the variant's ``label_map.json``: a quantised variant
    passes its parent's, the FP32 model the dataset's.
    ``packages`` are what serving it imports (a backend's ``packages``); ``loader``, a plugin
    runtime's serving loader module, travels in the model's code and is named in ``meta.json``.
    ``receipt``, when given, is filled with the version number and the ``manifest_sha256`` and
    ``model_sha256`` this process computed: the returned version's tags are read back from the
    store, where any writer could have changed them meanwhile.
    """
    with tempfile.TemporaryDirectory(prefix="quantgate-pkg-") as tmp:
        artifacts = _write_artifacts(Path(tmp), model_path, tokenizer_dir, labels, quant_config)
        man = manifest(artifacts)
        fields = {"runtime": runtime, "variant": variant, "precision": precision, "max_length": max_length}
        meta_path = _write_meta(Path(tmp), fields, man, loader)
        tags = _version_tags(variant, precision, runtime, device, manifest_digest(man), parent_version, extra_tags)
        model_uri, mv_number = log_pyfunc(
            name=variant,
            params={k: str(v) for k, v in (params or {}).items()},
            registered_model_name=registered_model_name,
            tags=tags,
            python_model=str(SERVING_MODEL_FILE),
            artifacts={**artifacts, "meta": str(meta_path)},
            signature=SIGNATURE,
            input_example=INPUT_EXAMPLE,
            pip_requirements=pip_requirements(packages),
            code_paths=[str(loader)] if loader else None,
        )
    tags = _tag_version(registered_model_name, model_uri, mv_number, tags, description)
    mlflow.set_tag(f"quantgate.version.{variant}", mv_number)  # how `main` finds outputs
    if receipt is not None:
        receipt.update(version=mv_number, manifest_sha256=tags["manifest_sha256"], model_sha256=tags[MODEL_DIGEST_TAG])
    return MlflowClient().get_model_version(registered_model_name, mv_number)


def log_pyfunc(
    *, name: str, params: dict[str, str], registered_model_name: str, tags: dict[str, str], **save_options
) -> tuple[str, str]:
    """``mlflow.pyfunc.log_model(name=..., registered_model_name=..., **save_options)`` into the
    active run, done in MLflow's own steps but with quantgate's copy: the model is saved into a
    private folder and copied into the logged model's folder by :func:`log_model_folder`.
    MLflow's copy (``shutil.copy2`` file by file) writes through a link a store writer put at
    one of the model's file names, and sets the mode by that name: into a local store, the key
    holder's ``train`` or ``quantise`` would have written a model file over the evidence key.
    Returns the model's ``models:/`` URI and the registered version's number."""
    run_id = mlflow.active_run().info.run_id
    client = MlflowClient()
    model = mlflow.initialize_logged_model(
        name=name, source_run_id=run_id, tags=tags, params={**params, **client.get_run(run_id).data.params}
    )
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    with tempfile.TemporaryDirectory(prefix="quantgate-model-") as tmp, working_folder_ignored():
        local = Path(tmp) / "model"
        saved_as = Model(
            artifact_path=model.artifact_location, model_uuid=model.model_id, run_id=run_id, model_id=model.model_id
        )
        mlflow.pyfunc.save_model(path=str(local), mlflow_model=saved_as, **save_options)
        for cache in list(local.rglob("__pycache__")):  # save_model loads the model once
            shutil.rmtree(cache, ignore_errors=True)
        log_model_folder(model.model_id, local)
    mlflow.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    version = mlflow.register_model(f"models:/{model.model_id}", registered_model_name, tags=tags)
    return f"models:/{model.model_id}", str(version.version)


@contextmanager
def working_folder_ignored() -> Iterator[None]:
    """Within: MLflow's ``log_model`` copies nothing from the working folder. MLflow 3.17 copies
    ``uv.lock``, ``pyproject.toml`` and ``.python-version`` from there into every model it logs
    (following links), and with the default store that folder is the store's: the forty-fourth
    adversarial run logged the evidence key into a model through a planted ``uv.lock`` link."""
    saved = {name: os.environ.get(name) for name in UV_SWITCHES}
    os.environ.update(dict.fromkeys(UV_SWITCHES, "false"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


UV_SWITCHES = ("MLFLOW_UV_AUTO_DETECT", "MLFLOW_LOG_UV_FILES")


def _write_artifacts(
    folder: Path, model_path: str | Path, tokenizer_dir: str | Path, labels: Sequence[str], quant_config: Mapping | None
) -> dict[str, str]:
    """The variant's artifacts by name: model, tokenizer, ``label_map.json`` and (quantised) ``quant_config.json``."""
    artifacts = {
        "model": str(model_path),
        "tokenizer": str(tokenizer_dir),
        "label_map": str(save_label_map(folder / "label_map.json", labels)),
    }
    if quant_config is not None:
        config_path = folder / QUANT_CONFIG_FILE
        config_path.write_text(json.dumps(dict(quant_config), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        artifacts["quant_config"] = str(config_path)
    return artifacts


def _write_meta(folder: Path, fields: Mapping[str, object], man: dict, loader: Path | None) -> Path:
    """``meta.json``, what the serving pyfunc reads: ``fields``, the manifest and the plugin loader's name."""
    meta = {**fields, "manifest": man, **({"loader": Path(loader).stem} if loader else {})}
    meta_path = folder / "meta.json"
    meta_path.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return meta_path


def _version_tags(
    variant: str,
    precision: str,
    runtime: str,
    device: str,
    manifest_sha256: str,
    parent_version: str | None,
    extra_tags: dict[str, str] | None,
) -> dict[str, str]:
    """The tags the logged model and its registered version carry (before the model digest)."""
    return {
        "variant": variant,
        "precision": precision,
        "runtime": runtime,
        "device": device,
        "manifest_sha256": manifest_sha256,
        **({"parent_version": str(parent_version)} if parent_version else {}),
        **(extra_tags or {}),
    }


def _tag_version(
    registered_model_name: str, model_uri: str, mv_number: str, tags: dict[str, str], description: str | None
) -> dict[str, str]:
    """Tag the new version (``tags`` plus the whole-model digest), describe it; return the tags written."""
    client = MlflowClient()
    tags = {**tags, MODEL_DIGEST_TAG: record_model_manifest(model_uri, mv_number)}
    for key, value in tags.items():
        client.set_model_version_tag(registered_model_name, mv_number, key, value)
    if description:
        client.update_model_version(registered_model_name, mv_number, description=description)
    return tags
