"""What TensorRT did to the graph: layers, the ONNX nodes each came from, precision and time.

Two views, clearly labelled:

* **post-fusion** -- :func:`fusion` reads an engine's layer information (engine-inspector JSON
  from TensorRT 8.x-10.x or 11.x, a serialized engine on a machine that can deserialize it, or
  a :class:`~trtlab.runtime.HybridModel`) and maps each engine layer back to ONNX nodes through
  its ``Metadata`` field or its name.
* **pre-fusion** -- :func:`prefusion` parses the ONNX model with TensorRT's ONNX parser (no GPU
  needed) and maps each layer of the resulting network to the ONNX node it came from. It shows
  how TensorRT translated the graph before the builder fused anything.

Every layer says whether it ``runs`` (TensorRT lists elided ``NoOp`` layers too) and what it
is (``kind``: ``onnx``, ``reformat``, ``constant``, ``internal``). On top of a report:
:func:`report_card` (:mod:`trtlab.backends.tensorrt.layers.card`) gives the engine report card as DataFrames, and
:func:`align_engines` (:mod:`trtlab.backends.tensorrt.layers.align`) pairs the layers of two builds of a network.

Examples
--------
>>> from trtlab import fusion                                    # doctest: +SKIP
>>> rep = fusion("layers.json", profile="profile.json", model="model.onnx")
>>> rep.before_after()          # per op type: nodes with their own layer vs absorbed
>>> rep.node_latency()          # per-ONNX-node time
>>> report_card(rep, metadata="layers.json").by_layer_type
>>> rep.align(fusion("int8_layers.json")).coverage
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import onnx
import pandas as pd

from trtlab.errors import FusionError
from trtlab.backends.tensorrt.layers.graph import OnnxFacts
from trtlab.backends.tensorrt.layers.inspector import SCHEMA_TRT8_10, parse_engine_json, parse_profile, read_json
from trtlab.backends.tensorrt.layers.names import shape_profile, split_name, visible
from trtlab.backends.tensorrt.layers.align import Alignment, align_engines
from trtlab.backends.tensorrt.layers.card import EngineCard, engine_graph, engine_metadata, report_card
from trtlab.backends.tensorrt.layers.report import (NON_RUNNING_TYPES, FusionReport, build_report, join_profile,
                     resolve_layers)

log = logging.getLogger(__name__)

__all__ = ["fusion", "prefusion", "FusionReport", "engine_json", "report_card", "EngineCard",
           "engine_metadata", "engine_graph", "align_engines", "Alignment"]

ModelLike = Any


# -- models -------------------------------------------------------------------------------------
def _facts(model: ModelLike) -> Tuple[OnnxFacts, Any]:
    """OnnxFacts and the trtlab Model for ``model`` (Model, ModelProto, path or bytes)."""
    from trtlab.model import Model, load

    if isinstance(model, Model):
        m = model
    else:
        m = load(model, fold_constants=False, shape_inference=False)
    return OnnxFacts(m.proto, m.name), m


# -- post-fusion --------------------------------------------------------------------------------
_STANDARD_KEYS = frozenset({"Name", "LayerType", "Inputs", "Outputs", "ParameterType",
                            "TacticName", "TacticValue", "Origin", "Metadata"})


def _engine_rows(doc: Any, what: str, shape_prof: int) -> Tuple[List[Dict[str, Any]], Any]:
    parsed = parse_engine_json(doc, what)
    rows: List[Dict[str, Any]] = []
    profiles = set()
    for item in parsed.layers:
        raw = item["raw"]
        name = str(raw["Name"])
        _, prof = shape_profile(name)
        profiles.add(prof)
        if prof != shape_prof:
            continue
        ins, outs = item["inputs"], item["outputs"]
        parts = split_name(name)
        origin = str(raw.get("Origin", "") or "")
        if not origin and parts and parts[0].kind == "reformat":
            origin = "REFORMAT"
        layer_type = str(raw.get("LayerType", ""))
        rows.append({
            "name": name,
            "layer_type": layer_type,
            "parameter_type": str(raw.get("ParameterType", "") or ""),
            "runs": layer_type not in NON_RUNNING_TYPES,
            "precision": (ins or outs)[0]["precision"] if (ins or outs) else "UNKNOWN",
            "out_precision": outs[0]["precision"] if outs else "UNKNOWN",
            "inputs": tuple(t["name"] for t in ins),
            "input_shapes": tuple(t["shape"] for t in ins),
            "input_formats": tuple(t["format"] for t in ins),
            "outputs": tuple(t["name"] for t in outs),
            "output_shapes": tuple(t["shape"] for t in outs),
            "output_formats": tuple(t["format"] for t in outs),
            "tactic": str(raw.get("TacticName") or raw.get("TacticValue") or ""),
            "origin": origin,
            "metadata": str(raw.get("Metadata", "") or ""),
            "shape_profile": prof,
            "attributes": {k: v for k, v in raw.items() if k not in _STANDARD_KEYS},
            "parts": parts,
        })
    if not rows:
        raise FusionError(f"{what} has no layers for shape profile {shape_prof}; profiles present: "
                          f"{sorted(profiles)}. Pass shape_profile= one of them.")
    return rows, parsed


def _is_text(data: bytes) -> bool:
    """Whether ``data`` (the start of a file) is UTF-8 text: serialized engines hold NUL bytes."""
    if not data or b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(data) - 4:  # not merely a character cut at the end of the sample
            return False
    return True


def engine_json(engine: Union[bytes, bytearray, memoryview]) -> str:
    """Layer information of a serialized engine as JSON (needs a runtime that can load it).

    Raises
    ------
    FusionError
        When this machine cannot deserialize engines, or deserialization fails.
    """
    from trtlab.backends.tensorrt import flavor as trt

    info = trt.info()
    if not info.run:
        raise FusionError(
            f"Cannot read the layers of a serialized engine here: deserializing needs a GPU "
            f"runtime, and {info.flavor or 'TensorRT'} cannot run engines on this machine "
            f"({info.reason}). Export the layer JSON where the engine runs (trtexec "
            "--loadEngine=model.engine --exportLayerInfo=layers.json "
            "--profilingVerbosity=detailed) and pass that file, or pass model= to get the "
            "pre-fusion view instead.")
    t = trt.module()
    logger = trt.CapturingLogger()
    runtime = t.Runtime(logger)
    engine_obj = runtime.deserialize_cuda_engine(bytes(engine))
    if engine_obj is None:
        errors = "; ".join(logger.errors()) or "no message"
        raise FusionError(f"{info.flavor} {info.version} could not deserialize the engine "
                          f"({len(engine)} bytes): {errors}. Engines load only with the TensorRT "
                          "version and GPU family that built them.")
    inspector = engine_obj.create_engine_inspector()
    return str(inspector.get_engine_information(t.LayerInformationFormat.JSON))


def _from_json(doc: Any, what: str, label: str, *, profile: Any, facts: Optional[OnnxFacts],
               shape_prof: int, notes: List[str]) -> FusionReport:
    rows, parsed = _engine_rows(doc, what, shape_prof)
    resolve_layers(rows, facts)
    notes = list(notes) + list(parsed.notes)
    if profile is not None:
        pdoc, _ = read_json(profile, "profile JSON")
        notes += join_profile(rows, parse_profile(pdoc))
    hint = "" if facts else "; pass model= to resolve them exactly"
    if not any(r["metadata"] for r in rows):
        if not any("Metadata" in item["raw"] for item in parsed.layers):
            if parsed.schema == SCHEMA_TRT8_10:
                notes.append("no 'Metadata' field (TensorRT < 8.6): ONNX nodes are read from "
                             "layer names" + hint)
        else:
            notes.append("every 'Metadata' field is empty (the ONNX parser recorded no node "
                         "names, e.g. a network built through the API): ONNX nodes are read "
                         "from layer names" + hint)
    return build_report(rows, stage="post-fusion", source=f"engine JSON ({parsed.schema} schema)",
                        label=label, facts=facts, notes=notes,
                        io_tensors=_io_details(parsed.io_tensors, parsed.layers))


def _io_details(io: List[Dict[str, Any]], layers: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Fill direction, shape, precision and format of engine I/O tensors from the layers.

    TensorRT 8-10 lists ``Bindings`` by name only: a binding no layer writes is an input, one a
    layer writes is an output; its shape and type are those of the layer tensor of that name.
    """
    produced, seen = set(), {}
    for item in layers:
        for t in item["outputs"]:
            produced.add(t["name"])
            seen.setdefault(t["name"], t)
        for t in item["inputs"]:
            seen.setdefault(t["name"], t)
    out = []
    for t in io:
        rec = dict(t)
        found = seen.get(rec["name"])
        mode = str(rec.get("mode") or "")
        if not mode:
            mode = "Output" if rec["name"] in produced else ("Input" if found else "")
        rec["mode"] = mode
        if rec.get("shape") is None and found is not None:
            rec["shape"] = found["shape"]
        if not rec.get("precision") or rec.get("precision") == "UNKNOWN":
            rec["precision"] = found["precision"] if found is not None else "UNKNOWN"
        rec["format"] = found["format"] if found is not None else ""
        out.append(rec)
    return out


