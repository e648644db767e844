"""The TensorRT backend's Q/DQ graph checks on hand-made ONNX graphs: an asymmetric INT8 graph is
refused, and readers other than the weight MatMuls get the float tensor back."""

from __future__ import annotations

import numpy as np
import pytest

from quantgate.backends import tensorrt
from quantgate.trt_shapes import TrtError


def test_an_asymmetric_qdq_graph_is_refused(tmp_path):
    from onnx import TensorProto, helper, numpy_helper, save

    scale = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "s")
    zp = numpy_helper.from_array(np.array(3, dtype=np.uint8), "zp")
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q0"),
            helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq0"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        initializer=[scale, zp],
    )
    save(helper.make_model(graph), str(tmp_path / "asym.onnx"))
    with pytest.raises(TrtError, match="TensorRT needs symmetric INT8"):
        tensorrt.check_trt_qdq(tmp_path / "asym.onnx")


def test_readers_other_than_the_matmuls_get_the_float_tensor_back():
    from onnx import TensorProto, helper, numpy_helper

    s = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "s")
    zp = numpy_helper.from_array(np.array(0, dtype=np.int8), "zp")
    w = numpy_helper.from_array(np.ones((2, 2), dtype=np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="qx"),
            helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dqx"),
            helper.make_node("MatMul", ["xd", "w"], ["m"], name="mm"),
            helper.make_node("Add", ["m", "xd"], ["r"], name="residual"),  # reads x, not its INT8 copy
            helper.make_node("QuantizeLinear", ["r", "s", "zp"], ["rq"], name="qr"),
            helper.make_node("DequantizeLinear", ["rq", "s", "zp"], ["rd"], name="dqr"),
            helper.make_node("Relu", ["rd"], ["y"], name="only_reader"),
        ],  # no MatMul: pair dropped
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        initializer=[s, zp, w],
    )
    model = helper.make_model(graph)
    assert tensorrt.float_readers(model) == 2
    nodes = {n.name: n for n in model.graph.node}
    assert list(nodes["residual"].input) == ["m", "x"] and list(nodes["mm"].input) == ["xd", "w"]
    assert list(nodes["only_reader"].input) == ["r"] and not {"qr", "dqr"} & set(nodes)
