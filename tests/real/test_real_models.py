"""Partition invariant on trained models shipped inside PyPI wheels.

For every model in ``models.toml``: the shipped file is the one pinned, it runs in ONNX
Runtime, TensorRT's parser reads it, and for each partition setting below, running the
extracted segments one after another with ONNX Runtime reproduces the outputs of the
original file (float32 within 1e-5 relative to the output's scale; other dtypes exactly).
"""

from __future__ import annotations

from functools import lru_cache

import fetch_real_models
import numpy as np
import onnx
import onnxruntime as ort
import pytest

import trtlab
from realcheck import assert_close
from trtlab.backends.onnxruntime.session import run_onnx

pytestmark = pytest.mark.real

MODELS = {m.id: m for m in fetch_real_models.load_manifest()}
RTOL = 1e-5

# Partition settings: support source, then knobs. "cut" also sends every 5th node to
# fallback, so segments start and end at arbitrary tensors throughout the model.
SETTINGS = {
    "parser": dict(source="parser"),
    "rules": dict(source="rules"),
    "cut": dict(source="parser", cut_every=5, min_subgraph_size=2, remove_no_mac_subgraphs=True),
}


@lru_cache(maxsize=None)
def _loaded(model_id: str, path: str) -> trtlab.Model:
    return trtlab.load(path, **MODELS[model_id].load_options)


@lru_cache(maxsize=None)
def _reference(model_id: str, path: str) -> dict[str, np.ndarray]:
    """Outputs of the shipped file, run by ONNX Runtime directly."""
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, MODELS[model_id].feeds())))


@lru_cache(maxsize=None)
def _support(model_id: str, path: str, source: str):
    return trtlab.check_support(_loaded(model_id, path), source=source)


def _partition(model_id: str, path: str, setting: str):
    knobs = dict(SETTINGS[setting])
    source = knobs.pop("source")
    every = knobs.pop("cut_every", None)
    model = _loaded(model_id, path)
    if every:
        knobs["exclude_nodes"] = tuple(model.node_names[every - 1 :: every])
    return trtlab.partition(model, support=_support(model_id, path, source), **knobs)


def _run_segments(part, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    env = dict(feeds)
    for seg in part.segments:
        proto = part.segment_model(seg.index)
        onnx.checker.check_model(proto)
        constants = {t.name for t in proto.graph.initializer}
        names = [i.name for i in proto.graph.input if i.name not in constants]
        missing = [n for n in names if n not in env]
        assert not missing, f"segment {seg.name} needs {missing}, not produced by earlier segments"
        env.update(run_onnx(proto, {n: env[n] for n in names}))
    return env


def _assert_close(name: str, got: np.ndarray, want: np.ndarray) -> None:
    assert_close(name, got, want, RTOL)

@pytest.mark.parametrize("model_id", MODELS)
def test_fetched_file_is_the_pinned_one(real_model_paths, model_id):
    spec = MODELS[model_id]
    path = real_model_paths[model_id]
    assert path.is_relative_to(fetch_real_models.DEST)
    assert fetch_real_models.sha256_of(path) == spec.sha256


@pytest.mark.parametrize("model_id", MODELS)
def test_inputs_match_the_model(real_model_paths, model_id):
    model = _loaded(model_id, str(real_model_paths[model_id]))
    declared = {t.name: t for t in model.inputs}
    feeds = MODELS[model_id].feeds()
    assert set(feeds) == set(declared)
    for name, value in feeds.items():
        assert value.dtype == declared[name].dtype, name
        assert value.ndim == len(declared[name].shape), name
    again = MODELS[model_id].feeds()
    assert all(np.array_equal(feeds[k], again[k]) for k in feeds)


@pytest.mark.parametrize("model_id", MODELS)
def test_original_runs_in_onnxruntime(real_model_paths, model_id):
    path = str(real_model_paths[model_id])
    outputs = _reference(model_id, path)
    declared = [o.name for o in onnx.load(path, load_external_data=False).graph.output]
    assert list(outputs) == declared
    for name, value in outputs.items():
        assert value.size > 0, name
        if np.issubdtype(value.dtype, np.floating):
            assert np.all(np.isfinite(value)), name


@pytest.mark.parametrize("model_id", MODELS)
def test_loaded_model_matches_original(real_model_paths, model_id):
    path = str(real_model_paths[model_id])
    got = run_onnx(_loaded(model_id, path), MODELS[model_id].feeds())
    want = _reference(model_id, path)
    assert list(got) == list(want)
    for name in want:
        _assert_close(name, got[name], want[name])


@pytest.mark.parametrize("model_id", MODELS)
def test_parser_reads_every_node(real_model_paths, model_id):
    path = str(real_model_paths[model_id])
    table = _support(model_id, path, "parser")
    frame = table.frame
    assert list(frame["node"]) == _loaded(model_id, path).node_names
    assert set(frame["source"]) == {"parser"}
    assert frame["reason"].map(lambda r: isinstance(r, str)).all()
    assert len(table.supported_nodes) > 0


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("model_id", MODELS)
def test_segments_reproduce_the_original(real_model_paths, model_id, setting):
    path = str(real_model_paths[model_id])
    part = _partition(model_id, path, setting)
    nodes = [n for seg in part.segments for n in seg.nodes]
    assert sorted(nodes) == sorted(_loaded(model_id, path).node_names), "every node in exactly one segment"
    if setting == "cut":
        assert len(part.segments) > 2
    got = _run_segments(part, MODELS[model_id].feeds())
    want = _reference(model_id, path)
    for name in want:
        _assert_close(name, got[name], want[name])


@pytest.mark.parametrize("model_id", MODELS)
def test_the_parser_is_given_the_model_as_it_is_now(real_model_paths, model_id):
    """The parser reads the loaded model's own serialization (files of 8 MiB or more, PP-OCRv4 rec
    here, are serialized field by field: byte for byte the same), and an edit made after load
    reaches it: the last node turned into an op of an unknown domain is the one rejection."""
    from trtlab.backends.tensorrt.parser import _file_size, _model_bytes

    model = trtlab.load(real_model_paths[model_id], **MODELS[model_id].load_options)  # edited below
    assert _model_bytes(model.proto, _file_size(model)) == model.proto.SerializeToString()
    last = model.proto.graph.node[-1]
    last.op_type, last.domain = "Mystery", "com.example"
    model.proto.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    table = trtlab.check_support(model, source="parser")
    assert table.unsupported_nodes == {last.name}
    assert "plugin not found" in table.reason(last.name).lower()
    assert table.frame.set_index("node").loc[last.name, "op_type"] == "Mystery"
