"""What the hybrid runtime costs on top of ONNX Runtime, on the zoo models.

Two numbers per model:

* overhead: a HybridModel holding the whole model in one segment versus an ONNX Runtime session
  of the model's file called directly, as the hybrid's own session reads it (target <= 5%): both timed alike, call by call, in paired rounds
  (:func:`hybrid_vs_session.paired_ratios`: :data:`INSTANCES` of each side, made alternately,
  in rotated order; the median over rounds of the ratio of the sides' median times). "ort ms"
  is the session's median latency, "hybrid ms" that times the ratio;
* cost per boundary: the model cut into 1, 2, 4 and 8 segments, each an ONNX Runtime session;
  the slope of median latency over the number of boundaries (target <= 20 us), and the slope of
  the runtime's own time outside segment calls ("glue"). Measured with build()'s default ONNX
  Runtime thread policy (``ort_threads="auto"``: one intra-op thread per session when a hybrid
  has several) and with ONNX Runtime's own default in every session (``ort_threads="default"``). Segments run on
  ONNX Runtime here (TensorRT segments do too on a machine that cannot run engines), so the
  numbers are the runtime's own cost: feed validation, tensor hand-over and one more session call.

Usage::

    python benchmarks/hybrid_overhead.py [--iterations 300] [--models resnet_mini digits_cnn]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List

import numpy as np

import trtlab
from trtlab import zoo
from trtlab.backends.onnxruntime.backend import OnnxRuntimeBackend
from trtlab.study.latency import LatencyWarning, benchmark
from trtlab.codegen import build
from trtlab.backends.onnxruntime.session import session, session_from_file
sys.path.insert(0, str(Path(__file__).resolve().parent))
from hybrid_vs_session import paired_ratios, session_call  # noqa: E402

OVERHEAD_TARGET = 0.05
BOUNDARY_TARGET_US = 20.0
#: Hybrids and sessions of each zoo model for the one-segment overhead.
INSTANCES = 3


def one_segment(model):
    support = {n: (False, "whole model in one segment") for n in model.node_names}
    return build(trtlab.partition(model, support=support), cache_dir=False, progress=False)


def cut(model, pieces: int, ort_threads="auto"):
    """The model cut into about ``pieces`` consecutive blocks of nodes, alternating backends."""
    names = model.node_names
    size = max(1, -(-len(names) // pieces))
    support = {n: (i // size % 2 == 0, "block") for i, n in enumerate(names)}
    part = trtlab.partition(model, support=support)
    return build(part, cache_dir=False, progress=False, backends={"tensorrt": OnnxRuntimeBackend()},
                 ort_threads=ort_threads)


def medians_ms(runnable, feeds, iterations: int):
    """(median latency, median time outside segment execution) in ms."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LatencyWarning)
        stats = benchmark(runnable, feeds, warmup=max(10, iterations // 10), iterations=iterations,
                          progress=False)
    glue = stats.segments.get("boundaries")
    return stats.median, float(np.median(glue)) * 1e3 if glue is not None else float("nan")


def interleaved(runnables: Dict[str, object], feeds, iterations: int, rounds: int = 5):
    """Median of per-round medians, alternating runnables so machine load hits all alike.

    Returns ``{name: (latency ms, glue ms)}``.
    """
    per: Dict[str, List] = {k: [] for k in runnables}
    for _ in range(rounds):
        for k, r in runnables.items():
            per[k].append(medians_ms(r, feeds, max(1, iterations // rounds)))
    return {k: tuple(float(x) for x in np.median(np.array(v), axis=0)) for k, v in per.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--models", nargs="*", default=None)
    args = ap.parse_args(argv)
    logging.getLogger("trtlab.study.latency").setLevel(logging.ERROR)
    names = args.models or zoo.names()
    from trtlab.backends.tensorrt import flavor

    info = flavor.info()
    print(f"trtlab {trtlab.__version__}, {info.flavor} {info.version}; run on TensorRT: {info.run} ({info.reason})")
    print(f"{'model':<20} {'nodes':>6} {'ort ms':>9} {'hybrid ms':>10} {'overhead':>9} {'added us':>9}  "
          f"{'segments':>12} {'us/boundary':>12} {'glue us/b':>10} {'us/b ort-default':>17}")
    print("(overhead: paired rounds, hybrid against session; hybrid ms and added us are the session's median "
          "time times that ratio)")
    worst_overhead, worst_boundary, worst_glue, worst_default = -1.0, -1.0, -1.0, -1.0
    for name in names:
        model = zoo.load(name)
        feeds = zoo.example_inputs(name, batch=1)
        start = time.perf_counter()
        sessions, singles = [], []
        for _ in range(INSTANCES):
            sessions.append(session_from_file(model.path) if model.path else session(model))
            singles.append(one_segment(model))
        outs = [o.name for o in sessions[0].get_outputs()]
        ort_ms = medians_ms(sessions[0], feeds, args.iterations)[0]
        (ratio,) = paired_ratios([[session_call(s, outs) for s in sessions], [h.run for h in singles]], feeds,
                                 max(200, args.iterations * 2))
        overhead = ratio - 1.0
        times = {"ort": ort_ms, "hybrid": ort_ms * ratio}

        slopes = {}
        for policy in ("auto", "default"):
            counts, medians = [], []
            for pieces in (1, 2, 4, 8):
                hybrid = cut(model, pieces, policy)
                n = len(hybrid.segments)
                if n in counts:
                    continue
                counts.append(n)
                medians.append(hybrid)
            hybrids = {str(c): h for c, h in zip(counts, medians)}
            seg_times = interleaved(hybrids, feeds, args.iterations)
            xs = np.array(counts, dtype=float) - 1
            ys = np.array([seg_times[str(c)][0] for c in counts])
            glue = np.array([seg_times[str(c)][1] for c in counts])
            slopes[policy] = (float(np.polyfit(xs, ys, 1)[0] * 1e3) if len(xs) > 1 else float("nan"),
                              float(np.polyfit(xs, glue, 1)[0] * 1e3) if len(xs) > 1 else float("nan"))
        slope_us, glue_us = slopes["auto"]
        default_us = slopes["default"][0]
        worst_overhead = max(worst_overhead, overhead)
        if np.isfinite(slope_us):
            worst_boundary = max(worst_boundary, slope_us)
            worst_glue = max(worst_glue, glue_us)
            worst_default = max(worst_default, default_us)
        print(f"{name:<20} {len(model.node_names):>6} {times['ort']:>9.4f} {times['hybrid']:>10.4f} "
              f"{overhead:>+9.1%} {(times['hybrid'] - times['ort']) * 1e3:>9.1f}  {','.join(map(str, counts)):>12} "
              f"{slope_us:>12.1f} {glue_us:>10.2f} {default_us:>17.1f}"
              f"   ({time.perf_counter() - start:.0f}s)")
        sys.stdout.flush()
    print(f"\nworst median overhead, one segment: {worst_overhead:+.1%} (target <= {OVERHEAD_TARGET:.0%}): "
          f"{'met' if worst_overhead <= OVERHEAD_TARGET else 'NOT met'}")
    print(f"worst runtime glue per boundary (validation and hand-over, segment calls excluded): "
          f"{worst_glue:.2f} us")
    print(f"worst added cost per boundary: {worst_boundary:.1f} us (target <= {BOUNDARY_TARGET_US:.0f} us): "
          f"{'met' if worst_boundary <= BOUNDARY_TARGET_US else 'NOT met'}")
    print(f"worst added cost per boundary with ONNX Runtime's default pool in every session: "
          f"{worst_default:.1f} us (ort_threads='default')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
