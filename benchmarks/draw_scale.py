"""How long trtlab.draw takes from 10 to 10,000 nodes; writes the PNGs under build/draw_scale/.

Target (issue 20): draw() of a 10k-node / 2k-segment graph in at most 3 s including the PNG
(80 dpi); each row prints draw + PNG time next to it. Imports are warmed before timing.

Models are stacks of a 10-node attention-like block (x -> ReduceMean -> Sub -> MatMul q/k ->
Transpose -> MatMul -> Softmax -> MatMul -> Add residual -> Relu), partitioned with Softmax kept
off TensorRT so every block adds two segments. The shipped data/transformer_large.onnx is drawn
too when present.

    python benchmarks/draw_scale.py [--blocks 1 10 100 1000] [--out build/draw_scale]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent


def stacked_blocks(n_blocks: int, seq: int = 16, dim: int = 32, seed: int = 0) -> onnx.ModelProto:
    """A chain of ``n_blocks`` 10-node blocks (10 * n_blocks nodes)."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((dim, dim)).astype(np.float32), name)
             for name in ("wq", "wk")]
    nodes = []
    x = "x"
    for b in range(n_blocks):
        p = f"b{b}/"
        nodes += [
            helper.make_node("ReduceMean", [x], [p + "m"], name=p + "mean", axes=[-1], keepdims=1),
            helper.make_node("Sub", [x, p + "m"], [p + "c"], name=p + "center"),
            helper.make_node("MatMul", [p + "c", "wq"], [p + "q"], name=p + "q"),
            helper.make_node("MatMul", [p + "c", "wk"], [p + "k"], name=p + "k"),
            helper.make_node("Transpose", [p + "k"], [p + "kt"], name=p + "kt", perm=[0, 2, 1]),
            helper.make_node("MatMul", [p + "q", p + "kt"], [p + "s"], name=p + "scores"),
            helper.make_node("Softmax", [p + "s"], [p + "a"], name=p + "softmax", axis=-1),
            helper.make_node("MatMul", [p + "a", p + "c"], [p + "o"], name=p + "attend"),
            helper.make_node("Add", [p + "o", x], [p + "r"], name=p + "residual"),
            helper.make_node("Relu", [p + "r"], [p + "y"], name=p + "relu"),
        ]
        x = p + "y"
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(
        nodes, f"blocks_{n_blocks}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, seq, dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, seq, dim])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


TARGET_S = 3.0  # draw + PNG of a 10k-node / 2k-segment graph


def measure(model, part, out: Path, label: str, **kwargs) -> None:
    from trtlab.viz.graph import draw

    c0, t0 = time.process_time(), time.perf_counter()
    fig = draw(model, part, **kwargs)
    t1 = time.perf_counter()
    path = out / f"{label}.png"
    fig.savefig(path, dpi=80)
    t2, c2 = time.perf_counter(), time.process_time()
    w, h = fig.get_size_inches()
    target = ""
    if len(model.node_names) >= 10_000 and not kwargs:
        target = (f"target <= {TARGET_S:.0f} s: wall {'met' if t2 - t0 <= TARGET_S else 'MISSED'},"
                  f" cpu {'met' if c2 - c0 <= TARGET_S else 'MISSED'}")
    print(f"{label:<28} {len(model.node_names):>6} {len(part.segments):>5} "
          f"{fig._trtlab['view']:>10} {t1 - t0:>8.2f} {t2 - t1:>8.2f} {t2 - t0:>8.2f} "
          f"{c2 - c0:>7.2f} {w:>5.0f}x{h:<4.0f} {path.name} {target}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, nargs="+", default=[1, 10, 100, 1000])
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "draw_scale")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from trtlab.model import load
    from trtlab.partitioning.partitioner import partition
    from trtlab.backends.tensorrt.support import check_support

    import matplotlib.backends.backend_agg  # noqa: F401  (imports are not part of a drawing)
    import matplotlib.collections  # noqa: F401
    import matplotlib.figure  # noqa: F401
    import matplotlib.textpath  # noqa: F401

    print(f"{'drawing':<28} {'nodes':>6} {'segs':>5} {'view':>10} {'draw s':>8} {'png s':>8} "
          f"{'total s':>8} {'cpu s':>7} {'inches':>9} file")
    print("(wall times; 'cpu s' is this process's CPU time for draw + PNG: on a shared machine "
          "the gap is time spent waiting for a core)")
    for n_blocks in args.blocks:
        model = load(stacked_blocks(n_blocks), name=f"blocks_{n_blocks}")
        part = partition(model, support=check_support(model, source="rules"),
                         exclude_ops=("Softmax",))
        measure(model, part, args.out, f"blocks_{len(model.node_names)}")
        if 300 < len(model.node_names) <= 3000:
            measure(model, part, args.out, f"blocks_{len(model.node_names)}_full", condensed=False)
    large = ROOT / "data" / "transformer_large.onnx"
    if large.exists():
        model = load(large)
        support = check_support(model, source="rules")
        part = partition(model, support=support, exclude_ops=("Softmax",))
        measure(model, part, args.out, "transformer_large")
        measure(model, part, args.out, "transformer_large_full", condensed=False)


if __name__ == "__main__":
    main()
