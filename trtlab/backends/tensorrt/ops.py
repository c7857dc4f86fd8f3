"""trtlab's own TensorRT operator table: one rule per ONNX op, no TensorRT needed.

The table follows the onnx-tensorrt operator matrix (``docs/operators.md``) for TensorRT 10.x
and 11.x, its changelog for the release that added an op or lifted a restriction, and the
checks TensorRT's ONNX parser makes on attributes, ranks, data types and constant inputs.

A rule is a callable ``rule(ctx: RuleContext) -> Verdict``. Trivial ops are registered on one
line (:meth:`RuleSet.simple`); complex ops get a predicate. Rules compose with
:func:`all_of`, so a version gate and an attribute check read as one line each::

    rules.register("TopK", all_of(dtypes(FLOATS | INTS), attr_in("sorted", {1}, default=1)))

Users add or override rules in a notebook cell::

    trtlab.backends.tensorrt.support.register_rule("MyOp", lambda ctx: ctx.rank(0) == 4)   # session-wide
    mine = trtlab.backends.tensorrt.support.default_rules().copy(); mine.register("Relu", my_relu_rule)
    trtlab.check_support(model, source="rules", rules=mine)              # one call only

TensorRT versions
-----------------
``trt_version`` is a TensorRT version (``"10.8"``, ``(10, 15)``) or a TensorRT-RTX version
(``"1.7"``; RTX numbers start at 1). RTX releases are mapped to the TensorRT feature level
whose ONNX parser they ship (:data:`RTX_FEATURE_LEVEL`): RTX 1.0 ~ TensorRT 10.11, 1.1 ~ 10.13,
1.2 ~ 10.14, 1.3 and later ~ 10.15 (RTX 1.7 has the 10.15 parser flags
``REPORT_CAPABILITY_DLA`` and ``ENABLE_PLUGIN_OVERRIDE`` and the 10.15 ops ``RotaryEmbedding``,
``RMSNormalization`` and ``TensorScatter``). Where TensorRT-RTX differs from TensorRT at the
same feature level (no ``DeformConv``, ``NonZero`` needs a plugin it does not ship, squeeze
axes must be constant, some ``com.microsoft`` transformer ops are built in) the rule checks
``ctx.target.rtx``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, FrozenSet, Iterable, Iterator, List, Optional, Sequence,
                    Tuple, Union)

from trtlab._lazy import lazy_import
from trtlab.errors import SupportError
from trtlab.opinfo import ElemType as _T

log = logging.getLogger(__name__)

np = lazy_import("numpy")
onnx = lazy_import("onnx")
helper = lazy_import("onnx.helper")
numpy_helper = lazy_import("onnx.numpy_helper")

__all__ = [
    "Verdict", "TrtTarget", "RuleContext", "RuleSet", "Rule",
    "resolve_target", "all_of", "since", "dtypes", "attr_in", "constant_input", "rank_in",
    "no_output", "no_input", "unsupported", "supported",
    "default_rules", "register_rule", "reset_rules",
    "LATEST", "RTX_FEATURE_LEVEL", "FLOATS", "INTS", "BOOL", "QUANTIZED",
]

#: Oldest ai.onnx opset TensorRT's ONNX parser reads (same as trtlab.model.MIN_OPSET).
_MIN_PARSER_OPSET = 9

#: Latest TensorRT feature level this table encodes (onnx-tensorrt operators.md for 10.15).
LATEST: Tuple[int, int] = (10, 15)

#: TensorRT-RTX release -> TensorRT feature level of the ONNX parser it ships.
RTX_FEATURE_LEVEL: Dict[Tuple[int, int], Tuple[int, int]] = {
    (1, 0): (10, 11),
    (1, 1): (10, 13),
    (1, 2): (10, 14),
    (1, 3): (10, 15),
}

FLOATS: FrozenSet[int] = frozenset({_T.FLOAT, _T.FLOAT16, _T.BFLOAT16, _T.DOUBLE})
INTS: FrozenSet[int] = frozenset({_T.INT32, _T.INT64})
BOOL: FrozenSet[int] = frozenset({_T.BOOL})
QUANTIZED: FrozenSet[int] = frozenset({_T.INT8, _T.FLOAT8E4M3FN, _T.INT4, _T.FLOAT4E2M1})
_ANY: FrozenSet[int] = FLOATS | INTS | BOOL | QUANTIZED | {_T.UINT8}
_TRT_TYPES: FrozenSet[int] = FLOATS | INTS | BOOL | QUANTIZED | {_T.UINT8}


def _type_name(elem_type: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return str(elem_type)


def _types_text(types: Iterable[int]) -> str:
    return ", ".join(sorted(_type_name(t) for t in types))


# --------------------------------------------------------------------------------------------
# verdicts and targets
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """A rule's answer: supported or not, and why."""

    supported: bool
    reason: str

    def __bool__(self) -> bool:
        return self.supported


def supported(reason: str = "supported") -> Verdict:
    """A positive verdict."""
    return Verdict(True, reason)


def _no(reason: str) -> Verdict:
    return Verdict(False, reason)


@dataclass(frozen=True)
class TrtTarget:
    """Which TensorRT the rules judge for.

    Attributes
    ----------
    flavor : ``"tensorrt"`` or ``"tensorrt_rtx"``
    version : the version as given (RTX numbers for TensorRT-RTX)
    level : TensorRT feature level ``(major, minor)`` the rules use
    """

    flavor: str
    version: Tuple[int, ...]
    level: Tuple[int, int]

    @property
    def rtx(self) -> bool:
        return self.flavor == "tensorrt_rtx"

    def __str__(self) -> str:
        v = ".".join(map(str, self.version))
        if self.rtx:
            return f"TensorRT-RTX {v} (TensorRT {self.level[0]}.{self.level[1]} feature level)"
        return f"TensorRT {v}"


