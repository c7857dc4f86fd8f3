"""TensorRT's ONNX parser as support ground truth, and rules-vs-parser agreement on the zoo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

import trtlab
from trtlab.backends.tensorrt import flavor as trt
from trtlab.errors import SupportError
from trtlab.backends.tensorrt.support import check_support, compare_support, parse_support

ZOO = sorted((Path(__file__).resolve().parent.parent / "data").glob("*.onnx"))


pytestmark = pytest.mark.skipif(not trt.info().parse,
                                reason="needs TensorRT or TensorRT-RTX with a working ONNX parser")

F, B = T.FLOAT, T.BOOL


def _model(nodes, inputs, outputs, inits=(), domains=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    opsets = [helper.make_opsetid("", 17)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return trtlab.load(model, fold_constants=False)


def relu_unique_relu():
    """x ─► Relu ─► Unique ─► Relu ─► y   (Unique fails the parser's static check)"""
    return _model([helper.make_node("Relu", ["x"], ["a"], name="relu0"),
                   helper.make_node("Unique", ["a"], ["u"], name="unique"),
                   helper.make_node("Relu", ["u"], ["y"], name="relu1")],
                  [helper.make_tensor_value_info("x", F, [6])],
                  [helper.make_tensor_value_info("y", F, None)])


def dropout_then_unique():
    """x ─► Relu ─► Dropout(training) ─► Relu ─► Unique ─► Relu ─► y

    Dropout fails while importing, which stops the parser: Unique is never looked at in the
    first pass although it is listed in a subgraph.
    """
    return _model([helper.make_node("Relu", ["x"], ["a"], name="relu0"),
                   helper.make_node("Dropout", ["a", "", "tm"], ["d"], name="dropout"),
                   helper.make_node("Relu", ["d"], ["b"], name="relu1"),
                   helper.make_node("Unique", ["b"], ["u"], name="unique"),
                   helper.make_node("Relu", ["u"], ["y"], name="relu2")],
                  [helper.make_tensor_value_info("x", F, [1, 3, 8, 8])],
                  [helper.make_tensor_value_info("y", F, None)],
                  [numpy_helper.from_array(np.array(True), "tm")])


def custom_domain_op():
    """x ─► Relu ─► com.example::Mystery ─► Relu ─► y"""
    return _model([helper.make_node("Relu", ["x"], ["a"], name="relu0"),
                   helper.make_node("Mystery", ["a"], ["m"], name="mystery", domain="com.example"),
                   helper.make_node("Relu", ["m"], ["y"], name="relu1")],
                  [helper.make_tensor_value_info("x", F, [4, 4])],
                  [helper.make_tensor_value_info("y", F, [4, 4])], domains=["com.example"])


def if_with_unsupported_branch():
    """c ─► If{then: Identity(x), else: Unique(x)} ─► Relu ─► y"""
    x = helper.make_tensor_value_info("x", F, [6])
    then_g = helper.make_graph([helper.make_node("Identity", ["x"], ["t"], name="then_id")], "then",
                               [], [helper.make_tensor_value_info("t", F, [6])])
    else_g = helper.make_graph([helper.make_node("Unique", ["x"], ["e"], name="else_unique")],
                               "else", [], [helper.make_tensor_value_info("e", F, [6])])
    return _model([helper.make_node("If", ["c"], ["i"], name="branch", then_branch=then_g,
                                    else_branch=else_g),
                   helper.make_node("Relu", ["i"], ["y"], name="relu")],
                  [x, helper.make_tensor_value_info("c", B, [])],
                  [helper.make_tensor_value_info("y", F, None)])


def test_static_rejection_and_gaps():
    report = parse_support(relu_unique_relu())
    assert not report.all_supported
    assert report.subgraphs == ((0,), (2,)) and report.verified == (False, False)
    by = {v.name: v for v in report.verdicts}
    assert by["relu0"].supported and by["relu1"].supported
    assert not by["unique"].supported and by["unique"].reason.startswith("rejected by the parser")
    assert by["unique"].code == "UNSUPPORTED_NODE"


def test_recheck_finds_what_the_first_pass_skipped():
    model = dropout_then_unique()
    report = parse_support(model)
    by = {v.name: v for v in report.verdicts}
    assert report.passes == 3
    assert not by["dropout"].supported and "training mode" in by["dropout"].reason
    assert not by["unique"].supported
    assert by["relu1"].supported and "re-check pass 2" in by["relu1"].reason
    quick = {v.name: v for v in parse_support(model, recheck=False).verdicts}
    assert quick["unique"].supported and "not imported" in quick["unique"].reason


def test_custom_domain_reason():
    table = check_support(custom_domain_op(), source="parser")
    assert table.supported_nodes == {"relu0", "relu1"}
    assert "Plugin not found" in table.reason("mystery")
    assert set(table.frame["source"]) == {"parser"}
    rules = check_support(custom_domain_op(), source="rules")
    assert "custom domain 'com.example'" in rules.reason("mystery")


def test_control_flow_error_lands_on_the_if_node():
    table = check_support(if_with_unsupported_branch(), source="parser")
    assert not table.frame.set_index("node").loc["branch", "supported"]
    assert table.frame.set_index("node").loc["relu", "supported"]


def test_auto_source_and_version_checks():
    table = check_support(relu_unique_relu())
    assert table.source == "parser" and "parser" in table.target
    other = check_support(relu_unique_relu(), trt_version="10.0")
    assert other.source == "rules"
    with pytest.raises(SupportError, match="source='rules'"):
        check_support(relu_unique_relu(), source="parser", trt_version="10.0")


def test_quantized_zoo_model_gets_a_reason_per_node(data_dir):
    path = data_dir / "quantized_dynamic.onnx"
    table = check_support(path, source="parser")
    bad = table.unsupported()
    assert set(bad["op_type"]) >= {"ConvInteger", "DynamicQuantizeLinear", "MatMulInteger"}
    assert table.frame["reason"].str.len().min() > 10
    assert len(table.details.subgraphs) > 3


@pytest.mark.parametrize("path", ZOO, ids=lambda p: p.stem)
def test_rules_agree_with_parser_on_zoo(path):
    result = compare_support(path)
    assert result.agreement >= 95.0, result.disagreements.to_string()
    assert len(result.frame) == len(trtlab.load(path).proto.graph.node)


# -- re-checks in windows --------------------------------------------------------------------------
def _stopping_chain(n: int):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from parser_scale import stopping_chain

    return stopping_chain(n)


@pytest.mark.parametrize("n", [30, 700])
def test_parser_stops_are_rechecked_node_by_node(n):
    """Every import-time failure (a side-branch Reshape) is rejected, every other node accepted,
    whether the re-checks fit in one window (30 nodes) or need many (700 nodes)."""
    report = parse_support(_stopping_chain(n))
    rejected = [v.name for v in report.verdicts if not v.supported]
    assert rejected == [f"n{i}" for i in range(n) if i % 10 == 9]
    assert all("Reshape" in v.reason or "reshape" in v.reason.lower() or "Invalid Node" in v.reason
               for v in report.verdicts if not v.supported)
    assert report.passes == n // 10  # the first parse, then one re-check after each stop but the last


def test_recheck_windows_do_not_reparse_the_whole_rest():
    """Each re-check parses a window near the stop, not every remaining node (the quadratic path)."""
    import trtlab.backends.tensorrt.parser as parser_module

    sizes = []
    real = parser_module._run_parser

    def counting(data):
        import onnx

        sizes.append(len(onnx.load_from_string(data).graph.node))
        return real(data)

    model = _stopping_chain(2000)
    import unittest.mock

    with unittest.mock.patch.object(parser_module, "_run_parser", counting):
        parse_support(model)
    assert sizes[0] == 2000
    # 200 stops; re-parsing the whole rest each time would read ~200k nodes
    assert sum(sizes[1:]) < 20 * 2000


def test_rejections_take_the_most_precise_reason():
    """The parser says only 'false' for quantized_dynamic's integer ops; the rule table knows
    why, and that reason is shown (with the parser's words kept)."""
    from trtlab import zoo
    from trtlab.backends.tensorrt.support import check_support

    model = zoo.load("quantized_dynamic")
    table = check_support(model, source="parser")
    rules = check_support(model, source="rules")
    rejected = table.frame.query("not supported")
    assert len(rejected) >= 8
    for node, reason in zip(rejected["node"], rejected["reason"]):
        assert reason.startswith(rules.reason(node)), reason
        assert reason.endswith("(parser: rejected by the parser: false)")
    assert not any(r.strip().endswith(": false") and "(parser:" not in r for r in table.frame["reason"])


def test_recheck_types_if_outputs_from_the_branch_not_the_condition():
    """The re-check model declares an If output as its branch says (the condition is a scalar
    BOOL: copying its type and rank rejected every node downstream)."""
    from backend_cases import load_case

    from trtlab.backends.tensorrt.parser import _boundary

    proto = load_case("node/test_if").model
    node = next(n for n in proto.graph.node if n.op_type == "If")
    assumed = {}
    vi = _boundary(node.output[0], node, 17, {}, assumed)
    branch = next(a.g for a in node.attribute if a.name == "then_branch").output[0].type.tensor_type
    assert vi.type.tensor_type.elem_type == branch.elem_type != T.BOOL
    assert len(vi.type.tensor_type.shape.dim) == len(branch.shape.dim) > 0
    assert node.output[0] in assumed


def test_recheck_windows_give_the_parser_the_shape_computations_they_read():
    """affine_grid's Unsqueeze axes come from integer computations far before the parser's stop;
    the re-check window carries those producers along, so the parser sees constant axes and the
    rules and parser agree on every Unsqueeze (a window without them rejected all 4)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from backend_cases import load_case

    model = trtlab.load(load_case("node/test_affine_grid_3d_expanded").model)
    comparison = compare_support(model)
    unsqueeze = comparison.frame[comparison.frame["op_type"] == "Unsqueeze"]
    assert len(unsqueeze) == 4
    assert unsqueeze["parser"].all(), unsqueeze.loc[~unsqueeze["parser"], "parser_reason"].tolist()[:2]


def _relu_chain_file(path: Path, weight_bytes: int) -> Path:
    """x ─► MatMul(w) ─► Relu ─► Relu ─► y, saved to ``path`` with ``w`` of about ``weight_bytes``."""
    side = max(4, int((weight_bytes / 4) ** 0.5))
    w = np.random.default_rng(0).standard_normal((side, side)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["a"], name="matmul"),
         helper.make_node("Relu", ["a"], ["b"], name="relu0"),
         helper.make_node("Relu", ["b"], ["y"], name="relu1")],
        "chain", [helper.make_tensor_value_info("x", F, [1, side])],
        [helper.make_tensor_value_info("y", F, [1, side])], initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("weight_bytes", [4096, 9 << 20], ids=["small_file", "file_over_8MiB"])
def test_the_parser_sees_edits_made_after_load(tmp_path, weight_bytes):
    """The parser is given the model as it is now, not as its file was: an edit made after load,
    and one made after a first check_support of the same Model, both reach the parser (files of
    8 MiB or more are serialized field by field, smaller ones whole)."""
    model = trtlab.load(_relu_chain_file(tmp_path / "chain.onnx", weight_bytes))
    assert model.path is not None and (model.path.stat().st_size >= 8 << 20) == (weight_bytes > 4096)
    relu0 = model.proto.graph.node[1]
    relu0.op_type, relu0.domain = "Mystery", "com.example"
    model.proto.opset_import.append(helper.make_opsetid("com.example", 1))
    table = check_support(model, source="parser")
    assert table.unsupported_nodes == {"relu0"}
    assert table.frame.set_index("node").loc["relu0", "op_type"] == "Mystery"
    part = trtlab.partition(model, support=table)
    assert [s.backend for s in part.segments] == ["tensorrt", "fallback", "tensorrt"]

    relu1 = model.proto.graph.node[2]
    relu1.op_type, relu1.domain = "Mystery", "com.example"
    again = check_support(model, source="parser")
    assert again.unsupported_nodes == {"relu0", "relu1"}
    assert [s.backend for s in trtlab.partition(model, support=again).segments] == ["tensorrt", "fallback"]


def test_model_bytes_field_by_field_are_the_serialized_bytes(tmp_path):
    """The field-by-field serialization used for large files is byte for byte protobuf's own, on
    every zoo model and on a model whose graph carries a field this onnx does not know (which is
    serialized whole, so the field reaches the parser)."""
    from trtlab.backends.tensorrt.parser import _model_bytes

    for path in ZOO:
        proto = trtlab.load(path).proto
        assert _model_bytes(proto, 1 << 40) == proto.SerializeToString(), path.name
    proto = trtlab.load(_relu_chain_file(tmp_path / "chain.onnx", 4096)).proto
    unknown = bytes([0xF8, 0x3E, 0x05])  # field 999, varint 5: no GraphProto field has that number
    proto.graph.ParseFromString(proto.graph.SerializeToString() + unknown)
    assert _model_bytes(proto, 1 << 40) == proto.SerializeToString()
    assert unknown in _model_bytes(proto, 1 << 40)


def test_report_verdicts_are_made_when_read_and_kept_in_copies():
    """ParserReport.verdicts is built on first read; pickles and copies hold the verdicts."""
    import copy
    import pickle

    report = parse_support(relu_unique_relu())
    assert report.__dict__["verdicts"].__class__.__name__ == "Later"
    clone = pickle.loads(pickle.dumps(report))
    assert [v.name for v in clone.verdicts] == ["relu0", "unique", "relu1"]
    assert [v.supported for v in report.verdicts] == [True, False, True]
    assert copy.deepcopy(report).verdicts == report.verdicts
    assert report.verdicts[1].subgraph is None and report.verdicts[0].subgraph == 0
