"""Turn a segment of a partition into a standalone ONNX model, and write a partition to disk.

A segment model holds the segment's nodes (in execution order), the initializers they read
(directly or from If/Loop/Scan bodies), copies of ``Constant`` nodes of other segments whose
values it reads, typed inputs and outputs with shapes where known, the value_info of its
internal tensors, and the original model's opset imports and local functions. Tensors that
bodies read from the enclosing scope become segment inputs when another segment makes them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple, Union

from trtlab._lazy import lazy_import
from trtlab.errors import PartitionError
from trtlab.model import _all_tensors, fit_ir_version, in_file, set_inline
from trtlab.weights import (STUB_MIN_BYTES, _is_stub, _nbytes, base_dir, external_info, has_external, is_external,
                            light_constant, materialize, stub, tensor_bytes)

#: A :class:`~trtlab.partitioning.partitioner.Partition` (not imported: the partitioner imports this module).
Partition = Any

log = logging.getLogger(__name__)

np = lazy_import("numpy")
onnx = lazy_import("onnx")
helper = lazy_import("onnx.helper")
numpy_helper = lazy_import("onnx.numpy_helper")

__all__ = ["segment_model", "write_partition", "weights_mode", "referenced_files", "WEIGHT_MODES", "FolderPlan",
           "folder_plan", "write_planned"]


def _reads(model, node: onnx.NodeProto) -> List[str]:
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return model.node_inputs(node.name)
    return [t for t in node.input if t]


def _value_info(partition: "Partition", name: str, role: str, seg_name: str) -> onnx.ValueInfoProto:
    model = partition.model
    info = model.tensor(name)
    elem, shape = info.elem_type, info.shape
    if not elem:
        # Sequences and optionals cross a cut with their full type (ONNX Runtime segments only).
        non_tensor = _declared_types(model).get(name) or _runtime_non_tensors(partition).get(name)
        if non_tensor is not None:
            vi = onnx.ValueInfoProto(name=name)
            vi.type.CopyFrom(non_tensor)
            return vi
    if not elem or shape is None:
        rt_elem, rt_shape = _runtime_types(partition).get(name, (0, None))
        elem, shape = elem or rt_elem, shape if shape is not None else rt_shape
    if not elem:
        raise PartitionError(
            f"Segment {seg_name}: {role} tensor {name!r} has no known element type (neither ONNX "
            "shape inference nor ONNX Runtime could infer it), so the segment model cannot declare "
            "it. Add value_info with its type to the model and load it again.")
    dims = None if shape is None else [d if isinstance(d, (int, str)) else None for d in shape]
    return helper.make_tensor_value_info(name, elem, dims)


def _declared_types(model: Any) -> Dict[str, onnx.TypeProto]:
    """Sequence / optional / map types the model declares (value_info, inputs, outputs)."""
    g = model.proto.graph
    return {vi.name: vi.type for vi in [*g.value_info, *g.input, *g.output]
            if vi.type.WhichOneof("value") not in (None, "tensor_type")}


def _ort_type(text: str) -> Optional[onnx.TypeProto]:
    """ONNX Runtime's type string (``seq(tensor(float))``, ``optional(...)``) as a TypeProto."""
    for prefix, make in (("seq(", helper.make_sequence_type_proto),
                         ("optional(", helper.make_optional_type_proto)):
        if text.startswith(prefix) and text.endswith(")"):
            inner = _ort_type(text[len(prefix):-1])
            return None if inner is None else make(inner)
    if text.startswith("tensor(") and text.endswith(")"):
        try:
            return helper.make_tensor_type_proto(onnx.TensorProto.DataType.Value(text[7:-1].upper()), None)
        except ValueError:
            return None
    return None


def _runtime_non_tensors(partition: "Partition") -> Dict[str, onnx.TypeProto]:
    _runtime_types(partition)
    return getattr(partition, "_runtime_non_tensors", {})


