"""Latency plots: configurations side by side, per-segment breakdown, latency versus batch size.

Every function only draws :class:`~trtlab.study.latency.LatencyStats` it is given. Segment labels carry
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


def _bars(ax: Any, data: Dict[Any, Any]) -> None:
    names = [str(k) for k in data]
    med = np.array([s.median for s in data.values()])
    lo = med - np.array([s.min for s in data.values()])
    hi = np.array([s.p99 for s in data.values()]) - med
    x = np.arange(len(names))
    ax.bar(x, med, color="#4e79a7", label="median")
    ax.errorbar(x, med, yerr=[lo, hi], fmt="none", ecolor="#222222", capsize=4, label="min .. p99")
    ax.scatter(x, [s.p90 for s in data.values()], marker="_", s=200, color="#e15759", zorder=3, label="p90")
    ax.scatter(x, [s.p95 for s in data.values()], marker="_", s=200, color="#f28e2b", zorder=3, label="p95")
    for i, s in enumerate(data.values()):
        ax.annotate(f"{s.median:.3g}", (i, s.median), ha="center", va="bottom", fontsize=8,
                    xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=20, ha="right")
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
        ``"bars"``: median bars with min..p99 whiskers and p90/p95 ticks. ``"segments"``:
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
