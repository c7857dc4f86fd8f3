"""The ``trtlab`` command.

Subcommands: ``info``, ``inspect MODEL``, ``partition MODEL --out DIR``, ``build MODEL``,
``bench MODEL``, ``report MODEL --out DIR`` and ``demo``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings
from typing import Optional, Sequence

from trtlab.cli.environment import environment
from trtlab.errors import TrtlabError


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
    from trtlab.model import load

    model = load(args.model, fold_constants=not args.no_fold)
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
    s.add_argument("--no-fold", action="store_true", help="do not fold constants")
    s.set_defaults(func=cmd_inspect)

    importlib.import_module("trtlab.cli.steps").add_parsers(sub)
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
