"""The whole-model digest: SHA-256 of every file of a logged model, kept outside the model.

``meta.json``'s manifest inside the model covers only its artifacts, and it can be rewritten
along with the files it describes. This digest covers every file MLflow stores for the model -
``MLmodel``, the pyfunc code (``serving_model.py``), requirements and environment files, input
examples and every artifact including ``meta.json`` - and is recorded *outside* it:

* the full manifest as a JSON artifact of the run that logged the model
  (``quantgate/model_manifest_v<N>.json``);
* its digest as the version tag ``model_sha256``; evaluation copies it into its run
  (tag ``model_sha256``) and onto the version (``eval_model_sha256``).

The gate and ``quantgate serve`` download the version, hash every file again and compare with
the registry's tag, never with a file inside the model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mlflow

from quantgate.artifact_download import LinkInStoreError, download_artifacts
from quantgate.contract import (  # noqa: F401  (re-exported: the digest tags belong with the digest)
    EVAL_METRICS_DIGEST_TAG,
    EVAL_MODEL_DIGEST_TAG,
    EVAL_PREDICTIONS_DIGEST_TAG,
    METRICS_DIGEST_TAG,
    MODEL_DIGEST_TAG,
    PREDICTIONS_DIGEST_TAG,
)
from quantgate.errors import UserError
from quantgate.printable import shown
from quantgate.serving_model import sha256_file

# Written by MLflow into the download folder of a models:/ URI; never stored with the model.
DOWNLOAD_ONLY = frozenset({"registered_model_meta"})
# What a model quantgate logs holds at its top level (``code``: a TensorRT variant's loader).
MODEL_ENTRIES = frozenset(
    {
        "MLmodel", "artifacts", "code", "conda.yaml", "python_env.yaml", "requirements.txt",
        "input_example.json", "serving_input_example.json", "serving_model.py",
    }
)  # fmt: skip


class ModelIntegrityError(UserError):
    """The files in the artifact store are not the files the registry recorded."""


def model_manifest(root: str | Path) -> dict[str, str]:
    """``relative/path -> sha256`` for every file under a downloaded model folder."""
    root = Path(root)
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() not in DOWNLOAD_ONLY
    }


def size_bytes(path: str | Path) -> int:
    """Bytes on disk of a file, or of every file under a folder."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def model_bytes(path: str | Path) -> int:
    """Bytes of the weights a runtime loads for a ``model`` artifact: every file of a folder, or
    an ONNX file with the external-data files it names (ONNX Runtime reads them from the file's
    own folder, beside the model's other artifacts: the twenty-first adversarial run moved a 91 MB
    model's weights into such a sidecar and passed ``max_size_mb`` at 0.02 MB)."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".onnx":
        from quantgate.onnx_graph import external_data_files

        try:
            sidecars = external_data_files(path)
        except Exception:  # noqa: BLE001 - not a graph ONNX Runtime could load either: the file alone
            sidecars = []
        return path.stat().st_size + sum(p.stat().st_size for p in sidecars)
    return size_bytes(path)


def digest(manifest: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def differing(actual: dict[str, str], recorded: dict[str, str]) -> list[str]:
    """Files whose digest differs, or that exist on one side only."""
    return sorted(name for name in set(actual) | set(recorded) if actual.get(name) != recorded.get(name))


def download(model_uri: str, dst: str | Path) -> Path:
    """A local copy of the model's files, no link followed (:mod:`quantgate.artifact_download`);
    ``ModelIntegrityError`` (one line) when the store will not hand them over, or holds a link."""
    from mlflow.exceptions import MlflowException

    try:
        return Path(download_artifacts(artifact_uri=model_uri, dst_path=dst))
    except LinkInStoreError as exc:
        raise ModelIntegrityError(f"cannot download {model_uri}: {exc}") from None
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            raise
        detail = " ".join(line.strip() for line in str(exc.message).splitlines()[-2:] if line.strip())
        raise ModelIntegrityError(f"cannot download {model_uri}: {detail[:300]}") from None


def digest_problem(local: Path, tags: dict[str, str], what: str = "version") -> str | None:
    """Why the downloaded files at ``local`` are not the files the registry recorded (None: they are)."""
    recorded = tags.get(MODEL_DIGEST_TAG)
    if not recorded:
        return (
            f"no {MODEL_DIGEST_TAG} tag: the {what}'s files (MLmodel, code, artifacts) were never fingerprinted; "
            "re-register it with a current quantgate and evaluate it again"
        )
    actual = digest(model_manifest(local))
    if actual != recorded:
        return (
            f"model files changed since registration: SHA-256 of all files is {actual[:16]}…, "
            f"the registry recorded {recorded[:16]}…"
        )
    return outside_files(local)


def pyfunc_conf(local: Path) -> dict:
    """The ``python_function`` flavour of the downloaded model's ``MLmodel`` (``{}``: none);
    ``ModelIntegrityError`` (one line, quoting nothing of the file) when it is not the mapping
    MLflow writes: the forty-fifth adversarial run made one a YAML list, and the gate and
    ``compare`` crashed on every version rather than judge any."""
    import yaml

    try:
        conf = yaml.safe_load((local / "MLmodel").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError):
        raise ModelIntegrityError("its MLmodel is not YAML text") from None
    pyfunc = _mapping(_mapping(_mapping(conf).get("flavors")).get("python_function"))
    for spec in _mapping(pyfunc.get("artifacts")).values():
        if not isinstance(_mapping(spec).get("path", ""), str):
            raise ModelIntegrityError(MLMODEL_SHAPE)
    return pyfunc


MLMODEL_SHAPE = "its MLmodel is not the mapping MLflow writes (flavors, python_function, artifacts)"


def _mapping(value: object) -> dict:
    """``value`` where MLflow writes a mapping (``{}`` for none), else ``ModelIntegrityError``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ModelIntegrityError(MLMODEL_SHAPE)
    return value


