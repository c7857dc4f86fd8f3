"""HybridModel: running the zoo, input validation, executors, the Polygraphy runner."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

import factories as F
import trtlab
from trtlab import zoo
from trtlab.backends.tensorrt import flavor as trt
from trtlab.codegen import build
from trtlab.errors import InputError
from trtlab.model import load
from trtlab.backends.onnxruntime.session import run_onnx

INFO = trt.info()
needs_build = pytest.mark.skipif(not INFO.build, reason=f"TensorRT cannot build engines here: {INFO.reason}")
needs_gpu_run = pytest.mark.skipif(not INFO.run, reason=f"TensorRT engines cannot run here: {INFO.reason}")

#: transformer_large takes over a minute to build on two CPU cores; the overhead benchmark covers it.
ZOO = [n for n in zoo.names() if n != "transformer_large"]


def tolerance(arr):
    return dict(rtol=0, atol=0) if arr.dtype.kind in "iub" else dict(rtol=1e-4, atol=1e-5)


@needs_build
@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_builds_and_matches_onnxruntime(name, tmp_path):
    model = zoo.load(name)
    feeds = zoo.example_inputs(name, batch=1)
    hybrid = build(trtlab.partition(model), feeds=feeds, cache_dir=tmp_path, progress=False)
    trt_segments = [s for s in hybrid.segments if s.backend == "tensorrt"]
    # Segments reading data-dependent shapes (NonZero, NMS) build at the first run.
    deferred = {s.index for s in trt_segments if not hybrid.executables[s.index].engines}
    assert set(hybrid.engines) == {s.index for s in trt_segments} - deferred
    assert all(len(e) > 0 for e in hybrid.engines.values())
    out, ref = hybrid.run(feeds), run_onnx(model, feeds)
    assert set(hybrid.engines) == {s.index for s in trt_segments}
    assert list(out) == list(ref)
    for k in ref:
        np.testing.assert_allclose(out[k], ref[k], **tolerance(ref[k]), err_msg=f"{name}:{k}")
    assert set(hybrid.last_timings) == {s.name for s in hybrid.segments}


@pytest.fixture(scope="module")
def mlp_hybrid():
    m = load(F.mlp())
    return m, build(trtlab.partition(m, exclude_nodes=["relu1"]), cache_dir=False, progress=False)


def good_feeds():
    return {"x": np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)}


@pytest.mark.parametrize("feeds, match", [
    ({}, "missing input"),
    ({"x": np.zeros((2, 16), np.float32), "y": np.zeros(1)}, "unknown input"),
    ({"x": np.zeros((2, 16), np.float64)}, "dtype float64, expected float32"),
    ({"x": np.zeros((2, 16, 1), np.float32)}, "rank 3"),
    ({"x": np.zeros((3, 16), np.float32)}, "size 3 on axis 0"),
    ([np.zeros((2, 16), np.float32)], "must be a dict"),
    ({"z": np.zeros((2, 16), np.float32)}, "missing input"),
    ({"x": np.zeros((2, 16), np.float32).astype(">f4")}, "dtype"),
    ({"x": np.zeros((16, 2), np.float32)}, "size 16 on axis 0"),
])
def test_bad_inputs_are_refused(mlp_hybrid, feeds, match):
    _, hybrid = mlp_hybrid
    for _ in range(2):  # before and after feeds were accepted (the quick check compares with those)
        with pytest.raises(InputError, match=match) as info:
            hybrid.run(feeds)
        assert "x: float[2, 16]" in str(info.value)
        hybrid.run(good_feeds())


def test_symbolic_dims_must_agree():
    from onnx import helper

    nodes = [helper.make_node("Add", ["a", "b"], ["y"], name="add")]
    m = load(F._model(nodes, [F.vi("a", ["N", 4]), F.vi("b", ["N", 4])], [F.vi("y", ["N", 4])]))
    hybrid = build(trtlab.partition(m, exclude_nodes=["add"]), cache_dir=False, progress=False)
    ok = hybrid.run({"a": np.ones((3, 4), np.float32), "b": np.ones((3, 4), np.float32)})
    assert ok["y"].shape == (3, 4)
    with pytest.raises(InputError, match="symbolic dimension 'N'"):
        hybrid.run({"a": np.ones((3, 4), np.float32), "b": np.ones((2, 4), np.float32)})
    # feeds of the shapes accepted last are not waved through on their shapes alone
    with pytest.raises(InputError, match="dtype float64, expected float32"):
        hybrid.run({"a": np.ones((3, 4), np.float32), "b": np.ones((3, 4), np.float64)})
    with pytest.raises(InputError, match="missing input"):
        hybrid.run({"a": np.ones((3, 4), np.float32), "c": np.ones((3, 4), np.float32)})
    assert hybrid.run({"a": np.ones((5, 4), np.float32), "b": np.ones((5, 4), np.float32)})["y"].shape == (5, 4)
    with pytest.raises(InputError, match="symbolic dimension 'N'"):
        hybrid.run({"a": np.ones((5, 4), np.float32), "b": np.ones((3, 4), np.float32)})
    # a dtype equal to float32 but another object: the full check accepts it, each time
    alike = np.ones((5, 4), np.float32).view(np.dtype(np.float32, copy=True))
    assert alike.dtype is not np.dtype(np.float32)
    for _ in range(2):
        assert hybrid.run({"a": alike, "b": alike})["y"].shape == (5, 4)
    with pytest.raises(InputError, match="dtype float64, expected float32"):
        hybrid.run({"a": alike, "b": np.ones((5, 4), np.float64)})


def _three_inputs_two_outputs():
    """Inputs named with quotes, a newline and braces; 'N' shared by two inputs; an int64 scalar."""
    a, b, c = 'a"b', "c\nd", "{e}'"
    nodes = [helper.make_node("Add", [a, b], ["sum"], name="add"),
             helper.make_node("Cast", [c], ["c_f"], name="cast", to=onnx.TensorProto.FLOAT),
             helper.make_node("Mul", ["sum", "c_f"], ["scaled"], name="mul")]
    model = F._model(nodes, [F.vi(a, ["N", 4]), F.vi(b, ["N", 4]), F.vi(c, [], onnx.TensorProto.INT64)],
                     [F.vi("sum", ["N", 4]), F.vi("scaled", ["N", 4])])
    feeds = {a: np.full((3, 4), 1.5, np.float32), b: np.ones((3, 4), np.float32), c: np.array(2, np.int64)}
    return load(model), feeds


@pytest.mark.parametrize("backend", ["fallback", pytest.param("tensorrt", marks=needs_build)])
def test_one_segment_quick_path_refuses_what_the_full_check_refuses(backend, tmp_path, monkeypatch):
    """A one-segment hybrid checks repeated feeds against those accepted last, in generated code
    (the session's own run, or the segment's call): every bad feed is still an InputError."""
    m, feeds = _three_inputs_two_outputs()
    a, b, c = list(feeds)
    if backend == "fallback":
        part = trtlab.partition(m, exclude_nodes=m.node_names)
    else:
        part = trtlab.partition(m, support={n: (True, "") for n in m.node_names})
    hybrid = build(part, feeds=feeds, cache_dir=tmp_path, progress=False)
    assert len(hybrid.segments) == 1 and hybrid.segments[0].backend == backend
    assert hybrid._quick is not None
    want = run_onnx(m, feeds)
    for _ in range(3):  # the first run goes through the full check, the others through the quick path
        out = hybrid.run(feeds)
        assert list(out) == ["sum", "scaled"]
        for k in want:
            np.testing.assert_allclose(out[k], want[k], rtol=1e-6)
        assert list(hybrid.last_timings) == [hybrid.segments[0].name]
        assert 0 < hybrid.last_timings[hybrid.segments[0].name] <= hybrid.last_total
        assert hybrid.last_timings is hybrid.last_timings  # made once from the run's marks
    # the runs after the first took the quick path: no full check ran for the same feeds
    monkeypatch.setattr(hybrid, "_feeds_ok", lambda feeds: pytest.fail("the quick path was not taken"))
    np.testing.assert_allclose(hybrid.run(feeds)["scaled"], want["scaled"], rtol=1e-6)
    monkeypatch.undo()
    bad = [
        ({**feeds, b: feeds[b].astype(np.float64)}, "dtype float64, expected float32"),
        ({**feeds, b: feeds[b].astype(">f4")}, "dtype"),
        ({**feeds, b: np.ones((2, 4), np.float32)}, "symbolic dimension 'N'"),
        ({**feeds, c: np.array([2], np.int64)}, "rank 1"),
        ({a: feeds[a], b: feeds[b]}, "missing input"),
        ({**feeds, "x": feeds[a]}, "unknown input"),
        ({a: feeds[a], b: feeds[b], "x": feeds[c]}, "missing input"),
        ({**feeds, a: [[1.5] * 4] * 3}, "dtype float64, expected float32"),  # a list, made an array
        ({**feeds, c: 2}, None),  # a Python int: made an int64 array by the full check, then run
        (list(feeds.values()), "must be a dict"),
    ]
    for bad_feeds, match in bad:
        if match is None:
            np.testing.assert_allclose(hybrid.run(bad_feeds)["scaled"], want["scaled"], rtol=1e-6)
        else:
            with pytest.raises(InputError, match=match):
                hybrid.run(bad_feeds)
        np.testing.assert_allclose(hybrid.run(feeds)["scaled"], want["scaled"], rtol=1e-6)
    # new shapes pass the full check and are then the ones compared with
    five = {a: np.ones((5, 4), np.float32), b: np.ones((5, 4), np.float32), c: np.array(3, np.int64)}
    for _ in range(2):
        assert hybrid.run(five)["scaled"].shape == (5, 4)
        np.testing.assert_allclose(hybrid.run(five)["scaled"], np.full((5, 4), 6.0, np.float32))
    with pytest.raises(InputError, match="symbolic dimension 'N'"):
        hybrid.run({**five, b: np.ones((3, 4), np.float32)})


def test_one_segment_of_many_inputs_and_outputs_takes_the_general_path():
    from trtlab.runtime import _QUICK_MOST

    count = _QUICK_MOST // 2 + 1
    nodes = [helper.make_node("Concat", [f"x{i}" for i in range(count)], ["cat"], name="cat", axis=0),
             helper.make_node("Neg", ["cat"], ["neg"], name="neg"),
             helper.make_node("Split", ["neg", "sizes"], [f"y{i}" for i in range(count)], name="split", axis=0)]
    m = load(F._model(nodes, [F.vi(f"x{i}", [2]) for i in range(count)], [F.vi(f"y{i}", [2]) for i in range(count)],
                      [F.const("sizes", np.full(count, 2, np.int64))]))
    hybrid = build(trtlab.partition(m, exclude_nodes=m.node_names), cache_dir=False, progress=False)
    assert len(hybrid.segments) == 1 and hybrid._quick is None
    feeds = {f"x{i}": np.full(2, i, np.float32) for i in range(count)}
    for _ in range(2):
        out = hybrid.run(feeds)
        assert list(out) == [f"y{i}" for i in range(count)]
        assert all(np.array_equal(out[f"y{i}"], np.full(2, -i, np.float32)) for i in range(count))
    with pytest.raises(InputError, match="dtype float64"):
        hybrid.run({**feeds, "x0": np.zeros(2)})


def test_one_segment_quick_path_failure_is_run_error():
    """An ONNX Runtime failure on the quick path (an index out of range, feeds of the accepted
    shape) is a RunError naming the inputs."""
    from trtlab.errors import RunError

    nodes = [helper.make_node("Gather", ["data", "idx"], ["y"], name="gather", axis=0)]
    m = load(F._model(nodes, [F.vi("idx", [1], onnx.TensorProto.INT64)], [F.vi("y", [1])],
                      [F.const("data", np.arange(4, dtype=np.float32))]))
    hybrid = build(trtlab.partition(m, exclude_nodes=m.node_names), cache_dir=False, progress=False)
    for _ in range(2):
        assert hybrid.run({"idx": np.array([2], np.int64)})["y"].tolist() == [2.0]
    assert hybrid._record.marks is not None  # the last run took the quick path
    with pytest.raises(RunError, match="idx"):
        hybrid.run({"idx": np.array([10], np.int64)})


def test_one_segment_quick_path_under_threads():
    """Threads running feeds of two shapes and inconsistent ones on one hybrid, the interpreter
    switching threads as often as it can: each good run is right, the inconsistent feeds are
    refused every time (the quick path reads one accepted set, replaced whole)."""
    import sys
    import threading

    m, feeds = _three_inputs_two_outputs()
    a, b, c = list(feeds)
    hybrid = build(trtlab.partition(m, exclude_nodes=m.node_names), cache_dir=False, progress=False)
    three = {a: np.ones((3, 4), np.float32), b: np.ones((3, 4), np.float32), c: np.array(2, np.int64)}
    five = {a: np.ones((5, 4), np.float32), b: np.ones((5, 4), np.float32), c: np.array(3, np.int64)}
    mixed = {a: np.ones((3, 4), np.float32), b: np.ones((5, 4), np.float32), c: np.array(2, np.int64)}
    problems = []

    def good(feeds, shape, value):
        for _ in range(300):
            out = hybrid.run(feeds)["scaled"]
            if out.shape != shape or not np.all(out == value):
                problems.append((shape, out.shape))

    def bad():
        for _ in range(300):
            try:
                hybrid.run(mixed)
                problems.append("mixed feeds ran")
            except InputError:
                pass

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=good, args=(three, (3, 4), 4.0)),
                   threading.Thread(target=good, args=(five, (5, 4), 6.0)), threading.Thread(target=bad)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert problems == []


def test_run_matches_and_records_timings(mlp_hybrid):
    m, hybrid = mlp_hybrid
    feeds = good_feeds()
    out = hybrid.run(feeds)
    np.testing.assert_allclose(out["y"], run_onnx(m, feeds)["y"], rtol=1e-5, atol=1e-6)
    assert list(hybrid.last_timings) == [s.name for s in hybrid.segments]
    assert all(t > 0 for t in hybrid.last_timings.values())
    assert hybrid.last_total >= sum(hybrid.last_timings.values())


def test_executors_table_says_what_ran(mlp_hybrid):
    _, hybrid = mlp_hybrid
    table = hybrid.executors
    assert list(table.columns) == ["segment", "backend", "executor", "precision", "nodes", "profile", "moved",
                                   "reason"]
    assert table["profile"].tolist() == ["static"] * 3 and table["moved"].tolist() == [""] * 3
    assert table["backend"].tolist() == ["tensorrt", "fallback", "tensorrt"]
    expected = "tensorrt" if INFO.run else "onnxruntime"
    assert table["executor"].tolist() == [expected, "onnxruntime", expected]
    assert table.loc[0, "reason"] == INFO.reason
    assert f"trt_0:{expected}/fp32" in repr(hybrid)
    assert "onnxruntime" in hybrid._repr_html_()


@needs_build
def test_fp16_segments_build_and_stay_close(tmp_path):
    m = load(F.conv_relu())
    hybrid = build(trtlab.partition(m), precision="fp16", cache_dir=tmp_path, progress=False,
                   shapes={"x": (2, 3, 8, 8)})
    assert hybrid.executors["precision"].tolist() == ["fp16"]
    model16 = hybrid.segment_models[0]
    assert any(init.data_type == 10 for init in model16.graph.initializer)  # FLOAT16 weights
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    np.testing.assert_allclose(hybrid.run(feeds)["y"], run_onnx(m, feeds)["y"], rtol=2e-2, atol=2e-2)


@needs_build
def test_int8_segment_builds_with_calibration(tmp_path):
    m = load(F.conv_relu())
    rng = np.random.default_rng(0)
    calib = [{"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    hybrid = build(trtlab.partition(m), precision="int8", calibration_data=calib, cache_dir=tmp_path,
                   progress=False, shapes={"x": (2, 3, 8, 8)})
    ops = {n.op_type for n in hybrid.segment_models[0].graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert len(hybrid.engines[0]) > 0
    feeds = calib[0]
    ref = run_onnx(m, feeds)["y"]
    out = hybrid.run(feeds)["y"]
    assert np.abs(out - ref).max() < 0.1 * np.abs(ref).max()


def test_hybrid_runner_in_polygraphy_comparator(mlp_hybrid):
    from polygraphy.backend.base import BaseRunner
    from polygraphy.backend.onnxrt import OnnxrtRunner
    from polygraphy.comparator import Comparator

    from trtlab.backends.onnxruntime.session import session
    from trtlab.runtime import HybridRunner

    m, hybrid = mlp_hybrid
    runner = HybridRunner(hybrid, name="hybrid")
    assert isinstance(runner, BaseRunner)
    reference = OnnxrtRunner(lambda: session(m), name="ort")
    results = Comparator.run([reference, runner], data_loader=[good_feeds()])
    assert bool(Comparator.compare_accuracy(results))
    with runner:
        meta = runner.get_input_metadata()
        assert list(meta.keys()) == ["x"]
        assert tuple(meta["x"].shape) == (2, 16)


@needs_gpu_run
def test_tensorrt_segments_run_on_the_gpu(tmp_path):
    m = load(F.conv_relu())
    hybrid = build(trtlab.partition(m), cache_dir=tmp_path, shapes={"x": ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))},
                   progress=False)
    assert hybrid.executors["executor"].tolist() == ["tensorrt"]
    feeds = {"x": np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)}
    np.testing.assert_allclose(hybrid.run(feeds)["y"], run_onnx(m, feeds)["y"], rtol=1e-3, atol=1e-3)


def test_hybrid_is_a_polygraphy_runner_for_comparator(mlp_hybrid):
    from polygraphy.backend.base import BaseRunner
    from polygraphy.comparator import Comparator

    m, hybrid = mlp_hybrid
    assert isinstance(hybrid, BaseRunner)
    feeds = good_feeds()
    results = Comparator.run([hybrid], data_loader=[feeds])
    (name, iterations), = results.items()
    assert name == hybrid.name
    np.testing.assert_allclose(iterations[0]["y"], run_onnx(m, feeds)["y"], rtol=1e-5, atol=1e-6)
    assert not hybrid.is_active  # Comparator deactivated it
    with hybrid as runner:
        assert runner.is_active
        out = runner.infer(feeds)
        assert runner.last_inference_time() > 0
    np.testing.assert_allclose(out["y"], run_onnx(m, feeds)["y"], rtol=1e-5, atol=1e-6)
    from trtlab.runtime import HybridRunner
    assert HybridRunner(hybrid) is hybrid


def test_user_backend_is_passed_once_and_gets_profiles_and_isolation():
    """A NumPy backend given to partition() only: build() uses it, with profiles and isolation."""
    from trtlab.backends.base import BackendBase, FunctionSegment
    from trtlab.errors import BuildError

    class NumpyBackend(BackendBase):
        name = "numpy"
        kernels = {"Relu": lambda x: np.maximum(x, 0), "Sigmoid": lambda x: 1 / (1 + np.exp(-x))}

        def compile(self, segment_model, settings):
            nodes = list(segment_model.graph.node)
            missing = [n.name for n in nodes if n.op_type not in self.kernels]
            if missing:
                raise BuildError(f"no NumPy kernel for {missing[0]}")

            def run(feeds):
                env = dict(feeds)
                for n in nodes:
                    env[n.output[0]] = self.kernels[n.op_type](env[n.input[0]])
                return {o.name: env[o.name] for o in segment_model.graph.output}

            return FunctionSegment(run, executor="numpy", profile=settings.profile)

    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Tanh", ["a"], ["b"], name="tanh"),
             helper.make_node("Sigmoid", ["b"], ["y"], name="sig")]
    m = load(F._model(nodes, [F.vi("x", ["N", 4])], [F.vi("y", ["N", 4])]))
    support = {n: (True, "numpy says yes") for n in m.node_names}
    part = trtlab.partition(m, support=support, backend=NumpyBackend())
    assert [s.backend for s in part.segments] == ["numpy"]
    feeds = {"x": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)}
    with pytest.warns(UserWarning, match="tanh \\(Tanh\\): numpy build failed"):
        hybrid = build(part, feeds=feeds, cache_dir=False, progress=False)
    table = hybrid.executors
    assert table["executor"].tolist() == ["numpy", "onnxruntime", "numpy"]
    assert table["profile"].tolist()[0] == "x: [3, 4]..[3, 4] (opt [3, 4])"
    assert table["moved"].tolist() == ["", "tanh", ""]
    np.testing.assert_allclose(hybrid.run(feeds)["y"], run_onnx(m, feeds)["y"], rtol=1e-6)


# -- ONNX backend test cases (conformance regressions) -----------------------------------------

def _hybrid(case, **kwargs):
    model = load(case.model)
    part = trtlab.partition(model, support=trtlab.check_support(model, source="rules"))
    return build(part, progress=False, cache_dir=False, **kwargs)


def _same(want, got):
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        for w, g in zip(want, got):
            _same(w, g)
        return
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-6)


def test_a_constant_graph_output_is_returned():
    """An initializer listed as a graph output is part of run()'s answer (it raised KeyError)."""
    import onnx
    from backend_cases import feeds, load_case

    case = load_case("node/test_abs")
    proto = case.model
    k = np.arange(3, dtype=np.float32)
    proto.graph.initializer.append(onnx.numpy_helper.from_array(k, "k"))
    proto.graph.output.append(onnx.helper.make_tensor_value_info("k", onnx.TensorProto.FLOAT, [3]))
    out = _hybrid(case).run(feeds(case))
    np.testing.assert_array_equal(out["k"], k)
    np.testing.assert_array_equal(out["y"], case.data_sets[0][1][0])


