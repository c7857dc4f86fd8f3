"""Latency statistics and latency plots."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

import factories as F
import trtlab
from trtlab.study.latency import CV_WARN, LatencyStats, LatencyWarning, benchmark, summarize
from trtlab.codegen import build
from trtlab.errors import InputError
from trtlab.model import load


def test_summarize_matches_numpy():
    samples = np.array([1.0, 2.0, 3.0, 4.0, 10.0]) / 1e3
    s = summarize(samples)
    assert s["min"] == pytest.approx(1.0) and s["max"] == pytest.approx(10.0)
    assert s["median"] == pytest.approx(3.0) and s["mean"] == pytest.approx(4.0)
    assert s["p90"] == pytest.approx(np.percentile([1, 2, 3, 4, 10], 90))
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 4, 10], ddof=1))
    assert s["cv"] == pytest.approx(s["std"] / 4.0)


def test_callable_counts_iterations_and_warmup():
    calls = []

    def fn(feeds):
        calls.append(1)
        return {"y": feeds["x"] + 1}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LatencyWarning)
        stats = benchmark(fn, {"x": np.ones((3, 2))}, warmup=4, iterations=25, progress=False, label="plus one")
    assert len(calls) == 29
    assert stats.n == 25 and stats.samples.shape == (25,)
    assert stats.batch == 3
    assert stats.min <= stats.median <= stats.p90 <= stats.p95 <= stats.p99 <= stats.max
    assert stats.throughput > 0
    frame = stats.to_frame()
    assert frame["part"].tolist() == ["total"]
    assert frame.attrs["label"] == "plus one"


def test_duration_extends_the_run():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LatencyWarning)
        stats = benchmark(lambda f: time.sleep(0.002), {"x": np.ones(1)}, warmup=0, iterations=2,
                          duration=0.05, progress=False)
    assert stats.n > 2
    assert stats.median >= 2.0


def test_unstable_numbers_warn():
    delays = iter([0.0, 0.02] * 20)
    with pytest.warns(LatencyWarning, match="coefficient of variation"):
        stats = benchmark(lambda f: time.sleep(next(delays)), {"x": np.ones(1)}, warmup=0, iterations=10,
                          progress=False)
    assert stats.cv > CV_WARN and not stats.stable


def test_hybrid_per_segment_and_boundaries():
    m = load(F.mlp())
    hybrid = build(trtlab.partition(m, exclude_nodes=["relu1"]), cache_dir=False, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LatencyWarning)
        stats = benchmark(hybrid, {"x": np.ones((2, 16), np.float32)}, warmup=2, iterations=30, progress=False)
    frame = stats.to_frame()
    assert frame["part"].tolist() == ["total", "trt_0", "fallback_1", "trt_2", "boundaries"]
    assert frame.set_index("part").loc["fallback_1", "executor"] == "onnxruntime"
    assert frame.set_index("part").loc["trt_0", "executor"] == hybrid.executors.loc[0, "executor"]
    parts = frame[frame["part"] != "total"]
    assert (parts["n"] == 30).all()
    assert parts["median"].sum() <= frame.loc[0, "max"] * 1.01


def test_ort_session_runnable():
    from trtlab.backends.onnxruntime.session import session

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LatencyWarning)
        stats = benchmark(session(F.mlp()), {"x": np.ones((2, 16), np.float32)}, warmup=1, iterations=5,
                          progress=False)
    assert stats.label == "onnxruntime session" and stats.n == 5


def test_benchmark_model_table(tmp_path):
    from trtlab.study.latency import benchmark_model
    from trtlab.feeds import random_inputs

    m = load(F.conv_relu())
    feeds = random_inputs(m, batch=3)
    assert feeds["x"].shape == (3, 3, 8, 8) and feeds["x"].dtype == np.float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LatencyWarning)
        frame = benchmark_model(m, batch=2, cache_dir=tmp_path, warmup=1, iterations=5, progress=False)
    assert frame["config"].tolist() == ["onnxruntime", "hybrid fp32", "hybrid fp32", "hybrid fp32"]
    assert frame["part"].tolist() == ["total", "total", "trt_0", "boundaries"]
    assert (frame["median"] > 0).all()


def test_bad_arguments():
    with pytest.raises(InputError, match="iterations >= 1"):
        benchmark(lambda f: None, {}, iterations=0)
    with pytest.raises(InputError, match="callable"):
        benchmark(42, {})


# -- plots -------------------------------------------------------------------------------------

def fake(label, median, segments=None, executors=None, batch=None):
    rng = np.random.default_rng(0)
    samples = (median + rng.random(50) * 0.1) / 1e3
    s = summarize(samples)
    return LatencyStats(label=label, n=50, **s, throughput=1e3 / s["mean"], batch=batch, samples=samples,
                        segments=segments or {}, executors=executors or {})


def test_plot_bars_and_whiskers():
    from trtlab.viz.latency import plot_latency

    fig = plot_latency({"fp32": fake("fp32", 2.0), "fp16": fake("fp16", 1.0)})
    ax = fig.axes[0]
    (medians,) = [c for c in ax.collections if c.get_gid() == "medians"]
    assert medians.get_offsets()[:, 1].tolist() == pytest.approx([fake("", 2.0).median,
                                                                 fake("", 1.0).median])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["fp32", "fp16"]
    assert ax.get_ylabel() == "latency (ms)" and ax.get_yscale() == "linear"
    # A sub-millisecond median next to a 25 ms one stays visible: the axis turns logarithmic.
    wide = plot_latency({"fast": fake("fast", 0.4), "slow": fake("slow", 25.0)})
    assert wide.axes[0].get_yscale() == "log"


def test_plot_segments_labels_executor():
    from trtlab.viz.latency import plot_latency

    segs = {"trt_0": np.full(5, 1e-3), "fallback_1": np.full(5, 2e-3), "boundaries": np.full(5, 1e-4)}
    execs = {"trt_0": "onnxruntime", "fallback_1": "onnxruntime", "boundaries": "host"}
    fig = plot_latency(fake("hybrid", 3.1, segs, execs), kind="segments")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["trt_0 [onnxruntime]", "fallback_1 [onnxruntime]", "boundaries [host]"]
    tops = [p.get_y() + p.get_height() for p in fig.axes[0].patches]
    assert max(tops) == pytest.approx(3.1)


def test_plot_segments_legend_beside_the_bars():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from trtlab.viz.latency import plot_latency

    segs = {f"trt_{i}": np.full(5, 1e-3) for i in range(10)}
    fig = plot_latency({"a": fake("a", 10.0, segs, {}), "b": fake("b", 10.0, segs, {})}, kind="segments")
    renderer = FigureCanvasAgg(fig).get_renderer()
    ax = fig.axes[0]
    legend, plot = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert legend.x0 >= plot.x1 and legend.x1 <= fig.bbox.x1


def test_plot_batch_lines():
    from trtlab.viz.latency import plot_latency

    by_batch = {1: fake("b1", 1.0, batch=1), 4: fake("b4", 3.0, batch=4), 2: fake("b2", 2.0, batch=2)}
    fig = plot_latency({"single": by_batch, "per_shape": by_batch}, kind="batch")
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2
    assert list(lines[0].get_xdata()) == [1, 2, 4]
    assert fig.axes[0].get_xlabel() == "batch size"


def test_plot_bad_input():
    from trtlab.viz.latency import plot_latency

    with pytest.raises(InputError, match="kind"):
        plot_latency(fake("a", 1.0), kind="pie")
    with pytest.raises(InputError, match="LatencyStats"):
        plot_latency([1, 2])
    with pytest.raises(InputError, match="per-segment"):
        plot_latency(fake("a", 1.0), kind="segments")
