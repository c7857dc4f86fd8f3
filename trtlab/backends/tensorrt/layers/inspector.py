"""Reading TensorRT's engine-inspector JSON and per-layer profile JSON.

Two layer-information schemas exist, both written by ``IEngineInspector`` with
``LayerInformationFormat.JSON`` (``trtexec --exportLayerInfo``):

* TensorRT 8.x-10.x: ``{"Layers": [...], "Bindings": ["in", "out"]}``; each layer tensor has
  ``"Format/Datatype"`` (e.g. ``"Row major linear FP32"``). TensorRT 8.0-8.2 may omit
  ``Bindings``.
* TensorRT 11.x: ``{"Layers": [...], "I/O Tensors": [{"Name", "IOMode", "DataType",
  "Dimensions", "Location", ...}]}``; the tensor's format and data type are separate fields
  (``"Format"``, ``"DataType"``).

Layers are dictionaries only when the engine was built with detailed profiling verbosity;
otherwise ``Layers`` is a list of names, which this module refuses with a message saying how to
rebuild. The profile (``trtexec --exportProfile``) is a list: a ``{"count": N}`` record, then one
record per layer with ``name``, ``timeMs``, ``averageMs``, ``medianMs`` and ``percentage``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from trtlab.errors import FusionError

__all__ = ["EngineJson", "read_json", "parse_engine_json", "parse_profile", "precision_of",
           "SCHEMA_TRT8_10", "SCHEMA_TRT11", "DETAILED_HINT"]

SCHEMA_TRT8_10 = "TensorRT 8.x-10.x"
SCHEMA_TRT11 = "TensorRT 11.x"

DETAILED_HINT = (
    "Rebuild the engine with detailed profiling verbosity: "
    "config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED in Python, or "
    "trtexec --profilingVerbosity=detailed --exportLayerInfo=layers.json; then export with "
    "inspector.get_engine_information(trt.LayerInformationFormat.JSON)."
)

_PRECISION_WORDS = [
    ("BFloat16", "BF16"), ("BF16", "BF16"), ("FP32", "FP32"), ("Float", "FP32"),
    ("FP16", "FP16"), ("Half", "FP16"), ("FP8", "FP8"), ("E4M3", "FP8"), ("FP4", "FP4"),
    ("E2M1", "FP4"), ("UInt8", "UINT8"), ("Int8", "INT8"), ("INT8", "INT8"), ("Int4", "INT4"),
    ("INT4", "INT4"), ("Int32", "INT32"), ("INT32", "INT32"), ("Int64", "INT64"),
    ("INT64", "INT64"), ("Bool", "BOOL"), ("BOOL", "BOOL"), ("Double", "FP64"),
]
_PRECISION_RE = re.compile(r"\b(" + "|".join(w for w, _ in _PRECISION_WORDS) + r")\b")
_PRECISION_MAP = dict(_PRECISION_WORDS)

Source = Union[str, bytes, bytearray, os.PathLike, dict, list]


def precision_of(datatype: Optional[str], fmt: Optional[str] = None) -> str:
    """Precision name (``FP32``, ``FP16``, ``INT8``, ...) from a data type and/or format string.

    >>> precision_of(None, "Thirty-two wide channel vectorized row major Int8 format")
    'INT8'
    >>> precision_of("Half", "Row major linear FP16 format (kLINEAR)")
    'FP16'
    """
    for text in (datatype, fmt):
        if text:
            m = _PRECISION_RE.search(str(text))
            if m:
                return _PRECISION_MAP[m.group(1)]
    return "UNKNOWN"


@dataclass(frozen=True)
class EngineJson:
    """A validated engine-inspector document."""

    schema: str
    layers: List[Dict[str, Any]]
    io_tensors: List[Dict[str, Any]]
    notes: Tuple[str, ...]


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        keys = list(obj)[:8]
        return f"an object with keys {keys}"
    if isinstance(obj, list):
        return f"a list of {len(obj)} items"
    return type(obj).__name__


def _decode_json(text: str, what: str) -> Any:
    text = text.lstrip("\ufeff")
    if not text.strip():
        raise FusionError(f"{what} is empty. Pass the JSON TensorRT's engine inspector wrote "
                          "(trtexec --exportLayerInfo=layers.json).")
    try:
        return json.loads(text, strict=False)
    except RecursionError:
        raise FusionError(f"{what} is nested too deeply to be engine-inspector JSON (TensorRT writes "
                          "a few levels). Pass the file TensorRT wrote, unmodified.") from None
    except json.JSONDecodeError as exc:
        end = len(text.rstrip())
        if exc.pos >= end - 1 or "Unterminated string" in exc.msg:
            raise FusionError(
                f"{what} ends unexpectedly at character {exc.pos} of {end} (line {exc.lineno}): "
                f"{exc.msg}. The file looks truncated; export it again and make sure the writer "
                "finished (trtexec writes it after the build and timing runs complete)."
            ) from None
        raise FusionError(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}. "
            "Pass the file TensorRT wrote, unmodified."
        ) from None


def _looks_like_json(data: Union[str, bytes]) -> bool:
    head = data[:64].lstrip() if isinstance(data, str) else data[:64].lstrip()
    if isinstance(head, bytes):
        head = head.lstrip(b"\xef\xbb\xbf")
        return head[:1] in (b"{", b"[")
    return head.lstrip("\ufeff")[:1] in ("{", "[")


def read_json(source: Source, what: str) -> Tuple[Any, str]:
    """Decode ``source`` (JSON text, bytes, a path, or an already decoded dict/list).

    Returns the document and a label for it (file stem, or ``what``).
    """
    if isinstance(source, (dict, list)):
        return source, what
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        try:
            return _decode_json(data.decode("utf-8"), what), what
        except UnicodeDecodeError as exc:
            raise FusionError(f"{what} is not UTF-8 text ({exc}). Pass the JSON file TensorRT "
                              "wrote, or the serialized engine as bytes to fusion().") from None
    if isinstance(source, str) and _looks_like_json(source):
        return _decode_json(source, what), what
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FusionError(
                f"{what}: no file at {str(path)!r} (and the text is not JSON: it does not start "
                "with '{' or '['). Pass JSON text, a dict, or the path of an existing file.")
        from trtlab import _io

        data = _io.read_bytes(path, limit=1 << 30, what=what, error=FusionError)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise FusionError(f"{what}: {path} is not UTF-8 text. Engine files (.engine/.plan) are "
                              "read by fusion() directly, not as profile JSON.") from None
        return _decode_json(text, f"{what} {path.name}"), path.stem
    raise FusionError(f"{what}: cannot read a {type(source).__name__}. Pass JSON text, bytes, a "
                      "path, or the decoded dict/list.")


def _name(value: Any, where: str, key: str = "Name") -> str:
    """A name field, which must be a non-empty string (``null`` would invent a layer "None")."""
    if not isinstance(value, str) or not value:
        raise FusionError(f"{where} has {key!r} = {value!r}; names must be non-empty strings. The "
                          "JSON was edited or is not from TensorRT's engine inspector.")
    return value


def _dims(value: Any, where: str) -> Optional[Tuple[int, ...]]:
    """``Dimensions``: a list of integers (-1 for dynamic), or absent."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                              for d in value):
        raise FusionError(f"{where} has 'Dimensions' = {str(value)[:80]}; expected a list of "
                          "integers. The JSON was edited or is not from TensorRT's engine inspector.")
    return tuple(value)


