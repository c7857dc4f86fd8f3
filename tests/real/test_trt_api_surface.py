"""Every TensorRT name trtlab uses exists in TensorRT 10.1, the latest 10.x, the latest 11.x and
TensorRT-RTX 1.x; every Polygraphy TensorRT call it makes exists in Polygraphy 0.49.24 (the floor
in pyproject.toml) and in the installed Polygraphy, with the keyword arguments trtlab passes.

The TensorRT Python bindings are real wheels on PyPI (``tensorrt-cu12-bindings``,
``tensorrt-cu13-bindings``, ``tensorrt-rtx-cu13-bindings``) even where the TensorRT libraries they
load cannot be installed. The extension module is read, not imported: pybind11 registers every
class, method, property and enum value under a NUL-terminated name in the ``.so``; those strings,
and the names the package's ``__init__.py`` defines, are the surface checked.

trtlab's names are collected from its source by AST: ``trt.X.Y`` attribute chains on the TensorRT
module in ``trtlab/backends/tensorrt/``, methods called on TensorRT objects (parser, builder,
network, runtime, inspector, execution context), names read with ``getattr(obj, "name")`` (with a
default: optional, reported but not required), plus the engine methods Polygraphy's ``TrtRunner``
path relies on. Polygraphy calls are the ``ptrt.X(...)`` calls and their keyword arguments.

Downloads: five wheels, 5.3 MB in all, cached with their sha256 in ``build/trt_wheels``. Measured
on the 2-core development machine: 16 s for the three tests on the first run (downloads
included), 7 s from the cache (reading the strings of four 5 MB extension modules).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Set, Tuple

import pytest

import fetch_real_models as frm

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "trtlab" / "backends" / "tensorrt"
CACHE = ROOT / "build" / "trt_wheels"

pytestmark = pytest.mark.real


@dataclass(frozen=True)
class Wheel:
    label: str
    package: str
    version: str
    filename: str
    sha256: str
    module: str  # the bindings package inside the wheel


#: cp311 manylinux wheels (any platform's wheel registers the same names; none is imported).
TENSORRT_WHEELS = [
    Wheel("TensorRT 10.1", "tensorrt-cu12-bindings", "10.1.0",
          "tensorrt_cu12_bindings-10.1.0-cp311-none-manylinux_2_17_x86_64.whl",
          "9eb2ecbb403ac77161f01911284b1f3ce6b16d72992d2e2ee6f94b19dfb49732", "tensorrt_bindings"),
    Wheel("TensorRT 10.16 (latest 10.x)", "tensorrt-cu12-bindings", "10.16.1.11",
          "tensorrt_cu12_bindings-10.16.1.11-cp311-none-manylinux_2_28_x86_64.whl",
          "150ef2b672487e29a8ea916353467c3e199994fb33589167e3641a928e243aa7", "tensorrt_bindings"),
    Wheel("TensorRT 11.4 (latest 11.x)", "tensorrt-cu13-bindings", "11.4.0.106",
          "tensorrt_cu13_bindings-11.4.0.106-cp311-none-manylinux_2_28_x86_64.whl",
          "d072ac2a095e2be749fefc847adfb25d5ebe70303401df62ede8fe67a59f27fc", "tensorrt_bindings"),
    Wheel("TensorRT-RTX 1.7", "tensorrt-rtx-cu13-bindings", "1.7.1.116",
          "tensorrt_rtx_cu13_bindings-1.7.1.116-cp311-none-manylinux_2_28_x86_64.whl",
          "6a4d2bf39a98b71238046b9a9dd22d0e6b146be90cd56ac09f1e068933e4e18d", "tensorrt_rtx_bindings"),
]
POLYGRAPHY_FLOOR = Wheel("Polygraphy 0.49.24", "polygraphy", "0.49.24",
                         "polygraphy-0.49.24-py2.py3-none-any.whl",
                         "1e5964a24af34d21b1f2f1817536b54625ac8c7fd7464d567d0a4fbae9cff8cc", "polygraphy")

#: Names of the TensorRT module used through names other than ``trt`` in trtlab's source.
TRT_MODULE_NAMES = {"trt", "trt_mod", "trt_module"}
#: Variables holding TensorRT objects whose methods trtlab calls.
TRT_OBJECTS = {"parser", "builder", "network", "inspector", "runtime", "context", "engine_obj"}
#: Engine methods trtlab relies on through Polygraphy's TrtRunner path (device residency asks the
#: engine which inputs are shape tensors).
RUNNER_PATH = {"is_shape_inference_io", "get_tensor_name", "num_io_tensors", "get_tensor_mode"}
#: Names only TensorRT-RTX must have: trtlab reaches them behind a ``getattr`` / ``hasattr`` check.
RTX_ONLY = {"get_engine_validity", "create_runtime_config", "create_runtime_cache", "set_runtime_cache",
            "ComputeCapability"}
#: Other variables holding TensorRT objects or classes that trtlab probes with getattr/hasattr.
TRT_CHECKED = {"engine", "config", "runtime_cls", "strongly"}
_PLAIN_METHODS = {"get", "items", "keys", "values", "append", "extend", "update", "pop", "copy"}


# -- downloads ------------------------------------------------------------------------------------
def fetch(wheel: Wheel) -> Path:
    """The verified wheel in the cache, downloaded with ``pip download --no-deps`` when missing."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / wheel.filename
    if path.is_file() and frm.sha256_of(path) == wheel.sha256:
        return path
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.11", "--implementation", "cp",
           "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
           "--platform", "any", "--disable-pip-version-check", "--retries", "1", "--timeout", "30",
           "-d", str(CACHE), f"{wheel.package}=={wheel.version}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as exc:
        raise frm.RegistryUnavailableError(f"pip download {wheel.package}=={wheel.version} timed out") from exc
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        cls = frm.RegistryUnavailableError if any(m in output for m in frm._NETWORK_MARKERS) else frm.FetchError
        raise cls(f"pip download {wheel.package}=={wheel.version} failed:\n{output[-1500:]}")
    if not path.is_file():
        raise frm.FetchError(f"pip download gave no {wheel.filename} in {CACHE} "
                             f"(found {sorted(p.name for p in CACHE.glob('*.whl'))})")
    got = frm.sha256_of(path)
    if got != wheel.sha256:
        path.unlink()
        raise frm.FetchError(f"{wheel.filename}: sha256 {got}, pinned {wheel.sha256}")
    return path


