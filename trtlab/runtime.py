"""The hybrid model: segments run in order, each on the executor that can run it here.

A TensorRT segment runs on TensorRT when :func:`trtlab.backends.tensorrt.flavor.info` says engines
run on this machine; otherwise the same ONNX runs on ONNX Runtime and every table and repr says
``executor = onnxruntime``. Fallback segments run on ONNX Runtime. Between consecutive
TensorRT segments on a GPU, tensors stay on the device.

:class:`HybridModel` is a Polygraphy runner (``activate`` / ``infer`` / ``deactivate``, a
context manager), so ``Comparator.run`` takes it directly.

Examples
--------
>>> hybrid = trtlab.build(part, feeds={"input": x})                     # doctest: +SKIP
>>> outputs = hybrid.run({"input": x})                                  # doctest: +SKIP
>>> hybrid.executors                                                    # doctest: +SKIP
>>> from polygraphy.comparator import Comparator                        # doctest: +SKIP
>>> Comparator.run([hybrid], data_loader=[{"input": x}])                # doctest: +SKIP
"""

from __future__ import annotations

import functools
import html
import logging
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import onnx
from trtlab.backends.tensorrt.flavor import bind_polygraphy

bind_polygraphy(strict=False)  # before Polygraphy binds a TensorRT flavor of its own
from polygraphy.backend.base import BaseRunner  # noqa: E402

from trtlab.backends.base import profile_text
from trtlab.backends.tensorrt import device
from trtlab.feeds import validate_feeds

log = logging.getLogger(__name__)
_clock = time.perf_counter

__all__ = ["HybridModel", "HybridRunner", "SegmentModels"]


def _input_check(spec: Any) -> Tuple[str, Any, Optional[Tuple[Any, ...]], bool]:
    """(name, dtype, shape, every dimension known) of a model input, for ``_feeds_ok``."""
    shape = tuple(spec.shape) if spec.shape is not None else None
    static = shape is not None and all(d.__class__ is int for d in shape)
    return spec.name, spec.dtype, shape, static