def _parse_version(value: Union[str, Sequence[int]]) -> Tuple[int, ...]:
    if isinstance(value, str):
        text = value.strip().lower()
        for prefix in ("tensorrt_rtx", "tensorrt-rtx", "rtx", "tensorrt", "trt"):
            if text.startswith(prefix):
                text = text[len(prefix):].lstrip(" :-=v")
                break
        parts = []
        for piece in text.split("."):
            if not piece.isdigit():
                break
            parts.append(int(piece))
    else:
        parts = [int(p) for p in value]
    if not parts:
        raise SupportError(
            f"trt_version={value!r} is not a version: give a TensorRT version such as '10.8' or "
            f"(10, 15), or a TensorRT-RTX version such as '1.7'.")
    return tuple(parts)


def resolve_target(trt_version: Union[None, str, Sequence[int], TrtTarget] = None) -> TrtTarget:
    """Turn ``trt_version`` into a :class:`TrtTarget`.

    ``None`` means the installed TensorRT (via :func:`trtlab.backends.tensorrt.flavor.version_tuple`), or
    :data:`LATEST` when none is installed. A major version of 1 is TensorRT-RTX, mapped with
    :data:`RTX_FEATURE_LEVEL`. TensorRT older than 10.0 is refused: the table encodes 10.x/11.x.
    """
    if isinstance(trt_version, TrtTarget):
        return trt_version
    if trt_version is None:
        from trtlab.backends.tensorrt import flavor as _trt

        installed = _trt.version_tuple()
        if not installed:
            log.info("no TensorRT installed; rules judge for TensorRT %d.%d", *LATEST)
            return TrtTarget("tensorrt", LATEST, LATEST)
        version = installed
    else:
        version = _parse_version(trt_version)
    major, minor = version[0], (version[1] if len(version) > 1 else 0)
    if major == 1:
        known = sorted(RTX_FEATURE_LEVEL)
        level = RTX_FEATURE_LEVEL[known[0]]
        for key in known:
            if (major, minor) >= key:
                level = RTX_FEATURE_LEVEL[key]
        return TrtTarget("tensorrt_rtx", version, level)
    if major < 10:
        raise SupportError(
            f"trt_version={trt_version!r}: the rules encode TensorRT 10.x and 11.x (and TensorRT-RTX "
            f"1.x); TensorRT {major}.{minor} is older. Use source='parser' with that TensorRT "
            "installed, or pass a version >= 10.0.")
    return TrtTarget("tensorrt", version, (major, minor))


# --------------------------------------------------------------------------------------------
# the context a rule sees
# --------------------------------------------------------------------------------------------

class _TensorIndex:
    """Types, shapes and constants of every tensor in a graph, computed once per model."""

    def __init__(self, graph: onnx.GraphProto, outer: Optional["_TensorIndex"] = None,
                 functions: Sequence[onnx.FunctionProto] = (), base_dir: Any = None) -> None:
        #: Folder external weights are relative to (values are read only when a rule asks).
        self.base_dir = outer.base_dir if outer is not None else base_dir
        self.functions: Dict[Tuple[str, str], onnx.FunctionProto] = (
            dict(outer.functions) if outer else {})
        self.functions.update({(f.domain, f.name): f for f in functions})
        self.types: Dict[str, Tuple[int, Optional[Tuple[Any, ...]]]] = dict(outer.types) if outer else {}
        self.initializers: Dict[str, onnx.TensorProto] = dict(outer.initializers) if outer else {}
        self.constants: Dict[str, onnx.NodeProto] = dict(outer.constants) if outer else {}
        self.consumers: Dict[str, int] = {}
        self.non_tensors: Dict[str, str] = dict(outer.non_tensors) if outer else {}
        self.graph_inputs = {vi.name for vi in graph.input} | (outer.graph_inputs if outer else set())
        for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
            self.types[vi.name] = self._from_type(vi.type)
            kind = vi.type.WhichOneof("value")
            if kind not in (None, "tensor_type"):
                self.non_tensors[vi.name] = kind.replace("_type", "")
        for init in graph.initializer:
            self.initializers[init.name] = init
            self.types[init.name] = (init.data_type, tuple(init.dims))
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
                self.constants[node.output[0]] = node
            for name in node.input:
                if name:
                    self.consumers[name] = self.consumers.get(name, 0) + 1
        self.graph_outputs = {o.name for o in graph.output}

    @staticmethod
    def _from_type(tp: onnx.TypeProto) -> Tuple[int, Optional[Tuple[Any, ...]]]:
        if not tp.HasField("tensor_type"):
            return (0, None)
        tt = tp.tensor_type
        if not tt.HasField("shape"):
            return (tt.elem_type, None)
        dims: List[Any] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        return (tt.elem_type, tuple(dims))

    def value(self, name: str) -> Optional[np.ndarray]:
        from trtlab.model import tensor_value

        if name in self.initializers:
            return tensor_value(self.initializers[name], self.base_dir)
        node = self.constants.get(name)
        if node is None:
            return None
        for attr in node.attribute:
            if attr.name == "value":
                return tensor_value(attr.t, self.base_dir)
            if attr.name in ("value_float", "value_int", "value_floats", "value_ints"):
                return np.asarray(helper.get_attribute_value(attr))
        return None


