"""One registry of precision modes: what a mode does to the ONNX graph and how it is compiled.

A :class:`PrecisionMode` names its ONNX transform (a function ``(model, calibration_data) ->
Model``; ``None`` for FP32, which is built as given) and the compile settings a backend needs
for it. :func:`trtlab.build` and the studies look a mode up here; an unknown name is an error
that lists the modes, never a silent default. Adding a mode is one :func:`register` call beside
its transform.

>>> from trtlab.precision import registry
>>> registry.names()                                   # doctest: +SKIP
('fp32', 'fp16', 'bf16', 'int8', 'fp8')
>>> registry.get("fp16").transform(model, None)        # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from trtlab.errors import PrecisionError

__all__ = ["PrecisionMode", "register", "get", "names", "apply", "needs_calibration"]

Transform = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class PrecisionMode:
    """A precision mode.

    Attributes
    ----------
    name
        The name users pass (``build(..., precision=name)``).
    transform
        ``(model, calibration_data) -> Model`` returning the strongly typed ONNX model, or
        ``None`` when the model is built as given.
    calibration
        True when the transform needs real inputs (``calibration_data``).
    compile_settings
        Settings the backend compiles the transformed segment with (TensorRT-RTX and TensorRT 11
        are strongly typed: precision lives in the graph, so this is usually empty).
    description
        One line for tables and error messages.
    emulate_on_onnxruntime
        True for float16-like compute that ONNX Runtime runs through
        :func:`~trtlab.precision.ort_variant` (rounding emulated where kernels are missing).
    """

    name: str
    transform: Optional[Transform]
    calibration: bool = False
    compile_settings: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    emulate_on_onnxruntime: bool = False


_MODES: Dict[str, PrecisionMode] = {}


def register(mode: PrecisionMode, *, replace: bool = False) -> PrecisionMode:
    """Add ``mode`` to the registry (``replace=True`` to redefine an existing name)."""
    if not isinstance(mode, PrecisionMode):
        raise PrecisionError(f"register() takes a PrecisionMode, got {type(mode).__name__}.")
    if mode.name in _MODES and not replace:
        raise PrecisionError(f"Precision mode {mode.name!r} is already registered; pass replace=True "
                             "to redefine it.")
    _MODES[mode.name] = PrecisionMode(mode.name, mode.transform, mode.calibration,
                                      MappingProxyType(dict(mode.compile_settings)), mode.description,
                                      mode.emulate_on_onnxruntime)
    return _MODES[mode.name]


def names() -> Tuple[str, ...]:
    """Registered mode names, in registration order."""
    return tuple(_MODES)


def get(name: Any) -> PrecisionMode:
    """The mode called ``name``; :class:`~trtlab.errors.PrecisionError` for an unknown one."""
    mode = _MODES.get(name) if isinstance(name, str) else None
    if mode is None:
        raise PrecisionError(f"precision={name!r} is not a registered precision mode; use one of "
                             f"{', '.join(_MODES)} (trtlab.precision.registry.register adds one).")
    return mode


def needs_calibration(name: str) -> bool:
    """True when mode ``name`` needs calibration data."""
    return get(name).calibration


def apply(name: str, model: Any, calibration_data: Any = None) -> Any:
    """Run mode ``name``'s transform on ``model`` (FP32 returns the model unchanged)."""
    mode = get(name)
    if mode.transform is None:
        return model
    if mode.calibration and calibration_data is None:
        raise PrecisionError(f"precision={name!r} needs calibration_data= (real inputs of the model).")
    return mode.transform(model, calibration_data)


def _fp16(model: Any, data: Any) -> Any:
    from trtlab.precision.fp16 import to_fp16

    return to_fp16(model, calibration_data=data)


def _bf16(model: Any, data: Any) -> Any:
    from trtlab.precision.lowp import to_bf16

    return to_bf16(model)


def _int8(model: Any, data: Any) -> Any:
    from trtlab.precision.int8 import quantize_int8

    return quantize_int8(model, data, progress=False)


def _fp8(model: Any, data: Any) -> Any:
    from trtlab.precision.lowp import quantize_fp8

    return quantize_fp8(model, data, progress=False)


register(PrecisionMode("fp32", None, description="float32 as given"))
register(PrecisionMode("fp16", _fp16, description="float16 weights and compute, numerically sensitive "
                       "nodes kept in float32 (to_fp16)", emulate_on_onnxruntime=True))
register(PrecisionMode("bf16", _bf16, description="bfloat16 weights and compute, sensitive nodes kept in "
                       "float32 (to_bf16)", emulate_on_onnxruntime=True))
register(PrecisionMode("int8", _int8, calibration=True, description="INT8 Q/DQ with calibrated "
                       "activation scales (quantize_int8)"))
register(PrecisionMode("fp8", _fp8, calibration=True, description="FP8 E4M3 Q/DQ with calibrated "
                       "activation scales (quantize_fp8)"))
