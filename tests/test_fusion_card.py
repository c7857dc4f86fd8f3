"""trtlab.fusion.card and trtlab.viz.engine_card: the engine report card on real engines."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import pytest  # noqa: E402

from trtlab.errors import FusionError  # noqa: E402
from trtlab.backends.tensorrt.layers import fusion  # noqa: E402
from trtlab.backends.tensorrt.layers.card import (EngineCard, engine_graph, engine_metadata,  # noqa: E402
                                report_card)
from trtlab.viz.engine_card import plot_engine_graph, plot_report_card  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ENGINES = sorted(p.name[: -len(".graph.json")] for p in FIXTURES.glob("*.engine.graph.json"))


def _graph(stem):
    return FIXTURES / f"{stem}.graph.json"


@pytest.fixture(scope="module")
def reports():
    return {s: fusion(_graph(s), profile=FIXTURES / f"{s}.profile.json") for s in ENGINES}


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


@pytest.mark.parametrize("stem", ENGINES)
def test_card_renders_for_every_engine_fixture(stem, reports):
    rep = reports[stem]
    card = report_card(rep, metadata=_graph(stem))
    assert isinstance(card, EngineCard) and card.has_profile
    running, listed = len(rep.running), len(rep.layers)
    bt = card.by_layer_type
    assert bt["layers"].sum() == running and bt["elided"].sum() == listed - running
    total = rep.running["average_ms"].sum()
    assert bt["average_ms"].sum() == pytest.approx(total)
    assert card.precision["time_share"].sum() == pytest.approx(1.0)
    assert card.precision["layers"].sum() == running
    tot = card.reformat_summary.set_index("conversion").loc["TOTAL"]
    assert tot["layers"] == rep.summary()["reformats"] == len(card.reformats)
    assert len(card.memory) == running
    assert (card.memory["activation_bytes"].dropna() > 0).all()
    fig = plot_report_card(card)
    assert len(fig.axes) == 6
    assert stem in fig._suptitle.get_text()


def test_reformat_overhead_where_and_what(reports):
    card = report_card(reports["pt_resnet18.a100.fp16.engine"])
    refs = card.reformats.set_index("name")
    first = refs.loc["Reformatting CopyNode for Input Tensor 0 to Conv_0 + Relu_1"]
    assert (first["side"], first["serves"]) == ("input", ("Conv_0", "Relu_1"))
    assert (first["from_precision"], first["to_precision"]) == ("FP32", "FP16")
    assert first["conversion"] == "FP32->FP16"
    # the TF fp32 engine runs 13 format-only reformats: 0.330624 ms of 12.399744 (profile sums)
    tf = report_card(reports["tf_resnet50.fp32.engine"]).reformat_summary.set_index("conversion")
    assert tf.loc["format only", "layers"] == 13
    assert tf.loc["TOTAL", "average_ms"] == pytest.approx(0.330624)
    assert tf.loc["TOTAL", "time_share"] == pytest.approx(0.330624 / 12.399744)


def test_convolution_statistics_on_resnet50(reports):
    conv = report_card(reports["tf_resnet50.fp32.engine"]).convolutions
    assert len(conv) == 54  # 53 CaskConvolution + 1 CublasConvolution (the classifier)
    first = conv.iloc[0]
    # ResNet-50's stem: 7x7/2, 3 -> 64 channels, 112x112 output, batch 32
    assert first["kernel"] == (7, 7) and first["stride"] == (2, 2) and first["out_maps"] == 64
    assert first["macs"] == 32 * 64 * 112 * 112 * 3 * 7 * 7
    assert first["weight_bytes"] == (7 * 7 * 3 * 64 + 64) * 4  # FP32 weights and bias
    assert first["tflops"] == pytest.approx(2 * first["macs"] / (first["average_ms"] * 1e-3) / 1e12)
    dw = report_card(reports["mobilenet.qat.engine"]).convolutions
    assert dw["depthwise"].sum() == 17  # MobileNetV2's depthwise convolutions


def test_memory_per_layer_matches_tensor_sizes(reports):
    mem = report_card(reports["tf_resnet50.fp32.engine"]).memory.set_index("layer")
    raw = json.loads(_graph("tf_resnet50.fp32.engine").read_text())["Layers"][0]
    assert raw["Inputs"][0]["Dimensions"] == [32, 224, 224, 3]
    assert raw["Outputs"][0]["Dimensions"] == [32, 3, 224, 224]
    assert mem.loc[0, "activation_bytes"] == 2 * 32 * 224 * 224 * 3 * 4
    assert math.isnan(mem.loc[0, "weight_bytes"])  # a Shuffle holds no weights


def test_build_and_device_metadata(reports):
    meta = engine_metadata(_graph("pt_resnet18.a100.fp16.engine"))
    assert set(meta["section"]) == {"build", "profile", "device"}
    kv = dict(zip(meta["section"] + ":" + meta["key"], meta["value"]))
    assert kv["device:Name"] == "NVIDIA A100 80GB PCIe"
    assert kv["build:build_options.Precision"] == "FP32+FP16"
    assert kv["profile:device_information.Compute Capability"] == 8.0
    card = report_card(reports["pt_resnet18.a100.fp16.engine"],
                       metadata=_graph("pt_resnet18.a100.fp16.engine"))
    assert "NVIDIA A100 80GB PCIe" in set(card.summary["value"])
    # no metadata files beside the ControlNet engine: an empty table, not an error
    assert engine_metadata(_graph("controlnet_trt86.fp16.engine")).empty


def test_metadata_that_is_not_json_is_refused(tmp_path):
    (tmp_path / "x.engine.graph.json").write_text("{}")
    (tmp_path / "x.engine.build.metadata.json").write_text("not json")
    with pytest.raises(FusionError, match="not JSON"):
        engine_metadata(tmp_path / "x.engine.graph.json")


def test_card_refuses_other_objects():
    with pytest.raises(FusionError, match="needs a FusionReport"):
        report_card({"Layers": []})
    with pytest.raises(FusionError, match="needs an EngineCard"):
        plot_report_card("card")


def test_card_without_profile_says_so():
    card = report_card(fusion(_graph("tf_resnet50.qat.engine")))
    assert not card.has_profile
    assert dict(zip(card.summary["item"], card.summary["value"]))["total average ms"] == \
        "no profile"
    fig = plot_report_card(card)
    assert "no per-layer times" in fig.axes[0].texts[0].get_text()


def test_engine_graph_of_layers_and_tensors(reports):
    rep = reports["controlnet_trt86.fp16.engine"]
    g = engine_graph(rep)
    layers = [n for n, d in g.nodes(data=True) if d["kind"] == "layer"]
    assert len(layers) == 241  # elided layers bypassed
    assert nx.is_directed_acyclic_graph(g)
    inputs = {d["name"] for n, d in g.nodes(data=True) if d["kind"] == "tensor" and
              d["io"] == "Input"}
    assert inputs == {"onnx::Cast_0", "input.3", "timesteps", "onnx::MatMul_3"}
    # every running layer reads a graph input, a running layer's output, or a constant baked
    # into the engine (the output of a Constant layer, which does not run)
    baked = {t for outs, ins, runs in zip(rep.layers["outputs"], rep.layers["inputs"],
                                          rep.layers["runs"]) if not runs and not ins
             for t in outs}
    for n in layers:
        for t in g.predecessors(n):
            # (two layers may write one tensor: TensorRT elides a Concat by writing its inputs
            # into slices of the output, e.g. PWN(/Sin) and PWN(/Cos) -> /Concat_output_0)
            assert g.in_degree(t) >= 1 or g.nodes[t]["io"] == "Input" or \
                g.nodes[t]["name"] in baked
    full = engine_graph(rep, include_elided=True)
    assert sum(1 for _, d in full.nodes(data=True) if d["kind"] == "layer") == 389


def test_engine_graph_plot_stays_readable_at_400_layers(reports):
    rep = reports["controlnet_trt86.fp16.engine"]
    fig = plot_engine_graph(rep, label_top=10)
    ax = fig.axes[0]
    w, h = fig.get_size_inches()
    assert w <= 16 and h <= 22
    assert len(ax.texts) == 10  # only the slowest layers are named
    assert "{ForeignNode" in " ".join(t.get_text() for t in ax.texts)  # Myelin layers are slowest
    assert len(fig.axes) == 2  # the latency colour bar
    fig = plot_engine_graph(rep, color_by="precision", include_elided=True)
    assert {t.get_text() for t in fig.axes[0].get_legend().get_texts()} == {"FP16", "FP32",
                                                                             "INT32"}
    with pytest.raises(FusionError, match="color_by"):
        plot_engine_graph(rep, color_by="size")
    with pytest.raises(FusionError, match="no per-layer times"):
        plot_engine_graph(fusion(_graph("tf_resnet50.qat.engine")))


def test_card_on_the_trt11_schema_and_the_trt10_myelin_excerpt():
    trt11 = fusion(FIXTURES / "trt11_tiny_block.graph.json",
                   profile=FIXTURES / "trt11_tiny_block.profile.json")
    card = report_card(trt11)
    assert card.by_layer_type["layers"].sum() == len(trt11.running) == 5
    assert set(card.precision["precision"]) == {"FP16"}  # "DataType": "Half"
    assert len(plot_report_card(card).axes) == 6
    myelin = fusion(FIXTURES / "trt10_myelin_mlp.layers.json")
    card = report_card(myelin)
    assert card.by_layer_type.set_index("layer_type").loc["shape_call", "elided"] == 1
    assert math.isnan(card.memory["activation_bytes"].iloc[0])  # dynamic batch (-1)
    assert len(plot_report_card(card).axes) == 6
