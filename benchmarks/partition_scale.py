"""How partitioning scales, and what it costs next to TensorRT's parser and Polygraphy.

Prints three tables:

1. rules-only ``check_support`` + ``partition`` time on synthetic graphs of 1k, 10k and 100k
   nodes (target: 100k nodes <= 10 s, 10x the nodes <= 15x the time);
2. per zoo model: one bare ``supports_model_v2`` call next to parser-based ``check_support``
   and ``partition`` (target: partition adds <= 25% to the parser time);
3. ``polygraphy inspect capability --with-partitioning`` on the zoo model with the most
   unsupported nodes, timed in the same run as trtlab on the same model (both as a fresh
   process, and trtlab also in-process as a notebook runs it).

Run: ``python benchmarks/partition_scale.py [--sizes 1000 10000 100000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import trtlab
from trtlab import zoo
from trtlab.partitioning.partitioner import partition

#: Elementwise ops the synthetic graphs draw from; "Opaque" (a custom-domain op) is what no
#: backend supports.
UNARY = ("Relu", "Sigmoid", "Tanh", "Abs", "Neg")
BINARY = ("Add", "Mul", "Sub", "Max")
CUSTOM_DOMAIN = "trtlab.synthetic"


def synthetic_model(n: int, *, seed: int = 0, unsupported: float = 0.05, window: int = 12,
                    width: int = 8) -> onnx.ModelProto:
    """A network-like DAG of ``n`` nodes on ``[1, width]`` tensors.

    Each node reads the previous node's output; binary nodes also read a random tensor of the
    last ``window`` nodes (skip connections); every 16th node is a MatMul with a weight. A
    fraction ``unsupported`` of the nodes are custom-domain ``Opaque`` ops.
    """
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    tensors = ["x"]
    weight = numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32), "w")
    inits.append(weight)
    for i in range(n):
        out = f"t{i}"
        prev = tensors[-1]
        r = rng.random()
        if r < unsupported:
            node = helper.make_node("Opaque", [prev], [out], name=f"n{i}", domain=CUSTOM_DOMAIN)
        elif i % 16 == 0:
            node = helper.make_node("MatMul", [prev, "w"], [out], name=f"n{i}")
        elif r < 0.5:
            node = helper.make_node(UNARY[int(rng.integers(len(UNARY)))], [prev], [out], name=f"n{i}")
        else:
            other = tensors[-1 - int(rng.integers(min(window, len(tensors))))]
            node = helper.make_node(BINARY[int(rng.integers(len(BINARY)))], [prev, other], [out],
                                    name=f"n{i}")
        nodes.append(node)
        tensors.append(out)
    graph = helper.make_graph(nodes, f"synthetic_{n}",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info(tensors[-1], TensorProto.FLOAT, [1, width])],
                              initializer=inits)
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 17),
                                                                  helper.make_opsetid(CUSTOM_DOMAIN, 1)])


def best_of(fn: Callable[[], object], repeat: int) -> Tuple[float, object]:
    """Fastest wall time of ``repeat`` calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def scale_table(sizes: List[int], repeat: int) -> List[Dict[str, object]]:
    rows = []
    for n in sizes:
        model = trtlab.load(synthetic_model(n), fold_constants=False, shape_inference=False)
        t_rules, table = best_of(lambda: trtlab.check_support(model, source="rules"), repeat)
        t_part, part = best_of(lambda: partition(model, support=table), repeat)
        rows.append({"nodes": n, "unsupported": int((~table.frame["supported"]).sum()),
                     "segments": len(part.segments),
                     "refused merges": int((part.decisions["kind"] == "merge_refused_cycle").sum()),
                     "rules s": t_rules, "partition s": t_part, "total s": t_rules + t_part})
    for prev, row in zip(rows, rows[1:]):
        row["x time / x nodes"] = (row["partition s"] / prev["partition s"]) / (row["nodes"] / prev["nodes"])
    return rows


