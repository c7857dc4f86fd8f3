"""Scaling and overhead of trtlab.sweep on Dask.

1. A 12-job precision sweep of ``digits_cnn`` (FP32, FP16, INT8 x 3 calibration methods x 3
   calibration-set sizes, FP16 with one node kept in FP32) run in a plain loop, then on a
   warm LocalCluster with 1 and with 2 worker processes: the speed-up of 2 workers over 1.
2. Per-job overhead of the sweep machinery (submission, scheduling, transfer, storing the
   result) against calling the same jobs in a loop, with jobs made to last 2 s (the metric
   sleeps), so the difference is the machinery and not CPU noise. Target: under 5% of a 2 s job.
   The same jobs on 2 workers show the speed-up the machinery gives when the CPU is not the limit.

Cluster start-up (worker processes importing trtlab) is reported separately: it is paid once per
study, not per job. On a machine shared with other work the speed-up is what that work leaves.

Usage::

    python benchmarks/study_scale.py            # 12 jobs of 2 s in part 2 (about 2 minutes in all)
    python benchmarks/study_scale.py --quick    # 4 jobs of 0.5 s in part 2
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import tempfile
import time

os.environ.setdefault("TRTLAB_PROGRESS", "0")

SPEEDUP_TARGET = 1.6  # 2 workers over 1 on 2 free cores
OVERHEAD_TARGET = 0.05  # of a 2 s job

def _sleepy_top1(pause_s, outputs, targets):
    from trtlab.study import metrics

    time.sleep(pause_s)
    return metrics.top1()(outputs, targets)["top1"]

def _warm(model_bytes, data) -> None:
    """One job, so imports and first-call set-up are paid before any clock starts."""
    from trtlab.study import metrics
    from trtlab.study.sweeps import SweepConfig, run_job

    for cfg in (SweepConfig("fp32"), SweepConfig("int8", "minmax", 32)):
        run_job(model_bytes, data, cfg, metrics.top1(), latency_iterations=2, engine_cache=False)

def _grid():
    import trtlab
    from trtlab.study.sweeps import SweepConfig

    grid = trtlab.sweep_grid(("fp32", "fp16", "int8"), methods=("entropy", "minmax", "percentile"),
                             calibration_sizes=(32, 64, 128))
    grid.append(SweepConfig("fp16", keep_fp32_nodes=("/conv1/Conv",)))
    return grid

def _cluster(n: int, model_bytes, data):
    import dask
    import distributed

    logging.getLogger("distributed").setLevel(logging.ERROR)  # no start/stop chatter between figures
    start = time.perf_counter()
    with dask.config.set({"distributed.worker.daemon": False}):
        cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                           dashboard_address=":0", silence_logs=logging.ERROR)
    client = distributed.Client(cluster)
    client.run(_warm, model_bytes, data)
    return client, cluster, time.perf_counter() - start

def _loop(model_bytes, data, grid, metric, latency_iterations, runner="auto") -> float:
    from trtlab.study.sweeps import run_job

    start = time.perf_counter()
    for cfg in grid:
        row = run_job(model_bytes, data, cfg, metric, latency_iterations=latency_iterations, engine_cache=False,
                      runner=runner)
        assert row["status"] == "ok", row["error"]
    return time.perf_counter() - start

def _swept(client, grid, data, metric, latency_iterations, runner="auto") -> float:
    import trtlab

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        table = trtlab.sweep({"digits_cnn": data_model()}, grid, data, metric=metric, client=client,
                             cache_dir=folder, latency_iterations=latency_iterations, engine_cache=False,
                             runner=runner, progress=False)
        elapsed = time.perf_counter() - start
    assert (table["status"] == "ok").all(), table["error"].tolist()
    assert table.attrs["computed"] == len(grid)
    return elapsed

@functools.lru_cache(None)
def data_model() -> bytes:
    from trtlab import zoo

    return zoo.path("digits_cnn").read_bytes()

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="part 2 with 4 jobs of 0.5 s")
    args = parser.parse_args()

    from trtlab import zoo
    from trtlab.study import metrics
    from trtlab.study.sweeps import SweepConfig, SweepData

    x, y = zoo.digits("test")
    xc, _ = zoo.digits("calib")
    data = SweepData(x, y, xc)
    grid = _grid()
    model = data_model()
    _warm(model, data)

    print(f"1. a {len(grid)}-job digits_cnn sweep (engines built every time, 20 timed runs per job)")
    t_loop = _loop(model, data, grid, metrics.top1(), 20)
    client1, cluster1, start1 = _cluster(1, model, data)
    t1 = _swept(client1, grid, data, metrics.top1(), 20)
    client2, cluster2, start2 = _cluster(2, model, data)
    t2 = _swept(client2, grid, data, metrics.top1(), 20)
    speedup = t1 / t2
    print(f"   plain loop in this process     {t_loop:7.2f} s")
    print(f"   1 worker                       {t1:7.2f} s   (cluster start and warm-up {start1:.1f} s, once per study)")
    print(f"   2 workers                      {t2:7.2f} s   (cluster start and warm-up {start2:.1f} s, once per study)")
    print(f"   speed-up 2 workers / 1         {speedup:7.2f} x  (target >= {SPEEDUP_TARGET:.1f} x on 2 free "
          f"cores: {'met' if speedup >= SPEEDUP_TARGET else 'NOT met'}; {os.cpu_count()} cores here, shared)")

    n_jobs, pause = (4, 0.5) if args.quick else (len(grid), 2.0)
    sleepy = metrics.Metric("top1", functools.partial(_sleepy_top1, pause))
    # the lightest real jobs (FP32 on ONNX Runtime, 64 images, distinct keys), so the clock sees
    # the machinery and the pause, not a busy CPU
    sub = [SweepConfig("fp32", batch_size=16 + i) for i in range(n_jobs)]
    small = SweepData(x[:64], y[:64], None)
    print(f"\n2. per-job overhead: {n_jobs} jobs made to last {pause:.1f} s (the metric sleeps), 1 worker")
    base = _loop(model, small, sub, metrics.top1(), 0, "onnxruntime")
    t_plain = _loop(model, small, sub, sleepy, 0, "onnxruntime")
    t_sweep = _swept(client1, sub, small, sleepy, 0, "onnxruntime")
    per_job = (t_sweep - t_plain) / n_jobs
    job_s = t_plain / n_jobs
    share = per_job / 2.0
    print(f"   plain loop                     {t_plain:7.2f} s   ({job_s:.2f} s per job, "
          f"{base / n_jobs:.2f} s of it real work)")
    print(f"   sweep on 1 worker              {t_sweep:7.2f} s")
    print(f"   overhead per job               {per_job * 1e3:7.1f} ms = {share:.1%} of a 2 s job "
          f"(target < {OVERHEAD_TARGET:.0%}: {'met' if share < OVERHEAD_TARGET else 'NOT met'})")
    t_sweep2 = _swept(client2, sub, small, sleepy, 0, "onnxruntime")
    print(f"   sweep on 2 workers             {t_sweep2:7.2f} s   (speed-up {t_sweep / t_sweep2:.2f} x when the "
          "CPU is not the limit)")
    for client, cluster in ((client1, cluster1), (client2, cluster2)):
        client.close()
        cluster.close()
    return 0

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    raise SystemExit(main())
