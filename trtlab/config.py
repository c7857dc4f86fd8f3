"""Environment variables trtlab reads, parsed in this one place.

========================  ==========================================================
variable                  meaning
========================  ==========================================================
``TRTLAB_TENSORRT``       ``tensorrt`` or ``tensorrt_rtx``: which TensorRT module to use
``TRTLAB_CACHE_DIR``      engine / calibration cache folder
``TRTLAB_DATA``           folder holding the model zoo (default: ``data/`` of the checkout)
``TRTLAB_PROGRESS``       ``0`` silences every progress bar
========================  ==========================================================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

from trtlab.errors import TrtlabError

TENSORRT_MODULES = ("tensorrt", "tensorrt_rtx")


def _env(environ: Optional[Mapping[str, str]]) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def tensorrt_choice(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The TensorRT module forced by ``TRTLAB_TENSORRT``, or ``None`` for automatic choice."""
    value = _env(environ).get("TRTLAB_TENSORRT", "").strip().lower()
    if not value or value == "auto":
        return None
    value = value.replace("-", "_")
    if value not in TENSORRT_MODULES:
        raise TrtlabError(
            f"TRTLAB_TENSORRT={value!r} is not a TensorRT module trtlab knows; "
            f"use one of {', '.join(TENSORRT_MODULES)} or 'auto' (or unset it)."
        )
    return value


def cache_dir(environ: Optional[Mapping[str, str]] = None) -> Path:
    """Folder for engine and calibration caches (``TRTLAB_CACHE_DIR``, else the user cache dir)."""
    env = _env(environ)
    value = env.get("TRTLAB_CACHE_DIR", "").strip()
    if value:
        return Path(value).expanduser()
    base = env.get("XDG_CACHE_HOME", "").strip()
    root = Path(base).expanduser() if base else Path.home() / ".cache"
    return root / "trtlab"


def data_dir(environ: Optional[Mapping[str, str]] = None) -> Path:
    """Folder of the model zoo (``TRTLAB_DATA``, else ``data/`` beside the package)."""
    value = _env(environ).get("TRTLAB_DATA", "").strip()
    if value:
        return Path(value).expanduser()
    return Path(__file__).resolve().parent.parent / "data"


def progress_default(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether progress bars are on (``TRTLAB_PROGRESS=0`` turns them off)."""
    value = _env(environ).get("TRTLAB_PROGRESS", "1").strip().lower()
    return value not in ("0", "false", "no", "off")
