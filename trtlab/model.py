"""Import an ONNX model: :func:`load` and :class:`Model`.

:func:`load` reads a model from a path, bytes, an ``onnx.ModelProto`` or a ``torch.nn.Module``,
checks it, makes node names unique, infers shapes (folding constants exactly when asked) and
returns a :class:`Model`:
the ONNX proto plus a networkx graph view and a pandas node table.

Examples
--------
>>> import trtlab
>>> m = trtlab.load("data/digits_cnn.onnx")            # doctest: +SKIP
>>> m.nodes[["name", "op_type", "macs"]].head()       # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import logging
import os
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cached_property
from operator import attrgetter
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from trtlab import _io
from trtlab._wire import varint
from trtlab._lazy import lazy_import
from trtlab.opinfo import MAC_FORMULA_OPS, ElemType
from trtlab.errors import (
    ExternalDataError,
    InvalidModelError,
    MissingDependencyError,
    ModelLoadError,
    TrtlabError,
    UnsupportedOpsetError,
)

log = logging.getLogger(__name__)

np = lazy_import("numpy")
onnx = lazy_import("onnx")
helper = lazy_import("onnx.helper")
numpy_helper = lazy_import("onnx.numpy_helper")

__all__ = ["load", "Model", "TensorInfo", "TrtlabWarning", "MIN_OPSET", "WRITE_IR_VERSION"]

#: Oldest ai.onnx opset TensorRT's ONNX parser reads; older models load and run on ONNX Runtime.
MIN_OPSET = 9
#: trtlab writes models with at most this IR version, so older ONNX Runtime releases read them.
WRITE_IR_VERSION = 10



class TrtlabWarning(UserWarning):
    """A model loads, but something in it will surprise TensorRT or ONNX Runtime."""


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape and element type of a tensor.

    ``shape`` holds ints for static dims, strings for symbolic dims and ``None`` for unknown
    dims; it is ``None`` itself when the rank is unknown.
    """

    name: str
    shape: Optional[Tuple[Union[int, str, None], ...]]
    elem_type: int

    @property
    def dtype(self) -> Optional[np.dtype]:
        """NumPy dtype, or ``None`` when the element type is unknown or has no NumPy type."""
        if not self.elem_type:
            return None
        try:
            return np.dtype(helper.tensor_dtype_to_np_dtype(self.elem_type))
        except (KeyError, TypeError, ValueError):
            return None

    @property
    def dtype_name(self) -> str:
        if not self.elem_type:
            return "unknown"
        return onnx.TensorProto.DataType.Name(self.elem_type).lower()

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    def numel(self, symbolic: int = 1) -> Optional[int]:
        """Element count, with symbolic or unknown dims taken as ``symbolic``."""
        if self.shape is None:
            return None
        n = 1
        for d in self.shape:
            n *= d if isinstance(d, int) else symbolic
        return n

    @property
    def bytes(self) -> Optional[int]:
        """Size in bytes with symbolic dims taken as 1 (``None`` if unknown)."""
        n = self.numel()
        dt = self.dtype
        if n is None or dt is None:
            return None
        return int(n * dt.itemsize)


def _shape_of(type_proto: onnx.TypeProto) -> Optional[Tuple[Union[int, str, None], ...]]:
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    dims: List[Union[int, str, None]] = []
    for d in type_proto.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:  # exporters write -1 for a dynamic dim
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


def _info_from_value_info(vi: onnx.ValueInfoProto) -> TensorInfo:
    elem = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0
    return TensorInfo(vi.name, _shape_of(vi.type), elem)


def _opset(proto: onnx.ModelProto, domain: str = "") -> Optional[int]:
    for imp in proto.opset_import:
        if imp.domain in (domain, "ai.onnx" if domain == "" else domain):
            return int(imp.version)
    return None


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def _parse_bytes(data: bytes, what: str) -> onnx.ModelProto:
    if not data:
        raise ModelLoadError(f"{what} is empty (0 bytes), not an ONNX model. Re-download or "
                             "re-export the model and load it again.")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError has no stable import path
        _refuse_other_proto(data, what, exc)
        if data[:1] == b"\x08" and len(data) > 16:
            raise ModelLoadError(
                f"{what} looks like an ONNX model but is truncated or corrupt ({len(data)} bytes; "
                f"protobuf said: {exc}). Re-download or re-export the model and load it again."
            ) from exc
        raise ModelLoadError(
            f"{what} is not an ONNX file (its {len(data)} bytes are not an ONNX protobuf). "
            "Pass the path of a .onnx model, its bytes, an onnx.ModelProto, or a torch.nn.Module "
            "with example_inputs=."
        ) from exc
    if proto.ir_version == 0 or not proto.HasField("graph") or not proto.opset_import:
        _refuse_other_proto(data, what, None)
        raise ModelLoadError(
            f"{what} is not an ONNX file: it parses as protobuf but has no "
            f"{'IR version' if proto.ir_version == 0 else 'graph' if not proto.HasField('graph') else 'opset import'}. "
            "Pass the path of a .onnx model exported by an ONNX exporter."
        )
    return proto


def _refuse_other_proto(data: bytes, what: str, cause: Optional[BaseException]) -> None:
    """Name the ONNX message ``data`` holds when it is a tensor, not a model."""
    tensor = onnx.TensorProto()
    try:
        tensor.ParseFromString(data)
    except Exception:  # not a TensorProto either; the caller reports it as not ONNX
        return
    has_values = tensor.raw_data or any(len(getattr(tensor, f)) for f in (
        "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"))
    if 0 < tensor.data_type <= 23 and (has_values or tensor.data_location == onnx.TensorProto.EXTERNAL):
        dtype = onnx.TensorProto.DataType.Name(tensor.data_type)
        raise ModelLoadError(
            f"{what} is a serialized ONNX tensor (TensorProto {tensor.name!r}, {dtype}, shape "
            f"{list(tensor.dims)}), not a model: such .pb files hold test inputs or outputs. Pass "
            "the .onnx model file; read a tensor with onnx.numpy_helper.to_array.") from cause


def _all_tensors(graph: onnx.GraphProto) -> Iterable[onnx.TensorProto]:
    """Initializers and tensor attributes (``Constant`` values included) of a graph and its bodies."""
    yield from graph.initializer
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterable[onnx.TensorProto]:
    """Tensors in ``node``'s attributes (``Constant`` values included) and in its bodies."""
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        for body in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            yield from _all_tensors(body)


def _read_file(path: Path) -> onnx.ModelProto:
    """The model file at ``path``, parsed; external data stays in its files (references)."""
    return _parse_bytes(_read_model_bytes(path), f"File {path}")


def _read_model_bytes(path: Path) -> bytes:
    if not path.exists() and not path.is_symlink():
        near = sorted(p.name for p in path.parent.glob("*.onnx"))[:10] if path.parent.is_dir() else []
        hint = f" ONNX files in {path.parent}: {', '.join(near)}." if near else ""
        raise ModelLoadError(f"Model file not found: {path}.{hint} Check the path.")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder, not an ONNX file. Pass the path of a .onnx file.")
    return _io.read_bytes(path, what="Model file", error=ModelLoadError)


def _read_path(path: Path) -> onnx.ModelProto:
    """The model file at ``path`` with its external data read into the proto (a complete model)."""
    proto = _read_file(path)
    for t in external_tensors(proto.graph):
        _check_external(t, path.parent, f"Model {path}")
    return inline_external_data(proto, path.parent)


def _from_torch(module: Any, example_inputs: Any, opset: int) -> onnx.ModelProto:
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(
            "Loading a torch.nn.Module needs PyTorch: pip install 'trtlab[torch]'."
        ) from exc
    if example_inputs is None:
        raise ModelLoadError(
            f"Cannot export {type(module).__name__} to ONNX without example inputs. "
            "Call trtlab.load(module, example_inputs=(torch.randn(1, 3, 224, 224),)) with tensors "
            "of the shapes the model takes."
        )
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    buf = io.BytesIO()
    module = module.eval()
    try:
        with torch.no_grad():
            torch.onnx.export(module, tuple(example_inputs), buf, opset_version=opset, dynamo=False)
    except TypeError:  # older torch without the dynamo keyword
        with torch.no_grad():
            torch.onnx.export(module, tuple(example_inputs), buf, opset_version=opset)
    except Exception as exc:
        raise ModelLoadError(f"torch.onnx.export failed for {type(module).__name__}: {exc}") from exc
    return _parse_bytes(buf.getvalue(), f"ONNX export of {type(module).__name__}")


def _is_torch_module(obj: Any) -> bool:
    return any(c.__module__.startswith("torch.nn") and c.__name__ == "Module" for c in type(obj).__mro__)


# ----------------------------------------------------------------------------------------------
# External data: weights kept in files beside the model, read only where values are needed
# ----------------------------------------------------------------------------------------------

#: Initializers larger than this (serialized bytes) are left out of the copy of the model that
#: the checker and shape inference see (they only need dims and dtypes of weights). Below it,
#: a typed stand-in costs more than serializing the tensor.
_SKELETON_MIN_BYTES = 16 << 10
#: Integer types shape inference reads values of (shape tensors); never left out when inline.
_SHAPE_VALUE_TYPES = frozenset({ElemType.INT64, ElemType.INT32})
_EXTERNAL = ElemType.EXTERNAL
_DATA_LOCATION = attrgetter("data_location")
_SUB_BYTE_TYPES = ElemType.SUB_BYTE


def is_external(tensor: onnx.TensorProto) -> bool:
    """Whether ``tensor`` keeps its data in an external file (a reference, not loaded)."""
    return tensor.data_location == _EXTERNAL


_ITEMSIZE: Dict[int, int] = {}


