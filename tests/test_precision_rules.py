"""Precision on any opset, weight form and control flow; placement rules; calibration; modes.

Small models built here by named factories, each with a sketch of its graph.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import trtlab
from trtlab.backends.tensorrt import flavor as trt
from trtlab.errors import PrecisionError
from trtlab.backends.onnxruntime.session import run_onnx
from trtlab.study.localize import auto_mixed_precision
from trtlab.precision import (calibrate, fp16_keep_table, int8_coverage,
                              quantization_plan, quantize_fp8, quantize_int8, registry, to_bf16,
                              to_fp16)
from trtlab.precision.calibration import entropy_amax, mse_amax, quantization_mse

from factories import _model, const, vi

needs_parser = pytest.mark.skipif(not trt.info().parse, reason="no TensorRT ONNX parser installed")
needs_build = pytest.mark.skipif(not trt.info().build, reason="this TensorRT cannot build engines here")


def _conv_weights(rng, cout, cin, k=3, scale=0.3):
    return (rng.standard_normal((cout, cin, k, k)) * scale).astype(np.float32)


def conv_net(opset=17, constant_weights=False, seed=0):
    """x[N,16,8,8] -> conv1(w1) -> relu -> conv2(w2) -> gap -> flatten -> fc(wf) -> y[N,4]

    ``constant_weights`` gives w1 and w2 as Constant nodes instead of initializers.
    """
    rng = np.random.default_rng(seed)
    w1, w2 = _conv_weights(rng, 16, 16), _conv_weights(rng, 16, 16)
    wf = (rng.standard_normal((16, 4)) * 0.3).astype(np.float32)
    nodes, inits = [], [const("wf", wf)]
    if constant_weights:
        nodes += [helper.make_node("Constant", [], ["w1"], name="w1_const", value=numpy_helper.from_array(w1)),
                  helper.make_node("Constant", [], ["w2"], name="w2_const", value=numpy_helper.from_array(w2))]
    else:
        inits += [const("w1", w1), const("w2", w2)]
    nodes += [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "wf"], ["y"], name="fc"),
    ]
    return _model(nodes, [vi("x", ["N", 16, 8, 8])], [vi("y", ["N", 4])], inits, opset=opset)


def if_net(seed=0):
    """x[N,16,8,8], flag[] -> If(flag) { then: conv_in(w) -> relu ; else: Identity(x) } -> y
                                      top level also: conv_top(w) -> z   (w shared with the branch)
    """
    rng = np.random.default_rng(seed)
    w = const("w", _conv_weights(rng, 16, 16))
    then = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["tc"], name="conv_in", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["tc"], ["tr"], name="relu_in")],
        "then", [], [vi("tr", None)])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["ei"], name="ident")], "else", [],
                              [vi("ei", None)])
    nodes = [helper.make_node("If", ["flag"], ["y"], name="branch", then_branch=then, else_branch=other),
             helper.make_node("Conv", ["x", "w"], ["z"], name="conv_top", pads=[1, 1, 1, 1])]
    return _model(nodes, [vi("x", ["N", 16, 8, 8]), vi("flag", [], TensorProto.BOOL)],
                  [vi("y", None), vi("z", ["N", 16, 8, 8])], [w])


def if_only_net():
    """x[N,16,8,8], flag[] -> If(flag) { then: conv_in(w) ; else: Identity(x) } -> y   (w read only inside)"""
    rng = np.random.default_rng(1)
    w = const("w", _conv_weights(rng, 16, 16))
    then = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["tc"], name="conv_in", pads=[1, 1, 1, 1])],
                             "then", [], [vi("tc", None)])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["ei"], name="ident")], "else", [],
                              [vi("ei", None)])
    nodes = [helper.make_node("If", ["flag"], ["y"], name="branch", then_branch=then, else_branch=other)]
    return _model(nodes, [vi("x", ["N", 16, 8, 8]), vi("flag", [], TensorProto.BOOL)], [vi("y", None)], [w])


def residual_silu_net(seed=0):
    """x[N,16,8,8] -> conv1 -> silu (x*sigmoid) -> conv2 -> +bias -> add(silu) -> y
                                  \\_______________________________/
    """
    rng = np.random.default_rng(seed)
    inits = [const("w1", _conv_weights(rng, 16, 16)), const("w2", _conv_weights(rng, 16, 16)),
             const("bias", (rng.standard_normal((1, 16, 1, 1)) * 0.1).astype(np.float32))]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c1"], ["s1"], name="sig1"),
        helper.make_node("Mul", ["c1", "s1"], ["a1"], name="silu1"),
        helper.make_node("Conv", ["a1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "bias"], ["b2"], name="bias_add"),
        helper.make_node("Add", ["b2", "a1"], ["y"], name="residual"),
    ]
    return _model(nodes, [vi("x", ["N", 16, 8, 8])], [vi("y", ["N", 16, 8, 8])], inits)


def attention_net(seed=0):
    """q[N,8,16], k[N,8,16] -> scores = MatMul(q, kT) -> softmax -> ctx = MatMul(p, q) -> proj(w) -> y
    v[1,16] -> gemv(wv) -> yv[1,4]
    """
    rng = np.random.default_rng(seed)
    inits = [const("w", (rng.standard_normal((16, 16)) * 0.3).astype(np.float32)),
             const("wv", (rng.standard_normal((16, 4)) * 0.3).astype(np.float32))]
    nodes = [
        helper.make_node("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"], name="scores"),
        helper.make_node("Softmax", ["scores"], ["p"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["p", "q"], ["ctx"], name="context"),
        helper.make_node("MatMul", ["ctx", "w"], ["y"], name="proj"),
        helper.make_node("MatMul", ["v", "wv"], ["yv"], name="gemv"),
    ]
    return _model(nodes, [vi("q", ["N", 8, 16]), vi("k", ["N", 8, 16]), vi("v", [1, 16])],
                  [vi("y", ["N", 8, 16]), vi("yv", [1, 4])], inits)


def big_bn_net():
    """x[N,16,8,8] -> conv(w) -> BatchNormalization(var up to 1e8) -> y   (float16 clips the variance)"""
    rng = np.random.default_rng(0)
    var = np.full(16, 1.0, np.float32)
    var[3] = 9.8e7
    inits = [const("w", _conv_weights(rng, 16, 16)), const("scale", np.ones(16, np.float32)),
             const("bias", np.zeros(16, np.float32)), const("mean", np.zeros(16, np.float32)),
             const("var", var)]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["y"], name="bn")]
    return _model(nodes, [vi("x", ["N", 16, 8, 8])], [vi("y", ["N", 16, 8, 8])], inits)


def overflow_net():
    """x[N,16] -> big(*3e4, values ~1e5) -> relu -> shrink(*1e-3) -> add(x) -> y[N,16]   (float16 overflows in big)"""
    inits = [const("w", np.full((16,), 30000.0, np.float32)), const("k", np.array(1e-3, np.float32))]
    nodes = [helper.make_node("Mul", ["x", "w"], ["m"], name="big"),
             helper.make_node("Relu", ["m"], ["mr"], name="relu"),
             helper.make_node("Mul", ["mr", "k"], ["s"], name="shrink"),
             helper.make_node("Add", ["s", "x"], ["y"], name="add")]
    return _model(nodes, [vi("x", ["N", 16])], [vi("y", ["N", 16])], inits)


def relu_only():
    """x[N,4] -> Relu -> y   (nothing to quantize)"""
    return _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x", ["N", 4])], [vi("y", ["N", 4])])


def images(n=16, seed=1, c=16, scale=1.0):
    return (np.random.default_rng(seed).standard_normal((n, c, 8, 8)) * scale).astype(np.float32)


def qdq_inputs(model, node_name):
    node = next(n for _, g in _walk(model.proto.graph) for n in g.node if n.name == node_name)
    prods = {o: n for _, g in _walk(model.proto.graph) for n in g.node for o in n.output}
    return [prods.get(x).op_type if x in prods else None for x in node.input[:2]]


def _walk(graph):
    from trtlab.precision import _graphs

    return _graphs.walk(graph)


# -- registry ------------------------------------------------------------------------------

def test_registry_names_modes_and_refuses_unknown():
    assert {"fp32", "fp16", "bf16", "int8", "fp8"} <= set(registry.names())
    assert registry.needs_calibration("int8") and not registry.needs_calibration("fp16")
    with pytest.raises(PrecisionError, match="not a registered precision mode.*fp16"):
        registry.get("int4")
    part = trtlab.partition(trtlab.load(conv_net()))
    with pytest.raises(PrecisionError, match="int4"):
        trtlab.build(part, precision="int4", progress=False)


def test_a_registered_mode_is_built_without_touching_build(monkeypatch):
    seen = []

    def transform(model, data):
        seen.append(data is not None)
        return to_fp16(model, keep_fp32_ops=("Conv",))

    monkeypatch.setitem(registry._MODES, "fp16_noconv", registry.PrecisionMode("fp16_noconv", transform))
    hybrid = trtlab.build(trtlab.partition(trtlab.load(conv_net())), precision="fp16_noconv",
                          feeds={"x": images(2)}, progress=False)
    assert seen == [False]
    got = hybrid.run({"x": images(2)})["y"]
    want = run_onnx(conv_net(), {"x": images(2)})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)


# -- opset, weight form, control flow ------------------------------------------------------

def test_opset_11_is_raised_to_13_for_per_channel_and_noted():
    q = quantize_int8(conv_net(opset=11), images(), progress=False)
    assert q.opset == 13
    assert any("opset raised from 11 to 13" in n for n in q.notes)
    dq = [n for n in q.proto.graph.node if n.op_type == "DequantizeLinear" and any(a.name == "axis" for a in n.attribute)]
    assert len(dq) == 3
    ref = run_onnx(conv_net(opset=11), {"x": images(4, seed=7)})["y"]
    got = run_onnx(q, {"x": images(4, seed=7)})["y"]
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


def test_opset_fallback_is_per_tensor_when_the_converter_fails(monkeypatch):
    from trtlab.precision import _graphs

    monkeypatch.setattr(_graphs, "raise_opset", lambda proto, target, feeds=(): (None, "it failed"))
    q = quantize_int8(conv_net(opset=11), images(), progress=False)
    assert q.opset == 11
    assert any("per tensor" in n and "it failed" in n for n in q.notes)
    assert not any(a.name == "axis" for n in q.proto.graph.node for a in n.attribute
                   if n.op_type == "DequantizeLinear")
    with pytest.raises(PrecisionError, match="opset 9.*convert_version"):
        quantize_int8(conv_net(opset=9), images(), progress=False)


def test_constant_node_weights_are_quantized_whatever_the_input_form():
    proto = conv_net(constant_weights=True)
    for given in (proto, trtlab.load(proto, fold_constants=False), trtlab.load(proto)):
        q = quantize_int8(given, images(), progress=False)
        for node in ("conv1", "conv2"):
            assert qdq_inputs(q, node) == ["DequantizeLinear", "DequantizeLinear"], (type(given), node)
        int8 = [t.name for t in q.proto.graph.initializer if t.data_type == TensorProto.INT8 and "_axis" in t.name
                and "zero_point" not in t.name]
        assert sorted(int8) == ["w1_int8_axis0", "w2_int8_axis0", "wf_int8_axis1"]
    assert not any(n.op_type == "Constant" and n.output[0] in ("w1", "w2") for n in q.proto.graph.node)


def test_initializers_read_inside_if_bodies_survive_and_bodies_are_quantized():
    x = images(4, seed=3)
    for flag in (True, False):
        feeds = {"x": x, "flag": np.array(flag)}
        ref = run_onnx(if_net(), feeds)
        q = quantize_int8(if_net(), [{"x": images(8), "flag": np.array(True)}], progress=False)
        onnx.checker.check_model(q.proto, full_check=True)
        got = run_onnx(q, feeds)
        for k in ref:
            assert np.abs(got[k] - ref[k]).max() < 0.05 * np.abs(ref[k]).max(), (flag, k)
    assert qdq_inputs(q, "conv_top") == ["DequantizeLinear", "DequantizeLinear"]
    assert qdq_inputs(q, "conv_in") == ["DequantizeLinear", "DequantizeLinear"]
    plan = q.quantization_plan
    assert set(plan.loc[plan["node"] == "conv_in", "graph"]) == {"branch/then_branch/"}
    only = quantize_int8(if_only_net(), [{"x": images(8), "flag": np.array(True)}], progress=False)
    onnx.checker.check_model(only.proto, full_check=True)
    assert run_onnx(only, {"x": x, "flag": np.array(True)})["y"].shape == (4, 16, 8, 8)


def test_fp16_converts_inside_if_bodies():
    half = to_fp16(if_net())
    then = next(a.g for n in half.proto.graph.node if n.op_type == "If" for a in n.attribute
                if a.name == "then_branch")
    assert {n.op_type for n in then.node} >= {"Conv", "Cast"}
    assert any(t.data_type == TensorProto.FLOAT16 for t in then.initializer) or \
        any(t.data_type == TensorProto.FLOAT16 for t in half.proto.graph.initializer)
    x = images(2, seed=4)
    for flag in (True, False):
        got = run_onnx(trtlab.precision.emulate_fp16(half) if False else half, {"x": x, "flag": np.array(flag)})
        ref = run_onnx(if_net(), {"x": x, "flag": np.array(flag)})
        np.testing.assert_allclose(got["y"], ref["y"], rtol=1e-2, atol=1e-2)


def test_a_transform_that_changes_nothing_warns_and_is_not_labelled(caplog):
    with caplog.at_level(logging.WARNING, logger="trtlab.precision"):
        q = quantize_int8(relu_only(), np.ones((2, 4), np.float32), progress=False)
    meta = {p.key: p.value for p in q.proto.metadata_props}
    assert meta["trtlab.precision"] == "fp32" and "int8" in meta["trtlab.unconverted"]
    assert any("nothing to quantize" in r.message for r in caplog.records if r.levelno == logging.WARNING)
    ints = _model([helper.make_node("Add", ["a", "a"], ["b"], name="add")], [vi("a", [2], TensorProto.INT64)],
                  [vi("b", [2], TensorProto.INT64)])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trtlab.precision"):
        half = to_fp16(ints)
    assert {p.key: p.value for p in half.proto.metadata_props}["trtlab.precision"] == "fp32"
    assert any("no node converted" in r.message for r in caplog.records)


def test_checker_failure_advice_names_the_transforms_own_parameter():
    from trtlab.precision._common import finish

    bad = conv_net()
    bad.graph.node[0].input[1] = "missing"
    with pytest.raises(PrecisionError, match=r"exclude_nodes"):
        finish(bad, "m", advice="Leave the offending nodes in float (quantize_int8(..., exclude_nodes=[...]))")


# -- placement -----------------------------------------------------------------------------

def test_residual_add_found_through_silu_and_bias_add():
    plan = quantization_plan(residual_silu_net())
    residual = plan[plan["role"] == "residual"]
    assert list(zip(residual["node"], residual["tensor"])) == [("residual", "a1")]
    assert "conv2" in residual["reason"].iloc[0]


def test_named_exclusions_are_rows_and_overridable():
    plan = quantization_plan(attention_net())
    skipped = plan[~plan["quantize"]].set_index("node")["rule"].to_dict()
    assert skipped == {"scores": "attention_matmul", "context": "attention_matmul", "gemv": "gemv"}
    assert set(plan.loc[plan["quantize"], "node"]) == {"proj"}
    everything = quantization_plan(attention_net(), exclusions=())
    assert set(everything.loc[everything["quantize"], "node"]) == {"scores", "context", "proj", "gemv"}
    small = quantization_plan(_small_conv(), exclusions=("small_channel_conv", "output_layer"))
    assert small.set_index("node").loc["conv", "rule"] == "small_channel_conv"
    out = quantization_plan(conv_net(), exclusions=("output_layer",))
    assert out.set_index("node").loc["fc", "rule"] == "output_layer"
    with pytest.raises(PrecisionError, match="not exclusion rules"):
        quantization_plan(conv_net(), exclusions=("tiny",))


def _small_conv():
    """x[N,3,8,8] -> conv(w[8,3,3,3]) -> relu -> y"""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    return _model(nodes, [vi("x", ["N", 3, 8, 8])], [vi("y", ["N", 8, 8, 8])], [const("w", _conv_weights(rng, 8, 3))])


def concat_net():
    """x[N,16,8,8] -> conv_a -> a ; x -> maxpool -> p ; Concat(a*2, p) -> Resize(x2) -> y"""
    rng = np.random.default_rng(0)
    inits = [const("wa", _conv_weights(rng, 16, 16)), const("two", np.array(2.0, np.float32)),
             const("scales", np.array([1, 1, 2, 2], np.float32))]
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["a", "two"], ["a2"], name="double"),
             helper.make_node("MaxPool", ["x"], ["p"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["a2", "p"], ["cat"], name="cat", axis=1),
             helper.make_node("Resize", ["cat", "", "scales"], ["y"], name="up", mode="nearest")]
    return _model(nodes, [vi("x", ["N", 16, 8, 8])], [vi("y", ["N", 32, 16, 16])], inits)


def test_optional_rules_pool_concat_resize_mul_with_shared_concat_scale():
    plan = quantization_plan(concat_net(), extra_rules=("pooling", "concat", "resize", "mul"))
    roles = set(zip(plan["node"], plan["role"]))
    assert {("pool", "pooling"), ("cat", "concat"), ("up", "resize"), ("double", "mul")} <= roles
    q = quantize_int8(concat_net(), images(), extra_rules=("concat",), progress=False)
    inits = {t.name: numpy_helper.to_array(t) for t in q.proto.graph.initializer}
    cat = next(n for n in q.proto.graph.node if n.name == "cat")
    prods = {o: n for n in q.proto.graph.node for o in n.output}
    scales = [float(inits[prods[x].input[1]]) for x in cat.input]
    assert all(prods[x].op_type == "DequantizeLinear" for x in cat.input)
    assert scales[0] == scales[1] > 0
    ref = run_onnx(concat_net(), {"x": images(2, seed=5)})["y"]
    got = run_onnx(q, {"x": images(2, seed=5)})["y"]
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


def test_int8_coverage_counts_quantized_macs():
    model = trtlab.load(attention_net())
    q = quantize_int8(model, {"q": np.random.default_rng(0).standard_normal((8, 8, 16)).astype(np.float32),
                              "k": np.random.default_rng(1).standard_normal((8, 8, 16)).astype(np.float32),
                              "v": np.random.default_rng(2).standard_normal((8, 16)).astype(np.float32)},
                      batch_size=1, progress=False)
    macs = model.macs
    expected = macs["proj"] / sum(macs.values())
    assert int8_coverage(q) == pytest.approx(expected)
    assert int8_coverage(model) == 0.0


# -- calibration ---------------------------------------------------------------------------

def test_mse_threshold_has_the_least_error():
    rng = np.random.default_rng(0)
    values = np.abs(rng.standard_t(2, 200_000))  # heavy tail: min-max wastes levels, clipping hurts
    hist, edges = np.histogram(values, bins=2048, range=(0, values.max()))
    amax = mse_amax(hist, edges)
    assert 0.1 * values.max() < amax < values.max()
    grid = np.linspace(edges[16], edges[-1], 200)
    assert quantization_mse(hist, edges, np.array([amax]))[0] <= quantization_mse(hist, edges, grid).min() * 1.01


def test_clip_bound_limits_entropy_where_outliers_dominate():
    # 99% of values small, 1% wide: KL clips at a few % of the range and the 1% dominates the error
    rng = np.random.default_rng(0)
    values = np.abs(np.concatenate([rng.standard_normal(200_000) * 0.1, rng.standard_normal(2000) * 20]))
    hist, edges = np.histogram(values, bins=2048, range=(0, values.max()))
    kl = entropy_amax(hist, edges)
    best = quantization_mse(hist, edges, np.array([mse_amax(hist, edges)]))[0]
    assert quantization_mse(hist, edges, np.array([kl]))[0] > 4 * best
    from trtlab.precision.calibration import _bounded

    bounded, note = _bounded(hist, edges, kl, 4.0)
    assert bounded > kl and "bounded" in note
    assert quantization_mse(hist, edges, np.array([bounded]))[0] <= 4 * best * 1.0001


def test_calibration_table_reports_bounding_and_methods_agree_on_a_trained_like_net():
    model = conv_net()
    table = calibrate(model, images(32), method="entropy", progress=False)
    assert {"method_amax", "note"} <= set(table.columns)
    assert (table["amax"] >= table["method_amax"] - 1e-9).all()
    ref = run_onnx(model, {"x": images(8, seed=9)})["y"]
    errs = {}
    for method in ("mse", "entropy", "minmax", "percentile"):
        got = run_onnx(quantize_int8(model, images(32), method=method, progress=False), {"x": images(8, seed=9)})["y"]
        errs[method] = float(np.abs(got - ref).max() / np.abs(ref).max())
    assert max(errs.values()) < 0.05, errs


def depthwise_gain_net(seed=0):
    """x[N,8,8,8] -> mul(gain) -> dw(w, group=8) -> mul(1/gain) -> y[N,8,8,8]

    A per-channel affine (as PP-OCRv4's learnable hardswish) makes two channels 40x wider than
    the rest just before a depthwise Conv, which never mixes channels; the gain is undone after
    it, so every channel matters equally in ``y``.
    """
    rng = np.random.default_rng(seed)
    gain = np.ones(8, np.float32)
    gain[:2] = 40.0
    w = (rng.standard_normal((8, 1, 3, 3)) * 0.5).astype(np.float32)
    nodes = [
        helper.make_node("Mul", ["x", "gain"], ["a"], name="affine"),
        helper.make_node("Conv", ["a", "w"], ["d"], name="dw", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["d", "inv_gain"], ["y"], name="undo"),
    ]
    inits = [const("gain", gain.reshape(1, 8, 1, 1)), const("w", w),
             const("inv_gain", (1 / gain).reshape(1, 8, 1, 1))]
    return _model(nodes, [vi("x", ["N", 8, 8, 8])], [vi("y", ["N", 8, 8, 8])], inits)


def _relative_error(model, candidate, x):
    ref, got = run_onnx(model, {"x": x})["y"], run_onnx(candidate, {"x": x})["y"]
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


def test_depthwise_inputs_with_far_apart_channel_ranges_are_equalized_for_every_method():
    # one per-tensor scale set by the wide channels leaves the narrow ones ~3 levels: every
    # method loses them (10-20 % output error) unless the channels are equalized first
    model = depthwise_gain_net()
    calib, test = images(32, c=8), images(8, seed=9, c=8)
    for method in ("auto", "mse", "entropy", "minmax", "percentile"):
        plain = quantize_int8(model, calib, method=method, progress=False, equalize=False)
        assert _relative_error(model, plain, test) > 0.05, method
        q = quantize_int8(model, calib, method=method, progress=False)
        assert _relative_error(model, q, test) < 0.02, method
        plan = q.quantization_plan
        row = plan[plan["rule"] == "depthwise_equalization"]
        assert len(row) == 1 and not row["quantize"].iloc[0], plan
        assert float(re.search(r"([0-9.]+)x apart", row["reason"].iloc[0]).group(1)) > 20
        assert any("equalized" in n for n in q.notes)
        assert int8_coverage(q) == 1.0


def test_calibration_table_carries_the_equalization_quantize_int8_reuses():
    model = depthwise_gain_net()
    calib, test = images(32, c=8), images(8, seed=9, c=8)
    table = calibrate(model, calib, method="auto", progress=False)
    row = table[table["equalizes"] == "a"]
    assert len(row) == 1 and row["tensor"].iloc[0] != "a"
    assert np.allclose(row["channel_scale"].iloc[0], [1, 1] + [1 / 40] * 6, rtol=0.2)
    for method in ("mse", "minmax"):
        from_table = quantize_int8(model, table.assign(amax=table[f"amax_{method}"]), method=method)
        from_data = quantize_int8(model, calib, method=method, progress=False)
        x = {"x": test}
        assert np.allclose(run_onnx(from_table, x)["y"], run_onnx(from_data, x)["y"], atol=1e-5)
    # balanced channels are left alone
    plain = calibrate(conv_net(), images(32), progress=False)
    assert plain["equalizes"].isna().all()


def test_a_table_that_equalizes_a_tensor_the_model_lacks_is_refused():
    from trtlab.errors import CalibrationError

    table = calibrate(depthwise_gain_net(), images(32, c=8), progress=False)
    table.loc[table["equalizes"] == "a", "equalizes"] = "not_there"
    with pytest.raises(CalibrationError, match="depthwise Conv"):
        quantize_int8(depthwise_gain_net(), table)


class _AdditiveTrials:
    """Stand-in for the quantized model's output error: each tensor adds its own share."""

    def __init__(self, shares):
        import pandas as pd

        self.shares = shares
        self.plan = pd.DataFrame({"tensor": list(shares), "role": "activation"})
        self.calls = 0

    def error(self, amax, keep_float=()):
        self.calls += 1
        return sum(v for t, v in self.shares.items() if t not in set(keep_float))


def test_dominant_error_keeps_float_only_the_tensors_that_dominate_a_collapsed_method():
    from trtlab.precision.int8 import _dominant_tensors

    shares = {f"t{i}": 0.001 for i in range(40)}
    shares["t17"] = 0.2  # as PP-OCRv4 det's p2o.Add.7 under minmax: one range, 20x the error
    trials = _AdditiveTrials(shares)
    amax = {t: 1.0 for t in shares}
    errors = {"minmax": trials.error(amax), "mse": 0.025}
    kept, why = _dominant_tensors(trials, amax, errors, "minmax", 2.0)
    assert kept == ["t17"] and "t17 kept float" in why
    assert trials.calls <= 2 * 6 + 3  # bisection, not one trial per tensor
    # within the bound: nothing is touched
    assert _dominant_tensors(trials, amax, {"minmax": 0.015, "mse": 0.01}, "minmax", 2.0)[0] == []
    # spread error (no tensor removes half of it): nothing kept, and the note says why
    spread = _AdditiveTrials({f"t{i}": 0.01 for i in range(40)})
    kept, why = _dominant_tensors(spread, amax, {"entropy": 0.4, "mse": 0.01}, "entropy", 2.0)
    assert kept == [] and "no single tensor" in why


def test_dominant_error_rows_and_weighted_ops_left_float(monkeypatch):
    from trtlab.precision import int8

    model = conv_net()
    monkeypatch.setattr(int8, "_dominant_tensors",
                        lambda trials, amax, errors, method, bound: (["r1"], "dominant_error: test"))
    q = quantize_int8(model, images(32), method="minmax", progress=False)
    plan = q.quantization_plan
    rows = plan[plan["rule"] == "dominant_error"]
    assert set(rows["node"]) == {"conv2"} and not rows["quantize"].any()
    assert set(rows["role"]) == {"activation", "weight"}
    assert qdq_inputs(q, "conv2") == ["Relu", None]  # float activation, float weight
    assert qdq_inputs(q, "conv1") == ["DequantizeLinear", "DequantizeLinear"]
    assert 0 < int8_coverage(q) < 1
    # auto never calls it: its choice is the least error by construction
    assert quantize_int8(model, images(32), progress=False).quantization_plan["rule"].ne("dominant_error").all()


# -- FP16 by data --------------------------------------------------------------------------

def test_fp16_keeps_out_of_range_constants_and_activations_with_reasons():
    half = to_fp16(big_bn_net())
    table = half.fp32_nodes
    assert table.set_index("node").loc["bn", "rule"] == "init_max"
    assert "9.8e+07" in table.set_index("node").loc["bn", "reason"]
    x = images(2, seed=2)
    ref = run_onnx(big_bn_net(), {"x": x})["y"]
    got = run_onnx(trtlab.precision.ort_variant(half)[0], {"x": x})["y"]
    cos = float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got))
    assert cos > 0.999
    data = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32) * 10
    kept = fp16_keep_table(overflow_net(), data)
    assert kept.set_index("node").loc["big", "rule"] == "data_max"
    assert kept.set_index("node").loc["big", "value"] > 512
    assert "big" not in set(fp16_keep_table(overflow_net())["node"])
    with_data = to_fp16(overflow_net(), calibration_data=data)
    assert np.isfinite(run_onnx(trtlab.precision.ort_variant(with_data)[0], {"x": data})["y"]).all()


