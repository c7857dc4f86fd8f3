"""``trtlab partition`` against Polygraphy's capability tool on every model of the real tier.

Two tables, both measured in the same run of this script:

1. **CLI, fresh processes.** ``trtlab partition M --out D`` next to
   ``POLYGRAPHY_USE_TENSORRT_RTX=1 polygraphy inspect capability --with-partitioning M -o D2``:
   each run is a new process (interpreter start, imports, parse, writing the segments), the two
   commands alternate, and the table prints the median wall time of each, their ratio and the
   peak resident memory (``ru_maxrss`` of that child process, MiB). Target: ratio <= 1.0 on every
   model of the real tier. A model Polygraphy fails on is reported (its exit code and last error
   line) and the row has no ratio; the benchmark goes on. By default the table also has the zoo's
   dynamically quantized model (``quantized_dynamic``), which Polygraphy fails on (``--extra``).
   ``trtlab partition`` imports TensorRT and runs the parser in a forked worker while it imports
   onnx and loads the model (``trtlab/backends/tensorrt/parser_worker.py``) when the machine has
   a core to spare (1-minute load average below its core count plus one half; else everything
   runs in one process), so the two imports overlap; the ``load`` column is the load average when the row
   started. The ``trtlab`` command also runs ``partition`` with Python's cyclic garbage collector
   off and ends its process without the interpreter's teardown (exit handlers and output
   flushed first; ``trtlab/cli/main.py``); Polygraphy's process exits the usual way, and its
   time includes that teardown. The ``floor`` line after the table prints both imports side by side (the floor of
   that design) and one after the other.
2. **In process.** ``check_support(model, source="parser") + partition(model)`` on a loaded
   model next to one bare ``supports_model_v2`` call on a fresh TensorRT parser (builder,
   network, parser, as ``bare_parser`` of ``partition_scale.py`` makes them) given the same bytes
   (``model.to_bytes()``, serialized before timing; trtlab's time includes its own
   serialization). Each trtlab run gets a freshly loaded model (load not timed), so nothing
   cached on the model by a run before is reused. Paired and alternating call by call; a sample
   is the mean of enough calls to last about 50 ms; medians of the samples. Target: ratio <= 2.0
   (wall time). ``cpu ratio`` is the same pairing in CPU time of this process (both sides run on
   one thread), which a busy machine disturbs less.

Both sides run from compiled bytecode: Polygraphy is installed with its ``__pycache__``, and this
script byte-compiles the trtlab package it runs first (what ``pip install`` does), so neither pays
for compiling its sources when ``PYTHONDONTWRITEBYTECODE`` is set.

Models: every ``.onnx`` of the real tier (``tests/real/models.toml``, fetched into
``build/real_models`` by ``scripts/fetch_real_models.py``).

3. **Large external weights.** The same CLI pair on ``big_weights`` (``benchmarks/_models.py``:
   a MatMul chain whose float32 weights, ``--gib`` GiB in all, live in one external data file;
   made on the fly under ``build/bench_models/``, never committed). Targets: ratio <= 2.0 and
   trtlab's peak memory <= 1.3x the weights' size (``MiB/weights``). ``trtlab partition``
   writes segments that reference the model's weights there (``--weights reference``, the
   default for models with external data); the row ``--weights copy`` shows the self-contained
   folder (every weight copied once into ``weights.data``), for reference, not a target. The
   real models of ``--external-real`` (default ``rapidocr_det``, PP-OCRv4 det) saved with
   their weights in external data get the same pair, with the real tier's target.

Run: ``python benchmarks/cli_partition.py [--quick] [--runs N] [--models id,id] [--gib G]``
(``--quick``: 3 paired runs per model instead of 7; ``--gib 0`` skips the large-weight rows).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fetch_real_models  # noqa: E402

CLI_TARGET = 1.0
#: Targets of the large external-weight rows: wall time ratio, peak memory / weights' size.
BIG_TARGET = 2.0
BIG_MEMORY_TARGET = 1.3
#: ``load_options`` of the real models (models.toml), used by the in-process table.
LOAD_OPTIONS: Dict[str, Dict[str, object]] = {}
IN_PROCESS_TARGET = 2.0


def real_models(ids: Optional[Sequence[str]] = None) -> Dict[str, Path]:
    """Model id -> path of every real-tier model already fetched (fetching the missing ones)."""
    models = fetch_real_models.load_manifest()
    if ids:
        models = [m for m in models if m.id in ids]
    out = {}
    for m in models:
        path = fetch_real_models.target_path(m)
        if not path.is_file():
            path = fetch_real_models.fetch_one(m)
        out[m.id] = path
        LOAD_OPTIONS[m.id] = dict(m.load_options)
    return out


def extra_models(items: Optional[Sequence[str]]) -> Dict[str, Path]:
    """``--extra`` models: zoo names or paths, keyed ``"<name> (extra)"``."""
    from trtlab import zoo

    out = {}
    for item in ["quantized_dynamic"] if items is None else [i for i in items if i]:
        path = Path(item) if Path(item).is_file() else zoo.path(item)
        out[f"{Path(item).stem} (extra)"] = path
    return out


def compile_trtlab() -> None:
    """Byte-compile the trtlab package the child processes import (as an installed wheel is)."""
    import compileall

    probe = subprocess.run([sys.executable, "-c", "import trtlab; print(trtlab.__file__)"], check=True,
                           capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=_pythonpath()))
    compileall.compile_dir(str(Path(probe.stdout.strip()).parent), quiet=1)


def _pythonpath() -> str:
    return os.environ.get("PYTHONPATH") or str(ROOT)


def timed(cmd: List[str], env: Dict[str, str], cwd: str) -> Tuple[float, float, int, str]:
    """Wall seconds, peak RSS (MiB), exit code and stderr tail of one fresh process."""
    with tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace").strip().splitlines()
    return wall, usage.ru_maxrss / 1024, proc.returncode, (tail[-1] if tail else "")


def cli_commands(model: Path, out: Path, extra: Sequence[str] = ()) -> Tuple[List[str], List[str]]:
    bindir = Path(sys.executable).parent
    ours = [sys.executable, "-m", "trtlab.cli", "partition", str(model), "--out", str(out / "trtlab"), *extra]
    theirs = [str(bindir / "polygraphy"), "inspect", "capability", "--with-partitioning", str(model),
              "-o", str(out / "polygraphy")]
    return ours, theirs


def cli_table(models: Dict[str, Path], runs: int, extra: Sequence[str] = (),
              target: Optional[float] = CLI_TARGET) -> List[Dict[str, object]]:
    env = dict(os.environ, POLYGRAPHY_USE_TENSORRT_RTX="1")
    env["PYTHONPATH"] = _pythonpath()
    env.setdefault("TRTLAB_PROGRESS", "0")
    rows = []
    for name, path in models.items():
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        ours_t, ours_m, theirs_t, theirs_m = [], [], [], []
        theirs_error = ""
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(runs):  # paired, alternating
                for side in ("ours", "theirs"):
                    out = Path(tmp) / "out"
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir()
                    ours, theirs = cli_commands(path, out, extra)
                    wall, rss, code, tail = timed(ours if side == "ours" else theirs, env, tmp)
                    if side == "ours":
                        if code != 0:
                            raise RuntimeError(f"trtlab partition {name} failed ({code}): {tail}")
                        ours_t.append(wall)
                        ours_m.append(rss)
                    elif code != 0:
                        theirs_error = f"polygraphy exit {code}: {tail[:100]}"
                    else:
                        theirs_t.append(wall)
                        theirs_m.append(rss)
        ta = statistics.median(ours_t)
        tb = statistics.median(theirs_t) if theirs_t else None
        row: Dict[str, object] = {"model": name, "trtlab s": ta, "polygraphy s": tb,
                                  "ratio": ta / tb if tb else None, "target": target,
                                  "trtlab MiB": max(ours_m), "polygraphy MiB": max(theirs_m) if theirs_m else None,
                                  "load": load}
        row["met"] = ("n/a: " + theirs_error) if tb is None else "for reference" if target is None else \
            ("met" if ta / tb <= target else "NOT met")
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def big_weights(gib: float) -> Path:
    """The ``gib`` GiB external-weight model of ``_models.py`` (made in a child process, so this
    process, whose children's peak memory is measured, never holds the weights)."""
    folder = ROOT / "build" / "bench_models"
    name = "big_weights" if gib == 1.0 else f"big_weights_{gib:g}"
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from _models import big_weight_model; "
            "print(big_weight_model(sys.argv[2], gib=float(sys.argv[3]), name=sys.argv[4]))")
    done = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parent), str(folder),
                           str(gib), name], check=True, capture_output=True, text=True)
    return Path(done.stdout.strip().splitlines()[-1])


