"""Weights by reference: initializers kept in external data files, and segment models without copies.

A model's proto may keep initializers as references to external data files
(``data_location == EXTERNAL``, ``location`` relative to the model's folder). trtlab reads such
weights only where a step needs their values, as read-only memory maps of the file.

Segment models of a hybrid are *light*: an initializer the model keeps in external data stays a
reference to that file (ONNX Runtime reads it from there, like ``InferenceSession(path)``), and
an initializer (or ``Constant`` value) embedded in the model's proto is a stub without data
(name, type and shape),
filled from the model only where a full model is needed (a TensorRT build, an ONNX Runtime
session, :attr:`trtlab.runtime.HybridModel.segment_models`). So a hybrid holds one copy of the
weights: the model's.

Examples
--------
>>> weights = Weights.of(model)                                        # doctest: +SKIP
>>> light = trtlab.extract.segment_model(part, 0, weights="reference")  # no weight copies
>>> standalone = weights.full(light)                                   # every weight embedded
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from trtlab._lazy import lazy_import
from trtlab.errors import ExternalDataError
from trtlab.model import _all_tensors, _check_external, _tensor_nbytes, external_location, inline_external_data, is_external
from trtlab.model import tensor_value

np = lazy_import("numpy")
onnx = lazy_import("onnx")

log = logging.getLogger(__name__)

__all__ = ["Weights", "base_dir", "is_external", "external_info", "to_array", "stub", "light_constant", "has_external",
           "materialize", "same_as_file", "STUB_MIN_BYTES"]

#: Initializers smaller than this stay embedded in light segment models: ONNX Runtime and ONNX
#: shape inference read small constants (a Reshape's shape, a Clip's bounds) while loading a model.
STUB_MIN_BYTES = 1024


def base_dir(model: Any) -> Optional[Path]:
    """The folder a model's external data locations are relative to (``None``: not known)."""
    folder = getattr(model, "base_dir", None)
    if folder is not None:
        return Path(folder)
    path = getattr(model, "path", None)
    return Path(path).parent if path is not None else None


def external_info(tensor: onnx.TensorProto) -> Dict[str, str]:
    """The tensor's external data fields (``location``, ``offset``, ``length``, ...)."""
    return {e.key: e.value for e in tensor.external_data}


def has_external(proto: onnx.ModelProto) -> bool:
    """Whether any tensor of the model (bodies included) refers to external data."""
    return any(is_external(t) for t in _all_tensors(proto.graph))


def to_array(tensor: onnx.TensorProto, base: Optional[Path] = None) -> np.ndarray:
    """The tensor's value; external data checked (exists, big enough), then memory-mapped read-only."""
    if is_external(tensor):
        _check_external(tensor, base, f"Tensor {tensor.name!r}")
    return tensor_value(tensor, base)


def _external_file(tensor: onnx.TensorProto, base: Optional[Path]) -> Tuple[Path, int, Optional[int]]:
    """``(file, offset, length)`` of an external tensor, its file checked (exists, big enough), not read."""
    _check_external(tensor, base, f"Tensor {tensor.name!r}")
    return external_location(tensor, base)


def tensor_bytes(tensor: onnx.TensorProto, base: Optional[Path] = None) -> Any:
    """The raw little-endian bytes of a tensor with raw or external data (a memory map for external)."""
    if is_external(tensor):
        path, offset, length = _external_file(tensor, base)
        size = path.stat().st_size - offset if length is None else length
        return np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=(size,)) if size else b""
    return tensor.raw_data


def stub(tensor: onnx.TensorProto) -> onnx.TensorProto:
    """The tensor without its data: name, type, shape (an external reference stays a reference)."""
    out = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims)
    if tensor.HasField("segment"):
        out.segment.CopyFrom(tensor.segment)
    if is_external(tensor):
        out.data_location = onnx.TensorProto.EXTERNAL
        out.external_data.extend(tensor.external_data)
    return out


def _nbytes(tensor: onnx.TensorProto) -> int:
    """Bytes of the tensor's raw data (0 for strings, which have none)."""
    return _tensor_nbytes(tensor) or 0


def _big_value(node: onnx.NodeProto) -> Optional[onnx.AttributeProto]:
    """The ``value`` attribute of a ``Constant`` node holding at least :data:`STUB_MIN_BYTES`."""
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
        return None
    for attr in node.attribute:
        if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR and not is_external(attr.t) \
                and _nbytes(attr.t) >= STUB_MIN_BYTES:
            return attr
    return None


