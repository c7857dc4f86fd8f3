"""Static drawings of an ONNX graph and its TensorRT / fallback partition.

:func:`draw` returns a matplotlib Figure: nodes in a layered top-to-bottom layout, coloured
by segment (one colour per TensorRT segment, grey for fallback), nodes that a decision sent to
fallback hatched with their reason listed in a table, graph inputs and outputs marked, and
fused layers outlined. Large graphs are drawn condensed: one box per segment with its node
count and op mix, and the bytes crossing each cut on the edges.

Every figure carries ``fig._trtlab``, a dict describing what was drawn (view, segments, the
artist of each segment, marked nodes, the reasons table) so tests and notebooks can check it.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from trtlab.errors import FusionError, PartitionError
from trtlab.viz import _style as st
from trtlab.viz._layout import Layout, layered_layout

__all__ = ["draw", "recolor", "reasons_table", "fusion_groups"]

log = logging.getLogger(__name__)

CONDENSE_ABOVE = 300
_NODE_DECISION_KINDS = ("rejected", "build_failed", "excluded", "pruned_small", "pruned_no_mac")
_MAX_GRAPH_IN = (34.0, 44.0)
_LEGEND_IN = 2.5
_TITLE_IN = 0.45
_ROW_IN = 0.24
_TITLE_CHAR_IN = 0.085


# -- inputs ------------------------------------------------------------------------------------

def _is_partition(obj: Any) -> bool:
    return hasattr(obj, "segments") and hasattr(obj, "assignment") and hasattr(obj, "model")


def _resolve(model: Any, partition: Any) -> Tuple[Any, Any]:
    if partition is None and _is_partition(model):
        partition, model = model, model.model
    # Look at the type: hasattr on the instance would build the cached networkx view.
    if not (hasattr(type(model), "graph") and hasattr(type(model), "node_names")):
        from trtlab.model import load

        model = load(model)
    if partition is not None:
        if not _is_partition(partition):
            raise PartitionError(
                f"draw() got a {type(partition).__name__} as partition; expected a "
                "trtlab.Partition (from trtlab.partition(model)) or None.")
        missing = [n for n in model.node_names if n not in partition.assignment]
        if missing:
            raise PartitionError(
                f"The partition does not cover model {model.name!r}: {len(missing)} of its "
                f"{len(model.node_names)} nodes have no segment (first: {missing[:3]}). Draw the "
                "partition with the model it was made from: draw(partition) or "
                "draw(partition.model, partition).")
    return model, partition


def fusion_groups(fusion: Any, model: Any = None) -> List[Set[str]]:
    """Groups of ONNX node names fused into one engine layer.

    Parameters
    ----------
    fusion
        A report with a ``groups()`` method (:class:`trtlab.backends.tensorrt.layers.FusionReport`), or an
        iterable of collections of node names.
    model
        When given, names not in the model are dropped and groups left with fewer than two
        nodes are skipped.

    Returns
    -------
    list of set of str
    """
    if fusion is None:
        return []
    raw = fusion.groups() if callable(getattr(fusion, "groups", None)) else fusion
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Iterable):
        raise FusionError(
            f"draw(fusion=...) got a {type(fusion).__name__}; expected a FusionReport "
            "(trtlab.fusion(...)) or a list of sets of ONNX node names fused together.")
    known = set(model.node_names) if model is not None else None
    out: List[Set[str]] = []
    for g in raw:
        if isinstance(g, str) or not isinstance(g, Iterable):
            raise FusionError(
                f"A fusion group must be a collection of node names, got {g!r}. Pass "
                "FusionReport.groups() or a list of sets of names.")
        names = {str(n) for n in g}
        if known is not None:
            names &= known
        if len(names) >= 2:
            out.append(names)
    return out


def _node_decisions(model: Any, partition: Any) -> Dict[str, Tuple[str, str]]:
    """``{node: (kind, reason)}`` for nodes a decision moved to fallback (last one wins)."""
    if partition is None:
        return {}
    frame = partition.decisions
    if frame is None or len(frame) == 0:
        return {}
    nodes = set(model.node_names)
    out: Dict[str, Tuple[str, str]] = {}
    for subject, kind, reason in zip(frame["subject"], frame["kind"], frame["reason"]):
        if subject in nodes and kind in _NODE_DECISION_KINDS:
            seg = partition.segments[partition.assignment[subject]]
            if seg.backend == "fallback":
                out[subject] = (str(kind), str(reason))
    return out


def _examples(subjects: Any) -> str:
    items = list(subjects)
    more = len(items) - 3
    return ", ".join(items[:3]) + (f", … ({more} more)" if more > 0 else "")


def _grouped(rows: "Any", keys: List[str]) -> "Any":
    out = (rows.groupby(keys, sort=False)
           .agg(count=("subject", "size"),
                first_reason=("reason", "first"),
                distinct=("reason", "nunique"),
                op_types=("op_type", lambda s: ", ".join(sorted({o for o in s if o}))),
                examples=("subject", _examples))
           .reset_index())
    out["reason"] = [r if d == 1 else f"{r} (and {d - 1} similar)"
                     for r, d in zip(out["first_reason"], out["distinct"])]
    return out.sort_values("count", ascending=False, kind="stable")


def _op_types(model: Any, names: Iterable[str]) -> List[str]:
    """Op type of each name that is a node of ``model`` (``""`` otherwise), without building
    the networkx view of the graph."""
    index = model._node_index
    nodes = model.proto.graph.node
    return [nodes[index[s]].op_type if s in index else "" for s in names]


def reasons_table(partition: Any, *, max_rows: int = 12) -> "Any":
    """The decisions behind a partition, ready to print under a drawing.

    One row per decision (subject, op_type, kind, reason) when there are at most ``max_rows``.
    Otherwise decisions are grouped (kind, reason, count, op_types, examples): by identical
    reason, else by kind and op type, and the smallest groups are folded into a last row so
    the table never exceeds ``max_rows`` rows.

    Returns
    -------
    pandas.DataFrame
    """
    import pandas as pd

    frame = partition.decisions
    if frame is None or len(frame) == 0:
        return pd.DataFrame(columns=["subject", "op_type", "kind", "reason"])
    ops = _op_types(partition.model, frame["subject"])
    rows = pd.DataFrame({"subject": frame["subject"].astype(str), "op_type": ops,
                         "kind": frame["kind"].astype(str), "reason": frame["reason"].astype(str)})
    if len(rows) <= max_rows:
        return rows.reset_index(drop=True)
    grouped = _grouped(rows, ["kind", "reason"])
    if len(grouped) > max_rows:
        grouped = _grouped(rows, ["kind", "op_type"])
    columns = ["kind", "reason", "count", "op_types", "examples"]
    grouped = grouped[columns].reset_index(drop=True)
    if len(grouped) > max_rows:
        keep, rest = grouped.iloc[:max_rows - 1], grouped.iloc[max_rows - 1:]
        other = pd.DataFrame([{
            "kind": ", ".join(dict.fromkeys(rest["kind"])),
            "reason": f"{len(rest)} other groups of decisions (see Partition.decisions)",
            "count": int(rest["count"].sum()),
            "op_types": ", ".join(sorted({o for ops_ in rest["op_types"] for o in ops_.split(", ")
                                          if o})),
            "examples": _examples(e.split(", ")[0] for e in rest["examples"]),
        }])
        grouped = pd.concat([keep, other], ignore_index=True)
    return grouped


# -- scene --------------------------------------------------------------------------------------

@dataclass
class _Scene:
    """What a view drew: graph extent in inches plus legend handles and metadata."""

    width_in: float
    height_in: float
    handles: List[Any] = field(default_factory=list)
    meta: Dict[str, Any] = field(default_factory=dict)


def _segment_colors(partition: Any) -> Dict[int, str]:
    """Colour of every segment, by segment index (one pass over the segments)."""
    return {seg.index: c for seg, c in zip(partition.segments,
                                           st.segment_colors(partition.segments))}


def _fit_scale(width_units: float, height_units: float, sx: float, sy: float,
               figsize: Optional[Tuple[float, float]]) -> float:
    max_w, max_h = _MAX_GRAPH_IN
    if figsize is not None:
        max_w, max_h = max(figsize[0] - _LEGEND_IN, 1.0), max(figsize[1] - _TITLE_IN, 1.0)
    return min(1.0, max_w / (width_units * sx), max_h / (height_units * sy))


def _legend_handles(partition: Any, colors: Dict[int, str], kinds: Iterable[str],
                    io: bool, fusion: bool) -> List[Any]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: List[Any] = []
    if partition is None:
        handles.append(Patch(facecolor=st.NEUTRAL_COLOR, edgecolor=st.darker(st.NEUTRAL_COLOR),
                             label="node"))
    else:
        trt = [s for s in partition.segments if s.backend != "fallback"]
        shown = trt if len(trt) <= 12 else trt[:11]
        for seg in shown:
            color = colors[seg.index]
            handles.append(Patch(facecolor=color, edgecolor=st.darker(color),
                                 label=f"{seg.name} ({seg.backend}, {len(seg.nodes)})"))
        if len(shown) < len(trt):
            handles.append(Patch(facecolor="white", edgecolor="white",
                                 label=f"… {len(trt) - len(shown)} more {trt[0].backend} segments"))
        n_fb = sum(1 for s in partition.segments if s.backend == "fallback")
        if n_fb:
            plural = "s" if n_fb != 1 else ""
            handles.append(Patch(facecolor=st.FALLBACK_COLOR, edgecolor=st.darker(st.FALLBACK_COLOR),
                                 label=f"fallback ({n_fb} segment{plural})"))
        for kind in sorted(set(kinds)):
            color, hatch, label = st.mark_style(kind)
            handles.append(Patch(facecolor="white", edgecolor=color, hatch=hatch, linewidth=1.4,
                                 label=label))
    if io:
        handles.append(Line2D([], [], marker="v", linestyle="none", color=st.INPUT_COLOR,
                              markersize=8, label="graph input"))
        handles.append(Line2D([], [], marker="s", linestyle="none", color=st.OUTPUT_COLOR,
                              markersize=7, label="graph output"))
    if fusion:
        handles.append(Patch(facecolor="none", edgecolor=st.FUSION_COLOR, linestyle="--",
                             label="fused into one layer"))
    return handles


def _edge_lines(lay: Layout, src: np.ndarray, dst: np.ndarray,
                half_h: np.ndarray) -> Tuple[List[np.ndarray], np.ndarray]:
    """Polylines from the bottom of each source to the top of its target, through the routing
    points of the layout, and whether each edge stays in one column."""
    p0 = np.column_stack([lay.x[src], lay.y[src] - half_h[src]])
    p1 = np.column_stack([lay.x[dst], lay.y[dst] + half_h[dst]])
    lines = [np.vstack([p0[e], lay.paths[e], p1[e]]) if len(lay.paths[e])
             else np.vstack([p0[e], p1[e]]) for e in range(len(src))]
    return lines, lay.column[src] == lay.column[dst]


def _label_point(line: np.ndarray, at: float = 0.5) -> np.ndarray:
    """A point on the first stretch of an edge, where labels do not sit on other nodes."""
    return line[0] * (1 - at) + line[1] * at


def _draw_edges(ax: Any, lines: List[np.ndarray], same: np.ndarray, boundary: np.ndarray,
                scale: float) -> None:
    from matplotlib.collections import LineCollection

    styles = (
        (same & ~boundary, st.EDGE_COLOR, 0.8, "solid", 0.9, "edges"),
        (same & boundary, st.BOUNDARY_EDGE_COLOR, 1.6, "solid", 0.95, "boundary_edges"),
        (~same, st.EDGE_COLOR, 0.8, (0, (3, 3)), 0.55, "folded_edges"),
    )
    for mask, color, lw, ls, alpha, gid in styles:
        if mask.any():
            ax.add_collection(LineCollection(
                [lines[e] for e in np.flatnonzero(mask)], colors=color,
                linewidths=max(0.3, lw * scale), linestyles=ls, alpha=alpha, zorder=1, gid=gid),
                autolim=False)


def _io_markers(ax: Any, lay: Layout, idx_in: np.ndarray, idx_out: np.ndarray,
                names_in: Sequence[str], names_out: Sequence[str], labels: bool,
                scale: float, fontsize: float) -> None:
    size = max(12.0, 70.0 * scale)
    if idx_in.size:
        ax.scatter(lay.x[idx_in], lay.y[idx_in], marker="v", s=size, color=st.INPUT_COLOR,
                   zorder=4, gid="inputs")
    if idx_out.size:
        ax.scatter(lay.x[idx_out], lay.y[idx_out], marker="s", s=size * 0.8, color=st.OUTPUT_COLOR,
                   zorder=4, gid="outputs")
    if labels:
        for idx, names, color in ((idx_in, names_in, st.INPUT_COLOR),
                                  (idx_out, names_out, st.OUTPUT_COLOR)):
            for i, name in zip(idx.tolist(), names):
                ax.annotate(name, (lay.x[i], lay.y[i]), xytext=(6, 0), textcoords="offset points",
                            fontsize=fontsize, color=color, va="center", ha="left", zorder=5,
                            annotation_clip=False)


def _io_label(info: Any) -> str:
    shape = "" if info.shape is None else "[" + ",".join(str(d) for d in info.shape) + "]"
    return st.ellipsize(info.name, 22) + (f" {st.ellipsize(shape, 20)}" if shape else "")


def _boxes(xs: Any, ys: Any, w: float, h: float) -> np.ndarray:
    """Corners (n x 4 x 2) of boxes of size ``w`` x ``h`` centred at ``(xs, ys)``: a
    PolyCollection built from one array instead of a patch object per box."""
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    dx = np.array([-w, w, w, -w]) / 2
    dy = np.array([-h, -h, h, h]) / 2
    return np.stack([xs[:, None] + dx, ys[:, None] + dy], axis=-1)


def _darker_all(colors: Sequence[str]) -> List[Any]:
    memo: Dict[str, Any] = {}
    return [memo[c] if c in memo else memo.setdefault(c, st.darker(c)) for c in colors]


def _full_cut_labels(ax: Any, model: Any, names: Sequence[str], src: np.ndarray, dst: np.ndarray,
                     lines: List[np.ndarray], boundary: np.ndarray, font: float) -> None:
    """Bytes of each tensor crossing a cut, on its edge (only when there are at most 40)."""
    cut = np.flatnonzero(boundary)
    if not 0 < cut.size <= 40:
        return
    from trtlab.viz._glyphs import label_collection

    texts, at = [], []
    for e in cut.tolist():
        u, v = names[src[e]], names[dst[e]]
        tensors = [t for t in model.node(u).output if t and v in model.consumers(t)]
        info = model.tensor(tensors[0]) if tensors else None
        texts.append(_bytes_label([info], info.bytes, False) if info is not None else "?")
        at.append(_label_point(lines[e]))
    at_a = np.asarray(at)
    label_collection(ax, at_a[:, 0], at_a[:, 1], texts, size=max(font * 0.8, 4.0),
                     colors=st.BOUNDARY_EDGE_COLOR, background=(1, 1, 1, 0.8), zorder=3,
                     gid="cut_bytes")


def _full_marks(ax: Any, lay: Layout, index: Dict[str, int], marks: Dict[str, Tuple[str, str]],
                box: Tuple[float, float], scale: float) -> Dict[str, List[int]]:
    from matplotlib.collections import PolyCollection

    box_w, box_h = box
    by_kind: Dict[str, List[int]] = defaultdict(list)
    for name, (kind, _) in marks.items():
        by_kind[kind].append(index[name])
    for kind, idx in by_kind.items():
        color, hatch, _ = st.mark_style(kind)
        rects = _boxes(lay.x[idx], lay.y[idx], box_w, box_h)
        ax.add_collection(PolyCollection(rects, facecolor="none", edgecolor=color, hatch=hatch,
                                          linewidth=max(0.6, 1.5 * scale), zorder=3,
                                          gid=f"marked:{kind}"), autolim=False)
    return by_kind


_PARTITION_GIDS = ("edges", "boundary_edges", "folded_edges", "cut_bytes", "cut_bytes_background")


def recolor(fig: Any, partition: Any) -> Any:
    """Show another partition of the same model on a full-view figure of :func:`draw`, in place.

    Only what depends on the partition is redrawn: node colours (one collection), the edges
    crossing a cut, their byte labels and the hatching of nodes a decision moved. The layout,
    node boxes and labels stay, so this is much cheaper than a new drawing (the explorer uses
    it on every change). Returns ``fig``.
    """
    meta = getattr(fig, "_trtlab", None)
    if not meta or meta.get("view") != "full" or "geometry" not in meta:
        raise PartitionError("recolor() needs a full-view figure drawn by trtlab.draw(model, "
                             "partition, condensed=False).")
    model = partition.model
    names = meta["node_order"]
    if list(model.node_names) != names:
        raise PartitionError(f"The partition is of model {model.name!r}, not the drawn "
                             f"{meta['model']!r}; draw it anew with trtlab.draw.")
    ax, geo, lay = meta["ax"], meta["geometry"], meta["layout"]
    nodes = [c for c in ax.collections if c.get_gid() == "segments"]
    if len(nodes) != 1:
        raise PartitionError("recolor() needs a figure drawn with a partition.")
    for coll in list(ax.collections):
        gid = coll.get_gid() or ""
        if gid in _PARTITION_GIDS or gid.startswith("marked:"):
            coll.remove()
    seg_of = np.asarray([partition.assignment[name] for name in names])
    colors = _segment_colors(partition)
    face = [colors[int(s)] for s in seg_of]
    nodes[0].set_facecolor(face)
    nodes[0].set_edgecolor(_darker_all(face))
    src, dst, k = geo["src"], geo["dst"], geo["n_model_edges"]
    boundary = np.zeros(len(src), dtype=bool)
    boundary[:k] = seg_of[src[:k]] != seg_of[dst[:k]]
    _draw_edges(ax, geo["lines"], geo["same"], boundary, geo["scale"])
    if meta["labels"]:
        _full_cut_labels(ax, model, names, src, dst, geo["lines"], boundary, geo["base_font"])
    marks = _node_decisions(model, partition)
    index = {name: i for i, name in enumerate(names)}
    _full_marks(ax, lay, index, marks, geo["box"], geo["scale"])
    meta.update(segment_of_node=seg_of,
                segment_artists={s.name: nodes[0] for s in partition.segments},
                segments=[s.name for s in partition.segments],
                colors={s.name: colors[s.index] for s in partition.segments},
                marked={k_: v[0] for k_, v in marks.items()})
    return fig


# -- full view ----------------------------------------------------------------------------------

def _full_view(ax_factory: Any, model: Any, partition: Any, groups: List[Set[str]],
               marks: Dict[str, Tuple[str, str]], max_labels: int,
               figsize: Optional[Tuple[float, float]]) -> _Scene:
    from matplotlib.collections import PatchCollection, PolyCollection
    from matplotlib.patches import Rectangle

    names = model.node_names
    n = len(names)
    index = {name: i for i, name in enumerate(names)}
    graph = model.graph
    ops = [graph.nodes[name]["op_type"] for name in names]
    ins = [t for t in model.inputs if model.consumers(t.name)]
    outs = [t for t in model.outputs if model.producer(t.name) is not None]
    n_in, n_out = len(ins), len(outs)
    total = n + n_in + n_out

    src: List[int] = []
    dst: List[int] = []
    for u, v in graph.edges():
        src.append(index[u])
        dst.append(index[v])
    n_model_edges = len(src)
    for k, t in enumerate(ins):
        for c in dict.fromkeys(model.consumers(t.name)):
            src.append(n + k)
            dst.append(index[c])
    for k, t in enumerate(outs):
        src.append(index[model.producer(t.name)])
        dst.append(n + n_in + k)
    src_a = np.asarray(src, dtype=np.int64)
    dst_a = np.asarray(dst, dtype=np.int64)

    sx, sy = 1.3, 0.72
    pinned = np.zeros(total, dtype=bool)
    pinned[n:n + n_in] = True
    lay = layered_layout(total, src_a, dst_a, pinned=pinned, x_unit=sx, y_unit=sy)
    pad = 0.7
    w_units, h_units = lay.width + 2 * pad + 1.2, lay.height + 2 * pad
    scale = _fit_scale(w_units, h_units, sx, sy, figsize)
    box_w, box_h = 0.82, 0.5
    box_pt = box_w * sx * scale * 72
    base_font = 7.5 * min(1.0, scale * 1.15)
    labels = n <= max_labels and base_font >= 3.0

    ax = ax_factory(w_units * sx * scale, h_units * sy * scale)
    half_h = np.full(total, box_h / 2)
    half_h[n:] = 0.12

    seg_of = (np.asarray([partition.assignment[name] for name in names]) if partition is not None
              else np.zeros(n, dtype=np.int64))
    lines, same = _edge_lines(lay, src_a, dst_a, half_h)
    boundary = np.zeros(len(src_a), dtype=bool)
    if partition is not None and n_model_edges:
        boundary[:n_model_edges] = seg_of[src_a[:n_model_edges]] != seg_of[dst_a[:n_model_edges]]
    _draw_edges(ax, lines, same, boundary, scale)
    if labels and partition is not None:
        _full_cut_labels(ax, model, names, src_a, dst_a, lines, boundary, base_font)

    def rects(idx: Sequence[int]) -> List[Any]:
        idx = np.asarray(list(idx), dtype=np.int64)
        return _boxes(lay.x[idx], lay.y[idx], box_w, box_h)

    lw = max(0.3, 0.8 * scale)
    artists: Dict[str, Any] = {}
    colors: Dict[int, str] = {}
    if partition is None:
        coll = PolyCollection(rects(range(n)), facecolor=st.NEUTRAL_COLOR,
                               edgecolor=st.darker(st.NEUTRAL_COLOR), linewidth=lw, zorder=2,
                               gid="nodes")
        ax.add_collection(coll, autolim=False)
    else:
        # One collection for every node box, coloured per node: drawing cost stays linear in
        # nodes whatever the number of segments, and the explorer recolours it in place.
        colors = _segment_colors(partition)
        face = [colors[int(s)] for s in seg_of]
        coll = PolyCollection(rects(range(n)), facecolor=face,
                              edgecolor=_darker_all(face), linewidth=lw, zorder=2,
                               gid="segments")
        ax.add_collection(coll, autolim=False)
        artists = {seg.name: coll for seg in partition.segments}
    by_kind = _full_marks(ax, lay, index, marks, (box_w, box_h), scale)

    drawn_groups = 0
    if groups:
        outlines = []
        for g in groups:
            idx = np.asarray([index[name] for name in g], dtype=np.int64)
            for col in np.unique(lay.column[idx]):
                part = idx[lay.column[idx] == col]
                x0, x1 = lay.x[part].min() - box_w / 2 - 0.08, lay.x[part].max() + box_w / 2 + 0.08
                y0, y1 = lay.y[part].min() - box_h / 2 - 0.1, lay.y[part].max() + box_h / 2 + 0.1
                outlines.append(Rectangle((x0, y0), x1 - x0, y1 - y0))
            drawn_groups += 1
        ax.add_collection(PatchCollection(outlines, facecolor="none", edgecolor=st.FUSION_COLOR,
                                          linestyle="--", linewidth=max(0.5, 1.2 * scale),
                                          zorder=4, gid="fusion"), autolim=False)

    if labels:
        from trtlab.viz._glyphs import label_collection

        two_lines = n <= 40
        short = [st.short_op(op) for op in ops]
        widths = [max(len(op), 16 if two_lines else 0, 1) for op in short]
        sizes = np.maximum(np.minimum(base_font, box_pt / (0.62 * np.asarray(widths))), 3.0)
        if two_lines:
            step = float(sizes.min()) * 0.6
            label_collection(ax, lay.x[:n], lay.y[:n], short, size=sizes, dy=step,
                             gid="node_labels")
            label_collection(ax, lay.x[:n], lay.y[:n], [st.ellipsize(nm, 16) for nm in names],
                             size=sizes, dy=-step, gid="node_names")
        else:
            label_collection(ax, lay.x[:n], lay.y[:n], short, size=sizes, gid="node_labels")
    _io_markers(ax, lay, np.arange(n, n + n_in), np.arange(n + n_in, total),
                [_io_label(t) for t in ins], [_io_label(t) for t in outs], labels or total <= 600,
                scale, max(base_font, 5.0))
    ax.set_xlim(lay.x.min() - pad, lay.x.max() + pad + 1.2)
    ax.set_ylim(lay.y.min() - pad, lay.y.max() + pad)
    ax.set_axis_off()

    handles = _legend_handles(partition, colors, by_kind.keys(), io=bool(n_in or n_out),
                              fusion=drawn_groups > 0)
    positions = {names[i]: (float(lay.x[i]), float(lay.y[i])) for i in range(n)}
    meta = dict(view="full", layout=lay, node_positions=positions, node_order=list(names),
                segment_of_node=seg_of, segment_artists=artists, ax=ax,
                geometry=dict(src=src_a, dst=dst_a, lines=lines, same=same, box=(box_w, box_h),
                              scale=scale, n_model_edges=n_model_edges, base_font=base_font), labels=labels, fusion_groups=drawn_groups,
                inputs=[t.name for t in ins], outputs=[t.name for t in outs])
    return _Scene(ax.figure.get_figwidth(), ax.figure.get_figheight(), handles, meta)


# -- condensed view -----------------------------------------------------------------------------

def _op_summary(ops: Sequence[str], k: int = 3) -> str:
    common = Counter(ops).most_common()
    parts = [f"{st.short_op(op)}×{c}" for op, c in common[:k]]
    rest = len(common) - k
    return ", ".join(parts) + (f" +{rest} types" if rest > 0 else "")


def _segment_flows(model: Any, partition: Any) -> Dict[Tuple[int, int], List[Optional[int]]]:
    """Bytes of each distinct tensor crossing from one segment to another."""
    flows: Dict[Tuple[int, int], Dict[str, Optional[int]]] = defaultdict(dict)
    for seg in partition.segments:
        for t in seg.outputs:
            for c in model.consumers(t):
                dst = partition.assignment.get(c)
                if dst is not None and dst != seg.index:
                    flows[(seg.index, dst)][t] = model.tensor(t).bytes
    return {k: list(v.values()) for k, v in flows.items()}


def _segment_flow_tensors(model: Any, partition: Any) -> Dict[Tuple[int, int], List[Any]]:
    """The TensorInfo of each distinct tensor crossing from one segment to another."""
    flows: Dict[Tuple[int, int], Dict[str, Any]] = defaultdict(dict)
    for seg in partition.segments:
        for t in seg.outputs:
            for c in model.consumers(t):
                dst = partition.assignment.get(c)
                if dst is not None and dst != seg.index:
                    flows[(seg.index, dst)][t] = model.tensor(t)
    return {k: list(v.values()) for k, v in flows.items()}


def _bytes_label(infos: Sequence[Any], value: Optional[int], partial: bool) -> str:
    """Bytes on a cut edge: a size when every shape is static, else the size as an
    expression of the symbolic dims (``"12·N·H·W B"``, see :mod:`trtlab.shapes`)."""
    from trtlab.shapes import bytes_expression

    exprs = [bytes_expression(i) for i in infos]
    symbolic = [e for e in exprs if e is not None and not e.isdigit()]
    if not symbolic:
        return ("≥ " if partial and value is not None else "") + st.fmt_bytes(value)
    static = sum(int(e) for e in exprs if e is not None and e.isdigit())
    parts = ([st.fmt_bytes(static)] if static else []) + [f"{e} B" for e in dict.fromkeys(symbolic)]
    text = " + ".join(parts) + (" + ?" if None in exprs else "")
    return st.ellipsize(text, 28)


def _sum_bytes(values: Sequence[Optional[int]]) -> Tuple[Optional[int], bool]:
    known = [v for v in values if v is not None]
    return (sum(known) if known else None), len(known) < len(values)


# Physical sizes of the segment-level view, in inches and points: never scaled down, so the
# labels read at 100% zoom; a larger partition makes a larger figure instead.
_DETAILED_MAX_SEGMENTS = 150
_SEG_BOX = {True: (2.3, 0.66), False: (1.1, 0.27)}          # detailed?: (width, height)
_SEG_PITCH = {True: (2.75, 1.2), False: (1.24, 0.5)}     # layout unit along x, y
_SEG_FONT = {True: 8.0, False: 7.5}


def _condensed_view(ax_factory: Any, model: Any, partition: Any, groups: List[Set[str]],
                    marks: Dict[str, Tuple[str, str]],
                    figsize: Optional[Tuple[float, float]]) -> _Scene:
    """One box per segment at a fixed, legible size; every step is linear in segments."""
    from matplotlib.collections import PolyCollection

    segs = partition.segments
    n_seg = len(segs)
    pos = {seg.index: k for k, seg in enumerate(segs)}
    ins = [t for t in model.inputs if model.consumers(t.name)]
    outs = [t for t in model.outputs if model.producer(t.name) is not None]
    n_in, n_out = len(ins), len(outs)
    total = n_seg + n_in + n_out

    flows = _segment_flows(model, partition)
    flow_tensors = _segment_flow_tensors(model, partition)
    src: List[int] = []
    dst: List[int] = []
    edge_bytes: List[Tuple[Optional[int], bool]] = []
    edge_tensors: List[List[Any]] = []
    for (a, b), values in flows.items():
        src.append(pos[a])
        dst.append(pos[b])
        edge_bytes.append(_sum_bytes(values))
        edge_tensors.append(flow_tensors[(a, b)])
    n_flow = len(src)
    for k, t in enumerate(ins):
        for s in dict.fromkeys(partition.assignment[c] for c in model.consumers(t.name)):
            src.append(n_seg + k)
            dst.append(pos[s])
            edge_bytes.append((t.bytes, t.bytes is None))
            edge_tensors.append([t])
    for k, t in enumerate(outs):
        src.append(pos[partition.assignment[model.producer(t.name)]])
        dst.append(n_seg + n_in + k)
        edge_bytes.append((t.bytes, t.bytes is None))
        edge_tensors.append([t])
    src_a = np.asarray(src, dtype=np.int64)
    dst_a = np.asarray(dst, dtype=np.int64)

    detailed = n_seg <= _DETAILED_MAX_SEGMENTS
    box_w_in, box_h_in = _SEG_BOX[detailed]
    sx, sy = _SEG_PITCH[detailed]
    font = _SEG_FONT[detailed]
    pinned = np.zeros(total, dtype=bool)
    pinned[n_seg:n_seg + n_in] = True
    # Two ordering sweeps settle a graph of segments (mostly chains) as well as six do.
    lay = layered_layout(total, src_a, dst_a, pinned=pinned, x_unit=sx, y_unit=sy,
                         column_gap=0.5, aspect=1.0, fold_above=12.0,
                         sweeps=6 if detailed else 2)
    pad = 0.7
    w_units, h_units = lay.width + 2 * pad, lay.height + 2 * pad
    scale = 1.0
    if figsize is not None:
        scale = _fit_scale(w_units, h_units, sx, sy, figsize)
        font = max(4.0, font * scale)
    ax = ax_factory(w_units * sx * scale, h_units * sy * scale)
    box_w, box_h = box_w_in / sx, box_h_in / sy
    max_chars = int(box_w_in * scale * 72 / (0.55 * font))

    half_h = np.full(total, box_h / 2)
    half_h[n_seg:] = 0.12
    lines, same = _edge_lines(lay, src_a, dst_a, half_h)
    boundary = np.zeros(len(src_a), dtype=bool)
    boundary[:n_flow] = True
    _draw_edges(ax, lines, same, boundary, scale)
    if detailed:
        from trtlab.viz._glyphs import label_collection

        at, texts, tcolors = [], [], []
        for e in range(len(src_a)):
            value, partial = edge_bytes[e]
            if e >= n_flow and value is None:
                continue
            at.append(_label_point(lines[e], 0.5 if same[e] else 0.15))
            texts.append(_bytes_label(edge_tensors[e], value, partial))
            tcolors.append(st.BOUNDARY_EDGE_COLOR if e < n_flow else "#555555")
        if texts:
            at_a = np.asarray(at)
            label_collection(ax, at_a[:, 0], at_a[:, 1], texts, size=font - 1, colors=tcolors,
                             background=(1, 1, 1, 0.85), zorder=3, gid="cut_bytes")
    colors = _segment_colors(partition)
    kinds_per_seg: Dict[int, Counter] = defaultdict(Counter)
    for name, (kind, _) in marks.items():
        kinds_per_seg[partition.assignment[name]][kind] += 1
    fused_per_seg: Counter = Counter()
    for g in groups:
        for s in {partition.assignment[name] for name in g}:
            fused_per_seg[s] += 1

    xs, ys = lay.x[:n_seg], lay.y[:n_seg]
    boxes = _boxes(xs, ys, box_w, box_h)
    face = [colors[seg.index] for seg in segs]
    lw = 0.8 if detailed else 0.5
    coll = PolyCollection(boxes, facecolor=face, edgecolor=_darker_all(face),
                           linewidth=lw, zorder=2, gid="segments")
    ax.add_collection(coll, autolim=False)
    artists = {seg.name: coll for seg in segs}

    hatched: Dict[str, List[int]] = defaultdict(list)
    macs = model.macs if detailed else {}
    compact_labels: List[str] = []
    detail_lines: List[Tuple[str, str, str]] = []
    for k, seg in enumerate(segs):
        kinds = kinds_per_seg.get(seg.index)
        if kinds:
            kind = kinds.most_common(1)[0][0]
            hatched[kind].append(k)
        n_nodes = len(seg.nodes)
        if not detailed:
            compact_labels.append(st.ellipsize(f"{seg.name} ({n_nodes})", max_chars))
            continue
        seg_macs = sum(macs.get(name, 0) for name in seg.nodes)
        body = [f"{n_nodes} node{'s' if n_nodes != 1 else ''} · {st.fmt_macs(seg_macs)}",
                st.ellipsize(_op_summary(_op_types(model, seg.nodes)), max_chars)]
        extra = []
        if kinds:
            extra.append(", ".join(f"{k_.replace('_', ' ')} {c}" for k_, c in kinds.most_common()))
        if fused_per_seg.get(seg.index):
            extra.append(f"fused groups {fused_per_seg[seg.index]}")
        if extra:
            body[-1] = st.ellipsize(" · ".join(extra), max_chars)
        detail_lines.append((st.ellipsize(f"{seg.name} · {seg.backend}", max_chars), *body))
    if detail_lines:
        from trtlab.viz._glyphs import label_collection

        ink = [_text_on(c) for c in face]
        step = font * 1.2
        for row, (dy, weight) in enumerate(((step, "bold"), (0.0, "normal"), (-step, "normal"))):
            label_collection(ax, xs, ys, [lines_[row] for lines_ in detail_lines],
                             size=font if row == 0 else font - 0.5, colors=ink, weight=weight,
                             dy=dy, gid="segment_labels" if row == 0 else f"segment_detail_{row}")
    if compact_labels:
        from trtlab.viz._glyphs import label_collection

        label_collection(ax, xs, ys, compact_labels, size=font,
                         colors=[_text_on(c) for c in face], gid="segment_labels")
    for kind, kboxes in hatched.items():
        color, hatch, _ = st.mark_style(kind)
        ax.add_collection(PolyCollection(boxes[kboxes], facecolor="none", edgecolor=color,
                                          hatch=hatch[: max(1, len(hatch) // 2)],
                                          linewidth=lw * 1.3, alpha=0.45, zorder=3,
                                          gid=f"marked:{kind}"), autolim=False)

    _io_markers(ax, lay, np.arange(n_seg, n_seg + n_in), np.arange(n_seg + n_in, total),
                [_io_label(t) for t in ins], [_io_label(t) for t in outs], True, scale,
                font)
    ax.set_xlim(lay.x.min() - pad, lay.x.max() + pad)
    ax.set_ylim(lay.y.min() - pad, lay.y.max() + pad)
    ax.set_axis_off()
    handles = _legend_handles(partition, colors, hatched.keys(), io=bool(n_in or n_out),
                              fusion=False)
    meta = dict(view="condensed", layout=lay, segment_artists=artists,
                boundary_bytes={(segs[src_a[e]].name, segs[dst_a[e]].name): edge_bytes[e][0]
                                for e in range(n_flow)},
                fusion_groups=len(groups), labels=True, detailed=detailed, font_pt=font,
                inputs=[t.name for t in ins], outputs=[t.name for t in outs])
    return _Scene(ax.figure.get_figwidth(), ax.figure.get_figheight(), handles, meta)


def _text_on(color: str) -> str:
    """Black or white, whichever reads better on ``color``."""
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(color)
    return "#111111" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "#ffffff"


# -- figure assembly ----------------------------------------------------------------------------

def _fast_png_canvas_class() -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    class FastPngCanvas(FigureCanvasAgg):
        """Agg canvas whose PNGs are RGB (the figure is opaque) at zlib level 1: drawings of
        large graphs are mostly flat colour, so the file grows little and encoding takes
        about half as long as matplotlib's RGBA level-6 default."""

        def print_png(self, filename_or_obj: Any, *args: Any, metadata: Any = None,
                      pil_kwargs: Any = None, **kwargs: Any) -> None:
            from PIL import Image, PngImagePlugin

            FigureCanvasAgg.draw(self)
            rgba = np.asarray(self.buffer_rgba())
            image = Image.fromarray(rgba[..., :3] if bool((rgba[..., 3] == 255).all()) else rgba)
            info = PngImagePlugin.PngInfo()
            for key, value in {"Software": "matplotlib (trtlab.draw)", **(metadata or {})}.items():
                if value is not None:
                    info.add_text(key, str(value))
            dpi = round(self.figure.dpi)
            image.save(filename_or_obj, format="png", pnginfo=info, dpi=(dpi, dpi),
                       **{"compress_level": 1, **(pil_kwargs or {})})

    return FastPngCanvas