@pytest.mark.parametrize("cid", ["node/test_identity_sequence", "node/test_identity_opt",
                                 "node/test_sequence_insert_at_back", "node/test_loop13_seq",
                                 "node/test_if_opt"])
def test_sequence_and_optional_values_run_on_onnxruntime(cid):
    """Sequence/optional graph inputs, outputs and cut tensors run (on ONNX Runtime)."""
    from backend_cases import feeds, load_case

    case = load_case(cid)
    hybrid = _hybrid(case)
    assert all(s.is_fallback for s in hybrid.segments
               if any(not load(case.model).tensor(t).elem_type for t in (*s.inputs, *s.outputs)))
    out = hybrid.run(feeds(case))
    for vi, want in zip(case.model.graph.output, case.data_sets[0][1]):
        _same(want, out[vi.name])


def test_dtypes_onnxruntime_cannot_bind_raise_a_clear_error():
    """bfloat16 arrays cannot cross ONNX Runtime's Python binding: say so, name the dtype."""
    from backend_cases import load_case

    case = load_case("node/test_cast_BFLOAT16_to_FLOAT")
    with pytest.raises(InputError, match="bfloat16.*Cast"):
        _hybrid(case)


# -- weights shared with the model (trtlab.weights) ----------------------------------------------

def _engine_is_the_onnx(onnx_bytes, profile, settings=None):
    """A stand-in builder: the 'engine' is the ONNX it was given (so the test can read it)."""
    return bytes(onnx_bytes)


