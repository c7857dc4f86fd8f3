"""Start-up cost: importing trtlab's analysis steps and ``trtlab info`` vs Polygraphy's equivalents.

Each command runs in a fresh process (median of ``RUNS``), both sides in the same run of this
script. Targets (ratio trtlab / Polygraphy): import of the analysis steps <= 1.2x importing
Polygraphy's capability tool; the CLI start (``trtlab partition --help``) <= 1.2x ``polygraphy inspect capability --help``.

Run: ``.venv/bin/python benchmarks/startup.py [--quick]``
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 7

PAIRS = [
    ("import analysis steps",
     [sys.executable, "-c", "import trtlab; trtlab.check_support; trtlab.partition; trtlab.load"],
     [sys.executable, "-c", "import polygraphy.tools.inspect.subtool.capability"], 1.2),
    ("CLI start (partition --help)",
     [sys.executable, "-m", "trtlab.cli", "partition", "--help"],
     [str(Path(sys.executable).parent / "polygraphy"), "inspect", "capability", "--help"], 1.2),
]


def _time(cmd: list) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def main(quick: bool = False) -> int:
    runs = 3 if quick else RUNS
    print(f"{'what':<28} {'trtlab s':>9} {'polygraphy s':>13} {'ratio':>6} {'target':>7}")
    for what, ours, theirs, target in PAIRS:
        a, b = [], []
        for _ in range(runs):  # paired, alternating
            a.append(_time(ours))
            b.append(_time(theirs))
        ma, mb = statistics.median(a), statistics.median(b)
        ratio = ma / mb
        print(f"{what:<28} {ma:>9.3f} {mb:>13.3f} {ratio:>6.2f} {target:>6.1f}x "
              f"{'met' if ratio <= target else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(quick="--quick" in sys.argv))
