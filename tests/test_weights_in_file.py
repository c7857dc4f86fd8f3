"""Weights left in the model's file by load(), and the guard that refuses a file changed since.

``trtlab.load(path)`` leaves the weights embedded in an ``.onnx`` file there (references to
their bytes in the file); ``weights="memory"`` keeps them in the proto. A model records the
identity (size, modification time, inode, device) of each file it reads weights from, and every
step reading them, or handing the file to ONNX Runtime or TensorRT, checks it first: a file
rewritten after loading (same size, other bytes; another size; another file renamed over it)
raises an ExternalDataError naming the file, what changed and the fix.
"""

from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import factories as F
import trtlab
from trtlab import zoo
from trtlab.backends.base import CompileSettings
from trtlab.backends.onnxruntime.backend import OnnxRuntimeBackend
from trtlab.backends.onnxruntime.session import run_onnx, session
from trtlab.errors import ExternalDataError, ModelLoadError
from trtlab.extract import write_partition
from trtlab.model import FileIdentity, _all_tensors
from trtlab.weights import STUB_MIN_BYTES, Weights, base_dir, has_external, is_external, to_array

WIDTH = 64


def weighted_mlp(seed=0, width=WIDTH, batch=2):
    """The model the tests load (:func:`factories.constant_mlp`): a Constant and initializers."""
    return F.constant_mlp(seed, width, batch)


def feeds(seed=1):
    return {"x": np.random.default_rng(seed).standard_normal((2, WIDTH)).astype(np.float32)}


def held_in_memory(proto):
    """Bytes of raw data the proto holds (every tensor, bodies included)."""
    return sum(len(t.raw_data) for t in _all_tensors(proto.graph) if not is_external(t))


# ----------------------------------------------------------------------------------------------
# the default: weights left in the file; the opt-out keeps them in memory
# ----------------------------------------------------------------------------------------------

