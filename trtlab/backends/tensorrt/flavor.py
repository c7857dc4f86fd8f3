"""Which TensorRT this machine has, and what it can do here.

trtlab works with full TensorRT (``tensorrt``) and TensorRT for RTX (``tensorrt_rtx``). The
module is imported lazily; ``import trtlab`` needs neither. Capabilities:

``parse``
    TensorRT's ONNX parser works (both flavors; no GPU needed for TensorRT-RTX).
``build``
    Engines can be built. TensorRT-RTX builds ahead of time without a GPU; full TensorRT
    needs a GPU.
``run``
    Engines can be executed: a GPU the flavor supports, with a CUDA runtime Polygraphy's
    ``TrtRunner`` can load (probed through cuda-python or Polygraphy's own CUDA wrapper).

Polygraphy binds to ``tensorrt`` or ``tensorrt_rtx`` when its first TensorRT-aware module is
imported (``POLYGRAPHY_USE_TENSORRT_RTX``). :func:`bind_polygraphy` fixes that choice to
trtlab's flavor; trtlab calls it before each of its own Polygraphy imports.

Examples
--------
>>> from trtlab.backends.tensorrt import flavor as trt
>>> trt.info().flavor in ("tensorrt", "tensorrt_rtx", None)
True
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import importlib.util
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, List, Optional, Tuple

from trtlab.config import TENSORRT_MODULES, tensorrt_choice
from trtlab.errors import MissingDependencyError, PolygraphyFlavorError

log = logging.getLogger(__name__)

__all__ = [
    "TrtInfo",
    "GpuInfo",
    "flavor",
    "module",
    "version",
    "version_tuple",
    "info",
    "gpu",
    "bind_polygraphy",
    "polygraphy_binding",
    "PolygraphyFlavorError",
    "rtx_runnable_cc",
    "engine_validity",
    "CapturingLogger",
    "make_parser",
    "quiet_logger",
    "is_cuda_noise",
    "clean_message",
]

#: Compute capabilities (major, minor) TensorRT-RTX builds for and executes on when its module
#: does not list them itself (``tensorrt_rtx.ComputeCapability``: SM75, SM80, SM86, SM89, SM120,
#: SM121 in 1.7). Hopper and data-centre Blackwell (9.0, 10.x) and Jetson Orin (8.7) are not
#: among them. :func:`rtx_runnable_cc` prefers the module's own list.
RTX_RUNNABLE_CC = {(7, 5), (8, 0), (8, 6), (8, 9), (12, 0), (12, 1)}


@dataclass(frozen=True)
class GpuInfo:
    """The first CUDA device, as the driver reports it."""

    name: str
    compute_capability: Tuple[int, int]
    count: int

    @property
    def cc(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


@dataclass(frozen=True)
class TrtInfo:
    """What the chosen TensorRT flavor can do on this machine."""

    flavor: Optional[str]
    version: Optional[str]
    parse: bool
    build: bool
    run: bool
    gpu: Optional[str]
    compute_capability: Optional[str]
    reason: str
    notes: Tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict:
        return {
            "flavor": self.flavor,
            "version": self.version,
            "parse": self.parse,
            "build": self.build,
            "run": self.run,
            "gpu": self.gpu,
            "compute_capability": self.compute_capability,
            "reason": self.reason,
        }


@functools.lru_cache(maxsize=None)
def _installed(name: str) -> bool:
    """Whether module ``name`` can be imported (asked once per process: the answer feeds every
    :func:`flavor` call, and a TensorRT installed later needs a new process anyway)."""
    if sys.modules.get(name) is not None:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def flavor() -> Optional[str]:
    """``"tensorrt"``, ``"tensorrt_rtx"`` or ``None``.

    ``TRTLAB_TENSORRT`` forces a choice; otherwise full TensorRT is preferred when installed.
    """
    forced = tensorrt_choice()
    if forced is not None:
        return forced if _installed(forced) else None
    for name in TENSORRT_MODULES:
        if _installed(name):
            return name
    return None


@functools.lru_cache(maxsize=None)
def _import(name: str) -> ModuleType:
    return importlib.import_module(name)


def module() -> ModuleType:
    """The imported TensorRT module (``tensorrt`` or ``tensorrt_rtx``).

    Raises
    ------
    MissingDependencyError
        When neither is installed, or the one forced by ``TRTLAB_TENSORRT`` is not.
    """
    forced = tensorrt_choice()
    name = flavor()
    if name is None:
        if forced:
            raise MissingDependencyError(
                f"TRTLAB_TENSORRT={forced} asks for the '{forced}' module, which is not installed. "
                f"Install it (pip install 'trtlab[{'rtx' if forced == 'tensorrt_rtx' else 'tensorrt'}]') "
                "or unset TRTLAB_TENSORRT to use whichever TensorRT is installed."
            )
        raise MissingDependencyError(
            "TensorRT is not installed (neither 'tensorrt' nor 'tensorrt_rtx' can be imported). "
            "Install TensorRT-RTX with: pip install 'trtlab[rtx]' (parses and builds without a GPU), "
            "or full TensorRT with: pip install 'trtlab[tensorrt]'. "
            "check_support(..., source='rules') works without either."
        )
    try:
        return _import(name)
    except (ImportError, OSError) as exc:
        raise MissingDependencyError(
            f"The '{name}' module is installed but failed to import: {exc}. "
            "Reinstall it, or set TRTLAB_TENSORRT to the other flavor."
        ) from exc


def version() -> Optional[str]:
    """Version string of the TensorRT module, or ``None`` when there is none."""
    if flavor() is None:
        return None
    return str(module().__version__)


def version_tuple() -> Tuple[int, ...]:
    """Version as integers, e.g. ``(1, 7, 1, 116)`` for TensorRT-RTX 1.7; ``()`` without TensorRT."""
    return parse_version(version() or "")


def parse_version(text: str) -> Tuple[int, ...]:
    """``"1.7.1.116"`` -> ``(1, 7, 1, 116)``: the leading numeric pieces of a version string."""
    parts: List[int] = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


@functools.lru_cache(maxsize=1)
def gpu() -> Optional[GpuInfo]:
    """The first CUDA device via the driver API, or ``None`` without a driver or device."""
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
            break
        except OSError:
            continue
    else:
        return None
    try:
        if cuda.cuInit(0) != 0:
            return None
        count = ctypes.c_int(0)
        if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
            return None
        dev = ctypes.c_int(0)
        if cuda.cuDeviceGet(ctypes.byref(dev), 0) != 0:
            return None
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # COMPUTE_CAPABILITY_MAJOR
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # COMPUTE_CAPABILITY_MINOR
        name = ctypes.create_string_buffer(256)
        cuda.cuDeviceGetName(name, 256, dev)
        return GpuInfo(name.value.decode(errors="replace"), (major.value, minor.value), count.value)
    except (AttributeError, OSError) as exc:  # a broken driver install
        log.debug("CUDA driver query failed: %s", exc)
        return None


def _cuda_python() -> Optional[str]:
    """``"cuda-python"`` when cuda-python's runtime binding sees a device, else ``None``."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            cudart = importlib.import_module(name)
        except ImportError:
            continue
        try:
            err, count = cudart.cudaGetDeviceCount()
        except Exception as exc:  # a binding without a loadable CUDA runtime raises on first call
            log.debug("cuda-python %s: %s", name, exc)
            return None
        return "cuda-python" if int(err) == 0 and count > 0 else None
    return None


