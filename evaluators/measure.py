"""Measurements of a loaded quantgate model: size, batch-1 latency, accuracy and parity.

These touch models but not MLflow; the evaluate step records what they return.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

from evaluators.metrics import (
    accuracy,
    agreement,
    block_bootstrap_speedup,
    flip_matrix,
    macro_f1,
    mean_kl_divergence,
    per_class_f1,
    percentiles_ms,
    prob_deltas,
)
from quantgate.contract import HOST_KEYS


def batch1_latency(model, texts: list[str], *, warmup: int = 20, runs: int = 200) -> dict[str, float]:
    """Time ``runs`` single-text calls after ``warmup`` untimed ones, tokenisation and
    inference timed separately. Texts are cycled so every call sees a real headline."""
    if runs < 1 or not texts:
        raise ValueError("need at least one run and one text")
    for i in range(warmup):
        model.infer(model.encode([texts[i % len(texts)]]))
    tok, inf = [], []
    for i in range(runs):
        t0 = time.perf_counter()
        enc = model.encode([texts[i % len(texts)]])
        t1 = time.perf_counter()
        model.infer(enc)
        t2 = time.perf_counter()
        tok.append(t1 - t0)
        inf.append(t2 - t1)
    out = {f"latency_{k}_ms": v for k, v in percentiles_ms(np.add(tok, inf)).items()}
    out.update({f"inference_{k}_ms": v for k, v in percentiles_ms(inf).items()})
    out["tokenise_p50_ms"] = percentiles_ms(tok)["p50"]
    out["latency_runs"] = float(runs)
    return out


def accuracy_metrics(y_true: list[int], probs: np.ndarray, labels: list[str]) -> dict[str, float]:
    preds = probs.argmax(axis=1).tolist()
    out = {
        "macro_f1": macro_f1(y_true, preds, len(labels)),
        "accuracy": accuracy(y_true, preds),
    }
    for label, f1 in zip(labels, per_class_f1(y_true, preds, len(labels))):
        out[f"f1.{label.replace('/', '_')}"] = float(f1)
    return out


def parity_metrics(y_true: list[int], probs: np.ndarray, parent_probs: np.ndarray, n_labels: int) -> dict[str, float]:
    preds, parent_preds = probs.argmax(axis=1), parent_probs.argmax(axis=1)
    parent_f1 = macro_f1(y_true, parent_preds.tolist(), n_labels)
    f1 = macro_f1(y_true, preds.tolist(), n_labels)
    max_dp, mean_dp = prob_deltas(probs, parent_probs)
    flips = flip_matrix(parent_preds, preds, n_labels)
    return {
        "parent_macro_f1": parent_f1,
        "macro_f1_drop_points": (parent_f1 - f1) * 100.0,
        "top1_agreement": agreement(preds.tolist(), parent_preds.tolist()),
        "max_abs_prob_delta": max_dp,
        "mean_abs_prob_delta": mean_dp,
        "mean_kl_divergence": mean_kl_divergence(parent_probs, probs),
        "label_flips": float(flips.sum() - np.trace(flips)),
    }


def batch_invariance(model, texts: list[str], preds: np.ndarray, *, batch: int = 32) -> dict[str, float]:
    """Agreement of batch-``batch`` predictions (``preds``, from :func:`predict_proba` in
    batches) with batch-1 predictions of the same texts. Dynamic INT8 computes activation scales
    over the whole padded batch, so a row's label can depend on the rows beside it."""
    single = np.array([int(model.infer(model.encode([t]))[0].argmax()) for t in texts])
    batched = np.asarray(preds)
    return {
        "batch_invariance_agreement": float(np.mean(single == batched)),
        "batch_invariance_flips": float(np.sum(single != batched)),
        "batch_invariance_batch": float(batch),
    }


def throughput(model, texts: list[str], *, batch: int = 32, runs: int = 10) -> float:
    """Texts per second through ``infer`` at a fixed batch size (tokenised beforehand)."""
    batches = [model.encode([texts[(i * batch + j) % len(texts)] for j in range(batch)]) for i in range(runs)]
    model.infer(batches[0])  # warm-up
    t0 = time.perf_counter()
    for enc in batches:
        model.infer(enc)
    return batch * runs / (time.perf_counter() - t0)


def interleaved_speedup(
    model,
    parent,
    texts: list[str],
    *,
    blocks: int = 10,
    per_block: int = 30,
    warmup: int = 3,
    pause_s: float = 0.1,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Batch-1 inference speedup of ``model`` over ``parent``, timed in alternating blocks.

    Calls interleaved one by one make both runtimes slower (their thread pools spin after
    each call and fight for the cores); blocks with a short pause at each switch keep each
    runtime's timings clean while noise that lasts seconds still hits both sides.
    """
    encoded = [model.encode([t]) for t in texts[: max(per_block, 1)]]
    timings: dict[str, list[list[float]]] = {"parent": [], "model": []}
    for b in range(blocks):
        order = (("parent", parent), ("model", model)) if b % 2 == 0 else (("model", model), ("parent", parent))
        for name, m in order:
            time.sleep(pause_s)
            for i in range(warmup):
                m.infer(encoded[i % len(encoded)])
            block = []
            for i in range(per_block):
                t0 = time.perf_counter()
                m.infer(encoded[i % len(encoded)])
                block.append(time.perf_counter() - t0)
            timings[name].append(block)
    point, low, high = block_bootstrap_speedup(timings["parent"], timings["model"], level=level, seed=seed)
    return {"speedup_vs_parent": point, "speedup_ci_low": low, "speedup_ci_high": high, "speedup_ci_level": level}


def parameter_count(model) -> float:
    """Parameters of the loaded network: torch modules count tensors, ONNX graphs count
    initializer elements (quantised weights count once; scales and zero points count too)."""
    if hasattr(model, "model") and hasattr(model.model, "parameters"):
        return int(sum(p.numel() for p in model.model.parameters()))
    path = Path(model.artifact_paths["model"])
    if path.suffix == ".onnx":
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        return int(sum(int(np.prod(t.dims)) for t in graph.initializer))
    ir = path / "model.xml" if path.is_dir() else path
    if ir.suffix == ".xml" and ir.is_file():
        import openvino as ov

        consts = [op for op in ov.Core().read_model(str(ir)).get_ops() if op.get_type_name() == "Constant"]
        return int(sum(int(np.prod(list(op.get_output_shape(0)))) for op in consts))
    return float("nan")  # a runtime this function does not know: recorded as unknown, not 0


def host_fingerprint() -> dict[str, str]:
    """What latency figures depend on; only figures with equal fingerprints compare."""
    flags: set[str] = set()
    model_name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return {
        HOST_KEYS["cpu"]: model_name,
        HOST_KEYS["isa"]: ",".join(isa) or "none-detected",
        HOST_KEYS["cores"]: str(os.cpu_count()),
        HOST_KEYS["machine"]: platform.machine(),
        HOST_KEYS["gpu"]: gpu_name(),
    }


def gpu_name() -> str:
    """The first CUDA device's name as torch sees it, or "none": an engine's latency is the GPU's."""
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except Exception:  # a broken CUDA set-up measures on the CPU like none
        return "none"
