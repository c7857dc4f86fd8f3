"""The ``trtlab`` command's conventions: --version, --json, exit codes, --debug, progress bars,
and ``trtlab notebooks``."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

import trtlab
from trtlab import config, zoo
from trtlab.cli import main as cli
from trtlab.backends.tensorrt import flavor as trt
from trtlab import _progress
from trtlab.errors import (BuildError, CacheError, InputError, MissingDependencyError,
                           ModelLoadError, PartitionError, TrtlabError)

needs_build = pytest.mark.skipif(not trt.info().build,
                                 reason="no TensorRT that can build engines on this machine")


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "trtlab.cli", *args], capture_output=True,
                          text=True, env=env)


# --- --version, exit codes, --debug ---------------------------------------------------------


def test_version_prints_the_package_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"trtlab {trtlab.__version__}"


@pytest.mark.parametrize("exc, code", [
    (InputError("x"), cli.EXIT_INPUT),
    (ModelLoadError("x"), cli.EXIT_INPUT),
    (PartitionError("x"), cli.EXIT_INPUT),
    (BuildError("x"), cli.EXIT_RUNTIME),
    (CacheError("x"), cli.EXIT_RUNTIME),
    (TrtlabError("x"), cli.EXIT_RUNTIME),
    (PermissionError("x"), cli.EXIT_RUNTIME),
    (MissingDependencyError("x"), cli.EXIT_MISSING_DEPENDENCY),
    (KeyError("x"), cli.EXIT_INTERNAL),
    (KeyboardInterrupt(), cli.EXIT_INTERRUPTED),
])
def test_exit_code_per_kind_of_failure(exc, code):
    assert cli.exit_code(exc) == code


_EXIT_NOW = (
    "import atexit, sys, tempfile, threading, time, weakref\n"
    "from trtlab.cli.main import exit_now\n"
    "atexit.register(lambda: print('handler ran', flush=False))\n"
    "tmp = tempfile.TemporaryDirectory()\n"
    "print(tmp.name)\n"
    "if sys.argv[1] == 'thread':\n"
    "    threading.Thread(target=lambda: (time.sleep(0.3), print('thread done'))).start()\n"
    "sys.stdout.write('x' * 200000)\n"
    "sys.stderr.write('to stderr')\n"
    "exit_now(3)\n"
)


@pytest.mark.parametrize("case", ["plain", "thread"])
def test_exit_now_keeps_output_handlers_and_exit_code(case):
    """The command's exit skips the interpreter's teardown, not what outlives the process: the
    exit status, every byte buffered on stdout and stderr (a pipe, block-buffered), atexit
    handlers and finalizers (a TemporaryDirectory is removed); with a thread still running,
    the normal exit waits for it."""
    res = subprocess.run([sys.executable, "-c", _EXIT_NOW, case], capture_output=True, text=True, timeout=60)
    assert res.returncode == 3, res.stderr
    lines = res.stdout.splitlines()
    tmp = lines[0]
    assert not os.path.exists(tmp), "the TemporaryDirectory's finalizer did not run"
    assert "x" * 200000 in res.stdout
    assert "handler ran" in res.stdout
    assert res.stderr.endswith("to stderr")
    assert ("thread done" in res.stdout) == (case == "thread")


@pytest.mark.parametrize("words, collector", [(["info", "--json"], False), (["--debug", "info"], False),
                                              (["bench", "--help"], True)])
def test_short_commands_run_without_the_cyclic_collector(words, collector):
    code = ("import atexit, gc, sys\n"
            "from trtlab.cli.main import run\n"
            "atexit.register(lambda: sys.stderr.write(f'collector={gc.isenabled()}'))\n"
            f"run({words!r})\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stderr.endswith(f"collector={collector}")


def test_exit_now_with_stdout_closed_and_under_a_profiler(tmp_path):
    """A command whose stdout was closed at start (``>&-``: ``sys.stdout`` is None) still exits
    with its status; under ``python -m cProfile`` the normal exit runs, so the profile is written."""
    script = tmp_path / "cmd.py"
    script.write_text("from trtlab.cli.main import exit_now\nprint('gone')\nexit_now(3)\n")
    res = subprocess.run(["sh", "-c", f'"{sys.executable}" "{script}" >&-'], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 3 and "Traceback" not in res.stderr, res.stderr
    out = tmp_path / "out.prof"
    res = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), str(script)], capture_output=True,
                         text=True, timeout=60)
    assert "Traceback" not in res.stderr, res.stderr  # (cProfile itself turns SystemExit into status 0)
    assert out.is_file() and out.stat().st_size > 0


def test_command_output_complete_through_a_pipe():
    """``python -m trtlab.cli`` (the fast exit of :func:`trtlab.cli.main.run`): a JSON document on a
    pipe arrives whole and the exit status is the command's."""
    res = run_cli("info", "--json")
    assert res.returncode == 0, res.stderr
    assert "python" in json.loads(res.stdout)
    res = run_cli("inspect", "/nonexistent/model.onnx")
    assert res.returncode == cli.EXIT_INPUT
    assert "does not exist" in res.stderr or "not found" in res.stderr


