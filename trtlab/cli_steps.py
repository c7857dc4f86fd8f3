"""Pipeline subcommands of the ``trtlab`` command (partition, build, bench, report, demo)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(sub: Any) -> None:
    """Register the pipeline subcommands on an argparse subparsers object."""