def test_auto_mixed_precision_finds_the_overflowing_node():
    data = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32) * 10
    model, table = auto_mixed_precision(overflow_net(), data, target=0.999, precision="fp16", data_max=None)
    assert table.attrs["met"] and table.attrs["baseline_score"] < 0.999
    # big overflows; shrink reads big's ~1e5 output, which a float16 input would overflow too
    assert set(table.loc[table["kept"], "node"]) == {"big", "shrink"}
    assert "big" in set(model.fp32_nodes["node"])
    assert table.attrs["score"] >= 0.999


# -- BF16 / FP8 ----------------------------------------------------------------------------

def test_bf16_and_fp8_run_close_and_are_labelled():
    x = images(4, seed=6)
    ref = run_onnx(conv_net(), {"x": x})["y"]
    half = to_bf16(conv_net())
    assert {p.key: p.value for p in half.proto.metadata_props}["trtlab.precision"] == "bf16"
    assert any(t.data_type == TensorProto.BFLOAT16 for t in half.proto.graph.initializer)
    got = run_onnx(trtlab.precision.ort_variant(half)[0], {"x": x})["y"]
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()
    f8 = quantize_fp8(conv_net(), images(), progress=False)
    assert f8.opset >= 19
    assert any(t.data_type == TensorProto.FLOAT8E4M3FN for t in f8.proto.graph.initializer)
    got = run_onnx(f8, {"x": x})["y"]
    assert float((got * ref).sum() / np.linalg.norm(got) / np.linalg.norm(ref)) > 0.98


