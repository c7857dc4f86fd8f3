"""Accuracy tables: candidates against a reference with Polygraphy's Comparator.

:func:`compare` runs a reference and candidates (ONNX models, hybrid models, Polygraphy runners or
plain callables) over the same data with ``Comparator.run`` and scores them with
``Comparator.compare_accuracy``. :func:`precision_table` builds the FP32 / FP16 / INT8 variants
of a model and reports task accuracy, agreement with FP32, error statistics, latency and where
each ran.

Examples
--------
>>> table = precision_table(model, x_test, labels=y_test, calibration_data=x_calib)  # doctest: +SKIP
>>> compare(model, {"int8": quantize_int8(model, x_calib)}, x_test)                 # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import onnx

from trtlab.errors import CompareError
from trtlab.precision._common import Data, Feeds, as_model, feed_list

log = logging.getLogger(__name__)

__all__ = ["compare", "precision_table", "as_runner", "COMPARE_COLUMNS", "TABLE_COLUMNS"]

COMPARE_COLUMNS = ["candidate", "output", "max_abs", "max_rel", "mean_abs", "n_nan", "n_inf", "cosine",
                   "top1_agree", "accuracy", "latency_ms", "executor", "pass", "pass_rule"]
TABLE_COLUMNS = ["config", "precision", "method", "fp32_nodes", "accuracy", "accuracy_delta",
                 "top1_agree", "max_abs", "mean_abs", "n_nan", "n_inf", "cosine", "mac_coverage", "latency_ms",
                 "executor", "latency_p90_ms", "latency_cv", "source"]



def _bind_polygraphy() -> None:
    """Fix Polygraphy's TensorRT flavor to trtlab's before importing Polygraphy (see
    :func:`trtlab.backends.tensorrt.flavor.bind_polygraphy`)."""
    from trtlab.backends.tensorrt.flavor import bind_polygraphy

    bind_polygraphy(strict=False)


def _callable_runner(fn: Callable[[Feeds], Mapping[str, np.ndarray]], name: str,
                     inputs: Sequence[Any]) -> Any:
    _bind_polygraphy()
    from polygraphy.backend.base import BaseRunner

    from trtlab.runtime import input_metadata

    class CallableRunner(BaseRunner):
        """Polygraphy runner around a function feeds -> outputs."""

        def __init__(self) -> None:
            super().__init__(name=name, prefix="callable")

        def activate_impl(self) -> None:
            pass

        def deactivate_impl(self) -> None:
            pass

        def get_input_metadata_impl(self) -> Any:
            return input_metadata(inputs)

        def infer_impl(self, feed_dict: Mapping[str, Any]) -> Any:
            start = time.perf_counter()
            out = fn(dict(feed_dict))
            self.inference_time = time.perf_counter() - start
            return OrderedDict((k, np.asarray(v)) for k, v in out.items())

    return CallableRunner()


def as_runner(runnable: Any, name: str, inputs: Sequence[Any] = ()) -> Tuple[Any, str]:
    """A Polygraphy runner named ``name`` for ``runnable``, and a label of where it executes.

    Accepts a Polygraphy ``BaseRunner``, a :class:`~trtlab.runtime.HybridModel`, a trtlab
    Model / ``onnx.ModelProto`` / path (run by ONNX Runtime), or a callable feeds -> outputs.
    """
    import onnx

    _bind_polygraphy()
    from polygraphy.backend.base import BaseRunner

    from trtlab.model import Model

    if isinstance(runnable, BaseRunner):
        runnable.name = name
        return runnable, type(runnable).__name__
    if hasattr(runnable, "executors") and hasattr(runnable, "run"):
        from trtlab.runtime import HybridRunner

        execs = runnable.executors
        label = "+".join(dict.fromkeys(execs["executor"])) if len(execs) else "hybrid"
        return HybridRunner(runnable, name=name), label
    if isinstance(runnable, (Model, onnx.ModelProto, str, bytes)) or hasattr(runnable, "__fspath__"):
        from polygraphy.backend.onnxrt import OnnxrtRunner

        from trtlab.backends.onnxruntime.session import session

        model = as_model(runnable)
        return OnnxrtRunner(lambda: session(model), name=name), "onnxruntime"
    if callable(runnable):
        return _callable_runner(runnable, name, inputs), "callable"
    raise CompareError(
        f"Cannot run {name!r}: a {type(runnable).__name__} is not a Polygraphy runner, HybridModel, "
        "ONNX model or callable feeds -> outputs."
    )


def _loaded(runnable: Any) -> Any:
    """A path or serialized model as a :class:`~trtlab.model.Model`; anything else as it is."""
    if isinstance(runnable, (str, bytes, bytearray)) or hasattr(runnable, "__fspath__"):
        return as_model(runnable)
    return runnable


def _model_of(runnable: Any) -> Optional[Any]:
    import onnx

    from trtlab.model import Model

    if isinstance(runnable, (Model, onnx.ModelProto)):
        return as_model(runnable)
    part = getattr(runnable, "partition", None)
    if part is not None and hasattr(part, "model"):
        return part.model
    return None


def _feeds(reference: Any, candidates: Mapping[str, Any], data: Data,
           batch_size: Optional[int]) -> Tuple[List[Feeds], Sequence[Any]]:
    for obj in [reference, *candidates.values()]:
        model = _model_of(obj)
        if model is not None:
            return feed_list(model, data, batch_size=batch_size, error=CompareError), model.inputs
    if isinstance(data, Mapping):
        raise CompareError("With no ONNX or hybrid model among the runnables, pass data as a list of "
                           "feed dicts so compare() knows the inputs.")
    feeds = feed_list(_Names([]), data, error=CompareError)
    return feeds, []


class _Names:
    def __init__(self, inputs: Sequence[Any]) -> None:
        self.inputs = inputs


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _top1(out: np.ndarray) -> Optional[np.ndarray]:
    if out.ndim >= 2 and out.shape[-1] > 1 and np.issubdtype(out.dtype, np.floating):
        return out.reshape(-1, out.shape[-1]).argmax(axis=1)
    return None


# -- classification outputs and the task-metric verdict (issue 18) ------------------------------

def classifier_outputs(model: Any) -> Optional[set]:
    """Outputs of ``model`` that are per-sample class scores, or ``None`` when unknown.

    An output is a classifier's when it is a float tensor of rank 2 whose first axis is the
    batch axis of an input (the same symbol or the same size) and whose last axis has a fixed
    size above one: ``logits[batch, 10]`` is, ``det_boxes[detections, 4]`` is not.
    """
    if model is None:
        return None
    batch_dims = {t.shape[0] for t in model.inputs if t.shape}
    out = set()
    for t in model.outputs:
        shape = t.shape
        if (shape is not None and len(shape) == 2 and isinstance(shape[1], int) and shape[1] > 1
                and shape[0] is not None and shape[0] in batch_dims
                and t.dtype is not None and np.issubdtype(t.dtype, np.floating)):
            out.add(t.name)
    return out


def _task_verdict(acc: float, ref_acc: float, tolerance: float) -> Optional[bool]:
    """Pass when the task metric drops by at most ``tolerance`` (a fraction); ``None`` when
    either accuracy is unknown."""
    if acc != acc or ref_acc != ref_acc:
        return None
    return bool(ref_acc - acc <= tolerance + 1e-12)


# -----------------------------------------------------------------------------------------------


def _stats(ref: np.ndarray, cand: np.ndarray, labels: Optional[np.ndarray],
           classify: bool = True) -> Dict[str, Any]:
    r, c = ref.astype(np.float64), cand.astype(np.float64)
    if r.shape != c.shape:
        raise CompareError(f"Output shapes differ: reference {r.shape}, candidate {c.shape}.")
    # Non-finite values are counted, never dropped: an element where the candidate is NaN or inf
    # and the reference is not counts in n_nan / n_inf and makes the error infinite.
    same = (r == c) | (np.isnan(r) & np.isnan(c))
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(same, 0.0, np.abs(r - c))
    diff[~np.isfinite(diff)] = np.inf
    n_nan = int(np.count_nonzero(np.isnan(c) & ~np.isnan(r)))
    n_inf = int(np.count_nonzero(np.isinf(c) & ~same))
    rel = diff / np.maximum(np.abs(np.nan_to_num(r, nan=0.0)), np.finfo(np.float32).tiny)
    row: Dict[str, Any] = {
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "max_rel": float(rel.max()) if rel.size else 0.0,
        "mean_abs": float(diff.mean()) if diff.size else 0.0,
        "n_nan": n_nan, "n_inf": n_inf,
        "cosine": _cosine(r, c) if np.issubdtype(ref.dtype, np.floating) else float("nan"),
        "top1_agree": float("nan"), "accuracy": float("nan"),
    }
    tr, tc = (_top1(ref), _top1(cand)) if classify else (None, None)
    if tr is not None and tc is not None:
        row["top1_agree"] = float(np.mean(tr == tc))
        if labels is not None and len(labels) == len(tc):
            row["accuracy"] = float(np.mean(tc == labels))
    return row


def compare(reference: Any, candidates: Mapping[str, Any], data: Data, *, atol: float = 1e-3,
            rtol: float = 1e-3, labels: Optional[np.ndarray] = None, batch_size: Optional[int] = None,
            reference_name: str = "reference", include_reference: bool = False,
            executors: Optional[Mapping[str, str]] = None,
            accuracy_tolerance: float = 0.01) -> Any:
    """Compare candidates with a reference over a data set.

    Runs every runnable with Polygraphy's ``Comparator.run`` and checks each candidate against
    the reference with ``Comparator.compare_accuracy`` (element-wise ``atol`` / ``rtol``).

    Parameters
    ----------
    reference
        Polygraphy runner, HybridModel, ONNX model (run by ONNX Runtime) or callable.
    candidates
        Name -> runnable of the same kinds.
    data
        One array, dict input name -> array (batch on axis 0) or feed dicts.
    atol, rtol
        Tolerances of the element-wise pass/fail check (relative to the reference), used when
        no task metric is given.
    labels
        Class labels per sample; adds task ``accuracy`` for classifier outputs, and then
        ``pass`` follows the task metric: accuracy at most ``accuracy_tolerance`` below the
        reference's.
    accuracy_tolerance
        Largest accepted accuracy drop (a fraction: 0.01 is one point) when ``labels`` are
        given.
    batch_size
        Batch size for dynamic-batch models.
    reference_name
        Name of the reference in the table.
    include_reference
        Add a row for the reference itself (its accuracy and latency, zero error).
    executors
        Name -> label overriding the ``executor`` column.

    Returns
    -------
    pandas.DataFrame
        One row per candidate x output: candidate, output, max_abs, max_rel, mean_abs (over every
        element; infinite when the candidate has NaN or inf where the reference does not),
        n_nan and n_inf (such elements, counted), cosine, top1_agree (classifier outputs only:
        rank 2, batch x classes), accuracy (with ``labels``), latency_ms (median per batch of the
        comparison run; for latency as the field reports it use :func:`trtlab.benchmark`),
        executor, pass, pass_rule (the check that decided ``pass``).
    """
    import pandas as pd
    _bind_polygraphy()
    from polygraphy.comparator import Comparator
    from polygraphy.logger import G_LOGGER

    if not candidates:
        raise CompareError("compare() needs at least one candidate (a dict name -> runnable).")
    if reference_name in candidates:
        raise CompareError(f"A candidate is called {reference_name!r} like the reference; rename it "
                           "or pass reference_name=.")
    if not isinstance(candidates, Mapping):
        raise CompareError(f"compare() takes candidates as a dict name -> runnable, got a "
                           f"{type(candidates).__name__}.")
    # Paths and bytes are loaded once, up front: a bad file fails here, naming the file.
    reference = _loaded(reference)
    candidates = {name: _loaded(obj) for name, obj in candidates.items()}
    feeds, inputs = _feeds(reference, candidates, data, batch_size)
    runners, labels_of = [], {}
    for name, obj in [(reference_name, reference), *candidates.items()]:
        runner, label = as_runner(obj, name, inputs)
        runners.append(runner)
        labels_of[name] = (executors or {}).get(name, label)
    try:
        compare_func = _compare_func(atol, rtol)
        # Relative errors of exact zeros divide 0 by 0 inside Polygraphy; the NaN is handled there.
        with G_LOGGER.verbosity(G_LOGGER.CRITICAL), np.errstate(divide="ignore", invalid="ignore"):
            results = Comparator.run(runners, data_loader=feeds)
            accuracy = Comparator.compare_accuracy(
                results, comparisons=[(i, 0) for i in range(1, len(runners))], compare_func=compare_func)
    except CompareError:
        raise
    except Exception as exc:  # Polygraphy reports failures as its own exception types
        raise CompareError(f"Polygraphy could not run or compare the models: {exc}") from exc
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
    outs = {name: _joined(results[name]) for name in [r.name for r in runners]}
    classify = classifier_outputs(next((m for m in map(_model_of, [reference, *candidates.values()])
                                        if m is not None), None))
    times = {name: [it.runtime for it in results[name] if it.runtime is not None] for name in outs}
    verdicts = accuracy[0]
    rows = []
    ref_out = outs[reference_name]
    names = ([reference_name] if include_reference else []) + list(candidates)
    for name in names:
        got = outs[name]
        missing = [o for o in ref_out if o not in got]
        if missing:
            raise CompareError(f"Candidate {name!r} lacks output(s) {missing}; it has {list(got)}.")
        passed = _verdicts(verdicts, name, reference_name) if name != reference_name else {}
        for output, value in ref_out.items():
            is_cls = classify is None or output in classify
            row = {"candidate": name, "output": output,
                   **_stats(value, got[output], labels, classify=is_cls)}
            row["latency_ms"] = float(np.median(times[name]) * 1e3) if times[name] else float("nan")
            row["executor"] = labels_of[name]
            finite_ok = row["n_nan"] == 0 and row["n_inf"] == 0
            identical = finite_ok and row["max_abs"] == 0  # NaN where the reference has NaN too
            row["pass"] = identical or (passed.get(output, True) and finite_ok)
            row["pass_rule"] = f"elementwise atol={atol:g}, rtol={rtol:g}" if finite_ok else \
                "non-finite values where the reference is finite"
            if labels is not None and is_cls and finite_ok:
                ref_acc = _stats(value, value, labels, classify=True)["accuracy"]
                task = _task_verdict(row["accuracy"], ref_acc, accuracy_tolerance)
                if task is not None:
                    row["pass"] = task
                    row["pass_rule"] = f"accuracy drop <= {accuracy_tolerance * 100:g} pt"
            rows.append(row)
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def _compare_func(atol: float, rtol: float) -> Any:
    _bind_polygraphy()
    from polygraphy.comparator import compare as comp

    simple = getattr(comp, "SimpleCompareFunc", None)
    if simple is not None:
        return simple(atol=atol, rtol=rtol, check_shapes=True)
    return comp.CompareFunc.simple(atol=atol, rtol=rtol, check_shapes=True)


def _joined(iterations: Sequence[Any]) -> Dict[str, np.ndarray]:
    first = iterations[0]
    out = {}
    for name in first.keys():
        parts = [np.asarray(it[name]) for it in iterations]
        out[name] = np.concatenate(parts) if parts[0].ndim else np.stack(parts)
    return out


def _verdicts(verdicts: Any, name: str, reference_name: str) -> Dict[str, bool]:
    per_iter = verdicts[(name, reference_name)]
    passed: Dict[str, bool] = {}
    for iteration in per_iter:
        for output, result in iteration.items():
            passed[output] = passed.get(output, True) and bool(result)
    return passed


# ----------------------------------------------------------------------------------------------
# precision table
# ----------------------------------------------------------------------------------------------


def _runnable(model: Any, use_build: bool, progress: bool, cache_dir: Any,
              feeds: Any = None) -> Tuple[Any, Optional[str]]:
    """How a configuration runs: a HybridModel when trtlab.build is used, else ONNX Runtime.

    The hybrid is built for the shapes of ``feeds`` (one batch of the evaluation data).
    """
    from trtlab.precision import ort_variant

    is_fp16 = any(p.key == "trtlab.precision" and p.value in ("fp16", "bf16")
                  for p in model.proto.metadata_props)
    if use_build:
        from trtlab.codegen import build
        from trtlab.partitioning.partitioner import partition

        hybrid = build(partition(model), feeds=feeds, precision="fp32", cache_dir=cache_dir, progress=progress)
        return hybrid, None
    if is_fp16:
        return ort_variant(model)
    return model, None


def precision_table(model: Any, data: Data, *, labels: Optional[np.ndarray] = None,
                    precisions: Iterable[str] = ("fp32", "fp16", "int8"),
                    calibration_data: Optional[Data] = None,
                    methods: Iterable[str] = ("auto", "entropy", "minmax"),
                    keep_fp32_nodes: Iterable[str] = (), keep_fp32_ops: Optional[Iterable[str]] = None,
                    segment_precisions: Optional[Mapping[str, Mapping[int, str]]] = None,
                    per_channel: bool = True, batch_size: Optional[int] = None,
                    runner: str = "auto", cache_dir: Any = None, output: Optional[str] = None,
                    candidates: Optional[Mapping[str, Any]] = None, progress: bool = True,
                    latency_warmup: int = 10, latency_iterations: int = 50,
                    ort_threads: Optional[int] = 1) -> Any:
    """The FP32 / FP16 / INT8 accuracy table of a model.

    Parameters
    ----------
    model
        The float32 model.
    data
        Evaluation inputs (one array, dict input name -> array, or feed dicts).
    labels
        Class labels per sample: adds task accuracy and its change from FP32 in points.
    precisions
        Registered precision modes (:mod:`trtlab.precision.registry`): ``"fp32"``, ``"fp16"``,
        ``"bf16"``, ``"int8"``, ``"fp8"``.
    calibration_data
        Real inputs for INT8 calibration (required with ``"int8"``).
    methods
        Calibration methods, one INT8 row each (FP8 uses min-max).
    keep_fp32_nodes
        Mixed precision: when given, FP16 and INT8 rows are repeated with these nodes held in
        FP32, so the table shows what keeping them buys.
    keep_fp32_ops
        Op types FP16 keeps in FP32 (default :data:`trtlab.precision.DEFAULT_KEEP_FP32_OPS`).
    segment_precisions
        Extra rows: name -> ``{segment index: precision}`` built with :func:`trtlab.build` on the
        default partition (INT8 segments calibrated on ``calibration_data``).
    per_channel
        Per-channel INT8 weight scales.
    batch_size
        Batch size for dynamic-batch models.
    runner
        ``"auto"`` (the hybrid runtime when TensorRT can build engines here, else ONNX Runtime),
        ``"hybrid"`` or ``"onnxruntime"``.
    cache_dir
        Calibration (and engine) cache folder.
    output
        Output scored in the table (default: the model's first output).
    candidates
        Models made by other tools, label -> model (path, ModelProto or Model), e.g. ONNX
        Runtime's ``quantize_static`` or ModelOpt output; each is a row with that label, run
        on the same data, ``source="external"``.
    progress
        Show progress bars.
    latency_warmup, latency_iterations
        Latency is measured apart from the accuracy run, the way trtexec reports it: each
        configuration runs ``latency_warmup`` untimed calls, then at least
        ``latency_iterations`` timed calls on the first batch (:func:`trtlab.benchmark`).
    ort_threads
        Intra-op threads of the ONNX Runtime sessions timed (pinned so configurations do not
        fight over cores; ``None``: ONNX Runtime's default).

    Returns
    -------
    pandas.DataFrame
        One row per configuration: config, precision, method, fp32_nodes, accuracy,
        accuracy_delta (points vs FP32), top1_agree (with FP32, classifier outputs), max_abs,
        mean_abs, n_nan and n_inf (non-finite values where FP32 has finite ones), cosine,
        mac_coverage (share of multiply-accumulates with quantized inputs), latency_ms (median of
        the warm timed runs, per batch), executor, latency_p90_ms and latency_cv (their spread),
        source (``"trtlab"`` or ``"external"``). One :class:`~trtlab.study.latency.LatencyWarning`
        names the configurations whose timings were noisy.
    """
    import pandas as pd

    from trtlab import precision as prec
    from trtlab._progress import progress as progress_bar
    from trtlab.precision import registry

    src = as_model(model)
    precisions = list(precisions)
    bad = [p for p in precisions if p not in registry.names()]
    if bad:
        raise CompareError(f"Unknown precision(s) {bad}; use any of {', '.join(registry.names())}.")
    methods = list(methods)
    keep = tuple(keep_fp32_nodes)
    if (any(registry.needs_calibration(p) for p in precisions) or segment_precisions) \
            and calibration_data is None:
        raise CompareError("INT8 and FP8 rows need calibration_data= (real inputs of the model).")
    if runner not in ("auto", "hybrid", "onnxruntime"):
        raise CompareError(f"runner={runner!r}; use 'auto', 'hybrid' or 'onnxruntime'.")
    use_build = runner == "hybrid" or (runner == "auto" and _has_build())
    fp16_kw = {} if keep_fp32_ops is None else {"keep_fp32_ops": keep_fp32_ops}
    out_name = output or src.outputs[0].name
    if out_name not in [o.name for o in src.outputs]:
        raise CompareError(f"Model {src.name!r} has no output {out_name!r}; outputs: "
                           f"{[o.name for o in src.outputs]}.")

    configs: List[Tuple[str, str, str, int, Callable[[], Any]]] = []
    if "fp16" in precisions:
        configs.append(("fp16", "fp16", "", 0, lambda: prec.to_fp16(src, **fp16_kw)))
        if keep:
            configs.append((f"fp16 + {len(keep)} fp32 node(s)", "fp16", "", len(keep),
                            lambda: prec.to_fp16(src, keep_fp32_nodes=keep, **fp16_kw)))
    if "bf16" in precisions:
        configs.append(("bf16", "bf16", "", 0, lambda: prec.to_bf16(src, **fp16_kw)))
    if "fp8" in precisions:
        configs.append(("fp8 minmax", "fp8", "minmax", 0,
                        lambda: prec.quantize_fp8(src, calibration_data, progress=progress)))
    if "int8" in precisions:
        for method in methods:
            def quantized(method: str = method, exclude: Tuple[str, ...] = ()) -> Any:
                return prec.quantize_int8(src, calibration_data, method=method, per_channel=per_channel,
                                          exclude_nodes=exclude, progress=progress, cache_dir=cache_dir,
                                          batch_size=batch_size)
            configs.append((f"int8 {method}", "int8", method, 0, quantized))
            if keep:
                configs.append((f"int8 {method} + {len(keep)} fp32 node(s)", "int8", method, len(keep),
                                lambda m=method: quantized(m, keep)))
    for label_, peer in (candidates or {}).items():
        if label_ in {c[0] for c in configs} or label_ == "fp32":
            raise CompareError(f"candidates label {label_!r} clashes with a trtlab configuration; "
                               "rename it.")
        configs.append((label_, _precision_of(peer), "external", 0, lambda p=peer: as_model(p)))
    external = set(candidates or {})
    runs: Dict[str, Any] = {}
    execs: Dict[str, str] = {}
    meta: Dict[str, Tuple[str, str, int]] = {}
    example = feed_list(src, data, batch_size=batch_size)[0] if use_build else None
    coverage: Dict[str, float] = {}
    for name, precision, method, n_keep, make in progress_bar(configs, desc="precision configs",
                                                             enabled=progress):
        made = make()
        coverage[name] = _coverage(made)
        runnable, label = _runnable(made, use_build, False, cache_dir, example)
        runs[name] = runnable
        if label:
            execs[name] = label
        meta[name] = (precision, method, n_keep)
    candidates = runs
    for name, mapping in (segment_precisions or {}).items():
        from trtlab.codegen import build
        from trtlab.partitioning.partitioner import partition

        calib = feed_list(src, calibration_data, batch_size=batch_size)
        candidates[name] = build(partition(src), feeds=calib[0], precision=dict(mapping), calibration_data=calib,
                                 progress=False, cache_dir=cache_dir)
        meta[name] = ("mixed", "auto", 0)
    reference, ref_label = _runnable(src, use_build, False, cache_dir, example)
    if ref_label:
        execs["fp32"] = ref_label
    if not candidates:
        raise CompareError("precision_table needs a configuration besides FP32: add 'fp16' or 'int8' "
                           "to precisions=, or segment_precisions=.")
    frame = compare(reference, candidates, data, labels=labels, batch_size=batch_size,
                    reference_name="fp32", include_reference="fp32" in precisions, executors=execs)
    frame = frame[frame["output"] == out_name]
    latency = _warm_latency({"fp32": reference, **candidates}, src, data, batch_size,
                            latency_warmup, latency_iterations, ort_threads)
    rows = []
    base_acc = float("nan")
    for r in frame.itertuples(index=False):
        precision, method, n_keep = meta.get(r.candidate, ("fp32", "", 0))
        if r.candidate == "fp32":
            base_acc = r.accuracy
        rows.append({"config": r.candidate,
                     "precision": precision, "method": method, "fp32_nodes": n_keep,
                     "accuracy": r.accuracy, "top1_agree": r.top1_agree, "max_abs": r.max_abs,
                     "mean_abs": r.mean_abs, "n_nan": r.n_nan, "n_inf": r.n_inf, "cosine": r.cosine,
                     "mac_coverage": coverage.get(r.candidate, 0.0 if r.candidate == "fp32" else float("nan")),
                     "latency_ms": latency[r.candidate].median, "executor": r.executor,
                     "latency_p90_ms": latency[r.candidate].p90,
                     "latency_cv": latency[r.candidate].cv,
                     "source": "external" if r.candidate in external else "trtlab"})
    table = pd.DataFrame(rows)
    if "fp32" not in precisions:
        base_acc = _accuracy(reference, src, data, labels, batch_size, out_name)
    table["accuracy_delta"] = (table["accuracy"] - base_acc) * 100.0
    table = table[TABLE_COLUMNS].reset_index(drop=True)
    table.attrs.update(model=src.name, output=out_name, samples=int(sum(
        next(iter(f.values())).shape[0] for f in feed_list(src, data, batch_size=batch_size))))
    return table


# -- warm latency of the precision table (issue 18) ----------------------------------------------

def _warm_latency(runnables: Mapping[str, Any], src: Any, data: Data, batch_size: Optional[int],
                  warmup: int, iterations: int, threads: Optional[int]) -> Dict[str, Any]:
    """Name -> :class:`~trtlab.bench.LatencyStats` of warm repeated runs on the first batch.

    ONNX models run in a session with ``threads`` intra-op threads; hybrid models and callables
    as they are. Noisy timings are reported in one warning, not one per configuration.
    """
    import warnings

    from trtlab.study.latency import LatencyWarning, benchmark
    from trtlab.model import Model
    from trtlab.backends.onnxruntime.session import session

    feeds = feed_list(src, data, batch_size=batch_size, error=CompareError)[0]
    out: Dict[str, Any] = {}
    noisy: List[str] = []
    for name, obj in runnables.items():
        target = session(as_model(obj), threads=threads) if isinstance(obj, Model) else obj
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LatencyWarning)
            out[name] = benchmark(target, feeds, warmup=warmup, iterations=iterations,
                                  progress=False, label=name)
        for w in caught:
            if issubclass(w.category, LatencyWarning):
                noisy.append(f"{name} (cv {out[name].cv:.1%})")
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if noisy:
        warnings.warn(f"precision_table latency is noisy for {', '.join(noisy)}: the machine is "
                      "busy. Raise latency_iterations=, keep ort_threads=1 and run fewer other "
                      "jobs; the accuracy columns are unaffected.", LatencyWarning, stacklevel=3)
    return out


def _precision_of(model: Any) -> str:
    """A peer model's precision from its graph: Q/DQ element types, else float types."""
    proto = as_model(model).proto
    qdq = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if qdq:
        inits = {t.name: t.data_type for t in proto.graph.initializer}
        kinds = {inits.get(n.input[0]) for n in qdq if n.op_type == "DequantizeLinear"}
        if onnx.TensorProto.FLOAT8E4M3FN in kinds:
            return "fp8"
        return "int8"
    half = any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
    return "fp16" if half else "fp32"


def _coverage(model: Any) -> float:
    from trtlab.precision import int8_coverage

    try:
        value = int8_coverage(model)
    except Exception as exc:  # coverage is informative; a model it cannot read gets nan
        log.debug("MAC coverage of %s not computed: %s", getattr(model, "name", model), exc)
        return float("nan")
    return 0.0 if np.isnan(value) else value


def _accuracy(reference: Any, src: Any, data: Data, labels: Optional[np.ndarray],
              batch_size: Optional[int], output: str) -> float:
    if labels is None:
        return float("nan")
    runner, _ = as_runner(reference, "fp32", src.inputs)
    with runner:
        preds = [runner.infer(f)[output] for f in feed_list(src, data, batch_size=batch_size)]
    top = _top1(np.concatenate(preds))
    labels = np.asarray(labels).reshape(-1)
    if top is None or len(top) != len(labels):
        return float("nan")
    return float(np.mean(top == labels))


def _has_build() -> bool:
    from trtlab.backends.tensorrt import flavor as trt

    return trt.info().build
