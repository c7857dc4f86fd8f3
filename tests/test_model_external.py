"""Models whose weights live in external data files: loaded by reference, read only where needed.

The model under test is ``factories.mlp`` saved with every tensor in one data file::

    x[2,16] -> MatMul(w1) -> Add(b1) -> Relu -> Gemm(w2, b2) -> Softmax -> y[2,10]
               (external)   (external)          (external)
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import factories as F
import trtlab
from trtlab import model as model_mod
from trtlab.backends.tensorrt import flavor as trt
from trtlab.errors import ExternalDataError, OutputExistsError
from trtlab.extract import segment_model, write_partition
from trtlab.partitioning.partitioner import run_segments


def _external_mlp(folder, data="weights.bin"):
    path = folder / "mlp.onnx"
    onnx.save_model(F.mlp(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data, size_threshold=0)
    return F.mlp(), path  # save_model made the saved proto's tensors external: a fresh one


def _feeds():
    return {"x": np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)}


def _run(model_or_path, feeds):
    sess = ort.InferenceSession(model_or_path, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


@pytest.fixture()
def ext(tmp_path):
    proto, path = _external_mlp(tmp_path)
    return proto, path, _run(str(path), _feeds())


# -- loading keeps the weights in their file --------------------------------------------------

def test_load_keeps_weights_external(ext):
    proto, path, _ = ext
    weight_bytes = sum(onnx.numpy_helper.to_array(t).nbytes for t in proto.graph.initializer)
    m = trtlab.load(path)
    assert m.base_dir == path.parent
    assert m.has_external_data
    assert all(model_mod.is_external(t) for t in m.proto.graph.initializer)
    assert all(not t.raw_data for t in m.proto.graph.initializer)
    assert m.proto.ByteSize() < weight_bytes  # the proto holds references, not the weights
    # shapes are inferred without the values
    assert m.tensor("h2").shape == (2, 32) and m.tensor("y").shape == (2, 10)


def test_analysis_never_reads_weights(ext, monkeypatch):
    _, path, _ = ext

    def refuse(*args, **kwargs):
        raise AssertionError("a weight was read")

    monkeypatch.setattr(model_mod, "_read_external", refuse)
    monkeypatch.setattr(model_mod, "tensor_value", refuse)
    m = trtlab.load(path)
    table = trtlab.check_support(m, source="rules")
    part = trtlab.partition(m, support=table, exclude_ops=("Relu",))
    assert len(part.segments) == 3
    proto = segment_model(part, 0, weights="reference")
    assert any(model_mod.is_external(t) for t in proto.graph.initializer)


def test_values_read_on_demand(ext):
    proto, path, _ = ext
    m = trtlab.load(path)
    for t in proto.graph.initializer:
        value = m.constant_value(t.name)
        np.testing.assert_array_equal(value, onnx.numpy_helper.to_array(t))
        assert not value.flags.writeable  # a read-only map of the file
    assert set(m.initializers) == {t.name for t in proto.graph.initializer}


def test_load_weights_inlines_everything(ext):
    proto, path, _ = ext
    m = trtlab.load(path).load_weights()
    assert not m.has_external_data
    for t in proto.graph.initializer:
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(m.initializers[t.name]),
                                      onnx.numpy_helper.to_array(t))


# -- writing complete models ------------------------------------------------------------------

def test_to_bytes_is_complete(ext):
    _, path, expected = ext
    data = trtlab.load(path).to_bytes()
    got = _run(data, _feeds())
    np.testing.assert_array_equal(got[0], expected[0])


def test_save_elsewhere_writes_its_own_data(ext, tmp_path):
    _, path, expected = ext
    m = trtlab.load(path)
    out = tmp_path / "copy" / "saved.onnx"
    m.save(out)
    assert (out.parent / "saved.onnx.data").is_file()
    onnx.checker.check_model(str(out))
    np.testing.assert_array_equal(_run(str(out), _feeds())[0], expected[0])
    # the saved model no longer depends on the source folder
    path.unlink()
    (path.parent / "weights.bin").unlink()
    np.testing.assert_array_equal(_run(str(out), _feeds())[0], expected[0])
    np.testing.assert_array_equal(trtlab.load(out).constant_value("w1"),
                                  onnx.numpy_helper.to_array(F.mlp().graph.initializer[0]))


def test_save_without_overwrite_keeps_an_existing_data_file(ext, tmp_path):
    _, path, _ = ext
    m = trtlab.load(path)
    out = tmp_path / "copy" / "saved.onnx"
    out.parent.mkdir()
    (out.parent / "saved.onnx.data").write_bytes(b"another model's weights")
    with pytest.raises(OutputExistsError, match="saved.onnx.data"):
        m.save(out, overwrite=False)
    assert (out.parent / "saved.onnx.data").read_bytes() == b"another model's weights"
    assert not out.exists()


def test_save_over_its_own_file(tmp_path):
    # a data file named like the one save() writes is never overwritten while it is read
    _, path = _external_mlp(tmp_path, data="mlp.onnx.data")
    expected = _run(str(path), _feeds())
    m = trtlab.load(path)
    m.save(path)
    np.testing.assert_array_equal(_run(str(path), _feeds())[0], expected[0])
    np.testing.assert_array_equal(m.constant_value("b2"), onnx.numpy_helper.to_array(F.mlp().graph.initializer[3]))


# -- extraction, partition, segments ----------------------------------------------------------

def test_segments_reproduce_the_original(ext):
    _, path, expected = ext
    m = trtlab.load(path)
    part = trtlab.partition(m, support=trtlab.check_support(m, source="rules"), exclude_ops=("Relu",))
    got = run_segments(part, _feeds())
    np.testing.assert_allclose(got["y"], expected[0], rtol=1e-6, atol=1e-7)
    for seg in part.segments:
        proto = segment_model(part, seg.index)
        assert not model_mod.external_tensors(proto.graph)  # complete by default
        onnx.checker.check_model(proto)


def test_written_partition_loads_in_onnx_and_onnxruntime(ext, tmp_path):
    _, path, expected = ext
    m = trtlab.load(path)
    part = trtlab.partition(m, support=trtlab.check_support(m, source="rules"), exclude_ops=("Relu",))
    out = tmp_path / "part"
    written = write_partition(part, out, weights="copy")
    assert "weights.data" in written and (out / "weights.data").is_file()
    path.unlink()  # the folder stands alone: the original model and its data are gone
    (path.parent / "weights.bin").unlink()
    env = dict(_feeds())
    for seg in part.segments:
        file = out / f"{seg.index:02d}_{seg.name}.onnx"
        assert file.stat().st_size < 2000  # weights stay in the data file
        onnx.checker.check_model(str(file))
        onnx.load(str(file))  # resolves its external data from the folder
        sess = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        outs = sess.run(None, {i.name: env[i.name] for i in sess.get_inputs()})
        env.update(zip([o.name for o in sess.get_outputs()], outs))
    np.testing.assert_allclose(env["y"], expected[0], rtol=1e-6, atol=1e-7)


def test_parser_support_without_reading_weights(ext, monkeypatch):
    if not trt.info().parse:
        pytest.skip(f"no TensorRT ONNX parser installed: {trt.info().reason}")
    _, path, _ = ext
    monkeypatch.setattr(model_mod, "_read_external", lambda *a, **k: pytest.fail("a weight was read"))
    m = trtlab.load(path)
    table = trtlab.check_support(m, source="parser")
    assert table.frame["supported"].all()


def test_fold_constants_reads_what_it_folds(tmp_path):
    # w1 -> Transpose -> Transpose is constant: folding reads w1 from the data file
    proto = F.mlp()
    t1 = onnx.helper.make_node("Transpose", ["w1"], ["w1t"], name="t1", perm=[1, 0])
    t2 = onnx.helper.make_node("Transpose", ["w1t"], ["w1tt"], name="t2", perm=[1, 0])
    proto.graph.node[0].input[1] = "w1tt"
    proto.graph.node.insert(0, t2)
    proto.graph.node.insert(0, t1)
    path = tmp_path / "m.onnx"
    onnx.save_model(proto, str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
    expected = _run(str(path), _feeds())
    m = trtlab.load(path, fold_constants=True)
    assert "t1" not in m.node_names
    np.testing.assert_array_equal(_run(m.to_bytes(), _feeds())[0], expected[0])


# -- bad external data: found at load, without reading it --------------------------------------

def test_missing_data_file_at_load(ext):
    _, path, _ = ext
    (path.parent / "weights.bin").unlink()
    with pytest.raises(ExternalDataError, match="weights.bin"):
        trtlab.load(path)


def test_truncated_data_file_at_load(ext):
    _, path, _ = ext
    data = path.parent / "weights.bin"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(ExternalDataError, match="truncated"):
        trtlab.load(path)


def test_external_reference_without_folder(ext):
    _, path, _ = ext
    proto = onnx.load(str(path), load_external_data=False)
    with pytest.raises(ExternalDataError, match="not loaded from a file"):
        trtlab.load(proto)
    # a Model keeps its folder: loading it again resolves the same files
    again = trtlab.load(trtlab.load(path))
    assert again.base_dir == path.parent
    np.testing.assert_array_equal(again.constant_value("b1"), onnx.numpy_helper.to_array(F.mlp().graph.initializer[1]))


def test_steps_that_run_the_model_read_external_weights_in_place(ext, monkeypatch):
    # shape observation, runtime typing and error localization hand the references to ONNX
    # Runtime (which reads the data file) instead of reading every weight into Python
    from trtlab.backends.shapes import observe
    from trtlab.study.localize import localize_error

    _, path, expected = ext
    m = trtlab.load(path)
    monkeypatch.setattr(model_mod, "_read_external", lambda *a, **k: pytest.fail("a weight was read"))
    facts = observe(m, [_feeds()])
    assert facts.ranges  # every observed tensor has a shape range
    table = localize_error(m, m, _feeds(), progress=False)
    assert len(table) > 0 and float(table["max_abs"].max()) == 0.0