def light_constant(node: onnx.NodeProto) -> onnx.NodeProto:
    """``node`` itself, or for a ``Constant`` with a large value a copy whose value is a stub."""
    big = _big_value(node)
    if big is None:
        return node
    out = onnx.NodeProto(input=node.input, output=node.output, name=node.name, op_type=node.op_type,
                         domain=node.domain, doc_string=node.doc_string)
    for attr in node.attribute:
        if attr is big:
            out.attribute.add(name=attr.name, type=attr.type).t.CopyFrom(stub(attr.t))
        else:
            out.attribute.append(attr)
    return out


def _is_stub(tensor: onnx.TensorProto) -> bool:
    """A stub made by :meth:`Weights.light`: embedded location, no data at all, non-empty shape."""
    if is_external(tensor) or tensor.HasField("raw_data"):
        return False
    fields = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")
    return not any(len(getattr(tensor, f)) for f in fields) and _nbytes(tensor) > 0


def materialize(proto: onnx.ModelProto, base: Optional[Path]) -> onnx.ModelProto:
    """A copy of ``proto`` with every external tensor's data embedded (read from ``base``)."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return inline_external_data(out, base)


class Weights:
    """The initializers of a model, shared by the light segment models of its hybrid.

    Parameters
    ----------
    initializers
        Name -> ``onnx.TensorProto`` of the model (embedded data, or references to external data).
    base
        The folder external data locations are relative to.
    """

    def __init__(self, initializers: Mapping[str, onnx.TensorProto], base: Optional[Path] = None,
                 graph: Optional[onnx.GraphProto] = None) -> None:
        self.initializers = initializers
        self.base = base
        self._graph = graph
        self._constants: Optional[Dict[str, onnx.TensorProto]] = None

    @classmethod
    def of(cls, model: Any) -> "Weights":
        """The weights of a :class:`~trtlab.model.Model` (initializers and ``Constant`` values)."""
        return cls(model.initializers, base_dir(model), model.proto.graph)

    @property
    def constants(self) -> Dict[str, onnx.TensorProto]:
        """Output name -> value tensor of the model's ``Constant`` nodes (top level)."""
        if self._constants is None:
            self._constants = {}
            for node in (self._graph.node if self._graph is not None else ()):
                big = _big_value(node)
                if big is not None and node.output:
                    self._constants[node.output[0]] = big.t
        return self._constants

    def __repr__(self) -> str:
        return f"Weights({len(self.initializers)} initializers, base={str(self.base) if self.base else None!r})"

    def fill(self, proto: onnx.ModelProto, *, external: bool = False) -> onnx.ModelProto:
        """A copy of a light ``proto`` with the stubs' data copied from the model.

        With ``external=True`` external references are read into the copy too, so it is
        standalone; otherwise they stay references (ONNX Runtime reads them from :attr:`base`).
        """
        out = onnx.ModelProto()
        out.CopyFrom(proto)
        graph = out.graph
        for i, tensor in enumerate(graph.initializer):
            if not _is_stub(tensor):
                continue
            own = self.initializers.get(tensor.name)
            if own is None:
                raise ExternalDataError(f"Initializer {tensor.name!r} of a segment model has no data and the "
                                        "model has no initializer of that name to take it from.")
            graph.initializer[i].CopyFrom(own)
        for node in graph.node:
            if node.op_type != "Constant":
                continue
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR and _is_stub(attr.t):
                    own = self.constants.get(node.output[0]) if node.output else None
                    if own is None:
                        raise ExternalDataError(f"Constant node {node.name!r} of a segment model has no data and "
                                                "the model has no Constant making its output to take it from.")
                    attr.t.CopyFrom(own)
        return materialize(out, self.base) if external and has_external(out) else out

    def full(self, proto: onnx.ModelProto) -> onnx.ModelProto:
        """A standalone copy of a light ``proto``: every weight embedded."""
        return self.fill(proto, external=True)

    def holds_data(self, proto: onnx.ModelProto) -> List[str]:
        """Names of ``proto``'s initializers (and ``Constant`` outputs) of at least
        :data:`STUB_MIN_BYTES` whose data is embedded in it."""
        inits = [t.name for t in proto.graph.initializer
                 if not is_external(t) and not _is_stub(t) and _nbytes(t) >= STUB_MIN_BYTES]
        consts = [n.output[0] for n in proto.graph.node
                  if _big_value(n) is not None and not _is_stub(_big_value(n).t) and n.output]  # type: ignore[union-attr]
        return inits + consts


# ----------------------------------------------------------------------------------------------
# the model's own file
# ----------------------------------------------------------------------------------------------

