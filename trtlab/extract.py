"""Turn a segment of a partition into a standalone ONNX model, and write a partition to disk.

A segment model holds the segment's nodes (in execution order), the initializers they read
(directly or from If/Loop/Scan bodies), copies of ``Constant`` nodes of other segments whose
values it reads, typed inputs and outputs with shapes where known, the value_info of its
internal tensors, and the original model's opset imports and local functions. Tensors that
bodies read from the enclosing scope become segment inputs when another segment makes them.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Union

from trtlab._lazy import lazy_import
from trtlab.errors import PartitionError
from trtlab.model import external_location, external_tensors, fit_ir_version, inline_external_data

#: A :class:`~trtlab.partitioning.partitioner.Partition` (not imported: the partitioner imports this module).
Partition = Any

log = logging.getLogger(__name__)

np = lazy_import("numpy")
onnx = lazy_import("onnx")
helper = lazy_import("onnx.helper")
numpy_helper = lazy_import("onnx.numpy_helper")

__all__ = ["segment_model", "write_partition"]


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
    proto = inline_external_data(copy.deepcopy(model.proto), getattr(model, "base_dir", None))
    known = {o.name for o in proto.graph.output}
    untyped = [o for n in proto.graph.node for o in n.output
               if o and o not in known and (not model.tensor(o).elem_type or model.tensor(o).shape is None)]
    for name in untyped:
        proto.graph.output.add().name = name
    found: Dict[str, tuple] = {}
    try:
        outputs = session(proto, ["CPUExecutionProvider"]).get_outputs()
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
        for name, (elem, shape) in _symbolic_types(model.proto, still).items():
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


def _symbolic_types(proto: onnx.ModelProto, names: List[str]) -> Dict[str, tuple]:
    """Types and shapes from ONNX Runtime's symbolic shape inference (follows Loop/Scan bodies)."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        proto = copy.deepcopy(proto)
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


def segment_model(partition: "Partition", index: int, *, resolve_external: bool = True) -> onnx.ModelProto:
    """Segment ``index`` of ``partition`` as a standalone, checker-valid ONNX model.

    Parameters
    ----------
    partition
        A :class:`~trtlab.partitioning.partitioner.Partition`.
    index
        Segment index (position in :attr:`Partition.segments`).
    resolve_external
        Read the weights the model keeps as external data into the segment (a complete model).
        With ``False`` they stay references relative to the model's ``base_dir`` (the
        :class:`~trtlab.model.Model` contract); :func:`write_partition` puts the data files
        beside the segments.

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
    value_info = [copy.deepcopy(vi) for vi in graph.value_info if vi.name in internal]

    body = helper.make_graph(
        [copy.deepcopy(n) for n in foreign_constants + nodes],
        f"{model.name}_{seg.name}", inputs, outputs,
        initializer=[copy.deepcopy(t) for t in initializers], value_info=value_info,
        sparse_initializer=[copy.deepcopy(s) for s in sparse])
    proto = helper.make_model(body, opset_imports=list(model.proto.opset_import),
                              producer_name="trtlab", ir_version=model.proto.ir_version)
    proto.functions.extend(model.proto.functions)
    proto.doc_string = f"Segment {seg.name} ({seg.backend}) of {model.name}: {len(nodes)} node(s)"
    if resolve_external:
        inline_external_data(proto, getattr(model, "base_dir", None))
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


def _write_csv(path: Path, columns: Any, rows: Any) -> None:
    """A table as CSV (what ``DataFrame.to_csv(index=False)`` writes; None is an empty cell)."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)


def write_partition(partition: "Partition", out_dir: Union[str, os.PathLike], *,
                    overwrite: bool = False) -> Dict[str, Path]:
    """Write every segment model plus ``summary.csv``, ``boundaries.csv``, ``decisions.csv`` and
    ``partition.json`` to ``out_dir``, atomically.

    Everything is written to a temporary folder beside ``out_dir``, fsynced, listed in
    ``MANIFEST.json`` (sizes and sha256) and swapped in whole: a full disk or a kill leaves the
    previous folder (or none), never a mix. Segment files are named
    ``<index>_<segment name>.onnx`` (index zero-padded).

    Weights the model keeps as external data stay external: the segments reference them at
    their original relative locations, and those data files are copied into ``out_dir`` by the
    kernel (no weight passes through this process's memory), so every segment loads in onnx
    and ONNX Runtime from the folder. (onnx and ONNX Runtime refuse hard and symbolic links to
    data files, so a copy it is.)

    Parameters
    ----------
    overwrite
        Replace an existing non-empty ``out_dir`` written by trtlab. Without it an existing
        non-empty folder is refused before anything is computed; an empty one is filled.

    Returns
    -------
    dict
        ``{file name: path}`` of everything written.

    Raises
    ------
    OutputExistsError
        ``out_dir`` is a file, or a non-empty folder and ``overwrite`` is false.
    FileWriteError
        The folder could not be written (disk full, read-only); nothing existing was changed.
    """
    from trtlab import _io

    out = Path(out_dir)
    _io.check_destination(out, overwrite=overwrite, folder=True, what="partition")
    width = max(2, len(str(max(len(partition.segments) - 1, 0))))
    names = [segment_file_name(seg.index, seg.name, width) for seg in partition.segments]
    if len(set(names)) != len(names):
        raise PartitionError(f"Segment file names collide: {names}. Give the segments distinct names.")
    # Everything is computed before the folder is touched.
    protos = {name: segment_model(partition, seg.index, resolve_external=False)
              for name, seg in zip(names, partition.segments)}
    base_dir = getattr(partition.model, "base_dir", None)
    data_files: Dict[str, Path] = {}
    for proto in protos.values():
        for t in external_tensors(proto.graph):
            location = next(e.value for e in t.external_data if e.key == "location")
            data_files.setdefault(Path(location).as_posix(), external_location(t, base_dir)[0])
    blobs = {name: proto.SerializeToString() for name, proto in protos.items()}
    del protos
    tables = partition.table_rows()
    text = partition.to_json(indent=1)
    clash = set(data_files) & (set(blobs) | set(tables) | {"partition.json", _io.MANIFEST})
    if clash:
        raise PartitionError(f"External data file(s) {sorted(clash)} of {partition.model.name!r} have the "
                             "name of a partition file. Rename the data file(s) and their locations.")
    with _io.atomic_dir(out, overwrite=overwrite, what="partition",
                        meta={"content": "trtlab partition", "segments": len(names)}) as tmp:
        for name, blob in blobs.items():
            with open(tmp / name, "wb") as fh:
                fh.write(blob)
        for name, (columns, rows) in tables.items():
            _write_csv(tmp / name, columns, rows)
        with open(tmp / "partition.json", "w", encoding="utf-8") as fh:
            fh.write(text)
        for rel, src in data_files.items():
            _copy_data_file(src, tmp / rel)
    written = {name: out / name for name in list(blobs) + list(tables) + ["partition.json", _io.MANIFEST]
               + list(data_files)}
    log.info("wrote %d segment model(s) and tables to %s", len(partition.segments), out)
    return written


def _copy_data_file(src: Path, dst: Path) -> None:
    """Copy the external data file ``src`` to ``dst`` (in the kernel where the OS can)."""
    import shutil

    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
