"""What trtlab knows about ONNX operators, in one place.

Every step that asks "is this op heavy / trivial / a quantizer / a control-flow op" reads these
tables: pruning (``min_subgraph_size``, ``remove_no_mac_subgraphs``), node MAC counts
(:attr:`trtlab.model.Model.nodes`), INT8 weight quantization and the fusion view. Backend
support rules live with their backend (:mod:`trtlab.backends.tensorrt.ops`).
"""

from __future__ import annotations

from typing import FrozenSet

__all__ = ["COMPUTE_OPS", "MAC_FORMULA_OPS", "WEIGHTED_OPS", "TRIVIAL_OPS", "QDQ_OPS", "BODY_OPS", "is_standard",
           "ElemType"]

#: Ops with multiply-accumulate work; a backend region with none of them is "no-MAC".
COMPUTE_OPS: FrozenSet[str] = frozenset({
    "Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "Gemm", "MatMul", "MatMulInteger",
    "QLinearMatMul", "FusedMatMul", "Einsum", "LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention",
    "ReduceSum", "ReduceMean", "ReduceProd", "ReduceSumSquare", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp",
})

#: Ops whose multiply-accumulate count :class:`trtlab.model.Model` computes from shapes
#: (a subset of :data:`COMPUTE_OPS`; the others report no count rather than a guess).
MAC_FORMULA_OPS: FrozenSet[str] = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})

#: Ops whose weight input INT8 quantizes (per output channel where the layout allows).
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

#: Ops that do (almost) no arithmetic; they do not count towards ``min_subgraph_size``.
TRIVIAL_OPS: FrozenSet[str] = frozenset({
    "Identity", "Constant", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Shape", "Size", "Cast",
    "CastLike", "Dropout",
})

#: Explicit quantization ops; constant folding would fold their weights back to float.
QDQ_OPS: FrozenSet[str] = frozenset({"QuantizeLinear", "DequantizeLinear"})

#: Ops carrying subgraphs (bodies) that read tensors of the enclosing graph.
BODY_OPS: FrozenSet[str] = frozenset({"If", "Loop", "Scan", "SequenceMap"})



class ElemType:
    """ONNX tensor element types (``onnx.TensorProto.DataType``), whose values the ONNX spec fixes.

    Tables built when a module is imported use these instead of ``onnx.TensorProto``, so the
    import does not load ``onnx``; a test checks them against the installed ``onnx``.
    """

    UNDEFINED = 0
    FLOAT = 1
    UINT8 = 2
    INT8 = 3
    UINT16 = 4
    INT16 = 5
    INT32 = 6
    INT64 = 7
    STRING = 8
    BOOL = 9
    FLOAT16 = 10
    DOUBLE = 11
    UINT32 = 12
    UINT64 = 13
    COMPLEX64 = 14
    COMPLEX128 = 15
    BFLOAT16 = 16
    FLOAT8E4M3FN = 17
    FLOAT8E4M3FNUZ = 18
    FLOAT8E5M2 = 19
    FLOAT8E5M2FNUZ = 20
    UINT4 = 21
    INT4 = 22
    FLOAT4E2M1 = 23
    FLOAT8E8M0 = 24
    UINT2 = 25
    INT2 = 26

    #: ``TensorProto.DataLocation``: data kept in an external file.
    EXTERNAL = 1
    #: Element types packed below one byte per element.
    SUB_BYTE = frozenset({21, 22, 23, 25, 26})


assert MAC_FORMULA_OPS <= COMPUTE_OPS and set(WEIGHTED_OPS) <= COMPUTE_OPS


def is_standard(domain: str) -> bool:
    """True for the default ONNX operator domain."""
    return domain in ("", "ai.onnx")
