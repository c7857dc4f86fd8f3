"""The ``trtlab`` command.

Subcommands: ``info``, ``inspect MODEL``, ``partition MODEL --out DIR``, ``build MODEL``,
``bench MODEL``, ``report MODEL --out DIR``, ``demo`` and ``notebooks DIR``. Every command that
prints a table takes ``--json`` (one JSON document on stdout instead of the text).

Exit codes
----------
====  =======================================================================================
0     success
1     the command ran, but some pipeline steps failed (``report``, ``demo``: listed on stdout)
2     usage error (unknown command or option, bad option value)
3     bad input: the model, feeds, files or settings given cannot be used (the message says why)
4     run-time failure: a build, cache or library step failed on valid input
5     a needed optional dependency is missing (the message names the extra to install)
70    internal error (a bug in trtlab: rerun with ``--debug`` and report the traceback)
130   interrupted (Ctrl-C)
====  =======================================================================================

Errors are one line on stderr (``trtlab: error: ...``); ``--debug`` adds the traceback and
debug logging.

The command (:func:`run`) ends its process without tearing the interpreter down: exit handlers
run and output is flushed as at any exit, then the process exits at once, leaving the freeing of
its modules and objects (onnx, NumPy, protobuf: 30-45 ms) to the operating system. The short
commands (:data:`NO_COLLECTOR`) run with Python's cyclic garbage collector off.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import logging
import os
import sys
import threading
import traceback
import warnings
from typing import Any, Dict, NoReturn, Optional, Sequence

from trtlab.cli.common import (EXIT_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_MISSING_DEPENDENCY, EXIT_OK,  # noqa: F401
                               EXIT_RUNTIME, EXIT_STEPS_FAILED, EXIT_USAGE, exit_code, json_option, print_json,
                               records)

def cmd_info(args: argparse.Namespace) -> int:
    from trtlab.cli.environment import environment

    env = environment()
    if args.json:
        print_json(env)
        return 0
    width = max(len(k) for k in env)
    for key, value in env.items():
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from trtlab.model import load

    model = load(args.model, fold_constants=args.fold)
    nodes = model.nodes
    if args.json:
        def tensors(ts: Any) -> list:
            return [{"name": t.name, "dtype": t.dtype_name,
                     "shape": list(t.shape) if t.shape is not None else None} for t in ts]

        doc: Dict[str, Any] = {
            "model": model.name, "nodes": len(nodes), "macs": int(nodes["macs"].sum()),
            "notes": list(model.notes), "inputs": tensors(model.inputs),
            "outputs": tensors(model.outputs), "op_histogram": records(model.op_histogram())}
        if args.nodes:
            doc["node_table"] = records(nodes[["name", "op_type", "output_shapes", "macs"]])
        print_json(doc)
        return 0
    print(repr(model))
    for note in model.notes:
        print(f"note: {note}")
    print("\ninputs:")
    for t in model.inputs:
        print(f"  {t.name}: {t.dtype_name} {list(t.shape) if t.shape is not None else '?'}")
    print("outputs:")
    for t in model.outputs:
        print(f"  {t.name}: {t.dtype_name} {list(t.shape) if t.shape is not None else '?'}")
    print("\nop histogram:")
    print(model.op_histogram().to_string(index=False))
    print(f"\nnodes: {len(nodes)}, total MACs (symbolic dims = 1): {int(nodes['macs'].sum()):,}")
    if args.nodes:
        print(nodes[["name", "op_type", "output_shapes", "macs"]].to_string(index=False))
    return 0


def common_options() -> argparse.ArgumentParser:
    """Options every subcommand accepts (also before the subcommand): ``--debug``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on error, print the traceback; log at debug level")
    return common


