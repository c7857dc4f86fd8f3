"""trtlab.fusion: engine-inspector JSON and parsed networks mapped back to ONNX nodes."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import trtlab
from trtlab.backends.tensorrt import flavor as trt
from trtlab.errors import FusionError
from trtlab.backends.tensorrt.layers import FusionReport, fusion, prefusion
from trtlab.backends.tensorrt.layers.names import metadata_entries, split_name, visible
from trtlab.model import load

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MOBILENET = FIXTURES / "mobilenet_v2_residuals.qat.engine.graph.json"
MOBILENET_PROFILE = FIXTURES / "mobilenet_v2_residuals.qat.engine.profile.json"
TRT11 = FIXTURES / "trt11_tiny_block.graph.json"
TRT11_PROFILE = FIXTURES / "trt11_tiny_block.profile.json"

needs_parser = pytest.mark.skipif(not trt.info().parse,
                                  reason="TensorRT's ONNX parser is not available here")


# -- models ---------------------------------------------------------------------------------------
def _model(nodes, inputs, outputs, inits=(), name="g"):
    graph = helper.make_graph(nodes, name, inputs, outputs, list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _w(name, shape, seed=0):
    return numpy_helper.from_array(
        np.random.default_rng(seed).standard_normal(shape).astype(np.float32), name)


def tiny_block_model():
    """The model the TensorRT 11 fixture's layers were written for.

    x[1,8,16,16] -> conv1 -> sig1 -> mul1(conv1, sig1) -> pool -> flat -> mm1 -> addb
      -> relu2 -> mm2 -> soft -> y[1,10]
    """
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c1"], ["s1"], name="sig1"),
        helper.make_node("Mul", ["c1", "s1"], ["m1"], name="mul1"),
        helper.make_node("GlobalAveragePool", ["m1"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "wm"], ["mm"], name="mm1"),
        helper.make_node("Add", ["mm", "bm"], ["a"], name="addb"),
        helper.make_node("Relu", ["a"], ["r"], name="relu2"),
        helper.make_node("MatMul", ["r", "wm2"], ["z"], name="mm2"),
        helper.make_node("Softmax", ["z"], ["y"], name="soft", axis=-1),
    ]
    inits = [_w("w1", (16, 8, 3, 3)), _w("b1", (16,), 1), _w("wm", (16, 32), 2),
             _w("bm", (32,), 3), _w("wm2", (32, 10), 4)]
    return _model(nodes, [_vi("x", [1, 8, 16, 16])], [_vi("y", [1, 10])], inits, "tiny_block")


def constants_model():
    """A Constant feeding Conv weights (folded), an unused Constant, and a Dropout.

    cw -> conv0(x) -> drop0 -> id_out -> y ;  cunused (nothing reads it)
    """
    nodes = [
        helper.make_node("Constant", [], ["W"], name="cw",
                         value=numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32))),
        helper.make_node("Constant", [], ["unused"], name="cunused",
                         value=numpy_helper.from_array(np.ones(2, np.float32))),
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("Dropout", ["c"], ["d"], name="drop0"),
        helper.make_node("Identity", ["d"], ["y"], name="id_out"),
    ]
    return _model(nodes, [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 4, 8, 8])], name="constants")


def _layer(name, ins=("a",), outs=("b",), fmt="Row major linear FP32", **extra):
    t = lambda n: {"Name": n, "Location": "Device", "Dimensions": [1, 4], "Format/Datatype": fmt}
    return {"Name": name, "LayerType": "CaskConvolution", "Inputs": [t(n) for n in ins],
            "Outputs": [t(n) for n in outs], "ParameterType": "Convolution",
            "TacticValue": "0x1", **extra}


# -- the real TensorRT 8.x fixture ----------------------------------------------------------------
@pytest.fixture(scope="module")
def mobilenet():
    return fusion(MOBILENET, profile=MOBILENET_PROFILE)


def test_mobilenet_layer_count_and_stage(mobilenet):
    # 58 objects in "Layers" (read from the JSON); Bindings ["inputs.1", "1304"].
    assert len(mobilenet) == 58
    assert mobilenet.stage == "post-fusion"
    assert "TensorRT 8.x-10.x" in mobilenet.source
    assert list(mobilenet.io_tensors["name"]) == ["inputs.1", "1304"]
    assert mobilenet.label == "mobilenet_v2_residuals.qat.engine.graph"


def test_mobilenet_fused_nodes_per_layer(mobilenet):
    nodes = dict(zip(mobilenet.layers["layer"], mobilenet.layers["onnx_nodes"]))
    assert nodes[0] == ("QuantizeLinear_2",)
    # "features.0.0.weight + QuantizeLinear_7 + Conv_9 + PWN(Clip_13)"
    assert nodes[1] == ("QuantizeLinear_7", "Conv_9", "Clip_13")
    assert mobilenet.layers.loc[1, "constants"] == ("features.0.0.weight",)
    assert nodes[3] == ("QuantizeLinear_35", "Conv_37")
    # residual: "features.3.conv.2.weight + QuantizeLinear_119 + Conv_121 + Add_123"
    assert nodes[9] == ("QuantizeLinear_119", "Conv_121", "Add_123")
    # "Reformatting CopyNode for Input Tensor 0 to GlobalAveragePool_747"
    assert nodes[53] == ()
    assert mobilenet.layers.loc[53, "kind"] == "reformat"
    assert mobilenet.layers.loc[53, "related_nodes"] == ("GlobalAveragePool_747",)
    assert mobilenet.layers.loc[53, "origin"] == "REFORMAT"
    assert nodes[54] == ("GlobalAveragePool_747",)
    # classifier: weights, Q, Gemm, bias and TensorRT's own shuffle / elementwise helpers
    assert nodes[56] == ("QuantizeLinear_762", "Gemm_764")
    assert mobilenet.layers.loc[56, "constants"] == ("classifier.1.weight", "classifier.1.bias")
    assert nodes[57] == () and mobilenet.layers.loc[57, "kind"] == "internal"
    assert mobilenet.layers.loc[0, "origin"] == "QDQ"
    # 52 convolution layers: 35 with PWN(Clip), 10 with Add, 7 plain -> 149 nodes, plus
    # QuantizeLinear_2, GlobalAveragePool_747, QuantizeLinear_757, QuantizeLinear_762, Gemm_764.
    assert len(mobilenet.onnx_to_layers) == 154
    assert mobilenet.onnx_to_layers["Conv_9"] == (mobilenet.layers.loc[1, "name"],)
    assert len(mobilenet.groups()) == 53
    assert {"QuantizeLinear_7", "Conv_9", "Clip_13"} in mobilenet.groups()


def test_mobilenet_precision_per_layer(mobilenet):
    prec = mobilenet.layers.set_index("layer")["precision"]
    out = mobilenet.layers.set_index("layer")["out_precision"]
    # "Row major linear FP32" in, "Four wide channel vectorized row major Int8 format" out
    assert (prec[0], out[0]) == ("FP32", "INT8")
    assert prec[1] == "INT8"
    # last feature conv: Int8 in, "Thirty-two wide channel vectorized row major FP16 format" out
    assert (prec[52], out[52]) == ("INT8", "FP16")
    assert (prec[53], prec[54], prec[55], out[55]) == ("FP16", "FP16", "FP16", "INT8")
    assert (prec[56], out[56]) == ("INT8", "FP32")
    assert prec.value_counts().to_dict() == {"INT8": 53, "FP16": 3, "FP32": 2}


def test_mobilenet_profile_join(mobilenet):
    layers = mobilenet.layers.set_index("layer")
    # profile record 2: averageMs 0.00912019, medianMs 0.009024, timeMs 78.9534, 2.56242 %
    assert layers.loc[1, "average_ms"] == pytest.approx(0.00912019)
    assert layers.loc[1, "median_ms"] == pytest.approx(0.009024)
    assert layers.loc[1, "time_ms"] == pytest.approx(78.9534)
    assert layers.loc[1, "percentage"] == pytest.approx(2.56242)
    assert layers.loc[0, "average_ms"] == pytest.approx(0.00455183)
    assert layers.loc[57, "average_ms"] == 0
    assert not layers["average_ms"].isna().any()
    assert not any("profile" in n for n in mobilenet.notes)
    lat = mobilenet.node_latency().set_index("node")
    assert lat.loc["Conv_9", "layer_ms"] == pytest.approx(0.00912019)
    assert lat.loc["Conv_9", "share_ms"] == pytest.approx(0.00912019 / 3)
    assert sorted(lat.loc["Conv_9", "fused_with"]) == ["Clip_13", "QuantizeLinear_7"]
    # the reformat layer in front of the pooling layer: averageMs 0.00419584 in the profile
    assert lat.loc["GlobalAveragePool_747", "reformat_ms"] == pytest.approx(
        layers.loc[53, "average_ms"])
    mapped = layers[layers["onnx_nodes"].map(len) > 0]["average_ms"].sum()
    assert lat["share_ms"].sum() == pytest.approx(mapped)


def test_mobilenet_before_after(mobilenet):
    table = mobilenet.before_after().set_index("op_type")
    assert table.loc["QuantizeLinear", "onnx_nodes"] == 55
    assert table.loc["Conv", "layers"] == 52
    assert table.loc["Clip", "onnx_nodes"] == 35 and table.loc["Clip", "layers"] == 35
    # every Clip and Add is fused into its convolution's layer; every Conv anchors one
    assert (table.loc["Clip", "own_layer"], table.loc["Clip", "absorbed"]) == (0, 35)
    assert (table.loc["Add", "own_layer"], table.loc["Add", "absorbed"]) == (0, 10)
    assert table.loc["Conv", "own_layer"] == 52
    assert table.loc["Add", "onnx_nodes"] == 10
    # 58 layers listed, one of them a NoOp that does not run
    assert (table.loc["TOTAL", "onnx_nodes"], table.loc["TOTAL", "layers"]) == (154, 57)


def test_profile_that_does_not_match_is_reported():
    profile = [{"count": 3}, {"name": "a", "averageMs": 0.5}, {"name": "other", "averageMs": 1.0}]
    doc = {"Layers": [_layer("a"), _layer("b", ins=("b",), outs=("c",))], "Bindings": ["a", "c"]}
    rep = fusion(doc, profile=profile)
    assert rep.layers["average_ms"].tolist()[0] == 0.5
    assert math.isnan(rep.layers["average_ms"].tolist()[1])
    assert any("1 of 2 layers have no profile record" in n for n in rep.notes)
    assert any("match no layer" in n and "'other'" in n for n in rep.notes)


# -- TensorRT 11 ----------------------------------------------------------------------------------
def test_trt11_fixture_without_model():
    rep = fusion(TRT11, profile=TRT11_PROFILE)
    assert rep.source == "engine JSON (TensorRT 11.x schema)"
    assert len(rep) == 6  # profile 0 only; the [profile 1] copies are left out
    assert rep.layers["precision"].eq("FP16").all()  # "DataType": "Half"
    layers = rep.layers.set_index("layer")
    assert layers.loc[0, "onnx_nodes"] == ("conv1", "sig1", "mul1")
    assert layers.loc[0, "mapping"] == "metadata"
    assert layers.loc[3, "onnx_nodes"] == ("flat", "relu2")
    assert layers.loc[3, "mapping"] == "range-ends"
    assert layers.loc[4, "onnx_nodes"] == ("mm2", "soft")  # Metadata joined by 0x1F
    assert list(rep.io_tensors["mode"]) == ["Input", "Output"]
    assert rep.io_tensors.loc[0, "shape"] == (-1, 8, 16, 16)


@needs_parser
def test_trt11_fixture_with_model_resolves_ranges():
    rep = fusion(TRT11, profile=TRT11_PROFILE, model=tiny_block_model())
    layers = rep.layers.set_index("layer")
    assert layers.loc[3, "onnx_nodes"] == ("flat", "mm1", "addb", "relu2")
    assert layers.loc[3, "mapping"] == "range"
    assert layers.loc[1, "kind"] == "reformat" and layers.loc[1, "related_nodes"] == ("pool",)
    assert layers.loc[5, "kind"] == "internal"
    assert rep.unmapped.empty
    assert list(rep.onnx_to_layers) == ["conv1", "sig1", "mul1", "pool", "flat", "mm1", "addb",
                                        "relu2", "mm2", "soft"]
    assert rep.groups() == [{"conv1", "sig1", "mul1"}, {"flat", "mm1", "addb", "relu2"},
                            {"mm2", "soft"}]
    lat = rep.node_latency().set_index("node")
    assert lat.loc["mm1", "share_ms"] == pytest.approx(0.0187 / 4)
    assert lat.loc["pool", "reformat_ms"] == pytest.approx(0.0021)
    table = rep.before_after().set_index("op_type")
    assert table.loc["MatMul", "onnx_nodes"] == 2 and table.loc["MatMul", "layers"] == 2
    # the sixth layer, "(Unnamed Layer* 15) [Shuffle]", is a NoOp: five layers run
    assert (table.loc["TOTAL", "onnx_nodes"], table.loc["TOTAL", "layers"]) == (10, 5)


def test_trt11_second_shape_profile():
    rep = fusion(TRT11, shape_profile=1)
    assert len(rep) == 6
    assert rep.layers["name"].str.endswith("[profile 1]").all()
    assert rep.layers["shape_profile"].eq(1).all()
    assert rep.layers.loc[0, "onnx_nodes"] == ("conv1", "sig1", "mul1")
    with pytest.raises(FusionError, match=r"profiles present: \[0, 1\]"):
        fusion(TRT11, shape_profile=2)


def test_trt11_tensor_without_format_or_datatype_is_refused():
    doc = json.loads(TRT11.read_text())
    del doc["Layers"][2]["Inputs"][0]["Format"]
    del doc["Layers"][2]["Inputs"][0]["DataType"]
    with pytest.raises(FusionError, match="layer 2 input 0.*'Format' \\+ 'DataType'"):
        fusion(doc)


# -- names ----------------------------------------------------------------------------------------
def test_name_parts():
    parts = split_name("w + PWN(PWN(a, b), c) + {ForeignNode[x...y]} [profile 2]")
    assert [(p.kind, p.name) for p in parts] == [("name", "w"), ("name", "a"), ("name", "b"),
                                                 ("name", "c"), ("range", "x")]
    assert parts[-1].last == "y"
    assert [p.name for p in split_name("conv1 || conv2")] == ["conv1", "conv2"]
    assert split_name("(Unnamed Layer* 7) [Shuffle]")[0].kind == "internal"
    assert split_name("conv_a input reformatter 0")[0] == split_name(
        "Reformatting CopyNode for Output Tensor 1 to conv_a")[0]
    # unbalanced brackets still split
    assert [p.name for p in split_name("a(b + c")] == ["a(b", "c"]


def test_metadata_entries_with_subgraphs():
    text = "[ONNX Layer: a]\x1e[ONNX Layer: br/x | then_branch (then_branch) | br (If)]\x1fjunk"
    assert metadata_entries(text) == [("a", ()), ("br/x", ("then_branch", "br"))]


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("doc, match", [
    ({"Nodes": []}, "Unknown schema"),
    ("[1, 2]", "Unknown schema"),
    ({"Layers": [{"Name": "x"}], "Bindings": []}, r"lacks \['LayerType'\]"),
    ({"Layers": [_layer("x")], "Bindings": ["a"], "I/O Tensors": []}, "both 'Bindings'"),
    ({"Layers": [{"Name": "x", "LayerType": "T", "Inputs": [{"Name": "t", "Dims": [1]}]}]},
     "'Format/Datatype' \\(TensorRT 8-10\\) or 'Format' \\+ 'DataType'"),
    ({"Layers": [_layer("x")], "Bindings": [1, 2]}, "'Bindings' must be a list of tensor names"),
    ({"Layers": []}, "lists no layers"),
    ([{"count": 5}, {"name": "x", "averageMs": 1}], "is a per-layer profile"),
])
def test_unknown_schema_is_refused(doc, match):
    with pytest.raises(FusionError, match=match):
        fusion(doc)


def test_layer_names_without_detail_are_refused():
    doc = {"Layers": ["conv1 + relu1", "pool"], "Bindings": ["x", "y"]}
    with pytest.raises(FusionError) as err:
        fusion(doc)
    msg = str(err.value)
    assert "2 layer names without detail" in msg
    assert "ProfilingVerbosity.DETAILED" in msg and "--profilingVerbosity=detailed" in msg


def test_truncated_json(tmp_path):
    text = MOBILENET.read_text()
    cut = tmp_path / "cut.json"
    cut.write_text(text[: len(text) // 2])
    with pytest.raises(FusionError, match="looks truncated"):
        fusion(cut)
    with pytest.raises(FusionError, match="looks truncated"):
        fusion(text[:100])
    with pytest.raises(FusionError, match="looks truncated"):
        fusion(MOBILENET, profile=MOBILENET_PROFILE.read_text()[:500])


def test_invalid_json_and_missing_file(tmp_path):
    with pytest.raises(FusionError, match="not valid JSON.*line 1"):
        fusion('{"Layers": [} ]')
    with pytest.raises(FusionError, match="No file at"):
        fusion(tmp_path / "missing.json")
    with pytest.raises(FusionError, match="cannot read a int"):
        fusion(42)
    with pytest.raises(FusionError, match="not a profile"):
        fusion(MOBILENET, profile=MOBILENET)


def test_control_characters_in_names():
    # TensorRT 8.6+ writes the 0x1E / 0x1F separators raw inside JSON strings.
    name = "convA\x1ereluA"
    text = ('{"Layers": [{"Name": "' + name + '", "LayerType": "CaskConvolution", '
            '"Metadata": "[ONNX Layer: convA]\x1e[ONNX Layer: reluA]", '
            '"Inputs": [{"Name": "x", "Dimensions": [1], "Format/Datatype": "Row major linear FP32"}], '
            '"Outputs": [{"Name": "y", "Dimensions": [1], "Format/Datatype": "Row major linear FP32"}]},'
            '{"Name": "tab\\there + odd\\u0001node", "LayerType": "Scale", "Inputs": [], '
            '"Outputs": [{"Name": "z", "Dimensions": [1], "Format/Datatype": "Row major linear FP16 format"}]}],'
            ' "Bindings": ["x", "z"]}')
    assert "\x1e" in text
    rep = fusion(text)
    layers = rep.layers
    assert layers.loc[0, "onnx_nodes"] == ("convA", "reluA")
    assert layers.loc[0, "name"] == name  # kept exactly, so a profile still joins
    assert layers.loc[0, "label"] == "convA\\x1ereluA"
    assert layers.loc[1, "onnx_nodes"] == ("tab\there", "odd\x01node")
    assert layers.loc[1, "label"] == "tab\\there + odd\\x01node"
    assert layers.loc[1, "precision"] == "FP16"  # no inputs: first output
    assert all(visible(s).isprintable() for s in layers["label"])
    # the same separator in a layer name without Metadata also splits it
    rep2 = fusion({"Layers": [_layer("convB\x1freluB")], "Bindings": []})
    assert rep2.layers.loc[0, "onnx_nodes"] == ("convB", "reluB")


def test_profile_errors():
    doc = {"Layers": [_layer("a")], "Bindings": []}
    with pytest.raises(FusionError, match="has no 'averageMs' or 'timeMs'"):
        fusion(doc, profile=[{"count": 1}, {"name": "a", "ms": 1}])
    with pytest.raises(FusionError, match="non-numeric"):
        fusion(doc, profile=[{"name": "a", "averageMs": "fast"}])
    with pytest.raises(FusionError, match="no per-layer records"):
        fusion(doc, profile=[{"count": 0}])
    with pytest.raises(FusionError, match="expected the list"):
        fusion(doc, profile={"name": "a"})


def test_duplicate_layer_names_are_told_apart():
    profile = [{"name": "a", "averageMs": 1.0}, {"name": "a", "averageMs": 2.0}]
    rep = fusion({"Layers": [_layer("a"), _layer("a")], "Bindings": []}, profile=profile)
    assert list(rep.layers["name"]) == ["a", "a_2"]
    assert list(rep.layers["average_ms"]) == [1.0, 2.0]
    assert rep.onnx_to_layers["a"] == ("a", "a_2")


# -- engines and hybrid models ----------------------------------------------------------------------
def _no_run(monkeypatch):
    here = dataclasses.replace(trt.info(), run=False, reason="no CUDA GPU")
    monkeypatch.setattr(trt, "info", lambda: here)


def test_engine_bytes_without_runtime(monkeypatch):
    _no_run(monkeypatch)
    with pytest.raises(FusionError, match="deserializing needs a GPU runtime.*no CUDA GPU"):
        fusion(b"\x00\x01ftrt-engine")


@needs_parser
def test_engine_bytes_without_runtime_falls_back_with_model(monkeypatch, caplog):
    _no_run(monkeypatch)
    rep = fusion(b"\x00\x01ftrt-engine", model=tiny_block_model(), label="fp16")
    assert rep.stage == "pre-fusion"
    assert rep.label == "fp16"
    assert rep.notes[0].startswith("pre-fusion view: this machine cannot deserialize engines")
    assert "pre-fusion view" in caplog.text


def test_engine_bytes_with_runtime(monkeypatch):
    """The deserialize-and-inspect path, with a stand-in runtime returning the fixture."""
    calls = {}

    class Engine:
        def create_engine_inspector(self):
            return SimpleNamespace(get_engine_information=lambda fmt: (
                calls.setdefault("fmt", fmt), TRT11.read_text())[1])

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            calls["bytes"] = data
            return Engine() if data.startswith(b"ok") else None

    fake = SimpleNamespace(Runtime=Runtime, LayerInformationFormat=SimpleNamespace(JSON="json"))
    gpu = dataclasses.replace(trt.info(), run=True, flavor="tensorrt", version="11.0")
    monkeypatch.setattr(trt, "info", lambda: gpu)
    monkeypatch.setattr(trt, "module", lambda: fake)
    monkeypatch.setattr(trt, "CapturingLogger", lambda: SimpleNamespace(errors=lambda: ["bad"]))
    rep = fusion(b"ok-engine")
    assert (calls["bytes"], calls["fmt"]) == (b"ok-engine", "json")
    assert rep.stage == "post-fusion" and len(rep) == 6
    with pytest.raises(FusionError, match="could not deserialize the engine.*bad"):
        fusion(b"broken")


@needs_parser
def test_hybrid_model_without_runtime_is_prefusion(monkeypatch, caplog):
    _no_run(monkeypatch)
    model = load(tiny_block_model())
    part = trtlab.partition(model, exclude_nodes=["pool"])
    hybrid = SimpleNamespace(partition=part, engines={s.index: b"engine" for s in part.segments},
                             segment_models={})
    rep = fusion(hybrid)
    trt_segments = [s for s in part.segments if s.backend == "tensorrt"]
    assert len(trt_segments) == 2
    assert rep.stage == "pre-fusion"
    assert "pre-fusion view" in rep.notes[0] and "no CUDA GPU" in rep.notes[0]
    assert set(rep.layers["segment"]) == {s.index for s in trt_segments}
    assert set(rep.onnx_to_layers) == set(model.node_names) - {"pool"}
    assert "pre-fusion view" in caplog.text


# -- pre-fusion -----------------------------------------------------------------------------------
@needs_parser
def test_prefusion_maps_every_node():
    rep = prefusion(tiny_block_model())
    assert rep.stage == "pre-fusion"
    assert rep.source.startswith("network parsed by ")
    assert list(rep.onnx_to_layers) == [n.name for n in tiny_block_model().graph.node]
    assert rep.unmapped.empty
    assert rep.groups() == []  # nothing is fused before the builder runs
    layers = rep.layers.set_index("name")
    assert layers.loc["conv1", "layer_type"] == "CONVOLUTION"
    assert layers.loc["conv1", "onnx_nodes"] == ("conv1",)
    assert layers.loc["conv1", "mapping"] == "metadata"
    assert layers.loc["conv1", "precision"] == "FP32"
    assert layers.loc["wm", "kind"] == "constant"  # MatMul weights become a constant layer
    assert len(rep) >= 10
    table = rep.before_after().set_index("op_type")
    assert table.loc["TOTAL", "onnx_nodes"] == 10 and table.loc["TOTAL", "mapped"] == 10


@needs_parser
def test_prefusion_says_why_nodes_have_no_layer():
    rep = prefusion(constants_model())
    why = dict(zip(rep.unmapped["node"], rep.unmapped["reason"]))
    assert set(why) == {"cw", "cunused"}
    assert why["cw"] == "Constant folded into the weights of its consumer conv0"
    assert why["cunused"] == "constant whose output nothing uses"
    # the parser turns Dropout into an identity layer named after nothing in the model;
    # it is found through the tensor it produces
    assert rep.layers.set_index("onnx_nodes").loc[[("drop0",)], "mapping"].iloc[0] == "output"
    assert set(rep.onnx_to_layers) == {"conv0", "drop0", "id_out"}


@needs_parser
def test_prefusion_one_node_several_layers():
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="gemm")]
    m = _model(nodes, [_vi("x", [2, 4])], [_vi("y", [2, 3])],
               [_w("w", (4, 3)), _w("b", (3,), 1)])
    rep = prefusion(m)
    assert len(rep.onnx_to_layers["gemm"]) >= 2
    assert rep.before_after().set_index("op_type").loc["Gemm", "layers"] >= 2


@needs_parser
def test_prefusion_rejected_model():
    nodes = [helper.make_node("NoSuchOp", ["x"], ["y"], name="weird", domain="example.custom")]
    graph = helper.make_graph(nodes, "g", [_vi("x", [1])], [_vi("y", [1])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                helper.make_opsetid("example.custom", 1)])
    m.ir_version = 8
    with pytest.raises(FusionError, match="rejected model.*weird.*TensorRT segment"):
        prefusion(m)


# -- comparing -------------------------------------------------------------------------------------
@needs_parser
def test_compare_keyed_by_onnx_node():
    post = fusion(TRT11, profile=TRT11_PROFILE, model=tiny_block_model(), label="engine")
    pre = prefusion(tiny_block_model(), label="network")
    table = post.compare(pre)
    assert list(table.index) == [n.name for n in tiny_block_model().graph.node]
    assert table.loc["conv1", ("engine", "fused_with")] == ("mul1", "sig1")
    assert table.loc["conv1", ("network", "fused_with")] == ()
    assert not table.loc["conv1", ("", "same_fusion")]
    assert table.loc["pool", ("", "same_fusion")]
    assert table.loc["mm1", ("engine", "share_ms")] == pytest.approx(0.0187 / 4)
    assert ("network", "share_ms") not in table.columns
    same = post.compare(post)
    assert {c[0] for c in same.columns} == {"engine (1)", "engine (2)", ""}
    with pytest.raises(FusionError, match="another FusionReport"):
        post.compare("x")


def test_report_repr_and_summary(mobilenet):
    text = repr(mobilenet)
    assert ("post-fusion, 57 running layers (+1 elided), 3 reformats, from 154 ONNX nodes, "
            "53 fused groups") in text
    assert "<b>post-fusion</b>" in mobilenet._repr_html_()
    s = mobilenet.summary()
    # running layers: QuantizeLinear_2 and QuantizeLinear_757 are Reformat layers (Origin QDQ),
    # plus the reformat in front of GlobalAveragePool_747; the NoOp squeeze does not run
    assert s["kinds"] == {"onnx": 54, "reformat": 3}
    assert (s["layers"], s["layers_listed"], s["elided"], s["reformats"]) == (57, 58, 1, 3)
    assert s["total_average_ms"] == pytest.approx(mobilenet.layers["average_ms"].sum())


def test_node_latency_needs_profile():
    with pytest.raises(FusionError, match="no per-layer times.*profile="):
        fusion(MOBILENET).node_latency()


def test_top_level_name_stays_the_function_after_importing_its_package():
    import trtlab.backends.tensorrt.layers  # noqa: F401  (the package holding fusion())

    assert isinstance(trtlab.fusion(MOBILENET), FusionReport)
    assert trtlab.fusion(TRT11, shape_profile=1).layers["shape_profile"].eq(1).all()


# -- scale -----------------------------------------------------------------------------------------
def test_two_thousand_layers_parse_and_join_the_profile():
    """The scale input of benchmarks/fusion_scale.py (which times it) parses completely."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from fusion_scale import repeated

    text, profile = repeated(2000)
    rep = fusion(text, profile=profile)
    assert len(rep) == 2000
    assert len(rep.groups()) > 1700
    assert rep.layers["time_ms"].notna().all()


def test_copy_and_sync_layers_are_internal():
    part, = split_name("/blk/emb/Gemm_copy_output")
    assert (part.kind, part.ends) == ("internal", ("/blk/emb/Gemm",))
    assert split_name("[trainStation1]")[0].kind == "internal"
