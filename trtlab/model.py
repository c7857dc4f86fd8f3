"""Import an ONNX model: :func:`load` and :class:`Model`.

:func:`load` reads a model from a path, bytes, an ``onnx.ModelProto`` or a ``torch.nn.Module``,
checks it, makes node names unique, folds constants, infers shapes and returns a :class:`Model`:
the ONNX proto plus a networkx graph view and a pandas node table.

Examples
--------
>>> import trtlab
>>> m = trtlab.load("data/digits_cnn.onnx")            # doctest: +SKIP
>>> m.nodes[["name", "op_type", "macs"]].head()       # doctest: +SKIP
"""

from __future__ import annotations

import copy
import io
import logging
import os
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import (
    ExternalDataError,
    InvalidModelError,
    MissingDependencyError,
    ModelLoadError,
    TrtlabError,
    UnsupportedOpsetError,
)

log = logging.getLogger(__name__)

__all__ = ["load", "Model", "TensorInfo", "TrtlabWarning", "MIN_OPSET", "WRITE_IR_VERSION"]

#: Oldest ai.onnx opset the tool chain takes (TensorRT's ONNX parser starts at opset 9).
MIN_OPSET = 9
#: trtlab writes models with at most this IR version, so older ONNX Runtime releases read them.
WRITE_IR_VERSION = 10

#: Ops whose multiply-accumulate count :class:`Model` computes.
MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: Explicit quantization ops; constant folding would fold their weights back to float.
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


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
        if d.HasField("dim_value"):
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
        raise ModelLoadError(
            f"{what} is not an ONNX file: it parses as protobuf but has no "
            f"{'IR version' if proto.ir_version == 0 else 'graph' if not proto.HasField('graph') else 'opset import'}. "
            "Pass the path of a .onnx model exported by an ONNX exporter."
        )
    return proto


def _read_path(path: Path) -> onnx.ModelProto:
    if not path.exists():
        near = sorted(p.name for p in path.parent.glob("*.onnx"))[:10] if path.parent.is_dir() else []
        hint = f" ONNX files in {path.parent}: {', '.join(near)}." if near else ""
        raise ModelLoadError(f"Model file not found: {path}.{hint} Check the path.")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder, not an ONNX file. Pass the path of a .onnx file.")
    proto = _parse_bytes(path.read_bytes(), f"File {path}")
    uses_external = any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer
    )
    if uses_external:
        try:
            onnx.external_data_helper.load_external_data_for_model(proto, str(path.parent))
        except (FileNotFoundError, OSError, ValueError, onnx.checker.ValidationError) as exc:
            files = sorted({
                e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"
            })
            raise ExternalDataError(
                f"Model {path} keeps weights in external data file(s) {files}, which could not be read "
                f"from {path.parent} ({exc}). Put the data file(s) beside the model, "
                "or load the model from its original folder."
            ) from exc
    return proto


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
# Normalising
# ----------------------------------------------------------------------------------------------


def _unique_node_names(graph: onnx.GraphProto) -> Dict[str, str]:
    """Give every node a unique, non-empty name; returns ``{new: old}`` for the renamed ones."""
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


def _subgraph_outer_refs(node: onnx.NodeProto) -> set:
    """Tensors a node's If/Loop/Scan bodies read from the enclosing scope."""
    refs: set = set()
    for attr in node.attribute:
        bodies = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for body in bodies:
            local = _outer_names(body)
            for n in body.node:
                local.update(n.output)
            for n in body.node:
                refs.update(x for x in n.input if x not in local)
                refs.update(r for r in _subgraph_outer_refs(n) if r not in local)
            refs.update(o.name for o in body.output if o.name not in local)
    return refs


def _toposort(graph: onnx.GraphProto, what: str) -> None:
    """Sort nodes topologically in place; raise on dangling inputs and cycles."""
    available = _outer_names(graph)
    producer: Dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for out in node.output:
            if out:
                producer[out] = i
    deps: List[set] = []
    for i, node in enumerate(graph.node):
        needed = [x for x in node.input if x not in available]
        needed += [x for x in _subgraph_outer_refs(node) if x not in available]
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
    inits = {t.name for t in graph.initializer}
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
    if opset < MIN_OPSET:
        raise UnsupportedOpsetError(
            f"{what} uses ai.onnx opset {opset}; the tool chain (TensorRT's ONNX parser) needs opset "
            f">= {MIN_OPSET}. Convert it first: onnx.version_converter.convert_version(model, 17), "
            "or pass the converted model to trtlab.load."
        )
    if opset > newest:
        raise UnsupportedOpsetError(
            f"{what} uses ai.onnx opset {opset}, newer than the installed onnx {onnx.__version__} "
            f"knows (<= {newest}). Upgrade onnx (pip install -U onnx) or re-export at opset 17."
        )


