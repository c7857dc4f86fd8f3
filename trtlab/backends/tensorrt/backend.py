"""The TensorRT backend: support from TensorRT's parser, engines per segment, execution.

Engines are built in worker processes (:mod:`trtlab.backends.tensorrt.workers`): a crash or
hang inside TensorRT is a recorded :class:`~trtlab.errors.BuildError`, never a dead kernel.
A TensorRT segment runs on TensorRT when this machine can run its engine; otherwise it runs the
same ONNX on ONNX Runtime and says so (``executor == "onnxruntime"``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import onnx

from trtlab.backends.base import DYNAMIC_BATCH_MODES, CompiledSegment, CompileSettings, Profile, Shape
from trtlab.backends.onnxruntime.backend import _ort_session, session_notes
from trtlab.backends.onnxruntime.session import fast_call
from trtlab.backends.tensorrt import device
from trtlab.backends.tensorrt.engine import (EngineBuilder, EngineRecord, build_engine, build_job, cache_key,
                                             timing_cache_path)
from trtlab.backends.tensorrt.profiles import _dynamic_inputs, _opt_profile, _static_profile, _widen
from trtlab.backends.tensorrt.workers import BuildPool, default_pool, picklable
from trtlab.errors import BuildError

log = logging.getLogger(__name__)


def _values_of(feeds: Mapping[str, Any], names: Sequence[str]) -> Dict[str, Shape]:
    out = {}
    for n in names:
        v = feeds.get(n)
        if v is not None and isinstance(v, np.ndarray) and v.dtype.kind in "iu" and v.ndim <= 1:
            out[n] = tuple(int(x) for x in v.reshape(-1))
    return out


class TensorRTSegment(CompiledSegment):
    """A compiled TensorRT segment: its engines, and the executor that runs it here.

    ``executor`` is ``"tensorrt"`` when :func:`trtlab.backends.tensorrt.flavor.info` says engines
    run on this machine, else the ONNX Runtime executor that runs the same ONNX (``reason`` says
    why).

    ``model`` is the segment's ONNX as given, light when the weights stay with the model
    (:mod:`trtlab.weights`); :attr:`onnx_bytes` serializes it with every weight, when a build
    needs it, and is not kept.
    """

    def __init__(self, model: onnx.ModelProto, settings: CompileSettings, builder: EngineBuilder,
                 pool: Optional[BuildPool] = None, *, build_now: bool = True) -> None:
        from trtlab.backends.tensorrt import flavor as trt

        if settings.dynamic_batch not in DYNAMIC_BATCH_MODES:
            raise BuildError(f"dynamic_batch={settings.dynamic_batch!r} is not a mode trtlab knows; "
                             f"use one of {', '.join(DYNAMIC_BATCH_MODES)}.")
        self.model = model
        self.settings = settings
        self.name = settings.segment
        self.profile = settings.profile
        self.values = settings.values
        self._builder = builder
        self._pool = pool
        self._dynamic = _dynamic_inputs(model)
        self._value_inputs = [n for n, _ in (settings.values or ())]
        self._outputs = [o.name for o in model.graph.output]
        self.engines: List[EngineRecord] = []
        self.rebuilds = 0
        self._seen: Dict[Tuple[Any, ...], EngineRecord] = {}
        info = trt.info()
        self.runs_on_tensorrt = bool(info.run)
        self.reason = info.reason
        self._session: Any = None
        self._ort_label = "onnxruntime"
        self.notes: List[str] = []
        if not info.run:
            self._session, self._ort_label = _ort_session(model, settings)
            self._call = fast_call(self._session)
            self.notes = session_notes(settings)
            self.reason = "; ".join([self.reason] + self.notes) if self.reason else "; ".join(self.notes)
        self._runners: Dict[int, Any] = {}
        #: host/device copies of the last run (:mod:`trtlab.backends.tensorrt.device`)
        self.last_copies: List[device.Copy] = []
        self._pending: Any = None
        if build_now and settings.eager and (not self._dynamic or settings.profile is not None):
            self.finish(self.start())

    @property
    def onnx_bytes(self) -> bytes:
        """The segment's serialized ONNX with every weight embedded (made on each call, not kept)."""
        from trtlab.backends.onnxruntime.session import model_bytes

        return model_bytes(self.settings.full_model(self.model))

    @property
    def executor(self) -> str:  # type: ignore[override]
        """``"tensorrt"`` where engines run here, else the ONNX Runtime executor that runs the segment."""
        return "tensorrt" if self.runs_on_tensorrt else self._ort_label

    def __repr__(self) -> str:
        return (f"TensorRTSegment({self.name!r}, precision={self.settings.precision}, "
                f"executor={self.executor}, engines={len(self.engines)})")

    # -- engines -------------------------------------------------------------------------------
    def _first_profile(self) -> Optional[Profile]:
        first = self.settings.profile
        if first is not None and self.settings.dynamic_batch == "per_shape":
            first = _opt_profile(first)
        return first

    def start(self, profile: Any = "first", values: Any = "first") -> Any:
        """Look the engine up in the cache or start building it in a worker; :meth:`finish` ends it."""
        profile = self._first_profile() if profile == "first" else profile
        values = self.settings.values if values == "first" else values
        settings = dataclasses.replace(self.settings, values=values)
        cache = settings.cache
        onnx_bytes = self.onnx_bytes
        key = cache_key(onnx_bytes, settings, profile) if cache is not None else None
        lookup = cache.get(key) if cache is not None else None
        job = {"profile": profile, "values": values, "key": key, "lookup": lookup, "t0": time.perf_counter()}
        if lookup is not None and lookup.status == "hit" and lookup.data is not None:
            job["data"] = lookup.data
            return job
        timing = timing_cache_path(settings)
        worker_settings = settings.for_worker()
        import multiprocessing

        if self._pool is not None and picklable(self._builder) and not multiprocessing.current_process().daemon:
            try:
                job["future"] = self._pool.submit(build_job, self._builder, onnx_bytes, profile,
                                                  worker_settings, timing)
                return job
            except OSError as exc:  # no room for a worker's pipes or semaphores (disk or /dev/shm full)
                log.warning("segment %s: no build worker could start (%s); building in this process, "
                            "so a TensorRT crash would end it", self.name, exc)
        job["call"] = (self._builder, onnx_bytes, profile, worker_settings, timing)
        return job

    def finish(self, job: Dict[str, Any]) -> EngineRecord:
        """The engine of a started build (raises :class:`BuildError` when it failed or crashed)."""
        shape_tensors = None
        if "data" in job:
            data = job["data"]
        elif "future" in job:
            data, shape_tensors = self._pool.result(job["future"], self.name)  # type: ignore[union-attr]
        else:
            data, shape_tensors = build_job(*job.pop("call"))
        values = job["values"]
        if shape_tensors is not None:
            # only shape-tensor values bind an engine; other small integer inputs are data
            values = tuple((n, r) for n, r in values or () if n in set(shape_tensors)) or None
            self._value_inputs = [n for n in self._value_inputs if n in set(shape_tensors)]
        cache, key, lookup = self.settings.cache, job["key"], job["lookup"]
        status, path = "disabled", None
        if cache is not None:
            status, path = lookup.status, str(lookup.path)
            if status != "hit":
                cache.keep(key, data)
        record = EngineRecord(self.name, job["profile"], data, status, key, path,
                              time.perf_counter() - job["t0"], values)
        log.info("segment %s: engine %s (%d bytes, cache %s)", self.name, job["profile"], len(data), status)
        if self.settings.dynamic_batch == "single" and self.engines:
            self.rebuilds += 1
            for runner in self._runners.values():
                runner.deactivate()
            self.engines = [record]
            self._seen.clear()
            self.close()  # the dropped engines' runners free their device memory
        else:
            self.engines.append(record)
        return record

    def _add_engine(self, profile: Optional[Profile], values: Optional[Profile] = None) -> EngineRecord:
        return self.finish(self.start(profile, values))

    def engine_for(self, shapes: Mapping[str, Shape], values: Optional[Mapping[str, Shape]] = None) -> EngineRecord:
        """The engine that runs inputs of these shapes, building or widening one if needed."""
        values = values or {}
        sig = tuple(tuple(shapes[n]) for n in self._dynamic) + tuple(values.get(n, ()) for n in self._value_inputs)
        hit = self._seen.get(sig)
        if hit is not None:
            return hit
        record = next((e for e in self.engines if e.covers(shapes, values)), None)
        if record is None:
            new_values = tuple(sorted((n, (v, v, v)) for n, v in values.items())) or None
            if self.settings.dynamic_batch == "per_shape" or not self.engines:
                base = self.settings.profile if self.settings.dynamic_batch == "single" else None
                profile = _widen(base, shapes) if base is not None else _static_profile(shapes, self._dynamic)
            else:
                profile = _widen(self.engines[0].profile or (), shapes)
                log.warning("segment %s: inputs %s lie outside its engine's profile; rebuilding the engine "
                            "wider (pass feeds= or shapes= covering every size to build() to avoid it)",
                            self.name, {n: list(s) for n, s in shapes.items()})
            record = self._add_engine(profile or None, new_values if self._value_inputs else None)
        self._seen[sig] = record
        return record

    # -- execution -----------------------------------------------------------------------------
    def _record(self, feeds: Mapping[str, Any]) -> EngineRecord:
        if self._dynamic or self._value_inputs:
            return self.engine_for({n: tuple(feeds[n].shape) for n in self._dynamic},
                                   _values_of(feeds, self._value_inputs))
        return self.engines[0] if self.engines else self._add_engine(None)

    def __call__(self, feeds: Mapping[str, Any]) -> Dict[str, Any]:
        record = self._record(feeds)
        if self.runs_on_tensorrt:
            # TrtRunner reuses its host output buffers: hand out arrays the caller owns
            return {k: device.owned(v) for k, v in self.run_device(feeds, record, host=True).items()}
        return self._run_ort(feeds)

    def _run_ort(self, feeds: Mapping[str, Any]) -> Dict[str, Any]:
        if self._session is None:
            self._session, self._ort_label = _ort_session(self.model, self.settings)
            self._call = fast_call(self._session)
        self.last_copies = []
        feeds = {k: device.to_host(v) for k, v in feeds.items()}
        return dict(zip(self._outputs, self._call(self._outputs, feeds)))

    def run_device(self, feeds: Mapping[str, Any], record: Optional[EngineRecord] = None, *,
                   host: bool = False, to_host: Tuple[str, ...] = ()) -> Dict[str, Any]:
        """Run on TensorRT; with ``host=False`` outputs stay on the device (Polygraphy DeviceViews)
        except those named in ``to_host``, copied to host arrays the caller owns."""
        if record is None:
            record = self._record(feeds)
        # -- device residency (trtlab.backends.tensorrt.device) --
        if not self.runs_on_tensorrt:
            return self._run_ort(feeds)
        runner = self._runners.get(id(record))
        if runner is None:
            refused = self._refused_here(record)
            if refused:
                self.runs_on_tensorrt, self.reason = False, refused
                log.warning("segment %s: %s", self.name, refused)
                return self._run_ort(feeds)
            runner = device.make_runner(record.data, self.name, self.settings.cache)
            self._runners[id(record)] = runner
        ready, copies = device.prepare_feeds(runner, feeds, self.name)
        out = dict(runner.infer(ready, copy_outputs_to_host=host))
        out, out_copies = device.outputs_to_host(out, self.name, () if host else to_host, all_host=host)
        self.last_copies = copies + out_copies
        return out

    def _refused_here(self, record: EngineRecord) -> str:
        """Why this machine's runtime refuses the engine (``Runtime.get_engine_validity``), or ``""``."""
        from trtlab.backends.tensorrt import flavor as trt

        validity, diagnostics = trt.engine_validity(record.data)
        if validity != "INVALID":
            return ""
        return (f"{trt.flavor()} reports the engine invalid on this GPU ({diagnostics or 'no diagnostics'}); "
                "the segment runs on ONNX Runtime")

    def close(self) -> None:
        """Release TensorRT runners (device memory) and save the TensorRT-RTX runtime cache."""
        runners, self._runners = list(self._runners.values()), {}
        for runner in runners:
            device.close_runner(runner)


