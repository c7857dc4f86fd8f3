"""Graph plumbing shared by the precision passes: nested bodies, types, constants, opsets.

Every pass works on the main graph and on the bodies of ``If``, ``Loop`` and ``Scan`` nodes; the
helpers here walk those bodies, collect tensor types everywhere, expose body tensors as model
outputs (for calibration), turn ``Constant`` nodes into initializers, and raise a model's opset
with a numerical check.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
import onnx
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)

GRAPH_ATTRS = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


def bodies(node: onnx.NodeProto) -> List[Tuple[str, onnx.GraphProto]]:
    """``(attribute name, body)`` for each subgraph of ``node``."""
    out = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append((a.name, a.g))
        elif a.type == onnx.AttributeProto.GRAPHS:
            out.extend((a.name, g) for g in a.graphs)
    return out


def walk(graph: onnx.GraphProto, path: str = "") -> Iterator[Tuple[str, onnx.GraphProto]]:
    """``(path, graph)`` for ``graph`` and every nested body; the main graph's path is ``""``."""
    yield path, graph
    for node in graph.node:
        for attr, body in bodies(node):
            yield from walk(body, f"{path}{node.name}/{attr}/")


def body_reads(graph: onnx.GraphProto) -> Set[str]:
    """Every name read inside the nested bodies of ``graph``'s nodes (at any depth)."""
    names: Set[str] = set()
    for node in graph.node:
        for _, body in bodies(node):
            for inner in body.node:
                names.update(x for x in inner.input if x)
            names.update(o.name for o in body.output)
            names |= body_reads(body)
    return names


def body_reads_nodes(nodes: Sequence[onnx.NodeProto]) -> Set[str]:
    """Every name read inside the bodies of ``nodes`` (at any depth)."""
    names: Set[str] = set()
    for node in nodes:
        for _, body in bodies(node):
            names.update(x for inner in body.node for x in inner.input if x)
            names.update(o.name for o in body.output)
            names |= body_reads(body)
    return names


def constant_array(node: onnx.NodeProto) -> Optional[np.ndarray]:
    """The value of a ``Constant`` node given as a tensor (``None`` for other forms)."""
    for a in node.attribute:
        if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
            return numpy_helper.to_array(a.t)
    return None


