"""Run adversarial cases, each in its own process with a timeout, and classify what happened.

The runner imports trtlab and its heavy dependencies once, then forks one child per case (so a
case costs milliseconds, not a fresh interpreter). A child runs its case in a private temporary
folder and sends back one of these outcomes:

``pass``        the case behaved as promised
``hang``        the child did not finish within the case's timeout (it is killed)
``crash``       the child died (signal, hard exit) without a result
``raw``         an exception that is not a ``TrtlabError`` escaped (a raw traceback)
``destroyed``   an existing file was destroyed or a half-written file was left behind
``wrong``       a silently wrong result (or success where an error was due)
``bad_error``   a TrtlabError of the wrong class, or a message without the promised words

Usage::

    python tests/adversarial/adversarial_runner.py [--quick] [--jobs 2] [--json out.json] [names...]

Exit status 0 when every case passes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TRTLAB_PROGRESS", "0")

OUTCOMES = ("pass", "hang", "crash", "raw", "destroyed", "wrong", "bad_error")


def _child(name: str, scratch: Path, conn: "multiprocessing.connection.Connection") -> None:
    import adversarial_cases as C

    case = C.CASES[name]
    old_cwd = os.getcwd()
    os.chdir(scratch)
    outcome, detail = "pass", ""
    try:
        case.func(scratch)
    except C.Destroyed as exc:
        outcome, detail = "destroyed", str(exc)
    except C.BadError as exc:
        outcome, detail = "bad_error", str(exc)
    except C.Wrong as exc:
        outcome, detail = "wrong", str(exc)
    except AssertionError as exc:
        outcome, detail = "wrong", f"{exc}\n{traceback.format_exc(limit=-2)}"
    except BaseException as exc:  # everything else is a raw traceback reaching the user
        from trtlab.errors import TrtlabError

        kind = "bad_error" if isinstance(exc, TrtlabError) else "raw"
        outcome = kind
        detail = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-4)}"
    finally:
        try:
            os.chdir(old_cwd)
        except OSError:
            pass
    try:
        conn.send({"outcome": outcome, "detail": detail[:4000]})
    finally:
        conn.close()
        os._exit(0)


_SCRATCH: Dict[str, Path] = {}


def _start(name: str) -> tuple:
    # The scratch folder belongs to the runner, which removes it (and unmounts any tmpfs a case
    # mounted in it) even when the child was killed or gave up its privileges.
    scratch = Path(tempfile.mkdtemp(prefix=f"trtlab-adv-{name[:40]}-"))
    os.chmod(scratch, 0o755)
    _SCRATCH[name] = scratch
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(name, scratch, child), daemon=True)
    proc.start()
    child.close()
    return proc, parent, time.perf_counter()


def _cleanup(scratch: Path) -> None:
    try:
        with open("/proc/self/mounts") as fh:
            mounts = [line.split()[1] for line in fh]
    except OSError:
        mounts = []
    for point in sorted((m for m in mounts if m.startswith(str(scratch))), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    for root, dirs, _ in os.walk(scratch):
        for d in dirs:
            try:
                os.chmod(os.path.join(root, d), 0o755)
            except OSError:
                pass
    shutil.rmtree(scratch, ignore_errors=True)


def _finish(name: str, proc: "multiprocessing.Process", conn: object, start: float,
            timed_out: bool) -> Dict[str, object]:
    result: Optional[Dict[str, object]] = None
    if not timed_out:
        try:
            result = conn.recv()  # type: ignore[attr-defined]
        except (EOFError, OSError):
            result = None
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if timed_out:
        result = {"outcome": "hang", "detail": "no result within the timeout; killed"}
    elif result is None:
        result = {"outcome": "crash", "detail": f"child exited with code {proc.exitcode} and no result"}
    _cleanup(_SCRATCH.pop(name))
    result["seconds"] = round(time.perf_counter() - start, 3)
    result["name"] = name
    return result


def run_case(name: str, timeout: float) -> Dict[str, object]:
    """Run one case in a forked child; returns outcome, detail and seconds."""
    proc, conn, start = _start(name)
    ready = conn.poll(timeout)
    return _finish(name, proc, conn, start, timed_out=not ready)


def _warm() -> None:
    """Import what the cases use once, before forking (no threads are started here). Cases that
    drop privileges cannot read the Python installation any more: a module first imported after
    that fails, so what the cases import lazily is imported here."""
    import difflib  # noqa: F401 - imported where a node-name hint is made
    import html  # noqa: F401 - imported where a table is shown as HTML

    import numpy  # noqa: F401
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import pandas  # noqa: F401

    import adversarial_cases  # noqa: F401
    import trtlab  # noqa: F401
    import trtlab.backends.tensorrt.layers  # noqa: F401 - the fusion cases (it imports difflib)
    import trtlab.cli.main  # noqa: F401
    import trtlab.codegen  # noqa: F401
    import trtlab.model  # noqa: F401
    import trtlab.partitioning.partitioner  # noqa: F401
    import trtlab.study.accuracy  # noqa: F401
    import trtlab.study.latency  # noqa: F401


def run(names: Optional[List[str]] = None, *, quick: bool = False, jobs: int = 2) -> List[Dict[str, object]]:
    """Run the selected cases (all, or the quick ones) with up to ``jobs`` children at a time."""
    _warm()
    import adversarial_cases as C

    selected = [C.CASES[n] for n in names] if names else [
        c for c in C.CASES.values() if c.quick or not quick]
    from multiprocessing.connection import wait

    # One thread forks every child (no helper threads whose locks a child could inherit).
    pending = list(selected)
    running: Dict[object, tuple] = {}
    done: Dict[str, Dict[str, object]] = {}
    while pending or running:
        while pending and len(running) < max(1, jobs):
            case = pending.pop(0)
            proc, conn, start = _start(case.name)
            running[conn] = (case, proc, start)
        for conn in wait(list(running), timeout=0.2):
            case, proc, start = running.pop(conn)
            done[case.name] = dict(_finish(case.name, proc, conn, start, False), cls=case.cls)
        now = time.perf_counter()
        for conn, (case, proc, start) in list(running.items()):
            if now - start > case.timeout:
                running.pop(conn)
                done[case.name] = dict(_finish(case.name, proc, conn, start, True), cls=case.cls)
    return [done[c.name] for c in selected]


def summary(results: List[Dict[str, object]]) -> str:
    counts = {k: 0 for k in OUTCOMES}
    for r in results:
        counts[str(r["outcome"])] += 1
    classes = sorted({str(r["cls"]) for r in results})
    lines = [f"{len(results)} cases in {len(classes)} classes: " + ", ".join(f"{k} {v}" for k, v in counts.items())]
    for cls in classes:
        rs = [r for r in results if r["cls"] == cls]
        bad = [r for r in rs if r["outcome"] != "pass"]
        lines.append(f"  {cls:<28} {len(rs) - len(bad):>3}/{len(rs)} pass"
                     + (f"   failing: {', '.join(str(r['name']) + '=' + str(r['outcome']) for r in bad)}" if bad else ""))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="case names (default: all)")
    p.add_argument("--quick", action="store_true", help="only the quick cases")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--json", help="write every result to this file")
    p.add_argument("--verbose", action="store_true", help="print the detail of failing cases")
    args = p.parse_args(argv)
    start = time.perf_counter()
    results = run(args.names or None, quick=args.quick, jobs=args.jobs)
    print(summary(results))
    print(f"wall time {time.perf_counter() - start:.1f} s")
    if args.verbose:
        for r in results:
            if r["outcome"] != "pass":
                print(f"\n--- {r['name']} ({r['outcome']})\n{r['detail']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if all(r["outcome"] == "pass" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
