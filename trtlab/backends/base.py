"""Backends: the contract between :func:`trtlab.build` and what compiles a segment.

A backend is one object (one folder in ``trtlab/backends/``) that owns

* its **support rules**: ``check_support(model)`` -> a support table;
* its **compile step**: ``compile(segment_model, settings)`` -> a :class:`CompiledSegment`;
* its **shape profiles**: ``settings.profile`` (min/opt/max of dynamic inputs) and
  ``settings.values`` (values of shape-tensor inputs), derived by :func:`trtlab.build` from the
  user's example inputs; a backend that needs none ignores them;
* its **build-failure isolation**: a :class:`~trtlab.errors.BuildError` from ``compile`` makes
  :func:`trtlab.build` bisect the segment (:func:`trtlab.backends.isolation.isolate`, through the
  backend's ``compile_many`` when it has one) and move the failing nodes to fallback.

trtlab ships :class:`~trtlab.backends.tensorrt.backend.TensorRTBackend` (engines built in worker
processes) and :class:`~trtlab.backends.onnxruntime.backend.OnnxRuntimeBackend` (fallback). A
teaching backend subclasses :class:`BackendBase` and is passed once, to ``partition``::

    class NumpyBackend(BackendBase):
        name = "numpy"
        def check_support(self, model): ...
        def compile(self, segment_model, settings):
            return FunctionSegment(run, executor="numpy", profile=settings.profile)

    part = trtlab.partition(model, backend=NumpyBackend())
    hybrid = trtlab.build(part)
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np
import onnx


log = logging.getLogger(__name__)

__all__ = ["Backend", "BackendBase", "CompiledSegment", "FunctionSegment", "CompileSettings", "Shape",
           "ShapeRange", "Profile", "DYNAMIC_BATCH_MODES", "EXECUTORS", "backend_named", "as_compiled",
           "profile_text"]

Shape = Tuple[int, ...]
#: (min, opt, max) shapes of one input.
ShapeRange = Tuple[Shape, Shape, Shape]
#: Sorted ``(input name, ShapeRange)`` pairs: one TensorRT optimization profile.
Profile = Tuple[Tuple[str, ShapeRange], ...]

DYNAMIC_BATCH_MODES = ("single", "per_shape")


#: Executors a compiled segment can declare, and what each means.
EXECUTORS: Dict[str, str] = {
    "tensorrt": "a TensorRT engine on the GPU",
    "onnxruntime": "ONNX Runtime on the CPU",
    "onnxruntime-cuda": "ONNX Runtime's CUDA execution provider",
    "onnxruntime (fp16 emulated)": "ONNX Runtime on the CPU, float16 rounding emulated",
}


class CompiledSegment(abc.ABC):
    """The declared contract of a compiled segment: what :class:`~trtlab.runtime.HybridModel` runs.

    A subclass declares what runs it as data (``executor``, one of :data:`EXECUTORS` or a
    backend's own name) and implements ``__call__``.

    Attributes
    ----------
    executor : str
        What executes the segment on this machine (``"tensorrt"``, ``"onnxruntime"``,
        ``"onnxruntime-cuda"``, ``"numpy"`` ...).
    reason : str
        Why that executor (shown in ``hybrid.executors``).
    profile : Profile or None
        The shape profile the segment was compiled for (``None``: static shapes).
    values : Profile or None
        Value ranges of shape-tensor inputs the segment was compiled for.
    """

    executor: str = "python"
    reason: str = ""
    profile: Optional["Profile"] = None
    values: Optional["Profile"] = None

    @abc.abstractmethod
    def __call__(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run the segment: ``feeds -> {output name: array}``."""

    def close(self) -> None:
        """Release resources (sessions, device memory)."""


class FunctionSegment(CompiledSegment):
    """A compiled segment made from a plain function ``feeds -> outputs``.

    Parameters
    ----------
    fn
        Runs the segment.
    executor, reason, profile, values
        See :class:`CompiledSegment`.
    """

    def __init__(self, fn: Callable[[Mapping[str, np.ndarray]], Dict[str, np.ndarray]], *,
                 executor: str = "python", reason: str = "", profile: Optional["Profile"] = None,
                 values: Optional["Profile"] = None) -> None:
        self.fn = fn
        self.executor = executor
        self.reason = reason
        self.profile = profile
        self.values = values

    def __repr__(self) -> str:
        return f"FunctionSegment(executor={self.executor!r}, profile={profile_text(self.profile)!r})"

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return self.fn(feeds)


def as_compiled(obj: Any, backend: str, settings: "CompileSettings") -> Any:
    """``obj`` as a :class:`CompiledSegment` (a plain callable is wrapped, its ``executor`` kept)."""
    if isinstance(obj, CompiledSegment) or (hasattr(obj, "executor") and hasattr(obj, "profile")):
        return obj
    if not callable(obj):
        from trtlab.errors import BuildError

        raise BuildError(f"Backend {backend!r} compiled segment {settings.segment!r} into {obj!r}, which is "
                         "not callable; compile() must return a CompiledSegment or a function feeds -> outputs.")
    return FunctionSegment(obj, executor=getattr(obj, "executor", backend), reason=getattr(obj, "reason", ""),
                           profile=settings.profile, values=settings.values)


@runtime_checkable
class Backend(Protocol):
    """What :func:`trtlab.build` needs from a backend."""

    name: str

    def check_support(self, model: Any) -> Any:
        """A support table (one row per node: supported, reason) for ``model``."""

    def compile(self, segment_model: onnx.ModelProto, settings: "CompileSettings") -> Any:
        """A :class:`CompiledSegment` (or a callable ``feeds -> {output name: array}``).

        Raises :class:`~trtlab.errors.BuildError` when the segment cannot be compiled: the
        failing nodes are then isolated and moved to fallback.
        """


class BackendBase(abc.ABC):
    """Defaults for a backend: support from trtlab's rules, sequential ``compile_many``.

    Subclasses set ``name`` and implement ``compile``; overriding ``compile_many`` lets a
    backend compile several segments (or bisection candidates) at once.

    ``weights_by_reference``: whether ``compile`` takes *light* segment models, whose
    initializers may be external data references (relative to ``settings.weights_dir``) or stubs
    without data that ``settings.full_model(model)`` fills (see :mod:`trtlab.weights`). False by
    default: such a backend gets segment models with every weight embedded.

    ``needs_shapes``: whether ``compile`` uses ``settings.profile`` / ``settings.values`` (shapes
    observed on example inputs). When no segment's backend does, :func:`trtlab.build` neither
    runs the model on the example inputs nor waits for the first run.
    """

    name = "backend"
    weights_by_reference = False
    needs_shapes = True

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def check_support(self, model: Any) -> Any:
        from trtlab.backends.tensorrt.support import check_support

        return check_support(model, source="rules")

    @abc.abstractmethod
    def compile(self, segment_model: onnx.ModelProto, settings: "CompileSettings") -> Any:
        """A :class:`CompiledSegment` (or a callable) running ``segment_model``; raises
        :class:`~trtlab.errors.BuildError` when the backend cannot compile it."""

    def compile_many(self, jobs: Sequence[Tuple[onnx.ModelProto, "CompileSettings"]]) -> List[Any]:
        """Compile each ``(segment_model, settings)``; a failure is returned as its BuildError."""
        return compile_many(self, jobs)


def compile_many(backend: Any, jobs: Sequence[Tuple[onnx.ModelProto, "CompileSettings"]]) -> List[Any]:
    """``backend.compile_many(jobs)`` when it has one, else one ``compile`` after another.

    Each result is the compiled segment or the :class:`~trtlab.errors.BuildError` it raised.
    """
    from trtlab.errors import BuildError

    many = getattr(type(backend), "compile_many", None)
    if many is not None and many is not BackendBase.compile_many:
        return list(backend.compile_many(jobs))
    out: List[Any] = []
    for proto, settings in jobs:
        try:
            out.append(as_compiled(backend.compile(proto, settings), getattr(backend, "name", "backend"), settings))
        except BuildError as exc:
            out.append(exc)
    return out


#: Backends trtlab ships, by name: module and class, imported on first use.
_BUILTIN = {
    "tensorrt": ("trtlab.backends.tensorrt.backend", "TensorRTBackend"),
    "onnxruntime": ("trtlab.backends.onnxruntime.backend", "OnnxRuntimeBackend"),
    "fallback": ("trtlab.backends.onnxruntime.backend", "OnnxRuntimeBackend"),
}


def backend_named(name: str) -> Any:
    """A new instance of the shipped backend ``name`` (``"tensorrt"``, ``"onnxruntime"``)."""
    import importlib

    from trtlab.errors import BuildError

    if name not in _BUILTIN:
        raise BuildError(f"No backend named {name!r} ships with trtlab (known: {sorted(_BUILTIN)}). Pass the "
                         f"backend object to partition(model, backend=...) so build() can use it.")
    module, cls = _BUILTIN[name]
    return getattr(importlib.import_module(module), cls)()


def profile_text(profile: Any) -> str:
    """A profile as short text: ``x: [1, 3, 8, 8]..[4, 3, 8, 8] (opt [2, 3, 8, 8])``."""
    if not profile:
        return "static"
    return "; ".join(f"{n}: {list(lo)}..{list(hi)} (opt {list(opt)})" for n, (lo, opt, hi) in profile)


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
    values : Profile or None
        (min, opt, max) *values* of integer inputs that may be shape tensors (a Reshape's shape
        read from another segment), observed on the example inputs.
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
    threads : int or None
        ONNX Runtime intra-op threads (``None``: ONNX Runtime's default pool).
    spinning : bool
        Whether ONNX Runtime's idle intra-op threads spin (fast for one session, costly when
        several sessions of a hybrid take turns on the same cores).
    workers : int or None
        Build worker processes (``None``: one per core).
    timeout : float or None
        Seconds one engine build may take before it counts as hung.
    progress : bool
        Show progress bars (TensorRT: one per segment build).
    weights : Weights or None
        Where the data of stub initializers of a light segment model comes from
        (:class:`trtlab.weights.Weights`); set by :func:`trtlab.build` for backends whose
        ``weights_by_reference`` is true. Never sent to build workers.
    weights_dir : str or None
        The folder the segment model's external data references are relative to.
    source_path : str or None
        The segment is the whole model of this ONNX file, unchanged
        (:func:`trtlab.weights.same_as_file`): ONNX Runtime may read the file itself.
    """

    segment: str = "segment"
    precision: str = "fp32"
    profile: Optional[Profile] = None
    values: Optional[Profile] = None
    workspace: Optional[int] = None
    opt_level: Optional[int] = None
    dynamic_batch: str = "single"
    cache: Any = None
    eager: bool = True
    providers: Optional[Tuple[str, ...]] = None
    threads: Optional[int] = None
    spinning: bool = True
    workers: Optional[int] = None
    timeout: Optional[float] = None
    progress: bool = False
    weights: Any = field(default=None, compare=False, repr=False)
    weights_dir: Optional[str] = None
    source_path: Optional[str] = None

    def build_options(self) -> Dict[str, Any]:
        """The settings an engine depends on (part of the cache key)."""
        return {"workspace": self.workspace, "opt_level": self.opt_level, "strongly_typed": True}

    def for_worker(self) -> "CompileSettings":
        """These settings as sent to a build worker process: no cache object, no weights."""
        return dataclasses.replace(self, cache=None, weights=None)

    def full_model(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """``model`` with every weight embedded: stubs filled from :attr:`weights`, external data
        read from :attr:`weights_dir` (``model`` itself when it holds all its data)."""
        from trtlab.weights import has_external, materialize

        if self.weights is not None:
            return self.weights.full(model)
        if has_external(model):
            return materialize(model, None if self.weights_dir is None else Path(self.weights_dir))
        return model


