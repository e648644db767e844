"""The `quantgate` command line: one sub-command per pipeline step."""

from __future__ import annotations

import os

import click

from flows import (
    attest,
    compare,
    evaluate,
    main,
    promote,
    quantise,
    quantise_onnx,
    quantise_openvino,
    quantise_torch,
    quantise_trt,
    score,
    train,
)
from flows import serve as serve_mod
from flows.errors import DEBUG_ENV, GuardedGroup
from flows.hooks import hooks
from flows.process import set_up_process
from quantgate.evidence_signing import plain_mlflow_command
from quantgate.tracking import DEFAULT_MODEL_NAME, DEFAULT_TRACKING_URI

SAFE_PATH_ENV = "PYTHONSAFEPATH"  # Python 3.11+: no script folder or working folder first on sys.path

EXAMPLES = {
    "train": "quantgate train --max-epochs 5",
    "quantise": "quantgate quantise --runtime onnxruntime --source 1 --recipe onnx-int8-dynamic --check-size 0",
    "quantise-onnx": "quantgate quantise-onnx --source 1 --recipe all",
    "quantise-torch": "quantgate quantise-torch --source 1",
    "quantise-openvino": "quantgate quantise-openvino --source 1",
    "quantise-trt": "quantgate quantise-trt --source 1 --precision all",
    "attest": "quantgate attest --version 1",
    "evaluate": "quantgate evaluate --version 2",
    "promote": "quantgate promote --version 2 --thresholds registry_hooks/thresholds.yaml",
    "main": "quantgate main",
    "compare": "quantgate compare --name news-classifier",
    "hooks": "quantgate hooks serve --port 8765",
    "serve": "quantgate serve --port 5001",
    "score": "quantgate score --input 'headlines/*.parquet' --output scores.parquet",
}


