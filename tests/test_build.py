"""Engine builds with TensorRT (TensorRT-RTX builds ahead of time here, without a GPU)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import factories as F
import trtlab
from trtlab.backends.tensorrt import flavor as trt
from trtlab.backends.base import CompileSettings
from trtlab.backends.tensorrt.backend import TensorRTBackend
from trtlab.backends.tensorrt.engine import build_engine
from trtlab.backends.tensorrt.isolate import isolate_build_failure, submodel
from trtlab.backends.tensorrt.profiles import input_ranges, segment_profile, shape_table
from trtlab.codegen import build
from trtlab.errors import BuildError, InputError, PrecisionError
from trtlab.model import load
from trtlab.backends.onnxruntime.session import run_onnx

needs_build = pytest.mark.skipif(not trt.info().build, reason=f"TensorRT cannot build engines here: {trt.info().reason}")


def topk_too_large():
    """x[1,1,100,100] -> Relu -> Reshape[1,-1] -> TopK(k=5000) -> values -> Sigmoid -> y ; indices -> idx

    The ONNX parser accepts TopK, but TensorRT refuses K > 3840 when it builds the engine.
    """
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "flat_shape"], ["f"], name="flat"),
        helper.make_node("TopK", ["f", "k"], ["v", "idx"], name="topk"),
        helper.make_node("Sigmoid", ["v"], ["y"], name="sig"),
    ]
    inits = [F.const("flat_shape", np.array([1, -1], np.int64)), F.const("k", np.array([5000], np.int64))]
    return F._model(nodes, [F.vi("x", [1, 1, 100, 100])],
                    [F.vi("y", [1, 5000]), F.vi("idx", [1, 5000], TensorProto.INT64)], inits)


def sigmoid_chain():
    """x[2,8] -> Relu -> Sigmoid -> Tanh -> Abs -> y"""
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Sigmoid", ["a"], ["b"], name="sig"),
             helper.make_node("Tanh", ["b"], ["c"], name="tanh"),
             helper.make_node("Abs", ["c"], ["y"], name="abs")]
    return F._model(nodes, [F.vi("x", [2, 8])], [F.vi("y", [2, 8])])


def conv_feeds(batch, seed=0):
    return {"x": np.random.default_rng(seed).standard_normal((batch, 3, 8, 8)).astype(np.float32)}


CONV_SHAPES = {"x": ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))}


# -- engines ----------------------------------------------------------------------------------

@needs_build
def test_build_engine_static_model():
    data = build_engine(F.mlp().SerializeToString())
    assert isinstance(data, bytes)
    assert len(data) > 1000


@needs_build
def test_build_engine_dynamic_needs_profile_and_uses_it():
    model = F.conv_relu().SerializeToString()
    profile = (("x", CONV_SHAPES["x"]),)
    small = build_engine(model, profile, CompileSettings(opt_level=0))
    assert len(small) > 1000
    with pytest.raises(BuildError) as info:
        build_engine(b"not an onnx model")
    assert info.value.stage == "parse"


@needs_build
def test_build_engine_reports_builder_error():
    with pytest.raises(BuildError, match="K exceeds the maximum") as info:
        build_engine(topk_too_large().SerializeToString(), settings=CompileSettings(segment="trt_0"))
    assert info.value.stage == "build"
    assert "trt_0" in str(info.value)


# -- shapes -----------------------------------------------------------------------------------

def test_input_ranges_forms_and_defaults():
    m = load(F.conv_relu())
    assert input_ranges(m) == {}  # a dynamic dim is never invented
    assert input_ranges(m, defaults=True) == {"x": ((1, 3, 8, 8),) * 3}
    assert input_ranges(m, {"x": (2, 3, 8, 8)}) == {"x": ((2, 3, 8, 8),) * 3}
    assert input_ranges(m, CONV_SHAPES) == CONV_SHAPES
    as_dict = input_ranges(m, {"x": {"min": (1, 3, 8, 8), "opt": (2, 3, 8, 8), "max": (4, 3, 8, 8)}})
    assert as_dict == CONV_SHAPES


@pytest.mark.parametrize("shapes, match", [
    ({"nope": (1, 3, 8, 8)}, "not tensors of model"),
    ({"x": (1, 3, 8)}, "rank 3"),
    ({"x": (1, 5, 8, 8)}, "axis 1 must be 3"),
    ({"x": ((4, 3, 8, 8), (2, 3, 8, 8), (1, 3, 8, 8))}, "min <= opt <= max"),
    ({"x": "big"}, "not a shape"),
    ({"x": (0, 3, 8, 8)}, "below 1"),
])
def test_input_ranges_bad(shapes, match):
    with pytest.raises(InputError, match=match):
        input_ranges(load(F.conv_relu()), shapes)


def test_shape_table_and_segment_profile():
    m = load(F.conv_relu())
    table = shape_table(m.proto, CONV_SHAPES)
    assert table["c"] == ((1, 4, 8, 8), (2, 4, 8, 8), (4, 4, 8, 8))
    sub = submodel(m.proto, ["relu"])
    assert [i.name for i in sub.graph.input] == ["c"]
    assert segment_profile(sub, table, {}) == (("c", table["c"]),)
    assert segment_profile(submodel(F.mlp(), ["relu1"]), {}, {}) is None
    del table["c"]
    with pytest.raises(BuildError, match="shapes=\\{'c'"):
        segment_profile(sub, table, {}, "trt_1")


# -- build() ----------------------------------------------------------------------------------

@needs_build
def test_build_single_segment_and_run_matches_ort(tmp_path):
    m = load(F.conv_relu())
    hybrid = build(trtlab.partition(m), cache_dir=tmp_path, shapes=CONV_SHAPES, progress=False)
    assert len(hybrid.segments) == 1
    assert len(hybrid.engines[0]) > 1000
    feeds = conv_feeds(3)
    np.testing.assert_allclose(hybrid.run(feeds)["y"], run_onnx(m, feeds)["y"], rtol=1e-5, atol=1e-5)
    row = hybrid.executors.iloc[0]
    assert row["backend"] == "tensorrt"
    assert row["executor"] == ("tensorrt" if trt.info().run else "onnxruntime")
    assert row["executor"] in repr(hybrid)


@needs_build
def test_cache_hit_on_rebuild_and_miss_on_changes(tmp_path, monkeypatch):
    part = trtlab.partition(load(F.conv_relu()))
    first = build(part, cache_dir=tmp_path, shapes=CONV_SHAPES, progress=False)
    again = build(part, cache_dir=tmp_path, shapes=CONV_SHAPES, progress=False)
    assert first.cache_report()["status"].tolist() == ["miss"]
    report = again.cache_report()
    assert report["status"].tolist() == ["hit"]
    assert report.loc[0, "target"] == ("aot" if not trt.info().run else report.loc[0, "target"])
    assert report.loc[0, "flavor"] == trt.flavor()
    assert again.engines[0] == first.engines[0]

    other_shape = build(part, cache_dir=tmp_path, shapes={"x": ((1, 3, 8, 8), (2, 3, 8, 8), (8, 3, 8, 8))},
                        progress=False)
    assert other_shape.cache_report()["status"].tolist() == ["miss"]
    fp16 = build(part, cache_dir=tmp_path, shapes=CONV_SHAPES, precision="fp16", progress=False)
    assert fp16.cache_report()["status"].tolist() == ["miss"]
    assert fp16.cache_report().loc[0, "precision"] == "fp16"

    real_version = trt.version()
    monkeypatch.setattr(trt, "version", lambda: real_version + "-other")
    other_version = build(part, cache_dir=tmp_path, shapes=CONV_SHAPES, progress=False)
    assert other_version.cache_report()["status"].tolist() == ["miss"]
    from trtlab.backends.tensorrt import engine as build_module

    monkeypatch.setattr(build_module, "engine_target", lambda: "sm8.9")
    other_target = build(part, cache_dir=tmp_path, shapes=CONV_SHAPES, progress=False)
    assert other_target.cache_report()["status"].tolist() == ["miss"]
    assert other_target.cache_report().loc[0, "target"] == "sm8.9"


def test_cache_key_depends_on_flavor(monkeypatch):
    from trtlab.backends.tensorrt.engine import cache_key

    settings = CompileSettings()
    here = cache_key(b"onnx", settings, None)
    real_version = trt.version()
    monkeypatch.setattr(trt, "flavor", lambda: "tensorrt")
    monkeypatch.setattr(trt, "version", lambda: real_version)
    other = cache_key(b"onnx", settings, None)
    assert other.flavor == "tensorrt"
    assert here.digest != other.digest


@needs_build
def test_corrupt_cache_entry_is_rebuilt(tmp_path):
    part = trtlab.partition(load(F.mlp()))
    first = build(part, cache_dir=tmp_path, progress=False)
    path = first.cache_report().loc[0, "path"]
    with open(path, "r+b") as fh:
        fh.seek(-10, 2)
        fh.write(b"\0" * 10)
    again = build(part, cache_dir=tmp_path, progress=False)
    assert again.cache_report()["status"].tolist() == ["corrupt"]
    assert again.engines[0] == first.engines[0]
    assert build(part, cache_dir=tmp_path, progress=False).cache_report()["status"].tolist() == ["hit"]


@needs_build
def test_dynamic_batch_single_rebuilds_wider(tmp_path):
    hybrid = build(trtlab.partition(load(F.conv_relu())), cache_dir=tmp_path, shapes=CONV_SHAPES,
                   dynamic_batch="single", progress=False)
    hybrid.run(conv_feeds(2))
    hybrid.run(conv_feeds(4))
    assert hybrid.engine_count == 1
    assert hybrid.engine_table.loc[0, "rebuilds"] == 0
    hybrid.run(conv_feeds(8))
    table = hybrid.engine_table
    assert hybrid.engine_count == 1
    assert table.loc[0, "rebuilds"] == 1
    assert "[1, 3, 8, 8]..[8, 3, 8, 8]" in table.loc[0, "profile"]


@needs_build
def test_dynamic_batch_per_shape_one_engine_per_batch(tmp_path):
    hybrid = build(trtlab.partition(load(F.conv_relu())), cache_dir=tmp_path, shapes=CONV_SHAPES,
                   dynamic_batch="per_shape", progress=False)
    assert hybrid.engine_count == 1  # the opt shape, built eagerly
    for batch in (1, 2, 3, 1):
        out = hybrid.run(conv_feeds(batch))
        assert out["y"].shape == (batch, 4, 8, 8)
    assert hybrid.engine_count == 3
    assert hybrid.engine_bytes == int(hybrid.engine_table["bytes"].sum())
    assert sorted(hybrid.engine_table["profile"]) == sorted(
        f"x: [{b}, 3, 8, 8]..[{b}, 3, 8, 8] (opt [{b}, 3, 8, 8])" for b in (1, 2, 3))


@needs_build
def test_lazy_build_waits_for_first_run(tmp_path):
    hybrid = build(trtlab.partition(load(F.mlp())), cache_dir=tmp_path, eager=False, progress=False)
    assert hybrid.engine_count == 0
    hybrid.run({"x": np.ones((2, 16), np.float32)})
    assert hybrid.engine_count == 1


@needs_build
def test_workspace_and_opt_level_are_in_the_key(tmp_path):
    part = trtlab.partition(load(F.mlp()))
    a = build(part, cache_dir=tmp_path, workspace=1 << 24, opt_level=0, progress=False).cache_report()
    b = build(part, cache_dir=tmp_path, workspace=1 << 25, opt_level=0, progress=False).cache_report()
    assert '"workspace":16777216' in a.loc[0, "settings"] and '"opt_level":0' in a.loc[0, "settings"]
    assert a.loc[0, "key"] != b.loc[0, "key"]


def test_bad_options():
    part = trtlab.partition(load(F.mlp()))
    with pytest.raises(BuildError, match="dynamic_batch"):
        build(part, dynamic_batch="many", cache_dir=False)
    with pytest.raises(BuildError, match="on_build_failure"):
        build(part, on_build_failure="ignore", cache_dir=False)
    with pytest.raises(PrecisionError, match="int4"):
        build(part, precision="int4", cache_dir=False)
    with pytest.raises(PrecisionError, match="segment\\(s\\) \\[7\\]"):
        build(part, precision={7: "fp16"}, cache_dir=False)
    from trtlab.errors import CalibrationError
    with pytest.raises(CalibrationError, match="calibration_data"):
        build(part, precision="int8", cache_dir=False)


# -- build-verified partitions ---------------------------------------------------------------------

@needs_build
def test_build_failure_raises_when_asked(tmp_path):
    part = trtlab.partition(load(topk_too_large()))
    assert [s.backend for s in part.segments] == ["tensorrt"]
    with pytest.raises(BuildError, match="K exceeds the maximum"):
        build(part, cache_dir=tmp_path, on_build_failure="raise", progress=False)


@needs_build
def test_build_failure_moves_the_failing_node_to_fallback(tmp_path):
    m = load(topk_too_large())
    hybrid = build(trtlab.partition(m), cache_dir=tmp_path, progress=False)
    assert [n for n, _ in hybrid.moved] == ["topk"]
    by_node = {s.name: (s.backend, s.nodes) for s in hybrid.segments}
    assert [b for b, _ in by_node.values()] == ["tensorrt", "fallback", "tensorrt"]
    assert [nodes for _, nodes in by_node.values()] == [("relu", "flat"), ("topk",), ("sig",)]
    decisions = hybrid.partition.decisions
    row = decisions[decisions["kind"] == "build_failed"]
    assert row["subject"].tolist() == ["topk"]
    assert "K exceeds the maximum" in row["reason"].iloc[0]
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 1, 100, 100)).astype(np.float32)}
    out, ref = hybrid.run(feeds), run_onnx(m, feeds)
    np.testing.assert_allclose(out["y"], ref["y"], rtol=1e-6)
    np.testing.assert_array_equal(out["idx"], ref["idx"])


def test_isolation_with_injected_failing_builder():
    """A builder that refuses Tanh: bisection finds 'tanh', whatever the chain length."""
    calls = []

    def refuse_tanh(data, profile, settings=None):
        calls.append(1)
        model = onnx.load_from_string(data)
        if any(n.op_type == "Tanh" for n in model.graph.node):
            raise _stage_error("Tanh is not implemented")
        return b"engine"

    culprit, error = isolate_build_failure(sigmoid_chain(), None, refuse_tanh)
    assert (culprit, error) == ("tanh", "Tanh is not implemented")
    assert len(calls) <= 4

    m = load(sigmoid_chain())
    hybrid = build(trtlab.partition(m), cache_dir=False, progress=False,
                   backends={"tensorrt": TensorRTBackend(builder=refuse_tanh)})
    assert [s.backend for s in hybrid.segments] == ["tensorrt", "fallback", "tensorrt"]
    assert hybrid.moved[0][0] == "tanh"
    feeds = {"x": np.linspace(-2, 2, 16, dtype=np.float32).reshape(2, 8)}
    np.testing.assert_allclose(hybrid.run(feeds)["y"], run_onnx(m, feeds)["y"], rtol=1e-6)


def _stage_error(message):
    exc = BuildError(message)
    exc.stage = "build"
    exc.errors = [message]
    return exc


def test_custom_backend_from_a_notebook():
    """A teaching backend: ONNX's reference evaluator runs the accelerated segments."""

    class ReferenceBackend:
        name = "reference"

        def check_support(self, model):
            return trtlab.check_support(model, source="rules")

        def compile(self, segment_model, settings):
            from onnx.reference import ReferenceEvaluator

            evaluator = ReferenceEvaluator(segment_model)
            names = [o.name for o in segment_model.graph.output]

            def run(feeds):
                return dict(zip(names, evaluator.run(None, dict(feeds))))

            run.executor = "onnx.reference"
            return run

    from trtlab.backends.base import Backend

    assert isinstance(ReferenceBackend(), Backend)
    m = load(F.mlp())
    part = trtlab.partition(m, backend="reference", exclude_nodes=["relu1"])
    hybrid = build(part, cache_dir=False, progress=False, backends={"reference": ReferenceBackend()})
    assert hybrid.executors["executor"].tolist() == ["onnx.reference", "onnxruntime", "onnx.reference"]
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)}
    np.testing.assert_allclose(hybrid.run(feeds)["y"], run_onnx(m, feeds)["y"], rtol=1e-5, atol=1e-6)


