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
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from trtlab._lazy import lazy_import
from trtlab._wire import length_delimited, varint
from trtlab.errors import ExternalDataError
from trtlab.model import _all_tensors, _check_external, _tensor_nbytes, external_location, inline_external_data, is_external
from trtlab.model import _left_out, check_weight_files, constant_attr, constant_value_attr, left_note, refer_to_file, tensor_value

np = lazy_import("numpy")
onnx = lazy_import("onnx")

log = logging.getLogger(__name__)

__all__ = ["Weights", "base_dir", "is_external", "external_info", "to_array", "stub", "light_constant", "has_external",
           "materialize", "same_as_file", "ModelFile", "read_model_file", "leave_in_file", "STUB_MIN_BYTES"]

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
    return constant_value_attr(node, STUB_MIN_BYTES)


def _external_value(node: onnx.NodeProto) -> Optional[onnx.AttributeProto]:
    """The ``value`` attribute of a ``Constant`` node referring to external data."""
    attr = constant_attr(node)
    return attr if attr is not None and is_external(attr.t) else None


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
    files
        The identity of each file the external data is read from, as the model recorded it
        when it was loaded (:attr:`trtlab.model.Model.weight_files`): :meth:`check` compares
        them with the files as they are now.
    """

    def __init__(self, initializers: Mapping[str, onnx.TensorProto], base: Optional[Path] = None,
                 graph: Optional[onnx.GraphProto] = None, files: Optional[Mapping[Path, Any]] = None,
                 name: str = "model", source: Optional[Path] = None) -> None:
        self.initializers = initializers
        self.base = base
        self._graph = graph
        self._constants: Optional[Dict[str, onnx.TensorProto]] = None
        self.files = dict(files or {})
        self.name = name
        self.source = source

    @classmethod
    def of(cls, model: Any) -> "Weights":
        """The weights of a :class:`~trtlab.model.Model` (initializers and ``Constant`` values)."""
        return cls(model.initializers, base_dir(model), model.proto.graph, getattr(model, "weight_files", None),
                   str(getattr(model, "name", "model")), getattr(model, "path", None))

    def check(self) -> None:
        """Raise :class:`~trtlab.errors.ExternalDataError` when a file the weights are read from
        changed since the model was loaded (one ``stat`` per file)."""
        if self.files:
            check_weight_files(self.files, f"Model {self.name!r}", self.source)

    @property
    def constants(self) -> Dict[str, onnx.TensorProto]:
        """Output name -> value tensor of the model's ``Constant`` nodes (top level) holding at
        least :data:`STUB_MIN_BYTES`, or referring to external data."""
        if self._constants is None:
            self._constants = {}
            for node in (self._graph.node if self._graph is not None else ()):
                big = _big_value(node) or _external_value(node)
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
        self.check()
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
# the model's own file, read as a stream
# ----------------------------------------------------------------------------------------------

#: Bytes read at a time when tensors are compared with (or hashed from) a file.
_CHUNK = 1 << 20


class _Wire:
    """Fields of protobuf messages in a memory-mapped file, read by position.

    Only the bytes asked for are touched: payloads skipped over are never read into memory.
    """

    def __init__(self, buf: Any) -> None:
        self.buf = buf

    def read(self, start: int, end: int) -> bytes:
        return self.buf[start:end]

    def _varint(self, pos: int, end: int) -> Tuple[int, int]:
        buf = self.buf
        value = shift = 0
        for i in range(pos, min(pos + 10, end)):
            byte = buf[i]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value, i + 1
            shift += 7
        raise ValueError("a malformed varint")

    def fields(self, start: int, end: int) -> Iterator[Tuple[int, int, int, int, int]]:
        """``(number, wire type, field start, payload start, payload end)`` of each field in [start, end)."""
        pos = start
        while pos < end:
            key, body = self._varint(pos, end)
            number, wire = key >> 3, key & 7
            if wire == 0:
                _, stop = self._varint(body, end)
            elif wire == 1:
                stop = body + 8
            elif wire == 5:
                stop = body + 4
            elif wire == 2:
                size, body = self._varint(body, end)
                stop = body + size
            else:
                raise ValueError(f"wire type {wire} (groups) is not used by ONNX")
            if stop > end or number == 0:
                raise ValueError("a field runs past its message")
            yield number, wire, pos, body, stop
            pos = stop

    def uint(self, body: int, end: int) -> int:
        return self._varint(body, end)[0]


class ModelFile:
    """A model's ``.onnx`` file read as a stream, without its large weights.

    :attr:`skeleton` is the file's model in which every tensor of at least
    :data:`STUB_MIN_BYTES` of raw data (initializers, top-level ``Constant`` values) is a
    reference to its bytes in the file itself (external data whose location is the file);
    :attr:`spans` says where: ``("initializer", name)`` or ``("constant", output name)`` ->
    ``(offset, length)``. Reading it holds one tensor's bytes at most, not a second copy of the
    model.

    Raises ``OSError`` (the file cannot be read) or ``ValueError`` (not a protobuf message).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.spans: Dict[Tuple[str, str], Tuple[int, int]] = {}
        import mmap

        with open(self.path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if not size:
                raise ValueError("the file is empty")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                data = self._message(_Wire(buf), 0, size, self._model_field)
        self.skeleton = onnx.ModelProto.FromString(data)

    def __repr__(self) -> str:
        return f"ModelFile({str(self.path)!r}, {len(self.spans)} weights left in the file)"

    # -- rebuilding the messages without the payloads ------------------------------------------
    @staticmethod
    def _message(wire: _Wire, start: int, end: int, rebuild: Any) -> bytes:
        """The message in [start, end) with each field ``rebuild`` returns bytes for replaced by them."""
        out, copy_from = [], start
        for number, kind, field_start, body, stop in wire.fields(start, end):
            new = rebuild(wire, number, kind, body, stop)
            if new is None:
                continue
            if copy_from < field_start:
                out.append(wire.read(copy_from, field_start))
            out.append(new)
            copy_from = stop
        if copy_from < end:
            out.append(wire.read(copy_from, end))
        return b"".join(out)

    def _model_field(self, wire: _Wire, number: int, kind: int, body: int, stop: int) -> Optional[bytes]:
        if number != onnx.ModelProto.GRAPH_FIELD_NUMBER or kind != 2:
            return None
        return length_delimited(number, self._message(wire, body, stop, self._graph_field))

    def _graph_field(self, wire: _Wire, number: int, kind: int, body: int, stop: int) -> Optional[bytes]:
        if kind != 2 or stop - body < STUB_MIN_BYTES:
            return None
        if number == onnx.GraphProto.INITIALIZER_FIELD_NUMBER:
            return self._tensor(wire, body, stop, "initializer", number)
        if number == onnx.GraphProto.NODE_FIELD_NUMBER:
            return self._node(wire, body, stop, number)
        return None

    def _node(self, wire: _Wire, start: int, end: int, number: int) -> Optional[bytes]:
        """A ``Constant`` node whose ``value`` holds a large tensor, that tensor left in the file."""
        op_type, domain, output, value = "", "", None, None
        for num, kind, _, body, stop in wire.fields(start, end):
            if kind != 2:
                continue
            if num == onnx.NodeProto.OP_TYPE_FIELD_NUMBER:
                op_type = wire.read(body, stop).decode("utf-8", "replace")
            elif num == onnx.NodeProto.DOMAIN_FIELD_NUMBER:
                domain = wire.read(body, stop).decode("utf-8", "replace")
            elif num == onnx.NodeProto.OUTPUT_FIELD_NUMBER and output is None:
                output = wire.read(body, stop).decode("utf-8", "replace")
            elif num == onnx.NodeProto.ATTRIBUTE_FIELD_NUMBER and stop - body >= STUB_MIN_BYTES:
                value = (body, stop)
        if op_type != "Constant" or domain not in ("", "ai.onnx") or not output or value is None:
            return None
        key = output
        attr_number = onnx.NodeProto.ATTRIBUTE_FIELD_NUMBER

        def attribute(wire: _Wire, num: int, kind: int, body: int, stop: int) -> Optional[bytes]:
            if num == onnx.AttributeProto.T_FIELD_NUMBER and kind == 2:
                return self._tensor(wire, body, stop, "constant", num, key=key)
            return None

        def node_field(wire: _Wire, num: int, kind: int, body: int, stop: int) -> Optional[bytes]:
            if num != attr_number or kind != 2 or (body, stop) != value:
                return None
            name = next((wire.read(b, s) for n, k, _, b, s in wire.fields(body, stop)
                         if n == onnx.AttributeProto.NAME_FIELD_NUMBER and k == 2), b"")
            if name != b"value":
                return None
            return length_delimited(num, self._message(wire, body, stop, attribute))

        return length_delimited(number, self._message(wire, start, end, node_field))

    def _tensor(self, wire: _Wire, start: int, end: int, kind_name: str, number: int,
                key: Optional[str] = None) -> Optional[bytes]:
        """The tensor with its raw data replaced by a reference to where it is in this file."""
        name, raw, external = None, None, False
        for num, kind, _, body, stop in wire.fields(start, end):
            if num == onnx.TensorProto.NAME_FIELD_NUMBER and kind == 2:
                name = wire.read(body, stop).decode("utf-8", "replace")
            elif num == onnx.TensorProto.RAW_DATA_FIELD_NUMBER and kind == 2:
                raw = (body, stop)
            elif num == onnx.TensorProto.DATA_LOCATION_FIELD_NUMBER and kind == 0:
                external = wire.uint(body, stop) == onnx.TensorProto.EXTERNAL
        key = key if key is not None else name
        if external or raw is None or raw[1] - raw[0] < STUB_MIN_BYTES or key is None:
            return None
        self.spans[(kind_name, key)] = (raw[0], raw[1] - raw[0])
        raw_number = onnx.TensorProto.RAW_DATA_FIELD_NUMBER

        def drop_raw(wire: _Wire, num: int, kind: int, body: int, stop: int) -> Optional[bytes]:
            return b"" if num == raw_number else None

        entry = onnx.TensorProto.EXTERNAL_DATA_FIELD_NUMBER
        ref = b"".join(length_delimited(entry, length_delimited(1, k.encode()) + length_delimited(2, v.encode()))
                       for k, v in (("location", self.path.name), ("offset", str(raw[0])),
                                    ("length", str(raw[1] - raw[0]))))
        location = varint(onnx.TensorProto.DATA_LOCATION_FIELD_NUMBER << 3) + varint(onnx.TensorProto.EXTERNAL)
        return length_delimited(number, self._message(wire, start, end, drop_raw) + ref + location)

    # -- the bytes -----------------------------------------------------------------------------
    def holds(self, kind_name: str, key: str, tensor: onnx.TensorProto, base: Optional[Path]) -> bool:
        """Whether ``tensor`` has exactly the bytes this file keeps for ``(kind_name, key)``."""
        span = self.spans.get((kind_name, key))
        if span is None or _nbytes(tensor) != span[1]:
            return False
        with open(self.path, "rb") as fh:
            fh.seek(span[0])
            return _same_stream(_chunks(tensor, base), _file_chunks(fh, span[1]))


def _file_chunks(fh: Any, length: int) -> Iterator[bytes]:
    left = length
    while left > 0:
        data = fh.read(min(_CHUNK, left))
        if not data:
            raise ExternalDataError(f"{getattr(fh, 'name', 'a file')} ends {left} bytes before a tensor's data.")
        left -= len(data)
        yield data


def _chunks(tensor: onnx.TensorProto, base: Optional[Path]) -> Iterator[Any]:
    """The raw bytes of a tensor with raw or external data, a piece at a time (external: read from its file)."""
    if not is_external(tensor):
        yield memoryview(tensor.raw_data)
        return
    path, offset, length = _external_file(tensor, base)
    size = path.stat().st_size - offset if length is None else length
    with open(path, "rb") as fh:
        fh.seek(offset)
        yield from _file_chunks(fh, size)


def _same_stream(a: Iterator[Any], b: Iterator[Any]) -> bool:
    """Whether two byte streams cut into pieces differently hold the same bytes."""
    left, right = memoryview(b""), memoryview(b"")
    while True:
        if not len(left):
            left = memoryview(next(a, b"")).cast("B")
        if not len(right):
            right = memoryview(next(b, b"")).cast("B")
        if not len(left) or not len(right):
            return not len(left) and not len(right) and next(a, None) is None and next(b, None) is None
        n = min(len(left), len(right), _CHUNK)
        if left[:n].tobytes() != right[:n].tobytes():  # bytes compare with memcmp, memoryviews per item
            return False
        left, right = left[n:], right[n:]


def _raw_like(tensor: onnx.TensorProto) -> bool:
    """A tensor whose data is raw bytes (embedded ``raw_data`` or external), of at least :data:`STUB_MIN_BYTES`."""
    return is_external(tensor) or (tensor.HasField("raw_data") and _nbytes(tensor) >= STUB_MIN_BYTES)


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


def _canonical_nodes(graph: onnx.GraphProto, base: Optional[Path], source: ModelFile) -> List[bytes]:
    """Sorted digests of the nodes without their names (order-free; a digest per node, so the
    comparison does not hold a second serialized copy of nodes carrying weights).

    A ``Constant`` value of raw bytes counts by its type, shape and where its bytes are: a
    reference (file, offset, length) for external data and for embedded bytes exactly equal to
    the ones ``source`` (the model's file) keeps for that ``Constant``, else the bytes' digest.
    The model and its file then digest alike whether or not a weight was left in the file, and
    weights left there are not read again.
    """
    import hashlib

    out = []
    resolved: Dict[Path, Path] = {}  # each file resolved once (the files were checked with the step)
    for node in graph.node:
        digest = hashlib.sha256()
        clone = onnx.NodeProto()
        big = node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output
        value = next((i for i, a in enumerate(node.attribute) if a.name == "value"
                      and a.type == onnx.AttributeProto.TENSOR and _raw_like(a.t)), None) if big else None
        if value is None:
            clone.CopyFrom(node)
        else:
            clone.CopyFrom(_value_stub(node, value))
            tensor = node.attribute[value].t
            if is_external(tensor):
                file, offset, length = external_location(tensor, base)
            elif source.holds("constant", node.output[0], tensor, base):
                file, (offset, length) = source.path, source.spans[("constant", node.output[0])]
            else:
                file = None
            if file is not None:
                if file not in resolved:
                    resolved[file] = file.resolve()
                digest.update(f"ref {resolved[file]} {offset} {length}".encode())
            else:
                digest.update(b"raw ")
                digest.update(tensor.raw_data)
        _strip_names(clone)
        digest.update(clone.SerializeToString(deterministic=True))
        out.append(digest.digest())
    return sorted(out)


def _value_stub(node: onnx.NodeProto, value: int) -> onnx.NodeProto:
    """A copy of ``node`` whose attribute ``value`` (an index) is its type and shape only (no data, no location)."""
    out = onnx.NodeProto(input=node.input, output=node.output, name=node.name, op_type=node.op_type,
                         domain=node.domain, doc_string=node.doc_string)
    for i, attr in enumerate(node.attribute):
        if i == value:
            t = attr.t
            out.attribute.add(name=attr.name, type=attr.type).t.CopyFrom(
                onnx.TensorProto(name=t.name, data_type=t.data_type, dims=t.dims))
        else:
            out.attribute.append(attr)
    return out


def _same_tensor(mine: onnx.TensorProto, mine_base: Optional[Path], theirs: onnx.TensorProto,
                 file_base: Path) -> bool:
    if mine.data_type != theirs.data_type or list(mine.dims) != list(theirs.dims):
        return False
    if is_external(mine) and is_external(theirs):
        same_place = mine_base is not None and Path(mine_base).resolve() == file_base.resolve()
        if same_place and external_info(mine) == external_info(theirs):
            return True
    if not is_external(mine) and not is_external(theirs):
        a, b = onnx.TensorProto(), onnx.TensorProto()
        a.CopyFrom(mine)
        b.CopyFrom(theirs)
        a.doc_string = b.doc_string = ""
        return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)
    try:
        if _raw_like(mine) and _raw_like(theirs):
            return _same_stream(_chunks(mine, mine_base), _chunks(theirs, file_base))
        return np.array_equal(np.asarray(to_array(mine, mine_base)).view(np.uint8).reshape(-1),
                              np.asarray(to_array(theirs, file_base)).view(np.uint8).reshape(-1))
    except (ExternalDataError, OSError, ValueError, TypeError):
        return False


