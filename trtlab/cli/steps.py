"""Pipeline subcommands of the ``trtlab`` command (partition, build, bench, report, demo)."""

from __future__ import annotations

import argparse
import webbrowser
from pathlib import Path
from typing import Any, Dict

import numpy as np


def _load_feeds(path: str) -> Dict[str, np.ndarray]:
    from trtlab.errors import InputError

    try:
        with np.load(path) as archive:
            return {k: archive[k] for k in archive.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"Could not read feeds from {path} ({exc}); pass an .npz with one array "
                         "per model input name.") from exc


def _partition(args: argparse.Namespace) -> Any:
    from trtlab.model import load
    from trtlab.partitioning.partitioner import partition
    from trtlab.backends.tensorrt.support import check_support

    model = load(args.model)
    support = check_support(model, source=args.source)
    part = partition(model, support=support, min_subgraph_size=args.min_subgraph_size,
                     remove_no_mac_subgraphs=args.no_mac, exclude_ops=tuple(args.exclude_op or ()))
    return model, part


def cmd_partition(args: argparse.Namespace) -> int:
    from trtlab.partitioning.partitioner import write_partition

    _, part = _partition(args)
    write_partition(part, args.out)
    print(part.summary().to_string(index=False))
    print(f"\n{len(part.segments)} segments written to {Path(args.out).resolve()}")
    return 0


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


def cmd_build(args: argparse.Namespace) -> int:
    from trtlab.codegen import build

    _, part = _partition(args)
    feeds = _load_feeds(args.feeds) if getattr(args, "feeds", None) else None
    hybrid = build(part, feeds=feeds, shapes=_parse_shapes(getattr(args, "shapes", None)),
                   precision=args.precision, cache_dir=args.cache_dir, progress=not args.quiet)
    if not hybrid.built:
        print("The model has dynamic dims and neither --feeds nor --shapes was given: engines build at the "
              "first run. Pass --feeds inputs.npz (or --shapes name=1x3x224x224) to build them now.")
    print(hybrid.executors.to_string(index=False))
    print()
    print(hybrid.cache_report().to_string(index=False))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from trtlab.study.latency import benchmark_model

    feeds = _load_feeds(args.feeds) if args.feeds else None
    frame = benchmark_model(args.model, feeds=feeds, batch=args.batch, precision=args.precision,
                            cache_dir=args.cache_dir, min_subgraph_size=args.min_subgraph_size,
                            warmup=args.warmup, iterations=args.iterations, progress=not args.quiet)
    print(frame.to_string(index=False))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from trtlab.cli.report import report, write_html

    rep = report(args.model, min_subgraph_size=args.min_subgraph_size, progress=not args.quiet,
                 cache_dir=args.cache_dir)
    path = write_html([rep], Path(args.out) / "index.html", title=f"trtlab report: {rep.model_name}")
    _print_summary([rep], path, args.open)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from trtlab.cli.report import DEMO_MODELS, demo

    models = args.models.split(",") if args.models else DEMO_MODELS
    path, reports = demo(args.out, models=models, progress=not args.quiet)
    failed = sum(len(r.errors) for r in reports)
    print(f"trtlab demo: {len(reports)} models, {failed} failed steps")
    _print_summary(reports, path, args.open)
    return 0


def _print_summary(reports: Any, path: Path, open_it: bool) -> None:
    for rep in reports:
        facts = ", ".join(f"{k}: {v}" for k, v in rep.facts.items())
        print(f"{rep.model_name}: {facts}")
        for s in rep.errors:
            print(f"  failed step {s.title}: {s.error}")
    print(f"report: {path.resolve()}")
    if open_it:
        webbrowser.open(path.resolve().as_uri())


def _partition_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("model", help="path of an ONNX model")
    s.add_argument("--source", default="auto", choices=("auto", "parser", "rules"),
                   help="support ground truth (default: parser when TensorRT is installed)")
    s.add_argument("--min-subgraph-size", type=int, default=1)
    s.add_argument("--no-mac", action="store_true", help="drop TensorRT segments without MAC ops")
    s.add_argument("--exclude-op", action="append", help="force an op type to fallback (repeatable)")


def add_parsers(sub: Any) -> None:
    """Register the pipeline subcommands on an argparse subparsers object."""
    s = sub.add_parser("partition", help="partition a model and write every segment")
    _partition_args(s)
    s.add_argument("--out", required=True, help="output folder")
    s.set_defaults(func=cmd_partition)

    for name, func, helptext in (("build", cmd_build, "build engines and sessions; print executors"),
                                 ("bench", cmd_bench, "build, run and print latency statistics")):
        s = sub.add_parser(name, help=helptext)
        _partition_args(s)
        s.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"))
        s.add_argument("--cache-dir", default=None)
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

    s = sub.add_parser("report", help="HTML report of every pipeline step for one model")
    s.add_argument("model")
    s.add_argument("--out", required=True)
    s.add_argument("--min-subgraph-size", type=int, default=1)
    s.add_argument("--cache-dir", default=None)
    s.add_argument("--open", action="store_true", help="open the report in a browser")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("demo", help="the end-to-end demo over the shipped models")
    s.add_argument("--out", default="build/demo")
    s.add_argument("--models", default="", help="comma-separated zoo names (default: all)")
    s.add_argument("--open", action="store_true")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_demo)