def parser() -> argparse.ArgumentParser:
    from trtlab import __version__

    common = common_options()
    p = argparse.ArgumentParser(prog="trtlab", description="TensorRT BYOC research toolkit",
                                parents=[common],
                                epilog="exit codes: 0 ok, 1 some pipeline steps failed, 2 usage, "
                                       "3 bad input, 4 run-time failure, 5 missing optional "
                                       "dependency, 70 internal error, 130 interrupted")
    p.add_argument("--version", action="version", version=f"trtlab {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    s = add("info", help="versions, TensorRT flavor and what it can do here")
    json_option(s)
    s.set_defaults(func=cmd_info)

    s = add("inspect", help="node table summary, op histogram, inputs/outputs")
    json_option(s)
    s.add_argument("model")
    s.add_argument("--nodes", action="store_true", help="print every node")
    s.add_argument("--fold", action="store_true",
                   help="fold constant subgraphs into initializers (exact; off by default)")
    s.add_argument("--no-fold", action="store_false", dest="fold", help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_inspect)

    importlib.import_module("trtlab.cli.steps").add_parsers(add)
    return p


def _show_warning(message: Warning, category: type, filename: str, lineno: int,
                  file: object = None, line: Optional[str] = None) -> None:
    print(f"trtlab: warning: {message}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``trtlab`` command; returns the exit code (see the module docstring)."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    debug = getattr(args, "debug", False)
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, stream=sys.stderr,
                        format="trtlab: %(levelname)s: %(name)s: %(message)s")
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.func(args) or EXIT_OK)
    except (Exception, KeyboardInterrupt) as exc:
        code = exit_code(exc)
        if debug:
            traceback.print_exc(file=sys.stderr)
        if code == EXIT_INTERRUPTED:
            print("trtlab: interrupted", file=sys.stderr)
        elif code == EXIT_INTERNAL:
            print(f"trtlab: internal error: {type(exc).__name__}: {exc}"
                  + ("" if debug else " (rerun with --debug for the traceback)"), file=sys.stderr)
        else:
            print(f"trtlab: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return code


#: Commands whose work is bounded by the model's size (no builds, no timing loops, no studies):
#: :func:`run` runs them with Python's cyclic garbage collector off. Its collections walk the
#: long-lived objects the imports make (onnx, NumPy, protobuf): 10-15 ms of a 200 ms
#: ``trtlab partition`` on a small model, and these commands leave little cyclic garbage.
NO_COLLECTOR = frozenset({"info", "inspect", "partition"})


def run(argv: Optional[Sequence[str]] = None) -> NoReturn:
    """The ``trtlab`` command (and ``python -m trtlab.cli``): :func:`main`, then :func:`exit_now`
    (the commands of :data:`NO_COLLECTOR` with the cyclic garbage collector off)."""
    words = list(sys.argv[1:] if argv is None else argv)
    if next((w for w in words if not w.startswith("-")), None) in NO_COLLECTOR:
        gc.disable()
    exit_now(main(argv))


def _observed() -> bool:
    """Whether a profiler, tracer, debugger or coverage tool watches this process: the old hooks
    (``sys.setprofile``/``settrace``) or, from Python 3.12, a :mod:`sys.monitoring` tool
    (``python -m cProfile`` uses one there)."""
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return True
    monitoring = getattr(sys, "monitoring", None)
    return monitoring is not None and any(monitoring.get_tool(i) is not None for i in range(6))


def exit_now(code: int) -> NoReturn:
    """End the process with exit status ``code``, doing what the interpreter's exit does that
    anything outlives: it runs the exit handlers (:mod:`atexit`: logging's flush, finalizers of
    temporary files) and flushes stdout and stderr, then skips the teardown of modules and
    objects (:func:`os._exit`). While a non-daemon thread other than the main one runs, under a
    profiler or tracer (``python -m cProfile`` writes its results after this returns), or if a
    flush fails (a closed pipe), the interpreter's own exit runs instead (it waits for the
    threads, and reports the failure as usual); a failing handler is reported as at any exit."""
    if _observed() or any(t.is_alive() and not t.daemon for t in threading.enumerate()
                           if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()  # each handler runs once: they are cleared after
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:  # None when the descriptor was closed at start
                stream.flush()
    except Exception:  # e.g. a closed pipe: reported by the normal exit
        sys.exit(code)
    os._exit(code)


if __name__ == "__main__":
    run()