def _FastPngCanvas(fig: Any) -> Any:
    global _FAST_CANVAS
    if _FAST_CANVAS is None:
        _FAST_CANVAS = _fast_png_canvas_class()
    return _FAST_CANVAS(fig)


_FAST_CANVAS: Any = None


def _draw_table(ax: Any, table: "Any", fontsize: float = 7.5) -> None:
    widths = {"subject": 0.2, "op_type": 0.1, "kind": 0.14, "reason": 0.56, "count": 0.05,
              "op_types": 0.12, "examples": 0.25}
    cols = list(table.columns)
    if "count" in cols:
        widths = dict(widths, reason=0.48)
    col_w = np.asarray([widths.get(c, 0.1) for c in cols], dtype=float)
    col_w = col_w / col_w.sum()
    fig_w_in = ax.figure.get_figwidth() * ax.get_position().width
    cells = []
    for row in table.itertuples(index=False):
        cells.append([st.ellipsize(v, max(8, int(w * fig_w_in * 72 / (0.55 * fontsize))))
                      for v, w in zip(map(str, row), col_w)])
    tbl = ax.table(cellText=cells, colLabels=cols, colWidths=list(col_w), cellLoc="left",
                   colLoc="left", loc="upper center", bbox=[0, 0, 1, 1])
    tbl.auto_set_font_size(False)
    tbl.set_fontsize(fontsize)
    for (r, _), cell in tbl.get_celld().items():
        cell.set_edgecolor("#d0d0d0")
        cell.set_linewidth(0.5)
        if r == 0:
            cell.set_facecolor("#eeeeee")
            cell.set_text_props(fontweight="bold")
    tbl.set_gid("reasons")
    ax.set_axis_off()


