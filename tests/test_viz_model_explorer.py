"""trtlab.viz.model_explorer: the node-data overlay for Model Explorer, checked against the
viewer's own schema and its ONNX adapter's node ids when the ``explorer`` extra is installed."""

from __future__ import annotations

import json
import urllib.request

import pytest
from matplotlib.colors import to_hex

from tests.conftest import DATA
from trtlab.errors import PartitionError, TrtlabError
from trtlab.model import load
from trtlab.partitioning.partitioner import partition
from trtlab.backends.tensorrt.support import check_support
from trtlab.viz import model_explorer as me
from trtlab.viz.graph import draw


def _extra():
    """(model_explorer, adapter module); the explorer extra is part of what `make test` installs."""
    try:
        import model_explorer
        import model_explorer_onnx
    except ImportError as exc:
        pytest.fail(f"the trtlab[explorer] extra is not installed ({exc}); "
                    "pip install 'trtlab[explorer]' to check the overlay against the viewer")
    return model_explorer, model_explorer_onnx


@pytest.fixture(scope="module")
def detection():
    model = load(DATA / "detection_postproc.onnx")
    return partition(model, support=check_support(model, source="rules"))


@pytest.fixture(scope="module")
def large():
    model = load(DATA / "transformer_large.onnx")
    return partition(model, support=check_support(model, source="rules"),
                     exclude_ops=("Softmax",))


def test_segment_overlay_colours_every_node_like_draw(large):
    data = me.node_data(large, "segment")
    (gid,) = data
    assert gid == large.model.proto.graph.name
    results = data[gid]["results"]
    assert set(results) == set(large.model.node_names)
    colours = draw(large.model, large)._trtlab["colors"]
    for seg in large.segments:
        for name in seg.nodes:
            assert results[name]["value"] == seg.index
            assert results[name]["bgColor"] == to_hex(colours[seg.name])
    trt = {results[s.nodes[0]]["bgColor"] for s in large.segments if s.backend != "fallback"}
    assert len(trt) == sum(1 for s in large.segments if s.backend != "fallback") > 18


def test_backend_overlay(detection):
    data = me.node_data(detection, "backend")
    results = next(iter(data.values()))["results"]
    for seg in detection.segments:
        want = 0 if seg.backend == "fallback" else 1
        assert {results[n]["value"] for n in seg.nodes} == {want}
    assert {r["value"] for r in results.values()} == {0, 1}


def test_overlay_written_atomically_and_bad_input(detection, tmp_path):
    path = me.write_node_data(detection, tmp_path / "sub" / "seg.json")
    assert json.loads(path.read_text()) == me.node_data(detection)
    assert [p.name for p in path.parent.iterdir()] == ["seg.json"]
    with pytest.raises(TrtlabError, match="not an overlay"):
        me.node_data(detection, "colour")
    with pytest.raises(PartitionError, match="colour a partition"):
        me.node_data(detection.model)


def test_overlay_matches_the_viewer_schema_and_adapter_ids(large, detection, tmp_path):
    _extra()
    import dacite
    from model_explorer.node_data_builder import GraphNodeData
    from model_explorer_onnx.main import ONNXAdapter

    for part in (large, detection):
        model_path = me.write_model(part, tmp_path)
        graphs = ONNXAdapter().convert(str(model_path), {})["graphs"]
        ids = {g.id: {n.id for n in g.nodes} for g in graphs}
        for by in me.OVERLAYS:
            data = json.loads(me.write_node_data(part, tmp_path / f"{by}.json", by).read_text())
            for gid, graph_data in data.items():
                parsed = dacite.from_dict(GraphNodeData, graph_data,
                                          config=dacite.Config(strict=True))
                assert len(parsed.results) == len(part.model.node_names)
                assert gid in ids, f"graph {gid!r} not among the adapter's {sorted(ids)}"
                missing = set(graph_data["results"]) - ids[gid]
                assert not missing, f"{len(missing)} overlay keys are no node id: {sorted(missing)[:3]}"


def test_show_serves_the_model_and_overlays_on_loopback(detection, tmp_path):
    _extra()
    frame = me.show(detection, folder=tmp_path)
    srv = me.Server.shared()
    assert frame.src.startswith(f"http://127.0.0.1:{srv.port}/?data=")
    with urllib.request.urlopen(f"{srv.url}/check_health", timeout=5) as r:
        assert r.read() == b"model_explorer_ok"
    # The page's first requests: convert the model with the ONNX adapter, read each overlay.
    cmd = {"extensionId": me.ADAPTER_ID, "cmdId": "convert", "settings": {},
           "modelPath": str(tmp_path / "detection_postproc.onnx"), "deleteAfterConversion": False}
    req = urllib.request.Request(f"{srv.url}/apipost/v1/send_command", data=json.dumps(cmd).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        converted = json.loads(r.read())
    assert "error" not in converted, converted
    node_ids = {n["id"] for g in converted["graphs"] for n in g["nodes"]}
    for by in me.OVERLAYS:
        path = tmp_path / f"detection_postproc.{by}.json"
        with urllib.request.urlopen(f"{srv.url}/api/v1/read_text_file?path={path}", timeout=5) as r:
            content = json.loads(json.loads(r.read())["content"])
        results = next(iter(content.values()))["results"]
        assert set(results) <= node_ids and len(results) == len(detection.model.node_names)
    assert me.Server.shared() is srv
