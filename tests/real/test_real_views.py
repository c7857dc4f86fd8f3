"""Views of trained models shipped inside PyPI wheels: the drawing, the Model Explorer overlay,
the explorer and cut bytes, on graphs nobody on the project wrote."""

from __future__ import annotations

import json
from functools import lru_cache

import fetch_real_models
import pytest
from matplotlib.colors import to_hex

import trtlab
from trtlab.viz import model_explorer as me
from trtlab.viz.graph import draw

pytestmark = pytest.mark.real

MODELS = {m.id: m for m in fetch_real_models.load_manifest()}


@lru_cache(maxsize=None)
def _cut(model_id: str, path: str):
    """Rules support with every 7th node forced to fallback: many segments, cuts everywhere."""
    model = trtlab.load(path, **MODELS[model_id].load_options)
    return trtlab.partition(model, support=trtlab.check_support(model, source="rules"),
                            exclude_nodes=tuple(model.node_names[6::7]))


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_drawing_labels_every_segment_legibly(model_id, real_model_paths, tmp_path):
    part = _cut(model_id, str(real_model_paths[model_id]))
    fig = draw(part.model, part)
    info = fig._trtlab
    if info["view"] == "condensed":
        labels = [label for ax in fig.axes for c in ax.collections
                  if c.get_gid() == "segment_labels" for label in c.labels_]
        assert len(labels) == len(part.segments)
        assert all(label.startswith(s.name) for label, s in zip(labels, part.segments))
        assert info["font_pt"] >= 7.5
    else:
        assert info["node_order"] == part.model.node_names
    trt = [to_hex(info["colors"][s.name]) for s in part.segments if s.backend != "fallback"]
    assert len(set(trt)) == len(trt)
    fig.savefig(tmp_path / "view.png", dpi=30)


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_every_cut_has_a_size_expression(model_id, real_model_paths):
    cut = _cut(model_id, str(real_model_paths[model_id])).boundaries()
    assert len(cut) > 0
    typed = cut["dtype"] != "unknown"
    ranked = cut["shape"].notna()
    assert cut.loc[typed & ranked, "bytes_expr"].notna().all()


@pytest.mark.parametrize("model_id", sorted(MODELS))
def test_model_explorer_overlay_matches_the_adapter(model_id, real_model_paths, tmp_path):
    try:
        from model_explorer_onnx.main import ONNXAdapter
    except ImportError as exc:
        pytest.fail(f"the trtlab[explorer] extra is not installed ({exc}); pip install 'trtlab[explorer]'")
    part = _cut(model_id, str(real_model_paths[model_id]))
    graphs = ONNXAdapter().convert(str(me.write_model(part, tmp_path)), {})["graphs"]
    ids = {g.id: {n.id for n in g.nodes} for g in graphs}
    data = json.loads(me.write_node_data(part, tmp_path / "segments.json").read_text())
    ((gid, graph_data),) = data.items()
    assert gid in ids
    assert set(graph_data["results"]) <= ids[gid]
    assert len(graph_data["results"]) == len(part.model.node_names)
