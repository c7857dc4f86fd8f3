"""Precision on trained models shipped in PyPI wheels: every mode converts, runs and builds.

For every model in ``models.toml`` and every precision mode (FP16, BF16, INT8 with each
calibration method, FP8 E4M3), the model given as a *path* (so PP-OCR's Constant-node weights
and opsets 11-12 reach the transforms as shipped) is converted, labelled with its mode (never
silently unconverted), passes the ONNX checker, runs in ONNX Runtime, and TensorRT's parser
reads it and (where this TensorRT builds engines) builds it ahead of time. Task metrics are
measured on inputs the tier renders: text lines and pages drawn with Pillow for the OCR models,
tone bursts in noise for the VADs, bytes of real files for Magika. ONNX Runtime's
``quantize_static`` (QDQ, per channel, MinMax) is the peer on the same calibration data.

Quick mode (default; ``TRTLAB_PRECISION_FULL=1`` for the full one) evaluates on 8 samples
(more for the models whose metric counts whole samples), calibrates on 8 (the INT8 methods share
one cached calibration run), and builds FP16, BF16, FP8 and the default INT8 (all modes are
parsed); the full mode uses 32 and 32 samples and builds every mode. The tier's table is written to
``build/real_models/precision_table.csv``.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Tuple

import fetch_real_models
import numpy as np
import onnx
import pytest

import trtlab
from trtlab.backends.tensorrt import flavor as trt
from trtlab.precision import (int8_coverage, ort_variant, quantize_fp8, quantize_int8, to_bf16,
                              to_fp16)

pytestmark = pytest.mark.real

MODELS = {m.id: m for m in fetch_real_models.load_manifest()}
FULL = os.environ.get("TRTLAB_PRECISION_FULL", "") not in ("", "0")
N_EVAL, N_CALIB = (32, 32) if FULL else (8, 8)
METHODS = ("auto", "mse", "entropy", "minmax", "percentile")
MODES = ("fp16", "bf16") + tuple(f"int8 {m}" for m in METHODS) + ("fp8",)
#: Modes built ahead of time (every mode is parsed). The INT8 methods differ only in scale
#: values, so quick mode builds the default one.
BUILT = MODES if FULL else ("fp16", "bf16", "int8 auto", "fp8")
#: Builds TensorRT-RTX 1.7 refuses although it builds the float32 model: (model, mode) -> the
#: error it reports. A listed build that starts to succeed fails the tier, so the list stays true.
#: Empty: silero_vad_lstm's float16/bfloat16 builds failed in Myelin until the
#: ``recurrent_input`` rule kept the LSTM's producer float32.
KNOWN_BUILD_FAILURES: Dict[Tuple[str, str], str] = {}

TABLE = fetch_real_models.DEST / "precision_table.csv"


# ----------------------------------------------------------------------------------------------
# rendered data
# ----------------------------------------------------------------------------------------------

_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghkmnpqrstuvwxyz0123456789"


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def text_line(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """One line of random dark text on a light background, H x W x 3 uint8."""
    from PIL import Image, ImageDraw

    text = "".join(rng.choice(list(_ALPHABET), size=int(rng.integers(4, 9))))
    img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(200, 256, size=3)))
    ImageDraw.Draw(img).text((int(rng.integers(2, 10)), h // 8), text, font=_font(int(h * 0.6)),
                             fill=tuple(int(v) for v in rng.integers(0, 60, size=3)))
    return np.asarray(img)


def text_page(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A page with two or three short lines of text, H x W x 3 uint8."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (w, h), (245, 245, 240))
    draw = ImageDraw.Draw(img)
    for i in range(int(rng.integers(2, 4))):
        text = "".join(rng.choice(list(_ALPHABET), size=int(rng.integers(3, 7))))
        draw.text((int(rng.integers(2, w // 4)), 4 + i * h // 3), text, font=_font(h // 5), fill=(20, 20, 20))
    return np.asarray(img)


def _nchw(images: List[np.ndarray], mean, std) -> np.ndarray:
    x = np.stack(images).astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def ocr_det_data(n: int, seed: int) -> List[Dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    x = _nchw([text_page(rng, 96, 160) for _ in range(n)], (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    return [{"x": x[i:i + 1]} for i in range(n)]


def ocr_rec_data(n: int, seed: int) -> List[Dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    x = _nchw([text_line(rng, 48, 160) for _ in range(n)], (0.5,) * 3, (0.5,) * 3)
    return [{"x": x[i:i + 1]} for i in range(n)]


def ocr_cls_data(n: int, seed: int) -> List[Dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    lines = [text_line(rng, 48, 192) for _ in range(n)]
    lines = [line[::-1, ::-1] if i % 2 else line for i, line in enumerate(lines)]  # half upside down
    x = _nchw(lines, (0.5,) * 3, (0.5,) * 3)
    return [{"x": x[i:i + 1]} for i in range(n)]


def _audio(rng: np.random.Generator, samples: int) -> np.ndarray:
    t = np.arange(samples) / 16000.0
    voice = rng.random() < 0.5
    signal = rng.standard_normal(samples) * 0.01
    if voice:  # a vowel-like tone with harmonics and a syllable envelope
        f0 = rng.uniform(100, 220)
        env = 0.5 * (1 - np.cos(2 * np.pi * t * rng.uniform(3, 6)))
        signal += 0.3 * env * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    return signal.astype(np.float32)


def vad_lstm_data(n: int, seed: int) -> List[Dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"input": _audio(rng, 4 * 576).reshape(4, 576), "h": np.zeros((1, 1, 128), np.float32),
             "c": np.zeros((1, 1, 128), np.float32)} for _ in range(n)]


def vad_if_data(n: int, seed: int) -> List[Dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"input": _audio(rng, 512)[None], "state": np.zeros((2, 1, 128), np.float32),
             "sr": np.array(16000, np.int64)} for _ in range(n)]


def _file_bytes() -> List[bytes]:
    """Contents of real files of several kinds: Python, JSON, HTML, gzip, PNG, CSV, XML."""
    import csv
    import email
    import html
    import xml.dom.minidom

    from PIL import Image

    files = [Path(m.__file__).read_bytes() for m in (json, gzip, csv, email, html, io, tempfile)]
    files.append(json.dumps({"model": [m.id for m in MODELS.values()], "n": list(range(200))}, indent=1).encode())
    files.append(b"<!DOCTYPE html><html><head><title>t</title></head><body>" + b"<p>hello</p>" * 80 + b"</body></html>")
    files.append(gzip.compress(Path(json.__file__).read_bytes()))
    png = io.BytesIO()
    Image.fromarray((np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3)).save(png, "PNG")
    files.append(png.getvalue())
    files.append("\n".join(",".join(str(i * j) for j in range(8)) for i in range(100)).encode())
    files.append(xml.dom.minidom.parseString("<a>" + "<b x='1'>t</b>" * 50 + "</a>").toprettyxml().encode())
    return files


def magika_data(n: int, seed: int) -> List[Dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    files = _file_bytes()
    out = []
    for i in range(n):
        data = files[(i + seed) % len(files)]
        start = int(rng.integers(0, max(1, len(data) // 4)))
        body = data[start:] if i % 3 else data
        beg = np.frombuffer(body[:1024], np.uint8).astype(np.int32)
        end = np.frombuffer(body[-1024:], np.uint8).astype(np.int32)
        row = np.full(2048, 256, np.int32)
        row[:len(beg)] = beg
        row[2048 - len(end):] = end
        out.append({"bytes": row[None]})
    return out


# ----------------------------------------------------------------------------------------------
# task metrics (candidate vs the float32 model; 1.0 = same task result)
# ----------------------------------------------------------------------------------------------

def _first(outs: List[Dict[str, np.ndarray]]) -> List[np.ndarray]:
    return [next(iter(o.values())) for o in outs]


def det_iou(ref, cand) -> float:
    """IoU of the text masks (probability > 0.3) over all samples."""
    inter = union = 0
    for a, b in zip(_first(ref), _first(cand)):
        ma, mb = a > 0.3, b > 0.3
        inter += int((ma & mb).sum())
        union += int((ma | mb).sum())
    return inter / union if union else 1.0


def _ctc(probs: np.ndarray) -> tuple:
    best = probs.reshape(-1, probs.shape[-1]).argmax(-1)
    keep = [int(c) for i, c in enumerate(best) if c != 0 and (i == 0 or c != best[i - 1])]
    return tuple(keep)


def _edit_distance(a: tuple, b: tuple) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def rec_cer(ref, cand) -> float:
    """1 - character error rate against the float32 model's reads (CTC greedy decoding)."""
    errors = total = 0
    for a, b in zip(_first(ref), _first(cand)):
        want, got = _ctc(a), _ctc(b)
        errors += _edit_distance(want, got)
        total += max(len(want), 1)
    return 1.0 - errors / total