@dataclass
class RuleContext:
    """What a rule may look at: the node, its model, and the TensorRT it judges for.

    Input and output positions are the node's; an absent optional input (empty name) reads as
    missing. Shapes hold ints, dim-param strings, or ``None`` for unknown dims.
    """

    node: onnx.NodeProto
    model: Any
    target: TrtTarget
    opset: int
    index: _TensorIndex = field(repr=False)
    rules: "RuleSet" = field(repr=False)
    _attrs: Optional[Dict[str, Any]] = field(default=None, repr=False)

    @property
    def op_type(self) -> str:
        return self.node.op_type

    @property
    def domain(self) -> str:
        return self.node.domain

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def level(self) -> Tuple[int, int]:
        """TensorRT feature level ``(major, minor)``."""
        return self.target.level

    @property
    def trt_version(self) -> Tuple[int, ...]:
        return self.target.version

    @property
    def attrs(self) -> Dict[str, Any]:
        if self._attrs is None:
            self._attrs = {a.name: helper.get_attribute_value(a) for a in self.node.attribute}
        return self._attrs

    def attr(self, name: str, default: Any = None) -> Any:
        """Attribute value (bytes decoded to str), or ``default`` when absent."""
        value = self.attrs.get(name, default)
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        return value

    def input(self, i: int) -> Optional[str]:
        if i < len(self.node.input) and self.node.input[i]:
            return self.node.input[i]
        return None

    def has_input(self, i: int) -> bool:
        return self.input(i) is not None

    def has_output(self, i: int) -> bool:
        return i < len(self.node.output) and bool(self.node.output[i])

    def output_used(self, i: int) -> bool:
        """The output exists and something reads it (a node or the graph outputs)."""
        if not self.has_output(i):
            return False
        name = self.node.output[i]
        return bool(self.index.consumers.get(name)) or name in self.index.graph_outputs

    def elem_type(self, i: int) -> int:
        """ONNX element type of input ``i`` (0 when unknown or absent)."""
        name = self.input(i)
        return self.index.types.get(name, (0, None))[0] if name else 0

    def output_elem_type(self, i: int = 0) -> int:
        if not self.has_output(i):
            return 0
        return self.index.types.get(self.node.output[i], (0, None))[0]

    def shape(self, i: int) -> Optional[Tuple[Any, ...]]:
        name = self.input(i)
        return self.index.types.get(name, (0, None))[1] if name else None

    def rank(self, i: int) -> Optional[int]:
        shape = self.shape(i)
        return None if shape is None else len(shape)

    def is_static(self, i: int) -> bool:
        shape = self.shape(i)
        return shape is not None and all(isinstance(d, int) for d in shape)

    def is_constant(self, i: int) -> bool:
        """Input ``i`` is an initializer or the output of a Constant node."""
        name = self.input(i)
        return name is not None and (name in self.index.initializers or name in self.index.constants)

    def value(self, i: int) -> Optional[np.ndarray]:
        """Value of a constant input ``i``, else ``None``."""
        name = self.input(i)
        return self.index.value(name) if name else None


Rule = Callable[[RuleContext], Any]


def _as_verdict(result: Any, op: str) -> Verdict:
    if isinstance(result, Verdict):
        return result
    if isinstance(result, tuple) and len(result) == 2:
        return Verdict(bool(result[0]), str(result[1]))
    if isinstance(result, (bool, np.bool_)):
        return Verdict(bool(result), f"user rule for {op}: " + ("supported" if result else "rejected"))
    raise SupportError(
        f"the rule for {op} returned {result!r}; a rule must return a Verdict, a bool, or a "
        "(supported, reason) tuple.")


# --------------------------------------------------------------------------------------------
# composable checks
# --------------------------------------------------------------------------------------------

def all_of(*checks: Rule) -> Rule:
    """A rule that passes when every check passes; the first failure is the verdict."""

    def rule(ctx: RuleContext) -> Verdict:
        for check in checks:
            verdict = _as_verdict(check(ctx), ctx.op_type)
            if not verdict.supported:
                return verdict
        return supported()

    return rule


def since(major: int, minor: int = 0, what: Optional[str] = None) -> Rule:
    """Version gate: supported from TensorRT ``major.minor`` on."""

    def rule(ctx: RuleContext) -> Verdict:
        if ctx.level >= (major, minor):
            return supported()
        thing = what or ctx.op_type
        return _no(f"{thing} needs TensorRT >= {major}.{minor}; the target is {ctx.target}")

    return rule


def dtypes(allowed: Iterable[int], inputs: Sequence[int] = (0,)) -> Rule:
    """The listed inputs' element types must be in ``allowed`` (unknown types pass)."""
    allowed = frozenset(allowed)

    def rule(ctx: RuleContext) -> Verdict:
        for i in inputs:
            t = ctx.elem_type(i)
            if t and t not in allowed:
                return _no(f"{ctx.op_type} does not take {_type_name(t)} input {i} "
                           f"(TensorRT supports {_types_text(allowed)})")
        return supported()

    return rule


def attr_in(name: str, allowed: Iterable[Any], default: Any = None) -> Rule:
    """Attribute ``name`` (or its default) must be one of ``allowed``."""
    allowed = list(allowed)

    def rule(ctx: RuleContext) -> Verdict:
        value = ctx.attr(name, default)
        if value in allowed:
            return supported()
        return _no(f"{ctx.op_type} with {name}={value!r} is not supported "
                   f"(TensorRT supports {name} in {allowed})")

    return rule


def constant_input(i: int, what: str, before: Optional[Tuple[int, int]] = None) -> Rule:
    """Input ``i`` must be a build-time constant (initializer or Constant output).

    With ``before=(major, minor)`` the restriction only applies below that TensorRT version.
    """

    def rule(ctx: RuleContext) -> Verdict:
        if not ctx.has_input(i) or ctx.is_constant(i):
            return supported()
        if before is not None and ctx.level >= before:
            return supported()
        lifted = f" before TensorRT {before[0]}.{before[1]}" if before else ""
        return _no(f"{ctx.op_type} input '{what}' must be a build-time constant (initializer or "
                   f"Constant){lifted}; here it is computed at run time")

    return rule


def rank_in(low: int, high: int, i: int = 0, what: str = "input") -> Rule:
    """Rank of input ``i`` must be in ``[low, high]`` (unknown ranks pass)."""

    def rule(ctx: RuleContext) -> Verdict:
        r = ctx.rank(i)
        if r is None or low <= r <= high:
            return supported()
        span = f"{low}" if low == high else f"{low} to {high}"
        return _no(f"{ctx.op_type} {what} must have rank {span}; it has rank {r}")

    return rule


