"""Execution time of every notebook, against the 5-minute total budget on a 2-core CPU machine.

Each notebook runs top to bottom in a fresh ``python3`` kernel (as tests/test_notebooks.py runs
them), with progress bars off, the Agg backend and a private engine cache.

Usage::

    python benchmarks/notebook_time.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import nbclient
import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
BUDGET_S = 300.0


def main() -> int:
    with tempfile.TemporaryDirectory() as cache:
        os.environ.update(TRTLAB_PROGRESS="0", MPLBACKEND="Agg", TRTLAB_CACHE_DIR=cache)
        total = 0.0
        print(f"{'notebook':32s} {'seconds':>8s}")
        for path in sorted(NOTEBOOKS.glob("*.ipynb")):
            nb = nbformat.read(str(path), as_version=4)
            client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                                             resources={"metadata": {"path": str(NOTEBOOKS)}})
            start = time.perf_counter()
            client.execute()
            elapsed = time.perf_counter() - start
            total += elapsed
            print(f"{path.stem:32s} {elapsed:8.1f}")
    verdict = "met" if total <= BUDGET_S else "NOT met"
    print(f"{'total':32s} {total:8.1f}   (budget {BUDGET_S:.0f} s: {verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
