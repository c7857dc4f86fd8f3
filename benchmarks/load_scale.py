"""``trtlab.load`` against ``onnx.load + onnx.shape_inference.infer_shapes``, and the partition CLI
against Polygraphy's, on a 10k-node model and a 1 GiB-weight model.

Models (made on the fly under ``build/bench_models/`` by ``benchmarks/_models.py``, never
committed): ``chain10k`` (2,500 residual MLP blocks, 10,000 nodes, inline weights) and
``big_weights`` (float32 MatMul chain, 1 GiB of weights in an external data file). So that
``load`` is not tuned to one graph, the same rows follow for graphs of about 10k nodes in other
shapes (``_models.GRAPH_SHAPES``: wide, many small initializers, ``Constant`` nodes, ``If``
bodies) and for the trained models of the real tier that ``scripts/fetch_real_models.py`` has
fetched into ``build/real_models/`` (rows for missing ones are left out, and say so).

Every measurement runs in a fresh process; trtlab and its peer alternate (paired runs) and the
medians are printed with their ratio (trtlab / peer). trtlab's modules are compiled once
beforehand (into ``build/bench_pycache``), as an installed package's are:

- ``load``: the time of the call alone (imports done before the clock starts) and the process's
  peak RSS (``ru_maxrss``). Target: <= 1.2x in time and in peak memory on both models.

The last column, for reference, is the ratio of CPU time (user + system; of the call for
``load``, of the whole process for the CLI): on a shared machine wall time also counts the
time a process waits for a core, CPU time only the work it does.
- ``partition CLI`` on the 1 GiB model: ``trtlab partition M --out D --force`` against
  ``POLYGRAPHY_USE_TENSORRT_RTX=1 polygraphy inspect capability --with-partitioning M``, wall
  time of the whole process and its peak RSS. Targets: <= 2x wall time, peak memory <= 1.3x
  the weights' size. The segments refer to the model's data file in place (``--weights
  reference``, the default for external data; ``benchmarks/cli_partition.py`` also times
  ``--weights copy``, the self-contained folder).

Usage::

    python benchmarks/load_scale.py [--quick] [--runs N] [--load-only]

``--quick``: 3 pairs and a 256 MiB model instead of 7 pairs and 1 GiB. ``--load-only``: the
``load`` rows only (no partition CLI).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _models import GRAPH_SHAPES, big_weight_model, chain_model, save  # noqa: E402

LOAD_TARGET = 1.2
CLI_TARGET = 2.0
CLI_MEMORY_TARGET = 1.3  # x the weights' size

_CHILD = r"""
import json, resource, sys, time
which, path = sys.argv[1], sys.argv[2]
import onnx
if which == "trtlab":
    import trtlab.model
t, c = time.perf_counter(), time.process_time()
if which == "trtlab":
    m = trtlab.model.load(path)
else:
    m = onnx.shape_inference.infer_shapes(onnx.load(path))
s, cpu = time.perf_counter() - t, time.process_time() - c
print(json.dumps({"s": s, "cpu": cpu, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


#: Bytecode of trtlab for the measured processes (see :func:`_compile`).
PYCACHE = ROOT / "build" / "bench_pycache"


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["POLYGRAPHY_USE_TENSORRT_RTX"] = "1"
    env.setdefault("TRTLAB_PROGRESS", "0")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


def _compile() -> None:
    """Compile trtlab's modules once, before any measurement.

    The peer's packages come with their bytecode from installation; trtlab, run from a source
    tree (an editable install, or ``PYTHONDONTWRITEBYTECODE`` set), would otherwise compile its
    modules in every measured process, which costs time and peak memory an installed trtlab
    does not pay.
    """
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "trtlab")], env=_env(),
                   check=True, stdout=subprocess.DEVNULL)


#: Runs a command and reports its wall time and peak RSS. A forked child starts with its
#: parent's high-water mark (Linux keeps it across exec), so the command is started from this
#: small process, not from the benchmark (which holds models in memory).
_WRAPPER = r"""
import json, os, subprocess, sys, time
t = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
out = proc.stdout.read()
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - t
sys.stdout.write(json.dumps({"wall": wall, "rss": usage.ru_maxrss * 1024,
                             "cpu": usage.ru_utime + usage.ru_stime,
                             "code": os.waitstatus_to_exitcode(status),
                             "out": out.decode(errors="replace")[-4000:]}))
"""


