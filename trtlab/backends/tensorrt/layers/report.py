"""FusionReport: engine (or network) layers mapped back to ONNX nodes."""

from __future__ import annotations

import html
import logging
import math
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import pandas as pd

from trtlab.errors import FusionError
from trtlab.backends.tensorrt.layers.graph import ALIASING_OPS, SHAPE_OPS, OnnxFacts, op_from_name
from trtlab.backends.tensorrt.layers.names import Part, looks_constant, metadata_entries, visible

log = logging.getLogger(__name__)

__all__ = ["FusionReport", "STAGES", "LAYER_COLUMNS", "TIME_COLUMNS", "resolve_layers",
           "join_profile", "unmapped_nodes", "REFORMAT_TYPES", "NON_RUNNING_TYPES",
           "IO_COLUMNS", "ANCHOR_OPS"]

STAGES = ("pre-fusion", "post-fusion")

#: Columns of :attr:`FusionReport.layers`, in order (``segment`` is added for hybrid models).
LAYER_COLUMNS = [
    "layer", "name", "label", "layer_type", "parameter_type", "kind", "runs", "precision",
    "out_precision", "inputs", "input_shapes", "input_formats", "outputs", "output_shapes",
    "output_formats", "tactic", "origin", "onnx_nodes", "related_nodes", "constants",
    "unresolved", "subgraph_nodes", "mapping", "shape_profile", "metadata", "attributes",
]
#: Columns of :attr:`FusionReport.io_tensors`.
IO_COLUMNS = ["name", "mode", "shape", "precision", "format", "location"]
#: Op types that anchor a fused layer (the layer is "theirs"; the others were absorbed into it).
ANCHOR_OPS = frozenset({
    "Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "Gemm", "MatMul", "MatMulInteger",
    "QLinearMatMul", "Einsum", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "LpPool", "LSTM", "GRU", "RNN", "Softmax", "LogSoftmax", "Attention",
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "BatchNormalization",
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "Resize", "Gather", "Concat", "Slice",
    "TopK", "NonMaxSuppression", "Transpose", "Reshape"})
_QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})
#: Columns added by a profile.
TIME_COLUMNS = ["time_ms", "average_ms", "median_ms", "percentage"]


#: Layer types that convert a tensor's format or type (the layer does no math of an ONNX op).
REFORMAT_TYPES = frozenset({"Reformat", "MyelinReformat", "REFORMAT"})
#: Layer types TensorRT keeps in the layer list but does not run: elided copies (NoOp), constants
#: baked into the engine, Myelin's host-side shape calls. trex leaves the same types out.
NON_RUNNING_TYPES = frozenset({"NoOp", "Constant", "shape_call"})


def _resolve_name(name: str, facts: Optional[OnnxFacts]) -> Optional[str]:
    if facts is None:
        return None if looks_constant(name) else name
    return facts.node_of(name) or facts.top_level(name)


def _resolve_part(part: Part, facts: Optional[OnnxFacts], acc: Dict[str, List[str]]) -> None:
    if part.kind == "name":
        if facts is None:
            acc["constants" if looks_constant(part.name) else "nodes"].append(part.name)
            return
        node = facts.node_of(part.name) or facts.top_level(part.name)
        if node is not None:
            acc["nodes"].append(node)
        elif part.name in facts.initializers or part.name in facts.graph_inputs:
            acc["constants"].append(part.name)
        else:
            acc["unresolved"].append(part.name)
    elif part.kind == "range":
        acc["ranges"].append(part)
    elif part.kind in ("reformat", "internal"):
        acc["helpers"].append(part)
        for name in part.ends or ((part.name,) if part.name else ()):
            node = _resolve_name(name, facts)
            if node is not None:
                acc["related"].append(node)


def _unique(items: Iterable[str]) -> List[str]:
    seen: Set[str] = set()
    return [x for x in items if not (x in seen or seen.add(x))]


def _range_positions(part: Part, facts: OnnxFacts) -> List[int]:
    """Topological positions of a range's ends (an initializer end counts as its first user)."""
    out: List[int] = []
    for name in part.ends or (part.name, part.last or part.name):
        node = facts.node_of(name) or facts.top_level(name)
        if node is not None:
            out.append(facts.position[node])
        elif name in facts.consumers:
            users = [facts.position[c] for c in facts.consumers[name] if c in facts.position]
            if users:
                out.append(min(users))
    return out


