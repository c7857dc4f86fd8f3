"""trtlab.fusion on engine-inspector JSON nobody on the project wrote (tests/fixtures/README.md).

Each mapping fix is checked on the real layer that showed the fault; the layer counts are checked
against the raw JSON with trex's rule for the layers that run (``trex/engine_plan.py`` leaves out
``Constant``, ``NoOp`` and ``shape_call`` layers) and against the profile trtexec wrote.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtlab.errors import FusionError
from trtlab.backends.tensorrt.layers import fusion
from trtlab.backends.tensorrt.layers.names import split_name

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ENGINES = sorted(p.name[: -len(".graph.json")] for p in FIXTURES.glob("*.engine.graph.json"))
NOT_RUN = {"NoOp", "Constant", "shape_call"}


def _graph(stem):
    return FIXTURES / f"{stem}.graph.json"


def _profile(stem):
    return FIXTURES / f"{stem}.profile.json"


def _raw(stem):
    return json.loads(_graph(stem).read_text())["Layers"]


@pytest.fixture(scope="module")
def reports():
    return {s: fusion(_graph(s), profile=_profile(s)) for s in ENGINES}


def _is_reformat(layer):
    return (layer["LayerType"] in ("Reformat", "MyelinReformat")
            or layer["Name"].startswith("Reformatting CopyNode"))


# -- counts against the raw JSON, the profile and trex's rule --------------------------------------
@pytest.mark.parametrize("stem", ENGINES)
def test_running_layers_and_reformats_match_the_raw_json(stem, reports):
    rep, raw = reports[stem], _raw(stem)
    running = [x for x in raw if x["LayerType"] not in NOT_RUN]
    assert list(rep.layers["runs"]) == [x["LayerType"] not in NOT_RUN for x in raw]
    s = rep.summary()
    assert (s["layers"], s["layers_listed"]) == (len(running), len(raw))
    assert s["reformats"] == sum(_is_reformat(x) for x in running)
    # every format conversion is kind "reformat", running or not
    assert list(rep.layers["kind"] == "reformat") == [_is_reformat(x) for x in raw]
    # the profile: layers that do not run cost nothing; the reformats' time is theirs
    prof = {r["name"]: r["averageMs"] for r in json.loads(_profile(stem).read_text())
            if "name" in r}
    assert all(prof[x["Name"]] == 0 for x in raw if x["LayerType"] in NOT_RUN)
    want = sum(prof[x["Name"]] for x in running if _is_reformat(x))
    got = rep.running[rep.running["kind"] == "reformat"]["average_ms"].sum()
    assert got == pytest.approx(want)


def test_counts_quoted_in_the_issue(reports):
    # TF ResNet-50 fp32 (RTX 3090): 103 layers listed, 31 NoOp, 72 run; 13 reformats run
    s = reports["tf_resnet50.fp32.engine"].summary()
    assert (s["layers_listed"], s["elided"], s["layers"], s["reformats"]) == (103, 31, 72, 13)
    c = reports["controlnet_trt86.fp16.engine"].summary()
    assert (c["layers_listed"], c["layers"], c["reformats"]) == (389, 241, 79)


# -- 1. a reformat whose target is a fused layer ---------------------------------------------------
def test_reformat_into_fused_layer_is_not_credited_to_its_nodes(reports):
    rep = reports["pt_resnet18.a100.fp16.engine"]
    first = rep.layers.iloc[0]
    assert first["name"] == "Reformatting CopyNode for Input Tensor 0 to Conv_0 + Relu_1"
    assert split_name(first["name"])[0].kind == "reformat"
    assert (first["kind"], first["onnx_nodes"]) == ("reformat", ())
    assert first["related_nodes"] == ("Conv_0", "Relu_1")
    assert rep.onnx_to_layers["Relu_1"] == ("Conv_0 + Relu_1",)
    lat = rep.node_latency().set_index("node")
    assert lat.loc["Relu_1", "precision"] == "FP16"  # the layer runs FP16; the reformat is FP32
    assert lat.loc["Relu_1", "layer_ms"] == pytest.approx(rep.layers.iloc[1]["average_ms"])
    assert lat.loc["Conv_0", "reformat_ms"] == pytest.approx(first["average_ms"] / 2)
    table = rep.before_after().set_index("op_type")
    assert (table.loc["Relu", "onnx_nodes"], table.loc["Relu", "layers"]) == (17, 17)
    assert (table.loc["Relu", "own_layer"], table.loc["Relu", "absorbed"]) == (0, 17)
    # no fused group made of a reformat
    assert {"Conv_0", "Relu_1"} in rep.groups() and len(rep.groups()) == 17


@pytest.mark.parametrize("stem", ENGINES)
def test_no_reformat_is_credited_to_an_onnx_node(stem, reports):
    layers = reports[stem].layers
    named = layers[layers["name"].str.startswith("Reformatting CopyNode")]
    assert len(named) == 0 or named["onnx_nodes"].map(len).eq(0).all()
    assert named["related_nodes"].map(len).gt(0).all()


# -- 2. ForeignNode ranges -------------------------------------------------------------------------
CN = "controlnet_trt86.fp16.engine"
FOREIGN = ("{ForeignNode[input_blocks.1.1.transformer_blocks.0.norm1.weight + (Unnamed Layer* 109) "
           "[Shuffle].../input_blocks.1/input_blocks.1.1/Reshape_2 + /input_blocks.1/"
           "input_blocks.1.1/Transpose_1 + /input_blocks.1/input_blocks.1.1/Reshape_3]}")
P = "/input_blocks.1/input_blocks.1.1/"


def test_foreign_node_range_ends_are_split(reports):
    part, = split_name(FOREIGN)
    assert part.kind == "range"
    assert (part.name, part.last) == ("input_blocks.1.1.transformer_blocks.0.norm1.weight",
                                      P + "Reshape_3")
    assert part.ends == ("input_blocks.1.1.transformer_blocks.0.norm1.weight", P + "Reshape_2",
                         P + "Transpose_1", P + "Reshape_3")
    rep = reports[CN]
    row = rep.layers[rep.layers["name"] == FOREIGN].iloc[0]
    assert row["onnx_nodes"] == (P + "Reshape_2", P + "Transpose_1", P + "Reshape_3")
    assert row["mapping"] == "range-ends"
    # no node name anywhere is a piece of a range or a fused name
    for node in rep.onnx_to_layers:
        assert "..." not in node and " + " not in node and "ForeignNode" not in node
        assert not node.startswith(("(Unnamed", "Reformatting"))


def controlnet_block_model():
    """The ONNX nodes around the first Myelin layer of the ControlNet fixture (its layers 70-73).

    x -> proj_in/Conv -> Transpose -> Reshape -> norm1 LayerNormalization (norm1.weight)
      -> attn1/MatMul -> Reshape_2 -> Transpose_1 -> Reshape_3 -> proj_out/Conv -> Add(x) -> y
    """
    c, h, w = 8, 4, 6
    rng = np.random.default_rng(0)

    def init(name, shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    def shape(name, dims):
        return numpy_helper.from_array(np.array(dims, np.int64), name)

    nodes = [
        helper.make_node("Conv", ["x", "w_in"], ["/in_out"], name=P + "proj_in/Conv"),
        helper.make_node("Transpose", ["/in_out"], ["/t"], name=P + "Transpose", perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["/t", "s1"], ["/r"], name=P + "Reshape"),
        helper.make_node("LayerNormalization",
                         ["/r", "input_blocks.1.1.transformer_blocks.0.norm1.weight", "nb"],
                         ["/n"], name=P + "transformer_blocks.0/norm1/LayerNormalization",
                         axis=-1),
        helper.make_node("MatMul", ["/n", "wq"], ["/q"],
                         name=P + "transformer_blocks.0/attn1/MatMul"),
        helper.make_node("Reshape", ["/q", "s2"], ["/r2"], name=P + "Reshape_2"),
        helper.make_node("Transpose", ["/r2"], ["/t1"], name=P + "Transpose_1", perm=[0, 3, 1, 2]),
        helper.make_node("Reshape", ["/t1", "s3"], ["/r3"], name=P + "Reshape_3"),
        helper.make_node("Conv", ["/r3", "w_out"], ["/o"], name=P + "proj_out/Conv"),
        helper.make_node("Add", ["/o", "x"], ["y"], name=P + "Add"),
    ]
    inits = [init("w_in", (c, c, 1, 1)), init("w_out", (c, c, 1, 1)), init("wq", (c, c)),
             init("input_blocks.1.1.transformer_blocks.0.norm1.weight", (c,)), init("nb", (c,)),
             shape("s1", [1, h * w, c]), shape("s2", [1, h, w, c]), shape("s3", [1, c, h, w])]
    graph = helper.make_graph(
        nodes, "controlnet_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, h, w])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _controlnet_layers(first, last):
    doc = json.loads(_graph(CN).read_text())
    return {"Layers": doc["Layers"][first:last + 1], "Bindings": []}


def test_foreign_node_range_expands_against_its_model():
    doc = _controlnet_layers(70, 73)
    assert doc["Layers"][2]["Name"] == FOREIGN and doc["Layers"][2]["Metadata"] == ""
    rep = fusion(doc, model=controlnet_block_model())
    row = rep.layers.set_index("layer").loc[2]
    # from the first user of norm1.weight to Reshape_3, in topological order
    assert row["onnx_nodes"] == (P + "transformer_blocks.0/norm1/LayerNormalization",
                                 P + "transformer_blocks.0/attn1/MatMul", P + "Reshape_2",
                                 P + "Transpose_1", P + "Reshape_3")
    assert row["mapping"] == "range" and row["unresolved"] == ()
    assert row["kind"] == "onnx"
    # the reformat in front of proj_in serves it and implements nothing
    reformat = rep.layers.set_index("layer").loc[0]
    assert (reformat["kind"], reformat["onnx_nodes"]) == ("reformat", ())
    assert reformat["related_nodes"] == (P + "proj_in/Conv",)
    assert set(rep.unmapped["node"]) == {P + "Transpose", P + "Reshape"}


def test_range_end_not_in_the_model_is_unresolved_not_a_node():
    doc = _controlnet_layers(72, 72)
    model = controlnet_block_model()
    for node in model.graph.node:
        if node.name == P + "Reshape_3":
            node.name = "renamed"
    rep = fusion(doc, model=model)
    row = rep.layers.iloc[0]
    assert P + "Reshape_3" not in row["onnx_nodes"]
    assert row["unresolved"] == (P + "Reshape_3",)
    assert not any("not in model" in n for n in rep.notes)


# -- 3. TensorRT's own layers ----------------------------------------------------------------------
def test_myelin_internal_layers_are_never_onnx_nodes():
    rep = fusion(FIXTURES / "trt10_myelin_mlp.layers.json")
    layers = rep.layers.set_index("name")
    assert layers.loc["__mye780_0_myl0_0", "kind"] == "internal"
    assert not layers.loc["__mye780_0_myl0_0", "runs"]  # a shape call
    assert layers.loc["__myl_MulMinMaxRounCast_myl0_1", "onnx_nodes"] == (
        "/qact_input/QuantizeLinear",)  # from Metadata, not from the kernel name
    assert layers.loc["/fc1/Gemm_myl0_2", "onnx_nodes"][0] == "/fc1/Gemm"
    # without Metadata (as an engine built without it would be): names only
    doc = json.loads((FIXTURES / "trt10_myelin_mlp.layers.json").read_text())
    for layer in doc["Layers"]:
        layer["Metadata"] = ""
    bare = fusion(doc).layers.set_index("name")
    assert bare.loc["__myl_MulMinMaxRounCast_myl0_1", "onnx_nodes"] == ()
    assert bare.loc["__myl_MulMinMaxRounCast_myl0_1", "kind"] == "internal"
    assert bare.loc["/fc1/Gemm_myl0_2", "onnx_nodes"] == ("/fc1/Gemm",)  # Myelin suffix dropped
    assert not any(n.startswith("__my") for n in fusion(doc).onnx_to_layers)


def test_reshape_after_helpers_point_at_their_node(reports):
    doc = json.loads(_graph(CN).read_text())
    for layer in doc["Layers"]:
        layer["Metadata"] = ""  # no Metadata: only the names speak
    rep = fusion(doc)
    assert not any(n.startswith(("reshape_after_", "__my")) for n in rep.onnx_to_layers)
    layers = rep.layers.set_index("name")
    helper_name = "reshape_after_/time_embed/time_embed.0/Gemm"
    assert layers.loc[helper_name, "kind"] == "internal"
    assert layers.loc[helper_name, "related_nodes"] == ("/time_embed/time_embed.0/Gemm",)
    ref = "Reformatting CopyNode for Input Tensor 0 to reshape_after_/time_embed/time_embed.0/Gemm"
    assert layers.loc[ref, "kind"] == "reformat" and not layers.loc[ref, "runs"]
    assert layers.loc[ref, "related_nodes"] == ("/time_embed/time_embed.0/Gemm",)
    copy_in = ("reshape_after_/input_blocks.1/input_blocks.1.0/emb_layers/emb_layers.1/"
               "Gemm_copy_input")
    assert layers.loc[copy_in, "kind"] == "reformat"  # LayerType Reformat
    assert layers.loc[copy_in, "related_nodes"] == (
        "/input_blocks.1/input_blocks.1.0/emb_layers/emb_layers.1/Gemm",)


# -- 4. elided layers, I/O tensors, text files, the Metadata note ----------------------------------
def test_elided_noops_do_not_count(reports):
    rep = reports["tf_resnet50.fp32.engine"]
    assert len(rep.running) == 72 and len(rep) == 103
    assert "72 running layers (+31 elided)" in repr(rep)
    assert rep.before_after().iloc[-1]["layers"] == 72
    # the fp16 TF engine elides its reformats into the next convolution (NoOp), fp32 runs them
    fp16 = reports["tf_resnet50.fp16.engine"].layers
    elided_reformats = fp16[(fp16["kind"] == "reformat") & ~fp16["runs"]]
    assert len(elided_reformats) == sum(
        1 for x in _raw("tf_resnet50.fp16.engine")
        if x["LayerType"] == "NoOp" and x["Name"].startswith("Reformatting"))
    assert len(elided_reformats) > 0


def test_io_tensors_have_direction_shape_and_type(reports):
    io = reports["tf_resnet50.fp32.engine"].io_tensors.set_index("name")
    assert io.loc["input_1", "mode"] == "Input" and io.loc["predictions", "mode"] == "Output"
    assert io.loc["input_1", "shape"] == (32, 224, 224, 3)
    assert io.loc["predictions", "shape"] == (32, 1000)
    assert io.loc["input_1", "precision"] == "FP32"
    cn = reports[CN].io_tensors.set_index("name")
    assert cn.loc["timesteps", "precision"] == "INT32" and cn.loc["timesteps", "mode"] == "Input"
    assert (cn["mode"] == "Output").sum() == 13  # ControlNet's 13 residual outputs


def test_text_file_that_is_not_json_is_refused_clearly():
    path = FIXTURES / "trt10_myelin_mlp.layers.txt"
    with pytest.raises(FusionError, match="text file but not JSON.*--- Layer 0 ---") as err:
        fusion(path)
    assert "GPU" not in str(err.value)


def test_metadata_note_only_when_the_field_is_absent(reports):
    assert any("no 'Metadata' field" in n for n in reports["tf_resnet50.fp32.engine"].notes)
    assert not any("Metadata" in n for n in reports[CN].notes)  # 244 layers carry it
    # ControlNet's reformat layers carry the field, empty: not "TensorRT < 8.6"
    doc = _controlnet_layers(70, 70)
    assert doc["Layers"][0]["Metadata"] == ""
    rep = fusion(doc)
    assert not any("TensorRT < 8.6" in n for n in rep.notes)
    assert any("every 'Metadata' field is empty" in n for n in rep.notes)


# -- 5. before/after shows what was fused ----------------------------------------------------------
def test_before_after_shows_fusion_on_tf_resnet(reports):
    table = reports["tf_resnet50.fp16.engine"].before_after().set_index("op_type")
    fate = reports["tf_resnet50.fp16.engine"].fate().set_index("node")
    # every Relu and residual Add of ResNet-50 is fused into a convolution's layer
    assert table.loc["Relu", "absorbed"] == table.loc["Relu", "onnx_nodes"] == 49
    assert table.loc["Add", "absorbed"] == 16
    assert table.loc["Conv", "own_layer"] == table.loc["Conv", "layers"]
    relu = "resnet50/conv1_relu/Relu"
    assert fate.loc[relu, "fate"] == "absorbed" and fate.loc[relu, "into_op"] == "Conv"


def test_all_profiles_join_without_leftovers(reports):
    for stem, rep in reports.items():
        assert not rep.layers["average_ms"].isna().any(), stem
        assert not any("profile" in n for n in rep.notes), stem


def test_report_is_unchanged_by_a_copy_of_the_document():
    doc = json.loads(_graph("tf_resnet50.qat.engine").read_text())
    before = copy.deepcopy(doc)
    fusion(doc)
    assert doc == before


# What trex 0.2.1 (NVIDIA/TensorRT b8b46f21, tools/experimental/trt-engine-explorer) reports
# for each fixture with its profile: len(EnginePlan.df), rows of type "Reformat", total_runtime.
# (Run with pandas' future.infer_string off: trex 0.2.1 predates pandas 3's string dtype.)
TREX = {
    "controlnet_trt86.fp16.engine": (241, 58, 15.2946),
    "mobilenet.qat.engine": (72, 18, 0.4704),
    "mobilenet_v2_residuals.qat.engine": (57, 3, 0.3559),
    "pt_resnet18.a100.fp16.engine": (25, 2, 1.0168),
    "pt_resnet18.a100.qat.engine": (35, 12, 1.0957),
    "tf_resnet50.fp16.engine": (61, 2, 4.2727),
    "tf_resnet50.fp32.engine": (72, 13, 12.3997),
    "tf_resnet50.qat.engine": (62, 2, 2.3806),
}


@pytest.mark.parametrize("stem", sorted(TREX))
def test_counts_agree_with_trex(stem, reports):
    layers, reformat_type, total = TREX[stem]
    rep = reports[stem]
    run = rep.running
    assert len(run) == layers
    assert (run["layer_type"] == "Reformat").sum() == reformat_type
    assert rep.summary()["total_average_ms"] == pytest.approx(total, abs=1e-4)
    # trtlab's reformats also count Myelin's (LayerType MyelinReformat), which trex types apart
    myelin = (run["layer_type"] == "MyelinReformat").sum()
    assert rep.summary()["reformats"] == reformat_type + myelin


def test_reformat_with_metadata_still_serves_rather_than_implements():
    # ControlNet's reformat in front of proj_in (layer 70), given the Metadata of the layer it
    # feeds, as an engine that records it on reformats would
    doc = _controlnet_layers(70, 71)
    doc["Layers"][0]["Metadata"] = doc["Layers"][1]["Metadata"]
    rep = fusion(doc)
    reformat = rep.layers.iloc[0]
    assert (reformat["kind"], reformat["onnx_nodes"]) == ("reformat", ())
    assert reformat["related_nodes"] == (P + "proj_in/Conv",)
    assert rep.onnx_to_layers[P + "proj_in/Conv"] == (P + "proj_in/Conv",)