def _check_tensor(t: Any, where: str) -> Dict[str, Any]:
    if isinstance(t, dict) and "Name" in t:
        _name(t["Name"], where)
    if not isinstance(t, dict) or "Name" not in t:
        raise FusionError(f"{where} is {_describe(t)}, expected an object with 'Name', "
                          "'Dimensions' and 'Format/Datatype' (TensorRT 8-10) or 'Format' and "
                          "'DataType' (TensorRT 11). This is not an engine-inspector schema "
                          "trtlab knows.")
    if "Format/Datatype" in t:
        fmt, dtype = str(t["Format/Datatype"]), None
    elif "Format" in t or "DataType" in t or "Datatype" in t:
        fmt = str(t.get("Format", ""))
        dtype = t.get("DataType", t.get("Datatype"))
        dtype = None if dtype is None else str(dtype)
    else:
        raise FusionError(f"{where} ({t.get('Name')!r}) has keys {sorted(t)}; expected "
                          "'Format/Datatype' (TensorRT 8-10) or 'Format' + 'DataType' "
                          "(TensorRT 11). This engine-inspector schema is not known to trtlab.")
    shape = _dims(t.get("Dimensions"), f"{where} ({t['Name']!r})")
    return {"name": str(t["Name"]), "shape": shape, "format": fmt,
            "precision": precision_of(dtype, fmt)}


