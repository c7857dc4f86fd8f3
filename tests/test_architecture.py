"""The package's shape: no import cycles, no module named like a public function, real signatures.

The import walk reads every ``import``/``from … import`` statement at any depth (function-level
imports included) and every ``importlib.import_module("literal")`` call, so a cycle hidden behind a
lazy import still fails here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import networkx as nx
import pytest

import trtlab

PACKAGE = Path(trtlab.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> Dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}


def _resolve(current: str, is_package: bool, level: int, name: str) -> str:
    if level == 0:
        return name
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def import_graph() -> nx.DiGraph:
    """Directed graph module -> trtlab module it imports (at any depth in the file)."""
    modules = _modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node.level, node.module or "")
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr == "import_module" and node.args
                  and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                targets = [node.args[0].value]
            for target in targets:
                while target and target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != name and target.startswith("trtlab"):
                    graph.add_edge(name, target)
    return graph


def test_the_walk_sees_function_level_imports():
    graph = import_graph()
    assert graph.number_of_edges() > 100
    # codegen imports the runtime inside build(): the walk must see it
    assert graph.has_edge("trtlab.codegen", "trtlab.runtime")


def test_no_import_cycles_among_trtlab_modules():
    cycles = list(nx.simple_cycles(import_graph()))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c + [c[0]]) for c in cycles[:10])


def test_no_module_shares_its_name_with_a_public_function():
    public = {name for name in trtlab.__all__ if callable(getattr(trtlab, name))}
    clashes = sorted(m for m in _modules() if m.rsplit(".", 1)[-1] in public)
    assert not clashes


def test_public_names_keep_their_signature_whatever_was_imported():
    code = (
        "import importlib, inspect, pkgutil, trtlab\n"
        "for m in pkgutil.walk_packages(trtlab.__path__, 'trtlab.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "for name in ('build', 'partition', 'compare', 'fusion', 'check_support', 'explore'):\n"
        "    f = getattr(trtlab, name)\n"
        "    assert inspect.isfunction(f), (name, f)\n"
        "    assert '*args' not in str(inspect.signature(f)), name\n"
        "print(inspect.signature(trtlab.build))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "precision" in out.stdout and "partition" in out.stdout


@pytest.mark.parametrize("name", sorted(trtlab.__all__))
def test_every_public_name_resolves(name: str):
    assert getattr(trtlab, name) is not None
