"""The GPU path, checked without a GPU: stand-ins that behave like Polygraphy's TrtRunner where it
matters (``tests/standins.py``: reused output buffers, refusal of shape tensors in device memory,
activate / deactivate), and the parts of the TensorRT path that need no device (cache key, error
recorder, timing / runtime cache, compute capabilities, engine validity, run detection).
"""

from __future__ import annotations

import json
import sys
import types
import warnings

import numpy as np
import pytest
from onnx import helper

import factories as F
import trtlab
from trtlab.backends.onnxruntime.session import run_onnx
from trtlab.backends.tensorrt import device
from trtlab.backends.tensorrt import engine as trt_engine
from trtlab.backends.tensorrt import flavor as trt
from trtlab.backends.tensorrt.backend import TensorRTBackend
from trtlab.codegen import build
from trtlab.model import load
from trtlab.partitioning.partitioner import Partition
from trtlab.study.latency import LatencyWarning, benchmark
from standins import (StandInEngine, StandInTrtRunner, onnx_as_engine,
                      pretend_gpu)

@pytest.fixture
def gpu_here(monkeypatch):
    """Pretend engines run here: info() says run=True, Polygraphy's TrtRunner is the stand-in."""
    return pretend_gpu(monkeypatch)


def build_standin(part, **kwargs):
    kwargs.setdefault("cache_dir", False)
    return build(part, progress=False, backends={"tensorrt": TensorRTBackend(builder=onnx_as_engine)}, **kwargs)


def split(part: Partition, groups) -> Partition:
    """``part`` re-cut into the given node groups (as a user-edited partition JSON would be)."""
    doc = json.loads(part.to_json())
    graph = part.model.proto.graph
    by_name = {n.name: n for n in graph.node}
    initializers = {i.name for i in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    segments = []
    for index, (backend, nodes) in enumerate(groups):
        inside = set(nodes)
        made = [o for n in nodes for o in by_name[n].output]
        inputs = [i for n in nodes for i in by_name[n].input
                  if i and i not in made and i not in initializers]
        used_outside = {i for n in graph.node if n.name not in inside for i in n.input}
        outputs = [o for o in made if o in used_outside or o in graph_outputs]
        segments.append({"index": index, "name": f"{'trt' if backend == 'tensorrt' else 'fallback'}_{index}",
                         "backend": backend, "nodes": list(nodes), "inputs": list(dict.fromkeys(inputs)),
                         "outputs": outputs,
                         "macs": int(sum(part.model.macs[n] for n in nodes))})
    doc["segments"] = segments
    return Partition.from_json(json.dumps(doc), part.model)


def shape_edge():
    """MiniLM's shape edge with ``exclude_ops=["Squeeze"]``: the target shape is computed in one
    TensorRT segment and read as a shape tensor by the next one.

        x[N,4,8] ── Shape ─ Gather(0) ─ Unsqueeze ─ Concat(-1) ── newshape ──┐   (trt_0)
        x ── Relu ─ Unsqueeze ── ru                                         │   (trt_1)
                                  └─ Squeeze (excluded) ── rs               │   (fallback_2)
                                                           └──────── Reshape ─ Sigmoid ─ y (trt_3)
    """
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "i0"], ["n"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"], name="unsq"),
        helper.make_node("Concat", ["n1", "m1"], ["newshape"], name="concat", axis=0),
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Unsqueeze", ["r", "ax0"], ["ru"], name="unsq_r"),
        helper.make_node("Squeeze", ["ru", "ax0"], ["rs"], name="squeeze"),
        helper.make_node("Reshape", ["rs", "newshape"], ["y0"], name="reshape"),
        helper.make_node("Sigmoid", ["y0"], ["y"], name="sig"),
    ]
    inits = [F.const("i0", np.array(0, np.int64)), F.const("ax0", np.array([0], np.int64)),
             F.const("m1", np.array([-1], np.int64))]
    return F._model(nodes, [F.vi("x", [2, 4, 8])], [F.vi("y", [2, 32])], inits)


