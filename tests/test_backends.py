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


def test_compiled_segments_declare_their_executor_as_data():
    from trtlab.backends.base import EXECUTORS, CompiledSegment, FunctionSegment, as_compiled

    ort_seg = OnnxRuntimeBackend().compile(F.mlp(), CompileSettings(segment="s"))
    trt_seg = TensorRTBackend(lambda *a: b"engine").compile(F.mlp(), CompileSettings(segment="t"))
    for seg in (ort_seg, trt_seg):
        assert isinstance(seg, CompiledSegment)
        assert seg.executor in EXECUTORS
    assert trt_seg.executor == ("tensorrt" if INFO.run else "onnxruntime")
    wrapped = as_compiled(lambda feeds: {"y": feeds["x"]}, "mine", CompileSettings(profile=(("x", ((1,), (2,), (3,))),)))
    assert isinstance(wrapped, FunctionSegment) and wrapped.executor == "mine"
    assert wrapped.profile == (("x", ((1,), (2,), (3,))),)
    with pytest.raises(BuildError, match="not callable"):
        as_compiled(42, "mine", CompileSettings(segment="s"))


def test_codegen_imports_no_tensorrt_and_branches_on_no_backend_class():
    import ast
    import inspect

    import trtlab.codegen as codegen

    tree = ast.parse(inspect.getsource(codegen))
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and (m.startswith("tensorrt") or m.endswith("tensorrt.backend"))]
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert "TensorRTBackend" not in names and "TensorRTSegment" not in names


def test_partition_keeps_its_backend_object():
    import trtlab
    from trtlab.backends.base import backend_named

    backend = OnnxRuntimeBackend()
    part = trtlab.partition(load(F.mlp()), backend=backend, exclude_nodes=["relu1"])
    assert part.backend_object is backend and part.backend == "onnxruntime"
    moved = part.with_fallback(["gemm2"], {"gemm2": "refused on purpose"})
    assert moved.backend_object is backend
    assert moved.moved.to_dict("records") == [{"node": "gemm2", "op_type": "Gemm", "reason": "refused on purpose"}]
    assert trtlab.partition(load(F.mlp())).backend_object is None
    assert isinstance(backend_named("tensorrt"), TensorRTBackend)
    with pytest.raises(BuildError, match="partition\\(model, backend=...\\)"):
        backend_named("numpy")


def test_build_pool_records_crashes_and_replaces_the_pool():
    import build_standins
    from trtlab.backends.tensorrt.workers import BuildPool, picklable

    pool = BuildPool(workers=2, timeout=60)
    try:
        data = F.mlp().SerializeToString()
        ok, crashed = pool.map(build_standins.segfault_on_tanh, [(data, None), (_tanh_model(), None)],
                               segment="trt_3")
        assert ok.startswith(b"engine:")
        assert isinstance(crashed, BuildError) and crashed.stage == "crash"
        assert str(crashed) == "TensorRT crashed with signal 11 (SIGSEGV) while building trt_3"
        assert pool.replaced >= 1
        assert pool.run(build_standins.segfault_on_tanh, data, None).startswith(b"engine:")  # a fresh pool
    finally:
        pool.shutdown()
    assert picklable(build_standins.segfault_on_tanh) and not picklable(lambda: 0)


def _tanh_model():
    from onnx import helper

    nodes = [helper.make_node("Tanh", ["x"], ["y"], name="tanh")]
    return F._model(nodes, [F.vi("x", [2])], [F.vi("y", [2])]).SerializeToString()


def test_script_without_main_guard_builds_once(tmp_path):
    """Workers start without re-running the user's script (spawn would import it again)."""
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    script = tmp_path / "user_script.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(tests)!r})\n"
        "import factories as F, build_standins, trtlab\n"
        "from trtlab.backends.tensorrt.backend import TensorRTBackend\n"
        "print('script body runs', flush=True)\n"
        "part = trtlab.partition(trtlab.load(F.mlp()), backend=TensorRTBackend(builder=build_standins.segfault_on_tanh))\n"
        "hybrid = trtlab.build(part, cache_dir=False, progress=False)\n"
        "print('engines', hybrid.engine_count)\n")
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("script body runs") == 1
    assert "engines 1" in res.stdout