def no_output(i: int, what: str) -> Rule:
    """Optional output ``i`` must not be used."""

    def rule(ctx: RuleContext) -> Verdict:
        if ctx.has_output(i):
            return _no(f"{ctx.op_type} output '{what}' is not supported by TensorRT")
        return supported()

    return rule


def no_input(i: int, what: str) -> Rule:
    """Optional input ``i`` must be absent."""

    def rule(ctx: RuleContext) -> Verdict:
        if ctx.has_input(i):
            return _no(f"{ctx.op_type} input '{what}' is not supported by TensorRT")
        return supported()

    return rule


def unsupported(reason: str) -> Rule:
    """A rule that always rejects with ``reason``."""

    def rule(ctx: RuleContext) -> Verdict:
        return _no(f"{ctx.op_type}: {reason}")

    return rule


def _ok(ctx: RuleContext) -> Verdict:
    return supported()


# --------------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------------

class RuleSet:
    """A table of rules keyed by ``(domain, op_type)``.

    ``domain`` is ``""`` for the standard ONNX operators (``"ai.onnx"`` is read as ``""``).
    Nodes whose op has no rule are unsupported, with a reason that says so.
    """

    def __init__(self, name: str = "rules") -> None:
        self.name = name
        self._rules: Dict[Tuple[str, str], Rule] = {}

    @staticmethod
    def _key(op_type: str, domain: str) -> Tuple[str, str]:
        return ("" if domain in ("", "ai.onnx") else domain, op_type)

    def register(self, op_types: Union[str, Iterable[str]], rule: Optional[Rule] = None, *,
                 domain: str = "") -> Any:
        """Register ``rule`` for one op or several (space-separated or a list).

        Without ``rule`` it is a decorator::

            @rules.register("Gelu")
            def gelu(ctx): ...
        """
        names = op_types.split() if isinstance(op_types, str) else list(op_types)
        if not names:
            raise SupportError("register() needs at least one op type name.")

        def add(fn: Rule) -> Rule:
            if not callable(fn):
                raise SupportError(f"the rule for {names} must be callable (ctx -> Verdict | bool); "
                                   f"got {type(fn).__name__}.")
            for op in names:
                self._rules[self._key(op, domain)] = fn
            return fn

        return add if rule is None else add(rule)

    def simple(self, op_types: str, types: Iterable[int] = _ANY, inputs: Sequence[int] = (0,)) -> None:
        """One-line rule: supported when the data inputs have one of ``types``."""
        self.register(op_types, dtypes(types, inputs))

    def reject(self, op_types: str, reason: str) -> None:
        """Register ops TensorRT does not support, with the reason."""
        self.register(op_types, unsupported(reason))

    def remove(self, op_type: str, *, domain: str = "") -> None:
        key = self._key(op_type, domain)
        if key not in self._rules:
            raise SupportError(f"no rule for {op_type!r} (domain {domain or 'ai.onnx'!r}) in {self.name}.")
        del self._rules[key]

    def get(self, op_type: str, domain: str = "") -> Optional[Rule]:
        return self._rules.get(self._key(op_type, domain))

    def __contains__(self, op_type: object) -> bool:
        return isinstance(op_type, str) and self._key(op_type, "") in self._rules

    def __len__(self) -> int:
        return len(self._rules)

    def __iter__(self) -> Iterator[Tuple[str, str]]:
        return iter(sorted(self._rules))

    def ops(self, domain: str = "") -> List[str]:
        d = self._key("", domain)[0]
        return sorted(op for dom, op in self._rules if dom == d)

    def copy(self, name: Optional[str] = None) -> "RuleSet":
        new = RuleSet(name or self.name)
        new._rules = dict(self._rules)
        return new

    def __repr__(self) -> str:
        return f"RuleSet({self.name!r}, {len(self)} rules)"

    def check(self, ctx: RuleContext) -> Verdict:
        """The verdict for ``ctx.node``."""
        node = ctx.node
        domain = self._key("", node.domain)[0]
        if ctx.opset and ctx.opset < _MIN_PARSER_OPSET:
            return _no(f"the model's ai.onnx opset {ctx.opset} is older than TensorRT's ONNX parser "
                       f"reads (>= {_MIN_PARSER_OPSET}); convert it with onnx.version_converter to "
                       "put nodes on TensorRT")
        rule = self._rules.get((domain, node.op_type))
        non_tensor = [(x, ctx.index.non_tensors[x]) for x in list(node.input) + list(node.output)
                      if x in ctx.index.non_tensors]
        if non_tensor:
            x, kind = non_tensor[0]
            return _no(f"{node.op_type} reads or writes {kind} {x!r}: TensorRT has tensors only "
                       "(sequences and optionals run on ONNX Runtime)")
        if rule is None:
            fn = ctx.index.functions.get((node.domain, node.op_type))
            if fn is not None:
                return _check_function(ctx, fn)
            if domain:
                return _no(f"{node.op_type} is in custom domain '{node.domain}'; TensorRT's ONNX "
                           "parser only knows ai.onnx ops (a TensorRT plugin of that name would be "
                           "needed)")
            return _no(f"no rule for ONNX op {node.op_type}: it is not in the onnx-tensorrt "
                       "operator matrix (add one with trtlab.backends.tensorrt.support.register_rule)")
        try:
            return _as_verdict(rule(ctx), node.op_type)
        except SupportError:
            raise
        except Exception as exc:  # a user rule that crashed must name the node
            raise SupportError(
                f"the rule for {node.op_type} raised {type(exc).__name__}: {exc} on node "
                f"{node.name!r}; fix or replace it with register_rule({node.op_type!r}, ...).") from exc


def _check_function(ctx: RuleContext, fn: onnx.FunctionProto) -> Verdict:
    """A call of a model-local function: supported when every node of its body is."""
    for inner in fn.node:
        sub = RuleContext(inner, ctx.model, ctx.target, ctx.opset, ctx.index, ctx.rules)
        verdict = ctx.rules.check(sub)
        if not verdict.supported:
            return _no(f"local function {fn.name}: node {inner.op_type} is not supported "
                       f"({verdict.reason})")
    return supported(f"local function {fn.name}: every body node is supported")