@needs_parser
def test_every_mode_parses_with_tensorrt():
    for name in ("fp16", "bf16", "int8", "fp8"):
        out = registry.apply(name, trtlab.load(conv_net()), images(8))
        builder, network, parser, _ = trt.make_parser()
        assert parser.parse(out.to_bytes()), (name, [parser.get_error(i).desc() for i in range(parser.num_errors)])


# -- peers in the table ----------------------------------------------------------------------

def test_precision_table_takes_peer_models_labelled(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": images(4, seed=s)} for s in range(4)])

        def get_next(self):
            return next(self.items, None)

    src = tmp_path / "m.onnx"
    onnx.save(conv_net(), src)
    peer = tmp_path / "ort_int8.onnx"
    quantize_static(str(src), str(peer), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    table = trtlab.precision_table(conv_net(), images(16, seed=8), precisions=("fp32", "int8"),
                                   calibration_data=images(32), methods=("mse",),
                                   candidates={"onnxruntime int8": peer}, runner="onnxruntime",
                                   progress=False)
    rows = table.set_index("config")
    assert rows.loc["onnxruntime int8", "source"] == "external"
    assert rows.loc["onnxruntime int8", "precision"] == "int8"
    assert rows.loc["int8 mse", "source"] == "trtlab"
    assert rows.loc["int8 mse", "mac_coverage"] == pytest.approx(1.0)
    assert rows.loc["fp32", "mac_coverage"] == 0.0
    assert rows.loc["onnxruntime int8", "cosine"] > 0.95


# -- side issue ----------------------------------------------------------------------------

def test_dim_declared_minus_one_is_dynamic():
    w = const("w", np.ones((4, 3), np.float32))
    proto = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [vi("x", [-1, 4])],
                   [vi("y", [-1, 3])], [w])
    model = trtlab.load(proto)
    assert not isinstance(model.inputs[0].shape[0], int)
    assert any("-1" in n for n in model.notes)
    hybrid = trtlab.build(trtlab.partition(model), shapes={"x": [(1, 4), (4, 4), (8, 4)]}, progress=False)
    assert hybrid.run({"x": np.ones((5, 4), np.float32)})["y"].shape == (5, 3)


def test_build_runs_every_registered_mode():
    x = images(2, seed=11)
    want = run_onnx(conv_net(), {"x": x})["y"]
    part = trtlab.partition(trtlab.load(conv_net()))
    for mode in ("bf16", "fp8", "int8"):
        hybrid = trtlab.build(part, precision=mode, calibration_data=images(16), progress=False, cache_dir=False)
        got = hybrid.run({"x": x})["y"]
        cos = float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want))
        assert cos > 0.98, (mode, cos)


