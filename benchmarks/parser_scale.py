"""Parser-based support at scale: the re-check passes stay linear in the graph size.

TensorRT's ONNX parser stops importing at a node that fails at import time (not at its static
checks); trtlab parses the rest again. The graph here has one such node every ``EVERY`` nodes
(a side-branch ``Reshape`` to an impossible shape), so the parser stops about n / EVERY times.

Target: 10x the nodes costs at most 12x the time, from 1k to 20k nodes: every 10x step among
the sizes (1k -> 10k and 2k -> 20k) is printed against it. Each size is the median of 3 rounds over all sizes.

Run: ``.venv/bin/python benchmarks/parser_scale.py [--quick]`` (``--quick``: 1k and 10k, one run each)
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Dict, List, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

EVERY = 10
SIZES = (1_000, 2_000, 5_000, 10_000, 20_000)
QUICK_SIZES = (1_000, 10_000)
REPEAT = 3
#: Largest time ratio allowed for 10x the nodes.
TARGET = 12.0


def stopping_chain(n: int, every: int = EVERY) -> onnx.ModelProto:
    """A chain of ``n`` unary ops; every ``every``-th node is a Reshape the parser fails to import.

    ::

        x -> Sigmoid -> Relu -> ... -> out
                  \\-> Reshape([1, 3])   (16 elements: fails at import, a side output)
    """
    nodes: List[onnx.NodeProto] = []
    outputs = []
    prev = "x"
    for i in range(n):
        out = f"t{i}"
        if i % every == every - 1:
            nodes.append(helper.make_node("Reshape", [prev, "bad_shape"], [out], name=f"n{i}"))
            outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
        else:
            nodes.append(helper.make_node("Relu" if i % 2 else "Sigmoid", [prev], [out], name=f"n{i}"))
            prev = out
    outputs.append(helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 4, 4]))
    graph = helper.make_graph(nodes, f"chain{n}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4])],
                              outputs, initializer=[numpy_helper.from_array(np.array([1, 3], np.int64), "bad_shape")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def steps(times: Dict[int, float]) -> List[Tuple[int, int, float]]:
    """Every 10x step among the measured sizes: ``(small, large, time ratio)``."""
    return [(lo, hi, times[hi] / times[lo]) for lo in times for hi in times if hi == 10 * lo]


def main(quick: bool = False) -> int:
    from trtlab.backends.tensorrt import flavor as trt
    from trtlab.backends.tensorrt.parser import parse_support

    if not trt.info().parse:
        print(f"parser_scale: skipped, no TensorRT parser here ({trt.info().reason})")
        return 0
    sizes = QUICK_SIZES if quick else SIZES
    repeat = 1 if quick else REPEAT
    models = {n: stopping_chain(n) for n in sizes}
    runs: Dict[int, List[float]] = {n: [] for n in sizes}
    reports = {}
    for _ in range(repeat):  # rounds over every size: load on the machine hits all sizes alike
        for n in sizes:
            t = time.perf_counter()
            reports[n] = parse_support(models[n])
            runs[n].append(time.perf_counter() - t)
    times = {n: statistics.median(runs[n]) for n in sizes}
    print(f"{'nodes':>7} {'seconds':>8} {'passes':>7} {'bare parse s':>13}   (median of {repeat} rounds)")
    for n in sizes:
        data = models[n].SerializeToString()
        t = time.perf_counter()
        keep = trt.make_parser(trt.quiet_logger())  # builder, network, parser, logger stay alive together
        keep[2].supports_model_v2(data)
        bare = time.perf_counter() - t
        assert sum(not v.supported for v in reports[n].verdicts) == n // EVERY
        print(f"{n:>7} {times[n]:>8.2f} {reports[n].passes:>7} {bare:>13.3f}")
    print(f"\n10x steps (target: time ratio <= {TARGET:.0f} for 10x the nodes)")
    failed = 0
    for lo, hi, ratio in steps(times):
        ok = ratio <= TARGET
        failed += not ok
        print(f"  {lo:>6} -> {hi:>6} nodes: {ratio:5.1f}x the time  {'met' if ok else 'NOT met'}")
    lo, hi = sizes[0], sizes[-1]
    print(f"  overall {lo} -> {hi}: {times[hi] / times[lo]:.1f}x the time for {hi / lo:.0f}x the nodes")
    return 0


if __name__ == "__main__":
    sys.exit(main(quick="--quick" in sys.argv))
