"""trtlab's operator table: per-op rules, version gates, custom domains, user overrides."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

import trtlab
from trtlab.errors import SupportError
from trtlab.backends.tensorrt.support import (RuleSet, Verdict, check_support, default_rules, register_rule,
                            reset_rules, resolve_target, rules_support)

F, I64, I32, B = T.FLOAT, T.INT64, T.INT32, T.BOOL


def single_op(op, in_types, shape=(1, 3, 8, 8), attrs=None, inits=None, n_out=1, out_type=None,
              shapes=None, domain="", opset=17):
    """One node ``op`` reading graph inputs i0, i1, ... (or initializers) -> outputs o0, o1, ...

        i0 ─┐
        i1 ─┼─► op ─► o0 [, o1 ...]
        ... ┘
    """
    inits = inits or {}
    names = [f"i{k}" if t is not None else "" for k, t in enumerate(in_types)]
    inputs = [helper.make_tensor_value_info(n, t, list((shapes or {}).get(k, shape)))
              for k, (n, t) in enumerate(zip(names, in_types)) if n and n not in inits]
    outs = [f"o{j}" for j in range(n_out)]
    node = helper.make_node(op, names, outs, name="n0", domain=domain, **(attrs or {}))
    graph = helper.make_graph([node], "single", inputs,
                              [helper.make_tensor_value_info(o, out_type or in_types[0], None)
                               for o in outs],
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def chain_relu_unique_relu():
    """x ─► Relu ─► Unique ─► Relu ─► y   (Unique is not supported by TensorRT)"""
    x = helper.make_tensor_value_info("x", F, [6])
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu0"),
             helper.make_node("Unique", ["a"], ["u"], name="unique"),
             helper.make_node("Relu", ["u"], ["y"], name="relu1")]
    graph = helper.make_graph(nodes, "chain", [x], [helper.make_tensor_value_info("y", F, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def verdict(model, trt_version="10.15", rules=None):
    if not isinstance(model, trtlab.Model):
        model = trtlab.load(model, fold_constants=False)
    table = rules_support(model, trt_version=trt_version, rules=rules)
    return bool(table.frame["supported"][0]), table.frame["reason"][0]


CASES = [
    # (id, model factory args, expected supported, reason fragment)
    ("relu_f32", dict(op="Relu", in_types=[F]), True, ""),
    ("sin_int32", dict(op="Sin", in_types=[I32]), False, "INT32"),
    ("and_float", dict(op="And", in_types=[F, F], out_type=B), False, "FLOAT"),
    ("less_bool", dict(op="Less", in_types=[B, B], out_type=B), False, "BOOL"),
    ("maxpool_2d", dict(op="MaxPool", in_types=[F], attrs={"kernel_shape": [2, 2]}), True, ""),
    ("maxpool_indices", dict(op="MaxPool", in_types=[F], attrs={"kernel_shape": [2, 2]}, n_out=2),
     False, "Indices"),
    ("maxpool_dilated", dict(op="MaxPool", in_types=[F],
                             attrs={"kernel_shape": [2, 2], "dilations": [2, 2]}), False, "dilations"),
    ("avgpool_6d", dict(op="AveragePool", in_types=[F], shape=(1, 1, 2, 2, 2, 2),
                        attrs={"kernel_shape": [1, 1, 1, 1]}), False, "rank"),
    ("resize_crop", dict(op="Resize", in_types=[F, F, F],
                         attrs={"coordinate_transformation_mode": "tf_crop_and_resize"},
                         inits={"i1": np.zeros(0, np.float32),
                                "i2": np.array([1, 1, 2, 2], np.float32)}),
     False, "tf_crop_and_resize"),
    ("resize_linear_batch", dict(op="Resize", in_types=[F, F, F], attrs={"mode": "linear"},
                                 inits={"i1": np.zeros(0, np.float32),
                                        "i2": np.array([2, 1, 2, 2], np.float32)}),
     False, "innermost 3"),
    ("resize_nearest", dict(op="Resize", in_types=[F, F, F],
                            inits={"i1": np.zeros(0, np.float32),
                                   "i2": np.array([1, 1, 2, 2], np.float32)}), True, ""),
    ("reduce_dynamic_axes", dict(op="ReduceSum", in_types=[F, I64], shapes={1: (1,)}), False,
     "axes"),
    ("reduce_const_axes", dict(op="ReduceSum", in_types=[F, I64],
                               inits={"i1": np.array([1], np.int64)}), True, ""),
    ("layernorm_mean_out", dict(op="LayerNormalization", in_types=[F, F], shape=(2, 8),
                                inits={"i1": np.ones(8, np.float32)}, n_out=2), False, "first output"),
    ("bn_training", dict(op="BatchNormalization", in_types=[F, F, F, F, F], shape=(1, 3, 4, 4),
                         attrs={"training_mode": 1},
                         inits={f"i{k}": np.ones(3, np.float32) for k in range(1, 5)}),
     False, "training_mode"),
    ("dropout_training", dict(op="Dropout", in_types=[F, None, B],
                              inits={"i2": np.array(True)}), False, "training"),
    ("dropout_inference", dict(op="Dropout", in_types=[F, None, B],
                               inits={"i2": np.array(False)}), True, ""),
    ("scatternd_mul", dict(op="ScatterND", in_types=[F, I64, F], shape=(3, 3),
                           shapes={1: (1, 1), 2: (1, 3)}, attrs={"reduction": "mul"}),
     False, "reduction"),
    ("dequant_nonzero_zp", dict(op="DequantizeLinear", in_types=[T.INT8, F, T.INT8], shape=(3,),
                                inits={"i1": np.array(0.5, np.float32),
                                       "i2": np.array(3, np.int8)}, out_type=F), False, "non-zero"),
    ("dequant_zero_zp", dict(op="DequantizeLinear", in_types=[T.INT8, F, T.INT8], shape=(3,),
                             inits={"i1": np.array(0.5, np.float32),
                                    "i2": np.array(0, np.int8)}, out_type=F), True, ""),
    ("mod_float_fmod0", dict(op="Mod", in_types=[F, F], shape=(3,)), False, "fmod"),
    ("mod_float_fmod1", dict(op="Mod", in_types=[F, F], shape=(3,), attrs={"fmod": 1}), True, ""),
    ("lpnorm_p3", dict(op="LpNormalization", in_types=[F], attrs={"p": 3}), False, "L1 and L2"),
    ("trilu_1d", dict(op="Trilu", in_types=[F], shape=(4,)), False, "rank"),
    ("range_float_dynamic", dict(op="Range", in_types=[F, F, F], shape=()), False, "constants"),
    ("range_mixed", dict(op="Range", in_types=[F, F, I64], shape=()), False, "same type"),
    ("cast_string", dict(op="Cast", in_types=[F], attrs={"to": T.STRING}, out_type=T.STRING),
     False, "STRING"),
    ("conv_integer", dict(op="ConvInteger", in_types=[T.UINT8, T.UINT8], out_type=I32), False,
     "QuantizeLinear"),
    ("dynamic_quantize", dict(op="DynamicQuantizeLinear", in_types=[F], n_out=3, out_type=T.UINT8),
     False, "not supported"),
    ("unique", dict(op="Unique", in_types=[F], shape=(6,)), False, "not supported"),
    ("lstm_bidir_mixed", dict(op="LSTM", in_types=[F, F, F], shape=(2, 2, 2),
                              shapes={1: (2, 8, 2), 2: (2, 8, 2)},
                              attrs={"hidden_size": 2, "direction": "bidirectional",
                                     "activations": ["Sigmoid", "Tanh", "Tanh",
                                                     "Sigmoid", "Relu", "Tanh"]}),
     False, "activations"),
    ("topk_huge_k", dict(op="TopK", in_types=[F, I64], shape=(1, 5000),
                         inits={"i1": np.array([4000], np.int64)}, n_out=2), False, "3840"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_rule_verdicts(case):
    _, args, expected, fragment = case
    ok, reason = verdict(single_op(**args))
    assert ok is expected, reason
    assert fragment in reason
    assert reason


def test_version_gates():
    attention = single_op("STFT", [F, I64, F], shape=(1, 64, 1), shapes={1: (), 2: (16,)},
                          inits={"i1": np.array(8, np.int64), "i2": np.ones(16, np.float32)})
    ok, reason = verdict(attention, trt_version="10.4")
    assert not ok and "10.5" in reason and "TensorRT 10.4" in reason
    assert verdict(attention, trt_version="10.5")[0]
    squeeze = single_op("Squeeze", [F, I64], shape=(1, 3), shapes={1: (1,)})
    assert not verdict(squeeze, trt_version="10.6")[0]
    assert verdict(squeeze, trt_version="10.7")[0]
    ok, reason = verdict(squeeze, trt_version="1.7")      # TensorRT-RTX keeps the restriction
    assert not ok and "TensorRT-RTX" in reason
    pow_int = single_op("Pow", [I64, I64], shape=(3,))
    assert not verdict(pow_int, trt_version="10.11")[0]
    assert verdict(pow_int, trt_version="10.12")[0]


def test_rtx_version_mapping():
    rtx = resolve_target("1.7")
    assert rtx.rtx and rtx.level == (10, 15) and "TensorRT-RTX 1.7" in str(rtx)
    assert resolve_target("1.0").level == (10, 11)
    assert resolve_target("tensorrt_rtx 1.2.0").level == (10, 14)
    assert resolve_target((10, 8)).level == (10, 8) and not resolve_target((10, 8)).rtx
    with pytest.raises(SupportError, match="10.x"):
        resolve_target("8.6")
    with pytest.raises(SupportError, match="not a version"):
        resolve_target("latest")


def test_rtx_specific_rules():
    nonzero = single_op("NonZero", [F], shape=(3, 3), out_type=I64)
    assert verdict(nonzero, trt_version="10.15")[0]
    ok, reason = verdict(nonzero, trt_version="1.7")
    assert not ok and "plugin" in reason


def test_custom_domain_and_unknown_ops():
    fused = single_op("FusedMatMul", [F, F], shape=(4, 4), domain="com.microsoft")
    ok, reason = verdict(fused)
    assert not ok and "custom domain 'com.microsoft'" in reason
    unknown = trtlab.Model(single_op("NoSuchOp", [F], shape=(4,)))  # load refuses unknown ai.onnx ops
    ok, reason = verdict(unknown)
    assert not ok and "no rule for ONNX op NoSuchOp" in reason and "register_rule" in reason
    mha = single_op("MultiHeadAttention", [F, F, F], shape=(1, 4, 8), domain="com.microsoft",
                    attrs={"num_heads": 2})
    assert verdict(mha, trt_version="1.7")[0]
    assert not verdict(mha, trt_version="10.15")[0]


def test_user_rule_override_and_reset():
    model = single_op("Relu", [F])
    assert verdict(model)[0]
    register_rule("Relu", lambda ctx: (ctx.rank(0) == 2, "only 2D Relu here"))
    try:
        ok, reason = verdict(model)
        assert not ok and reason == "only 2D Relu here"
    finally:
        reset_rules()
    assert verdict(model)[0]


def test_ruleset_passed_per_call_leaves_defaults_alone():
    mine = default_rules().copy("mine")

    @mine.register("NoSuchOp")
    def allow(ctx):
        return Verdict(ctx.elem_type(0) == F, "float NoSuchOp is fine")

    model = trtlab.Model(single_op("NoSuchOp", [F], shape=(4,)))  # load refuses unknown ai.onnx ops
    assert verdict(model, rules=mine) == (True, "float NoSuchOp is fine")
    assert not verdict(model)[0]
    assert verdict(model, rules={"NoSuchOp": lambda ctx: True})[0]
    assert "NoSuchOp" in mine and "NoSuchOp" not in default_rules()


def test_bad_rules_are_reported():
    model = single_op("Relu", [F])
    with pytest.raises(SupportError, match="must return"):
        verdict(model, rules={"Relu": lambda ctx: "yes"})
    with pytest.raises(SupportError, match="ZeroDivisionError.*n0"):
        verdict(model, rules={"Relu": lambda ctx: 1 / 0})
    with pytest.raises(SupportError, match="not a rule set"):
        verdict(model, rules=[1, 2])
    with pytest.raises(SupportError, match="callable"):
        RuleSet().register("Relu", 3)


def test_control_flow_body_is_checked():
    """If whose else-branch holds Unique:  cond ─► If{then: Identity, else: Unique} ─► y"""
    x = helper.make_tensor_value_info("x", F, [6])
    then_g = helper.make_graph([helper.make_node("Identity", ["x"], ["t"], name="then_id")], "then",
                               [], [helper.make_tensor_value_info("t", F, [6])])
    else_g = helper.make_graph([helper.make_node("Unique", ["x"], ["e"], name="else_unique")],
                               "else", [], [helper.make_tensor_value_info("e", F, None)])
    cond = helper.make_tensor_value_info("c", B, [])
    node = helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then_g, else_branch=else_g)
    graph = helper.make_graph([node], "cf", [x, cond], [helper.make_tensor_value_info("y", F, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    ok, reason = verdict(model)
    assert not ok and "else_unique" in reason and "Unique" in reason


def test_table_api_and_errors():
    table = check_support(chain_relu_unique_relu(), source="rules", trt_version="10.15")
    assert list(table.frame.columns) == ["node", "op_type", "supported", "reason", "source"]
    assert table.frame["node"].tolist() == ["relu0", "unique", "relu1"]
    assert table.supported_nodes == {"relu0", "relu1"} and len(table) == 3
    assert set(table.frame["source"]) == {"rules"}
    assert "Unique" in table.reason("unique")
    assert "1 more" not in table._repr_html_() and "unique" in table._repr_html_()
    assert "2/3 nodes supported" in repr(table)
    summary = table.summary()
    assert summary.iloc[0]["op_type"] == "Unique" and summary.iloc[0]["unsupported"] == 1
    with pytest.raises(SupportError, match="not in the support table"):
        table.reason("nope")
    with pytest.raises(SupportError, match="source='magic'"):
        check_support(chain_relu_unique_relu(), source="magic")


def test_rules_cover_operator_matrix():
    rules = default_rules()
    for op in ("Abs Add Attention AveragePool BatchNormalization Cast Concat Conv ConvTranspose "
               "CumSum DepthToSpace Einsum Gather Gemm GridSample GRU If LayerNormalization Loop "
               "LSTM MatMul NonMaxSuppression Pad Resize RotaryEmbedding ScatterND Slice Softmax "
               "STFT TopK Trilu Where Xor Bernoulli Col2Im StringSplit TfIdfVectorizer").split():
        assert op in rules, op
    assert len(rules.ops()) > 180


# -- agreement with TensorRT's parser on ONNX backend test cases --------------------------------

#: (case, node op, rules verdict): each was a rules/parser disagreement; the parser's answer.
BACKEND_VERDICTS = [
    ("node/test_equal_int8", "Equal", True),
    ("node/test_greater_uint8", "Greater", False),
    ("node/test_equal_uint8", "Equal", True),
    ("node/test_less_int8", "Less", True),
    ("node/test_attention_3d", "Attention", True),
    ("node/test_attention_4d_causal_nonpad_batch_prefill", "Attention", True),
    ("node/test_attention_4d_diff_heads_sizes", "Attention", False),
    ("node/test_attention_4d_attn_mask_4d_causal", "Attention", False),
    ("node/test_lppool_2d_default", "LpPool", False),
    ("node/test_resize_upsample_scales_linear", "Resize", False),
    ("node/test_upsample_nearest", "Upsample", False),
    ("node/test_clip_default_int8_inbounds", "Clip", False),
    ("node/test_celu_float16", "Celu", False),
    ("node/test_swish", "Swish", True),
    ("node/test_tensorscatter_circular", "TensorScatter", False),
    ("node/test_identity_sequence", "Identity", False),
    ("node/test_matmul_1d_3d", "MatMul", False),
    ("node/test_and2d", "And", False),
]


@pytest.mark.parametrize("cid,op,expected", BACKEND_VERDICTS, ids=[c[0] for c in BACKEND_VERDICTS])
def test_rules_match_the_parser_on_backend_cases(cid, op, expected):
    from backend_cases import load_case

    from trtlab.backends.tensorrt import flavor as trt

    model = trtlab.load(load_case(cid).model)
    rules = check_support(model, source="rules", trt_version="10.15").frame
    row = rules[rules["op_type"] == op].iloc[0]
    assert bool(row["supported"]) is expected, row["reason"]
    assert row["reason"]
    if trt.info().parse:
        parser = check_support(model, source="parser").frame
        assert bool(parser.loc[parser["node"] == row["node"], "supported"].iloc[0]) is expected


def test_non_maximum_suppression_rule_knows_the_rtx_build_fails():
    from backend_cases import load_case

    model = trtlab.load(load_case("node/test_nonmaxsuppression_center_point_box_format").model)
    rtx = check_support(model, source="rules", trt_version="1.7").frame.iloc[0]
    assert not rtx["supported"] and "build fails" in rtx["reason"]
    full = check_support(model, source="rules", trt_version="10.15").frame.iloc[0]
    assert full["supported"]
