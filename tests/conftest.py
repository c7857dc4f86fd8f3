"""Shared fixtures: paths, the zoo, a non-interactive matplotlib backend."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TRTLAB_PROGRESS", "0")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


def zoo_models() -> list:
    """Paths of every shipped zoo model."""
    return sorted(DATA.glob("*.onnx"))


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch) -> Path:
    """A private engine cache folder."""
    d = tmp_path / "cache"
    monkeypatch.setenv("TRTLAB_CACHE_DIR", str(d))
    return d


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--quick", action="store_true", default=False,
                     help="run slow tiers (conformance) on their quick subset")
