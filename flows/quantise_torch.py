"""quantise_torch: register a PyTorch dynamic INT8 variant of a registered FP32 version,
saved as TorchScript so that it loads without pickle (why: :mod:`quantgate.backends.torchscript`).

Reads: ``--source`` (a registered FP32 version; default the newest ``variant=fp32``) and
``--preset`` (the CPU family; picks the quantised kernel engine). Hands on: a version tagged
``variant=torch-int8-dynamic``, ``runtime=torchscript``, ``parent_version``, ``recipe`` and
``recipe_sha256``, with ``quant_config.json`` in its artifact, and the run tag
``quantgate.version.torch-int8-dynamic``. A version built before from the same recipe,
parent, code and libraries is reused.

A thin alias of ``quantgate quantise --runtime torchscript`` (see :mod:`flows.quantise`), kept as
the MLproject entry point ``quantise_torch`` and the command ``quantgate quantise-torch``.
"""

from __future__ import annotations

import click

from flows.quantise import LATEST, run_step
from quantgate.recipes import PRESET_CHOICES, TORCH_VARIANTS
from quantgate.tracking import DEFAULT_MODEL_NAME


@click.command("quantise_torch", help=__doc__)
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
    type=click.Choice(["all", *TORCH_VARIANTS]),
    default="all",
    show_default=True,
    help="Which variant to build.",
)
@click.option(
    "--preset",
    type=click.Choice(PRESET_CHOICES),
    default="auto",
    show_default=True,
    help="CPU family; picks the quantised kernel engine (x86 or qnnpack).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="VARIANT.FIELD=VALUE",
    help="Override one recipe field, e.g. torch-int8-dynamic.per_channel=false (repeatable).",
)
def cli(source, model_name, recipe_choice, preset, overrides):
    run_step(
        "quantise_torch",
        "torchscript",
        source=source,
        model_name=model_name,
        recipe_choice=recipe_choice,
        preset=preset,
        overrides=overrides,
    )


if __name__ == "__main__":
    from flows.errors import run

    run(cli)