def _runtime_types(partition: "Partition") -> Dict[str, tuple]:
    """Types and shapes ONNX Runtime infers where ONNX shape inference gave none (contrib ops)."""
    cached = getattr(partition, "_runtime_types", None)
    if cached is not None:
        return cached
    from trtlab.backends.onnxruntime.session import session

    model = partition.model
    proto = copy.deepcopy(model.proto)  # external weights stay references: the session reads them
    known = {o.name for o in proto.graph.output}
    untyped = [o for n in proto.graph.node for o in n.output
               if o and o not in known and (not model.tensor(o).elem_type or model.tensor(o).shape is None)]
    for name in untyped:
        proto.graph.output.add().name = name
    found: Dict[str, tuple] = {}
    try:
        outputs = session(proto, ["CPUExecutionProvider"], base_dir=base_dir(model)).get_outputs()
    except Exception as exc:  # best effort: the caller reports the untyped tensor
        log.info("ONNX Runtime type inference failed: %s", exc)
        outputs = []
    non_tensors: Dict[str, onnx.TypeProto] = {}
    for out in outputs:
        if not out.type.startswith("tensor("):
            tp = _ort_type(out.type)
            if tp is not None:
                non_tensors[out.name] = tp
            continue
        type_name = out.type[len("tensor("):-1] if out.type.startswith("tensor(") else ""
        try:
            elem = onnx.TensorProto.DataType.Value(type_name.upper())
        except ValueError:
            continue
        # ONNX Runtime reports [] both for scalars and for tensors of unknown rank.
        shape = None if not out.shape else tuple(
            None if (isinstance(d, str) and d.startswith("unk__")) else d for d in out.shape)
        found[out.name] = (elem, shape)
    still = [t for t in untyped if found.get(t, (0, None))[1] is None or not found[t][0]]
    # Symbolic inference merges If branches dim by dim and ignores a rank mismatch: its ranks
    # for If outputs and everything computed from them are guesses, so they are not used.
    still = [t for t in still if not _after_if(model, t)]
    if still:
        for name, (elem, shape) in _symbolic_types(model.proto, still, getattr(model, "base_dir", None)).items():
            old_elem, old_shape = found.get(name, (0, None))
            found[name] = (old_elem or elem, old_shape if old_shape is not None else shape)
    partition._runtime_types = found
    partition._runtime_non_tensors = non_tensors
    return found


def _after_if(model: Any, tensor: str) -> bool:
    """Whether ``tensor`` is an If output or computed from one."""
    import networkx as nx

    producer = model.producer(tensor)
    if producer is None:
        return False
    graph = model.graph
    ifs = [n for n, op in graph.nodes(data="op_type") if op == "If"]
    return any(n == producer or producer in nx.descendants(graph, n) for n in ifs)


def _symbolic_types(proto: onnx.ModelProto, names: List[str], base: Any = None) -> Dict[str, tuple]:
    """Types and shapes from ONNX Runtime's symbolic shape inference (follows Loop/Scan bodies).

    It reads ``Constant`` values: those kept as external data (in ``base``) are read into its copy.
    """
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        from trtlab.model import inline_tensor

        proto = copy.deepcopy(proto)
        for node in proto.graph.node:
            if node.op_type == "Constant" and base is not None:
                for attr in node.attribute:
                    if attr.HasField("t") and is_external(attr.t):
                        attr.t.CopyFrom(inline_tensor(attr.t, base))
        _name_omitted_loop_inputs(proto.graph)
        inferred = _symbolic_infer(SymbolicShapeInference, proto)
    except Exception as exc:  # best effort, like ONNX shape inference
        log.info("symbolic shape inference failed: %s", exc)
        return {}
    wanted = set(names)
    found: Dict[str, tuple] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.name not in wanted or not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        shape = None
        if tt.HasField("shape"):
            shape = tuple(d.dim_value if d.HasField("dim_value") else
                          (d.dim_param if d.dim_param and not d.dim_param.startswith("unk__") else None)
                          for d in tt.shape.dim)
        found[vi.name] = (tt.elem_type, shape)
    return found