_SAVE_EXTERNAL = r"""
import sys
import onnx
from onnx import numpy_helper
from trtlab.model import _all_tensors
proto = onnx.load(sys.argv[1])
for t in _all_tensors(proto.graph):  # typed fields as raw data (same values), so they can move out
    if not t.HasField("raw_data") and t.data_type != onnx.TensorProto.STRING:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t), t.name))
onnx.save(proto, sys.argv[2], save_as_external_data=True, location="model.onnx.data", convert_attribute=True)
"""


def external_copy(model_id: str, path: Path) -> Path:
    """Real model ``model_id`` saved with its weights (initializers and ``Constant`` values of
    1 KiB or more) in external data, under ``build/bench_models/`` (made once, in a child process)."""
    out = ROOT / "build" / "bench_models" / f"{model_id}_external" / "model.onnx"
    if not (out.is_file() and out.with_name("model.onnx.data").is_file()):
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-c", _SAVE_EXTERNAL, str(path), str(out)], check=True)
    return out


def external_real_table(ids: Sequence[str], runs: int) -> List[Dict[str, object]]:
    """trtlab partition (weights referenced) vs Polygraphy on real models saved with external data."""
    rows = []
    for model_id, path in real_models(ids).items():
        ext = external_copy(model_id, path)
        row = cli_table({f"{model_id} (external data), --weights reference": ext}, runs)[0]
        row["weights MiB"] = ext.with_name("model.onnx.data").stat().st_size / 2**20
        row["MiB/weights"] = row["trtlab MiB"] / row["weights MiB"]
        rows.append(row)
    return rows


