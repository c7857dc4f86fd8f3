"""Modules imported on first use (trtlab._lazy), and what the analysis steps import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trtlab._lazy import LazyModule, lazy_import

HEAVY = ("onnx", "numpy", "pandas", "networkx", "matplotlib")


def _fresh(code: str) -> dict:
    """Run ``code`` in a new interpreter; it prints one JSON document as its last line."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_lazy_module_imports_at_the_first_attribute_read():
    found = _fresh(
        "import json, sys\n"
        "from trtlab._lazy import lazy_import\n"
        "pd = lazy_import('pandas')\n"
        "before = 'pandas' in sys.modules\n"
        "frame = pd.DataFrame({'a': [1, 2]})\n"
        "print(json.dumps([before, 'pandas' in sys.modules, int(frame['a'].sum()), repr(pd)]))\n")
    assert found[:3] == [False, True, 3]
    assert "loaded" in found[3] and "not" not in found[3]


def test_a_lazy_submodule_and_attributes_added_later():
    helper = lazy_import("onnx.helper")
    node = helper.make_node("Relu", ["x"], ["y"], name="r")
    assert node.op_type == "Relu"
    onnx = lazy_import("onnx")
    assert onnx.TensorProto.FLOAT == 1
    import onnx.numpy_helper  # noqa: F401  (an attribute of onnx the stand-in did not copy)

    assert onnx.numpy_helper.to_array(onnx.numpy_helper.from_array(__import__("numpy").ones(2))).sum() == 2


def test_a_missing_module_fails_at_first_use_with_its_name():
    missing = lazy_import("trtlab_no_such_module")
    assert isinstance(missing, LazyModule) and "not loaded yet" in repr(missing)
    with pytest.raises(ModuleNotFoundError, match="trtlab_no_such_module"):
        missing.anything


def test_importing_the_analysis_steps_loads_no_heavy_module():
    loaded = _fresh(
        "import json, sys, trtlab\n"
        "trtlab.check_support; trtlab.partition; trtlab.load; trtlab.Model; trtlab.SupportTable\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n")
    assert loaded == []


def test_the_cli_parser_loads_no_heavy_module():
    loaded = _fresh(
        "import json, sys\n"
        "from trtlab.cli.main import parser\n"
        "parser().parse_args(['partition', 'm.onnx', '--out', 'o'])\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n")
    assert loaded == []


def test_a_deferred_field_is_computed_once_when_first_read():
    """A Deferred dataclass field given as Later(fn) calls fn on the first read only; a plain
    value is kept as given; the field stays required; copies hold the value (pickles: see the
    partition and parser tests)."""
    import copy
    import dataclasses

    from trtlab._lazy import Deferred, Later, resolved_state

    @dataclasses.dataclass(frozen=True)
    class Box:
        name: str
        size: int = Deferred()  # type: ignore[assignment]
        __getstate__ = resolved_state

    calls = []
    box = Box("a", Later(lambda: calls.append(1) or 7))
    assert calls == []
    assert repr(box).endswith("Box(name='a', size=7)") and calls == [1]
    assert box.size == 7 and calls == [1]
    assert Box("b", 3).size == 3
    assert copy.deepcopy(Box("c", Later(lambda: 5))).__dict__ == {"name": "c", "size": 5}
    with pytest.raises(TypeError):
        Box("d")
    with pytest.raises(dataclasses.FrozenInstanceError):
        box.size = 1
    assert Box("e", 4) == Box("e", Later(lambda: 4))
    assert resolved_state(Box("f", Later(lambda: 6))) == {"name": "f", "size": 6}
