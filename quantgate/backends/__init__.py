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

Backends are found, not listed: every module in this package is one, and an installed plugin
package names its module under the entry-point group ``quantgate.backends``. A backend module
imports its heavy libraries only inside ``build``, so finding them all loads no runtime.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import pkgutil
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


ENTRY_POINT_GROUP = "quantgate.backends"  # how an installed plugin package announces its backend module
_REGISTERED: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    known = _REGISTERED.get(backend.runtime)
    if known is not None and known is not backend:
        raise UserError(f"runtime {backend.runtime!r} already has a backend")
    _REGISTERED[backend.runtime] = backend
    return backend


@functools.lru_cache(maxsize=1)
def _discover() -> None:
    """Import every backend module: the built-in ones in this package (each registers itself
    when imported; their heavy libraries load only when they build) and installed plugins'."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        importlib.import_module(entry.value)


def backend_for(runtime: str) -> Backend:
    """The backend of ``runtime``."""
    if runtime not in _REGISTERED:
        _discover()
    try:
        return _REGISTERED[runtime]
    except KeyError:
        raise UserError(f"runtime {runtime!r} has no backend; known: {runtimes()}") from None


def runtimes() -> list[str]:
    """Every runtime with a backend: the built-in ones, installed plugins' and any registered since."""
    _discover()
    return sorted(_REGISTERED)


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