def big_table(gib: float, runs: int) -> List[Dict[str, object]]:
    """trtlab partition (reference and copy) vs Polygraphy on the large external-weight model."""
    path = big_weights(gib)
    weights_mib = path.with_suffix(".data").stat().st_size / 2**20
    rows = []
    for mode, target in (("reference", BIG_TARGET), ("copy", None)):
        row = cli_table({f"big_weights {gib:g} GiB, --weights {mode}": path}, runs, ("--weights", mode),
                        target=target)[0]
        row["weights MiB"] = weights_mib
        row["MiB/weights"] = row["trtlab MiB"] / weights_mib
        if target is not None:
            row["mem target"] = BIG_MEMORY_TARGET
            row["met"] = "met" if row["ratio"] is not None and row["ratio"] <= BIG_TARGET and \
                row["MiB/weights"] <= BIG_MEMORY_TARGET else "NOT met"
        rows.append(row)
    return rows


#: The parallel floor: a child forked at start imports TensorRT (trtlab's parser worker) while this
#: process imports onnx; done when both are (the child signals on a pipe, then exits on its own).
_PARALLEL_IMPORTS = r"""
import os
r, w = os.pipe()
if os.fork() == 0:
    import trtlab.backends.tensorrt.flavor as f
    f.module()
    os.write(w, b"1")
    os._exit(0)
import onnx
os.read(r, 1)
"""


def floor(models: Dict[str, Path], runs: int) -> None:
    """What importing onnx and TensorRT alone costs next to Polygraphy's whole run on the first
    model (Polygraphy imports neither onnx nor NumPy when the parser accepts every node): one after
    the other (trtlab before its parser worker), and side by side as ``trtlab partition`` now
    imports them (TensorRT in the forked parser worker), which is the floor of its run."""
    env = dict(os.environ, POLYGRAPHY_USE_TENSORRT_RTX="1", PYTHONPATH=_pythonpath())
    name, path = next(iter(models.items()))
    serial = [sys.executable, "-c", "import onnx, trtlab.backends.tensorrt.flavor as f; f.module()"]
    parallel = [sys.executable, "-c", _PARALLEL_IMPORTS]
    a, p, b = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            a.append(timed(serial, env, tmp)[0])
            p.append(timed(parallel, env, tmp)[0])
            out = Path(tmp) / "out"
            shutil.rmtree(out, ignore_errors=True)
            b.append(timed(cli_commands(path, out)[1], env, tmp)[0])
    ta, tp, tb = statistics.median(a), statistics.median(p), statistics.median(b)
    print(f"\nfloor: importing onnx and TensorRT side by side (TensorRT in a forked worker, as trtlab "
          f"partition does) {tp:.3f} s = {tp / tb:.2f}x polygraphy's whole run on {name} ({tb:.3f} s); "
          f"one after the other {ta:.3f} s = {ta / tb:.2f}x")