def read_model_file(path: Any) -> Tuple[Optional[ModelFile], str]:
    """``(ModelFile, "")`` for the model file at ``path``, or ``(None, why not)``."""
    if path is None:
        return None, "the model was not loaded from a file"
    path = Path(path)
    if not path.is_file():
        return None, f"its file {path} no longer exists"
    try:
        return ModelFile(path), ""
    except Exception as exc:  # OSError, ValueError, protobuf's DecodeError ...
        return None, f"its file {path} could not be read again ({exc})"


def same_as_file(model: Any, source: Optional[ModelFile] = None) -> str:
    """Why ONNX Runtime could not read ``model`` from its file instead (``""``: it computes the same).

    The file is read as a stream (:class:`ModelFile`): without its external data, and without a
    second copy of its embedded weights, which are compared with the model's piece by piece.
    Node names, node order, value_info and initializers listed as graph inputs may differ (they
    do not change what runs); opsets, local functions, the graph's inputs and outputs, every node
    with its attributes, and every initializer's type, shape and data (or external reference)
    must be the same.
    """
    path = getattr(model, "path", None)
    if source is None:
        source, why = read_model_file(path)
        if source is None:
            return why
    path = Path(path)
    theirs = source.skeleton
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
    mine_base = base_dir(model)
    try:
        if _canonical_nodes(mine.graph, mine_base, source) != _canonical_nodes(theirs.graph, path.parent, source):
            return "its nodes differ from the file's (changed after loading, or folded)"
    except (ExternalDataError, OSError) as exc:
        return f"a Constant value could not be read to compare it ({exc})"
    if set(model.initializers) != set(file_inits):
        return "its initializers differ from the file's"
    if [s.SerializeToString(deterministic=True) for s in mine.graph.sparse_initializer] != \
            [s.SerializeToString(deterministic=True) for s in theirs.graph.sparse_initializer]:
        return "its sparse initializers differ from the file's"
    for name, tensor in model.initializers.items():
        if not _same_tensor(tensor, mine_base, file_inits[name], path.parent):
            return f"initializer {name!r} differs from the file's"
    return ""


