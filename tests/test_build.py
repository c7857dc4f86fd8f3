"""Engine builds with TensorRT (TensorRT-RTX builds ahead of time here, without a GPU)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import factories as F
import trtlab
from trtlab import trt
from trtlab.backends import CompileSettings, TensorRTBackend
from trtlab.build import (build, build_engine, input_ranges, isolate_build_failure, segment_profile, shape_table,
                          submodel)
from trtlab.errors import BuildError, InputError, PrecisionError
from trtlab.model import load
from trtlab.ort import run_onnx

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
    assert input_ranges(m) == {"x": ((1, 3, 8, 8),) * 3}
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
    from trtlab import build as build_module

    monkeypatch.setattr(build_module, "engine_target", lambda: "sm8.9")
    other_target = build(part, cache_dir=tmp_path, shapes=CONV_SHAPES, progress=False)
    assert other_target.cache_report()["status"].tolist() == ["miss"]
    assert other_target.cache_report().loc[0, "target"] == "sm8.9"


def test_cache_key_depends_on_flavor(monkeypatch):
    from trtlab.build import cache_key

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

    from trtlab.backends import Backend

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
    assert "not writable" in caplog.text and "engine not cached" in caplog.text
    feeds = {"x": np.ones((2, 16), np.float32)}
    np.testing.assert_allclose(hybrid.run(feeds)["y"], run_onnx(F.mlp(), feeds)["y"], rtol=1e-5, atol=1e-6)
