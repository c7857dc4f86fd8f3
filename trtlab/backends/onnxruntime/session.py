"""ONNX Runtime sessions for models and segments.

One place creates :class:`onnxruntime.InferenceSession` objects, so every caller gets the same
provider choice (CUDA when available, else CPU), the same IR-version fix and the same errors.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import onnx

from trtlab.errors import BuildError, InputError, ModelLoadError, RunError
from trtlab.feeds import validate_feeds
from trtlab.model import Model, TensorInfo, _read_path, fit_ir_version

log = logging.getLogger(__name__)

__all__ = ["session", "session_from_file", "run_onnx", "default_providers", "model_bytes", "fast_call", "run_error"]

ModelLike = Union[Model, onnx.ModelProto, bytes, str, os.PathLike]


def default_providers() -> List[str]:
    """CUDA then CPU when ONNX Runtime has the CUDA provider, else CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _has_float8(model: ModelLike) -> bool:
    proto = model.proto if isinstance(model, Model) else model if isinstance(model, onnx.ModelProto) else None
    if proto is None:
        return False
    float8 = {onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E4M3FNUZ, onnx.TensorProto.FLOAT8E5M2,
              onnx.TensorProto.FLOAT8E5M2FNUZ}
    return any(t.data_type in float8 for t in proto.graph.initializer)


def model_bytes(model: ModelLike) -> bytes:
    """Serialized model with an IR version ONNX Runtime reads."""
    if isinstance(model, Model):
        return model.to_bytes()
    if isinstance(model, onnx.ModelProto):
        if model.ir_version > 10:
            clone = onnx.ModelProto()
            clone.CopyFrom(model)
            return fit_ir_version(clone).SerializeToString()
        return model.SerializeToString()
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    return model_bytes(_read_path(Path(model).expanduser()))


#: ONNX Runtime's session option naming the folder of external data for a model given as bytes.
EXTERNAL_FOLDER_KEY = "session.model_external_initializers_file_folder_path"


