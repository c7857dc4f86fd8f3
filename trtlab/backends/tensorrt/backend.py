"""The TensorRT backend: support from TensorRT's parser, engines per segment, execution.

A TensorRT segment runs on TensorRT when this machine can run its engine; otherwise it runs the
same ONNX on ONNX Runtime and says so (``executor == "onnxruntime"``).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

import onnx

from trtlab.backends.base import DYNAMIC_BATCH_MODES, CompileSettings, Profile, Shape
from trtlab.backends.onnxruntime.backend import _ort_session
from trtlab.backends.onnxruntime.session import fast_call
from trtlab.backends.tensorrt import device
from trtlab.backends.tensorrt.engine import EngineBuilder, EngineRecord, build_engine, cache_key
from trtlab.backends.tensorrt.profiles import _dynamic_inputs, _opt_profile, _static_profile, _widen
from trtlab.errors import BuildError

log = logging.getLogger(__name__)


class TensorRTSegment:
    """A compiled TensorRT segment: its engines, and the executor that runs it here.

    ``executor`` is ``"tensorrt"`` when :func:`trtlab.backends.tensorrt.flavor.info` says engines run on this
    machine, else ``"onnxruntime"`` (the same ONNX the engine was built from runs on ONNX
    Runtime; ``reason`` says why).
    """

    def __init__(self, model: onnx.ModelProto, settings: CompileSettings, builder: EngineBuilder) -> None:
        from trtlab.backends.tensorrt import flavor as trt
        from trtlab.backends.onnxruntime.session import model_bytes

        if settings.dynamic_batch not in DYNAMIC_BATCH_MODES:
            raise BuildError(f"dynamic_batch={settings.dynamic_batch!r} is not a mode trtlab knows; "
                             f"use one of {', '.join(DYNAMIC_BATCH_MODES)}.")
        self.model = model
        self.settings = settings
        self.name = settings.segment
        self.onnx_bytes = model_bytes(model)
        self._builder = builder
        self._dynamic = _dynamic_inputs(model)
        self._outputs = [o.name for o in model.graph.output]
        self.engines: List[EngineRecord] = []
        self.rebuilds = 0
        self._seen: Dict[Tuple[Shape, ...], EngineRecord] = {}
        info = trt.info()
        self.executor = "tensorrt" if info.run else "onnxruntime"
        self.reason = info.reason
        self._session: Any = None
        if not info.run:
            self._session, self.executor = _ort_session(model, settings)
            self._call = fast_call(self._session)
        self._runners: Dict[int, Any] = {}
        #: host/device copies of the last run (:mod:`trtlab.backends.tensorrt.device`)
        self.last_copies: List[device.Copy] = []
        if settings.eager and (not self._dynamic or settings.profile is not None):
            first = settings.profile
            if first is not None and settings.dynamic_batch == "per_shape":
                first = _opt_profile(first)
            self._add_engine(first)

    def __repr__(self) -> str:
        return (f"TensorRTSegment({self.name!r}, precision={self.settings.precision}, "
                f"executor={self.executor}, engines={len(self.engines)})")

    # -- engines -------------------------------------------------------------------------------
    def _add_engine(self, profile: Optional[Profile]) -> EngineRecord:
        start = time.perf_counter()
        cache = self.settings.cache

        def make() -> bytes:
            return bytes(self._builder(self.onnx_bytes, profile, self.settings))

        if cache is None:
            data, status, key, path = make(), "disabled", None, None
        else:
            key = cache_key(self.onnx_bytes, self.settings, profile)
            data, lookup = cache.get_or_build(key, make)
            status, path = lookup.status, str(lookup.path)
        record = EngineRecord(self.name, profile, data, status, key, path, time.perf_counter() - start)
        log.info("segment %s: engine %s (%d bytes, cache %s)", self.name, profile, len(data), status)
        if self.settings.dynamic_batch == "single" and self.engines:
            self.rebuilds += 1
            self.engines = [record]
            self._seen.clear()
            self.close()  # the dropped engines' runners free their device memory
        else:
            self.engines.append(record)
        return record

    def engine_for(self, shapes: Mapping[str, Shape]) -> EngineRecord:
        """The engine that runs inputs of these shapes, building or widening one if needed."""
        sig = tuple(tuple(shapes[n]) for n in self._dynamic)
        hit = self._seen.get(sig)
        if hit is not None:
            return hit
        record = next((e for e in self.engines if e.covers(shapes)), None)
        if record is None:
            if self.settings.dynamic_batch == "per_shape" or not self.engines:
                base = self.settings.profile if self.settings.dynamic_batch == "single" else None
                profile = _widen(base, shapes) if base is not None else _static_profile(shapes, self._dynamic)
            else:
                profile = _widen(self.engines[0].profile or (), shapes)
            record = self._add_engine(profile)
        self._seen[sig] = record
        return record

    # -- execution -----------------------------------------------------------------------------
    def __call__(self, feeds: Mapping[str, Any]) -> Dict[str, Any]:
        if self._dynamic:
            record = self.engine_for({n: tuple(feeds[n].shape) for n in self._dynamic})
        elif self.engines:
            record = self.engines[0]
        else:
            record = self._add_engine(None)
        if self.executor == "tensorrt":
            # TrtRunner reuses its host output buffers: hand out arrays the caller owns
            return {k: device.owned(v) for k, v in self.run_device(feeds, record, host=True).items()}
        return self._run_ort(feeds)

    def _run_ort(self, feeds: Mapping[str, Any]) -> Dict[str, Any]:
        if self._session is None:
            self._session, self.executor = _ort_session(self.model, self.settings)
            self._call = fast_call(self._session)
        self.last_copies = []
        feeds = {k: device.to_host(v) for k, v in feeds.items()}
        return dict(zip(self._outputs, self._call(self._outputs, feeds)))

    def run_device(self, feeds: Mapping[str, Any], record: Optional[EngineRecord] = None, *,
                   host: bool = False, to_host: Tuple[str, ...] = ()) -> Dict[str, Any]:
        """Run on TensorRT; with ``host=False`` outputs stay on the device (Polygraphy DeviceViews)
        except those named in ``to_host``, copied to host arrays the caller owns."""
        if record is None:
            record = self.engine_for({n: tuple(feeds[n].shape) for n in self._dynamic}) \
                if self._dynamic else (self.engines[0] if self.engines else self._add_engine(None))
        # -- device residency (trtlab.backends.tensorrt.device) --
        if self.executor != "tensorrt":
            return self._run_ort(feeds)
        runner = self._runners.get(id(record))
        if runner is None:
            refused = self._refused_here(record)
            if refused:
                self.executor, self.reason = "onnxruntime", refused
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


class TensorRTBackend:
    """TensorRT engines through Polygraphy's loaders and the engine cache.

    Parameters
    ----------
    builder
        ``(onnx_bytes, profile, settings) -> engine bytes``; default
        :func:`trtlab.backends.tensorrt.engine.build_engine`. Tests and notebooks pass their own to study failures.
    """

    name = "tensorrt"

    def __init__(self, builder: Optional[EngineBuilder] = None) -> None:
        self.builder = build_engine if builder is None else builder

    def __repr__(self) -> str:
        return "TensorRTBackend()"

    def check_support(self, model: Any) -> Any:
        from trtlab.backends.tensorrt.support import check_support

        return check_support(model)

    def compile(self, segment_model: onnx.ModelProto, settings: CompileSettings) -> TensorRTSegment:
        return TensorRTSegment(segment_model, settings, self.builder)