def in_process_table(models: Dict[str, Path], runs: int) -> List[Dict[str, object]]:
    import trtlab
    from partition_scale import bare_parser

    rows = []
    for name, path in models.items():
        options = LOAD_OPTIONS.get(name, {})
        model = trtlab.load(path, **options)
        data = model.to_bytes()  # the bytes trtlab's parser call reads

        def ours(m: "trtlab.Model") -> object:
            return trtlab.partition(m, support=trtlab.check_support(m, source="parser"))

        part = ours(model)  # warm: TensorRT's library and the lazy modules are loaded once per process
        t = time.perf_counter()
        bare_parser(data)
        # each sample times `inner` calls in a row (>= ~50 ms), so a millisecond model is not
        # measured at the resolution of the machine's scheduling noise
        inner = max(1, int(0.05 / max(time.perf_counter() - t, 1e-4)))
        a, b, cpu_a, cpu_b = [], [], [], []
        for _ in range(runs):  # paired, alternating call by call, so both sides see the same load
            fresh = [trtlab.load(path, **options) for _ in range(inner)]  # not timed; fresh Models, no index reused
            ta = tb = ca = cb = 0.0
            for m in fresh:
                t, c = time.perf_counter(), time.process_time()
                bare_parser(data)
                t1, c1 = time.perf_counter(), time.process_time()
                ours(m)
                t2, c2 = time.perf_counter(), time.process_time()
                tb += t1 - t
                ta += t2 - t1
                cb += c1 - c
                ca += c2 - c1
            a.append(ta / inner)
            b.append(tb / inner)
            cpu_a.append(ca / inner)
            cpu_b.append(cb / inner)
            del fresh
        ta, tb = statistics.median(a), statistics.median(b)
        row: Dict[str, object] = {"model": name, "nodes": len(model.node_names), "segments": len(part.segments),
                                  "supports_model_v2 s": tb, "check_support+partition s": ta,
                                  "ratio": ta / tb, "cpu ratio": statistics.median(cpu_a) / statistics.median(cpu_b),
                                  "target": IN_PROCESS_TARGET}
        row["met"] = "met" if ta / tb <= IN_PROCESS_TARGET else "NOT met"
        rows.append(row)
        print(_line(row), flush=True)
    return rows


def _line(row: Dict[str, object]) -> str:
    def fmt(v: object) -> str:
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    return "  ".join(f"{k}={fmt(v)}" for k, v in row.items())


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 paired runs per model")
    ap.add_argument("--runs", type=int, default=None, help="paired runs per model (default 7, --quick 3)")
    ap.add_argument("--models", default="", help="comma-separated real-model ids (default: all)")
    ap.add_argument("--extra", action="append", default=None, metavar="ZOO_NAME_OR_PATH",
                    help="more models for the CLI table (default: the zoo's quantized_dynamic, which "
                         "Polygraphy fails on); not part of the target")
    ap.add_argument("--gib", type=float, default=1.0,
                    help="GiB of external weights of the large-weight rows (default 1; 0 skips them)")
    ap.add_argument("--external-real", default="rapidocr_det",
                    help="comma-separated real-model ids also measured saved with external data and "
                         "partitioned by reference (default rapidocr_det; '' for none)")
    ap.add_argument("--skip-in-process", action="store_true")
    ap.add_argument("--skip-cli", action="store_true")
    args = ap.parse_args(argv)
    runs = args.runs or (3 if args.quick else 7)
    models = real_models([m for m in args.models.split(",") if m])
    compile_trtlab()
    failed: List[Dict[str, object]] = []
    if not args.skip_cli:
        print(f"CLI: trtlab partition vs polygraphy inspect capability --with-partitioning "
              f"(fresh processes, {runs} paired runs, median; peak RSS MiB)")
        cli = cli_table(dict(models, **extra_models(args.extra)), runs)
        _table(cli)
        failed += [r for r in cli if r["ratio"] is not None and r["ratio"] > CLI_TARGET
                   and not str(r["model"]).endswith("(extra)")]
        floor(models, runs)
    if args.gib > 0:
        print(f"\nCLI on a {args.gib:g} GiB external-weight model (fresh processes, {runs} paired runs, "
              "median; peak RSS MiB)")
        big = big_table(args.gib, runs)
        ids = [m for m in args.external_real.split(",") if m]
        if ids:
            print(f"\nthe same CLI pair on real models saved with external data (target {CLI_TARGET} as on "
                  "the real tier)")
            big += external_real_table(ids, runs)
        _table(big)
        failed += [r for r in big if r["met"] == "NOT met"]
    if not args.skip_in_process:
        print("\nIn process: check_support(source='parser') + partition vs one bare supports_model_v2 "
              f"({runs} paired runs, median)")
        inproc = in_process_table(models, runs)
        _table(inproc)
        failed += [r for r in inproc if r["ratio"] > IN_PROCESS_TARGET]
    print(f"\n{'all targets met' if not failed else f'{len(failed)} rows over target'}")
    return 0


def _table(rows: List[Dict[str, object]]) -> None:
    cols = list(dict.fromkeys(c for r in rows for c in r))
    cells = [[("-" if r.get(c) is None else f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c])) for c in cols]
             for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print()
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))


if __name__ == "__main__":
    sys.exit(main())
