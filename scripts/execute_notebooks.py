"""Execute the notebooks and commit-ready save them with their outputs.

A visitor browsing the repository sees every table and picture without running anything. The
run is made stable: progress bars off, a fixed hash seed, a private engine cache, widget state
stored (a reopened notebook shows the explorer's last picture), and no per-cell timing
metadata. tests/test_notebooks.py executes the notebooks again and checks that the committed
outputs match a fresh run structurally (the same outputs, of the same kinds, cell by cell).

Usage::

    python scripts/execute_notebooks.py                       # every notebook in notebooks/
    python scripts/execute_notebooks.py notebooks/02_*.ipynb   # some of them
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, List

import nbclient
import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CELL_TIMEOUT_S = 600
MARK = {"executed_by": "scripts/execute_notebooks.py"}


def environment(cache_dir: str) -> dict:
    """The variables a stable run sets (the kernel inherits them)."""
    return {"TRTLAB_PROGRESS": "0", "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0",
            "TRTLAB_CACHE_DIR": cache_dir}


def execute(path: Path, *, timeout: int = CELL_TIMEOUT_S) -> Any:
    """Run ``path`` top to bottom in a fresh ``python3`` kernel; return the executed notebook."""
    nb = nbformat.read(str(path), as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=timeout,
                                     store_widget_state=True, record_timing=False,
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    return nb


def clean(nb: Any) -> Any:
    """Drop what changes from run to run without meaning anything (timings, kernel ids)."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("collapsed", None)
    nb.metadata["trtlab"] = dict(MARK)
    return nb


def write(nb: Any, path: Path) -> None:
    """Write ``nb`` to ``path`` atomically (temp file, fsync, rename)."""
    nbformat.validate(nb)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            nbformat.write(nb, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    args = ap.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or sorted(NOTEBOOKS.glob("*.ipynb"))
    with tempfile.TemporaryDirectory() as cache:
        os.environ.update(environment(cache))
        for path in paths:
            start = time.perf_counter()
            try:
                nb = execute(path)
            except nbclient.exceptions.CellExecutionError as exc:
                print(f"{path.name}: a cell failed; the notebook was not written.\n{exc}",
                      file=sys.stderr)
                return 1
            write(clean(nb), path)
            size = path.stat().st_size / 1e6
            print(f"{path.name:40s} {time.perf_counter() - start:6.1f} s  {size:5.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