def _tensor_nbytes(tensor: onnx.TensorProto) -> Optional[int]:
    """Bytes of a tensor's raw data from its dims and type (``None`` for strings/unknown types)."""
    n = 1
    for d in tensor.dims:
        n *= int(d)
    if tensor.data_type in _SUB_BYTE_TYPES:
        bits = 2 if "2" in onnx.TensorProto.DataType.Name(tensor.data_type)[-1:] else 4
        return (n * bits + 7) // 8
    if tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return None
    itemsize = _ITEMSIZE.get(tensor.data_type)
    if itemsize is None:
        try:
            itemsize = _ITEMSIZE[tensor.data_type] = np.dtype(
                helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
        except (KeyError, TypeError, ValueError):
            return None
    return n * itemsize


def external_location(tensor: onnx.TensorProto, base_dir: Optional[Path]) -> Tuple[Path, int, Optional[int]]:
    """``(file, offset, length)`` of an external tensor, its file resolved against ``base_dir``.

    Raises :class:`~trtlab.errors.ExternalDataError` when the model has no folder (it was not
    loaded from a path), or the location is absolute or leaves the folder.
    """
    fields = {e.key: e.value for e in tensor.external_data}
    location = fields.get("location", "")
    if not location:
        raise ExternalDataError(
            f"Tensor {tensor.name!r} is marked as external data but names no location. Re-export "
            "the model, or save it with onnx.save_model(..., save_as_external_data=True).")
    rel = Path(location)
    if rel.is_absolute() or ".." in rel.parts or rel.drive:
        raise ExternalDataError(
            f"Tensor {tensor.name!r} reads external data from {location!r}, outside the model's "
            "folder (absolute or '..'). External data must sit beside the model (a relative path "
            "inside its folder); move the data file there and fix the location.")
    if base_dir is None:
        raise ExternalDataError(
            f"Tensor {tensor.name!r} keeps its data in external file {location!r}, but this model "
            "was not loaded from a file, so there is no folder to read it from. Load the model "
            "from its .onnx path (trtlab.load('folder/model.onnx')).")
    try:
        offset = int(fields.get("offset", 0) or 0)
        length = int(fields["length"]) if fields.get("length") else None
    except ValueError:
        raise ExternalDataError(
            f"Tensor {tensor.name!r} has a non-integer external data offset/length "
            f"({fields.get('offset')!r}, {fields.get('length')!r}). Re-save the model.") from None
    return Path(base_dir) / rel, offset, length


def in_file(tensor: onnx.TensorProto, location: Optional[str]) -> bool:
    """Whether ``tensor`` keeps its data as external data in the file ``location`` (e.g. a
    model's :attr:`Model.own_location`)."""
    return location is not None and is_external(tensor) and \
        any(e.key == "location" and e.value == location for e in tensor.external_data)


def _check_external(tensor: onnx.TensorProto, base_dir: Optional[Path], what: str) -> None:
    """The file of an external tensor exists and holds ``offset + length`` bytes (not read)."""
    file, offset, length = external_location(tensor, base_dir)
    expected = _tensor_nbytes(tensor)
    if length is not None and expected is not None and length != expected:
        raise ExternalDataError(
            f"{what}: tensor {tensor.name!r} declares {length} bytes of external data in "
            f"{file.name!r}, but its shape {list(tensor.dims)} and type need {expected}. Re-save the "
            "model so the data matches the tensor.")
    need = offset + (length if length is not None else (expected or 0))
    try:
        st = file.stat()
    except OSError as exc:
        raise ExternalDataError(
            f"{what} keeps weights in external data file {file.name!r}, which could not be read "
            f"from {file.parent} ({exc.strerror or exc}). Put the data file(s) beside the model, "
            "or load the model from its original folder.") from exc
    import stat as _stat

    if not _stat.S_ISREG(st.st_mode):
        raise ExternalDataError(
            f"{what}: external data {file.name!r} in {file.parent} is not a regular file. Put the "
            "data file beside the model.")
    if st.st_size < need:
        raise ExternalDataError(
            f"{what}: external data file {file.name!r} has {st.st_size} bytes, but tensor "
            f"{tensor.name!r} needs bytes {offset}..{need} (a truncated or wrong data file). "
            "Copy the complete data file beside the model.")


@dataclass(frozen=True)
class FileIdentity:
    """What tells a file's content apart at the cost of one ``stat``: size, modification time
    (ns), inode and device. Rewriting a file changes its modification time (and usually its
    size); replacing it (another file renamed over it) changes its inode."""

    size: int
    mtime_ns: int
    ino: int
    dev: int

    @classmethod
    def of(cls, path: Union[str, os.PathLike]) -> "FileIdentity":
        """The identity of the file at ``path`` now (raises ``OSError`` when it cannot be examined)."""
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)

    def changes(self, now: "FileIdentity") -> List[str]:
        """What differs in ``now`` from this identity, in words."""
        out = []
        if (now.ino, now.dev) != (self.ino, self.dev):
            out.append("it was replaced by another file (new inode)")
        if now.size != self.size:
            out.append(f"its size changed from {self.size} to {now.size} bytes")
        if now.mtime_ns != self.mtime_ns:
            out.append("it was modified (new modification time)")
        return out


#: ``{absolute file path: FileIdentity}`` of the files a model reads weights from.
WeightFiles = Dict[Path, FileIdentity]


def record_weight_files(proto: onnx.ModelProto, base_dir: Optional[Path],
                        known: Optional[Mapping[Path, FileIdentity]] = None) -> WeightFiles:
    """The identity of every file the external tensors of ``proto`` read (its bodies and local
    functions included), taken now; ``known`` gives identities taken earlier (used as they are).
    Files that cannot be examined are left out (reading them fails with its own message)."""
    if base_dir is None:
        return {}
    known = known or {}
    tensors = external_tensors(proto.graph) + [attr.t for f in proto.functions for node in f.node
                                               for attr in node.attribute if attr.HasField("t") and is_external(attr.t)]
    out: WeightFiles = {}
    for location in {e.value for t in tensors for e in t.external_data if e.key == "location"}:
        path = Path(os.path.abspath(Path(base_dir) / location))
        if path in out:
            continue
        if path in known:
            out[path] = known[path]
            continue
        try:
            out[path] = FileIdentity.of(path)
        except OSError:
            continue
    return out


def check_weight_files(files: Mapping[Path, FileIdentity], what: str, source: Optional[Path] = None) -> None:
    """Raise :class:`~trtlab.errors.ExternalDataError` when a file in ``files`` is not the one
    recorded (one ``stat`` per file). ``what`` names the model, ``source`` its ``.onnx`` file."""
    for path, then in files.items():
        try:
            now = FileIdentity.of(path)
        except OSError as exc:
            changes = [f"it can no longer be examined ({exc.strerror or exc})"]
        else:
            if now == then:
                continue
            changes = then.changes(now)
        again = f"trtlab.load({str(source)!r})" if source is not None else "trtlab.load(path)"
        raise ExternalDataError(
            f"{what} reads weights from {path}, which changed since the model was loaded: "
            f"{'; '.join(changes)}. Its bytes may no longer be the model's weights, so they are not "
            f"read. Load the model again ({again}) to use the file as it is now, or put back the "
            "file it was loaded with.")