def _shapeless(graph: onnx.GraphProto) -> List[Any]:
    """Tensor types without a shape field (rank unknown) in ``graph`` and its bodies."""
    found = [vi.type.tensor_type for vi in [*graph.input, *graph.output, *graph.value_info]
             if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape")]
    for node in graph.node:
        for attr in node.attribute:
            for body in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs):
                found += _shapeless(body)
    return found


def _check_model(proto: onnx.ModelProto, what: str) -> None:
    # Newer checkers refuse rank-unknown tensors, which runtimes accept: check the model with an
    # empty shape in their place, so every other check still runs.
    shapeless = _shapeless(proto.graph)
    if shapeless:
        log.info("%s: %d tensor(s) have no shape (rank unknown)", what, len(shapeless))
    for tensor_type in shapeless:
        tensor_type.shape.SetInParent()
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise InvalidModelError(
            f"{what} fails the ONNX checker: {first.rstrip('.')}. Fix or re-export the model "
            "(the full checker message is attached as the cause)."
        ) from exc
    except ValueError as exc:  # models over 2 GiB
        log.debug("checker skipped: %s", exc)
    finally:
        for tensor_type in shapeless:
            tensor_type.ClearField("shape")


def _fold(proto: onnx.ModelProto) -> onnx.ModelProto:
    try:
        import onnx_graphsurgeon as gs
    except ImportError:
        log.info("onnx-graphsurgeon not installed: constants not folded")
        return proto
    try:
        graph = gs.import_onnx(proto)
        # Bodies import without an IR version; folding exports them at onnx's newest IR, which
        # ONNX Runtime may not read, and then leaves their constants unfolded.
        for body in graph.subgraphs(recursive=True):
            body.ir_version = body.ir_version or graph.ir_version
        # Flattening If nodes with a constant condition drops outputs of nested multi-output
        # Ifs (onnx-graphsurgeon 0.5, e.g. silero-vad's decoder), so branches are kept.
        graph.fold_constants(error_ok=True, flatten_subgraphs=False).cleanup().toposort()
        folded = gs.export_onnx(graph, do_type_check=False)
    except Exception as exc:  # folding is an optimisation: keep the model as it was
        log.warning("constant folding failed, the model is kept unfolded: %s", exc)
        return proto
    folded.ir_version = proto.ir_version
    del folded.opset_import[:]
    folded.opset_import.extend(proto.opset_import)
    for field_name in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(folded, field_name, getattr(proto, field_name))
    del folded.metadata_props[:]
    folded.metadata_props.extend(proto.metadata_props)
    # graphsurgeon keeps value_info only for tensors it knows; re-run shape inference later.
    return folded


