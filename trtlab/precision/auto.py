"""Mixed precision by measurement: the fewest float32 nodes that meet an accuracy target.

:func:`auto_mixed_precision` converts the model (FP16, BF16, INT8 or FP8), scores it against
the float32 model on the data, and while the score misses the target asks
:func:`trtlab.localize.localize_error` which nodes introduce the most error, keeps those in
float32 (FP16/BF16: ``keep_fp32_nodes``; INT8/FP8: ``exclude_nodes``), doubling how many it
adds each round. A last pass drops every kept node the target does not need. Every kept node
is a row with the error it introduced and the score after each step.

>>> model, kept = auto_mixed_precision(m, x, target=0.999)          # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import PrecisionError
from ._common import Data, as_model, concat, feed_list, run_session

log = logging.getLogger(__name__)

__all__ = ["auto_mixed_precision", "cosine_metric"]

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
    from ..ort import session
    from .fp16 import ort_variant

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

    from ..localize import localize_error

    if precision not in _FLOAT_MODES + _QUANT_MODES:
        raise PrecisionError(f"auto_mixed_precision(precision={precision!r}); use one of "
                             f"{', '.join(_FLOAT_MODES + _QUANT_MODES)}.")
    src = as_model(model)
    metric = metric or cosine_metric
    feeds = feed_list(src, data, batch_size=batch_size, limit=max_samples, error=PrecisionError)
    calib = calibration_data if calibration_data is not None else feeds
    reference = _outputs(src, feeds)

    def convert(keep: Sequence[str]) -> Any:
        from . import int8, lowp
        from .fp16 import to_fp16

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
    from .fp16 import FP16_OPS

    return {n.name for n in src.proto.graph.node if n.op_type in FP16_OPS}
