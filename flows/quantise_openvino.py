"""quantise_openvino: OpenVINO variants of a registered FP32 version: openvino-fp32 (the ONNX
export read by OpenVINO) and openvino-int8 (NNCF post-training INT8, calibrated on the
training data), one registered version each (why OpenVINO: :mod:`quantgate.backends.openvino`).

Reads: ``--source`` (a registered FP32 version; default the newest ``variant=fp32``) and
``--recipe`` (one variant or ``all``). Hands on: per recipe, a version tagged ``variant``,
``runtime=openvino``, ``parent_version``, ``recipe`` and ``recipe_sha256``, whose artifact holds
``model.xml``/``model.bin`` (OpenVINO IR, label order in its ``rt_info``) and
``quant_config.json``, and the run tag ``quantgate.version.<variant>``. A version built before
from the same recipe, parent, code, libraries and calibration data is reused.

A thin alias of ``quantgate quantise --runtime openvino`` (see :mod:`flows.quantise`), kept as
the MLproject entry point ``quantise_openvino`` and the command ``quantgate quantise-openvino``.
"""

from __future__ import annotations

import click

from flows.quantise import LATEST, run_step
from quantgate.recipes import OPENVINO_VARIANTS, PRESET_CHOICES
from quantgate.tracking import DEFAULT_MODEL_NAME


@click.command("quantise_openvino", help=__doc__)
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
    type=click.Choice(["all", *OPENVINO_VARIANTS]),
    default="all",
    show_default=True,
    help="Which variant to build.",
)
@click.option(
    "--preset",
    type=click.Choice(PRESET_CHOICES),
    default="auto",
    show_default=True,
    help="CPU family (recorded; OpenVINO picks its kernels itself).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="VARIANT.FIELD=VALUE",
    help="Override one recipe field, e.g. openvino-int8.accuracy_control=true (repeatable).",
)
def cli(source, model_name, recipe_choice, preset, overrides):
    run_step(
        "quantise_openvino",
        "openvino",
        source=source,
        model_name=model_name,
        recipe_choice=recipe_choice,
        preset=preset,
        overrides=overrides,
    )


if __name__ == "__main__":
    from flows.errors import run

    run(cli)
