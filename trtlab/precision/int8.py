"""INT8 quantization as explicit QuantizeLinear / DequantizeLinear pairs.

Placement follows TensorRT's explicit-quantization recommendations as NVIDIA ModelOpt applies
them: Q/DQ on the activation inputs and on the weights of Conv, ConvTranspose, Gemm and MatMul
(weights per output channel), and on the residual input of an ``Add`` that joins a quantized
branch (found through BatchNormalization, bias adds and activations such as SiLU), so TensorRT
fuses the addition into the convolution. Named, overridable rules keep some weighted ops in
float (:data:`EXCLUSION_RULES`); optional rules add Q/DQ on pooling, Concat (one shared scale),
Resize and Mul inputs (:data:`OPTIONAL_RULES`). Every decision is a row of
:func:`quantization_plan` with its rule and reason.

Two rules driven by the calibration data keep every calibration method from collapsing, and leave
each method's own threshold on every tensor it quantizes (rows of ``Model.quantization_plan``):

* ``depthwise_equalization`` (:data:`EQUALIZATION_RULES`): a depthwise Conv input whose channel
  ranges are far apart gets one INT8 scale set by its widest channels, so its narrow channels keep
  a few levels and the Conv never mixes channels to average that out (PP-OCRv4 det: 26x apart,
  IoU 0.59-0.71 for minmax, percentile and mse). The channels are divided by their ranges before
  the Q/DQ pair and the weights multiplied back, which per-channel weight scales absorb exactly.
* ``dominant_error``: when a single method's output error on the calibration data exceeds
  ``dominant_bound`` times the least among the methods, the few activations that dominate it stay
  float (PP-OCRv4 det under minmax: one 16-channel pointwise Conv input, 20x the least error).

Weights may be initializers or ``Constant`` nodes, in the main graph or in ``If``/``Loop``
bodies. Per-channel weight scales need opset 13; older models are converted to opset 13 (checked
numerically) or, when that fails, quantized per tensor. Both are recorded in ``Model.notes``.
Scales are symmetric (zero point 0); weights are stored as int8 with a ``DequantizeLinear``.

Examples
--------
>>> q = quantize_int8(model, {"input": x_calib})                     # doctest: +SKIP
>>> quantization_plan(model)                                         # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from types import MappingProxyType
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from trtlab.errors import CalibrationError, PrecisionError
from trtlab.precision import _graphs
from trtlab.precision._common import data_hash, model_hash, Data, as_model, calibration_feeds, finish, unique_name as _unique
from trtlab.precision.calibration import (CACHE_VERSION, CLIP_BOUND, METHODS, QMAX, SINGLE_METHODS,
                                          _cache_path, _measure, _read_cache, _write_cache)

log = logging.getLogger(__name__)

__all__ = ["WEIGHTED_OPS", "EXCLUSION_RULES", "DEFAULT_EXCLUSIONS", "OPTIONAL_RULES",
           "quantization_plan", "quantize_int8", "int8_coverage"]

#: Ops whose inputs and weights TensorRT runs in INT8 when they are fed by Q/DQ pairs.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: Ops between a weighted op and a residual ``Add`` that TensorRT fuses with the weighted op.
_FUSED_ACTIVATIONS = ("BatchNormalization", "Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid",
                      "HardSwish", "Tanh", "Elu", "Selu", "Softplus", "Mish", "Gelu")
#: Ops through which a weighted op still reaches a graph output "directly" (output layer rule).
_TO_OUTPUT = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Softmax",
              "LogSoftmax", "Sigmoid", "Add", "Cast")
#: Fewer input or output channels than this make a Conv "small-channel".
SMALL_CHANNELS = 16

#: Weighted ops left in float, by named rule. Pass ``exclusions=`` to choose.
EXCLUSION_RULES: Mapping[str, str] = MappingProxyType({
    "attention_matmul": "MatMul of two activations (attention scores or context): both operands "
                        "change per input, so a per-tensor INT8 scale fits neither; kept float as "
                        "ModelOpt does",
    "small_channel_conv": f"Conv with fewer than {SMALL_CHANNELS} input or output channels: too "
                          "little work for INT8 kernels to win, and first-layer inputs carry the "
                          "most information",
    "gemv": "matrix-vector product (one row): memory bound, INT8 buys no speed and costs accuracy",
    "output_layer": "produces a graph output: its rounding error reaches the result unfiltered",
})
#: Rules on by default: the ones that lose accuracy for no speed on every model measured.
#: ``small_channel_conv`` and ``output_layer`` trade INT8 coverage for accuracy; add them by name.
DEFAULT_EXCLUSIONS: Tuple[str, ...] = ("attention_matmul", "gemv")

#: Extra Q/DQ placements, off by default. Pass ``extra_rules=`` to enable.
OPTIONAL_RULES: Mapping[str, str] = MappingProxyType({
    "pooling": "input of MaxPool/AveragePool/GlobalAveragePool: TensorRT pools in INT8",
    "concat": "inputs of Concat with one shared scale: TensorRT concatenates INT8 without requantizing",
    "resize": "input of Resize: TensorRT resizes in INT8",
    "mul": "activation inputs of Mul: TensorRT multiplies in INT8",
})
_OPTIONAL_OPS = {"pooling": ("MaxPool", "AveragePool", "GlobalAveragePool"), "concat": ("Concat",),
                 "resize": ("Resize",), "mul": ("Mul",)}
#: Exact rewrites :func:`quantize_int8` makes before calibrating when the data calls for them.
#: Pass ``equalize=False`` to leave them out; each one made is a plan row (role ``equalized``).
EQUALIZATION_RULES: Mapping[str, str] = MappingProxyType({
    "depthwise_equalization": "input of a depthwise Conv whose channel ranges are far apart on the "
                              "calibration data: one per-tensor INT8 scale, set by the widest "
                              "channels, leaves the narrow ones a few levels, and a depthwise Conv "
                              "never mixes channels to average that error out. Each channel is "
                              "divided by its range (a Mul before the Q/DQ pair) and the Conv's "
                              "weights are multiplied back per output channel, which their "
                              "per-channel INT8 scales absorb exactly",
})
#: A depthwise Conv's input is equalized when its widest channel range is at least this many times
#: its median channel range on the calibration data.
EQUALIZE_RATIO = 2.0
#: Channels narrower than this share of the widest are scaled as if they were this wide.
_EQUALIZE_FLOOR = 1.0 / 128
PLAN_COLUMNS = ["tensor", "role", "node", "op_type", "input_index", "axis", "graph", "rule",
                "quantize", "reason"]
_PER_AXIS_OPSET = 13
_QDQ_OPSET = 10


class _Format:
    """A Q/DQ storage format: element type, largest level, and how values are stored."""

    def __init__(self, name: str, elem: int, qmax: float, min_opset: int) -> None:
        self.name, self.elem, self.qmax, self.min_opset = name, elem, qmax, min_opset

    def store(self, values: np.ndarray) -> np.ndarray:
        if self.elem == TensorProto.INT8:
            return np.clip(np.round(values), -self.qmax, self.qmax).astype(np.int8)
        import ml_dtypes

        return np.clip(values, -self.qmax, self.qmax).astype(ml_dtypes.float8_e4m3fn)

    def tensor(self, values: np.ndarray, name: str) -> onnx.TensorProto:
        return numpy_helper.from_array(self.store(values), name)


INT8 = _Format("int8", TensorProto.INT8, QMAX, _QDQ_OPSET)
FP8_E4M3 = _Format("fp8", TensorProto.FLOAT8E4M3FN, 448.0, 19)


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return a.i
    return default


def _weight_axis(node: onnx.NodeProto, weight: np.ndarray) -> Tuple[Optional[int], str]:
    op, rank = node.op_type, weight.ndim
    if op == "Conv":
        return 0, "per output channel (axis 0 of the Conv weight)"
    if op == "ConvTranspose":
        if _attr(node, "group", 1) != 1:
            return None, "per tensor: grouped ConvTranspose has no single output-channel axis"
        return 1, "per output channel (axis 1 of the ConvTranspose weight)"
    if op == "Gemm":
        axis = 0 if _attr(node, "transB", 0) else 1
        return axis, f"per output column (axis {axis} of B, transB={_attr(node, 'transB', 0)})"
    if rank == 2:
        return 1, "per output column (axis 1 of the MatMul weight)"
    return None, f"per tensor: rank-{rank} MatMul weight"


# ----------------------------------------------------------------------------------------------
# graph preparation
# ----------------------------------------------------------------------------------------------

class _Index:
    """Initializers, producers, shapes and types of a model and its bodies."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        self.proto = proto
        self.types = _graphs.deep_types(proto)
        self.shapes = _deep_shapes(proto)
        self.inits: Dict[str, onnx.TensorProto] = {}
        self.constants: Set[str] = set()
        self.producer: Dict[str, onnx.NodeProto] = {}
        self.consumers: Dict[str, List[onnx.NodeProto]] = {}
        self.graph_of: Dict[str, str] = {}
        self.order: Dict[str, int] = {}
        for path, g in _graphs.walk(proto.graph):
            for t in g.initializer:
                self.inits[t.name] = t
            for i, n in enumerate(g.node):
                self.graph_of[n.name] = path
                self.order[n.name] = i
                if n.op_type == "Constant":
                    self.constants.update(n.output)
                for o in n.output:
                    self.producer[o] = n
                for x in n.input:
                    if x:
                        self.consumers.setdefault(x, []).append(n)
        self.outputs = {o.name for o in proto.graph.output}

    def is_constant(self, x: str) -> bool:
        return x in self.inits or x in self.constants

    def is_float_activation(self, x: str) -> bool:
        return bool(x) and not self.is_constant(x) and self.types.get(x) == TensorProto.FLOAT