def test_exit_codes_are_distinct():
    codes = [cli.EXIT_OK, cli.EXIT_STEPS_FAILED, cli.EXIT_USAGE, cli.EXIT_INPUT, cli.EXIT_RUNTIME,
             cli.EXIT_MISSING_DEPENDENCY, cli.EXIT_INTERNAL, cli.EXIT_INTERRUPTED]
    assert len(set(codes)) == len(codes)
    for code in codes[1:]:  # every one is documented in the module docstring and in --help
        assert f"\n{code:<4}  " in cli.__doc__


def test_usage_error_exits_2(capsys):
    assert cli.main(["inspect"]) == cli.EXIT_USAGE
    assert cli.main(["no-such-command"]) == cli.EXIT_USAGE
    assert "usage: trtlab" in capsys.readouterr().err


def test_bad_input_is_one_line_on_stderr_and_exit_3(tmp_path):
    res = run_cli("inspect", str(tmp_path / "missing.onnx"))
    assert res.returncode == cli.EXIT_INPUT
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("trtlab: error: ")
    assert "missing.onnx" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_adds_the_traceback(tmp_path, where):
    args = ["inspect", str(tmp_path / "missing.onnx")]
    args = ["--debug", *args] if where == "before" else [*args, "--debug"]
    res = run_cli(*args)
    assert res.returncode == cli.EXIT_INPUT
    assert "Traceback (most recent call last)" in res.stderr and "ModelLoadError" in res.stderr
    assert res.stderr.rstrip().splitlines()[-1].startswith("trtlab: error: ")


@pytest.mark.parametrize("exc, code, text", [
    (BuildError("builder exploded"), cli.EXIT_RUNTIME, "trtlab: error: builder exploded\n"),
    (MissingDependencyError("pip install 'trtlab[rtx]'"), cli.EXIT_MISSING_DEPENDENCY,
     "trtlab: error: pip install 'trtlab[rtx]'\n"),
    (KeyError("oops"), cli.EXIT_INTERNAL,
     "trtlab: internal error: KeyError: 'oops' (rerun with --debug for the traceback)\n"),
    (KeyboardInterrupt(), cli.EXIT_INTERRUPTED, "trtlab: interrupted\n"),
])
def test_failures_map_to_their_exit_code(monkeypatch, capsys, exc, code, text):
    def fail(args):
        raise exc

    monkeypatch.setattr(cli, "cmd_info", fail)
    assert cli.main(["info"]) == code
    assert capsys.readouterr().err == text


def test_multiline_messages_stay_on_one_line(monkeypatch, capsys):
    def fail(args):
        raise BuildError("first line\n  second line")

    monkeypatch.setattr(cli, "cmd_info", fail)
    assert cli.main(["info"]) == cli.EXIT_RUNTIME
    assert capsys.readouterr().err == "trtlab: error: first line second line\n"


# --- --json -------------------------------------------------------------------------------


