"""Benchmark every quantgate variant of one FP32 version against torch FP32 eager and
Optimum's default dynamic INT8 recipe, on the same host, thread count and process.

    python benchmarks/quantisation.py --source 1               # full run (~10 min on 2 cores)
    python benchmarks/quantisation.py --source 1 --quick       # smoke run (~2 min)
    python benchmarks/quantisation.py --source 1 --profile onnx-int8-dynamic
    # thread settings, under load:
    python benchmarks/quantisation.py --source 1 --threads 2,1 --spinning on,off --load-core

``--threads`` and ``--spinning`` take lists: the first pair is the setting every comparison uses,
and each other combination adds the quantgate variants again, loaded with that setting
(``QUANTGATE_THREADS`` / ``QUANTGATE_SPINNING``, as a served model reads them), so settings
are compared side by side in one process. ``--load-core`` runs a busy loop on one core in a
second process for the whole measurement: what a served model lives beside.

Reads the registered FP32 version ``--source`` and, for each variant, the newest version whose
``parent_version`` is that source (build them first with ``-e quantise_onnx`` and
``-e quantise_torch``). Optimum's recipes are built here from the same FP32 folder:
``ORTQuantizer`` + ``AutoQuantizationConfig.avx512_vnni(is_static=False)`` (Optimum's documented
default) and the preset for this host where that differs. optimum and optimum-onnx are not
quantgate dependencies: without them those rows are skipped, and the report says so.

How it times (see the field notes): ONNX Runtime's and PyTorch's thread pools spin after each
call, so call-by-call interleaving of two runtimes makes both slower. Each round visits every
model in turn (the order rotates per round) and, per model, pauses 100 ms, runs a few warm-up
calls, then a block of timed calls; the percentiles pool all rounds. Only inference is timed
(inputs are tokenised beforehand): batch-1 inputs of exactly 16 and 64 tokens, and batches of
32 real test headlines for throughput. Macro F1 and top-1 agreement with torch FP32 are on
news9 test. On a shared machine the numbers are noisy; the load average is printed with them.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOKENS = (16, 64)
BATCH = 32
INT8 = "int8"
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


# --------------------------------------------------------------------------- host
def host_info(threads: int) -> dict:
    from quantgate.recipes import cpu_flags, detect_preset

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


def size_of(path: str | Path) -> int:
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- candidates
def session(path: str, threads: int):
    """An ONNX Runtime session with the same options the quantgate pyfunc uses."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_infer(sess) -> Callable:
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


# --------------------------------------------------------------------------- inputs
def fixed_length_feed(tokenizer, texts: list[str], n_tokens: int) -> dict[str, np.ndarray]:
    """One input of exactly ``n_tokens`` tokens (CLS and SEP included), cut from real headlines."""
    ids = tokenizer(" ".join(texts[:40]), add_special_tokens=False)["input_ids"][: n_tokens - 2]
    if len(ids) < n_tokens - 2:
        raise ValueError(f"not enough text for {n_tokens} tokens")
    ids = [tokenizer.cls_token_id, *ids, tokenizer.sep_token_id]
    arr = np.asarray([ids], dtype=np.int64)
    return {"input_ids": arr, "attention_mask": np.ones_like(arr), "token_type_ids": np.zeros_like(arr)}


