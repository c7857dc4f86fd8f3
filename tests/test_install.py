"""trtlab as a user gets it: the wheel in a fresh virtual environment, and the sdist.

* The wheel is built from this tree (``pip wheel --no-deps``), installed with only the ``rtx``
  extra into a new virtual environment (no system site-packages, nothing from this tree on
  ``sys.path``), and the README's first session and ``trtlab demo`` run from an empty temporary
  folder.
* The sdist is built (``python -m build --sdist``), unpacked, and part of the test suite runs
  from the unpacked folder; a wheel built from the sdist (what pip does with a source release)
  carries the zoo and the notebooks.

Select with ``pytest -m install``. Installing the wheel's dependencies takes tens of seconds
from pip's cache (a few minutes on a cold cache); the demo about a minute.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import time
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import trtlab

pytestmark = pytest.mark.install

ROOT = Path(__file__).resolve().parent.parent
#: What a user's shell would have: nothing pointing into this tree, no trtlab overrides.
_DROP = ("PYTHONPATH", "TRTLAB_DATA", "TRTLAB_PROGRESS", "TQDM_DISABLE", "PYTHONHOME", "VIRTUAL_ENV")


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _DROP}
    env.update(extra)
    return env


def run(cmd, *, cwd, env=None, timeout=900):
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env or clean_env(), capture_output=True,
                         text=True, timeout=timeout)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {res.returncode}\n"
                             f"--- stdout\n{res.stdout[-4000:]}\n--- stderr\n{res.stderr[-4000:]}")
    return res


def shipped(folder: str, *patterns: str) -> list:
    return sorted(p for pattern in patterns for p in (ROOT / folder).glob(pattern))


# --- the wheel ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", out, ROOT], cwd=out)
    (whl,) = out.glob("trtlab-*.whl")
    return whl


def test_wheel_carries_the_zoo_notebooks_license_and_metadata(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for src in shipped("data", "*.onnx", "*.npz"):
            assert zf.read(f"trtlab/_zoo_data/{src.name}") == src.read_bytes(), src.name
        for src in shipped("notebooks", "*.ipynb"):
            assert zf.read(f"trtlab/_notebooks/{src.name}") == src.read_bytes(), src.name
        info = f"trtlab-{trtlab.__version__}.dist-info"
        assert "Apache License" in zf.read(f"{info}/licenses/LICENSE").decode()
        meta = Parser().parsestr(zf.read(f"{info}/METADATA").decode())
    assert not any(n.startswith(("data/", "notebooks/", "tests/")) for n in names)
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta["Requires-Python"] == ">=3.11"
    assert "Programming Language :: Python :: 3.11" in meta.get_all("Classifier")
    assert set(meta.get_all("Provides-Extra")) >= {"rtx", "tensorrt", "notebook", "torch", "dev"}
    core = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    core_names = {re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0].lower() for r in core}
    assert core_names >= {"onnx", "onnxruntime", "numpy", "pandas", "networkx", "polygraphy",
                          "onnx-graphsurgeon", "tqdm", "platformdirs"}
    assert not core_names & {"torch", "jupyterlab", "ipywidgets", "tensorrt", "tensorrt-rtx", "pytest"}


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with ``trtlab[rtx]`` installed from the wheel; its bin folder."""
    env_dir = tmp_path_factory.mktemp("venv") / "env"
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(env_dir)
    bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    started = time.perf_counter()
    run([bin_dir / "python", "-m", "pip", "install", "--quiet", f"{wheel}[rtx]"], cwd=env_dir,
        timeout=1500)
    print(f"pip install trtlab[rtx] into a fresh venv: {time.perf_counter() - started:.0f} s")
    return bin_dir


def _first_session() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## A first session", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_installed_package_is_the_wheel_not_this_tree(installed, tmp_path):
    res = run([installed / "python", "-c",
               "import json, trtlab, trtlab.config as c; print(json.dumps([trtlab.__file__, "
               "str(c.data_dir()), str(c.notebooks_dir()), trtlab.__version__]))"], cwd=tmp_path)
    module, zoo_dir, notebooks, version = json.loads(res.stdout)
    site = Path(module).parent
    assert "site-packages" in module and ROOT not in Path(module).parents
    assert Path(zoo_dir) == site / "_zoo_data" and Path(notebooks) == site / "_notebooks"
    assert version == trtlab.__version__
    res = run([installed / "trtlab", "--version"], cwd=tmp_path)
    assert res.stdout.strip() == f"trtlab {trtlab.__version__}"
    info = json.loads(run([installed / "trtlab", "info", "--json"], cwd=tmp_path).stdout)
    assert info["tensorrt flavor"] == "tensorrt_rtx" and info["parse"] == "yes"
    assert info["zoo"] == zoo_dir