class HybridModel(BaseRunner):
    """A partition whose segments are compiled: run it, time it, inspect what ran where.

    Made by :func:`trtlab.build`. A Polygraphy ``BaseRunner``: ``with hybrid: hybrid.infer(feeds)``
    and ``Comparator.run([hybrid], ...)`` work; :meth:`run` needs no activation.

    Attributes
    ----------
    partition : Partition
        The partition that runs: the one given, after any build-failure moves (its
        ``decisions`` have kind ``build_failed`` rows, its ``moved`` lists the nodes).
    segment_models : SegmentModels
        Segment index -> the ``onnx.ModelProto`` actually built and run (after FP16/INT8), made
        on access with every weight embedded (a new copy each time): the hybrid keeps light
        segment models, whose weights stay with the model (:mod:`trtlab.weights`).
    precisions : dict
        Segment index -> precision.
    last_timings : dict
        Segment name -> seconds, for the last :meth:`run` (read-only). A segment's time covers
        its call and the outputs it hands back by name.
    last_total : float
        Seconds of the last :meth:`run`, from the call to the return (validation and copies
        between segments included; read-only).
    moved : list of (node, reason)
        Nodes moved to fallback because the backend could not build them.
    facts : ShapeFacts or None
        The shapes (and shape-tensor values) the segments were built for.
    isolation_builds : int
        Builds tried while isolating build failures.
    last_copies : dict
        Boundary tensor -> host/device copies of the last :meth:`run` (producer, consumers,
        resident on the GPU, d2h, h2d, bytes); empty when no segment runs on TensorRT.
    """

    def __init__(self, partition: Any, executables: Mapping[int, Any],
                 segment_models: Mapping[int, onnx.ModelProto], precisions: Mapping[int, str], *,
                 cache: Any = None, dynamic_batch: str = "single",
                 moved: Sequence[Tuple[str, str]] = (), facts: Any = None, isolation_builds: int = 0,
                 name: Optional[str] = None, weights: Any = None) -> None:
        super().__init__(name=name or f"hybrid-{partition.model.name}")
        self._pending: Optional[Callable[[Dict[str, np.ndarray]], "HybridModel"]] = None
        if not isinstance(segment_models, SegmentModels):
            segment_models = SegmentModels(segment_models, weights)
        self._setup(partition, executables, segment_models, precisions, cache=cache,
                    dynamic_batch=dynamic_batch, moved=moved, facts=facts, isolation_builds=isolation_builds)

    @classmethod
    def deferred(cls, partition: Any, finish: Callable[[Dict[str, np.ndarray]], "HybridModel"], *,
                 cache: Any = None, dynamic_batch: str = "single") -> "HybridModel":
        """A hybrid built at its first :meth:`run`, by ``finish(first feeds)``."""
        hybrid = cls(partition, {}, {}, {}, cache=cache, dynamic_batch=dynamic_batch)
        hybrid._pending = finish
        return hybrid

    @property
    def built(self) -> bool:
        """Whether the segments are compiled (``False`` until the first run of a lazy build)."""
        return self._pending is None

    def _finish(self, feeds: Dict[str, np.ndarray]) -> None:
        log.info("building hybrid %s for the shapes of its first run", self.model.name)
        done = self._pending(feeds)  # type: ignore[misc]
        self._pending = None
        self._setup(done.partition, done.executables, done.segment_models, done.precisions, cache=done.cache,
                    dynamic_batch=done.dynamic_batch, moved=done.moved, facts=done.facts,
                    isolation_builds=done.isolation_builds)

    def _setup(self, partition: Any, executables: Mapping[int, Any],
               segment_models: Mapping[int, onnx.ModelProto], precisions: Mapping[int, str], *,
               cache: Any, dynamic_batch: str, moved: Sequence[Tuple[str, str]], facts: Any,
               isolation_builds: int) -> None:
        self.partition = partition
        self.facts = facts
        self.isolation_builds = isolation_builds
        self.model = partition.model
        self.executables = dict(executables)
        self.segment_models = segment_models if isinstance(segment_models, SegmentModels) else \
            SegmentModels(segment_models, None)
        self.precisions = dict(precisions)
        self.cache = cache
        self.dynamic_batch = dynamic_batch
        self.moved = list(moved)
        self._record = _RunRecord()
        self._specs = list(self.model.inputs)
        self._checks = [_input_check(t) for t in self._specs]
        # [(shapes, then dtypes, of the inputs in model order)] that _feeds_ok accepted last (None
        # before): one tuple, replaced whole, so that a reader sees one accepted set, never a mix
        self._accepted: List[Tuple[Any, ...]] = [(None,) * (2 * len(self._checks))]
        self._output_names = [t.name for t in self.model.outputs]
        # Graph outputs that are graph inputs: returned as copies, never the caller's own array.
        self._passthrough = [n for n in self._output_names if n in {t.name for t in self._specs}]
        self._constant_outputs = self._outputs_no_segment_computes()
        if self.executables:
            self._check_bindable()
        self._plan = self._make_plan() if self._pending is None and self.executables else []
        # -- device residency (trtlab.backends.tensorrt.device) --
        self._residency = device.Residency.of(self) if self._plan else None
        self._quick = self._quick_run() if self._residency is None else None
        self.last_copies: Dict[str, Dict[str, Any]] = {}

    def _check_bindable(self) -> None:
        """Tensors crossing into or out of ONNX Runtime segments must have NumPy-bindable dtypes."""
        from trtlab.feeds import check_ort_bindable

        names = [t for s in self.partition.segments if str(self._executor(s.index)).startswith("onnxruntime")
                 for t in (*s.inputs, *s.outputs)]
        check_ort_bindable([self.model.tensor(t) for t in dict.fromkeys(names)], what=f"model {self.model.name!r}")

    def _outputs_no_segment_computes(self) -> Dict[str, np.ndarray]:
        """Graph outputs that are constants (initializers, Constant outputs) no segment produces."""
        from trtlab.weights import base_dir, to_array

        produced = {t for s in self.partition.segments for t in s.outputs} | {t.name for t in self._specs}
        out: Dict[str, np.ndarray] = {}
        for name in self._output_names:
            if name not in produced:
                init = self.model.initializers.get(name)
                value = np.array(to_array(init, base_dir(self.model))) if init is not None else \
                    self.model.constant_value(name)
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
        exe = self.executables.get(index)
        if exe is None:
            return "not built (first run)"
        return getattr(exe, "executor", type(exe).__name__)

    def _make_plan(self) -> List[Tuple[str, Any, Tuple[str, ...], bool]]:
        """(name, callable, input names, runs on the device) per segment in execution order.

        A segment running on TensorRT keeps its outputs on the GPU; only those a later ONNX
        Runtime segment or the caller reads are copied to the host
        (:func:`trtlab.backends.tensorrt.device.host_outputs`).
        """
        gpu = {s.index for s in self.segments
               if hasattr(self.executables[s.index], "run_device") and self._executor(s.index) == "tensorrt"}
        to_host = device.host_outputs(self.segments, gpu, self._output_names)
        plan = []
        for s in self.segments:
            exe = self.executables[s.index]
            on_device = s.index in gpu
            call = functools.partial(exe.run_device, host=False, to_host=to_host[s.index]) if on_device else exe
            plan.append((s.name, call, tuple(s.inputs), on_device))
        return plan

    def _quick_run(self) -> Optional[Callable[[Any], Optional[Dict[str, Any]]]]:
        """:meth:`run`'s path for a hybrid of one segment on the host that reads exactly the model
        inputs and makes every output, or ``None`` (see :func:`_quick_maker`).

        A segment that runs in one ONNX Runtime session (``outputs_call``) is called through the
        session's ``run`` for the model's outputs directly (its failures become
        :class:`~trtlab.errors.RunError`, as the segment's own call makes them).
        """
        if len(self._plan) != 1 or self._plan[0][3] or self._constant_outputs or self._passthrough \
                or not self._checks or not self._output_names \
                or len(self._checks) + len(self._output_names) > _QUICK_MOST:
            return None
        name, call, inputs, _ = self._plan[0]
        seg = self.partition.segments[0]
        if set(inputs) != {t.name for t in self._specs} or not set(self._output_names) <= set(seg.outputs):
            return None
        from trtlab.backends.onnxruntime.session import run_error

        names = [c[0] for c in self._checks]
        outputs_call = getattr(self.executables[seg.index], "outputs_call", None)
        direct = outputs_call is not None
        self._record.segment = name
        make = _quick_maker(len(names), len(self._output_names), direct)
        return make(names, self._accepted, np.ndarray, len(names),
                    outputs_call(self._output_names) if direct else call, list(self._output_names), _clock,
                    self._record, run_error, _host)

    @property
    def executors(self) -> Any:
        """DataFrame: segment, backend, executor, precision, nodes, profile, moved, reason.

        ``profile`` is the shape profile the segment was compiled for (``static`` without dynamic
        inputs); ``moved`` lists the nodes of the segment that build-failure isolation moved there.
        """
        import pandas as pd

        forced = getattr(self.partition, "forced", {}) or {}
        rows = []
        for s in self.segments:
            exe = self.executables.get(s.index)
            moved = [n for n in s.nodes if forced.get(n, ("", ""))[0] == "build_failed"]
            reason = getattr(exe, "reason", "") if exe is not None else "builds at the first run()"
            if moved:
                reason = forced[moved[0]][1]
            rows.append({"segment": s.name, "backend": s.backend, "executor": self._executor(s.index),
                         "precision": self.precisions.get(s.index, "fp32"), "nodes": len(s.nodes),
                         "profile": profile_text(getattr(exe, "profile", None)) if exe is not None else "",
                         "moved": ", ".join(moved), "reason": reason})
        return pd.DataFrame(rows, columns=["segment", "backend", "executor", "precision", "nodes", "profile",
                                           "moved", "reason"])

    # -- engines -------------------------------------------------------------------------------
    def _trt_segments(self) -> List[Tuple[Any, Any]]:
        """Segments whose compiled form holds engines (``engines`` of EngineRecords)."""
        return [(s, self.executables[s.index]) for s in self.segments
                if s.index in self.executables and isinstance(getattr(self.executables[s.index], "engines", None), list)]

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
        quick = self._quick
        if quick is not None:  # one segment, feeds of the shapes and dtypes accepted last
            out = quick(feeds)
            if out is not None:
                return out
        start = _clock()
        if self._pending is not None:
            self._finish(validate_feeds(self._specs, feeds, what=f"model {self.model.name!r}"))
        if self._feeds_ok(feeds):
            env: Dict[str, Any] = dict(feeds)
        else:
            env = validate_feeds(self._specs, feeds, what=f"model {self.model.name!r}")
        timings: Dict[str, float] = {}
        clock = time.perf_counter
        residency = self._residency
        if residency is not None:
            residency.start()
        for name, call, inputs, _ in self._plan:
            seg_feeds = {t: env[t] for t in inputs}
            t0 = clock()
            env.update(call(seg_feeds))
            timings[name] = clock() - t0
            if residency is not None:
                residency.record(name)
        if self._constant_outputs:
            env.update(self._constant_outputs)
        out = {n: v if type(v) is np.ndarray else _host(v) for n, v in ((n, env[n]) for n in self._output_names)}
        if residency is not None:
            # TrtRunner reuses its host output buffers: hand out copies the caller owns.
            out = residency.finish(out)
            self.last_copies = residency.per_tensor()
        for name in self._passthrough:
            out[name] = np.array(out[name], copy=True)
        self._record.ran(timings, time.perf_counter() - start)
        return out

    __call__ = run

    @property
    def last_timings(self) -> Dict[str, float]:
        return self._record.timings()

    @property
    def last_total(self) -> float:
        return self._record.total()

    def _feeds_ok(self, feeds: Any) -> bool:
        """Quick check of well-formed feeds; anything unusual goes to the full validation."""
        if type(feeds) is not dict or len(feeds) != len(self._checks):
            return False
        accepted = self._accepted[0]
        if accepted and accepted[0] is not None:  # the shapes and dtypes of the feeds accepted last pass
            get = feeds.get
            for (name, _, _, _), was, dtype in zip(self._checks, accepted, accepted[len(self._checks):]):
                value = get(name)
                if type(value) is not np.ndarray or value.shape != was or value.dtype is not dtype:
                    break
            else:
                return True
        bound: Optional[Dict[str, int]] = None
        for name, dtype, shape, static in self._checks:
            value = feeds.get(name)
            if type(value) is not np.ndarray:
                return False
            if dtype is not None and value.dtype is not dtype and value.dtype != dtype:
                return False
            if static:  # every dimension known: one tuple comparison
                if value.shape != shape:
                    return False
                continue
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
                    if bound is None:
                        bound = {}
                    if bound.setdefault(d, g) != g:
                        return False
        values = [feeds[c[0]] for c in self._checks]
        self._accepted[0] = (*(v.shape for v in values), *(v.dtype for v in values))
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
        for exe in self.executables.values():
            closer = getattr(exe, "close", None)
            if closer is not None:
                closer()

    # -- Polygraphy runner ---------------------------------------------------------------------
    def activate_impl(self) -> None:
        pass

    def get_input_metadata_impl(self) -> Any:
        return input_metadata(self.inputs)

    def infer_impl(self, feed_dict: Mapping[str, Any]) -> Any:
        start = time.perf_counter()
        out = self.run(dict(feed_dict))
        self.inference_time = time.perf_counter() - start
        return OrderedDict((n, out[n]) for n in self._output_names)

    def deactivate_impl(self) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "is_active", False):
            self.deactivate()


