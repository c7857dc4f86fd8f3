"""``trtlab partition`` with its parser in a forked worker writes, on every trained model of the
real tier, the folder it writes with the parser in process: support tables, partition.json,
segments and manifest byte for byte."""

from __future__ import annotations

import os
from pathlib import Path

import fetch_real_models
import pytest

from trtlab.backends.tensorrt import flavor as trt
from trtlab.backends.tensorrt import parser_worker
from trtlab.cli.main import main

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(not trt.info().parse, reason="needs TensorRT's ONNX parser"),
    pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is not available on this platform"),
]

IDS = [m.id for m in fetch_real_models.load_manifest()]


def _folder(path: Path) -> dict:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("model_id", IDS)
def test_partition_folder_is_the_same_with_the_parser_worker(real_model_paths, tmp_path, monkeypatch, model_id):
    import threading

    path = str(real_model_paths[model_id])
    # earlier tests of this process may leave idle pool threads, which make start() refuse to fork
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    monkeypatch.setattr(parser_worker, "spare_core", lambda: True)  # however busy the machine is
    started = []
    real_start = parser_worker.start
    monkeypatch.setattr(parser_worker, "start", lambda *a, **k: started.append(real_start(*a, **k)) or started[-1])
    assert main(["partition", path, "--out", str(tmp_path / "worker")]) == 0
    assert started and started[0] is not None  # the parser ran in the worker
    monkeypatch.delattr(os, "fork")
    assert main(["partition", path, "--out", str(tmp_path / "here")]) == 0
    assert started[-1] is None  # ... and here in this process
    worker, here = _folder(tmp_path / "worker"), _folder(tmp_path / "here")
    assert sorted(worker) == sorted(here)
    for name in here:
        assert worker[name] == here[name], name
