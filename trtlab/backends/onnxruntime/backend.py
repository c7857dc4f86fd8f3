"""The ONNX Runtime backend: runs every ONNX op; fallback segments use it."""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Dict, List, Mapping, Tuple

import numpy as np
import onnx

from trtlab.backends.base import CompiledSegment, CompileSettings
from trtlab.backends.onnxruntime.session import fast_call

log = logging.getLogger(__name__)


def _ort_session(model: onnx.ModelProto, settings: CompileSettings) -> Tuple[Any, str]:
    """An ONNX Runtime session for a segment and its executor label.

    A float16 model ONNX Runtime has no kernels for runs with float16 rounding emulated, and
    the label says so (``"onnxruntime (fp16 emulated)"``). When the segment is the whole model
    of a file, unchanged (``settings.source_path``), ONNX Runtime reads that file itself, as
    ``InferenceSession(path)`` does. Otherwise it gets the segment's ONNX with the model's
    embedded weights filled in for the call only; weights the model keeps in external data are
    read by ONNX Runtime from their file (``settings.weights_dir``), not copied.
    """
    import onnxruntime as ort

    from trtlab.backends.onnxruntime.session import session, session_from_file

    if settings.weights is not None:  # ONNX Runtime is about to read the model's files
        settings.weights.check()
    label = "onnxruntime"
    opts = ort.SessionOptions()
    if not settings.spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if _emulated(settings):
        from trtlab.precision import ort_variant

        providers = list(settings.providers) if settings.providers else None
        variant, label = ort_variant(settings.full_model(model), providers)
        model = getattr(variant, "proto", variant)
    elif settings.source_path is not None:
        sess = session_from_file(settings.source_path, settings.providers, sess_options=opts,
                                 threads=settings.threads)
        return sess, ("onnxruntime-cuda" if "CUDAExecutionProvider" in sess.get_providers() else label)
    elif settings.weights is not None:
        model = settings.weights.fill(model)
    sess = session(model, settings.providers, sess_options=opts, threads=settings.threads,
                   base_dir=settings.weights_dir)
    if label == "onnxruntime" and "CUDAExecutionProvider" in sess.get_providers():
        label = "onnxruntime-cuda"
    return sess, label


class OrtSegment(CompiledSegment):
    """A segment running in an ONNX Runtime session (executor ``"onnxruntime"`` or ``"onnxruntime-cuda"``).

    ``model`` is the segment's ONNX as given (a light model keeps no copy of the weights: they
    are in the session); ``notes`` say where the session read the model from.
    """

    def __init__(self, model: onnx.ModelProto, settings: CompileSettings) -> None:
        self.model = model
        self.name = settings.segment
        self.profile = settings.profile
        self.values = settings.values
        self.session, self.executor = _ort_session(model, settings)
        self.providers = tuple(self.session.get_providers())
        self.notes = session_notes(settings)
        self.reason = "; ".join([f"ONNX Runtime ({', '.join(self.providers)})"] + self.notes)
        self._outputs = [o.name for o in self.session.get_outputs()]
        self._call = fast_call(self.session)

    def __repr__(self) -> str:
        return f"OrtSegment({self.name!r}, providers={list(self.providers)})"

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return dict(zip(self._outputs, self._call(self._outputs, feeds)))

    def outputs_call(self, names: List[str]) -> Callable[[Mapping[str, np.ndarray]], List[Any]]:
        """``f(feeds) -> [value of each of names]``: the session's ``run`` for those outputs, bound
        once (ONNX Runtime's public ``InferenceSession.run``; it raises ONNX Runtime's own errors,
        which the caller reports with :func:`~trtlab.backends.onnxruntime.session.run_error`)."""
        unknown = [n for n in names if n not in self._outputs]
        if unknown:
            raise KeyError(f"segment {self.name!r} has no outputs {unknown}; it has {self._outputs}")
        return functools.partial(self.session.run, list(names))  # no Python frame of its own


def session_notes(settings: CompileSettings) -> List[str]:
    """Where an ONNX Runtime session of a segment read its model and weights from."""
    if settings.source_path is not None and not _emulated(settings):
        return [f"session read from the model file {settings.source_path} (the segment is the whole "
                "model, unchanged)"]
    if settings.weights_dir is not None:
        return [f"external weights read from {settings.weights_dir}"]
    return []


def _emulated(settings: CompileSettings) -> bool:
    """Whether the segment's precision runs emulated on ONNX Runtime (never FP32, for which the
    precision package is not imported)."""
    if settings.precision == "fp32":
        return False
    from trtlab.precision import registry

    return bool(registry.get(settings.precision).emulate_on_onnxruntime)


class OnnxRuntimeBackend:
    """ONNX Runtime: runs every ONNX op, so every node is supported.

    Takes light segment models (``weights_by_reference``): weights stay with the model.
    """

    name = "onnxruntime"
    weights_by_reference = True
    #: ONNX Runtime runs any input shape: build() needs no example run for it
    needs_shapes = False

    def __repr__(self) -> str:
        return "OnnxRuntimeBackend()"

    def check_support(self, model: Any) -> Any:
        from trtlab.model import load
        from trtlab.backends.tensorrt.support import SupportTable

        m = load(model)
        rows = [{"node": n.name, "op_type": n.op_type, "supported": True,
                 "reason": "ONNX Runtime runs every ONNX operator", "source": "rules"}
                for n in m.proto.graph.node]
        import pandas as pd

        return SupportTable(pd.DataFrame(rows, columns=["node", "op_type", "supported", "reason", "source"]))

    def compile(self, segment_model: onnx.ModelProto, settings: CompileSettings) -> OrtSegment:
        return OrtSegment(segment_model, settings)
