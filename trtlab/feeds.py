"""Checking run-time inputs against a model's declared inputs."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

import numpy as np
import onnx

from trtlab.errors import InputError
from trtlab.model import TensorInfo

__all__ = ["validate_feeds", "describe", "random_inputs", "random_array", "ORT_UNBINDABLE",
           "check_ort_bindable", "unalias_outputs"]

#: ONNX element types ONNX Runtime's Python binding can neither take as inputs nor return.
ORT_UNBINDABLE = frozenset(
    getattr(onnx.TensorProto, name) for name in (
        "BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT8E8M0",
        "INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
    if hasattr(onnx.TensorProto, name))


def describe(spec: TensorInfo) -> str:
    shape = "?" if spec.shape is None else "[" + ", ".join(
        "?" if d is None else str(d) for d in spec.shape) + "]"
    return f"{spec.name}: {spec.dtype_name}{shape}"


def validate_feeds(specs: Sequence[TensorInfo], feeds: Mapping[str, object], *,
                   what: str = "the model") -> Dict[str, np.ndarray]:
    """Check names, dtypes and shapes of ``feeds`` against ``specs``.

    Symbolic dims must be consistent across inputs (two inputs sharing ``"batch"`` must agree).

    Returns
    -------
    dict
        The feeds as NumPy arrays (lists and scalars are converted; dtypes are not changed);
        sequence and optional inputs (no tensor type) keep a list, or ``None``.

    Raises
    ------
    InputError
        Missing or extra names, wrong dtype, wrong rank or size.
    """
    if not isinstance(feeds, Mapping):
        raise InputError(f"Feeds for {what} must be a dict of name -> array, got {type(feeds).__name__}. "
                         f"Expected inputs: {', '.join(describe(s) for s in specs)}.")
    expected = {s.name: s for s in specs}
    missing = [n for n in expected if n not in feeds]
    extra = [n for n in feeds if n not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing input(s) {missing}")
        if extra:
            parts.append(f"unknown input(s) {extra}")
        raise InputError(
            f"Feeds for {what}: {' and '.join(parts)}. Expected exactly: "
            f"{', '.join(describe(s) for s in specs)}."
        )
    out: Dict[str, np.ndarray] = {}
    bound: Dict[str, tuple] = {}
    for name, spec in expected.items():
        value = feeds[name]
        if not spec.elem_type and spec.shape is None and (value is None or isinstance(value, (list, tuple))):
            # A sequence or optional input: ONNX Runtime takes a list (or None), not an array.
            out[name] = value if value is None else list(value)
            continue
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise InputError(f"Input '{name}' of {what} cannot be made into an array ({exc}); pass a "
                             f"NumPy array ({describe(spec)}).") from exc
        if arr.dtype == object:
            raise InputError(f"Input '{name}' of {what} is an array of Python objects; pass a numeric "
                             f"NumPy array ({describe(spec)}).")
        want = spec.dtype
        if want is not None and arr.dtype != want:
            raise InputError(
                f"Input '{name}' of {what} has dtype {arr.dtype}, expected {want} ({describe(spec)}). "
                f"Convert it, e.g. feeds['{name}'] = x.astype(np.{want.name})."
            )
        if spec.shape is not None:
            if arr.ndim != len(spec.shape):
                raise InputError(
                    f"Input '{name}' of {what} has rank {arr.ndim} (shape {list(arr.shape)}), expected "
                    f"rank {len(spec.shape)} ({describe(spec)})."
                )
            for ax, (got, dim) in enumerate(zip(arr.shape, spec.shape)):
                if isinstance(dim, int) and got != dim:
                    raise InputError(
                        f"Input '{name}' of {what} has size {got} on axis {ax} (shape {list(arr.shape)}), "
                        f"expected {dim} ({describe(spec)})."
                    )
                if isinstance(dim, str):
                    if dim in bound and bound[dim][0] != got:
                        other, ax2 = bound[dim][1], bound[dim][2]
                        raise InputError(
                            f"Input '{name}' axis {ax} is {got} but '{other}' axis {ax2} is {bound[dim][0]}; "
                            f"both are the symbolic dimension '{dim}' of {what} and must be equal."
                        )
                    bound.setdefault(dim, (got, name, ax))
        out[name] = arr
    return out


#: Largest random feed :func:`random_inputs` makes for one input, in bytes.
MAX_RANDOM_BYTES = 1 << 31


def random_inputs(model: "object", *, batch: int = 1, seed: int = 0,
                  dims: "Mapping[str, int] | None" = None,
                  max_bytes: int = MAX_RANDOM_BYTES) -> Dict[str, np.ndarray]:
    """Deterministic random feeds for every input of a :class:`~trtlab.model.Model`.

    Symbolic or unknown dims take ``dims[name]`` when given, else ``batch`` on axis 0 and 1
    elsewhere. Floats are standard normal, integers uniform in [0, 10), booleans coin flips.

    Raises
    ------
    InputError
        ``batch`` or a ``dims`` value is not a positive integer, or one input would take more
        than ``max_bytes`` (checked before anything is allocated).
    """
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise InputError(f"batch={batch!r} is not a positive integer; pass batch=1 or more.")
    rng = np.random.default_rng(seed)
    sizes = dict(dims or {})
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"dims[{key!r}] = {value!r} is not a positive integer.")
    plan = []
    for spec in model.inputs:  # type: ignore[attr-defined]
        if spec.shape is None:
            raise InputError(f"Input '{spec.name}' has unknown rank; pass feeds explicitly.")
        shape = [d if isinstance(d, int) else sizes.get(str(d), batch if ax == 0 else 1)
                 for ax, d in enumerate(spec.shape)]
        if any(d < 0 for d in shape):
            raise InputError(f"Input '{spec.name}' has a negative dimension {shape}; pass feeds explicitly.")
        dtype = np.dtype(spec.dtype or np.float32)
        nbytes = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
        if nbytes > max_bytes:
            raise InputError(
                f"Random feeds for input '{spec.name}' would have shape {shape} ({nbytes:,} bytes of "
                f"{dtype}), over the limit of {max_bytes:,} bytes. Pass a smaller batch, dims= for its "
                "symbolic dimensions, or feeds explicitly.")
        plan.append((spec.name, shape, dtype))
    return {name: random_array(rng, shape, dtype, name) for name, shape, dtype in plan}


def random_array(rng: np.random.Generator, shape: Sequence[int], dtype: np.dtype,
                 name: str = "input") -> np.ndarray:
    """Standard normal floats, integers uniform in [0, 10), or coin-flip booleans."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(list(shape)).astype(dtype)
    if dtype == np.bool_:
        return rng.random(list(shape)) < 0.5
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 10, size=list(shape)).astype(dtype)
    raise InputError(f"Input '{name}' has dtype {dtype}, for which no random values are defined; "
                     "pass feeds explicitly.")


