"""The engine report card: what an engine spends its time and memory on, as DataFrames.

:func:`report_card` turns a post-fusion :class:`~trtlab.backends.tensorrt.layers.FusionReport` into an
:class:`EngineCard`: latency and count by layer type, precision weighted by time, reformat
overhead, memory per layer, convolution statistics, build and device metadata (from the
``.metadata.json`` files trex and ``trtexec`` write beside the layer JSON) and a summary. Every
table counts the layers that run (``FusionReport.layers["runs"]``); elided layers appear only as
counts. :func:`engine_graph` gives the engine as a graph of layers and tensors. Drawing lives in
:mod:`trtlab.viz.engine_card`.

Examples
--------
>>> from trtlab.fusion import fusion                                    # doctest: +SKIP
>>> from trtlab.backends.tensorrt.layers.card import report_card
>>> path = "resnet.engine.graph.json"
>>> card = report_card(fusion(path, profile="resnet.engine.profile.json"), metadata=path)
>>> card.by_layer_type          # time and count per layer type
>>> card.reformat_summary       # what format conversions cost
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import pandas as pd

from trtlab.errors import FusionError

log = logging.getLogger(__name__)

__all__ = ["EngineCard", "report_card", "engine_metadata", "engine_graph", "layer_memory",
           "convolutions", "reformats", "BYTES_PER_ELEMENT"]

#: Bytes per element of each precision name (as :func:`~trtlab.backends.tensorrt.layers.inspector.precision_of`
#: reports it, and of the weight types the JSON names).
BYTES_PER_ELEMENT: Dict[str, float] = {
    "FP64": 8, "FP32": 4, "INT64": 8, "INT32": 4, "FP16": 2, "BF16": 2, "INT8": 1, "UINT8": 1,
    "FP8": 1, "BOOL": 1, "INT4": 0.5, "FP4": 0.5, "Float": 4, "Half": 2, "Int8": 1,
    "Int32": 4, "Int64": 8, "BFloat16": 2, "FP8E4M3": 1, "Bool": 1, "UInt8": 1, "Double": 8,
}
_METADATA_SUFFIXES = {
    "build": ".build.metadata.json",
    "profile": ".profile.metadata.json",
    "device": ".metadata.json",
}
_GRAPH_SUFFIXES = (".graph.json", ".layers.json", ".layer.json", ".json")
_CONV_TYPES = re.compile(r"Conv|Deconv", re.I)


@dataclass(frozen=True)
class EngineCard:
    """The engine report card (see :func:`report_card`); every field is a DataFrame.

    Attributes
    ----------
    label : str
        The report's label.
    summary : pandas.DataFrame
        ``item`` / ``value``: layers listed, running, elided, reformats, total time, weights and
        activation bytes, precisions, inputs and outputs.
    by_layer_type : pandas.DataFrame
        Per ``layer_type``: ``layers`` (running), ``elided``, ``average_ms``, ``time_share``
        (fraction of the engine time), sorted by time.
    precision : pandas.DataFrame
        Per ``precision`` of the running layers: ``layers``, ``average_ms``, ``time_share``.
    reformats : pandas.DataFrame
        One row per format conversion that runs (:func:`reformats`).
    reformat_summary : pandas.DataFrame
        Per ``conversion`` (``FP32->FP16``, ``format only``, ...): ``layers``, ``average_ms``,
        ``time_share``; the last row, ``TOTAL``, is the whole reformat overhead.
    memory : pandas.DataFrame
        Per running layer: ``activation_bytes``, ``weight_bytes`` (:func:`layer_memory`).
    convolutions : pandas.DataFrame
        Per convolution layer: kernel, stride, groups, MACs, time (:func:`convolutions`).
    metadata : pandas.DataFrame
        ``section`` / ``key`` / ``value`` from the ``.metadata.json`` files (empty when none).
    has_profile : bool
        Whether times were joined (time columns are NaN without).
    """

    label: str
    summary: pd.DataFrame
    by_layer_type: pd.DataFrame
    precision: pd.DataFrame
    reformats: pd.DataFrame
    reformat_summary: pd.DataFrame
    memory: pd.DataFrame
    convolutions: pd.DataFrame
    metadata: pd.DataFrame
    has_profile: bool

    def _repr_html_(self) -> str:
        parts = [f"<b>Engine report card</b> {self.label}", self.summary.to_html(index=False)]
        for title, frame in (("By layer type", self.by_layer_type),
                             ("Precision (by time)", self.precision),
                             ("Reformat overhead", self.reformat_summary)):
            parts.append(f"<h4>{title}</h4>" + frame.to_html(index=False))
        return "".join(parts)


# -- metadata ------------------------------------------------------------------------------------
def _stem(path: Path) -> str:
    name = path.name
    for suffix in list(_METADATA_SUFFIXES.values()) + list(_GRAPH_SUFFIXES):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _flatten(section: str, obj: Any, prefix: str = "") -> List[Dict[str, Any]]:
    rows: List[Dict[str, Any]] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                rows += _flatten(section, value, f"{name}.")
            else:
                rows.append({"section": section, "key": name, "value": _scalar(value)})
    elif isinstance(obj, list) and obj and all(isinstance(x, dict) for x in obj):
        for i, item in enumerate(obj):
            rows += _flatten(section, item, f"{prefix}{i}." if len(obj) > 1 else prefix)
    else:
        rows.append({"section": section, "key": prefix.rstrip(".") or section,
                     "value": _scalar(obj)})
    return rows


def _scalar(value: Any) -> Any:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return value


def engine_metadata(path: Union[str, os.PathLike]) -> pd.DataFrame:
    """Build options, device and timing summary recorded beside an engine's layer JSON.

    trex and its ``process_engine.py`` (``trtexec``) write, next to ``X.graph.json``:
    ``X.build.metadata.json`` (model and build options), ``X.profile.metadata.json`` (device
    information, inference options, performance summary) and ``X.metadata.json`` (CUDA device
    properties). ``path`` is the layer JSON (its siblings are read) or one metadata file.

    Returns
    -------
    pandas.DataFrame
        Columns ``section`` (``build``, ``profile``, ``device``), ``key`` (nested keys joined
        by ``.``), ``value`` and ``file``; empty when no metadata file exists.

    Raises
    ------
    FusionError
        When a metadata file exists but is not JSON.
    """
    path = Path(path)
    found: Dict[str, Path] = {}
    if path.name.endswith(".metadata.json") and path.is_file():
        for section, suffix in _METADATA_SUFFIXES.items():
            if path.name.endswith(suffix):
                found[section] = path
                break
    else:
        stem = _stem(path)
        for section, suffix in _METADATA_SUFFIXES.items():
            candidate = path.with_name(stem + suffix)
            if candidate.is_file():
                found[section] = candidate
    rows: List[Dict[str, Any]] = []
    for section, file in found.items():
        try:
            doc = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FusionError(f"Engine metadata file {file} is not JSON ({exc}). Pass the files "
                              "trex / trtexec wrote, unmodified.") from None
        for row in _flatten(section, doc):
            row["file"] = file.name
            rows.append(row)
    return pd.DataFrame(rows, columns=["section", "key", "value", "file"])


# -- per-layer tables ----------------------------------------------------------------------------
def _elements(shape: Any) -> float:
    if not shape:
        return math.nan
    n = 1
    for d in shape:
        if d is None or int(d) < 0:
            return math.nan
        n *= int(d)
    return float(n)


def _tensor_bytes(shapes: Sequence[Any], formats: Sequence[str]) -> float:
    from trtlab.backends.tensorrt.layers.inspector import precision_of

    total = 0.0
    for shape, fmt in zip(shapes, formats):
        size = BYTES_PER_ELEMENT.get(precision_of(None, fmt), math.nan)
        total += _elements(shape) * size
    return total


def _weight_bytes(attrs: Dict[str, Any]) -> float:
    total, seen = 0.0, False
    for key in ("Weights", "Bias"):
        w = attrs.get(key)
        if isinstance(w, dict) and "Count" in w:
            seen = True
            total += float(w["Count"]) * BYTES_PER_ELEMENT.get(str(w.get("Type", "")), 4)
    return total if seen else math.nan


def _times(layers: pd.DataFrame) -> pd.Series:
    if "average_ms" in layers.columns:
        return layers["average_ms"].astype(float)
    return pd.Series([math.nan] * len(layers), index=layers.index, dtype=float)


def layer_memory(report: Any) -> pd.DataFrame:
    """Memory each running layer touches: activations it reads and writes, weights it holds.

    ``activation_bytes`` is the sum over the layer's input and output tensors of elements times
    bytes per element of the tensor's format (vectorized formats' channel padding not counted;
    NaN for dynamic shapes); ``weight_bytes`` is ``Weights`` + ``Bias`` ``Count`` times the size
    of their ``Type`` (NaN when the JSON has no weight counts, e.g. layers without weights or
    engines whose JSON omits them).
    """
    run = report.running
    rows = []
    for row in run.itertuples(index=False):
        rows.append({"layer": row.layer, "name": row.name, "layer_type": row.layer_type,
                     "precision": row.precision,
                     "input_bytes": _tensor_bytes(row.input_shapes, row.input_formats),
                     "output_bytes": _tensor_bytes(row.output_shapes, row.output_formats),
                     "weight_bytes": _weight_bytes(row.attributes or {})})
    frame = pd.DataFrame(rows, columns=["layer", "name", "layer_type", "precision",
                                        "input_bytes", "output_bytes", "weight_bytes"])
    frame.insert(6, "activation_bytes", frame["input_bytes"] + frame["output_bytes"])
    return frame


def _pair(value: Any) -> Optional[Tuple[int, ...]]:
    if isinstance(value, list) and value:
        return tuple(int(v) for v in value)
    if isinstance(value, (int, float)):
        return (int(value),)
    return None


def convolutions(report: Any) -> pd.DataFrame:
    """Convolution layers that run, with their geometry, work and speed.

    A layer is a convolution when its ``ParameterType`` is ``Convolution`` /
    ``Deconvolution`` or its ``LayerType`` names one (``CaskConvolution``,
    ``CudaDepthwiseConvolution``, ``ConvActPool`` ...). ``macs`` = output elements x
    input channels / groups x kernel area (NaN when a field is missing); ``tflops`` =
    ``2 * macs`` per second of ``average_ms``; ``depthwise`` when ``groups`` equals the input
    channels.
    """
    run = report.running
    times = _times(run)
    rows = []
    for (_, row), ms in zip(run.iterrows(), times):
        if not (_CONV_TYPES.search(str(row["parameter_type"]))
                or _CONV_TYPES.search(str(row["layer_type"]))):
            continue
        attrs = row["attributes"] or {}
        kernel = _pair(attrs.get("Kernel"))
        groups = int(attrs.get("Groups", 1) or 1)
        in_shape = row["input_shapes"][0] if row["input_shapes"] else None
        out_shape = row["output_shapes"][0] if row["output_shapes"] else None
        in_ch = int(in_shape[1]) if in_shape and len(in_shape) > 1 else None
        out_maps = attrs.get("OutMaps")
        out_elems = _elements(out_shape)
        macs = math.nan
        if kernel and in_ch and not math.isnan(out_elems):
            area = 1
            for k in kernel:
                area *= k
            macs = out_elems * (in_ch / groups) * area
        rows.append({
            "layer": row["layer"], "name": row["name"], "layer_type": row["layer_type"],
            "precision": row["precision"], "kernel": kernel, "stride": _pair(attrs.get("Stride")),
            "dilation": _pair(attrs.get("Dilation")), "groups": groups,
            "in_channels": in_ch, "out_maps": out_maps, "input_shape": in_shape,
            "output_shape": out_shape, "depthwise": bool(in_ch and groups == in_ch and groups > 1),
            "activation": str(attrs.get("Activation", "") or ""), "tactic": row["tactic"],
            "macs": macs, "weight_bytes": _weight_bytes(attrs), "average_ms": ms,
            "tflops": (2 * macs / (ms * 1e-3) / 1e12) if ms and ms > 0 and not math.isnan(macs)
            else math.nan,
        })
    cols = ["layer", "name", "layer_type", "precision", "kernel", "stride", "dilation", "groups",
            "in_channels", "out_maps", "input_shape", "output_shape", "depthwise", "activation",
            "tactic", "macs", "weight_bytes", "average_ms", "tflops"]
    return pd.DataFrame(rows, columns=cols)


def reformats(report: Any) -> pd.DataFrame:
    """The format conversions that run: what they convert, for which layer, at what cost.

    Columns: ``layer``, ``name``, ``layer_type``, ``origin`` (``REFORMAT``, ``QDQ``, ...),
    ``serves`` (the nodes of the layer it feeds or drains, or the node it implements),
    ``side`` (``input`` / ``output`` of that layer, from the name; empty otherwise),
    ``from_format`` / ``to_format``, ``from_precision`` / ``to_precision``, ``conversion``
    (``FP32->FP16`` or ``format only``) and ``average_ms``.
    """
    from trtlab.backends.tensorrt.layers.inspector import precision_of

    run = report.running
    run = run[run["kind"] == "reformat"]
    times = _times(run)
    rows = []
    for (_, row), ms in zip(run.iterrows(), times):
        name = str(row["name"])
        side = ("input" if "for Input Tensor" in name else
                "output" if "for Output Tensor" in name else "")
        src = row["input_formats"][0] if row["input_formats"] else ""
        dst = row["output_formats"][0] if row["output_formats"] else ""
        p_in, p_out = precision_of(None, src), precision_of(None, dst)
        serves = tuple(row["related_nodes"]) or tuple(row["onnx_nodes"])
        rows.append({"layer": row["layer"], "name": name, "layer_type": row["layer_type"],
                     "origin": row["origin"], "serves": serves, "side": side,
                     "from_format": src, "to_format": dst, "from_precision": p_in,
                     "to_precision": p_out,
                     "conversion": f"{p_in}->{p_out}" if p_in != p_out else "format only",
                     "average_ms": ms})
    cols = ["layer", "name", "layer_type", "origin", "serves", "side", "from_format",
            "to_format", "from_precision", "to_precision", "conversion", "average_ms"]
    return pd.DataFrame(rows, columns=cols)


def _grouped(frame: pd.DataFrame, key: str, total_ms: float) -> pd.DataFrame:
    if frame.empty:
        return pd.DataFrame(columns=[key, "layers", "average_ms", "time_share"])
    out = frame.groupby(key, sort=False).agg(layers=("layer", "size"),
                                             average_ms=("average_ms", "sum"))
    out = out.reset_index()
    out["time_share"] = out["average_ms"] / total_ms if total_ms > 0 else math.nan
    return out.sort_values(["average_ms", "layers"], ascending=False, na_position="last",
                           ignore_index=True)


def report_card(report: Any, *, metadata: Union[str, os.PathLike, None] = None) -> EngineCard:
    """The engine report card of a post-fusion report.

    Parameters
    ----------
    report
        A :class:`~trtlab.backends.tensorrt.layers.FusionReport` (from :func:`~trtlab.backends.tensorrt.layers.fusion`; with
        ``profile=`` for the time columns).
    metadata
        The engine's layer JSON path (the ``.build.metadata.json``, ``.profile.metadata.json``
        and ``.metadata.json`` beside it are read) or one metadata file; ``None`` for none.

    Returns
    -------
    EngineCard

    Raises
    ------
    FusionError
        When ``report`` is not a FusionReport, or a metadata file is not JSON.
    """
    if not _is_report(report):
        raise FusionError(f"report_card() needs a FusionReport (trtlab.fusion(...)), got "
                          f"{type(report).__name__}.")
    layers = report.layers
    run = report.running
    times = _times(run)
    total_ms = float(times.sum(skipna=True)) if report.has_profile else math.nan
    timed = run.assign(average_ms=times)

    by_type = _grouped(timed, "layer_type", total_ms)
    elided = layers[~layers["runs"].astype(bool)]["layer_type"].value_counts()
    extra = [t for t in elided.index if t not in set(by_type["layer_type"])]
    if extra:
        by_type = pd.concat([by_type, pd.DataFrame({"layer_type": extra, "layers": 0,
                                                    "average_ms": 0.0, "time_share": 0.0})],
                            ignore_index=True)
    by_type.insert(2, "elided", [int(elided.get(t, 0)) for t in by_type["layer_type"]])

    precision = _grouped(timed, "precision", total_ms)
    refs = reformats(report)
    ref_summary = _grouped(refs, "conversion", total_ms)
    ref_total = pd.DataFrame([{"conversion": "TOTAL", "layers": len(refs),
                               "average_ms": float(refs["average_ms"].sum(skipna=True))
                               if report.has_profile else math.nan}])
    ref_total["time_share"] = (ref_total["average_ms"] / total_ms
                               if report.has_profile and total_ms > 0 else math.nan)
    ref_summary = pd.concat([ref_summary, ref_total], ignore_index=True)
    memory = layer_memory(report)
    convs = convolutions(report)
    meta = engine_metadata(metadata) if metadata is not None else pd.DataFrame(
        columns=["section", "key", "value", "file"])

    io = report.io_tensors
    items = [
        ("layers listed", len(layers)), ("layers running", len(run)),
        ("layers elided", len(layers) - len(run)), ("reformats running", len(refs)),
        ("convolutions", len(convs)),
        ("total average ms", round(total_ms, 6) if report.has_profile else "no profile"),
        ("reformat share of time", round(float(ref_total["time_share"].iloc[0]), 4)
         if report.has_profile and total_ms > 0 else "no profile"),
        ("weights MB", round(float(memory["weight_bytes"].sum(skipna=True)) / 2**20, 3)),
        ("activations MB (layer I/O, summed)",
         round(float(memory["activation_bytes"].sum(skipna=True)) / 2**20, 3)),
        ("precisions (running layers)",
         ", ".join(f"{k} {v}" for k, v in run["precision"].value_counts().items())),
        ("inputs", ", ".join(f"{n} {tuple(s) if s is not None else ''} {p}".strip()
                             for n, m, s, p in zip(io["name"], io["mode"], io["shape"],
                                                   io["precision"]) if m == "Input")),
        ("outputs", ", ".join(f"{n} {tuple(s) if s is not None else ''} {p}".strip()
                              for n, m, s, p in zip(io["name"], io["mode"], io["shape"],
                                                    io["precision"]) if m == "Output")),
        ("source", report.source),
    ]
    for key in ("Name", "ComputeCapability", "Selected Device", "Compute Capability",
                "Precision", "Throughput"):
        hit = meta[meta["key"].astype(str).str.endswith(key)] if len(meta) else meta
        if len(hit):
            items.append((f"{hit['section'].iloc[0]}: {hit['key'].iloc[0]}", hit["value"].iloc[0]))
    summary = pd.DataFrame(items, columns=["item", "value"])
    summary["value"] = summary["value"].astype(str)
    return EngineCard(label=report.label, summary=summary, by_layer_type=by_type,
                      precision=precision, reformats=refs, reformat_summary=ref_summary,
                      memory=memory, convolutions=convs, metadata=meta,
                      has_profile=report.has_profile)


# -- graph ---------------------------------------------------------------------------------------
def engine_graph(report: Any, *, include_elided: bool = False) -> Any:
    """The engine as a directed graph of layers and tensors (networkx ``DiGraph``).

    Layer nodes are ``("layer", index)`` with attributes ``kind="layer"``, ``name``,
    ``layer_type``, ``precision``, ``average_ms`` (NaN without a profile), ``runs``, ``reformat``;
    tensor nodes are ``("tensor", name)`` with ``kind="tensor"``, ``shape``, ``format``,
    ``precision``, ``io`` (``Input`` / ``Output`` / ``""``). Edges go tensor -> consuming layer
    and layer -> produced tensor. Elided layers (``runs`` False) are bypassed unless
    ``include_elided``: their outputs are read as their inputs, as trex does.
    """
    import networkx as nx

    from trtlab.backends.tensorrt.layers.inspector import precision_of

    layers = report.layers
    times = _times(layers)
    real = (lambda name: name) if include_elided else elided_alias(layers)

    io_mode = dict(zip(report.io_tensors["name"], report.io_tensors["mode"]))
    g = nx.DiGraph(label=report.label)
    for (_, row), ms in zip(layers.iterrows(), times):
        if not include_elided and not row["runs"]:
            continue
        node = ("layer", int(row["layer"]))
        g.add_node(node, kind="layer", name=row["name"], layer_type=row["layer_type"],
                   precision=row["precision"], average_ms=float(ms), runs=bool(row["runs"]),
                   reformat=row["kind"] == "reformat")
        for names, shapes, formats, is_input in (
                (row["inputs"], row["input_shapes"], row["input_formats"], True),
                (row["outputs"], row["output_shapes"], row["output_formats"], False)):
            for name, shape, fmt in zip(names, shapes, formats):
                tname = real(name)
                tnode = ("tensor", tname)
                if tnode not in g:
                    g.add_node(tnode, kind="tensor", name=tname, shape=shape, format=fmt,
                               precision=precision_of(None, fmt), io=io_mode.get(tname, ""))
                if is_input:
                    g.add_edge(tnode, node)
                else:
                    g.add_edge(node, tnode)
    return g


def _is_report(value: Any) -> bool:
    """A FusionReport, checked by its shape (report.py imports this module, so not by class)."""
    return isinstance(getattr(value, "layers", None), pd.DataFrame) and hasattr(value, "onnx_to_layers")


def elided_alias(layers: Any) -> Callable[[str], str]:
    """``tensor -> the tensor it really is``: outputs of elided layers (``runs`` False) are read
    as their first input, as trex does, so the graph of running layers stays connected."""
    alias: Dict[str, str] = {}
    for row in layers[~layers["runs"].astype(bool)].itertuples(index=False):
        if len(row.inputs) >= 1:
            for out in row.outputs:
                alias[out] = row.inputs[0]

    def real(name: str) -> str:
        seen = set()
        while name in alias and name not in seen:
            seen.add(name)
            name = alias[name]
        return name

    return real