def _polygraphy_cuda() -> Optional[str]:
    """``"polygraphy.cuda"`` when Polygraphy's CUDA wrapper loads a CUDA runtime, else ``None``.

    Polygraphy searches the versioned ``libcudart.so*`` / ``cudart64_*.dll`` of the CUDA toolkit
    and of pip's ``nvidia-cuda-runtime`` wheels; it is what ``TrtRunner`` itself uses.
    """
    if bind_polygraphy(strict=False) not in (None, flavor()):
        return None
    try:
        from polygraphy import cuda as pcuda
        from polygraphy.logger import G_LOGGER
    except ImportError:
        return None
    try:
        with G_LOGGER.verbosity(G_LOGGER.CRITICAL + 1):
            pcuda.wrapper()
    except Exception as exc:  # Polygraphy raises PolygraphyException or OSError
        log.debug("polygraphy.cuda: %s", exc)
        return None
    return "polygraphy.cuda"


def _cuda_binding() -> Optional[str]:
    """Name of the probe that found a CUDA runtime TrtRunner can use, or ``None``.

    TrtRunner allocates and copies through ``polygraphy.cuda``; cuda-python answers the same
    question without loading Polygraphy's TensorRT side.
    """
    return _cuda_python() or _polygraphy_cuda()


def rtx_runnable_cc(trt_module: Any = None) -> set:
    """Compute capabilities TensorRT-RTX runs engines on: its ``ComputeCapability`` enum's
    ``SMxy`` members when the module has them, else :data:`RTX_RUNNABLE_CC`."""
    members = getattr(getattr(trt_module, "ComputeCapability", None), "__members__", None) or {}
    found = set()
    for key in members:
        m = re.fullmatch(r"SM(\d+)(\d)", key)
        if m:
            found.add((int(m.group(1)), int(m.group(2))))
    return found or set(RTX_RUNNABLE_CC)