def top1(ref, cand) -> float:
    return float(np.mean([a.reshape(-1).argmax() == b.reshape(-1).argmax() for a, b in zip(_first(ref), _first(cand))]))


def vad_agree(ref, cand) -> float:
    """1 - mean absolute difference of the speech probabilities."""
    return 1.0 - float(np.mean([np.abs(a - b).mean() for a, b in zip(_first(ref), _first(cand))]))


TASKS: Dict[str, tuple] = {
    "rapidocr_det": (ocr_det_data, det_iou, "text-mask IoU"),
    "rapidocr_rec": (ocr_rec_data, rec_cer, "1 - CER vs fp32 reads"),
    "rapidocr_cls": (ocr_cls_data, top1, "orientation agreement"),
    "silero_vad_lstm": (vad_lstm_data, vad_agree, "probability agreement"),
    "silero_vad_if": (vad_if_data, vad_agree, "probability agreement"),
    "magika": (magika_data, top1, "content-type agreement"),
}
#: The tier covers the models it has task data and a metric for.
MODELS = {k: v for k, v in MODELS.items() if k in TASKS}


# ----------------------------------------------------------------------------------------------
# conversions, runs, builds (cached per session)
# ----------------------------------------------------------------------------------------------

#: One calibration cache for the session: every INT8 method of a model measures all methods'
#: thresholds in the same calibration run (the ``dominant_error`` rule compares them), so the run
#: is made once per model and read back by the others.
_CACHE = tempfile.TemporaryDirectory(prefix="trtlab-precision-tier-")


