"""Cut a model into accelerated and fallback segments.

:func:`partition` reads like the pipeline it runs::

    annotate -> exclude -> merge -> prune -> group -> order

* **annotate**: every node gets the accelerating backend (``"tensorrt"``) or ``"fallback"``,
  from "what is supported" given as data (a :class:`~trtlab.backends.tensorrt.support.SupportTable`, a mapping,
  or :func:`trtlab.backends.tensorrt.support.check_support` when nothing is given);
* **exclude**: nodes and op types the user keeps off the backend go to fallback;
* **merge**: supported nodes grow into maximal connected regions such that the graph of
  regions stays acyclic; every merge refused because of a cycle is recorded;
* **prune**: regions with fewer than ``min_subgraph_size`` non-trivial nodes, and (if asked)
  regions without a multiply-accumulate op, go to fallback;
* **group**: fallback nodes merge into maximal connected fallback regions around the kept
  backend regions;
* **order**: segments are numbered in a topological execution order.

Every decision is a row of :attr:`Partition.decisions` (subject, kind, reason).

Examples
--------
>>> import trtlab
>>> m = trtlab.load("data/resnet_mini.onnx")                       # doctest: +SKIP
>>> part = trtlab.partition(m, min_subgraph_size=2)                 # doctest: +SKIP
>>> part.summary()                                                  # doctest: +SKIP
>>> outs = trtlab.run_segments(part, feeds)                         # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import heapq
import json
import logging
from collections import Counter, deque
from dataclasses import asdict, dataclass, fields
from typing import (TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set,
                    Tuple, Union)

from trtlab._lazy import Deferred, Later, lazy_import, resolved_state
from trtlab.errors import InputError, PartitionError
from trtlab.opinfo import BODY_OPS, COMPUTE_OPS as MAC_OPS, TRIVIAL_OPS
from trtlab.extract import segment_model, write_partition
from trtlab.model import Model

if TYPE_CHECKING:
    import onnx
    import pandas as pd

log = logging.getLogger(__name__)

np = lazy_import("numpy")

__all__ = ["partition", "Partition", "Segment", "run_segments", "write_partition", "DECISION_KINDS",
           "FALLBACK", "MAC_OPS", "TRIVIAL_OPS", "FORMAT_VERSION"]

#: Backend name of segments that run on the fallback executor (ONNX Runtime).
FALLBACK = "fallback"
#: Kinds of rows in :attr:`Partition.decisions`.
DECISION_KINDS = ("rejected", "merge_refused_cycle", "pruned_small", "pruned_no_mac", "excluded",
                  "build_failed", "unranked_boundary")
#: Version of the JSON written by :meth:`Partition.to_json`; :meth:`Partition.from_json` reads these.
FORMAT_VERSION = 1
#: Columns of :meth:`Partition.summary`, :meth:`Partition.boundaries` and :attr:`Partition.decisions`.
SUMMARY_COLUMNS = ("segment", "name", "backend", "nodes", "op_types", "macs", "inputs", "outputs",
                   "input_bytes", "output_bytes")
BOUNDARY_COLUMNS = ("tensor", "producer", "producer_index", "consumers", "consumer_indices", "shape",
                    "dtype", "bytes", "bytes_expr")
DECISION_COLUMNS = ("subject", "kind", "reason")
_KNOWN_VERSIONS = (1,)
_FORMAT = "trtlab-partition"


SupportLike = Union[None, Mapping[str, Any], Any]


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def _segment_macs(model: Model, nodes: Tuple[str, ...]) -> int:
    """Multiply-accumulate count of ``nodes`` (the model's per-node MACs, computed once per model)."""
    macs = model.macs
    return int(sum(macs[n] for n in nodes))


@dataclass(frozen=True)
class Segment:
    """One piece of a partitioned model.

    Attributes
    ----------
    index : int
        Position in execution order.
    name : str
        ``"trt_0"``, ``"fallback_1"``, ...
    backend : str
        The accelerating backend's name (``"tensorrt"``) or ``"fallback"``.
    nodes : tuple of str
        Node names in topological order.
    inputs, outputs : tuple of str
        Tensors the segment reads from outside (graph inputs or other segments' outputs;
        constants are embedded, not inputs) and tensors it hands on (to later segments or as
        graph outputs).
    macs : int
        Multiply-accumulate count of its nodes (computed from tensor shapes when first read).
    """

    index: int
    name: str
    backend: str
    nodes: Tuple[str, ...]
    inputs: Tuple[str, ...]
    outputs: Tuple[str, ...]
    macs: int = Deferred()  # type: ignore[assignment]

    __getstate__ = resolved_state  # copies and pickles hold the number, not the model

    @property
    def is_fallback(self) -> bool:
        return self.backend == FALLBACK


@dataclass(frozen=True)
class Settings:
    """The knobs a partition was made with (kept so it can be re-made and saved)."""

    backend: str = "tensorrt"
    min_subgraph_size: int = 1
    remove_no_mac_subgraphs: bool = False
    exclude_ops: Tuple[str, ...] = ()
    exclude_nodes: Tuple[str, ...] = ()


Verdicts = Dict[str, Tuple[bool, str]]
Forced = Dict[str, Tuple[str, str]]


class Partition:
    """A model cut into segments, with every decision that shaped the cut.

    Made by :func:`partition` (or :meth:`from_json`); do not build one by hand.

    Attributes
    ----------
    model : Model
    segments : list of Segment
        In execution order.
    assignment : dict
        ``{node name: segment index}``.
    settings : Settings
    verdicts : dict
        ``{node name: (supported, reason)}`` the partition started from.
    """

    def __init__(self, model: Model, segments: Sequence[Segment], decisions: Sequence[Tuple[str, str, str]],
                 *, verdicts: Verdicts, settings: Settings, forced: Optional[Forced] = None) -> None:
        self.model = model
        self.segments = list(segments)
        self._decisions = [tuple(d) for d in decisions]
        self.verdicts = dict(verdicts)
        self.settings = settings
        self.forced = dict(forced or {})
        self.assignment = {n: s.index for s in self.segments for n in s.nodes}
        #: The accelerating backend object passed to :func:`partition` (``None``: the shipped
        #: backend named ``settings.backend``); :func:`trtlab.build` compiles with it.
        self.backend_object: Any = None

    # -- views ---------------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self.settings.backend

    @property
    def decisions(self) -> "pd.DataFrame":
        """One row per decision: subject (a node, or ``"a -> b"`` for a refused merge), kind, reason."""
        import pandas as pd

        return pd.DataFrame(self._decisions, columns=list(DECISION_COLUMNS))

    def __len__(self) -> int:
        return len(self.segments)

    def __repr__(self) -> str:
        acc = [s for s in self.segments if not s.is_fallback]
        n_acc = sum(len(s.nodes) for s in acc)
        return (f"Partition({self.model.name!r}: {len(self.segments)} segments ({len(acc)} "
                f"{self.backend}, {len(self.segments) - len(acc)} {FALLBACK}), {n_acc}/"
                f"{len(self.assignment)} nodes on {self.backend}, {len(self._decisions)} decisions)")

    def _repr_html_(self) -> str:
        import html

        return f"<b>{html.escape(repr(self))}</b>" + self.summary().to_html(index=False)

    def segment(self, key: Union[int, str]) -> Segment:
        """A segment by index or name."""
        for s in self.segments:
            if s.index == key or s.name == key:
                return s
        raise PartitionError(
            f"No segment {key!r} in this partition of {self.model.name!r}; it has "
            f"{[s.name for s in self.segments]} (indices 0..{len(self.segments) - 1}).")

    def summary(self) -> "pd.DataFrame":
        """One row per segment: index, name, backend, node and op counts, MACs, I/O bytes."""
        import pandas as pd

        return pd.DataFrame(self.summary_rows(), columns=list(SUMMARY_COLUMNS))

    def summary_rows(self) -> List[Dict[str, Any]]:
        """The rows of :meth:`summary` as plain dicts (no pandas needed)."""
        rows = []
        for s in self.segments:
            ops = Counter(self.model.node(n).op_type for n in s.nodes)
            rows.append({
                "segment": s.index, "name": s.name, "backend": s.backend, "nodes": len(s.nodes),
                "op_types": ", ".join(f"{op}x{k}" if k > 1 else op for op, k in ops.most_common()),
                "macs": s.macs, "inputs": len(s.inputs), "outputs": len(s.outputs),
                "input_bytes": _sum_bytes(self.model, s.inputs),
                "output_bytes": _sum_bytes(self.model, s.outputs),
            })
        return rows

    def boundaries(self, shapes: Optional[Mapping[str, Sequence[int]]] = None) -> "pd.DataFrame":
        """One row per cut tensor (produced in one segment, read in others).

        Columns: tensor, producer (segment name), producer_index, consumers (segment names),
        consumer_indices, shape, dtype, bytes, bytes_expr (the size as an expression of the
        symbolic dims, e.g. ``"1024·batch"``; see :mod:`trtlab.shapes`).

        ``bytes`` takes symbolic dims as 1, or, with ``shapes`` (input name -> concrete
        shape), their values for those inputs (``None`` for dims the inputs do not fix, such
        as data-dependent counts).
        """
        import pandas as pd

        return pd.DataFrame(self.boundary_rows(shapes), columns=list(BOUNDARY_COLUMNS))

    def boundary_rows(self, shapes: Optional[Mapping[str, Sequence[int]]] = None) -> List[Dict[str, Any]]:
        """The rows of :meth:`boundaries` as plain dicts (no pandas needed)."""
        from trtlab.shapes import bytes_expression, dims_from_shapes, tensor_bytes

        dims = dims_from_shapes(self.model, shapes) if shapes is not None else None
        readers: Dict[str, List[int]] = {}
        for s in self.segments:
            for t in s.inputs:
                readers.setdefault(t, []).append(s.index)
        rows = []
        for s in self.segments:
            for t in s.outputs:
                if t not in readers:
                    continue
                info = self.model.tensor(t)
                rows.append({
                    "tensor": t, "producer": s.name, "producer_index": s.index,
                    "consumers": [self.segments[i].name for i in readers[t]],
                    "consumer_indices": list(readers[t]),
                    "shape": list(info.shape) if info.shape is not None else None,
                    "dtype": info.dtype_name,
                    "bytes": info.bytes if dims is None else tensor_bytes(info, dims),
                    "bytes_expr": bytes_expression(info),
                })
        return rows

    def table_rows(self) -> Dict[str, Tuple[Tuple[str, ...], List[Sequence[Any]]]]:
        """``{file name: (columns, rows)}`` of the tables :func:`write_partition` writes
        (``summary.csv``, ``boundaries.csv``, ``decisions.csv``), as plain values."""
        def values(columns: Tuple[str, ...], rows: List[Dict[str, Any]]) -> List[Sequence[Any]]:
            return [[r[c] for c in columns] for r in rows]

        return {"summary.csv": (SUMMARY_COLUMNS, values(SUMMARY_COLUMNS, self.summary_rows())),
                "boundaries.csv": (BOUNDARY_COLUMNS, values(BOUNDARY_COLUMNS, self.boundary_rows())),
                "decisions.csv": (DECISION_COLUMNS, [list(d) for d in self._decisions])}

    # -- actions -------------------------------------------------------------------------------
    def segment_model(self, index: int) -> "onnx.ModelProto":
        """Segment ``index`` as a standalone ONNX model (see :func:`trtlab.extract.segment_model`)."""
        return segment_model(self, index)

    def run(self, feeds: Mapping[str, np.ndarray], **kwargs: Any) -> Dict[str, np.ndarray]:
        """Run every segment in order with ONNX Runtime (see :func:`run_segments`)."""
        return run_segments(self, feeds, **kwargs)

    @property
    def moved(self) -> "pd.DataFrame":
        """Nodes moved to fallback because the backend could not build them: node, op_type, reason."""
        import pandas as pd

        rows = [{"node": n, "op_type": self.model.node(n).op_type, "reason": r}
                for n, (k, r) in self.forced.items() if k == "build_failed"]
        return pd.DataFrame(rows, columns=["node", "op_type", "reason"])

    def with_fallback(self, nodes: Union[str, Segment, Iterable[Union[str, Segment]]],
                      reason: Union[str, Mapping[str, str]], kind: str = "build_failed") -> "Partition":
        """A new partition with ``nodes`` forced to fallback and the rest re-merged.

        Parameters
        ----------
        nodes
            Node names and/or segments whose nodes move to fallback.
        reason
            Why (recorded in :attr:`decisions`); one string, or ``{node: reason}``.
        kind
            Decision kind, ``"build_failed"`` (default) or ``"excluded"``.
        """
        if kind not in ("build_failed", "excluded"):
            raise PartitionError(f"with_fallback(kind={kind!r}) is not a fallback kind; use "
                                 "'build_failed' or 'excluded'.")
        reasons = reason if isinstance(reason, Mapping) else None
        texts = list(reasons.values()) if reasons is not None else [reason]
        if not texts or any(not isinstance(r, str) or not r.strip() for r in texts):
            raise PartitionError("with_fallback needs a non-empty reason string; it is recorded in "
                                 "Partition.decisions.")
        if isinstance(nodes, (str, Segment)):
            nodes = [nodes]
        names: List[str] = []
        for item in nodes:
            names.extend(item.nodes if isinstance(item, Segment) else [item])
        _check_node_names(self.model, names, "with_fallback")
        forced = dict(self.forced)
        for n in names:
            why = reasons.get(n) if reasons is not None else reason
            if not why:
                raise PartitionError(f"with_fallback: no reason given for node {n!r}.")
            forced.setdefault(n, (kind, why))
        new = _run(self.model, self.verdicts, self.settings, forced)
        new.backend_object = self.backend_object
        return new

    # -- JSON ----------------------------------------------------------------------------------
    def to_json(self, indent: Optional[int] = None) -> str:
        """The partition as versioned JSON (read back with :meth:`from_json`)."""
        return json.dumps(self._json_doc(), indent=indent)

    def _json_doc(self) -> Dict[str, Any]:
        """What :meth:`to_json` writes, as the dict it encodes."""
        return {
            "format": _FORMAT,
            "version": FORMAT_VERSION,
            "model": {"name": self.model.name, "nodes": len(self.model.node_names),
                      "fingerprint": _fingerprint(self.model)},
            "settings": asdict(self.settings),
            "verdicts": {n: [bool(ok), r] for n, (ok, r) in self.verdicts.items()},
            "forced": {n: list(v) for n, v in self.forced.items()},
            # each field as it is (JSON writes tuples as lists): asdict deep-copies every node name
            "segments": [{f.name: getattr(s, f.name) for f in fields(s)} for s in self.segments],
            "decisions": [list(d) for d in self._decisions],
        }

    @classmethod
    def from_json(cls, text: Union[str, bytes], model: Any) -> "Partition":
        """Read a partition written by :meth:`to_json` for ``model`` (a Model or anything
        :func:`trtlab.load` takes).

        Raises
        ------
        PartitionError
            Not partition JSON, an unknown format version, or a different model.
        """
        if not isinstance(model, Model):
            from trtlab.model import load

            model = load(model)
        try:
            doc = json.loads(text)
        except RecursionError:
            raise PartitionError("Partition JSON is nested too deeply to be a trtlab partition. Pass "
                                 "the text written by Partition.to_json().") from None
        except (TypeError, ValueError) as exc:
            raise PartitionError(f"Partition JSON could not be parsed ({exc}). Pass the text written "
                                 "by Partition.to_json().") from exc
        return cls._from_doc(doc, model)

    @classmethod
    def _from_doc(cls, doc: Any, model: Model) -> "Partition":
        """:meth:`from_json` of the parsed JSON ``doc``."""
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise PartitionError(
                f"This JSON is not a trtlab partition (format {doc.get('format') if isinstance(doc, dict) else None!r}, "
                f"expected {_FORMAT!r}). Pass the text written by Partition.to_json().")
        version = doc.get("version")
        if version not in _KNOWN_VERSIONS:
            raise PartitionError(
                f"Partition JSON has format version {version!r}; this trtlab reads version(s) "
                f"{list(_KNOWN_VERSIONS)}. Upgrade trtlab, or re-create the partition with "
                "trtlab.partition(model, ...).")
        meta = doc.get("model")
        if not isinstance(meta, dict):
            raise PartitionError(f"Partition JSON (version {version}) has no 'model' field. Re-create "
                                 "it with Partition.to_json().")
        if meta.get("fingerprint") != _fingerprint(model):
            raise PartitionError(
                f"Partition JSON was made for model {meta.get('name')!r} ({meta.get('nodes')} nodes), "
                f"which does not match model {model.name!r} ({len(model.node_names)} nodes; node names "
                "or op types differ). Load the same model file (with the same load() options).")
        _check_json_shape(doc, version)
        try:
            s = doc["settings"]
            settings = Settings(backend=s["backend"], min_subgraph_size=int(s["min_subgraph_size"]),
                                remove_no_mac_subgraphs=bool(s["remove_no_mac_subgraphs"]),
                                exclude_ops=tuple(s["exclude_ops"]), exclude_nodes=tuple(s["exclude_nodes"]))
            segments = [Segment(index=int(g["index"]), name=g["name"], backend=g["backend"],
                                nodes=tuple(g["nodes"]), inputs=tuple(g["inputs"]),
                                outputs=tuple(g["outputs"]), macs=int(g["macs"])) for g in doc["segments"]]
            verdicts = {n: (bool(v[0]), str(v[1])) for n, v in doc["verdicts"].items()}
            forced = {n: (str(v[0]), str(v[1])) for n, v in doc["forced"].items()}
            decisions = [(str(a), str(b), str(c)) for a, b, c in doc["decisions"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise PartitionError(f"Partition JSON (version {version}) is missing or has a malformed "
                                 f"field ({exc!r}). Re-create it with Partition.to_json().") from exc
        covered = Counter(n for g in segments for n in g.nodes)
        if sorted(covered) != sorted(model.node_names) or any(k != 1 for k in covered.values()):
            twice = sorted(n for n, k in covered.items() if k != 1)[:5]
            missing = sorted(set(model.node_names) - set(covered))[:5]
            unknown = sorted(set(covered) - set(model.node_names))[:5]
            raise PartitionError(
                "Partition JSON segments do not cover every node of the model exactly once (listed "
                f"twice: {twice}, missing: {missing}, unknown: {unknown}). Re-create it with "
                "Partition.to_json().")
        _check_json_segments(model, segments, verdicts, settings, forced)
        return cls(model, segments, decisions, verdicts=verdicts, settings=settings, forced=forced)


def _json_fail(what: str) -> PartitionError:
    return PartitionError(f"Partition JSON is inconsistent: {what}. The file was edited or damaged; "
                          "re-create it with trtlab.partition(model, ...) and Partition.to_json().")


def _check_json_shape(doc: Dict[str, Any], version: Any) -> None:
    """Types of every field of partition JSON, before any is used."""
    expect = {"settings": dict, "segments": list, "verdicts": dict, "forced": dict, "decisions": list}
    for key, kind in expect.items():
        if not isinstance(doc.get(key), kind):
            raise PartitionError(
                f"Partition JSON (version {version}) field {key!r} is {type(doc.get(key)).__name__}, "
                f"expected a JSON {'object' if kind is dict else 'array'}. Re-create it with "
                "Partition.to_json().")
    for n, v in doc["verdicts"].items():
        if not (isinstance(v, list) and len(v) == 2 and isinstance(v[0], bool) and isinstance(v[1], str)):
            raise _json_fail(f"verdict of node {n!r} is {v!r}, expected [true|false, \"reason\"]")
    for n, v in doc["forced"].items():
        if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)):
            raise _json_fail(f"forced entry of node {n!r} is {v!r}, expected [\"kind\", \"reason\"]")
    for d in doc["decisions"]:
        if not (isinstance(d, list) and len(d) == 3 and all(isinstance(x, str) for x in d)):
            raise _json_fail(f"decision {d!r} is not [subject, kind, reason]")
    for k, g in enumerate(doc["segments"]):
        if not isinstance(g, dict):
            raise _json_fail(f"segment {k} is {type(g).__name__}, not an object")
        for key in ("nodes", "inputs", "outputs"):
            if not isinstance(g.get(key), list) or not all(isinstance(x, str) for x in g[key]):
                raise _json_fail(f"segment {k} field {key!r} is not a list of names")
        for key in ("name", "backend"):
            if not isinstance(g.get(key), str):
                raise _json_fail(f"segment {k} field {key!r} is not a string")
        for key in ("index", "macs"):
            if isinstance(g.get(key), bool) or not isinstance(g.get(key), int):
                raise _json_fail(f"segment {k} field {key!r} is not an integer")


def _check_json_segments(model: Model, segments: List[Segment], verdicts: Verdicts,
                         settings: Settings, forced: Forced) -> None:
    """Segments read from JSON must be exactly what the partitioner makes of their node groups."""
    from trtlab.extract import segment_file_name

    missing = [n for n in model.node_names if n not in verdicts]
    if missing:
        raise _json_fail(f"no verdict for node(s) {missing[:5]}")
    width = max(2, len(str(max(len(segments) - 1, 0))))
    names: Set[str] = set()
    for k, seg in enumerate(segments):
        if seg.index != k:
            raise _json_fail(f"segment at position {k} has index {seg.index} (segments must be listed "
                             "in execution order with indices 0, 1, 2, …)")
        if seg.backend not in (settings.backend, FALLBACK):
            raise _json_fail(f"segment {seg.name!r} has backend {seg.backend!r}; expected "
                             f"{settings.backend!r} or {FALLBACK!r}")
        if not seg.is_fallback:
            refused = [n for n in seg.nodes if not verdicts.get(n, (False, ""))[0] or n in forced]
            if refused:
                raise _json_fail(f"segment {seg.name!r} runs on {seg.backend} but node {refused[0]!r} "
                                 "is unsupported or forced to fallback")
        if seg.name in names:
            raise _json_fail(f"two segments are named {seg.name!r}")
        names.add(seg.name)
        try:
            segment_file_name(k, seg.name, width)
        except PartitionError as exc:
            raise _json_fail(str(exc).split(" Segment names")[0].rstrip(".")) from None
    dag = _Dag.of(model)
    position = {n: i for i, n in enumerate(dag.names)}
    accel = [False] * len(dag.names)
    groups: List[List[int]] = []
    for seg in segments:
        idx = sorted(position[n] for n in seg.nodes)
        for i in idx:
            accel[i] = not seg.is_fallback
        groups.append(idx)
    seg_of = {i: k for k, g in enumerate(groups) for i in g}
    for k, g in enumerate(groups):
        for i in g:
            late = [p for p in dag.preds[i] if seg_of[p] > k]
            if late:
                raise _json_fail(
                    f"segment {segments[k].name!r} (position {k}) runs node {dag.names[i]!r}, which reads "
                    f"from node {dag.names[late[0]]!r} of the later segment "
                    f"{segments[seg_of[late[0]]].name!r}: the segments are not in execution order")
    expected = _segments(model, dag, accel, groups, settings.backend)
    for seg, exp in zip(segments, expected):
        for field_name in ("nodes", "inputs", "outputs", "macs"):
            got, want = getattr(seg, field_name), getattr(exp, field_name)
            same = sorted(got) == sorted(want) if field_name in ("inputs", "outputs") else got == want
            if not same:
                raise _json_fail(f"segment {seg.name!r} lists {field_name} {_short(got)}, but its nodes "
                                 f"give {_short(want)}")


def _short(value: Any) -> str:
    if isinstance(value, tuple) and len(value) > 6:
        return repr(list(value[:6]))[:-1] + f", … ({len(value)} in all)]"
    return repr(list(value) if isinstance(value, tuple) else value)


def _sum_bytes(model: Model, tensors: Iterable[str]) -> Optional[int]:
    total = 0
    for t in tensors:
        b = model.tensor(t).bytes
        if b is None:
            return None
        total += b
    return total


def _fingerprint(model: Model) -> str:
    h = hashlib.sha256()
    for node in model.proto.graph.node:
        h.update(f"{node.name}\x00{node.domain}:{node.op_type}\n".encode())
    return h.hexdigest()[:32]


# ----------------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------------


def partition(model: Any, *, support: SupportLike = None, min_subgraph_size: int = 1,
              remove_no_mac_subgraphs: bool = False, exclude_ops: Iterable[str] = (),
              exclude_nodes: Iterable[str] = (), backend: Any = "tensorrt") -> Partition:
    """Cut ``model`` into backend and fallback segments.

    Parameters
    ----------
    model
        A :class:`~trtlab.model.Model` (or anything :func:`trtlab.load` takes).
    support
        What the backend supports, as data: a :class:`~trtlab.backends.tensorrt.support.SupportTable` (or its
        DataFrame with columns node, supported, reason), a mapping ``node -> bool`` or
        ``node -> (bool, reason)``, or ``None`` for :func:`trtlab.backends.tensorrt.support.check_support` (or the
        backend object's own ``check_support``).
    min_subgraph_size
        Backend regions with fewer non-trivial nodes (see :data:`trtlab.opinfo.TRIVIAL_OPS`) go to fallback.
    remove_no_mac_subgraphs
        Send backend regions without a multiply-accumulate op (see :data:`trtlab.opinfo.COMPUTE_OPS`) to fallback.
    exclude_ops, exclude_nodes
        Op types and node names kept off the backend.
    backend
        The accelerating backend's name (``"tensorrt"``), or an object with a ``name`` (and
        optionally ``check_support(model)``).

    Returns
    -------
    Partition

    Raises
    ------
    PartitionError
        Bad knobs, support data that does not cover the model, unknown excluded nodes.
    """
    if not isinstance(model, Model):
        from trtlab.model import load

        model = load(model)
    name = _backend_name(backend)
    if isinstance(min_subgraph_size, bool) or not isinstance(min_subgraph_size, (int, np.integer)) \
            or min_subgraph_size < 0:
        raise PartitionError(f"min_subgraph_size must be an integer >= 0, got {min_subgraph_size!r}.")
    settings = Settings(backend=name, min_subgraph_size=int(min_subgraph_size),
                        remove_no_mac_subgraphs=bool(remove_no_mac_subgraphs),
                        exclude_ops=_names(exclude_ops, "exclude_ops"),
                        exclude_nodes=_names(exclude_nodes, "exclude_nodes"))
    if settings.exclude_nodes:
        _check_node_names(model, settings.exclude_nodes, "exclude_nodes")
    if support is None:
        support = _default_support(model, backend)
    with _gc_paused():  # the passes' temporaries are gone before the collector looks again
        part = _partition(model, support, settings, backend)
    part.backend_object = None if isinstance(backend, str) else backend
    return part


def _partition(model: Model, support: SupportLike, settings: Settings, backend: Any) -> "Partition":
    dag = _Dag.of(model)
    verdicts = _verdicts(model, support, backend, dag.names)
    return _keep_unranked_together(_pipeline(model, verdicts, settings, {}, dag), dag)


def _keep_unranked_together(part: "Partition", dag: "_Dag", rounds: int = 3) -> "Partition":
    """Keep tensors of unknown rank off segment boundaries.

    A segment model must declare the rank of its inputs and outputs. When neither ONNX shape
    inference nor ONNX Runtime can tell a cut tensor's rank (the branches of an ``If`` return
    different ranks), its producer and readers go to fallback together, recorded as
    ``unranked_boundary`` decisions. Only models with ``If`` nodes are checked.
    """
    model = part.model
    if "If" not in dag.ops:
        return part  # ONNX Runtime types every other tensor extraction meets
    for _ in range(rounds):
        cut = {t for s in part.segments for t in s.inputs if model.producer(t) is not None}
        unknown = sorted(t for t in cut if model.tensor(t).shape is None)
        if not unknown:
            return part
        from trtlab.extract import _runtime_types

        types = _runtime_types(part)
        unranked = [t for t in unknown if types.get(t, (0, None))[1] is None]
        if not unranked:
            return part
        forced = dict(part.forced)
        for t in unranked:
            for node in [model.producer(t)] + model.consumers(t):
                forced.setdefault(node, (
                    "unranked_boundary",
                    f"tensor {t!r} has a rank no shape inference can determine, so it cannot be a "
                    "segment boundary; its producer and readers stay together in fallback"))
        if forced == part.forced:
            return part
        part = _run(model, part.verdicts, part.settings, forced, dag)
    return part


def _run(model: Model, verdicts: Verdicts, settings: Settings, forced: Forced,
         dag: Optional["_Dag"] = None) -> Partition:
    with _gc_paused():
        return _pipeline(model, verdicts, settings, forced, dag)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: the passes allocate many small, acyclic objects."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _pipeline(model: Model, verdicts: Verdicts, settings: Settings, forced: Forced,
              dag: Optional["_Dag"] = None) -> Partition:
    decisions: List[Tuple[str, str, str]] = []
    dag = dag if dag is not None else _Dag.of(model)
    accel = annotate(dag, verdicts, decisions)
    exclude(dag, accel, settings, forced, decisions)
    regions = merge(dag, accel, decisions)
    prune(dag, accel, regions, settings, decisions)
    groups = group(dag, accel, regions)
    segments = order(model, dag, accel, groups, settings.backend)
    log.info("%s: %d segments (%d on %s), %d decisions", model.name, len(segments),
             sum(not s.is_fallback for s in segments), settings.backend, len(decisions))
    return Partition(model, segments, decisions, verdicts=verdicts, settings=settings, forced=forced)


