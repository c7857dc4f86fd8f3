"""ONNX Runtime helpers: sessions, the validated fast call."""

from __future__ import annotations

import numpy as np

import factories as F
from trtlab.backends.onnxruntime.session import fast_call, session


def test_fast_call_matches_session_run():
    sess = session(F.mlp())
    x = {"x": np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)}
    (want,) = sess.run(["y"], x)
    (got,) = fast_call(sess)(["y"], x)
    np.testing.assert_array_equal(got, want)


def test_fast_call_keeps_the_public_run_when_providers_can_fall_back():
    calls = []

    class Session:  # a CUDA session: its run() may fall back to CPU, so it must be kept
        _sess = object()

        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

        def run(self, names, feeds):
            calls.append((names, feeds))
            return ["out"]

    assert fast_call(Session())(["y"], {"x": 1}) == ["out"]
    assert calls == [(["y"], {"x": 1})]


def test_fast_call_uses_only_the_public_session_api():
    class Session:  # ONNX Runtime's private binding is off limits: touching it fails the test
        @property
        def _sess(self):
            raise AssertionError("fast_call reached the private InferenceSession._sess")

        def run(self, names, feeds):
            return [feeds["x"] * 2]

    assert fast_call(Session())(["y"], {"x": 3}) == [6]