def _infer_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception as exc:  # inference is best effort: unknown ops, custom domains
        log.info("shape inference incomplete: %s", exc)
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
    if node.domain not in ("", "ai.onnx") or op not in MAC_OPS:
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

    Attributes
    ----------
    proto : onnx.ModelProto
    name : str
    notes : list of str
        What :func:`load` changed or found (renamed nodes, dropped initializer inputs, ...).
    renamed : dict
        ``{new node name: original name}`` for nodes :func:`load` renamed.
    """

    def __init__(self, proto: onnx.ModelProto, *, name: Optional[str] = None,
                 path: Optional[Path] = None, notes: Sequence[str] = (),
                 renamed: Optional[Mapping[str, str]] = None) -> None:
        self.proto = proto
        self.name = name or proto.graph.name or "model"
        self.path = path
        self.notes = list(notes)
        self.renamed = dict(renamed or {})

    # -- basic facts ---------------------------------------------------------------------------
    def __repr__(self) -> str:
        ins = ", ".join(f"{t.name}{list(t.shape) if t.shape is not None else ''}" for t in self.inputs)
        return (f"Model({self.name!r}, {len(self.proto.graph.node)} nodes, opset {self.opset}, "
                f"inputs: {ins})")

    def _repr_html_(self) -> str:
        hist = self.op_histogram().head(12).to_html(index=False)
        return f"<b>{self.name}</b>: {len(self.node_names)} nodes, opset {self.opset}<br>{hist}"

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
        return {t.name: t for t in self.proto.graph.initializer}

    @cached_property
    def _constant_outputs(self) -> set:
        return {o for n in self.proto.graph.node if n.op_type == "Constant" for o in n.output}

    def is_constant(self, tensor: str) -> bool:
        """True for initializers and outputs of ``Constant`` nodes."""
        return tensor in self.initializers or tensor in self._constant_outputs

    def constant_value(self, tensor: str) -> Optional[np.ndarray]:
        """The value of a constant tensor, or ``None`` if it is not constant."""
        if tensor in self.initializers:
            return numpy_helper.to_array(self.initializers[tensor])
        for n in self.proto.graph.node:
            if n.op_type == "Constant" and tensor in n.output:
                for a in n.attribute:
                    if a.name == "value":
                        return numpy_helper.to_array(a.t)
                    if a.name in ("value_float", "value_int"):
                        return np.array(helper.get_attribute_value(a))
                    if a.name in ("value_floats", "value_ints"):
                        return np.array(helper.get_attribute_value(a))
        return None

    @cached_property
    def _tensors(self) -> Dict[str, TensorInfo]:
        g = self.proto.graph
        out: Dict[str, TensorInfo] = {}
        for vi in list(g.value_info) + list(g.input) + list(g.output):
            info = _info_from_value_info(vi)
            prev = out.get(vi.name)
            if prev is None or (prev.shape is None and info.shape is not None) or not prev.elem_type:
                out[vi.name] = info
        for t in g.initializer:
            out[t.name] = TensorInfo(t.name, tuple(int(d) for d in t.dims), t.data_type)
        for n in g.node:
            if n.op_type == "Constant":
                for a in n.attribute:
                    if a.name == "value" and n.output:
                        out.setdefault(n.output[0], TensorInfo(
                            n.output[0], tuple(int(d) for d in a.t.dims), a.t.data_type))
        return out

    def tensor(self, name: str) -> TensorInfo:
        """Shape and type of tensor ``name`` (unknown parts are ``None``)."""
        return self._tensors.get(name, TensorInfo(name, None, 0))

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
            for x in dict.fromkeys(list(n.input) + sorted(_subgraph_outer_refs(n))):
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
        return [x for x in dict.fromkeys(list(node.input) + sorted(_subgraph_outer_refs(node))) if x]

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

        rows = []
        for t in self.inputs:
            if t.shape is None:
                continue
            axes: Dict[str, List[int]] = defaultdict(list)
            for ax, d in enumerate(t.shape):
                if isinstance(d, str):
                    axes[d].append(ax)
            rows += [{"input": t.name, "dim_param": p, "axes": a} for p, a in axes.items() if len(a) > 1]
        return pd.DataFrame(rows, columns=["input", "dim_param", "axes"])

    def rename_symbolic_dims(self) -> "Model":
        """A copy where every reused symbolic dimension gets a distinct name (``<input>_dim<axis>``)."""
        proto = copy.deepcopy(self.proto)
        conflicts = self.symbolic_dim_conflicts()
        fix = {(r.input, ax) for r in conflicts.itertuples() for ax in r.axes[1:]}
        for vi in proto.graph.input:
            for ax, d in enumerate(vi.type.tensor_type.shape.dim):
                if (vi.name, ax) in fix:
                    d.dim_param = f"{vi.name}_dim{ax}"
        proto = _infer_shapes(_clear_value_info(proto))
        return Model(proto, name=self.name, path=self.path,
                     notes=self.notes + ["renamed reused symbolic dims"], renamed=self.renamed)

    # -- output --------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Serialized model, with an IR version ONNX Runtime reads."""
        proto = self.proto
        if proto.ir_version > WRITE_IR_VERSION:
            proto = fit_ir_version(copy.copy(proto))
        return proto.SerializeToString()

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write the model to ``path`` (IR version kept readable by ONNX Runtime)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        proto = fit_ir_version(copy.deepcopy(self.proto)) if self.proto.ir_version > WRITE_IR_VERSION \
            else self.proto
        if proto.ByteSize() > 1_800_000_000:
            onnx.save_model(proto, str(path), save_as_external_data=True,
                            location=path.name + ".data")
        else:
            path.write_bytes(proto.SerializeToString())
        return path

    def copy(self) -> "Model":
        return Model(copy.deepcopy(self.proto), name=self.name, path=self.path, notes=self.notes,
                     renamed=self.renamed)