class _Dag:
    """Node-index adjacency of a model (edges include reads from If/Loop/Scan bodies).

    Plain lists indexed by node position: ``names``, ``ops``, ``reads`` (tensors each node reads),
    ``outs`` (tensors it makes), ``preds`` (sorted producer positions), ``producer`` (tensor ->
    position) and ``succs`` (made on first use).
    """

    def __init__(self, names: List[str], ops: List[str], reads: List[List[str]],
                 outs: List[List[str]], preds: List[List[int]], producer: Dict[str, int]) -> None:
        self.names, self.ops, self.reads, self.outs = names, ops, reads, outs
        self.preds, self.producer = preds, producer
        self._succs: Optional[List[List[int]]] = None

    @property
    def succs(self) -> List[List[int]]:
        if self._succs is None:
            succs: List[List[int]] = [[] for _ in self.names]
            for i, ps in enumerate(self.preds):
                for p in ps:
                    succs[p].append(i)
            self._succs = succs
        return self._succs

    @classmethod
    def of(cls, model: Model) -> "_Dag":
        """The adjacency of ``model``'s nodes, in one pass over them."""
        names: List[str] = []
        ops: List[str] = []
        reads: List[List[str]] = []
        outs: List[List[str]] = []
        preds: List[List[int]] = []
        producer: Dict[str, int] = {}
        unmade: List[str] = []  # tensors read before any node made them: inputs, weights (or a bad order)
        standard = ("", "ai.onnx")
        get = producer.get
        for i, node in enumerate(model.proto.graph.node):
            op = node.op_type
            names.append(node.name)
            ops.append(op)
            if (op in _BODY_OPS or node.domain not in standard) and _has_bodies(node):
                rs = model.node_inputs(node.name)
            else:
                rs = node.input[:]
                if "" in rs:
                    rs = [t for t in rs if t]
            reads.append(rs)
            if len(rs) == 1:
                p = get(rs[0])
                if p is None:
                    unmade.append(rs[0])
                    preds.append([])
                else:
                    preds.append([p])
            else:
                ps: List[int] = []
                for t in rs:
                    p = get(t)
                    if p is None:
                        unmade.append(t)
                    elif p not in ps:
                        ps.append(p)
                if len(ps) > 1:
                    ps.sort()
                preds.append(ps)
            out = node.output[:]
            if "" in out:
                out = [o for o in out if o]
            outs.append(out)
            for o in out:
                producer[o] = i
        if unmade and not producer.keys().isdisjoint(unmade):
            _refuse_order(model, names, reads, producer)
        return cls(names, ops, reads, outs, preds, producer)


