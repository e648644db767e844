"""The models the quantisation benchmark (benchmarks/quantisation.py) compares, as ``Candidate``s.

The source's registered FP32 version (torch eager) and the newest registered version of each
variant built from it, loaded through the quantgate pyfunc with the thread settings a served
model reads; and Optimum's dynamic INT8 recipes, built here from the same FP32 folder when
optimum and optimum-onnx are installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

# what each candidate is timed on: batch-1 inputs of exactly TOKENS tokens and batches of BATCH
# headlines; its ``times`` are keyed b1_16, b1_64 and b32, its ``metrics`` p50_16, p95_16, ...
TOKENS = (16, 64)
BATCH = 32
INT8 = "int8"


@dataclass
class Candidate:
    """One model under test: how to call it on an encoded batch, and what it is."""

    name: str
    precision: str
    runtime: str
    size_bytes: int
    infer: Callable[[dict[str, np.ndarray]], np.ndarray]
    onnx_path: str | None = None
    times: dict[str, list[float]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def size_of(path: str | Path) -> int:
    """Bytes of a model file, or of every file under a model folder."""
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def session(path: str, threads: int):
    """An ONNX Runtime session with the same options the quantgate pyfunc uses."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_infer(sess) -> Callable:
    """Call ``sess`` on an encoded batch, feeding the inputs its graph declares; return the logits."""
    names = [i.name for i in sess.get_inputs()]
    return lambda feed: sess.run(None, {n: feed[n] for n in names})[0]


def set_runtime_env(threads: int, spinning: str) -> None:
    """What the pyfunc reads at load: intra-op threads and (ONNX Runtime) spinning."""
    os.environ["QUANTGATE_THREADS"] = str(threads)
    if spinning == "default":
        os.environ.pop("QUANTGATE_SPINNING", None)
    else:
        os.environ["QUANTGATE_SPINNING"] = "1" if spinning == "on" else "0"


def registered_candidates(
    source, threads: int, spinning: str = "default", suffix: str = "", with_parent: bool = True
) -> tuple[Candidate | None, list[Candidate], object]:
    """torch FP32 eager (the source) and the newest version of each variant built from it."""
    import mlflow
    from mlflow import MlflowClient

    set_runtime_env(threads, spinning)

    def load(mv):
        return mlflow.pyfunc.load_model(f"models:/{mv.name}/{mv.version}").unwrap_python_model()

    parent = load(source)
    fp32 = (
        Candidate("torch-fp32-eager", "fp32", "torch", size_of(parent.artifact_paths["model"]), parent.infer)
        if with_parent
        else None
    )
    newest: dict[str, object] = {}
    for mv in MlflowClient().search_model_versions(f"name='{source.name}' and tags.parent_version='{source.version}'"):
        v = mv.tags.get("variant", "")
        if v not in newest or int(mv.version) > int(newest[v].version):
            newest[v] = mv
    out = []
    for variant, mv in sorted(newest.items()):
        model = load(mv)
        path = model.artifact_paths["model"]
        out.append(
            Candidate(
                f"{variant} (v{mv.version}){suffix}",
                mv.tags.get("precision", "?"),
                mv.tags.get("runtime", "?"),
                size_of(path),
                model.infer,
                onnx_path=path if path.endswith(".onnx") else None,
            )
        )
    return fp32, out, parent


def optimum_candidates(parent, threads: int, workdir: Path, host_preset: str) -> tuple[list[Candidate], str]:
    """Optimum's default dynamic INT8 (and the host's preset), built from the FP32 folder."""
    try:
        from optimum.onnxruntime import ORTModelForSequenceClassification, ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig
    except ImportError as exc:
        return [], (
            f"Optimum rows skipped: optimum / optimum-onnx are not installed ({exc}). "
            "`pip install optimum optimum-onnx` to compare against them; they are not quantgate dependencies."
        )
    exported = workdir / "optimum-fp32"
    ORTModelForSequenceClassification.from_pretrained(parent.artifact_paths["model"], export=True).save_pretrained(
        exported
    )
    presets = {"avx512_vnni": AutoQuantizationConfig.avx512_vnni(is_static=False)}
    if host_preset != "avx512_vnni" and hasattr(AutoQuantizationConfig, host_preset):
        presets[host_preset] = getattr(AutoQuantizationConfig, host_preset)(is_static=False)
    out = []
    for name, qconfig in presets.items():
        target = workdir / f"optimum-{name}"
        ORTQuantizer.from_pretrained(exported).quantize(save_dir=target, quantization_config=qconfig)
        path = next(target.glob("*_quantized.onnx"))
        label = (
            "optimum-int8-dynamic (default avx512_vnni)" if name == "avx512_vnni" else f"optimum-int8-dynamic ({name})"
        )
        out.append(
            Candidate(
                label, INT8, "onnxruntime", size_of(path), onnx_infer(session(path, threads)), onnx_path=str(path)
            )
        )
    return out, ""
