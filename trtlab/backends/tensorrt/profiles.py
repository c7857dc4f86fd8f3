"""Shape profiles: the min/opt/max shapes each TensorRT segment input is built for.

Model inputs get ranges from the user's ``shapes=``; tensors inside the model get theirs from
shape inference over those ranges, and from one run of the model on the user's example inputs
(:mod:`trtlab.backends.shapes`). No dimension is ever invented.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import onnx

from trtlab.backends.base import Profile, Shape, ShapeRange
from trtlab.errors import CalibrationError, BuildError, InputError

log = logging.getLogger(__name__)


def _dynamic_inputs(model: onnx.ModelProto) -> List[str]:
    inits = {t.name for t in model.graph.initializer}
    names = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        if not vi.type.tensor_type.HasField("shape") or any(not d.HasField("dim_value") or d.dim_value < 0
                                                             for d in dims):
            names.append(vi.name)
    return names


def _widen(profile: Profile, shapes: Mapping[str, Shape]) -> Profile:
    out = []
    for name, (lo, opt, hi) in profile:
        got = shapes[name]
        new_lo = tuple(min(a, g) for a, g in zip(lo, got))
        new_hi = tuple(max(b, g) for b, g in zip(hi, got))
        out.append((name, (new_lo, tuple(min(max(o, a), b) for o, a, b in zip(opt, new_lo, new_hi)), new_hi)))
    return tuple(out)


def _static_profile(shapes: Mapping[str, Shape], names: Sequence[str]) -> Profile:
    return tuple(sorted((n, (tuple(shapes[n]), tuple(shapes[n]), tuple(shapes[n]))) for n in names))


def _opt_profile(profile: Profile) -> Profile:
    return tuple((n, (opt, opt, opt)) for n, (_, opt, _) in profile)


def _parse_range(name: str, spec: Any) -> ShapeRange:
    def shape(x: Any) -> Shape:
        try:
            dims = tuple(int(d) for d in x)
        except (TypeError, ValueError):
            raise InputError(f"shapes[{name!r}]={spec!r} is not a shape; give a tuple of ints, "
                             "(min, opt, max) tuples, or {'min':..., 'opt':..., 'max':...}.") from None
        if any(d < 1 for d in dims):
            raise InputError(f"shapes[{name!r}] has a dimension below 1: {dims}.")
        return dims

    if isinstance(spec, Mapping):
        missing = [k for k in ("min", "opt", "max") if k not in spec]
        if missing:
            raise InputError(f"shapes[{name!r}] lacks {missing}; give min, opt and max.")
        lo, opt, hi = shape(spec["min"]), shape(spec["opt"]), shape(spec["max"])
    elif isinstance(spec, (list, tuple)) and len(spec) == 3 and all(
            isinstance(s, (list, tuple)) for s in spec):
        lo, opt, hi = (shape(s) for s in spec)
    else:
        lo = opt = hi = shape(spec)
    if not (len(lo) == len(opt) == len(hi)):
        raise InputError(f"shapes[{name!r}]: min {lo}, opt {opt} and max {hi} differ in rank.")
    if any(not (a <= o <= b) for a, o, b in zip(lo, opt, hi)):
        raise InputError(f"shapes[{name!r}]: need min <= opt <= max on every axis, got {lo}, {opt}, {hi}.")
    return lo, opt, hi


def input_ranges(model: Any, shapes: Optional[Mapping[str, Any]] = None, *,
                 defaults: bool = False) -> Dict[str, ShapeRange]:
    """(min, opt, max) of every tensor named in ``shapes`` and of every static model input.

    ``shapes`` maps a tensor name to a static shape, ``(min, opt, max)`` shapes, or a dict with
    ``min``/``opt``/``max``. Model inputs not named keep their static shape; those with dynamic
    dims are left out (their shapes come from example inputs or the first run), unless
    ``defaults`` sets their dynamic dims to 1 (what Polygraphy does).
    """
    shapes = dict(shapes or {})
    known = set(model._known_tensors) | {t.name for t in model.inputs}
    unknown = [n for n in shapes if n not in known]
    if unknown:
        raise InputError(f"shapes names {unknown}, which are not tensors of model {model.name!r}. "
                         f"Model inputs: {[t.name for t in model.inputs]}.")
    out: Dict[str, ShapeRange] = {}
    for name, spec in shapes.items():
        rng = _parse_range(name, spec)
        info = model.tensor(name)
        if info.shape is not None:
            if len(info.shape) != len(rng[0]):
                raise InputError(f"shapes[{name!r}] has rank {len(rng[0])}, tensor {name!r} has rank "
                                 f"{len(info.shape)} (shape {list(info.shape)}).")
            for ax, dim in enumerate(info.shape):
                if isinstance(dim, int) and any(s[ax] != dim for s in rng):
                    raise InputError(f"shapes[{name!r}] axis {ax} must be {dim} (static in the model), "
                                     f"got {[s[ax] for s in rng]}.")
        out[name] = rng
    not_tensors = {vi.name for vi in model.proto.graph.input if not vi.type.HasField("tensor_type")}
    for info in model.inputs:
        if info.name in out or info.name in not_tensors:  # sequence and optional inputs: ONNX Runtime only
            continue
        if info.shape is None:
            if not defaults:
                continue
            raise InputError(f"Input {info.name!r} has no shape in the model; pass "
                             f"shapes={{'{info.name}': (min, opt, max)}}.")
        if not info.is_static and not defaults:
            continue
        dims = tuple(d if isinstance(d, int) else 1 for d in info.shape)
        out[info.name] = (dims, dims, dims)
    return out


def shape_table(proto: onnx.ModelProto, ranges: Mapping[str, ShapeRange]) -> Dict[str, ShapeRange]:
    """(min, opt, max) of every tensor whose shape ONNX shape inference pins down.

    The graph inputs are fixed to the min, opt and max shapes in turn and shapes are inferred
    (with data propagation) three times.
    """
    tables: List[Dict[str, Shape]] = []
    for k in range(3):
        m = onnx.ModelProto()
        m.CopyFrom(proto)
        del m.graph.value_info[:]
        for vi in m.graph.input:
            if vi.name in ranges:
                dims = vi.type.tensor_type.shape.dim
                del dims[:]
                for d in ranges[vi.name][k]:
                    dims.add().dim_value = int(d)
        for vi in m.graph.output:
            vi.type.tensor_type.ClearField("shape")
        try:
            inferred = onnx.shape_inference.infer_shapes(m, data_prop=True)
        except onnx.shape_inference.InferenceError as exc:
            log.debug("shape inference failed: %s", exc)
            inferred = m
        table: Dict[str, Shape] = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            tt = vi.type.tensor_type
            if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
                table[vi.name] = tuple(int(d.dim_value) for d in tt.shape.dim)
        tables.append(table)
    return {n: (tables[0][n], tables[1][n], tables[2][n])
            for n in tables[1] if n in tables[0] and n in tables[2]}


def segment_profile(proto: onnx.ModelProto, table: Mapping[str, ShapeRange],
                    overrides: Mapping[str, ShapeRange], segment: str = "segment") -> Optional[Profile]:
    """The optimization profile of a segment model: ranges of its inputs with dynamic dims."""
    entries = []
    for name in _dynamic_inputs(proto):
        rng = overrides.get(name) or table.get(name)
        if rng is None:
            raise BuildError(
                f"The range of shapes of tensor {name!r} (input of segment {segment!r}) cannot be "
                f"inferred. Pass shapes={{'{name}': (min_shape, opt_shape, max_shape)}} to build()."
            )
        entries.append((name, tuple(tuple(s) for s in rng)))
    return tuple(sorted(entries)) or None


def _value_infos(proto: onnx.ModelProto) -> Dict[str, onnx.ValueInfoProto]:
    from trtlab.backends.isolation import value_infos

    return value_infos(proto)


def _boundary_values(model: Any, batches: List[Dict[str, np.ndarray]],
                     tensors: Sequence[str]) -> List[Dict[str, np.ndarray]]:
    """Values of ``tensors`` for each calibration batch, from the FP32 model on ONNX Runtime."""
    from trtlab.backends.onnxruntime.session import session

    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    existing = {o.name for o in proto.graph.output}
    inputs = {t.name for t in model.inputs}
    for name in tensors:
        if name not in existing and name not in inputs:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(
                name, model.tensor(name).elem_type or onnx.TensorProto.FLOAT, None))
    from trtlab.weights import base_dir

    sess = session(proto, base_dir=base_dir(model))
    wanted = [t for t in tensors if t not in inputs]
    out = []
    for i, b in enumerate(batches):
        try:
            values = dict(zip(wanted, sess.run(wanted, b))) if wanted else {}
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidArgument types
            raise CalibrationError(
                f"ONNX Runtime could not run model {model.name!r} on calibration batch {i} to compute "
                f"segment inputs {wanted[:5]}: {str(exc).strip().splitlines()[0][:300]}. Check that "
                "the calibration data are valid inputs of the model.") from exc
        values.update({k: v for k, v in b.items() if k in tensors})
        out.append(values)
    return out
