"""The Backend protocol and the two shipped backends."""

from __future__ import annotations

import numpy as np
import pytest

import factories as F
from trtlab.backends.tensorrt import flavor as trt
from trtlab.backends.base import Backend, CompileSettings
from trtlab.backends.onnxruntime.backend import OnnxRuntimeBackend, OrtSegment
from trtlab.backends.tensorrt.backend import TensorRTBackend, TensorRTSegment
from trtlab.backends.tensorrt.engine import EngineRecord
from trtlab.errors import BuildError
from trtlab.model import load
from trtlab.backends.onnxruntime.session import run_onnx

INFO = trt.info()


def test_shipped_backends_follow_the_protocol():
    assert isinstance(TensorRTBackend(), Backend)
    assert isinstance(OnnxRuntimeBackend(), Backend)
    assert (TensorRTBackend.name, OnnxRuntimeBackend.name) == ("tensorrt", "onnxruntime")


def test_onnxruntime_backend_supports_everything_and_runs():
    table = OnnxRuntimeBackend().check_support(F.with_unsupported())
    frame = table.frame
    assert frame["supported"].all()
    assert len(frame) == len(load(F.with_unsupported()).node_names)
    seg = OnnxRuntimeBackend().compile(F.mlp(), CompileSettings(segment="s"))
    assert isinstance(seg, OrtSegment) and seg.executor == "onnxruntime"
    feeds = {"x": np.ones((2, 16), np.float32)}
    np.testing.assert_allclose(seg(feeds)["y"], run_onnx(F.mlp(), feeds)["y"], rtol=1e-6)


def test_tensorrt_backend_support_comes_from_check_support():
    table = TensorRTBackend().check_support(F.mlp())
    assert table.frame["supported"].all()


def test_engine_record_covers():
    rec = EngineRecord("s", (("x", ((1, 3), (2, 3), (4, 3))),), b"e")
    assert rec.covers({"x": (3, 3)})
    assert not rec.covers({"x": (5, 3)})
    assert not rec.covers({"x": (2, 3, 1)})
    assert EngineRecord("s", None, b"e").covers({"x": (100,)})
    assert rec.nbytes == 1


def test_tensorrt_segment_with_injected_builder_counts_engines():
    built = []

    def builder(data, profile, settings):
        built.append(profile)
        return b"engine-for-" + repr(profile).encode()

    settings = CompileSettings(segment="trt_0", profile=(("x", ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))),),
                               dynamic_batch="per_shape")
    seg = TensorRTBackend(builder).compile(F.conv_relu(), settings)
    assert isinstance(seg, TensorRTSegment)
    assert built == [(("x", ((2, 3, 8, 8),) * 3),)]
    for batch in (2, 3, 3, 5):
        out = seg({"x": np.zeros((batch, 3, 8, 8), np.float32)})
        assert out["y"].shape == (batch, 4, 8, 8)
    assert len(seg.engines) == 3
    assert seg.executor == ("tensorrt" if INFO.run else "onnxruntime")
    assert "engines=3" in repr(seg)


def test_tensorrt_segment_rejects_unknown_mode():
    with pytest.raises(BuildError, match="dynamic_batch"):
        TensorRTBackend(lambda *a: b"x").compile(F.mlp(), CompileSettings(dynamic_batch="both"))