def pyfunc_artifacts(local: Path) -> dict[str, str]:
    """``key -> path`` (relative to the model's folder) of the downloaded model's pyfunc artifacts.
    A path that is absolute or climbs out of the folder is a ``ModelIntegrityError``, before
    anything reads it: the forty-ninth adversarial run pointed a stored ``MLmodel``'s tokenizer
    at the key holder's folder, and the gate hashed every file there (``evidence.key`` included)
    and listed their names in its reasons; ``/proc/self/pagemap`` kept it reading for good."""
    root = local.resolve()
    artifacts = {}
    for key, spec in (pyfunc_conf(local).get("artifacts") or {}).items():
        path = str((spec or {}).get("path", "")) if isinstance(spec, dict) else ""
        if _outside(root, local, path):
            raise ModelIntegrityError(f"its MLmodel reads the artifact {shown(key)!r} from outside the model's files")
        artifacts[str(key)] = path
    return artifacts


def _outside(root: Path, local: Path, path: str) -> bool:
    """Whether the artifact path ``path`` of the model at ``local`` (resolved: ``root``) is
    absolute or lands outside the model's folder."""
    target = (local / path).resolve()
    return Path(path).is_absolute() or (target != root and root not in target.parents)


def artifact_path(local: Path, key: str) -> Path | None:
    """Where the downloaded model at ``local`` keeps its pyfunc artifact ``key`` (``None``: it has none)."""
    path = pyfunc_artifacts(local).get(key)
    return local / path if path else None


def unknown_entries(local: Path) -> str | None:
    """Why the downloaded model at ``local`` holds files quantgate never logs (``None``: it does
    not). MLflow 3.17 copied ``uv.lock``, ``pyproject.toml`` and ``.python-version`` from the
    working folder into every model it logged, following links: the forty-fourth adversarial run
    linked ``uv.lock`` in the store's folder to the key file, the key holder's ``quantise`` logged
    the key into the model, and a keyed evaluate signed it. quantgate now logs with that off
    (:mod:`quantgate.packaging`), and with a key a model holding anything else is not loaded."""
    extra = sorted(p.name for p in local.iterdir() if p.name not in MODEL_ENTRIES | DOWNLOAD_ONLY)
    return f"it holds files quantgate never logs: {', '.join(extra)}" if extra else None


