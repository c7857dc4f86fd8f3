"""INT8 calibration: activation ranges from real data (mse, min-max, entropy, percentile).

Ranges are measured by running the float32 model in ONNX Runtime with only the tensors to be
quantized added as outputs (tensors inside ``If``/``Loop`` bodies leave through extra outputs).
``entropy`` is TensorRT's calibration: a histogram of absolute values per tensor and the
clipping threshold whose 128-level quantized distribution has the smallest KL divergence from
the measured one. ``mse`` picks, per tensor, the threshold whose INT8 rounding and clipping
error over the data is smallest (the default: it never clips a tensor whose outliers matter).
``clip_bound`` (default :data:`CLIP_BOUND`) keeps entropy and percentile from clipping one tensor
much harder than the least-error threshold would. Results are cached as JSON keyed by the model,
the data and the settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnx

from trtlab._progress import progress as progress_bar
from trtlab.errors import CalibrationError
from trtlab.model import TrtlabWarning
from trtlab.precision._common import Feeds

log = logging.getLogger(__name__)

__all__ = ["METHODS", "CLIP_BOUND", "entropy_amax", "percentile_amax", "mse_amax", "quantization_mse"]

#: Methods that each give one threshold per tensor.
SINGLE_METHODS = ("mse", "entropy", "minmax", "percentile")
#: ``auto`` measures every single method's thresholds; quantize_int8 keeps the method whose
#: quantized model has the least output error on the calibration data.
METHODS = ("auto",) + SINGLE_METHODS
CACHE_VERSION = 5
QMAX = 127.0
#: Default ``clip_bound`` for INT8: an entropy or percentile threshold may have at most twice the
#: least INT8 error on its tensor (measured on PP-OCRv4 rec, where 4x let entropy's output error
#: reach 8x the least method's, spread over many tensors).
CLIP_BOUND = 2.0
#: Entropy calibration needs this many values per histogram bin on average; sparser histograms
#: are merged down to 512 bins, and below that the tensor falls back to its min-max range.
MIN_PER_BIN = 4


def entropy_amax(hist: np.ndarray, edges: np.ndarray, *, num_quantized_bins: int = 128,
                 start_bin: int = 128, stride: int = 1) -> float:
    """Clipping threshold minimising KL(reference || quantized) over a histogram of ``|x|``.

    For each candidate threshold bin ``i`` the reference distribution is ``hist[:i]`` with all
    counts beyond ``i`` folded into its last bin; the candidate is ``hist[:i]`` merged into
    ``num_quantized_bins`` levels and spread back over the non-empty bins. The first bin (the
    zeros that follow a ReLU) is given its neighbour's count so it does not dominate.
    """
    bins = hist.astype(np.float64).copy()
    n = len(bins)
    if n <= start_bin or bins.sum() == 0:
        return float(edges[-1])
    if n > 1:
        bins[0] = bins[1]
    suffix = np.concatenate([np.cumsum(bins[::-1])[::-1], [0.0]])
    best_i, best_kl = n, np.inf
    for i in range(start_bin, n + 1, stride):
        ref = bins[:i].copy()
        ref[-1] += suffix[i]
        level = (np.arange(i) * num_quantized_bins) // i
        nonzero = bins[:i] != 0
        sums = np.bincount(level, weights=bins[:i], minlength=num_quantized_bins)
        counts = np.bincount(level[nonzero], minlength=num_quantized_bins)
        mean = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
        cand = np.where(nonzero, mean[level], 0.0)
        ptot, qtot = ref.sum(), cand.sum()
        if ptot == 0 or qtot == 0:
            continue
        p, q = ref / ptot, cand / qtot
        mask = p > 0
        if np.any(q[mask] == 0):
            continue
        kl = float(np.sum(p[mask] * np.log(p[mask] / q[mask])))
        if kl <= best_kl:
            best_kl, best_i = kl, i
    return float(edges[best_i])


def percentile_amax(hist: np.ndarray, edges: np.ndarray, percentile: float) -> float:
    """Upper edge of the bin holding the ``percentile`` % quantile of ``|x|``."""
    total = hist.sum()
    if total == 0:
        return float(edges[-1])
    cdf = np.cumsum(hist) / total
    idx = int(np.searchsorted(cdf, percentile / 100.0))
    return float(edges[min(idx + 1, len(edges) - 1)])


def quantization_mse(hist: np.ndarray, edges: np.ndarray, amax: np.ndarray) -> np.ndarray:
    """Mean squared INT8 error of the values in a histogram of ``|x|`` for each threshold in ``amax``.

    Each bin is represented by its centre; a value is rounded to the nearest of 127 levels
    below the threshold and clipped above it.
    """
    centres = (edges[:-1] + edges[1:]) / 2.0
    weights = hist.astype(np.float64)
    total = weights.sum()
    amax = np.atleast_1d(np.asarray(amax, dtype=np.float64))
    if total == 0:
        return np.zeros_like(amax)
    nz = weights > 0
    c, w = centres[nz], weights[nz]
    out = np.empty_like(amax)
    for start in range(0, len(amax), 64):  # candidates x non-empty bins, in blocks
        a = amax[start:start + 64, None]
        step = np.where(a > 0, a / QMAX, 1.0)
        q = np.where(a > 0, np.minimum(np.round(c / step), QMAX) * step, 0.0)
        out[start:start + 64] = ((c - q) ** 2 * w).sum(axis=1) / total
    return out


def mse_amax(hist: np.ndarray, edges: np.ndarray, *, start_bin: int = 16, stride: int = 4) -> float:
    """The clipping threshold (a histogram edge) with the least INT8 quantization error."""
    n = len(hist)
    if hist.sum() == 0 or n <= start_bin:
        return float(edges[-1])
    candidates = edges[np.unique(np.r_[np.arange(start_bin, n + 1, stride), n])]
    errors = quantization_mse(hist, edges, candidates)
    best = errors.min()
    # ties: the widest threshold among those within 0.1 % of the least error
    return float(candidates[np.nonzero(errors <= best * 1.001)[0][-1]])


def _bounded(hist: np.ndarray, edges: np.ndarray, amax: float, bound: float) -> Tuple[float, str]:
    """``amax`` raised until its error is at most ``bound`` times the least error, with a note."""
    best = mse_amax(hist, edges)
    errs = quantization_mse(hist, edges, np.array([amax, best]))
    if errs[1] <= 0 or errs[0] <= bound * errs[1]:
        return amax, ""
    candidates = edges[edges >= amax]
    ok = np.nonzero(quantization_mse(hist, edges, candidates) <= bound * errs[1])[0]
    if len(ok):
        a = candidates[ok[0]]
        return float(a), (f"clipping bounded: {amax:.4g} had {errs[0] / errs[1]:.1f}x the least "
                          f"INT8 error; raised to {float(a):.4g}")
    return best, f"clipping bounded: {amax:.4g} replaced by the least-error threshold {best:.4g}"


def _augment(proto: onnx.ModelProto, tensors: Sequence[str]) -> Tuple[onnx.ModelProto, Dict[str, str]]:
    from trtlab.precision import _graphs

    return _graphs.expose(proto, tensors, _graphs.deep_types(proto))


def _cache_path(cache_dir: Union[str, os.PathLike], key: str) -> Path:
    return Path(cache_dir).expanduser() / f"calibration-{key[:32]}.json"


def _stats_digest(stats: Any) -> str:
    return hashlib.sha256(json.dumps(stats, sort_keys=True).encode()).hexdigest()


def _valid_stats(stats: Any, names: List[str]) -> str:
    """Why cached statistics cannot be used ("" when they can)."""
    if not isinstance(stats, dict):
        return "'tensors' is not an object"
    for t in names:
        s = stats.get(t)
        if not isinstance(s, dict):
            return f"no statistics for tensor {t!r}"
        for field in ("min", "max", "absmax", "amax"):
            v = s.get(field)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
                return f"tensor {t!r} has {field} = {v!r}"
        if s["amax"] < 0 or s["absmax"] < 0 or not isinstance(s.get("samples"), int):
            return f"tensor {t!r} has a negative range or no sample count"
    return ""


def _read_cache(path: Path, key: str, names: Optional[List[str]] = None) -> Optional[Dict[str, Any]]:
    from trtlab import _io
    from trtlab.errors import FileReadError

    if not path.exists():
        return None
    try:
        payload = json.loads(_io.read_text(path, limit=256 << 20, what="Calibration cache"))
    except (FileReadError, ValueError, RecursionError) as exc:
        log.warning("calibration cache %s unreadable (%s); recalibrating", path, exc)
        return None
    if not isinstance(payload, dict) or payload.get("version") != CACHE_VERSION or payload.get("key") != key:
        log.warning("calibration cache %s does not match this model/data/settings; recalibrating", path)
        return None
    problem = ("its checksum does not match its statistics (edited or damaged)"
               if payload.get("tensors_sha256") != _stats_digest(payload.get("tensors")) else
               _valid_stats(payload.get("tensors"), names or []))
    if problem:
        warnings.warn(f"calibration cache {path} cannot be used: {problem}; recalibrating.",
                      TrtlabWarning, stacklevel=3)
        return None
    return payload


def _write_cache(path: Path, payload: Dict[str, Any]) -> None:
    """Write the calibration cache atomically; a cache that cannot be written is only a warning."""
    from trtlab import _io
    from trtlab.errors import FileWriteError

    payload = dict(payload, tensors_sha256=_stats_digest(payload["tensors"]))
    try:
        _io.write_text(path, json.dumps(payload, indent=1, sort_keys=True), what="calibration cache")
    except FileWriteError as exc:
        log.warning("calibration not cached: %s", exc)


def _measure(proto: onnx.ModelProto, feeds: List[Feeds], tensors: List[str], method: str,
             num_bins: int, percentile: float, progress: bool,
             clip_bound: Optional[float] = None) -> Dict[str, Dict[str, float]]:
    from trtlab.precision import _graphs

    augmented, names = _augment(proto, tensors)
    unreachable = [t for t in tensors if t not in names]
    if unreachable:
        raise CalibrationError(f"Tensor(s) {unreachable[:5]} cannot be measured (inside a Scan body); "
                               "leave their nodes out with exclude_nodes=[...].")
    outs = [names[t] for t in tensors]
    sess = _graphs.measuring_session(augmented, names)
    stats = {t: {"min": np.inf, "max": -np.inf, "samples": 0, "note": ""} for t in tensors}
    passes = 1 if method == "minmax" else 2
    for batch in progress_bar(feeds, desc=f"calibration pass 1/{passes}", enabled=progress):
        for t, value in zip(tensors, sess.run(outs, batch)):
            value = np.asarray(value, dtype=np.float32)
            if not np.all(np.isfinite(value)):
                raise CalibrationError(
                    f"Tensor {t!r} holds NaN or inf on the calibration data; fix the data or the "
                    "model before calibrating."
                )
            if value.size:
                stats[t]["min"] = min(stats[t]["min"], float(value.min()))
                stats[t]["max"] = max(stats[t]["max"], float(value.max()))
                stats[t]["samples"] += int(value.size)
    for t in tensors:
        s = stats[t]
        if s["samples"] == 0:
            s["min"] = s["max"] = 0.0
        s["absmax"] = max(abs(s["min"]), abs(s["max"]))
    if method == "minmax":
        for s in stats.values():
            s["amax"] = s["method_amax"] = s["amax_minmax"] = s["absmax"]
        return stats
    hists = {t: np.zeros(num_bins, dtype=np.int64) for t in tensors}
    for batch in progress_bar(feeds, desc="calibration pass 2/2", enabled=progress):
        for t, value in zip(tensors, sess.run(outs, batch)):
            top = stats[t]["absmax"]
            if top > 0:
                hists[t] += np.histogram(np.abs(value), bins=num_bins, range=(0.0, top))[0]
    for t in tensors:
        s = stats[t]
        methods = SINGLE_METHODS if method == "auto" else (method,)
        for m in methods:
            amax, note = _threshold(m, hists[t], s, num_bins, percentile, clip_bound)
            s[f"amax_{m}"] = amax
            if m == methods[0] or method != "auto":
                s["amax"], s["note"] = amax, note
                s["method_amax"] = s.get("method_amax_raw", amax)
        s.pop("method_amax_raw", None)
    return stats


def _threshold(method: str, hist: np.ndarray, s: Dict[str, Any], num_bins: int, percentile: float,
               clip_bound: Optional[float]) -> Tuple[float, str]:
    """One method's clipping threshold for one tensor, and a note (fallback or bounding)."""
    edges = np.linspace(0.0, s["absmax"], num_bins + 1)
    s.pop("method_amax_raw", None)
    if s["absmax"] == 0:
        return 0.0, ""
    if method == "minmax":
        return s["absmax"], ""
    note = ""
    if method == "entropy":
        h, e = hist, edges
        while h.sum() < MIN_PER_BIN * len(h) and len(h) % 2 == 0 and len(h) >= 1024:
            h, e = h.reshape(-1, 2).sum(axis=1), e[::2]
        if h.sum() < MIN_PER_BIN * len(h):
            return s["absmax"], (f"{s['samples']} values are too few for an entropy histogram; "
                                 "min-max range used")
        amax = entropy_amax(h, e)
    elif method == "mse":
        amax = mse_amax(hist, edges)
    else:
        amax = percentile_amax(hist, edges, percentile)
    s["method_amax_raw"] = amax
    if clip_bound is not None and method in ("entropy", "percentile"):
        amax, note = _bounded(hist, edges, amax, clip_bound)
    return amax, note


