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

import functools
import logging
from types import MappingProxyType
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from trtlab.errors import CalibrationError, PrecisionError
from trtlab.precision._common import as_model, finish, unique_name as _unique

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_KEEP_FP32_OPS", "FP16_OPS", "to_fp16", "fp16_keep_table", "emulate_fp16", "ort_variant",
           "EXECUTOR_NATIVE", "EXECUTOR_EMULATED"]

FLOAT, HALF, BF16 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16
LOW = (HALF, BF16)
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


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


KEEP_COLUMNS = ["node", "op_type", "graph", "rule", "value", "reason"]

#: Recurrent ops whose data input keeps its float32 producer (rule ``recurrent_input``).
RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})
#: Ops passed through when looking for that producer (they only move data).
_LAYOUT_OPS = frozenset({"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten"})


def _recurrent_inputs(graph: onnx.GraphProto) -> Dict[str, str]:
    """Node name -> recurrent node it feeds: for each LSTM/GRU/RNN of ``graph``, the nodes from
    its data input back through layout ops to the first computing node, that node included."""
    producer = {o: n for n in graph.node for o in n.output if o}
    found: Dict[str, str] = {}
    for node in graph.node:
        if node.op_type not in RECURRENT_OPS or not node.input:
            continue
        src = producer.get(node.input[0])
        while src is not None and src.name not in found:
            found[src.name] = node.name
            if src.op_type not in _LAYOUT_OPS or not src.input:
                break
            src = producer.get(src.input[0])
    return found
#: AutoCast's default bound on activations: nodes whose inputs or outputs exceed it on the
#: calibration data stay float32.
DEFAULT_DATA_MAX = 512.0


BF16_CONV_OPSET = 22


@functools.lru_cache(maxsize=None)
def _has_low_type(op: str, version: int, type_str: str) -> bool:
    """True when ``op``'s schema at opset ``version`` lets its float inputs be ``type_str``."""
    try:
        schema = onnx.defs.get_schema(op, version)
    except Exception:  # unknown op or version: onnx raises SchemaError
        return False
    inputs = {i.type_str for i in schema.inputs}
    for c in schema.type_constraints:
        if c.type_param_str in inputs and "tensor(float)" in c.allowed_type_strs:
            return type_str in c.allowed_type_strs
    return True


def _low_dtype(dtype: int) -> Any:
    if dtype == HALF:
        return np.float16
    import ml_dtypes

    return ml_dtypes.bfloat16


def _low_max(dtype: int) -> float:
    if dtype == HALF:
        return FP16_MAX
    import ml_dtypes

    return float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)


def _to_low(arr: np.ndarray, what: str, dtype: int = HALF) -> np.ndarray:
    top = _low_max(dtype)
    big = np.abs(arr) > top
    if np.any(big):
        log.warning("%s: %d value(s) beyond the %s range clipped to +-%g", what, int(big.sum()),
                    "float16" if dtype == HALF else "bfloat16", top)
    return np.clip(arr, -top, top).astype(_low_dtype(dtype))


def _tensor(arr: np.ndarray, name: str, dtype: int) -> onnx.TensorProto:
    if dtype == HALF:
        return numpy_helper.from_array(arr.astype(np.float16), name)
    return helper.make_tensor(name, dtype, arr.shape, arr.astype(np.float32).ravel().tolist())