def _kind(row: Dict[str, Any]) -> str:
    parts = row["parts"]
    if (str(row.get("layer_type", "")) in REFORMAT_TYPES or row.get("origin") == "REFORMAT"
            or (parts and parts[0].kind == "reformat")):
        return "reformat"
    if row["onnx_nodes"]:
        return "onnx"
    if row["constants"] and not any(p.kind == "internal" for p in parts):
        return "constant"
    return "internal"


def resolve_layers(rows: List[Dict[str, Any]], facts: Optional[OnnxFacts]) -> List[Dict[str, Any]]:
    """Fill ``onnx_nodes``, ``related_nodes``, ``constants``, ``unresolved``, ``mapping`` and
    ``kind`` of each row from its ``parts``, ``metadata`` and ``fallback_nodes``.

    ``Metadata`` wins when present; otherwise the name parts are resolved (exactly against
    ``facts``, by naming heuristics without). A format conversion and a layer TensorRT made
    itself never implement an ONNX node by their name: the node they serve goes to
    ``related_nodes``. Myelin ``ForeignNode[a + b...c + d]`` ranges are resolved last: with a
    model, to the nodes between the first and last resolvable end in topological order that no
    other layer claims (ends that are not in the model go to ``unresolved``); without one, to
    the ends that look like nodes.
    """
    pending: List[Tuple[Dict[str, Any], List[Part]]] = []
    for row in rows:
        acc: Dict[str, List[Any]] = defaultdict(list)
        for part in row["parts"]:
            _resolve_part(part, facts, acc)
        meta = metadata_entries(row.get("metadata"))
        inner: List[str] = []
        if meta and facts is not None:
            nodes = []
            for name, enclosing in meta:
                top = facts.top_level(name, enclosing)
                nodes.append(top or name)
                if top is not None and top != name:
                    inner.append(name)
        else:
            nodes = [name for name, _ in meta]
        if meta:
            mapping = "metadata"
        elif acc["nodes"]:
            nodes, mapping = acc["nodes"], "name"
        elif row.get("fallback_nodes") and not acc["ranges"] and not any(
                p.kind == "reformat" for p in acc["helpers"]):
            nodes, mapping = list(row["fallback_nodes"]), "output"
        else:
            nodes, mapping = [], ""
        if row["parts"] and row["parts"][0].kind == "reformat":
            # a named format conversion serves the nodes its Metadata lists; it implements none
            acc["related"] = list(nodes) + acc["related"]
            nodes, mapping = [], ""
        row["onnx_nodes"] = tuple(_unique(nodes))
        row["related_nodes"] = tuple(_unique(n for n in acc["related"] if n not in nodes))
        row["constants"] = tuple(_unique(acc["constants"]))
        row["unresolved"] = tuple(_unique(acc["unresolved"]))
        row["subgraph_nodes"] = tuple(_unique(inner))
        row["mapping"] = mapping
        if acc["ranges"] and not meta:
            pending.append((row, acc["ranges"]))
    if pending:
        claimed = {n for row in rows for n in row["onnx_nodes"]}
        for row, ranges in pending:
            nodes = list(row["onnx_nodes"])
            unresolved = list(row["unresolved"])
            exact = facts is not None
            for part in ranges:
                ends = part.ends or (part.name, part.last or part.name)
                if facts is None:
                    nodes += [e for e in ends if not looks_constant(e)]
                    continue
                found = [facts.node_of(e) or facts.top_level(e) for e in ends]
                unresolved += [e for e, f in zip(ends, found) if f is None
                               and e not in facts.initializers and e not in facts.consumers]
                pos = _range_positions(part, facts)
                if not pos:
                    exact = False
                    continue
                a, b = min(pos), max(pos)
                nodes += [n for n in facts.order[a:b + 1] if n not in claimed or n in found]
            row["onnx_nodes"] = tuple(_unique(nodes))
            row["unresolved"] = tuple(_unique(unresolved))
            row["mapping"] = "range" if exact else "range-ends"
    for row in rows:
        row["kind"] = _kind(row)
        row.setdefault("runs", True)
    return rows


