"""Build-failure isolation for any backend: bisect a segment to the nodes that fail to compile.

A segment the backend cannot compile is cut into prefixes (its nodes in topological order; a
prefix is always a valid sub-network). The shortest failing prefix ends with a culprit; the
search tries several split points per round, compiled together (``try_many``: TensorRT compiles
them in parallel in its worker pool), so a round costs one build time. After a culprit, the nodes
after it are tried as one group: if they compile, the search is over; if not, the search goes on
inside them. All culprits of a segment move to fallback at once.

Examples
--------
>>> culprits = isolate(proto, try_many, width=2)          # doctest: +SKIP
>>> culprits                                               # doctest: +SKIP
[('topk', 'K exceeds the maximum value')]
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import onnx

from trtlab._progress import progress as progress_bar
from trtlab.errors import BuildError

log = logging.getLogger(__name__)

__all__ = ["isolate", "submodel", "nearest_original", "value_infos"]

#: ``[sub-models] -> [None when it compiles, else the error text]``.
TryMany = Callable[[List[onnx.ModelProto]], List[Optional[str]]]


def value_infos(proto: onnx.ModelProto) -> Dict[str, onnx.ValueInfoProto]:
    """Every typed tensor of ``proto`` (after shape inference) by name."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except onnx.shape_inference.InferenceError:
        inferred = proto
    g = inferred.graph
    return {vi.name: vi for vi in list(g.value_info) + list(g.input) + list(g.output)}


def _node_reads(node: onnx.NodeProto) -> List[str]:
    from trtlab.model import _subgraph_outer_refs

    return [x for x in dict.fromkeys(list(node.input) + sorted(_subgraph_outer_refs(node))) if x]


def submodel(proto: onnx.ModelProto, nodes: Iterable[str],
             infos: Optional[Mapping[str, onnx.ValueInfoProto]] = None) -> onnx.ModelProto:
    """A standalone model of the named nodes of ``proto``.

    Its inputs are the tensors the nodes read but do not produce; its outputs are the tensors
    they produce that other nodes or the graph outputs read (or nothing reads).
    """
    infos = infos if infos is not None else value_infos(proto)
    g = proto.graph
    chosen = set(nodes)
    picked = [n for n in g.node if n.name in chosen]
    produced = {o for n in picked for o in n.output if o}
    inits = {t.name: t for t in g.initializer}
    reads = [x for n in picked for x in _node_reads(n)]
    needed = [x for x in dict.fromkeys(reads) if x not in produced]
    read_inside = set(reads)
    read_outside = {x for n in g.node if n.name not in chosen for x in _node_reads(n)}
    graph_outputs = {o.name for o in g.output}
    outs = [o for n in picked for o in n.output
            if o and (o in read_outside or o in graph_outputs or o not in read_inside)]

    def vi(name: str) -> onnx.ValueInfoProto:
        if name in infos and infos[name].type.tensor_type.elem_type:
            return infos[name]
        return onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None)

    graph = onnx.helper.make_graph(
        picked, f"{g.name}_sub", [vi(x) for x in needed if x not in inits], [vi(x) for x in outs],
        [inits[x] for x in needed if x in inits],
        value_info=[infos[x] for x in produced if x in infos and x not in outs])
    model = onnx.helper.make_model(graph, opset_imports=list(proto.opset_import))
    model.ir_version = proto.ir_version
    return model


def _split_points(lo: int, hi: int, width: int) -> List[int]:
    """Up to ``width`` prefix lengths strictly between ``lo`` and ``hi``, evenly spread."""
    span = hi - lo
    count = min(width, span - 1)
    return sorted({lo + max(1, (span * (i + 1)) // (count + 1)) for i in range(count)} - {lo, hi})


def isolate(proto: onnx.ModelProto, try_many: TryMany, *, width: int = 1, first_error: Optional[str] = None,
            progress: bool = False, max_culprits: Optional[int] = None) -> Tuple[List[Tuple[str, str]], int]:
    """The nodes of ``proto`` that fail to compile, each with its error, and the builds tried.

    Parameters
    ----------
    try_many
        Compiles a list of sub-models; returns ``None`` for each one that compiles, else its error.
    width
        Split points tried per round (the backend's parallelism).
    first_error
        The error of the whole segment, if already known (saves one build).

    Raises
    ------
    BuildError
        The whole segment compiles when tried again (nothing to isolate).
    """
    names = [n.name for n in proto.graph.node]
    infos = value_infos(proto)
    builds = 0
    culprits: List[Tuple[str, str]] = []
    bar = progress_bar(total=None, desc="isolate build failure", enabled=progress, unit="build")

    def run(groups: Sequence[Sequence[str]]) -> List[Optional[str]]:
        nonlocal builds
        subs, idx = [], []
        out: List[Optional[str]] = [None] * len(groups)
        for i, g in enumerate(groups):
            sub = submodel(proto, g, infos)
            if sub.graph.input:  # a group reading only constants folds away: it compiles
                subs.append(sub)
                idx.append(i)
        for i, err in zip(idx, try_many(subs) if subs else []):
            out[i] = err
        builds += len(subs)
        bar.update(len(subs))
        return out

    rest = names
    err_rest = first_error if first_error is not None else run([rest])[0]
    if err_rest is None:
        bar.close()
        raise BuildError(f"The segment compiles when tried again ({len(names)} nodes); nothing to isolate.")
    while rest and err_rest is not None:
        lo, hi, err_hi = 0, len(rest), err_rest
        while hi - lo > 1:
            points = _split_points(lo, hi, width)
            results = run([rest[:k] for k in points])
            failing = [(k, err) for k, err in zip(points, results) if err is not None]
            if failing:
                hi, err_hi = min(failing)
            passing = [k for k, err in zip(points, results) if err is None and k < hi]
            if passing:
                lo = max(passing)
        culprit = rest[hi - 1]
        culprits.append((culprit, err_hi))
        log.debug("build failure isolated to %s: %s", culprit, err_hi)
        rest = rest[hi:]
        if not rest or (max_culprits is not None and len(culprits) >= max_culprits):
            break
        err_rest = run([rest])[0]
    bar.close()
    return culprits, builds


def nearest_original(proto: onnx.ModelProto, culprit: str, originals: Sequence[str]) -> str:
    """Map a node a precision pass inserted (Cast, Q/DQ) to the original node it serves."""
    order = [n.name for n in proto.graph.node]
    known = set(originals)
    if culprit in known:
        return culprit
    at = order.index(culprit)
    after = [n for n in order[at:] if n in known]
    before = [n for n in order[:at] if n in known]
    if after:
        return after[0]
    if before:
        return before[-1]
    raise BuildError(f"Node {culprit!r} fails to build and no original node of the segment is near it.")
