"""Model and data plumbing shared by the precision, compare and localize modules."""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np
import onnx

from trtlab.errors import CalibrationError, InputError, PrecisionError
from trtlab.precision._graphs import unique_name  # noqa: F401  (shared by the transforms)

log = logging.getLogger(__name__)

Feeds = Dict[str, np.ndarray]
#: Data accepted wherever a model is run on a data set: one array (single-input models), a
#: mapping input name -> array with the batch on axis 0 (an ``.npz`` file works), or an iterable
#: of feed dicts.
Data = Union[np.ndarray, Mapping[str, np.ndarray], Iterable[Mapping[str, np.ndarray]]]

DEFAULT_BATCH = 64


def as_model(model: Any, what: str = "model", *, read_weights: bool = True) -> Any:
    """A :class:`trtlab.model.Model` for ``model`` (a Model, ModelProto, path or bytes).

    Models are loaded without constant folding so explicit Q/DQ pairs on constant weights survive.
    Transforms read and rewrite weights, so by default they get a copy holding external weights;
    steps that only run the model (``read_weights=False``) keep the references.
    """
    from trtlab.model import Model, load

    if isinstance(model, Model):
        return model.copy().load_weights() if read_weights and model.has_external_data else model
    if isinstance(model, onnx.ModelProto) or isinstance(model, (str, bytes, bytearray)) or \
            hasattr(model, "__fspath__"):
        loaded = load(model, fold_constants=False)
        return loaded.load_weights() if read_weights and loaded.has_external_data else loaded
    raise PrecisionError(
        f"The {what} is a {type(model).__name__}; expected a trtlab Model, an onnx.ModelProto, "
        "a path to a .onnx file or its bytes. Load it with trtlab.load(...) first."
    )


def finish(proto: onnx.ModelProto, name: str, advice: str = "") -> Any:
    """Check a transformed proto and wrap it as a Model (shapes re-inferred, nothing folded).

    ``advice`` names the parameter of the calling transform that keeps nodes out of it.
    """
    from trtlab.model import load

    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise PrecisionError(
            f"The transformed model {name!r} fails the ONNX checker: {exc}. "
            f"{advice or 'Keep the offending nodes in FP32'} and report the model."
        ) from exc
    return load(proto, fold_constants=False, name=name)


def tensor_types(proto: onnx.ModelProto) -> Dict[str, int]:
    """Element type of every tensor the graph knows (inputs, outputs, value_info, initializers)."""
    from trtlab.precision._graphs import deep_types

    return deep_types(proto)


def model_hash(proto: onnx.ModelProto) -> str:
    return hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()


def data_hash(feeds: Sequence[Feeds]) -> str:
    h = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            arr = np.ascontiguousarray(feed[name])
            h.update(name.encode())
            h.update(str(arr.dtype).encode())
            h.update(str(arr.shape).encode())
            h.update(arr.tobytes())
    return h.hexdigest()


def _input_infos(model: Any) -> List[Any]:
    return list(model.inputs)


