"""Shapes from data: the shapes (and shape-tensor values) every segment input sees.

:func:`trtlab.build` takes the user's example inputs (a dict of arrays, an ``.npz`` path, or a
list of such dicts) and/or explicit ``shapes=`` ranges of the model inputs. This module turns
them into :class:`ShapeFacts`:

* with example inputs, the model runs once per example on ONNX Runtime with every tensor of the
  main graph exposed as an output; each tensor's shape is recorded, and so are the *values* of
  small integer tensors (they may be shape tensors: a Reshape's target shape that crosses a cut);
* with ``shapes=`` ranges, ONNX shape inference (with data propagation) at min, opt and max
  gives the tensors it can pin down.

Nothing is invented: a tensor neither source determines is reported missing, and
:func:`trtlab.build` then builds at the first run, on the real inputs.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import onnx

from trtlab.backends.base import Profile, Shape, ShapeRange
from trtlab.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["ShapeFacts", "load_examples", "observe", "needs_data"]

#: Integer tensors with at most this many elements have their values recorded.
MAX_VALUE_ELEMENTS = 16


@dataclass
class ShapeFacts:
    """What example inputs and ``shapes=`` say about the model's tensors.

    Attributes
    ----------
    ranges : dict
        Tensor name -> (min, opt, max) shape.
    values : dict
        Tensor name -> (min, opt, max) values of small integer tensors (possible shape tensors).
    source : str
        ``"feeds"``, ``"shapes"``, ``"feeds+shapes"`` or ``"none"``.
    """

    ranges: Dict[str, ShapeRange] = field(default_factory=dict)
    values: Dict[str, ShapeRange] = field(default_factory=dict)
    source: str = "none"
    types: Dict[str, int] = field(default_factory=dict)

    def fix_value_inputs(self, proto: onnx.ModelProto) -> onnx.ModelProto:
        """``proto`` with a static length on every rank-1 input whose values were observed.

        Such an input may be a shape tensor, whose length TensorRT needs static (its parser
        refuses the network otherwise); the length is the rank of some tensor, fixed.
        """
        for vi in proto.graph.input:
            rng = self.values.get(vi.name)
            dims = vi.type.tensor_type.shape.dim
            if rng is not None and len(dims) == 1 and not (dims[0].HasField("dim_value") and dims[0].dim_value >= 0):
                dims[0].dim_value = len(rng[0])
        return proto

    def retype_inputs(self, proto: onnx.ModelProto) -> onnx.ModelProto:
        """``proto`` with each observed input typed as observed: element type, and each dim
        static where min == max, else symbolic (a bisection candidate cut inside a segment reads
        tensors shape inference could not type)."""
        inits = {t.name for t in proto.graph.initializer}
        for vi in proto.graph.input:
            if vi.name in inits or vi.name not in self.ranges:
                continue
            lo, _, hi = self.ranges[vi.name]
            tt = vi.type.tensor_type
            if self.types.get(vi.name):
                tt.elem_type = self.types[vi.name]
            tt.ClearField("shape")
            shape = tt.shape
            shape.SetInParent()
            for ax, (a, b) in enumerate(zip(lo, hi)):
                dim = shape.dim.add()
                if a == b:
                    dim.dim_value = int(a)
                else:
                    dim.dim_param = f"{vi.name}_dim{ax}"
        return proto

    def segment_profile(self, proto: onnx.ModelProto) -> Tuple[Optional[Profile], Optional[Profile], List[str]]:
        """(shape profile, shape-tensor values, missing inputs) of a segment model.

        The shape profile covers inputs with dynamic dims; values cover every integer input of
        at most :data:`MAX_VALUE_ELEMENTS` elements whose values were observed. ``missing``
        names dynamic inputs no source determines.
        """
        from trtlab.backends.tensorrt.profiles import _dynamic_inputs

        shapes, missing = [], []
        for name in _dynamic_inputs(proto):
            rng = self.ranges.get(name)
            if rng is None:
                missing.append(name)
            else:
                shapes.append((name, tuple(tuple(s) for s in rng)))
        inits = {t.name for t in proto.graph.initializer}
        values = [(vi.name, self.values[vi.name]) for vi in proto.graph.input
                  if vi.name not in inits and vi.name in self.values]
        return tuple(sorted(shapes)) or None, tuple(sorted(values)) or None, missing


# ----------------------------------------------------------------------------------------------
# example inputs
# ----------------------------------------------------------------------------------------------

def load_examples(model: Any, feeds: Any) -> Optional[List[Dict[str, np.ndarray]]]:
    """Example inputs as a list of validated feed dicts (``None`` when ``feeds`` is ``None``).

    ``feeds`` is a dict input name -> array (one example), a path to an ``.npz`` holding one
    array per input, or a list of such dicts (several examples: their shapes give min/opt/max,
    the first one opt). Keys that are not model inputs are ignored in an ``.npz`` (labels).
    """
    from trtlab.feeds import validate_feeds

    if feeds is None:
        return None
    if isinstance(feeds, (str, os.PathLike)):
        path = Path(feeds).expanduser()
        if not path.is_file():
            raise InputError(f"feeds={str(feeds)!r} is not a file. Give a dict input name -> array, "
                             "an .npz file with one array per model input, or a list of dicts.")
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:
            raise InputError(f"feeds={str(feeds)!r} could not be read as .npz: {exc}.") from None
        names = {t.name for t in model.inputs}
        examples = [{k: v for k, v in data.items() if k in names}]
    elif isinstance(feeds, Mapping):
        examples = [dict(feeds)]
    elif isinstance(feeds, (list, tuple)) and feeds and all(isinstance(f, Mapping) for f in feeds):
        examples = [dict(f) for f in feeds]
    else:
        raise InputError(f"feeds must be a dict input name -> array, an .npz path or a list of dicts; got "
                         f"{type(feeds).__name__}. Model inputs: {[t.name for t in model.inputs]}.")
    return [validate_feeds(model.inputs, ex, what=f"feeds[{i}] of model {model.name!r}")
            for i, ex in enumerate(examples)]


def needs_data(model: Any, shapes: Optional[Mapping[str, Any]]) -> List[str]:
    """Model inputs with dynamic dims that ``shapes`` does not cover (they need example inputs)."""
    given = set(shapes or {})
    # sequence and optional inputs are read by ONNX Runtime segments only: TensorRT needs no dims
    not_tensors = {vi.name for vi in model.proto.graph.input if not vi.type.HasField("tensor_type")}
    return [t.name for t in model.inputs if t.name not in given and t.name not in not_tensors
            and (t.shape is None or not t.is_static)]


# ----------------------------------------------------------------------------------------------
# observation
# ----------------------------------------------------------------------------------------------

_SESSIONS: Dict[int, Tuple[Any, Any, List[str]]] = {}
_LOCK = threading.Lock()


def _observer(model: Any) -> Tuple[Any, List[str]]:
    """An ONNX Runtime session of ``model`` with every typed main-graph tensor as an output (cached)."""
    with _LOCK:
        hit = _SESSIONS.get(id(model))
        if hit is not None and hit[0] is model:
            return hit[1], hit[2]
    from trtlab.backends.onnxruntime.session import session

    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)  # external weights stay references: the session reads them
    outputs = {o.name for o in proto.graph.output}
    inputs = {t.name for t in model.inputs}
    names = [o.name for o in proto.graph.output]
    for node in proto.graph.node:
        for t in node.output:
            if not t or t in outputs or t in inputs:
                continue
            elem = model.tensor(t).elem_type
            if not elem:
                continue
            proto.graph.output.append(onnx.helper.make_tensor_value_info(t, elem, None))
            outputs.add(t)
            names.append(t)
    from trtlab.weights import base_dir

    sess = session(proto, ["CPUExecutionProvider"], base_dir=base_dir(model))
    with _LOCK:
        if len(_SESSIONS) >= 2:
            _SESSIONS.pop(next(iter(_SESSIONS)))
        _SESSIONS[id(model)] = (model, sess, names)
    return sess, names


def _small_int(value: np.ndarray) -> bool:
    return value.dtype.kind in "iu" and value.ndim <= 1 and value.size <= MAX_VALUE_ELEMENTS


def _range(items: Sequence[Tuple[int, ...]]) -> ShapeRange:
    lo = tuple(int(min(v[i] for v in items)) for i in range(len(items[0])))
    hi = tuple(int(max(v[i] for v in items)) for i in range(len(items[0])))
    return lo, tuple(int(x) for x in items[0]), hi


def observe(model: Any, examples: Optional[List[Dict[str, np.ndarray]]],
            shapes: Optional[Mapping[str, Any]] = None) -> ShapeFacts:
    """:class:`ShapeFacts` of ``model`` from example inputs and/or ``shapes=`` ranges."""
    from trtlab.backends.tensorrt.profiles import input_ranges, shape_table

    facts = ShapeFacts()
    sources = []
    if shapes:
        ranges = input_ranges(model, shapes, defaults=False)
        facts.ranges.update(shape_table(model.proto, ranges))
        facts.ranges.update(ranges)
        sources.append("shapes")
    if examples:
        sess, names = _observer(model)
        seen: Dict[str, List[Tuple[int, ...]]] = {}
        vals: Dict[str, List[Tuple[int, ...]]] = {}
        for ex in examples:
            out = dict(zip(names, sess.run(names, ex)))
            out.update(ex)
            for name, value in out.items():
                if value is None or isinstance(value, (list, tuple)):
                    continue  # sequence / optional values: no shape for TensorRT
                value = np.asarray(value)
                if name not in facts.types:
                    try:
                        facts.types[name] = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
                    except (KeyError, TypeError, ValueError):
                        pass
                seen.setdefault(name, []).append(tuple(int(d) for d in value.shape))
                if _small_int(value):
                    vals.setdefault(name, []).append(tuple(int(v) for v in value.reshape(-1)))
        for name, items in seen.items():
            if len({len(s) for s in items}) != 1:
                continue  # rank varies between examples: left to run-time shapes
            rng = _range(items)
            old = facts.ranges.get(name)
            if old is not None and len(old[0]) == len(rng[0]):
                rng = (tuple(min(a, b) for a, b in zip(old[0], rng[0])), old[1],
                       tuple(max(a, b) for a, b in zip(old[2], rng[2])))
            facts.ranges[name] = rng
        for name, items in vals.items():
            if len({len(v) for v in items}) == 1:
                facts.values[name] = _range(items)
        sources.append("feeds")
        log.info("observed shapes of %d tensors on %d example input(s)", len(seen), len(examples))
    facts.source = "+".join(sources) or "none"
    return facts


def static_profile(feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> Profile:
    """A min = opt = max profile of ``names`` from the shapes in ``feeds``."""
    return tuple(sorted((n, (tuple(feeds[n].shape),) * 3) for n in names))


def value_profile(feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> Optional[Profile]:
    """Min = opt = max values of the small integer inputs among ``names``."""
    out = []
    for n in names:
        v = np.asarray(feeds[n])
        if _small_int(v):
            vals = tuple(int(x) for x in v.reshape(-1))
            out.append((n, (vals, vals, vals)))
    return tuple(sorted(out)) or None


def _shape(x: Any) -> Shape:
    return tuple(int(d) for d in x)