def _is_hybrid(obj: Any) -> bool:
    return hasattr(obj, "engines") and hasattr(obj, "partition")


def _segment_proto(hybrid: Any, index: int) -> onnx.ModelProto:
    models = getattr(hybrid, "segment_models", None) or {}
    if index in models:
        return models[index]
    return hybrid.partition.segment_model(index)


def _from_hybrid(hybrid: Any, profile: Any, shape_prof: int) -> FusionReport:
    from trtlab.backends.tensorrt import flavor as trt

    segments = [s for s in hybrid.partition.segments if s.backend == "tensorrt"]
    if not segments:
        raise FusionError("This hybrid model has no TensorRT segments (every node runs on the "
                          "fallback); there is nothing TensorRT fused.")
    if profile is not None:
        raise FusionError("profile= applies to one engine; for a hybrid model call fusion() on "
                          "each segment's layer JSON with its profile.")
    info = trt.info()
    engines = dict(getattr(hybrid, "engines", {}) or {})
    facts_all, model = _facts(hybrid.partition.model)
    parts: List[Tuple[Any, FusionReport]] = []
    notes: List[str] = []
    post = info.run and all(s.index in engines for s in segments)
    if not post:
        why = (f"{info.flavor or 'TensorRT'} cannot deserialize engines on this machine "
               f"({info.reason})" if not info.run else
               "some TensorRT segments have no engine: "
               f"{[s.name for s in segments if s.index not in engines]}")
        notes.append(f"pre-fusion view: {why}; showing the parsed TensorRT network of each "
                     "TensorRT segment instead of the engine layers")
        log.warning("fusion(): %s", notes[-1])
    for seg in segments:
        proto = _segment_proto(hybrid, seg.index)
        if post:
            rep = fusion(engines[seg.index], model=proto, shape_profile=shape_prof)
        else:
            rep = prefusion(proto, progress=False)
        parts.append((seg, rep))
    return _merge(parts, stage="post-fusion" if post else "pre-fusion", facts=facts_all,
                  notes=notes, label=getattr(model, "name", "hybrid"))