def _wait_with_bars(segs: Sequence[Any], started: Sequence[Any]) -> None:
    """One progress bar per segment build running in the pool, closed as each one ends."""
    from concurrent.futures import FIRST_COMPLETED, wait

    from trtlab._progress import progress as progress_bar

    running = {job["future"]: seg for seg, job in zip(segs, started)
               if job is not None and "future" in job and seg.settings.progress}
    if len(running) < 1:
        return
    bars = {fut: progress_bar(total=1, desc=f"build {seg.name}", position=i, unit="engine")
            for i, (fut, seg) in enumerate(running.items())}
    pending = set(bars)
    timeouts = [seg._pool.timeout for seg in running.values() if seg._pool is not None]
    timeout = max(timeouts) if timeouts and None not in timeouts else None
    try:
        while pending:
            done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
            if not done:
                break  # a hung build: finish() reports it
            for fut in done:
                bars[fut].update(1)
    finally:
        for bar in bars.values():
            bar.close()


class TensorRTBackend:
    """TensorRT engines through Polygraphy's loaders, the engine cache and a pool of build workers.

    Parameters
    ----------
    builder
        ``(onnx_bytes, profile, settings) -> engine bytes``; default
        :func:`trtlab.backends.tensorrt.engine.build_engine`. A module-level function runs in the
        build workers; one that cannot be pickled (a closure) runs in this process.
    pool
        The :class:`~trtlab.backends.tensorrt.workers.BuildPool`; default: the process-wide pool
        sized by ``settings.workers`` (one worker per core).
    """

    name = "tensorrt"
    #: takes light segment models (:mod:`trtlab.weights`): weights are embedded only for a build
    weights_by_reference = True

    def __init__(self, builder: Optional[EngineBuilder] = None, pool: Optional[BuildPool] = None) -> None:
        self.builder = build_engine if builder is None else builder
        self.pool = pool

    def __repr__(self) -> str:
        return "TensorRTBackend()"

    def _pool_for(self, settings: CompileSettings) -> BuildPool:
        return self.pool if self.pool is not None else default_pool(settings.workers, settings.timeout)

    def check_support(self, model: Any) -> Any:
        from trtlab.backends.tensorrt.support import check_support

        return check_support(model)

    def compile(self, segment_model: onnx.ModelProto, settings: CompileSettings) -> TensorRTSegment:
        return TensorRTSegment(segment_model, settings, self.builder, self._pool_for(settings))

    def compile_many(self, jobs: Sequence[Tuple[onnx.ModelProto, CompileSettings]]) -> List[Any]:
        """Compile segments with their engine builds running in parallel in the worker pool."""
        segs: List[Any] = []
        started: List[Any] = []
        for proto, settings in jobs:
            try:
                seg = TensorRTSegment(proto, settings, self.builder, self._pool_for(settings), build_now=False)
            except BuildError as exc:
                segs.append(exc)
                started.append(None)
                continue
            segs.append(seg)
            eager = settings.eager and (not seg._dynamic or settings.profile is not None)
            started.append(seg.start() if eager else None)
        _wait_with_bars(segs, started)
        out: List[Any] = []
        for seg, job in zip(segs, started):
            if job is not None:
                try:
                    seg.finish(job)
                except BuildError as exc:
                    out.append(exc)
                    continue
            out.append(seg)
        return out

    def try_many(self, subs: Sequence[onnx.ModelProto], profiles: Sequence[Optional[Profile]],
                 settings: CompileSettings) -> List[Optional[str]]:
        """Build candidate sub-models in parallel (no cache); ``None`` for each that builds, else the error."""
        from trtlab.backends.onnxruntime.session import model_bytes

        worker_settings = settings.for_worker()
        pool = self._pool_for(settings)
        if not picklable(self.builder):
            results: List[Any] = []
            for sub, prof in zip(subs, profiles):
                try:
                    results.append(build_job(self.builder, model_bytes(sub), prof, worker_settings, None))
                except BuildError as exc:
                    results.append(exc)
        else:
            results = pool.map(build_job, [(self.builder, model_bytes(sub), prof, worker_settings, None)
                                           for sub, prof in zip(subs, profiles)], segment=settings.segment)
        return [None if not isinstance(r, BuildError) else "; ".join(getattr(r, "errors", None) or [str(r)])
                for r in results]

    def isolate(self, segment_model: onnx.ModelProto, settings: CompileSettings, error: BuildError,
                facts: Any = None, *, progress: bool = False) -> Tuple[List[Tuple[str, str]], int]:
        """The nodes of a segment TensorRT cannot build, each with the builder's error; and the builds tried.

        Candidates (prefixes of the segment, and the rest after each culprit) are typed from the
        observed shapes (``facts``, a :class:`~trtlab.backends.shapes.ShapeFacts`) and built
        in parallel in the worker pool.
        """
        from trtlab.backends.isolation import isolate
        from trtlab.backends.tensorrt.isolate import candidate_profiles

        ranges = dict(getattr(facts, "ranges", {}) or {})
        values = dict(getattr(facts, "values", {}) or {})
        values.update(dict(settings.values or ()))
        retype = getattr(facts, "retype_inputs", None)
        profile_of = candidate_profiles(segment_model, settings.profile, ranges)
        width = self._pool_for(settings).workers if picklable(self.builder) else 1

        def try_many(subs: List[onnx.ModelProto]) -> List[Optional[str]]:
            known, profiles = [], []
            for i, sub in enumerate(subs):
                if retype is not None:
                    retype(sub)
                try:
                    profiles.append(profile_of(sub))
                    known.append(i)
                except BuildError as exc:  # shapes unknown without example inputs: not testable here
                    log.debug("isolation candidate skipped: %s", exc)
            names = {i.name for sub in subs for i in sub.graph.input}
            vals = tuple(sorted((n, v) for n, v in values.items() if n in names)) or None
            results = self.try_many([subs[i] for i in known], profiles, dataclasses.replace(settings, values=vals))
            out: List[Optional[str]] = [None] * len(subs)
            for i, r in zip(known, results):
                out[i] = r
            return out

        first = "; ".join(getattr(error, "errors", None) or [str(error)])
        return isolate(segment_model, try_many, width=width, first_error=first, progress=progress)
