"""The ``trtlab`` command.

Subcommands: ``info``, ``inspect MODEL``, ``partition MODEL --out DIR``, ``build MODEL``,
``bench MODEL``, ``report MODEL --out DIR`` and ``demo``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import warnings
from typing import Dict, Optional, Sequence

from .errors import TrtlabError


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment() -> Dict[str, object]:
    """Versions and capabilities of everything trtlab uses, as a dict."""
    from . import __version__, trt

    info = trt.info()
    env: Dict[str, object] = {
        "trtlab": __version__,
        "python": platform.python_version(),
        "onnx": _version("onnx"),
        "onnxruntime": _version("onnxruntime"),
        "polygraphy": _version("polygraphy"),
        "onnx-graphsurgeon": _version("onnx-graphsurgeon"),
        "tensorrt flavor": info.flavor or "none",
        "tensorrt version": info.version or "none",
        "parse": "yes" if info.parse else "no",
        "build": "yes" if info.build else "no",
        "run": "yes" if info.run else "no",
        "gpu": f"{info.gpu} (compute capability {info.compute_capability})" if info.gpu else "none",
        "why": info.reason,
    }
    try:
        import onnxruntime as ort

        env["onnxruntime providers"] = ", ".join(ort.get_available_providers())
    except ImportError:
        env["onnxruntime providers"] = "onnxruntime not installed"
    return env


def cmd_info(args: argparse.Namespace) -> int:
    env = environment()
    if args.json:
        print(json.dumps(env, indent=2))
        return 0
    width = max(len(k) for k in env)
    for key, value in env.items():
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .model import load

    model = load(args.model, fold_constants=args.fold)
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
    nodes = model.nodes
    print(f"\nnodes: {len(nodes)}, total MACs (symbolic dims = 1): {int(nodes['macs'].sum()):,}")
    if args.nodes:
        print(nodes[["name", "op_type", "output_shapes", "macs"]].to_string(index=False))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trtlab", description="TensorRT BYOC research toolkit")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("info", help="versions, TensorRT flavor and what it can do here")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("inspect", help="node table summary, op histogram, inputs/outputs")
    s.add_argument("model")
    s.add_argument("--nodes", action="store_true", help="print every node")
    s.add_argument("--fold", action="store_true",
                   help="fold constant subgraphs into initializers (exact; off by default)")
    s.add_argument("--no-fold", action="store_false", dest="fold", help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_inspect)

    importlib.import_module("trtlab.cli_steps").add_parsers(sub)
    return p


def _show_warning(message: Warning, category: type, filename: str, lineno: int,
                  file: object = None, line: Optional[str] = None) -> None:
    print(f"trtlab: warning: {message}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.func(args) or 0)
    except TrtlabError as exc:
        print(f"trtlab: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
