"""TensorRT's ONNX parser in a forked worker (trtlab.backends.tensorrt.parser_worker): the same
answers as the parser in this process, a crash that is a SupportError, no process left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

import trtlab
from trtlab.backends.tensorrt import flavor as trt
from trtlab.backends.tensorrt import parser_worker
from trtlab.backends.tensorrt.support import check_support, parse_support
from trtlab.errors import MissingDependencyError, SupportError

import test_support_parser as synthetic
from backend_cases import case_ids, load_case, quick_ids

pytestmark = [
    pytest.mark.skipif(not trt.info().parse, reason="needs TensorRT or TensorRT-RTX with a working ONNX parser"),
    pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is not available on this platform"),
]

ZOO = sorted((Path(__file__).resolve().parent.parent / "data").glob("*.onnx"))


def _children() -> set:
    """Process ids of this process's children (every thread's)."""
    pids = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        text = (task / "children").read_text() if (task / "children").exists() else ""
        pids.update(int(p) for p in text.split())
    return pids


def _running(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _started(**kwargs) -> parser_worker.ParserWorker:
    worker = parser_worker.start(**kwargs)
    assert worker is not None, "os.fork is available here: start() must fork a worker"
    return worker


def _report_fields(report) -> dict:
    fields = asdict(report)  # the verdicts resolved
    fields.pop("seconds")
    return fields


def _same_answers(model, worker) -> None:
    """parse_support and check_support through the worker equal the in-process ones."""
    here = parse_support(model)
    there = parse_support(model, worker=worker)
    assert _report_fields(there) == _report_fields(here)
    a, b = check_support(model, source="parser"), check_support(model, source="parser", worker=worker)
    assert b.target == a.target
    assert b.frame.equals(a.frame)


def _idle_threads_only(mp: pytest.MonkeyPatch) -> None:
    """Earlier tests of this process may leave idle pool threads, which make start() refuse to
    fork (right for a library call); these tests fork knowing that nothing runs in them."""
    import threading

    mp.setattr(threading, "active_count", lambda: 1)


@pytest.fixture(autouse=True)
def _forkable_here(monkeypatch):
    _idle_threads_only(monkeypatch)


@pytest.fixture(scope="module")
def worker():
    with pytest.MonkeyPatch.context() as mp:
        _idle_threads_only(mp)
        w = _started()
    with w:
        yield w
    assert not _running(w.pid)


# -- the same answers ---------------------------------------------------------------------------

@pytest.mark.parametrize("factory", [synthetic.relu_unique_relu, synthetic.dropout_then_unique,
                                     synthetic.custom_domain_op, synthetic.if_with_unsupported_branch],
                         ids=lambda f: f.__name__)
def test_worker_answers_as_the_parser_here_on_stops_and_rechecks(worker, factory):
    model = factory()
    _same_answers(model, worker)


def test_worker_answers_as_the_parser_here_on_many_rechecks(worker):
    model = synthetic._stopping_chain(120)
    report = parse_support(model, worker=worker)
    assert report.passes > 2  # the worker answered every re-check pass
    _same_answers(model, worker)


@pytest.mark.parametrize("path", ZOO, ids=lambda p: p.stem)
def test_worker_answers_as_the_parser_here_on_the_zoo(worker, path):
    _same_answers(trtlab.load(path), worker)


def test_worker_answers_as_the_parser_here_on_the_onnx_backend_suite(worker):
    """A fixed sample of the ONNX backend test suite (every 40th node case, model cases)."""
    compared = 0
    for cid in quick_ids(case_ids(), every=40):
        try:
            model = trtlab.load(load_case(cid).model)
        except trtlab.TrtlabError:
            continue  # a case trtlab refuses to load has no support table
        try:
            here = parse_support(model)
        except SupportError as exc:
            with pytest.raises(SupportError) as info:
                parse_support(model, worker=worker)
            assert str(info.value) == str(exc), cid
            continue
        assert _report_fields(parse_support(model, worker=worker)) == _report_fields(here), cid
        compared += 1
    assert compared >= 40


def test_worker_reports_flavor_and_version_of_the_parser_here(worker):
    assert worker.can_parse and worker.problem is None
    assert worker.flavor == trt.flavor()
    assert worker.version == trt.version()
    assert worker.version_tuple() == trt.version_tuple()


# -- failures -----------------------------------------------------------------------------------

def _segfault(data, path, made):
    os.kill(os.getpid(), signal.SIGSEGV)


def test_a_parser_crash_is_a_support_error_and_the_worker_is_reaped():
    children = _children()
    worker = _started(run=_segfault)
    model = synthetic.relu_unique_relu()
    with pytest.raises(SupportError, match=r"signal 11 \(SIGSEGV\)") as info:
        check_support(model, source="parser", worker=worker)
    assert "TensorRT's ONNX parser" in str(info.value)
    assert not _running(worker.pid)
    assert _children() == children  # reaped: no zombie left
    assert not worker.can_parse
    table = check_support(model, source="parser", worker=worker)  # a dead worker is not used
    assert table.frame["supported"].tolist() == [True, False, True]
    worker.close()


def _raise(data, path, made):
    raise RuntimeError("the parser refused these bytes")


def test_a_parser_exception_keeps_its_message():
    with _started(run=_raise) as worker:
        with pytest.raises(SupportError, match="failed on model 'g': the parser refused these bytes"):
            parse_support(synthetic.relu_unique_relu(), worker=worker)
        assert _running(worker.pid)  # an exception is an answer, not a crash


def test_a_worker_without_tensorrt_is_not_used(monkeypatch):
    def missing():
        raise MissingDependencyError("TensorRT is not installed")

    monkeypatch.setattr(trt, "module", missing)  # the forked worker inherits it
    with _started() as worker:
        assert not worker.can_parse
        assert "TensorRT is not installed" in worker.problem
        monkeypatch.undo()
        model = synthetic.relu_unique_relu()
        assert check_support(model, source="auto", worker=worker).frame.equals(
            check_support(model, source="auto").frame)


def test_while_parsing_runs_once_during_the_first_call(worker):
    calls = []
    worker.while_parsing(lambda: calls.append("imports"))
    worker.while_parsing(lambda: 1 / 0)  # logged; the call still answers
    parse_support(synthetic.relu_unique_relu(), worker=worker)
    parse_support(synthetic.relu_unique_relu(), worker=worker)
    assert calls == ["imports"]


# -- no process left behind ---------------------------------------------------------------------

def test_close_ends_and_reaps_the_worker():
    children = _children()
    worker = _started()
    assert worker.pid in _children() and _running(worker.pid)
    worker.close()
    worker.close()  # twice is fine
    assert not _running(worker.pid)
    assert _children() == children


def test_a_later_worker_does_not_keep_an_earlier_one_alive():
    first = _started()
    second = _started()  # forked while the first runs: it must not hold the first's pipe
    first.close()
    assert not _running(first.pid)
    second.close()
    assert not _running(second.pid)


def test_an_idle_worker_exits_on_its_own(monkeypatch):
    monkeypatch.setattr(parser_worker, "IDLE_TIMEOUT", 0.3)
    worker = _started()
    assert worker.can_parse
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pid, status = os.waitpid(worker.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.05)
    assert pid == worker.pid and os.waitstatus_to_exitcode(status) == 0
    worker._status = status
    worker.close()


def test_the_worker_exits_when_its_caller_dies():
    """A caller killed while its worker waits: the worker sees end of file and exits."""
    code = ("import os, sys\n"
            "from trtlab.backends.tensorrt import parser_worker\n"
            "w = parser_worker.start()\n"
            "print(w.pid, w.flavor, flush=True)\n"
            "os.kill(os.getpid(), 9)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == -signal.SIGKILL
    pid = int(res.stdout.split()[0])
    deadline = time.monotonic() + 20
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(pid)


# -- where fork is unavailable ------------------------------------------------------------------

def test_no_fork_means_no_worker(monkeypatch):
    monkeypatch.delattr(os, "fork")
    assert parser_worker.start() is None


def test_a_failing_fork_means_no_worker(monkeypatch):
    def refuse():
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", refuse)
    children = _children()
    assert parser_worker.start() is None
    assert _children() == children


def test_other_threads_mean_no_worker(monkeypatch):
    import threading

    monkeypatch.setattr(threading, "active_count", lambda: 2)
    assert parser_worker.start() is None


@pytest.mark.parametrize("weight_bytes", [4096, 9 << 20], ids=["small_file", "file_over_8MiB"])
def test_worker_answers_as_the_parser_here_on_model_files(worker, tmp_path, weight_bytes):
    """A model read from a file (over 8 MiB: serialized field by field) and the same model saved
    with its weights as external data (the parser is given a path in their folder)."""
    import onnx

    path = synthetic._relu_chain_file(tmp_path / "chain.onnx", weight_bytes)
    _same_answers(trtlab.load(path), worker)
    proto = onnx.load(path)
    folder = tmp_path / "external"
    folder.mkdir()
    onnx.save(proto, folder / "model.onnx", save_as_external_data=True, location="model.onnx.data",
              size_threshold=0)
    model = trtlab.load(folder / "model.onnx")
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.proto.graph.initializer)
    _same_answers(model, worker)


# -- when the command uses a worker -------------------------------------------------------------

@pytest.mark.parametrize("load, cores, spare", [(0.3, 2, True), (1.9, 2, True), (2.2, 2, True), (2.5, 2, False),
                                                (3.1, 2, False), (0.0, 1, False), (6.0, 8, True), (8.6, 8, False)])
def test_a_core_is_spare_when_the_load_is_below_the_cores_and_a_half(monkeypatch, load, cores, spare):
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert parser_worker.spare_core() is spare


def test_the_command_parses_in_process_on_a_busy_machine(tmp_path, monkeypatch):
    from trtlab.cli.main import main

    monkeypatch.setattr(parser_worker, "spare_core", lambda: False)
    monkeypatch.setattr(parser_worker, "start", lambda *a, **k: pytest.fail("no worker on a busy machine"))
    assert main(["partition", str(ZOO[0]), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "partition.json").is_file()