def _symbolic_infer(engine: Any, proto: onnx.ModelProto) -> onnx.ModelProto:
    """``SymbolicShapeInference.infer_shapes`` without its side effect.

    On incomplete inference ONNX Runtime's own ``infer_shapes`` saves the model into the working
    directory; changing directory around it would move every thread of a notebook kernel. The
    same steps run here, and incomplete inference raises without writing anything.
    """
    opset = next((int(i.version) for i in proto.opset_import if i.domain in ("", "ai.onnx")), 0)
    if opset < 7:
        raise ValueError("symbolic shape inference needs opset 7 or newer")
    infer = engine(2 ** 31 - 1, True, False, 0)  # int_max, auto_merge, guess_output_rank, verbose
    complete = False
    infer._preprocess(proto)
    while infer.run_:
        complete = infer._infer_impl()
    infer._update_output_from_vi()
    if not complete:
        raise ValueError("incomplete symbolic shape inference")
    return infer.out_mp_


def _name_omitted_loop_inputs(graph: onnx.GraphProto) -> None:
    """Give omitted Loop trip counts and conditions a constant (in place).

    ONNX Runtime's symbolic shape inference looks up the type of every Loop input by name and
    fails on an omitted (empty) one; the values only serve type inference.
    """
    for node in graph.node:
        if node.op_type == "Loop":
            for pos, value in ((0, np.array(1, np.int64)), (1, np.array(True))):
                if len(node.input) > pos and not node.input[pos]:
                    name = f"{node.name}__omitted_input{pos}"
                    graph.initializer.append(numpy_helper.from_array(value, name))
                    node.input[pos] = name
        for attr in node.attribute:
            for body in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs):
                _name_omitted_loop_inputs(body)


def segment_model(partition: "Partition", index: int, *, weights: str = "embed") -> onnx.ModelProto:
    """Segment ``index`` of ``partition`` as a standalone, checker-valid ONNX model.

    Parameters
    ----------
    partition
        A :class:`~trtlab.partitioning.partitioner.Partition`.
    index
        Segment index (position in :attr:`Partition.segments`).
    weights
        ``"embed"`` (default): every initializer's data is in the returned model (a copy; external
        data is read from the model's folder). ``"reference"``: the model's weights are not copied:
        initializers the model keeps in external data stay references to that data (relative to
        the model's folder), and embedded ones of at least
        :data:`~trtlab.weights.STUB_MIN_BYTES` are stubs without data that
        :meth:`trtlab.weights.Weights.fill` restores; so are the values of such ``Constant``
        nodes.

    Returns
    -------
    onnx.ModelProto
        Inputs are the segment's :attr:`~trtlab.partitioning.partitioner.Segment.inputs`, outputs its
        :attr:`~trtlab.partitioning.partitioner.Segment.outputs`; IR version readable by ONNX Runtime.

    Raises
    ------
    PartitionError
        Unknown index, or a boundary tensor without a known type.
    """
    if weights not in ("embed", "reference"):
        raise PartitionError(f"weights={weights!r}: use 'embed' (a standalone model) or 'reference'.")
    segments = partition.segments
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(segments):
        raise PartitionError(f"No segment {index!r}: partition of {partition.model.name!r} has segments "
                             f"0..{len(segments) - 1} ({[s.name for s in segments]}).")
    seg = segments[index]
    model = partition.model
    graph = model.proto.graph
    inside: Set[str] = set(seg.nodes)
    nodes = [model.node(n) for n in seg.nodes]

    reads: Dict[str, None] = {}
    for node in nodes:
        reads.update(dict.fromkeys(_reads(model, node)))
    produced = {o for node in nodes for o in node.output if o}
    foreign_constants: List[onnx.NodeProto] = []
    seen_const: Set[str] = set()
    for t in reads:
        if t in produced or t in model.initializers:
            continue
        p = model.producer(t)
        if p is not None and p not in inside and p not in seen_const and model.node(p).op_type == "Constant":
            seen_const.add(p)
            foreign_constants.append(model.node(p))
    initializers = [model.initializers[t] for t in reads if t in model.initializers and t not in produced]
    sparse = [s for s in graph.sparse_initializer if s.values.name in reads]

    inputs = [_value_info(partition, t, "input", seg.name) for t in seg.inputs]
    outputs = [_value_info(partition, t, "output", seg.name) for t in seg.outputs]
    boundary = set(seg.inputs) | set(seg.outputs)
    internal = produced - boundary
    value_info = [vi for vi in graph.value_info if vi.name in internal]
    if weights == "reference":
        initializers = [stub(t) if is_external(t) or _nbytes(t) >= STUB_MIN_BYTES else t for t in initializers]
        foreign_constants = [light_constant(n) for n in foreign_constants]
        nodes = [light_constant(n) for n in nodes]

    # make_graph copies what it is given into the new graph (one copy, none for stubs)
    body = helper.make_graph(
        foreign_constants + nodes, f"{model.name}_{seg.name}", inputs, outputs,
        initializer=initializers, value_info=value_info, sparse_initializer=sparse)
    proto = helper.make_model(body, opset_imports=list(model.proto.opset_import),
                              producer_name="trtlab", ir_version=model.proto.ir_version)
    proto.functions.extend(model.proto.functions)
    proto.doc_string = f"Segment {seg.name} ({seg.backend}) of {model.name}: {len(nodes)} node(s)"
    if weights == "embed" and has_external(proto):
        proto = materialize(proto, base_dir(model))
    return fit_ir_version(proto)


