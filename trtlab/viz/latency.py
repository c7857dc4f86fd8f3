"""Latency plots: configurations side by side, per-segment breakdown, latency versus batch size.

Medians stay visible whatever the tails do: each configuration is a median marker with its
spread (min .. p99 whisker, p90 / p95 ticks), and the axis turns logarithmic when the values
span more than a factor of ten. Every function only draws :class:`~trtlab.study.latency.LatencyStats`
it is given. Segment labels carry
the executor that ran them (``trt_0 [onnxruntime]``), so a TensorRT segment that ran on ONNX
Runtime is never shown as TensorRT.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np

from trtlab.errors import InputError

__all__ = ["plot_latency"]

KINDS = ("bars", "segments", "batch")


def _as_dict(stats: Any) -> Dict[Any, Any]:
    from trtlab.study.latency import LatencyStats

    if isinstance(stats, LatencyStats):
        return {stats.label: stats}
    if isinstance(stats, Mapping) and stats and all(isinstance(v, (LatencyStats, Mapping)) for v in stats.values()):
        return dict(stats)
    raise InputError("plot_latency needs a LatencyStats or a non-empty dict name -> LatencyStats "
                     f"(for kind='batch': batch size -> LatencyStats); got {type(stats).__name__}.")


LOG_ABOVE = 10.0  # use a log axis when the largest value is this many times the smallest


def _log_if_wide(ax: Any, low: np.ndarray, high: np.ndarray, axis: str = "y") -> bool:
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    ok = np.isfinite(low) & (low > 0)
    if ok.any() and np.nanmax(high[ok]) / low[ok].min() > LOG_ABOVE:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        return True
    return False


def _bars(ax: Any, data: Dict[Any, Any]) -> None:
    names = [str(k) for k in data]
    med = np.array([s.median for s in data.values()])
    mins = np.array([s.min for s in data.values()])
    p99 = np.array([s.p99 for s in data.values()])
    x = np.arange(len(names))
    ax.vlines(x, mins, p99, color="#222222", linewidth=1.2, label="min .. p99")
    ax.scatter(x, [s.p90 for s in data.values()], marker="_", s=220, color="#e15759", zorder=3, label="p90")
    ax.scatter(x, [s.p95 for s in data.values()], marker="_", s=220, color="#f28e2b", zorder=3, label="p95")
    ax.scatter(x, med, marker="o", s=60, color="#4e79a7", edgecolors="#1b3a5c", zorder=4,
               label="median", gid="medians")
    for i, s in enumerate(data.values()):
        ax.annotate(f"{s.median:.3g} ms", (i, s.median), ha="left", va="center", fontsize=8,
                    xytext=(7, 0), textcoords="offset points")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=20, ha="right")
    ax.set_xlim(-0.6, len(names) - 0.4)
    if not _log_if_wide(ax, mins, p99):
        ax.set_ylim(0, float(np.nanmax(p99)) * 1.1 if np.isfinite(p99).any() else 1.0)
    ax.set_ylabel("latency (ms)")
    ax.legend(fontsize=8)


def _segments(ax: Any, data: Dict[Any, Any]) -> None:
    from trtlab.viz._style import TRT_PALETTE

    names = [str(k) for k in data]
    parts: List[str] = []
    for s in data.values():
        for p in s.segments:
            label = f"{p} [{s.executors.get(p, '?')}]"
            if label not in parts:
                parts.append(label)
    if not parts:
        raise InputError("kind='segments' needs LatencyStats of a HybridModel (with per-segment times).")
    bottom = np.zeros(len(names))
    for j, part in enumerate(parts):
        seg = part.rsplit(" [", 1)[0]
        heights = np.array([
            float(np.median(s.segments[seg])) * 1e3
            if seg in s.segments and f"{seg} [{s.executors.get(seg, '?')}]" == part else 0.0
            for s in data.values()])
        color = "#c9c9c9" if seg == "boundaries" else TRT_PALETTE[j % len(TRT_PALETTE)]
        ax.bar(names, heights, bottom=bottom, label=part, color=color, edgecolor="white")
        bottom += heights
    ax.set_ylabel("median latency per part (ms)")
    ax.legend(fontsize=8, title="segment [executor]", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.tick_params(axis="x", rotation=20)


def _batch(ax: Any, data: Dict[Any, Any]) -> None:
    from trtlab.study.latency import LatencyStats

    series = {"": data} if all(isinstance(v, LatencyStats) for v in data.values()) else data
    lows: List[float] = []
    highs: List[float] = []
    for name, by_batch in series.items():
        if not isinstance(by_batch, Mapping) or not all(isinstance(v, LatencyStats) for v in by_batch.values()):
            raise InputError("kind='batch' needs {batch size: LatencyStats} or {name: {batch size: LatencyStats}}.")
        try:
            batches = sorted(int(b) for b in by_batch)
        except (TypeError, ValueError):
            raise InputError(f"kind='batch' needs integer batch sizes as keys, got {list(by_batch)}.") from None
        stats = [by_batch[b] if b in by_batch else by_batch[str(b)] for b in batches]
        med = np.array([s.median for s in stats])
        line, = ax.plot(batches, med, marker="o", label=str(name) or "median")
        ax.fill_between(batches, [s.p90 for s in stats], [s.p99 for s in stats], alpha=0.2,
                        color=line.get_color())
        lows.extend(med.tolist())
        highs.extend(s.p99 for s in stats)
    _log_if_wide(ax, np.asarray(lows), np.asarray(highs))
    ax.set_xlabel("batch size")
    ax.set_ylabel("latency (ms), band p90..p99")
    ax.legend(fontsize=8)


def plot_latency(stats: Union[Any, Mapping[Any, Any]], kind: str = "bars", *, ax: Any = None,
                 title: Optional[str] = None) -> Any:
    """Plot latency statistics.

    Parameters
    ----------
    stats
        A :class:`~trtlab.study.latency.LatencyStats`, or a dict name -> LatencyStats. For
        ``kind="batch"``: batch size -> LatencyStats, or name -> {batch size -> LatencyStats}.
    kind
        ``"bars"``: median markers with min..p99 whiskers and p90/p95 ticks (log axis when
        the values span more than ten times). ``"segments"``:
        stacked per-segment medians (labelled with their executor) plus boundary copies.
        ``"batch"``: median latency versus batch size, p90..p99 band.
    ax
        Axes to draw on (a new figure otherwise).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if kind not in KINDS:
        raise InputError(f"kind={kind!r} is not a latency plot; use one of {', '.join(KINDS)}.")
    data = _as_dict(stats)
    import matplotlib.pyplot as plt

    if ax is None:
        legend_in = 2.2 if kind == "segments" else 0.0
        fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(data) + 2.5) + legend_in, 3.5))
    else:
        fig = ax.figure
    {"bars": _bars, "segments": _segments, "batch": _batch}[kind](ax, data)
    ax.set_title(title or {"bars": "latency", "segments": "latency by segment",
                           "batch": "latency vs batch size"}[kind])
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