def engine_validity(data: bytes, trt_module: Any = None) -> Tuple[str, str]:
    """``(validity, diagnostics)`` of a serialized engine on this machine.

    ``Runtime.get_engine_validity`` (TensorRT-RTX) reads the engine header: ``"VALID"``,
    ``"SUBOPTIMAL"`` or ``"INVALID"``. Where the runtime has no such call the answer is
    ``("UNKNOWN", "")``: the engine is tried and the runner reports a mismatch.
    """
    trt_mod = trt_module if trt_module is not None else module()
    runtime_cls = getattr(trt_mod, "Runtime", None)
    if runtime_cls is None or not hasattr(runtime_cls, "get_engine_validity"):
        return "UNKNOWN", ""
    runtime = runtime_cls(quiet_logger() if trt_module is None else trt_mod.Logger())
    validity, diagnostics = runtime.get_engine_validity(bytes(data))
    return str(validity).split(".")[-1], str(diagnostics or "")


#: Polygraphy modules that bind a TensorRT module when imported (``lazy_import_trt``).
_POLYGRAPHY_BINDING_MODULES = ("polygraphy.util.util", "polygraphy.datatype.tensorrt",
                               "polygraphy.backend.trt.util")


def polygraphy_binding() -> Optional[str]:
    """The TensorRT module Polygraphy's imported modules are bound to, or ``None`` when no
    TensorRT-aware Polygraphy module is imported yet (the choice is still open)."""
    if not any(name in sys.modules for name in _POLYGRAPHY_BINDING_MODULES):
        return None
    importer = sys.modules.get("polygraphy.mod.importer")
    names = set(getattr(importer, "_all_external_lazy_imports", ())) & {"tensorrt", "tensorrt_rtx"}
    if len(names) == 1:
        return names.pop()
    pconfig = sys.modules.get("polygraphy.config")
    return "tensorrt_rtx" if getattr(pconfig, "USE_TENSORRT_RTX", False) else "tensorrt"


def bind_polygraphy(strict: bool = True) -> Optional[str]:
    """Bind Polygraphy to trtlab's TensorRT flavor before Polygraphy binds one itself.

    Sets ``POLYGRAPHY_USE_TENSORRT_RTX`` (inherited by worker processes) and, when
    ``polygraphy.config`` is already imported, ``polygraphy.config.USE_TENSORRT_RTX``. Call it
    before importing any Polygraphy module other than ``polygraphy.config``.

    Parameters
    ----------
    strict
        Raise when Polygraphy is already bound to the other flavor; with ``False`` (callers that
        run no TensorRT engine themselves) log a warning and leave the binding as it is.

    Returns
    -------
    The flavor Polygraphy is bound to, or ``None`` without TensorRT.

    Raises
    ------
    PolygraphyFlavorError
        Polygraphy was already imported bound to the other flavor (its TensorRT data types
        would not match the engines trtlab builds).
    """
    name = flavor()
    if name is None:
        return None
    rtx = name == "tensorrt_rtx"
    bound = polygraphy_binding()
    if bound is not None and bound != name:
        message = (
            f"Polygraphy was imported bound to '{bound}' but trtlab uses '{name}'. Set "
            f"POLYGRAPHY_USE_TENSORRT_RTX={'1' if rtx else '0'} before anything imports Polygraphy "
            f"(or TRTLAB_TENSORRT={bound} to use that flavor), then restart the Python process."
        )
        if strict:
            raise PolygraphyFlavorError(message)
        log.warning("%s TensorRT engines cannot run in this process.", message)
        return bound
    os.environ["POLYGRAPHY_USE_TENSORRT_RTX"] = "1" if rtx else "0"
    pconfig = sys.modules.get("polygraphy.config")
    if pconfig is not None:
        pconfig.USE_TENSORRT_RTX = rtx
    return name


class CapturingLogger:
    """A TensorRT ``ILogger`` that keeps messages and forwards them to :mod:`logging`.

    TensorRT's own logger prints to stderr; this one keeps errors for reasons tables.
    """

    def __new__(cls, min_severity: Any = None) -> Any:
        trt = module()

        class _Logger(trt.ILogger):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.messages: List[Tuple[str, str]] = []

            def log(self, severity: Any, msg: str) -> None:  # noqa: A003 - TensorRT's name
                sev = str(severity).split(".")[-1]
                self.messages.append((sev, msg))
                level = {"INTERNAL_ERROR": logging.ERROR, "ERROR": logging.DEBUG,
                         "WARNING": logging.DEBUG}.get(sev, logging.DEBUG)
                log.log(level, "[TensorRT %s] %s", sev, msg)

            def errors(self) -> List[str]:
                return [m for s, m in self.messages if s in ("ERROR", "INTERNAL_ERROR")]

        return _Logger()


