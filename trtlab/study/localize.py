"""Where does reduced precision go wrong? Error localisation per ONNX node.

:func:`localize_error` compares intermediate tensors of a reduced-precision candidate with the
FP32 model, only at tensors that exist in both (same names). Tensors are exposed as outputs a
chunk at a time, never all at once, so memory stays bounded. The report is ordered by execution
and marks where the error first grows; :func:`suggest_fp32_nodes` turns it into a keep-list for
:func:`trtlab.precision.to_fp16` / :func:`trtlab.precision.quantize_int8`, and
:func:`auto_mixed_precision` repeats localize-and-keep until an accuracy target is met: the
fewest float32 nodes found, each a row with the error it introduced.

Examples
--------
>>> report = localize_error(model, quantize_int8(model, x_calib), x_test)   # doctest: +SKIP
>>> quantize_int8(model, x_calib, exclude_nodes=suggest_fp32_nodes(report))  # doctest: +SKIP
>>> model, kept = auto_mixed_precision(m, x, target=0.999)                   # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import onnx

from trtlab._progress import progress as progress_bar
from trtlab.errors import CompareError, PrecisionError
from trtlab.precision._common import Data, as_model, concat, feed_list, run_session, tensor_types

log = logging.getLogger(__name__)

__all__ = ["localize_error", "suggest_fp32_nodes", "common_tensors", "auto_mixed_precision", "cosine_metric",
           "LOCALIZE_COLUMNS", "AUTO_COLUMNS"]

LOCALIZE_COLUMNS = ["order", "tensor", "node", "op_type", "max_abs", "mean_abs", "rel_error",
                    "cosine", "upstream_error", "introduced", "growth", "grows", "first_growth"]
_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
           onnx.TensorProto.BFLOAT16}


def common_tensors(reference: Any, candidate: Any) -> List[str]:
    """Float tensors computed by nodes of both models (same name), in the reference's order."""
    ref = as_model(reference, "reference", read_weights=False)
    cand = as_model(candidate, "candidate", read_weights=False)
    rtypes, ctypes = tensor_types(ref.proto), tensor_types(cand.proto)
    produced = {o for n in cand.proto.graph.node for o in n.output if o}
    out = []
    for node in ref.proto.graph.node:
        if node.op_type == "Constant":
            continue
        for t in node.output:
            if t and t in produced and rtypes.get(t) in _FLOATS and ctypes.get(t) in _FLOATS:
                out.append(t)
    return out


def _with_outputs(model: Any, tensors: List[str]) -> onnx.ModelProto:
    """``model``'s proto with ``tensors`` as its outputs (external weights stay references)."""
    out = onnx.ModelProto()
    out.CopyFrom(model.proto)
    del out.graph.output[:]
    out.graph.output.extend(onnx.ValueInfoProto(name=t) for t in tensors)
    return out


class _Acc:
    def __init__(self) -> None:
        self.max_abs = 0.0
        self.sum_abs = 0.0
        self.count = 0
        self.sq_diff = 0.0
        self.sq_ref = 0.0
        self.sq_cand = 0.0
        self.dot = 0.0
        self.shape_mismatch = False

    def add(self, ref: np.ndarray, cand: np.ndarray) -> None:
        if ref.shape != cand.shape:
            self.shape_mismatch = True
            return
        r, c = ref.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
        d = np.abs(r - c)
        if d.size:
            self.max_abs = max(self.max_abs, float(d.max()))
        self.sum_abs += float(d.sum())
        self.count += d.size
        self.sq_diff += float(np.dot(r - c, r - c))
        self.sq_ref += float(np.dot(r, r))
        self.sq_cand += float(np.dot(c, c))
        self.dot += float(np.dot(r, c))

    def row(self) -> Dict[str, float]:
        rel = np.sqrt(self.sq_diff) / np.sqrt(self.sq_ref) if self.sq_ref > 0 else \
            (0.0 if self.sq_diff == 0 else float("inf"))
        denom = np.sqrt(self.sq_ref * self.sq_cand)
        cos = self.dot / denom if denom > 0 else (1.0 if self.sq_diff == 0 else 0.0)
        return {"max_abs": self.max_abs, "mean_abs": self.sum_abs / max(self.count, 1),
                "rel_error": float(rel), "cosine": float(cos)}