def segment_file_name(index: int, name: str, width: int) -> str:
    """File name of a segment model: ``<index>_<name>.onnx``, refusing names unsafe as file names."""
    if (not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name
            or len(name.encode("utf-8", "surrogatepass")) > 200):
        raise PartitionError(
            f"Segment {index} is named {name!r}, which is not a safe file name (empty, '.', '..', a "
            "'/' or '\\', a NUL byte, or over 200 bytes). Segment names come from the partition "
            "(or its JSON): rename the segment.")
    return f"{index:0{width}d}_{name}.onnx"


def _csv_text(columns: Any, rows: Any) -> str:
    """A table as CSV (what ``DataFrame.to_csv(index=False)`` writes; None is an empty cell)."""
    import csv
    import io

    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return out.getvalue()


#: How :func:`write_partition` stores the weights: ``"auto"`` picks one of the other two.
WEIGHT_MODES = ("auto", "copy", "reference")


def weights_mode(model: Any, weights: str = "auto") -> str:
    """The weight mode :func:`write_partition` uses for ``model``: ``"copy"`` or ``"reference"``.

    ``"auto"`` is ``"reference"`` when the model keeps weights as external data in files beside
    it (a 1 GiB model is partitioned without copying 1 GiB), else ``"copy"``.

    Raises
    ------
    PartitionError
        An unknown mode, or ``"reference"`` for a model with no external data to refer to.
    """
    if weights not in WEIGHT_MODES:
        raise PartitionError(f"weights={weights!r} is not a weight mode; use one of {list(WEIGHT_MODES)} "
                             "('copy': the folder holds every weight; 'reference': segments refer to the "
                             "model's external data files in place; 'auto': reference when there are any).")
    own = getattr(model, "own_location", None)  # weights load() left in the model file count as embedded
    external = any(is_external(t) and not in_file(t, own) for t in _all_tensors(model.proto.graph)) and \
        base_dir(model) is not None
    if weights == "auto":
        return "reference" if external else "copy"
    if weights == "reference" and not external:
        raise PartitionError(
            f"weights='reference': model {model.name!r} keeps no weights as external data files, so "
            "there is nothing to refer to. Use weights='copy' (--weights copy), or save the model with "
            "external data first (trtlab.load(path).save('folder/model.onnx') writes model.data beside it) "
            "and partition that file.")
    return weights