@pytest.fixture(scope="module")
def wheels() -> Dict[str, Path]:
    try:
        return {w.label: fetch(w) for w in TENSORRT_WHEELS + [POLYGRAPHY_FLOOR]}
    except frm.RegistryUnavailableError as exc:
        pytest.skip(f"package registry unreachable, TensorRT bindings wheels not downloaded: {exc}")


# -- the names a bindings wheel registers -----------------------------------------------------------
_IDENT = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")


class Surface:
    """Names registered by a TensorRT bindings wheel, read without importing it."""

    def __init__(self, wheel_path: Path, module: str) -> None:
        self.exact: Set[str] = set()
        self.strings: List[str] = []
        with zipfile.ZipFile(wheel_path) as zf:
            for name in zf.namelist():
                if not name.startswith(module + "/"):
                    continue
                data = zf.read(name)
                if name.endswith(".so") or name.endswith(".pyd"):
                    for chunk in data.split(b"\0"):
                        if _IDENT.fullmatch(chunk):
                            self.exact.add(chunk.decode())
                        if 0 < len(chunk) < 200:
                            self.strings.append(chunk.decode("latin-1"))
                elif name == f"{module}/__init__.py":
                    self.exact |= _defined_names(data.decode())

    def has(self, name: str) -> bool:
        # the linker stores a name that is the tail of a longer string once, inside that string
        # ("IBuilder\0" also holds "Builder\0"), so a tail match is a registered name too
        return name in self.exact or any(s.endswith(name) for s in self.strings)


def _defined_names(source: str) -> Set[str]:
    names: Set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
    return names


