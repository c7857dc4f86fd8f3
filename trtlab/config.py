"""Environment variables trtlab reads, and where its shipped files are, in this one place.

========================  ==========================================================
variable                  meaning
========================  ==========================================================
``TRTLAB_TENSORRT``       ``tensorrt`` or ``tensorrt_rtx``: which TensorRT module to use
``TRTLAB_CACHE_DIR``      engine / calibration cache folder (default: the platform's user
                          cache folder, e.g. ``~/.cache/trtlab`` on Linux,
                          ``~/Library/Caches/trtlab`` on macOS,
                          ``%LOCALAPPDATA%\\trtlab\\Cache`` on Windows)
``TRTLAB_DATA``           folder holding the model zoo (default: the zoo shipped with trtlab)
``TRTLAB_PROGRESS``       ``0`` silences every progress bar, ``1`` shows them even when stderr
                          is not a terminal; unset: bars on a terminal or in a notebook only
``TQDM_DISABLE``          tqdm's own switch: any true value silences every progress bar
========================  ==========================================================

The zoo (the repository's ``data/`` folder) and the notebooks (``notebooks/``) ship inside the
installed package as ``trtlab/_zoo_data`` and ``trtlab/_notebooks`` and are found with
:mod:`importlib.resources`; in a source checkout they are the repository's own folders.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Mapping, Optional

from trtlab.errors import TrtlabError

__all__ = ["tensorrt_choice", "cache_dir", "data_dir", "notebooks_dir", "progress_mode",
           "progress_default", "TENSORRT_MODULES"]

TENSORRT_MODULES = ("tensorrt", "tensorrt_rtx")

#: Shipped folder -> (package-data folder inside ``trtlab``, folder of the source checkout).
SHIPPED = {"zoo": ("_zoo_data", "data"), "notebooks": ("_notebooks", "notebooks")}

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


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
    """Folder for engine and calibration caches.

    ``TRTLAB_CACHE_DIR`` if set, else the platform's user cache folder for ``trtlab`` as
    :func:`platformdirs.user_cache_path` gives it (it honours ``XDG_CACHE_HOME`` on Linux).
    """
    value = _env(environ).get("TRTLAB_CACHE_DIR", "").strip()
    if value:
        return Path(value).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_path("trtlab", appauthor=False))


def _shipped(kind: str) -> Path:
    """Folder of shipped files ``kind`` (``zoo`` or ``notebooks``) beside the imported package."""
    packaged, checkout = SHIPPED[kind]
    root = resources.files("trtlab")
    candidate = root / packaged
    if not isinstance(root, Path):
        raise TrtlabError(
            f"trtlab is imported from an archive ({root}); its {kind} files must be on disk. "
            "Install the wheel with pip (it installs unzipped), or set TRTLAB_DATA to a folder "
            "holding the zoo.")
    if candidate.is_dir():  # an installed wheel
        return Path(candidate)
    return root.parent / checkout  # a source checkout or an editable install


def data_dir(environ: Optional[Mapping[str, str]] = None) -> Path:
    """Folder of the model zoo: ``TRTLAB_DATA`` if set, else the zoo shipped with trtlab."""
    value = _env(environ).get("TRTLAB_DATA", "").strip()
    if value:
        return Path(value).expanduser()
    return _shipped("zoo")


def notebooks_dir() -> Path:
    """Folder of the notebooks shipped with trtlab (copy them with ``trtlab notebooks DIR``)."""
    return _shipped("notebooks")


def _flag(name: str, value: str) -> Optional[bool]:
    value = value.strip().lower()
    if value in ("", "auto"):
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise TrtlabError(f"{name}={value!r} is not understood; use 0 (off), 1 (on) or unset it.")


def progress_mode(environ: Optional[Mapping[str, str]] = None) -> Optional[bool]:
    """Progress bars forced off (``False``), forced on (``True``) or automatic (``None``).

    ``TRTLAB_PROGRESS=0`` or a true ``TQDM_DISABLE`` turn bars off; ``TRTLAB_PROGRESS=1`` turns
    them on even when stderr is not a terminal; otherwise they show on a terminal or in a
    notebook only (see :mod:`trtlab._progress`).
    """
    env = _env(environ)
    tqdm_disable = env.get("TQDM_DISABLE", "").strip().lower()
    if tqdm_disable and tqdm_disable not in _FALSE:
        return False
    return _flag("TRTLAB_PROGRESS", env.get("TRTLAB_PROGRESS", ""))


def progress_default(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Whether progress bars may show at all (not forced off by the environment)."""
    return progress_mode(environ) is not False
