"""Align the layers of two engines built from the same network (FP16 vs INT8, two exports).

Layer names are a poor key: two exports of one model name their nodes differently (the FP16 and
QAT TensorFlow ResNet-50 engines of trex's examples share 18 of 311 node names), and precision
changes which reformats TensorRT inserts. :func:`align_engines` therefore pairs layers in two
passes:

1. **ONNX nodes**, where both layers list them exactly (``Metadata``, or a report resolved
   against its model): layers sharing the most nodes (Jaccard) are paired.
2. **Topology and signature** for the rest: the running, non-reformat layers of each engine in
   topological order (through their tensors, elided layers bypassed) are aligned as two
   sequences of signatures (op family, output shape, kernel, stride, groups, output maps) with
   :class:`difflib.SequenceMatcher`; gaps between matched runs are aligned again on the op
   family and output shape only.
"""

from __future__ import annotations

import difflib
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pandas as pd

from trtlab.backends.tensorrt.layers.card import _is_report, elided_alias
from trtlab.errors import FusionError

__all__ = ["align_engines", "Alignment", "layer_signature"]

_FAMILIES = [
    (re.compile(r"conv|gemm", re.I), "conv"), (re.compile(r"pool", re.I), "pool"),
    (re.compile(r"softmax", re.I), "softmax"), (re.compile(r"myelin", re.I), "myelin"),
    (re.compile(r"shuffle|reshape|transpose", re.I), "shuffle"),
    (re.compile(r"pointwise|elementwise|activation|scale", re.I), "pointwise"),
    (re.compile(r"slice|padding|pad", re.I), "pad/slice"),
    (re.compile(r"matrixmultiply|matmul", re.I), "conv"),
]


def _family(layer_type: str, parameter_type: str) -> str:
    for text in (parameter_type, layer_type):
        for pattern, name in _FAMILIES:
            if text and pattern.search(text):
                return name
    return (parameter_type or layer_type or "?").lower()


def layer_signature(row: Any, *, loose: bool = False) -> Tuple[Any, ...]:
    """What identifies a layer across builds: op family and output shape (and, unless
    ``loose``, kernel, stride, groups and output maps from the layer's attributes)."""
    fam = _family(str(row["layer_type"]), str(row["parameter_type"]))
    shape = tuple(row["output_shapes"][0]) if row["output_shapes"] and \
        row["output_shapes"][0] is not None else ()
    if loose:
        return (fam, shape)
    attrs = row["attributes"] or {}
    extra = tuple(tuple(v) if isinstance(v, list) else v
                  for v in (attrs.get("Kernel"), attrs.get("Stride"), attrs.get("Groups"),
                            attrs.get("OutMaps")))
    return (fam, shape) + extra


@dataclass(frozen=True)
class Alignment:
    """Result of :func:`align_engines`.

    Attributes
    ----------
    pairs : pandas.DataFrame
        One row per layer of either engine: ``layer_a`` / ``name_a`` / ``layer_type_a`` /
        ``precision_a`` / ``ms_a`` and the same with ``_b`` (NaN / empty on the side without a
        partner), ``how`` (``onnx nodes``, ``signature``, ``family``, or ``unmatched``) and
        ``signature``.
    labels : tuple of str
        The two reports' labels.
    running : tuple of int
        Running layers of each engine.
    matched : int
        Layer pairs found.
    """

    pairs: pd.DataFrame
    labels: Tuple[str, str]
    running: Tuple[int, int]
    matched: int

    @property
    def coverage(self) -> float:
        """Matched pairs over the running layers of the larger engine."""
        top = max(self.running)
        return self.matched / top if top else math.nan

    def summary(self) -> pd.DataFrame:
        """Pairs by how they were found, and the coverage."""
        counts = self.pairs["how"].value_counts()
        rows = [{"how": k, "rows": int(v)} for k, v in counts.items()]
        rows.append({"how": "coverage", "rows": round(self.coverage, 4)})
        return pd.DataFrame(rows, columns=["how", "rows"])

    def __repr__(self) -> str:
        return (f"Alignment({self.labels[0]!r} vs {self.labels[1]!r}: {self.matched} layer pairs,"
                f" {self.coverage:.0%} of {max(self.running)} running layers)")


