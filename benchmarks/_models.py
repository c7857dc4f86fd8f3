"""Synthetic models the benchmarks share, made on the fly (never committed).

``chain_model(blocks)``
    Residual MLP blocks, 4 nodes each (``MatMul -> Add -> Relu -> Add``), small inline weights:
    ``chain_model(2500)`` is a 10k-node graph whose cost is in the graph, not in the weights.
``wide_model(branches)``, ``small_initializers_model(nodes)``, ``constants_model(blocks)``,
``subgraph_model(blocks)``
    About 10k nodes each, in other shapes: many parallel branches joined by one ``Sum``; a chain
    of element-wise ops each with its own tiny initializer; weights and reshape targets held by
    ``Constant`` nodes (shape tensors shape inference propagates); ``If`` nodes whose bodies
    read the enclosing graph. They keep a load benchmark from being tuned to one graph.
``big_weight_model(folder, gib)``
    A chain of square ``MatMul -> Add -> Relu`` layers whose float32 weights (``gib`` GiB in all)
    live in one external data file beside the model. TensorRT's ONNX parser accepts both.

Usage from a benchmark::

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _models import chain_model, big_weight_model, save
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def chain_model(blocks: int = 2500, width: int = 32, seed: int = 0) -> onnx.ModelProto:
    """``4 * blocks`` nodes: ``h = h + Relu(h @ W_i + b_i)`` repeated, inline weights."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    h = "x"
    for i in range(blocks):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        b = (rng.standard_normal(width) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [
            helper.make_node("MatMul", [h, f"W{i}"], [f"mm{i}"], name=f"mm{i}"),
            helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"pre{i}"], name=f"bias{i}"),
            helper.make_node("Relu", [f"pre{i}"], [f"act{i}"], name=f"relu{i}"),
            helper.make_node("Add", [h, f"act{i}"], [f"h{i}"], name=f"res{i}"),
        ]
        h = f"h{i}"
    graph = helper.make_graph(
        nodes, f"chain{blocks}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info(h, TensorProto.FLOAT, ["batch", width])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def _model(nodes, name, inputs, outputs, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def wide_model(branches: int = 3333, width: int = 16, seed: int = 0) -> onnx.ModelProto:
    """``3 * branches + 1`` nodes: ``Sum_i(Relu(x @ W_i) * s_i)``, every branch reading ``x``."""
    rng = np.random.default_rng(seed)
    nodes, inits, terms = [], [], []
    for i in range(branches):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"),
                  numpy_helper.from_array(np.float32(rng.uniform(0.5, 1.5)), f"s{i}")]
        nodes += [
            helper.make_node("MatMul", ["x", f"W{i}"], [f"mm{i}"], name=f"mm{i}"),
            helper.make_node("Relu", [f"mm{i}"], [f"act{i}"], name=f"relu{i}"),
            helper.make_node("Mul", [f"act{i}", f"s{i}"], [f"t{i}"], name=f"scale{i}"),
        ]
        terms.append(f"t{i}")
    nodes.append(helper.make_node("Sum", terms, ["y"], name="sum"))
    return _model(nodes, f"wide{branches}",
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])], inits)


def small_initializers_model(nodes: int = 10000, width: int = 8, seed: int = 0) -> onnx.ModelProto:
    """``nodes`` element-wise ops (``Add``, ``Mul``, ``Sub``, ``Max`` in turn), each with its own
    ``width``-float initializer: as many initializers as nodes, none of them large."""
    rng = np.random.default_rng(seed)
    ops = ("Add", "Mul", "Sub", "Max")
    graph_nodes, inits = [], []
    h = "x"
    for i in range(nodes):
        c = rng.uniform(0.9, 1.1, width).astype(np.float32)
        inits.append(numpy_helper.from_array(c, f"c{i}"))
        graph_nodes.append(helper.make_node(ops[i % 4], [h, f"c{i}"], [f"h{i}"], name=f"op{i}"))
        h = f"h{i}"
    return _model(graph_nodes, f"small_inits{nodes}",
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                  [helper.make_tensor_value_info(h, TensorProto.FLOAT, ["batch", width])], inits)