def _clear_value_info(proto: onnx.ModelProto) -> onnx.ModelProto:
    del proto.graph.value_info[:]
    return proto


# ----------------------------------------------------------------------------------------------
# load
# ----------------------------------------------------------------------------------------------

Source = Union[str, os.PathLike, bytes, bytearray, memoryview, onnx.ModelProto, Model, Any]


def load(source: Source, *, fold_constants: bool = True, shape_inference: bool = True,
         example_inputs: Any = None, name: Optional[str] = None, opset: int = 17,
         rename_symbolic_dims: bool = False) -> Model:
    """Load an ONNX model.

    Parameters
    ----------
    source
        A path to a ``.onnx`` file (external data is read from its folder), the model's bytes,
        an ``onnx.ModelProto``, a :class:`Model`, or a ``torch.nn.Module`` (needs
        ``example_inputs=``; exported at ``opset``).
    fold_constants
        Fold constant subgraphs with onnx-graphsurgeon (``Constant`` nodes become initializers).
    shape_inference
        Run ONNX shape inference so tensors carry shapes and dtypes.
    example_inputs
        Example tensors for a ``torch.nn.Module``.
    name
        Model name (default: file stem or graph name).
    rename_symbolic_dims
        Give reused symbolic dimension names distinct names (see
        :meth:`Model.symbolic_dim_conflicts`).

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
        External weights missing.
    """
    path: Optional[Path] = None
    if isinstance(source, Model):
        proto, what = copy.deepcopy(source.proto), f"Model {source.name!r}"
        name = name or source.name
    elif isinstance(source, onnx.ModelProto):
        proto, what = copy.deepcopy(source), "The given ModelProto"
    elif isinstance(source, (bytes, bytearray, memoryview)):
        proto, what = _parse_bytes(bytes(source), "The given bytes"), "The given bytes"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        proto, what = _read_path(path), f"Model {path}"
        name = name or path.stem
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
    negative = _name_negative_dims(proto.graph)
    if negative:
        notes.append(f"{len(negative)} dim(s) declared as -1 treated as dynamic ({', '.join(negative[:4])})")
    dropped = _strip_initializer_inputs(proto.graph)
    if dropped:
        notes.append(f"dropped {len(dropped)} initializer(s) listed as graph inputs (IR-4 style)")
    renamed = _unique_node_names(proto.graph)
    if renamed:
        notes.append(f"renamed {len(renamed)} node(s) with empty or duplicate names")
    _toposort(proto.graph, what)
    _check_model(proto, what)
    if proto.ir_version > WRITE_IR_VERSION:
        before = proto.ir_version
        fit_ir_version(proto)
        if proto.ir_version != before:
            notes.append(f"IR version {before} lowered to {proto.ir_version} so ONNX Runtime reads it")
    if fold_constants and any(n.op_type in QDQ_OPS for n in proto.graph.node):
        notes.append("constant folding skipped: the model has explicit Q/DQ nodes, which folding "
                     "would turn back into float weights")
    elif fold_constants:
        n_before = len(proto.graph.node)
        proto = _fold(proto)
        if len(proto.graph.node) != n_before:
            notes.append(f"constant folding: {n_before} -> {len(proto.graph.node)} nodes")
    if shape_inference:
        proto = _infer_shapes(proto)
    model = Model(proto, name=name, path=path, notes=notes, renamed=renamed)
    conflicts = model.symbolic_dim_conflicts()
    if len(conflicts):
        desc = "; ".join(f"{r.input}: '{r.dim_param}' on axes {r.axes}" for r in conflicts.itertuples())
        if rename_symbolic_dims:
            model = model.rename_symbolic_dims()
        else:
            msg = (f"{what} reuses a symbolic dimension name for different axes ({desc}); TensorRT "
                   "assumes such axes are equal. Use load(..., rename_symbolic_dims=True) or "
                   "Model.rename_symbolic_dims() to give each axis its own name.")
            model.notes.append(msg)
            warnings.warn(msg, TrtlabWarning, stacklevel=2)
    for note in model.notes:
        log.info("%s: %s", model.name, note)
    return model
