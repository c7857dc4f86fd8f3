"""trtlab: a research toolkit for TensorRT "Bring Your Own Codegen".

The pipeline, one public function per step::

    model = trtlab.load("model.onnx")
    support = trtlab.check_support(model)
    part = trtlab.partition(model, support=support)
    hybrid = trtlab.build(part, precision="fp16")
    outputs = hybrid.run(feeds)

``import trtlab`` needs neither TensorRT, a GPU, matplotlib nor ipywidgets: every name below is
imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, Tuple

__version__ = "0.1.0"

#: public name -> (module, attribute)
_EXPORTS: Dict[str, Tuple[str, str]] = {
    "load": ("trtlab.model", "load"),
    "Model": ("trtlab.model", "Model"),
    "TensorInfo": ("trtlab.model", "TensorInfo"),
    "TrtlabError": ("trtlab.errors", "TrtlabError"),
    "check_support": ("trtlab.backends.tensorrt.support", "check_support"),
    "compare_support": ("trtlab.backends.tensorrt.support", "compare_support"),
    "SupportTable": ("trtlab.backends.tensorrt.support", "SupportTable"),
    "partition": ("trtlab.partitioning.partitioner", "partition"),
    "Partition": ("trtlab.partitioning.partitioner", "Partition"),
    "Segment": ("trtlab.partitioning.partitioner", "Segment"),
    "run_segments": ("trtlab.partitioning.partitioner", "run_segments"),
    "read_partition": ("trtlab.partition_folder", "read_partition"),
    "build": ("trtlab.codegen", "build"),
    "BuildWarning": ("trtlab.codegen", "BuildWarning"),
    "LazyBuildWarning": ("trtlab.codegen", "LazyBuildWarning"),
    "BackendBase": ("trtlab.backends.base", "BackendBase"),
    "CompiledSegment": ("trtlab.backends.base", "CompiledSegment"),
    "HybridModel": ("trtlab.runtime", "HybridModel"),
    "HybridRunner": ("trtlab.runtime", "HybridRunner"),
    "benchmark": ("trtlab.study.latency", "benchmark"),
    "LatencyStats": ("trtlab.study.latency", "LatencyStats"),
    "to_fp16": ("trtlab.precision", "to_fp16"),
    "quantize_int8": ("trtlab.precision", "quantize_int8"),
    "compare": ("trtlab.study.accuracy", "compare"),
    "precision_table": ("trtlab.study.accuracy", "precision_table"),
    "localize_error": ("trtlab.study.localize", "localize_error"),
    "fusion": ("trtlab.backends.tensorrt.layers", "fusion"),
    "prefusion": ("trtlab.backends.tensorrt.layers", "prefusion"),
    "FusionReport": ("trtlab.backends.tensorrt.layers", "FusionReport"),
    "report_card": ("trtlab.backends.tensorrt.layers", "report_card"),
    "align_engines": ("trtlab.backends.tensorrt.layers", "align_engines"),
    "tensorrt_info": ("trtlab.backends.tensorrt.flavor", "info"),
    "run_onnx": ("trtlab.backends.onnxruntime.session", "run_onnx"),
    "draw": ("trtlab.viz", "draw"),
    "explore": ("trtlab.viz", "explore"),
    "plot_latency": ("trtlab.viz", "plot_latency"),
    "plot_accuracy": ("trtlab.viz", "plot_accuracy"),
    "sweep": ("trtlab.study.sweeps", "sweep"), "sweep_grid": ("trtlab.study.sweeps", "sweep_grid"),
    "sweep_results": ("trtlab.study.sweeps", "sweep_results"),
}

_SUBMODULES = ("errors", "model", "extract", "partition_folder", "feeds", "config", "zoo", "partitioning", "codegen",
               "runtime", "backends", "precision", "study", "viz", "cli")

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"trtlab.{name}")
    raise AttributeError(f"module 'trtlab' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