class SegmentModels(Mapping):
    """Segment index -> the segment's ONNX as built and run, every weight embedded, made on access.

    The hybrid keeps light segment models (their weights are the model's, referenced, not
    copied: :mod:`trtlab.weights`); each lookup returns a new standalone copy, for inspection or
    saving. :meth:`light` gives the kept model itself.
    """

    def __init__(self, models: Mapping[int, onnx.ModelProto], weights: Any = None) -> None:
        self._models = dict(models)
        self._weights = weights

    def __getitem__(self, index: int) -> onnx.ModelProto:
        proto = self._models[index]
        return self._weights.full(proto) if self._weights is not None else proto

    def light(self, index: int) -> onnx.ModelProto:
        """The segment model the hybrid keeps (stubs and external references instead of weight copies)."""
        return self._models[index]

    def __contains__(self, index: object) -> bool:
        return index in self._models

    def __iter__(self) -> Iterator[int]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def __repr__(self) -> str:
        return f"SegmentModels(segments {sorted(self._models)})"


class _RunRecord:
    """What the last :meth:`HybridModel.run` took.

    The general path gives ``ran(timings, total)``; the quick path of a one-segment hybrid
    (:func:`_quick_maker`) sets ``marks`` = (start, segment start, end) only, the least it can
    do while running, and the figures are made from them when first asked for.
    """

    __slots__ = ("segment", "marks", "_timings", "_total")

    def __init__(self) -> None:
        self.segment = ""
        self.marks: Optional[Tuple[float, float, float]] = None
        self._timings: Dict[str, float] = {}
        self._total = 0.0

    def ran(self, timings: Dict[str, float], total: float) -> None:
        self.marks = None
        self._timings = timings
        self._total = total

    def _settle(self) -> None:
        marks = self.marks  # read once: a run in another thread may replace them
        if marks is not None:
            start, began, end = marks
            self._timings, self._total, self.marks = {self.segment: end - began}, end - start, None

    def timings(self) -> Dict[str, float]:
        self._settle()
        return self._timings

    def total(self) -> float:
        self._settle()
        return self._total