def _topological(report: Any) -> List[int]:
    """Running layers in a topological order of the layer graph (engine order breaks ties)."""
    from trtlab.model import _stable_order

    layers = report.layers
    real = elided_alias(layers)
    run = layers[layers["runs"].astype(bool)]
    ids = [int(x) for x in run["layer"]]
    producer: Dict[str, int] = {}
    for i, row in enumerate(run.itertuples(index=False)):
        for out in row.outputs:
            producer[real(out)] = i
    deps = [{producer[real(t)] for t in row.inputs if real(t) in producer} - {i}
            for i, row in enumerate(run.itertuples(index=False))]
    order = _stable_order(deps)
    if len(order) < len(deps):  # a cycle through aliases: fall back to engine order
        order += [i for i in range(len(deps)) if i not in set(order)]
    return [ids[i] for i in order]


def _exact_nodes(report: Any, row: Any) -> bool:
    return bool(row["onnx_nodes"]) and (row["mapping"] == "metadata" or bool(report.node_order))


def align_engines(a: Any, b: Any) -> Alignment:
    """Pair the layers of two engines of the same network.

    Parameters
    ----------
    a, b
        Post-fusion :class:`~trtlab.backends.tensorrt.layers.FusionReport` objects.

    Returns
    -------
    Alignment
        ``pairs`` (one row per layer of either engine), ``coverage``, ``summary()``.

    Raises
    ------
    FusionError
        When either argument is not a FusionReport.
    """
    for x in (a, b):
        if not _is_report(x):
            raise FusionError(f"align_engines() needs two FusionReports, got {type(x).__name__}.")
    la, lb = a.layers.set_index("layer", drop=False), b.layers.set_index("layer", drop=False)
    order_a, order_b = _topological(a), _topological(b)
    pairs: Dict[int, Tuple[int, str]] = {}

    # 1. exact ONNX nodes on both sides
    node_b: Dict[str, List[int]] = defaultdict(list)
    for i in order_b:
        if _exact_nodes(b, lb.loc[i]) and lb.loc[i, "kind"] != "reformat":
            for n in lb.loc[i, "onnx_nodes"]:
                node_b[n].append(i)
    taken_b: set = set()
    for i in order_a:
        row = la.loc[i]
        if row["kind"] == "reformat" or not _exact_nodes(a, row):
            continue
        nodes_a = set(row["onnx_nodes"])
        cands = {j for n in nodes_a for j in node_b.get(n, ()) if j not in taken_b}
        best, score = None, 0.0
        for j in cands:
            nodes_b = set(lb.loc[j, "onnx_nodes"])
            s = len(nodes_a & nodes_b) / len(nodes_a | nodes_b)
            if s > score:
                best, score = j, s
        if best is not None:
            pairs[i] = (best, "onnx nodes")
            taken_b.add(best)

    # 2. topology + signature on what is left
    rest_a = [i for i in order_a if i not in pairs and la.loc[i, "kind"] != "reformat"]
    rest_b = [j for j in order_b if j not in taken_b and lb.loc[j, "kind"] != "reformat"]
    _sequence_pairs(rest_a, rest_b, la, lb, pairs, taken_b)
    for loose in (False, True):
        _nearest_pairs(order_a, order_b, la, lb, pairs, taken_b, loose=loose)
    # reformats: pair those serving paired layers, by position in topological order
    ref_a = [i for i in order_a if la.loc[i, "kind"] == "reformat"]
    ref_b = [j for j in order_b if lb.loc[j, "kind"] == "reformat" and j not in taken_b]
    _sequence_pairs(ref_a, ref_b, la, lb, pairs, taken_b, loose_only=True)

    rows = []
    sig = {i: layer_signature(la.loc[i]) for i in order_a}
    for i in order_a:
        j, how = pairs.get(i, (None, "unmatched"))
        rows.append(_row(la.loc[i], lb.loc[j] if j is not None else None, how, sig[i]))
    for j in order_b:
        if j not in taken_b:
            rows.append(_row(None, lb.loc[j], "unmatched", layer_signature(lb.loc[j])))
    frame = pd.DataFrame(rows, columns=["layer_a", "name_a", "layer_type_a", "precision_a",
                                        "ms_a", "layer_b", "name_b", "layer_type_b",
                                        "precision_b", "ms_b", "how", "signature"])
    return Alignment(pairs=frame, labels=(a.label, b.label),
                     running=(len(order_a), len(order_b)), matched=len(pairs))


