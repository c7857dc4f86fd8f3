"""Build time with cuts through shape computations, against the one-segment build.

PP-OCRv4 rec (from the ``rapidocr-onnxruntime`` wheel of the real-model tier) is built once as
partitioned by default (the reference time), then with its four ``Shape`` nodes excluded and
with every ``Concat`` excluded: the cut tensors are then shape tensors of the segments that read
them (a Reshape's target shape). Each row prints the build time, its ratio to the reference
(target <= 3x), the segments built, the nodes build-failure isolation moved, and the builds
isolation tried. Builds run in the worker pool, engine cache off.

Usage::

    python benchmarks/build_isolation.py [--repeat 1]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import fetch_real_models  # noqa: E402

import trtlab  # noqa: E402

TARGET = 3.0


def timed_build(part, feeds):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hybrid = trtlab.build(part, feeds=feeds, cache_dir=False, progress=False)
    return time.perf_counter() - start, hybrid


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args(argv)
    paths = fetch_real_models.fetch()
    spec = {m.id: m for m in fetch_real_models.load_manifest()}["rapidocr_rec"]
    model = trtlab.load(paths["rapidocr_rec"])
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((1, 3, 48, 320)).astype(np.float32)}
    del spec
    shapes = [n for n in model.node_names if model.node(n).op_type == "Shape"]
    cases = {"default partition": {}, f"{len(shapes)} Shape nodes excluded": {"exclude_nodes": shapes},
             "exclude_ops=Concat": {"exclude_ops": ["Concat"]}}
    timed_build(trtlab.partition(model), feeds)  # start the worker pool
    print(f"{'case':<28} {'build s':>8} {'ratio':>6} {'segments':>9} {'moved':>6} {'isolation builds':>17}")
    reference = None
    worst = 0.0
    for name, knobs in cases.items():
        part = trtlab.partition(model, **knobs)
        seconds = min(timed_build(part, feeds)[0] for _ in range(args.repeat))
        _, hybrid = timed_build(part, feeds)
        reference = seconds if reference is None else reference
        ratio = seconds / reference
        worst = max(worst, ratio)
        out, want = hybrid.run(feeds), trtlab.run_onnx(model, feeds)
        err = max(float(np.max(np.abs(out[k] - want[k]))) for k in want)
        print(f"{name:<28} {seconds:>8.2f} {ratio:>6.2f} {len(hybrid.partition.segments):>9} "
              f"{len(hybrid.moved):>6} {hybrid.isolation_builds:>17}   (max abs vs ORT {err:.1e})")
    print(f"\nworst build time vs the default partition: {worst:.2f}x (target <= {TARGET:.0f}x): "
          f"{'met' if worst <= TARGET else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