# -- the names trtlab uses ---------------------------------------------------------------------
def _flavor_names() -> Set[str]:
    tree = ast.parse((SOURCE / "flavor.py").read_text())
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    for n in tree.body:
        if isinstance(n, (ast.Assign, ast.AnnAssign)):
            targets = n.targets if isinstance(n, ast.Assign) else [n.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def _chain(node: ast.AST) -> List[str]:
    parts: List[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return []


def _module_aliases(tree: ast.AST) -> Set[str]:
    """Names bound to the TensorRT module in a file: ``t = trt.module()``, ``mod = _trt.module()``."""
    found: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called == "module":
                found |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return found


def trtlab_names() -> Tuple[Dict[str, Set[str]], Dict[str, Set[str]]]:
    """(required, optional): TensorRT name -> trtlab files using it."""
    flavor_api = _flavor_names()
    required: Dict[str, Set[str]] = {}
    optional: Dict[str, Set[str]] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text())
        aliases = TRT_MODULE_NAMES | _module_aliases(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and not isinstance(getattr(node, "ctx", None), ast.Store):
                chain = _chain(node)
                if len(chain) >= 2 and chain[0] in aliases and chain[1] not in flavor_api:
                    for part in chain[1:3]:
                        if not part.startswith("__"):
                            required.setdefault(part, set()).add(rel)
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
                        and func.value.id in TRT_OBJECTS and func.attr not in _PLAIN_METHODS:
                    required.setdefault(func.attr, set()).add(rel)
                if isinstance(func, ast.Name) and func.id in ("getattr", "hasattr") and len(node.args) >= 2 \
                        and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                    target = node.args[0]
                    while isinstance(target, ast.Call) and getattr(target.func, "id", "") == "getattr":
                        target = target.args[0]
                    root = _chain(target)[:1] or ([target.id] if isinstance(target, ast.Name) else [])
                    if not root or root[0] not in aliases | TRT_OBJECTS | TRT_CHECKED:
                        continue
                    name = node.args[1].value
                    table = optional if (func.id == "hasattr" or len(node.args) == 3) else required
                    table.setdefault(name, set()).add(rel)
    # a name reached behind a getattr/hasattr check is optional wherever it is then called
    for name in set(optional) & set(required):
        required[name] |= optional.pop(name) if name in RUNNER_PATH else set()
        if name not in RUNNER_PATH:
            optional[name] |= required.pop(name)
    for name in RUNNER_PATH:
        required.setdefault(name, set()).add("Polygraphy TrtRunner path (device residency)")
        optional.pop(name, None)
    return required, optional


def polygraphy_calls() -> Dict[str, Set[str]]:
    """Polygraphy TensorRT API name -> keyword arguments trtlab passes (``ptrt.X(..., kw=...)``)."""
    calls: Dict[str, Set[str]] = {}
    for path in sorted((ROOT / "trtlab").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "ptrt":
                calls.setdefault(node.func.attr, set()).update(k.arg for k in node.keywords if k.arg)
    calls.setdefault("TrtRunner", set())
    return calls


# -- Polygraphy's surface from its source (for the floor version) --------------------------------
def _backend_trt_sources(location: Path) -> Iterable[str]:
    """Source texts of ``polygraphy/backend/trt/*.py`` in a wheel or an installed package folder."""
    if location.is_dir():
        for path in sorted((location / "backend" / "trt").glob("*.py")):
            yield path.read_text()
        return
    with zipfile.ZipFile(location) as zf:
        for name in zf.namelist():
            if name.startswith("polygraphy/backend/trt/") and name.endswith(".py"):
                yield zf.read(name).decode()


def polygraphy_source_api(location: Path) -> Dict[str, Set[str]]:
    """Class/function in ``polygraphy/backend/trt`` -> parameter names of its constructor/call
    (read from the source: Polygraphy's decorators hide signatures from ``inspect``)."""
    api: Dict[str, Set[str]] = {}
    classes: Dict[str, Tuple[Set[str], List[str], bool]] = {}
    for text in _backend_trt_sources(location):
        for node in ast.parse(text).body:
            if isinstance(node, ast.ClassDef):
                params: Set[str] = set()
                forwards = False
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name in ("__init__", "infer_impl"):
                        params |= {a.arg for a in item.args.args + item.args.kwonlyargs}
                        forwards = forwards or (item.name == "__init__" and item.args.kwarg is not None)
                bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
                classes[node.name] = (params, bases, forwards)
            elif isinstance(node, ast.FunctionDef):
                api[node.name] = {a.arg for a in node.args.args + node.args.kwonlyargs}
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name):  # Loader aliases: engine_from_bytes = func.invoke(...)
                        api.setdefault(t.id, set())

    def resolve(name: str, seen: Tuple[str, ...] = ()) -> Set[str]:
        params, bases, forwards = classes[name]
        out = set(params)
        if forwards:  # __init__(..., **kwargs) hands the rest to the base class
            for base in bases:
                if base in classes and base not in seen:
                    out |= resolve(base, seen + (name,))
        return out

    for name in classes:
        api[name] = resolve(name)
    return api


# -- the tests -------------------------------------------------------------------------------------
def _report(title: str, rows: Iterable[Tuple[str, str, str]]) -> str:
    lines = [title]
    lines += [f"  {a:<34} {b:<30} {c}" for a, b, c in rows]
    return "\n".join(lines)


def test_trtlab_tensorrt_names_exist_in_every_supported_tensorrt(wheels):
    required, optional = trtlab_names()
    assert {"OnnxParser", "Builder", "MemoryPoolType", "WORKSPACE", "IErrorRecorder", "supports_model_v2",
            "get_subgraph_nodes", "is_shape_inference_io"} <= set(required), sorted(required)
    surfaces = {w.label: Surface(wheels[w.label], w.module) for w in TENSORRT_WHEELS}
    missing = []
    rows = []
    for name in sorted(required):
        have = [label for label, s in surfaces.items() if s.has(name)]
        rows.append((name, f"{len(have)}/{len(surfaces)}", ", ".join(sorted(required[name]))[:60]))
        missing += [(name, label) for label in surfaces if label not in have]
    for name in sorted(optional):
        have = [label for label, s in surfaces.items() if s.has(name)]
        rows.append((name, f"optional {len(have)}/{len(surfaces)}", ", ".join(have)))
    text = _report(f"TensorRT names trtlab uses, checked in: {', '.join(surfaces)}", rows)
    print(text)
    (ROOT / "build").mkdir(exist_ok=True)
    (ROOT / "build" / "trt_api_surface.txt").write_text(text + "\n")
    assert not missing, f"TensorRT names trtlab uses that a supported version lacks: {missing}"
    rtx = surfaces["TensorRT-RTX 1.7"]
    assert all(rtx.has(n) for n in RTX_ONLY), [n for n in RTX_ONLY if not rtx.has(n)]


def test_surface_reader_tells_missing_names_apart(wheels):
    """The reader is not vacuous: names added after 10.1 are absent there, present later."""
    old = Surface(wheels["TensorRT 10.1"], "tensorrt_bindings")
    new = Surface(wheels["TensorRT 10.16 (latest 10.x)"], "tensorrt_bindings")
    rtx = Surface(wheels["TensorRT-RTX 1.7"], "tensorrt_rtx_bindings")
    assert not old.has("get_engine_validity") and rtx.has("get_engine_validity")
    assert not old.has("create_runtime_config") and rtx.has("create_runtime_config")
    assert not old.has("NoSuchTensorRTName") and not new.has("NoSuchTensorRTName")
    assert old.has("supports_model_v2") and new.has("IErrorRecorder")


def test_polygraphy_calls_exist_from_the_floor_version_on(wheels):
    calls = polygraphy_calls()
    assert {"NetworkFromOnnxBytes", "CreateConfig", "EngineFromBytes", "Profile",
            "TrtRunner"} <= set(calls), sorted(calls)
    import importlib.util

    import polygraphy.config  # no TensorRT binding: only polygraphy/__init__ and config

    installed_dir = Path(importlib.util.find_spec("polygraphy").origin).parent
    versions = {"0.49.24": polygraphy_source_api(wheels["Polygraphy 0.49.24"]),
                polygraphy.__version__: polygraphy_source_api(installed_dir)}
    problems, rows = [], []
    for name, kwargs in sorted(calls.items()):
        for version, api in versions.items():
            if name not in api:
                problems.append(f"{name} missing in Polygraphy {version}")
            else:
                problems += [f"{name}({k}=) not accepted by Polygraphy {version}" for k in kwargs - api[name]]
        rows.append((name, ", ".join(sorted(kwargs)) or "-", " and ".join(versions)))
    for version, api in versions.items():
        # TrtRunner.infer(copy_outputs_to_host=...) keeps segment outputs on the device
        assert "copy_outputs_to_host" in api["TrtRunner"], version
    assert hasattr(polygraphy.config, "USE_TENSORRT_RTX")
    print(_report("Polygraphy TensorRT calls trtlab makes (keyword arguments), checked in:", rows))
    assert not problems, problems
