"""Engine layer names and ``Metadata`` fields, taken apart.

TensorRT names a fused layer after what it fused: parts joined by ``" + "`` (``" || "`` for
horizontal fusions), pointwise fusions as ``PWN(a, PWN(b, c))``, Myelin regions as
``{ForeignNode[first...last]}``, format conversions as ``Reformatting CopyNode for Input Tensor 0
to X``, its own helper layers as ``(Unnamed Layer* 12) [Shuffle]``, ``unsqueeze_node_after_X`` or
``reshape_after_X``, Myelin's own kernels as ``__myl_*`` / ``__mye*``, and every layer of a second
shape profile with a ``[profile N]`` suffix. Since TensorRT 8.6 a
``Metadata`` field lists the ONNX nodes exactly: ``[ONNX Layer: name]`` entries separated by the
ASCII record/unit separators 0x1E / 0x1F.

:func:`split_name` turns a name into :class:`Part` records; the caller decides which names are
ONNX nodes (exactly, with a model; by a naming heuristic, without one).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

__all__ = ["Part", "split_name", "metadata_nodes", "metadata_entries", "shape_profile", "visible",
           "looks_constant",
           "SEPARATORS"]

#: Characters TensorRT uses to join several entries in one name or metadata string.
SEPARATORS = ("\x1e", "\x1f")

_PROFILE = re.compile(r"\s*\[profile (\d+)\]")
_META_SPLIT = re.compile("[\x1e\x1f]")
_OP_SUFFIX = re.compile(r" \([^()]*\)$")
_ONNX_LAYER = re.compile(r"^\s*\[ONNX Layer: (.*)\]\s*$", re.S)
_FOREIGN = re.compile(r"^\{ForeignNode\[(.*)\]\}$", re.S)
_REFORMAT_COPY = re.compile(r"^Reformatting CopyNode for (?:Input|Output) Tensor \d+ to (.+)$",
                            re.S)
_REFORMATTER = re.compile(r"^(.+) (?:input|output) reformatter \d+$", re.S)
_HELPER = re.compile(
    r"^(?:copied_)?(?:(?:un)?squeeze(?:_node)?|reshape|transpose|shuffle|cast)_(?:after|before)_"
    r"(.+?)(?:_copy_(?:input|output))?$", re.S)
#: Layers TensorRT makes itself (Myelin kernels and shape calls, parser helpers): never ONNX nodes.
_INTERNAL_PREFIX = ("__myl_", "__mye", "__myln", "ONNXTRT_", "(Unnamed Layer*", "[trainStation")
#: Copies TensorRT inserts around a layer: ``X_copy_input`` / ``X_copy_output``.
_COPY = re.compile(r"^(.+)_copy_(?:input|output)\d*$", re.S)
#: Myelin appends ``_myl<graph>_<index>`` to the node names it keeps (TensorRT 10).
_MYL_SUFFIX = re.compile(r"_myl\d+_\d+$")
_CONST_SUFFIX = re.compile(
    r"(?:^|[./:_])(?:weight|weights|bias|biases|running_mean|running_var|gamma|beta|"
    r"scale|zero_point|kernel)$")
_OPEN = {"(": ")", "[": "]", "{": "}"}
_BRACKETS = re.compile(r"[()\[\]{}]")
_CLOSE = {")", "]", "}"}


@dataclass(frozen=True)
class Part:
    """One piece of a layer name.

    ``kind`` is ``"name"`` (an ONNX node, initializer or tensor: the caller resolves it),
    ``"range"`` (a Myelin ``ForeignNode`` range; ``name`` is the first node and ``last`` the
    last), ``"reformat"`` (a format conversion; ``name`` is the node it serves), or
    ``"internal"`` (a layer TensorRT made itself; ``name`` is what it refers to, if anything).
    ``ends`` lists the names inside a range's two ends, or in the layer a reformat or helper
    layer serves.
    """

    kind: str
    name: str
    last: Optional[str] = None
    ends: Tuple[str, ...] = ()


def shape_profile(name: str) -> Tuple[str, int]:
    """``name`` without its ``[profile N]`` markers, and ``N`` (0 when absent)."""
    found = _PROFILE.findall(name)
    if not found:
        return name, 0
    return _PROFILE.sub("", name).strip(), int(found[-1])


def metadata_entries(metadata: Optional[str]) -> List[Tuple[str, Tuple[str, ...]]]:
    """ONNX nodes listed in a layer's ``Metadata`` field: ``(node, enclosing nodes)`` pairs.

    A node inside a control-flow subgraph is written ``node | branch (attr) | parent (If)``;
    the enclosing nodes are returned innermost first, without their ``(Op)`` suffix.

    >>> metadata_entries("[ONNX Layer: a]\x1e[ONNX Layer: b/x | then (then_branch) | b (If)]")
    [('a', ()), ('b/x', ('then', 'b'))]
    """
    if not metadata:
        return []
    out: List[Tuple[str, Tuple[str, ...]]] = []
    seen = set()
    for piece in _META_SPLIT.split(metadata):
        m = _ONNX_LAYER.match(piece)
        if not m:
            continue
        first, *outer = m.group(1).split(" | ")
        chain = [first.strip()] + [_OP_SUFFIX.sub("", c.strip()) for c in outer]
        if chain[0] not in seen:
            seen.add(chain[0])
            out.append((chain[0], tuple(chain[1:])))
    return out


def metadata_nodes(metadata: Optional[str]) -> List[str]:
    """ONNX node names listed in a layer's ``Metadata`` field, in order, without repeats."""
    return [name for name, _ in metadata_entries(metadata)]