_CUDA_NOISE = re.compile(
    r"\[(?:checkMacros\.cpp::catchCudaError|cudaResources\.cpp::\w+)::\d+\][^\n;]*?"
    r"(?:Cuda Runtime \([^\n]*?\)\)|CUDA[^\n;]*)")


def is_cuda_noise(message: str) -> bool:
    """Whether a TensorRT message only says that no usable CUDA device is present.

    TensorRT-RTX adds such messages to parser and builder errors on a machine without a GPU;
    they are not the reason a node or segment failed.
    """
    return bool(_CUDA_NOISE.fullmatch(message.strip()))


def clean_message(text: str) -> str:
    """``text`` without the CUDA-device noise of :func:`is_cuda_noise`, whitespace folded."""
    return re.sub(r"\s+", " ", _CUDA_NOISE.sub("", text)).strip(" ;")


def quiet_logger() -> Any:
    """TensorRT's own logger at INTERNAL_ERROR: no Python callback per message.

    TensorRT calls a Python logger for every verbose message (tens of thousands for a large
    parse), which costs more than the parse. Use this one where errors come from
    ``parser.get_error`` or an error recorder instead of the log.
    """
    trt = module()
    return trt.Logger(trt.Logger.INTERNAL_ERROR)


def make_parser(logger: Any = None) -> Tuple[Any, Any, Any, Any]:
    """A builder, a strongly typed network, an ONNX parser and their logger.

    Keep all four alive while the parser is in use: TensorRT frees the network with the
    builder, and a parser whose network is gone crashes the process.

    Returns
    -------
    (builder, network, parser, logger)
    """
    trt = module()
    logger = logger if logger is not None else CapturingLogger()
    builder = trt.Builder(logger)
    if builder is None:
        raise MissingDependencyError(
            f"{flavor()} could not create a Builder on this machine "
            "(full TensorRT needs a CUDA GPU for that; TensorRT-RTX does not)."
        )
    flags = 0
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly is not None:
        flags = 1 << int(strongly)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    return builder, network, parser, logger


@functools.lru_cache(maxsize=4)
def _info(choice: Optional[str], name: Optional[str]) -> TrtInfo:
    dev = gpu()
    gpu_name = dev.name if dev else None
    cc = dev.cc if dev else None
    if name is None:
        why = ("TRTLAB_TENSORRT forces a module that is not installed" if choice else
               "no TensorRT installed (pip install 'trtlab[rtx]')")
        return TrtInfo(None, None, False, False, False, gpu_name, cc, why)
    try:
        trt = module()
    except MissingDependencyError as exc:
        return TrtInfo(name, None, False, False, False, gpu_name, cc, str(exc))
    ver = str(trt.__version__)
    parse = build = run = False
    notes: List[str] = []
    try:
        builder, _, _, _ = make_parser()
        parse = True
        build = name == "tensorrt_rtx" or dev is not None
        del builder
    except Exception as exc:  # TensorRT raises plain RuntimeError/TypeError on a missing device
        notes.append(f"builder unavailable: {exc}")
    if dev is None:
        why = "no CUDA GPU (no driver or no device): engines are built ahead of time only, run falls back to ONNX Runtime" \
            if build else "no CUDA GPU: full TensorRT needs one to parse/build/run"
    elif name == "tensorrt_rtx" and dev.compute_capability not in rtx_runnable_cc(trt):
        why = (f"TensorRT-RTX does not run engines on {dev.name} (compute capability {dev.cc}); "
               "segments run on ONNX Runtime")
    else:
        binding = _cuda_binding()
        run = parse and binding is not None
        why = (f"engines run on {dev.name} via {binding}" if run else
               "no CUDA runtime found by cuda-python or Polygraphy's CUDA wrapper "
               "(pip install 'trtlab[gpu]' for cuda-python and the CUDA runtime wheel)")
    return TrtInfo(name, ver, parse, build, run, gpu_name, cc, why, tuple(notes))


def info() -> TrtInfo:
    """Flavor, version and capabilities (``parse``, ``build``, ``run``) on this machine.

    Binds Polygraphy to the flavor first (:func:`bind_polygraphy`): the run probe may import
    ``polygraphy.cuda``.
    """
    bind_polygraphy(strict=False)
    return _info(tensorrt_choice(), flavor())
