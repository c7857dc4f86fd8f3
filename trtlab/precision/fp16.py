"""FP16 conversion expressed in the ONNX graph.

:func:`to_fp16` turns float32 weights and compute into float16 and puts ``Cast`` nodes where
float16 and float32 regions meet. TensorRT builds the result as a strongly typed network; ONNX
Runtime runs it on CPU, and where its float16 CPU kernels are missing :func:`emulate_fp16`
gives a float32 model with the same float16 rounding after every converted op.

Examples
--------
>>> half = to_fp16(model)                                         # doctest: +SKIP
>>> runnable, executor = ort_variant(half)                        # doctest: +SKIP
"""

from __future__ import annotations

import logging
from types import MappingProxyType
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from trtlab.errors import PrecisionError
from trtlab.precision._common import as_model, finish, tensor_types, unique_name as _unique

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_KEEP_FP32_OPS", "FP16_OPS", "to_fp16", "emulate_fp16", "ort_variant",
           "EXECUTOR_NATIVE", "EXECUTOR_EMULATED"]

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
FP16_MAX = float(np.finfo(np.float16).max)

EXECUTOR_NATIVE = "onnxruntime"
EXECUTOR_EMULATED = "onnxruntime (fp16 emulated)"

_REDUCE = ("accumulates many terms: a float16 sum overflows past 65504 and drops addends "
           "smaller than 1/2048 of the running total")

#: Ops held in float32 by default, with the reason. Pass ``keep_fp32_ops=()`` to convert them too.
DEFAULT_KEEP_FP32_OPS: Mapping[str, str] = MappingProxyType({
    "ReduceSum": _REDUCE,
    "ReduceMean": _REDUCE,
    "ReduceSumSquare": _REDUCE + "; squares overflow first",
    "ReduceL1": _REDUCE,
    "ReduceL2": _REDUCE + "; squares overflow first",
    "ReduceProd": "products overflow or underflow float16's 5-bit exponent",
    "ReduceLogSum": _REDUCE,
    "ReduceLogSumExp": "exp overflows float16 for inputs above 11.1",
    "CumSum": "running sums accumulate rounding error and overflow",
    "Softmax": "exp of logits overflows float16 above 11.1 and the normalising sum loses mass",
    "LogSoftmax": "exp overflows and log of a rounded sum is coarse near zero",
    "Exp": "overflows float16 for inputs above 11.1",
    "Log": "inputs near zero underflow and the logarithm amplifies their rounding error",
    "Pow": "powers overflow float16 (x**2 past 256) and small results flush to zero",
    "LayerNormalization": "mean and variance over a row are reductions; variance loses precision",
    "InstanceNormalization": "per-channel mean and variance are reductions over the whole image",
    "GroupNormalization": "per-group mean and variance are reductions",
    "LpNormalization": "sum of squares overflows float16",
    "LRN": "sum of squares over neighbouring channels overflows float16",
    "Range": "start + i * delta is not exact in float16 past 2048, so indices and lengths drift",
    "TopK": "near-tie scores reorder in float16, changing which indices are selected",
    "RoiAlign": "box coordinates in pixels lose sub-pixel precision past 2048",
    "NonMaxSuppression": "boxes and scores are float32 in ONNX; IoU thresholds flip under rounding",
})