def _deep_shapes(proto: onnx.ModelProto) -> Dict[str, Tuple[Any, ...]]:
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # shape inference raises onnx-internal types
        inferred = proto
    shapes: Dict[str, Tuple[Any, ...]] = {}
    for _, g in _graphs.walk(inferred.graph):
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            tt = vi.type.tensor_type
            if vi.type.HasField("tensor_type") and tt.HasField("shape"):
                shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                                        for d in tt.shape.dim)
        for t in g.initializer:
            shapes[t.name] = tuple(t.dims)
    return shapes


def _lift_weight_constants(proto: onnx.ModelProto) -> int:
    """Turn ``Constant`` nodes that feed weighted ops into initializers (exact); returns the count."""
    count = 0
    for _, g in _graphs.walk(proto.graph):
        wanted = {x for n in g.node if n.op_type in WEIGHTED_OPS for x in n.input[:2] if x}
        count += len(_graphs.lift_constants(g, wanted))
    return count


def _prepared(src: Any) -> Tuple[onnx.ModelProto, List[str]]:
    proto = onnx.ModelProto()
    proto.CopyFrom(src.proto)
    notes = []
    lifted = _lift_weight_constants(proto)
    if lifted:
        notes.append(f"{lifted} weight(s) given as Constant nodes became initializers (values unchanged)")
    return proto, notes


# ----------------------------------------------------------------------------------------------
# placement
# ----------------------------------------------------------------------------------------------

def _check_rules(exclusions: Iterable[str], extra_rules: Iterable[str]) -> Tuple[Set[str], Set[str]]:
    exc, extra = set(exclusions), set(extra_rules)
    bad = sorted(exc - set(EXCLUSION_RULES))
    if bad:
        raise PrecisionError(f"exclusions={bad} are not exclusion rules; known: {', '.join(EXCLUSION_RULES)}.")
    bad = sorted(extra - set(OPTIONAL_RULES))
    if bad:
        raise PrecisionError(f"extra_rules={bad} are not optional placement rules; known: "
                             f"{', '.join(OPTIONAL_RULES)}.")
    return exc, extra


def _exclusion(ix: _Index, node: onnx.NodeProto, rules: Set[str]) -> Optional[str]:
    op = node.op_type
    a, b = node.input[0], node.input[1]
    if "attention_matmul" in rules and op == "MatMul" and not ix.is_constant(a) and not ix.is_constant(b):
        return "attention_matmul"
    if "small_channel_conv" in rules and op == "Conv" and b in ix.shapes and len(ix.shapes[b]) >= 2:
        cout, cin = ix.shapes[b][0], (ix.shapes[b][1] or 0) * _attr(node, "group", 1)
        if (cout or 0) < SMALL_CHANNELS or cin < SMALL_CHANNELS:
            return "small_channel_conv"
    if "gemv" in rules and op in ("MatMul", "Gemm"):
        shape = ix.shapes.get(a)
        if shape:
            rows = shape[-2] if len(shape) >= 2 else 1
            if op == "Gemm" and _attr(node, "transA", 0) and len(shape) == 2:
                rows = shape[1]
            if rows == 1 and len(shape) <= 2:
                return "gemv"
    if "output_layer" in rules and ix.graph_of.get(node.name) == "":
        frontier = list(node.output)
        seen: Set[str] = set()
        while frontier:
            t = frontier.pop()
            if t in ix.outputs:
                return "output_layer"
            if t in seen:
                continue
            seen.add(t)
            users = ix.consumers.get(t, [])
            if len(users) == 1 and users[0].op_type in _TO_OUTPUT and (
                    users[0].op_type != "Add" or any(ix.is_constant(x) for x in users[0].input)):
                frontier.extend(users[0].output)
    return None


def _weighted_source(ix: _Index, tensor: str, quantized: Set[str]) -> Optional[str]:
    """The quantized weighted node ``tensor`` comes from through fusable ops, if any."""
    seen = 0
    while seen < 8:
        seen += 1
        prod = ix.producer.get(tensor)
        if prod is None:
            return None
        if prod.name in quantized:
            return prod.name
        op = prod.op_type
        if op in _FUSED_ACTIVATIONS or op == "PRelu":
            tensor = prod.input[0]
        elif op in ("Add", "Sub") and len(prod.input) == 2 and ix.is_constant(prod.input[1]):
            tensor = prod.input[0]  # bias add
        elif op == "Add" and len(prod.input) == 2 and ix.is_constant(prod.input[0]):
            tensor = prod.input[1]
        elif op == "Mul" and len(prod.input) == 2:
            x, y = prod.input
            px, py = ix.producer.get(x), ix.producer.get(y)
            if py is not None and py.op_type in ("Sigmoid", "HardSigmoid") and py.input[0] == x:
                tensor = x  # SiLU / HardSwish written as x * sigmoid(x)
            elif px is not None and px.op_type in ("Sigmoid", "HardSigmoid") and px.input[0] == y:
                tensor = y
            elif ix.is_constant(y):
                tensor = x  # scale
            elif ix.is_constant(x):
                tensor = y
            else:
                return None
        else:
            return None
    return None


