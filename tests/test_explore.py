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


def drawn_segments(ex):
    return sorted(a.get_gid() for ax in ex.figure_.axes for a in ax.collections
                  if (a.get_gid() or "").startswith("segment:"))


def png(ex):
    return ex.graph.outputs[0]["data"]["image/png"]


def test_forcing_op_types_repartitions_and_redraws(resnet):
    ex = explore(resnet, support="rules")
    assert isinstance(ex, Explorer) and ex.error_ is None
    assert [s.backend for s in ex.partition_.segments] == ["tensorrt"]
    before = png(ex)
    assert "1 segment<" in ex.status.value

    ex.ops.value = ("MaxPool",)
    segs = ex.partition_.segments
    assert [s.backend for s in segs] == ["tensorrt", "fallback", "tensorrt"]
    assert drawn_segments(ex) == sorted(f"segment:{s.name}" for s in segs)
    assert png(ex) != before
    assert len(ex.summary_) == 3 and "fallback_1" in ex.summary.value
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
    assert ex.partition_ is None and ex.figure_ is None and ex.graph.outputs == ()
    assert ex.error_ and "color:#b00020" in ex.status.value
    ex.source.value = "rules"
    assert ex.error_ is None and ex.partition_ is not None and len(ex.graph.outputs) == 1


def test_widget_display_and_errors(resnet):
    ex = explore(resnet, support="rules", max_labels=5)
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert ex.figure_._trtlab["labels"] is False
    assert "segments" in repr(ex)
    with pytest.raises(TrtlabError, match="not a support source"):
        explore(resnet, support="magic")
