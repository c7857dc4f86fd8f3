"""Weights by reference: external data read in place, light segment models, the model's own file."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import factories as F
import trtlab
from trtlab.errors import ExternalDataError
from trtlab.backends.onnxruntime.session import run_onnx
from trtlab.extract import segment_model
from trtlab.model import Model
from trtlab.weights import STUB_MIN_BYTES, Weights, has_external, is_external, same_as_file, to_array


def external_model(proto: onnx.ModelProto, folder: Path, name: str = "m.onnx") -> Model:
    """``proto`` saved with external data, loaded back with the weights left in the file."""
    path = folder / name
    onnx.save(copy.deepcopy(proto), str(path), save_as_external_data=True, location=name + ".data")
    loaded = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    return Model(loaded, path=path)


def test_external_tensor_is_a_read_only_map_of_its_file(tmp_path):
    proto = F.mlp()
    model = external_model(proto, tmp_path)
    w1 = model.initializers["w1"]
    assert is_external(w1) and not w1.raw_data
    value = to_array(w1, tmp_path)
    assert not value.flags.writeable and not value.flags.owndata
    mapped = value
    while not isinstance(mapped, np.memmap):
        mapped = mapped.base
    assert Path(mapped.filename).resolve() == (tmp_path / "m.onnx.data").resolve()
    want = numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == "w1"))
    np.testing.assert_array_equal(value, want)


def test_external_data_errors_name_the_file_and_the_fix(tmp_path):
    model = external_model(F.mlp(), tmp_path)
    w1 = model.initializers["w1"]
    with pytest.raises(ExternalDataError, match="no folder to read it from"):
        to_array(w1, None)
    escaping = copy.deepcopy(w1)
    next(e for e in escaping.external_data if e.key == "location").value = "../elsewhere.data"
    with pytest.raises(ExternalDataError, match="outside the model's folder"):
        to_array(escaping, tmp_path)
    (tmp_path / "m.onnx.data").write_bytes(b"\0" * 16)
    with pytest.raises(ExternalDataError, match="truncated"):
        to_array(w1, tmp_path)
    (tmp_path / "m.onnx.data").unlink()
    with pytest.raises(ExternalDataError, match="could not be read"):
        to_array(w1, tmp_path)


def test_light_models_hold_no_weight_bytes_and_fill_back_exactly():
    model = trtlab.load(F.mlp())
    part = trtlab.partition(model, support={n: n != "relu1" for n in model.node_names})
    weights = Weights.of(model)
    for seg in part.segments:
        light = segment_model(part, seg.index, weights="reference")
        assert weights.holds_data(light) == []
        big = [t for t in light.graph.initializer if len(numpy_helper.to_array(model.initializers[t.name]).tobytes())
               >= STUB_MIN_BYTES]
        assert all(not t.raw_data and not t.float_data for t in big)
        full = weights.full(light)
        assert full.SerializeToString() == segment_model(part, seg.index).SerializeToString()
        onnx.checker.check_model(full, full_check=True)


def test_external_references_stay_references_in_light_models(tmp_path):
    ext = external_model(F.mlp(), tmp_path)
    part = trtlab.partition(ext, support={n: n != "relu1" for n in ext.node_names})
    inline = trtlab.partition(trtlab.load(F.mlp()), support={n: n != "relu1" for n in ext.node_names})
    for seg in part.segments:
        light = segment_model(part, seg.index, weights="reference")
        refs = [t for t in light.graph.initializer if is_external(t)]
        assert {t.name for t in refs} == {t.name for t in light.graph.initializer
                                          if is_external(ext.initializers[t.name])}
        assert all(not t.raw_data for t in refs)
        embedded = segment_model(part, seg.index)
        assert not has_external(embedded)
        want = {t.name: numpy_helper.to_array(t) for t in segment_model(inline, seg.index).graph.initializer}
        got = {t.name: numpy_helper.to_array(t) for t in embedded.graph.initializer}
        assert want.keys() == got.keys()
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])


def test_same_as_file_accepts_the_loaded_file_and_refuses_any_change(tmp_path):
    path = tmp_path / "mlp.onnx"
    onnx.save(F.mlp(), str(path))
    model = trtlab.load(path)
    assert same_as_file(model) == ""
    assert same_as_file(trtlab.load(F.mlp())) == "the model was not loaded from a file"
    changed = trtlab.load(path)
    w1 = changed.initializers["w1"]
    w1.CopyFrom(numpy_helper.from_array(to_array(w1, changed.base_dir) * 2, "w1"))
    assert "initializer 'w1' differs" in same_as_file(changed)
    attr = trtlab.load(path)
    attr.node("softmax").attribute[0].i = 0
    assert "nodes differ" in same_as_file(attr)
    ext = external_model(F.mlp(), tmp_path, "ext.onnx")
    assert same_as_file(ext) == ""


# ----------------------------------------------------------------------------------------------
# the model's own file, read as a stream; weights left in it
# ----------------------------------------------------------------------------------------------

constant_mlp = F.constant_mlp


def embedded_tensors(proto: onnx.ModelProto):
    """Names of the tensors of at least STUB_MIN_BYTES the model holds in memory (raw data)."""
    from trtlab.model import _all_tensors

    return [t.name for t in _all_tensors(proto.graph)
            if not is_external(t) and t.HasField("raw_data") and len(t.raw_data) >= STUB_MIN_BYTES]


def test_model_file_is_the_file_without_its_large_payloads(tmp_path):
    from trtlab.weights import ModelFile

    proto = constant_mlp()
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    source = ModelFile(path)
    assert set(source.spans) == {("constant", "k1"), ("initializer", "b1"), ("initializer", "w2")}
    assert embedded_tensors(source.skeleton) == []
    data = path.read_bytes()
    k1 = proto.graph.node[0].attribute[0].t
    for key, tensor in [(("constant", "k1"), k1), (("initializer", "b1"), proto.graph.initializer[0]),
                        (("initializer", "w2"), proto.graph.initializer[1])]:
        offset, length = source.spans[key]
        assert data[offset:offset + length] == tensor.raw_data, key
    # with the references read back in, it is the file's model, field for field
    back = onnx.ModelProto()
    back.CopyFrom(source.skeleton)
    onnx.external_data_helper.load_external_data_for_model(back, str(tmp_path))
    for tensor in onnx.external_data_helper._get_all_tensors(back):
        tensor.ClearField("data_location")  # set to DEFAULT by the helper, absent in the file
    assert back.SerializeToString(deterministic=True) == onnx.load(str(path)).SerializeToString(deterministic=True)


def test_model_file_reads_no_payload_into_memory(tmp_path):
    import tracemalloc

    from trtlab.weights import ModelFile

    path = tmp_path / "m.onnx"
    onnx.save(constant_mlp(width=1024), str(path))  # 8 MiB of weights
    tracemalloc.start()
    try:
        ModelFile(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak


@pytest.mark.parametrize("data", [b"", b"\x0f\x00\x01", b"\x3a\xff\xff\xff\x0f"])
def test_an_unreadable_file_is_a_reason_not_a_crash(tmp_path, data):
    from trtlab.weights import read_model_file

    path = tmp_path / "bad.onnx"
    path.write_bytes(data)
    source, why = read_model_file(path)
    assert source is None and "could not be read again" in why


def test_weights_left_in_the_file_keep_their_values_and_the_model_its_meaning(tmp_path):
    from trtlab.weights import leave_in_file

    path = tmp_path / "m.onnx"
    onnx.save(constant_mlp(), str(path))
    model = trtlab.load(path, weights="memory")
    values = {n: np.array(model.constant_value(n)) for n in ("k1", "b1", "w2")}
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 256)).astype(np.float32)}
    want = run_onnx(str(path), feeds)["y"]
    moved = leave_in_file(model)
    assert moved == (2 * 256 * 256 + 256) * 4  # k1, w2 and b1, float32
    assert embedded_tensors(model.proto) == []
    assert any("read from the model file m.onnx" in n for n in model.notes)
    for name, value in values.items():
        np.testing.assert_array_equal(model.constant_value(name), value, err_msg=name)
    assert same_as_file(model) == ""
    # a second call finds nothing left to move
    assert leave_in_file(model) == 0
    # the model still runs, saves and loads as before
    np.testing.assert_array_equal(run_onnx(model, feeds)["y"], want)
    saved = model.save(tmp_path / "saved" / "copy.onnx")
    np.testing.assert_array_equal(run_onnx(str(saved), feeds)["y"], want)
    again = trtlab.load(model)
    np.testing.assert_array_equal(again.constant_value("k1"), values["k1"])


def test_only_weights_equal_to_the_file_are_left_there(tmp_path):
    from trtlab.weights import leave_in_file

    path = tmp_path / "m.onnx"
    onnx.save(constant_mlp(), str(path))
    model = trtlab.load(path, weights="memory")
    w2 = model.initializers["w2"]
    w2.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w2) + 1, "w2"))
    k1 = model.node("k1_const").attribute[0].t
    k1.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(k1)[::-1].copy(), k1.name))  # same shape
    assert leave_in_file(model) == 256 * 4
    assert sorted(embedded_tensors(model.proto)) == ["k1_value", "w2"]
    assert "nodes differ" in same_as_file(model)
    # models without a file of their own keep everything
    assert leave_in_file(trtlab.load(constant_mlp())) == 0
    elsewhere = Model(onnx.load(str(path)), path=path, base_dir=tmp_path / "other")
    assert leave_in_file(elsewhere) == 0


def test_same_as_file_sees_a_changed_constant_value(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(constant_mlp(), str(path))
    model = trtlab.load(path)
    assert same_as_file(model) == ""
    k1 = model.node("k1_const").attribute[0].t
    value = np.array(to_array(k1, model.base_dir))
    value[3, 4] += 1
    k1.CopyFrom(numpy_helper.from_array(value, k1.name))
    assert "nodes differ" in same_as_file(model)


def _run_folder(part, folder, feeds):
    """Run the segment files of a written partition in order with ONNX Runtime."""
    import onnxruntime as ort

    env = dict(feeds)
    files = sorted(p for p in Path(folder).iterdir() if p.suffix == ".onnx")
    for seg, path in zip(part.segments, files):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        env.update(zip(names, sess.run(names, {t: env[t] for t in seg.inputs})))
    return env


def _saved_constant_mlp(tmp_path, seed):
    """(path, feeds, outputs ONNX Runtime gives for the file, the model loaded with its weights in memory)."""
    path = tmp_path / "m.onnx"
    onnx.save(constant_mlp(), str(path))
    feeds = {"x": np.random.default_rng(seed).standard_normal((2, 256)).astype(np.float32)}
    return path, feeds, run_onnx(str(path), feeds)["y"], trtlab.load(path, weights="memory")


def test_weights_left_in_the_file_keep_every_step_working(tmp_path):
    from trtlab.extract import write_partition
    from trtlab.weights import leave_in_file

    path, feeds, want, model = _saved_constant_mlp(tmp_path, seed=2)
    held = embedded_tensors(model.proto)
    everything = {n: (False, "one segment") for n in model.node_names}
    one = trtlab.build(trtlab.partition(model, support=everything), cache_dir=False, progress=False)
    assert held and embedded_tensors(model.proto) == held  # build never changes the model given
    assert leave_in_file(model) > 0
    assert embedded_tensors(model.proto) == []
    assert "session read from the model file" in one.executors["reason"][0]
    np.testing.assert_array_equal(one.run(feeds)["y"], want)
    # the segment model as built: standalone, every weight embedded, the file's values
    standalone = one.segment_models[0]
    assert not has_external(standalone)
    np.testing.assert_array_equal(run_onnx(standalone, feeds)["y"], want)
    # partitioned again (support from the default source), cut in several segments, built, run
    support = trtlab.check_support(model)
    assert set(support.frame["node"]) == set(model.node_names)
    cut = {n: (n != "relu1", "relu1 cut out") for n in model.node_names}
    part = trtlab.partition(model, support=cut)
    assert len(part.segments) == 3
    hybrid = trtlab.build(part, feeds=feeds, cache_dir=False, progress=False)
    np.testing.assert_allclose(hybrid.run(feeds)["y"], want, rtol=1e-5, atol=1e-4)
    for seg in hybrid.segments:
        assert Weights.of(model).holds_data(hybrid.segment_models.light(seg.index)) == [], seg.name
    half = trtlab.build(part, feeds=feeds, precision="fp16", cache_dir=False, progress=False)
    np.testing.assert_allclose(half.run(feeds)["y"], want, rtol=0.05, atol=0.5)
    table = trtlab.compare(str(path), {"one": one, "cut": hybrid}, feeds)
    assert table.set_index("candidate").loc["one", "max_abs"] == 0.0
    # written, saved, loaded again
    write_partition(part, tmp_path / "part", weights="copy")  # a folder plain ONNX Runtime runs
    np.testing.assert_allclose(_run_folder(part, tmp_path / "part", feeds)["y"], want, rtol=1e-5, atol=1e-4)
    saved = model.save(tmp_path / "saved" / "m.onnx")
    np.testing.assert_array_equal(run_onnx(str(saved), feeds)["y"], want)
    again = trtlab.load(model)
    np.testing.assert_array_equal(run_onnx(again, feeds)["y"], want)


def test_a_model_saved_over_the_file_holding_its_weights_keeps_them(tmp_path):
    from trtlab.weights import leave_in_file

    path, feeds, want, model = _saved_constant_mlp(tmp_path, seed=3)
    k1 = np.array(model.constant_value("k1"))
    assert leave_in_file(model) > 0
    model.save(path)  # the file the model reads its weights from is replaced
    assert not (tmp_path / "m.onnx.data").exists()  # embedded again: the file stands alone
    assert not has_external(onnx.load(str(path), load_external_data=False))
    assert embedded_tensors(model.proto) == ["b1"]  # the others left in the new file (as load() does: 16 KiB and up)
    np.testing.assert_array_equal(model.constant_value("k1"), k1)
    np.testing.assert_array_equal(run_onnx(model, feeds)["y"], want)
    np.testing.assert_array_equal(run_onnx(str(path), feeds)["y"], want)