def unalias_outputs(outputs: Dict[str, Any], feeds: Mapping[str, Any]) -> None:
    """Copy (in place) every output that shares memory with a feed or with another output.

    A graph output can be a graph input, or two outputs the same tensor; returning the caller's
    own array (or one array twice) would let a write to one change the other.
    """
    seen: List[Any] = [v for v in feeds.values() if isinstance(v, np.ndarray)]
    for name, value in outputs.items():
        if isinstance(value, np.ndarray) and any(np.may_share_memory(value, other) for other in seen):
            value = outputs[name] = value.copy()
        seen.append(value)


def check_ort_bindable(specs: Sequence[TensorInfo], *, what: str = "the model") -> None:
    """Raise :class:`InputError` when a tensor ONNX Runtime must take or return has a dtype its
    Python binding cannot hold (bfloat16, float8, int4, float4, int2).

    ``specs`` are the tensors that cross the Python boundary of an ONNX Runtime session.
    """
    bad = [s for s in specs if s.elem_type in ORT_UNBINDABLE]
    if not bad:
        return
    listed = ", ".join(f"{s.name!r} ({s.dtype_name})" for s in bad[:6])
    widen = "float32" if any(s.dtype_name.startswith(("bfloat", "float")) for s in bad) else "int8/int32"
    raise InputError(
        f"{what} passes tensor(s) {listed} through ONNX Runtime, whose Python binding cannot take or "
        f"return {', '.join(sorted({s.dtype_name for s in bad}))} arrays. Convert those tensors to {widen} "
        "in the model (a Cast at the model's inputs and outputs; widening is exact), or run the "
        "segments that touch them on TensorRT (a GPU the TensorRT flavor supports)."
    )
