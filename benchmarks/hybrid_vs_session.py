"""The hybrid of a model file against ONNX Runtime's own session of that file.

Figures per model, each next to its target:

* time: a one-segment hybrid (``trtlab.load(path)``, every node in one segment, ``build``)
  against ``onnxruntime.InferenceSession(path)``: median over rounds of the ratio of their
  times, every instance (:data:`INSTANCES` hybrids and as many sessions, made alternately, each
  side's time the median of its instances; one of each for the large model) and the noise peer
  below running back to back in each round, in rotated order. This is done in
  :data:`PROCESSES` fresh processes (one for the large model) and the median of their ratios is
  the figure (target <= 1.03), printed with the lowest and highest. Where an instance lands in
  memory moves its time by a few per cent for as long as it lives, so one process's ratio
  varies from process to process by as much; each process has instances of its own;
* memory: peak resident memory (``VmHWM``, see :func:`peak_kb`) of a fresh process that makes
  the ready hybrid and runs it once, against a fresh process that makes the session and runs
  it once (target <= 1.2). Printed whole and above each process's warm baseline: the peak
  after a one-node model went the same way (imports and runtime set-up), so what is above it
  is what the model costs; "of it load" is the part reached while ``trtlab.load`` ran, before
  partition and build. Both processes read compiled bytecode, as installed packages do (see
  :func:`fresh`);
* noise: the same ratio for one more ``InferenceSession(path)`` against those sessions, measured
  in the same rounds (one instance against several: on a shared machine it is rarely 1.000;
  read the hybrid's ratio against it).

The cost per segment boundary is measured by ``benchmarks/hybrid_overhead.py``.

Models: the real-model tier (``tests/real/models.toml``, fetched into ``build/real_models``) and
a large external-data model made on the fly in a temporary folder (a MatMul chain, ``--large-mb``
of float32 weights). When ``trtlab.load`` reads external weights into the model, a second row
builds the hybrid from the model with its weights by reference
(``Model(onnx.load(path, load_external_data=False), path=path)``), as a loader that keeps them
there gives it.

Usage::

    python benchmarks/hybrid_vs_session.py [--quick] [--models rapidocr_det magika] [--large-mb 1024]
        [--real-dir build/real_models]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
TIME_TARGET = 1.03
MEMORY_TARGET = 1.2
#: Sessions and hybrids made of each model for the time ratio (one of each for the large model).
INSTANCES = 3
#: Fresh processes of the time comparison, each with instances of its own (2 with --quick).
PROCESSES = 7
#: Seconds of paired rounds per process, about (fewer rounds for models that run long; 20 at least).
ROUND_SECONDS = 8.0


# ----------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------

def real_models(ids: Optional[List[str]], folder: Optional[Path]) -> Dict[str, Path]:
    """Fetched real models (``scripts/fetch_real_models.py``; ``folder`` defaults to its ``--dest``)."""
    import fetch_real_models as frm

    out = {}
    for spec in frm.load_manifest():
        path = frm.target_path(spec, folder or frm.DEST)
        if (ids is None or spec.id in ids) and path.is_file():
            out[spec.id] = path
    return out


def make_large(folder: Path, megabytes: int) -> Path:
    """A chain of 4 MatMul + Relu with ``megabytes`` of float32 weights in ``large.onnx.data``."""
    import onnx
    from onnx import helper, numpy_helper

    d = int((megabytes * 2 ** 20 / 4 / 4) ** 0.5)
    rng = np.random.default_rng(0)
    inits, nodes, prev = [], [], "x"
    for i in range(4):
        w = rng.standard_normal((d, d), dtype=np.float32) / np.float32(np.sqrt(d))
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"h{i}"], name=f"matmul{i}"),
                  helper.make_node("Relu", [f"h{i}"], [f"r{i}"], name=f"relu{i}")]
        prev = f"r{i}"
    graph = helper.make_graph(nodes, "large", [helper.make_tensor_value_info("x", 1, ["batch", d])],
                              [helper.make_tensor_value_info(prev, 1, ["batch", d])], initializer=inits)
    path = folder / "large.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path),
              save_as_external_data=True, location="large.onnx.data")
    return path


def feeds_for(model_id: str, path: Path) -> Dict[str, np.ndarray]:
    if model_id.startswith("large"):
        import onnx

        d = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[1].dim_value
        return {"x": np.random.default_rng(0).standard_normal((1, d), dtype=np.float32)}
    import fetch_real_models as frm

    return next(m for m in frm.load_manifest() if m.id == model_id).feeds()


def load_options(model_id: str) -> Dict[str, Any]:
    if model_id.startswith("large"):
        return {}
    import fetch_real_models as frm

    return dict(next(m for m in frm.load_manifest() if m.id == model_id).load_options)


def loaded(model_id: str, path: Path, by_reference: bool) -> Any:
    import trtlab

    if by_reference:
        import onnx

        from trtlab.model import Model

        return Model(onnx.load(str(path), load_external_data=False), path=path)
    return trtlab.load(str(path), **load_options(model_id))


def one_segment(model: Any) -> Any:
    import trtlab

    support = {n: (False, "whole model in one segment") for n in model.node_names}
    return trtlab.build(trtlab.partition(model, support=support), cache_dir=False, progress=False)


# ----------------------------------------------------------------------------------------------
# measurements
# ----------------------------------------------------------------------------------------------

def paired_ratios(groups, feeds, rounds: int) -> List[float]:
    """Median over ``rounds`` of time(group i) / time(group 0), for each group after the first;
    a group's time in a round is the median time of its runs (instances of one thing).

    Each round runs every run of every group once, back to back, in an order rotated from round
    to round, so that a busy moment of the machine falls on all of them alike. Instances average
    out what one instance's placement in memory costs or gains: two sessions of the same file
    can differ by a few per cent, run after run.
    """
    clock = time.perf_counter
    runs = [run for group in groups for run in group]
    owner = [g for g, group in enumerate(groups) for _ in group]
    k = len(runs)
    for _ in range(max(3, rounds // 10)):
        for run in runs:
            run(feeds)
    ratios = np.empty((rounds, len(groups) - 1))
    took = [0.0] * k
    for r in range(rounds):
        for j in range(k):
            i = (r + j) % k
            t0 = clock()
            runs[i](feeds)
            took[i] = clock() - t0
        per_group = [float(np.median([t for t, g in zip(took, owner) if g == index])) for index in range(len(groups))]
        ratios[r] = [t / per_group[0] for t in per_group[1:]]
    return [float(x) for x in np.median(ratios, axis=0)]


def session_call(sess: Any, names: List[str]) -> Any:
    """``f(feeds)``: the session's public ``run`` for ``names``, bound once (no Python frame of
    its own, as a direct ``sess.run(names, feeds)`` in a caller's loop)."""
    return functools.partial(sess.run, names)


