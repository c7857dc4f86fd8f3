"""Tensors whose rank no inference can tell never become segment boundaries."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

import factories as F
import trtlab


def if_with_rank_changing_branches():
    """cond, x[2,3] -> If(then: Identity(x) [rank 2], else: ReduceSum(x) [rank 0]) -> v -> Relu -> y

    The If output has no static rank, so it cannot be declared at a cut.
    """
    then_g = helper.make_graph([helper.make_node("Identity", ["x"], ["t"], name="then_id")], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    else_g = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["e"], name="else_sum", keepdims=0)],
                               "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [
        helper.make_node("If", ["cond"], ["v"], name="branch", then_branch=then_g, else_branch=else_g),
        helper.make_node("Relu", ["v"], ["y"], name="relu"),
    ]
    model = F._model(nodes, [F.vi("cond", [], TensorProto.BOOL), F.vi("x", [2, 3])], [])
    model.graph.output.add().name = "y"
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT
    return model


def test_unranked_cut_is_kept_in_fallback():
    m = trtlab.load(if_with_rank_changing_branches())
    assert m.tensor("v").shape is None
    part = trtlab.partition(m, support={"branch": (False, "control flow kept off"), "relu": True})
    dec = part.decisions
    row = dec[dec.subject == "relu"]
    assert list(row.kind) == ["unranked_boundary"] and "'v'" in row.reason.item()
    assert len(part.segments) == 1 and part.segments[0].backend == "fallback"
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    for cond in (True, False):
        feeds = {"cond": np.array(cond), "x": x}
        want = trtlab.backends.onnxruntime.session.run_onnx(m, feeds, validate=False)["y"]
        got = trtlab.run_segments(part, feeds)["y"]
        np.testing.assert_array_equal(got, want)
    assert len(part.boundaries()) == 0
