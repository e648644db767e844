"""Batch-scoring benchmark: the plain pyfunc loop against `quantgate score` on Spark local[1] and local[2].

    python benchmarks/batch_scoring.py                                   # models:/news-classifier@staging
    python benchmarks/batch_scoring.py --model news-classifier/3 --rows 200000 --out outputs/batch.json

For one registered version (use an INT8 one) and N generated headlines (news9's headlines
with prefixes and suffixes, so lengths and topics vary like real ones):

1. the plain pyfunc loop: ``model.predict`` on consecutive chunks of ``--batch-size`` rows, one
   inference thread (as each Spark task has);
2. ``quantgate score --master local[1]`` and ``local[2]`` on the same Parquet file and version,
   each in its own process; rows/s counts the scoring job only (Spark's start-up, ~15-30 s, is
   reported apart);
3. whether each Spark output equals the pyfunc loop's row by row (labels and probabilities),
   and the agreement of the labels with batch-1 predictions on a sample of rows: dynamic INT8
   computes activation scales over the batch, so batch-1 labels can differ.

The scaling ratio is local[2] rows/s over local[1] rows/s. It needs two idle cores: print the
load average with the figures, and do not compare figures taken under different loads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PREFIXES = ["", "Update: ", "Breaking: ", "Analysis: ", "Report: ", "Live: ", "Exclusive: "]
SUFFIXES = ["", " - sources", " (updated)", ", officials say", " as talks continue", " amid criticism"]


def synthetic_headlines(n: int, seed: int = 0) -> list[str]:
    """``n`` headlines: news9's texts (all splits) with a random prefix and suffix, in random order."""
    from quantgate.data import load_dataset

    data = load_dataset("news9", ("train", "validation", "test"))
    texts = pd.concat([data[s].frame["text"] for s in ("train", "validation", "test")]).tolist()
    rng = np.random.default_rng(seed)
    base = rng.integers(0, len(texts), n)
    pre, suf = rng.integers(0, len(PREFIXES), n), rng.integers(0, len(SUFFIXES), n)
    return [f"{PREFIXES[p]}{texts[b]}{SUFFIXES[s]}" for b, p, s in zip(base, pre, suf)]


def pyfunc_loop(model_uri: str, texts: pd.DataFrame, batch: int) -> tuple[pd.DataFrame, float]:
    """``model.predict`` on consecutive chunks of ``batch`` rows after one warm-up: the output and its seconds."""
    import mlflow

    model = mlflow.pyfunc.load_model(model_uri)
    model.predict(texts.head(batch))  # warm-up
    t0 = time.perf_counter()
    out = pd.concat(
        [model.predict(texts.iloc[lo : lo + batch]) for lo in range(0, len(texts), batch)], ignore_index=True
    )
    return out, time.perf_counter() - t0


def batch1_labels(model_uri: str, texts: list[str]) -> list[str]:
    """The label of each text predicted alone (batch 1)."""
    import mlflow

    model = mlflow.pyfunc.load_model(model_uri)
    return [model.predict(pd.DataFrame({"text": [t]}))["label"].iloc[0] for t in texts]


