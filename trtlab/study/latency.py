"""Latency statistics, reported the way trtexec reports them.

:func:`benchmark` times a :class:`~trtlab.runtime.HybridModel`, an ONNX Runtime session or any
callable ``feeds -> outputs``: warm-up runs, then at least ``iterations`` timed runs (and at
least ``duration`` seconds when given). It returns :class:`LatencyStats`: min, max, mean,
median, p90, p95, p99, standard deviation, coefficient of variation and throughput, plus the same
numbers per segment and for the copies between segments of a hybrid model.

Examples
--------
>>> import numpy as np
>>> stats = benchmark(lambda feeds: {"y": feeds["x"] * 2}, {"x": np.ones(4)}, warmup=2,
...                   iterations=20, progress=False)
>>> stats.n
20
>>> list(stats.to_frame().columns)[:3]
['part', 'executor', 'n']
"""

from __future__ import annotations

import html
import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from trtlab._progress import progress as progress_bar
from trtlab.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["benchmark", "benchmark_model", "LatencyStats", "LatencyWarning", "summarize", "CV_WARN"]

#: Coefficient of variation above which the numbers are flagged unstable (trtexec's threshold).
CV_WARN = 0.025
#: Name of the per-run time outside segment execution (validation, copies between segments).
BOUNDARIES = "boundaries"
_STAT_COLUMNS = ["min", "max", "mean", "median", "p90", "p95", "p99", "std", "cv"]


class LatencyWarning(UserWarning):
    """Latency numbers vary too much to be trusted (coefficient of variation over 2.5%)."""


