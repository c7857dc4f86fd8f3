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
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Protocol, Tuple, runtime_checkable

import numpy as np
import onnx


log = logging.getLogger(__name__)

__all__ = ["Backend", "CompileSettings", "Shape", "ShapeRange", "Profile", "DYNAMIC_BATCH_MODES"]

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