def localize_error(model: Any, candidate_model: Any, data: Data, *,
                   tensors: Optional[Iterable[str]] = None, chunk_size: int = 16,
                   max_samples: Optional[int] = 256, batch_size: Optional[int] = None,
                   tolerance: float = 0.05, growth_factor: float = 2.0,
                   progress: bool = True) -> Any:
    """Compare intermediate tensors of a candidate with the FP32 model.

    Parameters
    ----------
    model
        The FP32 reference model.
    candidate_model
        The reduced-precision model (from :func:`~trtlab.precision.to_fp16` or
        :func:`~trtlab.precision.quantize_int8`); tensors keep their names there.
    data
        Inputs (one array, dict input name -> array, or feed dicts).
    tensors
        Tensors to compare, e.g. segment boundaries (``Partition.boundaries()``); default every
        tensor both models compute.
    chunk_size
        How many tensors are exposed as outputs per ONNX Runtime session.
    max_samples
        Samples used (mapping data); ``None`` for all.
    batch_size
        Batch size for dynamic-batch models.
    tolerance
        Relative L2 error (``||candidate - reference|| / ||reference||``) above which a tensor
        counts as wrong.
    growth_factor
        A tensor "grows" when its error is above ``tolerance`` and at least this many times the
        error of the tensors its node reads.
    progress
        Show a progress bar over chunks.

    Returns
    -------
    pandas.DataFrame
        One row per compared tensor in execution order: order, tensor, node, op_type, max_abs,
        mean_abs, rel_error, cosine, upstream_error (largest error among the node's inputs),
        introduced (rel_error - upstream_error), growth (ratio), grows, first_growth (True on
        the first growing row). ``.attrs['first_growth']`` names that node (or ``None``).
    """
    import pandas as pd

    from trtlab.backends.onnxruntime.session import session

    ref = as_model(model, "reference", read_weights=False)
    cand = as_model(candidate_model, "candidate", read_weights=False)
    available = common_tensors(ref, cand)
    if tensors is None:
        chosen = available
    else:
        wanted = list(dict.fromkeys(tensors))
        missing = [t for t in wanted if t not in available]
        if missing:
            raise CompareError(
                f"Tensor(s) {missing[:5]} are not computed by both models; {len(available)} "
                f"tensors are (see trtlab.study.localize.common_tensors)."
            )
        order = {t: i for i, t in enumerate(available)}
        chosen = sorted(wanted, key=order.__getitem__)
    if not chosen:
        raise CompareError("The two models share no intermediate tensor names to compare.")
    if chunk_size < 1:
        raise CompareError(f"chunk_size must be positive, got {chunk_size}.")
    feeds = feed_list(ref, data, batch_size=batch_size, limit=max_samples, error=CompareError)
    cand_feeds = [{i.name: f[i.name].astype(i.dtype) if i.dtype is not None else f[i.name]
                   for i in cand.inputs if i.name in f} for f in feeds]
    accs = {t: _Acc() for t in chosen}
    chunks = [chosen[i:i + chunk_size] for i in range(0, len(chosen), chunk_size)]
    for chunk in progress_bar(chunks, desc="localizing error", enabled=progress):
        rs = session(_with_outputs(ref, chunk), providers=["CPUExecutionProvider"], base_dir=ref.base_dir)
        cs = session(_with_outputs(cand, chunk), providers=["CPUExecutionProvider"], base_dir=cand.base_dir)
        for rf, cf in zip(feeds, cand_feeds):
            for t, a, b in zip(chunk, rs.run(chunk, rf), cs.run(chunk, cf)):
                accs[t].add(np.asarray(a), np.asarray(b))
    return _report(ref, chosen, accs, tolerance, growth_factor, pd)


def _report(ref: Any, chosen: List[str], accs: Dict[str, _Acc], tolerance: float,
            growth_factor: float, pd: Any) -> Any:
    err: Dict[str, float] = {}
    measured = {t: accs[t].row() for t in chosen if not accs[t].shape_mismatch}
    for node in ref.proto.graph.node:
        ups = [err.get(x, 0.0) for x in node.input if x]
        upstream = max(ups, default=0.0)
        for t in node.output:
            if t:
                err[t] = measured[t]["rel_error"] if t in measured else upstream
    index = {n: i for i, n in enumerate(ref.node_names)}
    rows = []
    for t in chosen:
        if t not in measured:
            log.info("tensor %s has different shapes in the two models; not compared", t)
            continue
        node = ref.producer(t)
        ups = [err.get(x, 0.0) for x in ref.node(node).input if x]
        upstream = max(ups, default=0.0)
        m = measured[t]
        ratio = m["rel_error"] / upstream if upstream > 0 else (float("inf") if m["rel_error"] > 0 else 1.0)
        rows.append({"order": index[node], "tensor": t, "node": node, "op_type": ref.node(node).op_type,
                     **m, "upstream_error": upstream, "introduced": m["rel_error"] - upstream,
                     "growth": ratio, "grows": bool(m["rel_error"] > tolerance and ratio >= growth_factor)})
    frame = pd.DataFrame(rows, columns=LOCALIZE_COLUMNS[:-1]).sort_values("order", kind="stable")
    frame = frame.reset_index(drop=True)
    first = frame.index[frame["grows"]]
    frame["first_growth"] = False
    if len(first):
        frame.loc[first[0], "first_growth"] = True
    frame.attrs["first_growth"] = frame.loc[first[0], "node"] if len(first) else None
    frame.attrs.update(tolerance=tolerance, growth_factor=growth_factor)
    return frame