def _backend_suite_models():
    import glob
    import os

    root = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "pytorch-converted")
    out = []
    for d in sorted(glob.glob(os.path.join(root, "test_*"))):
        if os.path.exists(os.path.join(d, "model.onnx")) and \
                {n.op_type for n in onnx.load(os.path.join(d, "model.onnx")).graph.node} & {"Conv", "ConvTranspose", "Gemm", "MatMul"}:
            out.append(d)
    return out


def test_int8_on_the_onnx_backend_suite_at_opset_9():
    """pytorch-converted Conv/ConvTranspose/Linear models of the onnx wheel, at opset 9 (< 10 < 13)."""
    import glob
    import os

    from onnx import version_converter

    dirs = _backend_suite_models()
    assert len(dirs) >= 30
    labels = []
    for d in dirs:
        proto = version_converter.convert_version(onnx.load(os.path.join(d, "model.onnx")), 9)
        proto.ir_version = max(proto.ir_version, 4)
        inits = {t.name for t in proto.graph.initializer}
        names = [i.name for i in proto.graph.input if i.name not in inits]
        ins = [numpy_helper.to_array(onnx.load_tensor(p)) for p in sorted(glob.glob(os.path.join(d, "test_data_set_0", "input_*.pb")))]
        feeds = dict(zip(names, ins))
        q = quantize_int8(proto, [feeds], progress=False)
        label = {p.key: p.value for p in q.proto.metadata_props}["trtlab.precision"]
        labels.append(label)
        want = next(iter(run_onnx(trtlab.load(proto), feeds).values()))
        got = next(iter(run_onnx(q, feeds).values()))
        if label == "int8":
            assert q.opset == 13 and any("opset raised from 9 to 13" in n for n in q.notes), d
            cos = float((got * want).sum() / (np.linalg.norm(got) * np.linalg.norm(want) + 1e-30))
            assert cos > 0.99, (os.path.basename(d), cos)
        else:
            np.testing.assert_array_equal(got, want)
    assert labels.count("int8") >= len(dirs) - 2, labels


