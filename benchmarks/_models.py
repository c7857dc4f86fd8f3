"""Synthetic models the benchmarks share, made on the fly (never committed).

``chain_model(blocks)``
    Residual MLP blocks, 4 nodes each (``MatMul -> Add -> Relu -> Add``), small inline weights:
    ``chain_model(2500)`` is a 10k-node graph whose cost is in the graph, not in the weights.
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