def _external(proto, folder, name="m.onnx"):
    import copy

    import onnx

    from trtlab.model import Model

    path = folder / name
    onnx.save(copy.deepcopy(proto), str(path), save_as_external_data=True, location=name + ".data")
    return Model(onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False)), path=path)


def _mlp_feeds():
    return {"x": np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)}


@pytest.mark.parametrize("external", [False, True], ids=["embedded", "external"])
def test_hybrid_keeps_no_copy_of_the_weights(tmp_path, external):
    from trtlab.backends.tensorrt.backend import TensorRTBackend
    from trtlab.weights import Weights

    model = _external(F.mlp(), tmp_path) if external else load(F.mlp())
    part = trtlab.partition(model, support={n: n != "relu1" for n in model.node_names},
                            backend=TensorRTBackend(builder=_engine_is_the_onnx))
    hybrid = build(part, feeds=_mlp_feeds(), cache_dir=False, progress=False)
    assert len(hybrid.segments) == 3
    weights = Weights.of(model)
    for s in hybrid.segments:
        light = hybrid.segment_models.light(s.index)
        assert weights.holds_data(light) == [], f"segment {s.name} holds weight bytes"
        exe = hybrid.executables[s.index]
        assert weights.holds_data(exe.model) == [] and "onnx_bytes" not in vars(exe)
        big = [t.name for t in load(F.mlp()).proto.graph.initializer
               if t.name in {i.name for i in light.graph.initializer} and len(t.raw_data) >= 1024]
        assert sorted(weights.holds_data(hybrid.segment_models[s.index])) == sorted(big)
        if external and big:  # ONNX Runtime reads them from their file, and the reason says so
            assert str(tmp_path) in hybrid.executors["reason"][s.index]
    # the TensorRT builds got every weight: the stand-in 'engine' is the ONNX it was given
    for index, engine in hybrid.engines.items():
        built = onnx.load_from_string(engine)
        assert not [t.name for t in built.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        assert built.SerializeToString() == hybrid.segment_models[index].SerializeToString()
    np.testing.assert_allclose(hybrid.run(_mlp_feeds())["y"], run_onnx(F.mlp(), _mlp_feeds())["y"], rtol=1e-5)


def test_segment_models_are_standalone_copies_made_on_access(tmp_path):
    model = _external(F.mlp(), tmp_path)
    part = trtlab.partition(model, support={n: n != "relu1" for n in model.node_names})
    hybrid = build(part, feeds=_mlp_feeds(), cache_dir=False, progress=False)
    env = dict(_mlp_feeds())
    for s in hybrid.segments:
        proto = hybrid.segment_models[s.index]
        assert proto is not hybrid.segment_models[s.index]
        onnx.checker.check_model(proto, full_check=True)
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
        env.update(run_onnx(proto, {t: env[t] for t in s.inputs}))
    np.testing.assert_allclose(env["y"], run_onnx(F.mlp(), _mlp_feeds())["y"], rtol=1e-5)


def test_one_segment_of_an_unchanged_file_is_read_by_onnxruntime_from_the_file(tmp_path):
    import onnx

    path = tmp_path / "mlp.onnx"
    onnx.save(F.mlp(), str(path))
    model = load(path)
    everything = {n: (False, "one segment") for n in model.node_names}
    hybrid = build(trtlab.partition(model, support=everything), cache_dir=False, progress=False)
    assert "session read from the model file" in hybrid.executors["reason"][0]
    assert hybrid.executables[0].session._model_path == str(path)
    want = run_onnx(F.mlp(), _mlp_feeds())["y"]
    np.testing.assert_allclose(hybrid.run(_mlp_feeds())["y"], want, rtol=1e-6)
    # a model changed after loading is never run from its file
    # (the build left the model given as it was: its weights still in memory)
    assert model.initializers["w2"].data_location != onnx.TensorProto.EXTERNAL
    w2 = model.initializers["w2"]
    w2.CopyFrom(onnx.numpy_helper.from_array(model.constant_value("w2") * 0, "w2"))
    changed = build(trtlab.partition(model, support=everything), cache_dir=False, progress=False)
    assert "session read from the model file" not in changed.executors["reason"][0]
    got = changed.run(_mlp_feeds())["y"]
    np.testing.assert_allclose(got, run_onnx(model, _mlp_feeds())["y"], rtol=1e-6)
    assert not np.allclose(got, want, rtol=1e-3)