def lstm_after_conv():
    """x[1,4,8] -> Conv(k=1) -> Relu -> Transpose(2,0,1) -> LSTM(hidden 6) -> y.

    The layout of silero-vad's encoder feeding its LSTM, whose float16 build TensorRT-RTX 1.7
    refuses (Myelin shape inference on the reshape it inserts before the LSTM).
    """
    rng = np.random.default_rng(0)
    inits = [const("w", rng.standard_normal((4, 4, 1)).astype(np.float32)),
             const("W", rng.standard_normal((1, 24, 4)).astype(np.float32)),
             const("R", rng.standard_normal((1, 24, 6)).astype(np.float32))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Transpose", ["r"], ["t"], name="to_seq", perm=[2, 0, 1]),
             helper.make_node("LSTM", ["t", "W", "R"], ["y"], name="lstm", hidden_size=6)]
    return _model(nodes, [vi("x", [1, 4, 8])], [vi("y", [8, 1, 1, 6])], inits)


def test_recurrent_input_rule_keeps_the_lstm_producer_float32():
    model = trtlab.load(lstm_after_conv())
    half = to_fp16(model)
    kept = half.fp32_nodes.set_index("node")
    assert kept.loc["relu", "rule"] == "recurrent_input" and kept.loc["to_seq", "rule"] == "recurrent_input"
    assert "lstm" in kept.loc["relu", "reason"]
    assert "conv" not in kept.index  # the computing node before is converted
    x = np.random.default_rng(1).standard_normal((1, 4, 8)).astype(np.float32)
    want = run_onnx(model, {"x": x})["y"]
    np.testing.assert_allclose(run_onnx(half, {"x": x})["y"], want, rtol=1e-2, atol=1e-2)
    plain = to_fp16(model, keep_recurrent_inputs=False)
    assert "recurrent_input" not in set(plain.fp32_nodes["rule"])


@needs_build
def test_recurrent_input_rule_lets_tensorrt_build_float16():
    for convert in (to_fp16, to_bf16):
        half = convert(trtlab.load(lstm_after_conv()))
        builder, network, parser, logger = trt.make_parser()
        assert parser.parse(half.to_bytes())
        config = builder.create_builder_config()
        config.builder_optimization_level = 0
        assert builder.build_serialized_network(network, config) is not None, convert.__name__
