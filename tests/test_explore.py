"""trtlab.viz.explorer: the explorer is driven by setting widget values, no browser."""

from __future__ import annotations

import pytest

from tests.conftest import DATA
from trtlab.errors import TrtlabError
from trtlab.model import load
from trtlab.backends.tensorrt.support import check_support
from trtlab.viz.explorer import Explorer, explore


@pytest.fixture(scope="module")
def resnet():
    #  Conv -> BN -> Relu -> MaxPool -> 3 residual blocks -> GlobalAveragePool -> Flatten -> Gemm
    return load(DATA / "resnet_mini.onnx")


def drawn_faces(ex):
    """Hex face colour of each node box in the explorer's full-view figure, by node."""
    from matplotlib.colors import to_hex

    (coll,) = [c for ax in ex.figure_.axes for c in ax.collections if c.get_gid() == "segments"]
    return dict(zip(ex.figure_._trtlab["node_order"], (to_hex(c) for c in coll.get_facecolor())))


def png(ex):
    assert ex.image.value == ex.png_
    return ex.png_


def test_forcing_op_types_repartitions_and_redraws(resnet):
    ex = explore(resnet, support="rules")
    assert isinstance(ex, Explorer) and ex.error_ is None
    assert [s.backend for s in ex.partition_.segments] == ["tensorrt"]
    before = png(ex)
    assert "1 segment<" in ex.status.value

    ex.ops.value = ("MaxPool",)
    segs = ex.partition_.segments
    assert [s.backend for s in segs] == ["tensorrt", "fallback", "tensorrt"]
    faces = drawn_faces(ex)
    assert [len({faces[n] for n in s.nodes}) for s in segs] == [1, 1, 1]
    assert len({faces[s.nodes[0]] for s in segs}) == 3
    assert ex.figure_._trtlab["segments"] == [s.name for s in segs]
    assert png(ex) != before and png(ex).startswith(b"\x89PNG")
    assert len(ex.summary_) == 3 and "fallback_1" in ex.summary.value
    assert "excluded" in ex.reasons.value
    assert set(ex.partition_.decisions["kind"]) == {"excluded"}
    maxpool = [n for n in resnet.node_names if resnet.graph.nodes[n]["op_type"] == "MaxPool"]
    assert set(ex.boundaries_["tensor"]) >= set(resnet.node(maxpool[0]).output)
    assert "3 segments" in ex.status.value


def test_forcing_nodes_min_size_and_no_mac(resnet):
    ex = explore(resnet, support="rules")
    gemm = [n for n in resnet.node_names if resnet.graph.nodes[n]["op_type"] == "Gemm"][0]
    flatten = [n for n in resnet.node_names if resnet.graph.nodes[n]["op_type"] == "Flatten"][0]

    ex.nodes.value = (flatten,)
    last = ex.partition_.segments[-1]
    assert last.backend == "tensorrt" and last.nodes == (gemm,)
    assert ex.partition_.segments[ex.partition_.assignment[flatten]].backend == "fallback"

    ex.min_size.value = 2
    assert ex.partition_.segments[ex.partition_.assignment[gemm]].backend == "fallback"
    assert "pruned_small" in set(ex.partition_.decisions["kind"])

    with ex.hold():
        ex.nodes.value = ()
        ex.min_size.value = 1
        ex.ops.value = ("Conv",)
        ex.no_mac.value = True
    accelerated = [s for s in ex.partition_.segments if s.backend != "fallback"]
    assert accelerated and all(s.macs > 0 for s in accelerated)
    assert "pruned_no_mac" in set(ex.partition_.decisions["kind"])
    assert ex.settings() == dict(min_subgraph_size=1, remove_no_mac_subgraphs=True,
                                 exclude_ops=("Conv",), exclude_nodes=())


def test_hold_refreshes_once(resnet, monkeypatch):
    ex = explore(resnet, support="rules")
    calls = []
    original = ex.refresh
    monkeypatch.setattr(ex, "refresh", lambda: calls.append(1) or original())
    with ex.hold():
        ex.min_size.value = 3
        ex.no_mac.value = True
    assert calls == [1]
    ex.min_size.value = 1
    assert calls == [1, 1]


