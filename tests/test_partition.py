"""Partitioning: passes, decisions, views, JSON, and the invariant on the zoo.

Structure checks use tiny factory graphs with hand-written support; numeric checks run the
extracted segments one after another with ONNX Runtime and compare with the whole model.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

import factories as F
import trtlab
from trtlab import zoo
from trtlab.errors import PartitionError, TrtlabError
from trtlab.backends.onnxruntime.session import run_onnx
from trtlab.partitioning.partitioner import (DECISION_KINDS, FORMAT_VERSION, Partition, partition, run_segments,
                              write_partition)

RTOL = 1e-5


# ----------------------------------------------------------------------------------------------
# factories
# ----------------------------------------------------------------------------------------------


def diamond():
    """A refused merge: joining relu and add would make a cycle through sig.

        x -> relu --------> add -> y
               \\            ^
                `-> sig ----'
    """
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Sigmoid", ["r"], ["s"], name="sig"),
        helper.make_node("Add", ["r", "s"], ["y"], name="add"),
    ]
    return trtlab.load(F._model(nodes, [F.vi("x", [2, 4])], [F.vi("y", [2, 4])]))


def two_branches():
    """An unsupported node in one branch; the other branch and the join merge around it.

        x -> mm(w) -> relu -> tanh --------> add -> y
                        \\                    ^
                         `-> neg (rejected) -'
    """
    w = F.const("w", np.eye(4, dtype=np.float32))
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
        helper.make_node("Relu", ["m"], ["r"], name="relu"),
        helper.make_node("Tanh", ["r"], ["t"], name="tanh"),
        helper.make_node("Neg", ["r"], ["n"], name="neg"),
        helper.make_node("Add", ["t", "n"], ["y"], name="add"),
    ]
    return trtlab.load(F._model(nodes, [F.vi("x", [2, 4])], [F.vi("y", [2, 4])], [w]))


def chain_with_trivial():
    """x -> mm(w) -> relu -> abs (rejected) -> reshape -> sig -> reshape2 -> y

    After the rejected abs, the region {reshape, sig, reshape2} has one non-trivial node and
    no MAC op.
    """
    w = F.const("w", np.eye(4, dtype=np.float32))
    shape = F.const("shape", np.array([2, 4], dtype=np.int64))
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
        helper.make_node("Relu", ["m"], ["r"], name="relu"),
        helper.make_node("Abs", ["r"], ["a"], name="abs"),
        helper.make_node("Reshape", ["a", "shape"], ["h"], name="reshape"),
        helper.make_node("Sigmoid", ["h"], ["s"], name="sig"),
        helper.make_node("Reshape", ["s", "shape"], ["y"], name="reshape2"),
    ]
    return trtlab.load(F._model(nodes, [F.vi("x", [2, 4])], [F.vi("y", [2, 4])], [w, shape]))


def all_supported(model, rejected=()):
    return {n: (n not in rejected, "rejected in the test" if n in rejected else "ok")
            for n in model.node_names}


def seg_of(part, node):
    return part.segments[part.assignment[node]]


# ----------------------------------------------------------------------------------------------
# structure
# ----------------------------------------------------------------------------------------------


def test_refused_merge_is_recorded_with_the_node_on_the_other_path():
    m = diamond()
    part = partition(m, support=all_supported(m, rejected={"sig"}))
    assert [s.backend for s in part.segments] == ["tensorrt", "fallback", "tensorrt"]
    assert [s.nodes for s in part.segments] == [("relu",), ("sig",), ("add",)]
    refused = part.decisions[part.decisions.kind == "merge_refused_cycle"]
    assert refused.subject.tolist() == ["relu -> add"]
    assert "'sig'" in refused.reason.iloc[0]
    rejected = part.decisions[part.decisions.kind == "rejected"]
    assert rejected.subject.tolist() == ["sig"] and rejected.reason.tolist() == ["rejected in the test"]


def test_regions_merge_around_an_unsupported_branch_when_no_cycle_forms():
    m = two_branches()
    part = partition(m, support=all_supported(m, rejected={"neg"}))
    # tanh can join mm/relu; add cannot (neg sits between relu and add)
    assert seg_of(part, "tanh") == seg_of(part, "relu") == seg_of(part, "mm")
    assert seg_of(part, "add") != seg_of(part, "relu")
    assert seg_of(part, "neg").backend == "fallback"
    assert [s.name for s in part.segments] == ["trt_0", "fallback_1", "trt_2"]
    trt0 = part.segments[0]
    assert trt0.inputs == ("x",) and set(trt0.outputs) == {"r", "t"}
    assert trt0.macs == 2 * 4 * 4


def test_segment_macs_are_counted_when_first_read():
    """Partitioning computes no MACs (no tensor shapes are read); a segment's count is made from
    the model when first read, and copies, pickles and JSON carry the number."""
    import copy
    import pickle

    m = two_branches()
    part = partition(m, support=all_supported(m, rejected={"neg"}))
    assert "macs" not in m.__dict__  # the model's per-node MACs were not computed
    clone = pickle.loads(pickle.dumps(part.segments[0]))
    assert clone.macs == 2 * 4 * 4 and clone.__dict__["macs"] == 32
    assert [s.macs for s in part.segments] == [32, 0, 0] and "macs" in m.__dict__
    assert copy.copy(part.segments[0]) == part.segments[0]
    assert [s["macs"] for s in json.loads(part.to_json())["segments"]] == [32, 0, 0]
    with pytest.raises(AttributeError):
        part.segments[0].macs = 1


def test_regions_scheduled_apart_still_merge_when_no_cycle_forms():
    """x0 -> relu -------------> sum -> y     relu and sum merge; tanh cannot join them
       x1 -> tanh -> neg (rejected) -^      (the other path runs through neg)
               `-----------------------^
    """
    nodes = [
        helper.make_node("Relu", ["x0"], ["a"], name="relu"),
        helper.make_node("Tanh", ["x1"], ["e"], name="tanh"),
        helper.make_node("Neg", ["e"], ["d"], name="neg"),
        helper.make_node("Sum", ["a", "d", "e"], ["y"], name="sum"),
    ]
    m = trtlab.load(F._model(nodes, [F.vi("x0", [2, 4]), F.vi("x1", [2, 4])], [F.vi("y", [2, 4])]))
    part = partition(m, support=all_supported(m, rejected={"neg"}))
    assert seg_of(part, "relu") == seg_of(part, "sum")
    assert seg_of(part, "tanh") != seg_of(part, "sum")
    refused = part.decisions[part.decisions.kind == "merge_refused_cycle"]
    assert refused.subject.tolist() == ["tanh -> sum"] and "'neg'" in refused.reason.iloc[0]


def test_every_node_is_in_exactly_one_segment_and_assignment_matches():
    m = chain_with_trivial()
    part = partition(m, support=all_supported(m, rejected={"abs"}))
    nodes = [n for s in part.segments for n in s.nodes]
    assert sorted(nodes) == sorted(m.node_names)
    assert all(part.assignment[n] == s.index for s in part.segments for n in s.nodes)
    assert [s.index for s in part.segments] == list(range(len(part)))


def test_min_subgraph_size_counts_only_non_trivial_nodes():
    m = chain_with_trivial()
    sup = all_supported(m, rejected={"abs"})
    assert seg_of(partition(m, support=sup, min_subgraph_size=1), "sig").backend == "tensorrt"
    part = partition(m, support=sup, min_subgraph_size=2)
    assert seg_of(part, "sig").backend == "fallback"
    assert seg_of(part, "mm").backend == "tensorrt"   # mm + relu: 2 non-trivial nodes
    pruned = part.decisions[part.decisions.kind == "pruned_small"]
    assert set(pruned.subject) == {"reshape", "sig", "reshape2"}
    assert "1 non-trivial node(s) < min_subgraph_size=2" in pruned.reason.iloc[0]
    # pruned nodes join the fallback segment of abs
    assert seg_of(part, "abs") == seg_of(part, "sig") == seg_of(part, "reshape2")


def test_remove_no_mac_subgraphs():
    m = chain_with_trivial()
    part = partition(m, support=all_supported(m, rejected={"abs"}), remove_no_mac_subgraphs=True)
    assert seg_of(part, "mm").backend == "tensorrt"
    assert seg_of(part, "sig").backend == "fallback"
    pruned = part.decisions[part.decisions.kind == "pruned_no_mac"]
    assert set(pruned.subject) == {"reshape", "sig", "reshape2"}
    assert "no multiply-accumulate op" in pruned.reason.iloc[0]


def test_exclusions_by_node_and_op_type():
    m = two_branches()
    part = partition(m, support=all_supported(m), exclude_nodes=["tanh"], exclude_ops=["MatMul"])
    assert seg_of(part, "tanh").backend == "fallback"
    assert seg_of(part, "mm").backend == "fallback"
    excluded = part.decisions[part.decisions.kind == "excluded"]
    assert dict(zip(excluded.subject, excluded.reason)) == {
        "mm": "op type MatMul excluded by exclude_ops", "tanh": "node excluded by exclude_nodes"}


def test_decisions_frame_has_the_documented_columns_and_kinds():
    m = chain_with_trivial()
    part = partition(m, support=all_supported(m, rejected={"abs"}), min_subgraph_size=2,
                     exclude_nodes=["mm"])
    d = part.decisions
    assert list(d.columns) == ["subject", "kind", "reason"]
    assert set(d.kind) <= set(DECISION_KINDS)
    assert {"rejected", "excluded", "pruned_small"} <= set(d.kind)
    assert (d.reason.str.len() > 0).all()


def test_summary_and_boundaries():
    m = two_branches()
    part = partition(m, support=all_supported(m, rejected={"neg"}))
    s = part.summary()
    assert s.columns.tolist()[:4] == ["segment", "name", "backend", "nodes"]
    assert s.nodes.tolist() == [3, 1, 1]
    assert s.macs.tolist() == [32, 0, 0]
    assert s.input_bytes.tolist() == [32, 32, 64]
    b = part.boundaries().set_index("tensor")
    assert sorted(b.index) == ["n", "r", "t"]
    assert b.loc["r", "producer"] == "trt_0" and b.loc["r", "consumers"] == ["fallback_1"]
    assert b.loc["t", "consumers"] == ["trt_2"]
    assert b.loc["n", "shape"] == [2, 4] and b.loc["n", "dtype"] == "float" and b.loc["n", "bytes"] == 32


def test_support_table_and_bool_mapping_are_accepted():
    m = diamond()
    table = trtlab.check_support(m, source="rules")
    assert len(partition(m, support=table).segments) == 1
    assert len(partition(m, support=table.frame).segments) == 1
    part = partition(m, support={"relu": True, "sig": False, "add": True})
    assert part.decisions.reason[part.decisions.kind == "rejected"].tolist() == [
        "unsupported (no reason given)"]


def test_default_support_comes_from_check_support():
    m = F.with_unsupported()
    part = partition(trtlab.load(m))
    assert seg_of(part, "nonzero").backend == "fallback"
    assert seg_of(part, "relu").backend == "tensorrt"


class ToyBackend:
    """A second backend with its own rule: it takes only elementwise Relu/Tanh/Add."""

    name = "toy"

    def check_support(self, model):
        ok = {"Relu", "Tanh", "Add"}
        return {n: (model.node(n).op_type in ok, f"toy takes {sorted(ok)}") for n in model.node_names}


def test_a_second_backend_partitions_the_same_way():
    m = two_branches()
    part = partition(m, backend=ToyBackend())
    assert part.backend == "toy"
    assert [(s.name, s.backend) for s in part.segments][:2] == [("fallback_0", "fallback"), ("toy_1", "toy")]
    assert seg_of(part, "relu").backend == "toy" and seg_of(part, "mm").backend == "fallback"


def test_with_fallback_moves_nodes_and_records_the_failure():
    m = two_branches()
    part = partition(m, support=all_supported(m, rejected={"neg"}))
    again = part.with_fallback(part.segments[0], "engine build failed: out of memory")
    assert all(seg_of(again, n).backend == "fallback" for n in ("mm", "relu", "tanh"))
    rows = again.decisions[again.decisions.kind == "build_failed"]
    assert set(rows.subject) == {"mm", "relu", "tanh"}
    assert set(rows.reason) == {"engine build failed: out of memory"}
    assert seg_of(part, "mm").backend == "tensorrt", "the original partition is unchanged"
    twice = again.with_fallback("add", "also failed")
    assert all(s.backend == "fallback" for s in twice.segments) and len(twice.segments) == 1
    feeds = {"x": np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)}
    np.testing.assert_allclose(run_segments(twice, feeds)["y"], run_onnx(m, feeds)["y"], rtol=RTOL)
    with pytest.raises(PartitionError, match="non-empty reason"):
        part.with_fallback("mm", "")
    with pytest.raises(PartitionError, match="does not have"):
        part.with_fallback("nope", "x")


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_partition_errors():
    m = diamond()
    sup = all_supported(m)
    with pytest.raises(PartitionError, match=r"does not have.*did you mean \['relu'\]"):
        partition(m, support=sup, exclude_nodes=["rellu"])
    with pytest.raises(PartitionError, match=r"no verdict for 1 node\(s\).*'add'"):
        partition(m, support={"relu": True, "sig": True})
    with pytest.raises(PartitionError, match="unknown node"):
        partition(m, support={**sup, "ghost": True})
    with pytest.raises(PartitionError, match="min_subgraph_size"):
        partition(m, support=sup, min_subgraph_size=-1)
    with pytest.raises(PartitionError, match="backend"):
        partition(m, support=sup, backend="fallback")
    with pytest.raises(PartitionError, match="bool or"):
        partition(m, support={n: "yes" for n in m.node_names})
    with pytest.raises(PartitionError, match="support must be"):
        partition(m, support=42)
    with pytest.raises(TrtlabError):
        partition(m, support=sup).segment("trt_9")


# ----------------------------------------------------------------------------------------------
# JSON
# ----------------------------------------------------------------------------------------------


def test_json_round_trip_keeps_segments_decisions_and_settings():
    m = chain_with_trivial()
    part = partition(m, support=all_supported(m, rejected={"abs"}), min_subgraph_size=2,
                     exclude_ops=["Relu"]).with_fallback("mm", "build failed")
    back = Partition.from_json(part.to_json(), m)
    assert back.segments == part.segments
    assert back.decisions.equals(part.decisions)
    assert back.settings == part.settings and back.forced == part.forced
    assert back.assignment == part.assignment
    assert back.with_fallback("sig", "x").segments == part.with_fallback("sig", "x").segments
    doc = json.loads(part.to_json())
    assert doc["version"] == FORMAT_VERSION and doc["format"] == "trtlab-partition"


def test_from_json_refuses_unknown_versions_other_models_and_garbage():
    m = diamond()
    part = partition(m, support=all_supported(m))
    doc = json.loads(part.to_json())
    doc["version"] = 99
    with pytest.raises(PartitionError, match=r"version 99.*reads version\(s\) \[1\]"):
        Partition.from_json(json.dumps(doc), m)
    with pytest.raises(PartitionError, match="does not match model"):
        Partition.from_json(part.to_json(), two_branches())
    with pytest.raises(PartitionError, match="could not be parsed"):
        Partition.from_json("{not json", m)
    with pytest.raises(PartitionError, match="not a trtlab partition"):
        Partition.from_json(json.dumps({"format": "other"}), m)
    with pytest.raises(PartitionError, match="no 'model' field"):
        Partition.from_json(json.dumps({"format": "trtlab-partition", "version": FORMAT_VERSION}), m)


def test_write_partition_writes_segments_tables_and_json(tmp_path):
    m = two_branches()
    part = partition(m, support=all_supported(m, rejected={"neg"}))
    written = write_partition(part, tmp_path / "out")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["00_trt_0.onnx", "01_fallback_1.onnx", "02_trt_2.onnx", "MANIFEST.json",
                     "boundaries.csv", "decisions.csv", "partition.json", "summary.csv"]
    assert set(written) == set(names)
    onnx.checker.check_model(onnx.load(str(tmp_path / "out" / "01_fallback_1.onnx")))
    back = Partition.from_json((tmp_path / "out" / "partition.json").read_text(), m)
    assert back.segments == part.segments
    assert (tmp_path / "out" / "boundaries.csv").read_text().splitlines()[0].startswith("tensor,producer")
    # the tables are written from plain rows, exactly as the DataFrames would write them
    for name, frame in (("summary.csv", part.summary()), ("boundaries.csv", part.boundaries()),
                        ("decisions.csv", part.decisions)):
        assert (tmp_path / "out" / name).read_text() == frame.to_csv(index=False), name
    assert part.summary_rows() == part.summary().to_dict("records")


# ----------------------------------------------------------------------------------------------
# the invariant on the zoo
# ----------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _zoo(name):
    model = zoo.load(name)
    feeds = zoo.example_inputs(name, batch=2)
    return model, feeds, run_onnx(model, feeds)


def _knobs(model, setting):
    names = model.node_names
    if setting == "rules":
        return dict(support=trtlab.check_support(model, source="rules"))
    if setting == "parser-pruned":
        return dict(support=trtlab.check_support(model, source="parser"), min_subgraph_size=3,
                    remove_no_mac_subgraphs=True)
    if setting == "random-rejections":
        rng = np.random.default_rng(len(names))
        rejected = set(rng.choice(names, size=max(1, min(12, len(names) // 3)), replace=False).tolist())
        return dict(support=all_supported(model, rejected), min_subgraph_size=2)
    if setting == "cut-every-4th":
        step = 4 if len(names) < 200 else len(names) // 10
        return dict(support=trtlab.check_support(model, source="rules"), exclude_nodes=names[step - 1::step])
    raise AssertionError(setting)


def assert_outputs_match(got, ref):
    assert list(got) == list(ref)
    for name, want in ref.items():
        have = got[name]
        assert have.shape == want.shape and have.dtype == want.dtype, name
        if np.issubdtype(want.dtype, np.floating):
            scale = float(np.max(np.abs(want))) if want.size else 0.0
            err = float(np.max(np.abs(have.astype(np.float64) - want))) if want.size else 0.0
            assert err <= RTOL * max(scale, 1e-12), f"{name}: max abs error {err} vs scale {scale}"
        else:
            np.testing.assert_array_equal(have, want, err_msg=name)


@pytest.mark.parametrize("setting", ["rules", "parser-pruned", "random-rejections", "cut-every-4th"])
@pytest.mark.parametrize("name", zoo.names())
def test_segments_reproduce_the_zoo_model(name, setting):
    if setting == "parser-pruned" and not trtlab.backends.tensorrt.flavor.info().parse:
        pytest.skip("TensorRT's ONNX parser is not installed")
    model, feeds, ref = _zoo(name)
    part = partition(model, **_knobs(model, setting))
    assert sorted(n for s in part.segments for n in s.nodes) == sorted(model.node_names)
    for seg in part.segments:
        proto = part.segment_model(seg.index)
        onnx.checker.check_model(proto)
        assert all(v.type.tensor_type.elem_type for v in list(proto.graph.input) + list(proto.graph.output))
    assert_outputs_match(run_segments(part, feeds), ref)


def test_zoo_models_with_rejections_get_several_segments():
    model, _, _ = _zoo("resnet_mini")
    part = partition(model, **_knobs(model, "random-rejections"))
    assert len(part.segments) >= 3
    assert {"tensorrt", "fallback"} == {s.backend for s in part.segments}


# ----------------------------------------------------------------------------------------------
# scale
# ----------------------------------------------------------------------------------------------


def test_merge_stays_near_linear_on_a_large_graph():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from partition_scale import synthetic_model

    model = trtlab.load(synthetic_model(20000, seed=1), fold_constants=False, shape_inference=False)
    support = {n: model.node(n).domain == "" for n in model.node_names}
    part = partition(model, support=support)  # timed by benchmarks/partition_scale.py
    assert len(part.segments) > 1000
    assert sorted(part.assignment) == sorted(model.node_names)


def test_dead_nodes_do_not_make_output_less_segments():
    """The expanded Attention cases hold nodes nothing reads; every segment still has outputs and
    the segments reproduce the expected outputs."""
    from backend_cases import feeds, load_case

    case = load_case("node/test_attention_4d_expanded")
    model = trtlab.load(case.model)
    part = trtlab.partition(model, support=trtlab.check_support(model, source="rules"))
    assert all(s.outputs for s in part.segments)
    out = trtlab.run_segments(part, feeds(case))
    np.testing.assert_allclose(out[model.outputs[0].name], case.data_sets[0][1][0], rtol=1e-3, atol=1e-6)
