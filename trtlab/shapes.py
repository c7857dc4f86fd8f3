"""Shapes past contrib ops, and the size of a tensor as an expression of its symbolic dims.

ONNX's shape inference stops at operators outside the ai.onnx domain (``com.microsoft::Gelu``,
``FusedMatMul`` ...): their outputs, and everything computed from them, have no shape, so the
bytes crossing a cut there are unknown. ONNX Runtime's symbolic shape inference
(``onnxruntime.tools.symbolic_shape_infer``) knows the com.microsoft operators and names every
data-dependent dimension; :func:`infer_contrib_shapes` fills the shapes ONNX left unknown with
its results.

A tensor's size is then ``itemsize x static dims x symbolic dims``: :func:`bytes_expression`
writes it with the symbols (``"1024·batch"``), :func:`tensor_bytes` evaluates it for given
dimension values, and :func:`dims_from_shapes` reads those values off concrete input shapes.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import onnx

from trtlab.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["infer_contrib_shapes", "bytes_expression", "tensor_bytes", "dims_from_shapes"]

_STANDARD_DOMAINS = ("", "ai.onnx")
Dim = Union[int, str, None]


def _known(vi: onnx.ValueInfoProto) -> Tuple[int, int, int]:
    """(rank known, static dims, named dims) of a value info: how complete its shape is."""
    t = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not t.HasField("shape") or not t.elem_type:
        return (0, 0, 0)
    static = sum(1 for d in t.shape.dim if d.HasField("dim_value"))
    named = sum(1 for d in t.shape.dim if d.HasField("dim_value") or d.dim_param)
    return (1, static, named)


def _has_contrib_ops(graph: onnx.GraphProto) -> bool:
    return any(n.domain not in _STANDARD_DOMAINS for n in graph.node)


def infer_contrib_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with the shapes ONNX inference could not give filled in by ONNX Runtime's
    symbolic shape inference, when the main graph has operators outside ai.onnx.

    Shapes ONNX already knows are kept; a tensor takes ONNX Runtime's shape only where it is
    more complete. The model's computation is not touched (only ``value_info`` changes).
    Failures are logged and leave ``proto`` as it was.
    """
    if not _has_contrib_ops(proto.graph):
        return proto
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except ImportError as exc:  # onnxruntime is a dependency; keep going without it anyway
        log.info("symbolic shape inference unavailable: %s", exc)
        return proto
    try:
        inferred = SymbolicShapeInference.infer_shapes(proto, auto_merge=True,
                                                       guess_output_rank=True)
    except Exception as exc:  # its failures are its own exception types and asserts
        log.info("ONNX Runtime symbolic shape inference stopped: %s", exc)
        return proto
    if inferred is None:
        return proto
    have: Dict[str, onnx.ValueInfoProto] = {}
    for vi in list(proto.graph.value_info) + list(proto.graph.output) + list(proto.graph.input):
        have[vi.name] = vi
    filled = 0
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        old = have.get(vi.name)
        if old is not None and _known(old) >= _known(vi):
            continue
        if old is not None:
            old.CopyFrom(vi)
        else:
            proto.graph.value_info.append(vi)
        filled += 1
    if filled:
        log.info("symbolic shape inference filled %d tensor shape(s) past contrib ops", filled)
    return proto


def _shape_and_itemsize(info: Any) -> Tuple[Optional[Tuple[Dim, ...]], Optional[int]]:
    dtype = info.dtype
    return info.shape, (None if dtype is None else int(dtype.itemsize))


def bytes_expression(info: Any) -> Optional[str]:
    """Size of a :class:`~trtlab.model.TensorInfo` as an expression of its symbolic dims.

    ``float32[batch, 64, 4]`` gives ``"1024·batch"``, a static tensor its byte count
    (``"1024"``), an unnamed dim ``"?"``; ``None`` when the rank or type is unknown.
    """
    shape, itemsize = _shape_and_itemsize(info)
    if shape is None or itemsize is None:
        return None
    const = itemsize
    symbols = []
    for d in shape:
        if isinstance(d, int):
            const *= d
        else:
            symbols.append(str(d) if d else "?")
    if const == 0:
        return "0"
    return "·".join([str(const)] + symbols)


def tensor_bytes(info: Any, dims: Mapping[str, int]) -> Optional[int]:
    """Bytes of a tensor with its symbolic dims taken from ``dims``; ``None`` when a dim is
    unnamed or not in ``dims`` (for example a data-dependent count) or the type is unknown."""
    shape, itemsize = _shape_and_itemsize(info)
    if shape is None or itemsize is None:
        return None
    n = itemsize
    for d in shape:
        if isinstance(d, int):
            n *= d
        elif d and d in dims:
            n *= int(dims[d])
        else:
            return None
    return int(n)


def dims_from_shapes(model: Any, shapes: Mapping[str, Sequence[int]]) -> Dict[str, int]:
    """Values of the model's symbolic input dims read off concrete input ``shapes``.

    ``{"input": (32, 3, 224, 224)}`` on an input declared ``[batch, 3, 224, 224]`` gives
    ``{"batch": 32}``. A symbol given two different values raises
    :class:`~trtlab.errors.InputError`.
    """
    out: Dict[str, int] = {}
    for t in model.inputs:
        if t.name not in shapes or t.shape is None:
            continue
        given = tuple(int(v) for v in shapes[t.name])
        if len(given) != len(t.shape):
            raise InputError(f"shape {given} for input {t.name!r} has rank {len(given)}; the "
                             f"model declares {list(t.shape)}. Give one value per axis.")
        for d, v in zip(t.shape, given):
            if isinstance(d, str) and d:
                if out.setdefault(d, v) != v:
                    raise InputError(f"symbolic dim {d!r} gets {out[d]} and {v} from the given "
                                     "shapes; inputs sharing a dim name need the same value.")
    return out
