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
``EngineBytesFromNetwork``). With TensorRT-RTX they are built ahead of time, without a GPU.

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
import sys
import tempfile
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import onnx

from ._progress import progress as progress_bar
from .backends import (
    DYNAMIC_BATCH_MODES,
    CompileSettings,
    OnnxRuntimeBackend,
    Profile,
    Shape,
    ShapeRange,
    TensorRTBackend,
)
from .cache import CacheKey, EngineCache
from .errors import BuildError, CalibrationError, InputError, PrecisionError

log = logging.getLogger(__name__)

__all__ = [
    "build",
    "build_engine",
    "cache_key",
    "engine_target",
    "input_ranges",
    "segment_profile",
    "shape_table",
    "isolate_build_failure",
    "polygraphy_trt",
    "PRECISIONS",
]

PRECISIONS = ("fp32", "fp16", "int8")
FAILURE_MODES = ("fallback", "raise")
PrecisionArg = Union[str, Mapping[int, str]]


# ----------------------------------------------------------------------------------------------
# TensorRT engines
# ----------------------------------------------------------------------------------------------

def polygraphy_trt() -> Any:
    """``polygraphy.backend.trt``, bound to the TensorRT flavor trtlab uses.

    Polygraphy picks ``tensorrt`` or ``tensorrt_rtx`` when ``polygraphy.backend.trt`` is first
    imported (``POLYGRAPHY_USE_TENSORRT_RTX``); this sets that choice from
    :func:`trtlab.trt.flavor` before the import.
    """
    from . import trt

    trt.module()
    rtx = trt.flavor() == "tensorrt_rtx"
    from polygraphy import config as pconfig

    if "polygraphy.backend.trt.loader" not in sys.modules:
        pconfig.USE_TENSORRT_RTX = rtx
    elif bool(pconfig.USE_TENSORRT_RTX) != rtx:
        raise BuildError(
            f"Polygraphy's TensorRT backend was imported for "
            f"{'tensorrt_rtx' if pconfig.USE_TENSORRT_RTX else 'tensorrt'} but trtlab uses "
            f"{trt.flavor()}. Set POLYGRAPHY_USE_TENSORRT_RTX={'1' if rtx else '0'} before importing "
            "polygraphy.backend.trt, or set TRTLAB_TENSORRT to the same flavor."
        )
    from polygraphy.backend import trt as ptrt

    return ptrt


def engine_target() -> str:
    """What engines are built for: the GPU's compute capability, or ``"aot"`` without one."""
    from . import trt

    info = trt.info()
    if info.run and info.compute_capability:
        return f"sm{info.compute_capability}"
    return "aot"


def cache_key(onnx_bytes: bytes, settings: CompileSettings, profile: Optional[Profile]) -> CacheKey:
    """The engine cache key of one segment build."""
    from . import trt

    return CacheKey.make(onnx_bytes, precision=settings.precision, settings=settings.build_options(),
                         profiles=[] if profile is None else [list(p) for p in profile],
                         flavor=trt.flavor() or "none", trt_version=trt.version() or "none",
                         target=engine_target())


def _error_recorder(trt: Any) -> Any:
    class _Recorder(trt.IErrorRecorder):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IErrorRecorder.__init__(self)
            self.errors: List[Tuple[Any, str]] = []

        def num_errors(self) -> int:
            return len(self.errors)

        def has_overflowed(self) -> bool:
            return False

        def clear(self) -> None:
            self.errors.clear()

        def get_error_code(self, index: int) -> Any:
            return self.errors[index][0]

        def get_error_desc(self, index: int) -> str:
            return self.errors[index][1]

        def report_error(self, code: Any, desc: str) -> bool:
            self.errors.append((code, desc))
            return True

    return _Recorder()


