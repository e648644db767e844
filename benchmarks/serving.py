"""Serving benchmark: a real scoring server on loopback under concurrency 1, 4 and 16.

    python benchmarks/serving.py                               # models:/news-classifier@staging
    python benchmarks/serving.py --model models:/news-classifier/2 --server quantgate --seconds 15
    python benchmarks/serving.py --workers 1,2 --seconds 60     # one worker vs one per core (1 thread each)

Measures, for one registered version:
1. the raw in-process latency of the same pyfunc (``model.predict`` on one headline), and
2. the server (`mlflow models serve`, or `quantgate serve`) driven by a closed-loop load
   generator - N threads each posting one headline at a time for a bounded time -
   reporting requests/s and p50/p95/p99 client-side latency, and the serving overhead ratio
   (server p50 at concurrency 1 / in-process p50);
3. where a served call's time goes, in process, split into MLflow's steps for one headline:
   JSON parsing, building the DataFrame, schema enforcement and the pyfunc wrapper, our model's
   ``predict``, and writing the JSON answer; what is left of the served p50 is HTTP (uvicorn,
   FastAPI) and the client.

``--workers 1,2`` starts one server per setting; with more than one worker each gets one
intra-op thread (``QUANTGATE_THREADS=1``), as ``quantgate serve`` does.

The load generator shares the machine's cores with the server, so on a small machine the
high-concurrency figures are a floor, not a ceiling. Compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators.metrics import percentiles_ms  # noqa: E402
from quantgate.data import load_dataset  # noqa: E402
from quantgate.tracking import configure_tracking  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_process(model_uri: str, texts: list[str], runs: int) -> dict[str, float]:
    import mlflow
    import pandas as pd

    model = mlflow.pyfunc.load_model(model_uri)
    frames = [pd.DataFrame({"text": [t]}) for t in texts]
    for f in frames[:20]:
        model.predict(f)
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        model.predict(frames[i % len(frames)])
        times.append(time.perf_counter() - t0)
    return percentiles_ms(times)


def overhead_split(model_uri: str, texts: list[str], runs: int) -> dict[str, float]:
    """p50 (ms) of each step MLflow's scoring app runs for one headline, measured in process."""
    import json

    import mlflow
    from mlflow.pyfunc import scoring_server as ss

    model = mlflow.pyfunc.load_model(model_uri)
    schema = model.metadata.get_input_schema()
    inner = model.unwrap_python_model()
    bodies = [json.dumps({"dataframe_records": [{"text": t}]}) for t in texts]
    steps = {
        "json": lambda b: json.loads(b),
        "json+dataframe": lambda b: ss._parse_json_data(b, model.metadata, schema),
        "pyfunc predict (schema + model)": lambda b: model.predict(ss._parse_json_data(b, model.metadata, schema).data),
        "model predict only": lambda b: inner.predict(None, ss._parse_json_data(b, model.metadata, schema).data),
        "whole invocation": lambda b: ss.invocations(b, "application/json", model, schema),
    }
    out = {}
    for name, step in steps.items():
        for b in bodies[:20]:
            step(b)
        times = []
        for i in range(runs):
            t0 = time.perf_counter()
            step(bodies[i % len(bodies)])
            times.append(time.perf_counter() - t0)
        out[name] = percentiles_ms(times)["p50"]
    return out


def start(kind: str, model_uri: str, port: int, log_path: Path, workers: int = 1) -> subprocess.Popen:
    env = dict(os.environ)
    if workers > 1:
        env["QUANTGATE_THREADS"] = "1"  # workers share the cores: one intra-op thread each
    if kind == "mlflow":
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            model_uri,
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "flows.cli",
            "serve",
            "--model",
            model_uri,
            "--port",
            str(port),
            "--workers",
            str(workers),
        ]
    proc = subprocess.Popen(
        cmd, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent, env=env
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; see {log_path}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                return proc
        except requests.ConnectionError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"server did not come up in 180 s; see {log_path}")


def load(url: str, texts: list[str], concurrency: int, seconds: float) -> dict[str, float]:
    """Closed loop: each thread posts, waits for the answer, posts again, until time is up."""
    stop_at = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency

    def worker(i: int) -> None:
        session = requests.Session()
        n = i
        while time.monotonic() < stop_at:
            body = {"dataframe_records": [{"text": texts[n % len(texts)]}]}
            t0 = time.perf_counter()
            r = session.post(url, json=body, timeout=60)
            latencies[i].append(time.perf_counter() - t0)
            errors[i] += r.status_code != 200
            n += concurrency

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    flat = [x for lat in latencies for x in lat]
    return {"requests": len(flat), "errors": sum(errors), "rps": len(flat) / elapsed, **percentiles_ms(flat)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models:/news-classifier@staging")
    parser.add_argument("--server", choices=["mlflow", "quantgate"], default="mlflow")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated levels")
    parser.add_argument("--seconds", type=float, default=10.0, help="load time per level (bounded)")
    parser.add_argument("--in-process-runs", type=int, default=200)
    parser.add_argument("--workers", default="1", help="comma-separated worker counts, e.g. 1,2 (one server each)")
    args = parser.parse_args()
    if not 0 < args.seconds <= 120:
        parser.error("--seconds must be in (0, 120]")
    levels = [int(c) for c in args.concurrency.split(",")]
    if any(not 1 <= c <= 64 for c in levels):
        parser.error("concurrency levels must be 1..64")

    os.environ["MLFLOW_TRACKING_URI"] = configure_tracking(experiment=None)  # the server needs it too
    texts = load_dataset("news9", ("train", "test"))["test"].texts
    print(f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; model {args.model}")

    raw = in_process(args.model, texts, args.in_process_runs)
    print(f"in-process predict (batch 1): p50 {raw['p50']:.2f} ms  p95 {raw['p95']:.2f} ms  p99 {raw['p99']:.2f} ms")

    split = overhead_split(args.model, texts, args.in_process_runs)
    print(
        "in-process p50 of MLflow's scoring steps for one headline (ms): "
        + ", ".join(f"{k} {v:.2f}" for k, v in split.items())
    )

    for workers in [int(w) for w in args.workers.split(",")]:
        port = free_port()
        log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"quantgate-serving-bench-{port}.log"
        proc = start(args.server, args.model, port, log_path, workers)
        url = f"http://127.0.0.1:{port}/invocations"
        try:
            load(url, texts, 1, min(2.0, args.seconds))  # warm-up
            threads = " (QUANTGATE_THREADS=1)" if workers > 1 else ""
            print(
                f"\n{args.server} server, {workers} worker(s){threads}, "
                f"{args.seconds:g} s per level, one headline per request"
            )
            print(
                f"{'concurrency':>11} {'requests':>9} {'errors':>6} {'req/s':>8} "
                f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'p50/in-proc':>11}"
            )
            for c in levels:
                r = load(url, texts, c, args.seconds)
                print(
                    f"{c:>11} {r['requests']:>9} {r['errors']:>6} {r['rps']:>8.1f} {r['p50']:>8.2f} {r['p95']:>8.2f} "
                    f"{r['p99']:>8.2f} {r['p50'] / raw['p50']:>10.1f}x"
                )
                if c == 1:
                    print(
                        f"{'':>11} served p50 - whole in-process invocation "
                        f"= {r['p50'] - split['whole invocation']:.2f} ms "
                        "(HTTP, uvicorn/FastAPI and the client)"
                    )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
