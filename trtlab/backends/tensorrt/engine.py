"""TensorRT engines: Polygraphy's loaders, the engine cache key, builder errors.

Engines are built with Polygraphy's TensorRT loaders (``NetworkFromOnnxBytes`` strongly typed,
``CreateConfig`` with profiles, memory pool limit, optimization level and, for full TensorRT, a
timing cache; ``EngineBytesFromNetwork``). With TensorRT-RTX they are built ahead of time,
without a GPU; TensorRT-RTX has no timing cache (it compiles kernels when an engine is loaded, and
keeps them in its runtime cache: :mod:`trtlab.backends.tensorrt.device`).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, List, Mapping, Optional, Tuple

from trtlab.backends.base import CompileSettings, Profile, Shape
from trtlab.backends.tensorrt.cache import CacheKey, EngineCache
from trtlab.errors import BuildError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineRecord:
    """One serialized engine of a TensorRT segment."""

    segment: str
    profile: Optional[Profile]
    data: bytes = field(repr=False)
    status: str = "disabled"
    key: Any = field(default=None, repr=False)
    path: Optional[str] = None
    build_seconds: float = 0.0
    values: Optional[Profile] = None

    @property
    def nbytes(self) -> int:
        return len(self.data)

    def covers(self, shapes: Mapping[str, Shape], values: Optional[Mapping[str, Shape]] = None) -> bool:
        """Whether every shape (and shape-tensor value) lies inside this engine's profile."""
        for name, (lo, _, hi) in self.values or ():
            got = (values or {}).get(name)
            if got is None or len(got) != len(lo) or any(g < a or g > b for g, a, b in zip(got, lo, hi)):
                return False
        if self.profile is None:
            return True
        for name, (lo, _, hi) in self.profile:
            got = shapes.get(name)
            if got is None or len(got) != len(lo):
                return False
            if any(g < a or g > b for g, a, b in zip(got, lo, hi)):
                return False
        return True


EngineBuilder = Callable[[bytes, Optional[Profile], "CompileSettings"], bytes]


def polygraphy_trt() -> Any:
    """``polygraphy.backend.trt``, bound to the TensorRT flavor trtlab uses.

    Polygraphy picks ``tensorrt`` or ``tensorrt_rtx`` when ``polygraphy.backend.trt`` is first
    imported (``POLYGRAPHY_USE_TENSORRT_RTX``); this sets that choice from
    :func:`trtlab.backends.tensorrt.flavor.flavor` before the import
    (:func:`~trtlab.backends.tensorrt.flavor.bind_polygraphy`).

    Raises
    ------
    PolygraphyFlavorError
        Polygraphy was imported earlier bound to the other flavor.
    """
    from trtlab.backends.tensorrt import flavor as trt

    trt.module()
    trt.bind_polygraphy()
    from polygraphy.backend import trt as ptrt

    return ptrt


def engine_target() -> str:
    """What engines are built for: compute capability and GPU model, or ``"aot"``.

    Engines are not portable across GPU models (full TensorRT tunes kernels on the device it
    builds on), so the model's name is part of the key: ``"sm8.6 NVIDIA GeForce RTX 3090"``.
    Full TensorRT always builds on the GPU when there is one; TensorRT-RTX builds ahead of time
    (``"aot"``) unless its engines also run here.
    """
    from trtlab.backends.tensorrt import flavor as trt

    info = trt.info()
    on_gpu = info.run or (info.flavor == "tensorrt" and info.gpu is not None)
    if on_gpu and info.compute_capability:
        return f"sm{info.compute_capability} {info.gpu}".strip()
    return "aot"


def cache_key(onnx_bytes: bytes, settings: CompileSettings, profile: Optional[Profile]) -> CacheKey:
    """The engine cache key of one segment build."""
    from trtlab.backends.tensorrt import flavor as trt

    profiles = [] if profile is None else [list(p) for p in profile]
    if settings.values:
        profiles = profiles + [["values", [list(v) for v in settings.values]]]
    return CacheKey.make(onnx_bytes, precision=settings.precision, settings=settings.build_options(),
                         profiles=profiles,
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
            # False: the error is recorded, not a request to abort the process
            # (IErrorRecorder::reportError returns whether the error is fatal).
            self.errors.append((code, desc))
            return False

    return _Recorder()


def build_engine(onnx_bytes: bytes, profile: Optional[Profile] = None,
                 settings: Optional[CompileSettings] = None, *,
                 timing_cache: Optional[str] = None) -> bytes:
    """Build a serialized TensorRT engine from ONNX bytes (see :func:`_build_engine`)."""
    return _build_engine(onnx_bytes, profile, settings, timing_cache=timing_cache)[0]


def _build_engine(onnx_bytes: bytes, profile: Optional[Profile] = None,
                  settings: Optional[CompileSettings] = None, *,
                  timing_cache: Optional[str] = None) -> Tuple[bytes, List[str]]:
    """Build a serialized TensorRT engine from ONNX bytes.

    A strongly typed network is parsed with Polygraphy's ``NetworkFromOnnxBytes``; the builder
    config (``CreateConfig``) gets one optimization profile, the workspace limit, the builder
    optimization level and, for full TensorRT, a timing cache (read from and written back to the
    cache folder). TensorRT-RTX gets none: it has no timing cache.

    Raises
    ------
    BuildError
        Parsing or building failed; ``exc.stage`` is ``"parse"`` or ``"build"`` and
        ``exc.errors`` holds TensorRT's messages.
    """
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    from trtlab.backends.tensorrt import flavor as trtinfo

    settings = settings or CompileSettings()
    ptrt = polygraphy_trt()
    trt = trtinfo.module()
    if trtinfo.flavor() == "tensorrt_rtx":
        timing_cache = None  # TensorRT-RTX has no timing cache (it uses a runtime cache)
    elif timing_cache is None:
        timing_cache = timing_cache_path(settings)
    pools = None if settings.workspace is None else {trt.MemoryPoolType.WORKSPACE: int(settings.workspace)}
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL + 1):
        try:
            builder, network, parser = ptrt.NetworkFromOnnxBytes(bytes(onnx_bytes), strongly_typed=True)()
        except PolygraphyException as exc:
            raise _build_error("parse", settings, [str(exc)]) from None
        profiles = _profiles(ptrt, network, profile, settings.values)
        recorder = _error_recorder(trt)
        builder.error_recorder = recorder
        config = ptrt.CreateConfig(profiles=profiles, memory_pool_limits=pools,
                                   builder_optimization_level=settings.opt_level,
                                   load_timing_cache=timing_cache,
                                   # per-layer detail for the engine inspector (trtlab.fusion)
                                   profiling_verbosity=trt.ProfilingVerbosity.DETAILED)
        # The builder is called here, not through EngineBytesFromNetwork, so the timing cache is
        # saved by trtlab (atomically; a full disk is a warning) while the config still exists.
        made, serialized, shape_inputs = None, None, None
        try:
            shape_inputs = shape_tensor_inputs(network)
            made = config(builder, network)
            serialized = builder.build_serialized_network(network, made)
            if serialized and timing_cache:
                _save_timing_cache(timing_cache, made)
            data = bytes(serialized) if serialized else b""
        except (PolygraphyException, RuntimeError, TypeError) as exc:
            raise _build_error("build", settings, [d for _, d in recorder.errors] or [str(exc)]) from None
        finally:
            # TensorRT objects must be released before the builder that made them, also on errors.
            del serialized, made, config, parser, network, builder
        if not data:
            raise _build_error("build", settings, [d for _, d in recorder.errors]
                               or ["the builder returned no engine"])
    if not data:
        raise _build_error("build", settings, ["the builder returned an empty engine"])
    return data, shape_inputs