def encode(tokenizer, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    return {k: v.astype(np.int64) for k, v in enc.items()}


# --------------------------------------------------------------------------- measuring
def timed_block(c: Candidate, key: str, feed, warmup: int, calls: int) -> None:
    for _ in range(warmup):
        c.infer(feed)
    bucket = c.times.setdefault(key, [])
    for _ in range(calls):
        t0 = time.perf_counter()
        c.infer(feed)
        bucket.append(time.perf_counter() - t0)


def measure_speed(cands: list[Candidate], feeds: dict[str, dict], rounds: int, block: int, batch_block: int) -> None:
    """Interleaved in blocks: every round visits each model once, in a rotating order."""
    for r in range(rounds):
        order = cands[r % len(cands) :] + cands[: r % len(cands)]
        for c in order:
            time.sleep(0.1)  # let the previous runtime's spinning threads go idle
            for n in TOKENS:
                timed_block(c, f"b1_{n}", feeds[f"b1_{n}"], warmup=3, calls=block)
            timed_block(c, f"b{BATCH}", feeds[f"b{BATCH}"], warmup=1, calls=batch_block)
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    for c in cands:
        for n in TOKENS:
            t = np.asarray(c.times[f"b1_{n}"]) * 1000
            c.metrics[f"p50_{n}"], c.metrics[f"p95_{n}"] = float(np.percentile(t, 50)), float(np.percentile(t, 95))
        c.metrics["throughput"] = BATCH / float(np.median(c.times[f"b{BATCH}"]))


def measure_accuracy(cands: list[Candidate], reference: Candidate, tokenizer, texts, y_true, max_length: int) -> None:
    from evaluators.metrics import agreement, macro_f1

    batches = [encode(tokenizer, texts[lo : lo + 64], max_length) for lo in range(0, len(texts), 64)]
    preds = {c.name: np.concatenate([c.infer(b).argmax(axis=1) for b in batches]) for c in [reference, *cands]}
    n_labels = int(max(y_true)) + 1
    for c in [reference, *cands]:
        c.metrics["macro_f1"] = macro_f1(y_true, preds[c.name].tolist(), n_labels)
        c.metrics["agreement"] = agreement(preds[c.name].tolist(), preds[reference.name].tolist())


# --------------------------------------------------------------------------- report
def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


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


def profile(c: Candidate, feeds: dict[str, dict], threads: int, runs: int = 200) -> str:
    """ONNX Runtime's per-operator profile of one candidate: where its batch-1 time goes."""
    import onnxruntime as ort

    if not c.onnx_path:
        return f"{c.name}: not an ONNX model, no ORT profile"
    out = []
    for n in TOKENS:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        with tempfile.TemporaryDirectory() as tmp:
            options.profile_file_prefix = str(Path(tmp) / "ort")
            sess = ort.InferenceSession(c.onnx_path, options, providers=["CPUExecutionProvider"])
            run = onnx_infer(sess)
            for _ in range(runs):
                run(feeds[f"b1_{n}"])
            events = json.loads(Path(sess.end_profiling()).read_text())
        per_op: dict[str, float] = {}
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                op = e.get("args", {}).get("op_name", "?")
                per_op[op] = per_op.get(op, 0.0) + e["dur"]
        total = sum(per_op.values()) or 1.0
        top = sorted(per_op.items(), key=lambda kv: -kv[1])[:10]
        out.append(f"{c.name}, {n} tokens, {runs} runs: kernel time per call {total / runs / 1000:.3f} ms")
        out += [f"  {op:32s} {t / total:6.1%}  {t / runs / 1000:.3f} ms" for op, t in top]
    return "\n".join(out)


def start_core_load():
    """A second process that keeps one core busy until terminated (bounded: it ends after 1 h)."""
    import subprocess

    code = "import time\nend = time.time() + 3600\nwhile time.time() < end:\n    pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="latest-fp32", help="FP32 version (number, name@alias, models:/…, latest-fp32)")
    ap.add_argument("--model-name", default="news-classifier")
    ap.add_argument("--threads", default="2", help="intra-op threads, or a list like 2,1 (the first is the baseline)")
    ap.add_argument("--spinning", default="default", help="ONNX Runtime thread spinning: default, on, off, or a list")
    ap.add_argument("--load-core", action="store_true", help="keep one core busy in a second process while measuring")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--block", type=int, default=30, help="timed batch-1 calls per model per round")
    ap.add_argument("--batch-block", type=int, default=4, help=f"timed batch-{BATCH} calls per model per round")
    ap.add_argument("--quick", action="store_true", help="3 rounds of 10 calls: a smoke run, not a measurement")
    ap.add_argument("--no-optimum", action="store_true")
    ap.add_argument("--profile", metavar="VARIANT", help="also print ORT's per-operator profile of this candidate")
    ap.add_argument("--out", type=Path, help="write the report (markdown) and raw figures (.json) here")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.block, args.batch_block = 3, 10, 2
    thread_list = [int(t) for t in str(args.threads).split(",")]
    spin_list = [s.strip() for s in str(args.spinning).split(",")]
    if any(s not in ("default", "on", "off") for s in spin_list) or any(t < 1 for t in thread_list):
        ap.error("--threads takes whole numbers >= 1, --spinning default/on/off")
    args.threads = thread_list[0]
    settings = [(t, s) for t in thread_list for s in spin_list]

    import torch

    from flows.quantise import resolve_source
    from quantgate.data import load_dataset
    from quantgate.tracking import configure_tracking

    torch.set_num_threads(args.threads)
    configure_tracking(experiment=None)
    host = host_info(args.threads)
    load_before = os.getloadavg()
    source = resolve_source(args.source, args.model_name)
    fp32, ours, parent = registered_candidates(source, args.threads, spin_list[0])
    for t, spin in settings[1:]:  # the same variants again, loaded with another thread setting
        ours += registered_candidates(source, t, spin, suffix=f" [threads {t}, spinning {spin}]", with_parent=False)[1]
    set_runtime_env(args.threads, spin_list[0])
    loader = start_core_load() if args.load_core else None
    note = "Optimum rows skipped (--no-optimum)."
    optimum_rows: list[Candidate] = []
    with tempfile.TemporaryDirectory(prefix="quantgate-bench-") as tmp:
        if not args.no_optimum:
            optimum_rows, note = optimum_candidates(parent, args.threads, Path(tmp), host["preset"])
        cands = [*optimum_rows, *ours]
        test = load_dataset("news9", ("test",))["test"]
        texts, y_true = list(test.texts), list(test.label_ids)
        feeds = {f"b1_{n}": fixed_length_feed(parent.tokenizer, texts, n) for n in TOKENS}
        feeds[f"b{BATCH}"] = encode(parent.tokenizer, texts[:BATCH], parent.max_length)
        print(f"measuring {len(cands) + 1} models: {args.rounds} rounds x {args.block} calls", file=sys.stderr)
        measure_accuracy(cands, fp32, parent.tokenizer, texts, y_true, parent.max_length)
        measure_speed([fp32, *cands], feeds, args.rounds, args.block, args.batch_block)
        optimum = optimum_rows[0] if optimum_rows else None
        lines = [
            f"# quantgate quantisation benchmark: {source.name} v{source.version}",
            "",
            f"host: {host['cpu']}, {host['cores']} cores, ISA {', '.join(host['isa']) or 'none'} "
            f"(preset {host['preset']}), {args.threads} threads (spinning {spin_list[0]}), Python {host['python']}"
            + ("; ONE CORE BUSY in a second process throughout (--load-core)" if loader else ""),
            "libraries: " + ", ".join(f"{k} {v}" for k, v in host["libraries"].items()),
            f"load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f} "
            f"({'shared machine: expect noise' if max(load_before[0], os.getloadavg()[0]) > 0.5 else 'quiet'})",
            f"timing: {args.rounds} rounds x {args.block} batch-1 calls per length, {args.batch_block} batch-{BATCH} "
            "calls, interleaved in blocks; inference only (tokenised beforehand); F1/agreement on news9 test "
            f"({len(texts)} headlines)",
            *([note] if note else []),
            "",
            table(cands, fp32, optimum),
            "",
            *verdict(cands, fp32, optimum, args.rounds),
        ]
        if args.profile:
            chosen = [c for c in [fp32, *cands] if c.name.startswith(args.profile)]
            lines += ["", "## profile", *(profile(c, feeds, args.threads) for c in chosen)]
    if loader is not None:
        loader.terminate()
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(report + "\n", encoding="utf-8")
        raw = {
            "host": host,
            "source": f"{source.name}/{source.version}",
            "models": {c.name: {"size_bytes": c.size_bytes, **c.metrics} for c in [fp32, *cands]},
        }
        args.out.with_suffix(".json").write_text(json.dumps(raw, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