def referenced_files(model: Any, protos: Any = None) -> Dict[str, Dict[str, int]]:
    """``{location: {"bytes": size, "mtime_ns": modification time}}`` of the external data files
    the model's tensors (or only those of ``protos``, segment models) refer to, relative to the
    model's folder. A cheap fingerprint: the files are not read.

    Raises
    ------
    ExternalDataError
        A referenced file is missing.
    """
    from trtlab.errors import ExternalDataError
    from trtlab.model import external_location, external_tensors

    base = base_dir(model)
    graphs = [model.proto.graph] if protos is None else [p.graph for p in protos]
    files: Dict[str, Dict[str, int]] = {}
    for graph in graphs:
        for tensor in external_tensors(graph):
            location = external_info(tensor)["location"]
            if location in files:
                continue
            path = external_location(tensor, base)[0]
            try:
                st = os.stat(path)
            except OSError as exc:
                raise ExternalDataError(
                    f"Model {model.name!r} reads weights from {path}, which cannot be read ({exc.strerror}). "
                    "Put the data file back beside the model, or load the model again.") from exc
            files[location] = {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    return dict(sorted(files.items()))


def _weights_record(partition: "Partition", mode: str, protos: Any) -> Dict[str, Any]:
    """The ``weights`` entry of ``partition.json``: where the weights are and how to check them."""
    model = partition.model
    path = getattr(model, "path", None)
    source = None
    if path is not None and Path(path).is_file():
        st = os.stat(path)
        source = {"path": str(Path(path).resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    record: Dict[str, Any] = {"mode": mode, "model_file": source}
    if mode == "reference":
        record["folder"] = str(Path(base_dir(model)).resolve())
        record["files"] = referenced_files(model, protos)
    else:
        record["folder"] = None
        record["files"] = {}
    return record


def _check_reference_target(partition: "Partition", out: Path, mode: str) -> None:
    """Refuse a reference partition written over the folder that holds the weights it refers to."""
    if mode != "reference":
        return
    weights = Path(base_dir(partition.model)).resolve()
    target = out.resolve()
    if weights == target or target in weights.parents:
        raise PartitionError(
            f"The partition would be written to {out}, which holds the weights its segments refer to "
            f"({weights}): replacing the folder would delete them. Write it to another folder, or use "
            "weights='copy' (--weights copy) for a folder with its own copy of the weights.")


def _inline_embedded(protos: Any, sources: Dict[str, onnx.TensorProto], base: Any, own: Optional[str]) -> None:
    """Fill stubs of weights the model holds embedded, or left in its own file ``own`` (in place):
    a reference partition refers only to the model's external data files, and embeds the rest."""
    for proto in protos:
        for name, tensor in _stubs(proto):
            if not is_external(tensor):
                tensor.raw_data = bytes(_raw(sources[name], base))
            elif in_file(tensor, own):
                set_inline(tensor, bytes(_raw(sources[name], base)))


def write_partition(partition: "Partition", out_dir: Union[str, os.PathLike], *,
                    overwrite: bool = False, weights: str = "auto") -> Dict[str, Path]:
    """Write every segment model plus ``summary.csv``, ``boundaries.csv``, ``decisions.csv`` and
    ``partition.json`` to ``out_dir``, atomically.

    Where the weights go (``weights``):

    ``"copy"``
        The folder is self-contained. Weights (initializers and ``Constant`` values) of at least
        :data:`~trtlab.weights.STUB_MIN_BYTES` are written once, as external data in
        ``weights.data`` shared by the segment files (each initializer once, even when several
        segments read it; offsets aligned to 4096 bytes); smaller ones stay embedded. Each segment
        file loads with ``onnx.load(path)`` or ``onnxruntime.InferenceSession(path)`` from the
        folder, also after the original model is deleted. Weights are streamed from the model
        (its external data is memory-mapped, never read whole).
    ``"reference"``
        Nothing is copied: the segments refer to the model's external data files where they
        are, at their original relative locations (weights the model holds embedded stay
        embedded in the segments). ``partition.json`` records that folder and each referenced
        file's size and modification time; :func:`trtlab.read_partition` checks them and gives
        ONNX Runtime and TensorRT's parser that folder. The segment files alone do not load with
        ``onnx.load(path)`` (it looks for the data beside them): read them with
        :func:`trtlab.partition_folder.segment_file`, or write the folder with ``"copy"``.
    ``"auto"`` (default)
        ``"reference"`` when the model keeps weights as external data, else ``"copy"``
        (:func:`weights_mode`).

    Everything is written to a temporary folder beside ``out_dir``, fsynced, listed in
    ``MANIFEST.json`` (sizes and sha256 of the files the folder holds; referenced weights are
    not read) and swapped in whole: a full disk or a kill leaves the previous folder (or none),
    never a mix. Segment files are named ``<index>_<segment name>.onnx`` (index zero-padded).

    Parameters
    ----------
    overwrite
        Replace an existing non-empty ``out_dir`` written by trtlab. Without it an existing
        non-empty folder is refused before anything is computed; an empty one is filled.
    weights
        ``"auto"``, ``"copy"`` or ``"reference"`` (see above).

    Returns
    -------
    dict
        ``{file name: path}`` of everything written.

    Raises
    ------
    OutputExistsError
        ``out_dir`` is a file, or a non-empty folder and ``overwrite`` is false.
    PartitionError
        An unknown weight mode, ``"reference"`` for a model without external data, or
        ``"reference"`` into the folder that holds the model's weights.
    FileWriteError
        The folder could not be written (disk full, read-only); nothing existing was changed.
    """
    mode = weights_mode(partition.model, weights)
    out = _check_target(partition, out_dir, mode, overwrite)  # before the plan's work
    return _write_folder(folder_plan(partition, mode), out, overwrite=overwrite)


@dataclass
class FolderPlan:
    """Everything :func:`write_partition` writes, computed before the folder is touched (the
    weights stay where they are until written): made by :func:`folder_plan`, written by
    :func:`write_partition`. The ``trtlab`` command makes one while the parser runs."""

    partition: "Partition"
    mode: str
    blobs: Dict[str, bytes] = field(repr=False)
    layout: Dict[str, Tuple[int, int]] = field(repr=False)
    sources: Dict[str, onnx.TensorProto] = field(repr=False)
    base: Any = field(repr=False)
    tables: Dict[str, Any] = field(repr=False)
    text: str = field(repr=False)
    weights_record: Dict[str, Any] = field(repr=False)


def folder_plan(partition: "Partition", mode: str) -> FolderPlan:
    """The files of ``partition``'s folder with weights ``mode`` (``"copy"`` or ``"reference"``)."""
    width = max(2, len(str(max(len(partition.segments) - 1, 0))))
    names = [segment_file_name(seg.index, seg.name, width) for seg in partition.segments]
    if len(set(names)) != len(names):
        raise PartitionError(f"Segment file names collide: {names}. Give the segments distinct names.")
    protos = {name: segment_model(partition, seg.index, weights="reference")
              for name, seg in zip(names, partition.segments)}
    sources = _weight_sources(partition.model)
    base = base_dir(partition.model)
    if mode == "reference":
        _inline_embedded(protos.values(), sources, base, getattr(partition.model, "own_location", None))
        layout: Dict[str, Tuple[int, int]] = {}
    else:
        layout = _weights_layout(sources, protos.values())
    doc = partition._json_doc()
    doc["weights"] = _weights_record(partition, mode, protos.values())
    blobs = {name: proto.SerializeToString() for name, proto in protos.items()}
    del protos
    return FolderPlan(partition, mode, blobs, layout, sources, base, partition.table_rows(),
                      json.dumps(doc, indent=1), doc["weights"])


def _write_folder(plan: FolderPlan, out: Path, *, overwrite: bool) -> Dict[str, Path]:
    """Write ``plan`` to ``out`` atomically; ``{file name: path}`` of everything written."""
    from trtlab import _io

    layout, blobs, tables = plan.layout, plan.blobs, plan.tables
    known: Dict[str, Tuple[int, str]] = {}  # what the MANIFEST lists, hashed from memory
    with _io.atomic_dir(out, overwrite=overwrite, what="partition", known=known,
                        meta={"content": "trtlab partition", "segments": len(blobs), "weights": plan.mode}) as tmp:
        if layout:
            known[WEIGHTS_FILE] = _write_weights(plan.sources, plan.base, layout, tmp / WEIGHTS_FILE)
        for name, blob in blobs.items():
            _io.put(tmp, name, blob, known)
        for name, (columns, rows) in tables.items():
            _io.put(tmp, name, _csv_text(columns, rows), known)
        _io.put(tmp, "partition.json", plan.text, known)
    extra = [WEIGHTS_FILE] if layout else []
    written = {name: out / name for name in list(blobs) + extra + list(tables) + ["partition.json", _io.MANIFEST]}
    log.info("wrote %d segment model(s) and tables to %s (weights: %s)", len(blobs), out,
             "copied into " + WEIGHTS_FILE if layout else
             f"referenced in {plan.weights_record['folder']}" if plan.mode == "reference" else "embedded")
    return written


def write_planned(plan: FolderPlan, out_dir: Union[str, os.PathLike], *, overwrite: bool = False) -> Dict[str, Path]:
    """:func:`write_partition` of a plan made before (same checks, same files)."""
    return _write_folder(plan, _check_target(plan.partition, out_dir, plan.mode, overwrite), overwrite=overwrite)


def _check_target(partition: "Partition", out_dir: Union[str, os.PathLike], mode: str, overwrite: bool) -> Path:
    """The checks of a partition folder's destination, made before any work: it may be written
    (:func:`trtlab._io.check_destination`), and a reference partition is not written over the
    folder of the weights it refers to."""
    from trtlab import _io

    out = Path(out_dir)
    _io.check_destination(out, overwrite=overwrite, folder=True, what="partition")
    _check_reference_target(partition, out, mode)
    return out


#: The external data file :func:`write_partition` writes beside the segment models.
WEIGHTS_FILE = "weights.data"
_ALIGN = 4096


def _weight_sources(model: Any) -> Dict[str, onnx.TensorProto]:
    """Tensor name -> the model's tensor holding its data: initializers and large ``Constant`` values."""
    from trtlab.weights import Weights

    sources = dict(Weights.of(model).constants)
    sources.update(model.initializers)
    return sources


def _stubs(proto: onnx.ModelProto) -> Any:
    """(tensor name, tensor) of every stub and external reference in ``proto`` (initializers, Constants)."""
    for tensor in proto.graph.initializer:
        if is_external(tensor) or _is_stub(tensor):
            yield tensor.name, tensor
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR and \
                        (is_external(attr.t) or _is_stub(attr.t)):
                    yield node.output[0], attr.t


def _weights_layout(sources: Dict[str, onnx.TensorProto], protos: Any) -> Dict[str, Tuple[int, int]]:
    """Point every stub and external reference of ``protos`` at :data:`WEIGHTS_FILE` (in place).

    Returns ``{tensor name: (offset, length)}`` in file order; each tensor once.
    """
    layout: Dict[str, Tuple[int, int]] = {}
    end = 0
    for proto in protos:
        for name, tensor in _stubs(proto):
            if name not in layout:
                length = _raw_length(sources[name])
                offset = -(-end // _ALIGN) * _ALIGN
                layout[name] = (offset, length)
                end = offset + length
            offset, length = layout[name]
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(length))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
    return layout


def _raw_length(tensor: onnx.TensorProto) -> int:
    if is_external(tensor):
        length = external_info(tensor).get("length")
        if length:
            return int(length)
    return _nbytes(tensor)


def _raw(tensor: onnx.TensorProto, base: Any) -> Any:
    """The tensor's little-endian bytes (a memory map for external data)."""
    if is_external(tensor) or tensor.HasField("raw_data"):
        return tensor_bytes(tensor, base)
    return numpy_helper.from_array(numpy_helper.to_array(tensor)).raw_data


def _write_weights(sources: Dict[str, onnx.TensorProto], base: Any, layout: Dict[str, Tuple[int, int]],
                   path: Path) -> Tuple[int, str]:
    """Stream the weights of ``layout`` (in file order, as :func:`_weights_layout` makes it) from
    the model into ``path``, one tensor at a time; the file's size and sha256 (the gaps between
    tensors read as zeros)."""
    import hashlib

    digest = hashlib.sha256()
    end = 0
    with open(path, "wb") as fh:
        for name, (offset, length) in layout.items():
            data = _raw(sources[name], base)
            if len(data) != length:
                raise PartitionError(f"Tensor {name!r} has {len(data)} bytes of data, but its type and "
                                     f"shape need {length}: the model's weights are inconsistent.")
            view = memoryview(data)
            fh.seek(offset)
            digest.update(bytes(offset - end))  # the gap (a layout out of order raises here)
            for start in range(0, length, _COPY_CHUNK):
                # one copy written and hashed: a source changing meanwhile cannot make them differ
                chunk = bytes(view[start:start + _COPY_CHUNK])
                fh.write(chunk)
                digest.update(chunk)
            end = offset + length
    return end, digest.hexdigest()


#: Bytes of weights copied (and hashed) at a time by :func:`_write_weights`.
_COPY_CHUNK = 1 << 22