def outside_files(local: Path) -> str | None:
    """Why loading the model at ``local`` would read files from outside it (``None``: it would
    not). The digest covers the model's own folder only, so ``python_function.data`` or an
    artifact path that is absolute or climbs out (``..``) would load files nobody fingerprinted."""
    try:
        pyfunc = pyfunc_conf(local)
    except OSError as exc:
        return f"its MLmodel cannot be read: {exc.strerror}"
    except ModelIntegrityError as exc:
        return str(exc)
    if pyfunc.get("data"):
        return f"its MLmodel loads data from {pyfunc['data']!r}, which no digest covers"
    root = local.resolve()
    for name, spec in (pyfunc.get("artifacts") or {}).items():
        path = str((spec or {}).get("path", ""))
        if _outside(root, local, path):
            return f"its artifact {name!r} is read from {path!r}, outside the model's own files"
        # names inside a Hugging Face folder (shards, tokenizer files)
        reference = outside_references((local / path).resolve())
        if reference:
            return f"its artifact {name!r}: {reference}"
    return None


def _own_file(folder: Path, name: object, must_exist: bool) -> bool:
    """Whether ``name`` is a plain file name of ``folder`` itself (no path, no link)."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name:
        return False
    path = folder / name
    return (path.is_file() and not path.is_symlink()) if must_exist or path.exists() else True


def outside_references(folder: str | Path) -> str | None:
    """Why loading the Hugging Face folder (model or tokenizer) would read a file from outside it
    (``None``: it would not). Its digest covers the folder's own files only, but transformers
    follows names inside them: a shard index's ``weight_map`` is joined to the folder, so an
    absolute path there loads weights from anywhere (the twenty-first adversarial run served a
    passed model whose answers it then changed by rewriting such a file); a tokenizer config's
    ``*_file`` entries likewise; a PEFT ``adapter_config.json`` loads a base model it names."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    if (folder / "adapter_config.json").exists():
        return f"{folder.name}/adapter_config.json would load a base model from outside it (merge the adapter)"
    for index in sorted(folder.glob("*.index.json")):
        try:
            names = set((json.loads(index.read_text(encoding="utf-8")).get("weight_map") or {}).values())
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            return f"{folder.name}/{index.name} cannot be read: {exc}"
        for name in sorted(names, key=str):
            if not _own_file(folder, name, must_exist=True):
                return f"{folder.name}/{index.name} loads weights from {name!r}, which is not a file of its own folder"
    config = folder / "tokenizer_config.json"
    if config.is_file():
        try:
            fields = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return f"{folder.name}/tokenizer_config.json cannot be read: {exc}"
        for key, value in fields.items() if isinstance(fields, dict) else ():
            if not key.endswith(("_file", "_files")) or value is None:
                continue
            for name in value if isinstance(value, list) else [value]:
                if not _own_file(folder, name, must_exist=False):
                    return f"{folder.name}/tokenizer_config.json's {key} names {name!r}, outside its own folder"
    return None


def metrics_digest(metrics: dict[str, float]) -> str:
    """SHA-256 of a run's latest metric values, taken when the evaluation finished: a metric
    re-logged, added or removed afterwards changes it."""
    return hashlib.sha256(json.dumps({k: float(v) for k, v in metrics.items()}, sort_keys=True).encode()).hexdigest()


