"""Support ground truth from TensorRT's own ONNX parser (either flavor, no GPU needed).

``OnnxParser.supports_model_v2`` parses the model and reports subgraphs (lists of node
indices) and errors (node index, operator, description, code). Its answer needs reading with
care, and :func:`parse_support` turns it into one verdict per node:

* ``is_subgraph_supported(i)`` is ``False`` for every subgraph once any node failed. It means
  "not verified as a whole", not "unsupported": the listed nodes are the ones the parser
  accepted, and the rejected nodes are the gaps between subgraphs.
* Errors carry a node index into ``model.graph.node``. Errors inside an ``If``/``Loop``/``Scan``
  body are reported at the control-flow node; an index that does not match the node name is
  resolved through the name (older parsers) and, failing that, kept as a graph-level error.
* The parser runs cheap static checks on every node but imports nodes into a network only up
  to the first failure, and an import failure stops parsing altogether. Nodes after the first
  failure are therefore listed in a subgraph without having been imported. With
  ``recheck=True`` (default) the not-yet-imported rest of the graph is parsed again, as its own
  model, until every node has been imported or rejected; each extra run is counted in
  ``ParserReport.passes``. With ``recheck=False`` those nodes are reported as accepted with a
  reason saying the parser did not import them.
* Quantized graphs (``ConvInteger``, ``DynamicQuantizeLinear``, ``com.microsoft`` ops) give
  many small subgraphs; each node still gets its own reason.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from trtlab._lazy import Deferred, Later, lazy_import, resolved_state
from trtlab._wire import length_delimited, varint
from trtlab.errors import SupportError
from trtlab.model import node_reads, set_field
from trtlab.opinfo import ElemType

log = logging.getLogger(__name__)

onnx = lazy_import("onnx")
helper = lazy_import("onnx.helper")

__all__ = ["ParserVerdict", "ParserReport", "parse_support"]


@dataclass(frozen=True)
class ParserVerdict:
    """The parser's answer for one node of the main graph."""

    index: int
    name: str
    op_type: str
    supported: bool
    reason: str
    code: Optional[str] = None
    subgraph: Optional[int] = None


@dataclass(frozen=True)
class ParserReport:
    """Everything :func:`parse_support` learned from the parser.

    Attributes
    ----------
    flavor, version : which TensorRT parsed
    all_supported : the first ``supports_model_v2`` call returned True
    passes : number of parser runs (1 + re-checks)
    subgraphs : node indices of each subgraph of the first run
    verified : ``is_subgraph_supported(i)`` of the first run
    verdicts : one :class:`ParserVerdict` per node, in graph order
    graph_errors : errors the parser did not tie to a node (inputs, outputs)
    seconds : wall time of all parser runs
    """

    flavor: str
    version: str
    all_supported: bool
    passes: int
    subgraphs: Tuple[Tuple[int, ...], ...]
    verified: Tuple[bool, ...]
    verdicts: Tuple[ParserVerdict, ...] = Deferred()  # type: ignore[assignment]
    graph_errors: Tuple[str, ...] = field(default_factory=tuple)
    seconds: float = 0.0

    __getstate__ = resolved_state  # copies and pickles hold the verdicts


@dataclass
class _Run:
    ok: bool
    subgraphs: List[List[int]]
    verified: List[bool]
    errors: List[Tuple[int, str, str, str, str, str]]  # index, name, op, code, desc, file


def _clean(text: str) -> str:
    """Parser text without the CUDA-runtime noise TensorRT-RTX appends on a machine without GPU."""
    from trtlab.backends.tensorrt.flavor import clean_message

    return clean_message(text)