def _convert(mode: str, model_id: str, path: str, calib) -> trtlab.Model:
    # loaded without constant folding: Constant-node weights reach the transforms as shipped
    path = trtlab.load(path, fold_constants=False, **MODELS[model_id].load_options)
    if mode == "fp16":  # data-driven: nodes whose activations leave the float16 range stay float32
        return to_fp16(path, calibration_data=calib)
    if mode == "bf16":
        return to_bf16(path, calibration_data=calib)
    if mode == "fp8":
        return quantize_fp8(path, calib, progress=False)
    return quantize_int8(path, calib, method=mode.split()[1], progress=False, cache_dir=_CACHE.name)


def _run(model, feeds) -> List[Dict[str, np.ndarray]]:
    from trtlab.backends.onnxruntime.session import session

    sess = session(model, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return [dict(zip(names, sess.run(names, f))) for f in feeds]


def _cosine(ref, cand) -> float:
    a = np.concatenate([x.ravel() for x in _first(ref)]).astype(np.float64)
    b = np.concatenate([x.ravel() for x in _first(cand)]).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


#: Models whose metric counts whole samples get more evaluation samples (one line = 1/n).
_EVAL_SCALE = {"rapidocr_rec": 4, "rapidocr_cls": 2, "magika": 2}


@lru_cache(maxsize=None)
def _data(model_id: str):
    make = TASKS[model_id][0]
    return make(N_EVAL * _EVAL_SCALE.get(model_id, 1), 1), make(N_CALIB, 2)


@lru_cache(maxsize=None)
def _reference(model_id: str, path: str):
    return _run(onnx.load(path), _data(model_id)[0])


@lru_cache(maxsize=None)
def _result(model_id: str, path: str, mode: str) -> dict:
    evaluate, calib = _data(model_id)
    model = _convert(mode, model_id, path, calib)
    runnable = ort_variant(model)[0] if mode in ("fp16", "bf16") else model
    outs = _run(runnable, evaluate)
    ref = _reference(model_id, path)
    return {"model": model, "metric": TASKS[model_id][1](ref, outs), "cosine": _cosine(ref, outs)}


@lru_cache(maxsize=None)
def _peer(model_id: str, path: str) -> dict:
    """ONNX Runtime's quantize_static (QDQ, per channel, MinMax) on the same calibration data."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    evaluate, calib = _data(model_id)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calib)

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ort_int8.onnx"
        try:
            quantize_static(path, str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
            model = onnx.load(str(out))
            outs = _run(model, evaluate)
        except Exception as exc:  # the peer tool's own failure is a table entry, not ours
            return {"model": None, "metric": float("nan"), "cosine": float("nan"), "error": str(exc)[:200]}
    ref = _reference(model_id, path)
    return {"model": model, "metric": TASKS[model_id][1](ref, outs), "cosine": _cosine(ref, outs), "error": ""}


def _engine(model: trtlab.Model, feeds: Dict[str, np.ndarray], build: bool = True):
    builder, network, parser, logger = trt.make_parser()
    assert parser.parse(model.to_bytes()), [parser.get_error(i).desc() for i in range(parser.num_errors)]
    if not trt.info().build or not build:
        return network, None
    config = builder.create_builder_config()
    config.builder_optimization_level = 0  # built ahead of time to prove it builds; never timed
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        shape = tuple(feeds[inp.name].shape)
        profile.set_shape(inp.name, shape, shape, shape)
    config.add_optimization_profile(profile)
    return network, builder.build_serialized_network(network, config)


def _path(paths, model_id: str) -> str:
    return str(paths[model_id])


# ----------------------------------------------------------------------------------------------
# tests
# ----------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _fp32_builds(model_id: str, path: str) -> bool:
    model = trtlab.load(path, fold_constants=False, **MODELS[model_id].load_options)
    return _engine(model, _data(model_id)[0][0])[1] is not None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("model_id", MODELS)
def test_every_mode_converts_runs_parses_and_builds(real_model_paths, model_id, mode):
    path = _path(real_model_paths, model_id)
    result = _result(model_id, path, mode)
    model = result["model"]
    meta = {p.key: p.value for p in model.proto.metadata_props}
    assert meta.get("trtlab.precision") == mode.split()[0], meta  # converted, not silently unchanged
    onnx.checker.check_model(model.proto, full_check=True)
    assert np.isfinite(result["cosine"]), result
    network, engine = _engine(model, _data(model_id)[0][0], build=mode in BUILT)
    assert network.num_layers > 0
    if trt.info().build and mode in BUILT and _fp32_builds(model_id, path):
        if (model_id, mode) in KNOWN_BUILD_FAILURES:
            assert engine is None, f"{model_id} {mode} builds now: drop it from KNOWN_BUILD_FAILURES"
        else:
            assert engine is not None and engine.nbytes > 0, f"{model_id} {mode} did not build"


@pytest.mark.parametrize("model_id", MODELS)
def test_int8_quantizes_every_planned_weight_whatever_its_form(real_model_paths, model_id):
    model = _result(model_id, _path(real_model_paths, model_id), "int8 auto")["model"]
    plan = model.quantization_plan
    weights = plan[plan["quantize"] & (plan["role"] == "weight")]
    assert len(weights) > 0
    dq_inputs = {n.input[0] for _, g in _walk(model.proto.graph) for n in g.node if n.op_type == "DequantizeLinear"}
    int8 = {t.name for _, g in _walk(model.proto.graph) for t in g.initializer
            if t.data_type == onnx.TensorProto.INT8 and t.name in dq_inputs and "zero_point" not in t.name}
    assert len(int8) == weights["tensor"].nunique()
    if MODELS[model_id].package == "rapidocr-onnxruntime":
        assert any("Constant nodes" in n for n in model.notes)
        assert any("opset raised" in n for n in model.notes)


def _walk(graph):
    from trtlab.precision import _graphs

    return _graphs.walk(graph)


@pytest.mark.parametrize("model_id", MODELS)
def test_fp16_output_cosine_at_least_0999(real_model_paths, model_id):
    result = _result(model_id, _path(real_model_paths, model_id), "fp16")
    assert result["cosine"] >= 0.999, result["cosine"]


@pytest.mark.parametrize("model_id", MODELS)
def test_default_calibration_is_within_3_points_of_the_best_method(real_model_paths, model_id):
    path = _path(real_model_paths, model_id)
    scores = {m: _result(model_id, path, f"int8 {m}")["metric"] for m in METHODS}
    best = max(scores.values())
    assert scores["auto"] >= best - 0.03, scores


@pytest.mark.parametrize("model_id", MODELS)
def test_no_calibration_method_collapses(real_model_paths, model_id):
    """Every method's task metric is within 3 points of the best method's.

    The collapses measured before (PP-OCRv4 det IoU 0.59-0.71 for minmax, percentile and mse
    against 0.96) came from one per-tensor scale on depthwise Conv inputs whose channel ranges
    are 26x apart (``depthwise_equalization``) and, for minmax, one tensor's range
    (``dominant_error``).
    """
    path = _path(real_model_paths, model_id)
    scores = {m: _result(model_id, path, f"int8 {m}")["metric"] for m in METHODS}
    best = max(scores.values())
    assert all(v >= best - 0.03 for v in scores.values()), scores


@pytest.mark.parametrize("model_id", MODELS)
def test_default_int8_matches_or_beats_onnxruntime_quantization(real_model_paths, model_id):
    path = _path(real_model_paths, model_id)
    ours = _result(model_id, path, "int8 auto")
    peer = _peer(model_id, path)
    if peer["model"] is not None:
        assert ours["metric"] >= peer["metric"] - 0.01, (ours["metric"], peer["metric"])


def test_comparison_table_is_written(real_model_paths):
    import pandas as pd

    rows = []
    for model_id in MODELS:
        path = _path(real_model_paths, model_id)
        for mode in MODES:
            r = _result(model_id, path, mode)
            rows.append(dict(model=model_id, config=f"trtlab {mode}", metric_name=TASKS[model_id][2],
                             metric=r["metric"], cosine=r["cosine"], mac_coverage=int8_coverage(r["model"])))
        p = _peer(model_id, path)
        rows.append(dict(model=model_id, config="onnxruntime quantize_static int8", metric_name=TASKS[model_id][2],
                         metric=p["metric"], cosine=p["cosine"],
                         mac_coverage=int8_coverage(p["model"]) if p["model"] is not None else float("nan")))
    table = pd.DataFrame(rows)
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    tmp = TABLE.with_suffix(".tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, TABLE)
    assert len(table) == len(MODELS) * (len(MODES) + 1)
    assert table.loc[table["config"].str.startswith("trtlab"), "metric"].notna().all()