@needs_build
def test_int8_calibration_data_forms():
    from trtlab.errors import CalibrationError

    part = trtlab.partition(load(F.mlp()), exclude_nodes=["relu1"])
    x = np.random.default_rng(0).standard_normal((6, 16)).astype(np.float32)
    forms = {"array": x, "dataset dict with labels": {"x": x, "labels": np.arange(6)},
             "generator": ({"x": x[i:i + 2]} for i in range(0, 6, 2))}
    for form, data in forms.items():
        hybrid = build(part, precision="int8", calibration_data=data, cache_dir=False, progress=False)
        assert hybrid.executors["precision"].tolist() == ["int8", "fp32", "int8"], form
        assert "QuantizeLinear" in {n.op_type for n in hybrid.segment_models[2].graph.node}, form
    with pytest.raises(CalibrationError, match="size 5 on axis 1"):
        build(part, precision="int8", calibration_data={"x": x[:, :5]}, cache_dir=False, progress=False)


@needs_build
def test_unwritable_cache_dir_still_builds(tmp_path, monkeypatch, caplog):
    import tempfile

    locked = tmp_path / "locked"
    locked.mkdir()
    real_mkstemp, real_tempfile = tempfile.mkstemp, tempfile.TemporaryFile

    def deny(real):
        def call(*args, dir=None, **kwargs):
            if dir is not None and str(dir) == str(locked):
                raise PermissionError(13, "Permission denied", str(dir))
            return real(*args, dir=dir, **kwargs)
        return call

    monkeypatch.setattr(tempfile, "mkstemp", deny(real_mkstemp))
    monkeypatch.setattr(tempfile, "TemporaryFile", deny(real_tempfile))
    with caplog.at_level("WARNING"):
        hybrid = build(trtlab.partition(load(F.mlp())), cache_dir=locked, progress=False)
    assert len(hybrid.engines[0]) > 1000
    assert list(locked.iterdir()) == []
    assert "engine not cached" in caplog.text
    if trt.flavor() == "tensorrt":  # TensorRT-RTX has no timing cache to write
        assert "not writable" in caplog.text
    feeds = {"x": np.ones((2, 16), np.float32)}
    np.testing.assert_allclose(hybrid.run(feeds)["y"], run_onnx(F.mlp(), feeds)["y"], rtol=1e-5, atol=1e-6)


