"""compare() and precision_table() with Polygraphy's Comparator; plot_accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from trtlab.study.accuracy import COMPARE_COLUMNS, TABLE_COLUMNS, compare, precision_table
from trtlab.errors import CompareError
from trtlab.backends.onnxruntime.session import run_onnx
from trtlab.precision import quantize_int8, to_fp16

from test_precision import images, residual_net


def test_compare_rows_per_candidate_and_output():
    model, x = residual_net(), images(24)
    fp16 = to_fp16(model)
    noisy = lambda feeds: {"y": run_onnx(model, feeds)["y"] + 0.5}  # noqa: E731
    table = compare(model, {"fp16": fp16, "noisy": noisy}, x, atol=1e-2, rtol=1e-2, batch_size=8)
    assert list(table.columns) == COMPARE_COLUMNS
    assert list(zip(table.candidate, table.output)) == [("fp16", "y"), ("noisy", "y")]
    fp16_row, noisy_row = table.iloc[0], table.iloc[1]
    assert bool(fp16_row["pass"]) and not bool(noisy_row["pass"])
    assert noisy_row.max_abs == pytest.approx(0.5, abs=1e-5) and noisy_row.mean_abs == pytest.approx(0.5, abs=1e-5)
    assert fp16_row.max_abs < 1e-2 and fp16_row.cosine > 0.9999 and fp16_row.top1_agree == 1.0
    assert noisy_row.top1_agree == 1.0  # a constant shift keeps the argmax
    assert noisy_row.executor == "callable" and fp16_row.executor == "onnxruntime"
    assert table.latency_ms.gt(0).all()


def test_compare_accuracy_with_labels_and_strict_tolerance():
    model, x = residual_net(), images(16)
    labels = run_onnx(model, {"x": x})["y"].argmax(1)
    int8 = quantize_int8(model, images(64, seed=3), method="minmax", progress=False)
    # Without a task metric, pass is the element-wise check: 1e-7 fails INT8.
    strict = compare(model, {"int8": int8}, {"x": x}, atol=1e-7, rtol=1e-7)
    assert not bool(strict["pass"].iloc[0]) and strict["pass_rule"].iloc[0].startswith("elementwise")
    # With labels, pass follows the task metric's tolerance.
    table = compare(model, {"int8": int8}, {"x": x}, labels=labels, atol=1e-7, rtol=1e-7,
                    include_reference=True, reference_name="fp32")
    ref, cand = table.set_index("candidate").loc["fp32"], table.set_index("candidate").loc["int8"]
    assert ref.accuracy == 1.0 and ref.max_abs == 0.0
    assert 0.8 <= cand.accuracy <= 1.0
    assert bool(cand["pass"]) == (1.0 - cand.accuracy <= 0.01)
    assert cand["pass_rule"] == "accuracy drop <= 1 pt"
    loose = compare(model, {"int8": int8}, {"x": x}, labels=labels, accuracy_tolerance=0.5)
    assert bool(loose["pass"].iloc[0])


def test_top1_agree_only_for_classifier_outputs():
    from trtlab import zoo
    from trtlab.study.accuracy import classifier_outputs

    det = zoo.load("detection_postproc")
    assert classifier_outputs(det) == set()
    assert classifier_outputs(zoo.load("digits_cnn")) == {"logits"}
    feeds = [zoo.example_inputs("detection_postproc")]
    table = compare(det, {"same": det}, feeds)
    assert table["top1_agree"].isna().all()        # boxes [detections, 4] are no class scores
    assert (table["max_abs"] == 0).all()


def test_compare_rejects_bad_requests():
    with pytest.raises(CompareError, match="at least one candidate"):
        compare(residual_net(), {}, images(2))
    with pytest.raises(CompareError, match="lacks output"):
        compare(residual_net(), {"bad": lambda feeds: {"other": np.zeros((2, 10), np.float32)}}, images(2))
    with pytest.raises(CompareError, match="Cannot run"):
        compare(residual_net(), {"bad": 42}, images(2))


def test_precision_table_and_plot(tmp_path):
    model = residual_net()
    x = images(32, seed=7)
    labels = run_onnx(model, {"x": x})["y"].argmax(1)
    table = precision_table(model, x, labels=labels, calibration_data=images(64), methods=("minmax",),
                            keep_fp32_nodes=["fc"], runner="onnxruntime", cache_dir=tmp_path, progress=False)
    assert list(table.columns) == TABLE_COLUMNS
    assert list(table.config) == ["fp32", "fp16", "fp16 + 1 fp32 node(s)", "int8 minmax",
                                  "int8 minmax + 1 fp32 node(s)"]
    rows = table.set_index("config")
    assert rows.loc["fp32", "accuracy"] == 1.0 and rows.loc["fp32", "accuracy_delta"] == 0.0
    assert rows.loc["int8 minmax + 1 fp32 node(s)", "mean_abs"] < rows.loc["int8 minmax", "mean_abs"]
    assert rows.loc["fp16", "executor"].startswith("onnxruntime")
    # Latency from warm repeated runs: a median and its spread for every configuration.
    assert (table.latency_ms > 0).all() and (table.latency_p90_ms >= table.latency_ms).all()
    assert table.latency_cv.notna().all()
    import matplotlib

    matplotlib.use("Agg")
    from trtlab.viz.accuracy import plot_accuracy

    fig = plot_accuracy(table)
    acc_ax, lat_ax = fig.axes
    assert len(acc_ax.patches) == len(table)
    texts = [t.get_text() for t in acc_ax.texts]
    assert texts and not any("ms" in t for t in texts)     # no latency on the accuracy bars
    medians = lat_ax.collections[-1].get_offsets()[:, 0]
    np.testing.assert_allclose(medians, table.latency_ms)
    with pytest.raises(CompareError):
        plot_accuracy(table.drop(columns=["config"]))
    with pytest.raises(CompareError, match="calibration_data"):
        precision_table(model, x, precisions=("fp32", "int8"))


def test_precision_table_auto_runs_on_onnxruntime_without_tensorrt(monkeypatch, tmp_path):
    import dataclasses

    import trtlab.codegen
    from trtlab.backends.tensorrt import flavor as trt

    info = dataclasses.replace(trt.info(), build=False, run=False)
    monkeypatch.setattr(trt, "info", lambda: info)

    def no_build(*args, **kwargs):
        raise AssertionError("build() called although TensorRT cannot build here")

    monkeypatch.setattr(trtlab.codegen, "build", no_build)
    model, x = residual_net(), images(8, seed=1)
    table = precision_table(model, x, precisions=("fp32", "fp16"), runner="auto", cache_dir=tmp_path,
                            progress=False)
    assert list(table.config) == ["fp32", "fp16"]
    assert table.executor.str.startswith("onnxruntime").all()
