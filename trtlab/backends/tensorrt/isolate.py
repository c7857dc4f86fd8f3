"""Build-failure isolation: bisect a segment to the node TensorRT cannot build."""

from __future__ import annotations

import logging
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import onnx

from trtlab._progress import progress as progress_bar
from trtlab.backends.base import Profile
from trtlab.backends.tensorrt.profiles import _value_infos, segment_profile, shape_table
from trtlab.errors import BuildError
from trtlab.model import node_reads

log = logging.getLogger(__name__)


def _node_reads(node: onnx.NodeProto) -> List[str]:
    return node_reads(node)


def submodel(proto: onnx.ModelProto, nodes: Iterable[str],
             infos: Optional[Mapping[str, onnx.ValueInfoProto]] = None) -> onnx.ModelProto:
    """A standalone model of the named nodes of ``proto``.

    Its inputs are the tensors the nodes read but do not produce; its outputs are the tensors
    they produce that other nodes or the graph outputs read (or nothing reads).
    """
    infos = infos if infos is not None else _value_infos(proto)
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


def isolate_build_failure(proto: onnx.ModelProto, profile: Optional[Profile],
                          try_build: Callable[[bytes, Optional[Profile]], None],
                          *, progress: bool = False) -> Tuple[str, str]:
    """The node whose addition makes a segment fail to build, and the builder's error.

    Bisects over prefixes of the segment's nodes (in topological order; a prefix is always a
    valid sub-network): the shortest prefix that fails to build ends with the culprit.

    Parameters
    ----------
    try_build
        ``(onnx_bytes, profile) -> None``; raises :class:`BuildError` when the build fails.
    """
    names = [n.name for n in proto.graph.node]
    infos = _value_infos(proto)
    ranges = dict(profile or ())
    table = shape_table(proto, ranges) if ranges else {}
    errors: Dict[int, str] = {}

    def fails(k: int) -> bool:
        sub = submodel(proto, names[:k], infos)
        if not sub.graph.input:
            return False
        prof = segment_profile(sub, table, ranges)
        try:
            try_build(sub.SerializeToString(), prof)
        except BuildError as exc:
            errors[k] = "; ".join(getattr(exc, "errors", None) or [str(exc)])
            return True
        return False

    lo, hi = 0, len(names)
    if not fails(hi):
        raise BuildError(f"The segment builds when tried again ({len(names)} nodes); nothing to isolate.")
    steps = progress_bar(total=max(1, int(np.ceil(np.log2(max(hi, 2))))), desc="bisect build failure",
                         enabled=progress)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fails(mid):
            hi = mid
        else:
            lo = mid
        steps.update(1)
    steps.close()
    return names[hi - 1], errors[hi]


def _nearest_original(proto: onnx.ModelProto, culprit: str, originals: Sequence[str]) -> str:
    """Map a node a precision pass inserted (Cast, Q/DQ) to the original node it serves."""
    order = [n.name for n in proto.graph.node]
    known = set(originals)
    at = order.index(culprit)
    after = [n for n in order[at:] if n in known]
    before = [n for n in order[:at] if n in known]
    if after:
        return after[0]
    if before:
        return before[-1]
    raise BuildError(f"Node {culprit!r} fails to build and no original node of the segment is near it.")
