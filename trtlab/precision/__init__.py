"""Reduced precision expressed in the ONNX graph: FP16/BF16 conversion, INT8/FP8 Q/DQ.

TensorRT 11 and TensorRT-RTX build strongly typed networks: there are no FP16/INT8 builder
flags and no calibrators. The transformed ONNX model is what TensorRT builds and what ONNX
Runtime runs, so accuracy studies compare like with like. Every mode is registered in
:mod:`trtlab.precision.registry`. Mixed precision chosen by measurement is
:func:`trtlab.study.localize.auto_mixed_precision` (a study over these transforms).

=============================  ===============================================================
:func:`to_fp16`                float16 weights and compute, ``Cast`` at the borders
:func:`fp16_keep_table`        which nodes FP16 keeps in float32, and why (data-driven)
:func:`to_bf16`                the same in bfloat16
:func:`emulate_fp16`           float32 model with the same float16/bfloat16 rounding
:func:`ort_variant`            the float16 model ONNX Runtime on this machine runs, and its label
:func:`calibrate`              activation ranges from real data (mse, entropy, minmax, percentile)
:func:`quantization_plan`      where Q/DQ pairs go, what stays float, and why
:func:`quantize_int8`          explicit INT8 Q/DQ model
:func:`quantize_fp8`           explicit FP8 E4M3 Q/DQ model
:func:`int8_coverage`          share of MACs whose inputs are quantized
=============================  ===============================================================
"""

from trtlab.precision import registry
from trtlab.precision.calibration import METHODS
from trtlab.precision.fp16 import (DEFAULT_KEEP_FP32_OPS, EXECUTOR_EMULATED, EXECUTOR_NATIVE, FP16_OPS, emulate_fp16,
                   fp16_keep_table, ort_variant, to_fp16)
from trtlab.precision.int8 import (DEFAULT_EXCLUSIONS, calibrate, EXCLUSION_RULES, OPTIONAL_RULES, WEIGHTED_OPS, int8_coverage,
                   quantization_plan, quantize_int8)
from trtlab.precision.lowp import quantize_fp8, to_bf16

__all__ = ["DEFAULT_KEEP_FP32_OPS", "FP16_OPS", "METHODS", "WEIGHTED_OPS", "EXECUTOR_NATIVE",
           "EXECUTOR_EMULATED", "EXCLUSION_RULES", "DEFAULT_EXCLUSIONS", "OPTIONAL_RULES",
           "to_fp16", "fp16_keep_table", "to_bf16", "emulate_fp16", "ort_variant", "calibrate",
           "quantization_plan", "quantize_int8", "quantize_fp8", "int8_coverage", "registry"]