def _run_parser(data: bytes, path: Optional[str] = None, made: Optional[Tuple[Any, ...]] = None) -> _Run:
    """One ``supports_model_v2`` call; ``path`` locates external weights (never read here).
    ``made``: a fresh (builder, network, parser, logger) of ``make_parser(quiet_logger())`` made
    ahead (a parser worker makes the next one while it waits), else one is made here."""
    from trtlab.backends.tensorrt import flavor as _trt

    # all four stay alive while the parser runs
    builder, network, parser, logger = made if made is not None else _trt.make_parser(_trt.quiet_logger())
    del made
    try:
        ok = bool(parser.supports_model_v2(data, path))
    except TypeError:
        ok = bool(parser.supports_model_v2(data))
    subgraphs = [list(parser.get_subgraph_nodes(i)) for i in range(parser.num_subgraphs)]
    verified = [bool(parser.is_subgraph_supported(i)) for i in range(parser.num_subgraphs)]
    errors = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        code = str(e.code()).split(".")[-1]
        errors.append((int(e.node()), str(e.node_name()), str(e.node_operator()), code,
                       _clean(str(e.desc())), str(e.file())))
    del parser, network, builder, logger
    return _Run(ok, subgraphs, verified, errors)


#: The reason of a node the parser imported on its first pass.
ACCEPTED = "accepted by the parser"


#: Re-check windows (nodes per extra parser run): each run parses a window of the undecided nodes,
#: so a graph the parser stops in many times is re-parsed in linear, not quadratic, time.
_FIRST_WINDOW = 256
_MIN_WINDOW = 32


@functools.lru_cache(maxsize=None)
def _type_of() -> Dict[str, int]:
    """``"tensor(float)"`` -> ``onnx.TensorProto.FLOAT`` for every element type."""
    return {f"tensor({name.lower()})": value for name, value in onnx.TensorProto.DataType.items()}


def _boundary(name: str, producer: Optional[onnx.NodeProto], opset: int,
              types: Dict[str, Tuple[int, Optional[Tuple[Any, ...]]]],
              assumed: Dict[str, str]) -> onnx.ValueInfoProto:
    """Input of a re-check model; unknown types/ranks are guessed from the producer and noted."""
    elem, shape = types.get(name, (0, None))
    if (not elem or shape is None) and producer is not None and any(
            a.type == onnx.AttributeProto.GRAPH for a in producer.attribute):
        # If/Loop/Scan: the first input is a condition or trip count, nothing like the outputs.
        pos = list(producer.output).index(name)
        body = next(a.g for a in producer.attribute if a.type == onnx.AttributeProto.GRAPH)
        skip = 1 if producer.op_type == "Loop" else 0  # Loop bodies return the condition first
        if not elem and pos + skip < len(body.output):
            tt = body.output[pos + skip].type.tensor_type
            elem = tt.elem_type
            if producer.op_type == "If" and tt.HasField("shape") and shape is None:
                shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
        what = f"{name} is {onnx.TensorProto.DataType.Name(elem) if elem else 'FLOAT'}"
        what += f" of rank {len(shape)}" if shape is not None else " of unknown rank"
        assumed[name] = what
    elif (not elem or shape is None) and producer is not None:
        first = types.get(producer.input[0], (0, None)) if producer.input else (0, None)
        guessed_elem = first[0]
        try:
            schema = onnx.defs.get_schema(producer.op_type, opset, producer.domain)
            pos = min(list(producer.output).index(name), len(schema.outputs) - 1)
            formal = schema.outputs[pos].type_str
            allowed = {c.type_param_str: list(c.allowed_type_strs) for c in schema.type_constraints}
            options = allowed.get(formal, [formal])
            if len(options) == 1 and options[0] in _type_of():
                guessed_elem = _type_of()[options[0]]
        except (onnx.defs.SchemaError, ValueError, IndexError):
            pass
        elem = elem or guessed_elem
        if shape is None and first[1] is not None:
            shape = tuple(None for _ in first[1])
        what = f"{name} is {onnx.TensorProto.DataType.Name(elem) if elem else 'FLOAT'}"
        what += f" of rank {len(shape)}" if shape is not None else " of unknown rank"
        assumed[name] = what
    dims = None if shape is None else list(shape)
    return helper.make_tensor_value_info(name, elem or onnx.TensorProto.FLOAT, dims)


