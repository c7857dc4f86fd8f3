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
    "check_support": ("trtlab.support", "check_support"),
    "compare_support": ("trtlab.support", "compare_support"),
    "SupportTable": ("trtlab.support", "SupportTable"),
    "partition": ("trtlab.partition", "partition"),
    "Partition": ("trtlab.partition", "Partition"),
    "Segment": ("trtlab.partition", "Segment"),
    "run_segments": ("trtlab.partition", "run_segments"),
    "build": ("trtlab.build", "build"),
    "HybridModel": ("trtlab.runtime", "HybridModel"),
    "HybridRunner": ("trtlab.runtime", "HybridRunner"),
    "benchmark": ("trtlab.bench", "benchmark"),
    "LatencyStats": ("trtlab.bench", "LatencyStats"),
    "to_fp16": ("trtlab.precision", "to_fp16"),
    "quantize_int8": ("trtlab.precision", "quantize_int8"),
    "compare": ("trtlab.compare", "compare"),
    "precision_table": ("trtlab.compare", "precision_table"),
    "localize_error": ("trtlab.localize", "localize_error"),
    "fusion": ("trtlab.fusion", "fusion"),
    "prefusion": ("trtlab.fusion", "prefusion"),
    "FusionReport": ("trtlab.fusion", "FusionReport"),
    "draw": ("trtlab.viz", "draw"),
    "explore": ("trtlab.viz", "explore"),
    "plot_latency": ("trtlab.viz", "plot_latency"),
    "plot_accuracy": ("trtlab.viz", "plot_accuracy"),
    "sweep": ("trtlab.study.sweeps", "sweep"), "sweep_grid": ("trtlab.study.sweeps", "sweep_grid"),
    "sweep_results": ("trtlab.study.sweeps", "sweep_results"),
}

_SUBMODULES = ("errors", "model", "trt", "ort", "config", "zoo", "support", "partition", "extract",
               "build", "cache", "runtime", "bench", "backends", "precision", "compare", "localize",
               "fusion", "viz", "cli", "feeds", "report")

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