def draw(model: Any, partition: Any = None, fusion: Any = None, ax: Any = None, *,
         condensed: Union[str, bool] = "auto", max_labels: int = CONDENSE_ABOVE,
         figsize: Optional[Tuple[float, float]] = None, show_reasons: bool = True,
         max_reason_rows: int = 12, condense_above: int = CONDENSE_ABOVE,
         title: Optional[str] = None, legend: bool = True) -> "Any":
    """Draw an ONNX graph, coloured by partition segment.

    Parameters
    ----------
    model
        A :class:`trtlab.Model` (anything :func:`trtlab.load` reads works too), or a
        :class:`trtlab.Partition`, whose model is then drawn.
    partition
        The partition to colour by: one colour per TensorRT segment, grey for fallback. Nodes a
        decision moved to fallback (rejected, excluded, pruned, failed build) are hatched and
        the decisions listed in a table under the graph.
    fusion
        A :class:`trtlab.backends.tensorrt.layers.FusionReport` or a list of sets of node names; each group of
        fused nodes is outlined with a dashed box (counted per segment in the condensed view).
    ax
        Draw into this matplotlib Axes instead of a new figure.
    condensed
        ``"auto"`` draws one box per segment when the model has more than ``condense_above``
        nodes and a partition is given; ``True`` / ``False`` force the choice.
    max_labels
        Label nodes with their op type only up to this many nodes.
    figsize
        Figure size in inches (default: sized to the graph, capped for very large graphs).
    show_reasons
        Draw the decisions table under the graph.
    max_reason_rows
        Above this many decisions, the table groups them by (kind, reason).
    title
        Figure title (default: model name, node and segment counts); ``""`` draws none.
    legend
        Draw the legend beside the graph (the explorer shows it as HTML instead).

    Returns
    -------
    matplotlib.figure.Figure
        ``fig._trtlab`` describes the drawing: ``view``, ``segments`` (names),
        ``segment_artists`` (name -> collection drawn for it), ``colors``, ``marked``
        (node -> kind), ``reasons`` (the table drawn), ``fusion_groups``, ``inputs``,
        ``outputs``, ``layout``.

    Examples
    --------
    >>> import trtlab
    >>> m = trtlab.load("data/resnet_small.onnx")            # doctest: +SKIP
    >>> fig = trtlab.draw(m, trtlab.partition(m))              # doctest: +SKIP
    >>> fig.savefig("partition.png")                           # doctest: +SKIP
    """
    from matplotlib.figure import Figure

    model, partition = _resolve(model, partition)
    if condensed not in ("auto", True, False):
        raise ValueError(f"condensed must be 'auto', True or False, got {condensed!r}")
    n = len(model.node_names)
    if condensed is True and partition is None:
        raise PartitionError(
            "The condensed view draws one box per segment and needs a partition: "
            "draw(model, trtlab.partition(model), condensed=True), or condensed=False.")
    view_condensed = (condensed is True
                      or (condensed == "auto" and partition is not None and n > condense_above))
    groups = fusion_groups(fusion, model)
    marks = _node_decisions(model, partition)
    reasons = (reasons_table(partition, max_rows=max_reason_rows)
               if show_reasons and partition is not None else None)
    if reasons is not None and len(reasons) == 0:
        reasons = None
    n_rows = 0 if reasons is None else len(reasons) + 1
    table_in = n_rows * _ROW_IN

    if title is None:
        title = f"{model.name}: {n} nodes"
        if partition is not None:
            n_trt = sum(1 for s in partition.segments if s.backend != "fallback")
            plural = "s" if len(partition.segments) != 1 else ""
            title += (f", {len(partition.segments)} segment{plural} ({n_trt} accelerated, "
                      f"{len(partition.segments) - n_trt} fallback)")
        if view_condensed:
            title += " — one box per segment, bytes crossing each cut on the edges"
    hint = (f"Every node of the {n}: trtlab.viz.model_explorer.show(partition) opens Model "
            "Explorer coloured by segment (extra: trtlab[explorer])"
            if view_condensed and title else None)
    title_in = (_TITLE_IN if title else 0.1) + (0.22 if hint and ax is None else 0.0)
    legend_in = _LEGEND_IN if legend else 0.1

    own = ax is None
    state: Dict[str, Any] = {}

    def ax_factory(graph_w: float, graph_h: float) -> Any:
        if not own:
            state["ax"] = ax
            return ax
        fig_w = max(graph_w + legend_in, 9.0 if reasons is not None else 4.0,
                    len(title) * _TITLE_CHAR_IN + 0.3, len(hint or "") * 0.066 + 0.3)
        fig_h = graph_h + title_in + (table_in + 0.3 if reasons is not None else 0.0)
        if figsize is not None:
            fig_w, fig_h = figsize
        fig = Figure(figsize=(fig_w, fig_h))
        _FastPngCanvas(fig)
        top = 1 - title_in / fig_h
        graph_bottom = (table_in + 0.3) / fig_h if reasons is not None else 0.0
        graph_frac_w = min(graph_w, fig_w - legend_in) / fig_w
        gax = fig.add_axes((0.0, graph_bottom, graph_frac_w, max(top - graph_bottom, 0.05)))
        state.update(ax=gax, fig_w=fig_w, fig_h=fig_h, top=top, graph_frac_w=graph_frac_w)
        if reasons is not None:
            state["table_ax"] = fig.add_axes((0.02, 0.1 / fig_h, 0.96, table_in / fig_h))
        return gax

    if view_condensed:
        scene = _condensed_view(ax_factory, model, partition, groups, marks, figsize)
    else:
        scene = _full_view(ax_factory, model, partition, groups, marks, max_labels, figsize)
    gax = state["ax"]
    fig = gax.figure

    if own:
        if title:
            fig.suptitle(title, x=0.01, y=1 - 0.12 / state["fig_h"], ha="left", va="top",
                         fontsize=11)
        if hint:
            fig.text(0.01, 1 - 0.42 / state["fig_h"], hint, ha="left", va="top", fontsize=8.5,
                     color="#444444", gid="large_graph_hint")
        if legend:
            fig.legend(handles=scene.handles, loc="upper left", fontsize=8, frameon=False,
                       bbox_to_anchor=(state["graph_frac_w"] + 0.005, state["top"]))
        if reasons is not None:
            _draw_table(state["table_ax"], reasons)
    else:
        if title:
            gax.set_title(title, fontsize=10, loc="left")
        if legend:
            gax.legend(handles=scene.handles, loc="upper left", bbox_to_anchor=(1.0, 1.0),
                       fontsize=8, frameon=False)
        if reasons is not None:
            tbl = gax.table(cellText=[[st.ellipsize(v, 70) for v in map(str, r)]
                                      for r in reasons.itertuples(index=False)],
                            colLabels=list(reasons.columns), loc="bottom", cellLoc="left")
            tbl.auto_set_font_size(False)
            tbl.set_fontsize(7)
            tbl.set_gid("reasons")

    colors = {}
    if partition is not None:
        colors = {seg.name: c for seg, c in zip(partition.segments,
                                                st.segment_colors(partition.segments))}
    fig._trtlab = dict(
        scene.meta,
        model=model.name,
        n_nodes=n,
        segments=[s.name for s in partition.segments] if partition is not None else [],
        colors=colors,
        marked={k: v[0] for k, v in marks.items()},
        reasons=reasons,
        title=title,
        hint=hint,
        legend_handles=scene.handles,
    )
    return fig
