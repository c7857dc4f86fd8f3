"""The pipeline subcommands and the HTML report, run end to end on a small zoo model."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import onnx
import pandas as pd
import pytest

from trtlab import zoo
from trtlab.backends.tensorrt import flavor as trt
from trtlab.partitioning.partitioner import partition


def run_cli(*args, check=True):
    res = subprocess.run([sys.executable, "-m", "trtlab.cli", *args], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"trtlab {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")
    return res


def test_partition_writes_valid_segments(tmp_path):
    out = tmp_path / "seg"
    res = run_cli("partition", str(zoo.path("detection_postproc")), "--out", str(out), "--source", "rules")
    files = sorted(p.name for p in out.glob("*.onnx"))
    summary = pd.read_csv(out / "summary.csv")
    assert len(files) == len(summary) >= 2
    assert set(summary["backend"]) == {"tensorrt", "fallback"}
    for f in out.glob("*.onnx"):
        onnx.checker.check_model(onnx.load(f))
    assert (out / "partition.json").read_text().startswith("{")
    assert f"{len(files)} segments written to {out.resolve()}\n" in res.stdout


def test_partition_prints_its_table_without_pandas(tmp_path):
    """The partition command prints the summary from plain rows: pandas is never imported."""
    out = tmp_path / "seg"
    code = ("import sys\n"
            "from trtlab.cli.main import main\n"
            f"code = main(['partition', {str(zoo.path('detection_postproc'))!r}, '--out', {str(out)!r}])\n"
            "print('heavy:', sorted(m for m in ('pandas', 'matplotlib', 'networkx') if m in sys.modules))\n"
            "sys.exit(code)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "heavy: []" in res.stdout
    summary = pd.read_csv(out / "summary.csv")
    lines = res.stdout.splitlines()
    assert lines[0].split() == list(summary.columns)
    for line, (_, row) in zip(lines[1:], summary.iterrows()):
        assert line.split()[:4] == [str(row["segment"]), row["name"], row["backend"], str(row["nodes"])]


def test_warnings_print_one_clean_line(monkeypatch, capsys):
    import warnings

    from trtlab.cli import main as cli

    def noisy(args):
        warnings.warn("timings are noisy", UserWarning)
        return 0

    monkeypatch.setattr(cli, "cmd_info", noisy)
    assert cli.main(["info"]) == 0
    assert capsys.readouterr().err == "trtlab: warning: timings are noisy\n"


@pytest.mark.skipif(not trt.info().build, reason="no TensorRT that can build engines on this machine")
def test_build_prints_executors_and_cache(tmp_path):
    x, _ = zoo.digits("test")
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, input=x[:2])
    res = run_cli("build", str(zoo.path("digits_cnn")), "--cache-dir", str(tmp_path), "--quiet", "--feeds", str(feeds))
    assert "trt_0" in res.stdout
    expected = "tensorrt" if trt.info().run else "onnxruntime"
    assert expected in res.stdout
    assert "miss" in res.stdout
    assert "input: [2, 1, 8, 8]" in res.stdout  # the profile comes from the feeds
    shape = "input=" + "x".join(str(d) for d in x[:2].shape)
    again = run_cli("build", str(zoo.path("digits_cnn")), "--cache-dir", str(tmp_path), "--quiet", "--shapes", shape)
    assert "hit" in again.stdout
    lazy = run_cli("build", str(zoo.path("digits_cnn")), "--cache-dir", str(tmp_path), "--quiet")
    assert "engines build at the first run" in lazy.stdout


@pytest.mark.skipif(not trt.info().build, reason="no TensorRT that can build engines on this machine")
def test_bench_prints_statistics(tmp_path):
    x, _ = zoo.digits("test")
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, input=x[:4])
    res = run_cli("bench", str(zoo.path("digits_cnn")), "--cache-dir", str(tmp_path), "--quiet",
                  "--iterations", "20", "--warmup", "2", "--feeds", str(feeds))
    for col in ("median", "p99", "cv", "throughput"):
        assert col in res.stdout
    assert "onnxruntime" in res.stdout and "hybrid fp32" in res.stdout


def test_bench_rejects_bad_feeds(tmp_path):
    bad = tmp_path / "feeds.npz"
    np.savez(bad, wrong_name=np.zeros((1, 1, 8, 8), np.float32))
    res = run_cli("bench", str(zoo.path("digits_cnn")), "--cache-dir", str(tmp_path), "--quiet",
                  "--feeds", str(bad), check=False)
    assert res.returncode == 3  # bad input (trtlab.cli.main.EXIT_INPUT)
    assert "wrong_name" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.skipif(not trt.info().build, reason="no TensorRT that can build engines on this machine")
def test_report_counts_the_segments_that_were_built(tmp_path):
    from trtlab.cli.report import report, write_html

    rep = report(zoo.path("detection_postproc"), precisions=(), iterations=0, cache_dir=tmp_path,
                 progress=False)
    built = next(s for s in rep.sections if s.title == "Build and run")
    planned = partition(zoo.load("detection_postproc")).segments
    if "could not build" not in built.body:  # this TensorRT builds every segment: nothing moved
        assert "build_failed" not in built.body
        assert rep.facts["segments"] == len(planned)
        return
    assert "build_failed" in built.body
    assert rep.facts["segments"] > len(planned)
    assert f"runs as {rep.facts['segments']} segments" in built.body
    assert "overflow-x: auto" in write_html([rep], tmp_path / "index.html").read_text()


@pytest.mark.skipif(not trt.info().build, reason="no TensorRT that can build engines on this machine")
def test_report_html_has_every_section(tmp_path):
    from trtlab.cli.report import report, write_html

    x, y = zoo.digits("test")
    xc, _ = zoo.digits("calib")
    rep = report(zoo.path("digits_cnn"), feeds={"input": x[:8]}, data={"input": x[:200]}, labels=y[:200],
                 calibration_data={"input": xc[:64]}, iterations=10, cache_dir=tmp_path, progress=False)
    assert [s.title for s in rep.sections] == ["Model", "Support", "Partition", "Build and run",
                                              "Layer fusion", "Precision", "Latency"]
    assert rep.errors == []
    assert rep.facts["segments"] == 1 and rep.facts["hybrid vs ORT max abs"] == "0.00e+00"
    path = write_html([rep], tmp_path / "index.html")
    text = path.read_text()
    assert text.count("<img src='data:image/png;base64,") >= 3  # partition, accuracy, latency
    for needle in ("tensorrt flavor", "executor", "int8", "fp16", "onnx_nodes", "p99"):
        assert needle in text


def test_report_records_a_failed_step_and_goes_on(tmp_path, monkeypatch):
    from trtlab.cli import report as report_mod
    from trtlab.errors import BuildError

    def broken_build(*args, **kwargs):
        raise BuildError("builder exploded on purpose")

    monkeypatch.setattr("trtlab.codegen.build", broken_build)
    rep = report_mod.report(zoo.path("digits_cnn"), precisions=(), iterations=0, progress=False)
    failed = {s.title: s.error for s in rep.errors}
    assert list(failed) == ["Build and run"] and "exploded on purpose" in failed["Build and run"]
    assert "Layer fusion" in [s.title for s in rep.sections]  # later steps still ran


def test_build_shapes_flag_parses_ranges():
    from trtlab.cli.steps import _parse_shapes
    from trtlab.errors import InputError

    assert _parse_shapes(["x=1x3x8x8"]) == {"x": (1, 3, 8, 8)}
    assert _parse_shapes(["x=1x3x8x8,2x3x8x8,4x3x8x8"]) == {"x": ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))}
    assert _parse_shapes(None) is None
    with pytest.raises(InputError, match="NAME=1x3x224x224"):
        _parse_shapes(["1x3x8x8"])



def _folder(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.skipif(not trt.info().parse, reason="needs TensorRT's ONNX parser")
@pytest.mark.parametrize("name, all_accepted", [("detection_postproc", False), ("quantized_dynamic", False),
                                                ("lstm_seq", True), ("digits_cnn", True)])
def test_partition_parses_in_a_worker_and_writes_what_it_writes_without(tmp_path, name, all_accepted):
    """trtlab partition forks a parser worker (where fork is available) and, while it parses, plans
    the folder of an all-accepted partition, written only when the parser accepts every node: the
    folder is byte for byte the one written with the parser in process (fork unavailable)."""
    import os

    model = str(zoo.path(name))
    spare = ("import sys\n"
             "from trtlab.backends.tensorrt import parser_worker\n"
             "parser_worker.spare_core = lambda: True  # however busy the machine running the tests is\n"
             "from trtlab.cli.main import main\n"
             "sys.exit(main(sys.argv[1:]))\n")
    worker = subprocess.run([sys.executable, "-c", spare, "--debug", "partition", model, "--out",
                             str(tmp_path / "worker")], capture_output=True, text=True)
    assert worker.returncode == 0, worker.stderr
    if hasattr(os, "fork"):
        assert re.search(r"parser worker \d+ started", worker.stderr)
        assert ("writing the folder planned while the parser ran" in worker.stderr) == all_accepted
    code = ("import os, sys\n"
            "del os.fork\n"
            "from trtlab.cli.main import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    here = subprocess.run([sys.executable, "-c", code, "--debug", "partition", model, "--out", str(tmp_path / "here")],
                          capture_output=True, text=True)
    assert here.returncode == 0, here.stderr
    assert re.search("not started: (os.fork is unavailable|no core to spare)", here.stderr)
    assert here.stdout.replace("/here", "/worker") == worker.stdout
    a, b = _folder(tmp_path / "worker"), _folder(tmp_path / "here")
    assert sorted(a) == sorted(b)
    assert a == b


def test_partition_leaves_no_parser_worker_behind(tmp_path, monkeypatch):
    """Run in this process (threads of earlier tests aside): the worker is reaped by the command."""
    import os
    import threading
    from pathlib import Path

    from trtlab.backends.tensorrt import parser_worker
    from trtlab.cli.main import main

    def children():
        pids = set()
        for task in Path(f"/proc/{os.getpid()}/task").iterdir():
            if (task / "children").exists():
                pids.update(int(p) for p in (task / "children").read_text().split())
        return pids

    started = []
    real_start = parser_worker.start
    monkeypatch.setattr(threading, "active_count", lambda: 1)  # forking here is safe: nothing runs
    monkeypatch.setattr(parser_worker, "spare_core", lambda: True)  # however busy the machine is
    monkeypatch.setattr(parser_worker, "start", lambda *a, **k: started.append(real_start(*a, **k)) or started[-1])
    before = children()
    assert main(["partition", str(zoo.path("detection_postproc")), "--out", str(tmp_path / "out")]) == 0
    assert started and started[0] is not None and started[0].pid not in children()
    assert children() == before
