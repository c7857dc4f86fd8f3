"""INT8 calibration: activation ranges from real data (min-max, entropy, percentile).

Ranges are measured by running the float32 model in ONNX Runtime with only the tensors to be
quantized added as outputs. ``entropy`` is TensorRT's calibration: a histogram of absolute
values per tensor and the clipping threshold whose 128-level quantized distribution has the
smallest KL divergence from the measured one. Results are cached as JSON keyed by the model,
the data and the settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import onnx

from trtlab._progress import progress as progress_bar
from trtlab.errors import CalibrationError
from trtlab.model import TrtlabWarning
from trtlab.precision._common import Data, Feeds, as_model, calibration_feeds, data_hash, model_hash

log = logging.getLogger(__name__)

__all__ = ["calibrate", "METHODS", "entropy_amax", "percentile_amax"]

METHODS = ("entropy", "minmax", "percentile")
CACHE_VERSION = 2
QMAX = 127.0
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


def _augment(proto: onnx.ModelProto, tensors: Sequence[str]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    present = {o.name for o in out.graph.output}
    for t in tensors:
        if t not in present:
            out.graph.output.append(onnx.ValueInfoProto(name=t))
    return out


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
             num_bins: int, percentile: float, progress: bool) -> Dict[str, Dict[str, float]]:
    from trtlab.backends.onnxruntime.session import session

    sess = session(_augment(proto, tensors), providers=["CPUExecutionProvider"])
    stats = {t: {"min": np.inf, "max": -np.inf, "samples": 0, "note": ""} for t in tensors}
    passes = 1 if method == "minmax" else 2
    for batch in progress_bar(feeds, desc=f"calibration pass 1/{passes}", enabled=progress):
        for t, value in zip(tensors, sess.run(tensors, batch)):
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
            s["amax"] = s["absmax"]
        return stats
    hists = {t: np.zeros(num_bins, dtype=np.int64) for t in tensors}
    for batch in progress_bar(feeds, desc="calibration pass 2/2", enabled=progress):
        for t, value in zip(tensors, sess.run(tensors, batch)):
            top = stats[t]["absmax"]
            if top > 0:
                hists[t] += np.histogram(np.abs(value), bins=num_bins, range=(0.0, top))[0]
    for t in tensors:
        s = stats[t]
        edges = np.linspace(0.0, s["absmax"], num_bins + 1)
        if s["absmax"] == 0:
            s["amax"] = 0.0
        elif method == "entropy":
            hist = hists[t]
            while hist.sum() < MIN_PER_BIN * len(hist) and len(hist) % 2 == 0 and len(hist) >= 1024:
                hist, edges = hist.reshape(-1, 2).sum(axis=1), edges[::2]
            if hist.sum() < MIN_PER_BIN * len(hist):
                s["amax"] = s["absmax"]
                s["note"] = (f"{s['samples']} values are too few for an entropy histogram; "
                             "min-max range used")
            else:
                s["amax"] = entropy_amax(hist, edges)
        else:
            s["amax"] = percentile_amax(hists[t], edges, percentile)
    return stats


def calibrate_tensors(model: Any, calibration_data: Data, *, tensors: Iterable[str], method: str = "entropy",
                      percentile: float = 99.99, num_bins: int = 2048, batch_size: Optional[int] = None,
                      cache_dir: Optional[Union[str, os.PathLike]] = None, progress: bool = True) -> Any:
    """Measure the ranges of ``tensors`` for INT8 quantization.

    :func:`trtlab.precision.calibrate` picks the tensors from the quantization plan and calls this.

    Parameters
    ----------
    model
        The float32 model (:class:`trtlab.model.Model`, ModelProto or path).
    calibration_data
        Real inputs: one array, a dict input name -> array (batch on axis 0) or feed dicts.
    method
        ``"entropy"`` (TensorRT's KL calibration), ``"minmax"`` or ``"percentile"``.
    tensors
        Tensors to measure.
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
    Returns
    -------
    pandas.DataFrame
        One row per tensor: tensor, producer, min, max, absmax, amax, scale (``amax / 127``),
        method, samples (values seen), note (why a tensor fell back to its min-max range). ``.attrs`` holds ``model_hash``, ``data_hash``, ``cache`` (``"hit"``,
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
    names = list(dict.fromkeys(tensors))
    inputs = {t.name for t in src.inputs}
    unknown = [t for t in names if src.producer(t) is None and t not in inputs]
    if unknown:
        raise CalibrationError(
            f"Cannot calibrate unknown tensor(s) {unknown[:5]} of model {src.name!r}; "
            "tensor names are in Model.nodes['outputs']."
        )
    feeds = calibration_feeds(src, calibration_data, batch_size)
    mhash, dhash = model_hash(src.proto), data_hash(feeds)
    settings = {"method": method, "num_bins": num_bins, "tensors": sorted(names)}
    if method == "percentile":
        settings["percentile"] = percentile
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
        stats = _measure(src.proto, feeds, names, method, num_bins, percentile, progress) if names else {}
        if path is not None:
            _write_cache(path, {"version": CACHE_VERSION, "key": key, "model_hash": mhash,
                                "data_hash": dhash, "settings": settings, "tensors": stats})
    rows = []
    for t in names:
        s = stats[t]
        rows.append({"tensor": t, "producer": src.producer(t), "min": s["min"], "max": s["max"],
                     "absmax": s["absmax"], "amax": s["amax"], "scale": s["amax"] / QMAX,
                     "method": method, "samples": s["samples"], "note": s.get("note", "")})
    frame = pd.DataFrame(rows, columns=["tensor", "producer", "min", "max", "absmax", "amax",
                                        "scale", "method", "samples", "note"])
    frame.attrs.update(model_hash=mhash, data_hash=dhash, cache=cache_state,
                       cache_path=str(path) if path else None, method=method)
    log.info("calibrated %d tensor(s) of %s with %s over %d batch(es) (cache: %s)", len(names),
             src.name, method, len(feeds), cache_state)
    return frame
