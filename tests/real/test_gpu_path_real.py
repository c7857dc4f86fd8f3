"""The GPU execution path on trained models from PyPI wheels, with stand-in TensorRT runners.

RapidOCR's text recogniser with ``exclude_ops=["Squeeze"]`` has what MiniLM has with the same
setting: a target shape computed in one TensorRT segment (``p2o.helper.concat.*``) and read by a
``Reshape`` in a later TensorRT segment, i.e. a shape tensor crossing between two engines. The
stand-in runners (``tests/standins.py``) refuse such a tensor in device memory as TrtRunner does,
and reuse their output buffers. The hybrid must match ONNX Runtime on the whole model, bring each
shape tensor to the host for its engine, keep the other tensors between TensorRT segments on the
device and hand out outputs it does not reuse.
"""

from __future__ import annotations

import numpy as np
import pytest

import fetch_real_models as frm
import trtlab
from standins import SHAPE_OPERANDS, StandInTrtRunner, onnx_as_engine, pretend_gpu
from trtlab.backends.onnxruntime.session import run_onnx
from trtlab.backends.tensorrt.backend import TensorRTBackend
from trtlab.codegen import build

pytestmark = pytest.mark.real

MODELS = {m.id: m for m in frm.load_manifest()}
#: (model, excluded op): settings that cut a shape tensor between two TensorRT segments.
CASES = [("rapidocr_rec", "Squeeze"), ("magika", "Conv")]


def _shape_edges(hybrid) -> set:
    """Tensors one TensorRT segment makes and a later one reads as a shape operand (by ONNX)."""
    trt_segs = [s for s in hybrid.segments if s.backend == "tensorrt"]
    made = {t: s.name for s in trt_segs for t in s.outputs}
    edges = set()
    for s in trt_segs:
        for node in hybrid.segment_models[s.index].graph.node:
            for i, name in enumerate(node.input):
                if name in made and made[name] != s.name and (node.op_type, i) in SHAPE_OPERANDS:
                    edges.add(name)
    return edges


@pytest.mark.parametrize("model_id, excluded", CASES)
def test_hybrid_on_stand_in_runners_matches_onnxruntime(real_model_paths, monkeypatch, model_id, excluded):
    pretend_gpu(monkeypatch)
    model = trtlab.load(str(real_model_paths[model_id]))
    part = trtlab.partition(model, exclude_ops=[excluded])
    feeds = MODELS[model_id].feeds()
    hybrid = build(part, progress=False, cache_dir=False, feeds=feeds,
                   backends={"tensorrt": TensorRTBackend(builder=onnx_as_engine)})
    execs = hybrid.executors
    assert set(execs[execs["backend"] == "tensorrt"]["executor"]) == {"tensorrt"}
    edges = _shape_edges(hybrid)
    assert edges, "the setting no longer cuts a shape tensor between TensorRT segments"

    ref = run_onnx(model, feeds)
    first = hybrid.run(feeds)
    kept = {k: v.copy() for k, v in first.items()}
    copies = hybrid.last_copies
    for k in ref:
        np.testing.assert_allclose(first[k], ref[k], rtol=1e-4, atol=1e-4, err_msg=f"{model_id}:{k}")
    for t in edges:  # on the device after its producer, copied to the host for the engine that reads it
        assert copies[t]["resident"] and copies[t]["d2h"] >= 1, (t, copies[t])
    resident = [t for t, row in copies.items() if row["resident"] and t not in edges]
    assert all(copies[t]["d2h"] == 0 and copies[t]["h2d"] == 0 for t in resident)

    other = {k: (v[::-1].copy() if v.dtype.kind == "f" and v.ndim and v.shape[0] > 1 else v)
             for k, v in MODELS[model_id].feeds(seed=1).items()}
    hybrid.run(other)
    for k in first:  # a second run leaves the first run's outputs alone
        np.testing.assert_array_equal(first[k], kept[k])
    assert StandInTrtRunner.created and all(r.is_active for r in StandInTrtRunner.created)
    hybrid.close()
    assert not any(r.is_active for r in StandInTrtRunner.created)
