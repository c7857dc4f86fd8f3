"""trtlab.viz.graph.draw and the layered layout.

Structure checks read the artists in the figure (their gid names what they show) and compare
them with the partition, not only with the ``fig._trtlab`` metadata.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_hex

from tests.conftest import DATA
from trtlab.errors import FusionError, InvalidModelError, PartitionError
from trtlab.model import load
from trtlab.partitioning.partitioner import partition
from trtlab.backends.tensorrt.support import check_support
from trtlab.viz import _style
from trtlab.viz._layout import layered_layout
from trtlab.viz.graph import draw, fusion_groups, reasons_table



def artists(fig, prefix):
    """Artists of every axes in ``fig`` whose gid starts with ``prefix``."""
    out = []
    for ax in fig.axes:
        for a in list(ax.collections) + list(ax.patches) + list(ax.tables):
            gid = a.get_gid()
            if gid and gid.startswith(prefix):
                out.append(a)
    return out


def reject(model, *ops, reason="not supported in this test"):
    """Support data rejecting every node of the given op types."""
    g = model.graph
    return {n: (g.nodes[n]["op_type"] not in ops,
                f"{g.nodes[n]['op_type']} {reason}" if g.nodes[n]["op_type"] in ops else "")
            for n in model.node_names}


@pytest.fixture(scope="module")
def resnet():
    return load(DATA / "resnet_mini.onnx")


@pytest.fixture(scope="module")
def resnet_part(resnet):
    #  Conv -> BN -> Relu -> [MaxPool rejected] -> residual blocks -> GAP -> [Flatten rejected] -> Gemm
    return partition(resnet, support=reject(resnet, "MaxPool", "Flatten"))


@pytest.fixture(scope="module")
def large():
    return load(DATA / "transformer_large.onnx")


@pytest.fixture(scope="module")
def large_rules(large):
    return check_support(large, source="rules")


# -- full view ---------------------------------------------------------------------------------

def node_faces(fig):
    """Hex face colour of every node box of a full view, by node name."""
    (coll,) = artists(fig, "segments")
    faces = [to_hex(c) for c in coll.get_facecolor()]
    return dict(zip(fig._trtlab["node_order"], faces))


def test_one_collection_coloured_by_segment(resnet, resnet_part):
    fig = draw(resnet, resnet_part)
    segs = resnet_part.segments
    assert len(segs) >= 3
    (coll,) = artists(fig, "segments")
    assert len(coll.get_paths()) == len(resnet.node_names)
    faces = node_faces(fig)
    trt_colors = []
    for s in segs:
        colours = {faces[n] for n in s.nodes}
        assert len(colours) == 1
        face = colours.pop()
        if s.backend == "fallback":
            assert face == _style.FALLBACK_COLOR
        else:
            assert face != _style.FALLBACK_COLOR
            trt_colors.append(face)
    assert len(set(trt_colors)) == len(trt_colors)
    assert fig._trtlab["view"] == "full"
    assert fig._trtlab["segments"] == [s.name for s in segs]
    assert set(fig._trtlab["segment_artists"]) == {s.name for s in segs}


def test_segment_colours_distinct_beyond_the_palette():
    class Seg:
        def __init__(self, backend):
            self.backend = backend

    segs = [Seg("tensorrt" if i % 2 == 0 else "fallback") for i in range(1000)]
    colours = _style.segment_colors(segs)
    trt = colours[::2]
    assert len(set(trt)) == len(trt) == 500
    assert set(colours[1::2]) == {_style.FALLBACK_COLOR}
    assert _style.FALLBACK_COLOR not in trt


def test_rejected_nodes_hatched_and_listed_with_reasons(resnet, resnet_part):
    fig = draw(resnet, resnet_part)
    rejected = set(resnet_part.decisions.query("kind == 'rejected'")["subject"])
    assert rejected == {n for n in resnet.node_names
                        if resnet.graph.nodes[n]["op_type"] in ("MaxPool", "Flatten")}
    marked = artists(fig, "marked:rejected")
    assert len(marked) == 1 and len(marked[0].get_paths()) == len(rejected)
    assert marked[0].get_hatch()
    assert {k for k, v in fig._trtlab["marked"].items() if v == "rejected"} == rejected

    table = artists(fig, "reasons")
    assert len(table) == 1
    cells = [c.get_text().get_text() for c in table[0].get_celld().values()]
    for node in rejected:
        assert node in cells
        op = resnet.graph.nodes[node]["op_type"]
        assert any(c.startswith(f"{op} not supported") for c in cells)
    legend_labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "rejected (unsupported)" in legend_labels
    assert any(label.startswith("fallback") for label in legend_labels)


def test_positions_follow_edges_top_to_bottom(resnet, resnet_part):
    fig = draw(resnet, resnet_part)
    pos = fig._trtlab["node_positions"]
    lay = fig._trtlab["layout"]
    assert lay.columns == 1
    for u, v in resnet.graph.edges():
        assert pos[u][1] > pos[v][1]
    inputs = artists(fig, "inputs")
    outputs = artists(fig, "outputs")
    assert len(inputs[0].get_offsets()) == len(resnet.inputs)
    assert len(outputs[0].get_offsets()) == len(resnet.outputs)


def test_boundary_edges_drawn_between_segments(resnet, resnet_part):
    fig = draw(resnet, resnet_part)
    crossings = sum(1 for u, v in resnet.graph.edges()
                    if resnet_part.assignment[u] != resnet_part.assignment[v])
    boundary = artists(fig, "boundary_edges")
    assert len(boundary[0].get_segments()) == crossings


def test_without_partition_draws_plain_nodes(resnet):
    fig = draw(resnet, show_reasons=False)
    assert artists(fig, "segments") == []
    nodes = artists(fig, "nodes")
    assert len(nodes) == 1 and len(nodes[0].get_paths()) == len(resnet.node_names)
    assert fig._trtlab["segments"] == [] and fig._trtlab["reasons"] is None


def test_partition_alone_and_given_axes(resnet, resnet_part):
    fig = draw(resnet_part)
    assert len(artists(fig, "segments")[0].get_paths()) == len(resnet.node_names)

    from matplotlib.figure import Figure

    host = Figure(figsize=(8, 10))
    ax = host.add_subplot()
    out = draw(resnet, resnet_part, ax=ax)
    assert out is host
    assert [c.get_gid() for c in ax.collections].count("segments") == 1


def test_fusion_groups_outlined(resnet, resnet_part):
    names = resnet.node_names
    g = resnet.graph
    conv_bn = [{u, v} for u, v in g.edges()
               if g.nodes[u]["op_type"] == "Conv" and g.nodes[v]["op_type"] == "BatchNormalization"]
    assert len(conv_bn) >= 3

    class Report:
        def groups(self):
            return conv_bn + [{names[0], "not_a_node"}]

    fig = draw(resnet, resnet_part, fusion=Report())
    outlines = artists(fig, "fusion")
    assert fig._trtlab["fusion_groups"] == len(conv_bn)
    assert len(outlines[0].get_paths()) == len(conv_bn)
    assert fusion_groups(conv_bn, resnet) == conv_bn


def test_labels_only_for_small_graphs(resnet, resnet_part):
    labelled = draw(resnet, resnet_part)
    bare = draw(resnet, resnet_part, max_labels=10)
    ops = [resnet.node(n).op_type for n in labelled._trtlab["node_order"]]
    assert labels_of(labelled, "node_labels") == [_style.short_op(op) for op in ops]
    assert labels_of(labelled, "node_names") == [_style.ellipsize(n, 16) for n in resnet.node_names]
    assert labels_of(bare, "node_labels") == []


def test_recolor_matches_a_fresh_drawing(resnet, resnet_part):
    from trtlab.viz.graph import recolor

    plain = partition(resnet, support=reject(resnet))
    fig = draw(resnet, plain)
    assert artists(fig, "boundary_edges") == [] and artists(fig, "marked:") == []
    recolor(fig, resnet_part)
    fresh = draw(resnet, resnet_part)
    assert node_faces(fig) == node_faces(fresh)
    assert len(artists(fig, "boundary_edges")[0].get_segments()) == \
        len(artists(fresh, "boundary_edges")[0].get_segments())
    assert len(artists(fig, "marked:rejected")[0].get_paths()) == 2
    assert labels_of(fig, "cut_bytes") == labels_of(fresh, "cut_bytes") != []
    assert fig._trtlab["marked"] == fresh._trtlab["marked"]
    recolor(fig, plain)
    assert artists(fig, "boundary_edges") == [] and artists(fig, "marked:") == []
    other = load(DATA / "digits_cnn.onnx")
    with pytest.raises(PartitionError, match="not the drawn"):
        recolor(fig, partition(other))


# -- condensed view ----------------------------------------------------------------------------

def labels_of(fig, gid):
    return [label for coll in artists(fig, gid) if coll.get_gid() == gid for label in coll.labels_]


def test_condensed_view_for_2000_node_transformer(large, large_rules, tmp_path):
    part = partition(large, support=large_rules, exclude_ops=("Softmax",))
    n = len(large.node_names)
    assert n >= 2000
    fig = draw(large, part)  # timed by benchmarks/draw_scale.py
    fig.savefig(tmp_path / "large.png", dpi=50)
    assert fig._trtlab["view"] == "condensed"
    (boxes,) = artists(fig, "segments")
    assert len(boxes.get_paths()) == len(part.segments) > 10
    faces = [to_hex(c) for c in boxes.get_facecolor()]
    fb = [f for f in faces if f == _style.FALLBACK_COLOR]
    assert len(fb) == sum(1 for s in part.segments if s.backend == "fallback")
    trt = [f for f, s in zip(faces, part.segments) if s.backend != "fallback"]
    assert len(set(trt)) == len(trt) > 18          # distinct beyond the 18-colour palette
    names = labels_of(fig, "segment_labels")
    assert names == [f"{s.name} · {s.backend}" for s in part.segments]
    # Legible at 100% zoom: labels are never scaled below 7.5 pt, the figure grows instead.
    assert fig._trtlab["font_pt"] >= 7.5
    assert "model_explorer.show" in fig._trtlab["hint"]
    cut = part.boundaries()
    drawn_bytes = fig._trtlab["boundary_bytes"]
    expected = {}
    for row in cut.itertuples():
        for c in row.consumers:
            expected[(row.producer, c)] = expected.get((row.producer, c), 0) + row.bytes
    assert drawn_bytes == expected
    assert len(labels_of(fig, "cut_bytes")) >= len(expected)
    table = fig._trtlab["reasons"]
    assert {"kind", "reason", "count"} <= set(table.columns)
    assert table["count"].sum() == len(part.decisions)
    assert (tmp_path / "large.png").stat().st_size > 10_000


def test_segment_view_of_a_10k_node_graph_is_linear_and_labelled(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from draw_scale import stacked_blocks  # the generator benchmarks/draw_scale.py times

    model = load(stacked_blocks(1000), name="blocks_1000")
    part = partition(model, support=check_support(model, source="rules"),
                     exclude_ops=("Softmax",))
    assert len(model.node_names) == 10_000 and len(part.segments) > 2000
    fig = draw(model, part)
    assert fig._trtlab["view"] == "condensed" and not fig._trtlab["detailed"]
    ax = fig.axes[0]
    # One collection for all boxes and one for all labels, whatever the number of segments.
    assert len(ax.collections) <= 8
    assert len(ax.texts) == len(model.inputs) + len(model.outputs)  # their name labels
    assert labels_of(fig, "segment_labels") == [f"{s.name} ({len(s.nodes)})"
                                                for s in part.segments]
    assert fig._trtlab["font_pt"] >= 7.5
    fig.savefig(tmp_path / "10k.png", dpi=40)
    assert (tmp_path / "10k.png").stat().st_size > 10_000


def test_title_fits_in_a_narrow_condensed_figure(large):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = draw(large, partition(large), condensed=True, show_reasons=False)
    assert fig._trtlab["title"].startswith("transformer_large: 2209 nodes, 1 segment (")
    renderer = FigureCanvasAgg(fig).get_renderer()
    assert fig.texts[0].get_window_extent(renderer).x1 <= fig.bbox.x1


def test_condensed_forced_on_small_graph_and_refused_without_partition(resnet, resnet_part):
    fig = draw(resnet, resnet_part, condensed=True)
    assert fig._trtlab["view"] == "condensed"
    assert len(artists(fig, "segments")[0].get_paths()) == len(resnet_part.segments)
    assert len(artists(fig, "marked:rejected")[0].get_paths()) == sum(
        1 for s in resnet_part.segments if s.backend == "fallback")
    with pytest.raises(PartitionError, match="needs a partition"):
        draw(resnet, condensed=True)


# -- bad input ---------------------------------------------------------------------------------

def test_partition_of_another_model_refused(resnet, large, large_rules):
    other = partition(large, support=large_rules)
    with pytest.raises(PartitionError, match="does not cover model"):
        draw(resnet, other)
    with pytest.raises(PartitionError, match="expected a trtlab.Partition"):
        draw(resnet, {"a": 1})


def test_bad_fusion_and_view_arguments(resnet, resnet_part):
    with pytest.raises(FusionError, match="FusionReport"):
        draw(resnet, resnet_part, fusion=42)
    with pytest.raises(FusionError, match="collection of node names"):
        fusion_groups(["conv"], resnet)
    with pytest.raises(ValueError, match="condensed"):
        draw(resnet, resnet_part, condensed="yes")


def test_reasons_table_groups_many_decisions(large, large_rules):
    part = partition(large, support=large_rules, exclude_ops=("Softmax", "Div"))
    full = reasons_table(part, max_rows=10**6)
    assert list(full.columns) == ["subject", "op_type", "kind", "reason"]
    assert len(full) == len(part.decisions)
    grouped = reasons_table(part, max_rows=5)
    assert grouped["count"].sum() == len(part.decisions)
    assert set(grouped["op_types"]) >= {"Softmax", "Div"}


# -- layout ------------------------------------------------------------------------------------

def random_dag(n, extra, seed):
    rng = np.random.default_rng(seed)
    src = list(range(n - 1))
    dst = list(range(1, n))
    a = rng.integers(0, n - 1, extra)
    b = np.minimum(a + rng.integers(1, 12, extra), n - 1)
    return src + a.tolist(), dst + b.tolist()


def test_layout_layers_respect_edges_and_nodes_do_not_overlap():
    src, dst = random_dag(400, 300, seed=0)
    lay = layered_layout(400, src, dst, fold=False)
    s, d = np.asarray(src), np.asarray(dst)
    assert np.all(lay.layer[d] > lay.layer[s])
    for k in range(lay.n_layers):
        xs = np.sort(lay.x[lay.layer == k])
        assert np.all(np.diff(xs) >= 1.0 - 1e-9)
    long_edges = np.flatnonzero(lay.layer[d] - lay.layer[s] > 1)
    assert all(len(lay.paths[e]) == lay.layer[d[e]] - lay.layer[s[e]] - 1 for e in long_edges)


def test_layout_keeps_a_chain_straight_and_folds_it():
    n = 300
    straight = layered_layout(n, range(n - 1), range(1, n), fold=False)
    assert np.ptp(straight.x) == 0 and straight.n_layers == n
    folded = layered_layout(n, range(n - 1), range(1, n), fold=True)
    assert folded.columns > 1
    assert folded.height < n / 2
    assert len(np.unique(folded.x)) == folded.columns


def test_layout_rejects_cycles_and_scales():
    with pytest.raises(InvalidModelError, match="cycle"):
        layered_layout(3, [0, 1, 2], [1, 2, 0])
    src, dst = random_dag(5000, 4000, seed=1)
    lay = layered_layout(5000, src, dst)
    assert lay.x.shape == (5000,) and np.isfinite(lay.x).all()


def test_import_does_not_load_matplotlib_or_ipywidgets():
    code = ("import sys, trtlab, trtlab.viz.graph, trtlab.viz.explorer, trtlab.viz._layout; "
            "bad = [m for m in ('matplotlib', 'ipywidgets') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_label_paths_assembled_in_bulk_match_one_by_one():
    from trtlab.viz._glyphs import _label_path, _label_paths

    texts = [f"trt_{i} ({i % 7})" for i in range(50)] + ["", "a b", "fallback_1 · x", ""]
    bulk = _label_paths(texts, 7.5, "bold", 2.0)
    for text, (path, width) in zip(texts, bulk):
        one, one_width = _label_path(text, 7.5, "bold", 2.0)
        assert width == pytest.approx(one_width)
        np.testing.assert_allclose(path.vertices, one.vertices, atol=1e-9)
    assert bulk[0][1] > 0 and bulk[50][1] == 0.0


def test_cut_labels_give_symbolic_sizes_as_expressions(large, large_rules):
    part = partition(large, support=large_rules, exclude_ops=("Softmax",))
    fig = draw(large, part)
    labels = labels_of(fig, "cut_bytes")
    # transformer_large's activations are float32[batch, 8, 8]: 256 bytes per unit of batch.
    assert "256·batch B" in labels and not any(label == "256 B" for label in labels)
    static = draw(load(DATA / "resnet_mini.onnx"), condensed=False)
    assert labels_of(static, "cut_bytes") == []