def summarize(samples_s: np.ndarray) -> Dict[str, float]:
    """min, max, mean, median, p90, p95, p99, std (milliseconds) and cv of samples in seconds."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    if ms.size == 0:
        return {k: float("nan") for k in _STAT_COLUMNS}
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if ms.size > 1 else 0.0
    p90, p95, p99 = (float(v) for v in np.percentile(ms, [90, 95, 99]))
    return {"min": float(ms.min()), "max": float(ms.max()), "mean": mean, "median": float(np.median(ms)),
            "p90": p90, "p95": p95, "p99": p99, "std": std, "cv": std / mean if mean > 0 else 0.0}


@dataclass(frozen=True)
class LatencyStats:
    """Latency of ``n`` timed runs; times in milliseconds.

    Attributes
    ----------
    label : str
    n : int
        Timed runs.
    min, max, mean, median, p90, p95, p99, std : float
        Milliseconds per run.
    cv : float
        Coefficient of variation (std / mean).
    throughput : float
        Runs per second over the timed wall time (``batch`` times that for samples per second).
    batch : int or None
        Size of axis 0 of the first input, when there is one.
    samples : numpy.ndarray
        Per-run latency in seconds.
    segments : dict
        Part name (segment name, ``"boundaries"``) -> per-run seconds, for a HybridModel.
    executors : dict
        Part name -> executor that ran it.
    copies : dict
        Boundary tensor -> host/device copies summed over the timed runs of a HybridModel with
        TensorRT segments (producer, consumers, resident, d2h, h2d, bytes); see
        :meth:`copy_frame`.
    """

    label: str
    n: int
    min: float
    max: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    std: float
    cv: float
    throughput: float
    batch: Optional[int] = None
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)
    segments: Dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    executors: Dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    copies: Dict[str, Dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    def copy_frame(self) -> Any:
        """DataFrame, one row per boundary tensor: producer, consumers, whether it stays on the
        GPU, device-to-host and host-to-device copies and bytes per run."""
        from trtlab.backends.tensorrt.device import copy_frame

        return copy_frame(self.copies, runs=self.n)

    @property
    def stable(self) -> bool:
        """Whether the coefficient of variation is at most 2.5%."""
        return self.cv <= CV_WARN

    def segment_stats(self) -> Dict[str, Dict[str, float]]:
        """Part name -> summary (milliseconds)."""
        return {name: summarize(s) for name, s in self.segments.items()}

    def to_frame(self) -> Any:
        """DataFrame: one row for the whole run, then one per segment and for boundaries."""
        import pandas as pd

        rows = [dict(part="total", executor=self.executors.get("total", ""), n=self.n,
                     **{k: getattr(self, k) for k in _STAT_COLUMNS}, throughput=self.throughput)]
        for name, s in self.segments.items():
            summary = summarize(s)
            rows.append(dict(part=name, executor=self.executors.get(name, ""), n=len(s), **summary,
                             throughput=float("nan")))
        frame = pd.DataFrame(rows, columns=["part", "executor", "n"] + _STAT_COLUMNS + ["throughput"])
        frame.attrs["label"] = self.label
        return frame

    def _repr_html_(self) -> str:
        return f"<p><b>{html.escape(str(self.label))}</b></p>" + self.to_frame().to_html(index=False, float_format="%.4f")

    def __str__(self) -> str:
        return (f"{self.label}: median {self.median:.4f} ms, mean {self.mean:.4f} ms, "
                f"p99 {self.p99:.4f} ms, cv {self.cv:.1%}, {self.throughput:.1f} runs/s over {self.n} runs")


def _as_callable(runnable: Any) -> Tuple[Callable[[Mapping[str, Any]], Any], str, Any]:
    """(call, label, hybrid-or-None) for a HybridModel, an ORT session or a callable."""
    from trtlab.runtime import HybridModel

    if isinstance(runnable, HybridModel):
        return runnable.run, f"hybrid {runnable.model.name}", runnable
    if hasattr(runnable, "run") and hasattr(runnable, "get_outputs") and hasattr(runnable, "get_inputs"):
        names = [o.name for o in runnable.get_outputs()]
        return (lambda feeds: runnable.run(names, feeds)), "onnxruntime session", None
    if callable(runnable):
        return runnable, getattr(runnable, "__name__", type(runnable).__name__), None
    raise InputError(f"benchmark() needs a HybridModel, an onnxruntime.InferenceSession or a callable "
                     f"feeds -> outputs; got {type(runnable).__name__}.")


def benchmark(runnable: Any, feeds: Mapping[str, Any], *, warmup: int = 10, iterations: int = 100,
              duration: Optional[float] = None, progress: bool = True,
              label: Optional[str] = None) -> LatencyStats:
    """Time ``runnable(feeds)`` and return trtexec-style latency statistics.

    Parameters
    ----------
    runnable
        A HybridModel, an ``onnxruntime.InferenceSession`` or a callable ``feeds -> outputs``.
    feeds
        Inputs by name.
    warmup
        Untimed runs first.
    iterations
        Minimum timed runs.
    duration
        Minimum timed seconds (runs continue until both minimums are met).
    progress
        Show a progress bar.
    label
        Name in tables and plots.

    Warns
    -----
    LatencyWarning
        When the coefficient of variation exceeds 2.5%.
    """
    if iterations < 1 or warmup < 0:
        raise InputError(f"benchmark needs iterations >= 1 and warmup >= 0, got iterations={iterations}, "
                         f"warmup={warmup}.")
    if duration is not None and duration < 0:
        raise InputError(f"duration must be >= 0 seconds, got {duration}.")
    call, default_label, hybrid = _as_callable(runnable)
    label = label or default_label
    for _ in range(warmup):
        call(feeds)
    samples: List[float] = []
    parts: Dict[str, List[float]] = {}
    copies: Dict[str, Dict[str, Any]] = {}
    clock = time.perf_counter
    bar = progress_bar(total=iterations, desc=f"benchmark {label}", enabled=progress)
    begin = clock()
    while True:
        t0 = clock()
        call(feeds)
        samples.append(clock() - t0)
        if hybrid is not None:
            timings = hybrid.last_timings
            for name, seconds in timings.items():
                parts.setdefault(name, []).append(seconds)
            parts.setdefault(BOUNDARIES, []).append(max(0.0, hybrid.last_total - sum(timings.values())))
            _add_copies(copies, getattr(hybrid, "last_copies", {}))
        if len(samples) <= iterations:
            bar.update(1)
        if len(samples) >= iterations and (duration is None or clock() - begin >= duration):
            break
    wall = clock() - begin
    bar.close()
    arr = np.asarray(samples)
    summary = summarize(arr)
    batch = None
    first = next(iter(feeds.values()), None) if isinstance(feeds, Mapping) else None
    if first is not None and getattr(first, "ndim", 0) >= 1:
        batch = int(first.shape[0])
    executors: Dict[str, str] = {}
    if hybrid is not None:
        frame = hybrid.executors
        executors = dict(zip(frame["segment"], frame["executor"]))
        executors[BOUNDARIES] = "host"
        executors["total"] = "hybrid"
    stats = LatencyStats(label=label, n=len(samples), **summary, throughput=len(samples) / wall if wall else 0.0,
                         batch=batch, samples=arr,
                         segments={k: np.asarray(v) for k, v in parts.items()}, executors=executors,
                         copies=copies)
    if not stats.stable:
        message = (f"{label}: coefficient of variation {stats.cv:.1%} is over {CV_WARN:.1%}; the machine is "
                   "busy or the run too short. Use more iterations or duration=, and fewer other jobs.")
        log.debug(message)
        warnings.warn(message, LatencyWarning, stacklevel=2)
    return stats


def _add_copies(total: Dict[str, Dict[str, Any]], run: Mapping[str, Mapping[str, Any]]) -> None:
    """Add one run's copies per boundary tensor to the running totals."""
    for tensor, row in run.items():
        acc = total.setdefault(tensor, {**row, "d2h": 0, "h2d": 0, "bytes": 0})
        for key in ("d2h", "h2d", "bytes"):
            acc[key] += row[key]