# -- builds in worker processes ------------------------------------------------------------------

def test_segfaulting_build_worker_is_a_recorded_failure_and_isolated():
    """A build that kills its worker with SIGSEGV: this process survives, Tanh moves to fallback."""
    import os

    import build_standins
    from trtlab.backends.tensorrt.workers import BuildPool

    m = load(sigmoid_chain())
    pool = BuildPool(workers=2, timeout=120)
    part = trtlab.partition(m, backend=TensorRTBackend(builder=build_standins.segfault_on_tanh, pool=pool))
    pid = os.getpid()
    try:
        with pytest.warns(trtlab.codegen.BuildWarning, match="tanh \\(Tanh\\).*signal 11"):
            hybrid = build(part, cache_dir=False, progress=False)
    finally:
        pool.shutdown()
    assert os.getpid() == pid
    assert [n for n, _ in hybrid.moved] == ["tanh"]
    reason = hybrid.partition.moved.set_index("node").loc["tanh", "reason"]
    assert "TensorRT crashed with signal 11 (SIGSEGV) while building trt_0" in reason
    assert pool.replaced >= 1
    assert [s.backend for s in hybrid.partition.segments] == ["tensorrt", "fallback", "tensorrt"]
    feeds = {"x": np.linspace(-2, 2, 16, dtype=np.float32).reshape(2, 8)}
    np.testing.assert_allclose(hybrid.run(feeds)["y"], run_onnx(m, feeds)["y"], rtol=1e-6)