# ----------------------------------------------------------------------------------------------
# leaving weights in the model's file
# ----------------------------------------------------------------------------------------------

def leave_in_file(model: Any, source: Optional[ModelFile] = None, min_bytes: int = STUB_MIN_BYTES) -> int:
    """Leave in the model's file the weights the model holds a copy of (in place); bytes left there.

    :func:`trtlab.load` does this by default (``weights="file"``); this is for a model loaded
    with ``weights="memory"``. Each initializer and top-level ``Constant`` value of at least
    :data:`STUB_MIN_BYTES` whose type, shape and bytes are exactly the file's becomes a
    reference to those bytes in the file (external data whose location is the file itself:
    :class:`~trtlab.model.Model`'s weights by reference), so the model keeps no copy of them;
    values are read from the file where a step needs them, as for any external data. Tensors
    changed or made after loading (folded constants, edits) stay in memory. ``model.proto``
    becomes a new message (the old one, and its copies of the weights, are freed when nothing
    else holds them); ``model.notes`` says what moved.

    ``min_bytes``: the smallest tensor left there (at least :data:`STUB_MIN_BYTES`).

    Like external data files, the model file must then stay where it is, unchanged: its identity
    (size, modification time, inode) is recorded in ``model.weight_files`` and checked before
    every read (:class:`~trtlab.errors.ExternalDataError` when it changed).
    """
    from trtlab.model import FileIdentity

    path = getattr(model, "path", None)
    folder = base_dir(model)
    if path is None or folder is None:
        return 0
    path = Path(path)
    try:
        if Path(folder).resolve() != path.parent.resolve():
            return 0
        identity = FileIdentity.of(path)
    except OSError:
        return 0
    if not _left_out(model.proto, min_bytes):
        return 0
    if source is None:
        source, why = read_model_file(path)
        if source is None:
            log.debug("model %s keeps its weights in memory: %s", getattr(model, "name", "?"), why)
            return 0
    new, count, moved = refer_to_file(model.proto, path.name, source.spans,
                                      lambda key, tensor: source.holds(*key, tensor, folder), min_bytes)
    if new is None:
        return 0
    model.proto = new
    model._drop_caches()
    model.weight_files[Path(os.path.abspath(path))] = identity
    note = left_note(count, moved, path.name)
    model.notes.append(note)
    log.info("%s: %s", getattr(model, "name", "model"), note)
    return moved
