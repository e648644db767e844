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

from flows.quantise import alias_command

cli = alias_command(
    "quantise_torch",
    "torchscript",
    __doc__,
    preset_help="CPU family; picks the quantised kernel engine (x86 or qnnpack).",
    set_example="torch-int8-dynamic.per_channel=false",
)


if __name__ == "__main__":
    from flows.errors import run

    run(cli)