def test_crash_signal_is_read_while_the_pool_reaps_the_worker():
    """The pool's manager thread reaps a dead worker concurrently: for a moment ``exitcode`` reads
    None (or ``join`` raises). The signal must still be reported, not 'exit code None'."""
    from types import SimpleNamespace

    from trtlab.backends.tensorrt import workers

    class Reaping:
        def __init__(self, reads_before_known):
            self.reads = reads_before_known
            self._popen = SimpleNamespace(returncode=None)

        def join(self, timeout=None):
            self.reads -= 1
            if self.reads == 1:
                raise OSError("[Errno 10] No child processes")
            if self.reads <= 0:
                self._popen.returncode = -11

        @property
        def exitcode(self):
            return self._popen.returncode

    pool = SimpleNamespace(_processes={1: Reaping(3)})
    assert workers._exit_codes(pool) == [-11]
    gone = SimpleNamespace(_processes={1: SimpleNamespace(join=lambda timeout=None: None, exitcode=None)})
    assert workers._exit_codes(gone, wait=0.3) == [None]


def test_hung_build_times_out_and_is_isolated():
    import build_standins
    from trtlab.backends.tensorrt.workers import BuildPool

    pool = BuildPool(workers=1, timeout=5)
    part = trtlab.partition(load(sigmoid_chain()),
                            backend=TensorRTBackend(builder=build_standins.hang_on_tanh, pool=pool))
    try:
        with pytest.warns(trtlab.codegen.BuildWarning, match="did not finish within 5 s"):
            hybrid = build(part, cache_dir=False, progress=False)
    finally:
        pool.shutdown()
    assert [n for n, _ in hybrid.moved] == ["tanh"]


