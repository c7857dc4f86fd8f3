"""trtlab.viz.fusion_plots: latency bars by precision, fusion comparison, before/after counts."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from trtlab.errors import FusionError  # noqa: E402
from trtlab.backends.tensorrt.layers import fusion  # noqa: E402
from trtlab.viz.fusion_plots import (PRECISION_COLORS, plot_before_after,  # noqa: E402
                               plot_fusion_comparison, plot_layer_latency)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MOBILENET = FIXTURES / "mobilenet_v2_residuals.qat.engine.graph.json"
PROFILE = FIXTURES / "mobilenet_v2_residuals.qat.engine.profile.json"
TRT11 = FIXTURES / "trt11_tiny_block.graph.json"
TRT11_PROFILE = FIXTURES / "trt11_tiny_block.profile.json"


@pytest.fixture(scope="module")
def timed():
    return fusion(MOBILENET, profile=PROFILE)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _bars(ax):
    return [p for p in ax.patches if isinstance(p, matplotlib.patches.Rectangle)]


def test_layer_latency_bars_coloured_by_precision(timed):
    fig = plot_layer_latency(timed, top=None, order="engine")
    ax = fig.axes[0]
    bars = _bars(ax)
    running = timed.layers[timed.layers["runs"]]
    assert len(bars) == 57  # 58 listed, the NoOp squeeze does not run
    want = [mcolors.to_rgba(PRECISION_COLORS[p]) for p in running["precision"]]
    assert [b.get_facecolor() for b in bars] == want
    assert bars[1].get_width() == pytest.approx(0.00912019)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["FP32", "INT8", "FP16"]
    assert "57 running layers" in ax.get_title()
    assert len(ax.get_yticklabels()) == 57


def test_layer_latency_top_is_sorted_slowest_first(timed):
    fig = plot_layer_latency(timed, top=5)
    ax = fig.axes[0]
    assert "5 slowest of 57 running layers" in ax.get_title()
    widths = [b.get_width() for b in _bars(ax)]
    assert widths == sorted(widths, reverse=True)
    slowest = timed.layers.nlargest(5, "average_ms")
    assert widths == pytest.approx(list(slowest["average_ms"]))
    with pytest.raises(FusionError, match="order must be"):
        plot_layer_latency(timed, order="name")


def test_layer_latency_many_bars_are_numbered(timed):
    fig = plot_layer_latency(timed, top=None, label_limit=20)
    assert "names omitted" in fig.axes[0].get_ylabel()


def test_layer_latency_refuses_without_profile_or_bad_metric(timed):
    with pytest.raises(FusionError, match="no per-layer times"):
        plot_layer_latency(fusion(MOBILENET))
    with pytest.raises(FusionError, match="metric must be"):
        plot_layer_latency(timed, metric="p99")
    with pytest.raises(FusionError, match="needs a FusionReport"):
        plot_layer_latency(timed.layers)


def test_fusion_comparison_with_times():
    a = fusion(TRT11, profile=TRT11_PROFILE, label="fp16")
    b = fusion(MOBILENET, profile=PROFILE, label="int8")
    fig = plot_fusion_comparison(a, b, top=None)
    ax = fig.axes[0]
    table = a.compare(b)
    assert len(_bars(ax)) == 2 * len(table)
    assert ax.get_xlabel() == "share of layer time (ms)"
    assert "fp16 (plain) vs int8 (hatched)" in ax.get_title()
    widths = [p.get_width() for p in _bars(ax)][: len(table)]
    conv1 = list(table.index).index("conv1")
    assert widths[conv1] == pytest.approx(0.0123 / 3)


def test_fusion_comparison_without_times_shows_group_size():
    a = fusion(TRT11, label="a")
    b = fusion(TRT11, shape_profile=1, label="b")
    fig = plot_fusion_comparison(a, b)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "nodes in the node's layer"
    widths = [p.get_width() for p in _bars(ax)]
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert widths[names.index("conv1")] == 3  # conv1 + sig1 + mul1
    assert not any(n.startswith("* ") for n in names)  # both profiles fuse alike


def test_before_after_plot(timed):
    fig = plot_before_after(timed)
    ax = fig.axes[0]
    # six op types; own-layer bars for the 4 that anchor layers (Conv, QuantizeLinear, Gemm,
    # GlobalAveragePool) and absorbed bars for the 3 fused into convolutions (Q, Clip, Add)
    table = timed.before_after().set_index("op_type").drop("TOTAL")
    want = int((table["own_layer"] > 0).sum() + (table["absorbed"] > 0).sum())
    assert sum(b.get_width() > 0 for b in _bars(ax)) == want
    assert table.loc["Clip", "absorbed"] == 35
    assert "154 ONNX nodes" in ax.get_title() and "57 running post-fusion" in ax.get_title()
