"""Backends: what takes a segment and turns it into something that runs.

A backend has a ``name``, says which nodes it supports (``check_support``) and compiles a
segment's ONNX model into a callable ``feeds -> outputs`` (``compile``). trtlab ships two:

* :class:`TensorRTBackend` builds TensorRT engines (through the engine cache) and runs them on
  TensorRT when this machine can, otherwise runs the same ONNX on ONNX Runtime and says so
  (``executor == "onnxruntime"``).
* :class:`OnnxRuntimeBackend` runs a segment in an ONNX Runtime session (CUDA provider when
  available, else CPU). Fallback segments use it.

A teaching backend is any object with the same three members::

    class NumpyBackend:
        name = "numpy"
        def check_support(self, model): ...
        def compile(self, segment_model, settings):
            return lambda feeds: {...}

    hybrid = trtlab.build(part, backends={"numpy": NumpyBackend()})
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np
import onnx

from .errors import BuildError
from .ort import fast_call

log = logging.getLogger(__name__)

__all__ = [
    "Backend",
    "CompileSettings",
    "EngineRecord",
    "TensorRTBackend",
    "TensorRTSegment",
    "OnnxRuntimeBackend",
    "OrtSegment",
    "Shape",
    "ShapeRange",
    "Profile",
]

Shape = Tuple[int, ...]
#: (min, opt, max) shapes of one input.
ShapeRange = Tuple[Shape, Shape, Shape]
#: Sorted ``(input name, ShapeRange)`` pairs: one TensorRT optimization profile.
Profile = Tuple[Tuple[str, ShapeRange], ...]

DYNAMIC_BATCH_MODES = ("single", "per_shape")


@runtime_checkable
class Backend(Protocol):
    """What :func:`trtlab.build` needs from a backend."""

    name: str

    def check_support(self, model: Any) -> Any:
        """A support table (one row per node: supported, reason) for ``model``."""

    def compile(self, segment_model: onnx.ModelProto, settings: "CompileSettings") -> Callable[
            [Mapping[str, np.ndarray]], Dict[str, np.ndarray]]:
        """A callable running the segment: ``feeds -> {output name: array}``."""


@dataclass(frozen=True)
class CompileSettings:
    """How one segment is compiled.

    Attributes
    ----------
    segment : str
        Segment name, for messages and tables.
    precision : str
        ``"fp32"``, ``"fp16"`` or ``"int8"`` (the ONNX is already converted; this labels it).
    profile : Profile or None
        Shape ranges of the segment's dynamic inputs; ``None`` when all are static, or to
        build at the first run.
    workspace : int or None
        Workspace memory pool limit in bytes.
    opt_level : int or None
        Builder optimization level (TensorRT's default when ``None``).
    dynamic_batch : str
        ``"single"``: one engine covering min..max, rebuilt wider when a larger input arrives;
        ``"per_shape"``: one engine per input shape seen.
    cache : EngineCache or None
        Engine cache; ``None`` builds every time.
    eager : bool
        Build the engine now (``True``) or at the first run.
    providers : tuple of str or None
        ONNX Runtime providers (default: CUDA when available, else CPU).
    """

    segment: str = "segment"
    precision: str = "fp32"
    profile: Optional[Profile] = None
    workspace: Optional[int] = None
    opt_level: Optional[int] = None
    dynamic_batch: str = "single"
    cache: Any = None
    eager: bool = True
    providers: Optional[Tuple[str, ...]] = None

    def build_options(self) -> Dict[str, Any]:
        """The settings an engine depends on (part of the cache key)."""
        return {"workspace": self.workspace, "opt_level": self.opt_level, "strongly_typed": True}


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

    @property
    def nbytes(self) -> int:
        return len(self.data)

    def covers(self, shapes: Mapping[str, Shape]) -> bool:
        """Whether every shape lies inside this engine's profile."""
        if self.profile is None:
            return True
        for name, (lo, _, hi) in self.profile:
            got = shapes.get(name)
            if got is None or len(got) != len(lo):
                return False
            if any(g < a or g > b for g, a, b in zip(got, lo, hi)):
                return False
        return True


def _dynamic_inputs(model: onnx.ModelProto) -> List[str]:
    inits = {t.name for t in model.graph.initializer}
    names = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        if not vi.type.tensor_type.HasField("shape") or any(not d.HasField("dim_value") for d in dims):
            names.append(vi.name)
    return names


def _widen(profile: Profile, shapes: Mapping[str, Shape]) -> Profile:
    out = []
    for name, (lo, opt, hi) in profile:
        got = shapes[name]
        new_lo = tuple(min(a, g) for a, g in zip(lo, got))
        new_hi = tuple(max(b, g) for b, g in zip(hi, got))
        out.append((name, (new_lo, tuple(min(max(o, a), b) for o, a, b in zip(opt, new_lo, new_hi)), new_hi)))
    return tuple(out)


def _static_profile(shapes: Mapping[str, Shape], names: Sequence[str]) -> Profile:
    return tuple(sorted((n, (tuple(shapes[n]), tuple(shapes[n]), tuple(shapes[n]))) for n in names))


def _opt_profile(profile: Profile) -> Profile:
    return tuple((n, (opt, opt, opt)) for n, (_, opt, _) in profile)


EngineBuilder = Callable[[bytes, Optional[Profile], "CompileSettings"], bytes]


class TensorRTSegment:
    """A compiled TensorRT segment: its engines, and the executor that runs it here.

    ``executor`` is ``"tensorrt"`` when :func:`trtlab.trt.info` says engines run on this
    machine, else ``"onnxruntime"`` (the same ONNX the engine was built from runs on ONNX
    Runtime; ``reason`` says why).
    """

    def __init__(self, model: onnx.ModelProto, settings: CompileSettings, builder: EngineBuilder) -> None:
        from . import trt
        from .ort import model_bytes

        if settings.dynamic_batch not in DYNAMIC_BATCH_MODES:
            raise BuildError(f"dynamic_batch={settings.dynamic_batch!r} is not a mode trtlab knows; "
                             f"use one of {', '.join(DYNAMIC_BATCH_MODES)}.")
        self.model = model
        self.settings = settings
        self.name = settings.segment
        self.onnx_bytes = model_bytes(model)
        self._builder = builder
        self._dynamic = _dynamic_inputs(model)
        self._outputs = [o.name for o in model.graph.output]
        self.engines: List[EngineRecord] = []
        self.rebuilds = 0
        self._seen: Dict[Tuple[Shape, ...], EngineRecord] = {}
        info = trt.info()
        self.executor = "tensorrt" if info.run else "onnxruntime"
        self.reason = info.reason
        self._session: Any = None
        if not info.run:
            self._session, self.executor = _ort_session(model, settings)
            self._call = fast_call(self._session)
        self._runners: Dict[int, Any] = {}
        if settings.eager and (not self._dynamic or settings.profile is not None):
            first = settings.profile
            if first is not None and settings.dynamic_batch == "per_shape":
                first = _opt_profile(first)
            self._add_engine(first)

    def __repr__(self) -> str:
        return (f"TensorRTSegment({self.name!r}, precision={self.settings.precision}, "
                f"executor={self.executor}, engines={len(self.engines)})")

    # -- engines -------------------------------------------------------------------------------
    def _add_engine(self, profile: Optional[Profile]) -> EngineRecord:
        from .build import cache_key

        start = time.perf_counter()
        cache = self.settings.cache

        def make() -> bytes:
            return bytes(self._builder(self.onnx_bytes, profile, self.settings))

        if cache is None:
            data, status, key, path = make(), "disabled", None, None
        else:
            key = cache_key(self.onnx_bytes, self.settings, profile)
            data, lookup = cache.get_or_build(key, make)
            status, path = lookup.status, str(lookup.path)
        record = EngineRecord(self.name, profile, data, status, key, path, time.perf_counter() - start)
        log.info("segment %s: engine %s (%d bytes, cache %s)", self.name, profile, len(data), status)
        if self.settings.dynamic_batch == "single" and self.engines:
            self.rebuilds += 1
            self.engines = [record]
            self._seen.clear()
            self._runners.clear()
        else:
            self.engines.append(record)
        return record

    def engine_for(self, shapes: Mapping[str, Shape]) -> EngineRecord:
        """The engine that runs inputs of these shapes, building or widening one if needed."""
        sig = tuple(tuple(shapes[n]) for n in self._dynamic)
        hit = self._seen.get(sig)
        if hit is not None:
            return hit
        record = next((e for e in self.engines if e.covers(shapes)), None)
        if record is None:
            if self.settings.dynamic_batch == "per_shape" or not self.engines:
                base = self.settings.profile if self.settings.dynamic_batch == "single" else None
                profile = _widen(base, shapes) if base is not None else _static_profile(shapes, self._dynamic)
            else:
                profile = _widen(self.engines[0].profile or (), shapes)
            record = self._add_engine(profile)
        self._seen[sig] = record
        return record

    # -- execution -----------------------------------------------------------------------------
    def __call__(self, feeds: Mapping[str, Any]) -> Dict[str, Any]:
        if self._dynamic:
            record = self.engine_for({n: tuple(feeds[n].shape) for n in self._dynamic})
        elif self.engines:
            record = self.engines[0]
        else:
            record = self._add_engine(None)
        if self.executor == "tensorrt":
            return self.run_device(feeds, record, host=True)
        if self._session is None:
            self._session, self.executor = _ort_session(self.model, self.settings)
            self._call = fast_call(self._session)
        return dict(zip(self._outputs, self._call(self._outputs, feeds)))

    def run_device(self, feeds: Mapping[str, Any], record: Optional[EngineRecord] = None, *,
                   host: bool = False) -> Dict[str, Any]:
        """Run on TensorRT; with ``host=False`` outputs stay on the device (Polygraphy DeviceViews)."""
        if record is None:
            record = self.engine_for({n: tuple(feeds[n].shape) for n in self._dynamic}) \
                if self._dynamic else (self.engines[0] if self.engines else self._add_engine(None))
        runner = self._runners.get(id(record))
        if runner is None:
            from .build import polygraphy_trt

            ptrt = polygraphy_trt()
            runner = ptrt.TrtRunner(ptrt.EngineFromBytes(record.data), name=self.name)
            runner.activate()
            self._runners[id(record)] = runner
        return dict(runner.infer(dict(feeds), copy_outputs_to_host=host))

    def close(self) -> None:
        """Release TensorRT runners."""
        for runner in self._runners.values():
            runner.deactivate()
        self._runners.clear()


class TensorRTBackend:
    """TensorRT engines through Polygraphy's loaders and the engine cache.

    Parameters
    ----------
    builder
        ``(onnx_bytes, profile, settings) -> engine bytes``; default
        :func:`trtlab.build.build_engine`. Tests and notebooks pass their own to study failures.
    """

    name = "tensorrt"

    def __init__(self, builder: Optional[EngineBuilder] = None) -> None:
        if builder is None:
            from .build import build_engine

            builder = build_engine
        self.builder = builder

    def __repr__(self) -> str:
        return "TensorRTBackend()"

    def check_support(self, model: Any) -> Any:
        from .support import check_support

        return check_support(model)

    def compile(self, segment_model: onnx.ModelProto, settings: CompileSettings) -> TensorRTSegment:
        return TensorRTSegment(segment_model, settings, self.builder)


def _ort_session(model: onnx.ModelProto, settings: CompileSettings) -> Tuple[Any, str]:
    """An ONNX Runtime session for a segment and its executor label.

    A float16 model ONNX Runtime has no kernels for runs with float16 rounding emulated, and
    the label says so (``"onnxruntime (fp16 emulated)"``).
    """
    from .ort import session

    from .precision import registry

    label = "onnxruntime"
    if registry.get(settings.precision).emulate_on_onnxruntime:
        from .precision import ort_variant

        variant, label = ort_variant(model, list(settings.providers) if settings.providers else None)
        model = getattr(variant, "proto", variant)
    return session(model, settings.providers), label


class OrtSegment:
    """A segment running in an ONNX Runtime session."""

    def __init__(self, model: onnx.ModelProto, settings: CompileSettings) -> None:
        self.model = model
        self.name = settings.segment
        self.session, self.executor = _ort_session(model, settings)
        self.providers = tuple(self.session.get_providers())
        self.reason = f"ONNX Runtime ({', '.join(self.providers)})"
        self._outputs = [o.name for o in self.session.get_outputs()]
        self._call = fast_call(self.session)

    def __repr__(self) -> str:
        return f"OrtSegment({self.name!r}, providers={list(self.providers)})"

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return dict(zip(self._outputs, self._call(self._outputs, feeds)))


class OnnxRuntimeBackend:
    """ONNX Runtime: runs every ONNX op, so every node is supported."""

    name = "onnxruntime"

    def __repr__(self) -> str:
        return "OnnxRuntimeBackend()"

    def check_support(self, model: Any) -> Any:
        from .model import load
        from .support import SupportTable

        m = load(model)
        rows = [{"node": n.name, "op_type": n.op_type, "supported": True,
                 "reason": "ONNX Runtime runs every ONNX operator", "source": "rules"}
                for n in m.proto.graph.node]
        import pandas as pd

        return SupportTable(pd.DataFrame(rows, columns=["node", "op_type", "supported", "reason", "source"]))

    def compile(self, segment_model: onnx.ModelProto, settings: CompileSettings) -> OrtSegment:
        return OrtSegment(segment_model, settings)
