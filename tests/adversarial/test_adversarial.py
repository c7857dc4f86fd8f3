"""The adversarial suite under pytest: every case of ``adversarial_cases.py`` must pass.

The cases run once per session in a fresh runner process (``adversarial_runner.py``), which
forks one child per case with its timeout; each test below reports one case. Set
``TRTLAB_ADVERSARIAL=quick`` to leave out the cases that build engines or run the whole report
pipeline (about 30 s for all cases on two cores, about 20 s quick).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import adversarial_cases as C  # noqa: E402

QUICK = os.environ.get("TRTLAB_ADVERSARIAL", "").lower() == "quick"
SELECTED = [c.name for c in C.CASES.values() if c.quick or not QUICK]


@pytest.fixture(scope="session")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("adversarial") / "results.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(HERE.parent.parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    budget = sum(C.CASES[n].timeout for n in SELECTED) + 60
    proc = subprocess.run([sys.executable, str(HERE / "adversarial_runner.py"), "--json", str(out), *SELECTED],
                          env=env, capture_output=True, text=True, timeout=budget)
    if not out.exists():
        pytest.fail(f"the adversarial runner wrote no results (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    print(proc.stdout)
    return {r["name"]: r for r in json.loads(out.read_text())}


@pytest.mark.parametrize("name", SELECTED)
def test_case(results, name):
    r = results[name]
    assert r["outcome"] == "pass", f"{name} [{r['cls']}]: {r['outcome']}\n{r['detail']}"


def test_no_hang_crash_or_raw_traceback(results):
    counts = {k: sum(r["outcome"] == k for r in results.values()) for k in
              ("hang", "crash", "raw", "destroyed", "wrong", "bad_error")}
    assert counts == dict.fromkeys(counts, 0), counts


def test_every_class_has_cases():
    classes = {c.cls for c in C.CASES.values()}
    assert {"atomic-write", "html-escaping", "non-finite-statistics", "output-aliasing",
            "fusion-json-validation", "non-regular-files", "engine-cache", "cli-input-validation",
            "runtime-failures", "partition-json-validation", "calibration-cache", "clear-messages",
            "resource-limits", "entry-point-validation"} <= classes
    assert len(C.CASES) >= 160
