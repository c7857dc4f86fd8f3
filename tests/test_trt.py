"""TensorRT detection, environment parsing and the import-time contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trtlab import config
from trtlab.backends.tensorrt import flavor as trt
from trtlab.errors import MissingDependencyError, TrtlabError

ROOT = Path(__file__).resolve().parent.parent


def test_config_parses_tensorrt_choice():
    assert config.tensorrt_choice({}) is None
    assert config.tensorrt_choice({"TRTLAB_TENSORRT": "auto"}) is None
    assert config.tensorrt_choice({"TRTLAB_TENSORRT": "TensorRT-RTX"}) == "tensorrt_rtx"
    assert config.tensorrt_choice({"TRTLAB_TENSORRT": "tensorrt"}) == "tensorrt"
    with pytest.raises(TrtlabError, match="tensorrt, tensorrt_rtx"):
        config.tensorrt_choice({"TRTLAB_TENSORRT": "onnxruntime"})


def test_config_cache_dir_is_the_platform_user_cache(tmp_path, monkeypatch):
    import platformdirs

    assert config.cache_dir({"TRTLAB_CACHE_DIR": str(tmp_path)}) == tmp_path
    assert config.cache_dir({"TRTLAB_CACHE_DIR": " "}) == config.cache_dir({})
    assert config.cache_dir({}) == Path(platformdirs.user_cache_path("trtlab", appauthor=False))
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        assert config.cache_dir({}) == tmp_path / "trtlab"


def test_config_finds_the_shipped_zoo_and_notebooks(tmp_path):
    assert config.data_dir({"TRTLAB_DATA": str(tmp_path)}) == tmp_path
    zoo_dir = config.data_dir({})
    assert (zoo_dir / "digits_cnn.onnx").is_file() and (zoo_dir / "digits_test.npz").is_file()
    assert len(list(config.notebooks_dir().glob("*.ipynb"))) >= 7
    # from a checkout the shipped folders are the repository's own data/ and notebooks/
    assert zoo_dir.samefile(ROOT / "data") or zoo_dir.parent.name == "trtlab"


@pytest.mark.parametrize("env, mode", [
    ({}, None), ({"TRTLAB_PROGRESS": "auto"}, None), ({"TRTLAB_PROGRESS": "0"}, False),
    ({"TRTLAB_PROGRESS": "off"}, False), ({"TRTLAB_PROGRESS": "1"}, True),
    ({"TRTLAB_PROGRESS": "Yes"}, True), ({"TQDM_DISABLE": "1"}, False),
    ({"TQDM_DISABLE": "True", "TRTLAB_PROGRESS": "1"}, False), ({"TQDM_DISABLE": "0"}, None),
])
def test_config_progress_mode(env, mode):
    assert config.progress_mode(env) is mode
    assert config.progress_default(env) is (mode is not False)


def test_config_refuses_an_unknown_progress_value():
    with pytest.raises(TrtlabError, match="TRTLAB_PROGRESS='sometimes'.*0 \\(off\\), 1 \\(on\\)"):
        config.progress_mode({"TRTLAB_PROGRESS": "sometimes"})


def test_forcing_a_missing_flavor_names_the_extra(monkeypatch):
    monkeypatch.setenv("TRTLAB_TENSORRT", "tensorrt")
    if trt._installed("tensorrt"):
        pytest.skip("full TensorRT is installed here, so forcing it cannot fail")
    assert trt.flavor() is None
    with pytest.raises(MissingDependencyError, match=r"trtlab\[tensorrt\]"):
        trt.module()
    info = trt.info()
    assert info.flavor is None and not info.parse and not info.run


def test_info_reports_capabilities_consistently():
    info = trt.info()
    if info.flavor is None:
        assert not (info.parse or info.build or info.run)
        return
    assert info.version == trt.version()
    assert trt.version_tuple()[0] >= 1
    if info.run:
        assert info.gpu is not None and info.build and info.parse
    if info.gpu is None:
        assert not info.run
        assert "GPU" in info.reason


def test_rtx_parses_and_builds_without_gpu():
    if trt.flavor() != "tensorrt_rtx":
        pytest.skip("TensorRT-RTX is not the TensorRT flavor on this machine")
    info = trt.info()
    assert info.parse and info.build
    if trt.gpu() is None:
        assert info.run is False


def test_make_parser_gives_strongly_typed_network_and_captures_errors():
    if not trt.info().parse:
        pytest.skip("no TensorRT ONNX parser on this machine")
    import factories as F

    _, network, parser, logger = trt.make_parser()
    assert parser.parse(F.with_unsupported().SerializeToString()) in (True, False)
    _, network, parser, logger = trt.make_parser()
    assert parser.parse(F.conv_relu(batch=1).SerializeToString())
    assert network.num_layers >= 2


def test_import_trtlab_needs_no_optional_modules():
    code = (
        "import sys\n"
        "for m in ('tensorrt','tensorrt_rtx','matplotlib','ipywidgets','torch','polygraphy'):\n"
        "    sys.modules[m] = None\n"
        "import trtlab\n"
        "m = trtlab.load\n"
        "from trtlab.backends.tensorrt import flavor as trt\n"
        "print(trt.info().flavor, trt.info().parse)\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] in "
        "('tensorrt','tensorrt_rtx','matplotlib','ipywidgets','torch','polygraphy') and sys.modules[k]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "[]"
    assert lines[0].endswith("False")  # no parser when TensorRT cannot be imported


def test_cli_info_reports_flavor_and_capabilities():
    out = subprocess.run([sys.executable, "-m", "trtlab.cli", "info", "--json"], capture_output=True,
                         text=True, check=True)
    env = json.loads(out.stdout)
    info = trt.info()
    assert env["tensorrt flavor"] == (info.flavor or "none")
    assert env["parse"] == ("yes" if info.parse else "no")
    assert env["run"] == ("yes" if info.run else "no")
    assert "CPUExecutionProvider" in env["onnxruntime providers"]
    if info.flavor == "tensorrt_rtx" and trt.gpu() is None:
        assert (env["parse"], env["build"], env["run"]) == ("yes", "yes", "no")


def test_cli_inspect_prints_histogram(tmp_path):
    import onnx

    import factories as F

    path = tmp_path / "mlp.onnx"
    onnx.save(F.mlp(), path)
    out = subprocess.run([sys.executable, "-m", "trtlab.cli", "inspect", str(path)],
                         capture_output=True, text=True, check=True).stdout
    assert "op histogram" in out and "Gemm" in out and "MatMul" in out
    assert "x: float [2, 16]" in out


def test_cli_reports_bad_model_cleanly(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("nope")
    res = subprocess.run([sys.executable, "-m", "trtlab.cli", "inspect", str(bad)],
                         capture_output=True, text=True)
    assert res.returncode == 3  # bad input (trtlab.cli.main.EXIT_INPUT)
    assert "not an ONNX file" in res.stderr and "Traceback" not in res.stderr


def test_cuda_noise_is_stripped_from_tensorrt_messages():
    stream = ("[cudaResources.cpp::ScopedCudaStream::25] Error Code 1: Cuda Runtime (In ScopedCudaStream at "
              "/src/cudaResources.cpp:25 (cudaError 35: CUDA driver version is insufficient for CUDA runtime version))")
    real = "[tacticSupply.cpp::getSupportedFormats::48] Error Code 2: Internal Error (nms has no runners)"
    assert trt.is_cuda_noise(stream) and not trt.is_cuda_noise(real)
    assert trt.clean_message(f"{stream}; {real}") == real


# -- Polygraphy binds to trtlab's flavor --------------------------------------------------------
#: A stand-in ``tensorrt`` module: full TensorRT cannot be installed here. It carries what
#: Polygraphy's import path and its TensorRT data type table read.
_STAND_IN_TENSORRT = '''
__version__ = "10.16.1.11"
class DataType:
    def __init__(self, name): self.name = name
    def __repr__(self): return f"<DataType.{self.name}>"
float32, float16, int32, int8, int64, uint8, bool = (DataType(n) for n in
    ("FLOAT", "HALF", "INT32", "INT8", "INT64", "UINT8", "BOOL"))
'''

_ORDER_SCRIPT = '''
import json, sys
entry = sys.argv[1]
if entry == "info":        # the run probe imports polygraphy.cuda
    from trtlab.backends.tensorrt import flavor as trt
    trt.info()
else:                      # compare() imports Polygraphy's runner base and comparator
    from trtlab.study.accuracy import as_runner
    as_runner(lambda feeds: feeds, "c")
    from trtlab.backends.tensorrt import flavor as trt
import polygraphy.backend.trt
import polygraphy.config
from polygraphy.mod import importer
from polygraphy.datatype import DataType
# TrtRunner's output path: DataType.from_dtype(engine.get_tensor_dtype(name), source_module="tensorrt")
dtype = DataType.from_dtype(trt.module().float32, source_module="tensorrt")
print(json.dumps({"lazy": sorted(set(importer._all_external_lazy_imports) & {"tensorrt", "tensorrt_rtx"}),
                  "use_rtx": polygraphy.config.USE_TENSORRT_RTX, "float32": str(dtype)}))
'''


@pytest.mark.parametrize("entry", ["info", "compare"])
@pytest.mark.parametrize("choice", ["tensorrt", "tensorrt_rtx"])
def test_polygraphy_binds_to_the_flavor_before_any_polygraphy_import(tmp_path, choice, entry):
    """In a fresh process, whatever the caller's POLYGRAPHY_USE_TENSORRT_RTX says, Polygraphy ends
    up bound to TRTLAB_TENSORRT's module, and TensorRT data types convert (no ``TypeError: Cannot
    interpret '<DataType.FLOAT: 0>' as a data type``)."""
    import json
    import os

    if choice == "tensorrt_rtx" and not trt._installed("tensorrt_rtx"):
        pytest.skip("tensorrt_rtx is not installed")
    stand_in = tmp_path / "site"
    (stand_in / "tensorrt").mkdir(parents=True)
    (stand_in / "tensorrt" / "__init__.py").write_text(_STAND_IN_TENSORRT)
    root = os.path.dirname(os.path.dirname(os.path.abspath(trt.__file__)))
    env = {**os.environ, "TRTLAB_TENSORRT": choice,
           "POLYGRAPHY_USE_TENSORRT_RTX": "0" if choice == "tensorrt_rtx" else "1",
           "PYTHONPATH": os.pathsep.join([str(stand_in), os.path.dirname(os.path.dirname(root)),
                                          os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _ORDER_SCRIPT, entry], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["lazy"] == [choice]
    assert got["use_rtx"] is (choice == "tensorrt_rtx")
    assert got["float32"] == "float32"


def test_binding_to_the_other_flavor_is_refused_with_the_fix():
    if trt.flavor() is None:
        pytest.skip("no TensorRT installed")
    import os

    other = "1" if trt.flavor() == "tensorrt" else "0"
    code = ("import polygraphy.util\n"  # the user imported Polygraphy first, bound to the other flavor
            "from trtlab.backends.tensorrt import flavor as trt\n"
            "try:\n"
            "    trt.bind_polygraphy()\n"
            "except trt.PolygraphyFlavorError as exc:\n"
            "    print('refused:', exc)\n")
    env = {**os.environ, "POLYGRAPHY_USE_TENSORRT_RTX": other}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("refused:")
    assert f"POLYGRAPHY_USE_TENSORRT_RTX={'0' if other == '1' else '1'}" in out.stdout
