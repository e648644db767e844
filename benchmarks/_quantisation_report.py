"""The quantisation benchmark's report (benchmarks/quantisation.py): the host it ran on, the
markdown table of every candidate, the verdict against the speed targets, and the files
``--out`` writes (the report as markdown and the raw figures as JSON).
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
from pathlib import Path

import numpy as np
from _quantisation_candidates import BATCH, INT8, TOKENS, Candidate

LIBRARIES = (
    "torch",
    "onnxruntime",
    "openvino",
    "nncf",
    "onnx",
    "transformers",
    "optimum",
    "optimum-onnx",
    "numpy",
    "mlflow",
)
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "avx512_bf16", "fma")


# --------------------------------------------------------------------------- host
def host_info(threads: int) -> dict:
    """The CPU, its ISA flags and quantgate's preset for it, cores, threads, Python and library versions."""
    from quantgate.recipes.base import cpu_flags, detect_preset

    flags = cpu_flags()
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = md.version(lib)
        except md.PackageNotFoundError:
            versions[lib] = "not installed"
    return {
        "cpu": cpu,
        "isa": [f for f in ISA_FLAGS if f in flags],
        "cores": os.cpu_count(),
        "threads": threads,
        "preset": detect_preset(flags),
        "python": platform.python_version(),
        "libraries": versions,
    }


# --------------------------------------------------------------------------- report
def ratio(a: float, b: float) -> str:
    """``a / b`` as ``1.23x``, or ``-`` when either is missing."""
    return f"{a / b:.2f}x" if a and b else "-"


def header_lines(args, source, host: dict, load_before, core_busy: bool, note: str, n_texts: int) -> list[str]:
    """The report's title and what its figures were taken on: host, libraries, load and timing."""
    return [
        f"# quantgate quantisation benchmark: {source.name} v{source.version}",
        "",
        f"host: {host['cpu']}, {host['cores']} cores, ISA {', '.join(host['isa']) or 'none'} "
        f"(preset {host['preset']}), {args.threads} threads (spinning {args.spinning}), Python {host['python']}"
        + ("; ONE CORE BUSY in a second process throughout (--load-core)" if core_busy else ""),
        "libraries: " + ", ".join(f"{k} {v}" for k, v in host["libraries"].items()),
        f"load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f} "
        f"({'shared machine: expect noise' if max(load_before[0], os.getloadavg()[0]) > 0.5 else 'quiet'})",
        f"timing: {args.rounds} rounds x {args.block} batch-1 calls per length, {args.batch_block} batch-{BATCH} "
        "calls, interleaved in blocks; inference only (tokenised beforehand); F1/agreement on news9 test "
        f"({n_texts} headlines)",
        *([note] if note else []),
    ]


def table(cands: list[Candidate], fp32: Candidate, optimum: Candidate | None) -> str:
    head = (
        "| model | precision | runtime | size MB | size vs fp32 | p50 16 ms | p95 16 ms | p50 64 ms | p95 64 ms "
        f"| thr b{BATCH}/s | macro F1 | agreement | speed-up p50 16 / 64 vs torch fp32 | vs Optimum |"
    )
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for c in [fp32, *cands]:
        m = c.metrics
        vs_fp32 = f"{ratio(fp32.metrics['p50_16'], m['p50_16'])} / {ratio(fp32.metrics['p50_64'], m['p50_64'])}"
        vs_opt = (
            f"{ratio(optimum.metrics['p50_16'], m['p50_16'])} / {ratio(optimum.metrics['p50_64'], m['p50_64'])}"
            if optimum
            else "n/a"
        )
        rows.append(
            f"| {c.name} | {c.precision} | {c.runtime} | "
            f"{c.size_bytes / 1e6:.1f} | {c.size_bytes / fp32.size_bytes:.0%} "
            f"| {m['p50_16']:.2f} | {m['p95_16']:.2f} | {m['p50_64']:.2f} | {m['p95_64']:.2f} | {m['throughput']:.0f} "
            f"| {m['macro_f1']:.4f} | {m['agreement']:.4f} | {vs_fp32} | {vs_opt} |"
        )
    return "\n".join(rows)


def round_ratios(slow: Candidate, fast: Candidate, key: str, rounds: int) -> str:
    """min / median / max over rounds of the per-round p50 ratio: how much a ratio moves
    while the machine's load changes under the measurement."""
    per_round = [np.median(np.asarray(c.times[key]).reshape(rounds, -1), axis=1) for c in (slow, fast)]
    r = per_round[0] / per_round[1]
    return f"per round {r.min():.2f} / {np.median(r):.2f} / {r.max():.2f}"


def verdict(cands: list[Candidate], fp32: Candidate, optimum: Candidate | None, rounds: int) -> list[str]:
    """The issue's speed targets for the best quantgate INT8 variant (by p50 at 64 tokens)."""
    ours = [c for c in cands if c.precision == INT8 and not c.name.startswith("optimum")]
    if not ours:
        return ["no quantgate INT8 variant registered for this source"]
    best = min(ours, key=lambda c: c.metrics["p50_64"])
    lines = [f"best quantgate INT8 variant by p50 at 64 tokens: {best.name}"]
    for n in TOKENS:
        key = f"b1_{n}"
        vs_fp32 = fp32.metrics[f"p50_{n}"] / best.metrics[f"p50_{n}"]
        line = (
            f"  {n} tokens: {vs_fp32:.2f}x torch FP32 ({round_ratios(fp32, best, key, rounds)}; "
            f"target >= 5x: {'met' if vs_fp32 >= 5 else 'NOT met'})"
        )
        if optimum:
            vs_opt = optimum.metrics[f"p50_{n}"] / best.metrics[f"p50_{n}"]
            line += (
                f", {vs_opt:.2f}x {optimum.name} ({round_ratios(optimum, best, key, rounds)}; "
                f"target >= 1.25x: {'met' if vs_opt >= 1.25 else 'NOT met'})"
            )
        lines.append(line)
    if optimum:
        df1 = best.metrics["macro_f1"] - optimum.metrics["macro_f1"]
        lines.append(f"  macro F1 vs Optimum: {df1 * 100:+.2f} points ({'equal or better' if df1 >= 0 else 'worse'})")
    return lines


def write_outputs(out: Path, report: str, host: dict, source, models: list[Candidate]) -> None:
    """Write the report as ``OUT.md`` and the raw figures (host, source, each model's metrics) as ``OUT.json``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(report + "\n", encoding="utf-8")
    raw = {
        "host": host,
        "source": f"{source.name}/{source.version}",
        "models": {c.name: {"size_bytes": c.size_bytes, **c.metrics} for c in models},
    }
    out.with_suffix(".json").write_text(json.dumps(raw, indent=2), encoding="utf-8")
