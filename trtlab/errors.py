"""Exceptions raised by trtlab.

Every error trtlab raises is a :class:`TrtlabError`. Errors caused by bad input also derive
from :class:`ValueError` (or :class:`FileNotFoundError`), so generic handlers keep working.
Messages say what failed, what was asked, what is available and what to do next.
"""

from __future__ import annotations

__all__ = [
    "TrtlabError",
    "ModelLoadError",
    "InvalidModelError",
    "UnsupportedOpsetError",
    "ExternalDataError",
    "MissingDependencyError",
    "InputError",
    "SupportError",
    "PartitionError",
    "BuildError",
    "CacheError",
    "FusionError",
    "PrecisionError",
    "CalibrationError",
    "CompareError",
    "PolygraphyFlavorError",
    "FileReadError",
    "FileWriteError",
    "OutputExistsError",
    "RunError",
]


class TrtlabError(Exception):
    """Base class of every error raised by trtlab."""


class ModelLoadError(TrtlabError, ValueError):
    """A model could not be read: missing file, not ONNX, truncated bytes, unreadable IR version."""


class InvalidModelError(TrtlabError, ValueError):
    """A model was read but is not a valid ONNX graph (checker failure, dangling input, cycle)."""


class UnsupportedOpsetError(InvalidModelError):
    """The model's opset is older (or newer) than the tool chain accepts."""


class ExternalDataError(ModelLoadError):
    """Tensor data stored outside the model file is missing or unreadable."""


class MissingDependencyError(TrtlabError, ImportError):
    """An optional dependency is needed for this call; the message names the extra to install."""


class InputError(TrtlabError, ValueError):
    """Run-time inputs do not match the model: missing or extra names, wrong shape or dtype."""


class SupportError(TrtlabError, ValueError):
    """Support analysis failed or was asked for something it cannot do."""


class PartitionError(TrtlabError, ValueError):
    """A partition could not be made, read or extracted."""


class BuildError(TrtlabError):
    """An engine or session could not be built."""


class CacheError(TrtlabError):
    """The engine cache could not be read or written."""


class FusionError(TrtlabError, ValueError):
    """Engine-inspector or profile JSON could not be interpreted."""


class PrecisionError(TrtlabError, ValueError):
    """A precision conversion (FP16, INT8) could not be applied."""


class CalibrationError(PrecisionError):
    """Calibration data is missing, empty or does not match the model inputs."""


class CompareError(TrtlabError, ValueError):
    """An accuracy comparison could not be made."""


class PolygraphyFlavorError(TrtlabError):
    """Polygraphy was imported bound to the other TensorRT flavor than the one trtlab uses."""


class FileReadError(TrtlabError, ValueError):
    """A file could not be read: missing, not a regular file (FIFO, socket, device), too large,
    or not readable by this user."""


class FileWriteError(TrtlabError, OSError):
    """A file or folder could not be written (disk full, read-only, permissions); whatever
    existed at the destination is left as it was."""


class OutputExistsError(TrtlabError, FileExistsError):
    """The destination exists; pass ``overwrite=True`` (CLI: ``--force``) or another path."""


class RunError(TrtlabError, RuntimeError):
    """A model or segment failed while it ran (ONNX Runtime or TensorRT raised at run time)."""