def parse_engine_json(doc: Any, what: str = "engine JSON") -> EngineJson:
    """Validate an engine-inspector document and normalise its layers.

    Raises
    ------
    FusionError
        Unknown schema, layers without detail, empty layer list, malformed layer or tensor.
    """
    notes: List[str] = []
    if isinstance(doc, dict) and "Layers" not in doc and {"Name", "LayerType"} <= set(doc):
        doc = {"Layers": [doc]}
        notes.append("single layer (IEngineInspector.get_layer_information output)")
    if isinstance(doc, list):
        if doc and isinstance(doc[0], dict) and ("count" in doc[0] or "averageMs" in doc[0]):
            raise FusionError(f"{what} is a per-layer profile (trtexec --exportProfile), not layer "
                              "information. Pass it as fusion(layers_json, profile=this).")
        raise FusionError(f"{what} is {_describe(doc)}; engine-inspector JSON is an object with "
                          "'Layers' (and 'Bindings' or 'I/O Tensors'). Unknown schema.")
    if not isinstance(doc, dict) or "Layers" not in doc:
        raise FusionError(
            f"{what} is {_describe(doc)}; expected engine-inspector JSON with 'Layers' and "
            "'Bindings' (TensorRT 8.x-10.x) or 'I/O Tensors' (TensorRT 11.x). Unknown schema: "
            "export it with trtexec --exportLayerInfo or "
            "IEngineInspector.get_engine_information(LayerInformationFormat.JSON).")
    layers = doc["Layers"]
    has_bindings, has_io = "Bindings" in doc, "I/O Tensors" in doc
    if has_bindings and has_io:
        raise FusionError(f"{what} has both 'Bindings' (TensorRT 8-10) and 'I/O Tensors' "
                          "(TensorRT 11): no TensorRT version writes both. Unknown schema.")
    if not isinstance(layers, list):
        raise FusionError(f"{what}: 'Layers' is {_describe(layers)}, expected a list.")
    if not layers:
        raise FusionError(f"{what} lists no layers. Was the engine built with profiling verbosity "
                          f"NONE? {DETAILED_HINT}")
    if all(isinstance(x, str) for x in layers):
        raise FusionError(
            f"{what} lists {len(layers)} layer names without detail (first: {layers[0]!r}): the "
            "engine was built with ProfilingVerbosity.LAYER_NAMES_ONLY, the default, so formats, "
            f"precisions and tactics are missing. {DETAILED_HINT}")
    if has_io:
        schema = SCHEMA_TRT11
        io = doc["I/O Tensors"]
        if not isinstance(io, list) or not all(isinstance(t, dict) and "Name" in t for t in io):
            raise FusionError(f"{what}: 'I/O Tensors' must be a list of objects with 'Name' "
                              f"(TensorRT 11 schema); got {_describe(io)}.")
        io_tensors = [{"name": _name(t["Name"], f"{what}: I/O tensor {j}"), "mode": str(t.get("IOMode", "")),
                       "shape": _dims(t.get("Dimensions"), f"{what}: I/O tensor {j}"),
                       "precision": precision_of(t.get("DataType", t.get("Datatype")), None),
                       "location": str(t.get("Location", ""))} for j, t in enumerate(io)]
    else:
        schema = SCHEMA_TRT8_10
        bindings = doc.get("Bindings", [])
        if not has_bindings:
            notes.append("no 'Bindings' field (TensorRT 8.0-8.2 omit it)")
        if not isinstance(bindings, list) or not all(isinstance(b, str) for b in bindings):
            raise FusionError(f"{what}: 'Bindings' must be a list of tensor names (TensorRT 8-10); "
                              f"got {_describe(bindings)}. Unknown schema.")
        io_tensors = [{"name": b, "mode": "", "shape": None, "precision": "", "location": ""}
                      for b in bindings]
    out: List[Dict[str, Any]] = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise FusionError(f"{what}: layer {i} is {_describe(layer)}; layers must all be "
                              f"objects (detailed verbosity). {DETAILED_HINT}")
        missing = [k for k in ("Name", "LayerType") if k not in layer]
        if missing:
            raise FusionError(f"{what}: layer {i} lacks {missing} (it has {sorted(layer)[:10]}). "
                              "Unknown engine-inspector schema.")
        _name(layer["Name"], f"{what}: layer {i}")
        _name(layer["LayerType"], f"{what}: layer {i} ({layer['Name']!r})", "LayerType")
        for key in ("Inputs", "Outputs"):
            if layer.get(key) is not None and not isinstance(layer[key], list):
                raise FusionError(f"{what}: layer {i} ({layer['Name']!r}) has {key!r} = "
                                  f"{_describe(layer[key])}; expected a list of tensor objects.")
        ins = [_check_tensor(t, f"{what}: layer {i} input {j}")
               for j, t in enumerate(layer.get("Inputs") or [])]
        outs = [_check_tensor(t, f"{what}: layer {i} output {j}")
                for j, t in enumerate(layer.get("Outputs") or [])]
        out.append({"raw": layer, "inputs": ins, "outputs": outs})
    return EngineJson(schema, out, io_tensors, tuple(notes))