def _run(cmd: Sequence[str], cwd: Path) -> Tuple[float, int, str, float]:
    """Wall time, peak RSS (bytes), stdout and CPU time (user + system) of one fresh process."""
    done = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, env=_env(),
                          cwd=cwd, check=True)
    rep = json.loads(done.stdout)
    if rep["code"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({rep['code']}): {rep['out'][-2000:]}")
    return rep["wall"], rep["rss"], rep["out"], rep["cpu"]


def _pairs(ours, theirs, runs: int) -> Tuple[List[tuple], List[tuple]]:
    a, b = [], []
    for i in range(runs):  # paired, alternating which goes first
        if i % 2:
            b.append(theirs())
            a.append(ours())
        else:
            a.append(ours())
            b.append(theirs())
    return a, b


def _med(rows: List[tuple], k: int) -> float:
    return statistics.median(r[k] for r in rows)


def _line(what: str, ours_s: float, peer_s: float, target: float, ours_mb: float, peer_mb: float,
          mem_ratio: float, mem_target: float, mem_what: str, cpu_ratio: float) -> str:
    ratio = ours_s / peer_s
    ok = "met" if ratio <= target and mem_ratio <= mem_target else "NOT met"
    return (f"{what:<34} {ours_s:>8.3f} {peer_s:>8.3f} {ratio:>6.2f} {target:>5.1f}x  "
            f"{ours_mb:>8.0f} {peer_mb:>8.0f} {mem_ratio:>6.2f} {mem_target:>4.1f}x {mem_what:<8} "
            f"{ok:<8} {cpu_ratio:>5.2f}")


def _cpu_ratio(a: List[tuple], b: List[tuple], k: int) -> float:
    return _med(a, k) / _med(b, k)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--load-only", action="store_true", help="only the load rows (no partition CLI)")
    args = ap.parse_args(argv)
    runs = args.runs or (3 if args.quick else 7)
    gib = 0.25 if args.quick else 1.0
    folder = ROOT / "build" / "bench_models"
    chain = folder / "chain10k.onnx"
    if not chain.exists():
        save(chain_model(2500), chain)
    big = big_weight_model(folder, gib=gib, name="big_weights" if gib == 1.0 else f"big_weights_{gib:g}")
    weights = big.with_suffix(".data").stat().st_size
    py = sys.executable
    polygraphy = str(Path(py).parent / "polygraphy")
    _compile()
    print(f"{'':<34} {'time s':>17} {'ratio':>6} {'target':>6}  {'peak RSS MB':>17} {'ratio':>6} "
          f"{'target':>10}  {'':<8} {'CPU':>5}")
    print(f"{'what':<34} {'trtlab':>8} {'peer':>8} {'':>6} {'':>6}  {'trtlab':>8} {'peer':>8} "
          f"{'':>6} {'':>10}  {'':<8} {'ratio':>5}")
    met = True
    with tempfile.TemporaryDirectory(prefix="trtlab_load_scale_", dir=ROOT / "build") as tmp_name:
        tmp = Path(tmp_name)
        for label, path in _load_models(folder, chain, big, gib):
            def child(which, path=path):
                _, rss, text, _ = _run([py, "-c", _CHILD, which, str(path)], tmp)
                rep = json.loads(text.strip().splitlines()[-1])
                return rep["s"], rss, rep["cpu"]
            a, b = _pairs(lambda: child("trtlab"), lambda: child("peer"), runs)
            s_a, s_b, m_a, m_b = _med(a, 0), _med(b, 0), _med(a, 1), _med(b, 1)
            print(_line(label, s_a, s_b, LOAD_TARGET, m_a / 2**20, m_b / 2**20, m_a / m_b,
                        LOAD_TARGET, "x peer", _cpu_ratio(a, b, 2)))
            met &= s_a / s_b <= LOAD_TARGET and m_a / m_b <= LOAD_TARGET
        if args.load_only:
            return _summary(weights, runs, met)
        out = tmp / "partition"
        ours = lambda: _run([py, "-m", "trtlab.cli", "partition", str(big), "--out", str(out), "--force",
                                   "--weights", "reference"], tmp)
        theirs = lambda: _run([polygraphy, "inspect", "capability", "--with-partitioning", str(big)], tmp)
        a, b = _pairs(ours, theirs, runs)
        s_a, s_b, m_a, m_b = _med(a, 0), _med(b, 0), _med(a, 1), _med(b, 1)
        print(_line(f"partition CLI, {gib:g} GiB", s_a, s_b, CLI_TARGET, m_a / 2**20, m_b / 2**20,
                    m_a / weights, CLI_MEMORY_TARGET, "x weights", _cpu_ratio(a, b, 3)))
        met &= s_a / s_b <= CLI_TARGET and m_a / weights <= CLI_MEMORY_TARGET
    return _summary(weights, runs, met)


def _summary(weights: int, runs: int, met: bool) -> int:
    print(f"weights: {weights / 2**20:.0f} MiB; medians of {runs} paired fresh-process runs")
    print("all targets met" if met else "some targets NOT met")
    return 0


def _load_models(folder: Path, chain: Path, big: Path, gib: float) -> List[Tuple[str, Path]]:
    """``(row label, model path)`` of every ``load`` row: the two targets, then the other graphs."""
    rows = [("load, 10k nodes", chain), (f"load, {gib:g} GiB external", big)]
    for shape, make in GRAPH_SHAPES.items():
        path = folder / f"{shape.replace(' ', '_').lower()}.onnx"
        if not path.exists():
            save(make(), path)
        rows.append((f"load, {shape}", path))
    sys.path.insert(0, str(ROOT / "scripts"))
    import fetch_real_models

    missing = []
    for real in fetch_real_models.load_manifest():
        path = fetch_real_models.target_path(real)
        if path.exists():
            rows.append((f"load, real {real.id}", path))
        else:
            missing.append(real.id)
    if missing:
        print(f"(real models not fetched, rows left out: {', '.join(missing)}; "
              "python scripts/fetch_real_models.py fetches them)")
    return rows


if __name__ == "__main__":
    sys.exit(main())
