"""INT8 quantization as explicit QuantizeLinear / DequantizeLinear pairs.

Placement follows TensorRT's explicit-quantization rules: Q/DQ on the activation inputs and on
the weights of Conv, ConvTranspose, Gemm and MatMul (weights per output channel), and on the
residual input of an ``Add`` that joins a quantized branch, so TensorRT can fuse the addition
into the convolution. Other tensors stay float32: TensorRT propagates INT8 through pooling and
reshapes by itself. Scales are symmetric (zero point 0); weights are stored as int8 with a
``DequantizeLinear``.

Examples
--------
>>> q = quantize_int8(model, {"input": x_calib}, method="entropy")   # doctest: +SKIP
>>> quantization_plan(model)                                         # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from trtlab.errors import CalibrationError, PrecisionError
from trtlab.opinfo import WEIGHTED_OPS
from trtlab.precision._common import Data, as_model, finish, tensor_types, unique_name as _unique
from trtlab.precision.calibration import QMAX, calibrate_tensors

log = logging.getLogger(__name__)

__all__ = ["WEIGHTED_OPS", "quantization_plan", "quantize_int8"]

#: Ops whose inputs and weights TensorRT runs in INT8 when they are fed by Q/DQ pairs.
#: Ops between a weighted op and an ``Add`` that TensorRT folds into the weighted op.
_FOLDED = ("BatchNormalization",)
PLAN_COLUMNS = ["tensor", "role", "node", "op_type", "input_index", "axis", "reason"]


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


def quantization_plan(model: Any, *, per_channel: bool = True, exclude_nodes: Iterable[str] = (),
                      quantize_residuals: bool = True) -> Any:
    """Where :func:`quantize_int8` puts Q/DQ pairs, and why.

    Returns
    -------
    pandas.DataFrame
        One row per quantized (node, input): tensor, role (``activation``, ``weight`` or
        ``residual``), node, op_type, input_index, axis (``None`` = per tensor), reason.
    """
    import pandas as pd

    src = as_model(model)
    exclude = set(exclude_nodes)
    unknown = sorted(exclude - set(src.node_names))
    if unknown:
        raise PrecisionError(
            f"exclude_nodes names {unknown[:5]} not in model {src.name!r}; node names are in "
            "Model.node_names."
        )
    types = tensor_types(src.proto)
    inits = src.initializers
    rows: List[Dict[str, Any]] = []
    quantized_nodes: Set[str] = set()
    for node in src.proto.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in WEIGHTED_OPS or node.name in exclude:
            continue
        if any(types.get(x) != TensorProto.FLOAT for x in node.input[:2]):
            continue
        quantized_nodes.add(node.name)
        for idx in (0, 1):
            x = node.input[idx]
            if x in inits:
                axis, why = (None, "per tensor (per_channel=False)")
                if per_channel:
                    axis, why = _weight_axis(node, numpy_helper.to_array(inits[x]))
                rows.append(dict(tensor=x, role="weight", node=node.name, op_type=node.op_type,
                                 input_index=idx, axis=axis, reason=f"{node.op_type} weight, {why}"))
            elif src.is_constant(x):
                continue
            else:
                rows.append(dict(tensor=x, role="activation", node=node.name, op_type=node.op_type,
                                 input_index=idx, axis=None,
                                 reason=f"input {idx} of {node.op_type}: TensorRT runs it in INT8"))
    if quantize_residuals:
        rows.extend(_residual_rows(src, quantized_nodes, exclude, types))
    frame = pd.DataFrame(rows, columns=PLAN_COLUMNS)
    frame["axis"] = pd.array([r["axis"] for r in rows], dtype="Int64")
    frame["input_index"] = frame["input_index"].astype(int)
    return frame


def _residual_rows(src: Any, quantized: Set[str], exclude: Set[str],
                   types: Dict[str, int]) -> List[Dict[str, Any]]:
    def weighted_source(tensor: str) -> Optional[str]:
        prod = src.producer(tensor)
        while prod is not None and src.node(prod).op_type in _FOLDED:
            prod = src.producer(src.node(prod).input[0])
        return prod if prod in quantized else None

    rows = []
    for node in src.proto.graph.node:
        if node.op_type != "Add" or node.name in exclude or len(node.input) != 2:
            continue
        a, b = node.input
        if src.is_constant(a) or src.is_constant(b) or types.get(a) != TensorProto.FLOAT \
                or types.get(b) != TensorProto.FLOAT:
            continue
        fa, fb = weighted_source(a), weighted_source(b)
        if fa is None and fb is None:
            continue
        if fa is not None and fb is not None:
            # fuse into the later branch; the earlier branch is the residual
            idx = 0 if src.index(fa) < src.index(fb) else 1
        else:
            idx = 1 if fa is not None else 0
        fused = fa if idx == 1 else fb
        rows.append(dict(tensor=node.input[idx], role="residual", node=node.name, op_type="Add",
                         input_index=idx, axis=None,
                         reason=f"residual input of Add, so TensorRT fuses the Add into {fused}"))
    return rows


def calibrate(model: Any, calibration_data: Any, *, tensors: Optional[Iterable[str]] = None,
              exclude_nodes: Iterable[str] = (), **kwargs: Any) -> Any:
    """Measure activation ranges for INT8 quantization.

    Parameters
    ----------
    model
        The float32 model (:class:`trtlab.model.Model`, ModelProto or path).
    calibration_data
        Real inputs: one array, a dict input name -> array (batch on axis 0) or feed dicts.
    tensors
        Tensors to measure; default the activations :func:`quantization_plan` quantizes.
    exclude_nodes
        Nodes left unquantized (their inputs are not measured unless another node needs them).
    **kwargs
        ``method``, ``percentile``, ``num_bins``, ``batch_size``, ``cache_dir``, ``progress``:
        see :func:`trtlab.precision.calibration.calibrate_tensors`.

    Returns
    -------
    pandas.DataFrame
        One row per tensor (see :func:`~trtlab.precision.calibration.calibrate_tensors`).
    """
    if tensors is None:
        plan = quantization_plan(as_model(model), exclude_nodes=exclude_nodes)
        tensors = list(dict.fromkeys(plan.loc[plan["role"] != "weight", "tensor"]))
    return calibrate_tensors(model, calibration_data, tensors=tensors, **kwargs)


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


def quantize_int8(model: Any, calibration_data: Union[Data, Any], *, method: str = "entropy",
                  per_channel: bool = True, percentile: float = 99.99, num_bins: int = 2048,
                  cache_dir: Optional[Union[str, os.PathLike]] = None, progress: bool = True,
                  exclude_nodes: Iterable[str] = (), quantize_residuals: bool = True,
                  batch_size: Optional[int] = None) -> Any:
    """Insert INT8 Q/DQ pairs with scales calibrated on real data.

    Parameters
    ----------
    model
        The float32 model.
    calibration_data
        Real inputs (one array, dict input name -> array, or feed dicts), or a table returned by
        :func:`calibrate` to reuse its ranges.
    method
        ``"entropy"`` (TensorRT's KL calibration), ``"minmax"`` or ``"percentile"``.
    per_channel
        Weights scaled per output channel (else per tensor).
    percentile, num_bins, cache_dir, progress, batch_size
        Passed to :func:`calibrate`.
    exclude_nodes
        Nodes kept in float32 (no Q/DQ on their inputs).
    quantize_residuals
        Quantize the residual input of an ``Add`` fed by a quantized branch.

    Returns
    -------
    trtlab.model.Model
        The Q/DQ model. Its ``metadata_props`` record ``trtlab.precision`` and the method.
    """
    import pandas as pd

    src = as_model(model)
    src, per_channel, opset_note = _qdq_opset(src, per_channel)
    plan = quantization_plan(src, per_channel=per_channel, exclude_nodes=exclude_nodes,
                             quantize_residuals=quantize_residuals)
    activations = list(dict.fromkeys(plan.loc[plan["role"] != "weight", "tensor"]))
    amax = _calibration_table(calibration_data, src, activations, method=method,
                              percentile=percentile, num_bins=num_bins, cache_dir=cache_dir,
                              progress=progress, batch_size=batch_size) if activations else {}
    proto = onnx.ModelProto()
    proto.CopyFrom(src.proto)
    graph = proto.graph
    taken = {n.name for n in graph.node} | {o for n in graph.node for o in n.output} | \
        {i.name for i in graph.input} | {t.name for t in graph.initializer}
    inits = {t.name: t for t in graph.initializer}
    replace: Dict[Tuple[str, int], str] = {}
    dq_of: Dict[Tuple[str, Optional[int]], str] = {}
    qdq_nodes: Dict[str, List[onnx.NodeProto]] = {}
    new_inits: List[onnx.TensorProto] = []
    new_inits.append(numpy_helper.from_array(np.array(0, dtype=np.int8),
                                             _unique("trtlab_int8_zero_point", taken)))
    zero = new_inits[0].name

    for row in plan.itertuples(index=False):
        t, axis = row.tensor, row.axis
        axis = None if axis is None or axis is pd.NA else int(axis)
        key = (t, axis if row.role == "weight" else None)
        if key not in dq_of:
            if row.role == "weight":
                dq_of[key] = _quantize_weight(t, inits[t], axis, taken, new_inits, qdq_nodes, zero)
            else:
                dq_of[key] = _quantize_activation(t, amax[t], taken, new_inits, qdq_nodes, zero)
        replace[(row.node, int(row.input_index))] = dq_of[key]

    nodes: List[onnx.NodeProto] = []
    placed: Set[str] = set()
    for vi in graph.input:
        nodes.extend(qdq_nodes.get(vi.name, []))
        placed.add(vi.name)
    for t in qdq_nodes:
        if t in inits:
            nodes.extend(qdq_nodes[t])
            placed.add(t)
    for node in graph.node:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        for i in range(len(new.input)):
            if (node.name, i) in replace:
                new.input[i] = replace[(node.name, i)]
        nodes.append(new)
        for y in node.output:
            if y in qdq_nodes and y not in placed:
                nodes.extend(qdq_nodes[y])
                placed.add(y)
    from trtlab.model import outer_reads as _subgraph_outer_refs

    # Loop/If/Scan bodies read initializers of the main graph too.
    used = {x for n in nodes for x in n.input} | {x for n in nodes for x in _subgraph_outer_refs(n)}
    graph.initializer.extend(t for t in new_inits if t.name in used)
    kept = [t for t in graph.initializer if t.name in used or t.name in {o.name for o in graph.output}]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    for k, v in (("trtlab.precision", "int8"), ("trtlab.calibration", method if activations else "none")):
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    if opset_note:
        entry = proto.metadata_props.add()
        entry.key, entry.value = "trtlab.opset", opset_note
    n_w = int((plan["role"] == "weight").sum())
    log.info("quantize_int8(%s): %d activation and %d weight Q/DQ pair(s) (%s calibration)",
             src.name, len(activations), n_w, method)
    result = finish(proto, f"{src.name}_int8")
    if opset_note:
        result.notes.append(opset_note)
    return result


#: Opset from which DequantizeLinear takes a per-axis scale (``axis``).
PER_AXIS_OPSET = 13
#: Opset that introduced QuantizeLinear / DequantizeLinear.
QDQ_OPSET = 10


def _qdq_opset(src: Any, per_channel: bool) -> Tuple[Any, bool, Optional[str]]:
    """A model whose opset carries the Q/DQ nodes about to be inserted.

    Below opset 13 (per-axis Q/DQ) the model is converted to opset 13 with
    ``onnx.version_converter`` (the converter's adapters keep each op's meaning); if that fails,
    weights fall back to per-tensor scales on opset 10..12, and below opset 10 (no Q/DQ at all)
    a :class:`PrecisionError` says what to do. Returns the model, the per-channel flag actually
    used and a note saying what changed (``None`` when nothing did).
    """
    from trtlab.model import load

    opset = src.opset or PER_AXIS_OPSET
    need = PER_AXIS_OPSET if per_channel else QDQ_OPSET
    if opset >= need:
        return src, per_channel, None
    try:
        from onnx import version_converter

        converted = version_converter.convert_version(src.proto, PER_AXIS_OPSET)
        converted.ir_version = max(converted.ir_version, 7)
        onnx.checker.check_model(converted)
        out = load(converted, name=src.name)
    except Exception as exc:  # the converter raises RuntimeError / ValidationError per adapter
        if opset >= QDQ_OPSET:
            note = (f"opset {opset} has no per-axis Q/DQ and onnx.version_converter could not raise it "
                    f"to {PER_AXIS_OPSET} ({str(exc).splitlines()[0][:160]}): weights use per-tensor scales")
            log.info("%s: %s", src.name, note)
            return src, False, note
        raise PrecisionError(
            f"Model {src.name!r} has ai.onnx opset {opset}, older than QuantizeLinear/DequantizeLinear "
            f"(opset {QDQ_OPSET}), and onnx.version_converter could not convert it to opset "
            f"{PER_AXIS_OPSET}: {str(exc).splitlines()[0][:200]}. Re-export the model at opset >= 13."
        ) from exc
    note = (f"ai.onnx opset raised from {opset} to {PER_AXIS_OPSET} with onnx.version_converter "
            f"({'per-axis' if per_channel else 'Q/DQ'} nodes need opset {need})")
    log.info("%s: %s", src.name, note)
    return out, per_channel, note


def _quantize_activation(t: str, amax: float, taken: Set[str], inits: List[onnx.TensorProto],
                         nodes: Dict[str, List[onnx.NodeProto]], zero: str) -> str:
    if not np.isfinite(amax) or amax <= 0:
        log.warning("tensor %r has range %r on the calibration data; using scale 1/127", t, amax)
        amax = 1.0
    scale = numpy_helper.from_array(np.array(amax / QMAX, dtype=np.float32), _unique(f"{t}_scale", taken))
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
                     zero: str) -> str:
    w = numpy_helper.to_array(init).astype(np.float32)
    if axis is None:
        amax = np.array(np.abs(w).max() if w.size else 0.0, dtype=np.float32)
    else:
        amax = np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(axis=1)
    amax = np.where(amax > 0, amax, 1.0).astype(np.float32)
    scale = (amax / QMAX).astype(np.float32)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -QMAX, QMAX).astype(np.int8)
    tag = "" if axis is None else f"_axis{axis}"
    qname = _unique(f"{t}_int8{tag}", taken)
    sname = _unique(f"{t}_scale{tag}", taken)
    inits.append(numpy_helper.from_array(q, qname))
    inits.append(numpy_helper.from_array(scale, sname))
    dq = _unique(f"{t}_dequantized{tag}", taken)
    inputs = [qname, sname]
    if axis is None:
        inputs.append(zero)
        kwargs: Dict[str, Any] = {}
    else:
        zp = numpy_helper.from_array(np.zeros(w.shape[axis], dtype=np.int8), _unique(f"{t}_zero_point{tag}", taken))
        inits.append(zp)
        inputs.append(zp.name)
        kwargs = {"axis": axis}
    nodes.setdefault(t, []).append(
        helper.make_node("DequantizeLinear", inputs, [dq], name=_unique(f"{t}_DequantizeLinear{tag}", taken), **kwargs))
    return dq