def _refuse_order(model: Model, names: List[str], reads: List[List[str]], producer: Dict[str, int]) -> None:
    """Raise for the first node that reads a tensor made by itself or a later node."""
    for i, rs in enumerate(reads):
        after = [producer[t] for t in rs if producer.get(t, -1) >= i]
        if after:
            raise PartitionError(
                f"Model {model.name!r} is not topologically sorted (node {names[i]!r} reads a "
                f"tensor produced by node {names[max(after)]!r}, which does not run before it). "
                "Load it with trtlab.load().")


_BODY_OPS = BODY_OPS


def _has_bodies(node: Any) -> bool:
    """Whether ``node`` may carry subgraphs (control flow, or any op of a custom domain)."""
    if node.op_type not in _BODY_OPS and node.domain in ("", "ai.onnx"):
        return False
    return any(a.type in (5, 10) for a in node.attribute)  # GRAPH, GRAPHS


def annotate(dag: _Dag, verdicts: Verdicts, decisions: List[Tuple[str, str, str]]) -> List[bool]:
    """Per node: on the backend (``True``) or fallback; each rejection is a ``rejected`` row."""
    answers = [verdicts[name] for name in dag.names]
    accel = [bool(ok) for ok, _ in answers]
    if not all(accel):
        decisions.extend((name, "rejected", reason)
                         for name, (ok, reason) in zip(dag.names, answers) if not ok)
    return accel


