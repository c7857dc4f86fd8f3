"""Property tests: random DAGs of random supported / unsupported ops.

For every generated graph and knob setting: every node is in exactly one segment, each
segment is connected, the graph of segments is acyclic and the segment list is a valid
execution order, adjacent same-backend segments could not merge without a cycle, and running
the segments in order with ONNX Runtime reproduces the whole model.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper

import factories as F
import trtlab
from trtlab.backends.onnxruntime.session import run_onnx
from trtlab.partitioning.partitioner import partition, run_segments

UNARY = ("Relu", "Sigmoid", "Tanh", "Neg", "Identity")
BINARY = ("Add", "Mul", "Sub")
KINDS = UNARY + BINARY + ("MatMul", "Reshape")


@st.composite
def random_graphs(draw):
    """A random DAG over [2, 4] float tensors, its support verdicts and partition knobs."""
    n = draw(st.integers(1, 14))
    tensors = ["x0", "x1"]
    nodes, supported = [], {}
    for i in range(n):
        kind = draw(st.sampled_from(KINDS))
        a = draw(st.sampled_from(tensors))
        name, out = f"n{i}", f"t{i}"
        if kind in BINARY:
            b = draw(st.sampled_from(tensors))
            nodes.append(helper.make_node(kind, [a, b], [out], name=name))
        elif kind == "MatMul":
            nodes.append(helper.make_node("MatMul", [a, "w"], [out], name=name))
        elif kind == "Reshape":
            nodes.append(helper.make_node("Reshape", [a, "shape"], [out], name=name))
        else:
            nodes.append(helper.make_node(kind, [a], [out], name=name))
        tensors.append(out)
        supported[name] = draw(st.booleans())
    consumed = {t for node in nodes for t in node.input}
    outputs = [t for t in tensors[2:] if t not in consumed]
    outputs += draw(st.lists(st.sampled_from(tensors), max_size=2, unique=True))
    outputs = list(dict.fromkeys(outputs))
    inits = [F.const("w", np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32) / 2),
             F.const("shape", np.array([2, 4], dtype=np.int64))]
    proto = F._model(nodes, [F.vi("x0", [2, 4]), F.vi("x1", [2, 4])],
                     [F.vi(t, [2, 4]) for t in outputs], inits)
    knobs = dict(min_subgraph_size=draw(st.integers(0, 3)),
                 remove_no_mac_subgraphs=draw(st.booleans()))
    return proto, supported, knobs


def segment_graph(part):
    """The graph of segments: an edge when one segment reads another's output."""
    producer = {t: s.index for s in part.segments for t in s.outputs}
    g = nx.DiGraph()
    g.add_nodes_from(range(len(part.segments)))
    for s in part.segments:
        for t in s.inputs:
            if t in producer:
                g.add_edge(producer[t], s.index)
    return g


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs())
def test_partition_properties(case):
    proto, supported, knobs = case
    model = trtlab.load(proto)
    part = partition(model, support=supported, **knobs)

    # every node in exactly one segment
    nodes = [n for s in part.segments for n in s.nodes]
    assert sorted(nodes) == sorted(model.node_names)
    assert len(nodes) == len(set(nodes))
    # backend segments hold only supported nodes; nodes in a segment run in model order
    for s in part.segments:
        if s.backend == "tensorrt":
            assert all(supported[n] for n in s.nodes)
        assert list(s.nodes) == sorted(s.nodes, key=model.index)
    # each segment is a connected region of the model graph
    g = model.graph
    for s in part.segments:
        assert nx.is_weakly_connected(g.subgraph(s.nodes))
    # the segment graph is acyclic and the list order is a valid execution order
    sg = segment_graph(part)
    assert nx.is_directed_acyclic_graph(sg)
    assert all(u < v for u, v in sg.edges)
    available = {t.name for t in model.inputs}
    for s in part.segments:
        assert set(s.inputs) <= available, f"{s.name} reads {set(s.inputs) - available} too early"
        available |= set(s.outputs)
    # regions are maximal: two same-backend segments joined by an edge have another path too
    cg = nx.DiGraph()
    for u, v in g.edges:
        a, b = part.assignment[u], part.assignment[v]
        if a != b:
            cg.add_edge(a, b)
    for a, b in list(cg.edges):
        if part.segments[a].backend == part.segments[b].backend:
            cg.remove_edge(a, b)
            assert nx.has_path(cg, a, b), f"segments {a} and {b} could merge"
            cg.add_edge(a, b)
    # stitched outputs equal the original
    rng = np.random.default_rng(0)
    feeds = {f"x{i}": rng.standard_normal((2, 4)).astype(np.float32) for i in range(2)}
    ref = run_onnx(model, feeds)
    got = run_segments(part, feeds)
    assert list(got) == list(ref)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(random_graphs())
def test_json_round_trip_and_recorded_decisions(case):
    proto, supported, knobs = case
    model = trtlab.load(proto)
    part = partition(model, support=supported, **knobs)
    back = type(part).from_json(part.to_json(), model)
    assert back.segments == part.segments
    assert back.decisions.equals(part.decisions)
    d = part.decisions
    assert sorted(d.subject[d.kind == "rejected"]) == sorted(n for n, ok in supported.items() if not ok)
    pruned = set(d.subject[d.kind.isin(["pruned_small", "pruned_no_mac"])])
    for n, ok in supported.items():
        on_backend = part.segments[part.assignment[n]].backend == "tensorrt"
        assert on_backend == (ok and n not in pruned), n
