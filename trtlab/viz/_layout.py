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
from typing import Optional, Sequence

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
    """

    x: np.ndarray
    y: np.ndarray
    layer: np.ndarray
    column: np.ndarray
    n_layers: int
    columns: int
    width: float
    height: float


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


def _isotonic_place(desired: np.ndarray) -> np.ndarray:
    """Positions closest (least squares) to ``desired`` with gaps of at least one, order kept."""
    target = desired - np.arange(desired.size)
    values: list = []
    weights: list = []
    for t in target.tolist():
        values.append(t)
        weights.append(1)
        while len(values) > 1 and values[-2] > values[-1]:
            w = weights[-2] + weights[-1]
            v = (values[-2] * weights[-2] + values[-1] * weights[-1]) / w
            values[-2:] = [v]
            weights[-2:] = [w]
    z = np.repeat(values, weights)
    return z + np.arange(desired.size)


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
                   y_unit: float = 1.0, column_gap: float = 1.5) -> Layout:
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
        Cut a tall drawing into side-by-side columns.
    aspect : float
        Target height / width of the folded drawing, in drawing units scaled by ``x_unit`` and
        ``y_unit`` (the physical size of one layout unit along each axis).
    column_gap : float
        Space between folded columns, in layout units.

    Returns
    -------
    Layout

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
    if n == 0:
        empty = np.zeros(0)
        return Layout(empty, empty, empty.astype(np.int64), empty.astype(np.int64), 0, 1, 0.0, 0.0)
    if src_a.size and (src_a.min() < 0 or dst_a.min() < 0 or max(src_a.max(), dst_a.max()) >= n):
        raise ValueError(f"edge endpoints must lie in [0, {n}); got values outside that range")
    keep = src_a != dst_a
    src_a, dst_a = src_a[keep], dst_a[keep]
    pin = np.zeros(n, dtype=bool) if pinned is None else np.asarray(pinned, dtype=bool)

    order = _topological_order(n, src_a, dst_a)
    layer = _layers(n, src_a, dst_a, order, pin)
    n_layers = int(layer.max()) + 1

    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    by_layer = np.lexsort((rank, layer))
    bounds = np.searchsorted(layer[by_layer], np.arange(n_layers + 1))
    members = [by_layer[bounds[k]:bounds[k + 1]] for k in range(n_layers)]

    local = np.empty(n, dtype=np.int64)
    x = np.empty(n, dtype=float)
    for m in members:
        local[m] = np.arange(m.size)
        x[m] = np.arange(m.size) - (m.size - 1) / 2.0
    sweeper = _Sweeper(layer, members, src_a, dst_a)

    def sweep(direction: str, place: bool) -> None:
        ks = range(1, n_layers) if direction == "down" else range(n_layers - 2, -1, -1)
        for k in ks:
            m = members[k]
            if m.size == 0:
                continue
            total, count = sweeper.means(direction, k, x, local)
            current = x[m]
            desired = np.where(count > 0, total / np.maximum(count, 1), current)
            if place:
                x[m] = _isotonic_place(desired)
            else:
                new = np.lexsort((current, desired))
                m = m[new]
                members[k] = m
                local[m] = np.arange(m.size)
                x[m] = np.arange(m.size) - (m.size - 1) / 2.0

    for i in range(sweeps):
        sweep("down" if i % 2 == 0 else "up", place=False)
    for direction in ("down", "up", "down"):
        sweep(direction, place=True)
    x -= x.min()

    width = float(x.max()) + 1.0
    columns = 1
    column = np.zeros(n, dtype=np.int64)
    y_layer = layer.copy()
    if fold and n_layers > 8:
        step = width + column_gap
        ideal = np.sqrt(n_layers * y_unit / (aspect * step * x_unit))
        columns = int(max(1, min(round(ideal), n_layers // 4)))
    if columns > 1:
        crossing = np.zeros(n_layers + 1, dtype=np.int64)
        lo = np.minimum(layer[src_a], layer[dst_a]) + 1
        hi = np.maximum(layer[src_a], layer[dst_a]) + 1
        np.add.at(crossing, lo, 1)
        np.subtract.at(crossing, hi, 1)
        crossing = np.cumsum(crossing)
        per = n_layers / columns
        cuts = [0]
        window = max(1, int(per * 0.15))
        for c in range(1, columns):
            ideal_cut = int(round(c * per))
            lo_c = max(cuts[-1] + 1, ideal_cut - window)
            hi_c = min(n_layers - 1, ideal_cut + window)
            if lo_c > hi_c:
                break
            cand = np.arange(lo_c, hi_c + 1)
            best = cand[np.lexsort((np.abs(cand - ideal_cut), crossing[cand]))[0]]
            cuts.append(int(best))
        cuts_a = np.asarray(cuts)
        columns = cuts_a.size
        column = np.searchsorted(cuts_a, layer, side="right") - 1
        y_layer = layer - cuts_a[column]
        x = x + column * (width + column_gap)
    y = -y_layer.astype(float)
    total_width = columns * width + (columns - 1) * column_gap
    height = float(y_layer.max()) + 1.0
    return Layout(x=x, y=y, layer=layer, column=column, n_layers=n_layers, columns=columns,
                  width=float(total_width), height=height)
