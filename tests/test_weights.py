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
    w1.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w1) * 2, "w1"))
    assert "initializer 'w1' differs" in same_as_file(changed)
    attr = trtlab.load(path)
    attr.node("softmax").attribute[0].i = 0
    assert "nodes differ" in same_as_file(attr)
    ext = external_model(F.mlp(), tmp_path, "ext.onnx")
    assert same_as_file(ext) == ""