def test_readme_first_session_runs_from_a_temp_folder(installed, tmp_path):
    code = _first_session()
    assert "trtlab.build(part" in code and "hybrid.run(" in code
    script = code + "\nprint('SESSION-OK', len(outputs), len(part.segments))\n"
    res = run([installed / "python", "-c", script], cwd=tmp_path)
    marker = res.stdout.strip().splitlines()[-1].split()
    assert marker[0] == "SESSION-OK" and int(marker[1]) >= 1 and int(marker[2]) >= 2


def test_demo_runs_from_a_temp_folder(installed, tmp_path):
    started = time.perf_counter()
    res = run([installed / "trtlab", "demo", "--out", "demo"], cwd=tmp_path, timeout=1200)
    print(f"trtlab demo in a fresh venv: {time.perf_counter() - started:.0f} s")
    assert "failed steps" in res.stdout and " 0 failed steps" in res.stdout
    assert (tmp_path / "demo" / "index.html").is_file()
    html = (tmp_path / "demo" / "index.html").read_text()
    for name in ("digits_cnn", "detection_postproc", "transformer_large"):
        assert f"id='{name}'" in html
    assert "it/s" not in res.stderr and "\r" not in res.stderr  # stderr is not a terminal


def test_notebooks_are_reachable_after_install(installed, tmp_path):
    run([installed / "trtlab", "notebooks", "nb"], cwd=tmp_path)
    copied = sorted(p.name for p in (tmp_path / "nb").glob("*.ipynb"))
    assert copied == [p.name for p in shipped("notebooks", "*.ipynb")]


def test_rtx_extra_does_not_pull_torch_or_jupyter(installed, tmp_path):
    res = run([installed / "python", "-m", "pip", "list", "--format", "json"], cwd=tmp_path)
    have = {d["name"].lower().replace("_", "-") for d in json.loads(res.stdout)}
    assert {"trtlab", "tensorrt-rtx", "onnxruntime", "platformdirs"} <= have
    assert not have & {"torch", "jupyterlab", "ipywidgets", "pytest"}


# --- the sdist ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sdist_tree(tmp_path_factory) -> Path:
    import build  # noqa: F401  (dev extra: builds the sdist)
    out = tmp_path_factory.mktemp("sdist")
    run([sys.executable, "-m", "build", "--sdist", "--outdir", out, ROOT], cwd=out)
    (archive,) = out.glob("trtlab-*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")
    return out / archive.name[: -len(".tar.gz")]


def test_sdist_is_complete(sdist_tree):
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip(f"not a git checkout, the list of tracked files is unknown: {tracked.stderr.strip()}")
    files = [f for f in tracked.stdout.splitlines() if f != ".gitignore"]
    missing = [f for f in files if not (sdist_tree / f).is_file()]
    assert missing == []
    assert (sdist_tree / "tests" / "conftest.py").is_file() and (sdist_tree / "LICENSE").is_file()


def test_tests_run_from_the_sdist(sdist_tree):
    """Part of the suite, run from the unpacked sdist with the trtlab package it contains."""
    env = clean_env(PYTHONPATH=str(sdist_tree), TRTLAB_PROGRESS="0")
    where = run([sys.executable, "-c", "import trtlab; print(trtlab.__file__)"], cwd=sdist_tree, env=env)
    assert Path(where.stdout.strip()).parent == sdist_tree / "trtlab"
    res = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
               "tests/test_zoo.py", "tests/test_ort.py", "tests/test_fusion.py", "tests/test_trt.py"],
              cwd=sdist_tree, env=env)
    passed = re.search(r"(\d+) passed", res.stdout)
    assert passed and int(passed.group(1)) >= 50, res.stdout[-2000:]
    assert " failed" not in res.stdout and " error" not in res.stdout


def test_wheel_built_from_the_sdist_carries_the_zoo(sdist_tree, tmp_path):
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", tmp_path, sdist_tree],
        cwd=tmp_path)
    (whl,) = tmp_path.glob("trtlab-*.whl")
    with zipfile.ZipFile(whl) as zf:
        names = set(zf.namelist())
    assert {f"trtlab/_zoo_data/{p.name}" for p in shipped("data", "*.onnx", "*.npz")} <= names
    assert {f"trtlab/_notebooks/{p.name}" for p in shipped("notebooks", "*.ipynb")} <= names


# --- environment.yml ----------------------------------------------------------------------------


def _requirement(text: str) -> tuple:
    name, spec = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", text).groups()
    name = name.lower().replace("_", "-")
    return {"python-build": "build"}.get(name, name), spec.replace(" ", "")


def test_environment_yml_matches_pyproject():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = dict(_requirement(r) for r in project["dependencies"])
    for extra in ("rtx", "notebook", "dev", "torch", "study", "explorer"):  # what `make test` installs
        wanted.update(_requirement(r) for r in extras[extra])
    listed = {}
    text = (ROOT / "environment.yml").read_text().split("\ndependencies:\n", 1)[1]
    for line in text.splitlines():
        item = line.split("#", 1)[0].strip()
        if not item.startswith("- ") or item in ("- pip", "- pip:", "- -e .") or item.startswith("- python="):
            continue
        name, spec = _requirement(item[2:])
        listed[name] = spec
    assert listed == wanted