def exclude(dag: _Dag, accel: List[bool], settings: Settings, forced: Forced,
            decisions: List[Tuple[str, str, str]]) -> None:
    """Send user-excluded nodes and op types, and forced nodes, to fallback."""
    ops = set(settings.exclude_ops)
    nodes = set(settings.exclude_nodes)
    if not (ops or nodes or forced):
        return
    for i, name in enumerate(dag.names):
        if not accel[i]:
            continue
        if name in forced:
            kind, reason = forced[name]
        elif name in nodes:
            kind, reason = "excluded", "node excluded by exclude_nodes"
        elif dag.ops[i] in ops:
            kind, reason = "excluded", f"op type {dag.ops[i]} excluded by exclude_ops"
        else:
            continue
        accel[i] = False
        decisions.append((name, kind, reason))
    missing = ops - set(dag.ops)
    if missing:
        log.info("exclude_ops %s: no such op in the model", sorted(missing))


def merge(dag: _Dag, accel: List[bool], decisions: List[Tuple[str, str, str]]) -> List[int]:
    """Maximal connected, cycle-safe regions; returns a region id per node.

    Refused merges between backend regions are recorded as ``merge_refused_cycle`` rows.
    """
    labels = [1 if a else 0 for a in accel]
    if len(set(labels)) <= 1:  # one label: the regions are the connected components
        return _components(dag.preds)
    region, refused = _merge(dag.preds, dag.succs, labels, [False] * len(labels))
    sizes = Counter(region)
    for u, v, via in refused:
        if not labels[u]:
            continue
        decisions.append((f"{dag.names[u]} -> {dag.names[v]}", "merge_refused_cycle",
                          f"joining the region of {dag.names[u]!r} ({sizes[region[u]]} nodes) with the "
                          f"region of {dag.names[v]!r} ({sizes[region[v]]} nodes) would make a cycle "
                          f"through {dag.names[via]!r} ({dag.ops[via]}, "
                          f"{'on the backend' if labels[via] else 'in fallback'})"))
    return region