def deep_types(proto: onnx.ModelProto) -> Dict[str, int]:
    """Element type of every tensor in the model, nested bodies included."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception as exc:  # shape inference raises several onnx-internal types
        log.debug("shape inference failed (%s); using declared types only", exc)
        inferred = proto
    types: Dict[str, int] = {}
    for _, g in walk(inferred.graph):
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                types[vi.name] = vi.type.tensor_type.elem_type
        for init in g.initializer:
            types[init.name] = init.data_type
        for node in g.node:
            if node.op_type == "Constant" and node.output:
                for a in node.attribute:
                    if a.name == "value":
                        types[node.output[0]] = a.t.data_type
                    elif a.name in ("value_float", "value_floats"):
                        types[node.output[0]] = onnx.TensorProto.FLOAT
    return types


def all_names(proto: onnx.ModelProto) -> Set[str]:
    """Every node and tensor name in the model (for choosing fresh names)."""
    taken: Set[str] = set()
    for _, g in walk(proto.graph):
        taken.update(n.name for n in g.node)
        taken.update(o for n in g.node for o in n.output)
        taken.update(x for n in g.node for x in n.input)
        taken.update(i.name for i in g.input)
        taken.update(t.name for t in g.initializer)
    return taken


def lift_constants(graph: onnx.GraphProto, wanted: Set[str]) -> List[str]:
    """Turn the ``Constant`` nodes producing ``wanted`` tensors into initializers of ``graph``.

    The value is unchanged (an exact transform). Returns the names of the removed nodes.
    """
    keep, lifted = [], []
    for node in graph.node:
        if node.op_type == "Constant" and node.output and node.output[0] in wanted:
            arr = constant_array(node)
            if arr is not None:
                graph.initializer.append(numpy_helper.from_array(arr, node.output[0]))
                lifted.append(node.name)
                continue
        keep.append(node)
    if lifted:
        del graph.node[:]
        graph.node.extend(keep)
    return lifted


def opset(proto: onnx.ModelProto) -> int:
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def raise_opset(proto: onnx.ModelProto, target: int, feeds: Sequence[Mapping[str, np.ndarray]] = ()
                ) -> Tuple[Optional[onnx.ModelProto], str]:
    """``proto`` converted to opset ``target`` by ONNX's version converter, checked numerically.

    Returns ``(model, "")`` or ``(None, why)`` when the converter fails or the converted model
    computes something else on ``feeds`` (first feed, relative 1e-5).
    """
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(proto, target)
        onnx.checker.check_model(converted)
    except Exception as exc:  # the converter raises plain RuntimeError/ValidationError
        return None, f"ONNX's version converter cannot take opset {opset(proto)} to {target}: {exc}"
    if feeds:
        from trtlab.backends.onnxruntime.session import run_onnx

        try:
            want = run_onnx(proto, dict(feeds[0]))
            got = run_onnx(converted, dict(feeds[0]))
        except Exception as exc:  # ONNX Runtime errors are its own types
            return None, f"the opset-{target} model does not run in ONNX Runtime: {exc}"
        for name, ref in want.items():
            out = got.get(name)
            if out is None or out.shape != ref.shape:
                return None, f"the opset-{target} model changes output {name!r}"
            if np.issubdtype(ref.dtype, np.floating):
                scale = float(np.max(np.abs(ref))) if ref.size else 0.0
                if not np.allclose(out, ref, rtol=1e-5, atol=1e-5 * scale + 1e-30):
                    return None, f"the opset-{target} model changes output {name!r} numerically"
            elif not np.array_equal(out, ref):
                return None, f"the opset-{target} model changes output {name!r}"
    return converted, ""


def expose(proto: onnx.ModelProto, tensors: Sequence[str], types: Mapping[str, int]
           ) -> Tuple[onnx.ModelProto, Dict[str, str]]:
    """A copy of ``proto`` with ``tensors`` (main graph or ``If``/``Loop`` bodies) as outputs.

    A body tensor leaves its ``If`` as an extra output of both branches (the other branch
    yields an empty tensor) and its ``Loop`` as an extra scan output (one slice per iteration).
    Returns the model and ``{tensor: output name}``; tensors inside ``Scan`` bodies are left out.
    """
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    taken = all_names(out)
    found = _expose_in(out.graph, set(tensors), types, taken)
    present = {o.name for o in out.graph.output}
    for t, name in found.items():
        if name not in present:
            out.graph.output.append(helper.make_tensor_value_info(name, types.get(t, 1), None))
            present.add(name)
    return out, found


def unique_name(base: str, taken: Set[str]) -> str:
    """``base``, or ``base_1``, ``base_2`` ... whichever is not in ``taken``; records it there."""
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def _expose_in(graph: onnx.GraphProto, wanted: Set[str], types: Mapping[str, int],
               taken: Set[str]) -> Dict[str, str]:
    local = {i.name for i in graph.input} | {o for n in graph.node for o in n.output} | \
        {t.name for t in graph.initializer}
    found = {t: t for t in wanted if t in local}
    rest = wanted - set(found)
    if not rest:
        return found
    for node in graph.node:
        subs = bodies(node)
        if not subs or node.op_type not in ("If", "Loop"):
            continue
        inner = {attr: _expose_in(body, rest, types, taken) for attr, body in subs}
        keys = sorted(set().union(*[set(v) for v in inner.values()]) - set(found))
        for t in keys:
            elem = types.get(t, onnx.TensorProto.FLOAT)
            for attr, body in subs:
                name = inner[attr].get(t)
                if name is not None and name in {o.name for o in body.output}:
                    # already a body output: a copy, so no output name repeats
                    copy = unique_name(f"{name}_copy", taken)
                    body.node.append(helper.make_node("Identity", [name], [copy],
                                                      name=unique_name(f"{name}_copy_node", taken)))
                    name = copy
                if name is None:  # the other If branch yields an empty tensor of the same type
                    name = unique_name(f"{t}_empty", taken)
                    body.node.append(helper.make_node(
                        "Constant", [], [name], name=unique_name(f"{t}_empty_const", taken),
                        value=numpy_helper.from_array(
                            np.zeros(0, dtype=helper.tensor_dtype_to_np_dtype(elem)), name)))
                body.output.append(helper.make_tensor_value_info(name, elem, None))
            exposed = unique_name(f"{t}_exposed", taken)
            node.output.append(exposed)
            found[t] = exposed
    return found


def measuring_session(proto: onnx.ModelProto, names: Mapping[str, str]) -> Any:
    """A CPU ONNX Runtime session for a model from :func:`expose`.

    When body tensors were exposed, graph optimizations are off: ONNX Runtime's inlining of an
    ``If`` with a constant condition drops the extra branch outputs.
    """
    import onnxruntime as ort

    from trtlab.backends.onnxruntime.session import session

    opts = ort.SessionOptions()
    if any(t != name for t, name in names.items()):
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return session(proto, providers=["CPUExecutionProvider"], sess_options=opts)