def peak_kb() -> int:
    """Peak resident memory of this process's address space (``VmHWM``), in KiB.

    ``ru_maxrss`` would do, but Linux carries the parent's peak over ``fork`` + ``exec`` into
    the child's ``ru_maxrss``; ``VmHWM`` belongs to the address space made by ``exec``.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def warm_up(kind: str) -> None:
    """Import and initialize what the measured step uses, on a one-node model, before the baseline."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "tiny",
                              [helper.make_tensor_value_info("x", 1, [1, 4])],
                              [helper.make_tensor_value_info("y", 1, [1, 4])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"x": np.ones((1, 4), np.float32)}
    if kind == "session":
        ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
        return
    import logging
    import warnings

    import trtlab

    logging.getLogger("trtlab").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(proto, os.path.join(tmp, "tiny.onnx"))
        one_segment(trtlab.load(os.path.join(tmp, "tiny.onnx"))).run(feeds)


def time_child(model_id: str, path: Path, by_reference: bool, count: int, rounds: int) -> Dict[str, float]:
    """The time comparison of one process: ``count`` sessions and hybrids made alternately (so that
    neither side gets the memory made first), and the noise peer."""
    import logging
    import warnings

    import onnxruntime as ort

    logging.getLogger("trtlab").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    model = loaded(model_id, path, by_reference)
    feeds = feeds_for(model_id, path)
    sessions, hybrids = [], []
    for _ in range(count):
        sessions.append(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))
        hybrids.append(one_segment(model))
    peer = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in peer.get_outputs()]
    groups = [[session_call(x, names) for x in sessions], [h.run for h in hybrids], [session_call(peer, names)]]
    for _ in range(3):  # the first runs of a session are slower
        peer.run(names, feeds)
    t0 = time.perf_counter()
    for _ in range(3):
        peer.run(names, feeds)
    run_s = (time.perf_counter() - t0) / 3
    rounds = max(min(rounds, 20), min(rounds, int(ROUND_SECONDS / (run_s * (2 * count + 1)))))
    ratio, noise = paired_ratios(groups, feeds, rounds)
    return {"ratio": ratio, "noise": noise, "rounds": rounds, "run_ms": run_s * 1e3}


