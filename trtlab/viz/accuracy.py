"""Plot an accuracy table from :func:`trtlab.study.accuracy.precision_table`.

Accuracy and latency are different questions, so they get different panels: accuracy (or
agreement with FP32) as bars per configuration, and latency beside it as the field reports it,
the median of warm repeated runs as a marker with its spread (median to p90) as a whisker, on
a log axis when the configurations differ by more than a factor of ten. Latency is never
printed on the accuracy bars.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from trtlab.errors import CompareError

__all__ = ["plot_accuracy"]

_COLORS = {"fp32": "#4c72b0", "fp16": "#55a868", "int8": "#c44e52", "mixed": "#8172b2"}


def _latency_panel(ax: Any, table: Any, colors: list) -> None:
    med = table["latency_ms"].astype(float).to_numpy()
    p90 = (table["latency_p90_ms"].astype(float).to_numpy() if "latency_p90_ms" in table.columns
           else med)
    y = np.arange(len(table))
    ok = np.isfinite(med)
    ax.hlines(y[ok], med[ok], np.maximum(p90[ok], med[ok]), color="#555555", linewidth=1.5,
              label="median .. p90")
    ax.scatter(med[ok], y[ok], c=[c for c, k in zip(colors, ok) if k], s=42, zorder=3,
               edgecolors="#222222", linewidths=0.6, label="median")
    ax.set_yticks(y)
    ax.set_yticklabels([])
    ax.set_ylim(len(table) - 0.5, -0.5)
    finite = med[ok]
    if finite.size and finite.min() > 0 and np.nanmax(p90[ok]) / finite.min() > 10:
        ax.set_xscale("log")
    elif finite.size:
        ax.set_xlim(0, float(np.nanmax(p90[ok])) * 1.15)
    ax.set_xlabel("latency per batch (ms), warm runs")
    ax.grid(axis="x", alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("latency", fontsize=10)


def plot_accuracy(table: Any, *, ax: Optional[Any] = None, metric: Optional[str] = None,
                  latency: bool = True) -> Any:
    """Accuracy (or agreement with FP32) per configuration, latency in its own panel.

    Parameters
    ----------
    table
        A :func:`~trtlab.study.accuracy.precision_table` DataFrame.
    ax
        Matplotlib axes for the accuracy panel (then no latency panel is drawn).
    metric
        Column to plot; default ``accuracy`` when it has values, else ``top1_agree``, else
        ``cosine``.
    latency
        Add the latency panel (when the table has ``latency_ms`` values and ``ax`` is None).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    if "config" not in getattr(table, "columns", ()):
        raise CompareError("plot_accuracy needs a precision_table DataFrame (with a 'config' column).")
    if metric is None:
        metric = next((m for m in ("accuracy", "top1_agree", "cosine")
                       if m in table.columns and table[m].notna().any()), None)
    if metric is None or metric not in table.columns:
        raise CompareError(f"The table has no column {metric!r} to plot; columns: {list(table.columns)}.")
    with_latency = (latency and ax is None and "latency_ms" in table.columns
                    and table["latency_ms"].notna().any())
    if ax is None:
        height = max(2.6, 0.42 * len(table) + 1.3)
        if with_latency:
            fig, (ax, lat_ax) = plt.subplots(1, 2, figsize=(10.5, height),
                                             gridspec_kw={"width_ratios": [1.35, 1.0]})
        else:
            fig, ax = plt.subplots(figsize=(6.5, height))
    else:
        fig = ax.figure
    colors = [_COLORS.get(p, "#999999") for p in table.get("precision", ["fp32"] * len(table))]
    percent = metric in ("accuracy", "top1_agree")
    values = table[metric].astype(float) * (100.0 if percent else 1.0)
    y = np.arange(len(table))
    ax.barh(y, values.fillna(0.0), color=colors, height=0.65)
    ax.set_yticks(y)
    ax.set_yticklabels(table["config"])
    ax.set_ylim(len(table) - 0.5, -0.5)
    ax.set_xlabel(f"{metric} (%)" if percent else metric)
    finite = values[values.notna()]
    if len(finite):
        low, high = float(finite.min()), float(finite.max())
        if metric == "cosine":
            ax.set_xlim(low - 1e-3, high + 1e-3)
        else:
            ax.set_xlim(max(0.0, low - max(2.0, 0.1 * abs(low))), high + 1.0)
        for yi, v in zip(y, values):
            if v == v:
                ax.annotate(f"{v:.2f}" if percent else f"{v:.5f}", (v, yi), xytext=(3, 0),
                            textcoords="offset points", va="center", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"{metric}", fontsize=10)
    if with_latency:
        _latency_panel(lat_ax, table, colors)
    fig.suptitle(f"{table.attrs.get('model', 'model')}: {metric} and latency by precision"
                 if with_latency else f"{table.attrs.get('model', 'model')}: {metric} by precision",
                 fontsize=11)
    fig.tight_layout()
    return fig