def feed_list(model: Any, data: Data, *, batch_size: Optional[int] = None,
              limit: Optional[int] = None, error: type = InputError) -> List[Feeds]:
    """Cut ``data`` into feed dicts for ``model``.

    Parameters
    ----------
    model
        A :class:`trtlab.model.Model`.
    data
        One array (single-input models), a mapping input name -> array with the batch on axis 0
        (entries that are not model inputs, such as labels in an ``.npz``, are ignored), or an
        iterable of feed dicts (used as given).
    batch_size
        Batch size for mapping data; a static batch dimension of the model wins.
    limit
        Use at most this many samples (mapping data) or feed dicts (iterables).
    error
        Exception class raised on bad data.
    """
    inputs = _input_infos(model)
    names = [t.name for t in inputs]
    dtypes = {t.name: t.dtype for t in inputs}
    if isinstance(data, np.ndarray):
        if len(names) != 1:
            raise error(
                f"Got one array but the model has {len(names)} inputs {names}; pass a dict "
                "input name -> array."
            )
        data = {names[0]: data}
    if isinstance(data, Mapping) or (hasattr(data, "files") and hasattr(data, "__getitem__")):
        keys = list(data.keys())
        missing = [n for n in names if n not in keys]
        if missing:
            raise error(
                f"The data has no array for model input(s) {missing}; it has {keys}. Pass a dict "
                f"with keys {names} (arrays with the batch on axis 0)."
            )
        arrays = {n: np.asarray(data[n]) for n in names}
        counts = {n: (a.shape[0] if a.ndim else 0) for n, a in arrays.items()}
        if len(set(counts.values())) != 1 or 0 in counts.values():
            raise error(f"Input arrays need the same non-empty batch axis 0; got sizes {counts}.")
        total = next(iter(counts.values()))
        if limit is not None:
            total = min(total, int(limit))
        static = {t.shape[0] for t in inputs if t.shape and isinstance(t.shape[0], int)}
        if len(static) > 1:
            raise error(f"Model inputs disagree on their static batch size: {sorted(static)}.")
        step = static.pop() if static else int(batch_size or DEFAULT_BATCH)
        stop = total - total % step if _static_batch(inputs) else total
        if stop == 0:
            raise error(f"The model takes batches of {step} but the data has only {total} samples.")
        if stop < total:
            log.info("dropping the last %d sample(s): the model takes batches of %d", total - stop, step)
        feeds = [{n: _cast(arrays[n][i:i + step], dtypes[n]) for n in names}
                 for i in range(0, stop, step)]
        return feeds
    try:
        items = list(data)  # type: ignore[arg-type]
    except TypeError:
        raise error(
            f"Cannot read data of type {type(data).__name__}; pass an array, a dict input name -> "
            "array, or a list of feed dicts."
        ) from None
    if limit is not None:
        items = items[: int(limit)]
    feeds = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise error(f"Feed {i} is a {type(item).__name__}, not a dict input name -> array.")
        missing = [n for n in names if n not in item]
        if missing:
            raise error(f"Feed {i} lacks model input(s) {missing}; it has {list(item)}.")
        # Sequence inputs (no tensor dtype) stay lists of arrays, as ONNX Runtime takes them.
        feeds.append({n: item[n] if dtypes[n] is None and isinstance(item[n], (list, tuple))
                      else _cast(np.asarray(item[n]), dtypes[n]) for n in names})
    if not feeds:
        raise error("The data holds no samples; pass at least one feed.")
    return feeds


def _static_batch(inputs: Sequence[Any]) -> bool:
    return all(t.shape and isinstance(t.shape[0], int) for t in inputs)


def _cast(arr: np.ndarray, dtype: Optional[np.dtype]) -> np.ndarray:
    if dtype is None or arr.dtype == dtype:
        return arr
    return arr.astype(dtype)


def calibration_feeds(model: Any, data: Data, batch_size: Optional[int] = None) -> List[Feeds]:
    feeds = feed_list(model, data, batch_size=batch_size, error=CalibrationError)
    if not feeds:
        raise CalibrationError("Calibration data is empty; pass at least one batch of real inputs.")
    return feeds


def run_session(sess: Any, feeds: Sequence[Feeds], outputs: Optional[List[str]] = None
                ) -> List[Dict[str, np.ndarray]]:
    """Run an ONNX Runtime session over feeds; one dict output name -> array per feed."""
    names = outputs or [o.name for o in sess.get_outputs()]
    return [dict(zip(names, sess.run(names, feed))) for feed in feeds]


def concat(results: Sequence[Mapping[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """Join per-batch outputs along axis 0 (scalars and rank-0 outputs are stacked)."""
    out: Dict[str, np.ndarray] = {}
    for name in results[0]:
        parts = [np.asarray(r[name]) for r in results]
        out[name] = np.concatenate(parts) if parts[0].ndim else np.stack(parts)
    return out

