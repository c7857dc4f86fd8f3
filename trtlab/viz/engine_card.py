"""Pictures of the engine report card and of the engine graph.

Draws what :mod:`trtlab.backends.tensorrt.layers.card` and :mod:`trtlab.backends.tensorrt.layers.align` compute; matplotlib is
imported inside each function.
"""

from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence

from trtlab.errors import FusionError
from trtlab.viz.fusion_plots import _color, _short

__all__ = ["plot_report_card", "plot_engine_graph", "plot_alignment"]

_REFORMAT_EDGE = "#d62728"


def _check_card(card: Any) -> None:
    from trtlab.backends.tensorrt.layers.card import EngineCard

    if not isinstance(card, EngineCard):
        raise FusionError(f"plot_report_card() needs an EngineCard (trtlab.backends.tensorrt.layers.card."
                          f"report_card(report)), got {type(card).__name__}.")


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, color="#666666",
            transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_report_card(card: Any, *, top: int = 12, figsize: Any = (14, 13)) -> Any:
    """The report card on one figure: six panels.

    1. time by layer type; 2. running and elided layers by type; 3. precision weighted by
    time; 4. reformat overhead by conversion; 5. memory per layer (activations read and
    written, weights) in engine order; 6. convolutions: time against multiply-accumulates,
    coloured by precision.

    Parameters
    ----------
    card
        An :class:`~trtlab.backends.tensorrt.layers.card.EngineCard`.
    top
        Layer types shown in panels 1 and 2 (the slowest / most numerous).
    figsize
        Figure size in inches.

    Returns
    -------
    matplotlib.figure.Figure
    """
    _check_card(card)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 2, figsize=figsize)
    (a1, a2), (a3, a4), (a5, a6) = axes
    timed = card.has_profile

    bt = card.by_layer_type
    run = bt[bt["layers"] > 0]
    if timed and len(run):
        t = run.sort_values("average_ms", ascending=False).head(top)
        y = list(range(len(t)))
        a1.barh(y, t["average_ms"], color="#4e79a7")
        a1.set_yticks(y)
        a1.set_yticklabels([_short(str(s), 28) for s in t["layer_type"]], fontsize=8)
        a1.invert_yaxis()
        for yi, (ms, share) in enumerate(zip(t["average_ms"], t["time_share"])):
            a1.text(ms, yi, f" {share:.0%}", va="center", fontsize=7)
        a1.set_xlabel("average ms (sum over layers)")
    else:
        _empty(a1, "no per-layer times (pass profile= to fusion())")
    a1.set_title("Time by layer type", fontsize=10)

    c = bt.assign(total=bt["layers"] + bt["elided"]).sort_values("total", ascending=False)
    c = c.head(top)
    y = list(range(len(c)))
    a2.barh(y, c["layers"], color="#59a14f", label="running")
    a2.barh(y, c["elided"], left=c["layers"], color="#bab0ac", label="elided (not run)")
    a2.set_yticks(y)
    a2.set_yticklabels([_short(str(s), 28) for s in c["layer_type"]], fontsize=8)
    a2.invert_yaxis()
    a2.set_xlabel("layers")
    a2.legend(fontsize="small", loc="lower right")
    a2.set_title("Layers by type", fontsize=10)

    p = card.precision
    if len(p):
        vals = p["time_share"] if timed else p["layers"] / p["layers"].sum()
        y = list(range(len(p)))
        a3.barh(y, vals, color=[_color(x) for x in p["precision"]])
        a3.set_yticks(y)
        a3.set_yticklabels([f"{x} ({n} layers)" for x, n in zip(p["precision"], p["layers"])],
                           fontsize=8)
        a3.invert_yaxis()
        a3.set_xlim(0, 1)
        a3.set_xlabel("share of engine time" if timed else "share of running layers")
    else:
        _empty(a3, "no running layers")
    a3.set_title("Precision, weighted by time" if timed else "Precision (no times)", fontsize=10)

    rs = card.reformat_summary
    body = rs[rs["conversion"] != "TOTAL"]
    total = rs[rs["conversion"] == "TOTAL"].iloc[0]
    if len(body):
        vals = body["average_ms"] if timed else body["layers"]
        y = list(range(len(body)))
        a4.barh(y, vals, color="#76b7b2")
        a4.set_yticks(y)
        a4.set_yticklabels([f"{c} ({n})" for c, n in zip(body["conversion"], body["layers"])],
                           fontsize=8)
        a4.invert_yaxis()
        a4.set_xlabel("average ms" if timed else "reformat layers")
        share = (f", {total['time_share']:.1%} of time" if timed
                 and not math.isnan(total["time_share"]) else "")
        a4.set_title(f"Reformat overhead: {int(total['layers'])} running reformats{share}",
                     fontsize=10)
    else:
        _empty(a4, "no reformat layer runs")
        a4.set_title("Reformat overhead", fontsize=10)

    m = card.memory
    if len(m):
        x = list(range(len(m)))
        a5.bar(x, m["activation_bytes"].fillna(0) / 2**20, width=1.0, color="#f28e2b",
               label="activations (inputs + outputs)")
        a5.bar(x, -(m["weight_bytes"].fillna(0) / 2**20), width=1.0, color="#4e79a7",
               label="weights (drawn downwards)")
        a5.axhline(0, color="black", linewidth=0.5)
        a5.set_xlabel("running layer (engine order)")
        a5.set_ylabel("MiB")
        a5.legend(fontsize="small")
    else:
        _empty(a5, "no running layers")
    a5.set_title("Memory per layer", fontsize=10)

    cv = card.convolutions.dropna(subset=["macs"])
    if timed and len(cv):
        cv = cv[cv["average_ms"] > 0]
    if len(cv) and timed:
        a6.scatter(cv["macs"], cv["average_ms"], c=[_color(x) for x in cv["precision"]],
                   s=18, edgecolors="black", linewidths=0.3)
        a6.set_xscale("log")
        a6.set_yscale("log")
        a6.set_xlabel("multiply-accumulates")
        a6.set_ylabel("average ms")
        from matplotlib.patches import Patch

        seen = list(dict.fromkeys(cv["precision"]))
        a6.legend(handles=[Patch(color=_color(x), label=x) for x in seen], fontsize="small",
                  title="precision")
        a6.set_title(f"Convolutions ({len(card.convolutions)}): time vs work", fontsize=10)
    elif len(card.convolutions):
        counts = card.convolutions["kernel"].astype(str).value_counts()
        a6.bar(range(len(counts)), counts.to_numpy(), color="#9c755f")
        a6.set_xticks(range(len(counts)))
        a6.set_xticklabels(list(counts.index), fontsize=8, rotation=30)
        a6.set_ylabel("layers")
        a6.set_title(f"Convolutions ({len(card.convolutions)}) by kernel", fontsize=10)
    else:
        _empty(a6, "no convolution layer")
        a6.set_title("Convolutions", fontsize=10)
    fig.suptitle(f"Engine report card: {card.label}", fontsize=12)
    fig.tight_layout()
    return fig