def test_load_leaves_the_weights_in_the_file_and_computes_the_same(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(weighted_mlp(), str(path))
    want = run_onnx(str(path), feeds())["y"]
    model = trtlab.load(path)
    assert held_in_memory(model.proto) < STUB_MIN_BYTES
    assert any("read from the model file m.onnx" in n for n in model.notes)
    refs = [t for t in _all_tensors(model.proto.graph) if is_external(t)]
    assert sorted(t.name for t in refs) == ["k1_value", "w2"]  # b1 (256 bytes) stays in the proto
    assert {e.value for t in refs for e in t.external_data if e.key == "location"} == {"m.onnx"}
    assert list(model.weight_files) == [path.absolute()]
    assert model.weight_files[path.absolute()] == FileIdentity.of(path)
    exact = onnx.load(str(path))
    np.testing.assert_array_equal(model.constant_value("w2"), numpy_helper.to_array(exact.graph.initializer[1]))
    np.testing.assert_array_equal(model.constant_value("k1"), numpy_helper.to_array(exact.graph.node[0].attribute[0].t))
    np.testing.assert_array_equal(run_onnx(model, feeds())["y"], want)


def test_weights_memory_keeps_them_in_the_proto(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(weighted_mlp(), str(path))
    model = trtlab.load(path, weights="memory")
    assert not has_external(model.proto)
    assert held_in_memory(model.proto) >= 2 * WIDTH * WIDTH * 4
    assert model.weight_files == {}
    k1 = np.array(model.constant_value("k1"))
    onnx.save(weighted_mlp(seed=5), str(path))  # nothing is read from the file: nothing to refuse
    np.testing.assert_array_equal(model.constant_value("k1"), k1)
    with pytest.raises(ModelLoadError, match="weights='file'"):
        trtlab.load(path, weights="mmap")


def test_saved_and_serialized_models_stand_alone(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(weighted_mlp(), str(path))
    want = run_onnx(str(path), feeds())["y"]
    model = trtlab.load(path)
    saved = model.save(tmp_path / "out" / "copy.onnx")
    assert sorted(p.name for p in saved.parent.iterdir()) == ["copy.onnx"]  # no data file beside it
    assert not has_external(onnx.load(str(saved), load_external_data=False))
    path.unlink()  # the original is gone: the copies still hold every weight
    np.testing.assert_array_equal(run_onnx(str(saved), feeds())["y"], want)
    standalone = onnx.load_from_string(trtlab.load(saved).to_bytes())
    assert not has_external(standalone)
    np.testing.assert_array_equal(run_onnx(standalone, feeds())["y"], want)


def test_to_bytes_embeds_the_weights_again(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(weighted_mlp(), str(path))
    data = trtlab.load(path).to_bytes()
    assert not has_external(onnx.load_from_string(data))
    path.unlink()
    np.testing.assert_array_equal(run_onnx(data, feeds())["y"], run_onnx(weighted_mlp(), feeds())["y"])


def test_steps_changing_weights_make_tensors_in_memory(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(weighted_mlp(), str(path))
    model = trtlab.load(path)
    half = trtlab.precision.to_fp16(model)
    assert not has_external(half.proto) and half.weight_files == {}
    np.testing.assert_allclose(run_onnx(half, feeds())["y"], run_onnx(str(path), feeds())["y"], rtol=0.05, atol=0.5)
    folded = trtlab.load(path, fold_constants=True)  # the Constant becomes an initializer
    assert "k1" in folded.initializers
    np.testing.assert_array_equal(run_onnx(folded, feeds())["y"], run_onnx(str(path), feeds())["y"])


def test_derived_models_carry_the_identities(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(weighted_mlp(), str(path))
    model = trtlab.load(path)
    derived = [model.copy(), trtlab.load(model), model.rename_symbolic_dims()]
    for other in derived:
        assert other.weight_files == model.weight_files
    assert Weights.of(model).files == model.weight_files
    _rewrite(path, "same size")
    for other in derived:
        with pytest.raises(ExternalDataError, match="changed since the model was loaded"):
            other.constant_value("w2")


# ----------------------------------------------------------------------------------------------
# the guard
# ----------------------------------------------------------------------------------------------

def _rewrite(path, how, batch=2):
    """Change the model file at ``path`` as another tool exporting to the same path would."""
    before = os.stat(path)
    if how == "same size":  # other weights, same shapes: same size, other bytes, in place
        data = weighted_mlp(seed=7, batch=batch).SerializeToString()
        assert len(data) == before.st_size
        with open(path, "r+b") as fh:
            fh.write(data)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    elif how == "other size":
        path.write_bytes(weighted_mlp(seed=7, width=WIDTH * 2).SerializeToString())
    elif how == "renamed over":  # another file, same size and modification time
        other = path.with_name("other.onnx")
        other.write_bytes(weighted_mlp(seed=7).SerializeToString())
        os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
        os.replace(other, path)
    else:
        raise ValueError(how)


WHAT_CHANGED = {"same size": "it was modified", "other size": "its size changed from",
                "renamed over": "replaced by another file"}


def _step(name, model, built):
    """Run step ``name`` on ``model`` (loaded, then its file rewritten); ``built``: what was built before."""
    if name == "hybrid session":  # a hybrid deferred to its first run creates its sessions then
        built["deferred"].run({"x": feeds()["x"]})
    elif name == "segment session":
        OnnxRuntimeBackend().compile(built["light"], CompileSettings(weights=built["weights"],
                                                                     weights_dir=str(model.path.parent)))
    elif name == "segment models":
        built["hybrid"].segment_models[0]
    elif name == "build":
        trtlab.build(built["partition"], cache_dir=False, progress=False)
    elif name == "session":
        session(model)
    elif name == "save":
        model.save(model.path.parent / "out" / "saved.onnx")
    elif name == "to_bytes":
        model.to_bytes()
    elif name == "to_array":
        to_array(model.initializers["w2"], base_dir(model))
    elif name == "constant_value":
        model.constant_value("k1")
    elif name == "write_partition":
        write_partition(built["partition"], model.path.parent / "partition")
    elif name == "check_support":
        trtlab.check_support(model)
    elif name == "check_support rules":
        trtlab.check_support(model, source="rules")
    elif name == "fp16":
        trtlab.precision.to_fp16(model)
    elif name == "load":
        trtlab.load(model)
    else:
        raise ValueError(name)


STEPS = ["hybrid session", "segment session", "segment models", "build", "session", "save", "to_bytes",
         "to_array", "constant_value", "write_partition", "check_support", "check_support rules", "fp16", "load"]


@pytest.mark.parametrize("how", list(WHAT_CHANGED))
@pytest.mark.parametrize("step", STEPS)
def test_a_rewritten_model_file_is_refused_by_every_step(tmp_path, step, how):
    path = tmp_path / "m.onnx"
    onnx.save(weighted_mlp(), str(path))
    model = trtlab.load(path)
    everything = {n: (False, "one segment") for n in model.node_names}
    part = trtlab.partition(model, support=everything)
    built = {"partition": part, "weights": Weights.of(model)}
    if step in ("segment models", "segment session"):
        built["hybrid"] = trtlab.build(part, cache_dir=False, progress=False)
        built["light"] = built["hybrid"].segment_models.light(0)
    if step == "hybrid session":  # a dynamic batch and a TensorRT segment: built at the first run
        onnx.save(weighted_mlp(batch="N"), str(path))
        model = trtlab.load(path)
        trt = trtlab.partition(model, support={n: (True, "tensorrt") for n in model.node_names})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built["deferred"] = trtlab.build(trt, cache_dir=False, progress=False)
        assert not built["deferred"].executables  # nothing built yet
    _rewrite(path, how, batch="N" if step == "hybrid session" else 2)
    with pytest.raises(ExternalDataError) as err:
        _step(step, model, built)
    message = str(err.value)
    assert str(path.absolute()) in message and "changed since the model was loaded" in message
    assert WHAT_CHANGED[how] in message
    assert f"trtlab.load({str(path)!r})" in message


def test_an_unchanged_file_passes_every_step(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(weighted_mlp(), str(path))
    model = trtlab.load(path)
    part = trtlab.partition(model, support={n: (False, "one segment") for n in model.node_names})
    hybrid = trtlab.build(part, cache_dir=False, progress=False)
    built = {"partition": part, "weights": Weights.of(model), "hybrid": hybrid,
             "light": hybrid.segment_models.light(0)}
    for step in STEPS[1:]:
        _step(step, model, built)
    np.testing.assert_array_equal(hybrid.run(feeds())["y"], run_onnx(str(path), feeds())["y"])


def test_a_deleted_file_is_refused(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(weighted_mlp(), str(path))
    model = trtlab.load(path)
    path.unlink()
    with pytest.raises(ExternalDataError, match="can no longer be examined"):
        model.constant_value("w2")


def test_a_rewritten_external_data_file_is_refused(tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save(copy.deepcopy(F.mlp()), str(path), save_as_external_data=True, location="ext.onnx.data",
              size_threshold=0)
    model = trtlab.load(path)
    data = (tmp_path / "ext.onnx.data").absolute()
    assert data in model.weight_files
    w1 = np.array(model.constant_value("w1"))
    onnx.save(copy.deepcopy(F.mlp(seed=4)), str(path), save_as_external_data=True, location="ext.onnx.data",
              size_threshold=0)
    with pytest.raises(ExternalDataError, match="ext.onnx.data, which changed since") as err:
        model.constant_value("w1")
    assert "trtlab.load(" in str(err.value)
    assert not np.array_equal(np.array(trtlab.load(path).constant_value("w1")), w1)  # loaded again: new values


def test_a_model_saved_over_its_own_file_reads_the_new_file(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(weighted_mlp(), str(path))
    model = trtlab.load(path)
    k1 = np.array(model.constant_value("k1"))
    model.save(path)
    assert held_in_memory(model.proto) < STUB_MIN_BYTES  # left in the file written
    assert model.weight_files == {path.absolute(): FileIdentity.of(path)}
    np.testing.assert_array_equal(model.constant_value("k1"), k1)
    np.testing.assert_array_equal(run_onnx(model, feeds())["y"], run_onnx(str(path), feeds())["y"])


def test_the_guard_costs_a_stat_per_file_per_step_not_per_tensor(tmp_path, monkeypatch):
    from onnx import helper

    rng = np.random.default_rng(0)
    n, width = 12, 72  # 12 weights of 20 KiB, each left in the file
    inits = [numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32), f"w{i}")
             for i in range(n)]
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i}", f"w{i}"], [f"h{i + 1}" if i < n - 1 else "y"],
                              name=f"mm{i}") for i in range(n)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, width])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, width])], inits)
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    model = trtlab.load(path)
    assert sum(is_external(t) for t in model.proto.graph.initializer) == n
    part = trtlab.partition(model, support={k: (False, "one segment") for k in model.node_names})
    calls = []
    real = FileIdentity.of.__func__

    def counted(cls, p):
        calls.append(p)
        return real(cls, p)

    monkeypatch.setattr(FileIdentity, "of", classmethod(counted))
    write_partition(part, tmp_path / "partition")
    assert 1 <= len(calls) <= 2, calls  # a stat per weight would be 12 or more
    calls.clear()
    trtlab.build(part, cache_dir=False, progress=False)
    assert 1 <= len(calls) <= 3, calls


# ----------------------------------------------------------------------------------------------
# memory: a zoo model (the real tier has its own test)
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet_mini", "digits_cnn", "quantized_dynamic"])
def test_a_loaded_zoo_model_holds_no_weights(name):
    path = zoo.path(name)
    model = trtlab.load(path)
    assert held_in_memory(model.proto) < 1 << 20
    assert held_in_memory(model.proto) < os.path.getsize(path) / 3  # weights under 1 KiB stay in the proto
    assert held_in_memory(trtlab.load(path, weights="memory").proto) > os.path.getsize(path) / 2
