"""BF16 and FP8 (E4M3) in strongly typed form.

:func:`to_bf16` is :func:`~trtlab.precision.to_fp16` with bfloat16 (same op lists, same
float32 keep rules; bfloat16 keeps float32's exponent range, so range rules rarely fire).
:func:`quantize_fp8` is :func:`~trtlab.precision.quantize_int8` with FLOAT8E4M3FN Q/DQ pairs
(scale ``amax / 448``, opset 19). ONNX Runtime runs FP8 Q/DQ on the CPU; bfloat16 compute runs
through :func:`~trtlab.precision.emulate_fp16`, which rounds to bfloat16 after every op.
"""

from __future__ import annotations

import os
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Optional, Union

from trtlab.precision.fp16 import BF16, DEFAULT_KEEP_FP32_OPS, _to_low_precision
from trtlab.precision.int8 import DEFAULT_EXCLUSIONS, FP8_E4M3, _quantize

__all__ = ["to_bf16", "quantize_fp8", "BF16_KEEP_FP32_OPS"]

BF16_MAX = 3.3895313892515355e38
#: Ops BF16 keeps in float32 besides :data:`~trtlab.precision.DEFAULT_KEEP_FP32_OPS`, with the reason.
BF16_KEEP_FP32_OPS: Mapping[str, str] = MappingProxyType({
    **DEFAULT_KEEP_FP32_OPS,
    "ConvTranspose": "TensorRT-RTX builds no bfloat16 deconvolution (measured on PP-OCRv4 det: the "
                     "engine builds once ConvTranspose stays float32)",
})


def to_bf16(model: Any, *, keep_io_types: bool = True,
            keep_fp32_ops: Iterable[str] = BF16_KEEP_FP32_OPS, keep_fp32_nodes: Iterable[str] = (),
            calibration_data: Any = None, data_max: Optional[float] = None,
            batch_size: Optional[int] = None, keep_recurrent_inputs: bool = True) -> Any:
    """Convert float32 weights and compute to bfloat16 (see :func:`~trtlab.precision.to_fp16`).

    ``data_max`` is off by default: bfloat16 has float32's range, its cost is precision.
    """
    return _to_low_precision(model, BF16, keep_io_types=keep_io_types, keep_fp32_ops=keep_fp32_ops,
                             keep_fp32_nodes=keep_fp32_nodes, calibration_data=calibration_data,
                             init_max=BF16_MAX, data_max=data_max, batch_size=batch_size,
                             keep_recurrent_inputs=keep_recurrent_inputs)


def quantize_fp8(model: Any, calibration_data: Any, *, method: str = "minmax", per_channel: bool = True,
                 percentile: float = 99.99, num_bins: int = 2048,
                 cache_dir: Optional[Union[str, os.PathLike]] = None, progress: bool = True,
                 exclude_nodes: Iterable[str] = (), quantize_residuals: bool = True,
                 exclusions: Iterable[str] = DEFAULT_EXCLUSIONS, extra_rules: Iterable[str] = (),
                 clip_bound: Optional[float] = 4.0, batch_size: Optional[int] = None) -> Any:
    """Insert FP8 E4M3 Q/DQ pairs (see :func:`~trtlab.precision.quantize_int8` for the parameters).

    FP8's levels are logarithmic, so clipping buys little: ``method="minmax"`` is the default.
    The model is raised to opset 19 (checked numerically), where FP8 Q/DQ exists.
    """
    return _quantize(model, calibration_data, FP8_E4M3, method=method, per_channel=per_channel,
                     percentile=percentile, num_bins=num_bins, cache_dir=cache_dir, progress=progress,
                     exclude_nodes=exclude_nodes, quantize_residuals=quantize_residuals,
                     exclusions=exclusions, extra_rules=extra_rules, clip_bound=clip_bound,
                     batch_size=batch_size)
