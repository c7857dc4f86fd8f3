"""Build a partition into a runnable hybrid model.

:func:`build` reads like the pipeline it runs::

    examples    = the user's example inputs (feeds=), validated
    facts       = every tensor's shape (and shape-tensor values), from one run of the model on
                  them and/or shape inference over shapes=; nothing invented
    models      = each segment's ONNX, converted to FP16 / INT8 when asked
    compile     = each segment's backend compiles it (TensorRT: engines built in worker processes,
                  in parallel; ONNX Runtime: sessions)
    verify      = a segment its backend cannot compile is bisected to the failing nodes, which
                  move to fallback with the backend's message; compile again; warn once

With dynamic dims and neither ``feeds=`` nor ``shapes=``, the build waits for the first
:meth:`~trtlab.runtime.HybridModel.run` and uses its real inputs (announced once, as a warning).
This module imports no TensorRT: each backend (:mod:`trtlab.backends`) owns its compile step,
profiles and failure isolation.

Examples
--------
>>> import trtlab
>>> part = trtlab.partition(trtlab.zoo.load("resnet_mini"))          # doctest: +SKIP
>>> hybrid = trtlab.build(part, feeds={"input": x}, precision="fp16") # doctest: +SKIP
>>> hybrid.executors                                                  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import onnx

from trtlab._progress import progress as progress_bar
from trtlab.backends.base import DYNAMIC_BATCH_MODES, CompileSettings, as_compiled, backend_named, compile_many
from trtlab.backends.shapes import ShapeFacts, load_examples, needs_data, observe
from trtlab.errors import BuildError, CalibrationError, InputError, PrecisionError

log = logging.getLogger(__name__)

__all__ = ["build", "BuildWarning", "LazyBuildWarning"]

FAILURE_MODES = ("fallback", "raise")
PrecisionArg = Union[str, Mapping[int, str]]


class BuildWarning(UserWarning):
    """The partition that runs differs from the one given: nodes moved to fallback at build time."""


class LazyBuildWarning(UserWarning):
    """Engines are built at the first run, because no example inputs or shapes were given."""


# ----------------------------------------------------------------------------------------------
# precision and calibration
# ----------------------------------------------------------------------------------------------

def _check_precision(value: Any, where: str) -> str:
    if value == "fp32":  # always a mode; the precision package is not imported for it
        return value
    from trtlab.precision import registry

    if value not in registry.names():
        raise PrecisionError(f"{where}={value!r} is not a precision trtlab builds; use one of "
                             f"{', '.join(registry.names())}.")
    return value


def _node_precisions(part: Any, precision: PrecisionArg) -> Tuple[Dict[str, str], Optional[str]]:
    """Precision per node (dict form) or one precision for accelerated segments (str form)."""
    if isinstance(precision, str):
        return {}, _check_precision(precision, "precision")
    if not isinstance(precision, Mapping):
        raise PrecisionError(f"precision must be a string or a dict segment index -> precision, "
                             f"got {type(precision).__name__}.")
    valid = {s.index for s in part.segments}
    bad = [k for k in precision if k not in valid]
    if bad:
        raise PrecisionError(f"precision names segment(s) {bad}, but the partition has segments "
                             f"{sorted(valid)} ({', '.join(s.name for s in part.segments)}).")
    per_node: Dict[str, str] = {}
    for seg in part.segments:
        p = _check_precision(precision.get(seg.index, "fp32"), f"precision[{seg.index}]")
        per_node.update({n: p for n in seg.nodes})
    return per_node, None


def _segment_precision(seg: Any, per_node: Mapping[str, str], default: Optional[str]) -> str:
    if default is not None:
        return default if seg.backend != "fallback" else "fp32"
    return per_node.get(seg.nodes[0], "fp32") if seg.nodes else "fp32"


def _calibration_batches(model: Any, data: Any) -> List[Dict[str, np.ndarray]]:
    from trtlab.feeds import validate_feeds
    from trtlab.precision._common import calibration_feeds

    if data is None:
        raise CalibrationError("INT8 and FP8 precisions need calibration_data= (one array, a dict input name -> "
                               "array with the batch on axis 0, or a list of feed dicts, with real inputs "
                               "of the model).")
    batches = calibration_feeds(model, data)
    for i, batch in enumerate(batches):
        try:
            validate_feeds(model.inputs, batch, what=f"calibration batch {i} of model {model.name!r}")
        except InputError as exc:
            raise CalibrationError(str(exc)) from None
    return batches


def _needs_calibration(precision: Optional[str]) -> bool:
    if not precision or precision == "fp32":
        return False
    from trtlab.precision import registry

    return registry.needs_calibration(precision)


def _convert(proto: onnx.ModelProto, precision: str, calib: Optional[List[Dict[str, np.ndarray]]]) -> onnx.ModelProto:
    """The segment's ONNX in ``precision``: the precision registry's transform (FP32 unchanged)."""
    if precision == "fp32":
        return proto
    from trtlab.precision import registry

    result = registry.apply(precision, proto, calib)
    return getattr(result, "proto", result)


# ----------------------------------------------------------------------------------------------
# build
# ----------------------------------------------------------------------------------------------

def _as_partition(source: Any) -> Any:
    if hasattr(source, "segments") and hasattr(source, "segment_model"):
        return source
    from trtlab.model import Model, load
    from trtlab.partitioning.partitioner import partition

    return partition(source if isinstance(source, Model) else load(source))


class _Backends:
    """Backend objects by segment backend name: the partition's own, then the shipped ones."""

    def __init__(self, part: Any, extra: Optional[Mapping[str, Any]]) -> None:
        self.table: Dict[str, Any] = {}
        obj = getattr(part, "backend_object", None)
        if obj is not None:
            self.table[part.backend] = obj
        for name, backend in (extra or {}).items():
            if not (hasattr(backend, "compile") and hasattr(backend, "check_support")):
                raise BuildError(f"backends[{name!r}] = {backend!r} is not a Backend: it needs name, "
                                 "check_support(model) and compile(segment_model, settings).")
            self.table[name] = backend

    def __getitem__(self, name: str) -> Any:
        if name not in self.table:
            try:
                self.table[name] = backend_named("onnxruntime" if name == "fallback" else name)
            except BuildError:
                raise BuildError(f"Segments ask for backend {name!r}, which build() does not know (known: "
                                 f"{sorted(self.table) + ['fallback', 'tensorrt']}). Pass the backend object "
                                 f"once, to partition(model, backend=...).") from None
        return self.table[name]


