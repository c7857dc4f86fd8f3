"""Segment extraction: standalone, checker-valid ONNX models that run and stitch back together."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import factories as F
import trtlab
from trtlab import zoo
from trtlab.errors import PartitionError
from trtlab.extract import segment_model
from trtlab.backends.onnxruntime.session import run_onnx
from trtlab.partitioning.partitioner import partition, run_segments


def support(model, rejected=()):
    return {n: n not in rejected for n in model.node_names}


def seg_of(part, node):
    return part.segments[part.assignment[node]]


def constant_across_segments():
    """A Constant read in two segments.

        x -> relu -> add (rejected) -> mul -> y
                      ^                ^
        Constant c ---+----------------'
    """
    nodes = [
        helper.make_node("Constant", [], ["c"], name="const",
                         value=helper.make_tensor("cv", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])),
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Add", ["r", "c"], ["a"], name="add"),
        helper.make_node("Mul", ["a", "c"], ["y"], name="mul"),
    ]
    return trtlab.load(F._model(nodes, [F.vi("x", [2, 4])], [F.vi("y", [2, 4])]), fold_constants=False)


def if_reading_outer_scope():
    """An If whose branches read 'r' from the enclosing graph.

        x -> relu (rejected) -> r
        cond ----------------> If(then: Sigmoid(r) + w, else: Neg(r)) -> y
    """
    w = F.const("w", np.full((2, 4), 0.5, dtype=np.float32))
    then_g = helper.make_graph(
        [helper.make_node("Sigmoid", ["r"], ["s"], name="then_sig"),
         helper.make_node("Add", ["s", "w"], ["t_out"], name="then_add")],
        "then", [], [F.vi("t_out", [2, 4])])
    else_g = helper.make_graph([helper.make_node("Neg", ["r"], ["e_out"], name="else_neg")],
                               "else", [], [F.vi("e_out", [2, 4])])
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_g, else_branch=else_g),
    ]
    return trtlab.load(F._model(nodes, [F.vi("x", [2, 4]), F.vi("cond", [], TensorProto.BOOL)],
                                [F.vi("y", [2, 4])], [w]), fold_constants=False)


def pass_through_and_shared():
    """Graph input x is also a graph output; r is read inside its segment, by another segment
    and is a graph output.

        x ---------------------------> (output x)
        x -> mm(w1) -> relu -> r ------> (output r)
                         r -> sig -> (output s)
                         r -> abs (rejected) -> mm2(w2) -> (output y)
    """
    rng = np.random.default_rng(0)
    inits = [F.const("w1", rng.standard_normal((4, 4)).astype(np.float32)),
             F.const("w2", rng.standard_normal((4, 4)).astype(np.float32)),
             F.const("unused", np.zeros(3, dtype=np.float32))]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m"], name="mm"),
        helper.make_node("Relu", ["m"], ["r"], name="relu"),
        helper.make_node("Sigmoid", ["r"], ["s"], name="sig"),
        helper.make_node("Abs", ["r"], ["a"], name="abs"),
        helper.make_node("MatMul", ["a", "w2"], ["y"], name="mm2"),
    ]
    proto = F._model(nodes, [F.vi("x", [2, 4])],
                     [F.vi("x", [2, 4]), F.vi("r", [2, 4]), F.vi("s", [2, 4]), F.vi("y", [2, 4])], inits,
                     extra_opsets=[("com.example", 1)])
    return trtlab.load(proto, fold_constants=False)


def feeds_x(**extra):
    return {"x": np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32), **extra}


def check_all(part):
    for seg in part.segments:
        onnx.checker.check_model(part.segment_model(seg.index), full_check=True)


def test_constant_nodes_are_copied_into_the_segments_that_read_them():
    m = constant_across_segments()
    part = partition(m, support=support(m, rejected={"add"}))
    assert seg_of(part, "mul").backend == "tensorrt" and seg_of(part, "add").backend == "fallback"
    assert all("c" not in s.inputs for s in part.segments), "constants are embedded, not passed"
    assert "c" not in part.boundaries().tensor.tolist()
    mul_model = part.segment_model(part.assignment["mul"])
    assert [n.op_type for n in mul_model.graph.node] == ["Constant", "Mul"]
    check_all(part)
    np.testing.assert_array_equal(run_segments(part, feeds_x())["y"], run_onnx(m, feeds_x())["y"])


def test_outer_scope_reads_of_if_branches_become_segment_inputs():
    m = if_reading_outer_scope()
    part = partition(m, support=support(m, rejected={"relu"}))
    if_seg = seg_of(part, "if")
    assert if_seg.backend == "tensorrt"
    assert set(if_seg.inputs) == {"cond", "r"}
    proto = part.segment_model(if_seg.index)
    assert [i.name for i in proto.graph.initializer] == ["w"], "initializers read inside bodies come along"
    assert {i.name for i in proto.graph.input} == {"cond", "r"}
    check_all(part)
    for cond in (True, False):
        feeds = feeds_x(cond=np.array(cond))
        np.testing.assert_allclose(run_segments(part, feeds)["y"], run_onnx(m, feeds)["y"], rtol=1e-6)


def test_pass_through_outputs_and_tensors_needed_inside_and_outside():
    m = pass_through_and_shared()
    part = partition(m, support=support(m, rejected={"abs"}))
    first = seg_of(part, "relu")
    assert first.nodes == ("mm", "relu", "sig")
    assert first.outputs == ("r", "s"), "r is read inside, by abs's segment and is a graph output"
    got, ref = run_segments(part, feeds_x()), run_onnx(m, feeds_x())
    assert list(got) == ["x", "r", "s", "y"]
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-6)
    np.testing.assert_array_equal(got["x"], feeds_x()["x"])


def test_segment_models_are_minimal_typed_and_keep_the_opsets():
    m = pass_through_and_shared()
    part = partition(m, support=support(m, rejected={"abs"}))
    check_all(part)
    for seg in part.segments:
        proto = part.segment_model(seg.index)
        reads = {t for n in proto.graph.node for t in n.input}
        assert {t.name for t in proto.graph.initializer} <= reads
        assert "unused" not in {t.name for t in proto.graph.initializer}
        assert [(o.domain, o.version) for o in proto.opset_import] == \
            [(o.domain, o.version) for o in m.proto.opset_import]
        assert proto.ir_version <= 10
        for v in list(proto.graph.input) + list(proto.graph.output):
            assert v.type.tensor_type.elem_type == TensorProto.FLOAT
            assert [d.dim_value for d in v.type.tensor_type.shape.dim] == [2, 4]
        assert tuple(i.name for i in proto.graph.input) == seg.inputs
        assert tuple(o.name for o in proto.graph.output) == seg.outputs
    mm2 = part.segment_model(part.assignment["mm2"])
    assert [t.name for t in mm2.graph.initializer] == ["w2"]


def test_boundaries_after_contrib_ops_get_types_from_onnx_runtime():
    # load() now types contrib outputs (trtlab.shapes); without shape inference the segment
    # extractor still has to ask ONNX Runtime.
    assert zoo.load("detection_postproc").tensor("head/fused_matmul.out").elem_type
    m = trtlab.load(zoo.path("detection_postproc"), shape_inference=False)
    fused = next(n for n in m.node_names if m.node(n).op_type == "FusedMatMul")
    out = m.node(fused).output[0]
    assert not m.tensor(out).elem_type, "no shape inference: the model does not type it"
    after = m.consumers(out)[0]
    part = partition(m, support=support(m, rejected={after}))
    proto = part.segment_model(part.assignment[fused])
    typed = {o.name: o.type.tensor_type.elem_type for o in proto.graph.output}
    assert typed[out] == TensorProto.FLOAT
    onnx.checker.check_model(proto)


def test_bad_segment_index():
    m = constant_across_segments()
    part = partition(m, support=support(m))
    with pytest.raises(PartitionError, match=r"No segment 5.*segments 0\.\.0"):
        segment_model(part, 5)
    with pytest.raises(PartitionError, match="No segment"):
        part.segment_model("0")


def test_loop_without_trip_count_or_condition_gets_a_ranked_boundary():
    """ONNX leaves the Loop's output untyped; extraction still declares its rank.

        x -> relu -> r ----------------.
        x -> Loop(M=3, cond omitted, body: v + r) -> lv -> sigmoid (rejected) -> y
    """
    body = helper.make_graph(
        [helper.make_node("Add", ["v_in", "r"], ["v_out"], name="body_add"),
         helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond")],
        "body", [F.vi("i", [], TensorProto.INT64), F.vi("cond_in", [], TensorProto.BOOL),
                 F.vi("v_in", [2, 3])],
        [F.vi("cond_out", [], TensorProto.BOOL), F.vi("v_out", [2, 3])])
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Loop", ["trip", "", "x"], ["lv"], name="loop", body=body),
        helper.make_node("Sigmoid", ["lv"], ["y"], name="sigmoid"),
    ]
    m = trtlab.load(F._model(nodes, [F.vi("x", [2, 3])], [F.vi("y", [2, 3])],
                             [F.const("trip", np.array(3, np.int64))]))
    assert m.tensor("lv").shape is None, "ONNX shape inference leaves the Loop output untyped"
    part = partition(m, support=support(m, rejected={"sigmoid"}))
    proto = part.segment_model(part.assignment["loop"])
    onnx.checker.check_model(proto)
    (out,) = proto.graph.output
    assert out.name == "lv" and [d.dim_value for d in out.type.tensor_type.shape.dim] == [2, 3]
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_allclose(run_segments(part, {"x": x})["y"], run_onnx(m, {"x": x})["y"],
                               rtol=1e-6)


@pytest.mark.parametrize("cid", ["node/test_loop13_seq", "node/test_sequence_insert_at_back"])
def test_sequence_typed_cut_tensors_keep_their_type(cid):
    """A sequence crossing a cut is declared as a sequence in both segment models."""
    from backend_cases import feeds, load_case

    case = load_case(cid)
    model = trtlab.load(case.model)
    names = model.node_names
    # cut after the first node, whatever the support says
    part = partition(model, support={n: (i == 0, "test") for i, n in enumerate(names)})
    seq_cuts = [t for s in part.segments for t in s.outputs
                if not model.tensor(t).elem_type and t not in {o.name for o in model.proto.graph.output}]
    for s in part.segments:
        sm = segment_model(part, s.index)
        onnx.checker.check_model(sm)
        for vi in list(sm.graph.input) + list(sm.graph.output):
            if vi.name in seq_cuts:
                assert vi.type.HasField("sequence_type")
    out = run_segments(part, feeds(case))
    for vi, want in zip(case.model.graph.output, case.data_sets[0][1]):
        got = out[vi.name]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w)


# -- write_partition: weights once, as external data ---------------------------------------------

def shared_weight(seed=0):
    """One weight read by two segments.

        x -> MatMul(w) -> Relu (rejected) -> MatMul(w) -> Add(b) -> y      w: 32x32 float, b: 32
    """
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w"], ["z"], name="mm2"),
             helper.make_node("Add", ["z", "b"], ["y"], name="add")]
    return F._model(nodes, [F.vi("x", [2, 32])], [F.vi("y", [2, 32])],
                    [F.const("w", rng.standard_normal((32, 32)).astype(np.float32)),
                     F.const("b", rng.standard_normal(32).astype(np.float32))])


def _run_written(folder, part, feeds):
    import onnxruntime as ort

    env = dict(feeds)
    for seg in part.segments:
        path = next(folder.glob(f"{seg.index:02d}_*.onnx"))
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        env.update(zip(names, sess.run(names, {t: env[t] for t in seg.inputs})))
    return env


@pytest.mark.parametrize("external", [False, True], ids=["embedded", "external"])
def test_write_partition_writes_each_weight_once_as_external_data(tmp_path, external):
    import copy
    import json

    from trtlab.model import Model
    from trtlab.partitioning.partitioner import write_partition

    proto = shared_weight()
    model = trtlab.load(proto)
    if external:
        onnx.save(copy.deepcopy(proto), str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.data")
        model = Model(onnx.shape_inference.infer_shapes(onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)),
                      path=tmp_path / "m.onnx")
    part = partition(model, support=support(model, rejected={"relu"}))
    assert len(part.segments) == 3
    out = tmp_path / "out"
    written = write_partition(part, out, weights="copy")
    assert "weights.data" in written
    assert (out / "weights.data").stat().st_size == 32 * 32 * 4  # w once; b (128 bytes) stays embedded
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert "weights.data" in json.dumps(manifest)
    refs = []
    for seg in (part.segments[0], part.segments[2]):
        saved = onnx.load(str(next(out.glob(f"{seg.index:02d}_*.onnx"))), load_external_data=False)
        w = next(t for t in saved.graph.initializer if t.name == "w")
        assert w.data_location == onnx.TensorProto.EXTERNAL and not w.raw_data
        refs.append({e.key: e.value for e in w.external_data})
        onnx.checker.check_model(onnx.load(str(next(out.glob(f"{seg.index:02d}_*.onnx")))), full_check=True)
    assert refs[0] == refs[1] == {"location": "weights.data", "offset": "0", "length": str(32 * 32 * 4)}
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 32)).astype(np.float32)}
    np.testing.assert_allclose(_run_written(out, part, feeds)["y"], run_onnx(proto, feeds)["y"], rtol=1e-5)
