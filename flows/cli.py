"""The `quantgate` command line: one sub-command per pipeline step."""
from __future__ import annotations

import os
import shlex
import sys

import click

from flows import evaluate, main, quantise_onnx, train
from flows.tracking import DEFAULT_MODEL_NAME, DEFAULT_TRACKING_URI
from registry_hooks import promote

EXAMPLES = {
    "train": "quantgate train --max-epochs 5",
    "quantise-onnx": "quantgate quantise-onnx --source 1",
    "evaluate": "quantgate evaluate --version 2",
    "promote": "quantgate promote --version 2 --thresholds registry_hooks/thresholds.yaml",
    "main": "quantgate main",
    "serve": "quantgate serve --port 5001",
}


@click.group(
    help="quantgate: train, quantise, evaluate, gate and serve a 9-topic news classifier with MLflow.\n\n"
    f"Runs and models go to $MLFLOW_TRACKING_URI (default {DEFAULT_TRACKING_URI}).",
    # "\b" keeps click from re-wrapping the example lines
    epilog="Examples:\n\n\b\n" + "\n".join(f"  {ex}" for ex in EXAMPLES.values()),
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
def cli():
    pass


def _add(command: click.Command, name: str, short: str) -> None:
    command.name = name
    command.short_help = short
    command.epilog = f"Example:\n\n\b\n  {EXAMPLES[name]}"
    cli.add_command(command)


_add(train.cli, "train", "LoRA fine-tune the BERT base model; register the FP32 version.")
_add(quantise_onnx.cli, "quantise-onnx", "Export to ONNX and register a dynamic INT8 version.")
_add(evaluate.cli, "evaluate", "Measure F1, size, latency and parity of a version; record them on it.")
_add(promote.cli, "promote", "Gate a version against thresholds; set @staging only if it passes.")
_add(main.cli, "main", "Run every step in order, reusing finished ones.")


@cli.command("serve", epilog=f"Example:\n\n\b\n  {EXAMPLES['serve']}",
             short_help="Serve a version (default @staging) with `mlflow models serve` on 127.0.0.1.")
@click.option("--model", "model_ref", default=f"models:/{DEFAULT_MODEL_NAME}@staging", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind; 0.0.0.0 exposes the model to the network.")
@click.option("--port", default=5001, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int)
def serve(model_ref, host, port, workers):
    """Serve a registered version over HTTP with MLflow's scoring server (local environment)."""
    os.environ.setdefault("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_ref, "--env-manager", "local",
           "--host", host, "--port", str(port), "--workers", str(workers)]
    click.echo("try:\n  curl -s http://%s:%d/invocations -H 'Content-Type: application/json' "
               "-d '{\"dataframe_records\": [{\"text\": \"Ransomware gang hits city council\"}]}'" % (host, port))
    click.echo("$ " + shlex.join(cmd))
    os.execv(sys.executable, cmd)


if __name__ == "__main__":
    cli()
