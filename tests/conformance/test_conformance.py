"""The conformance tier: the ONNX backend test suite through load → check_support → partition →
build → run, to_fp16 and quantize_int8 (see ``conformance_suite.py`` for the stages).

The whole suite (2,033 cases) runs in a pool of two spawned worker processes, one case at a
time with a timeout. ``pytest --quick`` or ``TRTLAB_CONFORMANCE=quick`` runs a deterministic
subset of about a tenth (213 cases) with the same thresholds. The counts are printed and written
to ``build/conformance/summary.txt`` (every case's stages in ``results.json``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import conformance_suite as suite

pytestmark = pytest.mark.conformance

ROOT = Path(__file__).resolve().parents[2]


def _quick(config: pytest.Config) -> bool:
    return bool(config.getoption("--quick", default=False)) or \
        os.environ.get("TRTLAB_CONFORMANCE", "").strip().lower() == "quick"


@pytest.fixture(scope="module")
def summary(request: pytest.FixtureRequest) -> suite.Summary:
    quick = _quick(request.config)
    ids = suite.case_ids()
    if quick:
        ids = suite.quick_ids(ids)
    workers = int(os.environ.get("TRTLAB_CONFORMANCE_WORKERS", "2"))
    results = suite.run_all(ids, workers=workers)
    s = suite.summarize(results)
    s.quick = quick  # type: ignore[attr-defined]
    out = ROOT / "build" / "conformance"
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.txt").write_text(s.text() + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        for line in s.text().splitlines()[:16]:
            reporter.write_line(line)
    return s


def test_the_whole_suite_ran(summary):
    assert summary.cases >= (150 if getattr(summary, "quick", False) else 2000)
    assert summary.ort_pass > 0.7 * summary.cases


def test_no_loaded_model_changes_what_it_computes(summary):
    bad = summary.failures.get("load", [])
    assert summary.load_differs == 0, [r for r in bad if r[1] == "differs"][:10]


def test_no_native_crash_or_hang(summary):
    crashed = [r for rows in summary.failures.values() for r in rows if r[1] == "crash"]
    assert summary.crashes == 0, crashed[:10]


def test_no_wrong_values(summary):
    wrong = [r for r in summary.failures.get("hybrid", []) if r[1] == "wrong"]
    assert summary.wrong == 0, wrong[:10]


def test_every_failure_is_a_clear_trtlab_error(summary):
    raw = [r for rows in summary.failures.values() for r in rows if r[1] == "raw_error"]
    assert summary.raw_errors == 0, raw[:10]


def test_hybrid_passes_99_percent_of_what_onnxruntime_passes(summary):
    assert summary.hybrid_rate >= 0.99, summary.failures.get("hybrid", [])[:20]


def test_rules_agree_with_the_parser_on_995_permille_of_nodes(summary):
    assert summary.agreement >= 0.995, summary.disagreements[:20]


def test_fp16_within_tolerance_on_99_percent(summary):
    assert summary.fp16_rate >= 0.99, summary.failures.get("fp16", [])[:20]


def test_int8_valid_and_runnable_on_99_percent(summary):
    assert summary.int8_rate >= 0.99, summary.failures.get("int8", [])[:20]