@dataclass(frozen=True)
class _Options:
    per_node: Mapping[str, str]
    default_precision: Optional[str]
    calib_batches: Optional[List[Dict[str, np.ndarray]]]
    shapes: Optional[Mapping[str, Any]]
    base: CompileSettings
    on_build_failure: str
    progress: bool
    ort_threads: Any


def _ort_threads(policy: Any, segments: int) -> Tuple[Optional[int], bool]:
    """(intra-op threads, spinning) of every ONNX Runtime session of a hybrid.

    ``"auto"``: ONNX Runtime's default pool for a one-segment hybrid; with several segments,
    which take turns on the same cores, one thread per session (each session's default pool
    spins its idle threads, and several pools oversubscribe the cores: on a loaded 2-core
    machine a boundary then cost milliseconds). ``"default"``: ONNX Runtime's default pool in
    every session. An int: that many threads per session.
    """
    if policy == "auto" or policy is None:
        return (None, True) if segments <= 1 else (1, True)
    if policy == "default":
        return None, True
    if isinstance(policy, bool) or not isinstance(policy, (int, np.integer)) or policy < 1:
        raise BuildError(f"ort_threads={policy!r}: give a number of threads >= 1, 'auto' or 'default'.")
    return int(policy), True


def _value_cuts(part: Any) -> List[str]:
    """Integer cut tensors of rank <= 1 (possible shape tensors) whose values no example gave."""
    model = part.model
    out = []
    for s in part.segments:
        if s.is_fallback:
            continue
        for t in s.inputs:
            info = model.tensor(t)
            if model.producer(t) is not None and info.dtype is not None and info.dtype.kind in "iu" \
                    and info.shape is not None and len(info.shape) <= 1:
                out.append(t)
    return out