def join_profile(rows: List[Dict[str, Any]], records: List[Dict[str, Any]]) -> List[str]:
    """Attach profile times to rows by layer name (repeated names in order). Returns notes."""
    queues: Dict[str, Deque[Dict[str, Any]]] = defaultdict(deque)
    for rec in records:
        queues[rec["name"]].append(rec)
    missing = 0
    nan = float("nan")
    for row in rows:
        q = queues.get(row["name"])
        rec = q.popleft() if q else None
        if rec is None:
            missing += 1
        for col, key in zip(TIME_COLUMNS, ("time_ms", "average_ms", "median_ms", "percentage")):
            row[col] = rec[key] if rec else nan
    notes = []
    extra = [name for name, q in queues.items() for _ in q]
    if missing:
        notes.append(f"{missing} of {len(rows)} layers have no profile record "
                     "(their times are NaN)")
    if extra:
        notes.append(f"{len(extra)} profile records match no layer (first: {visible(extra[0])!r}); "
                     "was the profile taken from another engine?")
    for n in notes:
        log.warning("profile join: %s", n)
    return notes


def unmapped_nodes(facts: OnnxFacts, mapped: Set[str], stage: str,
                   layer_inputs: Optional[Set[str]] = None) -> pd.DataFrame:
    """ONNX nodes that map to no layer, each with the reason."""
    rows = []
    for node in facts.order:
        if node in mapped:
            continue
        op = facts.op_type[node]
        outs = facts.outputs[node]
        users = sorted({c for t in outs for c in facts.consumers.get(t, [])})
        if op == "Constant" or (node in facts.constant_nodes and op not in ALIASING_OPS):
            if not users and not any(t in facts.graph_outputs for t in outs):
                reason = "constant whose output nothing uses"
            else:
                what = "Constant" if op == "Constant" else "constant subgraph (all inputs constant)"
                named = ", ".join(users[:3]) or "(graph output)"
                reason = (f"{what} folded into the weights of its consumer"
                          f"{'s' if len(users) > 1 else ''} {named}")
        elif op in ALIASING_OPS:
            reason = f"{op} eliminated: its output is its input"
        elif op in SHAPE_OPS and stage == "post-fusion":
            reason = f"{op} of a static shape, evaluated while building"
        elif op in ("QuantizeLinear", "DequantizeLinear") and stage == "post-fusion":
            reason = ("Q/DQ folded into the scales of an adjacent fused layer; the engine keeps "
                      "no name for it")
        elif stage == "post-fusion":
            reason = ("no engine layer names it: TensorRT fused it without keeping its name "
                      "(engines built by TensorRT >= 8.6 with detailed verbosity carry "
                      "'Metadata' that names every node)")
        elif layer_inputs is not None and outs and not any(t in layer_inputs for t in outs):
            reason = "the parser made no layer for it and no layer reads its outputs"
        else:
            reason = "the parser made no layer for it"
        rows.append({"node": node, "op_type": op, "reason": reason})
    return pd.DataFrame(rows, columns=["node", "op_type", "reason"])


