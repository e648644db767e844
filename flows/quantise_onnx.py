"""quantise_onnx: export a registered FP32 version to ONNX and register one ONNX Runtime
variant per recipe: onnx-fp32, onnx-int8-dynamic, onnx-int8-static, onnx-fp16.

Reads: ``--source`` (a registered FP32 version: number, ``name@alias`` or ``models:/`` URI;
default the newest ``variant=fp32`` version), ``--recipe`` (one variant or ``all``) and
``--preset`` (the CPU family the INT8 formats are chosen for; ``auto`` reads the host).
Hands on: per recipe, a version tagged ``variant``, ``parent_version``, ``recipe``,
``recipe_sha256`` and ``preset``, with ``quant_config.json`` in its artifact, and the run
tag ``quantgate.version.<variant>``. A version built before from the same recipe, parent,
code and libraries is reused, not registered again.

A thin alias of ``quantgate quantise --runtime onnxruntime`` (see :mod:`flows.quantise`), kept as
the MLproject entry point ``quantise_onnx`` and the command ``quantgate quantise-onnx``.
"""

from __future__ import annotations

import click

from flows.quantise import LATEST, run_step
from quantgate.recipes import ONNX_VARIANTS, PRESET_CHOICES
from quantgate.tracking import DEFAULT_MODEL_NAME


@click.command("quantise_onnx", help=__doc__)
@click.option(
    "--source",
    default=LATEST,
    show_default=True,
    help=f"FP32 version to quantise: 3, name@alias, models:/… or {LATEST} for the newest variant=fp32 version.",
)
@click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True)
@click.option(
    "--recipe",
    "recipe_choice",
    type=click.Choice(["all", *ONNX_VARIANTS]),
    default="all",
    show_default=True,
    help="Which variant to build.",
)
@click.option(
    "--preset",
    type=click.Choice(PRESET_CHOICES),
    default="auto",
    show_default=True,
    help="CPU family the INT8 number formats suit; auto reads the host's CPU flags.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="VARIANT.FIELD=VALUE",
    help="Override one recipe field, e.g. onnx-int8-static.calibration_method=Percentile (repeatable).",
)
def cli(source, model_name, recipe_choice, preset, overrides):
    run_step(
        "quantise_onnx",
        "onnxruntime",
        source=source,
        model_name=model_name,
        recipe_choice=recipe_choice,
        preset=preset,
        overrides=overrides,
    )


if __name__ == "__main__":
    from flows.errors import run

    run(cli)