def child(kind: str, model_id: str, path: str, extra: Optional[List[str]] = None) -> None:
    """Run in a fresh process: make the ready session or hybrid, run once, print memory as JSON
    (kind ``time``: :func:`time_child`, with ``extra`` = by reference, instances, rounds)."""
    import onnxruntime as ort

    if kind == "time":
        by_ref, count, rounds = extra or ["0", str(INSTANCES), "800"]
        print(json.dumps(time_child(model_id, Path(path), by_ref == "1", int(count), int(rounds))))
        return
    warm_up(kind)
    base = peak_kb()
    feeds = feeds_for(model_id, Path(path))
    t0 = time.perf_counter()
    if kind == "session":
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        sess.run(None, feeds)
        after_load = base
    else:
        model = loaded(model_id, Path(path), kind == "hybrid-ref")
        after_load = peak_kb()
        hybrid = one_segment(model)
        hybrid.run(feeds)
    ready = time.perf_counter() - t0
    peak = peak_kb()
    print(json.dumps({"base_kb": base, "load_kb": after_load, "peak_kb": peak, "ready_s": ready}))


def fresh(kind: str, model_id: str, path: Path, bytecode: Optional[Path] = None,
          extra: Optional[List[str]] = None) -> Dict[str, float]:
    """What a fresh process measures (:func:`child`: peak memory, or the time comparison of
    kind ``time``); Python bytecode cached in ``bytecode``.

    Installed packages come with their bytecode, so neither process should pay for compiling
    sources (with ``PYTHONDONTWRITEBYTECODE`` set, every fresh process compiles trtlab again):
    the children read and write it under ``bytecode`` (``PYTHONPYCACHEPREFIX``), a folder of
    this run, filled by a first pair of children whose figures are not kept.
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + os.environ.get("PYTHONPATH", "").split(os.pathsep)),
               TRTLAB_PROGRESS="0")
    if bytecode is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(bytecode)
    out = subprocess.run([sys.executable, __file__, "--child", kind, model_id, str(path), *(extra or [])], env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} {model_id}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs, a 256 MiB large model")
    ap.add_argument("--models", nargs="*", default=None, help="real-model ids (default: every fetched one)")
    ap.add_argument("--real-dir", type=Path, default=None,
                    help="folder of the fetched real models (default: build/real_models)")
    ap.add_argument("--large-mb", type=int, default=None, help="weights of the large model (default 1024)")
    ap.add_argument("--no-large", action="store_true")
    ap.add_argument("--compile-each-time", action="store_true",
                    help="no shared bytecode cache: each fresh process compiles what it imports (as with "
                         "PYTHONDONTWRITEBYTECODE and no __pycache__)")
    ap.add_argument("--processes", type=int, default=None,
                    help=f"fresh processes of the time comparison (default {PROCESSES}, 2 with --quick)")
    ap.add_argument("--child", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child[:3], extra=args.child[3:])
        return 0
    import logging
    import warnings

    import onnxruntime as ort

    import trtlab
    from trtlab.weights import has_external

    logging.getLogger("trtlab").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    pairs = 200 if args.quick else 800
    large_mb = args.large_mb or (256 if args.quick else 1024)
    print(f"trtlab {trtlab.__version__}, onnxruntime {ort.__version__}, {os.cpu_count()} cores")
    processes = args.processes or (2 if args.quick else PROCESSES)
    print(f"time: median of {processes} fresh processes, {INSTANCES} instances a side in each (1 process, 1 instance a "
          "side for the large model); range: their lowest and highest ratio")
    print(f"{'model':<28} {'time hybrid/session':>19} {'range':>13} {'session/session':>15} {'peak MB hybrid / session':>25} "
          f"{'ratio':>6} {'above warm baseline':>20} {'ratio':>6} {'of it load':>10} {'ready s hybrid/session':>23}")
    worst = {"time": 0.0, "mem": 0.0, "mem_model": 0.0}
    with tempfile.TemporaryDirectory(prefix="trtlab-hybrid-bench-") as tmp:
        models = {k: (k, v) for k, v in real_models(args.models, args.real_dir).items()}
        if not args.no_large:
            path = make_large(Path(tmp), large_mb)
            models[f"large_{large_mb}MiB"] = (f"large_{large_mb}MiB", path)
            model = loaded(f"large_{large_mb}MiB", path, False)
            if not has_external(model.proto):
                models[f"large_{large_mb}MiB by reference"] = (f"large_{large_mb}MiB", path)
            del model
        bytecode = None if args.compile_each_time else Path(tmp) / "bytecode"
        primed = bytecode is None
        for label, (model_id, path) in models.items():
            by_ref = label.endswith("by reference")
            large = model_id.startswith("large")
            kind = "hybrid-ref" if by_ref else "hybrid"
            if not primed:  # bytecode of every module both processes import, compiled once
                fresh("session", model_id, path, bytecode)
                fresh(kind, model_id, path, bytecode)
                primed = True
            extra = ["1" if by_ref else "0", "1" if large else str(INSTANCES),
                     str(max(20, pairs // 50) if large else pairs)]
            runs = [fresh("time", model_id, path, bytecode, extra) for _ in range(1 if large else processes)]
            ratios = [r["ratio"] for r in runs]
            ratio, noise = float(np.median(ratios)), float(np.median([r["noise"] for r in runs]))
            spread = f"{min(ratios):.3f}-{max(ratios):.3f}"
            s = fresh("session", model_id, path, bytecode)
            h = fresh(kind, model_id, path, bytecode)
            mem = h["peak_kb"] / s["peak_kb"]
            above = (h["peak_kb"] - h["base_kb"]) / max(1, s["peak_kb"] - s["base_kb"])
            worst["time"] = max(worst["time"], ratio)
            worst["mem"] = max(worst["mem"], mem)
            worst["mem_model"] = max(worst["mem_model"], above)
            print(f"{label:<28} {ratio:>19.3f} {spread:>13} {noise:>15.3f} {h['peak_kb'] / 1024:>12.0f} / {s['peak_kb'] / 1024:<10.0f} "
                  f"{mem:>6.2f} {(h['peak_kb'] - h['base_kb']) / 1024:>10.0f} / {(s['peak_kb'] - s['base_kb']) / 1024:<7.0f} "
                  f"{above:>6.2f} {(h['load_kb'] - h['base_kb']) / 1024:>10.0f} "
                  f"{h['ready_s']:>11.2f} / {s['ready_s']:<9.2f}")
            sys.stdout.flush()
    print()
    print(f"worst one-segment time ratio (median of paired runs): {worst['time']:.3f} (target <= {TIME_TARGET}): "
          f"{'met' if worst['time'] <= TIME_TARGET else 'NOT met'}")
    print(f"worst peak memory ratio above the warm baseline: {worst['mem_model']:.2f} (target <= {MEMORY_TARGET}): "
          f"{'met' if worst['mem_model'] <= MEMORY_TARGET else 'NOT met'}; whole process: {worst['mem']:.2f} "
          f"({'met' if worst['mem'] <= MEMORY_TARGET else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