def fp16_keep_table(model: Any, calibration_data: Any = None, *, init_max: float = FP16_MAX,
                    data_max: Optional[float] = DEFAULT_DATA_MAX,
                    keep_fp32_ops: Iterable[str] = DEFAULT_KEEP_FP32_OPS,
                    keep_fp32_nodes: Iterable[str] = (), batch_size: Optional[int] = None,
                    max_samples: Optional[int] = 64, keep_recurrent_inputs: bool = True) -> Any:
    """Which nodes :func:`to_fp16` keeps in float32, and why (AutoCast-style rules).

    Rules, in order: ``keep_fp32_nodes`` (the user's list), ``op`` (the op type is in
    ``keep_fp32_ops``, with that op's reason), ``init_max`` (a constant input holds a value
    beyond ``init_max``: float16 would clip it), ``data_max`` (an input or output exceeds
    ``data_max`` in magnitude on ``calibration_data``; only with data), ``recurrent_input``
    (the computing node feeding an LSTM/GRU/RNN's data input, and the layout ops between them:
    TensorRT-RTX 1.7 cannot build a float16 producer feeding a recurrent layer, its Myelin
    shape inference fails on the reshape it inserts; ``keep_recurrent_inputs=False`` drops it).

    Returns
    -------
    pandas.DataFrame
        One row per kept node: node, op_type, graph (``""`` or the body path), rule, value (the
        largest magnitude found, for the range rules), reason.
    """
    import pandas as pd

    from trtlab.precision import _graphs

    src = as_model(model)
    keep_ops = dict(keep_fp32_ops) if isinstance(keep_fp32_ops, Mapping) else \
        {op: DEFAULT_KEEP_FP32_OPS.get(op, "listed in keep_fp32_ops") for op in keep_fp32_ops}
    keep_nodes = set(keep_fp32_nodes)
    all_nodes = {n.name: (path, n) for path, g in _graphs.walk(src.proto.graph) for n in g.node}
    unknown = sorted(keep_nodes - set(all_nodes))
    if unknown:
        raise PrecisionError(
            f"keep_fp32_nodes names {unknown[:5]} not in model {src.name!r}; node names are in "
            "Model.node_names."
        )
    types = _graphs.deep_types(src.proto)
    consts: Dict[str, float] = {}
    for _, g in _graphs.walk(src.proto.graph):
        for t in g.initializer:
            if t.data_type == FLOAT:
                arr = numpy_helper.to_array(t)
                consts[t.name] = float(np.abs(arr).max()) if arr.size else 0.0
        for n in g.node:
            if n.op_type == "Constant":
                arr = _graphs.constant_array(n)
                if arr is not None and arr.dtype == np.float32:
                    consts[n.output[0]] = float(np.abs(arr).max()) if arr.size else 0.0
    ranges: Dict[str, float] = {}
    if calibration_data is not None and data_max is not None:
        ranges = _activation_ranges(src, calibration_data, types, batch_size, max_samples)
    recurrent: Dict[str, str] = {}
    if keep_recurrent_inputs:
        for _, g in _graphs.walk(src.proto.graph):
            recurrent.update(_recurrent_inputs(g))
    rows = []
    for name, (path, node) in all_nodes.items():
        if node.op_type == "Constant":
            continue
        row = dict(node=name, op_type=node.op_type, graph=path, value=float("nan"))
        if name in keep_nodes:
            rows.append(dict(row, rule="keep_fp32_nodes", reason="listed in keep_fp32_nodes"))
        elif node.op_type in keep_ops:
            rows.append(dict(row, rule="op", reason=keep_ops[node.op_type]))
        elif name in recurrent:
            rows.append(dict(row, rule="recurrent_input",
                             reason=f"feeds the data input of {recurrent[name]!r}: TensorRT-RTX 1.7 cannot "
                                    "build a float16 producer of a recurrent layer's input"))
        else:
            big = max((consts[x] for x in node.input if x in consts), default=0.0)
            if big > init_max:
                rows.append(dict(row, rule="init_max", value=big,
                                 reason=f"a constant input reaches {big:.4g}, beyond init_max={init_max:g} "
                                        "(float16 would clip it)"))
                continue
            seen = [ranges[x] for x in list(node.input) + list(node.output) if x in ranges]
            top = max(seen, default=0.0)
            if data_max is not None and top > data_max:
                rows.append(dict(row, rule="data_max", value=top,
                                 reason=f"an input or output reaches {top:.4g} on the calibration data, "
                                        f"beyond data_max={data_max:g}"))
    frame = pd.DataFrame(rows, columns=KEEP_COLUMNS)
    frame.attrs.update(model=src.name, init_max=init_max, data_max=data_max,
                       calibrated=bool(ranges))
    return frame


