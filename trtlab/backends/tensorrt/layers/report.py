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
           "join_profile", "unmapped_nodes"]

STAGES = ("pre-fusion", "post-fusion")

#: Columns of :attr:`FusionReport.layers`, in order (``segment`` is added for hybrid models).
LAYER_COLUMNS = [
    "layer", "name", "label", "layer_type", "parameter_type", "kind", "precision",
    "out_precision", "inputs", "input_shapes", "input_formats", "outputs", "output_shapes",
    "output_formats", "tactic", "origin", "onnx_nodes", "related_nodes", "constants",
    "unresolved", "subgraph_nodes", "mapping", "shape_profile", "metadata",
]
#: Columns added by a profile.
TIME_COLUMNS = ["time_ms", "average_ms", "median_ms", "percentage"]


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
    elif part.kind in ("reformat", "internal") and part.name:
        node = facts.node_of(part.name) if facts is not None else None
        if node is not None or (facts is None and part.kind == "reformat"):
            acc["related"].append(node or part.name)


def _unique(items: Iterable[str]) -> List[str]:
    seen: Set[str] = set()
    return [x for x in items if not (x in seen or seen.add(x))]


def resolve_layers(rows: List[Dict[str, Any]], facts: Optional[OnnxFacts]) -> List[Dict[str, Any]]:
    """Fill ``onnx_nodes``, ``related_nodes``, ``constants``, ``unresolved``, ``mapping`` and
    ``kind`` of each row from its ``parts``, ``metadata`` and ``fallback_nodes``.

    ``Metadata`` wins when present; otherwise the name parts are resolved (exactly against
    ``facts``, by naming heuristics without). Myelin ``ForeignNode[first...last]`` ranges are
    resolved last: with a model, to the nodes between ``first`` and ``last`` in topological
    order that no other layer claims; without one, to their two ends.
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
        elif row.get("fallback_nodes") and not acc["ranges"]:
            nodes, mapping = list(row["fallback_nodes"]), "output"
        else:
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
            exact = facts is not None
            for part in ranges:
                ends = [facts.node_of(part.name), facts.node_of(part.last or part.name)] \
                    if facts is not None else [part.name, part.last or part.name]
                if facts is not None and None not in ends:
                    a, b = sorted(facts.position[e] for e in ends)
                    nodes += [n for n in facts.order[a:b + 1] if n not in claimed or n in ends]
                else:
                    exact = False
                    nodes += [e if e is not None else p for e, p in
                              zip(ends, (part.name, part.last or part.name))]
            row["onnx_nodes"] = tuple(_unique(nodes))
            row["mapping"] = "range" if exact else "range-ends"
    for row in rows:
        if row["onnx_nodes"]:
            row["kind"] = "onnx"
        elif row.get("origin") == "REFORMAT" or any(p.kind == "reformat" for p in row["parts"]):
            row["kind"] = "reformat"
        elif row["constants"] and not any(p.kind == "internal" for p in row["parts"]):
            row["kind"] = "constant"
        else:
            row["kind"] = "internal"
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
        ``kind`` is ``onnx`` (implements ONNX nodes), ``reformat``, ``constant`` or
        ``internal``; ``precision`` is that of the first input (first output without inputs).
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
        Engine inputs and outputs (``Bindings`` or ``I/O Tensors``).
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
        default_factory=lambda: pd.DataFrame(columns=["name", "mode", "shape", "precision",
                                                      "location"]))
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
        """Sets of ONNX nodes that share one layer (fused together), in layer order.

        Parameters
        ----------
        min_size
            Smallest group to return; 2 (the default) lists only real fusions.
        """
        out: List[Set[str]] = []
        seen: Set[frozenset] = set()
        for nodes in self.layers["onnx_nodes"]:
            key = frozenset(nodes)
            if len(key) >= min_size and key not in seen:
                seen.add(key)
                out.append(set(key))
        return out

    # -- tables -----------------------------------------------------------------------------
    def before_after(self) -> pd.DataFrame:
        """ONNX node count against layer count, per op type.

        Columns: ``op_type``, ``onnx_nodes`` (nodes of that type: all of the model's when it is
        known, else those the layers name), ``mapped`` (of them, mapped to a layer), ``layers``
        (distinct layers implementing at least one such node). The last row, ``TOTAL``,
        compares all ONNX nodes with all layers of the report.
        """
        counts: Dict[str, Dict[str, Any]] = {}

        def entry(op: str) -> Dict[str, Any]:
            return counts.setdefault(op, {"onnx_nodes": 0, "mapped": 0, "layers": set()})

        universe = list(self.node_order) if self.node_order else list(self.onnx_to_layers)
        for node in universe:
            e = entry(self.op_type(node))
            e["onnx_nodes"] += 1
            if node in self.onnx_to_layers:
                e["mapped"] += 1
        for idx, nodes in zip(self.layers["layer"], self.layers["onnx_nodes"]):
            for node in nodes:
                entry(self.op_type(node))["layers"].add(idx)
        rows = [{"op_type": op, "onnx_nodes": e["onnx_nodes"], "mapped": e["mapped"],
                 "layers": len(e["layers"])} for op, e in counts.items()]
        frame = pd.DataFrame(rows, columns=["op_type", "onnx_nodes", "mapped", "layers"])
        frame = frame.sort_values(["onnx_nodes", "op_type"], ascending=[False, True])
        total = pd.DataFrame([{"op_type": "TOTAL", "onnx_nodes": len(universe),
                               "mapped": sum(1 for n in universe if n in self.onnx_to_layers),
                               "layers": len(self.layers)}])
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

    def summary(self) -> Dict[str, Any]:
        """Counts in one dict: layers, mapped nodes, fused groups, unmapped nodes, total time."""
        out = {"stage": self.stage, "source": self.source, "layers": len(self.layers),
               "onnx_nodes_mapped": len(self.onnx_to_layers),
               "fused_groups": len(self.groups()), "unmapped_nodes": len(self.unmapped),
               "kinds": self.layers["kind"].value_counts().to_dict(),
               "precisions": self.layers["precision"].value_counts().to_dict()}
        if self.has_profile:
            out["total_average_ms"] = float(self.layers["average_ms"].sum(skipna=True))
        return out

    def __repr__(self) -> str:
        s = self.summary()
        prof = f", {s['total_average_ms']:.4g} ms" if self.has_profile else ""
        return (f"FusionReport({self.label!r}, {self.stage}, {s['layers']} layers from "
                f"{s['onnx_nodes_mapped']} ONNX nodes, {s['fused_groups']} fused groups, "
                f"{s['unmapped_nodes']} unmapped{prof}; {self.source})")

    def _repr_html_(self) -> str:
        cols = [c for c in ("layer", "label", "layer_type", "kind", "precision", "onnx_nodes",
                            "average_ms") if c in self.layers.columns]
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return (f"<b>FusionReport</b> {html.escape(self.label)} &mdash; <b>{html.escape(str(self.stage))}</b>, "
                f"{len(self.layers)} layers, {len(self.onnx_to_layers)} ONNX nodes mapped, "
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
    io = pd.DataFrame(io_tensors or [], columns=["name", "mode", "shape", "precision", "location"])
    return FusionReport(layers=layers, onnx_to_layers=onnx_to_layers, stage=stage, source=source,
                        label=label, unmapped=unmapped, io_tensors=io, notes=tuple(notes),
                        op_types=op_types, node_order=order)
