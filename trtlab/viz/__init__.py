"""Drawing and widgets. Everything here only draws what analysis functions return.

matplotlib and ipywidgets are imported when a function is first used, never at ``import trtlab``.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, Tuple

_EXPORTS: Dict[str, Tuple[str, str]] = {
    "draw": ("trtlab.viz.graph", "draw"),
    "explore": ("trtlab.viz.explorer", "explore"),
    "Explorer": ("trtlab.viz.explorer", "Explorer"),
    "plot_latency": ("trtlab.viz.latency", "plot_latency"),
    "plot_accuracy": ("trtlab.viz.accuracy", "plot_accuracy"),
    "plot_layer_latency": ("trtlab.viz.fusion_plots", "plot_layer_latency"),
    "plot_fusion_comparison": ("trtlab.viz.fusion_plots", "plot_fusion_comparison"),
    "plot_before_after": ("trtlab.viz.fusion_plots", "plot_before_after"),
    "reasons_table": ("trtlab.viz.graph", "reasons_table"),
    "show_model_explorer": ("trtlab.viz.model_explorer", "show"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'trtlab.viz' has no attribute {name!r}")