def _activation_ranges(src: Any, data: Any, types: Mapping[str, int], batch_size: Optional[int],
                       max_samples: Optional[int]) -> Dict[str, float]:
    """Largest magnitude of every float tensor on the data (main graph and bodies)."""
    from trtlab.precision import _graphs
    from trtlab.precision._common import feed_list

    feeds = feed_list(src, data, batch_size=batch_size, limit=max_samples)
    tensors = [t for t, e in types.items() if e == FLOAT and not src.is_constant(t)]
    produced = {o for _, g in _graphs.walk(src.proto.graph) for n in g.node for o in n.output}
    tensors = [t for t in tensors if t in produced or t in {i.name for i in src.inputs}]
    augmented, names = _graphs.expose(src.proto, tensors, types)
    tensors = [t for t in tensors if t in names]
    sess = _graphs.measuring_session(augmented, names)
    out = [names[t] for t in tensors]
    ranges = {t: 0.0 for t in tensors}
    for feed in feeds:
        try:
            values = sess.run(out, feed)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
            raise CalibrationError(
                f"ONNX Runtime could not run {src.name!r} with its intermediate tensors exposed to "
                f"measure activation ranges ({str(exc).strip().splitlines()[0][:300]}). Convert without "
                "calibration_data= (only the init_max rule applies), or name the nodes to keep with "
                "keep_fp32_nodes=."
            ) from exc
        for t, v in zip(tensors, values):
            v = np.asarray(v)
            if v.size and np.issubdtype(v.dtype, np.floating):
                finite = np.abs(v[np.isfinite(v)])
                top = float(finite.max()) if finite.size else float("inf")
                if not np.all(np.isfinite(v)):
                    top = float("inf")
                ranges[t] = max(ranges[t], top)
    return ranges