def _plan_rows(ix: _Index, per_channel: bool, exclude: Set[str], residuals: bool,
               exclusions: Set[str], extra: Set[str]) -> List[Dict[str, Any]]:
    rows: List[Dict[str, Any]] = []
    quantized: Set[str] = set()
    for path, g in _graphs.walk(ix.proto.graph):
        for node in g.node:
            if node.domain not in ("", "ai.onnx") or node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
                continue
            if any(ix.types.get(x) != TensorProto.FLOAT for x in node.input[:2]):
                continue
            base = dict(node=node.name, op_type=node.op_type, graph=path)
            if node.name in exclude:
                rows.append(dict(base, tensor=node.input[0], role="skipped", input_index=0, axis=None,
                                 rule="exclude_nodes", quantize=False, reason="listed in exclude_nodes"))
                continue
            rule = _exclusion(ix, node, exclusions)
            if rule is not None:
                rows.append(dict(base, tensor=node.input[0], role="skipped", input_index=0, axis=None,
                                 rule=rule, quantize=False, reason=EXCLUSION_RULES[rule]))
                continue
            quantized.add(node.name)
            for idx in (0, 1):
                x = node.input[idx]
                if x in ix.inits:
                    axis, why = (None, "per tensor (per_channel=False)")
                    if per_channel:
                        axis, why = _weight_axis(node, numpy_helper.to_array(ix.inits[x]))
                    rows.append(dict(base, tensor=x, role="weight", input_index=idx, axis=axis,
                                     rule="weighted_op", quantize=True, reason=f"{node.op_type} weight, {why}"))
                elif ix.is_constant(x):
                    continue
                else:
                    rows.append(dict(base, tensor=x, role="activation", input_index=idx, axis=None,
                                     rule="weighted_op", quantize=True,
                                     reason=f"input {idx} of {node.op_type}: TensorRT runs it in INT8"))
    if residuals:
        rows.extend(_residual_rows(ix, quantized, exclude))
    for path, g in _graphs.walk(ix.proto.graph):
        for node in g.node:
            if node.name in exclude or node.domain not in ("", "ai.onnx"):
                continue
            for rule in sorted(extra):
                if node.op_type not in _OPTIONAL_OPS[rule]:
                    continue
                idxs = range(len(node.input)) if rule in ("concat", "mul") else (0,)
                for i in idxs:
                    x = node.input[i]
                    if ix.is_float_activation(x):
                        rows.append(dict(tensor=x, role=rule, node=node.name, op_type=node.op_type,
                                         input_index=i, axis=None, graph=path, rule=rule,
                                         quantize=True, reason=OPTIONAL_RULES[rule]))
    return rows


def _residual_rows(ix: _Index, quantized: Set[str], exclude: Set[str]) -> List[Dict[str, Any]]:
    rows = []
    for path, g in _graphs.walk(ix.proto.graph):
        for node in g.node:
            if node.op_type != "Add" or node.name in exclude or len(node.input) != 2:
                continue
            a, b = node.input
            if not (ix.is_float_activation(a) and ix.is_float_activation(b)):
                continue
            fa, fb = _weighted_source(ix, a, quantized), _weighted_source(ix, b, quantized)
            if fa is None and fb is None:
                continue
            if fa is not None and fb is not None:
                # fuse into the later branch; the earlier branch is the residual
                idx = 0 if ix.order.get(fa, 0) < ix.order.get(fb, 0) else 1
            else:
                idx = 1 if fa is not None else 0
            fused = fa if idx == 1 else fb
            rows.append(dict(tensor=node.input[idx], role="residual", node=node.name, op_type="Add",
                             input_index=idx, axis=None, graph=path, rule="residual_add", quantize=True,
                             reason=f"residual input of Add, so TensorRT fuses the Add into {fused}"))
    return rows


def _frame(rows: List[Dict[str, Any]]) -> Any:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=PLAN_COLUMNS)
    frame["axis"] = pd.array([r["axis"] for r in rows], dtype="Int64")
    frame["input_index"] = frame["input_index"].astype(int)
    frame["quantize"] = frame["quantize"].astype(bool)
    return frame


def quantization_plan(model: Any, *, per_channel: bool = True, exclude_nodes: Iterable[str] = (),
                      quantize_residuals: bool = True, exclusions: Iterable[str] = DEFAULT_EXCLUSIONS,
                      extra_rules: Iterable[str] = ()) -> Any:
    """Where :func:`quantize_int8` puts Q/DQ pairs, what it leaves float, and why.

    Parameters
    ----------
    model
        The float32 model.
    per_channel
        Per-output-channel weight scales.
    exclude_nodes
        Nodes kept in float (their inputs get no Q/DQ).
    quantize_residuals
        Quantize the residual input of an ``Add`` fed by a quantized branch.
    exclusions
        Names from :data:`EXCLUSION_RULES` applied (default :data:`DEFAULT_EXCLUSIONS`).
    extra_rules
        Names from :data:`OPTIONAL_RULES` applied (default: none).

    Returns
    -------
    pandas.DataFrame
        One row per decision: tensor, role (``activation``, ``weight``, ``residual``, an optional
        rule's name, or ``skipped``), node, op_type, input_index, axis (``None`` = per tensor),
        graph (``""`` for the main graph, else the ``If``/``Loop`` body path), rule, quantize,
        reason. Rows with ``quantize=False`` are weighted ops left in float. (The data-driven
        rules add rows to ``Model.quantization_plan`` of the quantized model: ``equalized``
        tensors and ``dominant_error`` rows.)
    """
    src = as_model(model)
    proto, _ = _prepared(src)
    return _plan(proto, per_channel=per_channel, exclude_nodes=exclude_nodes,
                 quantize_residuals=quantize_residuals, exclusions=exclusions, extra_rules=extra_rules,
                 name=src.name)


def _plan(proto: onnx.ModelProto, *, per_channel: bool, exclude_nodes: Iterable[str],
          quantize_residuals: bool, exclusions: Iterable[str], extra_rules: Iterable[str], name: str) -> Any:
    exc, extra = _check_rules(exclusions, extra_rules)
    exclude = set(exclude_nodes)
    known = {n.name for _, g in _graphs.walk(proto.graph) for n in g.node}
    unknown = sorted(exclude - known)
    if unknown:
        raise PrecisionError(
            f"exclude_nodes names {unknown[:5]} not in model {name!r}; node names are in "
            "Model.node_names."
        )
    ix = _Index(proto)
    return _frame(_plan_rows(ix, per_channel, exclude, quantize_residuals, exc, extra))


# ----------------------------------------------------------------------------------------------
# depthwise equalization
# ----------------------------------------------------------------------------------------------

def _depthwise_inputs(proto: onnx.ModelProto, plan: Any) -> Dict[str, List[onnx.NodeProto]]:
    """Quantized main-graph activations -> the depthwise Convs reading them whose weights can
    absorb a per-channel scale (an initializer of shape ``[C*m, 1, ...]`` read by that Conv only)."""
    ix = _Index(proto)
    by_name = {n.name: n for n in proto.graph.node}
    rows = plan[(plan["role"] == "activation") & (plan["graph"] == "") & (plan["op_type"] == "Conv")
                & (plan["input_index"] == 0) & plan["quantize"]]
    out: Dict[str, List[onnx.NodeProto]] = {}
    for row in rows.itertuples(index=False):
        node = by_name.get(row.node)
        if node is None or len(node.input) < 2:
            continue
        w, group = node.input[1], _attr(node, "group", 1)
        dims = list(ix.inits[w].dims) if w in ix.inits else []
        if (group > 1 and len(dims) >= 3 and dims[1] == 1 and dims[0] % group == 0
                and len(ix.consumers.get(w, [])) == 1):
            out.setdefault(row.tensor, []).append(node)
    return out


