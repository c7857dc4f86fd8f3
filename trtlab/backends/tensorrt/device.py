"""Device residency for TensorRT segments: what stays on the GPU, what is copied, and who owns it.

Between two TensorRT segments a tensor stays on the GPU (Polygraphy's ``DeviceView``; no copy).
Three things cross the host/device line, and each crossing is counted per boundary tensor:

* ``h2d``: a host array fed to a TensorRT segment (``TrtRunner`` copies it to the device);
* ``d2h``: a TensorRT output needed on the host (a model output, or an input of an ONNX Runtime
  segment);
* ``d2h`` as well: a device tensor that the consuming engine reads as a **shape tensor**
  (``ICudaEngine.is_shape_inference_io``). ``TrtRunner`` refuses shape tensors in device memory,
  so they are brought to the host before the call.

``TrtRunner`` reuses its host output buffers from one inference to the next; outputs a
:class:`~trtlab.runtime.HybridModel` returns are therefore copied into arrays the caller owns
(:func:`owned`).

TensorRT-RTX compiles kernels when an engine is loaded; :func:`make_runner` gives its execution
context a runtime cache kept in the engine cache folder, so later sessions load them instead.

Examples
--------
>>> import numpy as np
>>> is_device(np.zeros(2))
False
>>> owned(np.arange(3)).flags.owndata
True
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from trtlab import _io  # noqa: E402

log = logging.getLogger(__name__)

__all__ = ["Copy", "Residency", "is_device", "to_host", "owned", "nbytes", "prepare_feeds",
           "outputs_to_host", "host_outputs", "make_runner", "close_runner", "runtime_cache_path", "copy_frame",
           "COPY_COLUMNS"]

COPY_COLUMNS = ["tensor", "producer", "consumers", "resident", "d2h", "h2d", "bytes"]


@dataclass(frozen=True)
class Copy:
    """One host/device copy of a tensor during a run."""

    tensor: str
    kind: str  # "h2d" or "d2h"
    nbytes: int
    segment: str
    reason: str = ""


def is_device(value: Any) -> bool:
    """Whether ``value`` lives in device memory (a Polygraphy DeviceView/DeviceArray or a CUDA
    torch tensor) rather than on the host."""
    if isinstance(value, np.ndarray):
        return False
    if getattr(value, "is_cuda", False):
        return True
    return hasattr(value, "ptr") and hasattr(value, "numpy")


def to_host(value: Any) -> np.ndarray:
    """A host NumPy array holding ``value`` (a copy when it is on the device)."""
    if isinstance(value, np.ndarray):
        return value
    if getattr(value, "is_cuda", False):
        return value.detach().cpu().numpy()
    if hasattr(value, "numpy"):
        return np.asarray(value.numpy())
    return np.asarray(value)


def owned(value: Any) -> np.ndarray:
    """A host array the caller owns: a fresh copy, never a runner's reused buffer."""
    return np.array(to_host(value), copy=True)


def nbytes(value: Any) -> int:
    """Size of ``value`` in bytes (host or device)."""
    got = getattr(value, "nbytes", None)
    if isinstance(got, (int, np.integer)):
        return int(got)
    shape = tuple(getattr(value, "shape", ()) or ())
    dtype = getattr(value, "dtype", None)
    try:
        itemsize = np.dtype(dtype).itemsize
    except TypeError:
        itemsize = int(getattr(dtype, "itemsize", 0) or 0)
    return int(np.prod(shape, dtype=np.int64)) * itemsize if shape else itemsize


def _is_shape_tensor(runner: Any, name: str) -> bool:
    engine = getattr(runner, "engine", None)
    check = getattr(engine, "is_shape_inference_io", None)
    return bool(check(name)) if check is not None else False


