"""Layered top-to-bottom layout for directed acyclic graphs.

A small Sugiyama-style pipeline, linear in nodes plus edges per pass:

1. longest-path layering (sources without a pinned layer are pulled down next to their
   first consumer, so constants do not stretch edges across the whole drawing);
2. barycentric ordering sweeps, alternating down and up;
3. coordinate placement: each layer solves a small isotonic regression so nodes sit as close
   as possible to the mean of their neighbours while keeping unit spacing, which keeps
   chains straight;
4. folding: a tall, narrow drawing is cut into side-by-side columns at the layers crossed by
   the fewest edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from trtlab.errors import InvalidModelError

__all__ = ["Layout", "layered_layout"]


@dataclass(frozen=True)
class Layout:
    """Node positions in layout units (one unit between neighbours, one unit per layer).

    Attributes
    ----------
    x, y : numpy.ndarray
        Position of each node; ``y`` decreases downwards (layer ``k`` of a column at ``-k``).
    layer : numpy.ndarray
        Layer index of each node before folding.
    column : numpy.ndarray
        Column of each node after folding (all zero when not folded).
    n_layers : int
        Number of layers before folding.
    columns : int
        Number of side-by-side columns.
    width, height : float
        Extent of the drawing in layout units.
    paths : list of numpy.ndarray
        Routing points (``k x 2``) of each edge between its endpoints.
    """

    x: np.ndarray
    y: np.ndarray
    layer: np.ndarray
    column: np.ndarray
    n_layers: int
    columns: int
    width: float
    height: float
    paths: List[np.ndarray]


def _topological_order(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if src.size == 0 or bool(np.all(src < dst)):
        return np.arange(n)
    indeg = np.bincount(dst, minlength=n)
    order_e = np.argsort(src, kind="stable")
    starts = np.searchsorted(src[order_e], np.arange(n + 1))
    succ = dst[order_e]
    stack = [int(v) for v in np.flatnonzero(indeg == 0)[::-1]]
    out = []
    while stack:
        v = stack.pop()
        out.append(v)
        for w in succ[starts[v]:starts[v + 1]]:
            indeg[w] -= 1
            if indeg[w] == 0:
                stack.append(int(w))
    if len(out) != n:
        raise InvalidModelError(
            f"cannot lay out the graph: it has a cycle through {n - len(out)} of its {n} nodes; "
            "ONNX graphs must be acyclic, so check the model with onnx.checker.check_model")
    return np.asarray(out, dtype=np.int64)


def _layers(n: int, src: np.ndarray, dst: np.ndarray, order: np.ndarray,
            pinned: np.ndarray) -> np.ndarray:
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    layer = np.zeros(n, dtype=np.int64)
    if src.size:
        e = np.argsort(rank[dst], kind="stable")
        s, d = src[e].tolist(), dst[e].tolist()
        lay = [0] * n
        for u, v in zip(s, d):
            if lay[u] + 1 > lay[v]:
                lay[v] = lay[u] + 1
        layer = np.asarray(lay, dtype=np.int64)
        indeg = np.bincount(dst, minlength=n)
        free_sources = np.flatnonzero((indeg == 0) & ~pinned)
        if free_sources.size:
            first = np.full(n, np.iinfo(np.int64).max)
            np.minimum.at(first, src, layer[dst])
            has_succ = first[free_sources] < np.iinfo(np.int64).max
            fs = free_sources[has_succ]
            layer[fs] = np.maximum(first[fs] - 1, 0)
    return layer


def _isotonic_place(desired: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """Positions closest (least squares) to ``desired``, in order, with ``x[i] - x[i-1] >= gaps[i]``."""
    offset = np.cumsum(gaps)
    values: list = []
    weights: list = []
    for t in (desired - offset).tolist():
        values.append(t)
        weights.append(1)
        while len(values) > 1 and values[-2] > values[-1]:
            w = weights[-2] + weights[-1]
            v = (values[-2] * weights[-2] + values[-1] * weights[-1]) / w
            values[-2:] = [v]
            weights[-2:] = [w]
    return np.repeat(values, weights) + offset


def _gaps(sizes: np.ndarray) -> np.ndarray:
    gaps = np.zeros(sizes.size)
    gaps[1:] = (sizes[1:] + sizes[:-1]) / 2.0
    return gaps


def _packed(sizes: np.ndarray) -> np.ndarray:
    x = np.cumsum(_gaps(sizes))
    return x - (x[0] + x[-1]) / 2.0 if x.size else x


def _long_edges(layer: np.ndarray, src: np.ndarray, dst: np.ndarray, budget: int) -> np.ndarray:
    """Indices of the edges spanning several layers that get routing points, shortest first."""
    span = layer[dst] - layer[src]
    long_ = np.flatnonzero(span > 1)
    if long_.size == 0:
        return long_
    long_ = long_[np.argsort(span[long_], kind="stable")]
    within = np.cumsum(span[long_] - 1) <= budget
    return np.sort(long_[within])


def _drift(x: np.ndarray, layer: np.ndarray, n_layers: int, window: int = 9) -> np.ndarray:
    """Slow sideways drift of the layer centres (a moving average), removed so long chains of
    blocks stay in a narrow band instead of wandering across the page."""
    centers = np.bincount(layer, weights=x, minlength=n_layers) / np.maximum(
        np.bincount(layer, minlength=n_layers), 1)
    if n_layers <= window:
        return np.full(n_layers, centers.mean())
    half = window // 2
    padded = np.concatenate([np.full(half, centers[0]), centers, np.full(half, centers[-1])])
    return np.convolve(padded, np.ones(window) / window, mode="valid")


class _Sweeper:
    """Per-layer edge groups so each sweep is one pass over the edges."""

    def __init__(self, layer: np.ndarray, members: list, src: np.ndarray, dst: np.ndarray):
        self.members = members
        by_dst = np.argsort(layer[dst], kind="stable")
        by_src = np.argsort(layer[src], kind="stable")
        n_layers = len(members)
        self.down = (src[by_dst], dst[by_dst],
                     np.searchsorted(layer[dst][by_dst], np.arange(n_layers + 1)))
        self.up = (dst[by_src], src[by_src],
                   np.searchsorted(layer[src][by_src], np.arange(n_layers + 1)))

    def means(self, direction: str, k: int, x: np.ndarray, local: np.ndarray):
        other, own, bounds = self.down if direction == "down" else self.up
        lo, hi = bounds[k], bounds[k + 1]
        size = len(self.members[k])
        idx = local[own[lo:hi]]
        total = np.bincount(idx, weights=x[other[lo:hi]], minlength=size)
        count = np.bincount(idx, minlength=size)
        return total, count


def layered_layout(n: int, src: Sequence[int], dst: Sequence[int], *,
                   pinned: Optional[Sequence[bool]] = None, sweeps: int = 6,
                   fold: bool = True, aspect: float = 1.3, x_unit: float = 1.0,
                   y_unit: float = 1.0, column_gap: float = 1.5, fold_above: float = 24.0,
                   route_width: float = 0.3) -> Layout:
    """Lay out a DAG in layers from top to bottom.

    Parameters
    ----------
    n : int
        Number of nodes, indexed ``0 .. n-1``.
    src, dst : sequence of int
        Edge endpoints (``src[i] -> dst[i]``).
    pinned : sequence of bool, optional
        Sources that stay on the top layer (graph inputs); other sources move down next to
        their first consumer.
    sweeps : int
        Number of barycentric ordering sweeps (alternating down and up).
    fold : bool
        Cut a drawing taller than ``fold_above`` into side-by-side columns.
    aspect : float
        Target height / width of a folded drawing.
    x_unit, y_unit : float
        Physical size of one layout unit along each axis (for example inches), used to decide
        folding.
    column_gap : float
        Space between folded columns, in layout units.
    fold_above : float
        Fold only drawings taller than this, in ``y_unit``.
    route_width : float
        Width reserved for an edge passing through a layer (nodes have width one).

    Returns
    -------
    Layout
        ``paths[i]`` holds the routing points of edge ``i`` between its endpoints (empty for
        edges between adjacent layers and for edges drawn across folded columns).

    Examples
    --------
    >>> lay = layered_layout(3, [0, 1], [1, 2])
    >>> lay.layer.tolist()
    [0, 1, 2]
    """
    src_a = np.asarray(src, dtype=np.int64).reshape(-1)
    dst_a = np.asarray(dst, dtype=np.int64).reshape(-1)
    if src_a.shape != dst_a.shape:
        raise ValueError(f"src and dst differ in length: {src_a.size} != {dst_a.size}")
    n_edges = src_a.size
    if n == 0:
        empty = np.zeros(0)
        return Layout(empty, empty, empty.astype(np.int64), empty.astype(np.int64), 0, 1, 0.0, 0.0,
                      [empty.reshape(0, 2)] * n_edges)
    if n_edges and (src_a.min() < 0 or dst_a.min() < 0 or max(src_a.max(), dst_a.max()) >= n):
        raise ValueError(f"edge endpoints must lie in [0, {n}); got values outside that range")
    pin = np.zeros(n, dtype=bool) if pinned is None else np.asarray(pinned, dtype=bool)
    loops = src_a == dst_a
    e_src, e_dst = src_a[~loops], dst_a[~loops]

    order = _topological_order(n, e_src, e_dst)
    layer = _layers(n, e_src, e_dst, order, pin)
    n_layers = int(layer.max()) + 1
    rank = np.empty(n, dtype=float)
    rank[order] = np.arange(n)

    # Edges spanning several layers get one routing point per layer crossed.
    edge_ids = np.flatnonzero(~loops)
    routed = _long_edges(layer, e_src, e_dst, budget=4 * n + 2000)
    spans = layer[e_dst[routed]] - layer[e_src[routed]] - 1
    n_dummy = int(spans.sum())
    total = n + n_dummy
    g_layer = np.concatenate([layer, np.zeros(n_dummy, dtype=np.int64)])
    g_rank = np.concatenate([rank, np.zeros(n_dummy)])
    sizes = np.concatenate([np.ones(n), np.full(n_dummy, route_width)])
    keep = np.ones(e_src.size, dtype=bool)
    keep[routed] = False
    chain_src, chain_dst = [e_src[keep]], [e_dst[keep]]
    route_of: dict = {}
    next_id = n
    for e, span in zip(routed.tolist(), spans.tolist()):
        u, v = int(e_src[e]), int(e_dst[e])
        ids = np.arange(next_id, next_id + span)
        next_id += span
        g_layer[ids] = layer[u] + 1 + np.arange(span)
        g_rank[ids] = rank[u] + 0.5
        path = np.concatenate([[u], ids, [v]])
        chain_src.append(path[:-1])
        chain_dst.append(path[1:])
        route_of[int(edge_ids[e])] = ids
    g_src = np.concatenate(chain_src)
    g_dst = np.concatenate(chain_dst)

    by_layer = np.lexsort((g_rank, g_layer))
    bounds = np.searchsorted(g_layer[by_layer], np.arange(n_layers + 1))
    members = [by_layer[bounds[k]:bounds[k + 1]] for k in range(n_layers)]

    local = np.empty(total, dtype=np.int64)
    x = np.empty(total, dtype=float)
    for m in members:
        local[m] = np.arange(m.size)
        x[m] = _packed(sizes[m])
    sweeper = _Sweeper(g_layer, members, g_src, g_dst)

    def sweep(direction: str, place: bool) -> None:
        ks = range(1, n_layers) if direction == "down" else range(n_layers - 2, -1, -1)
        for k in ks:
            m = members[k]
            if m.size == 0:
                continue
            total_w, count = sweeper.means(direction, k, x, local)
            current = x[m]
            desired = np.where(count > 0, total_w / np.maximum(count, 1), current)
            if place:
                x[m] = _isotonic_place(desired, _gaps(sizes[m]))
            else:
                m = m[np.lexsort((current, desired))]
                members[k] = m
                local[m] = np.arange(m.size)
                x[m] = _packed(sizes[m])

    for i in range(sweeps):
        sweep("down" if i % 2 == 0 else "up", place=False)
    for direction in ("down", "up", "down"):
        sweep(direction, place=True)
    x -= _drift(x[:n], layer, n_layers)[g_layer]
    x -= (x - sizes / 2).min()
    width = float((x + sizes / 2).max())

    columns = 1
    cuts = np.zeros(1, dtype=np.int64)
    if fold and n_layers * y_unit > fold_above:
        step = width + column_gap
        ideal = np.sqrt(n_layers * y_unit / (aspect * step * x_unit))
        columns = int(max(1, min(round(ideal), n_layers // 4)))
    if columns > 1:
        crossing = np.zeros(n_layers + 1, dtype=np.int64)
        np.add.at(crossing, layer[e_src] + 1, 1)
        np.subtract.at(crossing, layer[e_dst] + 1, 1)
        crossing = np.cumsum(crossing)
        per = n_layers / columns
        window = max(1, int(per * 0.15))
        chosen = [0]
        for c in range(1, columns):
            ideal_cut = int(round(c * per))
            lo_c = max(chosen[-1] + 1, ideal_cut - window)
            hi_c = min(n_layers - 1, ideal_cut + window)
            if lo_c > hi_c:
                break
            cand = np.arange(lo_c, hi_c + 1)
            chosen.append(int(cand[np.lexsort((np.abs(cand - ideal_cut), crossing[cand]))[0]]))
        cuts = np.asarray(chosen, dtype=np.int64)
        columns = cuts.size
    g_column = np.searchsorted(cuts, g_layer, side="right") - 1
    gx = x + g_column * (width + column_gap)
    gy = -(g_layer - cuts[g_column]).astype(float)

    paths = [np.zeros((0, 2))] * n_edges
    for e, ids in route_of.items():
        u = src_a[e]
        if np.all(g_column[ids] == g_column[u]) and g_column[dst_a[e]] == g_column[u]:
            paths[e] = np.column_stack([gx[ids], gy[ids]])
    total_width = columns * width + (columns - 1) * column_gap
    height = float(-gy[:n].min()) + 1.0
    return Layout(x=gx[:n], y=gy[:n], layer=layer, column=g_column[:n], n_layers=n_layers,
                  columns=columns, width=float(total_width), height=height, paths=paths)