def _channel_ranges(proto: onnx.ModelProto, tensors: List[str], feeds: List[Any]) -> Dict[str, np.ndarray]:
    """Largest ``|x|`` per channel (axis 1) of each tensor over the calibration feeds."""
    aug, names = _graphs.expose(proto, tensors, _graphs.deep_types(proto))
    sess = _graphs.measuring_session(aug, names)
    out: Dict[str, np.ndarray] = {}
    for batch in feeds:
        for t, v in zip(tensors, sess.run([names[t] for t in tensors], batch)):
            v = np.abs(np.asarray(v, dtype=np.float32))
            if v.ndim < 2 or v.size == 0:
                continue
            a = np.moveaxis(v, 1, 0).reshape(v.shape[1], -1).max(axis=1)
            out[t] = a if t not in out else np.maximum(out[t], a)
    return out


def _equalization_scales(proto: onnx.ModelProto, plan: Any, feeds: List[Any]) -> Dict[str, np.ndarray]:
    """Per-channel scales ``s`` (widest channel = 1) of the depthwise inputs the data says to equalize."""
    candidates = _depthwise_inputs(proto, plan)
    if not candidates or not feeds:
        return {}
    scales = {}
    for t, a in _channel_ranges(proto, list(candidates), feeds).items():
        top, mid = float(a.max()), float(np.median(a))
        groups = {_attr(n, "group", 1) for n in candidates[t]}
        if top <= 0 or groups != {len(a)} or (mid > 0 and top / mid < EQUALIZE_RATIO):
            continue
        scales[t] = np.maximum(a / top, _EQUALIZE_FLOOR).astype(np.float32)
    return scales