def suggest_fp32_nodes(report: Any, candidate_model: Any = None, data: Optional[Data] = None, *,
                       top_k: int = 3, **kwargs: Any) -> List[str]:
    """Nodes to hold in FP32: those that introduce the most error where it grows.

    Parameters
    ----------
    report
        A :func:`localize_error` table, or the FP32 model (then ``candidate_model`` and ``data``
        are passed to :func:`localize_error` with ``kwargs``).
    top_k
        At most this many nodes, largest introduced error first.

    Returns
    -------
    list of str
        Node names for ``keep_fp32_nodes=`` / ``exclude_nodes=`` (empty when nothing grows).
    """
    import pandas as pd

    if not isinstance(report, pd.DataFrame):
        if candidate_model is None or data is None:
            raise CompareError("suggest_fp32_nodes needs a localize_error report, or the model, "
                               "candidate_model and data.")
        report = localize_error(report, candidate_model, data, **kwargs)
    if not {"node", "grows", "introduced"} <= set(report.columns):
        raise CompareError("The report lacks node/grows/introduced columns; pass localize_error's table.")
    growing = report[report["grows"]].sort_values("introduced", ascending=False)
    return list(dict.fromkeys(growing["node"]))[:top_k]


# ----------------------------------------------------------------------------------------------
# mixed precision by measurement
# ----------------------------------------------------------------------------------------------

Metric = Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], float]
AUTO_COLUMNS = ["node", "op_type", "round", "introduced_error", "score_after", "kept", "reason"]
_FLOAT_MODES = ("fp16", "bf16")
_QUANT_MODES = ("int8", "fp8")