class _Index:
    """Producer, consumer and read tables of a graph, built once per :func:`parse_support` call,
    and the serialized pieces re-check models are assembled from (each node serialized once)."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        graph = proto.graph
        self.proto = proto
        self.nodes = list(graph.node)
        self.reads: List[List[str]] = []
        self.outs: List[List[str]] = []
        self.producer: Dict[str, int] = {}
        self.consumers: Dict[str, List[int]] = {}
        for k, nd in enumerate(self.nodes):
            names = node_reads(nd)
            self.reads.append(names)
            for name in names:
                self.consumers.setdefault(name, []).append(k)
            outs = [o for o in nd.output if o]
            self.outs.append(outs)
            for o in outs:
                self.producer[o] = k
        self.inits = {t.name: t for t in graph.initializer}
        self.graph_outputs = {o.name for o in graph.output}
        self.opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 17)
        self.value_info = {v.name: v for v in graph.value_info}
        head = onnx.ModelProto(ir_version=proto.ir_version, producer_name="trtlab")
        head.opset_import.extend(proto.opset_import)
        head.functions.extend(proto.functions)
        self.head = head.SerializeToString()  # every field of a re-check model but its graph
        self.name_field = length_delimited(_GRAPH_NAME, f"{graph.name}_rest".encode())
        self._node_fields: Dict[int, bytes] = {}
        self._small_fields: Dict[Tuple[int, str], bytes] = {}

    def node_field(self, k: int) -> bytes:
        """Node ``k`` encoded as a ``GraphProto.node`` field."""
        data = self._node_fields.get(k)
        if data is None:
            data = self._node_fields[k] = length_delimited(_GRAPH_NODE, self.nodes[k].SerializeToString())
        return data

    def tensor_field(self, number: int, message: Any, name: str) -> bytes:
        """An initializer or value-info field; kept for reuse unless it is large (weights)."""
        key = (number, name)
        data = self._small_fields.get(key)
        if data is None:
            data = length_delimited(number, message.SerializeToString())
            if len(data) <= _KEEP_FIELD_BYTES:
                self._small_fields[key] = data
        return data


#: ``GraphProto`` and ``ModelProto`` field numbers (onnx.proto) re-check models are written with.
_GRAPH_NODE, _GRAPH_NAME, _GRAPH_INITIALIZER = 1, 2, 5
_GRAPH_INPUT, _GRAPH_OUTPUT, _GRAPH_VALUE_INFO = 11, 12, 13
_MODEL_GRAPH = 7
#: Serialized initializers up to this size are kept between re-check passes.
_KEEP_FIELD_BYTES = 1 << 16


def _sub_model(index: _Index, keep: Sequence[int],
               types: Dict[str, Tuple[int, Optional[Tuple[Any, ...]]]],
               assumed: Dict[str, str]) -> bytes:
    """The nodes ``keep`` (graph order) as a serialized model: cut tensors become inputs/outputs.

    The bytes are assembled from each node's serialization (made once per :func:`parse_support`
    call), so a pass costs what its window holds, not a copy of the nodes through the protobuf API.
    """
    outs = index.outs
    keep_set = set(keep)
    produced: Set[str] = {o for k in keep for o in outs[k]}
    parts: List[bytes] = [index.node_field(k) for k in keep]
    parts.append(index.name_field)
    seen: Set[str] = set()
    for k in keep:
        for name in index.reads[k]:
            if name in produced or name in seen:
                continue
            seen.add(name)
            init = index.inits.get(name)
            if init is not None:
                parts.append(index.tensor_field(_GRAPH_INITIALIZER, init, name))
            else:
                producer = index.producer.get(name)
                info = _boundary(name, None if producer is None else index.nodes[producer],
                                 index.opset, types, assumed)
                parts.append(length_delimited(_GRAPH_INPUT, info.SerializeToString()))
    consumers = index.consumers
    outputs = [o for k in keep for o in outs[k]
               if o in index.graph_outputs or any(c not in keep_set for c in consumers.get(o, ()))]
    if not outputs and keep:
        outputs = list(outs[keep[-1]])
    for name in outputs:
        elem, shape = types.get(name, (0, None))
        info = helper.make_tensor_value_info(name, elem or onnx.TensorProto.FLOAT,
                                             None if shape is None else list(shape))
        parts.append(length_delimited(_GRAPH_OUTPUT, info.SerializeToString()))
    for o in produced:
        vi = index.value_info.get(o)
        if vi is not None:
            parts.append(index.tensor_field(_GRAPH_VALUE_INFO, vi, o))
    return index.head + length_delimited(_MODEL_GRAPH, b"".join(parts))


#: Models at least this large (bytes of their file) are serialized for the parser field by field.
_PIECEWISE_MIN_BYTES = 8 << 20


def _model_bytes(proto: onnx.ModelProto, size_hint: Optional[int] = None) -> bytes:
    """``proto`` serialized, as the parser reads it.

    protobuf's encoder grows one buffer by doubling and then copies it into a bytes object, so a
    model over 8 MiB passes through a 16 MiB block and a copy, and the allocator hands both out as
    fresh pages on every call (a 10.9 MB OCR model: 7,300 page faults, 18 ms; 3 ms when the
    pages are reused). A model whose file (``size_hint``, bytes) is that large is serialized field
    by field instead, each node, tensor and value info on its own, and joined once: the same bytes
    (fields in number order, as the encoder writes them). Messages carrying fields this onnx does
    not know are serialized whole.
    """
    if size_hint is None or size_hint < _PIECEWISE_MIN_BYTES or _unknown_fields(proto) \
            or _unknown_fields(proto.graph):
        return proto.SerializeToString()
    parts: List[bytes] = []
    for fd, value in proto.ListFields():
        if fd.number == _MODEL_GRAPH:
            graph: List[bytes] = []
            for gfd, gvalue in value.ListFields():
                _field_parts(value, gfd, gvalue, graph)
            parts.append(varint(_MODEL_GRAPH << 3 | 2) + varint(sum(map(len, graph))))
            parts.extend(graph)
        else:
            _field_parts(proto, fd, value, parts)
    return b"".join(parts)


def _unknown_fields(message: Any) -> int:
    from google.protobuf.unknown_fields import UnknownFieldSet

    return len(UnknownFieldSet(message))


def _field_parts(message: Any, fd: Any, value: Any, parts: List[bytes]) -> None:
    """Field ``fd`` of ``message`` serialized: each element of a repeated message field on its own."""
    if fd.is_repeated and fd.type == fd.TYPE_MESSAGE:
        key = varint(fd.number << 3 | 2)
        for item in value:
            data = item.SerializeToString()
            parts.append(key + varint(len(data)))
            parts.append(data)
        return
    one = type(message)()
    set_field(one, fd, value)
    parts.append(one.SerializeToString())


def _file_size(model: Any) -> Optional[int]:
    """Bytes of the file ``model`` was loaded from (a hint for :func:`_model_bytes`), else None."""
    path = getattr(model, "path", None)
    if path is None:
        return None
    try:
        return os.stat(path).st_size
    except OSError:
        return None


#: Element types of shape computations (axes, shapes, indices): their producers are always given
#: to the parser as context, however far back, since it needs their values to be constants.
_INDEX_TYPES = frozenset({ElemType.INT64, ElemType.INT32, ElemType.BOOL})


def _window(index: _Index, undecided: Sequence[int], size: int,
            verdicts: Dict[int, Tuple[bool, str, Optional[str]]],
            types: Optional[Dict[str, Tuple[int, Optional[Tuple[Any, ...]]]]] = None) -> List[int]:
    """The next re-check: ``size`` undecided nodes, plus the accepted nodes that feed them: those
    just before them, and every producer of an integer (shape, axis) input however far back, so the
    parser sees how their inputs are made."""
    window = list(undecided[:size])
    start = window[0]
    lookback = start - max(size, 16)
    feeding: Set[int] = set()
    stack = [name for k in window for name in index.reads[k]]
    while stack:
        name = stack.pop()
        k = index.producer.get(name)
        if k is None or k >= start or k in feeding:
            continue
        if k < lookback and (types or {}).get(name, (0, None))[0] not in _INDEX_TYPES:
            continue
        verdict = verdicts.get(k)
        if verdict is None or not verdict[0]:
            continue
        feeding.add(k)
        stack.extend(index.reads[k])
    return sorted(feeding) + window


def _types(proto: onnx.ModelProto) -> Dict[str, Tuple[int, Optional[Tuple[Any, ...]]]]:
    from trtlab.backends.tensorrt.ops import _TensorIndex

    return _TensorIndex(proto.graph).types


def _body_owners(graph: onnx.GraphProto) -> Dict[str, int]:
    """Name of every node inside a control-flow body -> index of its main-graph owner."""
    owners: Dict[str, int] = {}

    def walk(g: onnx.GraphProto, owner: int) -> None:
        for n in g.node:
            if n.name:
                owners.setdefault(n.name, owner)
            for attr in n.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g, owner)

    for i, n in enumerate(graph.node):
        for attr in n.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                walk(attr.g, i)
    return owners


def _old_opset(proto: onnx.ModelProto) -> Optional[str]:
    """The reason every node is refused when the model's opset predates the parser, else None."""
    from trtlab.model import MIN_OPSET

    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset >= MIN_OPSET:
        return None
    return (f"the model's ai.onnx opset {opset} is older than TensorRT's ONNX parser reads "
            f"(>= {MIN_OPSET}); convert it with onnx.version_converter to put nodes on TensorRT")