def prepare_feeds(runner: Any, feeds: Mapping[str, Any], segment: str) -> Tuple[Dict[str, Any], List[Copy]]:
    """Feeds ready for ``runner.infer`` and the copies they cost.

    A device tensor the engine reads as a shape tensor is brought to the host (``TrtRunner``
    refuses it otherwise); a host array for a regular input is copied to the device by the
    runner. Device tensors for regular inputs are passed as they are.
    """
    ready: Dict[str, Any] = {}
    copies: List[Copy] = []
    for name, value in feeds.items():
        shape_tensor = _is_shape_tensor(runner, name)
        if shape_tensor and is_device(value):
            value = to_host(value)
            copies.append(Copy(name, "d2h", nbytes(value), segment, "shape tensor input"))
        elif not shape_tensor and not is_device(value):
            copies.append(Copy(name, "h2d", nbytes(value), segment, "input"))
        ready[name] = value
    return ready, copies


def outputs_to_host(outputs: Mapping[str, Any], segment: str, names: Iterable[str] = (), *,
                    all_host: bool = False) -> Tuple[Dict[str, Any], List[Copy]]:
    """A TensorRT segment's outputs with ``names`` brought to the host, and the copies made.

    With ``all_host`` the runner already copied every output to the host (each one counted).
    """
    out = dict(outputs)
    if all_host:
        return out, [Copy(n, "d2h", nbytes(v), segment, "output") for n, v in out.items()]
    copies: List[Copy] = []
    for name in names:
        value = out.get(name)
        if value is not None and is_device(value):
            out[name] = to_host(value)
            copies.append(Copy(name, "d2h", nbytes(out[name]), segment, "read on the host"))
    return out, copies


def host_outputs(segments: Sequence[Any], on_gpu: Iterable[int], model_outputs: Iterable[str]) -> Dict[int, Tuple[str, ...]]:
    """Segment index -> outputs of a TensorRT segment that must reach the host: model outputs and
    tensors an ONNX Runtime segment reads. The others stay on the GPU for the next TensorRT
    segment."""
    gpu = set(on_gpu)
    wanted = set(model_outputs)
    for s in segments:
        if s.index not in gpu:
            wanted.update(s.inputs)
    return {s.index: tuple(t for t in s.outputs if t in wanted) if s.index in gpu else () for s in segments}


# -- runners -----------------------------------------------------------------------------------
def runtime_cache_path(cache: Any) -> Optional[Path]:
    """TensorRT-RTX runtime cache file in the engine cache folder, or ``None`` without a cache."""
    from trtlab.backends.tensorrt import flavor as trt

    directory = getattr(cache, "directory", None)
    if directory is None or trt.flavor() != "tensorrt_rtx":
        return None
    dev = trt.gpu()
    target = f"sm{dev.cc}" if dev is not None else "nogpu"
    return Path(directory) / f"runtime-{trt.flavor()}-{trt.version()}-{target}.cache"


def make_runner(data: bytes, name: str, cache: Any = None) -> Any:
    """An activated Polygraphy ``TrtRunner`` for a serialized engine.

    With TensorRT-RTX and a runtime whose engine has ``create_runtime_config``, the execution
    context gets a runtime cache read from (and, by :func:`close_runner`, written back to) the
    engine cache folder.
    """
    from trtlab.backends.tensorrt import engine as trt_engine

    ptrt = trt_engine.polygraphy_trt()
    path = runtime_cache_path(cache)
    loader: Any = ptrt.EngineFromBytes(bytes(data))
    keep: Optional[Tuple[Any, ...]] = None
    if path is not None:
        engine = loader()
        make_config = getattr(engine, "create_runtime_config", None)
        if make_config is not None:
            config = make_config()
            runtime_cache = config.create_runtime_cache()
            if path.is_file() and not runtime_cache.deserialize(path.read_bytes()):
                log.info("runtime cache %s does not match this runtime; it will be rewritten", path)
            config.set_runtime_cache(runtime_cache)
            loader = engine.create_execution_context(config)
            keep = (engine, config, runtime_cache, path)
        else:
            loader = engine
    runner = ptrt.TrtRunner(loader, name=name)
    runner.activate()
    if keep is not None:
        runner.trtlab_runtime_cache = keep
    return runner


