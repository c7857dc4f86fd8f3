"""Hybrids that share the model's weights, on trained models shipped inside PyPI wheels.

For every model in ``models.toml``: the one-segment hybrid of the loaded file runs the file
itself in ONNX Runtime (as ``InferenceSession(path)`` does) and returns its outputs exactly;
building it never changes the model; with the weights left in its file (``leave_in_file``, the
model then keeps no copy of them) the model still saves, compares, cuts into segments and writes its partition with the file's
outputs; the
same model saved with external data and loaded with its weights left in the file, cut into
many segments, keeps no copy of the weights in the hybrid (initializers stay in the file,
``Constant`` values with the model) and reproduces the original outputs;
and its partition written to disk (weights once, as external data) runs in ONNX Runtime from
the folder with the same outputs. Written by reference (nothing copied), the partition folder
is read back, built and run with the original outputs, its segment files run in ONNX Runtime
given the weights' folder, and a change to the original weights is refused.
"""

from __future__ import annotations

import copy
import json
import os

import fetch_real_models
import numpy as np
import onnx
import onnxruntime as ort
import pytest

import trtlab
from realcheck import assert_close
from trtlab.backends.onnxruntime.backend import OnnxRuntimeBackend
from trtlab.backends.onnxruntime.session import session
from trtlab.errors import ExternalDataError, InputError, PartitionError
from trtlab.extract import write_partition
from trtlab.model import Model, _all_tensors
from trtlab.partition_folder import read_partition, segment_file
from trtlab.weights import STUB_MIN_BYTES, Weights, has_external, is_external

pytestmark = pytest.mark.real

MODELS = {m.id: m for m in fetch_real_models.load_manifest()}
RTOL = 1e-5


def _reference(path: str, feeds):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def _assert_close(name, got, want):
    assert_close(name, got, want, RTOL)


def _held_in_memory(proto):
    """Top-level initializers and Constant values of at least STUB_MIN_BYTES held in the proto."""
    tensors = list(proto.graph.initializer) + [a.t for n in proto.graph.node if n.op_type == "Constant"
                                               for a in n.attribute if a.name == "value" and a.HasField("t")]
    return [t.name for t in tensors if not is_external(t) and len(t.raw_data) >= STUB_MIN_BYTES]


def _run_folder(part, folder, feeds):
    env = dict(feeds)
    files = sorted(p for p in folder.iterdir() if p.suffix == ".onnx")
    for seg, seg_path in zip(part.segments, files):
        sess = ort.InferenceSession(str(seg_path), providers=["CPUExecutionProvider"])
        outs = [o.name for o in sess.get_outputs()]
        env.update(zip(outs, sess.run(outs, {t: env[t] for t in seg.inputs})))
    return env

@pytest.mark.parametrize("model_id", MODELS)
def test_one_segment_hybrid_runs_the_file_itself(real_model_paths, model_id):
    path = str(real_model_paths[model_id])
    model = trtlab.load(path, **MODELS[model_id].load_options)
    everything = {n: (False, "whole model in one segment") for n in model.node_names}
    hybrid = trtlab.build(trtlab.partition(model, support=everything), cache_dir=False, progress=False)
    assert "session read from the model file" in hybrid.executors["reason"][0]
    feeds = MODELS[model_id].feeds()
    want = _reference(path, feeds)
    assert hybrid._quick is not None  # runs after the first take the one-segment quick path
    # the first run goes through the full check, the next ones through the quick path
    for _ in range(3):
        got = hybrid.run(feeds)
        assert list(got) == list(want)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    # after feeds were accepted, another dtype is still refused by name
    first = next(iter(feeds))
    other = np.float64 if feeds[first].dtype != np.float64 else np.float32
    with pytest.raises(InputError, match=f"Input '{first}'"):
        hybrid.run({**feeds, first: feeds[first].astype(other)})
    np.testing.assert_array_equal(hybrid.run(feeds)[next(iter(want))], want[next(iter(want))])