def tensor_value(tensor: onnx.TensorProto, base_dir: Optional[Path] = None) -> np.ndarray:
    """The value of ``tensor`` as a NumPy array; external data is memory-mapped (read-only).

    The one reader of weights: inline tensors go through ``onnx.numpy_helper``, external ones
    are mapped from their file at ``base_dir`` (offset and length honoured), so only the pages
    a caller touches are read.
    """
    if not is_external(tensor):
        return numpy_helper.to_array(tensor)
    file, offset, length = external_location(tensor, base_dir)
    nbytes = _tensor_nbytes(tensor)
    shape = tuple(int(d) for d in tensor.dims)
    if nbytes is None or tensor.data_type in _SUB_BYTE_TYPES or (length is not None and length != nbytes):
        return numpy_helper.to_array(inline_tensor(tensor, base_dir))
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")
    if nbytes == 0:
        return np.zeros(shape, dtype)
    try:
        mapped = np.memmap(file, dtype=dtype, mode="r", offset=offset, shape=(nbytes // dtype.itemsize,))
    except (OSError, ValueError) as exc:
        raise ExternalDataError(
            f"Could not read external data of tensor {tensor.name!r} from {file} at offset {offset} "
            f"({exc}). Put the complete data file beside the model.") from exc
    return mapped.view(np.ndarray).reshape(shape)


def _read_external(tensor: onnx.TensorProto, base_dir: Optional[Path]) -> bytes:
    file, offset, length = external_location(tensor, base_dir)
    size = length if length is not None else _tensor_nbytes(tensor)
    try:
        with open(file, "rb") as fh:
            fh.seek(offset)
            data = fh.read() if size is None else fh.read(size)
    except OSError as exc:
        raise ExternalDataError(
            f"Could not read external data of tensor {tensor.name!r} from {file} "
            f"({exc.strerror or exc}). Put the data file beside the model.") from exc
    if size is not None and len(data) != size:
        raise ExternalDataError(
            f"External data file {file} ends before tensor {tensor.name!r} ({len(data)} of {size} "
            "bytes). Copy the complete data file beside the model.")
    return data


def _make_inline(tensor: onnx.TensorProto, base_dir: Optional[Path]) -> None:
    set_inline(tensor, _read_external(tensor, base_dir))


def set_inline(tensor: onnx.TensorProto, data: bytes) -> None:
    """Make ``tensor`` hold ``data`` (its little-endian bytes) inline, no external reference left."""
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.DEFAULT
    tensor.raw_data = data


def inline_tensor(tensor: onnx.TensorProto, base_dir: Optional[Path] = None) -> onnx.TensorProto:
    """``tensor`` with its data inline: itself when it is, else a copy holding the file's bytes."""
    if not is_external(tensor):
        return tensor
    out = onnx.TensorProto()
    out.CopyFrom(tensor)
    _make_inline(out, base_dir)
    return out


def external_tensors(graph: onnx.GraphProto) -> List[onnx.TensorProto]:
    """Every tensor of ``graph`` (initializers, tensor attributes, bodies) kept as external data."""
    return [t for t in _all_tensors(graph) if is_external(t)]


def inline_external_data(proto: onnx.ModelProto, base_dir: Optional[Path]) -> onnx.ModelProto:
    """Read every external tensor of ``proto`` into the proto (in place); returns ``proto``."""
    for t in external_tensors(proto.graph):
        _make_inline(t, base_dir)
    for f in proto.functions:
        for node in f.node:
            for attr in node.attribute:
                if attr.HasField("t") and is_external(attr.t):
                    _make_inline(attr.t, base_dir)
    return proto


def _resolve_external(proto: onnx.ModelProto, base_dir: Optional[Path]) -> onnx.ModelProto:
    """``proto`` itself when it holds no external reference, else a copy with the data inline."""
    if not external_tensors(proto.graph):
        return proto
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return inline_external_data(out, base_dir)


# ----------------------------------------------------------------------------------------------
# Weights left in the model's own file: references to their bytes there
# ----------------------------------------------------------------------------------------------

#: Smallest tensor (bytes of raw data) ``load(weights="file")`` leaves in the model's file: a
#: smaller one costs about as much to refer to as it holds, and is one the checker and shape
#: inference read anyway (:data:`_SKELETON_MIN_BYTES`).
LEAVE_MIN_BYTES = _SKELETON_MIN_BYTES


def constant_attr(node: onnx.NodeProto) -> Optional[onnx.AttributeProto]:
    """The ``value`` attribute (a tensor) of an ai.onnx ``Constant`` node; None for any other node."""
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
        return None
    return next((a for a in node.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR), None)


def constant_value_attr(node: onnx.NodeProto, min_bytes: int) -> Optional[onnx.AttributeProto]:
    """The ``value`` attribute of a ``Constant`` node holding at least ``min_bytes`` of data, not external."""
    attr = constant_attr(node)
    if attr is None or is_external(attr.t) or (_tensor_nbytes(attr.t) or 0) < min_bytes:
        return None
    return attr


def left_note(count: int, moved: int, file_name: str) -> str:
    """The note a model carries when ``count`` weights (``moved`` bytes) are read from its file."""
    return (f"{count} weight(s), {moved / 2 ** 20:.1f} MiB, are read from the model file {file_name} "
            "(checked unchanged since loading before each read) where a step needs them, not held in memory")


Key = Tuple[str, str]


def _left_out(proto: onnx.ModelProto, min_bytes: int = LEAVE_MIN_BYTES) -> List[Tuple[int, Key, onnx.TensorProto]]:
    """``(index, key, tensor)`` of each ``Constant`` value (top level; index of its node) of at
    least ``min_bytes`` of raw data, and each initializer (index in the initializers) with raw
    data and at least that serialized size, of ``proto``: what a file may keep for it.
    Constants first, as files hold nodes before initializers."""
    graph = proto.graph
    nodes = graph.node
    out: List[Tuple[int, Key, onnx.TensorProto]] = []
    for i, op in enumerate(map(attrgetter("op_type"), nodes)):
        if op == "Constant":
            node = nodes[i]
            if node.ByteSize() < min_bytes:
                continue
            value = constant_value_attr(node, min_bytes)
            if value is not None and node.output and value.t.HasField("raw_data"):
                out.append((i, ("constant", node.output[0]), value.t))
    inits = graph.initializer
    for i, size in enumerate(map(onnx.TensorProto.ByteSize, inits)):
        if size >= min_bytes:  # its data may be
            t = inits[i]
            if not is_external(t) and t.HasField("raw_data"):
                out.append((i, ("initializer", t.name), t))
    return out


def spans_in(data: bytes, proto: onnx.ModelProto, min_bytes: int = LEAVE_MIN_BYTES) -> Dict[Key, Tuple[int, int]]:
    """Where the bytes ``data`` of a model file hold the raw data of ``proto``'s tensors of at
    least ``min_bytes`` (``proto`` parsed from them): ``("initializer", name)`` /
    ``("constant", output)`` -> ``(offset, length)``, as :attr:`trtlab.weights.ModelFile.spans`.

    Each tensor's bytes are looked up in ``data`` after a ``raw_data`` field key and length, from
    where the previous one ended (fields are in file order), and a span is given only where the
    file's bytes are exactly the tensor's: found by comparison, so a reference to it reads the
    tensor's value. Linear in the file's size; nothing is parsed again.
    """
    tag = varint(onnx.TensorProto.RAW_DATA_FIELD_NUMBER << 3 | 2)
    spans: Dict[Key, Tuple[int, int]] = {}
    cursor = 0
    for _, key, tensor in _left_out(proto, min_bytes):
        raw = tensor.raw_data
        if len(raw) < min_bytes:
            continue
        head = tag + varint(len(raw))
        at = _find_raw(data, head, raw, cursor)
        if at < 0 and cursor:
            at = _find_raw(data, head, raw, 0)
        if at >= 0:
            spans[key] = (at, len(raw))
            cursor = at + len(raw)
    return spans


def _find_raw(data: bytes, head: bytes, raw: bytes, start: int) -> int:
    """Offset of the first payload ``raw`` after ``head`` in ``data`` from ``start`` (-1: none)."""
    probe = head + raw[:64]
    at = data.find(probe, start)
    while at >= 0 and not data.startswith(raw, at + len(head)):
        at = data.find(probe, at + 1)
    return at + len(head) if at >= 0 else -1


def refer_to_file(proto: onnx.ModelProto, location: str, spans: Mapping[Key, Tuple[int, int]],
                  same: Any = None, min_bytes: int = LEAVE_MIN_BYTES) -> Tuple[Optional[onnx.ModelProto], int, int]:
    """``(new proto, count, bytes)``: a copy of ``proto`` whose large raw tensors are references
    to their bytes in the file ``location`` (``spans`` as :attr:`trtlab.weights.ModelFile.spans`), for each
    tensor ``same(key, tensor)`` says the file holds exactly (with ``same`` None: every tensor
    ``spans`` places); tensors under ``min_bytes`` are not looked at. ``(None, 0, 0)`` when none is.

    The copy is a new message (what is not replaced is copied in runs): the weights of ``proto``
    are freed with it.
    """
    nodes: Dict[int, onnx.NodeProto] = {}
    initializers: Dict[int, onnx.TensorProto] = {}
    moved = 0
    for i, key, tensor in _left_out(proto, min_bytes):
        span = spans.get(key)
        if span is None or (same is not None and not same(key, tensor)):
            continue
        ref = _reference(tensor, location, *span)
        moved += span[1]
        if key[0] == "initializer":
            initializers[i] = ref
        else:
            nodes[i] = _with_value(proto.graph.node[i], ref)
    if not nodes and not initializers:
        return None, 0, 0
    new = onnx.ModelProto()
    _copy_fields(new, proto, ("graph",))
    _copy_fields(new.graph, proto.graph, ("node", "initializer"))
    _extend_replacing(new.graph.node, proto.graph.node, nodes)
    _extend_replacing(new.graph.initializer, proto.graph.initializer, initializers)
    return new, len(nodes) + len(initializers), moved


def _with_value(node: onnx.NodeProto, value: onnx.TensorProto) -> onnx.NodeProto:
    """A copy of a ``Constant`` node whose ``value`` attribute is ``value``."""
    out = onnx.NodeProto()
    _copy_fields(out, node, ("attribute",))
    for attr in node.attribute:
        if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
            new = out.attribute.add()
            _copy_fields(new, attr, ("t",))
            new.t.CopyFrom(value)
        else:
            out.attribute.append(attr)
    return out


def _extend_replacing(dst: Any, src: Any, replace: Mapping[int, Any]) -> None:
    """Append to ``dst`` the messages of ``src``, those at the indices of ``replace`` replaced."""
    last = 0
    for i in sorted(replace):
        if last < i:
            dst.extend(src[last:i])
        dst.append(replace[i])
        last = i + 1
    if last < len(src):
        dst.extend(src[last:])


def _reference(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> onnx.TensorProto:
    """``tensor`` (every field but its data), its data a reference to ``length`` bytes at ``offset`` of ``location``."""
    out = onnx.TensorProto()
    out.CopyFrom(tensor)  # a short-lived copy: every other field, whatever it is
    for name in ("raw_data", "external_data", "data_location"):
        out.ClearField(name)
    out.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        out.external_data.add(key=key, value=value)
    return out


def _copy_fields(dst: Any, src: Any, skip: Tuple[str, ...]) -> None:
    """Copy every set field of message ``src`` into ``dst`` except those named in ``skip``."""
    for fd, value in src.ListFields():
        if fd.name not in skip:
            set_field(dst, fd, value)


def set_field(message: Any, fd: Any, value: Any) -> None:
    """Set field ``fd`` of ``message`` to ``value`` (as ``ListFields`` gives it): repeated fields
    extended, messages copied."""
    if fd.is_repeated:
        getattr(message, fd.name).extend(value)
    elif fd.type == fd.TYPE_MESSAGE:
        getattr(message, fd.name).CopyFrom(value)
    else:
        setattr(message, fd.name, value)


# ----------------------------------------------------------------------------------------------
# Normalising
# ----------------------------------------------------------------------------------------------


@dataclass
class _Nodes:
    """What one pass over a graph's top-level nodes tells :func:`load` (indices into ``node``)."""

    names: List[str]
    #: ``Constant`` nodes of ai.onnx
    constants: List[int]
    #: nodes that may hold bodies (If/Loop/Scan/SequenceMap, any op outside ai.onnx)
    special: List[int]
    #: whether some node is outside ai.onnx (contrib ops)
    custom: bool
    #: whether ONNX's data propagation can add to the inferred shapes: some node is not one of
    #: :data:`_SHAPES_FROM_SHAPES` (it may read a shape computed by other nodes) or holds a body
    data_prop: bool = True

    @classmethod
    def of(cls, graph: onnx.GraphProto) -> "_Nodes":
        nodes = list(graph.node)  # one Python object per node, read three times
        names = list(map(_NAME, nodes))
        ops = list(map(_OP_TYPE, nodes))
        domains = list(map(_DOMAIN, nodes))
        standard = _STANDARD_DOMAINS.issuperset(domains)
        body_ops = _BODY_OPS
        if standard:
            special = [i for i, op in enumerate(ops) if op in body_ops] \
                if not body_ops.isdisjoint(ops) else []
            constants = [i for i, op in enumerate(ops) if op == "Constant"] if "Constant" in ops else []
        else:
            special = [i for i, (op, d) in enumerate(zip(ops, domains))
                       if op in body_ops or d not in _STANDARD_DOMAINS]
            constants = [i for i, (op, d) in enumerate(zip(ops, domains))
                         if op == "Constant" and d in _STANDARD_DOMAINS]
        data_prop = bool(special) or not _SHAPES_FROM_SHAPES.issuperset(ops)
        return cls(names, constants, special, not standard, data_prop)

    def bodies(self, graph: onnx.GraphProto) -> Iterable[Tuple[int, onnx.NodeProto]]:
        """``(index, node)`` of the nodes that hold bodies."""
        for i in self.special:
            node = graph.node[i]
            if _has_body(node):
                yield i, node


#: ai.onnx ops whose shape inference reads no shape computed by other nodes: data propagation
#: (ONNX's partial evaluation of Shape -> Gather -> Concat ... chains) reaches shape inference
#: only through the shape inputs of Reshape, Expand, ConstantOfShape, Resize and AffineGrid
#: (``getShapeInput`` in onnx/defs), so in a graph of these ops alone it cannot change a shape.
#: tests/test_model.py checks this against the installed onnx on the backend test suite.
_SHAPES_FROM_SHAPES = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh",
    "AveragePool", "BatchNormalization", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Concat",
    "Constant", "Conv", "ConvInteger", "ConvTranspose", "Cos", "Cosh", "CumSum", "DepthToSpace",
    "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp", "Flatten",
    "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool",
    "GlobalMaxPool", "Greater", "GreaterOrEqual", "GroupNormalization", "HardSigmoid",
    "HardSwish", "Hardmax", "Identity", "InstanceNormalization", "IsInf", "IsNaN", "LRN",
    "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax",
    "LpNormalization", "LpPool", "MatMul", "MatMulInteger", "Max", "MaxPool", "Mean",
    "MeanVarianceNormalization", "Min", "Mish", "Mod", "Mul", "Neg", "Not", "Or", "PRelu", "Pow",
    "QLinearConv", "QLinearMatMul", "QuantizeLinear", "Reciprocal", "Relu", "Round", "Selu",
    "Shape", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Softmax", "Softplus",
    "Softsign", "SpaceToDepth", "Sqrt", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu",
    "Transpose", "Where", "Xor",
})

_NAME = attrgetter("name")
_OP_TYPE = attrgetter("op_type")
_DOMAIN = attrgetter("domain")
_STANDARD_DOMAINS = frozenset({"", "ai.onnx"})


def _unique_node_names(graph: onnx.GraphProto, names: Optional[List[str]] = None) -> Dict[str, str]:
    """Give every node a unique, non-empty name; returns ``{new: old}`` for the renamed ones.

    ``names``: the nodes' names when the caller has them.
    """
    if names is None:
        names = [n.name for n in graph.node]
    if all(names) and len(set(names)) == len(names):
        return {}
    used = Counter(n.name for n in graph.node if n.name)
    taken = set(used)
    seen: Counter = Counter()
    renamed: Dict[str, str] = {}
    for i, node in enumerate(graph.node):
        old = node.name
        if old and used[old] == 1:
            continue
        if old:
            seen[old] += 1
            if seen[old] == 1:
                continue  # the first keeps its name
            base = f"{old}__{seen[old] - 1}"
        else:
            base = f"{node.op_type}_{i}"
        new, k = base, 1
        while new in taken:
            new, k = f"{base}_{k}", k + 1
        taken.add(new)
        node.name = new
        renamed[new] = old
    return renamed


def _outer_names(graph: onnx.GraphProto) -> set:
    """Names available in ``graph`` before any node runs (inputs and initializers)."""
    names = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    names |= {t.name for t in graph.sparse_initializer}
    names.add("")  # an empty name marks an omitted optional input
    return names


def outer_reads(node: onnx.NodeProto) -> set:
    """Tensors a node's If/Loop/Scan bodies read from the enclosing scope (the one walker for them)."""
    refs: set = set()
    for attr in node.attribute:
        bodies = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for body in bodies:
            local = _outer_names(body)
            for n in body.node:
                local.update(n.output)
            for n in body.node:
                refs.update(x for x in n.input if x not in local)
                refs.update(r for r in outer_reads(n) if r not in local)
            refs.update(o.name for o in body.output if o.name not in local)
    return refs


#: Ops whose attributes hold graphs (If/Loop/Scan bodies); nodes of other domains may too.
_BODY_OPS = frozenset({"If", "Loop", "Scan", "SequenceMap"})


def _may_have_body(node: onnx.NodeProto) -> bool:
    return (node.op_type in _BODY_OPS or node.domain not in ("", "ai.onnx")) and _has_body(node)


def _in_order(graph: onnx.GraphProto) -> bool:
    """Whether every node reads only what earlier nodes, inputs and initializers give (one pass)."""
    available = _outer_names(graph)
    have, add = available.issuperset, available.update
    for node in graph.node:
        if not have(node.input):
            return False
        if (node.op_type in _BODY_OPS or node.domain) and _may_have_body(node) \
                and not have(outer_reads(node)):
            return False
        add(node.output)
    return True


def _toposort(graph: onnx.GraphProto, what: str) -> None:
    """Sort nodes topologically in place; raise on dangling inputs and cycles."""
    if _in_order(graph):
        return
    available = _outer_names(graph)
    producer: Dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for out in node.output:
            if out:
                producer[out] = i
    deps: List[set] = []
    for i, node in enumerate(graph.node):
        needed = [x for x in node.input if x not in available]
        needed += [x for x in outer_reads(node) if x not in available]
        missing = [x for x in needed if x not in producer]
        if missing:
            raise InvalidModelError(
                f"{what}: node '{node.name}' ({node.op_type}) reads tensor(s) {missing} that no node "
                "produces and that are neither graph inputs nor initializers (a dangling input). "
                "Fix the exporter, or add the missing tensor as a graph input or initializer."
            )
        deps.append({producer[x] for x in needed})
    order = _stable_order(deps)
    if len(order) != len(graph.node):
        done = set(order)
        stuck = [graph.node[i].name for i in range(len(graph.node)) if i not in done][:8]
        raise InvalidModelError(
            f"{what}: the graph has a cycle through node(s) {stuck}. ONNX graphs must be acyclic; "
            "express recurrence with Loop/Scan or fix the exporter."
        )
    if order != list(range(len(order))):
        nodes = [copy.deepcopy(graph.node[i]) for i in order]
        del graph.node[:]
        graph.node.extend(nodes)


def _stable_order(deps: List[set]) -> List[int]:
    """Kahn's algorithm, taking the lowest original index first (keeps a valid order as is)."""
    import heapq

    indegree = [len(d) for d in deps]
    users: Dict[int, List[int]] = defaultdict(list)
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    heap = [i for i, k in enumerate(indegree) if k == 0]
    heapq.heapify(heap)
    out: List[int] = []
    while heap:
        i = heapq.heappop(heap)
        out.append(i)
        for j in users[i]:
            indegree[j] -= 1
            if indegree[j] == 0:
                heapq.heappush(heap, j)
    return out


def _name_negative_dims(graph: onnx.GraphProto) -> List[str]:
    """Declare dims given as a negative ``dim_value`` (``-1`` = unknown) as symbolic instead."""
    named = []
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        for axis, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_value") and d.dim_value < 0:
                d.dim_param = f"{vi.name}_dim{axis}"
                named.append(d.dim_param)
    return named


def _strip_initializer_inputs(graph: onnx.GraphProto) -> List[str]:
    """IR-4-style models list initializers as graph inputs; drop those inputs."""
    if not len(graph.input):
        return []
    inits = set(map(_NAME, graph.initializer))
    keep = [i for i in graph.input if i.name not in inits]
    dropped = [i.name for i in graph.input if i.name in inits]
    if dropped:
        del graph.input[:]
        graph.input.extend(keep)
    return dropped


def _required_ir(proto: onnx.ModelProto) -> int:
    """Lowest IR version that carries the model's ai.onnx opset."""
    opset = _opset(proto) or 1
    matches = [ir for _, ir, ai_onnx, *_ in helper.VERSION_TABLE if ai_onnx >= opset]
    return min(matches) if matches else onnx.IR_VERSION


def fit_ir_version(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Lower the IR version to what older runtimes read, when the opset allows it (in place).

    onnx >= 1.23 writes IR 14 by default while ONNX Runtime 1.31 reads up to IR 13.
    """
    target = max(_required_ir(proto), min(proto.ir_version, WRITE_IR_VERSION))
    if target < proto.ir_version:
        proto.ir_version = target
    return proto


def _check_opset(proto: onnx.ModelProto, what: str) -> None:
    opset = _opset(proto)
    newest = onnx.defs.onnx_opset_version()
    if opset is None:
        if any(n.domain in ("", "ai.onnx") for n in proto.graph.node):
            raise InvalidModelError(f"{what} uses ai.onnx ops but imports no ai.onnx opset.")
        return
    if opset > newest:
        raise UnsupportedOpsetError(
            f"{what} uses ai.onnx opset {opset}, newer than the installed onnx {onnx.__version__} "
            f"knows (<= {newest}). Upgrade onnx (pip install -U onnx) or re-export at opset 17."
        )


def _shapeless(graph: onnx.GraphProto, nodes: Optional[_Nodes] = None) -> List[Any]:
    """Tensor types without a shape field (rank unknown) in ``graph`` and its bodies.

    ``nodes``: :class:`_Nodes` of ``graph`` when the caller has it (bodies are found from it).
    """
    found = [vi.type.tensor_type for vi in [*graph.input, *graph.output, *graph.value_info]
             if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape")]
    holders = nodes.bodies(graph) if nodes is not None else (
        (i, node) for i, node in enumerate(graph.node)
        if (node.op_type in _BODY_OPS or node.domain) and _may_have_body(node))
    for _, node in holders:
        for attr in node.attribute:
            for body in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs):
                found += _shapeless(body)
    return found


def _skeleton(proto: onnx.ModelProto, base_dir: Optional[Path], what: str,
              nodes: Optional[_Nodes] = None) -> onnx.ModelProto:
    """``proto`` as the checker and shape inference need it: without its weights.

    External initializers and inline ones over :data:`_SKELETON_MIN_BYTES` (integer shape
    tensors excepted) become graph inputs of the same type and shape in a copy: the checker
    and shape inference only read their dims and dtype. The data the checker would have
    verified is verified here instead (inline sizes; external files present and long enough,
    without reading them). With no such tensor, ``proto`` itself is returned (no copy).
    ``nodes``: :class:`_Nodes` of ``proto.graph`` when the caller has it.
    """
    g = proto.graph
    inits = list(g.initializer)  # one Python object per initializer, read twice
    external, least, shape_types = _EXTERNAL, _SKELETON_MIN_BYTES, _SHAPE_VALUE_TYPES
    where = list(map(_DATA_LOCATION, inits))
    sizes = list(map(onnx.TensorProto.ByteSize, inits))
    stripped: List[onnx.TensorProto] = []
    left_out: set = set()
    for i in [i for i, (at, size) in enumerate(zip(where, sizes)) if at == external or size > least]:
        t = inits[i]
        if where[i] == external:
            _check_external(t, base_dir, what)
        elif not (t.data_type not in shape_types and t.HasField("raw_data") and _check_inline(t, sizes[i], what)):
            continue
        stripped.append(t)
        left_out.add(i)
    # Large float values of top-level Constant nodes (PP-OCR keeps its weights so) are left out
    # the same way: the node becomes an Identity of a typed graph input (indices stay aligned).
    constants: Dict[int, onnx.TensorProto] = {}
    for i in (nodes.constants if nodes is not None else range(len(g.node))):
        node = g.node[i]
        a = constant_attr(node)
        if a is not None and len(node.output) == 1 and not is_external(a.t) \
                and a.t.HasField("raw_data") and a.t.data_type not in _SHAPE_VALUE_TYPES \
                and len(a.t.raw_data) > _SKELETON_MIN_BYTES and _tensor_nbytes(a.t) == len(a.t.raw_data):
            constants[i] = a.t
    if not stripped and not constants:
        return proto
    Dim = onnx.TensorShapeProto.Dimension
    skel = onnx.ModelProto()
    skel.ir_version = proto.ir_version
    skel.opset_import.extend(proto.opset_import)
    skel.functions.extend(proto.functions)
    sg = skel.graph
    sg.name = g.name
    sg.node.extend(g.node)
    if constants:
        taken = {n for node in g.node for n in node.output} | {i.name for i in g.input} \
            | {t.name for t in g.initializer}
    for i, t in constants.items():
        node = sg.node[i]
        stand_in, k = f"{node.output[0]}__value", 0
        while stand_in in taken:
            k += 1
            stand_in = f"{node.output[0]}__value{k}"
        taken.add(stand_in)
        sg.node[i].CopyFrom(onnx.helper.make_node("Identity", [stand_in], list(node.output), name=node.name))
        stripped.append(onnx.TensorProto(name=stand_in, data_type=t.data_type, dims=t.dims))
    sg.input.extend(g.input)
    sg.output.extend(g.output)
    sg.value_info.extend(g.value_info)
    sg.sparse_initializer.extend(g.sparse_initializer)
    if not left_out:
        sg.initializer.extend(inits)
    elif len(left_out) < len(inits):
        sg.initializer.extend([t for i, t in enumerate(inits) if i not in left_out])
    add = sg.input.add
    for t in stripped:
        tt = add(name=t.name).type.tensor_type
        tt.elem_type = t.data_type
        if t.dims:
            tt.shape.dim.extend([Dim(dim_value=d) for d in t.dims])
        else:
            tt.shape.SetInParent()
    return skel


def _check_inline(t: onnx.TensorProto, size: int, what: str) -> bool:
    """What the checker verifies of an inline initializer's data, for one it will not see (its
    raw bytes match its shape and type, no other value field is set); ``size``: ``t.ByteSize()``.

    Returns ``False`` for a type whose size is not known here (strings, types numpy lacks): the
    checker then sees the tensor itself.
    """
    expected = _tensor_nbytes(t)
    if expected is None:
        return False
    got = len(t.raw_data)
    if got != expected:
        raise InvalidModelError(
            f"{what}: initializer {t.name!r} holds {got} bytes of data, but its shape "
            f"{list(t.dims)} and type {onnx.TensorProto.DataType.Name(t.data_type)} need "
            f"{expected}. Re-export the model.")
    if size > got + _TENSOR_HEADER_SLACK + len(t.name.encode()) + 11 * len(t.dims):
        others = [f.name for f, _ in t.ListFields() if f.name in _VALUE_FIELDS]
        if others:
            raise InvalidModelError(
                f"{what}: initializer {t.name!r} holds its values twice (raw_data and "
                f"{', '.join(others)}); ONNX allows one value field. Re-export the model.")
    return True


#: Value fields of a TensorProto besides raw_data.
_VALUE_FIELDS = frozenset({"float_data", "int32_data", "string_data", "int64_data", "double_data",
                           "uint64_data"})
#: Bytes a TensorProto may take beyond its raw data, name and dims without another value field
#: (tags, lengths, data type, doc string and metadata are checked by listing the fields).
_TENSOR_HEADER_SLACK = 32


def _check_model(skel: onnx.ModelProto, what: str, *, data: Optional[bytes] = None,
                 path: Optional[Path] = None, attribute_external: bool = False,
                 nodes: Optional[_Nodes] = None) -> bool:
    """Run ONNX's checker on the weightless copy ``skel`` (see :func:`_skeleton`).

    ``data`` is ``skel`` serialized, when the caller has it. ``attribute_external``: some node
    attribute holds an external tensor, which the checker resolves against a folder that only
    a path gives it (the file is then checked as written). ``nodes``: :class:`_Nodes` of the
    model (the skeleton keeps node indices). Returns whether the checker ran.
    """
    if attribute_external:
        if path is None:
            log.info("%s: checker skipped (external tensors in node attributes, no model path)", what)
            return False
        target: Any = str(path)
    else:
        # Newer checkers refuse rank-unknown tensors, which runtimes accept: check the model with
        # an empty shape in their place, so every other check still runs.
        shapeless = _shapeless(skel.graph, nodes)
        if shapeless:
            log.info("%s: %d tensor(s) have no shape (rank unknown)", what, len(shapeless))
            checked = onnx.ModelProto()
            checked.CopyFrom(skel)
            for tensor_type in _shapeless(checked.graph, nodes):
                tensor_type.shape.SetInParent()
            target = checked.SerializeToString()
        else:
            target = data if data is not None else skel.SerializeToString()
    try:
        onnx.checker.check_model(target)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise InvalidModelError(
            f"{what} fails the ONNX checker: {first.rstrip('.')}. Fix or re-export the model "
            "(the full checker message is attached as the cause)."
        ) from exc
    except ValueError as exc:  # graphs over 2 GiB even without their weights
        log.debug("checker skipped: %s", exc)
        return False
    return True


#: Largest tensor (bytes) :func:`load` folds by default; bigger constants stay computed.
FOLD_MAX_BYTES = 16 << 20
#: Ops whose outputs are not functions of their inputs, or that must stay visible.
_NO_FOLD_OPS = frozenset({
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
    "Bernoulli", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
})


def _has_body(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _fold_candidates(graph: onnx.GraphProto) -> List[int]:
    """Indices of nodes computing constants from constants only (deterministic ai.onnx ops)."""
    const = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    found: List[int] = []
    for i, node in enumerate(graph.node):
        if any(o in outputs for o in node.output):
            continue  # graph outputs stay computed
        if node.domain not in ("", "ai.onnx") or node.op_type in _NO_FOLD_OPS or _has_body(node):
            continue
        if node.op_type != "Constant" and not [x for x in node.input if x]:
            continue  # e.g. ConstantOfShape without input, EyeLike: keep the model as written
        if all(x in const for x in node.input if x):
            found.append(i)
            const.update(o for o in node.output if o)
    return found


def _constant_model(graph: onnx.GraphProto, nodes: Sequence[onnx.NodeProto], outputs: Sequence[str],
                    opsets: Sequence[onnx.OperatorSetIdProto], ir_version: int,
                    base_dir: Optional[Path] = None) -> onnx.ModelProto:
    needed = {x for n in nodes for x in n.input if x}
    inits = [inline_tensor(t, base_dir) for t in graph.initializer if t.name in needed]
    g = helper.make_graph(list(nodes), "fold", [], [helper.make_empty_tensor_value_info(o) for o in outputs],
                          initializer=inits)
    return helper.make_model(g, opset_imports=list(opsets), ir_version=max(ir_version, 4))


def _unbounded(model: onnx.ModelProto, outputs: Sequence[str], max_bytes: int) -> set:
    """Outputs of ``model`` whose size shape inference cannot prove at most ``max_bytes``."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # inference is best effort: nothing is proven
        log.debug("folding: shape inference failed: %s", exc)
        return set(outputs)
    sizes: Dict[str, int] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type"):
            info = _info_from_value_info(vi)
            if info.is_static and info.dtype is not None and info.dtype.kind != "O":
                sizes[vi.name] = int(info.bytes or 0)
    return {o for o in outputs if o not in sizes or sizes[o] > max_bytes}


def _fold_graph(graph: onnx.GraphProto, opsets: Sequence[onnx.OperatorSetIdProto], ir_version: int,
                max_bytes: int, base_dir: Optional[Path] = None) -> int:
    """Replace constant subgraphs of ``graph`` (and its bodies) by initializers; returns the count.

    Values come from ONNX Runtime (graph optimizations off) running the constant subgraph as
    written, so every attribute counts and the folded value is what the runtime computes.
    Nodes whose outputs shape inference cannot bound by ``max_bytes`` stay in the graph.
    """
    count = 0
    for node in graph.node:
        for attr in node.attribute:
            for body in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs):
                count += _fold_graph(body, opsets, ir_version, max_bytes, base_dir)
    picked = _fold_candidates(graph)
    if not picked:
        return count
    nodes = [graph.node[i] for i in picked]
    while nodes:
        outs = [o for n in nodes for o in n.output if o]
        probe = _constant_model(graph, nodes, outs, opsets, ir_version, base_dir)
        too_big = _unbounded(probe, outs, max_bytes)
        if not too_big:
            break
        # Drop nodes with an unbounded output and every node reading from a dropped one.
        dropped: set = set()
        keep = []
        for n in nodes:
            if any(o in too_big for o in n.output if o) or any(x in dropped for x in n.input):
                dropped.update(n.output)
            else:
                keep.append(n)
        if dropped:
            log.info("folding: %d constant tensor(s) kept unfolded (size unknown or above %d bytes)",
                     len([o for o in dropped if o]), max_bytes)
        nodes = keep
    if not nodes:
        return count
    folded_names = {o for n in nodes for o in n.output if o}
    folded_ids = {id(n) for n in nodes}
    rest = [n for n in graph.node if id(n) not in folded_ids]
    graph_outputs = {o.name for o in graph.output}
    reads = {x for r in rest for x in _node_reads(r)}
    wanted = [o for n in nodes for o in n.output if o and o in reads]
    values: Dict[str, np.ndarray] = {}
    if wanted:
        try:
            import onnxruntime as ort

            probe = _constant_model(graph, nodes, wanted, opsets, ir_version, base_dir)
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            opts.log_severity_level = 4
            opts.intra_op_num_threads = 1
            sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
            values = dict(zip(wanted, sess.run(wanted, {})))
        except Exception as exc:  # folding is an optimisation: keep the graph as it was
            log.info("folding skipped: ONNX Runtime could not evaluate the constant subgraph: %s", exc)
            return count
    kept = [t for t in graph.initializer if t.name not in folded_names]
    used = {x for n in rest for x in _node_reads(n)} | graph_outputs
    new_inits = []
    for name in wanted:
        arr = np.asarray(values[name])
        if arr.dtype == object:
            return count  # strings and other non-numeric values stay as written
        new_inits.append(numpy_helper.from_array(arr, name))
    del graph.node[:]
    graph.node.extend(rest)
    del graph.initializer[:]
    graph.initializer.extend([t for t in kept if t.name in used] + new_inits)
    return count + len(nodes)


