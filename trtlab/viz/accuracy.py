"""Plot an accuracy table from :func:`trtlab.study.accuracy.precision_table`."""

from __future__ import annotations

from typing import Any, Optional

from trtlab.errors import CompareError

__all__ = ["plot_accuracy"]


def plot_accuracy(table: Any, *, ax: Optional[Any] = None, metric: Optional[str] = None) -> Any:
    """Bar chart of accuracy (or agreement with FP32) per configuration, latency as labels.

    Parameters
    ----------
    table
        A :func:`~trtlab.study.accuracy.precision_table` DataFrame.
    ax
        Matplotlib axes to draw on (a new figure otherwise).
    metric
        Column to plot; default ``accuracy`` when it has values, else ``top1_agree``, else
        ``cosine``.

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
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(table)), 3.2))
    else:
        fig = ax.figure
    colors = {"fp32": "#4c72b0", "fp16": "#55a868", "int8": "#c44e52", "mixed": "#8172b2"}
    values = table[metric].astype(float) * (100.0 if metric in ("accuracy", "top1_agree") else 1.0)
    bars = ax.bar(range(len(table)), values,
                  color=[colors.get(p, "#999999") for p in table.get("precision", ["fp32"] * len(table))])
    ax.set_xticks(range(len(table)))
    ax.set_xticklabels(table["config"], rotation=30, ha="right")
    ax.set_ylabel(f"{metric} (%)" if metric in ("accuracy", "top1_agree") else metric)
    finite = values[values.notna()]
    if len(finite):
        low = float(finite.min())
        ax.set_ylim(max(0.0, low - max(2.0, 0.1 * abs(low))) if metric != "cosine" else low - 1e-3,
                    float(finite.max()) + (1.0 if metric != "cosine" else 1e-3))
    if "latency_ms" in table.columns:
        for bar, ms in zip(bars, table["latency_ms"]):
            if ms == ms:
                ax.annotate(f"{ms:.2f} ms", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=8)
    ax.set_title(f"{table.attrs.get('model', 'model')}: {metric} by precision")
    fig.tight_layout()
    return fig