@pytest.mark.parametrize("model_id", MODELS)
def test_a_loaded_model_holds_no_copy_of_its_weights(real_model_paths, model_id, tmp_path):
    path = real_model_paths[model_id]
    model = trtlab.load(path, **MODELS[model_id].load_options)
    held = sum(len(t.raw_data) for t in _all_tensors(model.proto.graph) if not is_external(t))
    assert held < 1 << 20, held
    kept = trtlab.load(path, weights="memory", **MODELS[model_id].load_options)
    weights = sum(len(t.raw_data) for t in _all_tensors(kept.proto.graph) if not is_external(t))
    if weights > 1 << 20:  # a model keeping its weights as raw data: load() left them in the file
        assert any("read from the model file" in n for n in model.notes)
        assert list(model.weight_files) == [path.absolute()]
    # the one-segment hybrid of the loaded model: the file's outputs exactly
    everything = {n: (False, "whole model in one segment") for n in model.node_names}
    hybrid = trtlab.build(trtlab.partition(model, support=everything), cache_dir=False, progress=False)
    feeds = MODELS[model_id].feeds()
    got, want = hybrid.run(feeds), _reference(str(path), feeds)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    # a copy of the file rewritten after loading is refused
    copied = tmp_path / path.name
    copied.write_bytes(path.read_bytes())
    again = trtlab.load(copied, **MODELS[model_id].load_options)
    assert bool(again.weight_files) == bool(model.weight_files)  # a copy loads as the file did
    if again.weight_files:
        os.replace(copied, copied.with_name("moved.onnx"))
        copied.write_bytes(path.read_bytes())  # the same bytes, but another file
        with pytest.raises(ExternalDataError, match="replaced by another file"):
            trtlab.build(trtlab.partition(again, support=everything), cache_dir=False, progress=False)


@pytest.mark.parametrize("model_id", MODELS)
def test_weights_left_in_the_file_keep_every_step_working(real_model_paths, model_id, tmp_path):
    from trtlab.weights import leave_in_file

    path = str(real_model_paths[model_id])
    model = trtlab.load(path, weights="memory", **MODELS[model_id].load_options)  # leave_in_file: the opt-in
    held = _held_in_memory(model.proto)  # none for a model keeping its values as float_data
    everything = {n: (False, "whole model in one segment") for n in model.node_names}
    one = trtlab.build(trtlab.partition(model, support=everything), cache_dir=False, progress=False)
    assert _held_in_memory(model.proto) == held  # build never changes the model given
    assert (leave_in_file(model) > 0) == bool(held)  # opt-in: the model now reads them from its file
    assert _held_in_memory(model.proto) == []
    assert any("read from the model file" in note for note in model.notes) == bool(held)
    feeds = MODELS[model_id].feeds()
    want = _reference(path, feeds)
    got = one.run(feeds)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    # the segment model as built, standalone; the model saved: the file's outputs exactly
    standalone = ort.InferenceSession(one.segment_models[0].SerializeToString(), providers=["CPUExecutionProvider"])
    for name, value in zip([o.name for o in standalone.get_outputs()], standalone.run(None, feeds)):
        np.testing.assert_array_equal(value, want[name], err_msg=name)
    saved = _reference(str(model.save(tmp_path / "saved" / "model.onnx")), feeds)
    for name in want:
        np.testing.assert_array_equal(saved[name], want[name], err_msg=name)
    table = trtlab.compare(path, {"one": one}, [feeds])
    assert (table["max_abs"] == 0).all(), table
    # cut in segments again: built, run, written
    support = {n: (i % 5 != 4, "every fifth node cut out") for i, n in enumerate(model.node_names)}
    part = trtlab.partition(model, support=support, backend=OnnxRuntimeBackend())
    assert len(part.segments) > 2
    cut = trtlab.build(part, cache_dir=False, progress=False)
    got = cut.run(feeds)
    for name in want:
        _assert_close(name, got[name], want[name])
    write_partition(part, tmp_path / "partition", weights="copy")  # a folder plain ONNX Runtime runs
    env = _run_folder(part, tmp_path / "partition", feeds)
    for name in want:
        _assert_close(name, env[name], want[name])