# --------------------------------------------------------------------------------------------
# the onnx-tensorrt operator matrix
# --------------------------------------------------------------------------------------------

_F, _I, _B, _Q = FLOATS, INTS, BOOL, QUANTIZED
_MOVE = FLOATS | INTS | BOOL | QUANTIZED          # data movement ops take any TensorRT type


def _builtin() -> RuleSet:
    r = RuleSet("onnx-tensorrt operator matrix (TensorRT 10.x / 11.x)")

    # unary math: float only, some also integer
    r.simple("Acos Acosh Asin Asinh Atan Atanh Ceil Cos Cosh Erf Exp Floor Log Reciprocal Round "
             "Sin Sinh Sqrt Tan Tanh Sigmoid Softplus Softsign Elu Selu HardSigmoid HardSwish "
             "LeakyRelu ThresholdedRelu ScaledTanh ParametricSoftplus ImageScaler IsInf "
             "LRN Softmax LogSoftmax Hardmax GlobalAveragePool GlobalMaxPool "
             "InstanceNormalization GroupNormalization MeanVarianceNormalization "
             "RandomNormalLike RandomUniformLike PRelu Gemm", _F)

    @r.register("MatMul")
    def matmul(ctx: RuleContext) -> Verdict:
        if ctx.rank(0) == 1 and (ctx.rank(1) or 0) >= 3:
            return _no("MatMul of a 1-D input with a batched (rank >= 3) input fails TensorRT's parser "
                       "(its reshape changes the volume)")
        return dtypes(_F)(ctx)
    r.simple("Abs Neg Sign Relu IsNaN", _F | _I | _Q)
    r.simple("Not", _B)
    r.simple("And Or Xor", _B, inputs=(0, 1))
    r.simple("Add Sub Mul Div Max Min Mean Sum", _F | _I | _Q, inputs=(0, 1))
    r.simple("Greater GreaterOrEqual Less LessOrEqual", _F | _I | {_T.INT8}, inputs=(0, 1))
    r.simple("Equal", _F | _I | _B | {_T.INT8, _T.UINT8}, inputs=(0, 1))
    r.simple("Identity", _MOVE | {_T.UINT8})
    r.simple("Shape Size Flatten Transpose Reshape Expand Tile Concat Split Where "
             "Gather GatherElements GatherND DepthToSpace SpaceToDepth ReverseSequence "
             "ScatterElements Scatter ArgMax ArgMin Shrink Gelu", _MOVE)
    r.simple("Range Pad Slice Trilu ConstantOfShape", _MOVE)
    r.simple("Clip", _F | _I)
    r.simple("Swish", _F)
    r.simple("Mish", {_T.FLOAT, _T.FLOAT16, _T.DOUBLE})
    r.simple("BlackmanWindow HammingWindow HannWindow", _I)
    r.register("RandomNormal RandomUniform EyeLike", _ok)
    r.register("Celu", dtypes({_T.FLOAT, _T.DOUBLE}))

    @r.register("NonMaxSuppression")
    def nms(ctx: RuleContext) -> Verdict:
        if ctx.target.rtx:
            return _no("NonMaxSuppression passes TensorRT-RTX's ONNX parser but its engine build fails "
                       "(10 of 10 ONNX backend test cases with TensorRT-RTX 1.x)")
        return supported()

    def _not_network_input(i: int, what: str) -> Rule:
        def rule(ctx: RuleContext) -> Verdict:
            name = ctx.input(i)
            if name is not None and name in ctx.index.graph_inputs and not ctx.is_constant(i):
                return _no(f"{ctx.op_type} {what} is a graph input: TensorRT treats it as a shape tensor "
                           "and refuses a float network input there (it works as an initializer or a "
                           "computed tensor; the parser's answer depends on where the value comes from)")
            return supported()

        return rule

    r.register("Upsample", all_of(dtypes(_MOVE), _not_network_input(1, "scales")))

    @r.register("If Loop Scan")
    def control_flow(ctx: RuleContext) -> Verdict:
        for attr in ctx.node.attribute:
            if attr.type != onnx.AttributeProto.GRAPH:
                continue
            body = _TensorIndex(attr.g, outer=ctx.index)
            for inner in attr.g.node:
                sub = RuleContext(inner, ctx.model, ctx.target, ctx.opset, body, ctx.rules)
                verdict = ctx.rules.check(sub)
                if not verdict.supported:
                    return _no(f"{ctx.op_type} body '{attr.name}': {inner.op_type} node "
                               f"{inner.name or '(unnamed)'} is not supported ({verdict.reason})")
        return supported()

    r.reject("AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im "
             "CenterCropPad Compress ConcatFromSequence DFT Det ImageDecoder MaxRoiPool MaxUnpool "
             "MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement "
             "OptionalHasElement RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty "
             "SequenceErase SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss "
             "SplitToSequence StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique",
             "not supported by TensorRT (onnx-tensorrt operator matrix)")
    r.reject("ConvInteger MatMulInteger QLinearConv QLinearMatMul",
             "integer (QOperator) quantization is not supported by TensorRT; quantize with "
             "QuantizeLinear/DequantizeLinear pairs instead")
    r.reject("DynamicQuantizeLinear",
             "not supported by TensorRT (its IDynamicQuantize is reachable only through a "
             "model-local function)")

    def pool(ctx: RuleContext) -> Verdict:
        dil = ctx.attr("dilations")
        if dil and any(d != 1 for d in dil):
            return _no(f"{ctx.op_type} with dilations {list(dil)}: TensorRT supports dilations of 1 only")
        if ctx.op_type == "MaxPool" and ctx.has_output(1):
            return _no("MaxPool output 'Indices' is not supported by TensorRT")
        return supported()

    r.register("AveragePool MaxPool", all_of(dtypes(_F), rank_in(3, 5), pool))
    def lp_p(ctx: RuleContext) -> Verdict:
        if ctx.attrs.get("p") not in (1, 2):
            return _no(f"LpPool with p={ctx.attrs.get('p', 'unset (ONNX default 2)')}: TensorRT's parser "
                       "takes an explicit p of 1 or 2 only")
        return supported()

    r.register("LpPool", all_of(dtypes({_T.FLOAT, _T.FLOAT16, _T.DOUBLE}), rank_in(3, 5), pool, lp_p))
    r.register("GlobalLpPool", dtypes({_T.FLOAT, _T.FLOAT16, _T.DOUBLE}))
    r.register("Conv", all_of(dtypes(_F), rank_in(3, 5)))
    r.register("ConvTranspose", all_of(dtypes(_F), rank_in(3, 5)))

    @r.register("BatchNormalization")
    def batchnorm(ctx: RuleContext) -> Verdict:
        if ctx.attr("training_mode", 0):
            return _no("BatchNormalization with training_mode=1 is not supported by TensorRT")
        if ctx.has_output(1) or ctx.has_output(2):
            return _no("BatchNormalization running_mean/running_var outputs are not supported by TensorRT")
        return dtypes(_F)(ctx)

    @r.register("LayerNormalization")
    def layernorm(ctx: RuleContext) -> Verdict:
        if ctx.has_output(1) or ctx.has_output(2):
            return _no("LayerNormalization: only the first output Y is supported by TensorRT "
                       "(Mean/InvStdDev outputs are not)")
        return dtypes(_F)(ctx)

    @r.register("Cast CastLike")
    def cast(ctx: RuleContext) -> Verdict:
        to = ctx.attr("to") if ctx.op_type == "Cast" else ctx.elem_type(1)
        for t in (ctx.elem_type(0), to):
            if t and t not in _TRT_TYPES:
                return _no(f"{ctx.op_type} involving {_type_name(t)} is not supported: TensorRT has "
                           "no such data type")
        if to == _T.UINT8:
            return _no(f"{ctx.op_type} to UINT8: TensorRT has no UINT8 intermediate tensors (UINT8 is for "
                       "network inputs and outputs only)")
        return supported()

    @r.register("Constant")
    def constant(ctx: RuleContext) -> Verdict:
        for bad in ("sparse_value", "value_string", "value_strings"):
            if bad in ctx.attrs:
                return _no(f"Constant with attribute {bad} is not supported by TensorRT")
        return supported()

    r.register("CumSum", all_of(dtypes(_F | _I), constant_input(1, "axis", before=(10, 8))))

    @r.register("DeformConv")
    def deform_conv(ctx: RuleContext) -> Verdict:
        if ctx.target.rtx:
            return _no("DeformConv is not supported by TensorRT-RTX (TensorRT 10.1+ only)")
        gate = all_of(since(10, 1), dtypes({_T.FLOAT, _T.FLOAT16}), rank_in(3, 4))(ctx)
        if not gate:
            return gate
        pads = ctx.attr("pads")
        if pads and list(pads[: len(pads) // 2]) != list(pads[len(pads) // 2:]):
            return _no("DeformConv pads must be the same at the beginning and end of each axis")
        return supported()

    def _zero_point(i: int, what: str) -> Rule:
        def rule(ctx: RuleContext) -> Verdict:
            if not ctx.has_input(i):
                return supported()
            value = ctx.value(i)
            if value is None:
                return supported(f"{ctx.op_type} {what} is computed at run time: the parser accepts it; "
                                 "TensorRT needs it to be zero when the engine is built (value-dependent)")
            if np.any(np.asarray(value, dtype=np.float64) != 0):
                return _no(f"{ctx.op_type} with a non-zero {what}: TensorRT supports symmetric "
                           "quantization only")
            return supported()

        return rule

    r.register("QuantizeLinear", all_of(dtypes(_F), _zero_point(2, "y_zero_point")))
    r.register("DequantizeLinear", all_of(dtypes(_Q | {_T.UINT8, _T.INT32}), _zero_point(2, "x_zero_point")))

    @r.register("Dropout")
    def dropout(ctx: RuleContext) -> Verdict:
        if ctx.has_input(2):
            value = ctx.value(2)
            if value is None:
                return _no("Dropout training_mode must be an initializer (and false) for TensorRT")
            if bool(np.asarray(value).reshape(-1)[0]):
                return _no("Dropout in training mode is not supported by TensorRT")
        return dtypes(_F)(ctx)

    @r.register("Einsum")
    def einsum(ctx: RuleContext) -> Verdict:
        eq = str(ctx.attr("equation", ""))
        if ctx.level < (10, 12):
            if "..." in eq:
                return _no("Einsum with an ellipsis needs TensorRT >= 10.12; "
                           f"the target is {ctx.target}")
            for term in eq.replace("->", ",").split(","):
                if len(set(term.strip())) != len(term.strip()):
                    return _no("Einsum diagonal terms need TensorRT >= 10.12; "
                               f"the target is {ctx.target}")
        return dtypes(_F)(ctx)

    r.register("GridSample", all_of(dtypes({_T.FLOAT, _T.FLOAT16, _T.DOUBLE}), rank_in(4, 5)))
    r.register("OneHot", dtypes(_MOVE, inputs=(2,)))
    r.register("Hardmax", dtypes(_F))

    def _rnn(n_act: int) -> Rule:
        def rule(ctx: RuleContext) -> Verdict:
            if ctx.attr("direction", "forward") == "bidirectional":
                acts = ctx.attr("activations")
                if acts and list(acts[:n_act]) != list(acts[n_act:]):
                    return _no(f"bidirectional {ctx.op_type} with different forward/reverse "
                               "activations is not supported by TensorRT")
            if ctx.op_type == "LSTM" and ctx.attr("input_forget", 0):
                return _no("LSTM with input_forget=1 is not supported by TensorRT")
            return dtypes(_F)(ctx)

        return rule

    r.register("LSTM", _rnn(3))
    r.register("GRU", _rnn(2))
    r.register("RNN", _rnn(1))

    @r.register("LpNormalization")
    def lpnorm(ctx: RuleContext) -> Verdict:
        if ctx.attr("p", 2) not in (1, 2):
            return _no(f"LpNormalization with p={ctx.attr('p')}: TensorRT supports L1 and L2 only")
        return dtypes({_T.FLOAT, _T.FLOAT16, _T.DOUBLE})(ctx)

    @r.register("Mod")
    def mod(ctx: RuleContext) -> Verdict:
        t = ctx.elem_type(0)
        if not ctx.attr("fmod", 0) and t in FLOATS:
            return _no("Mod with fmod=0 on floating-point inputs is not supported by TensorRT "
                       "(set fmod=1 or use integer inputs)")
        return dtypes(_F | _I, inputs=(0, 1))(ctx)

    @r.register("NonZero")
    def nonzero(ctx: RuleContext) -> Verdict:
        if ctx.target.rtx:
            return _no("NonZero needs a TensorRT plugin that TensorRT-RTX does not ship")
        return dtypes(_F | _I | _B | {_T.INT8})(ctx)

    @r.register("Pow")
    def pow_(ctx: RuleContext) -> Verdict:
        if ctx.elem_type(0) in INTS and ctx.level < (10, 12):
            return _no(f"Pow with an integer base needs TensorRT >= 10.12; the target is {ctx.target}")
        return dtypes(_F | _I, inputs=(0, 1))(ctx)

    @r.register("Range")
    def range_(ctx: RuleContext) -> Verdict:
        types = {ctx.elem_type(i) for i in range(3)} - {0}
        if len(types) > 1:
            return _no("Range start, limit and delta must have the same type for TensorRT")
        t = next(iter(types), 0)
        if t and t not in (INTS | {_T.FLOAT}):
            return _no(f"Range on {_type_name(t)} is not supported (TensorRT takes INT32, INT64, FLOAT)")
        if t == _T.FLOAT and not all(ctx.is_constant(i) for i in range(3)):
            return _no("floating-point Range needs start, limit and delta as build-time constants")
        return supported()

    def _reduce(ctx: RuleContext) -> Verdict:
        if ctx.has_input(1) and not ctx.is_constant(1):
            return _no(f"{ctx.op_type} axes must be a build-time constant (initializer) for TensorRT")
        return dtypes(_F | _I)(ctx)

    r.register("ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin "
               "ReduceProd ReduceSum ReduceSumSquare", _reduce)

    @r.register("Resize")
    def resize(ctx: RuleContext) -> Verdict:
        mode = ctx.attr("mode", "nearest")
        if mode not in ("nearest", "linear", "cubic"):
            return _no(f"Resize mode {mode!r} is not supported (nearest, linear, cubic)")
        ctm = ctx.attr("coordinate_transformation_mode", "half_pixel")
        allowed = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                   "align_corners")
        if ctm not in allowed:
            return _no(f"Resize coordinate_transformation_mode {ctm!r} is not supported by "
                       f"TensorRT (supported: {', '.join(allowed)})")
        nearest = ctx.attr("nearest_mode", "round_prefer_floor")
        if mode == "nearest":
            if nearest not in ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil"):
                return _no(f"Resize nearest_mode {nearest!r} is not supported")
            if ctm == "tf_half_pixel_for_nn" and nearest != "round_prefer_floor":
                return _no("Resize with tf_half_pixel_for_nn needs nearest_mode round_prefer_floor")
        if ctx.attr("antialias", 0):
            return _no("Resize antialiasing is not supported by TensorRT")
        if ctx.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
            return _no("Resize keep_aspect_ratio_policy other than 'stretch' is not supported")
        scales = ctx.value(2)
        if mode in ("linear", "cubic") and scales is not None and scales.size:
            outer = 3 if mode == "linear" else 2
            inner = [float(s) for s in scales.reshape(-1)[:-outer]]
            if any(s != 1.0 for s in inner):
                return _no(f"{mode} Resize is only supported on the innermost {outer} dimensions "
                           f"(scales {list(scales.reshape(-1))})")
        if ctx.input(2) in ctx.index.graph_inputs and not ctx.is_constant(2):
            return _no("Resize scales is a graph input: TensorRT treats it as a shape tensor and refuses a "
                       "float network input there (an initializer or a computed scales works; the "
                       "parser's answer depends on where the value comes from)")
        axes = ctx.attr("axes")
        if axes is not None and ctx.has_input(2) and ctx.rank(0) is not None \
                and list(axes) != list(range(ctx.rank(0))):
            return _no("Resize axes with tensor scales must list every axis in order")
        return dtypes(_F)(ctx)

    @r.register("ScatterND")
    def scatter_nd(ctx: RuleContext) -> Verdict:
        if ctx.attr("reduction", "none") != "none":
            return _no(f"ScatterND with reduction={ctx.attr('reduction')!r} is not supported by TensorRT")
        return dtypes(_F | _I)(ctx)

    @r.register("Squeeze Unsqueeze")
    def squeeze(ctx: RuleContext) -> Verdict:
        if ctx.has_input(1) and not ctx.is_constant(1) and (ctx.target.rtx or ctx.level < (10, 7)):
            where = "TensorRT-RTX" if ctx.target.rtx else f"TensorRT < 10.7 ({ctx.target})"
            return _no(f"{ctx.op_type} axes must be a build-time constant on {where}")
        return supported()

    @r.register("TopK")
    def topk(ctx: RuleContext) -> Verdict:
        k = ctx.value(1)
        if k is not None and k.size and int(k.reshape(-1)[0]) >= 3840:
            return _no(f"TopK with K={int(k.reshape(-1)[0])}: TensorRT supports K < 3840")
        return dtypes(_F | _I)(ctx)

    r.register("Trilu", all_of(rank_in(2, 8), dtypes(_MOVE)))
    r.register("STFT", all_of(since(10, 5), dtypes(_F), constant_input(1, "frame_step"),
                              constant_input(2, "window")))

    @r.register("RandomNormalLike RandomUniformLike")
    def random_like(ctx: RuleContext) -> Verdict:
        if ctx.is_constant(0) and ctx.level < (10, 11):
            return _no(f"{ctx.op_type} on a constant input needs TensorRT >= 10.11")
        return supported()

    @r.register("ArgMax ArgMin")
    def argmax(ctx: RuleContext) -> Verdict:
        if ctx.attr("select_last_index", 0) and ctx.opset < 12:
            return _no(f"{ctx.op_type} select_last_index needs opset >= 12")
        return dtypes(_F | _I)(ctx)

    @r.register("Attention")
    def attention(ctx: RuleContext) -> Verdict:
        gate = since(10, 14)(ctx)
        if not gate:
            return gate
        for i in range(3):
            if ctx.rank(i) not in (None, 3, 4):
                return _no("Attention Q, K and V must be 3D or 4D for TensorRT")
        for i, what in ((4, "past_key"), (5, "past_value")):
            if ctx.has_input(i):
                return _no(f"Attention input {what} is not supported by TensorRT")
        if ctx.attr("is_causal", 0) and ctx.has_input(3):
            return _no("Attention with is_causal=1 and an attn_mask: TensorRT's IAttention takes one "
                       "of the two")
        k, v = ctx.shape(1), ctx.shape(2)
        if k is not None and v is not None and len(k) == len(v) == 4 and \
                isinstance(k[-1], int) and isinstance(v[-1], int) and k[-1] != v[-1]:
            return _no(f"Attention with key head size {k[-1]} != value head size {v[-1]}: TensorRT needs "
                       "them equal")
        if k is not None and v is not None and len(k) == len(v) == 3 and \
                isinstance(k[-1], int) and isinstance(v[-1], int) and k[-1] != v[-1]:
            return _no(f"Attention with key hidden size {k[-1]} != value hidden size {v[-1]}: TensorRT "
                       "needs equal head sizes")
        for i in (1, 2, 3):
            if ctx.has_output(i):
                return _no("Attention supports only its first output in TensorRT")
        if ctx.attr("softcap", 0.0):
            return _no("Attention softcap is not supported by TensorRT")
        if "qk_matmul_output_mode" in ctx.attrs and ctx.attr("qk_matmul_output_mode"):
            return _no("Attention qk_matmul_output_mode is not supported by TensorRT")
        return dtypes(_F | _Q)(ctx)

    r.register("RMSNormalization", all_of(since(10, 15), dtypes(_F)))

    @r.register("RotaryEmbedding")
    def rotary(ctx: RuleContext) -> Verdict:
        gate = since(10, 15)(ctx)
        if not gate:
            return gate
        if ctx.has_input(3) and ctx.elem_type(3) not in (0, _T.INT64):
            return _no("RotaryEmbedding position_ids must be INT64 for TensorRT")
        return dtypes(_F)(ctx)

    @r.register("TensorScatter")
    def tensor_scatter(ctx: RuleContext) -> Verdict:
        gate = all_of(since(10, 15), rank_in(4, 4, 0, "past_cache"), rank_in(4, 4, 1, "update"))(ctx)
        if not gate:
            return gate
        if ctx.attr("axis", -2) not in (-2, 2):
            return _no("TensorScatter axis must be -2 for TensorRT")
        if ctx.attr("mode", "linear") != "linear":
            return _no(f"TensorScatter mode {ctx.attr('mode')!r}: TensorRT supports mode 'linear' only")
        return supported()

    # contrib transformer ops that TensorRT-RTX's parser imports natively
    def _rtx_only(what: str) -> Rule:
        def rule(ctx: RuleContext) -> Verdict:
            if ctx.target.rtx:
                return supported(f"{what} is built into TensorRT-RTX's ONNX parser")
            return _no(f"{ctx.op_type} is in custom domain '{ctx.domain}'; only TensorRT-RTX "
                       "imports it natively (TensorRT would need a plugin)")

        return rule

    r.register("Gelu", lambda ctx: supported(
        "com.microsoft Gelu: TensorRT's parser imports it with its ai.onnx Gelu importer "
        "(the same erf-based formula)") if ctx.elem_type(0) in (0,) or ctx.elem_type(0) in _F
        else _no(f"Gelu does not take {_type_name(ctx.elem_type(0))} input"), domain="com.microsoft")
    for op in ("MultiHeadAttention", "GroupQueryAttention", "MatMulNBits",
               "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"):
        r.register(op, _rtx_only(f"com.microsoft {op}"), domain="com.microsoft")
    return r


_BUILTIN = _builtin()
_DEFAULT = _BUILTIN.copy("default")


def default_rules() -> RuleSet:
    """The rule set :func:`check_support` uses when ``rules=None``.

    It starts as the built-in operator table; :func:`register_rule` edits it for the session and
    :func:`reset_rules` restores the table.
    """
    return _DEFAULT


def register_rule(op_type: str, predicate: Optional[Rule] = None, *, domain: str = "") -> Any:
    """Add or override the default rule for ``op_type`` (also works as a decorator).

    ``predicate(ctx)`` returns a :class:`Verdict`, a bool, or ``(supported, reason)``.

    Examples
    --------
    >>> from trtlab.backends.tensorrt.support import register_rule, reset_rules
    >>> _ = register_rule("Relu", lambda ctx: (ctx.rank(0) == 4, "4D Relu only"))
    >>> reset_rules()
    """
    return _DEFAULT.register(op_type, predicate, domain=domain)


def reset_rules() -> None:
    """Drop every :func:`register_rule` change: the defaults become the built-in table again."""
    _DEFAULT._rules = dict(_BUILTIN._rules)