def bare_parser(model: "trtlab.Model | bytes") -> bool:
    """One ``supports_model_v2`` call on a fresh parser, as Polygraphy and TensorRT users make it.

    ``model`` is a loaded model (its serialized bytes are parsed) or the bytes of an ONNX file.
    """
    from trtlab.backends.tensorrt import flavor

    trt = flavor.module()
    logger = trt.Logger(trt.Logger.INTERNAL_ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    return bool(parser.supports_model_v2(model if isinstance(model, bytes) else model.to_bytes()))


def zoo_table(repeat: int) -> List[Dict[str, object]]:
    rows = []
    for name in zoo.names():
        model = zoo.load(name)
        t_bare, _ = best_of(lambda: bare_parser(model), repeat)
        t_support, table = best_of(lambda: trtlab.check_support(model, source="parser"), repeat)
        t_part, part = best_of(lambda: partition(model, support=table), repeat)
        rows.append({"model": name, "nodes": len(model.node_names),
                     "unsupported": int((~table.frame["supported"]).sum()), "segments": len(part.segments),
                     "supports_model_v2 s": t_bare, "check_support s": t_support, "partition s": t_part,
                     "partition / supports_model_v2": t_part / t_bare,
                     "partition / check_support": t_part / t_support})
    return rows


def polygraphy_row(rows: List[Dict[str, object]], repeat: int) -> Dict[str, object]:
    """Polygraphy's CLI and trtlab on the zoo model with the most unsupported nodes.

    Both are timed as a fresh process (interpreter start, imports, parse) and trtlab also
    in-process (what a notebook pays).
    """
    name = max(rows, key=lambda r: (r["unsupported"], r["nodes"]))["model"]
    model = zoo.load(name)
    env = dict(os.environ, POLYGRAPHY_USE_TENSORRT_RTX="1")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.onnx"
        model.save(path)
        poly = [str(Path(sys.executable).with_name("polygraphy")), "inspect", "capability",
                "--with-partitioning", str(path), "-o", str(Path(tmp) / "poly_out")]
        ours_cmd = [sys.executable, "-c",
                    "import sys, trtlab; m = trtlab.load(sys.argv[1]); "
                    "trtlab.partition(m, support=trtlab.check_support(m, source='parser'))", str(path)]

        def run(cmd: List[str]) -> subprocess.CompletedProcess:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp)
            if proc.returncode != 0:
                raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
            return proc

        t_poly, _ = best_of(lambda: run(poly), repeat)
        t_ours_cold, _ = best_of(lambda: run(ours_cmd), repeat)
    t_ours, _ = best_of(lambda: partition(model, support=trtlab.check_support(model, source="parser")),
                        repeat)
    return {"model": name, "unsupported": next(r["unsupported"] for r in rows if r["model"] == name),
            "polygraphy CLI s": t_poly, "trtlab CLI-like s": t_ours_cold, "trtlab in-process s": t_ours,
            "speed-up (process)": t_poly / t_ours_cold, "speed-up (in-process)": t_poly / t_ours}


def show(title: str, rows: List[Dict[str, object]]) -> None:
    import pandas as pd

    print(f"\n{title}")
    with pd.option_context("display.width", 160, "display.max_columns", 20,
                           "display.float_format", "{:.4f}".format):
        print(pd.DataFrame(rows).to_string(index=False))


def main(argv: List[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-parser", action="store_true", help="only the synthetic scale table")
    args = ap.parse_args(argv)
    show("Rules-only check_support + partition on synthetic graphs", scale_table(args.sizes, args.repeat))
    if args.skip_parser:
        return
    rows = zoo_table(args.repeat)
    show("Parser-based check_support + partition on the zoo", rows)
    show("polygraphy inspect capability --with-partitioning vs trtlab (same run)",
         [polygraphy_row(rows, args.repeat)])


if __name__ == "__main__":
    main()