def build_engine(onnx_bytes: bytes, profile: Optional[Profile] = None,
                 settings: Optional[CompileSettings] = None, *,
                 timing_cache: Optional[str] = None) -> bytes:
    """Build a serialized TensorRT engine from ONNX bytes.

    A strongly typed network is parsed with Polygraphy's ``NetworkFromOnnxBytes``; the builder
    config (``CreateConfig``) gets one optimization profile, the workspace limit, the builder
    optimization level and a timing cache (read from and written back to the cache folder).

    Raises
    ------
    BuildError
        Parsing or building failed; ``exc.stage`` is ``"parse"`` or ``"build"`` and
        ``exc.errors`` holds TensorRT's messages.
    """
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    from . import trt as trtinfo

    settings = settings or CompileSettings()
    ptrt = polygraphy_trt()
    trt = trtinfo.module()
    if timing_cache is None and isinstance(settings.cache, EngineCache) and _writable(settings.cache.directory):
        timing_cache = str(settings.cache.directory /
                           f"timing-{trtinfo.flavor()}-{trtinfo.version()}-{engine_target()}.cache")
    pools = None if settings.workspace is None else {trt.MemoryPoolType.WORKSPACE: int(settings.workspace)}
    profiles = None
    if profile:
        prof = ptrt.Profile()
        for name, (lo, opt, hi) in profile:
            prof.add(name, lo, opt, hi)
        profiles = [prof]
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL + 1):
        try:
            builder, network, parser = ptrt.NetworkFromOnnxBytes(bytes(onnx_bytes), strongly_typed=True)()
        except PolygraphyException as exc:
            raise _build_error("parse", settings, [str(exc)]) from None
        recorder = _error_recorder(trt)
        builder.error_recorder = recorder
        config = ptrt.CreateConfig(profiles=profiles, memory_pool_limits=pools,
                                   builder_optimization_level=settings.opt_level,
                                   load_timing_cache=timing_cache,
                                   # per-layer detail for the engine inspector (trtlab.fusion)
                                   profiling_verbosity=trt.ProfilingVerbosity.DETAILED)
        try:
            data = ptrt.EngineBytesFromNetwork((builder, network, parser), config,
                                               save_timing_cache=timing_cache)()
        except PolygraphyException as exc:
            raise _build_error("build", settings, [d for _, d in recorder.errors] or [str(exc)]) from None
    data = bytes(data)
    if not data:
        raise _build_error("build", settings, ["the builder returned an empty engine"])
    return data