def _merge(parts: List[Tuple[Any, FusionReport]], *, stage: str, facts: OnnxFacts,
           notes: List[str], label: str) -> FusionReport:
    rows: List[Dict[str, Any]] = []
    sources = []
    for seg, rep in parts:
        sources.append(rep.source)
        notes += [f"{seg.name}: {n}" for n in rep.notes]
        for rec in rep.layers.to_dict("records"):
            rec["segment"] = seg.index
            rows.append(rec)
    for row in rows:
        row.pop("layer", None)
    report = build_report(rows, stage=stage, source=sources[0], label=label, facts=None,
                          notes=notes)
    unmapped = pd.concat([rep.unmapped.assign(segment=seg.index) for seg, rep in parts],
                         ignore_index=True)
    pos = facts.position
    order = sorted(report.onnx_to_layers, key=lambda n: pos.get(n, len(pos)))
    return FusionReport(layers=report.layers, onnx_to_layers={n: report.onnx_to_layers[n]
                                                              for n in order},
                        stage=stage, source=report.source, label=label, unmapped=unmapped,
                        io_tensors=report.io_tensors, notes=tuple(notes),
                        op_types=dict(facts.op_type),
                        node_order=tuple(n for seg, _ in parts for n in seg.nodes))


def fusion(source: Any, *, profile: Any = None, model: ModelLike = None,
           shape_profile: int = 0, label: Optional[str] = None) -> FusionReport:
    """Engine layers mapped back to ONNX nodes (the post-fusion view).

    Parameters
    ----------
    source
        Engine-inspector JSON (text, ``bytes``, a path, or the decoded ``dict``) as
        ``trtexec --exportLayerInfo --profilingVerbosity=detailed`` or
        ``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)`` writes it,
        TensorRT 8.x-10.x (``Layers`` + ``Bindings``) or 11.x (``Layers`` + ``I/O Tensors``);
        a serialized engine (``bytes`` or a ``.engine``/``.plan`` path); or a
        ``HybridModel`` (one report over its TensorRT segments, with a ``segment`` column).
    profile
        Per-layer times (``trtexec --exportProfile``): text, bytes, path or decoded list.
    model
        The ONNX model the engine was built from (``Model``, ``ModelProto`` or path). With it,
        layer-name parts are resolved exactly, Myelin ``ForeignNode`` ranges are expanded along
        the topological order, and ONNX nodes without a layer are listed with the reason.
    shape_profile
        Which optimization profile's layers to read (layers of profile N > 0 carry a
        ``[profile N]`` suffix).
    label
        Name for the report in comparisons and plots (default: the file stem).

    Returns
    -------
    FusionReport
        ``stage="post-fusion"``; ``"pre-fusion"`` when an engine cannot be deserialized here
        and a model is known (a hybrid model's segments, or ``model=``), with a note saying so.

    Raises
    ------
    FusionError
        Unknown schema, layer names without detail, truncated or invalid JSON, a profile that
        does not parse, or an engine this machine cannot deserialize (and no model to fall
        back to).
    """
    if isinstance(source, FusionReport):
        return source
    if _is_hybrid(source):
        return _from_hybrid(source, profile, shape_profile)
    facts = _facts(model)[0] if model is not None else None
    notes: List[str] = []
    engine_bytes: Optional[bytes] = None
    doc: Any = None
    what, default_label = "engine JSON", "engine"
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data.strip():
            raise FusionError("fusion() was given empty bytes: neither engine-inspector JSON nor a "
                              "serialized engine. Pass the JSON TensorRT wrote, an engine, or a HybridModel.")
        if data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"["):
            doc, _ = read_json(data, what)
        else:
            engine_bytes = data
    elif isinstance(source, str) and not source.strip():
        raise FusionError("fusion() was given empty text: neither engine-inspector JSON nor a path. "
                          "Pass the JSON TensorRT wrote, an engine, or a HybridModel.")
    elif isinstance(source, (str, os.PathLike)) and not (
            isinstance(source, str) and source.lstrip("\ufeff \t\r\n")[:1] in ("{", "[")):
        path = Path(source)
        if not path.exists():
            raise FusionError(f"No file at {str(path)!r}. Pass engine-inspector JSON (text, dict "
                              "or path), a serialized engine, or a HybridModel.")
        from trtlab import _io

        data = _io.read_bytes(path, limit=1 << 31, what="fusion() input", error=FusionError)
        if not data.strip():
            raise FusionError(f"{path} is empty ({len(data)} bytes): neither engine-inspector JSON "
                              "nor a serialized engine. Export it again (trtexec --exportLayerInfo "
                              "writes the JSON after the build finishes).")
        start = data[:4096]
        head = start.lstrip(b"\xef\xbb\xbf \t\r\n")
        default_label = path.stem
        if head[:1] in (b"{", b"["):
            what = f"engine JSON {path.name}"
            doc, _ = read_json(data, what)
        elif _is_text(start):
            raise FusionError(
                f"{path} is a text file but not JSON (it starts with "
                f"{visible(start[:60].decode('utf-8', 'replace'))!r}). fusion() reads the JSON "
                "that trtexec --exportLayerInfo (or IEngineInspector.get_engine_information("
                "LayerInformationFormat.JSON)) writes, or a serialized engine. A per-layer text "
                "dump or a build log must be exported again as JSON.")
        else:
            engine_bytes = data
    elif isinstance(source, (str, dict, list)):
        doc, _ = read_json(source, what)
    else:
        raise FusionError(
            f"fusion() cannot read a {type(source).__name__}. Pass engine-inspector JSON "
            "(text, bytes, path or dict), a serialized engine (bytes or path), or a HybridModel.")
    if engine_bytes is not None:
        from trtlab.backends.tensorrt import flavor as trt

        if not trt.info().run and facts is not None:
            note = (f"pre-fusion view: this machine cannot deserialize engines "
                    f"({trt.info().reason}); showing the parsed TensorRT network of model= "
                    "instead of the engine layers")
            log.warning("fusion(): %s", note)
            rep = prefusion(model, progress=False)
            return replace(rep, notes=(note,) + rep.notes, label=label or default_label)
        doc = read_json(engine_json(engine_bytes), what)[0]
    return _from_json(doc, what, label or default_label, profile=profile, facts=facts,
                      shape_prof=shape_profile, notes=notes)


