"""GPU smoke test: every zoo model built and run on TensorRT, checked against ONNX Runtime.

Run it on a machine with an NVIDIA GPU after installing or upgrading TensorRT, TensorRT-RTX,
Polygraphy, CUDA or the driver::

    python scripts/gpu_smoke.py                      # all zoo models, FP32
    python scripts/gpu_smoke.py --models digits_cnn resnet_mini --precision fp16

For each model it partitions, builds the TensorRT engines (cached in ``--cache-dir``), runs the
hybrid model with tensors kept on the GPU between adjacent TensorRT segments, compares the outputs
with ONNX Runtime on the whole model, counts host/device copies per boundary, reads the engine
inspector (the post-fusion layers of the real engines, :func:`trtlab.fusion`) and times a few
runs. It prints one table, one row per model.

Exit codes: 0 every model matched; 1 a model failed (build, run, mismatch or a TensorRT segment
that did not run on TensorRT); 2 bad arguments; 3 this machine cannot run TensorRT engines (no GPU,
or one the flavor does not support): the models were loaded and partitioned, nothing ran on TensorRT.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

NEEDS_GPU = 3
COLUMNS = ["model", "trt_segments", "fallback_segments", "executors", "engines", "engine_mb", "build_s",
           "max_abs", "tolerance", "match", "resident", "d2h", "h2d", "layers", "reformats", "fusion",
           "median_ms", "status"]
#: Output tolerances per precision (absolute, relative), against ONNX Runtime FP32.
TOLERANCE = {"fp32": (1e-3, 1e-3), "fp16": (5e-2, 5e-2), "int8": (2e-1, 2e-1)}


def _row(name: str, **values: Any) -> Dict[str, Any]:
    row = {c: "" for c in COLUMNS}
    row["model"] = name
    row.update(values)
    return row


def _max_abs(out: Dict[str, np.ndarray], ref: Dict[str, np.ndarray], tol: tuple) -> tuple:
    worst, ok = 0.0, True
    for k, r in ref.items():
        o = np.asarray(out[k])
        if o.shape != r.shape:
            return float("inf"), False
        if r.dtype.kind in "iub":
            err = float(np.max(np.abs(o.astype(np.int64) - r.astype(np.int64)))) if r.size else 0.0
            ok = ok and err == 0
        else:
            diff = np.abs(o.astype(np.float64) - r.astype(np.float64))
            err = float(np.nanmax(diff)) if diff.size else 0.0
            ok = ok and bool(np.all(diff <= tol[0] + tol[1] * np.abs(r.astype(np.float64))))
        worst = max(worst, err)
    return worst, ok


def check_model(name: str, precision: str, cache_dir: Path, iterations: int) -> Dict[str, Any]:
    """Build, run, compare, inspect and time one zoo model on TensorRT."""
    import trtlab
    from trtlab import zoo
    from trtlab.backends.onnxruntime.session import run_onnx
    from trtlab.study.latency import LatencyWarning, benchmark

    model = zoo.load(name)
    part = trtlab.partition(model)
    trt_segs = [s for s in part.segments if s.backend == "tensorrt"]
    row = _row(name, trt_segments=len(trt_segs), fallback_segments=len(part.segments) - len(trt_segs))
    feeds = zoo.example_inputs(name, batch=1)
    start = time.perf_counter()
    try:
        hybrid = trtlab.build(part, precision=precision, cache_dir=cache_dir, progress=False,
                              shapes={k: tuple(v.shape) for k, v in feeds.items()})
    except Exception as exc:  # report every model, whatever breaks
        row.update(status=f"FAIL build: {type(exc).__name__}: {exc}")
        return row
    row.update(build_s=round(time.perf_counter() - start, 1), engines=hybrid.engine_count,
               engine_mb=round(hybrid.engine_bytes / 2**20, 2))
    try:
        execs = hybrid.executors
        trt_rows = execs[execs["backend"] == "tensorrt"]
        row["executors"] = "+".join(dict.fromkeys(execs["executor"]))
        off_gpu = trt_rows[trt_rows["executor"] != "tensorrt"]
        out = hybrid.run(feeds)
        ref = run_onnx(model, feeds)
        tol = TOLERANCE.get(precision, TOLERANCE["fp32"])
        err, ok = _max_abs(out, ref, tol)
        copies = hybrid.last_copies
        row.update(max_abs=f"{err:.2e}", tolerance=f"{tol[0]:g}+{tol[1]:g}*|ref|", match=ok,
                   resident=sum(1 for r in copies.values() if r["resident"]),
                   d2h=sum(r["d2h"] for r in copies.values()), h2d=sum(r["h2d"] for r in copies.values()))
        problems = []
        try:  # the engine inspector on the real engines: the post-fusion layers
            report = trtlab.fusion(hybrid)
            layers = report.layers
            row.update(layers=len(layers), fusion=report.stage,
                       reformats=int((layers["kind"] == "reformat").sum()) if "kind" in layers else "")
            if report.stage != "post-fusion":
                problems.append("engine inspector gave no post-fusion view: " + "; ".join(report.notes))
        except trtlab.TrtlabError as exc:
            row["fusion"] = "error"
            problems.append(f"engine inspector: {exc}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LatencyWarning)
            stats = benchmark(hybrid, feeds, warmup=3, iterations=iterations, progress=False)
        row["median_ms"] = round(stats.median, 3)
        if len(off_gpu):
            problems.append("not on TensorRT: " + "; ".join(f"{r.segment}: {r.reason}" for r in off_gpu.itertuples()))
        if not ok:
            problems.append("outputs differ from ONNX Runtime")
        row["status"] = "ok" if not problems else "FAIL " + " | ".join(problems)
    except Exception as exc:  # report every model, whatever breaks
        row["status"] = f"FAIL {type(exc).__name__}: {exc}"
    finally:
        hybrid.close()
    return row


def prepare_only(name: str) -> Dict[str, Any]:
    """What runs without a GPU: load and partition (and say that the rest needs one)."""
    import trtlab
    from trtlab import zoo

    model = zoo.load(name)
    part = trtlab.partition(model)
    trt_segs = [s for s in part.segments if s.backend == "tensorrt"]
    return _row(name, trt_segments=len(trt_segs), fallback_segments=len(part.segments) - len(trt_segs),
                status="loaded and partitioned; build/run/compare need a GPU")


def main(argv: Optional[List[str]] = None) -> int:
    import trtlab
    from trtlab import zoo
    from trtlab.backends.tensorrt import flavor

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", help=f"zoo models (default: all of {', '.join(zoo.names())})")
    parser.add_argument("--precision", default="fp32", choices=sorted(TOLERANCE))
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="engine cache folder (default: a temporary folder, removed at the end)")
    parser.add_argument("--iterations", type=int, default=20, help="timed runs per model")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    names = args.models or zoo.names()
    unknown = sorted(set(names) - set(zoo.names()))
    if unknown:
        print(f"unknown zoo model(s): {', '.join(unknown)}; available: {', '.join(zoo.names())}", file=sys.stderr)
        return 2

    import pandas as pd

    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", None)
    pd.set_option("display.max_colwidth", 80)
    info = flavor.info()
    print(f"trtlab {getattr(trtlab, '__version__', '')} | TensorRT flavor {info.flavor} {info.version} | "
          f"GPU {info.gpu or 'none'} (compute capability {info.compute_capability or '-'}) | "
          f"parse={info.parse} build={info.build} run={info.run}")
    print(f"  {info.reason}")
    if not info.run:
        rows = [prepare_only(n) for n in names]
        print(pd.DataFrame(rows, columns=COLUMNS)[["model", "trt_segments", "fallback_segments", "status"]]
              .to_string(index=False))
        print(f"\nNo GPU run: {info.reason}.\nThis smoke test needs an NVIDIA GPU that {info.flavor or 'TensorRT'} "
              "supports, with its driver; run it there (see README, 'GPU smoke test').", file=sys.stderr)
        return NEEDS_GPU
    with tempfile.TemporaryDirectory(prefix="trtlab-gpu-smoke-") as tmp:
        cache = args.cache_dir or Path(tmp)
        rows = []
        for name in names:
            print(f"  {name} ...", file=sys.stderr, flush=True)
            rows.append(check_model(name, args.precision, cache, args.iterations))
    table = pd.DataFrame(rows, columns=COLUMNS)
    print(table.to_string(index=False))
    failed = [r["model"] for r in rows if r["status"] != "ok"]
    if failed:
        print(f"\n{len(failed)} of {len(rows)} models failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"\nall {len(rows)} models built, ran on TensorRT and matched ONNX Runtime ({args.precision})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