@click.group(
    cls=GuardedGroup,
    help="quantgate: train, quantise, evaluate, gate and serve your text classifier (news9 by default) with MLflow.\n\n"
    f"Runs and models go to $MLFLOW_TRACKING_URI (default {DEFAULT_TRACKING_URI}), runs into the "
    "experiment named after the registered model unless --experiment says otherwise.",
    # "\b" keeps click from re-wrapping the example lines
    epilog="Examples:\n\n\b\n" + "\n".join(f"  {ex}" for ex in EXAMPLES.values()),
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
@click.option("--debug", is_flag=True, help=f"Show the full traceback of an error (also: {DEBUG_ENV}=1).")
@click.option(
    "--experiment",
    default=None,
    metavar="NAME",
    help=(
        "MLflow experiment for every step's runs (also: $MLFLOW_EXPERIMENT_NAME); default: the registered model's name."
    ),
)
def cli(debug, experiment):
    # Every Python this command starts (uvicorn's and Spark's workers, the webhook receiver's
    # steps, `mlflow run`'s) imports only installed code, never from its working folder: with
    # the default store that is the store's folder, which every store writer can write (the
    # thirty-fourth adversarial run planted flows/, multiprocessing/ and pyspark/ packages there,
    # and the key holder's receiver, server and scorer ran them and read the key).
    os.environ[SAFE_PATH_ENV] = "1"
    set_up_process()
    if debug:
        os.environ[DEBUG_ENV] = "1"  # read by the error guard, and inherited by the steps it starts
    if experiment:
        os.environ["MLFLOW_EXPERIMENT_NAME"] = experiment  # read by configure_tracking, inherited by `main`'s steps


def _add(command: click.Command, name: str, short: str) -> None:
    command.name = name
    command.short_help = short
    command.epilog = f"Example:\n\n\b\n  {EXAMPLES[name]}"
    cli.add_command(command)


_add(train.cli, "train", "LoRA fine-tune the BERT base model; register the FP32 version.")
_add(quantise.cli, "quantise", "Variants of the FP32 version with one runtime's backend, one registered version each.")
_add(
    quantise_onnx.cli, "quantise-onnx", "ONNX variants (fp32, int8 dynamic/static, fp16), one registered version each."
)
_add(quantise_torch.cli, "quantise-torch", "PyTorch dynamic INT8 as TorchScript (no pickle), registered as a version.")
_add(quantise_openvino.cli, "quantise-openvino", "OpenVINO FP32 and NNCF INT8 variants, one registered version each.")
_add(quantise_trt.cli, "quantise-trt", "TensorRT FP16/INT8 engines (NVIDIA GPU only), registered as versions.")
_add(attest.cli, "attest", "With the evidence key: vouch that an FP32 version is the model you trained.")
_add(evaluate.cli, "evaluate", "Measure F1, size, latency and parity of a version; record them on it.")
_add(promote.cli, "promote", "Gate a version against thresholds; set @staging only if it passes.")
_add(main.cli, "main", "Run every step in order, reusing finished ones.")
_add(compare.cli, "compare", "Table of all versions and a latency-vs-F1 Pareto plot.")
_add(hooks, "hooks", "Registry webhooks: new variants get evaluated and gated automatically.")
_add(score.cli, "score", "Batch-score Parquet/CSV with a version (default @staging) on Spark.")


@cli.command(
    "serve",
    epilog=f"Example:\n\n\b\n  {EXAMPLES['serve']}",
    short_help="Serve a version (default @staging) on 127.0.0.1 with MLflow's scoring server.",
)
@click.option("--model", "model_ref", default=f"models:/{DEFAULT_MODEL_NAME}@staging", show_default=True)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to bind; 0.0.0.0 exposes the model to the network.",
)
@click.option("--port", default=5001, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--workers",
    default=os.cpu_count() or 1,
    show_default="one per core",
    type=int,
    help="Server processes; each loads the model.",
)
@click.option(
    "--threads",
    default=None,
    type=int,
    help=(
        "Inference threads per worker [default: 1 with several "
        "workers, else the runtime's choice]; sets QUANTGATE_THREADS."
    ),
)
@click.option(
    "--max-body-mb",
    default=serve_mod.DEFAULT_MAX_BODY_MB,
    show_default=True,
    type=float,
    help="Refuse larger requests with 413.",
)
@click.option("--max-batch", default=256, show_default=True, type=int, help="Refuse requests with more rows with 400.")
def serve(model_ref, host, port, workers, threads, max_body_mb, max_batch):
    """Serve a registered version over HTTP: MLflow's scoring server (same routes and payloads
    as `mlflow models serve`) plus a request-size limit and a guard against JSON that MLflow
    would answer with a 500. Model files are verified against their SHA-256 manifest at load."""
    if workers < 1 or max_body_mb <= 0 or max_batch < 1 or (threads is not None and threads < 0):
        raise click.BadParameter("--workers, --max-body-mb and --max-batch must be positive, --threads >= 0")
    os.environ["QUANTGATE_MAX_BATCH"] = str(max_batch)
    # Workers share the cores: one intra-op thread each beat fewer workers with more threads (README).
    threads = threads if threads is not None else (1 if workers > 1 else None)
    if threads is not None:
        os.environ["QUANTGATE_THREADS"] = str(threads)
    per_worker = f", {threads} thread(s) each" if threads is not None else ""
    plain = f"models serve -m '{model_ref}' --env-manager local --host {host} --port {port} --workers {workers}"
    threads_env = {"QUANTGATE_THREADS": str(threads)} if threads is not None else None
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    banner = (
        f"serving {model_ref} on http://{host}:{port} ({workers} worker(s){per_worker}); try:\n"
        f"  curl -s http://{host}:{port}/invocations -H 'Content-Type: application/json' "
        '-d \'{"dataframe_records": [{"text": "Ransomware gang hits city council"}]}\'\n'
        f"(plain MLflow equivalent: {plain_mlflow_command(plain, tracking_uri=uri, env=threads_env)})"
    )
    serve_mod.run(model_ref, host, port, workers, max_body_mb, banner=banner)


if __name__ == "__main__":
    cli()