# -- pre-fusion ---------------------------------------------------------------------------------
_TRT_DTYPES = {"FLOAT": "FP32", "HALF": "FP16", "BF16": "BF16", "FP8": "FP8", "FP4": "FP4",
               "INT8": "INT8", "INT4": "INT4", "INT32": "INT32", "INT64": "INT64", "BOOL": "BOOL",
               "UINT8": "UINT8", "E8M0": "E8M0", "DOUBLE": "FP64"}


def _dtype_name(t: Any) -> str:
    return _TRT_DTYPES.get(str(t.dtype).split(".")[-1].upper(), "UNKNOWN")


def _shape(t: Any) -> Optional[Tuple[int, ...]]:
    try:
        return tuple(t.shape)
    except (TypeError, ValueError, RuntimeError):
        return None


def prefusion(model: ModelLike, *, label: Optional[str] = None,
              progress: bool = True) -> FusionReport:
    """The TensorRT network the ONNX parser makes from ``model``, mapped to ONNX nodes.

    No GPU is needed. Each network layer is mapped through its metadata (``[ONNX Layer: name]``)
    or, for layers the parser made without metadata, its name or the ONNX tensor it produces.
    One ONNX node may become several layers. Nodes that become no layer are listed in
    :attr:`FusionReport.unmapped` with the reason (constants folded into weights, identities
    eliminated, ...).

    Parameters
    ----------
    model
        ``Model``, ``onnx.ModelProto`` (e.g. ``Partition.segment_model(i)``), path or bytes.
    label
        Name for the report (default: the model name).
    progress
        Show a progress bar over the network's layers (large networks take seconds).

    Returns
    -------
    FusionReport
        ``stage="pre-fusion"``.

    Raises
    ------
    FusionError
        When the parser rejects the model (the message lists the parser's errors per node).
    MissingDependencyError
        Without TensorRT.
    """
    from trtlab.backends.tensorrt import flavor as trt

    facts, m = _facts(model)
    t = trt.module()
    builder, network, parser, _ = trt.make_parser(t.Logger(t.Logger.INTERNAL_ERROR))
    ok = parser.parse(m.to_bytes())
    if not ok:
        errs = []
        for i in range(parser.num_errors):
            e = parser.get_error(i)
            node = e.node_name() if hasattr(e, "node_name") else ""
            errs.append(f"{node or '?'}: {e.desc()}")
        listed = "; ".join(errs[:5]) or "no message"
        raise FusionError(
            f"TensorRT's ONNX parser rejected model {m.name!r}: {listed}"
            f"{' ...' if len(errs) > 5 else ''}. The pre-fusion view needs a model TensorRT "
            "parses whole: pass a TensorRT segment (Partition.segment_model(i)) instead of the "
            "full model.")
    rows: List[Dict[str, Any]] = []
    layer_inputs = set()
    from trtlab._progress import progress as bar

    for i in bar(range(network.num_layers), total=network.num_layers, desc="network layers",
                 enabled=progress and network.num_layers > 2000):
        layer = network.get_layer(i)
        ins = [layer.get_input(j) for j in range(layer.num_inputs)]
        ins = [t for t in ins if t is not None]
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        layer_inputs.update(t.name for t in ins)
        in_prec = [_dtype_name(t) for t in ins]
        out_prec = [_dtype_name(t) for t in outs]
        out_names = [t.name for t in outs]
        rows.append({
            "name": layer.name,
            "layer_type": str(layer.type).split(".")[-1],
            "parameter_type": "",
            "precision": (in_prec or out_prec or ["UNKNOWN"])[0],
            "out_precision": (out_prec or ["UNKNOWN"])[0],
            "inputs": tuple(t.name for t in ins),
            "input_shapes": tuple(_shape(t) for t in ins),
            "input_formats": tuple("" for _ in ins),
            "outputs": tuple(out_names),
            "output_shapes": tuple(_shape(t) for t in outs),
            "output_formats": tuple("" for _ in outs),
            "tactic": "",
            "origin": "",
            "metadata": str(getattr(layer, "metadata", "") or ""),
            "shape_profile": 0,
            "parts": split_name(layer.name),
            "fallback_nodes": [facts.producer[t] for t in out_names if t in facts.producer],
        })
    layer_inputs.update(network.get_output(j).name for j in range(network.num_outputs))
    resolve_layers(rows, facts)
    source = f"network parsed by {trt.flavor()} {trt.version()}"
    return build_report(rows, stage="pre-fusion", source=source, label=label or m.name,
                        facts=facts, layer_inputs=layer_inputs)