def _split_top(text: str, seps: Tuple[str, ...]) -> List[str]:
    """Split ``text`` at ``seps`` outside brackets (plainly when the brackets do not balance)."""
    if not _BRACKETS.search(text):
        return _split_plain(text, seps)
    pieces: List[str] = []
    stack: List[str] = []
    start = i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in _OPEN:
            stack.append(_OPEN[ch])
        elif ch in _CLOSE:
            if not stack or stack[-1] != ch:
                return _split_plain(text, seps)
            stack.pop()
        elif not stack:
            for sep in seps:
                if text.startswith(sep, i):
                    pieces.append(text[start:i])
                    i += len(sep)
                    start = i
                    break
            else:
                i += 1
                continue
            continue
        i += 1
    if stack:
        return _split_plain(text, seps)
    pieces.append(text[start:])
    return [p for p in (x.strip() for x in pieces) if p]


@functools.lru_cache(maxsize=16)
def _sep_pattern(seps: Tuple[str, ...]) -> "re.Pattern[str]":
    return re.compile("|".join(re.escape(s) for s in seps))


def _split_plain(text: str, seps: Tuple[str, ...]) -> List[str]:
    return [p for p in (x.strip() for x in _sep_pattern(seps).split(text)) if p]


def _range(body: str) -> Part:
    """A ``ForeignNode[first...last]`` body: each end may itself be a fused name (``a + b``)."""
    left, dots, right = body.partition("...")
    ends: List[Part] = []
    for side in ((left, right) if dots else (left,)):
        for piece in _split_top(side, (" + ", " || ") + SEPARATORS):
            _parts(piece, ends)
    names = [p.name for p in ends if p.kind == "name"]
    first_side = [p.name for p in _named(left)]
    last_side = [p.name for p in _named(right)] if dots else first_side
    first = (first_side or names or [left.strip()])[0]
    last = (last_side or names or [right.strip() or left.strip()])[-1]
    return Part("range", first, last, tuple(names))


def _named(side: str) -> List[Part]:
    out: List[Part] = []
    for piece in _split_top(side, (" + ", " || ") + SEPARATORS):
        _parts(piece, out)
    return [p for p in out if p.kind == "name"]


def _target_names(target: str) -> Tuple[str, ...]:
    """ONNX-looking names in the layer a reformat serves (the target may be a fused layer)."""
    names: List[str] = []
    for part in split_name(target):
        if part.kind == "name":
            names.append(part.name)
        elif part.kind == "range":
            names.extend(part.ends or (part.name,))
        elif part.kind in ("internal", "reformat") and part.name:
            names.extend(part.ends or (part.name,))
    return tuple(dict.fromkeys(names))


def _parts(piece: str, out: List[Part]) -> None:
    if piece.startswith("PWN(") and piece.endswith(")"):
        for inner in _split_top(piece[4:-1], (", ", ",", " + ")):
            _parts(inner, out)
        return
    m = _FOREIGN.match(piece)
    if m:
        out.append(_range(m.group(1)))
        return
    m = _REFORMAT_COPY.match(piece) or _REFORMATTER.match(piece)
    if m:
        target = m.group(1).strip()
        out.append(Part("reformat", target, None, _target_names(target)))
        return
    if piece.startswith(_INTERNAL_PREFIX):
        out.append(Part("internal", ""))
        return
    m = _HELPER.match(piece) or _COPY.match(piece)
    if m:
        target = m.group(1).strip()
        out.append(Part("internal", target, None, _target_names(target)))
        return
    m = _MYL_SUFFIX.search(piece)
    if m and m.start() > 0:
        piece = piece[:m.start()]
    out.append(Part("name", piece))


def split_name(name: str) -> List[Part]:
    """The parts of an engine layer name (``[profile N]`` markers removed first).

    A format conversion (``Reformatting CopyNode for Input Tensor 0 to Conv_0 + Relu_1``) is
    recognised before the name is split at ``" + "``: it is one ``"reformat"`` part whose
    ``ends`` are the names of the layer it serves. A Myelin range's ends are split too
    (``{ForeignNode[a + b...c + d]}`` runs from ``a`` to ``d``; ``ends`` lists ``a, b, c, d``).

    Examples
    --------
    >>> [p.name for p in split_name("w + QuantizeLinear_7 + Conv_9 + PWN(Clip_13)")]
    ['w', 'QuantizeLinear_7', 'Conv_9', 'Clip_13']
    >>> split_name("{ForeignNode[/a/MatMul.../b/Add]}")[0]
    Part(kind='range', name='/a/MatMul', last='/b/Add', ends=('/a/MatMul', '/b/Add'))
    >>> split_name("Reformatting CopyNode for Input Tensor 0 to Conv_0 + Relu_1")
    [Part(kind='reformat', name='Conv_0 + Relu_1', last=None, ends=('Conv_0', 'Relu_1'))]
    """
    base, _ = shape_profile(name)
    out: List[Part] = []
    m = _REFORMAT_COPY.match(base) or _REFORMATTER.match(base)
    if m:
        target = m.group(1).strip()
        return [Part("reformat", target, None, _target_names(target))]
    for piece in _split_top(base, (" + ", " || ") + SEPARATORS):
        _parts(piece, out)
    return out


def looks_constant(name: str) -> bool:
    """Whether a name part looks like an initializer rather than a node (used without a model).

    Matches PyTorch's parameter names (``features.0.0.weight``, ``classifier.1.bias``),
    ``onnx::`` initializer names and TensorRT's ``*_output`` constant tensors.
    """
    return bool(_CONST_SUFFIX.search(name)) or name.startswith("onnx::") or name.endswith("_output")


def visible(text: str) -> str:
    """``text`` with control characters shown as escapes (``\\x1e``, ``\\n``), for labels."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)
