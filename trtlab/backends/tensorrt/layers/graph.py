"""The facts about an ONNX graph that layer mapping needs, read once from a ModelProto."""

from __future__ import annotations

import re
from functools import cached_property
from typing import Dict, List, Optional, Sequence, Set

import onnx

__all__ = ["OnnxFacts", "op_from_name"]

_OP_PLAIN = re.compile(r"^([A-Z][A-Za-z0-9]*)_{1,2}\d+$")
_OP_PATH = re.compile(r"/([A-Za-z][A-Za-z0-9]*)(?:_{1,2}\d+)?$")
#: TensorFlow op names (tf2onnx keeps them in node names) -> the ONNX op they become.
TF_OPS = {"Conv2D": "Conv", "DepthwiseConv2dNative": "Conv", "Conv2DBackpropInput":
          "ConvTranspose", "BiasAdd": "Add", "add": "Add", "AddV2": "Add", "mul": "Mul",
          "Mean": "ReduceMean", "Relu6": "Clip", "FusedBatchNormV3": "BatchNormalization",
          "FusedBatchNorm": "BatchNormalization", "MatMul": "MatMul", "MaxPool": "MaxPool",
          "AvgPool": "AveragePool", "ConcatV2": "Concat", "Sigmoid": "Sigmoid",
          "Softmax": "Softmax", "Pad": "Pad", "Relu": "Relu", "Reshape": "Reshape",
          "QuantLinearNode": "QuantizeLinear", "DequantLinearNode": "DequantizeLinear"}

#: Ops whose output is their input: the parser and the builder drop them.
ALIASING_OPS = {"Identity", "Dropout"}
#: Ops computed from shapes only; static shapes make them constants at build time.
SHAPE_OPS = {"Shape", "Size"}


def op_from_name(name: str) -> str:
    """Op type guessed from an exporter's node name, or ``"?"``.

    PyTorch (``Conv_9``, ``/layer1/Conv``) and tf2onnx names (``Conv__435``,
    ``resnet50/conv1_conv/Conv2D``: TensorFlow op names become the ONNX op they convert to).
    """
    m = _OP_PLAIN.match(name) or _OP_PATH.search(name)
    if not m:
        return "?"
    op = m.group(1)
    if op in TF_OPS:
        return TF_OPS[op]
    return op if op[0].isupper() else "?"


def _subgraph_nodes(node: onnx.NodeProto) -> List[str]:
    """Names of the nodes inside ``node``'s subgraph attributes (If/Loop/Scan), at any depth."""
    out: List[str] = []
    for attr in node.attribute:
        graphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
        for sub in graphs:
            for inner in sub.node:
                out.append(inner.name)
                out.extend(_subgraph_nodes(inner))
    return out


class OnnxFacts:
    """Node order, op types, producers, consumers and constants of a graph (top level)."""

    def __init__(self, proto: onnx.ModelProto, name: str = "model") -> None:
        self.name = name
        graph = proto.graph
        self.order: List[str] = [n.name for n in graph.node]
        self.position: Dict[str, int] = {n: i for i, n in enumerate(self.order)}
        self.op_type: Dict[str, str] = {n.name: n.op_type for n in graph.node}
        self.inputs: Dict[str, List[str]] = {n.name: [t for t in n.input if t] for n in graph.node}
        self.outputs: Dict[str, List[str]] = {n.name: [t for t in n.output if t]
                                              for n in graph.node}
        self.producer: Dict[str, str] = {t: n for n, outs in self.outputs.items() for t in outs}
        self.consumers: Dict[str, List[str]] = {}
        for n, ins in self.inputs.items():
            for t in ins:
                self.consumers.setdefault(t, []).append(n)
        self.initializers: Set[str] = {t.name for t in graph.initializer}
        self.graph_inputs: Set[str] = {t.name for t in graph.input}
        self.graph_outputs: Set[str] = {t.name for t in graph.output}
        self.nested: Dict[str, str] = {}
        for node in graph.node:
            for inner in _subgraph_nodes(node):
                self.nested.setdefault(inner, node.name)

    @cached_property
    def constant_nodes(self) -> Set[str]:
        """Nodes whose every input is constant (initializers, Constant outputs, or such nodes)."""
        const_tensors = set(self.initializers)
        out: Set[str] = set()
        for n in self.order:
            ins = self.inputs[n]
            if (not ins and self.op_type[n] == "Constant") or \
                    (ins and all(t in const_tensors for t in ins)):
                out.add(n)
                const_tensors.update(self.outputs[n])
        return out

    def node_of(self, name: str) -> Optional[str]:
        """The node called ``name``, or the node producing tensor ``name`` (``None`` if neither)."""
        if name in self.position:
            return name
        return self.producer.get(name)

    def top_level(self, name: str, enclosing: Sequence[str] = ()) -> Optional[str]:
        """The top-level node that is or encloses node ``name`` (``None`` when unknown)."""
        if name in self.position:
            return name
        if name in self.nested:
            return self.nested[name]
        for outer in enclosing:
            if outer in self.position:
                return outer
        return None
