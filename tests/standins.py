"""Stand-ins for Polygraphy's TensorRT runner where trtlab depends on its behaviour.

The stand-in "engine" of a segment is its ONNX; the stand-in runner executes it with ONNX Runtime
and behaves like ``polygraphy.backend.trt.TrtRunner`` where it matters: output buffers (host and
device) reused from one inference to the next, shape-tensor inputs refused in device memory,
activate / deactivate. Which inputs are shape tensors follows ONNX's definition (the shape
operands of Reshape, Expand, Tile, Slice, Squeeze, Unsqueeze, ConstantOfShape), independently of
trtlab.
"""

from __future__ import annotations

import types
from collections import OrderedDict

import numpy as np
import onnx
import pytest

from trtlab.backends.onnxruntime.session import session
from trtlab.backends.tensorrt import engine as trt_engine
from trtlab.backends.tensorrt import flavor as trt

#: (op type, input position) pairs that are shape tensors in ONNX.
SHAPE_OPERANDS = {("Reshape", 1), ("Expand", 1), ("Tile", 1), ("Squeeze", 1), ("Unsqueeze", 1),
                  ("ConstantOfShape", 0), ("Slice", 1), ("Slice", 2), ("Slice", 3), ("Slice", 4)}


# -- stand-ins ----------------------------------------------------------------------------------
class StandInDeviceView:
    """Device memory as Polygraphy's DeviceView presents it: ptr, shape, dtype, nbytes, numpy()
    (a copy to the host). It views the runner's device buffer, which the next inference reuses."""

    def __init__(self, array: np.ndarray) -> None:
        self._data = array
        self.ptr = id(self._data)
        self.shape = self._data.shape
        self.dtype = self._data.dtype
        self.nbytes = self._data.nbytes

    def numpy(self) -> np.ndarray:
        return np.array(self._data, copy=True)


class StandInEngine:
    def __init__(self, data: bytes) -> None:
        self.model = onnx.load_from_string(bytes(data))
        graph_inputs = {i.name for i in self.model.graph.input}
        self.shape_inputs = {n.input[i] for n in self.model.graph.node for i in range(len(n.input))
                             if (n.op_type, i) in SHAPE_OPERANDS and n.input[i] in graph_inputs}

    def is_shape_inference_io(self, name: str) -> bool:
        return name in self.shape_inputs


class StandInTrtRunner:
    """Behaves like polygraphy.backend.trt.TrtRunner where trtlab depends on it."""

    created: list = []

    def __init__(self, engine_or_loader, name=None) -> None:
        self.loader = engine_or_loader
        self.name = name
        self.is_active = False
        self.deactivated = 0
        self.host_output_buffers: dict = {}
        self.device_output_buffers: dict = {}
        StandInTrtRunner.created.append(self)

    def activate(self) -> None:
        eng = self.loader() if callable(self.loader) else self.loader
        self.engine = eng if isinstance(eng, StandInEngine) else eng.engine
        self._session = session(self.engine.model)
        self._outputs = [o.name for o in self.engine.model.graph.output]
        self.is_active = True

    def deactivate(self) -> None:
        self.is_active = False
        self.deactivated += 1

    def infer(self, feed_dict, copy_outputs_to_host=True):
        assert self.is_active, "infer() on an inactive runner"
        host = {}
        for name, value in feed_dict.items():
            on_device = isinstance(value, StandInDeviceView)
            if self.engine.is_shape_inference_io(name) and on_device:
                # Polygraphy: G_LOGGER.critical(...) raises PolygraphyException
                raise RuntimeError(f"A DeviceView was provided for input: {name}, but since this is a "
                                   "shape tensor, it must reside in host memory.")
            host[name] = value.numpy() if on_device else value
        results = self._session.run(self._outputs, host)
        out = OrderedDict()
        for name, arr in zip(self._outputs, results):
            buffers = self.host_output_buffers if copy_outputs_to_host else self.device_output_buffers
            buf = buffers.get(name)
            if buf is None or buf.shape != arr.shape or buf.dtype != arr.dtype:
                buf = buffers[name] = np.empty_like(arr)
            np.copyto(buf, arr)  # the same buffer, reused run after run
            out[name] = buf if copy_outputs_to_host else StandInDeviceView(buf)
        return out


class StandInEngineFromBytes:
    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)

    def __call__(self) -> StandInEngine:
        return StandInEngine(self.data)


STAND_IN_PTRT = types.SimpleNamespace(TrtRunner=StandInTrtRunner, EngineFromBytes=StandInEngineFromBytes)


def onnx_as_engine(onnx_bytes, profile, settings):
    """Engine builder whose "engine" is the segment's ONNX (run by the stand-in runner)."""
    return bytes(onnx_bytes)



def pretend_gpu(monkeypatch: pytest.MonkeyPatch) -> trt.TrtInfo:
    """Pretend engines run here: info() says run=True, Polygraphy's TrtRunner is the stand-in."""
    fake = trt.TrtInfo("tensorrt_rtx", trt.version() or "1.7", True, True, True, "Stand-in RTX 4090", "8.9",
                       "engines run on Stand-in RTX 4090 via stand-in")
    monkeypatch.setattr(trt, "info", lambda: fake)
    monkeypatch.setattr(trt, "engine_validity", lambda data, trt_module=None: ("UNKNOWN", ""))
    monkeypatch.setattr(trt_engine, "polygraphy_trt", lambda: STAND_IN_PTRT)
    StandInTrtRunner.created = []
    return fake