def artifact_sha256(run_id: str, path: str) -> str:
    """SHA-256 of one run artifact's bytes, as the artifact store holds them now."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="quantgate-artifact-") as tmp:
        return sha256_file(Path(download_artifacts(run_id=run_id, artifact_path=path, dst_path=tmp)))


# Files Python could import or unpickle: a model that carries any besides serving_model.py carries code.
CODE_SUFFIXES = frozenset({".py", ".pyc", ".pyo", ".pyd", ".so", ".pth", ".pkl", ".pickle", ".egg", ".zip", ".whl"})
CODE_LOADER = "mlflow.pyfunc.loaders.code_model"  # MLflow's loader of a models-from-code pyfunc
# The python_function fields MLflow writes for quantgate's models-from-code pyfunc.
PYFUNC_KEYS = frozenset(
    {"loader_module", "model_code_path", "code", "artifacts", "cloudpickle_version", "env", "python_version"}
    | {"streamable", "model_config", "config"}
)
TRUSTED_LOADERS_ENV = "QUANTGATE_TRUSTED_LOADERS"  # plugin loader modules a keyed process may import


def plugin_loader(local: Path, pyfunc: dict) -> str | None:
    """With a key: why the model's ``meta.json`` would make serving_model.py import a loader
    module that is not quantgate's own (any installed module's ``load(path, labels)`` - joblib's
    unpickles). A plugin runtime's loader is trusted only when named in
    ``$QUANTGATE_TRUSTED_LOADERS`` (comma-separated modules)."""
    import os

    from quantgate.serving_model import LOADERS

    spec = (pyfunc.get("artifacts") or {}).get("meta") or {}
    try:
        meta = json.loads((local / str(spec.get("path", ""))).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"its meta.json cannot be read: {exc}"
    if meta.get("runtime") in LOADERS:
        return None
    trusted = {m.strip() for m in os.environ.get(TRUSTED_LOADERS_ENV, "").split(",") if m.strip()}
    if meta.get("loader") not in trusted:
        return (
            f"its runtime {meta.get('runtime')!r} is loaded by module {meta.get('loader')!r}, which is not in "
            f"${TRUSTED_LOADERS_ENV}: with an evidence key only named plugin loaders run"
        )
    return None


PROGRAM_RUNTIMES = frozenset({"torchscript"})  # model files that are programs: refused where the key is


def _runtime(local: Path, pyfunc: dict) -> str | None:
    spec = (pyfunc.get("artifacts") or {}).get("meta") or {}
    try:
        return json.loads((local / str(spec.get("path", ""))).read_text(encoding="utf-8")).get("runtime")
    except (OSError, ValueError, AttributeError):
        return None


def environment_problem(local: Path) -> str | None:
    """Why the model's environment files are not what ``log_model`` writes for quantgate's pinned
    requirements (``None``: they are): each line of ``requirements.txt`` a plain ``name==version``
    of a distribution installed here, ``python_env.yaml`` naming that file, ``conda.yaml``'s pip
    list those lines. ``mlflow.pyfunc.load_model`` reads ``requirements.txt`` in the loading
    process: it follows ``-r <any file>`` and logs the lines it finds, and imports a name that is
    no installed distribution. The thirty-eighth adversarial run's ``-r`` named the evidence key
    file, and a keyed ``evaluate`` printed the key."""
    import importlib.metadata as md

    import yaml
    from packaging.requirements import InvalidRequirement, Requirement

    path = local / "requirements.txt"
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    for line in lines:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            return f"its requirements.txt has a line that is not a pinned requirement: {line[:60]!r}"
        pinned = [spec.operator for spec in req.specifier] == ["=="]
        if req.url or req.marker or req.extras or not pinned:
            return f"its requirements.txt line {line[:60]!r} is not a plain name==version"
        try:
            md.distribution(req.name)
        except md.PackageNotFoundError:
            return f"its requirements.txt names {req.name!r}, which is not installed here"
    try:
        env = yaml.safe_load((local / "python_env.yaml").read_text(encoding="utf-8")) or {}
        conda = yaml.safe_load((local / "conda.yaml").read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"its environment files cannot be read: {exc.strerror}"
    except (UnicodeDecodeError, yaml.YAMLError):  # never quoted: an error can quote the file's text
        return "its environment files are not YAML text"
    if not isinstance(env, dict) or env.get("dependencies") != ["-r requirements.txt"]:
        return "its python_env.yaml does not install requirements.txt alone"
    deps = conda.get("dependencies") if isinstance(conda, dict) else None
    pips = [d["pip"] for d in deps or [] if isinstance(d, dict) and set(d) == {"pip"}]
    if pips != [lines]:
        return "its conda.yaml's pip requirements are not its requirements.txt"
    return None


def serving_signature_problem(local: Path) -> str | None:
    """Why the model's MLmodel signature is not the one quantgate writes (``None``: it is). MLflow
    applies it when serving (a param's default among others), and the evaluator calls the model
    directly: the thirty-ninth adversarial run set ``top_k``'s default to 1 in a genuine build's
    copy, and the staged version answered with one label where the README promises three."""
    from mlflow.models import Model

    from quantgate.packaging import SIGNATURE

    try:
        found = Model.load(str(local / "MLmodel")).signature
    except Exception as exc:  # MLflow raises many kinds on a malformed file
        return f"its MLmodel's signature cannot be read: {type(exc).__name__}"
    if found != SIGNATURE:
        return "its MLmodel's signature (inputs, outputs, or a param's default such as top_k's) is not quantgate's"
    return None


def untrusted_code(local: Path) -> str | None:
    """Why loading the downloaded model at ``local`` would run code other than the serving code
    this quantgate installs (``None`` when it would not).

    A registered model is code as well as weights: ``mlflow.pyfunc.load_model`` imports its
    ``serving_model.py``, anything in its code paths, or whatever loader ``MLmodel`` names. The
    registry's digest only says the files are the ones registered, and whoever can register a
    version chooses them. A process holding the evidence key must not run such code (it could
    read the key), so with a key evaluate and serve load only models whose one piece of code is
    byte-for-byte the installed ``quantgate/serving_model.py``, with MLflow's code-model loader
    and no code paths; their weights (ONNX, OpenVINO IR, safetensors) run no Python. A TorchScript
    file is refused too: it is a program, not weights (``torch.from_file`` in it reads any file the
    process can: the twentieth adversarial run read the key file into the predictions table, and
    made a passed model's answers depend on a file outside its digest).
    """
    from quantgate import serving_model

    try:
        pyfunc = pyfunc_conf(local)
    except OSError as exc:
        return f"its MLmodel cannot be read: {exc.strerror}"
    except ModelIntegrityError as exc:
        return str(exc)
    unknown = sorted(set(pyfunc) - PYFUNC_KEYS)
    if unknown:
        return f"its MLmodel's python_function has fields {unknown} quantgate never writes"
    escape = (
        unknown_entries(local) or outside_files(local) or environment_problem(local) or serving_signature_problem(local)
    )
    if escape:
        return escape
    loader = plugin_loader(local, pyfunc)
    if loader:
        return loader
    if _runtime(local, pyfunc) in PROGRAM_RUNTIMES:
        return (
            "it is a TorchScript program, which can read any file this process can (the evidence key among them): "
            "with an evidence key quantgate runs ONNX and OpenVINO variants only; build this one with "
            "quantise_onnx or quantise_openvino"
        )
    if pyfunc.get("loader_module") != CODE_LOADER or Path(str(pyfunc.get("model_code_path", ""))).name != (
        "serving_model.py"
    ):
        return (
            f"its MLmodel loads {pyfunc.get('loader_module')!r} / {pyfunc.get('model_code_path')!r}, "
            "not quantgate's serving_model.py"
        )
    if pyfunc.get("code"):
        return f"it carries code paths ({pyfunc['code']!r}): with an evidence key a plugin loader must be installed"
    code = sorted(
        p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file() and p.suffix.lower() in CODE_SUFFIXES
    )
    if code != ["serving_model.py"]:
        return f"it carries code files {code} besides serving_model.py"
    if sha256_file(local / "serving_model.py") != sha256_file(Path(serving_model.__file__)):
        return (
            "its serving_model.py is not the one this quantgate installs (built by another quantgate version, or "
            "edited); quantise it again with this one"
        )
    return None


def load_checked(mv, dst: Path, trusted_only: bool):
    """The version's pyfunc, loaded from a copy downloaded to ``dst`` and checked against its
    ``model_sha256`` tag first; ``trusted_only`` (a key in reach): refused unless its only code is
    the installed serving code (:func:`untrusted_code`). ``ModelIntegrityError`` otherwise.
    Loading a registered model runs its code, and the thirty-fifth adversarial run had
    ``quantise`` run an attested parent's stored ``serving_model.py``, edited after attestation,
    which read the key."""

    local = download(f"models:/{mv.name}/{mv.version}", dst)
    # without a key, a version registered outside quantgate (no digest tag yet) loads as before
    checked = trusted_only or MODEL_DIGEST_TAG in mv.tags
    problem = digest_problem(local, dict(mv.tags), what=f"version {mv.version}") if checked else None
    if problem is None and trusted_only:
        problem = untrusted_code(local)
    if problem:
        raise ModelIntegrityError(f"refusing to load {mv.name} v{mv.version}: {problem}")
    return mlflow.pyfunc.load_model(str(local)).unwrap_python_model()