#: Inputs and outputs of a one-segment hybrid, at most, for the quick path of :func:`_quick_maker`.
_QUICK_MOST = 256

_QUICK_SOURCE = """
def make(inputs, accepted, array, count, call, outputs, clock, record, run_error, host):
    {input_vars} = inputs
    {output_vars} = outputs

    def quick(feeds):
        start = clock()
        if type(feeds) is not dict or len(feeds) != count:
            return None
        try:
{values}
        except KeyError:
            return None
        known = accepted[0]
        if {refused}:
            return None
        began = clock()
{call}
        record.marks = (start, began, clock())
        return out

    return quick
"""

_DIRECT_CALL = """\
        try:
            got = call(feeds)
        except Exception as exc:
            raise run_error(exc, outputs, feeds) from exc
        out = {{{outputs}}}"""

_SEGMENT_CALL = """\
        got = call(feeds)
        out = {{{outputs}}}"""


@functools.lru_cache(maxsize=None)
def _quick_maker(inputs: int, outputs: int, direct: bool) -> Callable[..., Callable[[Any], Optional[Dict[str, Any]]]]:
    """``make(inputs, accepted, ...) -> quick(feeds)``: :meth:`HybridModel.run` of a one-segment
    hybrid with ``inputs`` (>= 1) inputs and ``outputs`` outputs, made once per signature.

    ``quick(feeds)`` returns ``None`` unless ``feeds`` is a dict of exactly the model inputs
    (``inputs``, in model order) whose values are NumPy arrays of the shapes and dtypes the
    full check accepted last (``accepted[0]``: the shapes, then the dtype objects, one tuple
    that :meth:`HybridModel._feeds_ok` replaces). Then it runs the segment, marks the times in
    ``record`` and returns the outputs by name. ``direct``: ``call(feeds)`` is the session's
    ``run`` for the model's outputs (a list, in order; its failures become
    :class:`~trtlab.errors.RunError`); otherwise it is the segment's own call (a dict by name).
    Models of more than :data:`_QUICK_MOST` inputs and outputs take the general path (the
    source would take long to compile).

    The code is straight-line, one term per input and per output, generated as
    ``collections.namedtuple`` and ``dataclasses`` make their methods: right after a run of
    ONNX Runtime every Python operation costs several times what it costs in a loop of its own,
    and a loop or generator over the inputs cost 1-2% of a 0.1 ms model's run
    (``benchmarks/hybrid_vs_session.py``, silero_vad_if). The source holds positions only,
    never a name from the model.
    """
    ins = [f"v{i}" for i in range(inputs)]
    names = [f"n{i}" for i in range(inputs)]
    outs = [f"o{i}" for i in range(outputs)]
    refused = [f"type({v}) is not array" for v in ins] + [f"{v}.shape != known[{i}]" for i, v in enumerate(ins)] + \
        [f"{v}.dtype is not known[{inputs + i}]" for i, v in enumerate(ins)]
    values = (f"{o}: got[{i}]" if direct else f"{o}: host(got[{o}])" for i, o in enumerate(outs))
    source = _QUICK_SOURCE.format(
        input_vars=", ".join(names) + ",", output_vars=", ".join(outs) + ",",
        values="\n".join(f"            {v} = feeds[{n}]" for v, n in zip(ins, names)),
        refused=" or ".join(refused),
        call=(_DIRECT_CALL if direct else _SEGMENT_CALL).format(outputs=", ".join(values)))
    scope: Dict[str, Any] = {}
    exec(compile(source, f"<trtlab quick run: {inputs} inputs, {outputs} outputs>", "exec"), scope)  # noqa: S102
    return scope["make"]


