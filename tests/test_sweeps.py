"""Precision sweeps on Dask (trtlab.study.sweeps) and their metrics (trtlab.study.metrics).

Metrics are checked against scikit-learn and hand-worked cases; sweeps run on a 2-worker
``LocalCluster`` of processes: a worker is killed mid-study and the study still returns every job
exactly once; a rerun computes nothing; a failing job is a row with its error.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import trtlab
from trtlab import zoo
from trtlab.study import metrics as M
from trtlab.study.sweeps import (RESULT_COLUMNS, JobStore, SweepConfig, SweepError, sweep_results)

import distributed  # noqa: E402  (the study extra, installed by make test)


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------


def test_top1_matches_sklearn_and_scores_agreement_without_labels():
    from sklearn.metrics import accuracy_score

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((50, 7)).astype(np.float32)
    labels = rng.integers(0, 7, 50)
    outputs = [{"y": logits[:20]}, {"y": logits[20:]}]
    got = M.top1()(outputs, labels)
    assert got == {"top1": pytest.approx(accuracy_score(labels, logits.argmax(1)))}
    noisy = [{"y": o["y"] + 0.3 * rng.standard_normal(o["y"].shape)} for o in outputs]
    agree = M.top1()(noisy, outputs)["top1"]  # targets = FP32 outputs: agreement
    assert agree == pytest.approx(np.mean(np.concatenate([n["y"] for n in noisy]).argmax(1) == logits.argmax(1)))
    assert 0.5 < agree < 1.0
    with pytest.raises(M.MetricError, match="50 predictions but 3 labels"):
        M.top1()(outputs, labels[:3])
    with pytest.raises(M.MetricError, match="no output 'z'"):
        M.top1("z")(outputs, labels)


def test_average_precision_equals_sklearn_when_every_box_is_found():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(1)
    tp = rng.random(40) < 0.6
    scores = rng.random(40)
    assert M.average_precision(tp, scores, int(tp.sum())) == pytest.approx(average_precision_score(tp, scores))
    # a ground-truth box no prediction finds caps recall: AP scales by found / total
    assert M.average_precision(tp, scores, int(tp.sum()) * 2) == pytest.approx(
        average_precision_score(tp, scores) / 2)


def test_detection_map_and_box_f1_on_a_worked_example():
    gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), np.array([[5, 5, 15, 15]], float)]
    image0 = {"boxes": np.array([[0, 0, 10, 9], [40, 40, 50, 50], [21, 21, 30, 30]], float),
              "scores": np.array([0.9, 0.8, 0.3])}
    image1 = {"boxes": np.array([[5, 5, 15, 15]], float), "scores": np.array([0.7])}
    got = M.detection("boxes", "scores", score_threshold=0.5)([image0, image1], gt)
    # ranking: 0.9 TP, 0.8 FP, 0.7 TP, 0.3 TP -> AP = (1/1 + 2/3 + 3/4) / 3
    assert got["mAP"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    # at score >= 0.5: TP 2 (0.9, 0.7), FP 1 (0.8), FN 1 (the box scored 0.3)
    assert got["box_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert (got["box_precision"], got["box_recall"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    perfect = M.detection("boxes", "scores")([image0, image1], [image0, image1])  # vs FP32 itself
    assert perfect["mAP"] == 1.0 and perfect["box_f1"] == 1.0
    assert M.box_iou(np.array([[0, 0, 2, 2]]), np.array([[1, 1, 3, 3]]))[0, 0] == pytest.approx(1 / 7)
    # either diagonal pair of corners, as ONNX NonMaxSuppression accepts
    assert M.box_iou(np.array([[2, 2, 0, 0]]), np.array([[0, 2, 2, 0]]))[0, 0] == pytest.approx(1.0)
    with pytest.raises(M.MetricError, match="2 evaluated image"):
        M.detection("boxes", "scores")([image0, image1], gt[:1])


def test_exact_match_decodes_ctc_and_counts_character_errors():
    charset = "-abc"  # index 0 is the CTC blank
    steps = [[1, 1, 0, 1, 2], [3, 0, 3, 3, 0], [2, 2, 2, 0, 0]]  # "aab", "cc", "b"
    logits = np.eye(4, dtype=np.float32)[np.array(steps)]
    assert M.ctc_greedy(logits) == [(1, 1, 2), (3, 3), (2,)]
    got = M.exact_match(charset=charset)([{"logits": logits}], ["aab", "cc", "bb"])
    assert got["exact_match"] == pytest.approx(2 / 3)
    assert got["char_error_rate"] == pytest.approx(1 / 7)
    assert M.edit_distance("kitten", "sitting") == 3
    strings = np.array(["AB12", "XY"], dtype=object)
    assert M.exact_match(decode="none")([{"text": strings}], ["AB12", "XZ"])["exact_match"] == 0.5


def test_cosine_matches_sklearn_per_sample():
    from sklearn.metrics.pairwise import cosine_similarity

    rng = np.random.default_rng(2)
    ref = rng.standard_normal((12, 16))
    got = ref + 0.5 * rng.standard_normal(ref.shape)
    expected = np.diag(cosine_similarity(got, ref))
    scores = M.cosine()([{"e": got[:5]}, {"e": got[5:]}], ref)
    assert scores["cosine"] == pytest.approx(expected.mean())
    assert scores["cosine_min"] == pytest.approx(expected.min())


def test_resolve_names_functions_and_errors():
    assert M.resolve(None).name == "top1"
    assert M.resolve("cosine").name == "cosine"

    def recall_at_1(outputs, targets):
        return 0.25

    metric = M.resolve(recall_at_1)
    assert metric.name == "recall_at_1" and metric([{"y": np.zeros(2)}], None) == {"recall_at_1": 0.25}
    assert M.top1("a").key != M.top1("b").key
    with pytest.raises(M.MetricError, match="Unknown metric 'map'"):
        M.resolve("map")
    with pytest.raises(M.MetricError, match="must take \\(outputs, targets\\)"):
        M.resolve(lambda outputs: 1.0)


# ----------------------------------------------------------------------------------------------
# grid, validation, store (no cluster)
# ----------------------------------------------------------------------------------------------


def test_grid_multiplies_int8_only():
    grid = trtlab.sweep_grid(methods=("entropy", "minmax", "percentile"), calibration_sizes=(32, 128))
    assert len(grid) == 2 + 3 * 2
    assert [c.name for c in grid[:3]] == ["fp32", "fp16", "int8 entropy n=32"]
    keep = trtlab.sweep_grid(("fp32", "fp16"), keep_fp32_nodes=((), ("/conv1/Conv",)))
    assert [c.name for c in keep] == ["fp32", "fp16", "fp16 + 1 fp32 node(s)"]
    with pytest.raises(SweepError, match="Unknown precision 'bf16'"):
        SweepConfig("bf16")
    with pytest.raises(SweepError, match="INT8 only"):
        SweepConfig("fp16", method="minmax")
    with pytest.raises(SweepError, match="calibration_size must be a positive integer"):
        SweepConfig("int8", calibration_size=0)


def test_bad_requests_fail_before_any_cluster_starts(tmp_path):
    x, y = zoo.digits("test")
    xc, _ = zoo.digits("calib")
    data = {"inputs": x, "targets": y, "calibration": xc}
    with pytest.raises(SweepError, match="grid is empty"):
        trtlab.sweep(["digits_cnn"], [], data, cache_dir=tmp_path)
    with pytest.raises(SweepError, match="need calibration data"):
        trtlab.sweep(["digits_cnn"], [SweepConfig("int8")], {"inputs": x}, cache_dir=tmp_path)
    with pytest.raises(SweepError, match="calibration_size=500 but only 200"):
        trtlab.sweep(["digits_cnn"], [SweepConfig("int8", "minmax", 500)], data, cache_dir=tmp_path)
    with pytest.raises(SweepError, match="no entry for model\\(s\\) \\['lstm_seq'\\]"):
        trtlab.sweep(["digits_cnn", "lstm_seq"], [SweepConfig()], {"digits_cnn": data}, cache_dir=tmp_path)
    with pytest.raises(SweepError, match="runner='gpu'"):
        trtlab.sweep(["digits_cnn"], [SweepConfig()], data, runner="gpu", cache_dir=tmp_path)
    with pytest.raises(SweepError, match="client= is a int"):
        trtlab.sweep(["digits_cnn"], [SweepConfig()], data, client=3, cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_store_writes_atomically_and_ignores_damaged_records(tmp_path):
    store = JobStore(tmp_path / "jobs")
    store.write("k1", {"model": "m", "result": {"status": "ok"}})
    assert store.read("k1")["result"] == {"status": "ok"}

    class Unwritable:
        def __repr__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        store.write("k2", {"result": Unwritable()})
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == ["k1.json"]  # no temp file, no k2
    store.path("k3").write_text('{"format": 1, "key": "k3", "resu')  # torn by a crash
    assert store.read("k3") is None
    store.path("k4").write_text(json.dumps({"format": 999, "key": "k4"}))
    assert store.read("k4") is None


# ----------------------------------------------------------------------------------------------
# sweeps on a 2-worker LocalCluster of processes
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    import dask

    with dask.config.set({"distributed.worker.daemon": False}):
        local = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                         dashboard_address=":0", silence_logs=50)
    client = distributed.Client(local)
    yield client
    client.close()
    local.close()


def slow_top1(log_path, pause_s, outputs, targets):
    """top-1 that first writes the worker's pid to ``log_path``, then pauses (a job in flight)."""
    with open(log_path, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    time.sleep(pause_s)
    return M.top1()(outputs, targets)["top1"]


def _digits():
    x, y = zoo.digits("test")
    xc, _ = zoo.digits("calib")
    return {"inputs": x[:128], "targets": y[:128], "calibration": xc}


def test_killed_worker_loses_only_its_job_and_rerun_does_no_work(cluster, tmp_path):
    log_path = tmp_path / "started.log"
    metric = M.Metric("top1", functools.partial(slow_top1, str(log_path), 0.7))
    grid = trtlab.sweep_grid(methods=("minmax",), calibration_sizes=(32, 128))
    grid.append(SweepConfig("fp16", keep_fp32_nodes=("no_such_node",)))  # fails: a row with its error
    folder = tmp_path / "sweep"
    run = trtlab.sweep(["digits_cnn"], grid, _digits(), metric=metric, client=cluster, cache_dir=folder,
                       latency_iterations=5, wait=False, progress=False)
    deadline = time.monotonic() + 60
    while not log_path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    victim = int(log_path.read_text().split()[0])
    assert victim in cluster.run(os.getpid).values()
    os.kill(victim, signal.SIGKILL)  # its job is in flight: inside the metric's pause
    partial_sizes = set()
    while not run.done and time.monotonic() < deadline:
        partial_sizes.add(len(run.table()))
        time.sleep(0.05)
    table = run.wait(timeout=max(1.0, deadline - time.monotonic()))

    assert list(table.columns[:len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert sorted(table["config"]) == sorted(c.name for c in grid)  # every job exactly once
    assert table["key"].is_unique and len(table) == len(grid) == 5
    started = log_path.read_text().split()
    assert len(started) >= 4 + 1  # 4 jobs reach the metric; the killed one started twice
    assert victim not in cluster.run(os.getpid).values()
    assert any(0 < n < len(grid) for n in partial_sizes)  # partial results were readable mid-run
    ok = table[table["status"] == "ok"]
    assert len(ok) == 4 and (ok["accuracy"] > 0.9).all() and ok["latency_ms"].gt(0).all()
    failed = table[table["status"] == "error"].iloc[0]
    assert failed["config"] == "fp16 + 1 fp32 node(s)" and "no_such_node" in failed["error"]
    fp16 = ok[ok["precision"] == "fp16"].iloc[0]
    int8 = ok[ok["precision"] == "int8"]
    assert fp16["size_bytes"] < ok[ok["precision"] == "fp32"]["size_bytes"].iloc[0]
    assert (int8["size_bytes"] < fp16["size_bytes"]).all()
    assert table.attrs["computed"] == 5 and not table["cached"].any()
    assert len(sweep_results(folder)) == 5  # what another process reads from the folder

    again = trtlab.sweep(["digits_cnn"], grid, _digits(), metric=metric, client=cluster, cache_dir=folder,
                         latency_iterations=5, progress=False)
    assert again.attrs["computed"] == 0 and again["cached"].all()
    assert log_path.read_text().split() == started  # no job ran again
    assert again["accuracy"].tolist() == pytest.approx(table["accuracy"].tolist(), nan_ok=True)
    assert again["error"].tolist() == table["error"].tolist()

    retried = trtlab.sweep(["digits_cnn"], grid, _digits(), metric=metric, client=cluster, cache_dir=folder,
                           latency_iterations=5, retry_failed=True, progress=False)
    assert retried.attrs["computed"] == 1  # only the failed job ran again (and failed again)
    assert retried.loc[~retried["cached"], "config"].tolist() == ["fp16 + 1 fp32 node(s)"]
    assert log_path.read_text().split() == started

    changed = trtlab.sweep(["digits_cnn"], grid[:1], {**_digits(), "targets": _digits()["targets"][::-1]},
                           metric=metric, client=cluster, cache_dir=folder, latency_iterations=5,
                           progress=False)
    assert changed.attrs["computed"] == 1  # other targets: another key, computed


def _backend_suite_case(name):
    root = Path(onnx.__file__).parent / "backend" / "test" / "data" / "pytorch-converted" / name
    model = onnx.version_converter.convert_version(onnx.load(str(root / "model.onnx")), 17)
    model.ir_version = 8
    arrays = []
    for part in ("input_0", "output_0"):
        tensor = onnx.TensorProto()
        tensor.ParseFromString((root / "test_data_set_0" / f"{part}.pb").read_bytes())
        arrays.append(numpy_helper.to_array(tensor))
    return model, arrays[0], arrays[1]


def test_onnx_backend_suite_models_on_a_cluster_address(cluster, tmp_path):
    """Models and expected outputs from the ONNX backend test suite (inside the onnx wheel)."""
    conv, x_conv, y_conv = _backend_suite_case("test_Conv2d")
    linear, x_lin, y_lin = _backend_suite_case("test_Linear")
    grid = [SweepConfig("fp32"), SweepConfig("fp16"), SweepConfig("int8", "minmax")]
    data = {"conv": {"inputs": x_conv, "targets": y_conv, "calibration": x_conv},
            "linear": {"inputs": x_lin, "targets": y_lin, "calibration": x_lin}}
    table = trtlab.sweep({"conv": conv, "linear": linear}, grid, data, metric="cosine",
                         client=cluster.scheduler.address, cache_dir=tmp_path, latency_iterations=2,
                         progress=False)
    assert table["status"].eq("ok").all(), table["error"].tolist()
    by = table.set_index(["model", "config"])
    for model in ("conv", "linear"):
        assert by.loc[(model, "fp32"), "accuracy"] > 1 - 1e-6  # FP32 reproduces the suite's outputs
        assert by.loc[(model, "fp32"), "cosine_min"] > 1 - 1e-6
        assert by.loc[(model, "fp16"), "accuracy"] > 0.999
        assert by.loc[(model, "int8 minmax"), "accuracy"] > 0.98
        assert by.loc[(model, "int8 minmax"), "max_abs"] > by.loc[(model, "fp16"), "max_abs"] > 0


def test_embedded_local_cluster_when_no_client(tmp_path):
    data = {"inputs": zoo.example_inputs("lstm_seq", batch=16, seed=1),
            "calibration": zoo.example_inputs("lstm_seq", batch=16, seed=2)}
    grid = [SweepConfig("fp32"), SweepConfig("int8", "percentile")]
    table = trtlab.sweep(["lstm_seq"], grid, data, metric="cosine", cache_dir=tmp_path, n_workers=1,
                         latency_iterations=2, progress=False)
    assert table["status"].eq("ok").all(), table["error"].tolist()
    assert table["target"].eq("fp32").all()  # no targets: agreement with FP32
    assert table.loc[table["config"] == "fp32", "accuracy"].iloc[0] == pytest.approx(1.0)
    assert 0.9 < table.loc[table["config"] == "int8 percentile", "accuracy"].iloc[0] < 1.0
    assert table.attrs["dashboard"].startswith("http")
    assert table["worker"].str.startswith("tcp://").all()


def test_detector_sweep_scores_box_agreement_with_fp32(cluster, tmp_path):
    """detection_postproc (NMS, TopK, GatherND): each feed is one image; FP32 boxes are the truth."""
    feeds = [zoo.example_inputs("detection_postproc", seed=s) for s in range(6)]
    calib = [zoo.example_inputs("detection_postproc", seed=100 + s) for s in range(6)]
    metric = M.detection("det_boxes", "det_scores", "det_classes", score_threshold=0.3)
    grid = [SweepConfig("fp32"), SweepConfig("int8", "minmax")]
    table = trtlab.sweep(["detection_postproc"], grid, {"inputs": feeds, "calibration": calib}, metric=metric,
                         client=cluster, cache_dir=tmp_path, latency_iterations=2, progress=False)
    assert table["status"].eq("ok").all(), table["error"].tolist()
    fp32, int8 = table.set_index("config").loc[["fp32", "int8 minmax"]].to_dict("records")
    assert (fp32["metric"], fp32["accuracy"], fp32["box_f1"]) == ("mAP", 1.0, 1.0)
    assert 0.5 < int8["accuracy"] <= 1.0 and 0.5 < int8["box_f1"] <= 1.0
    assert int8["max_abs"] > 0