@dataclass(frozen=True, eq=False)
class FusionReport:
    """TensorRT layers and the ONNX nodes each one came from.

    Attributes
    ----------
    layers : pandas.DataFrame
        One row per layer, columns :data:`LAYER_COLUMNS` (plus ``time_ms``, ``average_ms``,
        ``median_ms``, ``percentage`` with a profile, and ``segment`` for a hybrid model).
        ``kind`` is ``reformat`` (every format or type conversion: LayerType ``Reformat`` /
        ``MyelinReformat`` or a ``Reformatting CopyNode`` name, whatever node it serves),
        ``onnx`` (implements ONNX nodes), ``constant`` or ``internal``; ``runs`` is False for
        layers TensorRT lists but does not run (``NoOp``, ``Constant``, ``shape_call``);
        ``precision`` is that of the first input (first output without inputs);
        ``attributes`` holds the layer's other JSON fields (``Kernel``, ``Weights``, ...).
        ``onnx_nodes`` are top-level ONNX nodes (a layer made from a node inside an If/Loop
        body maps to the If/Loop node, the inner name kept in ``subgraph_nodes``);
        ``related_nodes`` are the nodes a reformat layer serves; ``mapping`` says how the
        nodes were found (``metadata``, ``name``, ``range``, ``range-ends``, ``output``).
    onnx_to_layers : dict
        ONNX node name -> tuple of layer names implementing it (several for a node TensorRT
        split, the same layer for nodes it fused).
    stage : str
        ``"pre-fusion"`` (the parsed TensorRT network, before the builder fused anything) or
        ``"post-fusion"`` (an engine's layers).
    source : str
        Where the layers came from (schema or TensorRT flavor and version).
    label : str
        Short name used as the column label in :meth:`compare` and in plots.
    unmapped : pandas.DataFrame
        ONNX nodes of the given model that map to no layer, with the reason (empty without a
        model).
    io_tensors : pandas.DataFrame
        Engine inputs and outputs (``Bindings`` or ``I/O Tensors``): columns
        :data:`IO_COLUMNS`; with TensorRT 8-10 the direction, shape and type come from the
        layer tensors of the same name.
    notes : tuple of str
        What the reader noticed: fallbacks, missing profile records, schema remarks.
    """

    layers: pd.DataFrame
    onnx_to_layers: Dict[str, Tuple[str, ...]]
    stage: str
    source: str
    label: str = "report"
    unmapped: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["node", "op_type", "reason"]))
    io_tensors: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=IO_COLUMNS))
    notes: Tuple[str, ...] = ()
    op_types: Dict[str, str] = field(default_factory=dict)
    node_order: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise FusionError(f"stage must be one of {STAGES}, got {self.stage!r}.")

    # -- facts ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.layers)

    @property
    def has_profile(self) -> bool:
        """Whether per-layer times were joined."""
        return "average_ms" in self.layers.columns

    @property
    def nodes(self) -> List[str]:
        """Mapped ONNX node names, in model order when the model is known."""
        if self.node_order:
            return [n for n in self.node_order if n in self.onnx_to_layers]
        return list(self.onnx_to_layers)

    def op_type(self, node: str) -> str:
        """Op type of ``node`` (from the model; guessed from the name without one)."""
        return self.op_types.get(node) or op_from_name(node)

    def groups(self, min_size: int = 2) -> List[Set[str]]:
        """Sets of ONNX nodes that share one running layer (fused together), in layer order.

        Layers TensorRT elides (``runs`` False) are left out: their nodes run as no kernel.

        Parameters
        ----------
        min_size
            Smallest group to return; 2 (the default) lists only real fusions.
        """
        out: List[Set[str]] = []
        seen: Set[frozenset] = set()
        for nodes in self.running["onnx_nodes"]:
            key = frozenset(nodes)
            if len(key) >= min_size and key not in seen:
                seen.add(key)
                out.append(set(key))
        return out

    # -- tables -----------------------------------------------------------------------------
    @property
    def running(self) -> pd.DataFrame:
        """The layers that run (``runs`` is True): what the profile times and trex counts."""
        return self.layers[self.layers["runs"].astype(bool)]

    def owner(self, nodes: Sequence[str]) -> Optional[str]:
        """The node a fused layer belongs to: the first compute op (Conv, Gemm, pooling, ...),
        else the first node that is not a Q/DQ, else the first node."""
        if not nodes:
            return None
        for node in nodes:
            if self.op_type(node) in ANCHOR_OPS:
                return node
        for node in nodes:
            if self.op_type(node) not in _QDQ:
                return node
        return nodes[0]

    def fate(self) -> pd.DataFrame:
        """What became of each ONNX node: its own layer, absorbed into another op's layer,
        only in layers TensorRT elides, or no layer.

        Columns: ``node``, ``op_type``, ``fate`` (``own layer``, ``absorbed``, ``elided``,
        ``no layer``), ``into`` (for ``absorbed``: the node owning the layer, and its op type
        in ``into_op``). With the model known every node is listed; without it, the nodes the
        layers name.
        """
        owned: Dict[str, Set[str]] = defaultdict(set)
        running: Dict[str, bool] = {}
        for nodes, runs in zip(self.layers["onnx_nodes"], self.layers["runs"]):
            head = self.owner(nodes)
            for node in nodes:
                running[node] = running.get(node, False) or bool(runs)
                if runs:
                    owned[node].add(head)
        universe = list(self.node_order) if self.node_order else list(self.onnx_to_layers)
        rows = []
        for node in universe:
            heads = owned.get(node, set())
            into = ""
            if node not in self.onnx_to_layers:
                fate = "no layer"
            elif not running.get(node):
                fate = "elided"
            elif node in heads:
                fate = "own layer"
            else:
                fate = "absorbed"
                into = sorted(heads)[0]
            rows.append({"node": node, "op_type": self.op_type(node), "fate": fate,
                         "into": into, "into_op": self.op_type(into) if into else ""})
        return pd.DataFrame(rows, columns=["node", "op_type", "fate", "into", "into_op"])

    def before_after(self) -> pd.DataFrame:
        """Per ONNX op type: how many nodes became their own layer and how many were fused away.

        Columns: ``op_type``; ``onnx_nodes`` (nodes of that type: all of the model's when it
        is known, else those the layers name); ``own_layer`` (nodes that anchor a running
        layer: a Conv in ``Conv + Relu``); ``absorbed`` (nodes fused into a layer another op
        anchors: the Relu); ``elided`` (nodes only in layers TensorRT does not run, e.g.
        ``NoOp``); ``no_layer`` (nodes no layer names: folded constants, Q/DQ folded into
        scales, ...); ``mapped`` (``onnx_nodes - no_layer``); ``layers`` (running layers
        implementing at least one such node). The last row, ``TOTAL``, compares all ONNX nodes
        with all running layers; ``reformat`` layers appear only there.
        """
        fate = self.fate()
        counts = pd.crosstab(fate["op_type"], fate["fate"]) if len(fate) else pd.DataFrame()
        cols = ["own layer", "absorbed", "elided", "no layer"]
        counts = counts.reindex(columns=cols, fill_value=0)
        layers: Dict[str, Set[int]] = defaultdict(set)
        for idx, nodes, runs in zip(self.layers["layer"], self.layers["onnx_nodes"],
                                    self.layers["runs"]):
            if runs:
                for node in nodes:
                    layers[self.op_type(node)].add(idx)
        rows = []
        for op in counts.index:
            c = counts.loc[op]
            total = int(c.sum())
            rows.append({"op_type": op, "onnx_nodes": total, "own_layer": int(c["own layer"]),
                         "absorbed": int(c["absorbed"]), "elided": int(c["elided"]),
                         "no_layer": int(c["no layer"]), "mapped": total - int(c["no layer"]),
                         "layers": len(layers.get(op, ()))})
        columns = ["op_type", "onnx_nodes", "own_layer", "absorbed", "elided", "no_layer",
                   "mapped", "layers"]
        frame = pd.DataFrame(rows, columns=columns)
        frame = frame.sort_values(["onnx_nodes", "op_type"], ascending=[False, True])
        tot = {c: int(frame[c].sum()) for c in columns[1:-1]}
        total = pd.DataFrame([{"op_type": "TOTAL", **tot, "layers": len(self.running)}])
        return pd.concat([frame, total], ignore_index=True)

    def _node_rows(self) -> pd.DataFrame:
        by_name = {}
        for row in self.layers.itertuples(index=False):
            by_name.setdefault(row.name, row)
        reformat: Dict[str, float] = defaultdict(float)
        if self.has_profile:
            for row in self.layers.itertuples(index=False):
                if row.kind == "reformat" and not math.isnan(row.average_ms):
                    for node in row.related_nodes:
                        reformat[node] += row.average_ms / len(row.related_nodes)
        rows = []
        for node in self.nodes:
            lays = [by_name[n] for n in self.onnx_to_layers[node]]
            fused = sorted({m for r in lays for m in r.onnx_nodes} - {node})
            rec = {"node": node, "op_type": self.op_type(node),
                   "layers": tuple(r.name for r in lays),
                   "layer_types": tuple(_unique(r.layer_type for r in lays)),
                   "precision": lays[0].precision if lays else "",
                   "fused_with": tuple(fused)}
            if self.has_profile:
                rec["layer_ms"] = float(sum(r.average_ms for r in lays))
                rec["share_ms"] = float(sum(r.average_ms / len(r.onnx_nodes) for r in lays))
                rec["reformat_ms"] = reformat.get(node, 0.0)
            rows.append(rec)
        cols = ["node", "op_type", "layers", "layer_types", "precision", "fused_with"]
        if self.has_profile:
            cols += ["layer_ms", "share_ms", "reformat_ms"]
        return pd.DataFrame(rows, columns=cols)

    def node_latency(self) -> pd.DataFrame:
        """Per-ONNX-node latency roll-up from the profile.

        Columns: ``node``, ``op_type``, ``layers``, ``layer_types``, ``precision``,
        ``fused_with``, ``layer_ms`` (average time of every layer implementing the node, each
        counted in full), ``share_ms`` (each layer's time split evenly among the nodes it fuses,
        so the column sums to the mapped layers' total) and ``reformat_ms`` (reformat layers
        feeding the node).
        """
        if not self.has_profile:
            raise FusionError(
                f"This {self.stage} report has no per-layer times. Pass profile= to fusion() "
                "(trtexec --exportProfile=profile.json --separateProfileRun).")
        return self._node_rows()

    def compare(self, other: "FusionReport",
                labels: Optional[Sequence[str]] = None) -> pd.DataFrame:
        """Two reports side by side, keyed by ONNX node (layer names differ between builds).

        Parameters
        ----------
        other
            Another report, e.g. the INT8 engine of the model this one is the FP16 engine of.
        labels
            Column labels for the two reports (default: their ``label``).

        Returns
        -------
        pandas.DataFrame
            Index ``node``; columns a two-level index ``(label, field)`` with fields
            ``layers``, ``layer_types``, ``precision``, ``fused_with`` (and ``share_ms`` when
            that report has a profile); plus ``("", "op_type")`` and ``("", "same_fusion")``,
            which says whether the node is fused with the same nodes in both.
        """
        if not isinstance(other, FusionReport):
            raise FusionError(f"compare() needs another FusionReport, got {type(other).__name__}.")
        a_label, b_label = labels if labels is not None else (self.label, other.label)
        if a_label == b_label:
            a_label, b_label = f"{a_label} (1)", f"{b_label} (2)"
        a, b = self._node_rows().set_index("node"), other._node_rows().set_index("node")
        order = _unique(list(a.index) + list(b.index))
        if self.node_order:
            pos = {n: i for i, n in enumerate(self.node_order)}
            order.sort(key=lambda n: pos.get(n, len(pos)))
        fields = ["layers", "layer_types", "precision", "fused_with"]
        parts = {}
        for label, frame in ((a_label, a), (b_label, b)):
            cols = fields + (["share_ms"] if "share_ms" in frame.columns else [])
            parts[label] = frame.reindex(order)[cols]
        out = pd.concat(parts, axis=1)
        op = [self.op_types.get(n) or other.op_types.get(n) or op_from_name(n) for n in order]
        out[("", "op_type")] = op
        out[("", "same_fusion")] = [
            isinstance(x, tuple) and isinstance(y, tuple) and x == y
            for x, y in zip(out[(a_label, "fused_with")], out[(b_label, "fused_with")])]
        out.index.name = "node"
        return out

    def align(self, other: "FusionReport") -> Any:
        """Pair this engine's layers with ``other``'s by ONNX nodes (``Metadata``) where both
        list them, else by topology and layer signature (:func:`trtlab.fusion.align.align_engines`).

        Unlike :meth:`compare`, which keys by ONNX node name, this survives different exports of
        one model (different node names) and different precisions (different reformats).
        """
        from trtlab.backends.tensorrt.layers.align import align_engines

        return align_engines(self, other)

    def card(self, *, metadata: Any = None) -> Any:
        """The engine report card (:func:`trtlab.fusion.card.report_card`)."""
        from trtlab.backends.tensorrt.layers.card import report_card

        return report_card(self, metadata=metadata)

    def summary(self) -> Dict[str, Any]:
        """Counts in one dict: running layers (``layers``; ``layers_listed`` includes the
        ``elided`` ones), running reformats, mapped nodes, fused groups, unmapped nodes, time."""
        run = self.running
        out = {"stage": self.stage, "source": self.source, "layers": len(run),
               "layers_listed": len(self.layers), "elided": len(self.layers) - len(run),
               "reformats": int((run["kind"] == "reformat").sum()),
               "onnx_nodes_mapped": len(self.onnx_to_layers),
               "fused_groups": len(self.groups()), "unmapped_nodes": len(self.unmapped),
               "kinds": run["kind"].value_counts().to_dict(),
               "precisions": run["precision"].value_counts().to_dict()}
        if self.has_profile:
            out["total_average_ms"] = float(self.layers["average_ms"].sum(skipna=True))
        return out

    def __repr__(self) -> str:
        s = self.summary()
        prof = f", {s['total_average_ms']:.4g} ms" if self.has_profile else ""
        elided = f" (+{s['elided']} elided)" if s["elided"] else ""
        return (f"FusionReport({self.label!r}, {self.stage}, {s['layers']} running layers"
                f"{elided}, {s['reformats']} reformats, from "
                f"{s['onnx_nodes_mapped']} ONNX nodes, {s['fused_groups']} fused groups, "
                f"{s['unmapped_nodes']} unmapped{prof}; {self.source})")

    def _repr_html_(self) -> str:
        cols = [c for c in ("layer", "label", "layer_type", "kind", "runs", "precision",
                            "onnx_nodes", "average_ms") if c in self.layers.columns]
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return (f"<b>FusionReport</b> {html.escape(self.label)} &mdash; <b>{html.escape(str(self.stage))}</b>, "
                f"{len(self.running)} running layers of {len(self.layers)} listed, "
                f"{len(self.onnx_to_layers)} ONNX nodes mapped, "
                f"{len(self.unmapped)} unmapped ({html.escape(self.source)})"
                f"{'<ul>' + notes + '</ul>' if notes else ''}"
                + self.layers[cols].head(30).to_html(index=False))


