"""Build a partition into a runnable hybrid model.

:func:`build` reads like the pipeline it runs::

    precisions  = which precision each segment gets
    models      = each segment's ONNX, converted to FP16 / INT8 when asked
    profiles    = min/opt/max shapes of every TensorRT segment input
    compile     = TensorRT engines (cached) for TensorRT segments, ONNX Runtime sessions for the rest
    verify      = a segment TensorRT cannot build: bisect to the nodes that fail, move them to
                  fallback with the builder's error as reason, compile again

Engines are built with Polygraphy's TensorRT loaders (``NetworkFromOnnxBytes`` strongly typed,
``CreateConfig`` with profiles, memory pool limit, optimization level and timing cache,
then TensorRT's builder). With TensorRT-RTX they are built ahead of time, without a GPU.

Examples
--------
>>> import trtlab
>>> part = trtlab.partition(trtlab.zoo.load("resnet_mini"))          # doctest: +SKIP
>>> hybrid = trtlab.build(part, precision="fp16")                     # doctest: +SKIP
>>> hybrid.executors                                                  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import onnx

from trtlab._progress import progress as progress_bar
from trtlab.backends.base import DYNAMIC_BATCH_MODES, CompileSettings, Profile, ShapeRange
from trtlab.backends.onnxruntime.backend import OnnxRuntimeBackend
from trtlab.backends.tensorrt.backend import TensorRTBackend
from trtlab.backends.tensorrt.cache import EngineCache
from trtlab.backends.tensorrt.isolate import _nearest_original, isolate_build_failure
from trtlab.backends.tensorrt.profiles import (_boundary_values, _dynamic_inputs, _observed_ranges, input_ranges,
                                               segment_profile, shape_table)
from trtlab.errors import BuildError, CalibrationError, InputError, PrecisionError

log = logging.getLogger(__name__)

__all__ = ["build", "PRECISIONS"]

PRECISIONS = ("fp32", "fp16", "int8")
FAILURE_MODES = ("fallback", "raise")
PrecisionArg = Union[str, Mapping[int, str]]


# ----------------------------------------------------------------------------------------------
# TensorRT engines
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# shapes and profiles
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# sub-models and build-failure isolation
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# precision and calibration
# ----------------------------------------------------------------------------------------------

def _check_precision(value: Any, where: str) -> str:
    if value not in PRECISIONS:
        raise PrecisionError(f"{where}={value!r} is not a precision trtlab builds; use one of "
                             f"{', '.join(PRECISIONS)}.")
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
        raise CalibrationError("precision='int8' needs calibration_data= (one array, a dict input name -> "
                               "array with the batch on axis 0, or a list of feed dicts, with real inputs "
                               "of the model).")
    batches = calibration_feeds(model, data)
    for i, batch in enumerate(batches):
        try:
            validate_feeds(model.inputs, batch, what=f"calibration batch {i} of model {model.name!r}")
        except InputError as exc:
            raise CalibrationError(str(exc)) from None
    return batches


def _convert(proto: onnx.ModelProto, precision: str, calib: Optional[List[Dict[str, np.ndarray]]]) -> onnx.ModelProto:
    if precision == "fp32":
        return proto
    from trtlab import precision as prec

    result = prec.to_fp16(proto) if precision == "fp16" else prec.quantize_int8(proto, calib)
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


def _backends(extra: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    table: Dict[str, Any] = {"tensorrt": TensorRTBackend(), "fallback": OnnxRuntimeBackend()}
    for name, backend in (extra or {}).items():
        if not (hasattr(backend, "compile") and hasattr(backend, "check_support")):
            raise BuildError(f"backends[{name!r}] = {backend!r} is not a Backend: it needs name, "
                             "check_support(model) and compile(segment_model, settings).")
        table[name] = backend
    return table


def build(partition: Any, *, precision: PrecisionArg = "fp32", calibration_data: Any = None,
          cache_dir: Union[str, "os.PathLike[str]", None, bool] = None, workspace: Optional[int] = None,
          shapes: Optional[Mapping[str, Any]] = None, dynamic_batch: str = "single",
          progress: bool = True, on_build_failure: str = "fallback", eager: bool = True,
          opt_level: Optional[int] = None, backends: Optional[Mapping[str, Any]] = None,
          providers: Optional[Sequence[str]] = None) -> Any:
    """Build a :class:`~trtlab.partitioning.partitioner.Partition` into a :class:`~trtlab.runtime.HybridModel`.

    Parameters
    ----------
    partition
        A Partition (or a model, partitioned with defaults).
    precision
        ``"fp32"``, ``"fp16"`` or ``"int8"`` for every TensorRT segment (fallback segments stay
        FP32), or ``{segment index: precision}``. FP16 and INT8 convert the segment's ONNX
        (:func:`trtlab.precision.to_fp16`, :func:`trtlab.precision.quantize_int8`); that
        converted ONNX is what TensorRT builds and what ONNX Runtime runs.
    calibration_data
        For INT8: one array (single-input models), a dict input name -> array with the batch
        on axis 0 (an ``.npz`` works; other keys are ignored), or a list of feed dicts. Segment
        inputs inside the model are computed from it with the FP32 model.
    cache_dir
        Engine cache folder; ``None`` uses ``TRTLAB_CACHE_DIR`` or the user cache dir; ``False``
        turns the cache off.
    workspace
        Workspace memory pool limit in bytes.
    shapes
        ``{tensor: shape | (min, opt, max)}``; model inputs with dynamic dims get profiles from
        it (dynamic dims default to 1), and so do segment inputs inferred from them.
    dynamic_batch
        ``"single"`` (one engine per segment covering min..max, rebuilt wider for a larger
        input) or ``"per_shape"`` (one engine per input shape seen).
    progress
        Show a progress bar over segments.
    on_build_failure
        ``"fallback"``: find the nodes TensorRT cannot build (bisection with ahead-of-time
        builds), move them to fallback with the builder's error as reason, and rebuild.
        ``"raise"``: raise :class:`~trtlab.errors.BuildError`.
    eager
        Build engines now (``True``) or at the first run (``False``; a build failure then
        raises at run time).
    opt_level
        Builder optimization level.
    backends
        Extra backends by segment backend name (see :mod:`trtlab.backends.base`).
    providers
        ONNX Runtime providers for ONNX Runtime segments.

    Returns
    -------
    HybridModel
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
    cache = None if cache_dir is False else EngineCache(None if cache_dir in (None, True) else cache_dir)
    table_of_backends = _backends(backends)
    ranges = input_ranges(part.model, shapes)
    overrides = {k: v for k, v in ranges.items() if shapes and k in shapes}
    calib_batches = None
    if "int8" in ({default_precision} | set(per_node.values())):
        calib_batches = _calibration_batches(part.model, calibration_data)
    compiled: Dict[Tuple[str, Tuple[str, ...], str], Tuple[Any, onnx.ModelProto]] = {}
    table: Optional[Dict[str, ShapeRange]] = None
    moved: List[Tuple[str, str]] = []

    while True:
        segments = list(part.segments)
        precisions = {s.index: _segment_precision(s, per_node, default_precision) for s in segments}
        calib = None
        if calib_batches is not None:
            needed = sorted({t for s in segments if precisions[s.index] == "int8" for t in s.inputs})
            calib = _boundary_values(part.model, calib_batches, needed)
        failure = None
        bar = progress_bar(segments, total=len(segments), desc="build", enabled=progress)
        executables: Dict[int, Any] = {}
        models: Dict[int, onnx.ModelProto] = {}
        for seg in bar:
            memo = (seg.backend, tuple(seg.nodes), precisions[seg.index])
            if memo in compiled:
                executables[seg.index], models[seg.index] = compiled[memo]
                continue
            backend = table_of_backends.get(seg.backend)
            if backend is None:
                raise BuildError(f"Segment {seg.name!r} asks for backend {seg.backend!r}; known backends: "
                                 f"{sorted(table_of_backends)}. Pass backends={{'{seg.backend}': ...}} to build().")
            seg_calib = None if calib is None or precisions[seg.index] != "int8" else \
                [{k: b[k] for k in seg.inputs} for b in calib]
            proto = _convert(part.segment_model(seg.index), precisions[seg.index], seg_calib)
            profile = None
            if isinstance(backend, TensorRTBackend):
                dynamic = _dynamic_inputs(proto)
                if dynamic:
                    if table is None:
                        table = shape_table(part.model.proto, ranges)
                    unknown = [n for n in dynamic if n not in overrides and n not in table]
                    if unknown:
                        table.update(_observed_ranges(part.model, ranges, unknown))
                    profile = segment_profile(proto, table, overrides, seg.name)
            settings = CompileSettings(segment=seg.name, precision=precisions[seg.index], profile=profile,
                                       workspace=workspace, opt_level=opt_level, dynamic_batch=dynamic_batch,
                                       cache=cache, eager=eager,
                                       providers=tuple(providers) if providers else None)
            try:
                exe = backend.compile(proto, settings)
            except BuildError as exc:
                if not isinstance(backend, TensorRTBackend) or getattr(exc, "stage", None) is None \
                        or on_build_failure == "raise":
                    raise
                failure = (seg, proto, settings, backend, exc)
                break
            compiled[memo] = (exe, proto)
            executables[seg.index], models[seg.index] = exe, proto
        bar.close()
        if failure is None:
            break
        seg, proto, settings, backend, exc = failure

        def try_build(data: bytes, prof: Optional[Profile], _s: CompileSettings = settings,
                      _b: Any = backend) -> None:
            _b.builder(data, prof, _s)

        culprit, error = isolate_build_failure(proto, settings.profile, try_build, progress=progress)
        original = culprit if culprit in set(seg.nodes) else _nearest_original(proto, culprit, seg.nodes)
        reason = f"TensorRT build failed ({precisions[seg.index]}): {error}"
        log.info("segment %s: node %s moved to fallback: %s", seg.name, original, error)
        moved.append((original, reason))
        part = part.with_fallback([original], reason, kind="build_failed")

    return HybridModel(part, executables, models, precisions, cache=cache, dynamic_batch=dynamic_batch,
                       moved=moved)


