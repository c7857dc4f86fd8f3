"""Plots of :class:`trtlab.backends.tensorrt.layers.FusionReport`: layer latency, fusion comparison, before/after.

The fused-group overlay on the ONNX graph is drawn by :func:`trtlab.viz.draw` from
``FusionReport.groups()``. matplotlib is imported inside each function.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

from trtlab.errors import FusionError

__all__ = ["plot_layer_latency", "plot_fusion_comparison", "plot_before_after",
           "PRECISION_COLORS", "FATE_COLORS"]

#: One colour per precision, the same in every plot.
PRECISION_COLORS: Dict[str, str] = {
    "FP32": "#4e79a7", "FP16": "#59a14f", "BF16": "#8cd17d", "FP8": "#f28e2b", "FP4": "#ffbe7d",
    "INT8": "#e15759", "INT4": "#ff9d9a", "UINT8": "#b07aa1", "INT32": "#9c755f",
    "INT64": "#bab0ac", "BOOL": "#d4a6c8", "FP64": "#76b7b2", "UNKNOWN": "#c9c9c9",
}


def _color(precision: Any) -> str:
    return PRECISION_COLORS.get(str(precision), PRECISION_COLORS["UNKNOWN"])


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _legend(ax: Any, precisions: Sequence[str], **kwargs: Any) -> None:
    from matplotlib.patches import Patch

    seen = list(dict.fromkeys(str(p) for p in precisions))
    ax.legend(handles=[Patch(color=_color(p), label=p) for p in seen], title="precision",
              fontsize="small", **kwargs)


def _check_report(report: Any, what: str) -> None:
    from trtlab.backends.tensorrt.layers import FusionReport

    if not isinstance(report, FusionReport):
        raise FusionError(f"{what} needs a FusionReport (trtlab.backends.tensorrt.layers.fusion(...) or "
                          f"prefusion(...)), got {type(report).__name__}.")


def _ticks(ax: Any, labels: Sequence[str], limit: int) -> bool:
    """Name every bar when there are at most ``limit``; else number them (fast for 1000s)."""
    if len(labels) > limit:
        ax.set_ylabel("position (names omitted: too many bars to label)")
        return False
    ax.set_yticks(list(range(len(labels))))
    ax.set_yticklabels(labels, fontsize=7)
    return True


def plot_layer_latency(report: Any, *, top: Optional[int] = 40, metric: str = "average_ms",
                       order: str = "time", ax: Any = None, label_width: int = 60,
                       label_limit: int = 150) -> Any:
    """Horizontal bars of per-layer time of the running layers, coloured by precision.

    Parameters
    ----------
    report
        A post-fusion :class:`~trtlab.backends.tensorrt.layers.FusionReport` with a profile.
    top
        Show the ``top`` slowest layers; ``None`` shows all.
    order
        ``"time"`` (slowest first; the default) or ``"engine"`` (engine order).
    metric
        ``"average_ms"`` (default), ``"median_ms"``, ``"time_ms"`` or ``"percentage"``.
    ax
        Axes to draw on (a new figure when ``None``).
    label_width
        Layer names longer than this are shortened.
    label_limit
        With more bars than this, bars are numbered instead of named.

    Returns
    -------
    matplotlib.figure.Figure
    """
    _check_report(report, "plot_layer_latency()")
    if not report.has_profile:
        raise FusionError(
            f"Report {report.label!r} ({report.stage}) has no per-layer times to plot. Build it "
            "with fusion(layers_json, profile='profile.json') (trtexec --exportProfile).")
    if metric not in ("average_ms", "median_ms", "time_ms", "percentage"):
        raise FusionError(f"metric must be average_ms, median_ms, time_ms or percentage; "
                          f"got {metric!r}.")
    if order not in ("time", "engine"):
        raise FusionError(f"order must be 'time' or 'engine'; got {order!r}.")
    frame = report.running[["layer", "label", "precision", metric]].dropna(subset=[metric])
    shown = len(frame)
    if top is not None and len(frame) > top:
        frame = frame.nlargest(top, metric)
    frame = (frame.sort_values([metric, "layer"], ascending=[False, True]) if order == "time"
             else frame.sort_values("layer"))
    import matplotlib.pyplot as plt

    if ax is None:
        height = min(0.22 * len(frame) + 1.5, 40)
        fig, ax = plt.subplots(figsize=(9, height))
    else:
        fig = ax.figure
    y = list(range(len(frame)))
    ax.barh(y, frame[metric].to_numpy(), color=[_color(p) for p in frame["precision"]])
    named = _ticks(ax, [_short(str(s), label_width) for s in frame["label"]], label_limit)
    ax.invert_yaxis()
    unit = "%" if metric == "percentage" else "ms"
    ax.set_xlabel(f"{metric} ({unit})")
    subset = (f"{len(frame)} slowest of {shown} running layers" if len(frame) < shown
              else f"{shown} running layers")
    ax.set_title(f"{report.label}: per-layer time ({subset})", fontsize=10)
    _legend(ax, list(frame["precision"]), loc="lower right")
    if named:
        fig.tight_layout()
    return fig


def plot_fusion_comparison(a: Any, b: Any, *, labels: Optional[Sequence[str]] = None,
                           top: Optional[int] = 40, ax: Any = None,
                           label_width: int = 40, label_limit: int = 150) -> Any:
    """Two reports side by side, one row per ONNX node (e.g. FP16 vs INT8 engines).

    With profiles on both reports the bars are each node's share of layer time
    (``share_ms``); otherwise they are the size of the fused group the node belongs to. Bars
    are coloured by the precision of the layer running the node; nodes fused differently in
    the two reports are marked with ``*``.

    Parameters
    ----------
    a, b
        :class:`~trtlab.backends.tensorrt.layers.FusionReport` objects (pre- or post-fusion).
    labels
        Names for the two reports (default: their labels).
    top
        With times, show the ``top`` nodes with the largest time in either report; without
        times, the first ``top`` nodes. ``None`` shows all.
    ax
        Axes to draw on (a new figure when ``None``).
    label_width, label_limit
        Node names longer than ``label_width`` are shortened; with more rows than
        ``label_limit`` rows are numbered instead of named.

    Returns
    -------
    matplotlib.figure.Figure
    """
    _check_report(a, "plot_fusion_comparison()")
    _check_report(b, "plot_fusion_comparison()")
    table = a.compare(b, labels=labels)
    la, lb = [c for c in dict.fromkeys(table.columns.get_level_values(0)) if c]
    timed = (la, "share_ms") in table.columns and (lb, "share_ms") in table.columns
    if timed:
        va, vb = table[(la, "share_ms")].fillna(0.0), table[(lb, "share_ms")].fillna(0.0)
        xlabel = "share of layer time (ms)"
    else:
        def size(col: Any) -> Any:
            return col.map(lambda f: len(f) + 1 if isinstance(f, tuple) else 0)
        va, vb = size(table[(la, "fused_with")]), size(table[(lb, "fused_with")])
        xlabel = "nodes in the node's layer"
    if top is not None and len(table) > top:
        keep = (va.combine(vb, max).nlargest(top).index if timed else table.index[:top])
        keep = [n for n in table.index if n in set(keep)]
        table, va, vb = table.loc[keep], va.loc[keep], vb.loc[keep]
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(10, min(0.28 * len(table) + 1.8, 40)))
    else:
        fig = ax.figure
    y = list(range(len(table)))
    h = 0.4
    pa = table[(la, "precision")].fillna("UNKNOWN")
    pb = table[(lb, "precision")].fillna("UNKNOWN")
    ax.barh([v - h / 2 for v in y], va.to_numpy(), height=h, color=[_color(p) for p in pa],
            edgecolor="black", linewidth=0.3)
    ax.barh([v + h / 2 for v in y], vb.to_numpy(), height=h, color=[_color(p) for p in pb],
            edgecolor="black", linewidth=0.3, hatch="///")
    names = [("* " if not same else "") + _short(str(n), label_width)
             for n, same in zip(table.index, table[("", "same_fusion")])]
    named = _ticks(ax, names, label_limit)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(f"{la} (plain) vs {lb} (hatched), by ONNX node; * = fused differently",
                 fontsize=10)
    _legend(ax, list(pa) + list(pb), loc="lower right")
    if named:
        fig.tight_layout()
    return fig


#: Colours of a node's fate in :func:`plot_before_after`.
FATE_COLORS: Dict[str, str] = {"own_layer": "#4e79a7", "absorbed": "#f28e2b",
                               "elided": "#bab0ac", "no_layer": "#e15759"}


def plot_before_after(report: Any, *, ax: Any = None, top: Optional[int] = 20) -> Any:
    """What fusion did to each ONNX op type (``FusionReport.before_after()``).

    One stacked bar per op type: nodes that became their own layer, nodes absorbed into a
    layer another op anchors (a Relu in ``Conv + Relu``), nodes only in layers TensorRT elides,
    and nodes with no layer. A black tick marks how many running layers implement the op type.

    Returns
    -------
    matplotlib.figure.Figure
    """
    _check_report(report, "plot_before_after()")
    table = report.before_after()
    total = table[table["op_type"] == "TOTAL"].iloc[0]
    table = table[table["op_type"] != "TOTAL"]
    if top is not None:
        table = table.head(top)
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 0.3 * len(table) + 1.8))
    else:
        fig = ax.figure
    y = list(range(len(table)))
    left = [0] * len(table)
    labels = {"own_layer": "own layer", "absorbed": "absorbed into another op's layer",
              "elided": "elided (NoOp)", "no_layer": "no layer"}
    for col in ("own_layer", "absorbed", "elided", "no_layer"):
        vals = table[col].tolist()
        if not any(vals):
            continue
        ax.barh(y, vals, left=left, height=0.6, color=FATE_COLORS[col], label=labels[col])
        left = [a + b for a, b in zip(left, vals)]
    ax.scatter(table["layers"], y, marker="|", s=200, color="black", zorder=3,
               label=f"running {report.stage} layers")
    ax.set_yticks(y)
    ax.set_yticklabels(table["op_type"], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ONNX nodes")
    ax.set_title(f"{report.label}: {total['onnx_nodes']} ONNX nodes \u2192 {total['layers']} "
                 f"running {report.stage} layers ({total['absorbed']} nodes absorbed)",
                 fontsize=10)
    ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    return fig
