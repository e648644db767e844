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
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _quantisation_candidates import (
    BATCH,
    TOKENS,
    Candidate,
    onnx_infer,
    optimum_candidates,
    registered_candidates,
    set_runtime_env,
)
from _quantisation_report import header_lines, host_info, table, verdict, write_outputs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
    """``texts`` tokenised as one batch, padded to its longest, as int64 arrays."""
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    return {k: v.astype(np.int64) for k, v in enc.items()}


def news9_test_split() -> tuple[list[str], list[int]]:
    """news9 test: the headlines and their label ids."""
    from quantgate.data import load_dataset

    test = load_dataset("news9", ("test",))["test"]
    return list(test.texts), list(test.label_ids)


def timing_feeds(tokenizer, texts: list[str], max_length: int) -> dict[str, dict[str, np.ndarray]]:
    """The timed inputs: batch-1 of exactly each of TOKENS tokens, and the first BATCH headlines."""
    feeds = {f"b1_{n}": fixed_length_feed(tokenizer, texts, n) for n in TOKENS}
    feeds[f"b{BATCH}"] = encode(tokenizer, texts[:BATCH], max_length)
    return feeds


# --------------------------------------------------------------------------- measuring
def timed_block(c: Candidate, key: str, feed, warmup: int, calls: int) -> None:
    """``warmup`` untimed calls, then ``calls`` timed ones, appended to ``c.times[key]``."""
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
    """Macro F1 on ``y_true`` and top-1 agreement with ``reference``, for the reference and each candidate."""
    from evaluators.metrics import agreement, macro_f1

    batches = [encode(tokenizer, texts[lo : lo + 64], max_length) for lo in range(0, len(texts), 64)]
    preds = {c.name: np.concatenate([c.infer(b).argmax(axis=1) for b in batches]) for c in [reference, *cands]}
    n_labels = int(max(y_true)) + 1
    for c in [reference, *cands]:
        c.metrics["macro_f1"] = macro_f1(y_true, preds[c.name].tolist(), n_labels)
        c.metrics["agreement"] = agreement(preds[c.name].tolist(), preds[reference.name].tolist())


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


def parse_args(argv) -> argparse.Namespace:
    """The command line, with --quick applied and --threads / --spinning split into their settings.

    ``args.threads`` and ``args.spinning`` become the first (baseline) setting; ``args.settings``
    lists every (threads, spinning) combination, the baseline first."""
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
    args.threads, args.spinning = thread_list[0], spin_list[0]
    args.settings = [(t, s) for t in thread_list for s in spin_list]
    return args


def load_registered(source, args) -> tuple[Candidate, list[Candidate], object]:
    """The source and its variants under the baseline setting, the variants again under each other one."""
    fp32, ours, parent = registered_candidates(source, args.threads, args.spinning)
    for t, spin in args.settings[1:]:  # the same variants again, loaded with another thread setting
        ours += registered_candidates(source, t, spin, suffix=f" [threads {t}, spinning {spin}]", with_parent=False)[1]
    set_runtime_env(args.threads, args.spinning)
    return fp32, ours, parent


def load_optimum(args, parent, workdir: Path, host_preset: str) -> tuple[list[Candidate], str]:
    """Optimum's rows (unless --no-optimum) and the report's note on them."""
    if args.no_optimum:
        return [], "Optimum rows skipped (--no-optimum)."
    return optimum_candidates(parent, args.threads, workdir, host_preset)


def main(argv=None) -> int:
    """Load every candidate, measure accuracy then speed, print the report (and write it with --out)."""
    args = parse_args(argv)

    import torch

    from flows.quantise import resolve_source
    from quantgate.tracking import configure_tracking

    torch.set_num_threads(args.threads)
    configure_tracking(experiment=None)
    host = host_info(args.threads)
    load_before = os.getloadavg()
    source = resolve_source(args.source, args.model_name)
    fp32, ours, parent = load_registered(source, args)
    loader = start_core_load() if args.load_core else None
    with tempfile.TemporaryDirectory(prefix="quantgate-bench-") as tmp:
        optimum_rows, note = load_optimum(args, parent, Path(tmp), host["preset"])
        cands = [*optimum_rows, *ours]
        texts, y_true = news9_test_split()
        feeds = timing_feeds(parent.tokenizer, texts, parent.max_length)
        print(f"measuring {len(cands) + 1} models: {args.rounds} rounds x {args.block} calls", file=sys.stderr)
        measure_accuracy(cands, fp32, parent.tokenizer, texts, y_true, parent.max_length)
        measure_speed([fp32, *cands], feeds, args.rounds, args.block, args.batch_block)
        optimum = optimum_rows[0] if optimum_rows else None
        lines = [
            *header_lines(args, source, host, load_before, loader is not None, note, len(texts)),
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
        write_outputs(args.out, report, host, source, [fp32, *cands])
    return 0


if __name__ == "__main__":
    sys.exit(main())