#: Ops whose float inputs and outputs may become float16 (all other ops stay float32).
FP16_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast
Ceil Celu Clip Concat Conv ConvTranspose Cos Cosh DepthToSpace Div Dropout Einsum Elu Equal Erf
Exp Expand Flatten Floor Gather GatherElements GatherND Gemm GlobalAveragePool GlobalMaxPool
Greater GreaterOrEqual GroupNormalization HardSigmoid HardSwish Identity InstanceNormalization
LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax LpNormalization LRN MatMul Max
MaxPool Mean Min Mish Mul Neg Not Or PRelu Pad Pow Range Reciprocal ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize RoiAlign Round ScatterElements ScatterND Selu Shape Shrink
Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub
Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Where Xor CumSum
""".split())

#: Float inputs that must stay float32 even when the op runs in float16 (ONNX types them float).
_FP32_ONLY_INPUTS: Mapping[str, Tuple[int, ...]] = {"Resize": (1, 2)}
#: Ops that read any input type, so their input is never cast.
_ANY_INPUT = frozenset({"Cast", "Shape", "Size"})
#: Ops whose float16 output is already exactly representable when their inputs are.
_EXACT = frozenset("""
Identity Reshape Flatten Squeeze Unsqueeze Transpose Concat Split Slice Gather GatherElements
GatherND Expand Tile Pad DepthToSpace SpaceToDepth MaxPool GlobalMaxPool ReduceMax ReduceMin Max
Min Relu Abs Neg Where Dropout Ceil Floor Round Sign ScatterElements ScatterND Trilu
""".split())


def _subgraph_names(graph: onnx.GraphProto) -> Set[str]:
    names: Set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subs:
                for inner in sub.node:
                    names.update(x for x in inner.input if x)
                names |= _subgraph_names(sub)
    return names


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _to_half(arr: np.ndarray, what: str) -> np.ndarray:
    big = np.abs(arr) > FP16_MAX
    if np.any(big):
        log.warning("%s: %d value(s) beyond the float16 range clipped to +-%g", what,
                    int(big.sum()), FP16_MAX)
    return np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16)


def to_fp16(model: Any, *, keep_io_types: bool = True,
            keep_fp32_ops: Iterable[str] = DEFAULT_KEEP_FP32_OPS,
            keep_fp32_nodes: Iterable[str] = ()) -> Any:
    """Convert a model's float32 weights and compute to float16.

    Parameters
    ----------
    model
        A :class:`trtlab.model.Model`, ``onnx.ModelProto``, path or bytes.
    keep_io_types
        Keep float32 graph inputs and outputs (``Cast`` nodes at the borders). With ``False`` the
        float32 inputs and outputs become float16.
    keep_fp32_ops
        Op types held in float32 (default: :data:`DEFAULT_KEEP_FP32_OPS`, see its reasons).
    keep_fp32_nodes
        Node names held in float32, e.g. from :func:`trtlab.study.localize.suggest_fp32_nodes`.

    Returns
    -------
    trtlab.model.Model
        Checker-valid model whose ``Cast`` nodes mark every float16/float32 border. Ops outside
        :data:`FP16_OPS`, custom-domain ops and nodes with subgraphs stay float32.

    Raises
    ------
    PrecisionError
        Unknown node names in ``keep_fp32_nodes``, or a result that fails the ONNX checker.
    """
    src = as_model(model)
    proto = onnx.ModelProto()
    proto.CopyFrom(src.proto)
    graph = proto.graph
    keep_ops = set(keep_fp32_ops)
    keep_nodes = set(keep_fp32_nodes)
    unknown = sorted(keep_nodes - {n.name for n in graph.node})
    if unknown:
        raise PrecisionError(
            f"keep_fp32_nodes names {unknown[:5]} not in model {src.name!r}; node names are in "
            "Model.node_names."
        )
    types = tensor_types(proto)
    inits = {t.name: t for t in graph.initializer}
    outer = _subgraph_names(graph)

    def floats(names: Iterable[str]) -> List[str]:
        return [x for x in names if x and types.get(x) == FLOAT]

    graph_inputs = {i.name for i in graph.input}
    graph_outputs = [o.name for o in graph.output]
    producer = {o: n for n in graph.node for o in n.output if o}

    def stays_fp32(x: str) -> bool:
        if x in graph_inputs:
            return keep_io_types
        return x in producer and producer[x].name not in converted

    converted: Set[str] = set()
    for node in graph.node:
        if not (node.domain in ("", "ai.onnx") and node.op_type in FP16_OPS
                and node.op_type not in keep_ops and node.name not in keep_nodes
                and not _has_subgraph(node)
                and all(x in types for x in list(node.input) + list(node.output) if x)
                and not any(o in outer for o in node.output)):
            continue
        data = floats(node.input)
        # data-movement ops follow their input's precision instead of adding Cast pairs
        if node.op_type in _EXACT and data and all(stays_fp32(x) for x in data):
            continue
        converted.add(node.name)

    def wanted(node: onnx.NodeProto, index: int) -> int:
        if node.name not in converted or index in _FP32_ONLY_INPUTS.get(node.op_type, ()):
            return FLOAT
        return HALF

    # where a float32 tensor lives after conversion
    home: Dict[str, int] = {}
    for x in types:
        if types[x] != FLOAT:
            continue
        if x in graph_inputs:
            home[x] = FLOAT if keep_io_types else HALF
        elif x in producer:
            home[x] = HALF if producer[x].name in converted else FLOAT
    const_half: Set[str] = set()
    needs: Dict[str, Set[int]] = {}
    for node in graph.node:
        for i, x in enumerate(node.input):
            if x and types.get(x) == FLOAT and node.op_type not in _ANY_INPUT:
                needs.setdefault(x, set()).add(wanted(node, i))
    for node in graph.node:
        if node.op_type == "Constant" and node.output and types.get(node.output[0]) == FLOAT \
                and HALF in needs.get(node.output[0], ()) and node.name not in keep_nodes:
            const_half.add(node.name)
            home[node.output[0]] = HALF
    for x in inits:
        if types.get(x) == FLOAT and x not in graph_outputs:
            home[x] = HALF if HALF in needs.get(x, ()) else FLOAT

    taken = {n.name for n in graph.node} | set(types) | {t for n in graph.node for t in n.output}
    # initializers needed in both types get a float16 twin
    half_twin: Dict[str, str] = {}
    new_inits: List[onnx.TensorProto] = []
    for init in graph.initializer:
        x = init.name
        if home.get(x) != HALF:
            new_inits.append(init)
            continue
        half = numpy_helper.from_array(_to_half(numpy_helper.to_array(init), x), x)
        if FLOAT in needs.get(x, ()):
            half.name = _unique(f"{x}_fp16", taken)
            half_twin[x] = half.name
            new_inits.append(init)
        new_inits.append(half)
    del graph.initializer[:]
    graph.initializer.extend(new_inits)

    # graph outputs computed in float16 are renamed inside and cast back at the end
    renamed: Dict[str, str] = {}
    for y in graph_outputs:
        if home.get(y) == HALF and keep_io_types and y in producer:
            renamed[y] = _unique(f"{y}_fp16", taken)
            home[renamed[y]] = HALF

    casts: Dict[Tuple[str, int], str] = {}
    nodes: List[onnx.NodeProto] = []

    def source(x: str, dtype: int) -> str:
        if x in half_twin:
            return half_twin[x] if dtype == HALF else x
        inner = renamed.get(x, x)
        if home.get(x, FLOAT) == dtype:
            return inner
        key = (x, dtype)
        if key not in casts:
            suffix = "fp16" if dtype == HALF else "fp32"
            out = _unique(f"{x}_to_{suffix}", taken)
            nodes.append(helper.make_node("Cast", [inner], [out], to=dtype,
                                          name=_unique(f"Cast_{x}_to_{suffix}", taken)))
            casts[key] = out
        return casts[key]

    for node in graph.node:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        for i, x in enumerate(node.input):
            if not x or types.get(x) != FLOAT:
                continue
            if node.op_type in _ANY_INPUT:
                new.input[i] = renamed.get(x, x)
            else:
                new.input[i] = source(x, wanted(node, i))
        for i, y in enumerate(node.output):
            if y in renamed:
                new.output[i] = renamed[y]
        if node.name in converted and node.op_type == "Cast":
            for attr in new.attribute:
                if attr.name == "to" and attr.i == FLOAT:
                    attr.i = HALF
                    home[node.output[0]] = HALF
        if node.name in const_half:
            for attr in new.attribute:
                if attr.name == "value":
                    arr = _to_half(numpy_helper.to_array(attr.t), node.name)
                    attr.t.CopyFrom(numpy_helper.from_array(arr, attr.t.name))
        nodes.append(new)
    for y in graph_outputs:
        if y in renamed:
            nodes.append(helper.make_node("Cast", [renamed[y]], [y], to=FLOAT,
                                          name=_unique(f"Cast_{y}_to_fp32", taken)))
    del graph.node[:]
    graph.node.extend(nodes)

    if not keep_io_types:
        for vi in list(graph.input) + list(graph.output):
            if vi.type.tensor_type.elem_type == FLOAT and home.get(vi.name) == HALF:
                vi.type.tensor_type.elem_type = HALF
    del graph.value_info[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = "trtlab.precision", "fp16"
    n_cast = sum(1 for n in nodes if n.op_type == "Cast") - sum(
        1 for n in src.proto.graph.node if n.op_type == "Cast")
    log.info("to_fp16(%s): %d of %d nodes in float16, %d Cast nodes added", src.name,
             len(converted) + len(const_half), len(src.proto.graph.node), n_cast)
    return finish(proto, f"{src.name}_fp16")


def emulate_fp16(model: Any) -> Any:
    """A float32 model that reproduces a float16 model's rounding.

    Every float16 tensor of ``model`` (the output of :func:`to_fp16`) becomes float32, float16
    weights are widened (their values stay float16-rounded), and each op that produced float16
    is followed by ``Cast`` to float16 and back, so every intermediate value is rounded exactly
    where the float16 model rounds it. Graph inputs and outputs keep their types. Use it where
    ONNX Runtime has no float16 CPU kernel for an op.
    """
    src = as_model(model)
    proto = onnx.ModelProto()
    proto.CopyFrom(src.proto)
    graph = proto.graph
    types = tensor_types(proto)
    taken = set(types) | {n.name for n in graph.node} | {o for n in graph.node for o in n.output}
    nodes: List[onnx.NodeProto] = []
    rename: Dict[str, str] = {}

    def round_trip(raw: str, out: str, name: str) -> None:
        mid = _unique(f"{out}_fp16", taken)
        nodes.append(helper.make_node("Cast", [raw], [mid], to=HALF, name=_unique(f"{name}_round", taken)))
        nodes.append(helper.make_node("Cast", [mid], [out], to=FLOAT, name=_unique(f"{name}_widen", taken)))

    for vi in graph.input:
        if vi.type.tensor_type.elem_type == HALF:
            wide = _unique(f"{vi.name}_fp32", taken)
            nodes.append(helper.make_node("Cast", [vi.name], [wide], to=FLOAT,
                                          name=_unique(f"Cast_{vi.name}_to_fp32", taken)))
            rename[vi.name] = wide
    half_outputs = {o.name for o in graph.output if o.type.tensor_type.elem_type == HALF}
    for y in half_outputs:
        rename[y] = _unique(f"{y}_fp32", taken)

    for init in graph.initializer:
        if init.data_type == HALF:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    for node in graph.node:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        for i, x in enumerate(node.input):
            if x in rename:
                new.input[i] = rename[x]
        for i, y in enumerate(node.output):
            if y in rename:
                new.output[i] = rename[y]
        if node.op_type in ("Constant", "ConstantOfShape"):
            for attr in new.attribute:
                if attr.name == "value" and attr.t.data_type == HALF:
                    arr = numpy_helper.to_array(attr.t).astype(np.float32)
                    attr.t.CopyFrom(numpy_helper.from_array(arr, attr.t.name))
            nodes.append(new)
            continue
        if node.op_type == "Cast":
            to = next(a for a in new.attribute if a.name == "to")
            if to.i == HALF:
                to.i = FLOAT
                raw = _unique(f"{new.output[0]}_raw", taken)
                out = new.output[0]
                new.output[0] = raw
                nodes.append(new)
                round_trip(raw, out, new.name)
                continue
            nodes.append(new)
            continue
        rounded = [(i, y) for i, y in enumerate(new.output) if y and types.get(node.output[i]) == HALF]
        if node.op_type in _EXACT or not rounded:
            nodes.append(new)
            continue
        finals = []
        for i, y in rounded:
            raw = _unique(f"{y}_raw", taken)
            new.output[i] = raw
            finals.append((raw, y))
        nodes.append(new)
        for raw, y in finals:
            round_trip(raw, y, new.name)
    for y in half_outputs:
        nodes.append(helper.make_node("Cast", [rename[y]], [y], to=HALF, name=_unique(f"Cast_{y}_to_fp16", taken)))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return finish(proto, f"{src.name}_emulated")


def ort_variant(model: Any, providers: Optional[List[str]] = None) -> Tuple[Any, str]:
    """The version of a float16 model that ONNX Runtime on this machine runs, and its label.

    Returns ``(model, "onnxruntime")`` when ONNX Runtime accepts the float16 graph as is, else
    ``(emulate_fp16(model), "onnxruntime (fp16 emulated)")``.
    """
    from trtlab.backends.onnxruntime.session import session

    src = as_model(model)
    try:
        session(src, providers=providers)
    except Exception as exc:  # ORT raises its own exception types for missing kernels
        log.info("ONNX Runtime cannot run %s as float16 (%s); emulating float16 rounding",
                 src.name, str(exc).splitlines()[0][:200])
        return emulate_fp16(src), EXECUTOR_EMULATED
    return src, EXECUTOR_NATIVE
