"""Small ONNX models built in code, shared by the tests.

Each factory returns an ``onnx.ModelProto`` (opset 17, IR 8) and sketches its graph.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR = 8


def _model(nodes, inputs, outputs, inits=(), name="g", opset=OPSET, extra_opsets=()):
    graph = helper.make_graph(nodes, name, inputs, outputs, list(inits))
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    model = helper.make_model(graph, opset_imports=imports, producer_name="trtlab-tests")
    model.ir_version = IR
    return model


def vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def conv_relu(batch="N", seed=0):
    """x[N,3,8,8] -> Conv(w,b) -> Relu -> y[N,4,8,8]"""
    rng = np.random.default_rng(seed)
    w = const("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    b = const("b", rng.standard_normal(4).astype(np.float32))
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    return _model(nodes, [vi("x", [batch, 3, 8, 8])], [vi("y", [batch, 4, 8, 8])], [w, b])


def mlp(seed=0):
    """x[2,16] -> MatMul(w1) -> Add(b1) -> Relu -> Gemm(w2,b2) -> Softmax -> y[2,10]"""
    rng = np.random.default_rng(seed)
    inits = [
        const("w1", rng.standard_normal((16, 32)).astype(np.float32)),
        const("b1", rng.standard_normal(32).astype(np.float32)),
        const("w2", rng.standard_normal((32, 10)).astype(np.float32)),
        const("b2", rng.standard_normal(10).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="mm1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="add1"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu1"),
        helper.make_node("Gemm", ["h2", "w2", "b2"], ["z"], name="gemm2"),
        helper.make_node("Softmax", ["z"], ["y"], name="softmax", axis=-1),
    ]
    return _model(nodes, [vi("x", [2, 16])], [vi("y", [2, 10])], inits)


def constant_mlp(seed=0, width=256, batch=2):
    """Weights in a Constant node (as Paddle exports them) and in initializers:

        x[batch,W] -> MatMul(k1: Constant) -> Add(b1: initializer) -> Relu -> MatMul(w2: initializer) -> y[batch,W]

    ``batch`` may be a symbolic name (a dynamic dim).
    """
    rng = np.random.default_rng(seed)
    k1 = numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32), "k1_value")
    nodes = [helper.make_node("Constant", [], ["k1"], name="k1_const", value=k1),
             helper.make_node("MatMul", ["x", "k1"], ["h0"], name="mm1"),
             helper.make_node("Add", ["h0", "b1"], ["h1"], name="add1"),
             helper.make_node("Relu", ["h1"], ["h2"], name="relu1"),
             helper.make_node("MatMul", ["h2", "w2"], ["y"], name="mm2")]
    inits = [numpy_helper.from_array(rng.standard_normal(width).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32), "w2")]
    graph = helper.make_graph(nodes, "constant_mlp", [helper.make_tensor_value_info("x", 1, [batch, width])],
                              [helper.make_tensor_value_info("y", 1, [batch, width])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def with_unsupported(seed=0):
    """x -> Relu -> NonZero (rejected by TensorRT-RTX) -> Cast -> y ; Relu -> Sigmoid -> z

          x
          |
        Relu ----------.
          |            |
       NonZero      Sigmoid -> z
          |
        Cast -> y
    """
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("NonZero", ["r"], ["nz"], name="nonzero"),
        helper.make_node("Cast", ["nz"], ["y"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Sigmoid", ["r"], ["z"], name="sigmoid"),
    ]
    return _model(nodes, [vi("x", [2, 3])], [vi("y", [2, None]), vi("z", [2, 3])])


def duplicate_names():
    """x -> Relu("n") -> Relu("n") -> Relu("") -> y  (duplicate and empty names)"""
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="n"),
        helper.make_node("Relu", ["a"], ["b"], name="n"),
        helper.make_node("Relu", ["b"], ["y"], name=""),
    ]
    return _model(nodes, [vi("x", [4])], [vi("y", [4])])


def dangling_input():
    """x -> Add(x, ghost) -> y  where 'ghost' is produced by nothing"""
    nodes = [helper.make_node("Add", ["x", "ghost"], ["y"], name="add")]
    return _model(nodes, [vi("x", [4])], [vi("y", [4])])


def cycle():
    """x -> Add(x, b) -> a -> Relu -> b  (a cycle a -> b -> a)"""
    nodes = [
        helper.make_node("Add", ["x", "b"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
    ]
    return _model(nodes, [vi("x", [4])], [vi("b", [4])])


def initializers_as_inputs():
    """IR-4 style: weight 'w' is both an initializer and a graph input.  x -> MatMul(w) -> y"""
    w = const("w", np.eye(4, dtype=np.float32))
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    return _model(nodes, [vi("x", [1, 4]), vi("w", [4, 4])], [vi("y", [1, 4])], [w])


def square_symbolic():
    """x["N", 3, "?", "?"] -> Relu -> y   (H and W share the symbolic name '?')"""
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    return _model(nodes, [vi("x", ["N", 3, "?", "?"])], [vi("y", ["N", 3, "?", "?"])])


def old_opset():
    """x -> Relu -> y at ai.onnx opset 6"""
    m = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x", [4])], [vi("y", [4])],
               opset=6)
    m.ir_version = 3
    return m
