"""The checks that make a TensorRT variant label correctly, and run only where it can, as plain
functions over an I/O description (:mod:`quantgate.trt_shapes`): no TensorRT, no CUDA, no GPU
needed to test them.

The seed lab's hand-made engine mislabelled every headline three ways at once: int32 buffers
fed to int64 inputs, buffers bound by position, and a label list that disagreed with the
training order. Each of those is decided here, once:

* :func:`bind_inputs` feeds every engine input **by name**, cast to the dtype the *engine*
  declares (int64 ids to an int32 engine only after a range check), and refuses a missing or
  an unexpected name, a wrong rank, a batch that disagrees between inputs, or a shape outside
  the engine's optimisation profile;
* :func:`check_label_map` and :func:`logits_to_labels` refuse a label map that disagrees with
  the parent's order or whose size is not the logits' width;
* :func:`check_compatible` refuses an engine built on another compute capability or another
  TensorRT version, with a message that says to rebuild;
* :func:`gpu_from_probe` decides from ``nvidia-smi``'s answer (and ``CUDA_VISIBLE_DEVICES``)
  whether there is an NVIDIA GPU at all; :func:`probe_gpu` runs the probe.

Only :mod:`quantgate.trt_runtime` touches TensorRT and pycuda; it calls into this module.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np

from quantgate.trt_shapes import LOGITS, Profile, TensorSpec, TrtError, split_io

# Exit status of `quantise_trt` when it cannot build an engine here (no NVIDIA GPU, or no
# TensorRT/pycuda). 2 stays click's "bad usage" code, 1 an unexpected failure.
EXIT_NO_GPU = 3
GPU_HELP = "Run this flow on a machine with an NVIDIA GPU and `pip install -e .[gpu]`"
REBUILD_HELP = (
    "TensorRT engines are specific to the GPU architecture and TensorRT version that built them; "
    "rebuild it on this machine with `mlflow run . -e quantise_trt -P source=<fp32 version>` "
    "(or `python -P -m flows.quantise_trt --source <fp32 version>`)"
)


# --------------------------------------------------------------------------- binding
def cast_tokens(name: str, array: np.ndarray, dtype: str) -> np.ndarray:
    """``array`` in the engine's integer ``dtype``; refuses values the dtype cannot hold
    (never wraps an id around) and any non-integer source."""
    array = np.asarray(array)
    target = np.dtype(dtype)
    if array.dtype == target:
        return np.ascontiguousarray(array)
    if not np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_:
        raise TrtError(f"{name}: token input must be integers, got {array.dtype}")
    if np.issubdtype(target, np.integer):
        info = np.iinfo(target)
        if array.size and (int(array.min()) < info.min or int(array.max()) > info.max):
            raise TrtError(
                f"{name}: values {int(array.min())}..{int(array.max())} do not fit the engine's {target.name} "
                f"input ({info.min}..{info.max}); refusing to wrap them"
            )
    elif target != np.bool_:
        raise TrtError(f"{name}: the engine takes {target.name}, which is no token dtype")
    return np.ascontiguousarray(array.astype(target))


def bind_inputs(
    specs: list[TensorSpec], feed: dict[str, np.ndarray], profile: Profile | None = None
) -> dict[str, np.ndarray]:
    """One host array per engine input, found by name and cast to the engine's dtype.

    Refuses: an engine input the feed lacks, a feed name the engine does not take, an array
    whose rank or fixed dims differ from the engine's, inputs whose shapes disagree, and a
    shape outside ``profile``. The result is keyed by name; its order means nothing.
    """
    ins, _ = split_io(specs)
    names = {s.name for s in ins}
    missing = sorted(names - set(feed))
    extra = sorted(set(feed) - names)
    if missing:
        raise TrtError(f"the engine needs input(s) {missing}, which the feed lacks (feed has {sorted(feed)})")
    if extra:
        raise TrtError(f"the feed has {extra}, which the engine does not take (engine inputs {sorted(names)})")
    bound, shapes = {}, set()
    for spec in ins:
        array = np.asarray(feed[spec.name])
        if array.ndim != len(spec.shape) or any(d != -1 and d != a for d, a in zip(spec.shape, array.shape)):
            raise TrtError(f"{spec.name}: shape {array.shape} does not fit the engine's {spec.shape}")
        if profile is not None:
            profile.check(array.shape, spec.name)
        bound[spec.name] = cast_tokens(spec.name, array, spec.dtype)
        shapes.add(array.shape)
    if len(shapes) > 1:
        raise TrtError(f"token inputs disagree in shape: { {n: a.shape for n, a in bound.items()} }")
    return bound


# --------------------------------------------------------------------------- labels
def check_label_map(label_map: list[str], parent_labels: list[str], logits_width: int) -> None:
    """The artifact's label map must be the parent's order, one label per logit."""
    if list(label_map) != list(parent_labels):
        raise TrtError(
            f"label order mismatch: the label map says {list(label_map)} but the parent model was "
            f"trained with {list(parent_labels)}; this engine would mislabel, refusing it"
        )
    if logits_width != len(label_map):
        raise TrtError(f"the engine outputs {logits_width} logits for {len(label_map)} labels")


def logits_width(specs: list[TensorSpec], name: str = LOGITS) -> int:
    _, outs = split_io(specs)
    found = [s for s in outs if s.name == name]
    if not found:
        raise TrtError(f"the engine has no output named {name!r} (outputs {[s.name for s in outs]})")
    shape = found[0].shape
    if len(shape) != 2 or shape[-1] < 1:
        raise TrtError(f"output {name!r}: expected [batch, labels] with a fixed label axis, got {shape}")
    return shape[-1]


def read_logits(outputs: dict[str, np.ndarray], rows: int, labels: list[str], name: str = LOGITS) -> np.ndarray:
    """The logits output, by name, checked against the batch and the label count."""
    if name not in outputs:
        raise TrtError(f"the engine gave no {name!r} output (gave {sorted(outputs)})")
    logits = np.asarray(outputs[name])
    if logits.shape != (rows, len(labels)):
        raise TrtError(f"{name}: shape {logits.shape}, expected ({rows}, {len(labels)})")
    return logits.astype(np.float32, copy=False)


def logits_to_labels(logits: np.ndarray, labels: list[str]) -> list[str]:
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[1] != len(labels):
        raise TrtError(f"logits of shape {logits.shape} cannot be mapped to {len(labels)} labels")
    return [labels[i] for i in logits.argmax(axis=1)]


# --------------------------------------------------------------------------- compatibility
def check_compatible(built: dict, here: dict) -> None:
    """Refuse an engine built on another compute capability or TensorRT version."""
    problems = []
    if str(built.get("compute_capability")) != str(here.get("compute_capability")):
        problems.append(
            f"it was built for compute capability {built.get('compute_capability')} ({built.get('gpu_name')}), "
            f"this GPU is {here.get('compute_capability')} ({here.get('gpu_name')})"
        )
    if str(built.get("tensorrt_version")) != str(here.get("tensorrt_version")):
        problems.append(
            f"it was built with TensorRT {built.get('tensorrt_version')}, "
            f"this machine has {here.get('tensorrt_version')}"
        )
    if problems:
        raise TrtError("refusing to load the TensorRT engine: " + "; ".join(problems) + ". " + REBUILD_HELP)


# --------------------------------------------------------------------------- GPU detection
@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str
    driver_version: str


def gpu_from_probe(
    visible: str | None, smi_path: str | None, smi_returncode: int | None, smi_output: str
) -> GpuInfo | str:
    """The first visible NVIDIA GPU, or the reason there is none (a string).

    ``visible`` is ``CUDA_VISIBLE_DEVICES`` (None when unset); ``smi_*`` the result of
    ``nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader``."""
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
    if smi_path is None:
        return "nvidia-smi is not installed (no NVIDIA driver)"
    if smi_returncode != 0:
        first = (smi_output.strip().splitlines() or ["no output"])[0]
        return f"nvidia-smi failed ({first[:200]})"
    for line in smi_output.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3 and parts[0]:
            return GpuInfo(parts[0], parts[1], parts[2])
    return "nvidia-smi lists no GPU"


def probe_gpu(timeout_s: float = 15.0) -> GpuInfo | str:
    """Ask ``nvidia-smi`` (seconds at most); never imports TensorRT or CUDA."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    smi = shutil.which("nvidia-smi")
    if smi is None or (visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles")):
        return gpu_from_probe(visible, smi, None, "")
    try:
        done = subprocess.run(
            [smi, "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return gpu_from_probe(visible, smi, -1, f"{type(exc).__name__}: {exc}")
    return gpu_from_probe(visible, smi, done.returncode, done.stdout or done.stderr)


def missing_gpu_packages(find_spec=importlib.util.find_spec) -> list[str]:
    """The [gpu] extra's modules that are not installed (found without importing them)."""
    return [m for m in ("tensorrt", "pycuda") if find_spec(m) is None]


def no_gpu_message(reason: str) -> str:
    return f"TensorRT engines need an NVIDIA GPU; none found: {reason}. {GPU_HELP}."


def require_gpu(probe=probe_gpu, find_spec=importlib.util.find_spec) -> GpuInfo:
    """The GPU to build on, or :class:`TrtError` with the message the flow prints."""
    found = probe()
    if isinstance(found, str):
        raise TrtError(no_gpu_message(found))
    missing = missing_gpu_packages(find_spec)
    if missing:
        raise TrtError(
            f"TensorRT engines need the [gpu] extra; found {found.name} (compute capability "
            f"{found.compute_capability}) but {missing} not installed. {GPU_HELP}."
        )
    return found