def close_runner(runner: Any) -> None:
    """Deactivate a runner (frees its device memory) and save its runtime cache, if it has one."""
    keep = getattr(runner, "trtlab_runtime_cache", None)
    try:
        if keep is not None:
            _, _, runtime_cache, path = keep
            blob = runtime_cache.serialize()
            if blob is not None:
                _io.write_bytes(Path(path), bytes(memoryview(blob)), what="TensorRT-RTX runtime cache")
    except OSError as exc:
        log.warning("could not save the TensorRT-RTX runtime cache: %s", exc)
    finally:
        if getattr(runner, "is_active", True):
            runner.deactivate()




# -- the hybrid model's bookkeeping --------------------------------------------------------------
class Residency:
    """Per-run copy accounting and output ownership of a hybrid model with TensorRT segments.

    Made by :meth:`of`; ``None`` when no segment runs on TensorRT (nothing to account for).
    """

    def __init__(self, executables: Mapping[str, Any], producers: Mapping[str, str],
                 consumers: Mapping[str, Sequence[str]], trt_outputs: Iterable[str],
                 resident: Iterable[str]) -> None:
        self.executables = dict(executables)
        self.producers = dict(producers)
        self.consumers = {k: tuple(v) for k, v in consumers.items()}
        self.trt_outputs = frozenset(trt_outputs)
        self.resident = frozenset(resident)
        self.copies: List[Copy] = []

    @classmethod
    def of(cls, hybrid: Any) -> Optional["Residency"]:
        """Accounting for ``hybrid``, or ``None`` when none of its segments runs on TensorRT."""
        segments = list(hybrid.partition.segments)
        on_trt = {s.index for s in segments
                  if getattr(hybrid.executables[s.index], "executor", "") == "tensorrt"
                  and hasattr(hybrid.executables[s.index], "run_device")}
        if not on_trt:
            return None
        producers: Dict[str, str] = {}
        consumers: Dict[str, List[str]] = {}
        trt_outputs: List[str] = []
        for s in segments:
            for t in s.outputs:
                producers[t] = s.name
                if s.index in on_trt:
                    trt_outputs.append(t)
            for t in s.inputs:
                consumers.setdefault(t, []).append(s.name)
        to_host = host_outputs(segments, on_trt, [t.name for t in hybrid.outputs])
        resident = [t for s in segments if s.index in on_trt for t in s.outputs if t not in to_host[s.index]]
        executables = {s.name: hybrid.executables[s.index] for s in segments}
        return cls(executables, producers, consumers, trt_outputs, resident)

    def start(self) -> None:
        self.copies = []

    def record(self, segment: str) -> None:
        """Collect the copies the segment just run reported (its ``last_copies``)."""
        self.copies.extend(getattr(self.executables.get(segment), "last_copies", ()) or ())

    def finish(self, outputs: Dict[str, Any]) -> Dict[str, np.ndarray]:
        """Model outputs the caller owns: TensorRT outputs copied out of the runner's buffers."""
        return {n: owned(v) if n in self.trt_outputs else v for n, v in outputs.items()}

    def per_tensor(self) -> Dict[str, Dict[str, Any]]:
        """Tensor -> {producer, consumers, resident, d2h, h2d, bytes} of the last run."""
        rows: Dict[str, Dict[str, Any]] = {}
        for t in sorted(set(self.resident) | {c.tensor for c in self.copies}):
            rows[t] = {"producer": self.producers.get(t, "input"),
                       "consumers": ", ".join(self.consumers.get(t, ())) or "output",
                       "resident": t in self.resident, "d2h": 0, "h2d": 0, "bytes": 0}
        for c in self.copies:
            row = rows[c.tensor]
            row[c.kind] += 1
            row["bytes"] += c.nbytes
        return rows


def copy_frame(per_tensor: Mapping[str, Mapping[str, Any]], runs: int = 1) -> Any:
    """DataFrame of copies per boundary tensor (counts and bytes per run)."""
    import pandas as pd

    rows = []
    for tensor, row in per_tensor.items():
        rows.append({"tensor": tensor, "producer": row["producer"], "consumers": row["consumers"],
                     "resident": bool(row["resident"]), "d2h": row["d2h"] / max(runs, 1),
                     "h2d": row["h2d"] / max(runs, 1), "bytes": row["bytes"] / max(runs, 1)})
    return pd.DataFrame(rows, columns=COPY_COLUMNS)
