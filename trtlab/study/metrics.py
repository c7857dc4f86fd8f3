"""Task metrics for precision sweeps: how good a model variant's outputs are.

A metric scores the outputs of one model variant over a data set. It receives the outputs as a
list with one dict ``output name -> array`` per evaluated batch (in data order) and the targets:
the labels the user gave, or, when the data set has none, the FP32 model's outputs in the same
per-batch form, so the score becomes agreement with FP32. It returns a dict whose entry
``metric.name`` is the headline score (higher is better); other entries are extra columns.

==========================  =====================================================================
:func:`top1`                classifiers: top-1 accuracy of the argmax over the last axis
:func:`detection`           detectors: mAP-like average precision at an IoU and box F1
:func:`exact_match`         OCR / sequence models: exact string match and character error rate
:func:`cosine`              embeddings: mean per-sample cosine similarity
:func:`resolve`             a name, callable or :class:`Metric` as a :class:`Metric`
==========================  =====================================================================

Examples
--------
>>> import numpy as np
>>> m = top1()
>>> m([{"logits": np.array([[0.1, 0.9], [0.8, 0.2]])}], np.array([1, 1]))["top1"]
0.5
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from trtlab.errors import TrtlabError

__all__ = ["Metric", "MetricError", "top1", "detection", "exact_match", "cosine", "resolve",
           "METRICS", "average_precision", "box_iou", "ctc_greedy", "edit_distance"]

Outputs = List[Mapping[str, np.ndarray]]


class MetricError(TrtlabError, ValueError):
    """A metric could not score the outputs: wrong output name, shapes or targets."""


@dataclass(frozen=True)
class Metric:
    """A named scoring function ``(outputs, targets) -> {name: score, ...}``.

    Attributes
    ----------
    name
        Name of the headline score (the key the function must return).
    fn
        ``fn(outputs, targets)``: ``outputs`` is a list of per-batch dicts output name -> array;
        ``targets`` the data set's targets, or the FP32 outputs (same form as ``outputs``) when
        the data set has none.
    params
        Settings that change the score; part of a sweep job's key.
    """

    name: str
    fn: Callable[[Outputs, Any], Mapping[str, float]] = field(compare=False)
    params: Tuple[Tuple[str, Any], ...] = ()

    def __call__(self, outputs: Outputs, targets: Any) -> Dict[str, float]:
        result = self.fn(outputs, targets)
        if not isinstance(result, Mapping):
            result = {self.name: result}
        if self.name not in result:
            raise MetricError(f"Metric {self.name!r} returned {sorted(result)} without its headline score "
                              f"{self.name!r}; return a dict with that key (or a single number).")
        return {k: float(v) for k, v in result.items()}

    @property
    def key(self) -> str:
        """Identity of the metric for job keys: name, settings and the function's code."""
        fn, bound = self.fn, ""
        while isinstance(fn, functools.partial):
            bound += f"{fn.args!r}{sorted(fn.keywords.items())!r}"
            fn = fn.func
        code = getattr(fn, "__code__", None)
        digest = hashlib.sha256(code.co_code + repr(code.co_consts).encode()).hexdigest()[:16] if code else ""
        qual = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
        return f"{self.name}|{qual}|{digest}|{bound}|{self.params!r}"


def _is_reference(targets: Any) -> bool:
    return isinstance(targets, list) and bool(targets) and all(isinstance(t, Mapping) for t in targets)


def _pick(outputs: Outputs, output: Optional[str], what: str) -> List[np.ndarray]:
    if not outputs:
        raise MetricError(f"{what}: no outputs to score (the data set is empty).")
    names = list(outputs[0])
    name = output or names[0]
    if name not in outputs[0]:
        raise MetricError(f"{what}: the model has no output {name!r}; outputs: {names}. Pass output=.")
    return [np.asarray(o[name]) for o in outputs]