def to_fp16(model: Any, *, keep_io_types: bool = True,
            keep_fp32_ops: Iterable[str] = DEFAULT_KEEP_FP32_OPS,
            keep_fp32_nodes: Iterable[str] = (), calibration_data: Any = None,
            init_max: float = FP16_MAX, data_max: Optional[float] = DEFAULT_DATA_MAX,
            batch_size: Optional[int] = None, keep_recurrent_inputs: bool = True) -> Any:
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
    calibration_data
        Real inputs: nodes whose activations exceed ``data_max`` on them stay float32.
    init_max
        Nodes reading a constant beyond this magnitude stay float32 (float16 would clip it).
    data_max
        Activation bound used with ``calibration_data`` (AutoCast's default 512).
    batch_size
        Batch size for dynamic-batch models when measuring activations.
    keep_recurrent_inputs
        Keep in float32 the node feeding each LSTM/GRU/RNN data input (rule ``recurrent_input``
        of :func:`fp16_keep_table`), which TensorRT-RTX 1.7 cannot build in float16.

    Returns
    -------
    trtlab.model.Model
        Checker-valid model whose ``Cast`` nodes mark every float16/float32 border. Ops outside
        :data:`FP16_OPS`, custom-domain ops and nodes with subgraphs stay float32; nodes inside
        ``If`` bodies are converted like the main graph's; ``Loop``/``Scan`` bodies stay float32. ``.fp32_nodes`` is the
        :func:`fp16_keep_table` of the nodes kept in float32 by rule, with reasons. A model
        with nothing to convert is returned unchanged, labelled ``fp32``, with a warning.

    Raises
    ------
    PrecisionError
        Unknown node names in ``keep_fp32_nodes``, or a result that fails the ONNX checker.
    """
    return _to_low_precision(model, HALF, keep_io_types=keep_io_types, keep_fp32_ops=keep_fp32_ops,
                             keep_fp32_nodes=keep_fp32_nodes, calibration_data=calibration_data,
                             init_max=init_max, data_max=data_max, batch_size=batch_size,
                             keep_recurrent_inputs=keep_recurrent_inputs)


def _to_low_precision(model: Any, dtype: int, *, keep_io_types: bool, keep_fp32_ops: Iterable[str],
                      keep_fp32_nodes: Iterable[str], calibration_data: Any, init_max: float,
                      data_max: Optional[float], batch_size: Optional[int],
                      keep_recurrent_inputs: bool = True) -> Any:
    from trtlab.precision import _graphs

    label = "fp16" if dtype == HALF else "bf16"
    src = as_model(model)
    table = fp16_keep_table(src, calibration_data, init_max=init_max, data_max=data_max,
                            keep_fp32_ops=keep_fp32_ops, keep_fp32_nodes=keep_fp32_nodes,
                            batch_size=batch_size, keep_recurrent_inputs=keep_recurrent_inputs)
    proto = onnx.ModelProto()
    proto.CopyFrom(src.proto)
    notes: List[str] = []
    if dtype == BF16 and _graphs.opset(proto) < BF16_CONV_OPSET:
        # bfloat16 Cast and arithmetic appear in opset 13, bfloat16 Conv and pooling in opset 22
        from trtlab.precision._common import feed_list

        feeds = feed_list(src, calibration_data, batch_size=batch_size, limit=1) \
            if calibration_data is not None else []
        before = _graphs.opset(proto)
        for target in (BF16_CONV_OPSET, 13):
            if target <= before:
                break
            raised, why = _graphs.raise_opset(proto, target, feeds)
            if raised is not None:
                notes.append(f"opset raised from {before} to {target} for bfloat16 types")
                proto = raised
                break
            notes.append(f"opset {target} not reached ({why})")
        if _graphs.opset(proto) < 13:
            raise PrecisionError(f"to_bf16({src.name!r}) needs opset 13 (bfloat16 types) but the model "
                                 f"has opset {before} and {notes[-1]}; use to_fp16 instead.")
    types = _graphs.deep_types(proto)
    taken = _graphs.all_names(proto) | set(types)
    keep_nodes = set(table["node"]) | _loop_body_nodes(proto.graph)
    if dtype == BF16:
        # ops whose ONNX schema at this opset has no bfloat16 stay float32
        version = _graphs.opset(proto)
        for _, g in _graphs.walk(proto.graph):
            for n in g.node:
                if n.op_type in FP16_OPS and not _has_low_type(n.op_type, version, "tensor(bfloat16)"):
                    keep_nodes.add(n.name)
    total = 0
    # deepest bodies first: converting a graph copies its nodes, bodies included
    for path, g in reversed(list(_graphs.walk(proto.graph))):
        total += _convert_graph(g, types, keep_nodes, keep_io_types if path == "" else True, taken, dtype)
    if total == 0:
        log.warning("to_%s(%s): no node converted (nothing float in %s-capable ops outside the kept "
                    "ones); the model is returned unchanged, labelled fp32", label, src.name,
                    label)
        from trtlab.precision.int8 import _unchanged

        out = _unchanged(src, label, "no float node to convert")
        out.fp32_nodes = table
        return out
    entry = proto.metadata_props.add()
    entry.key, entry.value = "trtlab.precision", label
    for r in table.itertuples(index=False):
        log.debug("to_%s(%s): %s kept in float32 (%s): %s", label, src.name, r.node, r.rule, r.reason)
    ranged = table[table["rule"].isin(["init_max", "data_max"])]
    if len(ranged):
        log.info("to_%s(%s): %d node(s) kept in float32 for their value range: %s", label, src.name,
                 len(ranged), ", ".join(ranged["node"][:10]))
    log.info("to_%s(%s): %d node(s) in %s", label, src.name, total, label)
    out = finish(proto, f"{src.name}_{label}", advice="Keep the offending nodes in float32 "
                 f"(to_{label}(..., keep_fp32_nodes=[...]))")
    out.notes = list(src.notes) + notes
    out.fp32_nodes = table
    return out


#: Ops whose bodies run per iteration with loop-carried values: their bodies stay float32, since
#: a carried value's type must match on every iteration (``If`` branches are converted).
_LOOP_OPS = ("Loop", "Scan", "SequenceMap")


def _loop_body_nodes(graph: onnx.GraphProto, inside: bool = False) -> Set[str]:
    """Names of the nodes inside Loop/Scan/SequenceMap bodies (at any depth)."""
    names: Set[str] = set()
    for node in graph.node:
        if inside:
            names.add(node.name)
        from trtlab.precision import _graphs

        for _, body in _graphs.bodies(node):
            names |= _loop_body_nodes(body, inside or node.op_type in _LOOP_OPS)
    return names


def _convert_graph(graph: onnx.GraphProto, types: Dict[str, int], keep_nodes: Set[str],
                   keep_io_types: bool, taken: Set[str], low: int) -> int:
    """Convert one graph (main graph or body) in place; returns the number of converted nodes."""
    from trtlab.precision import _graphs

    inits = {t.name: t for t in graph.initializer}
    outer = _graphs.body_reads(graph)
    suffix_low = "fp16" if low == HALF else "bf16"

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
                and floats(list(node.input) + list(node.output))
                and node.name not in keep_nodes
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
        return low

    # where a float32 tensor lives after conversion
    home: Dict[str, int] = {}
    for x in set(types) | graph_inputs:
        if types.get(x) != FLOAT:
            continue
        if x in graph_inputs:
            home[x] = FLOAT if keep_io_types else low
        elif x in producer:
            home[x] = low if producer[x].name in converted else FLOAT
    const_half: Set[str] = set()
    needs: Dict[str, Set[int]] = {}
    for node in graph.node:
        for i, x in enumerate(node.input):
            if x and types.get(x) == FLOAT and node.op_type not in _ANY_INPUT:
                needs.setdefault(x, set()).add(wanted(node, i))
    for x in outer:  # bodies read these by name, as float32
        needs.setdefault(x, set()).add(FLOAT)
    for node in graph.node:
        if node.op_type == "Constant" and node.output and types.get(node.output[0]) == FLOAT \
                and low in needs.get(node.output[0], ()) and FLOAT not in needs.get(node.output[0], ()) \
                and node.name not in keep_nodes:
            const_half.add(node.name)
            home[node.output[0]] = low
    for x in inits:
        if types.get(x) == FLOAT and x not in graph_outputs:
            home[x] = low if low in needs.get(x, ()) else FLOAT

    # initializers needed in both types get a low-precision twin
    half_twin: Dict[str, str] = {}
    new_inits: List[onnx.TensorProto] = []
    for init in graph.initializer:
        x = init.name
        if home.get(x) != low:
            new_inits.append(init)
            continue
        half = _tensor(_to_low(numpy_helper.to_array(init), x, low), x, low)
        if FLOAT in needs.get(x, ()):
            half.name = _unique(f"{x}_{suffix_low}", taken)
            half_twin[x] = half.name
            new_inits.append(init)
        new_inits.append(half)
    del graph.initializer[:]
    graph.initializer.extend(new_inits)

    # graph outputs computed in low precision are renamed inside and cast back at the end
    renamed: Dict[str, str] = {}
    for y in graph_outputs:
        if home.get(y) == low and keep_io_types and y in producer:
            renamed[y] = _unique(f"{y}_{suffix_low}", taken)
            home[renamed[y]] = low

    casts: Dict[Tuple[str, int], str] = {}
    nodes: List[onnx.NodeProto] = []

    def source(x: str, dtype: int) -> str:
        if x in half_twin:
            return half_twin[x] if dtype == low else x
        inner = renamed.get(x, x)
        if home.get(x, FLOAT) == dtype:
            return inner
        key = (x, dtype)
        if key not in casts:
            suffix = suffix_low if dtype == low else "fp32"
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
                    attr.i = low
                    home[node.output[0]] = low
        if node.name in const_half:
            for attr in new.attribute:
                if attr.name == "value":
                    arr = _to_low(numpy_helper.to_array(attr.t), node.name, low)
                    attr.t.CopyFrom(_tensor(np.asarray(arr, dtype=np.float32), attr.t.name, low))
        nodes.append(new)
    for y in graph_outputs:
        if y in renamed:
            nodes.append(helper.make_node("Cast", [renamed[y]], [y], to=FLOAT,
                                          name=_unique(f"Cast_{y}_to_fp32", taken)))
    del graph.node[:]
    graph.node.extend(nodes)

    if not keep_io_types:
        for vi in list(graph.input) + list(graph.output):
            if vi.type.tensor_type.elem_type == FLOAT and home.get(vi.name) == low:
                vi.type.tensor_type.elem_type = low
    del graph.value_info[:]
    return len(converted) + len(const_half)


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
    from trtlab.precision import _graphs

    types = _graphs.deep_types(proto)
    taken = set(types) | {n.name for n in graph.node} | {o for n in graph.node for o in n.output}
    nodes: List[onnx.NodeProto] = []
    rename: Dict[str, str] = {}

    def round_trip(raw: str, out: str, name: str, low: int = HALF) -> None:
        mid = _unique(f"{out}_fp16", taken)
        nodes.append(helper.make_node("Cast", [raw], [mid], to=low, name=_unique(f"{name}_round", taken)))
        nodes.append(helper.make_node("Cast", [mid], [out], to=FLOAT, name=_unique(f"{name}_widen", taken)))

    for vi in graph.input:
        if vi.type.tensor_type.elem_type in LOW:
            wide = _unique(f"{vi.name}_fp32", taken)
            nodes.append(helper.make_node("Cast", [vi.name], [wide], to=FLOAT,
                                          name=_unique(f"Cast_{vi.name}_to_fp32", taken)))
            rename[vi.name] = wide
    half_outputs = {o.name: o.type.tensor_type.elem_type for o in graph.output
                    if o.type.tensor_type.elem_type in LOW}
    for y in half_outputs:
        rename[y] = _unique(f"{y}_fp32", taken)

    for init in graph.initializer:
        if init.data_type in LOW:
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
                if attr.name == "value" and attr.t.data_type in LOW:
                    arr = numpy_helper.to_array(attr.t).astype(np.float32)
                    attr.t.CopyFrom(numpy_helper.from_array(arr, attr.t.name))
            nodes.append(new)
            continue
        if node.op_type == "Cast":
            to = next(a for a in new.attribute if a.name == "to")
            if to.i in LOW:
                low = to.i
                to.i = FLOAT
                raw = _unique(f"{new.output[0]}_raw", taken)
                out = new.output[0]
                new.output[0] = raw
                nodes.append(new)
                round_trip(raw, out, new.name, low)
                continue
            nodes.append(new)
            continue
        rounded = [(i, y) for i, y in enumerate(new.output) if y and types.get(node.output[i]) in LOW]
        if node.op_type in _EXACT or not rounded:
            nodes.append(new)
            continue
        finals = []
        for i, y in rounded:
            raw = _unique(f"{y}_raw", taken)
            new.output[i] = raw
            finals.append((raw, y, types[node.output[i]]))
        nodes.append(new)
        for raw, y, low in finals:
            round_trip(raw, y, new.name, low)
    for y, low in half_outputs.items():
        nodes.append(helper.make_node("Cast", [rename[y]], [y], to=low, name=_unique(f"Cast_{y}_to_fp16", taken)))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    return finish(proto, f"{src.name}_emulated")


def ort_variant(model: Any, providers: Optional[List[str]] = None) -> Tuple[Any, str]:
    """The version of a float16 model that ONNX Runtime on this machine runs, and its label.

    ONNX Runtime's CPU provider silently runs float16 ops it has no kernel for in float32 (it
    inserts casts), so float16 overflow and rounding would not show. On the CPU the result is
    ``(emulate_fp16(model), "onnxruntime (fp16 emulated)")``, which rounds after every op as
    float16 hardware does; with the CUDA provider it is ``(model, "onnxruntime")`` when ONNX
    Runtime accepts the float16 graph.
    """
    from trtlab.backends.onnxruntime.session import default_providers, session

    src = as_model(model)
    chosen = list(providers or default_providers())
    if "CUDAExecutionProvider" not in chosen:
        log.info("%s: float16 emulated in float32 with float16 rounding (ONNX Runtime's CPU provider "
                 "computes float16 ops in float32)", src.name)
        return emulate_fp16(src), EXECUTOR_EMULATED
    try:
        session(src, providers=chosen)
    except Exception as exc:  # ORT raises its own exception types for missing kernels
        log.info("ONNX Runtime cannot run %s as float16 (%s); emulating float16 rounding",
                 src.name, str(exc).splitlines()[0][:200])
        return emulate_fp16(src), EXECUTOR_EMULATED
    return src, EXECUTOR_NATIVE