def _equalize(proto: onnx.ModelProto, plan: Any, scales: Mapping[str, np.ndarray],
              names: Optional[Mapping[str, str]] = None) -> Tuple[List[Dict[str, Any]], Dict[str, str]]:
    """Divide each tensor in ``scales`` per channel before its depthwise Convs, whose weights are
    multiplied back (in place). Returns the plan rows and ``{tensor: equalized tensor}``."""
    candidates = _depthwise_inputs(proto, plan)
    unknown = sorted(set(scales) - set(candidates))
    if unknown:
        raise CalibrationError(f"The calibration table equalizes tensor(s) {unknown[:5]} that feed no "
                               "depthwise Conv of this model; calibrate this model with "
                               "calibrate(model, data) and pass its result.")
    g = proto.graph
    taken = _graphs.all_names(proto)
    inits = {t.name: t for t in g.initializer}
    rows: List[Dict[str, Any]] = []
    made: Dict[str, str] = {}
    for t in sorted(scales):
        s = np.asarray(scales[t], dtype=np.float32)
        convs = candidates[t]
        rank = len(inits[convs[0].input[1]].dims)
        inv = numpy_helper.from_array((1.0 / s).reshape([1, -1] + [1] * (rank - 2)),
                                      _unique(f"{t}_equalization_scale", taken))
        out = (names or {}).get(t) or _unique(f"{t}_equalized", taken)
        taken.add(out)
        mul = helper.make_node("Mul", [t, inv.name], [out], name=_unique(f"{t}_equalization", taken))
        g.initializer.append(inv)
        first = min(list(g.node).index(c) for c in convs)
        g.node.insert(first, mul)
        for conv in convs:
            w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float32)
            per_out = np.repeat(s, w.shape[0] // len(s)).reshape([-1] + [1] * (w.ndim - 1))
            inits[conv.input[1]].CopyFrom(numpy_helper.from_array(w * per_out, conv.input[1]))
            conv.input[0] = out
        ratio = float(1.0 / np.median(s))
        rows.append(dict(tensor=out, role="equalized", node=mul.name, op_type="Mul", input_index=0,
                         axis=1, graph="", rule="depthwise_equalization", quantize=False,
                         reason=(f"channel ranges of {t} {ratio:.3g}x apart (widest / median) on the "
                                 f"calibration data, >= {EQUALIZE_RATIO:g}: divided per channel before "
                                 f"quantization, the weights of {', '.join(c.name for c in convs)} "
                                 "multiplied back (exact up to float32 rounding)")))
        made[t] = out
    return rows, made


# ----------------------------------------------------------------------------------------------
# coverage
# ----------------------------------------------------------------------------------------------

def int8_coverage(model: Any) -> float:
    """Share of the model's multiply-accumulates whose inputs are all dequantized INT8.

    A MAC op (Conv, ConvTranspose, Gemm, MatMul) counts as INT8 when each of its first two
    inputs comes from a ``DequantizeLinear``. Returns ``nan`` for a model without MACs.
    """
    src = as_model(model)
    macs = src.macs
    total = float(sum(macs.values()))
    if total == 0:
        return float("nan")
    covered = 0.0
    for node in src.proto.graph.node:
        if node.op_type in WEIGHTED_OPS and macs.get(node.name):
            prods = [src.producer(x) for x in node.input[:2]]
            if all(p is not None and src.node(p).op_type == "DequantizeLinear" for p in prods):
                covered += macs[node.name]
    return covered / total


# ----------------------------------------------------------------------------------------------
# quantize
# ----------------------------------------------------------------------------------------------

def _calibration_table(calibration_data: Any, src: Any, needed: List[str], **kwargs: Any) -> Dict[str, float]:
    import pandas as pd

    if isinstance(calibration_data, pd.DataFrame):
        table = calibration_data
        if not {"tensor", "amax"} <= set(table.columns):
            raise CalibrationError(
                "A calibration table needs 'tensor' and 'amax' columns (the output of calibrate())."
            )
    else:
        table = calibrate(src, calibration_data, tensors=needed, **kwargs)
    amax = dict(zip(table["tensor"], table["amax"].astype(float)))
    missing = [t for t in needed if t not in amax]
    if missing:
        raise CalibrationError(
            f"The calibration table has no range for tensor(s) {missing[:5]}; calibrate this model "
            "with calibrate(model, data) and pass its result."
        )
    return amax


def _opset_for(proto: onnx.ModelProto, need_axis: bool, calibration_data: Any, src: Any,
               notes: List[str], fmt: "_Format" = INT8) -> Tuple[onnx.ModelProto, bool]:
    """The proto at an opset that holds the Q/DQ wanted, and whether per-axis scales are possible."""
    import pandas as pd

    current = _graphs.opset(proto)
    target = max(fmt.min_opset, _PER_AXIS_OPSET)
    if current >= target or (current >= fmt.min_opset and not need_axis):
        return proto, True
    feeds: List[Any] = []
    if not isinstance(calibration_data, pd.DataFrame):
        feeds = calibration_feeds(src, calibration_data)[:1]
    converted, why = _graphs.raise_opset(proto, target, feeds)
    what = "per-channel DequantizeLinear" if fmt is INT8 else f"{fmt.name} QuantizeLinear"
    if converted is not None:
        notes.append(f"opset raised from {current} to {target} for {what} (outputs checked equal on "
                     "the first calibration batch)" if feeds else
                     f"opset raised from {current} to {target} for {what}")
        return converted, True
    if current >= fmt.min_opset:
        notes.append(f"weights quantized per tensor: opset {current} has no per-axis "
                     f"DequantizeLinear and {why}")
        return proto, False
    raise PrecisionError(
        f"Model {src.name!r} has opset {current}, below opset {fmt.min_opset} where {fmt.name} "
        f"QuantizeLinear appears, and {why}. Convert it with "
        f"onnx.version_converter.convert_version(model, {target}) (checking its outputs) and "
        "quantize the result."
    )


def quantize_int8(model: Any, calibration_data: Union[Data, Any], *, method: str = "auto",
                  per_channel: bool = True, percentile: float = 99.99, num_bins: int = 2048,
                  cache_dir: Optional[Union[str, os.PathLike]] = None, progress: bool = True,
                  exclude_nodes: Iterable[str] = (), quantize_residuals: bool = True,
                  exclusions: Iterable[str] = DEFAULT_EXCLUSIONS, extra_rules: Iterable[str] = (),
                  clip_bound: Optional[float] = CLIP_BOUND, batch_size: Optional[int] = None,
                  equalize: bool = True, dominant_bound: Optional[float] = 2.0) -> Any:
    """Insert INT8 Q/DQ pairs with scales calibrated on real data.

    Parameters
    ----------
    model
        The float32 model.
    calibration_data
        Real inputs (one array, dict input name -> array, or feed dicts), or a table returned by
        :func:`calibrate` to reuse its ranges.
    method
        ``"auto"`` (the default: every method's thresholds are measured in one calibration run,
        and the set whose quantized model has the least output error on the calibration data is
        kept; ``Model.notes`` lists each method's error), ``"mse"`` (per tensor, the range with
        the least INT8 rounding and clipping error), ``"entropy"`` (TensorRT's KL calibration),
        ``"minmax"`` or ``"percentile"``.
    per_channel
        Weights scaled per output channel (else per tensor).
    percentile, num_bins, cache_dir, progress, batch_size, clip_bound
        Passed to :func:`calibrate`.
    exclude_nodes
        Nodes kept in float32 (no Q/DQ on their inputs).
    quantize_residuals
        Quantize the residual input of an ``Add`` fed by a quantized branch.
    exclusions, extra_rules
        Placement rules, see :func:`quantization_plan`.
    equalize
        Apply :data:`EQUALIZATION_RULES` where the calibration data calls for them (a depthwise
        Conv input whose channel ranges are :data:`EQUALIZE_RATIO` or more apart is divided per
        channel before its Q/DQ pair and the Conv's weights multiplied back: exact up to float32
        rounding, so every method calibrates a tensor whose channels share its levels). Each one
        made is a plan row and a note. With a calibration table, the table's equalization is used.
    dominant_bound
        The ``dominant_error`` rule, for a single method given calibration data: every method's
        thresholds are measured in one run and each quantized model's output error on the
        calibration data compared. When this method's error exceeds ``dominant_bound`` times the
        least (and :data:`DOMINANT_MIN_ERROR`), the activations that dominate it (one kept float
        removes at least half of the error left; at most :data:`DOMINANT_MAX`) stay float with
        the weighted ops reading them, as plan rows (rule ``dominant_error``) and a note; every
        other tensor keeps the method's own threshold. ``None`` turns the rule off. ``auto``
        picks the least error, so the rule never fires for it.

    Returns
    -------
    trtlab.model.Model
        The Q/DQ model. Its ``metadata_props`` record ``trtlab.precision`` and the method; its
        ``notes`` say what else changed (opset, Constant weights). A model with nothing to
        quantize is returned unchanged, labelled ``fp32``, with a warning.
    """
    return _quantize(model, calibration_data, INT8, method=method, per_channel=per_channel,
                     percentile=percentile, num_bins=num_bins, cache_dir=cache_dir, progress=progress,
                     exclude_nodes=exclude_nodes, quantize_residuals=quantize_residuals,
                     exclusions=exclusions, extra_rules=extra_rules, clip_bound=clip_bound,
                     batch_size=batch_size, equalize=equalize, dominant_bound=dominant_bound)


def _quantize(model: Any, calibration_data: Any, fmt: _Format, *, method: str, per_channel: bool,
              percentile: float, num_bins: int, cache_dir: Any, progress: bool,
              exclude_nodes: Iterable[str], quantize_residuals: bool, exclusions: Iterable[str],
              extra_rules: Iterable[str], clip_bound: Optional[float], batch_size: Optional[int],
              equalize: bool = False, dominant_bound: Optional[float] = None) -> Any:
    src = as_model(model)
    proto, notes = _prepared(src)
    plan_kw = dict(exclude_nodes=exclude_nodes, quantize_residuals=quantize_residuals,
                   exclusions=exclusions, extra_rules=extra_rules, name=src.name)
    plan = _plan(proto, per_channel=per_channel, **plan_kw)
    plan = plan[plan["quantize"]]
    if plan.empty:
        log.warning("quantize_%s(%s): nothing to quantize (no float Conv/ConvTranspose/Gemm/MatMul "
                    "outside the exclusions); the model is returned unchanged, labelled fp32",
                    fmt.name, src.name)
        return _unchanged(src, fmt.name, "no weighted op to quantize")
    need_axis = bool(plan["axis"].notna().any())
    proto, per_axis = _opset_for(proto, need_axis, calibration_data, src, notes, fmt)
    if not per_axis:
        per_channel = False
    plan = _plan(proto, per_channel=per_channel, **plan_kw)
    eq_rows: List[Dict[str, Any]] = []
    if equalize:
        scales, eq_names = _table_scales(calibration_data)
        if scales is None:
            scales = _equalization_scales(proto, plan, calibration_feeds(as_model(proto), calibration_data,
                                                                         batch_size))
        if scales:
            eq_rows, made = _equalize(proto, plan, scales, eq_names)
            notes.append(f"{len(made)} depthwise Conv input(s) equalized per channel before quantization "
                         "(exact up to float32 rounding; 'depthwise_equalization' rows of the plan)")
            plan = _plan(proto, per_channel=per_channel, **plan_kw)
    decisions = _with_rows(plan, eq_rows)
    plan = plan[plan["quantize"]]
    prepared = as_model(proto)
    activations = list(dict.fromkeys(plan.loc[plan["role"] != "weight", "tensor"]))
    kwargs = dict(percentile=percentile, num_bins=num_bins, cache_dir=cache_dir, progress=progress,
                  batch_size=batch_size, clip_bound=clip_bound, equalize=False)
    chosen, trials, errors = method, None, {}
    if activations and (method == "auto" or dominant_bound is not None) and not _is_table(calibration_data):
        feeds = calibration_feeds(prepared, calibration_data, batch_size)[:AUTO_BATCHES]
        trials = _Trials(proto, plan, fmt, feeds)
    if method == "auto" and activations:
        amax, chosen, why = _auto_thresholds(trials, prepared, activations, calibration_data, kwargs)
        notes.append(why)
    elif activations and trials is not None and dominant_bound is not None:
        # every method's thresholds from one calibration run: the others show what the data allows
        table = calibrate(prepared, calibration_data, tensors=activations, method="auto", **kwargs)
        candidates = _candidates(table)
        amax = candidates[method]
        errors = {m: trials.error(a) for m, a in candidates.items()}
    else:
        amax = _calibration_table(calibration_data, prepared, activations, method=method,
                                  **kwargs) if activations else {}
    if errors and dominant_bound is not None:
        kept, why = _dominant_tensors(trials, amax, errors, method, dominant_bound)
        notes.append(why)
        if kept:
            plan, decisions = _keep_float(plan, decisions, kept, why)
            activations = [t for t in activations if t not in kept]
    _insert(proto, plan, _shared_concat(amax, plan), fmt)
    n_act, n_w = len(activations), int((plan["role"] == "weight").sum())
    meta = {"trtlab.precision": fmt.name,
            "trtlab.calibration": (f"auto: {chosen}" if method == "auto" else method) if activations else "none"}
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    for note in notes:
        log.info("quantize_%s(%s): %s", fmt.name, src.name, note)
    log.info("quantize_%s(%s): %d activation and %d weight Q/DQ pair(s) (%s calibration)",
             fmt.name, src.name, n_act, n_w, method)
    out = finish(proto, f"{src.name}_{fmt.name}", advice="Leave the offending nodes in float "
                 f"(quantize_{fmt.name}(..., exclude_nodes=[...]))")
    out.notes = list(src.notes) + notes
    out.quantization_plan = decisions
    return out


def _with_rows(plan: Any, rows: List[Dict[str, Any]]) -> Any:
    import pandas as pd

    return plan if not rows else pd.concat([plan, _frame(rows)], ignore_index=True)


def _table_scales(calibration_data: Any) -> Tuple[Optional[Dict[str, np.ndarray]], Dict[str, str]]:
    """The equalization a calibration table was measured with (``None`` when given data)."""
    import pandas as pd

    if not isinstance(calibration_data, pd.DataFrame):
        return None, {}
    if "equalizes" not in calibration_data.columns:
        return {}, {}
    rows = calibration_data[calibration_data["equalizes"].notna()]
    scales = {r.equalizes: np.asarray(r.channel_scale, dtype=np.float32) for r in rows.itertuples(index=False)}
    return scales, {r.equalizes: r.tensor for r in rows.itertuples(index=False)}


#: Calibration batches the ``auto`` method scores each candidate on.
AUTO_BATCHES = 8


def _shared_concat(amax: Dict[Any, float], plan: Any) -> Dict[Any, float]:
    """``amax`` plus one shared range per Concat (the largest among its inputs)."""
    out = dict(amax)
    for node, group in plan[plan["role"] == "concat"].groupby("node"):
        shared = max(amax[t] for t in group["tensor"])
        for t in group["tensor"]:
            out[(t, node)] = shared
    return out


def _output_error(reference: List[Dict[str, np.ndarray]], got: List[Dict[str, np.ndarray]]) -> float:
    """Mean over float outputs of the relative squared L2 error, over all batches."""
    errs = []
    for name in reference[0]:
        ref = [np.asarray(r[name], np.float64) for r in reference]
        if not np.issubdtype(ref[0].dtype, np.floating):
            continue
        out = [np.asarray(g[name], np.float64) for g in got]
        if not all(np.all(np.isfinite(o)) for o in out):
            return float("inf")
        num = sum(float(((o - r) ** 2).sum()) for o, r in zip(out, ref))
        den = sum(float((r ** 2).sum()) for r in ref)
        errs.append(num / den if den > 0 else num)
    return float(np.mean(errs)) if errs else 0.0


def _is_table(data: Any) -> bool:
    import pandas as pd

    return isinstance(data, pd.DataFrame)


class _Trials:
    """Output error of the Q/DQ model on calibration batches, for given thresholds and float tensors."""

    def __init__(self, proto: onnx.ModelProto, plan: Any, fmt: _Format, data: List[Any]) -> None:
        self.proto, self.plan, self.fmt, self.data = proto, plan, fmt, data
        self.names = [o.name for o in proto.graph.output]
        sess = _graphs.measuring_session(proto, {})
        self.reference = [dict(zip(self.names, sess.run(self.names, f))) for f in data]

    def error(self, amax: Mapping[str, float], keep_float: Iterable[str] = ()) -> float:
        plan = _without(self.plan, set(keep_float))
        trial = onnx.ModelProto()
        trial.CopyFrom(self.proto)
        _insert(trial, plan, _shared_concat(amax, plan), self.fmt)
        sess = _graphs.measuring_session(trial, {})
        return _output_error(self.reference, [dict(zip(self.names, sess.run(self.names, f))) for f in self.data])


def _candidates(table: Any) -> Dict[str, Dict[str, float]]:
    have = [m for m in SINGLE_METHODS if f"amax_{m}" in table.columns and table[f"amax_{m}"].notna().all()]
    return {m: dict(zip(table["tensor"], table[f"amax_{m}"].astype(float))) for m in have}


def _auto_thresholds(trials: Optional[_Trials], prepared: Any, activations: List[str],
                     calibration_data: Any, kwargs: Dict[str, Any]) -> Tuple[Dict[str, float], str, str]:
    """Each method's thresholds; the set whose quantized model errs least on calibration data."""
    if trials is None:
        amax = _calibration_table(calibration_data, prepared, activations)
        return amax, "mse", "auto calibration: one candidate available, mse thresholds used"
    table = calibrate(prepared, calibration_data, tensors=activations, method="auto", **kwargs)
    candidates = _candidates(table)
    if len(candidates) < 2:
        amax = _calibration_table(table, prepared, activations)
        return amax, "mse", "auto calibration: one candidate available, mse thresholds used"
    have = list(candidates)
    errors = {m: trials.error(a) for m, a in candidates.items()}
    best = min(errors, key=lambda k: (errors[k], have.index(k)))
    detail = ", ".join(f"{m} {e:.3g}" for m, e in errors.items())
    return candidates[best], best, (f"auto calibration chose {best}: relative output error on "
                                    f"{len(trials.data)} calibration batch(es): {detail}")


#: Most tensors the ``dominant_error`` rule keeps in float for one method.
DOMINANT_MAX = 4
#: Relative squared output error below which no method counts as collapsed (about 10 % relative
#: L2 error): Magika's entropy thresholds err 7x more than mse's, at 0.07 %, and lose nothing.
DOMINANT_MIN_ERROR = 0.01


def _dominant_tensors(trials: _Trials, amax: Mapping[str, float], errors: Mapping[str, float],
                      method: str, bound: float) -> Tuple[List[str], str]:
    """Tensors that dominate ``method``'s output error when it exceeds ``bound`` x the least
    (and :data:`DOMINANT_MIN_ERROR`).

    While the error is above the bound, the activation whose float copy removes the most error is
    found by bisection (halves of the tensor list kept float in turn); it is kept float when that
    removes at least half of the error left, else the search stops.
    """
    least = min(errors.values())
    err = errors[method]
    detail = ", ".join(f"{m} {e:.3g}" for m, e in errors.items())
    if not err > bound * least or err < DOMINANT_MIN_ERROR:
        return [], (f"dominant_error: {method}'s relative output error {err:.3g} is within {bound:g}x "
                    f"the least among the methods or below {DOMINANT_MIN_ERROR:g} ({detail}); "
                    "nothing kept float")
    tensors = list(dict.fromkeys(t for t in amax if isinstance(t, str)))
    tensors = [t for t in tensors if t in set(trials.plan.loc[trials.plan["role"] != "weight", "tensor"])]
    kept: List[str] = []
    while err > bound * least and len(kept) < DOMINANT_MAX:
        cands = [t for t in tensors if t not in kept]
        if not cands:
            break
        while len(cands) > 1:
            half = len(cands) // 2
            a, b = cands[:half], cands[half:]
            cands = a if trials.error(amax, kept + a) <= trials.error(amax, kept + b) else b
        new = trials.error(amax, kept + cands)
        if new > 0.5 * err:
            break
        kept.append(cands[0])
        err = new
    if not kept:
        return [], (f"dominant_error: {method}'s relative output error {errors[method]:.3g} exceeds "
                    f"{bound:g}x the least ({detail}), but no single tensor removes half of it; "
                    "nothing kept float")
    return kept, (f"dominant_error: {method}'s relative output error {errors[method]:.3g} exceeded "
                  f"{bound:g}x the least among the methods ({detail}); {', '.join(kept)} kept float "
                  f"(error then {err:.3g})")


def _without(plan: Any, kept: Set[str]) -> Any:
    """``plan`` without Q/DQ on ``kept`` tensors, nor on the weights of the weighted ops reading them."""
    if not kept:
        return plan
    reads = plan["tensor"].isin(kept) & (plan["role"] != "weight")
    nodes = set(plan.loc[reads & plan["op_type"].isin(WEIGHTED_OPS), "node"])
    return plan[~(reads | (plan["node"].isin(nodes) & (plan["role"] == "weight")))]


def _keep_float(plan: Any, decisions: Any, kept: List[str], why: str) -> Tuple[Any, Any]:
    decisions = decisions.copy()
    gone = ~decisions.index.isin(_without(decisions, set(kept)).index) & decisions["quantize"]
    decisions.loc[gone, "quantize"] = False
    decisions.loc[gone, "rule"] = "dominant_error"
    decisions.loc[gone, "reason"] = why
    return _without(plan, set(kept)), decisions


def _unchanged(src: Any, precision: str, why: str) -> Any:
    proto = onnx.ModelProto()
    proto.CopyFrom(src.proto)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "trtlab.precision", "fp32"
    entry = proto.metadata_props.add()
    entry.key, entry.value = "trtlab.unconverted", f"{precision}: {why}"
    out = finish(proto, src.name)
    out.notes = list(src.notes) + [f"{precision} requested but nothing converted: {why}"]
    return out


def _insert(proto: onnx.ModelProto, plan: Any, amax: Mapping[Any, float], fmt: _Format = INT8) -> None:
    """Add the Q/DQ nodes of ``plan`` to every graph of ``proto`` (in place)."""
    import pandas as pd

    taken = _graphs.all_names(proto)
    inits_all = {t.name: t for _, g in _graphs.walk(proto.graph) for t in g.initializer}
    replaced: Set[str] = set()
    # deepest bodies first: rewriting a graph copies its nodes, bodies included
    for path, g in reversed(list(_graphs.walk(proto.graph))):
        rows = plan[plan["graph"] == path]
        if rows.empty:
            continue
        zero = fmt.tensor(np.array(0.0), _unique(f"trtlab_{fmt.name}_zero_point", taken))
        new_inits: List[onnx.TensorProto] = [zero]
        replace: Dict[Tuple[str, int], str] = {}
        dq_of: Dict[Tuple[Any, ...], str] = {}
        qdq_nodes: Dict[str, List[onnx.NodeProto]] = {}
        for row in rows.itertuples(index=False):
            t, axis = row.tensor, row.axis
            axis = None if axis is None or axis is pd.NA else int(axis)
            if row.role == "weight":
                key: Tuple[Any, ...] = (t, axis, "w")
            elif row.role == "concat":
                key = (t, row.node)
            else:
                key = (t,)
            if key not in dq_of:
                if row.role == "weight":
                    dq_of[key] = _quantize_weight(t, inits_all[t], axis, taken, new_inits, qdq_nodes,
                                                  zero.name, fmt)
                    replaced.add(t)
                else:
                    value = amax[(t, row.node)] if row.role == "concat" else amax[t]
                    dq_of[key] = _quantize_activation(t, value, taken, new_inits, qdq_nodes, zero.name, fmt)
            replace[(row.node, int(row.input_index))] = dq_of[key]
        produced = {o for n in g.node for o in n.output}
        nodes: List[onnx.NodeProto] = []
        for t, group in qdq_nodes.items():
            if t not in produced:  # graph inputs, initializers, outer-scope tensors
                nodes.extend(group)
        for node in g.node:
            new = onnx.NodeProto()
            new.CopyFrom(node)
            for i in range(len(new.input)):
                if (node.name, i) in replace:
                    new.input[i] = replace[(node.name, i)]
            nodes.append(new)
            for y in node.output:
                if y in qdq_nodes:
                    nodes.extend(qdq_nodes[y])
        used = {x for n in nodes for x in n.input} | _graphs.body_reads_nodes(nodes)
        g.initializer.extend(t for t in new_inits if t.name in used)
        del g.node[:]
        g.node.extend(nodes)
        del g.value_info[:]
    # drop float weights nothing reads any more (reads inside bodies count)
    reads = {x for _, g in _graphs.walk(proto.graph) for n in g.node for x in n.input}
    reads |= {o.name for _, g in _graphs.walk(proto.graph) for o in g.output}
    for _, g in _graphs.walk(proto.graph):
        keep = [t for t in g.initializer if t.name not in replaced or t.name in reads]
        if len(keep) != len(g.initializer):
            del g.initializer[:]
            g.initializer.extend(keep)


def _quantize_activation(t: str, amax: float, taken: Set[str], inits: List[onnx.TensorProto],
                         nodes: Dict[str, List[onnx.NodeProto]], zero: str, fmt: _Format = INT8) -> str:
    if not np.isfinite(amax) or amax <= 0:
        log.warning("tensor %r has range %r on the calibration data; using scale 1/%g", t, amax, fmt.qmax)
        amax = 1.0
    scale = numpy_helper.from_array(np.array(amax / fmt.qmax, dtype=np.float32), _unique(f"{t}_scale", taken))
    inits.append(scale)
    q, dq = _unique(f"{t}_quantized", taken), _unique(f"{t}_dequantized", taken)
    nodes.setdefault(t, []).extend([
        helper.make_node("QuantizeLinear", [t, scale.name, zero], [q], name=_unique(f"{t}_QuantizeLinear", taken)),
        helper.make_node("DequantizeLinear", [q, scale.name, zero], [dq],
                         name=_unique(f"{t}_DequantizeLinear", taken)),
    ])
    return dq


def _quantize_weight(t: str, init: onnx.TensorProto, axis: Optional[int], taken: Set[str],
                     inits: List[onnx.TensorProto], nodes: Dict[str, List[onnx.NodeProto]],
                     zero: str, fmt: _Format = INT8) -> str:
    w = numpy_helper.to_array(init).astype(np.float32)
    if axis is None:
        amax = np.array(np.abs(w).max() if w.size else 0.0, dtype=np.float32)
    else:
        amax = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(axis=1)
    amax = np.where(amax > 0, amax, 1.0).astype(np.float32)
    scale = (amax / fmt.qmax).astype(np.float32)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    tag = "" if axis is None else f"_axis{axis}"
    qname = _unique(f"{t}_{fmt.name}{tag}", taken)
    sname = _unique(f"{t}_scale{tag}", taken)
    inits.append(fmt.tensor(w / scale.reshape(shape), qname))
    inits.append(numpy_helper.from_array(scale, sname))
    dq = _unique(f"{t}_dequantized{tag}", taken)
    inputs = [qname, sname]
    if axis is None:
        inputs.append(zero)
        kwargs: Dict[str, Any] = {}
    else:
        zp = fmt.tensor(np.zeros(w.shape[axis]), _unique(f"{t}_zero_point{tag}", taken))
        inits.append(zp)
        inputs.append(zp.name)
        kwargs = {"axis": axis}
    nodes.setdefault(t, []).append(
        helper.make_node("DequantizeLinear", inputs, [dq], name=_unique(f"{t}_DequantizeLinear{tag}", taken), **kwargs))
    return dq


def calibrate(model: Any, calibration_data: Data, *, method: str = "mse",
              tensors: Optional[Iterable[str]] = None, percentile: float = 99.99,
              num_bins: int = 2048, batch_size: Optional[int] = None,
              cache_dir: Optional[Union[str, os.PathLike]] = None, progress: bool = True,
              exclude_nodes: Iterable[str] = (), clip_bound: Optional[float] = CLIP_BOUND,
              exclusions: Optional[Iterable[str]] = None, equalize: bool = True) -> Any:
    """Measure activation ranges for INT8 quantization.

    Parameters
    ----------
    model
        The float32 model (:class:`trtlab.model.Model`, ModelProto or path).
    calibration_data
        Real inputs: one array, a dict input name -> array (batch on axis 0) or feed dicts.
    method
        ``"mse"`` (per tensor, the threshold with the least INT8 error on the data),
        ``"entropy"`` (TensorRT's KL calibration), ``"minmax"``, ``"percentile"``, or ``"auto"``
        (every method's thresholds in columns ``amax_<method>``; ``amax`` holds mse's).
    tensors
        Tensors to measure; default the activations :func:`quantization_plan` quantizes.
    percentile
        Percentile of ``|x|`` kept by ``method="percentile"``.
    num_bins
        Histogram bins for ``entropy`` and ``percentile``.
    batch_size
        Batch size used when the model's batch dimension is dynamic.
    cache_dir
        Folder for the JSON cache (keyed by model, data and settings); ``None`` disables it.
    progress
        Show progress bars.
    exclude_nodes
        Nodes left unquantized (their inputs are not measured unless another node needs them).
    exclusions
        Placement exclusion rules used to choose the default tensors (see
        :func:`~trtlab.precision.quantization_plan`; default its defaults).
    clip_bound
        Entropy and percentile thresholds whose INT8 error on the data exceeds this many times
        the least error are raised until it does not (the ``note`` column says so, and
        ``method_amax`` keeps the method's own threshold); ``None`` keeps them as the method says.
    equalize
        With the default tensors, equalize depthwise Conv inputs as :func:`quantize_int8` does
        and measure the equalized tensors (rows whose ``equalizes`` names the original tensor and
        ``channel_scale`` holds the per-channel scales; :func:`quantize_int8` reuses them).

    Returns
    -------
    pandas.DataFrame
        One row per tensor: tensor, producer, min, max, absmax, amax, scale (``amax / 127``),
        method, method_amax (the method's own threshold), samples (values seen), note (why a
        tensor fell back to its min-max range or had its clipping bounded). ``.attrs`` holds ``model_hash``, ``data_hash``, ``cache`` (``"hit"``,
        ``"miss"`` or ``"off"``) and ``cache_path``.
    """
    import pandas as pd

    if method not in METHODS:
        raise CalibrationError(f"Unknown calibration method {method!r}; choose one of {METHODS}.")
    if not 0 < percentile <= 100:
        raise CalibrationError(f"percentile must be in (0, 100], got {percentile}.")
    if num_bins < 256:
        raise CalibrationError(f"num_bins must be at least 256 for 8-bit calibration, got {num_bins}.")
    src = as_model(model)
    measured, proto, made, scales = src, src.proto, {}, {}
    feeds = calibration_feeds(src, calibration_data, batch_size)
    if tensors is None:
        proto, _ = _prepared(src)
        plan_kw = dict(per_channel=True, exclude_nodes=exclude_nodes, quantize_residuals=True,
                       exclusions=DEFAULT_EXCLUSIONS if exclusions is None else exclusions,
                       extra_rules=(), name=src.name)
        plan = _plan(proto, **plan_kw)
        scales = _equalization_scales(proto, plan, feeds) if equalize else {}
        if scales:
            _, made = _equalize(proto, plan, scales)
            plan = _plan(proto, **plan_kw)
            measured = as_model(proto)
        else:
            proto = src.proto
        plan = plan[plan["quantize"]]
        names = list(dict.fromkeys(plan.loc[plan["role"] != "weight", "tensor"]))
    else:
        from trtlab.precision import _graphs

        names = list(dict.fromkeys(tensors))
        known = {t.name for t in src.inputs}
        for _, g in _graphs.walk(src.proto.graph):
            known.update(o for n in g.node for o in n.output)
            known.update(i.name for i in g.input)
        unknown = [t for t in names if t not in known]
        if unknown:
            raise CalibrationError(
                f"Cannot calibrate unknown tensor(s) {unknown[:5]} of model {src.name!r}; "
                "tensor names are in Model.nodes['outputs']."
            )
    mhash, dhash = model_hash(src.proto), data_hash(feeds)
    settings: Dict[str, Any] = {"method": method, "num_bins": num_bins, "tensors": sorted(names),
                                "equalized": {made[t]: scales[t].tolist() for t in made}}
    if method in ("percentile", "auto"):
        settings["percentile"] = percentile
    if method in ("entropy", "percentile", "auto"):
        settings["clip_bound"] = clip_bound
    key = hashlib.sha256(json.dumps([mhash, dhash, settings], sort_keys=True).encode()).hexdigest()
    cache_state, path = "off", None
    stats = None
    if cache_dir is not None and names:
        path = _cache_path(cache_dir, key)
        payload = _read_cache(path, key, names)
        if payload is not None:
            stats, cache_state = payload["tensors"], "hit"
        else:
            cache_state = "miss"
    if stats is None:
        stats = _measure(proto, feeds, names, method, num_bins, percentile, progress,
                         clip_bound) if names else {}
        if path is not None:
            _write_cache(path, {"version": CACHE_VERSION, "key": key, "model_hash": mhash,
                                "data_hash": dhash, "settings": settings, "tensors": stats})
    source = {v: k for k, v in made.items()}
    rows = []
    for t in names:
        s = stats[t]
        rows.append({"tensor": t, "producer": measured.producer(t), "min": s["min"], "max": s["max"],
                     "absmax": s["absmax"], "amax": s["amax"], "scale": s["amax"] / QMAX,
                     "method": method, "method_amax": s.get("method_amax", s["amax"]),
                     "samples": s["samples"], "note": s.get("note", ""),
                     "equalizes": source.get(t),
                     "channel_scale": scales[source[t]].tolist() if t in source else None,
                     **{f"amax_{m}": s.get(f"amax_{m}", np.nan) for m in SINGLE_METHODS}})
    frame = pd.DataFrame(rows, columns=["tensor", "producer", "min", "max", "absmax", "amax",
                                        "scale", "method", "method_amax", "samples", "note",
                                        "equalizes", "channel_scale"]
                         + [f"amax_{m}" for m in SINGLE_METHODS])
    frame.attrs.update(model_hash=mhash, data_hash=dhash, cache=cache_state,
                       cache_path=str(path) if path else None, method=method)
    log.info("calibrated %d tensor(s) of %s with %s over %d batch(es) (cache: %s)", len(names),
             src.name, method, len(feeds), cache_state)
    return frame
