"""Start-up cost: importing trtlab's analysis steps and ``trtlab info`` vs Polygraphy's equivalents.

Each command runs in a fresh process; the two sides of a pair alternate (paired runs) and the
table prints the median wall time of each, their ratio and the peak resident memory
(``ru_maxrss`` of the child, MiB). Both sides run from compiled bytecode (this script
byte-compiles the trtlab package first, as ``pip install`` does; Polygraphy is installed with
its ``__pycache__``).

Pairs and targets (ratio trtlab / Polygraphy):

* **import analysis steps** <= 1.2x: ``import trtlab; trtlab.check_support; trtlab.partition;
  trtlab.load`` vs ``import polygraphy.tools.inspect.subtool.capability`` (the module of
  Polygraphy's own support/partition tool). Neither side may import onnx or NumPy to get there.
* **info** <= 1.2x: ``trtlab info`` vs a Polygraphy script giving the same facts. Polygraphy has
  no ``info`` command; the closest equivalent of what ``trtlab info`` reports (TensorRT flavor
  and version, whether a builder and parser can be made here, ONNX Runtime's version and
  providers) is to import TensorRT through Polygraphy's importer
  (``POLYGRAPHY_USE_TENSORRT_RTX=1`` picks TensorRT-RTX, as trtlab does), create a builder and
  network with Polygraphy's ``create_network`` and list ONNX Runtime's providers through its lazy
  importer, which is what the script does.
* **CLI start** <= 1.2x: ``trtlab partition --help`` vs ``polygraphy inspect capability --help``.

Run: ``python benchmarks/startup.py [--quick]`` (``--quick``: 3 paired runs instead of 7).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Tuple

RUNS = 7

POLYGRAPHY_INFO = (
    "from polygraphy import mod\n"
    "from polygraphy.backend.trt import create_network\n"
    "from polygraphy.mod.trt_importer import lazy_import_trt\n"
    "trt = lazy_import_trt()\n"
    "ort = mod.lazy_import('onnxruntime')\n"
    "builder, network = create_network()\n"
    "print('tensorrt', trt.__version__)\n"
    "print('onnxruntime', ort.__version__, ', '.join(ort.get_available_providers()))\n")

PAIRS = [
    ("import analysis steps",
     [sys.executable, "-c", "import trtlab; trtlab.check_support; trtlab.partition; trtlab.load"],
     [sys.executable, "-c", "import polygraphy.tools.inspect.subtool.capability"], 1.2),
    ("info",
     [sys.executable, "-m", "trtlab.cli", "info"],
     [sys.executable, "-c", POLYGRAPHY_INFO], 1.2),
    ("CLI start (partition --help)",
     [sys.executable, "-m", "trtlab.cli", "partition", "--help"],
     [str(Path(sys.executable).parent / "polygraphy"), "inspect", "capability", "--help"], 1.2),
]


def _env() -> dict:
    root = str(Path(__file__).resolve().parents[1])
    return dict(os.environ, POLYGRAPHY_USE_TENSORRT_RTX="1", PYTHONPATH=os.environ.get("PYTHONPATH") or root)


def compile_trtlab(env: dict) -> None:
    """Byte-compile the trtlab package the child processes import (as an installed wheel is)."""
    import compileall

    probe = subprocess.run([sys.executable, "-c", "import trtlab; print(trtlab.__file__)"], check=True,
                           capture_output=True, text=True, env=env)
    compileall.compile_dir(str(Path(probe.stdout.strip()).parent), quiet=1)


def _time(cmd: List[str], env: dict) -> Tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one fresh process."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({code}): {err.decode(errors='replace')[-500:]}")
    return wall, usage.ru_maxrss / 1024


def main(quick: bool = False) -> int:
    runs = 3 if quick else RUNS
    env = _env()
    compile_trtlab(env)
    print(f"{'what':<28} {'trtlab s':>9} {'polygraphy s':>13} {'ratio':>6} {'target':>7}       "
          f"{'trtlab MiB':>10} {'polygraphy MiB':>14}")
    for what, ours, theirs, target in PAIRS:
        a, b, ma_rss, mb_rss = [], [], 0.0, 0.0
        for _ in range(runs):  # paired, alternating
            wall, rss = _time(ours, env)
            a.append(wall)
            ma_rss = max(ma_rss, rss)
            wall, rss = _time(theirs, env)
            b.append(wall)
            mb_rss = max(mb_rss, rss)
        ma, mb = statistics.median(a), statistics.median(b)
        ratio = ma / mb
        print(f"{what:<28} {ma:>9.3f} {mb:>13.3f} {ratio:>6.2f} {target:>6.1f}x "
              f"{'met    ' if ratio <= target else 'NOT met'} {ma_rss:>9.0f} {mb_rss:>14.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(quick="--quick" in sys.argv))