def _strip_names(node: onnx.NodeProto) -> None:
    """Clear what does not change what a node computes (in place): names, docs, and the types
    shape inference writes into bodies (value_info, body input and output types)."""
    node.name = ""
    node.doc_string = ""
    for attr in node.attribute:
        for body in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else
                     attr.graphs if attr.type == onnx.AttributeProto.GRAPHS else []):
            del body.value_info[:]
            body.doc_string = ""
            for value in [*body.input, *body.output]:  # shape inference fills in body types
                value.ClearField("type")
            for inner in body.node:
                _strip_names(inner)


def _canonical_nodes(graph: onnx.GraphProto) -> List[bytes]:
    """Sorted digests of the nodes without their names (order-free; a digest per node, so the
    comparison does not hold a second serialized copy of nodes carrying weights)."""
    import hashlib

    out = []
    for node in graph.node:
        clone = onnx.NodeProto()
        clone.CopyFrom(node)
        _strip_names(clone)
        out.append(hashlib.sha256(clone.SerializeToString(deterministic=True)).digest())
    return sorted(out)


def _same_tensor(mine: onnx.TensorProto, mine_base: Optional[Path], theirs: onnx.TensorProto,
                 file_base: Path) -> bool:
    if mine.data_type != theirs.data_type or list(mine.dims) != list(theirs.dims):
        return False
    if is_external(mine) and is_external(theirs):
        same_place = mine_base is not None and Path(mine_base).resolve() == file_base.resolve()
        return same_place and external_info(mine) == external_info(theirs)
    if not is_external(mine) and not is_external(theirs):
        a, b = onnx.TensorProto(), onnx.TensorProto()
        a.CopyFrom(mine)
        b.CopyFrom(theirs)
        a.doc_string = b.doc_string = ""
        return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)
    try:
        return np.array_equal(np.asarray(to_array(mine, mine_base)).view(np.uint8).reshape(-1),
                              np.asarray(to_array(theirs, file_base)).view(np.uint8).reshape(-1))
    except (ExternalDataError, ValueError, TypeError):
        return False


def same_as_file(model: Any) -> str:
    """Why ONNX Runtime could not read ``model`` from its file instead (``""``: it computes the same).

    The file is read without its external data. Node names, node order, value_info and
    initializers listed as graph inputs may differ (they do not change what runs); opsets, local
    functions, the graph's inputs and outputs, every node with its attributes, and every
    initializer's type, shape and data (or external reference) must be the same.
    """
    path = getattr(model, "path", None)
    if path is None:
        return "the model was not loaded from a file"
    path = Path(path)
    if not path.is_file():
        return f"its file {path} no longer exists"
    try:
        theirs = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError ...
        return f"its file {path} could not be read again ({exc})"
    mine = model.proto
    if sorted((o.domain, o.version) for o in mine.opset_import) != \
            sorted((o.domain, o.version) for o in theirs.opset_import):
        return "its opsets differ from the file's"
    if [f.SerializeToString(deterministic=True) for f in mine.functions] != \
            [f.SerializeToString(deterministic=True) for f in theirs.functions]:
        return "its local functions differ from the file's"
    if [o.name for o in mine.graph.output] != [o.name for o in theirs.graph.output]:
        return "its graph outputs differ from the file's"
    file_inits = {t.name: t for t in theirs.graph.initializer}
    if [i.name for i in mine.graph.input if i.name not in model.initializers] != \
            [i.name for i in theirs.graph.input if i.name not in file_inits]:
        return "its graph inputs differ from the file's"
    for mine_in in mine.graph.input:
        if mine_in.name in model.initializers:
            continue
        theirs_in = next(i for i in theirs.graph.input if i.name == mine_in.name)
        if mine_in.type.WhichOneof("value") != theirs_in.type.WhichOneof("value") or \
                (mine_in.type.HasField("tensor_type") and
                 mine_in.type.tensor_type.elem_type != theirs_in.type.tensor_type.elem_type):
            return f"input {mine_in.name!r} has another type than in the file"
    if _canonical_nodes(mine.graph) != _canonical_nodes(theirs.graph):
        return "its nodes differ from the file's (changed after loading, or folded)"
    if set(model.initializers) != set(file_inits):
        return "its initializers differ from the file's"
    if [s.SerializeToString(deterministic=True) for s in mine.graph.sparse_initializer] != \
            [s.SerializeToString(deterministic=True) for s in theirs.graph.sparse_initializer]:
        return "its sparse initializers differ from the file's"
    mine_base = base_dir(model)
    for name, tensor in model.initializers.items():
        if not _same_tensor(tensor, mine_base, file_inits[name], path.parent):
            return f"initializer {name!r} differs from the file's"
    return ""