def cosine_metric(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> float:
    """The smallest cosine similarity over the float outputs (1.0 = identical direction)."""
    worst = 1.0
    for name, ref in reference.items():
        if name not in candidate or not np.issubdtype(np.asarray(ref).dtype, np.floating):
            continue
        a = np.asarray(ref, dtype=np.float64).ravel()
        b = np.asarray(candidate[name], dtype=np.float64).ravel()
        if not np.all(np.isfinite(b)):
            return -1.0  # inf or NaN where the reference is finite: the worst score
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        cos = 1.0 if na == 0 and nb == 0 else float(a @ b / (na * nb)) if na and nb else 0.0
        worst = min(worst, cos)
    return worst


def _outputs(model: Any, feeds: Sequence[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    from trtlab.backends.onnxruntime.session import session
    from trtlab.precision import ort_variant

    runnable = model
    if model.proto.metadata_props and any(p.key == "trtlab.precision" and p.value in _FLOAT_MODES
                                          for p in model.proto.metadata_props):
        runnable, _ = ort_variant(model)
    sess = session(runnable, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_inputs()]
    cast = [{n: f[n] for n in names} for f in feeds]
    return concat(run_session(sess, cast))


def auto_mixed_precision(model: Any, data: Data, metric: Optional[Metric] = None, target: float = 0.999,
                         *, precision: str = "fp16", calibration_data: Optional[Data] = None,
                         max_rounds: int = 6, max_samples: Optional[int] = 64,
                         batch_size: Optional[int] = None, progress: bool = False,
                         **convert_kwargs: Any) -> Tuple[Any, Any]:
    """The converted model with the fewest float32 nodes found that meets ``target``.

    Parameters
    ----------
    model
        The float32 model.
    data
        Inputs the score is measured on (and the error localized on).
    metric
        ``metric(reference_outputs, candidate_outputs) -> float``, higher is better, on dicts
        output name -> array over all of ``data``; default :func:`cosine_metric`.
    target
        The score to reach.
    precision
        ``"fp16"``, ``"bf16"``, ``"int8"`` or ``"fp8"``.
    calibration_data
        Real inputs for INT8/FP8 (default: ``data``).
    max_rounds
        Localize-and-keep rounds before giving up (round ``r`` keeps up to ``2**r`` more nodes).
    max_samples
        Samples used for scoring and localizing.
    convert_kwargs
        Passed to the conversion (e.g. ``method=`` for INT8).

    Returns
    -------
    (trtlab.model.Model, pandas.DataFrame)
        The model, and one row per node tried: node, op_type, round, introduced_error,
        score_after (the score once it was kept), kept (still kept after the last pass),
        reason. ``.attrs`` holds ``score``, ``baseline_score`` (nothing kept), ``target`` and
        ``met``.
    """
    import pandas as pd

    if precision not in _FLOAT_MODES + _QUANT_MODES:
        raise PrecisionError(f"auto_mixed_precision(precision={precision!r}); use one of "
                             f"{', '.join(_FLOAT_MODES + _QUANT_MODES)}.")
    src = as_model(model)
    metric = metric or cosine_metric
    feeds = feed_list(src, data, batch_size=batch_size, limit=max_samples, error=PrecisionError)
    calib = calibration_data if calibration_data is not None else feeds
    reference = _outputs(src, feeds)

    def convert(keep: Sequence[str]) -> Any:
        from trtlab.precision import int8, lowp
        from trtlab.precision.fp16 import to_fp16

        if precision == "fp16":
            return to_fp16(src, keep_fp32_nodes=keep, **convert_kwargs)
        if precision == "bf16":
            return lowp.to_bf16(src, keep_fp32_nodes=keep, **convert_kwargs)
        fn = int8.quantize_int8 if precision == "int8" else lowp.quantize_fp8
        return fn(src, calib, exclude_nodes=keep, progress=progress, **convert_kwargs)

    def score(candidate: Any) -> float:
        return float(metric(reference, _outputs(candidate, feeds)))

    keep: List[str] = []
    rows: List[Dict[str, Any]] = []
    current = convert(keep)
    baseline = best = score(current)
    eligible = _eligible(src, current, precision)
    log.info("auto_mixed_precision(%s, %s): score %.6f with nothing kept (target %g)", src.name,
             precision, baseline, target)
    for rnd in range(max_rounds):
        if best >= target:
            break
        report = localize_error(src, current, feeds, progress=progress)
        report = report[report["node"].isin(eligible) & ~report["node"].isin(keep)]
        ranked = report.sort_values("introduced", ascending=False).drop_duplicates("node")
        ranked = ranked[ranked["introduced"] > 0]
        if ranked.empty:
            break
        chosen = ranked.head(2 ** rnd)
        for r in chosen.itertuples(index=False):
            keep.append(r.node)
            rows.append(dict(node=r.node, op_type=r.op_type, round=rnd + 1,
                             introduced_error=float(r.introduced), score_after=float("nan"), kept=True,
                             reason=f"introduces relative error {r.introduced:.3g} (growth "
                                    f"{r.growth:.3g}x over its inputs) in round {rnd + 1}"))
        current = convert(keep)
        best = score(current)
        for row in rows[-len(chosen):]:
            row["score_after"] = best
        log.info("auto_mixed_precision(%s): round %d keeps %d node(s), score %.6f", src.name, rnd + 1,
                 len(keep), best)
    if best >= target and len(keep) > 1:
        # drop the kept nodes the target does not need (latest additions tried first)
        for row in reversed(rows):
            trial = [n for n in keep if n != row["node"]]
            candidate = convert(trial)
            value = score(candidate)
            if value >= target:
                keep, current, best = trial, candidate, value
                row["kept"] = False
                row["reason"] += f"; dropped again: the target holds without it ({value:.6f})"
    met = best >= target
    if not met:
        log.warning("auto_mixed_precision(%s, %s): target %g not met after %d round(s); best score "
                    "%.6f with %d node(s) kept", src.name, precision, target, max_rounds, best, len(keep))
    table = pd.DataFrame(rows, columns=AUTO_COLUMNS)
    table.attrs.update(score=best, baseline_score=baseline, target=target, met=met, precision=precision)
    current.notes.append(f"auto_mixed_precision: {len(keep)} node(s) kept in float32 for "
                         f"score {best:.6f} (target {target:g})")
    return current, table


def _eligible(src: Any, converted: Any, precision: str) -> set:
    """Reference nodes whose precision a keep/exclude list changes."""
    if precision in _QUANT_MODES:
        plan = getattr(converted, "quantization_plan", None)
        if plan is None:
            return set()
        return set(plan.loc[plan["quantize"], "node"])
    from trtlab.precision.fp16 import FP16_OPS

    return {n.name for n in src.proto.graph.node if n.op_type in FP16_OPS}
