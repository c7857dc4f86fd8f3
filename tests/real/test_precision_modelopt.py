"""trtlab's INT8 next to NVIDIA ModelOpt's ONNX PTQ on the real-model precision tier.

ModelOpt (``nvidia-modelopt[onnx]``, the ``modelopt`` extra) brings torch and CUDA wheels, so it
lives in its own virtual environment: set ``TRTLAB_MODELOPT_PYTHON`` to that environment's
``python`` (``python -m venv mo && mo/bin/pip install "nvidia-modelopt[onnx]"``, about 10
minutes and 6.5 GB). Without it this tier is skipped with that reason. Each model is quantized
by ModelOpt's CLI (``--quantize_mode int8``, entropy and max calibration, float32 elsewhere, CPU
calibration) on the same calibration data as trtlab, and both are scored with the same task
metric; each ModelOpt model is also a labelled candidate row of :func:`trtlab.precision_table`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
import pytest

import trtlab
from trtlab.precision import int8_coverage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_precision_real as tier  # noqa: E402

pytestmark = pytest.mark.real

PYTHON = os.environ.get("TRTLAB_MODELOPT_PYTHON", "")
if not PYTHON or not Path(PYTHON).exists():
    pytest.skip("ModelOpt tier: TRTLAB_MODELOPT_PYTHON does not name a python with nvidia-modelopt[onnx] "
                f"installed (got {PYTHON!r})", allow_module_level=True)

#: Models ModelOpt 0.47 quantizes here (the op15 Silero VAD fails inside ModelOpt).
MODELS = ("rapidocr_cls", "rapidocr_det", "rapidocr_rec", "magika", "silero_vad_lstm")
CALIBRATIONS = ("entropy", "max")
OUT = tier.fetch_real_models.DEST / "modelopt"


def _npz(model_id: str) -> Path:
    calib = tier._data(model_id)[1]
    states = {"h", "c", "state"}
    arrays = {k: (calib[0][k] if k in states or np.ndim(calib[0][k]) == 0
                  else np.concatenate([c[k] for c in calib])) for k in calib[0]}
    path = OUT / f"{model_id}_calib.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


@lru_cache(maxsize=None)
def _modelopt(model_id: str, path: str, calibration: str) -> dict:
    out = OUT / f"{model_id}_int8_{calibration}.onnx"
    cmd = [PYTHON, "-m", "modelopt.onnx.quantization", "--onnx_path", path, "--quantize_mode", "int8",
           "--calibration_method", calibration, "--calibration_data_path", str(_npz(model_id)),
           "--calibration_eps", "cpu", "--high_precision_dtype", "fp32", "--output_path", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    model = onnx.load(str(out))
    outs = tier._run(model, tier._data(model_id)[0])
    ref = tier._reference(model_id, path)
    return {"model": model, "metric": tier.TASKS[model_id][1](ref, outs), "cosine": tier._cosine(ref, outs),
            "coverage": int8_coverage(model)}


@pytest.mark.parametrize("model_id", MODELS)
def test_default_int8_within_one_point_of_modelopts_best(real_model_paths, model_id):
    path = str(real_model_paths[model_id])
    ours = tier._result(model_id, path, "int8 auto")
    theirs = {c: _modelopt(model_id, path, c) for c in CALIBRATIONS}
    best = max(r["metric"] for r in theirs.values())
    assert ours["metric"] >= best - 0.01, (ours["metric"], {c: r["metric"] for c, r in theirs.items()})


@pytest.mark.parametrize("model_id", MODELS)
def test_int8_mac_coverage_reported_next_to_modelopts(real_model_paths, model_id):
    path = str(real_model_paths[model_id])
    ours = int8_coverage(tier._result(model_id, path, "int8 auto")["model"])
    theirs = {c: _modelopt(model_id, path, c)["coverage"] for c in CALIBRATIONS}
    assert 0.0 < ours <= 1.0
    assert all(0.0 <= v <= 1.0 for v in theirs.values())


def test_modelopt_models_are_labelled_candidates_in_precision_table(real_model_paths):
    model_id = "rapidocr_cls"
    path = str(real_model_paths[model_id])
    evaluate, calib = tier._data(model_id)
    model = trtlab.load(path, fold_constants=False, **tier.MODELS[model_id].load_options)
    table = trtlab.precision_table(model, evaluate, precisions=("fp32", "int8"), calibration_data=calib,
                                   methods=("auto",), runner="onnxruntime", progress=False,
                                   candidates={"modelopt int8 entropy": _modelopt(model_id, path, "entropy")["model"]})
    rows = table.set_index("config")
    assert rows.loc["modelopt int8 entropy", "source"] == "external"
    assert rows.loc["modelopt int8 entropy", "precision"] == "int8"
    assert rows.loc["modelopt int8 entropy", "mac_coverage"] > 0
    assert rows.loc["int8 auto", "source"] == "trtlab"


def test_modelopt_rows_are_written(real_model_paths):
    import pandas as pd

    rows = []
    for model_id in MODELS:
        path = str(real_model_paths[model_id])
        for c in CALIBRATIONS:
            r = _modelopt(model_id, path, c)
            rows.append(dict(model=model_id, config=f"modelopt int8 {c}", metric_name=tier.TASKS[model_id][2],
                             metric=r["metric"], cosine=r["cosine"], mac_coverage=r["coverage"]))
    table = pd.DataFrame(rows)
    dest = OUT.parent / "precision_table_modelopt.csv"
    tmp = dest.with_suffix(".tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, dest)
    assert table["metric"].notna().all()