def _node_reads(node: onnx.NodeProto) -> List[str]:
    return [x for x in list(node.input) + sorted(_subgraph_outer_refs(node)) if x]


def _fold(proto: onnx.ModelProto, max_bytes: int = FOLD_MAX_BYTES,
          base_dir: Optional[Path] = None) -> Tuple[onnx.ModelProto, int]:
    """Fold constant subgraphs exactly (see :func:`_fold_graph`); returns the model and the count."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        log.info("onnxruntime not installed: constants not folded")
        return proto, 0
    folded = onnx.ModelProto()
    folded.CopyFrom(proto)
    n = _fold_graph(folded.graph, list(proto.opset_import), proto.ir_version, max_bytes, base_dir)
    return (folded, n) if n else (proto, 0)


def _infer_shapes(proto: onnx.ModelProto, skel: Optional[onnx.ModelProto] = None,
                 base_dir: Optional[Path] = None, what: str = "model",
                 data: Optional[bytes] = None, nodes: Optional[_Nodes] = None) -> onnx.ModelProto:
    """Shapes and dtypes of every tensor into ``proto``'s value_info (in place; returns it).

    ONNX's inference runs on the weightless copy (:func:`_skeleton`), so no weight is
    serialized or read; the inferred value_info, outputs and bodies are copied back. Its data
    propagation (shapes computed by Shape -> Gather -> Concat ... chains) runs where a node can
    read such a shape (see :data:`_SHAPES_FROM_SHAPES`).
    Past contrib ops (com.microsoft ...), ONNX Runtime's symbolic inference fills the rest
    (:mod:`trtlab.shapes`). ``nodes``: :class:`_Nodes` of ``proto.graph`` when the caller has it.
    """
    if nodes is None:
        nodes = _Nodes.of(proto.graph)
    if skel is None:
        skel = _skeleton(proto, base_dir, what, nodes)
    try:
        inferred = onnx.shape_inference.infer_shapes(
            data if data is not None else skel.SerializeToString(),
            data_prop=nodes.data_prop or len(proto.functions) > 0)
    except Exception as exc:  # inference is best effort: unknown ops, custom domains
        log.info("shape inference incomplete: %s", exc)
        inferred = skel
    if nodes.custom:
        from trtlab.shapes import infer_contrib_shapes

        inferred = infer_contrib_shapes(inferred)
    if skel is proto:
        inferred.ir_version = proto.ir_version  # may have been lowered since ``data`` was made
        return inferred  # the whole model, value_info included
    g, ig = proto.graph, inferred.graph
    del g.value_info[:]
    g.value_info.extend(ig.value_info)
    for out, new in zip(g.output, ig.output):
        out.CopyFrom(new)
    for i, node in nodes.bodies(g):
        node.CopyFrom(ig.node[i])  # bodies carry their own inferred value_info
    return proto


# ----------------------------------------------------------------------------------------------
# MACs
# ----------------------------------------------------------------------------------------------


def _prod(values: Iterable[Optional[int]]) -> Optional[int]:
    n = 1
    for v in values:
        if v is None:
            return None
        n *= v
    return n


def _dims(info: Optional[TensorInfo]) -> Optional[List[Optional[int]]]:
    if info is None or info.shape is None:
        return None
    return [d if isinstance(d, int) else 1 for d in info.shape]  # symbolic dims count as 1


def _node_macs(node: onnx.NodeProto, tensor: Any) -> int:
    op = node.op_type
    if node.domain not in ("", "ai.onnx") or op not in MAC_FORMULA_OPS:
        return 0
    ins = [tensor(x) if x else None for x in node.input]
    outs = [tensor(x) if x else None for x in node.output]
    try:
        if op in ("Conv", "ConvTranspose"):
            w = _dims(ins[1])
            if w is None:
                return 0
            if op == "Conv":
                o = _dims(outs[0])
                if o is None:
                    return 0
                return int(_prod(o) * _prod(w[1:]))  # out elements x (Cin/group * kernel)
            x = _dims(ins[0])
            if x is None:
                return 0
            return int(_prod(x) * _prod(w[1:]))  # in elements x (Cout/g * k)
        if op == "Gemm":
            a, b = _dims(ins[0]), _dims(ins[1])
            if a is None or b is None or len(a) != 2 or len(b) != 2:
                return 0
            trans_a = next((x.i for x in node.attribute if x.name == "transA"), 0)
            trans_b = next((x.i for x in node.attribute if x.name == "transB"), 0)
            m, k = (a[1], a[0]) if trans_a else (a[0], a[1])
            n = b[0] if trans_b else b[1]
            return int(m * k * n)
        if op == "MatMul":
            a, b = _dims(ins[0]), _dims(ins[1])
            o = _dims(outs[0])
            if a is None or b is None:
                return 0
            k = a[-1]
            if o is not None:
                return int(_prod(o) * k)
            m = a[-2] if len(a) > 1 else 1
            n = b[-1] if len(b) > 1 else 1
            batch = _prod(a[:-2]) or 1
            return int(batch * m * n * k)
    except (IndexError, TypeError):
        return 0
    return 0


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


class Model:
    """An ONNX model with a graph view and a node table.

    Build one with :func:`load`. The proto's node names are unique and non-empty, nodes are
    in topological order and initializers are not listed as graph inputs.

    **Weights by reference.** A model loaded from a path keeps the weights its file stores as
    external data where they are: its proto may hold tensors (initializers, and rarely
    ``Constant`` values) with ``data_location == EXTERNAL`` whose ``location`` is relative to
    :attr:`base_dir`. Analysis (shapes, support, partitioning) never reads them. Values are read
    where they are needed, through one reader: :meth:`constant_value` / :func:`tensor_value`
    (memory-mapped), :meth:`load_weights` (into the proto), :meth:`to_bytes` (a complete
    serialized copy) and :meth:`save` (a complete model with its own data file). Code that reads
    ``proto`` tensors directly must resolve such references the same way. By default
    :func:`load` also leaves the weights embedded in the ``.onnx`` file there: they become
    references to their bytes in the model file itself (``weights="file"``).

    **Files checked unchanged.** The identity (size, modification time, inode, device) of each
    file the weights are read from is recorded when the model is loaded
    (:attr:`weight_files`); reading :attr:`base_dir` (which every step reading weights, or
    handing the files to ONNX Runtime or TensorRT, does) checks the files with one ``stat``
    each and raises :class:`~trtlab.errors.ExternalDataError` when one changed: another tool
    writing a new model to the same path cannot silently give the model other weights.

    Attributes
    ----------
    proto : onnx.ModelProto
    name : str
    base_dir : pathlib.Path or None
        Folder external-data locations are relative to (the model file's folder); ``None`` when
        the model was not loaded from a file. Reading it checks :attr:`weight_files`.
    weight_files : dict
        ``{absolute path: FileIdentity}`` of the files the model reads weights from (its own
        ``.onnx`` file for weights left there, external data files), as they were when loaded.
        Models made from this one (copies, segments, transforms) carry it along.
    notes : list of str
        What :func:`load` changed or found (renamed nodes, dropped initializer inputs, ...).
    renamed : dict
        ``{new node name: original name}`` for nodes :func:`load` renamed.
    """

    def __init__(self, proto: onnx.ModelProto, *, name: Optional[str] = None,
                 path: Optional[Path] = None, notes: Sequence[str] = (),
                 renamed: Optional[Mapping[str, str]] = None,
                 base_dir: Optional[Path] = None, weight_files: Optional[Mapping[Path, FileIdentity]] = None) -> None:
        self.proto = proto
        self.name = name or proto.graph.name or "model"
        self.path = path
        self._base_dir = Path(base_dir) if base_dir is not None else (
            Path(path).parent if path is not None else None)
        self.notes = list(notes)
        self.renamed = dict(renamed or {})
        self.weight_files: WeightFiles = dict(weight_files) if weight_files is not None else \
            record_weight_files(proto, self._base_dir)

    @property
    def base_dir(self) -> Optional[Path]:
        """The folder external data locations are relative to, once :attr:`weight_files` are
        checked unchanged (:class:`~trtlab.errors.ExternalDataError` otherwise)."""
        if self.weight_files:
            self.check_weight_files()
        return self._base_dir

    @base_dir.setter
    def base_dir(self, folder: Optional[Path]) -> None:
        self._base_dir = Path(folder) if folder is not None else None
        self.weight_files = record_weight_files(self.proto, self._base_dir)

    def check_weight_files(self) -> None:
        """Raise :class:`~trtlab.errors.ExternalDataError` when a file the model reads weights
        from changed since it was loaded (one ``stat`` per file)."""
        check_weight_files(self.weight_files, f"Model {self.name!r}", self.path)

    # -- basic facts ---------------------------------------------------------------------------
    def __repr__(self) -> str:
        ins = ", ".join(f"{t.name}{list(t.shape) if t.shape is not None else ''}" for t in self.inputs)
        return (f"Model({self.name!r}, {len(self.proto.graph.node)} nodes, opset {self.opset}, "
                f"inputs: {ins})")

    def _repr_html_(self) -> str:
        hist = self.op_histogram().head(12).to_html(index=False)
        import html

        return f"<b>{html.escape(str(self.name))}</b>: {len(self.node_names)} nodes, opset {self.opset}<br>{hist}"

    @property
    def opset(self) -> Optional[int]:
        """ai.onnx opset version."""
        return _opset(self.proto)

    @cached_property
    def node_names(self) -> List[str]:
        """Node names in topological (execution) order."""
        return [n.name for n in self.proto.graph.node]

    @cached_property
    def _node_index(self) -> Dict[str, int]:
        return {n: i for i, n in enumerate(self.node_names)}

    def node(self, name: str) -> onnx.NodeProto:
        """The node called ``name``."""
        try:
            return self.proto.graph.node[self._node_index[name]]
        except KeyError:
            raise TrtlabError(
                f"No node named {name!r} in model {self.name!r} ({len(self.node_names)} nodes; "
                f"first: {self.node_names[:5]}). Node names are listed in Model.nodes."
            ) from None

    def index(self, name: str) -> int:
        """Position of node ``name`` in execution order."""
        self.node(name)
        return self._node_index[name]

    @cached_property
    def initializers(self) -> Dict[str, onnx.TensorProto]:
        """``{name: TensorProto}`` of the main graph's initializers.

        External ones are references (see the class docstring): read their values with
        :meth:`constant_value`.
        """
        return {t.name: t for t in self.proto.graph.initializer}

    @property
    def has_external_data(self) -> bool:
        """Whether the proto holds tensors whose data is still in external files."""
        return any(is_external(t) for t in _all_tensors(self.proto.graph))

    def load_weights(self) -> "Model":
        """Read every external tensor into the proto (in place); returns ``self``.

        Afterwards the model no longer depends on its data files. Most steps never need this:
        values are read where they are used.
        """
        inline_external_data(self.proto, self.base_dir)
        self.__dict__.pop("initializers", None)
        self.weight_files = {}
        return self

    @cached_property
    def _constant_outputs(self) -> set:
        return {o for n in self.proto.graph.node if n.op_type == "Constant" for o in n.output}

    def is_constant(self, tensor: str) -> bool:
        """True for initializers and outputs of ``Constant`` nodes."""
        return tensor in self.initializers or tensor in self._constant_outputs

    def constant_value(self, tensor: str) -> Optional[np.ndarray]:
        """The value of a constant tensor, or ``None`` if it is not constant.

        External weights are memory-mapped from their file (a read-only array).
        """
        if tensor in self.initializers:
            return tensor_value(self.initializers[tensor], self.base_dir)
        for n in self.proto.graph.node:
            if n.op_type == "Constant" and tensor in n.output:
                for a in n.attribute:
                    if a.name == "value":
                        return tensor_value(a.t, self.base_dir)
                    if a.name in ("value_float", "value_int"):
                        return np.array(helper.get_attribute_value(a))
                    if a.name in ("value_floats", "value_ints"):
                        return np.array(helper.get_attribute_value(a))
        return None

    @cached_property
    def _value_infos(self) -> Dict[str, list]:
        """Tensor name -> its value_info / input / output entries (shapes parsed on demand)."""
        g = self.proto.graph
        out: Dict[str, list] = {}
        for vi in (*g.value_info, *g.input, *g.output):
            out.setdefault(vi.name, []).append(vi)
        return out

    @cached_property
    def _constant_values(self) -> Dict[str, Any]:
        """Output name -> value tensor of the top-level ``Constant`` nodes."""
        return {n.output[0]: a.t for n in self.proto.graph.node if n.op_type == "Constant" and n.output
                for a in n.attribute if a.name == "value"}

    @cached_property
    def _tensor_cache(self) -> Dict[str, TensorInfo]:
        return {}

    @cached_property
    def _known_tensors(self) -> set:
        """Names of the tensors the model declares a type for (value_info, I/O, constants)."""
        return set(self._value_infos) | set(self.initializers) | set(self._constant_values)

    def _tensor_info(self, name: str) -> TensorInfo:
        init = self.initializers.get(name)
        if init is not None:
            return TensorInfo(name, tuple(int(d) for d in init.dims), init.data_type)
        best: Optional[TensorInfo] = None
        for vi in self._value_infos.get(name, ()):
            info = _info_from_value_info(vi)
            if best is None or (best.shape is None and info.shape is not None) or not best.elem_type:
                best = info
        if best is None:
            value = self._constant_values.get(name)
            if value is not None:
                best = TensorInfo(name, tuple(int(d) for d in value.dims), value.data_type)
        return best if best is not None else TensorInfo(name, None, 0)

    def tensor(self, name: str) -> TensorInfo:
        """Shape and type of tensor ``name`` (unknown parts are ``None``)."""
        info = self._tensor_cache.get(name)
        if info is None:
            info = self._tensor_cache[name] = self._tensor_info(name)
        return info

    @property
    def inputs(self) -> List[TensorInfo]:
        """Graph inputs the caller feeds (initializers excluded)."""
        inits = self.initializers
        return [self.tensor(i.name) for i in self.proto.graph.input if i.name not in inits]

    @property
    def outputs(self) -> List[TensorInfo]:
        return [self.tensor(o.name) for o in self.proto.graph.output]

    @cached_property
    def _producers(self) -> Dict[str, str]:
        return {o: n.name for n in self.proto.graph.node for o in n.output if o}

    @cached_property
    def _consumers(self) -> Dict[str, List[str]]:
        cons: Dict[str, List[str]] = defaultdict(list)
        for n in self.proto.graph.node:
            for x in dict.fromkeys(list(n.input) + sorted(outer_reads(n))):
                if x:
                    cons[x].append(n.name)
        return dict(cons)

    def producer(self, tensor: str) -> Optional[str]:
        """Name of the node producing ``tensor`` (``None`` for inputs and initializers)."""
        return self._producers.get(tensor)

    def consumers(self, tensor: str) -> List[str]:
        """Names of the nodes reading ``tensor`` (including through If/Loop bodies)."""
        return list(self._consumers.get(tensor, ()))

    def node_inputs(self, name: str) -> List[str]:
        """Tensors node ``name`` reads: its inputs plus outer-scope reads of its bodies."""
        node = self.node(name)
        return [x for x in dict.fromkeys(list(node.input) + sorted(outer_reads(node))) if x]

    # -- views ---------------------------------------------------------------------------------
    @cached_property
    def macs(self) -> Dict[str, int]:
        """Multiply-accumulate count per node (symbolic dims taken as 1; 0 for other ops)."""
        return {n.name: _node_macs(n, self.tensor) for n in self.proto.graph.node}

    @cached_property
    def graph(self) -> "Any":
        """A networkx DiGraph: nodes are ONNX node names, edges carry the tensors between them.

        Node attributes: ``op_type``, ``domain``, ``index``. Edge attributes: ``tensor``, ``shape``,
        ``dtype``, ``bytes`` (of the first tensor) and ``tensors`` (all tensor names on the edge).
        Graph attributes: ``inputs`` and ``outputs`` (tensor names).
        """
        import networkx as nx

        g = nx.DiGraph(name=self.name, inputs=[t.name for t in self.inputs],
                       outputs=[t.name for t in self.outputs])
        for i, n in enumerate(self.proto.graph.node):
            g.add_node(n.name, op_type=n.op_type, domain=n.domain, index=i)
        producers = self._producers
        for n in self.proto.graph.node:
            for x in self.node_inputs(n.name):
                src = producers.get(x)
                if src is None or src == n.name:
                    continue
                if g.has_edge(src, n.name):
                    g.edges[src, n.name]["tensors"].append(x)
                    continue
                info = self.tensor(x)
                g.add_edge(src, n.name, tensor=x, tensors=[x], shape=info.shape,
                           dtype=info.dtype_name, bytes=info.bytes)
        return g

    @cached_property
    def nodes(self) -> "Any":
        """A pandas DataFrame, one row per node in execution order.

        Columns: name, op_type, domain, inputs, outputs, output_shapes, output_dtypes, macs.
        """
        import pandas as pd

        macs = self.macs
        rows = []
        for n in self.proto.graph.node:
            outs = [self.tensor(o) for o in n.output]
            rows.append({
                "name": n.name,
                "op_type": n.op_type,
                "domain": n.domain or "ai.onnx",
                "inputs": list(n.input),
                "outputs": list(n.output),
                "output_shapes": [list(o.shape) if o.shape is not None else None for o in outs],
                "output_dtypes": [o.dtype_name for o in outs],
                "macs": int(macs[n.name]),
            })
        return pd.DataFrame(rows, columns=["name", "op_type", "domain", "inputs", "outputs",
                                           "output_shapes", "output_dtypes", "macs"])

    def op_histogram(self) -> "Any":
        """Node count and MACs per op type, most frequent first."""
        df = self.nodes
        hist = (df.groupby(["op_type", "domain"], sort=False)
                .agg(count=("name", "size"), macs=("macs", "sum")).reset_index())
        return hist.sort_values(["count", "op_type"], ascending=[False, True]).reset_index(drop=True)

    # -- symbolic dims -------------------------------------------------------------------------
    def symbolic_dim_conflicts(self) -> "Any":
        """Symbolic dimension names reused for different axes of one input.

        TensorRT treats equal ``dim_param`` names as equal sizes, so a model whose H and W are
        both ``"?"`` is built as if it were square. Returns a DataFrame (input, dim_param, axes).
        """
        import pandas as pd

        return pd.DataFrame(self._symbolic_dim_conflict_rows(), columns=["input", "dim_param", "axes"])

    def _symbolic_dim_conflict_rows(self) -> List[Dict[str, Any]]:
        return _symbolic_dim_conflicts(self.proto.graph, self.initializers)

    def rename_symbolic_dims(self) -> "Model":
        """A copy where every reused symbolic dimension gets a distinct name (``<input>_dim<axis>``)."""
        proto = copy.deepcopy(self.proto)
        fix = {(r["input"], ax) for r in self._symbolic_dim_conflict_rows() for ax in r["axes"][1:]}
        for vi in proto.graph.input:
            for ax, d in enumerate(vi.type.tensor_type.shape.dim):
                if (vi.name, ax) in fix:
                    d.dim_param = f"{vi.name}_dim{ax}"
        proto = _infer_shapes(_clear_value_info(proto), base_dir=self.base_dir, what=f"Model {self.name!r}")
        return Model(proto, name=self.name, path=self.path, base_dir=self._base_dir,
                     notes=self.notes + ["renamed reused symbolic dims"], renamed=self.renamed,
                     weight_files=self.weight_files)

    # -- output --------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Serialized complete model (external weights read in), with an IR version ONNX Runtime reads."""
        proto = self.proto
        if external_tensors(proto.graph):
            proto = _resolve_external(proto, self.base_dir)
            if proto.ByteSize() > _MAX_PROTO_BYTES:
                raise TrtlabError(
                    f"Model {self.name!r} with its weights is {proto.ByteSize() / 2**30:.1f} GiB, over "
                    "protobuf's 2 GiB limit for one serialized message. Write it with "
                    "Model.save(path) (weights go to a data file beside it) and use the path.")
        if proto.ir_version > WRITE_IR_VERSION:
            proto = fit_ir_version(copy.copy(proto))
        return proto.SerializeToString()

    def save(self, path: Union[str, os.PathLike], *, overwrite: bool = True) -> Path:
        """Write the complete model to ``path`` atomically (IR version kept readable by ONNX Runtime).

        The bytes go to a temporary file beside ``path``, are fsynced and renamed over it: a full
        disk or a kill leaves the previous file intact. A model holding external weights, or over
        1.8 GB, keeps its weights in ``<name>.data`` beside the model (written first, the same
        way; external weights are copied there from their files piece by piece, never all in
        memory), so the written model never points to data that is not there. Weights
        :func:`load` left in the model's own file are embedded again: the written model stands
        alone, as the loaded file did.

        Raises
        ------
        OutputExistsError
            ``path`` exists and ``overwrite`` is false.
        FileWriteError
            The file could not be written (disk full, read-only, permissions).
        """
        path = Path(path)
        _io.check_destination(path, overwrite=overwrite, what="model file")
        proto = self.proto
        own = external_tensors(proto.graph)
        if own and not self._in_own_file(own):
            replaced = _save_with_data(proto, self.base_dir, path, overwrite=overwrite)
            if replaced is not None:  # the file written over held weights of this model: read them from the copy
                self.proto, self.base_dir = replaced, path.parent
                self._drop_caches()
            return path
        if own:  # weights left in the model's own file: embedded again
            proto = _resolve_external(proto, self.base_dir)
        elif proto.ir_version > WRITE_IR_VERSION:
            proto = copy.deepcopy(proto)
        if proto.ir_version > WRITE_IR_VERSION:
            fit_ir_version(proto)
        over = bool(own) and _same_file(path, self.path)  # over the file the weights are read from
        if proto.ByteSize() > 1_800_000_000:
            _save_external(proto, path, overwrite=overwrite)
            if over:  # the weights are in <name>.data now
                self.proto, self.base_dir = _read_file(path), path.parent
                self._drop_caches()
        else:
            data = proto.SerializeToString()
            _io.write_bytes(path, data, overwrite=overwrite, what="model file")
            if over:  # the weights are left in the file written, at their new places
                new, _, _ = refer_to_file(proto, path.name, spans_in(data, proto))
                self.proto = new if new is not None else proto
                self.weight_files = {Path(os.path.abspath(path)): FileIdentity.of(path)} if new is not None else {}
                self._drop_caches()
        return path

    @property
    def own_location(self) -> Optional[str]:
        """The external data location naming the model's own ``.onnx`` file (where :func:`load`
        leaves embedded weights), or ``None`` when the model has no file in its :attr:`base_dir`."""
        if self.path is None or self._base_dir is None or Path(self.path).parent != self._base_dir:
            return None
        return Path(self.path).name

    def _in_own_file(self, tensors: Sequence[onnx.TensorProto]) -> bool:
        """Whether every tensor of ``tensors`` (external ones) is data left in the model's own file."""
        own = self.own_location
        return own is not None and all(in_file(t, own) for t in tensors)

    def _drop_caches(self) -> None:
        for cached in ("initializers", "_value_infos", "_constant_values"):
            self.__dict__.pop(cached, None)

    def copy(self) -> "Model":
        return Model(copy.deepcopy(self.proto), name=self.name, path=self.path, notes=self.notes,
                     renamed=self.renamed, base_dir=self._base_dir, weight_files=self.weight_files)


def _same_file(a: Path, b: Optional[Path]) -> bool:
    try:
        return b is not None and Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


#: Protobuf's limit for one serialized message.
_MAX_PROTO_BYTES = (2 << 30) - 1


def _save_external(proto: onnx.ModelProto, path: Path, *, overwrite: bool) -> None:
    """Save a large model with external weights: data file first, then the model, each atomically."""
    import tempfile

    data_name = path.name + ".data"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", suffix=_io.TEMP_MARK, dir=path.parent) as tmp:
        try:
            onnx.save_model(copy.deepcopy(proto), str(Path(tmp) / path.name), save_as_external_data=True,
                            location=data_name)
        except OSError as exc:
            raise _io._write_error(path, exc, "model file") from exc
        with _io.atomic_path(path.parent / data_name, overwrite=overwrite, what="model data file") as dst:
            os.replace(Path(tmp) / data_name, dst)
        with _io.atomic_path(path, overwrite=overwrite, what="model file") as dst:
            os.replace(Path(tmp) / path.name, dst)


def _data_file_name(path: Path, sources: Iterable[Path]) -> str:
    """``<model file name>.data``, or a numbered variant when that is a file being read."""
    taken = set()
    for src in sources:
        try:
            taken.add(src.resolve())
        except OSError:
            continue
    name, k = path.name + ".data", 1
    while (path.parent / name).resolve() in taken:
        name, k = f"{path.name}.{k}.data", k + 1
    return name


def copy_external_data(proto: onnx.ModelProto, base_dir: Optional[Path], out: Any,
                       location: str) -> onnx.ModelProto:
    """A copy of ``proto`` whose external tensors point into one new data file.

    Each external tensor's bytes are copied from its file at ``base_dir`` to the binary file
    object ``out`` (in blocks, never a whole tensor in memory; offsets aligned to 4 KiB for
    tensors of 64 KiB and more, so runtimes can map them); the copy's references name
    ``location`` with the new offsets.
    """
    result = onnx.ModelProto()
    result.CopyFrom(proto)
    pos = out.tell()
    for t in external_tensors(result.graph):
        src, offset, length = external_location(t, base_dir)
        size = length if length is not None else (_tensor_nbytes(t) or 0)
        align = 4096 if size >= 65536 else 64
        if pos % align:
            out.write(b"\0" * (align - pos % align))
            pos += align - pos % align
        with open(src, "rb") as fh:
            fh.seek(offset)
            left = size
            while left:
                block = fh.read(min(left, 16 << 20))
                if not block:
                    raise ExternalDataError(
                        f"External data file {src} ends before tensor {t.name!r} ({size - left} of "
                        f"{size} bytes). Copy the complete data file beside the model.")
                out.write(block)
                left -= len(block)
        del t.external_data[:]
        for key, value in (("location", location), ("offset", str(pos)), ("length", str(size))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        pos += size
    return result


def _save_with_data(proto: onnx.ModelProto, base_dir: Optional[Path], path: Path, *,
                    overwrite: bool) -> Optional[onnx.ModelProto]:
    """Save a model holding external references: its weights copied to ``<name>.data`` beside it.

    Returns the written model (references to the new data file) when ``path`` was itself a file
    the references read (a model whose weights are left in its own file, saved over it), else ``None``.
    """
    sources = [external_location(t, base_dir)[0] for t in external_tensors(proto.graph)]
    try:
        over_source = path.resolve() in {s.resolve() for s in sources}
    except OSError:
        over_source = False
    data_name = _data_file_name(path, sources)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _io.atomic_path(path.parent / data_name, overwrite=overwrite, what="model data file") as dst:
        try:
            with open(dst, "wb") as fh:
                written = copy_external_data(proto, base_dir, fh, data_name)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise _io._write_error(path.parent / data_name, exc, "model data file") from exc
    fit_ir_version(written)
    _io.write_bytes(path, written.SerializeToString(), overwrite=overwrite, what="model file")
    return written if over_source else None


def _symbolic_dim_conflicts(graph: onnx.GraphProto, skip: Any) -> List[Dict[str, Any]]:
    """Rows of :meth:`Model.symbolic_dim_conflicts` for the inputs of ``graph`` not in ``skip``."""
    rows: List[Dict[str, Any]] = []
    for vi in graph.input:
        if vi.name in skip:
            continue
        t = _info_from_value_info(vi)
        if t.shape is None:
            continue
        axes: Dict[str, List[int]] = defaultdict(list)
        for ax, d in enumerate(t.shape):
            if isinstance(d, str):
                axes[d].append(ax)
        rows += [{"input": t.name, "dim_param": p, "axes": a} for p, a in axes.items() if len(a) > 1]
    return rows


def _sorted(proto: onnx.ModelProto, what: str, nodes: "_Nodes") -> "_Nodes":
    """Sort ``proto``'s nodes (see :func:`_toposort`); ``nodes`` itself when the order holds,
    else the :class:`_Nodes` of the new order."""
    if _in_order(proto.graph):
        return nodes
    _toposort(proto.graph, what)
    return _Nodes.of(proto.graph)


def _clear_value_info(proto: onnx.ModelProto) -> onnx.ModelProto:
    del proto.graph.value_info[:]
    return proto


# ----------------------------------------------------------------------------------------------
# load
# ----------------------------------------------------------------------------------------------

Source = Union[str, os.PathLike, bytes, bytearray, memoryview, "onnx.ModelProto", Model, Any]


def load(source: Source, *, fold_constants: bool = False, shape_inference: bool = True,
         example_inputs: Any = None, name: Optional[str] = None, opset: int = 17,
         rename_symbolic_dims: bool = False, fold_max_bytes: int = FOLD_MAX_BYTES,
         weights: str = "file") -> Model:
    """Load an ONNX model.

    Parameters
    ----------
    source
        A path to a ``.onnx`` file (external data stays in its files beside the model, as
        references checked to exist but not read; see :class:`Model`), the model's bytes,
        an ``onnx.ModelProto``, a :class:`Model`, or a ``torch.nn.Module`` (needs
        ``example_inputs=``; exported at ``opset``).
    fold_constants
        Replace constant subgraphs (nodes computing from constants only, ``Constant`` nodes
        included) by initializers. Off by default: the model is kept as written. The values
        come from ONNX Runtime running the subgraph as written, so folding is exact; nodes in
        custom domains, random ops, Q/DQ, nodes with bodies and nodes producing graph outputs
        stay.
    fold_max_bytes
        Largest folded tensor in bytes; a constant subgraph whose size shape inference cannot
        bound by it (e.g. ``ConstantOfShape`` of a huge shape) stays computed.
    shape_inference
        Run ONNX shape inference so tensors carry shapes and dtypes.
    example_inputs
        Example tensors for a ``torch.nn.Module``.
    name
        Model name (default: file stem or graph name).
    rename_symbolic_dims
        Give reused symbolic dimension names distinct names (see
        :meth:`Model.symbolic_dim_conflicts`).
    weights
        Where a model loaded from a path keeps the weights embedded in its ``.onnx`` file:
        ``"file"`` (default) leaves them there, each initializer or ``Constant`` value of at
        least 16 KiB (:data:`LEAVE_MIN_BYTES`) a reference to its bytes in the file (read, memory-mapped, only by the steps
        that need values; ONNX Runtime and TensorRT read them from the file), so the model holds
        no copy of them and ONNX Runtime's session of the model is the one copy in memory;
        ``"memory"`` keeps them in ``Model.proto``. Either way the model computes the same, and
        the identity of every file weights are read from (the model file, external data files)
        is recorded and checked before each read (:attr:`Model.weight_files`): a file changed
        since loading raises :class:`~trtlab.errors.ExternalDataError`. Steps that change
        weights (precision transforms, folding, edits) make in-memory tensors;
        :meth:`Model.save` and :meth:`Model.to_bytes` embed the weights again.

    Returns
    -------
    Model

    Raises
    ------
    ModelLoadError
        Missing file, not an ONNX file, truncated file, unreadable IR version, no example inputs.
    InvalidModelError
        Dangling input, cycle, checker failure; :class:`UnsupportedOpsetError` for old opsets.
    ExternalDataError
        External weights missing, too short, outside the model's folder, or referenced by a
        model not loaded from a file; a :class:`Model` given whose weight files changed.
    """
    if weights not in ("file", "memory"):
        raise ModelLoadError(f"load(weights={weights!r}): pass weights='file' (leave the weights embedded in "
                             "the model's file there, read where needed) or weights='memory' (hold them in "
                             "Model.proto).")
    with _collection_held(not _is_torch_module(source)):  # an export makes garbage of its own
        return _load(source, fold_constants=fold_constants, shape_inference=shape_inference,
                     example_inputs=example_inputs, name=name, opset=opset,
                     rename_symbolic_dims=rename_symbolic_dims, fold_max_bytes=fold_max_bytes,
                     weights=weights)


@contextlib.contextmanager
def _collection_held(hold: bool = True) -> Iterator[None]:
    """Hold off Python's cyclic garbage collector while :func:`load` runs (restored after).

    Walking a graph creates and drops one short-lived Python object per node and tensor;
    reference counting frees them, but with the collector on their allocations also start
    full collections over every object of the process (onnx's and the caller's), which cost
    more than the walks. Cyclic garbage, if any, is collected once the collector runs again.
    """
    if not hold or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _load(source: Source, *, fold_constants: bool = False, shape_inference: bool = True,
         example_inputs: Any = None, name: Optional[str] = None, opset: int = 17,
         rename_symbolic_dims: bool = False, fold_max_bytes: int = FOLD_MAX_BYTES,
         weights: str = "file") -> Model:
    """:func:`load` (with the collector held off)."""
    path: Optional[Path] = None
    base_dir: Optional[Path] = None
    maybe_external = True
    known: WeightFiles = {}  # identities recorded before the files were read
    spans: Mapping[Tuple[str, str], Tuple[int, int]] = {}  # where the file keeps large raw tensors
    # The bytes ``proto`` was parsed from, while nothing has changed it: the checker and shape
    # inference read them instead of a serialization of ``proto``.
    written: Optional[bytes] = None
    if isinstance(source, Model):
        base_dir = source.base_dir  # checks the files the model reads weights from
        proto, what = copy.deepcopy(source.proto), f"Model {source.name!r}"
        name = name or source.name
        known = dict(source.weight_files)
    elif isinstance(source, onnx.ModelProto):
        proto, what = copy.deepcopy(source), "The given ModelProto"
    elif isinstance(source, (bytes, bytearray, memoryview)):
        written = bytes(source)
        proto, what = _parse_bytes(written, "The given bytes"), "The given bytes"
        maybe_external = b"location" in written  # see the path case
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        try:
            identity: Optional[FileIdentity] = FileIdentity.of(path)
        except OSError:
            identity = None  # the read names the problem
        written = _read_model_bytes(path)
        proto, what = _parse_bytes(written, f"File {path}"), f"Model {path}"
        if weights == "file" and identity is not None and len(written) >= LEAVE_MIN_BYTES:
            spans = spans_in(written, proto, LEAVE_MIN_BYTES)  # before load changes anything
            if spans:
                known[Path(os.path.abspath(path))] = identity
        # Every external tensor names its file under the key "location": without those bytes
        # in the file, no tensor is external and nodes need not be searched for one.
        maybe_external = b"location" in written
        name = name or path.stem
        base_dir = path.parent
    elif _is_torch_module(source):
        proto = _from_torch(source, example_inputs, opset)
        what = f"The export of {type(source).__name__}"
        name = name or type(source).__name__
    else:
        raise ModelLoadError(
            f"trtlab.load cannot read a {type(source).__name__}. Pass a path to a .onnx file, its "
            "bytes, an onnx.ModelProto, a trtlab Model or a torch.nn.Module with example_inputs=."
        )

    if proto.ir_version > onnx.IR_VERSION:
        raise ModelLoadError(
            f"{what} has ONNX IR version {proto.ir_version}; the installed onnx {onnx.__version__} reads "
            f"up to IR {onnx.IR_VERSION}. Upgrade onnx (pip install -U onnx), or re-export the model."
        )
    notes: List[str] = []
    _check_opset(proto, what)
    if (_opset(proto) or MIN_OPSET) < MIN_OPSET:
        notes.append(f"ai.onnx opset {_opset(proto)} is older than TensorRT's ONNX parser reads "
                     f"(>= {MIN_OPSET}): every node is a fallback (ONNX Runtime) node. Convert the model "
                     "(onnx.version_converter.convert_version(model, 17)) to give TensorRT a part.")
    negative = _name_negative_dims(proto.graph)
    if negative:
        notes.append(f"{len(negative)} dim(s) declared as -1 treated as dynamic ({', '.join(negative[:4])})")
    dropped = _strip_initializer_inputs(proto.graph)
    if dropped:
        notes.append(f"dropped {len(dropped)} initializer(s) listed as graph inputs (IR-4 style)")
        if proto.ir_version < 4:
            # IR 3 requires every initializer to be a graph input; IR 4 lifts that rule and
            # reads the model the same way (an initializer is a constant either way).
            notes.append(f"IR version {proto.ir_version} raised to 4 (initializers need not be graph inputs)")
            proto.ir_version = 4
    nodes = _Nodes.of(proto.graph)  # the one walk over the nodes; indices hold until a sort
    renamed = _unique_node_names(proto.graph, nodes.names)
    if renamed:
        notes.append(f"renamed {len(renamed)} node(s) with empty or duplicate names")
    # External weights stay in their files: each is checked to exist and be long enough, and
    # the checker and shape inference see the graph without any weight (see _skeleton).
    attribute_external = [t for node in proto.graph.node if node.attribute
                          for t in _node_tensors(node) if is_external(t)] if maybe_external else []
    for t in attribute_external:
        _check_external(t, base_dir, what)
    if attribute_external:
        nodes = _sorted(proto, what, nodes)
    if negative or dropped or renamed or attribute_external:
        written = None
    skel = _skeleton(proto, base_dir, what, nodes)
    data = written if skel is proto and written is not None else skel.SerializeToString()
    del written
    # The checker proves nodes are in topological order; they are sorted only when it refuses.
    try:
        checked = _check_model(skel, what, data=data, path=path, attribute_external=bool(attribute_external),
                               nodes=nodes)
    except InvalidModelError:
        before = nodes
        nodes = _sorted(proto, what, nodes)  # names a dangling input or a cycle
        if nodes is before:
            raise
        skel = _skeleton(proto, base_dir, what, nodes)
        data = skel.SerializeToString()
        checked = _check_model(skel, what, data=data, nodes=nodes)
    if not checked:
        before = nodes
        nodes = _sorted(proto, what, nodes)
        if nodes is not before:
            skel, data = _skeleton(proto, base_dir, what, nodes), None
    if proto.ir_version > WRITE_IR_VERSION:
        before = proto.ir_version
        fit_ir_version(proto)
        if proto.ir_version != before:
            notes.append(f"IR version {before} lowered to {proto.ir_version} so ONNX Runtime reads it")
    if fold_constants:
        n_before = len(proto.graph.node)
        proto, n_folded = _fold(proto, fold_max_bytes, base_dir)
        if n_folded:
            skel, data, nodes = None, None, None
            notes.append(f"constant folding: {n_folded} node(s) folded into initializers "
                         f"({n_before} -> {len(proto.graph.node)} top-level nodes)")
    if shape_inference:
        proto = _infer_shapes(proto, skel, base_dir, what, data, nodes)
    skel = data = nodes = None  # type: ignore[assignment]
    left = False
    if spans:
        # Every tensor kept under a name the file's spans have is the one parsed from the file's
        # bytes: load changes no tensor (folding drops nodes and adds initializers named after
        # node outputs, never after an initializer or a kept Constant).
        new, count, moved = refer_to_file(proto, path.name, spans, None, LEAVE_MIN_BYTES)  # type: ignore[union-attr]
        if new is not None:
            proto, left = new, True
            notes.append(left_note(count, moved, path.name))  # type: ignore[union-attr]
    files = record_weight_files(proto, base_dir, known) if maybe_external else \
        (dict(known) if left else {})
    model = Model(proto, name=name, path=path, notes=notes, renamed=renamed, base_dir=base_dir, weight_files=files)
    conflicts = _symbolic_dim_conflicts(proto.graph, ())  # load dropped initializers from the inputs
    if conflicts:
        desc = "; ".join(f"{r['input']}: '{r['dim_param']}' on axes {r['axes']}" for r in conflicts)
        if rename_symbolic_dims:
            model = model.rename_symbolic_dims()
        else:
            msg = (f"{what} reuses a symbolic dimension name for different axes ({desc}); TensorRT "
                   "assumes such axes are equal. Use load(..., rename_symbolic_dims=True) or "
                   "Model.rename_symbolic_dims() to give each axis its own name.")
            model.notes.append(msg)
            warnings.warn(msg, TrtlabWarning, stacklevel=3)  # the caller of load()
    for note in model.notes:
        log.info("%s: %s", model.name, note)
    return model


def node_reads(node: onnx.NodeProto) -> List[str]:
    """Every tensor ``node`` reads: its inputs, then what its bodies read from outside (no blanks)."""
    return [x for x in dict.fromkeys(list(node.input) + sorted(outer_reads(node))) if x]


#: Former name of :func:`outer_reads`.
_subgraph_outer_refs = outer_reads
