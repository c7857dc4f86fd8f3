"""Pipeline subcommands of the ``trtlab`` command (partition, build, bench, report, demo,
notebooks). Exit codes and ``--json`` are described in :mod:`trtlab.cli`."""

from __future__ import annotations

import argparse
import errno
import functools
import io
import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from trtlab._lazy import lazy_import
from trtlab.cli.common import EXIT_OK, EXIT_STEPS_FAILED, format_table, json_option, print_json, records
np = lazy_import("numpy")

#: Largest .npz of feeds or calibration data the CLI reads.
NPZ_LIMIT = 1 << 32


def _load_npz(path: str, what: str, error: type) -> Dict[str, np.ndarray]:
    """Arrays of an ``.npz`` archive (regular file, size-limited, no pickles)."""
    from trtlab import _io

    data = _io.read_bytes(path, limit=NPZ_LIMIT, what=what, error=error)
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise error(f"{what} {path} is not a NumPy archive ({exc}). Save it with "
                    "np.savez(path, input_name=array, ...).") from exc
    if isinstance(loaded, np.ndarray):
        raise error(f"{what} {path} is a single .npy array of shape {list(loaded.shape)}; trtlab needs "
                    "an .npz with one array per model input name: np.savez(path, input_name=array).")
    try:
        with loaded as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError, KeyError) as exc:
        raise error(f"{what} {path} could not be read ({exc}); it is damaged, or holds object arrays "
                    "(which trtlab does not unpickle). Save plain arrays with np.savez.") from exc
    if not arrays:
        raise error(f"{what} {path} holds no arrays. Save one per model input with np.savez.")
    return arrays


def _load_feeds(path: str) -> Dict[str, np.ndarray]:
    from trtlab.errors import InputError

    return _load_npz(path, "Feeds", InputError)