def test_failing_groups_move_at_once_with_few_builds():
    """Two failing nodes in a 40-node chain: one isolation pass finds both."""
    import build_standins
    from trtlab.backends.tensorrt.workers import BuildPool

    ops = ["Relu", "Sigmoid"] * 20
    ops[11], ops[29] = "Tanh", "Abs"
    nodes = [helper.make_node(op, [f"t{i}"], [f"t{i + 1}"], name=f"n{i}") for i, op in enumerate(ops)]
    model = F._model(nodes, [F.vi("t0", [2, 8])], [F.vi(f"t{len(ops)}", [2, 8])])
    pool = BuildPool(workers=2, timeout=120)
    part = trtlab.partition(load(model),
                            backend=TensorRTBackend(builder=build_standins.refuse_tanh_and_abs, pool=pool))
    try:
        with pytest.warns(trtlab.codegen.BuildWarning, match="2 node"):
            hybrid = build(part, cache_dir=False, progress=False)
    finally:
        pool.shutdown()
    assert sorted(n for n, _ in hybrid.moved) == ["n11", "n29"]
    assert hybrid.isolation_builds <= 16  # one node at a time with full rebuilds took ~2 x 40
    assert len(hybrid.partition.segments) == 5


def test_build_raise_mode_reports_the_crash():
    import build_standins
    from trtlab.backends.tensorrt.workers import BuildPool

    pool = BuildPool(workers=1, timeout=120)
    part = trtlab.partition(load(sigmoid_chain()),
                            backend=TensorRTBackend(builder=build_standins.segfault_on_tanh, pool=pool))
    try:
        with pytest.raises(BuildError, match="crashed with signal 11"):
            build(part, cache_dir=False, progress=False, on_build_failure="raise")
    finally:
        pool.shutdown()