def _layer_label(name: str, width: int) -> str:
    return _short(name.split(" + ")[0] + (" +\u2026" if " + " in name else ""), width)


def plot_engine_graph(report: Any, *, color_by: str = "latency", label_top: int = 12,
                      include_elided: bool = False, ax: Any = None,
                      max_size: Sequence[float] = (16.0, 22.0), label_width: int = 32) -> Any:
    """The engine as a graph of layers (squares) and tensors (dots), top to bottom.

    Layers are coloured by their time (``color_by="latency"``, log scale; needs a profile) or
    precision (``"precision"``); running reformats have a red outline. Only the ``label_top``
    slowest layers (by time, else the first ones) are named, so a 400-layer engine stays
    readable; a tall graph is folded into side-by-side columns.

    Parameters
    ----------
    report
        A :class:`~trtlab.backends.tensorrt.layers.FusionReport`.
    color_by
        ``"latency"`` or ``"precision"``.
    label_top
        How many layers to name.
    include_elided
        Also draw layers TensorRT does not run (``NoOp``, ``Constant``).
    ax
        Axes to draw on (a new figure when ``None``).
    max_size
        Largest figure size in inches (width, height) for a new figure.
    label_width
        Names longer than this are shortened.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from trtlab.backends.tensorrt.layers import FusionReport
    from trtlab.backends.tensorrt.layers.card import engine_graph

    if not isinstance(report, FusionReport):
        raise FusionError(f"plot_engine_graph() needs a FusionReport, got "
                          f"{type(report).__name__}.")
    if color_by not in ("latency", "precision"):
        raise FusionError(f"color_by must be 'latency' or 'precision'; got {color_by!r}.")
    if color_by == "latency" and not report.has_profile:
        raise FusionError(f"Report {report.label!r} has no per-layer times to colour by; pass "
                          "profile= to fusion(), or color_by='precision'.")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.collections import LineCollection

    from trtlab.viz._layout import layered_layout

    g = engine_graph(report, include_elided=include_elided)
    nodes = list(g.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    src = [index[u] for u, _ in g.edges]
    dst = [index[v] for _, v in g.edges]
    pinned = [g.nodes[n]["kind"] == "tensor" and g.nodes[n]["io"] == "Input" for n in nodes]
    lay = layered_layout(len(nodes), src, dst, pinned=pinned, x_unit=0.22, y_unit=0.22,
                         aspect=max_size[1] / max_size[0])
    if ax is None:
        w = min(max(lay.width * 0.22 + 1.5, 6.0), max_size[0])
        h = min(max(lay.height * 0.22 + 1.5, 4.0), max_size[1])
        fig, ax = plt.subplots(figsize=(w, h))
    else:
        fig = ax.figure
    xs, ys = np.asarray(lay.x, float), np.asarray(lay.y, float)
    segs: List[Any] = []
    for k, (s, d) in enumerate(zip(src, dst)):
        path = lay.paths[k] if k < len(lay.paths) else None
        pts = [(xs[s], ys[s])] + ([tuple(p) for p in path] if path is not None and len(path)
                                   else []) + [(xs[d], ys[d])]
        if lay.column[s] != lay.column[d]:
            continue
        segs.append(pts)
    ax.add_collection(LineCollection(segs, colors="#9a9a9a", linewidths=0.4, zorder=1))
    is_layer = np.array([g.nodes[n]["kind"] == "layer" for n in nodes])
    tens = ~is_layer
    ax.scatter(xs[tens], ys[tens], s=4, color="#7f7f7f", zorder=2, linewidths=0)
    lay_nodes = [n for n in nodes if g.nodes[n]["kind"] == "layer"]
    lx = xs[is_layer]
    ly = ys[is_layer]
    times = np.array([g.nodes[n]["average_ms"] for n in lay_nodes], float)
    edge = [_REFORMAT_EDGE if g.nodes[n]["reformat"] else "black" for n in lay_nodes]
    size = 26 if len(lay_nodes) <= 150 else 14
    if color_by == "latency":
        from matplotlib.colors import LogNorm

        positive = times[np.isfinite(times) & (times > 0)]
        lo = float(positive.min()) if positive.size else 1e-4
        hi = float(positive.max()) if positive.size else 1.0
        vals = np.where(np.isfinite(times) & (times > 0), times, lo)
        sc = ax.scatter(lx, ly, c=vals, cmap="plasma", norm=LogNorm(lo, max(hi, lo * 1.0001)),
                        s=size, marker="s", edgecolors=edge, linewidths=0.5, zorder=3)
        fig.colorbar(sc, ax=ax, fraction=0.03, pad=0.01, label="layer average ms (log)")
    else:
        cols = [_color(g.nodes[n]["precision"]) for n in lay_nodes]
        ax.scatter(lx, ly, c=cols, s=size, marker="s", edgecolors=edge, linewidths=0.5,
                   zorder=3)
        from matplotlib.patches import Patch

        seen = list(dict.fromkeys(str(g.nodes[n]["precision"]) for n in lay_nodes))
        ax.legend(handles=[Patch(color=_color(p), label=p) for p in seen], title="precision",
                  fontsize="small", loc="upper right")
    if label_top:
        if np.isfinite(times).any():
            ranked = sorted(range(len(lay_nodes)), key=lambda k: -np.nan_to_num(times[k]))
        else:
            ranked = list(range(len(lay_nodes)))
        for k in ranked[:label_top]:
            n = lay_nodes[k]
            extra = (f" {times[k]:.3g} ms" if np.isfinite(times[k]) else "")
            ax.annotate(_layer_label(str(g.nodes[n]["name"]), label_width) + extra,
                        (lx[k], ly[k]), xytext=(4, 2), textcoords="offset points", fontsize=6,
                        zorder=4, bbox={"boxstyle": "round,pad=0.1", "fc": "white",
                                        "ec": "none", "alpha": 0.7})
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    pad = 1.0
    ax.set_xlim(float(xs.min()) - pad, float(xs.max()) + pad * 4)
    ax.set_ylim(float(ys.min()) - pad, float(ys.max()) + pad)
    n_run = int(sum(bool(g.nodes[n]["runs"]) for n in lay_nodes))
    ax.set_title(f"{report.label}: {n_run} running layers, {int(tens.sum())} tensors "
                 f"(coloured by {color_by}; red outline = reformat; "
                 f"{min(label_top, len(lay_nodes))} slowest named)", fontsize=9)
    return fig


def plot_alignment(alignment: Any, *, ax: Any = None, top: Optional[int] = 40,
                   label_width: int = 40) -> Any:
    """Time of aligned layer pairs of two engines (:func:`trtlab.backends.tensorrt.layers.align.align_engines`).

    One row per pair (the ``top`` pairs with the largest time in either engine, in the first
    engine's topological order); plain bars for the first engine, hatched for the second,
    coloured by precision.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from trtlab.backends.tensorrt.layers.align import Alignment

    if not isinstance(alignment, Alignment):
        raise FusionError(f"plot_alignment() needs an Alignment (align_engines(a, b)), got "
                          f"{type(alignment).__name__}.")
    pairs = alignment.pairs
    pairs = pairs[pairs["how"] != "unmatched"]
    timed = pairs["ms_a"].notna().any() and pairs["ms_b"].notna().any()
    if not timed:
        raise FusionError("plot_alignment() needs per-layer times in both reports (pass "
                          "profile= to fusion()).")
    if top is not None and len(pairs) > top:
        keep = pairs[["ms_a", "ms_b"]].max(axis=1).nlargest(top).index
        pairs = pairs.loc[sorted(keep)]
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(10, min(0.28 * len(pairs) + 1.8, 40)))
    else:
        fig = ax.figure
    y = list(range(len(pairs)))
    h = 0.4
    ax.barh([v - h / 2 for v in y], pairs["ms_a"].fillna(0), height=h,
            color=[_color(p) for p in pairs["precision_a"]], edgecolor="black", linewidth=0.3)
    ax.barh([v + h / 2 for v in y], pairs["ms_b"].fillna(0), height=h,
            color=[_color(p) for p in pairs["precision_b"]], edgecolor="black", linewidth=0.3,
            hatch="///")
    ax.set_yticks(y)
    ax.set_yticklabels([_layer_label(str(n), label_width) for n in pairs["name_a"]], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("average ms")
    la, lb = alignment.labels
    ax.set_title(f"{la} (plain) vs {lb} (hatched): {alignment.matched} aligned layers "
                 f"({alignment.coverage:.0%})", fontsize=10)
    from matplotlib.patches import Patch

    seen = list(dict.fromkeys(list(pairs["precision_a"]) + list(pairs["precision_b"])))
    ax.legend(handles=[Patch(color=_color(p), label=p) for p in seen], title="precision",
              fontsize="small", loc="lower right")
    fig.tight_layout()
    return fig
