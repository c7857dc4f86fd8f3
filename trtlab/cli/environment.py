"""Versions and capabilities of everything trtlab uses (``trtlab info`` and the report's header)."""

from __future__ import annotations

import sys
from typing import Dict



def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment() -> Dict[str, object]:
    """Versions and capabilities of everything trtlab uses, as a dict."""
    from trtlab import __version__, config
    from trtlab.backends.tensorrt import flavor as trt

    info = trt.info()
    env: Dict[str, object] = {
        "trtlab": __version__,
        "python": ".".join(str(v) for v in sys.version_info[:3]),
        "onnx": _version("onnx"),
        "onnxruntime": _version("onnxruntime"),
        "polygraphy": _version("polygraphy"),
        "onnx-graphsurgeon": _version("onnx-graphsurgeon"),
        "tensorrt flavor": info.flavor or "none",
        "tensorrt version": info.version or "none",
        "parse": "yes" if info.parse else "no",
        "build": "yes" if info.build else "no",
        "run": "yes" if info.run else "no",
        "gpu": f"{info.gpu} (compute capability {info.compute_capability})" if info.gpu else "none",
        "why": info.reason,
        "engine cache": str(config.cache_dir()),
        "zoo": str(config.data_dir()),
    }
    try:
        import onnxruntime as ort

        env["onnxruntime providers"] = ", ".join(ort.get_available_providers())
    except ImportError:
        env["onnxruntime providers"] = "onnxruntime not installed"
    return env