def parse_support(model: Any, *, recheck: bool = True, worker: Any = None) -> ParserReport:
    """Per-node support from TensorRT's ONNX parser.

    Parameters
    ----------
    model : trtlab Model or onnx.ModelProto
        Node indices refer to ``model.proto.graph.node`` (or the ModelProto's nodes).
    recheck : bool
        Parse again the part of the graph the parser did not import after a failure (see the
        module docstring), so every node is verified.
    worker : ParserWorker, optional
        Run the parser in this worker process (:mod:`trtlab.backends.tensorrt.parser_worker`)
        instead of this one: the same bytes are parsed, so the report is the same, and a crash
        of the parser is a :class:`SupportError` instead of the end of this process.

    Returns
    -------
    ParserReport

    Raises
    ------
    MissingDependencyError
        Neither ``tensorrt`` nor ``tensorrt_rtx`` is installed.
    SupportError
        The parser could not read the model at all.
    """
    return _parse(model, recheck, worker)[0]


#: One node's answer while :func:`_parse` runs: (supported, reason, error code).
_Answer = Tuple[bool, str, Optional[str]]


def _parse(model: Any, recheck: bool, worker: Any = None
           ) -> Tuple[ParserReport, List[str], List[str], List[_Answer]]:
    """:func:`parse_support`, with its answers as columns: the report, and per node its name, op
    type and (supported, reason, code). The report's :class:`ParserVerdict` objects are made only
    when ``report.verdicts`` is read. With a ``worker`` that can parse, TensorRT is not imported
    here: the worker parses and names the flavor and version."""
    from trtlab.backends.tensorrt import flavor as _trt

    proto: onnx.ModelProto = model if isinstance(model, onnx.ModelProto) else model.proto
    # External weights stay in their files: the parser finds them from a path in their folder.
    base_dir = getattr(model, "base_dir", None)
    model_path = None if base_dir is None else str(
        model.path if getattr(model, "path", None) is not None and Path(model.path).parent == base_dir
        else Path(base_dir) / "model.onnx")
    graph = proto.graph
    nodes = list(graph.node)
    n = len(nodes)
    names = [node.name for node in nodes]
    ops = [node.op_type for node in nodes]
    if worker is not None and worker.can_parse:
        flavor, trt_version, run_parser = str(worker.flavor), str(worker.version), worker.run
    else:
        mod = _trt.module()
        flavor, trt_version, run_parser = str(_trt.flavor() or mod.__name__), str(mod.__version__), _run_parser
    old = _old_opset(proto)
    if old is not None:
        answers: List[_Answer] = [(False, old, "UNSUPPORTED_OPSET")] * n
        return (_report(flavor, trt_version, False, 0, (), (), names, ops, answers, {}, (), 0.0),
                names, ops, answers)
    by_name: Optional[Dict[str, int]] = None  # built when an error's index does not match its name
    owners: Optional[Dict[str, int]] = None  # built when an error names a node of a body
    types: Dict[str, Tuple[int, Optional[Tuple[Any, ...]]]] = {}  # filled for the first re-check
    started = time.perf_counter()

    verdicts: Dict[int, _Answer] = {}
    graph_errors: List[str] = []
    assumed: Dict[str, str] = {}
    first: Optional[_Run] = None
    passes = 0
    subgraph_of: Dict[int, int] = {}
    stalled = False

    def accept(k: int, note: str) -> None:
        if assumed:
            extra = [assumed[i] for i in nodes[k].input if i in assumed]
            if extra:
                note += " (re-checked assuming " + "; ".join(extra) + ")"
        verdicts[k] = (True, note, None)

    index: Optional[_Index] = None
    size = _FIRST_WINDOW
    cursor = 0
    while len(verdicts) < n or passes == 0:
        if passes == 0:
            mapping = range(n)
        else:
            if index is None:
                index, types = _Index(proto), _types(proto)
            while cursor < n and cursor in verdicts:
                cursor += 1
            undecided = []
            for k in range(cursor, n):
                if k not in verdicts:
                    undecided.append(k)
                    if len(undecided) == size:
                        break
            mapping = _window(index, undecided, size, verdicts, types)
            if stalled:
                mapping = sorted(set(mapping) | {k for k in range(n) if k not in verdicts or verdicts[k][0]})
        decided_before = len(verdicts)
        data = _model_bytes(proto, _file_size(model)) if passes == 0 else \
            _sub_model(index, mapping, types, assumed)
        try:
            run = run_parser(data, model_path) if model_path else run_parser(data)
        except Exception as exc:  # the binding raises RuntimeError/TypeError on bad input
            raise SupportError(
                f"TensorRT's ONNX parser ({flavor} {trt_version}) failed on model "
                f"{graph.name!r}: {exc}. Check the model with onnx.checker, or use "
                "source='rules'.") from exc
        del data
        passes += 1
        if first is None:
            first = run
            for s, members in enumerate(run.subgraphs):
                for k in members:
                    if 0 <= k < n:
                        subgraph_of[k] = s
            if any(e[3] == "MODEL_DESERIALIZE_FAILED" for e in run.errors):
                raise SupportError(
                    f"TensorRT's ONNX parser could not deserialize model {graph.name!r}: "
                    f"{run.errors[0][4]}. Save it with onnx.save and check it with onnx.checker.")
        if n == 0:
            break

        errors_at: Dict[int, List[Tuple[str, str]]] = {}
        bad_inputs: Set[str] = set()
        position: Optional[Dict[int, int]] = None  # node index -> place in this run's model
        for idx, ename, op, code, desc, efile in run.errors:
            pos: Optional[int] = None
            if 0 <= idx < len(mapping) and (not ename or names[mapping[idx]] == ename):
                pos = idx
            else:
                if position is None:
                    position = {k: p for p, k in enumerate(mapping)}
                if by_name is None:
                    by_name = {name: i for i, name in enumerate(names) if name}
                if ename in by_name and by_name[ename] in position:
                    pos = position[by_name[ename]]
                else:
                    if owners is None:
                        owners = _body_owners(graph)
                    if ename in owners and owners[ename] in position:
                        pos = position[owners[ename]]
            if pos is None:
                if idx < 0 and efile and any(efile in nodes[k].input for k in mapping):
                    bad_inputs.add(efile)
                    graph_errors.append(f"input {efile}: {desc} [{code}]")
                elif passes == 1:
                    graph_errors.append(f"{desc} [{code}]")
                continue
            errors_at.setdefault(pos, []).append((code, desc))
        for pos, k in enumerate(mapping if bad_inputs else ()):
            if pos not in errors_at and any(i in bad_inputs for i in nodes[k].input):
                errors_at[pos] = [("UNSUPPORTED_GRAPH",
                                   "reads a graph input the parser could not import")]
        errors_at = {pos: e for pos, e in errors_at.items() if mapping[pos] not in verdicts}

        for pos, errs in errors_at.items():
            k = mapping[pos]
            codes = sorted({c for c, _ in errs})
            text = "; ".join(dict.fromkeys(d for _, d in errs))
            extra = [assumed[i] for i in nodes[k].input if i in assumed]
            if extra:
                text += " (re-checked assuming " + "; ".join(extra) + ")"
            verdicts[k] = (False, f"rejected by the parser: {text}", "/".join(codes))
        note = ACCEPTED if passes == 1 else \
            f"accepted by the parser (imported in re-check pass {passes})"
        first_bad = min(errors_at) if errors_at else None
        if first_bad is None:
            if not verdicts and not assumed:  # the first run imported every node
                verdicts = dict.fromkeys(mapping, (True, note, None))
            else:
                for k in mapping:
                    if k not in verdicts:
                        accept(k, note)
            if len(verdicts) == n:
                break
            size *= 2
            stalled = False
            continue
        for pos, k in enumerate(mapping[:first_bad]):
            if k not in verdicts:
                accept(k, note)
        if passes > 1:
            # next window: twice the run of nodes this pass verified
            verified = sum(1 for k in mapping[:first_bad] if k >= cursor)
            size = max(_MIN_WINDOW, 2 * (verified + 1))
        stalled = len(verdicts) == decided_before
        if not recheck:
            stop = mapping[first_bad]
            for k in mapping[first_bad + 1:]:
                if k in verdicts:
                    continue
                s = subgraph_of.get(k)
                if s is None:
                    reason = (f"not covered by any parser subgraph (the parser stopped importing "
                              f"at node {stop} {names[stop]!r})")
                    verdicts[k] = (False, reason, None)
                else:
                    reason = (f"listed in parser subgraph {s} but not imported: the parser "
                              f"stopped importing at node {stop} {names[stop]!r} "
                              "(run with recheck=True to verify)")
                    verdicts[k] = (True, reason, None)
            break

    seconds = time.perf_counter() - started
    answers = [verdicts[k] for k in range(n)]
    log.info("parser support: %d/%d nodes accepted in %d pass(es), %.3f s",
             sum(a[0] for a in answers), n, passes, seconds)
    report = _report(flavor, trt_version, bool(first.ok) if first else True, passes,
                     tuple(tuple(s) for s in (first.subgraphs if first else [])),
                     tuple(first.verified if first else []), names, ops, answers, subgraph_of,
                     tuple(graph_errors), seconds)
    return report, names, ops, answers


def _report(flavor: str, version: str, all_supported: bool, passes: int,
            subgraphs: Tuple[Tuple[int, ...], ...], verified: Tuple[bool, ...], names: List[str],
            ops: List[str], answers: List[_Answer], subgraph_of: Dict[int, int],
            graph_errors: Tuple[str, ...], seconds: float) -> ParserReport:
    def verdicts() -> Tuple[ParserVerdict, ...]:
        return tuple(ParserVerdict(k, names[k], ops[k], ok, reason, code, subgraph_of.get(k))
                     for k, (ok, reason, code) in enumerate(answers))

    return ParserReport(flavor=flavor, version=version, all_supported=all_supported, passes=passes,
                        subgraphs=subgraphs, verified=verified, verdicts=Later(verdicts),
                        graph_errors=graph_errors, seconds=seconds)
