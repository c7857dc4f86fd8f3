"""The model zoo in data/ and the trtlab.zoo helpers."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from trtlab import zoo
from trtlab.errors import InputError, ModelLoadError, TrtlabError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "data"))
from make_models import all_nodes  # noqa: E402  (the zoo's own walk over subgraph nodes)

MODELS = ["detection_postproc", "digits_cnn", "loop_model", "lstm_seq", "mobilenet_mini",
          "quantized_dynamic", "resnet_mini", "transformer_large", "transformer_stack"]

REQUIRED_OPS = {
    "digits_cnn": {"Conv", "Relu", "MaxPool", "Gemm"},
    "resnet_mini": {"Conv", "BatchNormalization", "Relu", "Add", "MaxPool", "GlobalAveragePool", "Gemm"},
    "mobilenet_mini": {"Conv", "Clip", "HardSwish", "Add", "GlobalAveragePool", "Gemm"},
    "transformer_stack": {"LayerNormalization", "ReduceMean", "Sub", "Pow", "Sqrt", "Div", "Softmax",
                          "MatMul", "Erf", "Reshape", "Transpose", "Shape", "Gather", "Concat"},
    "transformer_large": {"LayerNormalization", "ReduceMean", "Softmax", "MatMul", "Erf", "Reshape",
                          "Transpose"},
    "detection_postproc": {"NonMaxSuppression", "NonZero", "TopK", "Shape", "Gather", "Range",
                           "com.microsoft::Gelu", "com.microsoft::FusedMatMul"},
    "lstm_seq": {"LSTM"},
    "loop_model": {"Loop", "If"},
    "quantized_dynamic": {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"},
}

DYNAMIC_BATCH = ["digits_cnn", "mobilenet_mini", "transformer_stack", "transformer_large", "lstm_seq",
                 "loop_model", "quantized_dynamic"]


def op_key(node: onnx.NodeProto) -> str:
    return f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type


def run(name: str, feeds: dict) -> dict:
    sess = ort.InferenceSession(str(zoo.path(name)), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


@pytest.fixture(scope="module")
def protos() -> dict:
    return {name: onnx.load(str(zoo.path(name))) for name in MODELS}


# --- structure ------------------------------------------------------------------------------

def test_zoo_lists_every_model():
    assert zoo.names() == MODELS


@pytest.mark.parametrize("name", MODELS)
def test_model_is_checker_valid_opset17_ir8(name, protos):
    proto = protos[name]
    onnx.checker.check_model(proto, full_check=True)
    opsets = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
    assert opsets["ai.onnx"] == 17
    assert proto.ir_version == 8


@pytest.mark.parametrize("name", MODELS)
def test_node_names_unique_and_non_empty(name, protos):
    names = [n.name for n in all_nodes(protos[name].graph)]
    assert names and all(names)
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("name", MODELS)
def test_model_has_its_notable_ops(name, protos):
    ops = {op_key(n) for n in all_nodes(protos[name].graph)}
    assert REQUIRED_OPS[name] <= ops, REQUIRED_OPS[name] - ops


def test_resnet_keeps_batchnorm_unfolded(protos):
    nodes = protos["resnet_mini"].graph.node
    convs = [n for n in nodes if n.op_type == "Conv"]
    bns = [n for n in nodes if n.op_type == "BatchNormalization"]
    assert len(bns) == len(convs) == 9
    assert all(len(n.input) == 2 for n in convs)


def test_mobilenet_has_depthwise_convs_and_inverted_residuals(protos):
    graph = protos["mobilenet_mini"].graph
    weights = {t.name: t.dims for t in graph.initializer}
    depthwise = []
    for node in graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type == "Conv" and group > 1:
            assert weights[node.input[1]][0] == group and weights[node.input[1]][1] == 1
            depthwise.append(node.name)
    assert len(depthwise) == 5
    assert sum(n.op_type == "Add" and "residual" in n.name for n in graph.node) == 3


def test_transformer_large_is_drawing_scale_and_small(protos):
    assert len(protos["transformer_large"].graph.node) >= 2000
    assert zoo.path("transformer_large").stat().st_size < 1.5 * 1024 * 1024


def test_detection_topk_k_is_computed_from_data(protos):
    graph = protos["detection_postproc"].graph
    producers = {o: n for n in graph.node for o in n.output}
    topk = next(n for n in graph.node if n.op_type == "TopK")
    k_node = producers[topk.input[1]]
    assert k_node.op_type == "Min"
    assert {producers[i].op_type for i in k_node.input if i in producers} == {"Slice"}


@pytest.mark.parametrize("name", DYNAMIC_BATCH)
def test_dynamic_batch_dimension(name, protos):
    dims = protos[name].graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    outputs = run(name, zoo.example_inputs(name, batch=3))
    first = next(iter(outputs.values()))
    assert first.shape[0] == 3


def test_data_folder_is_small(data_dir):
    total = sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file())
    assert total < 10 * 1024 * 1024


# --- numbers --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_model_runs_in_onnxruntime(name):
    outputs = run(name, zoo.example_inputs(name, batch=2))
    assert outputs
    for value in outputs.values():
        assert np.all(np.isfinite(np.asarray(value, dtype=np.float64)))


@pytest.mark.parametrize("name", ["digits_cnn", "quantized_dynamic"])
def test_digits_accuracy_in_onnxruntime(name):
    x, y = zoo.digits("test")
    logits = run(name, {"input": x})["logits"]
    assert logits.shape == (len(y), 10)
    assert (logits.argmax(1) == y).mean() >= 0.97


def test_detection_finds_boxes_on_example_input():
    out = run("detection_postproc", zoo.example_inputs("detection_postproc"))
    k = len(out["det_scores"])
    assert 1 <= k <= 10
    assert out["det_boxes"].shape == (k, 4)
    assert np.all(np.diff(out["det_scores"]) <= 0)
    assert np.all((out["det_boxes"] >= 0) & (out["det_boxes"] <= 1))
    np.testing.assert_array_equal(out["det_rank"], np.arange(k))
    assert 0 <= int(out["num_candidates"]) <= 64


def test_loop_stops_within_its_trip_count():
    out = run("loop_model", zoo.example_inputs("loop_model", batch=4))
    assert 1 <= len(out["loop_changes"]) <= 6
    assert out["logits"].shape == (4, 4)


# --- digits data ----------------------------------------------------------------------------

def test_digits_splits_are_disjoint_and_from_sklearn(data_dir):
    from sklearn.datasets import load_digits

    digits = load_digits()
    seen = set()
    for split, size in (("test", 400), ("calib", 200)):
        x, y = zoo.digits(split)
        assert x.shape == (size, 1, 8, 8) and x.dtype == np.float32
        assert y.shape == (size,) and y.dtype == np.int64
        assert x.min() >= 0.0 and x.max() <= 1.0
        with np.load(data_dir / f"digits_{split}.npz") as archive:
            index = archive["index"]
        np.testing.assert_array_equal(x[:, 0], digits.images[index] / 16.0)
        np.testing.assert_array_equal(y, digits.target[index])
        rows = {row.tobytes() for row in x}
        assert len(rows) == size
        assert not rows & seen
        seen |= rows
    assert len(seen) == 600 < len(digits.target)


def test_digits_unknown_split():
    with pytest.raises(InputError, match="'train'.*test, calib"):
        zoo.digits("train")


# --- zoo helpers ----------------------------------------------------------------------------

def test_path_unknown_name_lists_available():
    with pytest.raises(ModelLoadError) as info:
        zoo.path("resnet50")
    assert isinstance(info.value, TrtlabError)
    assert "'resnet50'" in str(info.value)
    assert all(name in str(info.value) for name in MODELS)


def test_path_accepts_suffix():
    assert zoo.path("lstm_seq.onnx") == zoo.path("lstm_seq")
    assert zoo.path("lstm_seq").is_file()


def test_trtlab_data_overrides_folder(tmp_path, monkeypatch):
    shutil.copy(zoo.path("lstm_seq"), tmp_path / "mine.onnx")
    monkeypatch.setenv("TRTLAB_DATA", str(tmp_path))
    assert zoo.names() == ["mine"]
    assert zoo.path("mine") == tmp_path / "mine.onnx"
    with pytest.raises(ModelLoadError, match="digits_test.npz"):
        zoo.digits("test")


def test_missing_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TRTLAB_DATA", str(tmp_path / "absent"))
    with pytest.raises(ModelLoadError, match="TRTLAB_DATA"):
        zoo.names()


def test_example_inputs_deterministic_and_typed():
    a = zoo.example_inputs("transformer_stack", batch=2, seed=5)
    b = zoo.example_inputs("transformer_stack", batch=2, seed=5)
    c = zoo.example_inputs("transformer_stack", batch=2, seed=6)
    assert list(a) == ["input"]
    assert a["input"].shape == (2, 16, 32) and a["input"].dtype == np.float32
    np.testing.assert_array_equal(a["input"], b["input"])
    assert not np.array_equal(a["input"], c["input"])
    feeds = zoo.example_inputs("detection_postproc", batch=7)
    assert {k: v.shape for k, v in feeds.items()} == {"features": (1, 64, 16), "box_deltas": (1, 64, 4)}


def test_example_inputs_for_digits_are_test_images():
    x, _ = zoo.digits("test")
    feed = zoo.example_inputs("digits_cnn", batch=3)["input"]
    assert feed.shape == (3, 1, 8, 8)
    rows = {row.tobytes() for row in x}
    assert all(row.tobytes() in rows for row in feed)


def test_example_inputs_symbolic_dims_and_dtypes(tmp_path, monkeypatch):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["tokens"], ["out"], name="id"),
         helper.make_node("Not", ["flags"], ["flags_out"], name="not")], "g",
        [helper.make_tensor_value_info("tokens", onnx.TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("flags", onnx.TensorProto.BOOL, [2])],
        [helper.make_tensor_value_info("out", onnx.TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("flags_out", onnx.TensorProto.BOOL, [2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
              str(tmp_path / "tokens.onnx"))
    monkeypatch.setenv("TRTLAB_DATA", str(tmp_path))
    with pytest.raises(InputError, match="'seq'.*dims="):
        zoo.example_inputs("tokens")
    feeds = zoo.example_inputs("tokens", batch=2, dims={"seq": 5})
    assert feeds["tokens"].shape == (2, 5) and feeds["tokens"].dtype == np.int64
    assert feeds["tokens"].min() >= 0 and feeds["tokens"].max() < 10
    assert feeds["flags"].dtype == np.bool_


@pytest.mark.parametrize("batch", [0, -1, 1.5, True])
def test_example_inputs_bad_batch(batch):
    with pytest.raises(InputError, match="batch"):
        zoo.example_inputs("lstm_seq", batch=batch)


@pytest.mark.parametrize("name", MODELS)
def test_load_returns_model(name):
    model = zoo.load(name)
    assert model.node_names and len(set(model.node_names)) == len(model.node_names)
    assert [i.name for i in model.inputs] == [i.name for i in onnx.load(str(zoo.path(name))).graph.input]


# --- TensorRT parser ------------------------------------------------------------------------

def parser_verdict(name: str):
    from trtlab.backends.tensorrt import flavor as trt

    builder, network, parser, logger = trt.make_parser()
    ok = parser.supports_model_v2(zoo.path(name).read_bytes(), str(zoo.path(name)))
    errors = {parser.get_error(i).node_operator() for i in range(parser.num_errors)}
    return ok, errors


@pytest.fixture(scope="module")
def tensorrt():
    from trtlab.backends.tensorrt import flavor as trt

    if trt.flavor() is None:
        pytest.skip("no TensorRT or TensorRT-RTX installed")
    return trt


@pytest.mark.parametrize("name", ["digits_cnn", "resnet_mini", "mobilenet_mini", "transformer_stack", "lstm_seq"])
def test_parser_supports_plain_models(tensorrt, name):
    ok, errors = parser_verdict(name)
    assert ok and not errors


@pytest.mark.parametrize("name, rejected", [
    ("detection_postproc", {"FusedMatMul"}),
    ("quantized_dynamic", {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}),
])
def test_parser_rejects_fallback_models(tensorrt, name, rejected):
    ok, errors = parser_verdict(name)
    assert not ok
    assert rejected <= errors