def spark_run(model_uri: str, source: Path, out: Path, master: str, batch: int) -> dict:
    """``quantgate score --master MASTER`` in its own process: rows/s of the scoring job, wall time, the output."""
    t0 = time.perf_counter()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "score",
            "--model",
            model_uri,
            "--input",
            str(source),
            "--output",
            str(out),
            "--master",
            master,
            "--batch-size",
            str(batch),
        ],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if run.returncode != 0:
        raise SystemExit(f"quantgate score --master {master} failed:\n{run.stderr[-3000:]}")
    m = re.search(r"wrote (\d+) rows to .* in ([\d.]+)s", run.stderr)
    rows, seconds = int(m[1]), float(m[2])
    return {
        "master": master,
        "rows": rows,
        "job_s": seconds,
        "wall_s": round(wall, 1),
        "rows_per_s": rows / seconds,
        "scored": pd.read_parquet(out).sort_values("row").reset_index(drop=True),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line: the version, how many rows, the batch size, the batch-1 sample and --out."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="models:/news-classifier@staging")
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batch1-sample", type=int, default=20_000, help="rows compared with batch-1 predictions")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    return p.parse_args(argv)


def score_every_way(uri: str, frame: pd.DataFrame, batch: int) -> tuple[pd.DataFrame, float, list[dict]]:
    """The pyfunc loop's output and seconds, then ``quantgate score`` on local[1] and local[2], on one Parquet file."""
    with tempfile.TemporaryDirectory(prefix="quantgate-bench-") as tmp:
        source = Path(tmp) / "headlines.parquet"
        frame.to_parquet(source, index=False)
        ref, loop_s = pyfunc_loop(uri, frame[["text"]], batch)
        runs = [spark_run(uri, source, Path(tmp) / f"out-{m[6]}.parquet", m, batch) for m in ("local[1]", "local[2]")]
    return ref, loop_s, runs


def compared_with_pyfunc(run: dict, ref: pd.DataFrame) -> dict:
    """A Spark run's figures, its scored rows replaced by whether they equal the pyfunc loop's."""
    scored = run.pop("scored")
    run["identical_to_pyfunc"] = bool(
        (scored["label"].to_numpy() == ref["label"].to_numpy()).all()
        and np.array_equal(scored["probability"].to_numpy(), ref["probability"].to_numpy())
    )
    run["label_mismatches_vs_pyfunc"] = int((scored["label"].to_numpy() != ref["label"].to_numpy()).sum())
    run["rows_per_s"] = round(run["rows_per_s"], 1)
    return run


def print_report(result: dict) -> None:
    """The figures as a markdown table, with the host's load, the scaling ratio and the batch-1 agreement."""
    load_before, load_after = result["loadavg_before"], result["loadavg_after"]
    print(
        f"{result['model']} ({result['variant']}), {result['rows']} rows, batch {result['batch_size']}, "
        f"{result['cpus']} CPUs, load average {load_before[0]:.1f} before / {load_after[0]:.1f} after"
    )
    print("| path | rows/s | scoring s | wall s | identical to pyfunc |\n|---|---|---|---|---|")
    print(
        f"| pyfunc loop (1 thread) | {result['pyfunc_loop']['rows_per_s']} "
        f"| {result['pyfunc_loop']['seconds']} | – | – |"
    )
    for m in ("local[1]", "local[2]"):
        r = result[m]
        print(
            f"| Spark {m} | {r['rows_per_s']} | {r['job_s']} | {r['wall_s']} | "
            f"{r['identical_to_pyfunc']} ({r['label_mismatches_vs_pyfunc']} label mismatches) |"
        )
    print(
        f"scaling local[2] / local[1]: {result['scaling_local2_over_local1']}x; agreement with batch-1 labels on "
        f"{result['batch1_agreement']['sample']} rows: {result['batch1_agreement']['agreement']:.4f}"
    )


def main(argv: list[str] | None = None) -> int:
    """Score the same headlines every way, compare the outputs, print the figures (and write them with --out)."""
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["QUANTGATE_THREADS"] = "1"
    os.environ["QUANTGATE_MAX_BATCH"] = str(max(args.batch_size, 256))
    from quantgate.tracking import configure_tracking, parse_model_ref, resolve_version

    configure_tracking(experiment=None)
    mv = resolve_version(args.model)
    uri = parse_model_ref(f"{mv.name}/{mv.version}")
    load_before = os.getloadavg()
    frame = pd.DataFrame({"id": np.arange(args.rows), "text": synthetic_headlines(args.rows)})
    ref, loop_s, runs = score_every_way(uri, frame, args.batch_size)
    sample = np.random.default_rng(1).choice(args.rows, min(args.batch1_sample, args.rows), replace=False)
    b1 = batch1_labels(uri, frame["text"].iloc[sample].tolist())
    result = {
        "model": uri,
        "variant": mv.tags.get("variant"),
        "rows": args.rows,
        "batch_size": args.batch_size,
        "host": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "pyfunc_loop": {"seconds": round(loop_s, 1), "rows_per_s": round(args.rows / loop_s, 1)},
    }
    for r in runs:
        result[r["master"]] = compared_with_pyfunc(r, ref)
    result["scaling_local2_over_local1"] = round(result["local[2]"]["rows_per_s"] / result["local[1]"]["rows_per_s"], 2)
    result["batch1_agreement"] = {
        "sample": len(sample),
        "agreement": float(np.mean(ref["label"].to_numpy()[sample] == np.array(b1))),
    }
    print_report(result)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