def test_info_json(capsys):
    assert cli.main(["info", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["trtlab"] == trtlab.__version__
    assert doc["engine cache"] == str(config.cache_dir())


def test_inspect_json_matches_the_model(capsys):
    model = zoo.load("digits_cnn")
    assert cli.main(["inspect", str(zoo.path("digits_cnn")), "--json", "--nodes"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["nodes"] == len(model.nodes) == len(doc["node_table"])
    assert [t["name"] for t in doc["inputs"]] == [t.name for t in model.inputs]
    hist = {r["op_type"]: r["count"] for r in doc["op_histogram"]}
    assert hist == dict(model.nodes["op_type"].value_counts())


def test_partition_json_lists_the_segments_written(tmp_path, capsys):
    out = tmp_path / "seg"
    assert cli.main(["partition", str(zoo.path("detection_postproc")), "--out", str(out),
                     "--source", "rules", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["out"] == str(out.resolve())
    assert len(doc["segments"]) == len(list(out.glob("*.onnx"))) >= 2
    assert {s["backend"] for s in doc["segments"]} == {"tensorrt", "fallback"}


@needs_build
def test_build_and_bench_json(tmp_path, capsys):
    model = str(zoo.path("digits_cnn"))
    assert cli.main(["build", model, "--cache-dir", str(tmp_path), "--quiet", "--json",
                     "--shapes", "input=4x1x8x8"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["executors"][0]["segment"] == "trt_0"
    assert doc["cache"][0]["status"] in ("miss", "built")
    assert cli.main(["bench", model, "--cache-dir", str(tmp_path), "--quiet", "--json",
                     "--iterations", "5", "--warmup", "1"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"median", "p99", "throughput"} <= set(rows[0])
    assert all(r["median"] > 0 for r in rows)


def _break_build(monkeypatch):
    def broken_build(*args, **kwargs):
        raise BuildError("builder exploded on purpose")

    monkeypatch.setattr("trtlab.codegen.build", broken_build)


def test_report_exits_1_and_lists_a_failed_step(tmp_path, monkeypatch, capsys):
    _break_build(monkeypatch)
    code = cli.main(["report", str(zoo.path("lstm_seq")), "--out", str(tmp_path), "--quiet",
                     "--json"])
    assert code == cli.EXIT_STEPS_FAILED
    doc = json.loads(capsys.readouterr().out)
    assert doc["failed_steps"] >= 1 and (tmp_path / "index.html").is_file()
    (model,) = doc["models"]
    assert {"step": "Build and run", "error": "BuildError: builder exploded on purpose"} \
        in model["failed_steps"]


def test_demo_exits_1_when_a_step_fails(tmp_path, monkeypatch, capsys):
    _break_build(monkeypatch)
    code = cli.main(["demo", "--out", str(tmp_path), "--models", "lstm_seq", "--quiet"])
    assert code == cli.EXIT_STEPS_FAILED
    out = capsys.readouterr().out
    assert "failed step Build and run: BuildError: builder exploded on purpose" in out


# --- progress bars ---------------------------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("env, tty, enabled, shown", [
    ({}, True, True, True),
    ({}, False, True, False),
    ({}, True, False, False),
    ({"TRTLAB_PROGRESS": "0"}, True, True, False),
    ({"TRTLAB_PROGRESS": "1"}, False, True, True),
    ({"TQDM_DISABLE": "1"}, True, True, False),
    ({"TQDM_DISABLE": "1", "TRTLAB_PROGRESS": "1"}, True, True, False),
    ({"TQDM_DISABLE": "0"}, True, True, True),
])
def test_progress_bars_only_where_someone_watches(monkeypatch, env, tty, enabled, shown):
    for name in ("TRTLAB_PROGRESS", "TQDM_DISABLE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    stream = _Tty() if tty else io.StringIO()
    assert _progress.progress_enabled(enabled, stream=stream) is shown


def test_progress_bars_show_in_a_notebook(monkeypatch):
    monkeypatch.delenv("TRTLAB_PROGRESS", raising=False)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    kernel_shell = types.SimpleNamespace(kernel=object())
    fake = types.ModuleType("IPython")
    fake.get_ipython = lambda: kernel_shell
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert _progress.in_notebook()
    assert _progress.progress_enabled(True, stream=io.StringIO())
    fake.get_ipython = lambda: types.SimpleNamespace()  # a terminal IPython: no kernel
    assert not _progress.in_notebook()


@needs_build
def test_redirected_cli_writes_no_progress_bar(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TRTLAB_PROGRESS", "TQDM_DISABLE")}
    x, _ = zoo.digits("test")
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, input=x[:2])
    args = ("bench", str(zoo.path("digits_cnn")), "--cache-dir", str(tmp_path), "--iterations", "200",
            "--warmup", "1", "--feeds", str(feeds))
    quiet = run_cli(*args, env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert "it/s" not in quiet.stderr and "\r" not in quiet.stderr
    forced = run_cli(*args, env={**env, "TRTLAB_PROGRESS": "1"})  # the check above can fail
    assert forced.returncode == 0, forced.stderr
    assert "it/s" in forced.stderr


# --- trtlab notebooks --------------------------------------------------------------------------


def test_notebooks_are_copied_and_never_silently_overwritten(tmp_path, capsys):
    shipped = sorted(p.name for p in config.notebooks_dir().glob("*.ipynb"))
    assert len(shipped) >= 7
    out = tmp_path / "nb"
    assert cli.main(["notebooks", str(out), "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert sorted(os.path.basename(p) for p in written) == shipped
    for name in shipped:
        assert json.loads((out / name).read_text())["cells"]
    (out / shipped[0]).write_text("my edits")
    assert cli.main(["notebooks", str(out)]) == cli.EXIT_INPUT
    assert "--force" in capsys.readouterr().err
    assert (out / shipped[0]).read_text() == "my edits"
    assert cli.main(["notebooks", str(out), "--force"]) == 0
    assert (out / shipped[0]).read_bytes() == (config.notebooks_dir() / shipped[0]).read_bytes()
    assert not list(out.glob(".*.tmp"))