# -- shapes from data ------------------------------------------------------------------------------

def reshape_from_cut():
    """x[2,3,4] -> Relu -> r ; Shape(x) -> Slice[0:1] -> b ; Concat(b, [12]) -> t (a shape tensor)
    Reshape(r, t) -> Sigmoid -> y[2,12]

    With Concat in fallback, the TensorRT segment holding Reshape reads its target shape ``t``
    from the cut: a shape-tensor segment input.
    """
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Slice", ["s", "zero", "one"], ["b"], name="slice"),
             helper.make_node("Concat", ["b", "twelve"], ["t"], name="concat", axis=0),
             helper.make_node("Reshape", ["r", "t"], ["f"], name="reshape"),
             helper.make_node("Sigmoid", ["f"], ["y"], name="sig")]
    inits = [F.const("zero", np.array([0], np.int64)), F.const("one", np.array([1], np.int64)),
             F.const("twelve", np.array([12], np.int64))]
    return F._model(nodes, [F.vi("x", [2, 3, 4])], [F.vi("y", [2, 12])], inits)


@needs_build
def test_shape_tensor_segment_input_builds_with_its_observed_value(tmp_path):
    m = load(reshape_from_cut(), fold_constants=False)
    part = trtlab.partition(m, exclude_nodes=["concat"])
    seg = next(s for s in part.segments if "reshape" in s.nodes)
    assert "t" in seg.inputs and seg.backend == "tensorrt"
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)}
    hybrid = build(part, feeds=feeds, cache_dir=tmp_path, progress=False)
    assert hybrid.moved == []  # with values 1 for 't' the build failed: "Reshaping [2,3,4] to [1,1]"
    exe = hybrid.executables[seg.index]
    assert exe.values == (("t", ((2, 12), (2, 12), (2, 12))),)
    assert exe.engines and exe.engines[0].values == exe.values
    np.testing.assert_allclose(hybrid.run(feeds)["y"], run_onnx(m, feeds)["y"], rtol=1e-6)


@needs_build
def test_shape_tensor_cut_without_feeds_builds_at_first_run(tmp_path):
    m = load(reshape_from_cut(), fold_constants=False)
    part = trtlab.partition(m, exclude_nodes=["concat"])
    with pytest.warns(trtlab.codegen.LazyBuildWarning, match="shape tensors"):
        hybrid = build(part, cache_dir=tmp_path, progress=False)
    assert not hybrid.built and hybrid.engine_count == 0
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)}
    np.testing.assert_allclose(hybrid.run(feeds)["y"], run_onnx(m, feeds)["y"], rtol=1e-6)
    assert hybrid.built and hybrid.moved == []


