"""FP16 conversion, INT8 calibration and Q/DQ placement on small models built here."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtlab.backends.tensorrt import flavor as trt
from trtlab.errors import CalibrationError, PrecisionError
from trtlab.backends.onnxruntime.session import run_onnx
from trtlab.precision import (DEFAULT_KEEP_FP32_OPS, calibrate, emulate_fp16, ort_variant,
                              quantization_plan, quantize_int8, to_fp16)
from trtlab.precision.calibration import entropy_amax, percentile_amax


def residual_net(seed=0):
    """
    x[N,4,8,8] -> conv1 -> relu1 -> conv2 -> add(relu1) -> relu2 -> gap -> flatten -> fc -> softmax -> y[N,10]
                          \\________________/
    """
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("w1", rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.3),
        ("b1", rng.standard_normal(8).astype(np.float32) * 0.1),
        ("w2", rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2),
        ("b2", rng.standard_normal(8).astype(np.float32) * 0.1),
        ("wf", rng.standard_normal((10, 8)).astype(np.float32)),
        ("bf", rng.standard_normal(10).astype(np.float32) * 0.1),
    ]]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["z"], name="fc", transB=1),
        helper.make_node("Softmax", ["z"], ["y"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def images(n=32, seed=1, scale=1.0):
    return (np.random.default_rng(seed).standard_normal((n, 4, 8, 8)) * scale).astype(np.float32)


def node_by_name(model, name):
    return next(n for n in model.proto.graph.node if n.name == name)


def producer_of(model, tensor):
    return next((n for n in model.proto.graph.node if tensor in n.output), None)


def dtypes(model):
    inferred = onnx.shape_inference.infer_shapes(model.proto)
    out = {vi.name: vi.type.tensor_type.elem_type
           for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    out.update({t.name: t.data_type for t in inferred.graph.initializer})
    return out


def trt_build(model, shape):
    builder, network, parser, logger = trt.make_parser()
    assert parser.parse(model.to_bytes()), [parser.get_error(i).desc() for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    config.builder_optimization_level = 0  # these engines are only built, never timed
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        profile.set_shape(network.get_input(i).name, shape, shape, shape)
    config.add_optimization_profile(profile)
    return builder.build_serialized_network(network, config), logger


needs_parser = pytest.mark.skipif(not trt.info().parse, reason="no TensorRT ONNX parser installed")
needs_build = pytest.mark.skipif(not trt.info().build, reason="this TensorRT cannot build engines here")


# -- FP16: structure -------------------------------------------------------------------------

def test_fp16_converts_weights_and_compute_keeps_io_and_softmax():
    half = to_fp16(residual_net())
    types = dtypes(half)
    assert types["w1"] == TensorProto.FLOAT16 and types["wf"] == TensorProto.FLOAT16
    assert types["c1"] == TensorProto.FLOAT16 and types["r2"] == TensorProto.FLOAT16
    assert half.inputs[0].elem_type == TensorProto.FLOAT and half.outputs[0].elem_type == TensorProto.FLOAT
    softmax = node_by_name(half, "softmax")
    assert types[softmax.input[0]] == TensorProto.FLOAT
    assert producer_of(half, softmax.input[0]).op_type == "Cast"
    assert "Softmax" in DEFAULT_KEEP_FP32_OPS and DEFAULT_KEEP_FP32_OPS["Softmax"]
    onnx.checker.check_model(half.proto)


def test_fp16_keep_lists_and_io_types():
    half = to_fp16(residual_net(), keep_fp32_nodes=["conv2"], keep_fp32_ops=())
    types = dtypes(half)
    assert types["c2"] == TensorProto.FLOAT and types["w2"] == TensorProto.FLOAT
    assert types["y"] == TensorProto.FLOAT and types["z"] == TensorProto.FLOAT16  # softmax converted
    assert types[node_by_name(half, "softmax").output[0]] == TensorProto.FLOAT16
    raw = to_fp16(residual_net(), keep_io_types=False)
    assert raw.inputs[0].elem_type == TensorProto.FLOAT16
    with pytest.raises(PrecisionError, match="not in model"):
        to_fp16(residual_net(), keep_fp32_nodes=["no_such_node"])


def test_fp16_shared_initializer_gets_twin_for_fp32_consumer():
    # x -> Add(c) -> Softmax ; Softmax output -> Mul(c): c read by a float16 and a float32 consumer
    c = numpy_helper.from_array(np.full((1, 4), 0.5, np.float32), "c")
    nodes = [helper.make_node("Add", ["x", "c"], ["a"], name="add"),
             helper.make_node("Exp", ["a"], ["e"], name="exp"),
             helper.make_node("Sub", ["e", "c"], ["y"], name="sub")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [c])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    half = to_fp16(proto, keep_fp32_nodes=["sub"])
    names = {t.name: t.data_type for t in half.proto.graph.initializer}
    assert names["c"] == TensorProto.FLOAT and TensorProto.FLOAT16 in names.values()
    x = np.linspace(-1, 1, 4, dtype=np.float32).reshape(1, 4)
    np.testing.assert_allclose(run_onnx(half, {"x": x})["y"], np.exp(x + 0.5) - 0.5, rtol=2e-3)


# -- FP16: numbers -----------------------------------------------------------------------------

def test_fp16_runs_close_to_fp32_and_emulation_rounds():
    model, x = residual_net(), images(8)
    ref = run_onnx(model, {"x": x})["y"]
    half = to_fp16(model)
    runnable, executor = ort_variant(half)
    assert executor in ("onnxruntime", "onnxruntime (fp16 emulated)")
    np.testing.assert_allclose(run_onnx(runnable, {"x": x})["y"], ref, atol=5e-3)
    emulated = emulate_fp16(half)
    assert all(t.data_type != TensorProto.FLOAT16 for t in emulated.proto.graph.initializer)
    got = run_onnx(emulated, {"x": x})["y"]
    np.testing.assert_allclose(got, ref, atol=5e-3)
    assert np.abs(got - ref).max() > 0  # rounding is really applied


@needs_parser
def test_fp16_parses_with_tensorrt():
    builder, network, parser, _ = trt.make_parser()
    assert parser.parse(to_fp16(residual_net()).to_bytes())


# -- INT8: placement -----------------------------------------------------------------------

def test_quantization_plan_targets_weighted_ops_and_residual():
    plan = quantization_plan(residual_net(), exclusions=())
    acts = set(zip(plan.loc[plan.role == "activation", "node"], plan.loc[plan.role == "activation", "tensor"]))
    assert acts == {("conv1", "x"), ("conv2", "r1"), ("fc", "f")}
    weights = plan[plan.role == "weight"].set_index("tensor")["axis"].to_dict()
    assert weights == {"w1": 0, "w2": 0, "wf": 0}
    residual = plan[plan.role == "residual"]
    assert list(zip(residual.node, residual.tensor, residual.input_index)) == [("add", "r1", 1)]


def test_quantize_int8_inserts_qdq_on_intended_tensors_only():
    q = quantize_int8(residual_net(), images(32), method="minmax", progress=False, exclusions=())
    g = q.proto.graph
    quantized = {n.input[0] for n in g.node if n.op_type == "QuantizeLinear"}
    assert quantized == {"x", "r1", "f"}  # r1 once, shared by conv2 and the residual Add
    for name, idx in [("conv1", 0), ("conv2", 0), ("conv2", 1), ("fc", 0), ("fc", 1), ("add", 1)]:
        assert producer_of(q, node_by_name(q, name).input[idx]).op_type == "DequantizeLinear", (name, idx)
    assert producer_of(q, node_by_name(q, "add").input[0]).name == "conv2"
    assert producer_of(q, node_by_name(q, "softmax").input[0]).name == "fc"
    inits = {t.name: t for t in g.initializer}
    w2_dq = producer_of(q, node_by_name(q, "conv2").input[1])
    assert inits[w2_dq.input[0]].data_type == TensorProto.INT8
    assert numpy_helper.to_array(inits[w2_dq.input[1]]).shape == (8,)
    assert {a.name: a.i for a in w2_dq.attribute}["axis"] == 0
    for n in g.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert not numpy_helper.to_array(inits[n.input[2]]).any()  # symmetric: zero point 0
    excluded = quantize_int8(residual_net(), images(32), method="minmax", exclude_nodes=["conv2"], progress=False, exclusions=())
    assert producer_of(excluded, node_by_name(excluded, "conv2").input[1]) is None


def test_int8_runs_close_to_fp32():
    model, x = residual_net(), images(16, seed=5)
    ref = run_onnx(model, {"x": x})["y"]
    for method in ("minmax", "entropy", "percentile"):
        got = run_onnx(quantize_int8(model, images(64), method=method, progress=False, exclusions=()), {"x": x})["y"]
        assert np.abs(got - ref).max() < 0.05, method
        assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.9, method


@needs_build
def test_int8_parses_and_builds_with_tensorrt():
    engine, logger = trt_build(quantize_int8(residual_net(), images(16), method="minmax", progress=False, exclusions=()),
                               (2, 4, 8, 8))
    assert engine is not None, logger.errors()
    assert engine.nbytes > 0


# -- calibration ---------------------------------------------------------------------------

def test_scales_follow_the_calibration_data():
    model = residual_net()
    small = calibrate(model, images(32), method="minmax", progress=False, exclusions=()).set_index("tensor")
    large = calibrate(model, images(32, scale=3.0), method="minmax", progress=False, exclusions=()).set_index("tensor")
    np.testing.assert_allclose(large.loc["x", "scale"] / small.loc["x", "scale"], 3.0, rtol=1e-5)
    assert (large["scale"] > small["scale"]).all()
    q_small = quantize_int8(model, images(32), method="minmax", progress=False, exclusions=())
    q_large = quantize_int8(model, images(32, scale=3.0), method="minmax", progress=False, exclusions=())
    scale = {m: numpy_helper.to_array(next(t for t in m.proto.graph.initializer if t.name == "x_scale"))
             for m in (q_small, q_large)}
    assert scale[q_large] > 2.9 * scale[q_small]


def test_entropy_and_percentile_clip_outliers():
    rng = np.random.default_rng(0)
    values = np.abs(np.concatenate([rng.standard_normal(200_000), [40.0]]))
    hist, edges = np.histogram(values, bins=2048, range=(0, values.max()))
    amax_kl = entropy_amax(hist, edges)
    assert 2.0 < amax_kl < 20.0
    assert percentile_amax(hist, edges, 99.9) == pytest.approx(3.29, abs=0.1)
    table = calibrate(residual_net(), images(32), method="entropy", progress=False, exclusions=()).set_index("tensor")
    assert (table["amax"] <= table["absmax"] + 1e-6).all() and (table["amax"] > 0).all()


def test_calibration_cache_hits_and_misses(tmp_path):
    model = residual_net()
    first = calibrate(model, images(16), method="entropy", cache_dir=tmp_path, progress=False, exclusions=())
    again = calibrate(model, images(16), method="entropy", cache_dir=tmp_path, progress=False, exclusions=())
    other = calibrate(model, images(16, seed=9), method="entropy", cache_dir=tmp_path, progress=False, exclusions=())
    assert (first.attrs["cache"], again.attrs["cache"], other.attrs["cache"]) == ("miss", "hit", "miss")
    np.testing.assert_array_equal(first["amax"], again["amax"])
    assert len(list(tmp_path.glob("calibration-*.json"))) == 2
    q = quantize_int8(model, first, method="entropy", progress=False, exclusions=())  # reuse a calibration table
    assert sum(n.op_type == "QuantizeLinear" for n in q.proto.graph.node) == 3


def test_calibration_rejects_bad_input():
    model = residual_net()
    with pytest.raises(CalibrationError, match="method"):
        calibrate(model, images(4), method="kl")
    with pytest.raises(CalibrationError, match="no array for model input"):
        calibrate(model, {"image": images(4)})
    with pytest.raises(CalibrationError, match="no samples"):
        calibrate(model, [])
    with pytest.raises(CalibrationError, match="unknown tensor"):
        calibrate(model, images(4), tensors=["nope"])


# -- ONNX backend test cases (conformance regressions) -----------------------------------------

@pytest.mark.parametrize("cid", ["pytorch-converted/test_Conv2d", "light/light_squeezenet"])
def test_int8_on_old_opsets_raises_the_opset_and_says_so(cid):
    """Per-axis DequantizeLinear needs opset 13: the model is converted first (opset 6 and 9)."""
    from backend_cases import feeds, load_case

    import trtlab

    case = load_case(cid)
    old = case.model.opset_import[0].version
    q = trtlab.quantize_int8(trtlab.load(case.model), [feeds(case)], method="minmax", progress=False)
    onnx.checker.check_model(q.proto)
    assert q.opset == 13
    assert any(f"from {old} to 13" in n for n in q.notes)
    assert any(n.op_type == "DequantizeLinear" for n in q.proto.graph.node)
    out = run_onnx(q, feeds(case), validate=False)
    want = case.data_sets[0][1][0]
    got = out[q.outputs[0].name]
    assert got.shape == want.shape and np.isfinite(got).all()
