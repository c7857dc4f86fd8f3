"""trtlab.shapes: shapes past com.microsoft ops and cut bytes as expressions of symbolic dims."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import DATA
from trtlab.errors import InputError
from trtlab.model import TensorInfo, load
from trtlab.partitioning.partitioner import partition
from trtlab.shapes import bytes_expression, dims_from_shapes, tensor_bytes
from trtlab.backends.tensorrt.support import check_support


def test_cuts_of_detection_postproc_are_known_past_contrib_ops():
    model = load(DATA / "detection_postproc.onnx")
    assert {n.domain for n in model.proto.graph.node} >= {"com.microsoft"}
    part = partition(model, support=check_support(model, source="rules"))
    cut = part.boundaries()
    assert len(cut) >= 5
    assert cut["bytes"].notna().all() and cut["bytes_expr"].notna().all()
    rows = cut.set_index("tensor")
    # Gelu (com.microsoft) keeps the shape of its input: float32[1, 64, 16].
    assert rows.loc["head/gelu.out", "shape"] == [1, 64, 16]
    assert rows.loc["head/gelu.out", "bytes_expr"] == "4096"
    # NonZero's output is [rank, count]: the rank is static, the count data-dependent.
    nz = rows.loc["candidates/nonzero.out"]
    assert nz["shape"][0] == 2 and isinstance(nz["shape"][1], str)
    assert nz["bytes_expr"] == f"16·{nz['shape'][1]}"


def test_contrib_shapes_do_not_change_what_the_model_computes():
    raw = onnx.load(str(DATA / "detection_postproc.onnx"))
    model = load(DATA / "detection_postproc.onnx")
    assert [(n.op_type, list(n.input), list(n.output)) for n in model.proto.graph.node] == \
        [(n.op_type, list(n.input), list(n.output)) for n in load(raw).proto.graph.node]


def dyn_model():
    #  x[batch, 8] -> Relu -> y[batch, 8]
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    graph = helper.make_graph([node], "dyn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])])
    return load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_bytes_expression_and_value_for_given_shapes():
    info = TensorInfo("t", ("N", 64, "S"), TensorProto.FLOAT)
    assert bytes_expression(info) == "256·N·S"
    assert tensor_bytes(info, {"N": 2, "S": 3}) == 4 * 2 * 64 * 3
    assert tensor_bytes(info, {"N": 2}) is None
    assert bytes_expression(TensorInfo("t", (2, 3), TensorProto.INT64)) == "48"
    assert bytes_expression(TensorInfo("t", None, TensorProto.FLOAT)) is None
    assert bytes_expression(TensorInfo("t", (None, 4), TensorProto.FLOAT)) == "16·?"

    model = dyn_model()
    assert dims_from_shapes(model, {"x": (32, 8)}) == {"batch": 32}
    with pytest.raises(InputError, match="rank"):
        dims_from_shapes(model, {"x": (32,)})


def test_boundaries_with_shapes():
    model = load(DATA / "digits_cnn.onnx")
    part = partition(model, exclude_ops=["MaxPool"])
    plain, sized = part.boundaries(), part.boundaries(shapes={"input": (32, 1, 8, 8)})
    assert list(plain["bytes_expr"]) == list(sized["bytes_expr"])
    for expr, one, many in zip(plain["bytes_expr"], plain["bytes"], sized["bytes"]):
        const, sym = expr.split("·")
        assert sym == "batch" and one == int(const) and many == 32 * int(const)
    assert np.all(sized["bytes"] > plain["bytes"])