def prune(dag: _Dag, accel: List[bool], region: List[int], settings: Settings,
          decisions: List[Tuple[str, str, str]]) -> None:
    """Send too-small and (if asked) no-MAC backend regions to fallback."""
    members: Dict[int, List[int]] = {}
    for i, r in enumerate(region):
        if accel[i]:
            members.setdefault(r, []).append(i)
    for nodes in members.values():
        ops = [dag.ops[i] for i in nodes]
        heavy = sum(op not in TRIVIAL_OPS for op in ops)
        if heavy < settings.min_subgraph_size:
            kind = "pruned_small"
            reason = (f"region of {len(nodes)} node(s) has {heavy} non-trivial node(s) < "
                      f"min_subgraph_size={settings.min_subgraph_size}")
        elif settings.remove_no_mac_subgraphs and not any(op in MAC_OPS for op in ops):
            kind = "pruned_no_mac"
            reason = (f"region of {len(nodes)} node(s) ({', '.join(sorted(set(ops))[:6])}) has no "
                      "multiply-accumulate op")
        else:
            continue
        for i in nodes:
            accel[i] = False
            decisions.append((dag.names[i], kind, reason))


def group(dag: _Dag, accel: List[bool], region: List[int]) -> List[int]:
    """Merge fallback nodes into maximal connected regions around the kept backend regions."""
    if all(accel):
        return list(region)
    unit_of: List[int] = []
    unit_ids: Dict[Tuple[str, int], int] = {}
    for i in range(len(dag.names)):
        key = ("r", region[i]) if accel[i] else ("n", i)
        unit_of.append(unit_ids.setdefault(key, len(unit_ids)))
    n = len(unit_ids)
    fixed = [False] * n
    labels = [0] * n
    for i, u in enumerate(unit_of):
        if accel[i]:
            fixed[u], labels[u] = True, 1
    preds: List[Set[int]] = [set() for _ in range(n)]
    succs: List[Set[int]] = [set() for _ in range(n)]
    for i, ps in enumerate(dag.preds):
        v = unit_of[i]
        for p in ps:
            u = unit_of[p]
            if u != v:
                preds[v].add(u)
                succs[u].add(v)
    unit_region, _ = _merge([sorted(p) for p in preds], [sorted(s) for s in succs], labels, fixed)
    return [unit_region[u] for u in unit_of]