def constants_model(blocks: int = 2000, width: int = 16, seed: int = 0) -> onnx.ModelProto:
    """``5 * blocks`` nodes, no initializer: ``h = Relu(Reshape(h @ C_i, [-1, width]))`` with the
    weight ``C_i`` and the reshape target each a ``Constant`` node."""
    rng = np.random.default_rng(seed)
    nodes = []
    h = "x"
    for i in range(blocks):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        nodes += [
            helper.make_node("Constant", [], [f"C{i}"], name=f"const{i}",
                             value=numpy_helper.from_array(w, f"C{i}")),
            helper.make_node("MatMul", [h, f"C{i}"], [f"mm{i}"], name=f"mm{i}"),
            helper.make_node("Constant", [], [f"shape{i}"], name=f"shape_const{i}",
                             value=numpy_helper.from_array(np.array([-1, width], np.int64), f"shape{i}")),
            helper.make_node("Reshape", [f"mm{i}", f"shape{i}"], [f"r{i}"], name=f"reshape{i}"),
            helper.make_node("Relu", [f"r{i}"], [f"h{i}"], name=f"relu{i}"),
        ]
        h = f"h{i}"
    return _model(nodes, f"constants{blocks}",
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                  [helper.make_tensor_value_info(h, TensorProto.FLOAT, [None, width])])


def subgraph_model(blocks: int = 2500, width: int = 16, seed: int = 0) -> onnx.ModelProto:
    """``2 * blocks`` top-level nodes (``If`` then ``Relu``) and ``2 * blocks`` body nodes: each
    ``If`` adds (then) or subtracts (else) its own bias, read from the enclosing graph."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    h = "x"
    out_vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", width])
    for i in range(blocks):
        inits.append(numpy_helper.from_array(
            (rng.standard_normal(width) * 0.01).astype(np.float32), f"b{i}"))
        then = helper.make_graph([helper.make_node("Add", [h, f"b{i}"], [f"then{i}"], name=f"add{i}")],
                                 f"then{i}", [], [out_vi(f"then{i}")])
        other = helper.make_graph([helper.make_node("Sub", [h, f"b{i}"], [f"else{i}"], name=f"sub{i}")],
                                  f"else{i}", [], [out_vi(f"else{i}")])
        nodes += [
            helper.make_node("If", ["cond"], [f"if{i}"], name=f"if{i}", then_branch=then, else_branch=other),
            helper.make_node("Relu", [f"if{i}"], [f"h{i}"], name=f"relu{i}"),
        ]
        h = f"h{i}"
    return _model(nodes, f"subgraphs{blocks}",
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width]),
                   helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                  [helper.make_tensor_value_info(h, TensorProto.FLOAT, ["batch", width])], inits)


#: The graph makers beside :func:`chain_model`, by the name benchmarks print.
GRAPH_SHAPES = {
    "wide": wide_model,
    "small initializers": small_initializers_model,
    "Constant nodes": constants_model,
    "If bodies": subgraph_model,
}


def big_weight_layout(gib: float = 1.0, width: int = 4096) -> Tuple[int, int]:
    """``(layers, width)`` of :func:`big_weight_model`: float32 ``width x width`` matrices."""
    per_layer = width * width * 4
    return max(1, int(round(gib * (1 << 30) / per_layer))), width


def big_weight_model(folder: os.PathLike, gib: float = 1.0, width: int = 4096, seed: int = 0,
                     name: str = "big_weights") -> Path:
    """Write ``<folder>/<name>.onnx`` with ``gib`` GiB of float32 weights in ``<name>.data``.

    The weights are written layer by layer (never all in memory): ``layers`` MatMuls of
    ``width x width``, each followed by a bias ``Add`` and a ``Relu``. Values are small and
    seeded, so the model's outputs stay finite. Returns the model path (made once; reused when
    the data file already has the expected size).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layers, width = big_weight_layout(gib, width)
    path = folder / f"{name}.onnx"
    data_name = f"{name}.data"
    per_layer = width * width * 4
    total = layers * (per_layer + width * 4)
    data_path = folder / data_name
    if path.exists() and data_path.exists() and data_path.stat().st_size == total:
        return path
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    h = "x"
    offset = 0
    with open(data_path, "wb") as fh:
        for i in range(layers):
            for tname, shape in ((f"W{i}", (width, width)), (f"b{i}", (width,))):
                arr = (rng.standard_normal(shape, dtype=np.float32) * (0.5 / np.sqrt(width))).astype(np.float32)
                fh.write(arr.tobytes())
                t = TensorProto(name=tname, data_type=TensorProto.FLOAT, dims=list(shape))
                t.data_location = TensorProto.EXTERNAL
                for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(arr.nbytes))):
                    entry = t.external_data.add()
                    entry.key, entry.value = k, v
                offset += arr.nbytes
                inits.append(t)
            nodes += [
                helper.make_node("MatMul", [h, f"W{i}"], [f"mm{i}"], name=f"mm{i}"),
                helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"pre{i}"], name=f"bias{i}"),
                helper.make_node("Relu", [f"pre{i}"], [f"h{i}"], name=f"relu{i}"),
            ]
            h = f"h{i}"
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info(h, TensorProto.FLOAT, ["batch", width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    path.write_bytes(model.SerializeToString())
    return path


def save(model: onnx.ModelProto, path: os.PathLike) -> Path:
    """Write an inline-weight model (parent folders made)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path
