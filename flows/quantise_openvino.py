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

from flows.quantise import alias_command

cli = alias_command(
    "quantise_openvino",
    "openvino",
    __doc__,
    preset_help="CPU family (recorded; OpenVINO picks its kernels itself).",
    set_example="openvino-int8.accuracy_control=true",
)


if __name__ == "__main__":
    from flows.errors import run

    run(cli)