def test_view_and_source_controls(resnet):
    ex = explore(resnet, support="rules")
    assert ex.figure_._trtlab["view"] == "full"
    ex.view.value = True
    assert ex.figure_._trtlab["view"] == "condensed"
    if "parser" not in ex.source.options:
        pytest.skip("the TensorRT ONNX parser is not installed")
    ex.source.value = "parser"
    assert set(ex.support_table().frame["source"]) == {"parser"}
    assert ex.partition_ is not None and ex.error_ is None


def test_bad_support_is_shown_not_raised(resnet):
    other = load(DATA / "digits_cnn.onnx")
    ex = explore(resnet, support=check_support(other, source="rules"))
    assert ex.source.value == "given"
    assert ex.partition_ is None and ex.figure_ is None and ex.image.value == b""
    assert ex.error_ and "color:#b00020" in ex.status.value
    ex.source.value = "rules"
    assert ex.error_ is None and ex.partition_ is not None and png(ex)


def test_widget_display_and_errors(resnet):
    ex = explore(resnet, support="rules", max_labels=5)
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    # A viewer without the widget (a saved notebook, nbviewer) shows the picture instead.
    import base64

    assert base64.b64decode(bundle["image/png"]) == ex.png_
    state = ex.image.get_state()
    assert bytes(state["value"]) == ex.png_
    assert ex.figure_._trtlab["labels"] is False
    assert "segments" in repr(ex)
    with pytest.raises(TrtlabError, match="not a support source"):
        explore(resnet, support="magic")


def test_only_what_changed_is_redrawn(resnet):
    ex = explore(resnet, support="rules")
    full = ex.figure_
    assert ex.redraws_ == 1
    ex.min_size.value = 2              # every TensorRT segment is large: same partition
    assert ex.redraws_ == 1 and ex.timings_["draw"] == 0.0
    ex.ops.value = ("MaxPool",)
    assert ex.redraws_ == 2 and ex.figure_ is full   # recoloured in place, not redrawn
    ex.ops.value = ()
    assert ex.redraws_ == 3 and ex.png_ == ex._pictures[ex._shown][0] and ex.format_ == "png"
    first = ex.png_
    ex.ops.value = ("MaxPool",)
    ex.ops.value = ()
    assert ex.png_ == first            # the picture of a partition seen before is reused


def test_debounce_collapses_a_burst_of_changes(resnet):
    import asyncio

    ex = explore(resnet, support="rules", debounce=0.05)
    start = ex.refreshes_

    async def burst():
        for value in (2, 3, 4, 5):      # four slider key presses, as the front end sends them
            ex.min_size.set_state({"value": value})
        assert ex.refreshes_ == start   # nothing yet: waiting for the burst to end
        await asyncio.sleep(0.3)
        assert ex.refreshes_ == start + 1
        ex.min_size.value = 1           # set from code: refreshes at once, even in a loop
        assert ex.refreshes_ == start + 2 and ex.settings()["min_subgraph_size"] == 1
        ex.min_size.set_state({"value": 5})

    asyncio.run(burst())
    assert ex.refreshes_ == start + 2   # the loop ended before the last browser change fired
    ex.refresh()
    assert ex.settings()["min_subgraph_size"] == 5
    assert ex.partition_ is not None and ("min_subgraph_size", 5) in ex._last_request[1]


def test_large_model_uses_the_segment_view_and_points_to_model_explorer():
    large = load(DATA / "transformer_large.onnx")
    ex = explore(large, support=check_support(large, source="rules"))
    assert ex.figure_._trtlab["view"] == "condensed"
    ex.ops.value = ("Softmax",)
    assert len(ex.partition_.segments) > 90
    assert ex.figure_._trtlab["segments"] == [s.name for s in ex.partition_.segments]
    assert "model_explorer.show" in ex.status.value
    assert ex.summary.value == ""                  # a large model's table waits for its tab
    ex.tabs.selected_index = 1
    assert "fallback_1" in ex.summary.value and ex.boundaries.value != ex.summary.value
    ex.tabs.selected_index = 2
    assert "Softmax" not in ex.summary.value and "fallback_1" in ex.boundaries.value
    assert set(ex.timings_) == {"partition", "draw", "render"}  # timed by benchmarks/explore_time.py