SHAPE_EDGE_GROUPS = [("tensorrt", ["shape", "gather", "unsq", "concat"]), ("tensorrt", ["relu", "unsq_r"]),
                     ("fallback", ["squeeze"]), ("tensorrt", ["reshape", "sig"])]


# -- item 3: outputs are the caller's ----------------------------------------------------------
def test_outputs_of_tensorrt_segments_are_copies_not_runner_buffers(gpu_here):
    m = load(F.mlp())
    hybrid = build_standin(trtlab.partition(m))
    assert list(hybrid.executors["executor"]) == ["tensorrt"]
    rng = np.random.default_rng(0)
    a = {"x": rng.standard_normal((2, 16)).astype(np.float32)}
    b = {"x": rng.standard_normal((2, 16)).astype(np.float32)}
    first = hybrid.run(a)
    kept = first["y"].copy()
    second = hybrid.run(b)
    # the stand-in reuses its output buffer like TrtRunner; the first result must not change
    np.testing.assert_array_equal(first["y"], kept)
    np.testing.assert_allclose(first["y"], run_onnx(m, a)["y"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(second["y"], run_onnx(m, b)["y"], rtol=1e-5, atol=1e-6)
    runner = StandInTrtRunner.created[0]
    for buffers in (runner.host_output_buffers, runner.device_output_buffers):
        assert all(not np.shares_memory(second["y"], b) for b in buffers.values())


def test_compare_keeps_each_batch_result(gpu_here):
    """compare() keeps outputs across batches: every batch must be scored on its own outputs."""
    from trtlab.study.accuracy import compare

    m = load(F.mlp())
    hybrid = build_standin(trtlab.partition(m))
    rng = np.random.default_rng(1)
    data = [{"x": rng.standard_normal((2, 16)).astype(np.float32)} for _ in range(3)]
    table = compare(m, {"hybrid": hybrid}, data)
    row = table[table["candidate"] == "hybrid"].iloc[0]
    assert row["max_abs"] < 1e-5 and bool(row["pass"])


# -- item 4 and device residency ----------------------------------------------------------------
def test_shape_tensor_between_tensorrt_segments_reaches_the_engine_on_the_host(gpu_here):
    m = load(shape_edge(), fold_constants=False)
    part = split(trtlab.partition(m, exclude_ops=["Squeeze"]), SHAPE_EDGE_GROUPS)
    feeds = {"x": np.random.default_rng(2).standard_normal((2, 4, 8)).astype(np.float32)}
    hybrid = build_standin(part, feeds=feeds)
    assert list(hybrid.executors["executor"]) == ["tensorrt", "tensorrt", "onnxruntime", "tensorrt"]
    out = hybrid.run(feeds)
    np.testing.assert_allclose(out["y"], run_onnx(m, feeds)["y"], rtol=1e-5, atol=1e-6)
    row = hybrid.last_copies["newshape"]
    assert row["producer"] == "trt_0" and row["consumers"] == "trt_3"
    assert row["resident"] and row["d2h"] == 1 and row["h2d"] == 0 and row["bytes"] == 16


def test_tensors_stay_on_the_device_between_tensorrt_segments(gpu_here):
    m = load(F.mlp())
    part = split(trtlab.partition(m), [("tensorrt", ["mm1", "add1"]), ("tensorrt", ["relu1", "gemm2", "softmax"])])
    hybrid = build_standin(part)
    feeds = {"x": np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)}
    out = hybrid.run(feeds)
    np.testing.assert_allclose(out["y"], run_onnx(m, feeds)["y"], rtol=1e-5, atol=1e-6)
    copies = hybrid.last_copies
    assert copies["h1"]["resident"] and copies["h1"]["d2h"] == 0 and copies["h1"]["h2d"] == 0
    assert copies["x"]["h2d"] == 1 and copies["x"]["bytes"] == 2 * 16 * 4
    assert copies["y"]["d2h"] == 1 and not copies["y"]["resident"]
    # the latency breakdown counts copies per boundary and per run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LatencyWarning)  # five runs are for counting, not timing
        stats = benchmark(hybrid, feeds, warmup=1, iterations=5, progress=False)
    frame = stats.copy_frame().set_index("tensor")
    assert list(frame.columns) == device.COPY_COLUMNS[1:]
    assert frame.loc["h1", "d2h"] == 0 and frame.loc["h1", "h2d"] == 0 and bool(frame.loc["h1", "resident"])
    assert frame.loc["x", "h2d"] == 1.0 and frame.loc["y", "d2h"] == 1.0


def test_no_copy_accounting_without_tensorrt_execution():
    m = load(F.mlp())
    hybrid = build(trtlab.partition(m), cache_dir=False, progress=False,
                   backends={"tensorrt": TensorRTBackend(builder=onnx_as_engine)})
    if set(hybrid.executors["executor"]) != {"onnxruntime"}:
        pytest.skip(f"engines run on this machine: {trt.info().reason}")
    hybrid.run({"x": np.zeros((2, 16), np.float32)})
    assert hybrid.last_copies == {}


# -- item 5: rebuilds release runners -----------------------------------------------------------
def test_widening_rebuild_deactivates_the_dropped_runner(gpu_here):
    m = load(F.conv_relu())
    hybrid = build_standin(trtlab.partition(m), shapes={"x": (1, 3, 8, 8)})
    rng = np.random.default_rng(4)
    small = {"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)}
    large = {"x": rng.standard_normal((4, 3, 8, 8)).astype(np.float32)}
    hybrid.run(small)
    first = StandInTrtRunner.created[-1]
    out = hybrid.run(large)
    np.testing.assert_allclose(out["y"], run_onnx(m, large)["y"], rtol=1e-5, atol=1e-5)
    assert hybrid.engine_table["rebuilds"].iloc[0] == 1
    assert first.deactivated == 1 and not first.is_active
    assert StandInTrtRunner.created[-1] is not first and StandInTrtRunner.created[-1].is_active
    hybrid.close()
    assert all(not r.is_active for r in StandInTrtRunner.created)


# -- item 5: engine validity, compute capabilities ----------------------------------------------
def _fake_trt_module(validity=None, with_enum=True):
    class Runtime:
        def __init__(self, logger):
            pass

    if validity is not None:
        Runtime.get_engine_validity = lambda self, data: (f"EngineValidity.{validity}", "SM mismatch: 8.9 vs 7.5")
    mod = types.SimpleNamespace(Runtime=Runtime, Logger=lambda *a: None)
    if with_enum:
        mod.ComputeCapability = types.SimpleNamespace(__members__={"NONE": 0, "CURRENT": 1, "SM75": 75, "SM86": 86})
    return mod


def test_engine_validity_uses_the_runtime_where_present():
    assert trt.engine_validity(b"x", _fake_trt_module("INVALID")) == ("INVALID", "SM mismatch: 8.9 vs 7.5")
    assert trt.engine_validity(b"x", _fake_trt_module(None)) == ("UNKNOWN", "")


def test_engine_refused_by_the_runtime_runs_on_onnxruntime(gpu_here, monkeypatch):
    monkeypatch.setattr(trt, "engine_validity", lambda data, trt_module=None: ("INVALID", "built for SM 12.0"))
    m = load(F.mlp())
    hybrid = build_standin(trtlab.partition(m))
    feeds = {"x": np.random.default_rng(5).standard_normal((2, 16)).astype(np.float32)}
    out = hybrid.run(feeds)
    np.testing.assert_allclose(out["y"], run_onnx(m, feeds)["y"], rtol=1e-5, atol=1e-6)
    row = hybrid.executors.iloc[0]
    assert row["executor"] == "onnxruntime" and "built for SM 12.0" in row["reason"]
    assert StandInTrtRunner.created == []


def test_rtx_compute_capabilities():
    assert (8, 0) in trt.RTX_RUNNABLE_CC and (8, 7) not in trt.RTX_RUNNABLE_CC
    assert trt.rtx_runnable_cc(_fake_trt_module(with_enum=True)) == {(7, 5), (8, 6)}
    assert trt.rtx_runnable_cc(_fake_trt_module(with_enum=False)) == trt.RTX_RUNNABLE_CC
    if trt.flavor() == "tensorrt_rtx":
        cc = trt.rtx_runnable_cc(trt.module())
        assert (8, 0) in cc and (8, 7) not in cc and (8, 6) in cc


# -- item 5: run detection -------------------------------------------------------------------
def test_run_detection_uses_cuda_python(monkeypatch):
    runtime = types.ModuleType("cuda.bindings.runtime")
    runtime.cudaGetDeviceCount = lambda: (0, 2)
    monkeypatch.setitem(sys.modules, "cuda", types.ModuleType("cuda"))
    monkeypatch.setitem(sys.modules, "cuda.bindings", types.ModuleType("cuda.bindings"))
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", runtime)
    assert trt._cuda_binding() == "cuda-python"
    runtime.cudaGetDeviceCount = lambda: (100, 0)  # cudaErrorNoDevice
    monkeypatch.setattr(trt, "_polygraphy_cuda", lambda: None)
    assert trt._cuda_binding() is None


def test_run_detection_falls_back_to_polygraphy_probe(monkeypatch):
    monkeypatch.setattr(trt, "_cuda_python", lambda: None)
    monkeypatch.setattr(trt, "_polygraphy_cuda", lambda: "polygraphy.cuda")
    assert trt._cuda_binding() == "polygraphy.cuda"


def test_polygraphy_probe_answers_without_a_cuda_runtime():
    import subprocess

    code = ("from trtlab.backends.tensorrt import flavor as trt\n"
            "import ctypes.util\n"
            "print(trt._polygraphy_cuda())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "PYTHONPATH": ":".join(sys.path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("None", "polygraphy.cuda")


# -- item 5: cache key, error recorder, timing / runtime cache -----------------------------------
def test_cache_key_names_the_gpu_model(monkeypatch):
    from trtlab.backends.base import CompileSettings

    keys = {}
    for gpu in ("NVIDIA GeForce RTX 3090", "NVIDIA RTX A6000"):
        info = trt.TrtInfo("tensorrt", "10.16.1", True, True, True, gpu, "8.6", "")
        monkeypatch.setattr(trt, "info", lambda info=info: info)
        monkeypatch.setattr(trt, "flavor", lambda: "tensorrt")
        monkeypatch.setattr(trt, "version", lambda: "10.16.1")
        keys[gpu] = trt_engine.cache_key(b"onnx", CompileSettings(), None)
    a, b = keys.values()
    assert a.digest != b.digest
    assert a.target == "sm8.6 NVIDIA GeForce RTX 3090" and b.target == "sm8.6 NVIDIA RTX A6000"
    aot = trt.TrtInfo("tensorrt_rtx", "1.7", True, True, False, None, None, "")
    monkeypatch.setattr(trt, "info", lambda: aot)
    assert trt_engine.engine_target() == "aot"


def test_error_recorder_does_not_declare_errors_fatal():
    if trt.flavor() is not None:
        mod = trt.module()
    else:
        class IErrorRecorder:
            def __init__(self):
                pass
        mod = types.SimpleNamespace(IErrorRecorder=IErrorRecorder)
    recorder = trt_engine._error_recorder(mod)
    code = getattr(getattr(mod, "ErrorCode", None), "INVALID_ARGUMENT", 3)
    assert recorder.report_error(code, "bad weights") is False
    assert recorder.num_errors() == 1 and recorder.get_error_desc(0) == "bad weights"


needs_rtx_build = pytest.mark.skipif(trt.flavor() != "tensorrt_rtx" or not trt.info().build,
                                     reason=f"needs TensorRT-RTX able to build here: {trt.info().reason}")


@needs_rtx_build
def test_rtx_build_writes_no_timing_cache(tmp_path, monkeypatch):
    from trtlab.backends.base import CompileSettings
    from trtlab.backends.tensorrt.cache import EngineCache

    seen = {}
    ptrt = trt_engine.polygraphy_trt()
    real = ptrt.CreateConfig

    def spy(**kwargs):
        seen.update(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(ptrt, "CreateConfig", spy)
    settings = CompileSettings(segment="s", cache=EngineCache(tmp_path))
    data = trt_engine.build_engine(F.mlp().SerializeToString(), None, settings)
    assert len(data) > 0
    assert seen["load_timing_cache"] is None
    assert not list(tmp_path.glob("timing-*"))


class _RuntimeCache:
    def __init__(self):
        self.blob = b""

    def deserialize(self, blob):
        self.blob = bytes(blob)
        return True

    def serialize(self):
        return self.blob + b"+kernels"


class _RuntimeConfig:
    def __init__(self):
        self.cache = None

    def create_runtime_cache(self):
        return _RuntimeCache()

    def set_runtime_cache(self, cache):
        self.cache = cache
        return True


class _RtxEngine(StandInEngine):
    def create_runtime_config(self):
        return _RuntimeConfig()

    def create_execution_context(self, config):
        return types.SimpleNamespace(engine=self, config=config)


def test_rtx_runner_uses_and_saves_the_runtime_cache(tmp_path, monkeypatch):
    from trtlab.backends.tensorrt.cache import EngineCache

    ptrt = types.SimpleNamespace(TrtRunner=StandInTrtRunner,
                                 EngineFromBytes=lambda data: (lambda: _RtxEngine(data)))
    monkeypatch.setattr(trt_engine, "polygraphy_trt", lambda: ptrt)
    monkeypatch.setattr(trt, "flavor", lambda: "tensorrt_rtx")
    monkeypatch.setattr(trt, "version", lambda: "1.7.1.116")
    monkeypatch.setattr(trt, "gpu", lambda: trt.GpuInfo("Stand-in RTX 4090", (8, 9), 1))
    cache = EngineCache(tmp_path)
    path = device.runtime_cache_path(cache)
    assert path.parent == tmp_path and "sm8.9" in path.name
    data = F.mlp().SerializeToString()
    runner = device.make_runner(data, "s", cache)
    assert runner.is_active and runner.loader.config.cache.blob == b""
    device.close_runner(runner)
    assert not runner.is_active and path.read_bytes() == b"+kernels"
    again = device.make_runner(data, "s", cache)
    assert again.loader.config.cache.blob == b"+kernels"
    device.close_runner(again)
    assert path.read_bytes() == b"+kernels+kernels"


# -- scripts/gpu_smoke.py -------------------------------------------------------------------------
def _smoke():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "gpu_smoke.py"
    spec = importlib.util.spec_from_file_location("gpu_smoke", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_smoke_stops_cleanly_where_engines_cannot_run(capsys):
    if trt.info().run:
        pytest.skip("engines run here: the smoke test would run for real")
    smoke = _smoke()
    assert smoke.main(["--models", "digits_cnn", "resnet_mini"]) == smoke.NEEDS_GPU
    out, err = capsys.readouterr()
    assert "digits_cnn" in out and "resnet_mini" in out and "need a GPU" in out
    assert "No GPU run:" in err and trt.info().reason in err
    assert smoke.main(["--models", "no_such_model"]) == 2


def test_gpu_smoke_row_on_stand_in_runners(gpu_here, monkeypatch, tmp_path):
    """The GPU branch of the smoke test, with stand-in engines: it runs on "TensorRT", matches ONNX
    Runtime, counts copies, and refuses to call a stand-in engine a post-fusion view."""
    import trtlab.backends.tensorrt.backend as trt_backend

    monkeypatch.setattr(trt_backend, "build_engine", onnx_as_engine)
    smoke = _smoke()
    row = smoke.check_model("digits_cnn", "fp32", tmp_path, iterations=3)
    assert row["executors"] == "tensorrt" and row["match"] is True and row["engines"] == 1
    assert row["h2d"] == 1 and row["d2h"] == 1 and row["resident"] == 0
    assert row["median_ms"] > 0
    # a stand-in engine is no TensorRT engine: the inspector must not pass it as one
    assert row["fusion"] != "post-fusion" and row["status"].startswith("FAIL") and "engine inspector" in row["status"]
    assert set(row) == set(smoke.COLUMNS)