def parse_profile(doc: Any, what: str = "profile JSON") -> List[Dict[str, Any]]:
    """Per-layer records from ``trtexec --exportProfile`` output.

    Returns dicts with ``name``, ``time_ms``, ``average_ms``, ``median_ms``, ``percentage``
    (NaN where the TensorRT version did not write a field).
    """
    if isinstance(doc, dict) and "Layers" in doc:
        raise FusionError(f"{what} is engine layer information, not a profile. Pass it as the "
                          "first argument of fusion() and the --exportProfile file as profile=.")
    if not isinstance(doc, list):
        raise FusionError(f"{what} is {_describe(doc)}; expected the list trtexec --exportProfile "
                          "writes: a {\"count\": N} record, then name/timeMs/averageMs/medianMs/"
                          "percentage records.")
    records: List[Dict[str, Any]] = []
    nan = float("nan")
    for i, rec in enumerate(doc):
        if not isinstance(rec, dict):
            raise FusionError(f"{what}: record {i} is {_describe(rec)}, expected an object.")
        if "name" not in rec:
            if "count" in rec:
                continue
            raise FusionError(f"{what}: record {i} has keys {sorted(rec)}, expected 'name' and "
                              "'averageMs' (or a {\"count\": N} record).")
        _name(rec["name"], f"{what}: record {i}", "name")
        if "averageMs" not in rec and "timeMs" not in rec:
            raise FusionError(f"{what}: record {i} ({rec['name']!r}) has no 'averageMs' or "
                              "'timeMs'. Unknown profile schema.")
        try:
            records.append({
                "name": str(rec["name"]),
                "time_ms": float(rec.get("timeMs", nan)),
                "average_ms": float(rec.get("averageMs", nan)),
                "median_ms": float(rec.get("medianMs", nan)),
                "percentage": float(rec.get("percentage", nan)),
            })
        except (TypeError, ValueError):
            raise FusionError(f"{what}: record {i} ({rec['name']!r}) has a non-numeric time: "
                              f"{rec}.") from None
    if not records:
        raise FusionError(f"{what} has no per-layer records. Run trtexec with --exportProfile "
                          "(and --separateProfileRun) to get them.")
    return records
