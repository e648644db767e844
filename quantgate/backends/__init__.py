"""One backend per runtime: the recipes it builds and how it turns the FP32 parent into files.

A backend is the only runtime-specific code the quantise step calls. It builds files in a work
folder and says what serving them needs; it never touches MLflow or click (the step logs,
checks parity and registers). Adding a runtime means one backend module and one serving loader:

* the backend module defines its recipe classes, registers them with
  :func:`quantgate.recipes.register_recipe`, and calls :func:`register_backend` with a
  :class:`Backend`;
* the loader is either a method of the pyfunc's loader table (the built-in runtimes in
  ``quantgate/serving_model.py``) or, for a plugin, a module file (``Backend.loader``) with a
  ``load(path, labels) -> infer`` function that is copied into every logged model of that runtime.

The built-in backends are imported on first use, so asking for ``onnxruntime`` does not load
TensorRT. A plugin registers itself when its module is imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from quantgate.errors import UserError
from quantgate.recipes import Recipe


@dataclass(frozen=True)
class Built:
    """What a build hands back: the model file or folder, and facts about the build the step
    records (``metrics`` as run metrics, ``tags`` on the version, ``notes`` printed)."""

    path: Path
    metrics: Mapping[str, float] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    notes: Sequence[str] = ()


@dataclass(frozen=True)
class Backend:
    """A runtime's builder.

    * ``runtime``: the name in ``meta.json`` and on the ``runtime`` tag; the serving loader's key.
    * ``packages``: what a served variant imports (pinned at log time to the installed versions).
    * ``build(recipe, parent, workdir) -> Built``: the variant's files from the FP32 parent's
      loaded pyfunc (``parent.model``, ``.tokenizer``, ``.labels``, ``.max_length``), label order
      stamped into them where the format allows.
    * ``identity(recipe) -> str``: what besides the recipe, parent and code decides the files
      (library versions, the calibration data's digest, the GPU); part of ``recipe_sha256``.
    * ``preflight() -> dict``: checks that this machine can build (TensorRT: an NVIDIA GPU) and
      returns facts about it; raises :class:`~quantgate.errors.UserError` where it cannot.
    * ``loader``: for a plugin runtime, the serving loader module file copied into the model.
    * ``device``: where the variant runs (``cpu`` or ``gpu``).
    """

    runtime: str
    packages: Sequence[str]
    build: Callable[[Recipe, object, Path], Built]
    identity: Callable[[Recipe], str] = lambda recipe: ""
    preflight: Callable[[], dict] = dict
    loader: Path | None = None
    device: str = "cpu"


_BUILT_IN = {
    "onnxruntime": "quantgate.backends.onnxruntime",
    "torchscript": "quantgate.backends.torchscript",
    "openvino": "quantgate.backends.openvino",
    "tensorrt": "quantgate.backends.tensorrt",
}
_REGISTERED: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    known = _REGISTERED.get(backend.runtime)
    if known is not None and known is not backend:
        raise UserError(f"runtime {backend.runtime!r} already has a backend")
    _REGISTERED[backend.runtime] = backend
    return backend


def backend_for(runtime: str) -> Backend:
    """The backend of ``runtime``, importing a built-in one on first use."""
    if runtime not in _REGISTERED and runtime in _BUILT_IN:
        importlib.import_module(_BUILT_IN[runtime])
    try:
        return _REGISTERED[runtime]
    except KeyError:
        raise UserError(f"runtime {runtime!r} has no backend; known: {sorted({*_BUILT_IN, *_REGISTERED})}") from None


def runtimes() -> list[str]:
    """Every runtime with a backend: the built-in ones and those registered since."""
    return sorted({*_BUILT_IN, *_REGISTERED})


def library_versions(*names: str) -> str:
    """``name==version;…`` of the libraries a build depends on (part of a backend's identity)."""
    import importlib.metadata as md

    out = []
    for name in names:
        try:
            out.append(f"{name}=={md.version(name)}")
        except md.PackageNotFoundError:
            out.append(f"{name} missing")
    return ";".join(out)