def _host(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "numpy"):
        return value.numpy()
    if value is None or isinstance(value, list):
        return value  # sequence and optional outputs, as ONNX Runtime returns them
    return np.asarray(value)


def _profile_text(profile: Any) -> str:
    return profile_text(profile)


def input_metadata(specs: Sequence[Any]) -> Any:
    """Polygraphy ``TensorMetadata`` for :class:`~trtlab.model.TensorInfo` specs (dynamic dims: -1)."""
    from trtlab.backends.tensorrt.flavor import bind_polygraphy

    bind_polygraphy(strict=False)  # before Polygraphy binds a TensorRT flavor of its own
    from polygraphy.common import TensorMetadata
    from polygraphy.datatype import DataType

    meta = TensorMetadata()
    for spec in specs:
        dtype = DataType.from_dtype(spec.dtype) if spec.dtype is not None else None
        shape = None if spec.shape is None else [d if isinstance(d, int) else -1 for d in spec.shape]
        meta.add(spec.name, dtype=dtype, shape=shape)
    return meta


def HybridRunner(hybrid: HybridModel, name: Optional[str] = None) -> HybridModel:
    """The hybrid itself, as a Polygraphy runner for ``Comparator.run`` (kept for older code).

    :class:`HybridModel` is a ``BaseRunner``; ``name`` renames it.
    """
    if name is not None:
        hybrid.name = name
    return hybrid