def _nearest_pairs(order_a: Sequence[int], order_b: Sequence[int], la: pd.DataFrame,
                   lb: pd.DataFrame, pairs: Dict[int, Tuple[int, str]], taken_b: set,
                   *, loose: bool, window: float = 0.1) -> None:
    """Pair layers left over with an equal signature at about the same topological depth
    (relative position within ``window``): branches TensorRT fused the other way round."""
    pos_a = {i: k / max(len(order_a) - 1, 1) for k, i in enumerate(order_a)}
    pos_b = {j: k / max(len(order_b) - 1, 1) for k, j in enumerate(order_b)}
    free_b: Dict[Tuple[Any, ...], List[int]] = defaultdict(list)
    for j in order_b:
        if j not in taken_b and lb.loc[j, "kind"] != "reformat":
            free_b[layer_signature(lb.loc[j], loose=loose)].append(j)
    for i in order_a:
        if i in pairs or la.loc[i, "kind"] == "reformat":
            continue
        cands = [j for j in free_b.get(layer_signature(la.loc[i], loose=loose), ())
                 if j not in taken_b and abs(pos_b[j] - pos_a[i]) <= window]
        if cands:
            j = min(cands, key=lambda c: abs(pos_b[c] - pos_a[i]))
            pairs[i] = (j, "family" if loose else "signature")
            taken_b.add(j)


def _sequence_pairs(rest_a: Sequence[int], rest_b: Sequence[int], la: pd.DataFrame,
                    lb: pd.DataFrame, pairs: Dict[int, Tuple[int, str]], taken_b: set,
                    loose_only: bool = False) -> None:
    if not rest_a or not rest_b:
        return
    if not loose_only:
        sa = [layer_signature(la.loc[i]) for i in rest_a]
        sb = [layer_signature(lb.loc[j]) for j in rest_b]
        blocks = difflib.SequenceMatcher(None, sa, sb, autojunk=False).get_matching_blocks()
    else:
        blocks = [difflib.Match(0, 0, 0), difflib.Match(len(rest_a), len(rest_b), 0)]
        blocks = [b for b in blocks]
    prev_a = prev_b = 0
    for blk in blocks:
        gap_a, gap_b = rest_a[prev_a:blk.a], rest_b[prev_b:blk.b]
        if gap_a and gap_b:
            la_sig = [layer_signature(la.loc[i], loose=True) for i in gap_a]
            lb_sig = [layer_signature(lb.loc[j], loose=True) for j in gap_b]
            for g in difflib.SequenceMatcher(None, la_sig, lb_sig,
                                             autojunk=False).get_matching_blocks():
                for k in range(g.size):
                    i, j = gap_a[g.a + k], gap_b[g.b + k]
                    pairs[i] = (j, "family")
                    taken_b.add(j)
        for k in range(blk.size):
            i, j = rest_a[blk.a + k], rest_b[blk.b + k]
            pairs[i] = (j, "signature")
            taken_b.add(j)
        prev_a, prev_b = blk.a + blk.size, blk.b + blk.size


def _row(ra: Optional[pd.Series], rb: Optional[pd.Series], how: str,
         signature: Tuple[Any, ...]) -> Dict[str, Any]:
    def side(r: Optional[pd.Series]) -> List[Any]:
        if r is None:
            return [math.nan, "", "", "", math.nan]
        ms = float(r["average_ms"]) if "average_ms" in r.index else math.nan
        return [int(r["layer"]), r["name"], r["layer_type"], r["precision"], ms]

    va, vb = side(ra), side(rb)
    return dict(zip(["layer_a", "name_a", "layer_type_a", "precision_a", "ms_a",
                     "layer_b", "name_b", "layer_type_b", "precision_b", "ms_b", "how",
                     "signature"], va + vb + [how, signature]))