def session(model: ModelLike, providers: Optional[Sequence[str]] = None, *,
            sess_options: Any = None, threads: Optional[int] = None,
            base_dir: Union[str, os.PathLike, None] = None) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``model``.

    Parameters
    ----------
    model
        A :class:`~trtlab.model.Model`, ``onnx.ModelProto``, bytes or path.
    providers
        Execution providers; default :func:`default_providers`.
    threads
        Intra-op thread count (default: ONNX Runtime's choice).
    base_dir
        The folder external data references are relative to (a Model's own folder when not
        given). ONNX Runtime reads such weights from there, as ``InferenceSession(path)`` does;
        they are not copied into the bytes given to it.
    """
    import onnxruntime as ort

    from trtlab.weights import base_dir as folder_of
    from trtlab.weights import has_external

    proto = model.proto if isinstance(model, Model) else model if isinstance(model, onnx.ModelProto) else None
    folder = base_dir if base_dir is not None else (folder_of(model) if isinstance(model, Model) else None)
    external = proto is not None and has_external(proto)
    if external and folder is None:
        from trtlab.errors import ExternalDataError

        raise ExternalDataError(
            "The model keeps weights in external data files and the folder they are relative to is "
            "unknown; load it from its .onnx path (trtlab.load(path)) or pass base_dir=.")
    data = model_bytes(model)
    opts = _options(ort, model, sess_options, threads)
    if external:
        opts.add_session_config_entry(EXTERNAL_FOLDER_KEY, os.fspath(folder))
    return _create(ort, data, opts, providers)


def session_from_file(path: Union[str, os.PathLike], providers: Optional[Sequence[str]] = None, *,
                      sess_options: Any = None, threads: Optional[int] = None) -> Any:
    """An ``onnxruntime.InferenceSession`` reading the model file itself, as ``InferenceSession(path)`` does.

    ONNX Runtime reads the file and its external data; nothing is parsed or copied in Python.
    """
    import onnxruntime as ort

    return _create(ort, os.fspath(path), _options(ort, None, sess_options, threads), providers)


def _options(ort: Any, model: Any, sess_options: Any, threads: Optional[int]) -> Any:
    opts = sess_options or ort.SessionOptions()
    if model is not None and _has_float8(model) and \
            int(opts.graph_optimization_level) > int(ort.GraphOptimizationLevel.ORT_ENABLE_BASIC):
        # ONNX Runtime's extended QDQ fusions drop a Relu before a float8 QuantizeLinear (they read
        # the float8 zero point as an integer type's minimum): wrong results, so basic level only
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if threads is not None:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return opts


def _create(ort: Any, data: Union[bytes, str], opts: Any, providers: Optional[Sequence[str]]) -> Any:
    try:
        return ort.InferenceSession(data, sess_options=opts,
                                    providers=list(providers or default_providers()))
    except Exception as exc:  # onnxruntime raises its own exception types
        msg = str(exc)
        if "IR version" in msg:
            raise ModelLoadError(
                f"ONNX Runtime {ort.__version__} cannot read this model's IR version ({msg.strip()}). "
                "trtlab lowers the IR version when the opset allows (Model.save writes IR <= 10); "
                "an opset too new for this ONNX Runtime needs converting: "
                "onnx.version_converter.convert_version(proto, 17), or upgrade onnxruntime."
            ) from exc
        raise BuildError(f"ONNX Runtime could not create a session: {msg.strip()}") from exc


def fast_call(sess: Any) -> Callable[[Sequence[str], Mapping[str, np.ndarray]], List[Any]]:
    """``f(output_names, feeds) -> outputs`` for feeds trtlab has already validated.

    The session's public ``InferenceSession.run``, bound once; ONNX Runtime's execution-provider
    fallback and its input checks stay in place (only public ONNX Runtime API is used). A failure
    while running (an index out of range, a shape the model refuses) is raised as
    :class:`~trtlab.errors.RunError` naming the outputs and inputs.
    """
    run = sess.run

    def call(names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> List[Any]:
        try:
            return run(names, feeds)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise run_error(exc, names, feeds) from exc

    return call


def run_error(exc: BaseException, names: Sequence[str], feeds: Mapping[str, Any],
              what: str = "the model") -> RunError:
    """A :class:`~trtlab.errors.RunError` for an ONNX Runtime failure at run time."""
    shown = ", ".join(f"{k}: {getattr(v, 'dtype', type(v).__name__)}{list(np.shape(v))}"
                      for k, v in list(feeds.items())[:8])
    msg = " ".join(str(exc).split())[:600]
    return RunError(
        f"ONNX Runtime failed while running {what} (outputs {list(names)[:8]}, inputs {shown}): {msg}. "
        "Check the input values (index and shape inputs must be in range for the model) and "
        "their shapes; Model.inputs lists what the model expects.")


def run_onnx(model: ModelLike, feeds: Mapping[str, np.ndarray],
             output_names: Optional[Sequence[str]] = None, *, validate: bool = True,
             providers: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """Run ``model`` once with ONNX Runtime and return its outputs by name."""
    sess = session(model, providers)
    if validate:
        # ONNX Runtime reports [] both for scalars and for unknown rank: check rank only when known.
        specs = [TensorInfo(i.name, tuple(d if isinstance(d, (int, str)) else None for d in i.shape)
                            if i.shape else None, _ort_elem(i.type)) for i in sess.get_inputs()]
        feeds = validate_feeds(specs, feeds, what="the model")
    available = [o.name for o in sess.get_outputs()]
    names = list(output_names) if output_names else available
    unknown = [n for n in names if n not in available]
    if unknown:
        raise InputError(f"output_names {unknown} are not outputs of the model; it has {available}. "
                         "Ask for some of those, or leave output_names out for all of them.")
    try:
        values = sess.run(names, dict(feeds))
    except Exception as exc:  # onnxruntime raises its own exception types
        raise run_error(exc, names, feeds) from exc
    return dict(zip(names, values))


_ORT_TYPES = {
    "tensor(float)": onnx.TensorProto.FLOAT,
    "tensor(float16)": onnx.TensorProto.FLOAT16,
    "tensor(double)": onnx.TensorProto.DOUBLE,
    "tensor(int64)": onnx.TensorProto.INT64,
    "tensor(int32)": onnx.TensorProto.INT32,
    "tensor(int8)": onnx.TensorProto.INT8,
    "tensor(uint8)": onnx.TensorProto.UINT8,
    "tensor(bool)": onnx.TensorProto.BOOL,
    "tensor(int16)": onnx.TensorProto.INT16,
    "tensor(bfloat16)": onnx.TensorProto.BFLOAT16,
}


def _ort_elem(type_str: str) -> int:
    return _ORT_TYPES.get(type_str, 0)
