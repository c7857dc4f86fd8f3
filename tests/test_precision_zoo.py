"""Acceptance on the model zoo: digits accuracy table, FP16/INT8 conversion of every model."""

from __future__ import annotations

import numpy as np
import pytest

from trtlab import zoo
from trtlab.backends.tensorrt import flavor as trt
from trtlab.study.accuracy import precision_table
from trtlab.backends.onnxruntime.session import run_onnx
from trtlab.precision import quantize_int8, to_fp16

from test_precision import needs_parser, trt_build

# Zoo models whose FP32 graph TensorRT's parser rejects, and why (the conversions keep that).
PARSER_REJECTS = {
    "detection_postproc": "com.microsoft FusedMatMul / Gelu have no TensorRT importer (plugin not found)",
    "quantized_dynamic": "DynamicQuantizeLinear, ConvInteger and MatMulInteger have no TensorRT importer",
}
# Models whose INT8 engine takes long to build ahead of time; checked for parsing only.
@pytest.fixture(scope="module")
def digits_table():
    x, y = zoo.digits("test")
    calib, _ = zoo.digits("calib")
    model = zoo.load("digits_cnn")
    return precision_table(model, x, labels=y, calibration_data=calib, methods=("entropy", "minmax"),
                           progress=False)


def test_digits_precision_table_meets_targets(digits_table):
    rows = digits_table.set_index("config")
    assert rows.loc["fp32", "accuracy"] >= 0.97
    assert abs(rows.loc["fp16", "accuracy_delta"]) <= 0.5
    assert abs(rows.loc["int8 entropy", "accuracy_delta"]) <= 2.0
    assert abs(rows.loc["int8 minmax", "accuracy_delta"]) <= 2.0
    assert rows.loc["fp16", "max_abs"] > 0 and rows.loc["int8 minmax", "max_abs"] > rows.loc["fp16", "max_abs"]
    assert digits_table.attrs["samples"] == 400


def calibration_feeds(name):
    return [zoo.example_inputs(name, batch=2, seed=s) for s in range(4)]


@pytest.mark.parametrize("name", zoo.names())
def test_zoo_model_converts_and_runs(name):
    model = zoo.load(name)
    feeds = zoo.example_inputs(name, batch=2, seed=11)
    ref = run_onnx(model, feeds)
    half = to_fp16(model)
    int8 = quantize_int8(model, calibration_feeds(name), method="minmax", progress=False)
    assert any(n.op_type == "Cast" for n in half.proto.graph.node) or name == "quantized_dynamic"
    for candidate in (half, int8):
        got = run_onnx(candidate, feeds)
        assert set(got) == set(ref)
        for k in ref:
            assert got[k].shape == ref[k].shape
            if np.issubdtype(ref[k].dtype, np.floating) and name != "detection_postproc":
                scale = max(1.0, float(np.abs(ref[k]).max()))
                assert np.abs(got[k].astype(np.float64) - ref[k]).max() < 0.25 * scale, (name, k)


@needs_parser
@pytest.mark.parametrize("name", zoo.names())
def test_zoo_model_parses_and_int8_builds(name):
    model = zoo.load(name)
    half = to_fp16(model)
    int8 = quantize_int8(model, calibration_feeds(name), method="minmax", progress=False)
    parsed = {}
    for tag, m in (("fp32", model), ("fp16", half), ("int8", int8)):
        builder, network, parser, logger = trt.make_parser()  # parser needs builder and network alive
        parsed[tag] = bool(parser.parse(m.to_bytes()))
        del parser, network, builder, logger
    if name in PARSER_REJECTS:
        assert parsed == {"fp32": False, "fp16": False, "int8": False}
        return
    assert parsed == {"fp32": True, "fp16": True, "int8": True}
    if not trt.info().build:
        pytest.skip(f"ahead-of-time build unavailable here: {trt.info().reason}")
    shapes = {i.name: v.shape for i, v in zip(int8.inputs, zoo.example_inputs(name, batch=1).values())}
    shape = next(iter(shapes.values()))
    engine, logger = trt_build(int8, shape)
    assert engine is not None, logger.errors()
