"""The options every quantise command shares: the source version, the registered model, the CPU
preset and per-recipe overrides (``--set VARIANT.FIELD=VALUE``)."""

from __future__ import annotations

import click

from quantgate.recipes import PRESET_CHOICES
from quantgate.tracking import DEFAULT_MODEL_NAME

LATEST = "latest-fp32"
PRESET_HELP = "CPU family the INT8 number formats suit; auto reads the host's CPU flags."


def common_options(
    *, preset_help: str = PRESET_HELP, set_example: str = "onnx-int8-static.calibration_method=Percentile"
):
    """Decorator adding --source, --model-name, --preset and --set to a quantise command."""

    def add(func):
        func = click.option(
            "--set",
            "overrides",
            multiple=True,
            metavar="VARIANT.FIELD=VALUE",
            help=f"Override one recipe field, e.g. {set_example} (repeatable).",
        )(func)
        func = click.option(
            "--preset", type=click.Choice(PRESET_CHOICES), default="auto", show_default=True, help=preset_help
        )(func)
        func = click.option("--model-name", default=DEFAULT_MODEL_NAME, show_default=True)(func)
        return click.option(
            "--source",
            default=LATEST,
            show_default=True,
            help=f"FP32 version to quantise: 3, name@alias, models:/… or {LATEST} for the newest variant=fp32 version.",
        )(func)

    return add
