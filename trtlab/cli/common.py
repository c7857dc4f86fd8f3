"""What every CLI command shares: exit codes, JSON output."""

from __future__ import annotations

import argparse
import json
from typing import Any, Mapping, Sequence

from trtlab.errors import MissingDependencyError, TrtlabError

EXIT_OK = 0
EXIT_STEPS_FAILED = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_RUNTIME = 4
EXIT_MISSING_DEPENDENCY = 5
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


def exit_code(exc: BaseException) -> int:
    """The documented exit code for an exception that ended a command."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, MissingDependencyError):
        return EXIT_MISSING_DEPENDENCY
    if isinstance(exc, TrtlabError):
        return EXIT_INPUT if isinstance(exc, (ValueError, FileNotFoundError)) else EXIT_RUNTIME
    if isinstance(exc, OSError):  # the file system refused (permissions, disk full)
        return EXIT_RUNTIME
    return EXIT_INTERNAL


def print_json(value: Any) -> None:
    """Write ``value`` as one JSON document on stdout."""
    print(json.dumps(value, indent=2, default=str))


def records(table: Any) -> list:
    """A DataFrame (or an object with ``.frame``) as a list of JSON-ready row dicts."""
    frame = getattr(table, "frame", table)
    return json.loads(frame.to_json(orient="records", default_handler=str))


def format_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of plain values as a text table (right-aligned columns, ``-`` for a missing value),
    for commands that print a table without building a DataFrame."""
    cells = [[str(c) for c in columns]]
    cells += [["-" if r.get(c) is None else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths)).rstrip() for row in cells)


def json_option(s: argparse.ArgumentParser) -> None:
    s.add_argument("--json", action="store_true", help="print one JSON document instead of tables")

