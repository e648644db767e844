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

from flows.quantise import alias_command

cli = alias_command(
    "quantise_onnx",
    "onnxruntime",
    __doc__,
    preset_help="CPU family the INT8 number formats suit; auto reads the host's CPU flags.",
    set_example="onnx-int8-static.calibration_method=Percentile",
)


if __name__ == "__main__":
    from flows.errors import run

    run(cli)
