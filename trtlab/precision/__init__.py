"""Reduced precision expressed in the ONNX graph: FP16 conversion and INT8 Q/DQ.

TensorRT 11 and TensorRT-RTX build strongly typed networks: there are no FP16/INT8 builder
flags and no calibrators. The transformed ONNX model is what TensorRT builds and what ONNX
Runtime runs, so accuracy studies compare like with like.

============================  ================================================================
:func:`to_fp16`               float16 weights and compute, ``Cast`` at the borders
:func:`emulate_fp16`          float32 model with the same float16 rounding (for ONNX Runtime)
:func:`ort_variant`           the float16 model ONNX Runtime on this machine runs, and its label
:func:`calibrate`             activation ranges from real data (entropy, minmax, percentile)
:func:`quantization_plan`     where Q/DQ pairs go, and why
:func:`quantize_int8`         explicit INT8 Q/DQ model
============================  ================================================================
"""

from trtlab.precision.calibration import METHODS
from trtlab.precision.fp16 import (DEFAULT_KEEP_FP32_OPS, EXECUTOR_EMULATED, EXECUTOR_NATIVE, FP16_OPS, emulate_fp16,
                   ort_variant, to_fp16)
from trtlab.precision.int8 import WEIGHTED_OPS, calibrate, quantization_plan, quantize_int8

__all__ = ["DEFAULT_KEEP_FP32_OPS", "FP16_OPS", "METHODS", "WEIGHTED_OPS", "EXECUTOR_NATIVE",
           "EXECUTOR_EMULATED", "to_fp16", "emulate_fp16", "ort_variant", "calibrate",
           "quantization_plan", "quantize_int8"]