def build_report(rows: List[Dict[str, Any]], *, stage: str, source: str, label: str,
                 facts: Optional[OnnxFacts], notes: Sequence[str] = (),
                 io_tensors: Optional[List[Dict[str, Any]]] = None,
                 layer_inputs: Optional[Set[str]] = None) -> FusionReport:
    """Assemble a :class:`FusionReport` from resolved rows."""
    counts: Dict[str, int] = defaultdict(int)
    for row in rows:
        counts[row["name"]] += 1
    if any(c > 1 for c in counts.values()):
        seen: Dict[str, int] = defaultdict(int)
        for row in rows:
            if counts[row["name"]] > 1:
                seen[row["name"]] += 1
                if seen[row["name"]] > 1:
                    row["name"] = f"{row['name']}_{seen[row['name']]}"
    for i, row in enumerate(rows):
        row["layer"] = i
        row["label"] = visible(row["name"])
        row.setdefault("runs", True)
        row.setdefault("attributes", {})
    cols = list(LAYER_COLUMNS)
    if rows and "average_ms" in rows[0]:
        cols += TIME_COLUMNS
    if rows and "segment" in rows[0]:
        cols.insert(1, "segment")
    layers = pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols)
    mapping: Dict[str, List[str]] = {}
    for row in rows:
        for node in row["onnx_nodes"]:
            mapping.setdefault(node, []).append(row["name"])
    if facts is not None:
        pos = facts.position
        ordered = sorted(mapping, key=lambda n: pos.get(n, len(pos)))
        onnx_to_layers = {n: tuple(mapping[n]) for n in ordered}
        unmapped = unmapped_nodes(facts, set(mapping), stage, layer_inputs)
        foreign = [n for n in mapping if n not in pos]
        notes = list(notes)
        if foreign:
            notes.append(f"{len(foreign)} node names in the layers are not in model "
                         f"{facts.name!r} (first: {visible(foreign[0])!r}); was the engine built "
                         "from another model?")
        op_types, order = dict(facts.op_type), tuple(facts.order)
    else:
        onnx_to_layers = {n: tuple(v) for n, v in mapping.items()}
        unmapped = pd.DataFrame(columns=["node", "op_type", "reason"])
        op_types, order = {}, ()
    io = pd.DataFrame(io_tensors or [], columns=IO_COLUMNS)
    return FusionReport(layers=layers, onnx_to_layers=onnx_to_layers, stage=stage, source=source,
                        label=label, unmapped=unmapped, io_tensors=io, notes=tuple(notes),
                        op_types=op_types, node_order=order)