def _writable(directory: Any) -> bool:
    """Whether files can be created in ``directory`` (made if missing); logs why not."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError as exc:
        log.warning("engine cache folder %s is not writable (%s); building without a timing cache",
                    directory, exc)
        return False


def _build_error(stage: str, settings: CompileSettings, errors: List[str]) -> BuildError:
    from .trt import clean_message, is_cuda_noise

    what = "parse" if stage == "parse" else "build"
    errors = [clean_message(e) for e in errors if not is_cuda_noise(e)] or list(errors)
    text = "; ".join(e.strip() for e in errors if e.strip()) or "no message from TensorRT"
    exc = BuildError(
        f"TensorRT could not {what} segment {settings.segment!r} ({settings.precision}): {text}. "
        "build(..., on_build_failure='fallback') moves the failing nodes to ONNX Runtime; "
        "partition(..., exclude_nodes=[...]) does it by hand."
    )
    exc.stage = stage  # type: ignore[attr-defined]
    exc.errors = list(errors)  # type: ignore[attr-defined]
    return exc


# ----------------------------------------------------------------------------------------------
# shapes and profiles
# ----------------------------------------------------------------------------------------------

def _parse_range(name: str, spec: Any) -> ShapeRange:
    def shape(x: Any) -> Shape:
        try:
            dims = tuple(int(d) for d in x)
        except (TypeError, ValueError):
            raise InputError(f"shapes[{name!r}]={spec!r} is not a shape; give a tuple of ints, "
                             "(min, opt, max) tuples, or {'min':..., 'opt':..., 'max':...}.") from None
        if any(d < 1 for d in dims):
            raise InputError(f"shapes[{name!r}] has a dimension below 1: {dims}.")
        return dims

    if isinstance(spec, Mapping):
        missing = [k for k in ("min", "opt", "max") if k not in spec]
        if missing:
            raise InputError(f"shapes[{name!r}] lacks {missing}; give min, opt and max.")
        lo, opt, hi = shape(spec["min"]), shape(spec["opt"]), shape(spec["max"])
    elif isinstance(spec, (list, tuple)) and len(spec) == 3 and all(
            isinstance(s, (list, tuple)) for s in spec):
        lo, opt, hi = (shape(s) for s in spec)
    else:
        lo = opt = hi = shape(spec)
    if not (len(lo) == len(opt) == len(hi)):
        raise InputError(f"shapes[{name!r}]: min {lo}, opt {opt} and max {hi} differ in rank.")
    if any(not (a <= o <= b) for a, o, b in zip(lo, opt, hi)):
        raise InputError(f"shapes[{name!r}]: need min <= opt <= max on every axis, got {lo}, {opt}, {hi}.")
    return lo, opt, hi


def input_ranges(model: Any, shapes: Optional[Mapping[str, Any]] = None) -> Dict[str, ShapeRange]:
    """(min, opt, max) of every model input and of every other tensor named in ``shapes``.

    ``shapes`` maps a tensor name to a static shape, ``(min, opt, max)`` shapes, or a dict with
    ``min``/``opt``/``max``. Model inputs not named keep their static dims; their dynamic dims
    default to 1.
    """
    shapes = dict(shapes or {})
    known = set(model._tensors) | {t.name for t in model.inputs}
    unknown = [n for n in shapes if n not in known]
    if unknown:
        raise InputError(f"shapes names {unknown}, which are not tensors of model {model.name!r}. "
                         f"Model inputs: {[t.name for t in model.inputs]}.")
    out: Dict[str, ShapeRange] = {}
    for name, spec in shapes.items():
        rng = _parse_range(name, spec)
        info = model.tensor(name)
        if info.shape is not None:
            if len(info.shape) != len(rng[0]):
                raise InputError(f"shapes[{name!r}] has rank {len(rng[0])}, tensor {name!r} has rank "
                                 f"{len(info.shape)} (shape {list(info.shape)}).")
            for ax, dim in enumerate(info.shape):
                if isinstance(dim, int) and any(s[ax] != dim for s in rng):
                    raise InputError(f"shapes[{name!r}] axis {ax} must be {dim} (static in the model), "
                                     f"got {[s[ax] for s in rng]}.")
        out[name] = rng
    for info in model.inputs:
        if info.name in out:
            continue
        if info.shape is None:
            raise InputError(f"Input {info.name!r} has no shape in the model; pass "
                             f"shapes={{'{info.name}': (min, opt, max)}}.")
        dims = tuple(d if isinstance(d, int) else 1 for d in info.shape)
        if not info.is_static:
            log.info("input %s has dynamic dims %s; they default to 1 (pass shapes= to choose)",
                     info.name, list(info.shape))
        out[info.name] = (dims, dims, dims)
    return out


def shape_table(proto: onnx.ModelProto, ranges: Mapping[str, ShapeRange]) -> Dict[str, ShapeRange]:
    """(min, opt, max) of every tensor whose shape ONNX shape inference pins down.

    The graph inputs are fixed to the min, opt and max shapes in turn and shapes are inferred
    (with data propagation) three times.
    """
    tables: List[Dict[str, Shape]] = []
    for k in range(3):
        m = onnx.ModelProto()
        m.CopyFrom(proto)
        del m.graph.value_info[:]
        for vi in m.graph.input:
            if vi.name in ranges:
                dims = vi.type.tensor_type.shape.dim
                del dims[:]
                for d in ranges[vi.name][k]:
                    dims.add().dim_value = int(d)
        for vi in m.graph.output:
            vi.type.tensor_type.ClearField("shape")
        try:
            inferred = onnx.shape_inference.infer_shapes(m, data_prop=True)
        except onnx.shape_inference.InferenceError as exc:
            log.debug("shape inference failed: %s", exc)
            inferred = m
        table: Dict[str, Shape] = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            tt = vi.type.tensor_type
            if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
                table[vi.name] = tuple(int(d.dim_value) for d in tt.shape.dim)
        tables.append(table)
    return {n: (tables[0][n], tables[1][n], tables[2][n])
            for n in tables[1] if n in tables[0] and n in tables[2]}


def segment_profile(proto: onnx.ModelProto, table: Mapping[str, ShapeRange],
                    overrides: Mapping[str, ShapeRange], segment: str = "segment") -> Optional[Profile]:
    """The optimization profile of a segment model: ranges of its inputs with dynamic dims."""
    from .backends import _dynamic_inputs

    entries = []
    for name in _dynamic_inputs(proto):
        rng = overrides.get(name) or table.get(name)
        if rng is None:
            raise BuildError(
                f"The range of shapes of tensor {name!r} (input of segment {segment!r}) cannot be "
                f"inferred. Pass shapes={{'{name}': (min_shape, opt_shape, max_shape)}} to build()."
            )
        entries.append((name, tuple(tuple(s) for s in rng)))
    return tuple(sorted(entries)) or None


# ----------------------------------------------------------------------------------------------
# sub-models and build-failure isolation
# ----------------------------------------------------------------------------------------------

def _value_infos(proto: onnx.ModelProto) -> Dict[str, onnx.ValueInfoProto]:
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except onnx.shape_inference.InferenceError:
        inferred = proto
    g = inferred.graph
    return {vi.name: vi for vi in list(g.value_info) + list(g.input) + list(g.output)}


def _node_reads(node: onnx.NodeProto) -> List[str]:
    from .model import _subgraph_outer_refs

    return [x for x in dict.fromkeys(list(node.input) + sorted(_subgraph_outer_refs(node))) if x]


def submodel(proto: onnx.ModelProto, nodes: Iterable[str],
             infos: Optional[Mapping[str, onnx.ValueInfoProto]] = None) -> onnx.ModelProto:
    """A standalone model of the named nodes of ``proto``.

    Its inputs are the tensors the nodes read but do not produce; its outputs are the tensors
    they produce that other nodes or the graph outputs read (or nothing reads).
    """
    infos = infos if infos is not None else _value_infos(proto)
    g = proto.graph
    chosen = set(nodes)
    picked = [n for n in g.node if n.name in chosen]
    produced = {o for n in picked for o in n.output if o}
    inits = {t.name: t for t in g.initializer}
    reads = [x for n in picked for x in _node_reads(n)]
    needed = [x for x in dict.fromkeys(reads) if x not in produced]
    read_inside = set(reads)
    read_outside = {x for n in g.node if n.name not in chosen for x in _node_reads(n)}
    graph_outputs = {o.name for o in g.output}
    outs = [o for n in picked for o in n.output
            if o and (o in read_outside or o in graph_outputs or o not in read_inside)]

    def vi(name: str) -> onnx.ValueInfoProto:
        if name in infos and infos[name].type.tensor_type.elem_type:
            return infos[name]
        return onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None)

    graph = onnx.helper.make_graph(
        picked, f"{g.name}_sub", [vi(x) for x in needed if x not in inits], [vi(x) for x in outs],
        [inits[x] for x in needed if x in inits],
        value_info=[infos[x] for x in produced if x in infos and x not in outs])
    model = onnx.helper.make_model(graph, opset_imports=list(proto.opset_import))
    model.ir_version = proto.ir_version
    return model


def isolate_build_failure(proto: onnx.ModelProto, profile: Optional[Profile],
                          try_build: Callable[[bytes, Optional[Profile]], None],
                          *, progress: bool = False) -> Tuple[str, str]:
    """The node whose addition makes a segment fail to build, and the builder's error.

    Bisects over prefixes of the segment's nodes (in topological order; a prefix is always a
    valid sub-network): the shortest prefix that fails to build ends with the culprit.

    Parameters
    ----------
    try_build
        ``(onnx_bytes, profile) -> None``; raises :class:`BuildError` when the build fails.
    """
    names = [n.name for n in proto.graph.node]
    infos = _value_infos(proto)
    ranges = dict(profile or ())
    table = shape_table(proto, ranges) if ranges else {}
    errors: Dict[int, str] = {}

    def fails(k: int) -> bool:
        sub = submodel(proto, names[:k], infos)
        if not sub.graph.input:
            return False
        prof = segment_profile(sub, table, ranges)
        try:
            try_build(sub.SerializeToString(), prof)
        except BuildError as exc:
            errors[k] = "; ".join(getattr(exc, "errors", None) or [str(exc)])
            return True
        return False

    lo, hi = 0, len(names)
    if not fails(hi):
        raise BuildError(f"The segment builds when tried again ({len(names)} nodes); nothing to isolate.")
    steps = progress_bar(total=max(1, int(np.ceil(np.log2(max(hi, 2))))), desc="bisect build failure",
                         enabled=progress)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fails(mid):
            hi = mid
        else:
            lo = mid
        steps.update(1)
    steps.close()
    return names[hi - 1], errors[hi]


# ----------------------------------------------------------------------------------------------
# precision and calibration
# ----------------------------------------------------------------------------------------------

def _check_precision(value: Any, where: str) -> str:
    from .precision import registry

    if value not in registry.names():
        raise PrecisionError(f"{where}={value!r} is not a precision trtlab builds; use one of "
                             f"{', '.join(registry.names())}.")
    return value


def _needs_calibration(precision: str) -> bool:
    from .precision import registry

    return registry.needs_calibration(precision)


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
    from .feeds import validate_feeds
    from .precision._common import calibration_feeds

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


def _boundary_values(model: Any, batches: List[Dict[str, np.ndarray]],
                     tensors: Sequence[str]) -> List[Dict[str, np.ndarray]]:
    """Values of ``tensors`` for each calibration batch, from the FP32 model on ONNX Runtime."""
    from .ort import session

    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    existing = {o.name for o in proto.graph.output}
    inputs = {t.name for t in model.inputs}
    for name in tensors:
        if name not in existing and name not in inputs:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(
                name, model.tensor(name).elem_type or onnx.TensorProto.FLOAT, None))
    sess = session(proto)
    wanted = [t for t in tensors if t not in inputs]
    out = []
    for b in batches:
        values = dict(zip(wanted, sess.run(wanted, b))) if wanted else {}
        values.update({k: v for k, v in b.items() if k in tensors})
        out.append(values)
    return out


def _observed_ranges(model: Any, ranges: Mapping[str, ShapeRange], tensors: Sequence[str]) -> Dict[str, ShapeRange]:
    """Shapes of data-dependent tensors, observed by running the model once on opt-shaped inputs.

    Shape inference cannot bound outputs such as NonZero's or NonMaxSuppression's; the observed
    shape becomes a static profile, which ``dynamic_batch="single"`` widens at run time.
    """
    rng = np.random.default_rng(0)
    feeds = {}
    for t in model.inputs:
        shape = ranges[t.name][1]
        dtype = t.dtype or np.dtype(np.float32)
        feeds[t.name] = (rng.standard_normal(shape).astype(dtype) if dtype.kind == "f"
                         else np.zeros(shape, dtype))
    values = _boundary_values(model, [feeds], list(tensors))[0]
    out = {}
    for name in tensors:
        shape = tuple(int(d) for d in np.shape(values[name]))
        log.info("tensor %s has a data-dependent shape; engine profile built for the observed %s", name, shape)
        out[name] = (shape, shape, shape)
    return out


def _convert(proto: onnx.ModelProto, precision: str, calib: Optional[List[Dict[str, np.ndarray]]]) -> onnx.ModelProto:
    if precision == "fp32":
        return proto
    from .precision import registry

    result = registry.apply(precision, proto, calib)
    return getattr(result, "proto", result)


# ----------------------------------------------------------------------------------------------
# build
# ----------------------------------------------------------------------------------------------

def _as_partition(source: Any) -> Any:
    if hasattr(source, "segments") and hasattr(source, "segment_model"):
        return source
    from .model import Model, load
    from .partition import partition

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
    """Build a :class:`~trtlab.partition.Partition` into a :class:`~trtlab.runtime.HybridModel`.

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
        Extra backends by segment backend name (see :mod:`trtlab.backends`).
    providers
        ONNX Runtime providers for ONNX Runtime segments.

    Returns
    -------
    HybridModel
    """
    from .runtime import HybridModel

    if dynamic_batch not in DYNAMIC_BATCH_MODES:
        raise BuildError(f"dynamic_batch={dynamic_batch!r} is not a mode; use one of {', '.join(DYNAMIC_BATCH_MODES)}.")
    if on_build_failure not in FAILURE_MODES:
        raise BuildError(f"on_build_failure={on_build_failure!r} is not a mode; use one of {', '.join(FAILURE_MODES)}.")
    part = _as_partition(partition)
    per_node, default_precision = _node_precisions(part, precision)
    cache = None if cache_dir is False else EngineCache(None if cache_dir in (None, True) else cache_dir)
    table_of_backends = _backends(backends)
    ranges = input_ranges(part.model, shapes)
    overrides = {k: v for k, v in ranges.items() if shapes and k in shapes}
    calib_batches = None
    if any(_needs_calibration(p) for p in {default_precision} | set(per_node.values()) if p):
        calib_batches = _calibration_batches(part.model, calibration_data)
    compiled: Dict[Tuple[str, Tuple[str, ...], str], Tuple[Any, onnx.ModelProto]] = {}
    table: Optional[Dict[str, ShapeRange]] = None
    moved: List[Tuple[str, str]] = []

    while True:
        segments = list(part.segments)
        precisions = {s.index: _segment_precision(s, per_node, default_precision) for s in segments}
        calib = None
        if calib_batches is not None:
            needed = sorted({t for s in segments if _needs_calibration(precisions[s.index]) for t in s.inputs})
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
            seg_calib = None if calib is None or not _needs_calibration(precisions[seg.index]) else \
                [{k: b[k] for k in seg.inputs} for b in calib]
            proto = _convert(part.segment_model(seg.index), precisions[seg.index], seg_calib)
            profile = None
            if isinstance(backend, TensorRTBackend):
                from .backends import _dynamic_inputs

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


def _nearest_original(proto: onnx.ModelProto, culprit: str, originals: Sequence[str]) -> str:
    """Map a node a precision pass inserted (Cast, Q/DQ) to the original node it serves."""
    order = [n.name for n in proto.graph.node]
    known = set(originals)
    at = order.index(culprit)
    after = [n for n in order[at:] if n in known]
    before = [n for n in order[:at] if n in known]
    if after:
        return after[0]
    if before:
        return before[-1]
    raise BuildError(f"Node {culprit!r} fails to build and no original node of the segment is near it.")


from ._callable import callable_module as _callable_module  # noqa: E402

_callable_module(__name__, "build")