def _concat(parts: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([p.reshape(1) if p.ndim == 0 else p for p in parts])


# ----------------------------------------------------------------------------------------------
# classification
# ----------------------------------------------------------------------------------------------


def _classes(values: np.ndarray) -> np.ndarray:
    if np.issubdtype(values.dtype, np.floating) and values.ndim >= 2 and values.shape[-1] > 1:
        return values.reshape(-1, values.shape[-1]).argmax(axis=1)
    return values.reshape(-1)


def top1(output: Optional[str] = None) -> Metric:
    """Top-1 accuracy: argmax of ``output`` (logits or probabilities, classes on the last axis).

    Targets are class labels (one per sample), or the FP32 outputs (then the score is top-1
    agreement with FP32).
    """

    def score(outputs: Outputs, targets: Any) -> Dict[str, float]:
        pred = _classes(_concat(_pick(outputs, output, "top1")))
        if _is_reference(targets):
            labels = _classes(_concat(_pick(targets, output, "top1")))
        else:
            labels = np.asarray(targets).reshape(-1)
        if len(labels) != len(pred):
            raise MetricError(f"top1: {len(pred)} predictions but {len(labels)} labels; give one label per "
                              "sample of the evaluation inputs.")
        return {"top1": float(np.mean(pred == labels)) if len(pred) else float("nan")}

    return Metric("top1", score, (("output", output),))


# ----------------------------------------------------------------------------------------------
# detection
# ----------------------------------------------------------------------------------------------


def _corners(boxes: np.ndarray) -> np.ndarray:
    x = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([np.minimum(x[:, :2], x[:, 2:]), np.maximum(x[:, :2], x[:, 2:])], axis=1)


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0.0, None), axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes ``a`` [N, 4] and ``b`` [M, 4] given by two opposite corners.

    As in ONNX ``NonMaxSuppression``, either diagonal pair of corners is accepted: (x1, y1, x2, y2)
    or (y1, x1, y2, x2) in any order within each axis.
    """
    a, b = _corners(a), _corners(b)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0.0, None), axis=2)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _match(pred: np.ndarray, scores: np.ndarray, gt: np.ndarray, iou: float) -> np.ndarray:
    """Greedy matching by descending score: True for each prediction that claims a free box."""
    tp = np.zeros(len(pred), dtype=bool)
    if len(pred) == 0 or len(gt) == 0:
        return tp
    ious = box_iou(pred, gt)
    free = np.ones(len(gt), dtype=bool)
    for i in np.argsort(-scores, kind="stable"):
        cand = np.where(free, ious[i], -1.0)
        j = int(np.argmax(cand))
        if cand[j] >= iou:
            tp[i], free[j] = True, False
    return tp


def average_precision(tp: np.ndarray, scores: np.ndarray, n_gt: int) -> float:
    """Area under the precision-recall curve, ``sum_k (R_k - R_{k-1}) P_k`` over the ranking by score.

    Equals scikit-learn's ``average_precision_score`` when every ground-truth box is matched by
    some prediction; a box no prediction finds caps recall below 1.
    """
    if n_gt == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits = np.asarray(tp, dtype=np.float64)[order]
    cum = np.cumsum(hits)
    precision = cum / np.arange(1, len(hits) + 1)
    return float(np.sum(precision * hits) / n_gt)


def _detections(out: Mapping[str, np.ndarray], boxes: str, scores: str, classes: Optional[str],
                what: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    for name in (boxes, scores) + ((classes,) if classes else ()):
        if name not in out:
            raise MetricError(f"{what}: the model has no output {name!r}; outputs: {list(out)}.")
    b = np.asarray(out[boxes], dtype=np.float64).reshape(-1, 4)
    s = np.asarray(out[scores], dtype=np.float64).reshape(-1)
    c = np.asarray(out[classes]).reshape(-1) if classes else np.zeros(len(b), dtype=np.int64)
    if not len(b) == len(s) == len(c):
        raise MetricError(f"{what}: {len(b)} boxes, {len(s)} scores and {len(c)} classes; they must match.")
    return b, s, c


def detection(boxes: str, scores: str, classes: Optional[str] = None, *, iou: float = 0.5,
              score_threshold: float = 0.5) -> Metric:
    """Detector quality: mAP-like average precision at ``iou`` and box F1 at ``score_threshold``.

    Each evaluated batch is one image. Boxes are (x1, y1, x2, y2). Targets are a list with one
    entry per image: an array of ground-truth boxes [M, 4], or a dict with ``boxes`` and
    ``classes``; or the FP32 outputs (then the FP32 detections scoring at least
    ``score_threshold`` are the ground truth).

    Returns ``mAP`` (mean over classes with ground truth of the average precision), ``box_f1``,
    ``box_precision`` and ``box_recall``.
    """
    if not 0.0 < iou <= 1.0:
        raise MetricError(f"detection: iou must be in (0, 1], got {iou}.")

    def truth(targets: Any, n: int) -> List[Tuple[np.ndarray, np.ndarray]]:
        if _is_reference(targets):
            out = []
            for ref in targets:
                b, s, c = _detections(ref, boxes, scores, classes, "detection (FP32 reference)")
                keep = s >= score_threshold
                out.append((b[keep], c[keep]))
        else:
            out = []
            for t in list(targets):
                if isinstance(t, Mapping):
                    b = np.asarray(t["boxes"], dtype=np.float64).reshape(-1, 4)
                    c = np.asarray(t.get("classes", np.zeros(len(b), dtype=np.int64))).reshape(-1)
                else:
                    b = np.asarray(t, dtype=np.float64).reshape(-1, 4)
                    c = np.zeros(len(b), dtype=np.int64)
                out.append((b, c))
        if len(out) != n:
            raise MetricError(f"detection: {n} evaluated image(s) but {len(out)} target entries; give one "
                              "entry per image (evaluate one image per batch).")
        return out

    def score(outputs: Outputs, targets: Any) -> Dict[str, float]:
        preds = [_detections(o, boxes, scores, classes, "detection") for o in outputs]
        gts = truth(targets, len(preds))
        labels = sorted({int(x) for _, c in gts for x in c})
        aps = []
        for label in labels:
            tps, scs, n_gt = [], [], 0
            for (b, s, c), (gb, gc) in zip(preds, gts):
                pm, gm = c == label, gc == label
                n_gt += int(gm.sum())
                tps.append(_match(b[pm], s[pm], gb[gm], iou))
                scs.append(s[pm])
            aps.append(average_precision(np.concatenate(tps), np.concatenate(scs), n_gt))
        tp = fp = fn = 0
        for (b, s, c), (gb, gc) in zip(preds, gts):
            keep = s >= score_threshold
            hits = 0
            for label in set(int(x) for x in c[keep]) | set(int(x) for x in gc):
                pm, gm = keep & (c == label), gc == label
                hits += int(_match(b[pm], s[pm], gb[gm], iou).sum())
            tp += hits
            fp += int(keep.sum()) - hits
            fn += len(gb) - hits
        f1 = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0
        return {"mAP": float(np.mean(aps)) if aps else float("nan"), "box_f1": float(f1),
                "box_precision": tp / (tp + fp) if tp + fp else float("nan"),
                "box_recall": tp / (tp + fn) if tp + fn else float("nan")}

    return Metric("mAP", score, (("boxes", boxes), ("scores", scores), ("classes", classes), ("iou", iou),
                                 ("score_threshold", score_threshold)))


# ----------------------------------------------------------------------------------------------
# sequences (OCR)
# ----------------------------------------------------------------------------------------------


def ctc_greedy(logits: np.ndarray, blank: int = 0) -> List[Tuple[int, ...]]:
    """Greedy CTC decoding of ``logits`` [N, T, C]: argmax per step, repeats merged, blanks dropped."""
    best = np.asarray(logits).argmax(axis=-1).reshape(len(logits), -1)
    out = []
    for row in best:
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        out.append(tuple(int(x) for x in row[keep] if x != blank))
    return out


def edit_distance(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Levenshtein distance between two sequences."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def exact_match(output: Optional[str] = None, *, decode: Union[str, Callable[[np.ndarray], List[Any]]] = "ctc",
                blank: int = 0, charset: Optional[Sequence[str]] = None) -> Metric:
    """Exact string match rate and character error rate of a recognizer.

    Parameters
    ----------
    output
        The output to decode (default: the first).
    decode
        ``"ctc"`` (greedy CTC over logits [N, T, C]), ``"argmax"`` (argmax per step, nothing
        merged), ``"none"`` (the output already holds strings or label sequences) or a function
        array -> list of sequences.
    blank
        The CTC blank class.
    charset
        Class index -> character; with it decoded sequences become strings.

    Targets are strings (with ``charset``) or label sequences, one per sample, or the FP32 outputs.
    Returns ``exact_match`` and ``char_error_rate`` (edit distance / target length).
    """
    if isinstance(decode, str) and decode not in ("ctc", "argmax", "none"):
        raise MetricError(f"exact_match: decode={decode!r}; use 'ctc', 'argmax', 'none' or a function.")

    def texts(values: np.ndarray) -> List[Any]:
        if callable(decode):
            seqs = list(decode(values))
        elif decode == "none" or values.dtype.kind in "OUS":
            seqs = [x if isinstance(x, str) else tuple(np.asarray(x).reshape(-1).tolist()) for x in values]
        elif decode == "ctc":
            seqs = ctc_greedy(values, blank)
        else:
            seqs = [tuple(int(x) for x in row) for row in np.asarray(values).argmax(axis=-1)]
        if charset is not None:
            seqs = [s if isinstance(s, str) else "".join(charset[i] for i in s) for s in seqs]
        return seqs

    def norm(x: Any) -> Any:
        if isinstance(x, str):
            return x
        return tuple(np.asarray(x).reshape(-1).tolist())

    def score(outputs: Outputs, targets: Any) -> Dict[str, float]:
        pred = [t for part in _pick(outputs, output, "exact_match") for t in texts(part)]
        if _is_reference(targets):
            truth = [t for part in _pick(targets, output, "exact_match") for t in texts(part)]
        else:
            truth = list(targets)
        if len(truth) != len(pred):
            raise MetricError(f"exact_match: {len(pred)} decoded sample(s) but {len(truth)} target(s).")
        pred, truth = [norm(p) for p in pred], [norm(t) for t in truth]
        same = [p == t for p, t in zip(pred, truth)]
        chars = sum(len(t) for t in truth)
        errors = sum(edit_distance(p, t) for p, t in zip(pred, truth))
        return {"exact_match": float(np.mean(same)) if same else float("nan"),
                "char_error_rate": errors / chars if chars else float("nan")}

    name = decode if isinstance(decode, str) else f"{decode.__module__}.{decode.__qualname__}"
    return Metric("exact_match", score, (("output", output), ("decode", name), ("blank", blank),
                                         ("charset", None if charset is None else "".join(charset))))


# ----------------------------------------------------------------------------------------------
# embeddings
# ----------------------------------------------------------------------------------------------


def cosine(output: Optional[str] = None) -> Metric:
    """Mean per-sample cosine similarity of ``output`` with the targets (embeddings, features).

    Targets are reference embeddings (one row per sample) or the FP32 outputs. Returns
    ``cosine`` (mean) and ``cosine_min`` (worst sample).
    """

    def score(outputs: Outputs, targets: Any) -> Dict[str, float]:
        got = _concat(_pick(outputs, output, "cosine")).astype(np.float64)
        ref = _concat(_pick(targets, output, "cosine")) if _is_reference(targets) else np.asarray(targets)
        ref = ref.astype(np.float64)
        if ref.shape != got.shape:
            raise MetricError(f"cosine: outputs have shape {got.shape}, targets {ref.shape}; they must match.")
        a, b = got.reshape(len(got), -1), ref.reshape(len(ref), -1)
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        both = (na == 0) & (nb == 0)
        sims = np.divide((a * b).sum(axis=1), na * nb, out=np.where(both, 1.0, 0.0), where=(na * nb) > 0)
        return {"cosine": float(sims.mean()) if len(sims) else float("nan"),
                "cosine_min": float(sims.min()) if len(sims) else float("nan")}

    return Metric("cosine", score, (("output", output),))


#: Metric names :func:`resolve` accepts.
METRICS: Dict[str, Callable[[], Metric]] = {"top1": top1, "cosine": cosine, "exact_match": exact_match}


def resolve(metric: Union[None, str, Metric, Callable[..., Any]]) -> Metric:
    """A :class:`Metric` for ``metric``: ``None`` (top-1), a name in :data:`METRICS`, a
    :class:`Metric`, or a function ``(outputs, targets) -> float | dict`` named after its score.
    """
    if metric is None:
        return top1()
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        if metric not in METRICS:
            raise MetricError(f"Unknown metric {metric!r}; known: {sorted(METRICS)} (detection needs output "
                              "names: trtlab.study.metrics.detection(boxes=..., scores=...)), or pass a function.")
        return METRICS[metric]()
    if callable(metric):
        name = getattr(metric, "__name__", type(metric).__name__)
        try:
            inspect.signature(metric).bind(None, None)
        except TypeError as exc:
            raise MetricError(f"Metric function {name!r} must take (outputs, targets): {exc}.") from exc
        return Metric(name, metric)
    raise MetricError(f"metric= is a {type(metric).__name__}; pass None, a name ({sorted(METRICS)}), a "
                      "Metric or a function (outputs, targets) -> float | dict.")
