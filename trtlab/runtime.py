"""The hybrid model: segments run in order, each on the executor that can run it here.

A TensorRT segment runs on TensorRT when :func:`trtlab.trt.info` says engines run on this
machine; otherwise the same ONNX runs on ONNX Runtime and every table and repr says
``executor = onnxruntime``. Fallback segments run on ONNX Runtime. Between consecutive
TensorRT segments on a GPU, tensors stay on the device.

Examples
--------
>>> hybrid = trtlab.build(part)                                         # doctest: +SKIP
>>> outputs = hybrid.run({"input": x})                                  # doctest: +SKIP
>>> hybrid.executors                                                    # doctest: +SKIP
>>> from polygraphy.comparator import Comparator                        # doctest: +SKIP
>>> Comparator.run([HybridRunner(hybrid)], data_loader=[{"input": x}])  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import html
import logging
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import onnx

from .backends import TensorRTSegment
from .feeds import validate_feeds

log = logging.getLogger(__name__)

__all__ = ["HybridModel", "HybridRunner"]


class HybridModel:
    """A partition whose segments are compiled: run it, time it, inspect what ran where.

    Made by :func:`trtlab.build`.

    Attributes
    ----------
    partition : Partition
        The partition that was built (after any build-failure fallback).
    segment_models : dict
        Segment index -> the ``onnx.ModelProto`` actually built and run (after FP16/INT8).
    precisions : dict
        Segment index -> precision.
    last_timings : dict
        Segment name -> seconds, for the last :meth:`run`.
    last_total : float
        Seconds of the last :meth:`run`, from the call to the return (validation and copies
        between segments included).
    moved : list of (node, reason)
        Nodes moved to fallback because TensorRT could not build them.
    """

    def __init__(self, partition: Any, executables: Mapping[int, Any],
                 segment_models: Mapping[int, onnx.ModelProto], precisions: Mapping[int, str], *,
                 cache: Any = None, dynamic_batch: str = "single",
                 moved: Sequence[Tuple[str, str]] = ()) -> None:
        self.partition = partition
        self.model = partition.model
        self.executables = dict(executables)
        self.segment_models = dict(segment_models)
        self.precisions = dict(precisions)
        self.cache = cache
        self.dynamic_batch = dynamic_batch
        self.moved = list(moved)
        self.last_timings: Dict[str, float] = {}
        self.last_total = 0.0
        self._specs = list(self.model.inputs)
        self._checks = [(t.name, t.dtype, tuple(t.shape) if t.shape is not None else None) for t in self._specs]
        self._output_names = [t.name for t in self.model.outputs]
        self._constant_outputs = self._outputs_no_segment_computes()
        self._check_bindable()
        self._plan = self._make_plan()

    def _check_bindable(self) -> None:
        """Tensors crossing into or out of ONNX Runtime segments must have NumPy-bindable dtypes."""
        from .feeds import check_ort_bindable

        names = [t for s in self.partition.segments if str(self._executor(s.index)).startswith("onnxruntime")
                 for t in (*s.inputs, *s.outputs)]
        check_ort_bindable([self.model.tensor(t) for t in dict.fromkeys(names)], what=f"model {self.model.name!r}")

    def _outputs_no_segment_computes(self) -> Dict[str, np.ndarray]:
        """Graph outputs that are constants (initializers, Constant outputs) no segment produces."""
        produced = {t for s in self.partition.segments for t in s.outputs} | {t.name for t in self._specs}
        out: Dict[str, np.ndarray] = {}
        for name in self._output_names:
            if name not in produced:
                value = self.model.constant_value(name)
                if value is not None:
                    out[name] = value
        return out

    # -- structure -----------------------------------------------------------------------------
    @property
    def segments(self) -> List[Any]:
        return list(self.partition.segments)

    @property
    def inputs(self) -> List[Any]:
        return list(self._specs)

    @property
    def outputs(self) -> List[Any]:
        return list(self.model.outputs)

    def _executor(self, index: int) -> str:
        exe = self.executables[index]
        return getattr(exe, "executor", type(exe).__name__)

    def _make_plan(self) -> List[Tuple[str, Any, Tuple[str, ...], bool]]:
        """(name, callable, input names, device_outputs) per segment in execution order."""
        gpu = {s.index for s in self.segments
               if isinstance(self.executables[s.index], TensorRTSegment) and self._executor(s.index) == "tensorrt"}
        consumers: Dict[str, List[int]] = {}
        for s in self.segments:
            for t in s.inputs:
                consumers.setdefault(t, []).append(s.index)
        outputs = set(self._output_names)
        plan = []
        for s in self.segments:
            exe = self.executables[s.index]
            on_device = s.index in gpu and all(
                t not in outputs and all(c in gpu for c in consumers.get(t, ())) for t in s.outputs)
            call = functools.partial(exe.run_device, host=False) if on_device else exe
            plan.append((s.name, call, tuple(s.inputs), on_device))
        return plan

    @property
    def executors(self) -> Any:
        """DataFrame: segment, backend, executor, precision, nodes, reason."""
        import pandas as pd

        rows = []
        for s in self.segments:
            exe = self.executables[s.index]
            rows.append({"segment": s.name, "backend": s.backend, "executor": self._executor(s.index),
                         "precision": self.precisions.get(s.index, "fp32"), "nodes": len(s.nodes),
                         "reason": getattr(exe, "reason", "")})
        return pd.DataFrame(rows, columns=["segment", "backend", "executor", "precision", "nodes", "reason"])

    # -- engines -------------------------------------------------------------------------------
    def _trt_segments(self) -> List[Tuple[Any, TensorRTSegment]]:
        return [(s, self.executables[s.index]) for s in self.segments
                if isinstance(self.executables[s.index], TensorRTSegment)]

    @property
    def engines(self) -> Dict[int, bytes]:
        """Segment index -> serialized engine (the most recent one of each TensorRT segment)."""
        return {s.index: exe.engines[-1].data for s, exe in self._trt_segments() if exe.engines}

    @property
    def engine_table(self) -> Any:
        """DataFrame, one row per engine: segment, profile, bytes, cache status, build seconds."""
        import pandas as pd

        rows = []
        for s, exe in self._trt_segments():
            for e in exe.engines:
                rows.append({"segment": s.name, "profile": _profile_text(e.profile), "bytes": e.nbytes,
                             "cache": e.status, "build_s": e.build_seconds, "rebuilds": exe.rebuilds})
        return pd.DataFrame(rows, columns=["segment", "profile", "bytes", "cache", "build_s", "rebuilds"])

    @property
    def engine_count(self) -> int:
        return sum(len(exe.engines) for _, exe in self._trt_segments())

    @property
    def engine_bytes(self) -> int:
        return sum(e.nbytes for _, exe in self._trt_segments() for e in exe.engines)

    def cache_report(self) -> Any:
        """DataFrame explaining each engine's cache key fields and whether it was a hit."""
        import pandas as pd

        rows = []
        for s, exe in self._trt_segments():
            for e in exe.engines:
                fields = e.key.fields() if e.key is not None else {}
                rows.append({"segment": s.name, "status": e.status,
                             "key": e.key.digest[:16] if e.key is not None else None,
                             "onnx_sha256": fields.get("onnx_sha256", "")[:16],
                             "precision": fields.get("precision", exe.settings.precision),
                             "settings": fields.get("settings"), "profiles": fields.get("profiles"),
                             "flavor": fields.get("flavor"), "trt_version": fields.get("trt_version"),
                             "target": fields.get("target"), "bytes": e.nbytes, "path": e.path})
        cols = ["segment", "status", "key", "onnx_sha256", "precision", "settings", "profiles", "flavor",
                "trt_version", "target", "bytes", "path"]
        return pd.DataFrame(rows, columns=cols)

    # -- running -------------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, Any]) -> Dict[str, np.ndarray]:
        """Run the segments in order and return the model outputs by name.

        Raises
        ------
        InputError
            Missing or extra inputs, wrong dtype, rank or shape.
        """
        start = time.perf_counter()
        if self._feeds_ok(feeds):
            env: Dict[str, Any] = dict(feeds)
        else:
            env = validate_feeds(self._specs, feeds, what=f"model {self.model.name!r}")
        timings: Dict[str, float] = {}
        clock = time.perf_counter
        for name, call, inputs, _ in self._plan:
            seg_feeds = {t: env[t] for t in inputs}
            t0 = clock()
            env.update(call(seg_feeds))
            timings[name] = clock() - t0
        if self._constant_outputs:
            env.update(self._constant_outputs)
        out = {n: v if type(v) is np.ndarray else _host(v) for n, v in ((n, env[n]) for n in self._output_names)}
        self.last_timings = timings
        self.last_total = time.perf_counter() - start
        return out

    __call__ = run

    def _feeds_ok(self, feeds: Any) -> bool:
        """Quick check of well-formed feeds; anything unusual goes to the full validation."""
        if type(feeds) is not dict or len(feeds) != len(self._checks):
            return False
        bound: Dict[str, int] = {}
        for name, dtype, shape in self._checks:
            value = feeds.get(name)
            if type(value) is not np.ndarray or (dtype is not None and value.dtype != dtype):
                return False
            if shape is None:
                continue
            got = value.shape
            if len(got) != len(shape):
                return False
            for g, d in zip(got, shape):
                if d.__class__ is int:
                    if g != d:
                        return False
                elif d is not None:
                    if bound.setdefault(d, g) != g:
                        return False
        return True

    # -- display -------------------------------------------------------------------------------
    def __repr__(self) -> str:
        parts = ", ".join(f"{s.name}:{self._executor(s.index)}/{self.precisions.get(s.index, 'fp32')}"
                          for s in self.segments)
        return (f"HybridModel({self.model.name!r}, {len(self.segments)} segments [{parts}], "
                f"{self.engine_count} engines, {self.engine_bytes} bytes)")

    def _repr_html_(self) -> str:
        head = html.escape(repr(self))
        return f"<p><code>{head}</code></p>" + self.executors.to_html(index=False)

    def close(self) -> None:
        """Release TensorRT runners and ONNX Runtime sessions."""
        for _, exe in self._trt_segments():
            exe.close()


