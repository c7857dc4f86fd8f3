"""Error localisation finds an error planted on purpose."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from trtlab.errors import CompareError
from trtlab.study.localize import common_tensors, localize_error, suggest_fp32_nodes
from trtlab.model import load
from trtlab.precision import quantize_int8, to_fp16

from test_precision import images, residual_net


def plant_bad_scale(q, tensor, factor=200.0):
    """Divide the activation scale of ``tensor``'s Q/DQ pair: values clip hard there."""
    proto = onnx.ModelProto()
    proto.CopyFrom(q.proto)
    for init in proto.graph.initializer:
        if init.name == f"{tensor}_scale":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) / factor, init.name))
            return load(proto, fold_constants=False)
    raise AssertionError(f"no scale for {tensor}")


def test_localize_finds_planted_bad_scale():
    model = residual_net()
    q = quantize_int8(model, images(64), method="minmax", progress=False)
    bad = plant_bad_scale(q, "f")  # the input of fc
    report = localize_error(model, bad, images(16, seed=4), chunk_size=2, progress=False)
    assert list(report.order) == sorted(report.order)
    assert report.attrs["first_growth"] == "fc"
    row = report.set_index("node").loc["fc"]
    assert row.grows and row.rel_error > 0.2 and row.growth > 10
    assert not report.set_index("node").loc["conv1"].grows
    assert suggest_fp32_nodes(report) == ["fc"]
    assert quantize_int8(model, images(64), method="minmax", exclude_nodes=suggest_fp32_nodes(report),
                         progress=False) is not None


def test_localize_healthy_candidate_has_no_growth_and_chunks_agree():
    model = residual_net()
    half = to_fp16(model)
    a = localize_error(model, half, images(8), chunk_size=1, progress=False)
    b = localize_error(model, half, images(8), chunk_size=64, progress=False)
    assert a.attrs["first_growth"] is None and suggest_fp32_nodes(a) == []
    # exposing a tensor as an output can change ONNX Runtime's fusions, so errors agree in size only
    np.testing.assert_allclose(a.rel_error, b.rel_error, rtol=0.5)
    assert (a.rel_error < 0.01).all() and (a.rel_error > 0).any()


def test_localize_chosen_tensors_and_errors():
    model = residual_net()
    q = quantize_int8(model, images(32), method="minmax", progress=False)
    assert {"c1", "r1", "c2", "s", "z"} <= set(common_tensors(model, q))
    report = localize_error(model, q, images(8), tensors=["z", "r1"], progress=False)
    assert list(report.tensor) == ["r1", "z"]
    with pytest.raises(CompareError, match="not computed by both"):
        localize_error(model, q, images(8), tensors=["r1_quantized"])
    with pytest.raises(CompareError, match="localize_error report"):
        suggest_fp32_nodes(model)