def build(partition: Any, *, feeds: Any = None, shapes: Optional[Mapping[str, Any]] = None,
          precision: PrecisionArg = "fp32", calibration_data: Any = None,
          cache_dir: Union[str, "os.PathLike[str]", None, bool] = None, workspace: Optional[int] = None,
          dynamic_batch: str = "single", progress: bool = True, on_build_failure: str = "fallback",
          eager: bool = True, opt_level: Optional[int] = None, backends: Optional[Mapping[str, Any]] = None,
          providers: Optional[Sequence[str]] = None, ort_threads: Any = "auto",
          workers: Optional[int] = None, timeout: Optional[float] = None) -> Any:
    """Build a :class:`~trtlab.partitioning.partitioner.Partition` into a :class:`~trtlab.runtime.HybridModel`.

    Parameters
    ----------
    partition
        A Partition (or a model, partitioned with defaults). Its backend object (given once, to
        :func:`~trtlab.partitioning.partitioner.partition`) compiles its accelerated segments.
    feeds
        Example inputs: a dict input name -> array, a path to an ``.npz`` with one array per
        input, or a list of such dicts. The model runs once on them (ONNX Runtime) and every
        dynamic dim and shape-tensor value each segment sees is taken from that run.
    shapes
        ``{model input: shape | (min, opt, max)}`` ranges; tensors inside the model get theirs
        by shape inference. With neither ``feeds`` nor ``shapes`` and dynamic dims, the build
        happens at the first :meth:`~trtlab.runtime.HybridModel.run` on its real inputs (a
        :class:`LazyBuildWarning` says so, once).
    precision
        ``"fp32"``, ``"fp16"`` or ``"int8"`` for every accelerated segment (fallback segments
        stay FP32), or ``{segment index: precision}``. FP16 and INT8 convert the segment's ONNX
        (:func:`trtlab.precision.to_fp16`, :func:`trtlab.precision.quantize_int8`); that
        converted ONNX is what TensorRT builds and what ONNX Runtime runs.
    calibration_data
        For INT8: one array (single-input models), a dict input name -> array with the batch
        on axis 0 (an ``.npz`` works; other keys are ignored), or a list of feed dicts.
    cache_dir
        Engine cache folder; ``None`` uses ``TRTLAB_CACHE_DIR`` or the user cache dir; ``False``
        turns the cache off.
    workspace
        Workspace memory pool limit in bytes.
    dynamic_batch
        ``"single"`` (one engine per segment covering min..max, rebuilt wider for a larger
        input, with a warning) or ``"per_shape"`` (one engine per input shape seen).
    progress
        Show progress bars (segments compiled, isolation builds).
    on_build_failure
        ``"fallback"`` (default): bisect a segment that fails to build to its failing nodes,
        move them to fallback with the builder's message as reason, build the rest; a
        :class:`BuildWarning` names them. ``"raise"``: raise :class:`~trtlab.errors.BuildError`.
    eager
        Build engines now (``True``) or at the first run (``False``).
    opt_level
        Builder optimization level.
    backends
        Backend objects by segment backend name, overriding the partition's (rarely needed).
    providers
        ONNX Runtime providers for ONNX Runtime segments.
    ort_threads
        ONNX Runtime intra-op threads per segment session, or ``"auto"`` (see :func:`_ort_threads`).
    workers, timeout
        Build worker processes (default: one per core) and seconds one build may take.

    Returns
    -------
    HybridModel
        ``hybrid.partition`` is the partition that runs (after any build-failure moves).

    Notes
    -----
    ``build`` never changes the model given. A model loaded from an ``.onnx`` file leaves its
    embedded weights in the file by default (``load(path, weights="file")``), so the hybrid's
    sessions hold the one copy of them; the sessions and engines are made only after the files
    the model reads weights from are checked unchanged since loading (``ExternalDataError``).
    """
    from trtlab.runtime import HybridModel

    if dynamic_batch not in DYNAMIC_BATCH_MODES:
        raise BuildError(f"dynamic_batch={dynamic_batch!r} is not a mode; use one of {', '.join(DYNAMIC_BATCH_MODES)}.")
    if on_build_failure not in FAILURE_MODES:
        raise BuildError(f"on_build_failure={on_build_failure!r} is not a mode; use one of {', '.join(FAILURE_MODES)}.")
    for knob, value, low in (("workspace", workspace, 1), ("opt_level", opt_level, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise BuildError(f"{knob}={value!r} is not an integer >= {low}; pass one, or None for "
                             "TensorRT's default.")
    part = _as_partition(partition)
    per_node, default_precision = _node_precisions(part, precision)
    threads, spinning = _ort_threads(ort_threads, len(part.segments))
    cache = None
    if cache_dir is not False:
        from trtlab.backends.tensorrt.cache import EngineCache

        cache = EngineCache(None if cache_dir in (None, True) else cache_dir)
    examples = load_examples(part.model, feeds)
    if shapes:
        from trtlab.backends.tensorrt.profiles import input_ranges

        input_ranges(part.model, shapes)  # bad shapes fail now, not at the first run
    calib_batches = None
    if any(_needs_calibration(p) for p in {default_precision} | set(per_node.values())):
        calib_batches = _calibration_batches(part.model, calibration_data)
    base = CompileSettings(workspace=workspace, opt_level=opt_level, dynamic_batch=dynamic_batch, cache=cache,
                           eager=eager, providers=tuple(providers) if providers else None, threads=threads,
                           spinning=spinning, workers=workers, timeout=timeout, progress=progress)
    opts = _Options(per_node, default_precision, calib_batches, shapes, base, on_build_failure, progress,
                    ort_threads)
    table = _Backends(part, backends)
    if not _needs_shapes(part, table):
        # ONNX Runtime runs any shape: no observation run of the model, no wait for the first run
        examples = None
        return _compile(part, examples, opts, table)
    undetermined = needs_data(part.model, shapes)
    value_cuts = _value_cuts(part) if examples is None else []
    if examples is None and eager and (undetermined or value_cuts):
        why = (f"model input(s) {undetermined} have dynamic dims" if undetermined else
               f"segment input(s) {value_cuts[:3]} may be shape tensors")
        warnings.warn(
            f"build(): {why} and no example inputs were given, so nothing is built yet: the "
            f"hybrid builds at its first run(), for that run's real shapes. Pass feeds= (example "
            f"inputs: a dict of arrays or an .npz) or shapes= to build now.", LazyBuildWarning, stacklevel=2)
        return HybridModel.deferred(part, lambda first: _compile(part, [first], opts, table), cache=cache,
                                    dynamic_batch=dynamic_batch)
    return _compile(part, examples, opts, table)


def _needs_shapes(part: Any, table: "_Backends") -> bool:
    """Whether a segment's backend compiles for shapes (``needs_shapes``, true unless it says not).

    When none does (every segment runs on ONNX Runtime), the build needs no example run of
    the model: no extra session of it, no build deferred to the first run.
    """
    return any(getattr(table[name], "needs_shapes", True) for name in {s.backend for s in part.segments})


def _compile(part: Any, examples: Optional[List[Dict[str, np.ndarray]]], opts: _Options,
             table: _Backends) -> Any:
    from trtlab.runtime import HybridModel
    from trtlab.weights import Weights

    given = part
    facts = observe(part.model, examples, opts.shapes)
    weights = Weights.of(part.model)
    compiled: Dict[Tuple[str, Tuple[str, ...], str], Tuple[Any, onnx.ModelProto]] = {}
    moved: List[Tuple[str, str]] = []
    builds = 0
    while True:
        segments = list(part.segments)
        precisions = {s.index: _segment_precision(s, opts.per_node, opts.default_precision) for s in segments}
        calib = None
        if opts.calib_batches is not None:
            from trtlab.backends.tensorrt.profiles import _boundary_values

            needed = sorted({t for s in segments if _needs_calibration(precisions[s.index]) for t in s.inputs})
            calib = _boundary_values(part.model, opts.calib_batches, needed)
        executables: Dict[int, Any] = {}
        models: Dict[int, onnx.ModelProto] = {}
        jobs: Dict[str, List[Tuple[Any, onnx.ModelProto, CompileSettings]]] = {}
        for seg in segments:
            memo = (seg.backend, tuple(seg.nodes), precisions[seg.index])
            if memo in compiled:
                executables[seg.index], models[seg.index] = compiled[memo]
                continue
            seg_calib = None if calib is None or not _needs_calibration(precisions[seg.index]) else \
                [{k: b[k] for k in seg.inputs} for b in calib]
            proto, shared = _segment_onnx(part, seg, precisions[seg.index], seg_calib, weights, table[seg.backend])
            proto = facts.fix_value_inputs(proto)
            profile, values, missing = facts.segment_profile(proto)
            if missing and not seg.is_fallback:
                log.info("segment %s: no shapes known for %s; its engine builds at the first run", seg.name, missing)
            settings = dataclasses.replace(opts.base, segment=seg.name, precision=precisions[seg.index],
                                           profile=None if missing else profile, values=values, **shared)
            jobs.setdefault(seg.backend, []).append((seg, proto, settings))
        failures = []
        bar = progress_bar(total=sum(len(v) for v in jobs.values()), desc="build", enabled=opts.progress,
                           unit="segment")
        for name, items in jobs.items():
            backend = table[name]
            results = compile_many(backend, [(proto, st) for _, proto, st in items])
            for (seg, proto, st), result in zip(items, results):
                bar.set_postfix_str(seg.name)
                bar.update(1)
                if isinstance(result, BuildError):
                    failures.append((seg, proto, st, backend, result))
                    continue
                exe = as_compiled(result, getattr(backend, "name", name), st)
                compiled[(seg.backend, tuple(seg.nodes), precisions[seg.index])] = (exe, proto)
                executables[seg.index], models[seg.index] = exe, proto
        bar.close()
        if not failures:
            break
        if opts.on_build_failure == "raise":
            raise failures[0][4]
        reasons: Dict[str, str] = {}
        for seg, proto, st, backend, exc in failures:
            if seg.is_fallback:
                raise exc
            culprits, tried = _isolate(backend, st.full_model(proto), st, exc, facts, opts.progress)
            builds += tried
            for node, error in culprits:
                original = _nearest_original(proto, node, seg.nodes)
                reasons.setdefault(original, f"{getattr(backend, 'name', seg.backend)} build failed "
                                             f"({precisions[seg.index]}): {error}")
        fresh = {n: r for n, r in reasons.items() if part.forced.get(n, ("", ""))[0] != "build_failed"}
        if not fresh:
            raise failures[0][4]
        for node, reason in fresh.items():
            log.info("node %s moved to fallback: %s", node, reason)
            moved.append((node, reason))
        part = part.with_fallback(list(fresh), fresh, kind="build_failed")
    if moved:
        _warn_moved(given, part, moved)
    return HybridModel(part, executables, models, precisions, cache=opts.base.cache,
                       dynamic_batch=opts.base.dynamic_batch, moved=moved, facts=facts, isolation_builds=builds,
                       weights=weights)


def _segment_onnx(part: Any, seg: Any, precision: str, calib: Optional[List[Dict[str, np.ndarray]]],
                  weights: Any, backend: Any) -> Tuple[onnx.ModelProto, Dict[str, Any]]:
    """The ONNX a segment's backend compiles, and the settings that say where its weights are.

    FP32 segments share the model's weights: a backend that takes light models
    (``weights_by_reference``) gets one without copies of them (:mod:`trtlab.weights`), others a
    standalone copy. Converted segments (FP16, INT8 ...) hold their own converted weights. A
    one-segment FP32 hybrid of a model unchanged from its file names that file
    (``source_path``): ONNX Runtime reads it as ``InferenceSession(path)`` does.
    """
    from trtlab.extract import segment_model
    from trtlab.weights import has_external

    light = segment_model(part, seg.index, weights="reference")
    if precision != "fp32":
        return _convert(weights.full(light), precision, calib), {}
    if not getattr(backend, "weights_by_reference", False):
        return weights.full(light), {}
    shared: Dict[str, Any] = {"weights": weights}
    if has_external(light) and weights.base is not None:
        shared["weights_dir"] = str(weights.base)
    whole = _whole_model_file(part, seg)
    if whole is not None:
        shared["source_path"] = whole
    return light, shared


def _whole_model_file(part: Any, seg: Any) -> Optional[str]:
    """The model's file when ``seg`` is the whole model and the model is unchanged from that file."""
    from trtlab.weights import same_as_file

    model = part.model
    if len(part.segments) != 1 or len(seg.nodes) != len(model.node_names) or \
            set(seg.inputs) != {t.name for t in model.inputs}:
        return None
    why = same_as_file(model)
    if why:
        log.info("segment %s: ONNX Runtime gets the segment's ONNX, not the model file: %s", seg.name, why)
        return None
    return str(model.path)


def _nearest_original(proto: onnx.ModelProto, node: str, originals: Sequence[str]) -> str:
    from trtlab.backends.isolation import nearest_original

    return nearest_original(proto, node, originals)


def _isolate(backend: Any, proto: onnx.ModelProto, settings: CompileSettings, error: BuildError,
             facts: ShapeFacts, progress: bool) -> Tuple[List[Tuple[str, str]], int]:
    """The failing nodes of a segment: the backend's own ``isolate`` or the generic bisection."""
    own = getattr(backend, "isolate", None)
    if own is not None:
        return own(proto, settings, error, facts, progress=progress)
    from trtlab.backends.isolation import isolate

    def try_many(subs: List[onnx.ModelProto]) -> List[Optional[str]]:
        out: List[Optional[str]] = []
        for sub, result in zip(subs, compile_many(backend, [
                (sub, dataclasses.replace(settings, profile=facts.segment_profile(sub)[0],
                                          values=facts.segment_profile(sub)[1])) for sub in subs])):
            out.append(str(result) if isinstance(result, BuildError) else None)
        return out

    return isolate(proto, try_many, first_error=str(error), progress=progress)


def _warn_moved(given: Any, part: Any, moved: List[Tuple[str, str]]) -> None:
    model = part.model
    lines = "; ".join(f"{n} ({model.node(n).op_type}): {r}" for n, r in moved[:5])
    more = f"; and {len(moved) - 5} more" if len(moved) > 5 else ""
    warnings.warn(
        f"build() moved {len(moved)} node(s) to fallback because the backend could not build them: "
        f"{lines}{more}. hybrid.partition is the partition that runs: {len(part.segments)} segments "
        f"(the partition given had {len(given.segments)}); hybrid.partition.moved lists the nodes.",
        BuildWarning, stacklevel=3)