def _host(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "numpy"):
        return value.numpy()
    if value is None or isinstance(value, list):
        return value  # sequence and optional outputs, as ONNX Runtime returns them
    return np.asarray(value)


def _profile_text(profile: Any) -> str:
    if not profile:
        return "static"
    return "; ".join(f"{n}: {list(lo)}..{list(hi)} (opt {list(opt)})" for n, (lo, opt, hi) in profile)


def input_metadata(specs: Sequence[Any]) -> Any:
    """Polygraphy ``TensorMetadata`` for :class:`~trtlab.model.TensorInfo` specs (dynamic dims: -1)."""
    from polygraphy.common import TensorMetadata
    from polygraphy.datatype import DataType

    meta = TensorMetadata()
    for spec in specs:
        dtype = DataType.from_dtype(spec.dtype) if spec.dtype is not None else None
        shape = None if spec.shape is None else [d if isinstance(d, int) else -1 for d in spec.shape]
        meta.add(spec.name, dtype=dtype, shape=shape)
    return meta


@functools.lru_cache(maxsize=1)
def _runner_class() -> type:
    from collections import OrderedDict

    from polygraphy.backend.base import BaseRunner

    class _HybridRunner(BaseRunner):
        """Polygraphy runner over a :class:`HybridModel`; ``Comparator.run`` accepts it."""

        def __init__(self, hybrid: HybridModel, name: Optional[str] = None) -> None:
            super().__init__(name=name, prefix="hybrid-runner")
            self.hybrid = hybrid

        def activate_impl(self) -> None:
            pass

        def get_input_metadata_impl(self) -> Any:
            return input_metadata(self.hybrid.inputs)

        def infer_impl(self, feed_dict: Mapping[str, Any]) -> Any:
            start = time.perf_counter()
            out = self.hybrid.run(feed_dict)
            self.inference_time = time.perf_counter() - start
            return OrderedDict((n, out[n]) for n in self.hybrid._output_names)

        def deactivate_impl(self) -> None:
            pass

    return _HybridRunner


def HybridRunner(hybrid: HybridModel, name: Optional[str] = None) -> Any:
    """A Polygraphy ``BaseRunner`` running ``hybrid``, for ``Comparator.run``.

    Polygraphy is imported on first use, so ``import trtlab`` does not need it.
    """
    return _runner_class()(hybrid, name)