def order(model: Model, dag: _Dag, accel: List[bool], groups: List[int], backend: str) -> List[Segment]:
    """Segments in a topological execution order (ties: earliest node first)."""
    members: Dict[int, List[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    if len(members) == 1:
        return _segments(model, dag, accel, list(members.values()), backend)
    succ: Dict[int, Set[int]] = {g: set() for g in members}
    indeg: Dict[int, int] = {g: 0 for g in members}
    for i, ps in enumerate(dag.preds):
        for p in ps:
            a, b = groups[p], groups[i]
            if a != b and b not in succ[a]:
                succ[a].add(b)
                indeg[b] += 1
    heap = [(members[g][0], g) for g in members if indeg[g] == 0]
    heapq.heapify(heap)
    ordered: List[int] = []
    while heap:
        _, g = heapq.heappop(heap)
        ordered.append(g)
        for h in succ[g]:
            indeg[h] -= 1
            if indeg[h] == 0:
                heapq.heappush(heap, (members[h][0], h))
    if len(ordered) != len(members):
        raise PartitionError("Internal error: the segment graph has a cycle; please report this model.")
    return _segments(model, dag, accel, [members[g] for g in ordered], backend)


def _segments(model: Model, dag: _Dag, accel: List[bool], groups: List[List[int]],
              backend: str) -> List[Segment]:
    seg_of_node = [0] * len(dag.names)
    for k, nodes in enumerate(groups):
        for i in nodes:
            seg_of_node[i] = k
    constants = set(model.initializers)
    constants.update(o for i, op in enumerate(dag.ops) if op == "Constant" for o in dag.outs[i])
    graph_outputs = {o.name for o in model.proto.graph.output}
    producer = dag.producer
    reads = dag.reads
    exported: Set[str] = set()
    seg_inputs: List[List[str]] = []
    for k, nodes in enumerate(groups):
        ins: Dict[str, None] = {}
        for i in nodes:
            for t in reads[i]:
                p = producer.get(t)
                if (p is not None and seg_of_node[p] == k) or t in constants:
                    continue
                ins[t] = None
                if p is not None:
                    exported.add(t)
        seg_inputs.append(list(ins))
    segments: List[Segment] = []
    prefix = "trt" if backend == "tensorrt" else backend
    for k, nodes in enumerate(groups):
        on_backend = accel[nodes[0]]
        outs = [o for i in nodes for o in dag.outs[i] if o in exported or o in graph_outputs]
        if not outs:
            # Dead nodes (nothing reads their outputs): the segment still needs an output to be
            # a valid model, so it returns the tensors its nodes leave unread.
            read_here = {t for i in nodes for t in reads[i]}
            outs = [o for i in nodes for o in dag.outs[i] if o and o not in read_here]
        names = tuple(dag.names[i] for i in nodes)
        segments.append(Segment(
            index=k, name=f"{prefix if on_backend else FALLBACK}_{k}",
            backend=backend if on_backend else FALLBACK, nodes=names, inputs=tuple(seg_inputs[k]),
            outputs=tuple(dict.fromkeys(outs)),
            macs=Later(functools.partial(_segment_macs, model, names))))
    return segments


# ----------------------------------------------------------------------------------------------
# Cycle-safe merging
# ----------------------------------------------------------------------------------------------


def _merge(preds: List[List[int]], succs: List[List[int]], labels: List[int],
           fixed: List[bool]) -> Tuple[List[int], List[Tuple[int, int, int]]]:
    """Group units (nodes of a DAG, in topological order) into connected same-label regions whose
    contracted graph is acyclic. Fixed units stay alone.

    1. A greedy Kahn schedule emits ready units of the current label for as long as it can; each
       such run, split into connected components, is cycle-free by construction.
    2. Adjacent same-label regions are then merged when no other path joins them, keeping a
       topological order of regions up to date locally; every refusal names a unit on the
       other path.

    Returns the region id per unit and the refused merges as ``(unit, unit, via-unit)``.
    """
    n = len(labels)
    parent = list(range(n))

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    if len(set(labels)) <= 1 and not any(fixed):  # one label: regions are the components
        return _components(preds), []

    # 1. runs of a greedy Kahn schedule
    indeg = [len(p) for p in preds]
    ready: Dict[int, deque] = {lab: deque() for lab in sorted(set(labels))}
    ready_fixed: deque = deque()
    for u in range(n):
        if indeg[u] == 0:
            (ready_fixed if fixed[u] else ready[labels[u]]).append(u)
    run = [0] * n
    run_id, cur = -1, None
    for _ in range(n):
        if cur is not None and ready[cur]:
            u = ready[cur].popleft()
        elif ready_fixed:
            u, cur = ready_fixed.popleft(), None
            run_id += 1
        else:
            cur = next(lab for lab, q in ready.items() if q)
            u = ready[cur].popleft()
            run_id += 1
        run[u] = run_id
        for s in succs[u]:
            indeg[s] -= 1
            if indeg[s] == 0:
                (ready_fixed if fixed[s] else ready[labels[s]]).append(s)
    for v in range(n):
        for u in preds[v]:
            if run[u] == run[v]:
                ru, rv = find(u), find(v)
                if ru != rv:
                    parent[rv] = ru

    # 2. exact merging of adjacent same-label regions on the contracted graph
    roots = sorted({find(u) for u in range(n)}, key=lambda r: (run[r], r))
    pos = {r: k for k, r in enumerate(roots)}
    slots: List[Optional[int]] = list(roots)
    rsucc: Dict[int, Set[int]] = {r: set() for r in roots}
    rpred: Dict[int, Set[int]] = {r: set() for r in roots}
    candidates: Dict[Tuple[int, int], Tuple[int, int]] = {}
    for v in range(n):
        rv = find(v)
        for u in preds[v]:
            ru = find(u)
            if ru == rv:
                continue
            rsucc[ru].add(rv)
            rpred[rv].add(ru)
            if labels[u] == labels[v] and not fixed[u] and not fixed[v]:
                candidates.setdefault((ru, rv), (u, v))

    def other_path(a: int, b: int) -> Tuple[Optional[int], Set[int]]:
        limit = pos[b]
        stack = [x for x in rsucc[a] if x != b and pos[x] < limit]
        seen = set(stack)
        while stack:
            x = stack.pop()
            for y in rsucc[x]:
                if y == b:
                    return x, seen
                if y not in seen and pos[y] < limit:
                    seen.add(y)
                    stack.append(y)
        return None, seen

    def join(a: int, b: int, after: Set[int]) -> None:
        lo, hi = pos[a], pos[b]
        window = [w for w in slots[lo + 1:hi] if w is not None]
        keep = parent[b] = a  # b's members now resolve to a
        rsucc[a].discard(b)
        rpred[b].discard(a)
        for x in rsucc.pop(b):
            rpred[x].discard(b)
            rpred[x].add(keep)
            rsucc[keep].add(x)
        for x in rpred.pop(b):
            rsucc[x].discard(b)
            rsucc[x].add(keep)
            rpred[keep].add(x)
        new = [w for w in window if w not in after] + [keep] + [w for w in window if w in after]
        new += [None] * (hi - lo + 1 - len(new))
        slots[lo:hi + 1] = new
        for k, w in enumerate(new, start=lo):
            if w is not None:
                pos[w] = k
        del pos[b]

    pending = sorted(candidates.items(), key=lambda kv: (pos[kv[0][1]], -pos[kv[0][0]]))
    refused: List[Tuple[int, int, int]] = []
    while pending:
        merged_any = False
        retry: List[Tuple[Tuple[int, int], Tuple[int, int]]] = []
        refused = []
        for (_, _), (u, v) in pending:
            a, b = find(u), find(v)
            if a == b:
                continue
            via, after = other_path(a, b)
            if via is not None:
                retry.append(((a, b), (u, v)))
                refused.append((u, v, via))
                continue
            join(a, b, after)
            merged_any = True
        pending = retry if merged_any else []
    region = [find(u) for u in range(n)]
    first: Dict[int, int] = {}
    for u in range(n):
        first.setdefault(region[u], u)
    refused = [(u, v, _witness(via, region, first)) for u, v, via in refused]
    return region, refused


def _components(preds: Sequence[Sequence[int]]) -> List[int]:
    """Connected component (its root unit) of every unit of a DAG given by its predecessor lists."""
    n = len(preds)
    parent = list(range(n))
    for v in range(n):
        for u in preds[v]:
            ru = u
            while parent[ru] != ru:
                parent[ru] = ru = parent[parent[ru]]
            rv = v
            while parent[rv] != rv:
                parent[rv] = rv = parent[parent[rv]]
            if ru != rv:
                parent[rv] = ru
    for v in range(n):
        r = v
        while parent[r] != r:
            r = parent[r]
        parent[v] = r
    return parent


def _witness(region_id: int, region: List[int], first: Dict[int, int]) -> int:
    """A unit of region ``region_id`` (ids may have been merged since)."""
    return first.get(region[region_id], region_id)


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def _backend_name(backend: Any) -> str:
    name = backend if isinstance(backend, str) else getattr(backend, "name", None)
    if not isinstance(name, str) or not name.strip() or name == FALLBACK:
        raise PartitionError(
            f"backend must be a backend name such as 'tensorrt' (not {FALLBACK!r}), or an object "
            f"with a 'name' attribute; got {backend!r}.")
    return name


def _names(values: Iterable[str], what: str) -> Tuple[str, ...]:
    if isinstance(values, str):
        values = (values,)
    try:
        out = tuple(values)
    except TypeError:
        raise PartitionError(f"{what} must be a list of names, got {values!r}.") from None
    bad = [v for v in out if not isinstance(v, str)]
    if bad:
        raise PartitionError(f"{what} must hold strings; got {bad[:5]}.")
    return out


def _check_node_names(model: Model, names: Iterable[str], what: str) -> None:
    known = set(model.node_names)
    unknown = [n for n in names if n not in known]
    if unknown:
        import difflib

        hints = {n: difflib.get_close_matches(n, model.node_names, n=3) for n in unknown[:5]}
        hint = "; ".join(f"{n!r}: did you mean {h}?" for n, h in hints.items() if h)
        raise PartitionError(
            f"{what} names node(s) {unknown[:10]} that model {model.name!r} does not have "
            f"({len(known)} nodes; names are listed in Model.nodes.name).{' ' + hint if hint else ''}")


def _verdicts(model: Model, support: SupportLike, backend: Any, names: Optional[List[str]] = None) -> Verdicts:
    """``{node: (supported, reason)}`` from any accepted form of support data, for the nodes
    ``names`` (default: the model's), in their order."""
    if support is None:
        support = _default_support(model, backend)
    columns = getattr(support, "_columns", None)  # a SupportTable: its columns, without a DataFrame
    names = model.node_names if names is None else names
    if columns is not None and columns[0] == names:
        # a table made for this model lists its nodes in the model's order
        _, _, supported, reasons, _ = columns
        if set(map(type, supported)) <= {bool} and set(map(type, reasons)) <= {str} and "" not in reasons:
            return dict(zip(names, zip(supported, reasons)))
        return {name: (bool(ok), _reason(ok, reason)) for name, ok, reason in zip(names, supported, reasons)}
    rows = None if columns is None else support._rows
    frame = None if columns is not None else getattr(support, "frame", None)
    if frame is None and columns is None and hasattr(support, "columns"):
        frame = support
    verdicts: Verdicts = {}
    if rows is not None:
        for row in rows:
            verdicts[str(row["node"])] = (bool(row["supported"]), _reason(row["supported"], row["reason"]))
    elif frame is not None:
        missing_cols = {"node", "supported"} - set(frame.columns)
        if missing_cols:
            raise PartitionError(f"Support table lacks column(s) {sorted(missing_cols)}; it has "
                                 f"{list(frame.columns)}. Pass a SupportTable from trtlab.check_support.")
        reasons = frame["reason"].tolist() if "reason" in frame.columns else [""] * len(frame)
        for node, ok, reason in zip(frame["node"].tolist(), frame["supported"].tolist(), reasons):
            verdicts[str(node)] = (bool(ok), _reason(ok, reason))
    elif isinstance(support, Mapping):
        for node, value in support.items():
            if isinstance(value, (tuple, list)) and len(value) == 2:
                ok, reason = value
            elif isinstance(value, (bool, np.bool_)):
                ok, reason = value, ""
            else:
                raise PartitionError(
                    f"support[{node!r}] is {value!r}; values must be a bool or (bool, reason).")
            verdicts[str(node)] = (bool(ok), _reason(ok, reason))
    else:
        raise PartitionError(
            f"support must be a SupportTable, a DataFrame (node, supported, reason), a mapping "
            f"node -> bool | (bool, reason), or None; got {type(support).__name__}.")
    known = set(names)
    missing = [n for n in names if n not in verdicts]
    extra = [n for n in verdicts if n not in known]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no verdict for {len(missing)} node(s) (first: {missing[:5]})")
        if extra:
            parts.append(f"verdicts for {len(extra)} unknown node(s) (first: {extra[:5]})")
        raise PartitionError(
            f"Support data does not match model {model.name!r}: {'; '.join(parts)}. Make it with "
            "trtlab.check_support(model) on the same loaded model, or give every node in "
            "Model.node_names a verdict.")
    return {n: verdicts[n] for n in names}


def _default_support(model: Model, backend: Any) -> Any:
    """The backend object's own ``check_support(model)``, else TensorRT's."""
    checker = getattr(backend, "check_support", None)
    if callable(checker):
        return checker(model)
    from trtlab.backends.tensorrt.support import check_support

    return check_support(model)


def _reason(ok: Any, reason: Any) -> str:
    text = "" if reason is None or (isinstance(reason, float) and np.isnan(reason)) else str(reason)
    if text:
        return text
    return "supported" if ok else "unsupported (no reason given)"


# ----------------------------------------------------------------------------------------------
# Running the segments
# ----------------------------------------------------------------------------------------------


def run_segments(partition: Partition, feeds: Mapping[str, np.ndarray], *,
                 providers: Optional[Sequence[str]] = None,
                 return_intermediates: bool = False) -> Dict[str, np.ndarray]:
    """Run every segment in order with ONNX Runtime, passing cut tensors along.

    Parameters
    ----------
    partition
        The partition whose segments run.
    feeds
        ``{graph input name: array}``.
    providers
        ONNX Runtime providers (default: CUDA when available, else CPU).
    return_intermediates
        Also return every cut tensor.

    Returns
    -------
    dict
        The model's outputs by name (in the model's order).

    Raises
    ------
    InputError
        Feeds that do not match the model's inputs.
    """
    from trtlab.feeds import unalias_outputs, validate_feeds
    from trtlab.backends.onnxruntime.session import run_error, session

    model = partition.model
    env: Dict[str, np.ndarray] = dict(validate_feeds(model.inputs, feeds, what=f"model {model.name!r}"))
    for seg in partition.segments:
        proto = segment_model(partition, seg.index)
        sess = session(proto, providers)
        names = [i.name for i in sess.get_inputs()]
        outs = [o.name for o in sess.get_outputs()]
        try:
            values = sess.run(outs, {n: env[n] for n in names})
        except KeyError as exc:
            raise InputError(f"Segment {seg.name} reads tensor {exc.args[0]!r}, which no earlier "
                             "segment produced.") from None
        except Exception as exc:  # onnxruntime raises its own exception types
            raise run_error(exc, outs, {n: env[n] for n in names}, what=f"segment {seg.name}") from exc
        env.update(zip(outs, values))
    result: Dict[str, np.ndarray] = {}
    for out in model.outputs:
        if out.name in env:
            result[out.name] = env[out.name]
        else:
            value = model.constant_value(out.name)
            if value is None:
                raise InputError(f"Model output {out.name!r} was produced by no segment.")
            result[out.name] = value
    unalias_outputs(result, feeds)
    if return_intermediates:
        return {**env, **result}
    return result