def test_dynamic_dims_without_feeds_build_lazily_once(tmp_path, recwarn):
    m = load(F.conv_relu())
    part = trtlab.partition(m, backend=TensorRTBackend(builder=_fake_engine))
    hybrid = build(part, cache_dir=False, progress=False)
    lazy = [w for w in recwarn if issubclass(w.category, trtlab.codegen.LazyBuildWarning)]
    assert len(lazy) == 1 and "['x'] have dynamic dims" in str(lazy[0].message)
    assert not hybrid.built
    assert hybrid.executors["executor"].tolist() == ["not built (first run)"]
    out = hybrid.run(conv_feeds(3))
    np.testing.assert_allclose(out["y"], run_onnx(m, conv_feeds(3))["y"], rtol=1e-5, atol=1e-6)
    assert hybrid.built
    assert hybrid.engine_table["profile"].tolist() == ["x: [3, 3, 8, 8]..[3, 3, 8, 8] (opt [3, 3, 8, 8])"]
    hybrid.run(conv_feeds(3))
    assert hybrid.engine_count == 1  # no silent rebuild for the same shapes
    assert len([w for w in recwarn if issubclass(w.category, trtlab.codegen.LazyBuildWarning)]) == 1


def _fake_engine(data, profile, settings=None):
    return b"fake-engine"


def test_feeds_give_every_segment_its_profile(tmp_path):
    m = load(F.conv_relu())
    part = trtlab.partition(m, exclude_nodes=["relu"], backend=TensorRTBackend(builder=_fake_engine))
    examples = [conv_feeds(2), conv_feeds(4), conv_feeds(1)]
    np.savez(tmp_path / "one.npz", **conv_feeds(2), labels=np.arange(2))
    hybrid = build(part, feeds=examples, cache_dir=False, progress=False)
    assert hybrid.executors["profile"].tolist() == [
        "x: [1, 3, 8, 8]..[4, 3, 8, 8] (opt [2, 3, 8, 8])", "c: [1, 4, 8, 8]..[4, 4, 8, 8] (opt [2, 4, 8, 8])"]
    from_npz = build(part, feeds=tmp_path / "one.npz", cache_dir=False, progress=False)
    assert from_npz.executors["profile"].tolist()[0] == "x: [2, 3, 8, 8]..[2, 3, 8, 8] (opt [2, 3, 8, 8])"
    with pytest.raises(InputError, match="feeds\\[0\\]"):
        build(part, feeds={"x": np.zeros((2, 5, 8, 8), np.float32)}, cache_dir=False)
    with pytest.raises(InputError, match="not a file"):
        build(part, feeds=tmp_path / "missing.npz", cache_dir=False)


@needs_build
def test_detection_postproc_warns_about_nms_and_runs_the_verified_partition(tmp_path):
    from trtlab import zoo

    model = zoo.load("detection_postproc")
    part = trtlab.partition(model)
    assert len(part.segments) == 5  # what the parser promises
    feeds = zoo.example_inputs("detection_postproc", batch=1)
    with pytest.warns(trtlab.codegen.BuildWarning, match="NonMaxSuppression") as record:
        hybrid = build(part, feeds=feeds, cache_dir=tmp_path, progress=False)
    assert len([w for w in record if issubclass(w.category, trtlab.codegen.BuildWarning)]) == 1
    assert len(hybrid.partition.segments) == 8
    decisions = hybrid.partition.decisions
    moved = decisions[decisions["kind"] == "build_failed"]["subject"].tolist()
    assert [model.node(n).op_type for n in moved] == ["NonMaxSuppression"]
    out, ref = hybrid.run(feeds), run_onnx(model, feeds)
    for k in ref:
        np.testing.assert_allclose(out[k], ref[k], rtol=1e-4, atol=1e-5)


def test_ort_threads_policy():
    from trtlab.codegen import _ort_threads

    assert _ort_threads("auto", 1) == (None, True)
    assert _ort_threads("auto", 5) == (1, True)
    assert _ort_threads("default", 5) == (None, True)
    assert _ort_threads(1, 5) == (1, True)
    with pytest.raises(BuildError, match="ort_threads"):
        _ort_threads(0, 2)
    m = load(F.mlp())
    part = trtlab.partition(m, exclude_nodes=["relu1"], backend="onnxruntime")
    hybrid = build(part, cache_dir=False, progress=False, ort_threads=1)
    sessions = [exe.session for exe in hybrid.executables.values()]
    assert [s.get_session_options().intra_op_num_threads for s in sessions] == [1, 1, 1]


