"""Execute every notebook in notebooks/ top to bottom and check what it prints and draws.

Each notebook runs in a fresh ``python3`` kernel with the working directory set to
``notebooks/``, progress bars off, the Agg backend and a private engine cache. A cell error fails
the test. Notebooks print checkable lines (counts taken from the figures they draw), which the
tests read back. Notebooks committed with outputs (by scripts/execute_notebooks.py) must match
the fresh run structurally: the same outputs, of the same kinds, cell by cell.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
EXPECTED = [
    "01_import_and_view",
    "02_support_and_partition",
    "03_build_and_run_hybrid",
    "04_layer_fusion",
    "05_precision_study",
    "06_latency",
    "07_write_your_own_backend",
    "08_precision_sweep",
]
#: Notebooks that parse or build with TensorRT (TensorRT-RTX does both without a GPU).
NEEDS_TENSORRT = {"02_support_and_partition", "03_build_and_run_hybrid", "04_layer_fusion",
                  "05_precision_study", "06_latency"}
CELL_TIMEOUT_S = 240

pytestmark = pytest.mark.notebook

def _tensorrt_builds() -> bool:
    from trtlab.backends.tensorrt import flavor as trt

    return bool(trt.info().build)


def _execute(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> "nbformat.NotebookNode":
    if name in NEEDS_TENSORRT and not _tensorrt_builds():
        pytest.skip(f"{name} parses and builds with TensorRT; no TensorRT that can build is installed")
    monkeypatch.setenv("TRTLAB_PROGRESS", "0")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TRTLAB_CACHE_DIR", str(tmp_path / "cache"))
    nb = nbformat.read(str(NOTEBOOKS / f"{name}.ipynb"), as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # the time budget is measured by benchmarks/notebook_time.py
    _assert_matches_committed(name, nb)
    return nb


def _structure(nb: "nbformat.NotebookNode") -> List[List[tuple]]:
    """Per code cell, the kind of each output: stream name, or the MIME types of a display.
    Warnings (stderr) depend on the machine and are left out."""
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kinds = []
        for out in cell.get("outputs", []):
            if out["output_type"] == "stream":
                if out["name"] == "stderr":
                    continue
                kind = ("stream", out["name"])
            else:
                kind = (out["output_type"], tuple(sorted(out.get("data", {}))))
            if not kinds or kinds[-1] != kind or kind[0] != "stream":
                kinds.append(kind)
        cells.append(kinds)
    return cells


def _committed_with_outputs(nb: "nbformat.NotebookNode") -> bool:
    return nb.metadata.get("trtlab", {}).get("executed_by") == "scripts/execute_notebooks.py"


def _assert_matches_committed(name: str, fresh: "nbformat.NotebookNode") -> None:
    committed = nbformat.read(str(NOTEBOOKS / f"{name}.ipynb"), as_version=4)
    if not _committed_with_outputs(committed):
        return
    want, got = _structure(committed), _structure(fresh)
    assert len(want) == len(got)
    for i, (w, g) in enumerate(zip(want, got)):
        assert w == g, (f"{name}: code cell {i} shows {g} in a fresh run but {w} in the committed "
                        "notebook; run python scripts/execute_notebooks.py and commit the result")


def _outputs(nb: "nbformat.NotebookNode") -> List[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


def _printed(nb: "nbformat.NotebookNode") -> str:
    return "".join(out.get("text", "") for out in _outputs(nb) if out.get("output_type") == "stream")


def _images(nb: "nbformat.NotebookNode") -> int:
    return sum("image/png" in out.get("data", {}) for out in _outputs(nb))


def _line(text: str, pattern: str) -> "re.Match[str]":
    match = re.search(pattern, text)
    assert match, f"no line matching {pattern!r} in the notebook's printed output:\n{text[-2000:]}"
    return match


def test_notebook_set_is_complete_and_outputs_come_from_the_script():
    found = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert found == EXPECTED
    for name in EXPECTED:
        nb = nbformat.read(str(NOTEBOOKS / f"{name}.ipynb"), as_version=4)
        nbformat.validate(nb)
        assert nb.metadata["kernelspec"]["name"] == "python3"
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code
        if _committed_with_outputs(nb):
            # Executed top to bottom in one run, without per-cell timings.
            assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), name
            assert not any("execution" in c.metadata for c in code), name
        else:
            assert all(not c.outputs and c.execution_count is None for c in code), name
        assert sum(c.cell_type == "markdown" for c in nb.cells) >= 4, f"{name} needs prose between cells"
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(f"# {name[:2]}")


def test_01_import_and_view(tmp_path, monkeypatch):
    nb = _execute("01_import_and_view", tmp_path, monkeypatch)
    text = _printed(nb)
    m = _line(text, r"drawn nodes: (\d+), view: (\w+), inputs: (\d+), outputs: (\d+)")
    assert (int(m[1]), m[2], int(m[3]), int(m[4])) == (32, "full", 1, 1)
    assert _line(text, r"(\d+) nodes, (\d+) edges")[1] == "32"
    assert _images(nb) >= 2


def test_02_support_and_partition(tmp_path, monkeypatch):
    nb = _execute("02_support_and_partition", tmp_path, monkeypatch)
    text = _printed(nb)
    m = _line(text, r"coloured segments drawn: (\d+) of (\d+); distinct colours: (\d+) \((\d+) tensorrt "
                    r"\+ fallback grey\); node boxes: (\d+) of (\d+)")
    drawn, segments, colours, n_trt, boxes, nodes = map(int, m.groups())
    assert drawn == segments >= 3
    assert colours == n_trt + 1
    assert boxes == nodes == 30
    assert "segments reproduce outputs: det_boxes" in text
    m = _line(text, r"cut tensors: (\d+), with a size: (\d+)")
    assert int(m[1]) == int(m[2]) >= 5                      # every cut has a size
    assert _line(text, r"Partition\('transformer_large': (\d+) segments.*\| view: (\w+)")[2] == "condensed"
    m = _line(text, r"overlay: (\d+) nodes, (\d+) colours")
    assert int(m[1]) == 2209 and int(m[2]) > 18
    assert _images(nb) >= 3


def test_03_build_and_run_hybrid(tmp_path, monkeypatch):
    from trtlab.backends.tensorrt import flavor as trt

    nb = _execute("03_build_and_run_hybrid", tmp_path, monkeypatch)
    text = _printed(nb)
    expected = "tensorrt" if trt.info().run else "onnxruntime"
    assert _line(text, r"tensorrt segments run by: ([\w, ]+)")[1].strip() == expected
    assert _line(text, r"cache status: (\{.*\})")[1] == "{'trt_0': 'hit', 'trt_2': 'hit'}"
    assert float(_line(text, r"max \|hybrid - onnxruntime\|: ([\d.e-]+)")[1]) < 1e-4
    assert float(_line(text, r"accuracy on 64 test images: ([\d.]+)")[1]) > 0.9
    assert "polygraphy comparison passed: True" in text
    assert "built before the first run: False" in text
    assert "built after the first run: True | profile: input: [8, 1, 8, 8]" in text
    assert _images(nb) >= 1


def test_04_layer_fusion(tmp_path, monkeypatch):
    nb = _execute("04_layer_fusion", tmp_path, monkeypatch)
    text = _printed(nb)
    m = _line(text, r"fusion groups outlined: (\d+) of (\d+) predicted")
    assert int(m[1]) == int(m[2]) > 0
    assert "pre-fusion |" in text
    assert _images(nb) >= 3
    relu = _line(text, r"Relu: (\d+) nodes, (\d+) own layer, (\d+) absorbed")
    assert int(relu[3]) == int(relu[1]) > 0  # the before/after shows the fusion
    assert "slowest-layers plot sorted: True" in text
    assert "report card panels: 6" in text
    assert int(_line(text, r"aligned layers: \d+ \((\d+)% of")[1]) > 80


def test_05_precision_study(tmp_path, monkeypatch):
    nb = _execute("05_precision_study", tmp_path, monkeypatch)
    text = _printed(nb)
    fp32 = float(_line(text, r"FP32 accuracy ([\d.]+)")[1])
    bad = float(_line(text, r"int8 bad calib: accuracy ([\d.]+)")[1])
    mixed = float(_line(text, r"int8 bad calib \+ fp32 suspects: accuracy ([\d.]+)")[1])
    good = float(_line(text, r"int8 good calib: accuracy ([\d.]+)")[1])
    assert fp32 > 0.95 and good > fp32 - 0.02
    assert bad < fp32 - 0.2 and mixed > bad + 0.2
    assert "suggested FP32 nodes: ['/conv1/Conv']" in text
    assert float(_line(text, r"per-segment mixed precision: accuracy ([\d.]+)")[1]) > 0.95
    assert _images(nb) >= 1
    # Latency from warm repeated runs, in its own panel (the table has its spread).
    tables = "".join(out.get("data", {}).get("text/html", "") for out in _outputs(nb))
    assert "latency_p90_ms" in tables and "latency_cv" in tables and "pass_rule" in tables


def test_06_latency(tmp_path, monkeypatch):
    nb = _execute("06_latency", tmp_path, monkeypatch)
    text = _printed(nb)
    for label in ("onnxruntime", "1 segment", "cut"):
        assert re.search(rf"{label}: median [\d.]+ ms", text), label
    assert _images(nb) >= 3
    source = "".join(c.source for c in nb.cells)
    assert "catch_warnings" not in source and "simplefilter" not in source  # noise stays visible


def test_07_write_your_own_backend(tmp_path, monkeypatch):
    nb = _execute("07_write_your_own_backend", tmp_path, monkeypatch)
    text = _printed(nb)
    assert "implements the Backend protocol: True" in text
    assert float(_line(text, r"max \|numpy hybrid - onnxruntime\| = ([\d.e+-]+)")[1]) < 1e-4
    m = _line(text, r"numpy segments drawn: (\d+) of (\d+)")
    assert int(m[1]) == int(m[2]) > 0
    assert re.search(r"numpy\s+[\d.]+", text)
    assert "build() moved 4 node(s) to fallback" in text and "no NumPy kernel for Erf" in text
    assert len(re.findall(r"layer\d/mlp/gelu/erf\s+Erf numpy build failed", text)) == 4
    assert _images(nb) >= 2


def test_08_precision_sweep(tmp_path, monkeypatch):
    nb = _execute("08_precision_sweep", tmp_path, monkeypatch)
    text = _printed(nb)
    assert _line(text, r"Dask dashboard: (\S+)")[1].startswith("http")
    assert tuple(map(int, _line(text, r"jobs: (\d+), computed: (\d+), failed: (\d+)").groups())) == (24, 24, 0)
    m = _line(text, r"digits_cnn fp32 top1 ([\d.]+); best int8: .* ([\d.]+); worst int8: .* ([\d.]+)")
    fp32, best, worst = map(float, m.groups())
    assert fp32 > 0.95 and best >= worst > fp32 - 0.05
    assert _line(text, r"points drawn: (\d+) of (\d+)").groups() == ("48", "48")
    assert _line(text, r"rerun computed: (\d+), read from disk: (\d+)").groups() == ("0", "24")
    assert _line(text, r"rows in the sweep folder: (\d+)")[1] == "24"
    assert _images(nb) >= 2