def _wrapped(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """OS and memory failures of a subcommand become TrtlabErrors (one line, no traceback)."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        from trtlab.errors import FileReadError, FileWriteError, TrtlabError

        try:
            return func(args)
        except TrtlabError:
            raise
        except MemoryError as exc:
            raise TrtlabError(f"trtlab {args.command}: out of memory ({exc or 'MemoryError'}). Use a "
                              "smaller batch or model, or a machine with more memory.") from exc
        except OSError as exc:
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)
            hint = "Free some space or write elsewhere." if full else "Check the paths and their permissions."
            kind = FileWriteError if full else FileReadError
            raise kind(f"trtlab {args.command}: {exc.strerror or exc}{where}. {hint}") from exc

    return run


def _check_int(args: argparse.Namespace, name: str, minimum: int) -> None:
    from trtlab.errors import InputError

    value = getattr(args, name, None)
    if value is not None and value < minimum:
        raise InputError(f"--{name.replace('_', '-')} {value} is below {minimum}; pass {minimum} or more.")


def _calibration(args: argparse.Namespace) -> Any:
    """Calibration data for ``--precision int8`` (``--calibration FILE.npz``), checked up front."""
    from trtlab.errors import CalibrationError

    path = getattr(args, "calibration", None)
    if args.precision != "int8":
        return None
    if not path:
        raise CalibrationError(
            "--precision int8 needs calibration data: pass --calibration FILE.npz with one array per "
            "model input (samples on axis 0), e.g. np.savez('calib.npz', input=x[:256]). INT8 scales "
            "come from the ranges of real data.")
    return _load_npz(path, "Calibration data", CalibrationError)


def _parser_worker(args: argparse.Namespace) -> Any:
    """A parser worker (:mod:`trtlab.backends.tensorrt.parser_worker`) for a command that loads and
    partitions a model: TensorRT is imported and its parser made there while this process imports
    onnx and loads the model. ``None`` for the rules, a partition folder, where fork is unavailable
    or the machine has no core to spare (the parser then runs in this process)."""
    if args.source == "rules" or (Path(args.model).is_dir() and args.command != "partition"):
        return None
    from trtlab.backends.tensorrt import parser_worker

    if not parser_worker.spare_core():
        logging.getLogger(__name__).debug("parser worker not started: no core to spare")
        return None
    worker = parser_worker.start()
    if worker is not None:  # what the command needs after the parser, imported while it parses
        worker.while_parsing(_import_partition_step)
    return worker


def _import_partition_step() -> None:
    import importlib

    for name in ("trtlab.partitioning.partitioner", "concurrent.futures.thread"):
        importlib.import_module(name)


def _partition(args: argparse.Namespace, worker: Any = None, planned: Optional[Dict[str, Any]] = None) -> Any:
    """The model's partition; ``worker``: a parser worker of :func:`_parser_worker`, told to exit
    here once the support is known (reaped by the caller's ``worker.close()``). With ``planned``
    (a dict), the folder the partition would have if the parser accepted every node is planned
    while the parser runs, as ``planned["plan"]`` (see :func:`_plan_if_all_accepted`)."""
    try:
        folder = Path(args.model)
        if folder.is_dir() and args.command != "partition":
            # a folder written by `trtlab partition --out`: its partition, weights checked
            from trtlab.partition_folder import read_partition

            part = read_partition(folder)
            return part.model, part
        from trtlab.model import load
        from trtlab.backends.tensorrt.support import check_support

        model = load(args.model)
        if worker is not None and planned is not None:
            worker.while_parsing(functools.partial(_plan_if_all_accepted, args, model, planned))
        support = check_support(model, source=args.source, worker=worker)
    finally:
        if worker is not None:
            worker.close(wait=False)
    part = _partition_of(args, model, support)
    return model, part


def _partition_of(args: argparse.Namespace, model: Any, support: Any) -> Any:
    from trtlab.partitioning.partitioner import partition

    return partition(model, support=support, min_subgraph_size=args.min_subgraph_size,
                     remove_no_mac_subgraphs=args.no_mac, exclude_ops=tuple(args.exclude_op or ()))


def _plan_if_all_accepted(args: argparse.Namespace, model: Any, planned: Dict[str, Any]) -> None:
    """The folder ``trtlab partition`` writes if the parser accepts every node (the common case),
    planned while the parser runs, into ``planned["plan"]``. It is written only when the partition
    of the parser's answer is this one (:func:`_same_partition`), else it is dropped."""
    import warnings

    from trtlab.backends.tensorrt.parser import ACCEPTED
    from trtlab.extract import folder_plan, weights_mode

    accepted = dict.fromkeys(model.node_names, (True, ACCEPTED))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the partition of the parser's answer says it if it applies
        part = _partition_of(args, model, accepted)
        planned["plan"] = folder_plan(part, weights_mode(model, args.weights))


def _same_partition(a: Any, b: Any) -> bool:
    """Whether partitions ``a`` and ``b`` of one model are the same (everything their folder holds
    is a function of these fields and the model)."""
    def key(p: Any) -> tuple:
        return (p.verdicts, p.forced, p.settings, list(p._decisions),
                [(s.index, s.name, s.backend, s.nodes, s.inputs, s.outputs) for s in p.segments])

    return a.model is b.model and key(a) == key(b)


@_wrapped
def cmd_partition(args: argparse.Namespace) -> int:
    worker = _parser_worker(args)
    try:
        from trtlab import _io

        _check_int(args, "min_subgraph_size", 0)
        _io.check_destination(args.out, overwrite=args.force, folder=True, what="partition")
        planned: Dict[str, Any] = {}
        _, part = _partition(args, worker, planned)
        from trtlab.extract import write_planned
        from trtlab.partitioning.partitioner import SUMMARY_COLUMNS, write_partition

        plan = planned.pop("plan", None)
        if plan is not None and _same_partition(plan.partition, part):
            logging.getLogger(__name__).debug("writing the folder planned while the parser ran")
            written = write_planned(plan, args.out, overwrite=args.force)
        else:
            written = write_partition(part, args.out, overwrite=args.force, weights=args.weights)
    finally:
        if worker is not None:
            worker.close()  # exited while the partition was written: reaped
    out = Path(args.out).resolve()
    rows = part.summary_rows()
    weights = _weights_note(out, written)
    if args.json:
        print_json({"out": str(out), "segments": rows, "weights": weights})
        return EXIT_OK
    print(format_table(SUMMARY_COLUMNS, rows))
    print(f"\n{len(part.segments)} segments written to {out}")
    print(weights["note"])
    return EXIT_OK


def _weights_note(out: Path, written: Dict[str, Path]) -> Dict[str, Any]:
    """Where the weights of a written partition are, and how to get a self-contained folder."""
    import json

    from trtlab import _io
    from trtlab.extract import WEIGHTS_FILE

    record = json.loads(_io.read_text(out / "partition.json", what="Partition JSON"))["weights"]
    mib = sum(f["bytes"] for f in record["files"].values()) / 2 ** 20
    if record["mode"] == "reference":
        files = ", ".join(list(record["files"])[:3]) + (", ..." if len(record["files"]) > 3 else "")
        note = (f"Weights: not copied. The segments refer to the model's external data in "
                f"{record['folder']} ({files}: {mib:.1f} MiB), checked by size and modification time when "
                f"the folder is read back (trtlab build {out}, trtlab.read_partition). Keep those files "
                "in place; for a self-contained folder run again with --weights copy.")
    elif WEIGHTS_FILE in written:
        mib = (out / WEIGHTS_FILE).stat().st_size / 2 ** 20
        note = (f"Weights: copied into {out / WEIGHTS_FILE} ({mib:.1f} MiB); the folder is self-contained.")
    else:
        note = "Weights: embedded in the segment files; the folder is self-contained."
    return {"mode": record["mode"], "folder": record["folder"] or str(out), "files": record["files"],
            "note": note}


def _parse_shapes(items: Any) -> Any:
    """``["x=1x3x64x64", "y=1x8,4x8,8x8"]`` -> ``{"x": (1, 3, 64, 64), "y": ((1, 8), (4, 8), (8, 8))}``."""
    if not items:
        return None
    out = {}
    for item in items:
        name, sep, spec = item.rpartition("=")
        try:
            shapes = [tuple(int(d) for d in part.lower().split("x")) for part in spec.split(",")]
        except ValueError:
            shapes = []
        if not sep or not name or len(shapes) not in (1, 3):
            from trtlab.errors import InputError

            raise InputError(f"--shapes {item!r}: write NAME=1x3x224x224 (one shape) or "
                             "NAME=MINx..,OPTx..,MAXx.. (min, opt and max).")
        out[name] = shapes[0] if len(shapes) == 1 else tuple(shapes)
    return out


@_wrapped
def cmd_build(args: argparse.Namespace) -> int:
    _check_int(args, "min_subgraph_size", 0)
    calibration = _calibration(args)
    worker = _parser_worker(args)
    try:
        _, part = _partition(args, worker)
    finally:
        if worker is not None:
            worker.close()
    from trtlab.codegen import build

    feeds = _load_feeds(args.feeds) if getattr(args, "feeds", None) else None
    if feeds is None and calibration is not None and not getattr(args, "shapes", None):
        feeds = calibration  # real inputs of the model: the engines are built for their shapes
    hybrid = build(part, feeds=feeds, shapes=_parse_shapes(getattr(args, "shapes", None)),
                   precision=args.precision, calibration_data=calibration,
                   cache_dir=args.cache_dir, progress=not args.quiet)
    if args.json:
        print_json({"built": hybrid.built, "executors": records(hybrid.executors) if hybrid.built else [],
                    "cache": records(hybrid.cache_report()) if hybrid.built else []})
        return EXIT_OK
    if not hybrid.built:
        print("The model has dynamic dims and neither --feeds nor --shapes was given: engines build at the "
              "first run. Pass --feeds inputs.npz (or --shapes name=1x3x224x224) to build them now.")
    print(hybrid.executors.to_string(index=False))
    print()
    print(hybrid.cache_report().to_string(index=False))
    return EXIT_OK


@_wrapped
def cmd_bench(args: argparse.Namespace) -> int:
    from trtlab.study.latency import benchmark_model

    for name, minimum in (("batch", 1), ("warmup", 0), ("iterations", 1), ("min_subgraph_size", 0)):
        _check_int(args, name, minimum)
    calibration = _calibration(args)
    feeds = _load_feeds(args.feeds) if args.feeds else None
    frame = benchmark_model(args.model, feeds=feeds, batch=args.batch, precision=args.precision,
                            calibration_data=calibration,
                            cache_dir=args.cache_dir, min_subgraph_size=args.min_subgraph_size,
                            warmup=args.warmup, iterations=args.iterations, progress=not args.quiet)
    if args.json:
        print_json(records(frame))
        return EXIT_OK
    print(frame.to_string(index=False))
    return EXIT_OK


@_wrapped
def cmd_report(args: argparse.Namespace) -> int:
    from trtlab import _io
    from trtlab.cli.report import report, write_html
    from trtlab.model import load

    _check_int(args, "min_subgraph_size", 0)
    # The destination and the model are checked before the pipeline runs.
    _io.check_destination(args.out, overwrite=args.force, folder=True, what="report")
    model = load(args.model)
    rep = report(model, min_subgraph_size=args.min_subgraph_size, progress=not args.quiet,
                 cache_dir=args.cache_dir)
    with _io.atomic_dir(args.out, overwrite=args.force, what="report",
                        meta={"content": "trtlab report"}) as tmp:
        write_html([rep], tmp / "index.html", title=f"trtlab report: {rep.model_name}")
    return _summary([rep], Path(args.out) / "index.html", args)


@_wrapped
def cmd_demo(args: argparse.Namespace) -> int:
    from trtlab.cli.report import DEMO_MODELS, demo

    models = args.models.split(",") if args.models else DEMO_MODELS
    path, reports = demo(args.out, models=models, progress=not args.quiet)
    if not args.json:
        failed = sum(len(r.errors) for r in reports)
        print(f"trtlab demo: {len(reports)} models, {failed} failed steps")
    return _summary(reports, path, args)


def _summary(reports: Sequence[Any], path: Path, args: argparse.Namespace) -> int:
    """Print what each report found; exit code 1 when any step failed."""
    failed = sum(len(r.errors) for r in reports)
    if args.json:
        print_json({"report": str(path.resolve()), "failed_steps": failed, "models": [
            {"model": r.model_name, "facts": r.facts,
             "failed_steps": [{"step": s.title, "error": s.error} for s in r.errors]}
            for r in reports]})
    else:
        for rep in reports:
            facts = ", ".join(f"{k}: {v}" for k, v in rep.facts.items())
            print(f"{rep.model_name}: {facts}")
            for s in rep.errors:
                print(f"  failed step {s.title}: {s.error}")
        print(f"report: {path.resolve()}")
    if args.open:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
    return EXIT_STEPS_FAILED if failed else EXIT_OK




def copy_notebooks(out: "str | os.PathLike[str]", *, force: bool = False) -> List[Path]:
    """Copy the notebooks shipped with trtlab into folder ``out``; returns the written paths.

    Raises
    ------
    InputError
        If a notebook of the same name is already there and ``force`` is false (nothing is
        written then), or ``out`` is a file.
    """
    from trtlab.config import notebooks_dir
    from trtlab.errors import InputError, ModelLoadError

    source = notebooks_dir()
    notebooks = sorted(source.glob("*.ipynb"))
    if not notebooks:
        raise ModelLoadError(f"No notebooks found in {source}: this trtlab installation is "
                             "incomplete; reinstall it (pip install --force-reinstall trtlab).")
    target = Path(out).expanduser()
    if target.exists() and not target.is_dir():
        raise InputError(f"{target} is a file; give a folder to copy the notebooks into.")
    clashes = [target / nb.name for nb in notebooks if (target / nb.name).exists()]
    if clashes and not force:
        raise InputError(f"{len(clashes)} notebook(s) already in {target} ({clashes[0].name}, ...); "
                         "nothing was copied. Pick another folder or pass --force to overwrite.")
    from trtlab import _io

    target.mkdir(parents=True, exist_ok=True)
    written = []
    for nb in notebooks:
        _io.write_bytes(target / nb.name, _io.read_bytes(nb, what="Notebook"), what="notebook")
        written.append(target / nb.name)
    return written


def cmd_notebooks(args: argparse.Namespace) -> int:
    written = copy_notebooks(args.out, force=args.force)
    if args.json:
        print_json([str(p.resolve()) for p in written])
        return EXIT_OK
    for p in written:
        print(p)
    print(f"{len(written)} notebooks copied; open them with: jupyter lab {Path(args.out)}")
    return EXIT_OK


def _partition_args(s: argparse.ArgumentParser, folder: bool = False) -> None:
    s.add_argument("model", help="path of an ONNX model" + (
        ", or a folder written by trtlab partition --out (its partition is built as written; the "
        "partitioning options are then not used)" if folder else ""))
    s.add_argument("--source", default="auto", choices=("auto", "parser", "rules"),
                   help="support ground truth (default: parser when TensorRT is installed)")
    s.add_argument("--min-subgraph-size", type=int, default=1)
    s.add_argument("--no-mac", action="store_true", help="drop TensorRT segments without MAC ops")
    s.add_argument("--exclude-op", action="append", help="force an op type to fallback (repeatable)")


def add_parsers(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Register the pipeline subcommands with ``add(name, help=...)`` (a subparser factory)."""
    s = add("partition", help="partition a model and write every segment",
            description="Partition a model and write one ONNX file per segment, summary.csv, "
                        "boundaries.csv, decisions.csv and partition.json to --out (atomically). "
                        "Weights: with --weights reference (the default for models that keep weights "
                        "as external data) nothing is copied: the segments refer to the model's data "
                        "files where they are, and partition.json records their folder, size and "
                        "modification time (read the folder back with trtlab build DIR or "
                        "trtlab.read_partition). With --weights copy (the default otherwise) the folder "
                        "is self-contained: every weight once in weights.data.")
    json_option(s)
    _partition_args(s)
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--weights", default="auto", choices=("auto", "copy", "reference"),
                   help="copy: the folder holds every weight (weights.data), self-contained; reference: "
                        "segments refer to the model's external data files in place (nothing copied); "
                        "auto (default): reference when the model keeps weights as external data, else copy")
    s.add_argument("--force", action="store_true",
                   help="replace an existing output folder written by trtlab")
    s.set_defaults(func=cmd_partition)

    for name, func, helptext in (("build", cmd_build, "build engines and sessions; print executors"),
                                 ("bench", cmd_bench, "build, run and print latency statistics")):
        s = add(name, help=helptext)
        json_option(s)
        _partition_args(s, folder=name == "build")
        s.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"))
        s.add_argument("--cache-dir", default=None)
        s.add_argument("--calibration", metavar="FILE.npz", default=None,
                       help="calibration data for --precision int8: one array per input")
        s.add_argument("--quiet", action="store_true", help="no progress bars")
        if name == "build":
            s.add_argument("--feeds", help=".npz of example inputs, one array per input: every dynamic "
                                           "dim and shape-tensor value is taken from one run on them")
            s.add_argument("--shapes", action="append", metavar="NAME=SHAPE",
                           help="input shape NAME=1x3x224x224, or NAME=MIN,OPT,MAX (repeatable)")
        if name == "bench":
            s.add_argument("--feeds", help=".npz with one array per input (default: random)")
            s.add_argument("--batch", type=int, default=1)
            s.add_argument("--warmup", type=int, default=10)
            s.add_argument("--iterations", type=int, default=100)
        s.set_defaults(func=func)

    s = add("report", help="HTML report of every pipeline step for one model (exit 1 if a step failed)")
    json_option(s)
    s.add_argument("model")
    s.add_argument("--out", required=True, help="output folder (index.html)")
    s.add_argument("--force", action="store_true",
                   help="replace an existing report folder written by trtlab")
    s.add_argument("--min-subgraph-size", type=int, default=1)
    s.add_argument("--cache-dir", default=None)
    s.add_argument("--open", action="store_true", help="open the report in a browser")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_report)

    s = add("demo", help="the end-to-end demo over the shipped models (exit 1 if a step failed)")
    json_option(s)
    s.add_argument("--out", default="build/demo")
    s.add_argument("--models", default="", help="comma-separated zoo names (default: all)")
    s.add_argument("--open", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_demo)

    s = add("notebooks", help="copy the notebooks shipped with trtlab into a folder")
    json_option(s)
    s.add_argument("out", help="folder to copy them into (created if missing)")
    s.add_argument("--force", action="store_true", help="overwrite notebooks already there")
    s.set_defaults(func=cmd_notebooks)