@pytest.mark.parametrize("model_id", MODELS)
def test_external_data_model_cut_in_segments_shares_its_weights(real_model_paths, model_id, tmp_path):
    path = str(real_model_paths[model_id])
    # the loaded model (unique node names, topological order) saved with external data, then
    # read back with the weights left in the file: what a loader keeping them there gives
    proto = trtlab.load(path, weights="memory", **MODELS[model_id].load_options).proto
    onnx.save(copy.deepcopy(proto), str(tmp_path / "model.onnx"), save_as_external_data=True,
              location="model.onnx.data")
    # initializers with raw data go to the external file; Constant values stay in the graph
    in_file = any(len(t.raw_data) >= 1024 for t in proto.graph.initializer)
    del proto
    loaded = onnx.shape_inference.infer_shapes(onnx.load(str(tmp_path / "model.onnx"), load_external_data=False))
    model = Model(loaded, path=tmp_path / "model.onnx")
    assert has_external(model.proto) == in_file
    names = model.node_names
    support = {n: (i % 5 != 4, "every fifth node cut out") for i, n in enumerate(names)}
    part = trtlab.partition(model, support=support, backend=OnnxRuntimeBackend())
    assert len(part.segments) > 2
    hybrid = trtlab.build(part, cache_dir=False, progress=False)
    weights = Weights.of(model)
    for seg in hybrid.segments:
        assert weights.holds_data(hybrid.segment_models.light(seg.index)) == [], seg.name
    feeds = MODELS[model_id].feeds()
    want = _reference(path, feeds)
    got = hybrid.run(feeds)
    for name in want:
        _assert_close(name, got[name], want[name])

    out = tmp_path / "partition"
    written = write_partition(part, out, weights="copy")
    assert (out / "weights.data").is_file()
    files = sorted(name for name in written if name.endswith(".onnx"))
    env = dict(feeds)
    for seg, name in zip(part.segments, files):
        seg_path = out / name
        sess = ort.InferenceSession(str(seg_path), providers=["CPUExecutionProvider"])
        outs = [o.name for o in sess.get_outputs()]
        env.update(zip(outs, sess.run(outs, {t: env[t] for t in seg.inputs})))
    for name in want:
        _assert_close(name, env[name], want[name])


@pytest.mark.parametrize("model_id", MODELS)
def test_external_data_model_partitioned_by_reference(real_model_paths, model_id, tmp_path):
    path = str(real_model_paths[model_id])
    proto = copy.deepcopy(trtlab.load(path, weights="memory", **MODELS[model_id].load_options).proto)
    for t in _all_tensors(proto.graph):  # typed fields (float_data ...) as raw data, same values
        if not t.HasField("raw_data") and t.data_type != onnx.TensorProto.STRING:
            t.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t), t.name))
    saved = tmp_path / "model" / "model.onnx"
    saved.parent.mkdir()
    # initializers and Constant values (the PP-OCR models keep their weights in Constants) external
    onnx.save(proto, str(saved), save_as_external_data=True, location="model.onnx.data", convert_attribute=True)
    del proto
    data = saved.parent / "model.onnx.data"
    loaded = onnx.shape_inference.infer_shapes(onnx.load(str(saved), load_external_data=False))
    model = Model(loaded, path=saved)
    names = model.node_names
    support = {n: (i % 5 != 4, "every fifth node cut out") for i, n in enumerate(names)}
    part = trtlab.partition(model, support=support, backend=OnnxRuntimeBackend())
    out = tmp_path / "partition"
    written = write_partition(part, out)  # auto: reference when the model has external data
    external = has_external(model.proto)
    record = json.loads((out / "partition.json").read_text())["weights"]
    assert external and record["mode"] == "reference"
    assert "weights.data" not in written
    assert record["files"] == {data.name: {"bytes": data.stat().st_size, "mtime_ns": data.stat().st_mtime_ns}}
    held = sum((out / n).stat().st_size for n in written if n.endswith(".onnx"))
    assert held < data.stat().st_size  # the folder does not hold the external weights again

    feeds = MODELS[model_id].feeds()
    want = _reference(path, feeds)
    env = dict(feeds)
    for seg in part.segments:
        sf = segment_file(out, seg.index)
        assert sf.weights_dir == saved.parent.resolve()
        sess = session(sf.proto, ["CPUExecutionProvider"], base_dir=sf.weights_dir)
        outs = [o.name for o in sess.get_outputs()]
        env.update(zip(outs, sess.run(outs, {t: env[t] for t in seg.inputs})))
    for name in want:
        _assert_close(name, env[name], want[name])

    back = read_partition(out, model)
    got = trtlab.build(back, cache_dir=False, progress=False).run(feeds)
    for name in want:
        _assert_close(name, got[name], want[name])

    os.utime(data, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(PartitionError, match="changed since the partition was written"):
        read_partition(out, model)