@needs_build
def test_small_integer_data_inputs_do_not_bind_the_engine(tmp_path):
    """Gather indices are data, not a shape tensor: new index values reuse the engine."""
    nodes = [helper.make_node("Gather", ["x", "idx"], ["g"], name="gather", axis=1),
             helper.make_node("Relu", ["g"], ["y"], name="relu")]
    m = load(F._model(nodes, [F.vi("x", [2, 5]), F.vi("idx", [3], TensorProto.INT64)], [F.vi("y", [2, 3])]))
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    hybrid = build(trtlab.partition(m), feeds={"x": x, "idx": np.array([0, 1, 2])}, cache_dir=tmp_path,
                   progress=False)
    exe = hybrid.executables[0]
    assert exe.values == (("idx", ((0, 1, 2),) * 3),)  # observed, offered to the builder
    assert exe.engines[0].values is None  # TensorRT said idx is no shape tensor
    for idx in ([4, 3, 1], [2, 2, 0]):
        feeds = {"x": x, "idx": np.array(idx)}
        np.testing.assert_allclose(hybrid.run(feeds)["y"], run_onnx(m, feeds)["y"], rtol=1e-6)
    assert hybrid.engine_count == 1 and exe.rebuilds == 0


# -- ONNX backend test cases (conformance regressions) -----------------------------------------

@needs_build
def test_data_dependent_shapes_build_at_the_first_run_from_the_users_data(monkeypatch):
    """NonZero's output size depends on the data: build() does not invent inputs to learn it;
    the engine is built when real data arrives."""
    from backend_cases import feeds, load_case
    from trtlab.backends.onnxruntime import session as ort

    case = load_case("node/test_nonzero_example")
    proto = case.model
    # A TensorRT segment after the data-dependent tensor: Transpose reads NonZero's output.
    proto.graph.node.append(helper.make_node("Transpose", ["result"], ["t"], name="tr", perm=[1, 0]))
    proto.graph.output[0].name = "t"
    model = load(proto)
    support = {n: (n == "tr", "test") for n in model.node_names}
    part = trtlab.partition(model, support=support)
    calls = []
    real_session = ort.session
    monkeypatch.setattr(ort, "session", lambda *a, **k: calls.append(a) or real_session(*a, **k))
    hybrid = build(part, progress=False, cache_dir=False)
    trt_seg = next(hybrid.executables[s.index] for s in hybrid.segments if s.backend == "tensorrt")
    assert trt_seg.engines == []
    out = hybrid.run(feeds(case))
    np.testing.assert_array_equal(out["t"], case.data_sets[0][1][0].T)
    assert len(trt_seg.engines) == 1


def test_calibration_data_the_model_cannot_run_raise_calibration_error():
    from trtlab.errors import CalibrationError
    from trtlab.backends.tensorrt.profiles import _boundary_values

    model = load(F.mlp())
    bad = [{"x": np.ones((3, 16), np.float32)}]  # batch 3 where the model says 2
    with pytest.raises(CalibrationError, match="calibration batch 0"):
        _boundary_values(model, bad, ["h1"] if "h1" in model._known_tensors else [model.nodes.outputs[0][0]])


@needs_build
def test_segment_inputs_of_unknown_rank_move_their_readers_to_fallback():
    """ReduceSum's output has no rank shape inference can give; TensorRT would read such a cut
    tensor as a scalar. Its shape comes from the example inputs, and the hybrid matches the
    backend suite's expected output."""
    from backend_cases import feeds, load_case

    case = load_case("node/test_reduce_log_sum_asc_axes_expanded")
    model = load(case.model)
    part = trtlab.partition(model, support=trtlab.check_support(model, source="rules"))
    hybrid = build(part, feeds=feeds(case), progress=False, cache_dir=False)
    assert hybrid.built
    # the reader of the rank-unknown tensor builds, or moves to ONNX Runtime with the builder's reason
    assert [n for n, _ in hybrid.moved] in ([], ["Log_1"])
    assert all("build failed" in why for _, why in hybrid.moved)
    out = hybrid.run(feeds(case))
    np.testing.assert_allclose(out[model.outputs[0].name], case.data_sets[0][1][0], rtol=1e-5)


def test_an_fp32_onnxruntime_hybrid_imports_no_precision_pandas_or_progress_bar(tmp_path):
    """What a ready FP32 hybrid costs in memory includes its imports: only what runs is imported."""
    import os
    import subprocess
    import sys

    path = tmp_path / "mlp.onnx"
    onnx.save(F.mlp(), str(path))
    code = (
        "import sys, numpy as np, trtlab\n"
        f"model = trtlab.load({str(path)!r})\n"
        "everything = {n: (False, 'one segment') for n in model.node_names}\n"
        "hybrid = trtlab.build(trtlab.partition(model, support=everything), cache_dir=False, progress=False)\n"
        "hybrid.run({'x': np.ones((2, 16), np.float32)})\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pandas', 'tqdm', 'asyncio', 'matplotlib'}),\n"
        "      sorted(m for m in sys.modules if m.startswith('trtlab.precision')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TRTLAB_PROGRESS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[] []", out.stdout