def benchmark_model(model: Any, *, feeds: Optional[Mapping[str, np.ndarray]] = None, batch: int = 1,
                    precision: Any = "fp32", cache_dir: Any = None, min_subgraph_size: int = 1,
                    warmup: int = 10, iterations: int = 100, duration: Optional[float] = None,
                    progress: bool = True, calibration_data: Any = None) -> Any:
    """Partition, build and time a model next to ONNX Runtime on the whole model.

    Returns
    -------
    pandas.DataFrame
        :meth:`LatencyStats.to_frame` rows of both configurations, with a ``config`` column
        (``"onnxruntime"`` for the whole model in one session, ``"hybrid <precision>"``).
    """
    import pandas as pd

    from trtlab.codegen import build
    from trtlab.feeds import random_inputs
    from trtlab.model import Model, load
    from trtlab.backends.onnxruntime.session import session
    from trtlab.partitioning.partitioner import partition

    from trtlab.feeds import validate_feeds

    if iterations < 1 or warmup < 0:
        raise InputError(f"benchmark needs iterations >= 1 and warmup >= 0, got iterations={iterations}, "
                         f"warmup={warmup}.")
    m = model if isinstance(model, Model) else load(model)
    # Feeds are checked against the model before anything is built.
    feeds = (validate_feeds(m.inputs, feeds, what=f"model {m.name!r}") if feeds is not None
             else random_inputs(m, batch=batch))
    hybrid = build(partition(m, min_subgraph_size=min_subgraph_size), precision=precision,
                   calibration_data=calibration_data, cache_dir=cache_dir, feeds=feeds,
                   progress=progress)
    kwargs = dict(warmup=warmup, iterations=iterations, duration=duration, progress=progress)
    label = f"hybrid {precision}" if isinstance(precision, str) else "hybrid mixed"
    frames = [benchmark(session(m), feeds, label="onnxruntime", **kwargs).to_frame().assign(config="onnxruntime"),
              benchmark(hybrid, feeds, label=label, **kwargs).to_frame().assign(config=label)]
    frame = pd.concat(frames, ignore_index=True)
    return frame[["config"] + [c for c in frame.columns if c != "config"]]