def timing_cache_path(settings: CompileSettings) -> Optional[str]:
    """The timing cache file beside the engine cache, or ``None`` (no cache, or not writable)."""
    from trtlab.backends.tensorrt import flavor as trtinfo

    if trtinfo.flavor() == "tensorrt_rtx":
        return None  # TensorRT-RTX has no timing cache (it uses a runtime cache)
    if isinstance(settings.cache, EngineCache) and _writable(settings.cache.directory):
        return str(settings.cache.directory / timing_cache_name())
    return None


def build_job(builder: Any, onnx_bytes: bytes, profile: Optional[Profile], settings: CompileSettings,
              timing_cache: Optional[str]) -> Tuple[bytes, Optional[List[str]]]:
    """What a build worker runs: ``builder(onnx_bytes, profile, settings)`` (the timing cache
    path is chosen by the parent process, so the worker writes nothing else).

    Returns the engine bytes and the names of the inputs TensorRT treats as shape tensors
    (``None`` when the builder does not say).
    """
    if builder is build_engine:
        return _build_engine(onnx_bytes, profile, settings, timing_cache=timing_cache)
    return bytes(builder(onnx_bytes, profile, settings)), None


def shape_tensor_inputs(network: Any) -> List[str]:
    """Names of the network inputs TensorRT treats as shape tensors."""
    names = []
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        if getattr(inp, "is_shape_tensor", False):
            names.append(inp.name)
    return names


def _profiles(ptrt: Any, network: Any, profile: Optional[Profile], values: Optional[Profile]) -> Any:
    """One Polygraphy profile: shape ranges of dynamic inputs, value ranges of shape-tensor inputs.

    Polygraphy's ``Profile.add(name, min, opt, max)`` takes *values* for a shape-tensor input;
    without an entry it fills every value with 1, which builds an engine for the wrong shape.
    """
    shape_tensors = set(shape_tensor_inputs(network))
    value_of = dict(values or ())
    missing = sorted(shape_tensors - set(value_of))
    if missing:
        raise BuildError(
            f"Segment input(s) {missing} are shape tensors (their values set shapes inside the "
            "segment), and no values were observed for them. Pass example inputs to build(part, "
            "feeds=...) so trtlab can observe them, or build without shapes and run once.")
    entries = [(n, r) for n, r in (profile or ()) if n not in shape_tensors]
    entries += [(n, value_of[n]) for n in sorted(shape_tensors)]
    if not entries:
        return None
    prof = ptrt.Profile()
    for name, (lo, opt, hi) in entries:
        prof.add(name, lo, opt, hi)
    return [prof]


def timing_cache_name() -> str:
    """File name of full TensorRT's timing cache in the engine cache folder."""
    from trtlab.backends.tensorrt import flavor as trtinfo

    target = engine_target().replace(" ", "_").replace("/", "_")
    return f"timing-{trtinfo.flavor()}-{trtinfo.version()}-{target}.cache"


def _save_timing_cache(path: str, config: Any) -> None:
    """Write the config's timing cache atomically; a full or read-only disk is a warning."""
    from trtlab import _io
    from trtlab.errors import FileWriteError

    try:
        cache = config.get_timing_cache()
        data = bytes(cache.serialize()) if cache is not None else b""
    except (AttributeError, RuntimeError, TypeError) as exc:
        log.info("timing cache not available from this TensorRT: %s", exc)
        return
    if not data:
        return
    try:
        _io.write_bytes(path, data, what="timing cache")
    except FileWriteError as exc:
        log.warning("timing cache not saved: %s", exc)


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
    from trtlab.backends.tensorrt.flavor import clean_message, is_cuda_noise

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
