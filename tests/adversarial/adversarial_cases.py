"""Adversarial cases: bad input, hostile files and faults, each a function of a scratch folder.

Every case runs in its own forked process (see ``adversarial_runner.py``) and must end in one
of two ways: the promised result (checked here, so a silently wrong result fails), or a
``TrtlabError`` of the promised class whose message has the promised words. Families of cases
are tables of data (``BENCH_CLI``, ``FUSION_JSON``, ``PARTITION_JSON`` …) run by one function
each; the rest are small functions. Faults are real: a full disk is a ``RLIMIT_FSIZE`` limit
(writes fail in the kernel) or a small tmpfs when this process may mount one; a read-only or
foreign folder is seen by an unprivileged user when the suite runs as root.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import resource
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import factories as F
from faults import disk_full

# ----------------------------------------------------------------------------------------------
# Verdicts and helpers
# ----------------------------------------------------------------------------------------------


class Wrong(AssertionError):
    """A silently wrong result, or success where an error was promised."""


class Destroyed(AssertionError):
    """An existing file was destroyed, or a half-written file or folder was left behind."""


class BadError(AssertionError):
    """A TrtlabError of the wrong class, or a message without the words it promises."""


@dataclass(frozen=True)
class Case:
    name: str
    cls: str
    func: Callable[[Path], None]
    quick: bool = True
    timeout: float = 30.0


CASES: Dict[str, Case] = {}


def case(cls: str, *, quick: bool = True, timeout: float = 30.0, name: Optional[str] = None) -> Callable:
    def register(func: Callable[[Path], None]) -> Callable[[Path], None]:
        key = name or func.__name__
        assert key not in CASES, key
        CASES[key] = Case(key, cls, func, quick, timeout)
        return func

    return register


def raises(fn: Callable[[], Any], error: str, *words: str) -> BaseException:
    """Run ``fn``; it must raise the TrtlabError subclass ``error`` with ``words`` in its message.

    A non-TrtlabError propagates (the runner records a raw traceback).
    """
    from trtlab.errors import TrtlabError

    try:
        fn()
    except TrtlabError as exc:
        names = {c.__name__ for c in type(exc).__mro__}
        if error not in names:
            raise BadError(f"expected {error}, got {type(exc).__name__}: {exc}") from None
        text = str(exc).lower()
        missing = [w for w in words if w.lower() not in text]
        if missing:
            raise BadError(f"{type(exc).__name__} message lacks {missing}: {exc}") from None
        return exc
    raise Wrong(f"expected {error}, but the call succeeded")


def cli(*argv: str) -> Tuple[int, str, str]:
    """Run the ``trtlab`` command in this process; (exit code, stdout, stderr).

    An exception escaping ``main`` propagates: that is a raw traceback for the user.
    """
    from trtlab.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 1
    return int(code or 0), out.getvalue(), err.getvalue()


def cli_fails(*argv: str, words: Sequence[str] = ()) -> str:
    """The command must fail cleanly: nonzero exit, no traceback, an error line with ``words``."""
    code, _, err = cli(*argv)
    if code == 0:
        raise Wrong(f"trtlab {' '.join(map(str, argv))} succeeded; an error was due. stderr: {err[-300:]}")
    if "Traceback" in err:
        raise BadError(f"traceback on stderr: {err[-600:]}")
    lines = [ln for ln in err.splitlines() if ln.startswith("trtlab: error:") or ln.startswith("usage:")]
    if not lines:
        raise BadError(f"no 'trtlab: error:' line on stderr: {err[-400:]}")
    missing = [w for w in words if w.lower() not in err.lower()]
    if missing:
        raise BadError(f"error lacks {missing}: {err.strip()[-400:]}")
    return err


def snapshot(folder: Path) -> Dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), hidden temporaries included."""
    if not folder.exists():
        return {}
    if folder.is_file():
        return {"": folder.read_bytes()}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def intact(folder: Path, before: Dict[str, bytes], what: str) -> None:
    after = snapshot(folder)
    if after != before:
        changed = sorted(set(after) ^ set(before)) + sorted(k for k in set(after) & set(before)
                                                            if after[k] != before[k])
        raise Destroyed(f"{what} changed: {changed[:8]}")


def no_temporaries(folder: Path) -> None:
    left = [p.name for p in folder.iterdir() if p.name.startswith(".")] if folder.is_dir() else []
    if left:
        raise Destroyed(f"temporary files left in {folder}: {left}")


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "64k") -> Iterator[Tuple[Path, str]]:
    """A tmpfs of ``size`` at ``folder`` (ENOSPC when full) when this process may mount; else a
    folder with ``disk_full`` writes. Yields the folder and which fault it is."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True).returncode == 0
    try:
        yield folder, "tmpfs" if mounted else "rlimit"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def drop_privileges() -> None:
    """Become an unprivileged user when running as root (so permissions apply).

    Modules are imported first: the interpreter's own folders may not be readable by that user.
    """
    import webbrowser  # noqa: F401

    import trtlab.backends.tensorrt.cache  # noqa: F401
    import trtlab.cli.steps  # noqa: F401

    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)


def fill(path: Path) -> None:
    """Fill the file system of ``path`` until ENOSPC."""
    try:
        with open(path, "wb") as fh:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
    except OSError:
        pass


def model_with_io(name: str = "g") -> onnx.ModelProto:
    """x[2,3] -> Relu -> y ; y -> Sigmoid -> z"""
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu"),
             helper.make_node("Sigmoid", ["y"], ["z"], name="sigmoid")]
    return F._model(nodes, [F.vi("x", [2, 3])], [F.vi("z", [2, 3])], name=name)


def three_segments() -> Any:
    """with_unsupported partitioned with NonZero rejected: trt, fallback, trt-ish segments."""
    import trtlab

    m = trtlab.load(F.with_unsupported())
    verdicts = {n: (n != "nonzero", "rejected in the test" if n == "nonzero" else "ok") for n in m.node_names}
    return m, trtlab.partition(m, support=verdicts)


def fallback_only(proto: onnx.ModelProto) -> Any:
    import trtlab

    m = trtlab.load(proto)
    return m, trtlab.partition(m, support={n: (False, "kept on ONNX Runtime in the test") for n in m.node_names})


@contextlib.contextmanager
def built(part: Any, **kwargs: Any) -> Iterator[Any]:
    """``trtlab.build`` and close the HybridModel afterwards."""
    import trtlab

    hybrid = trtlab.build(part, **kwargs)
    try:
        yield hybrid
    finally:
        hybrid.close()


def zoo_model() -> str:
    from trtlab import zoo

    return str(zoo.path("digits_cnn"))


class LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def warned(*words: str) -> Iterator[None]:
    """The block must warn (``warnings`` or a WARNING log record) with ``words``."""
    handler = LogCapture()
    logging.getLogger().addHandler(handler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    logging.getLogger().removeHandler(handler)
    texts = handler.messages + [str(w.message) for w in caught]
    if not any(all(w.lower() in t.lower() for w in words) for t in texts):
        raise Wrong(f"no warning with {list(words)}; got {texts[:5]}")


# ----------------------------------------------------------------------------------------------
# Data lost or written half-way
# ----------------------------------------------------------------------------------------------


@case("atomic-write")
def save_disk_full_keeps_old_model(tmp: Path) -> None:
    import trtlab

    m = trtlab.load(F.mlp())
    target = tmp / "model.onnx"
    trtlab.load(F.conv_relu()).save(target)
    before = snapshot(tmp)
    with disk_full(limit=512):
        raises(lambda: m.save(target), "TrtlabError", "model.onnx")
    intact(tmp, before, "the previous model file")
    no_temporaries(tmp)


@case("atomic-write")
def save_on_full_tmpfs_keeps_old_model(tmp: Path) -> None:
    import trtlab

    with small_disk(tmp / "disk", "64k") as (disk, kind):
        target = disk / "model.onnx"
        trtlab.load(F.conv_relu()).save(target)
        before = snapshot(disk)
        big = trtlab.load(F.mlp())
        if kind == "tmpfs":
            fill(disk / "filler")
            before = snapshot(disk)
            raises(lambda: big.save(target), "TrtlabError", "space")
        else:
            with disk_full(limit=256):
                raises(lambda: big.save(target), "TrtlabError")
        intact(disk, before, f"the previous model file ({kind})")
        no_temporaries(disk)


@case("atomic-write")
def save_refuses_existing_without_overwrite(tmp: Path) -> None:
    import trtlab

    target = tmp / "m.onnx"
    target.write_bytes(b"precious")
    raises(lambda: trtlab.load(F.mlp()).save(target, overwrite=False), "OutputExistsError", "overwrite")
    intact(tmp, {"m.onnx": b"precious"}, "the existing file")


@case("atomic-write")
def save_into_a_file_as_folder(tmp: Path) -> None:
    import trtlab

    (tmp / "afile").write_bytes(b"x")
    raises(lambda: trtlab.load(F.mlp()).save(tmp / "afile" / "m.onnx"), "TrtlabError")


@case("atomic-write")
def write_partition_disk_full_keeps_previous(tmp: Path) -> None:
    from trtlab.partitioning.partitioner import write_partition

    m, part = three_segments()
    out = tmp / "out"
    write_partition(part, out)
    before = snapshot(out)
    with disk_full(limit=200):
        raises(lambda: write_partition(part, out, overwrite=True), "TrtlabError")
    intact(out, before, "the previous partition folder")
    no_temporaries(tmp)


@case("atomic-write")
def write_partition_disk_full_leaves_nothing(tmp: Path) -> None:
    from trtlab.partitioning.partitioner import write_partition

    m, part = three_segments()
    with disk_full(limit=200):
        raises(lambda: write_partition(part, tmp / "out"), "TrtlabError")
    if (tmp / "out").exists() and any((tmp / "out").iterdir()):
        raise Destroyed(f"half-written partition folder: {sorted(os.listdir(tmp / 'out'))}")
    no_temporaries(tmp)


@case("atomic-write")
def write_partition_rerun_leaves_no_stale_segments(tmp: Path) -> None:
    import trtlab
    from trtlab.partitioning.partitioner import write_partition

    m, part = three_segments()
    out = tmp / "out"
    write_partition(part, out)
    one = trtlab.partition(m, support={n: (True, "ok") for n in m.node_names})
    try:
        write_partition(one, out, overwrite=True)
    except TypeError:  # no overwrite flag: write into the same folder as a user would
        write_partition(one, out)
    segs = sorted(p.name for p in out.glob("*.onnx"))
    if len(segs) != len(one.segments):
        raise Destroyed(f"stale segment files beside the new partition.json: {segs}")
    back = trtlab.Partition.from_json((out / "partition.json").read_text(), m)
    if back.segments != one.segments:
        raise Wrong("partition.json does not describe the folder's segments")


@case("atomic-write")
def write_partition_refuses_foreign_folder_even_forced(tmp: Path) -> None:
    from trtlab.partitioning.partitioner import write_partition

    m, part = three_segments()
    out = tmp / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    before = snapshot(out)
    raises(lambda: write_partition(part, out, overwrite=True), "OutputExistsError", "not written by trtlab")
    intact(out, before, "a folder trtlab did not write")


@case("atomic-write")
def write_partition_manifest_lists_every_file(tmp: Path) -> None:
    import hashlib

    from trtlab.partitioning.partitioner import write_partition

    m, part = three_segments()
    write_partition(part, tmp / "out")
    manifest = json.loads((tmp / "out" / "MANIFEST.json").read_text())
    files = {p.name for p in (tmp / "out").iterdir()} - {"MANIFEST.json"}
    if set(manifest["files"]) != files:
        raise Wrong(f"manifest lists {sorted(manifest['files'])}, folder has {sorted(files)}")
    for name, meta in manifest["files"].items():
        if hashlib.sha256((tmp / "out" / name).read_bytes()).hexdigest() != meta["sha256"]:
            raise Wrong(f"manifest checksum of {name} is wrong")


@case("atomic-write")
def cli_partition_existing_folder_refused(tmp: Path) -> None:
    out = tmp / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    before = snapshot(out)
    cli_fails("partition", zoo_model(), "--out", out, words=["exists"])
    intact(out, before, "the existing output folder")


@case("atomic-write")
def cli_partition_force_replaces(tmp: Path) -> None:
    out = tmp / "out"
    code, _, err = cli("partition", zoo_model(), "--out", out)
    if code:
        raise Wrong(f"first partition failed: {err}")
    (out / "00_stale.onnx").write_bytes(b"stale")
    code, _, err = cli("partition", zoo_model(), "--out", out, "--force")
    if code:
        raise Wrong(f"--force failed: {err}")
    if (out / "00_stale.onnx").exists():
        raise Destroyed("a stale file survived --force: the folder was not replaced whole")


@case("atomic-write")
def cli_report_out_is_a_file_refused_before_work(tmp: Path) -> None:
    import trtlab.cli.report as report_module

    def never(*args: Any, **kwargs: Any) -> Any:
        raise Wrong("the report pipeline ran before the destination was checked")

    report_module.report = never
    target = tmp / "report.html"
    target.write_text("<html>previous report</html>")
    before = snapshot(tmp)
    cli_fails("report", zoo_model(), "--out", target)
    intact(tmp, before, "the existing report file")


@case("atomic-write")
def cli_report_existing_folder_refused_before_work(tmp: Path) -> None:
    import trtlab.cli.report as report_module

    def never(*args: Any, **kwargs: Any) -> Any:
        raise Wrong("the report pipeline ran before the destination was checked")

    report_module.report = never
    out = tmp / "rep"
    out.mkdir()
    (out / "index.html").write_text("previous")
    before = snapshot(out)
    cli_fails("report", zoo_model(), "--out", out, words=["exists"])
    intact(out, before, "the existing report folder")


@case("atomic-write", quick=False, timeout=120)
def cli_report_force_replaces_atomically(tmp: Path) -> None:
    out = tmp / "rep"
    out.mkdir()
    (out / "MANIFEST.json").write_text("{}")
    (out / "old.png").write_bytes(b"old")
    code, _, err = cli("report", zoo_model(), "--out", out, "--force", "--quiet")
    if code:
        raise Wrong(f"report --force failed: {err[-400:]}")
    names = sorted(os.listdir(out))
    if "old.png" in names or "index.html" not in names:
        raise Destroyed(f"report folder not replaced whole: {names}")
    no_temporaries(tmp)


@case("atomic-write")
def calibration_cache_disk_full_still_calibrates(tmp: Path) -> None:
    import trtlab
    from trtlab.precision import calibrate

    m = trtlab.load(F.mlp())
    data = {"x": np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)}
    fresh = calibrate(m, data, cache_dir=tmp / "fresh")
    with disk_full(limit=64), warned("not cached"):
        got = calibrate(m, data, cache_dir=tmp / "cal")
    if not np.allclose(got["amax"].to_numpy(), fresh["amax"].to_numpy()):
        raise Wrong("calibration differs when its cache cannot be written")
    if (tmp / "cal").exists():
        no_temporaries(tmp / "cal")
        if any((tmp / "cal").iterdir()):
            raise Destroyed(f"half-written calibration cache: {os.listdir(tmp / 'cal')}")


@case("atomic-write")
def report_page_write_is_atomic(tmp: Path) -> None:
    from trtlab.cli.report import Report, write_html

    page = tmp / "index.html"
    page.write_text("previous page")
    before = snapshot(tmp)
    with disk_full(limit=100):
        raises(lambda: write_html([Report("m")], page), "TrtlabError")
    intact(tmp, before, "the previous report page")


# ----------------------------------------------------------------------------------------------
# Silently wrong
# ----------------------------------------------------------------------------------------------

HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)>"


def no_markup(text: str, where: str) -> None:
    if "<script" in text.lower() or "<img" in text.lower():
        raise Wrong(f"{where} puts hostile text into HTML unescaped")


@case("html-escaping")
def html_model(tmp: Path) -> None:
    import trtlab

    m = trtlab.load(model_with_io(name=HOSTILE), name=HOSTILE)
    no_markup(m._repr_html_(), "Model._repr_html_")


@case("html-escaping")
def html_model_from_hostile_file_name(tmp: Path) -> None:
    import trtlab

    path = tmp / "<img src=x onerror=alert(1)>.onnx"
    path.write_bytes(model_with_io().SerializeToString())
    no_markup(trtlab.load(path)._repr_html_(), "Model._repr_html_ (file name)")


@case("html-escaping")
def html_partition(tmp: Path) -> None:
    import trtlab

    m = trtlab.load(model_with_io(), name=HOSTILE)
    no_markup(trtlab.partition(m, support={n: (True, "ok") for n in m.node_names})._repr_html_(),
              "Partition._repr_html_")


@case("html-escaping")
def html_latency_stats(tmp: Path) -> None:
    import trtlab

    stats = trtlab.benchmark(lambda feeds: {"y": feeds["x"]}, {"x": np.zeros(3, np.float32)},
                             warmup=0, iterations=3, label=HOSTILE, progress=False)
    no_markup(stats._repr_html_(), "LatencyStats._repr_html_")


@case("html-escaping")
def html_hybrid_model(tmp: Path) -> None:

    m, part = fallback_only(model_with_io(name=HOSTILE))
    with built(part, cache_dir=tmp, progress=False) as hybrid:
        no_markup(hybrid._repr_html_(), "HybridModel._repr_html_")


@case("html-escaping")
def html_support_table(tmp: Path) -> None:
    import trtlab

    proto = model_with_io()
    proto.graph.node[0].name = HOSTILE
    table = trtlab.check_support(trtlab.load(proto), source="rules")
    no_markup(table._repr_html_(), "SupportTable._repr_html_")


@case("html-escaping")
def html_fusion_report(tmp: Path) -> None:
    import trtlab

    doc = {"Layers": [{"Name": HOSTILE, "LayerType": "Reformat", "Inputs": [], "Outputs": []}],
           "Bindings": []}
    no_markup(trtlab.fusion(doc, label=HOSTILE)._repr_html_(), "FusionReport._repr_html_")


@case("html-escaping")
def html_report_page(tmp: Path) -> None:
    from trtlab.cli.report import Report, Section, write_html

    rep = Report(HOSTILE)
    rep.facts["nodes"] = HOSTILE
    rep.sections.append(Section(title=HOSTILE, body="", error=HOSTILE))
    no_markup(write_html([rep], tmp / "index.html", title=HOSTILE).read_text(), "report page")


def _nan_candidate(fraction: float, value: float) -> Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]:
    from trtlab.backends.onnxruntime.session import run_onnx

    proto = F.mlp()

    def run(feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out = run_onnx(proto, feeds)["y"].copy()
        flat = out.reshape(-1)
        flat[: int(len(flat) * fraction)] = value
        return {"y": out}

    return run


@case("non-finite-statistics")
def compare_counts_nan(tmp: Path) -> None:
    import trtlab

    data = {"x": np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)}
    table = trtlab.compare(F.mlp(), {"half_nan": _nan_candidate(0.5, np.nan)}, data)
    row = table.iloc[0]
    if "n_nan" not in table.columns or row["n_nan"] != 40:
        raise Wrong(f"NaN not counted: {row.to_dict()}")
    if not (row["mean_abs"] > 0) or bool(row["pass"]):
        raise Wrong(f"half-NaN output reported as mean_abs {row['mean_abs']}, pass {row['pass']}")


@case("non-finite-statistics")
def compare_counts_inf(tmp: Path) -> None:
    import trtlab

    data = {"x": np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)}
    table = trtlab.compare(F.mlp(), {"inf": _nan_candidate(0.25, np.inf)}, data)
    row = table.iloc[0]
    if "n_inf" not in table.columns or row["n_inf"] != 10 or np.isfinite(row["max_abs"]) or bool(row["pass"]):
        raise Wrong(f"inf not counted: {row.to_dict()}")


@case("non-finite-statistics")
def compare_identical_nan_is_not_an_error(tmp: Path) -> None:
    import trtlab

    nodes = [helper.make_node("Sqrt", ["x"], ["y"], name="sqrt")]
    proto = F._model(nodes, [F.vi("x", [4])], [F.vi("y", [4])])
    data = [{"x": np.array([-1, 1, 4, 9], np.float32)}]
    row = trtlab.compare(proto, {"same": proto}, data).iloc[0]
    if row["n_nan"] != 0 or row["max_abs"] != 0 or not bool(row["pass"]):
        raise Wrong(f"NaN in both reference and candidate counted as an error: {row.to_dict()}")


def _passthrough() -> onnx.ModelProto:
    """x[2,3] is a graph output itself; x -> Relu -> y"""
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    return F._model(nodes, [F.vi("x", [2, 3])], [F.vi("x", [2, 3]), F.vi("y", [2, 3])])


@case("output-aliasing")
def hybrid_output_does_not_alias_input(tmp: Path) -> None:

    m, part = fallback_only(_passthrough())
    x = np.ones((2, 3), np.float32)
    with built(part, cache_dir=tmp, progress=False) as hybrid:
        out = hybrid.run({"x": x})
    out["x"][:] = 7
    if np.may_share_memory(out["x"], x) or x[0, 0] != 1:
        raise Wrong("HybridModel.run returned the caller's input array as an output")


@case("output-aliasing")
def partition_run_output_does_not_alias_input(tmp: Path) -> None:
    m, part = fallback_only(_passthrough())
    x = np.ones((2, 3), np.float32)
    out = part.run({"x": x})
    if np.may_share_memory(out["x"], x):
        raise Wrong("Partition.run returned the caller's input array as an output")


def fusion_doc(layer: Dict[str, Any]) -> Dict[str, Any]:
    base = {"Name": "conv", "LayerType": "CaskConvolution",
            "Inputs": [{"Name": "x", "Dimensions": [1, 3, 8, 8], "Format/Datatype": "Row major linear FP32"}],
            "Outputs": [{"Name": "y", "Dimensions": [1, 4, 8, 8], "Format/Datatype": "Row major linear FP32"}]}
    base.update(layer)
    return {"Layers": [base], "Bindings": ["x", "y"]}


#: name, engine-inspector document (or JSON text), words the FusionError must have.
FUSION_JSON: List[Tuple[str, Any, Tuple[str, ...]]] = [
    ("layer_name_null", fusion_doc({"Name": None}), ("name",)),
    ("layer_name_number", fusion_doc({"Name": 5}), ("name",)),
    ("layer_type_null", fusion_doc({"LayerType": None}), ("layertype",)),
    ("tensor_name_null", fusion_doc({"Inputs": [{"Name": None, "Format/Datatype": "FP32"}]}), ("name",)),
    ("inputs_not_a_list", fusion_doc({"Inputs": 5}), ("inputs",)),
    ("outputs_a_string", fusion_doc({"Outputs": "y"}), ("outputs",)),
    ("dimensions_text", fusion_doc({"Inputs": [{"Name": "x", "Dimensions": ["a"], "Format/Datatype": "FP32"}]}),
     ("dimensions",)),
    ("dimensions_float", fusion_doc({"Inputs": [{"Name": "x", "Dimensions": [1.5], "Format/Datatype": "FP32"}]}),
     ("dimensions",)),
    ("dimensions_object", fusion_doc({"Inputs": [{"Name": "x", "Dimensions": {"a": 1}, "Format/Datatype": "FP32"}]}),
     ("dimensions",)),
    ("io_tensor_name_null", {"Layers": fusion_doc({})["Layers"], "I/O Tensors": [{"Name": None, "DataType": "Float"}]},
     ("name",)),
    ("io_tensor_dims_text", {"Layers": fusion_doc({})["Layers"],
                             "I/O Tensors": [{"Name": "x", "DataType": "Float", "Dimensions": ["?"]}]},
     ("dimensions",)),
    ("deep_nesting", "[" * 200000 + "]" * 200000, ("nested",)),
    ("deep_object_nesting", '{"a":' * 100000 + "1" + "}" * 100000, ("nested",)),
    ("empty_text", "   ", ("empty",)),
    ("empty_bytes", b"", ("empty",)),
    ("profile_as_layers", [{"count": 1}, {"name": "x", "averageMs": 1.0}], ("profile",)),
]


def _fusion_case(doc: Any, words: Tuple[str, ...]) -> Callable[[Path], None]:
    def run(tmp: Path) -> None:
        import trtlab

        raises(lambda: trtlab.fusion(doc), "FusionError", *words)

    return run


for _name, _doc, _words in FUSION_JSON:
    case("fusion-json-validation", name=f"fusion_{_name}")(_fusion_case(_doc, _words))


@case("fusion-json-validation")
def fusion_profile_name_null(tmp: Path) -> None:
    import trtlab

    raises(lambda: trtlab.fusion(fusion_doc({}), profile=[{"count": 1}, {"name": None, "averageMs": 1.0}]),
           "FusionError", "name")


@case("fusion-json-validation")
def fusion_valid_document_still_reads(tmp: Path) -> None:
    import trtlab

    rep = trtlab.fusion(fusion_doc({}))
    if len(rep.layers) != 1 or rep.layers["name"].iloc[0] != "conv":
        raise Wrong(f"a valid document read wrongly: {rep.layers}")


# ----------------------------------------------------------------------------------------------
# Hangs and raw tracebacks: files that are not regular files
# ----------------------------------------------------------------------------------------------


def _fifo(tmp: Path) -> Path:
    path = tmp / "model.onnx"
    os.mkfifo(path)
    return path


def _socket(tmp: Path) -> Path:
    path = tmp / "model.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    return path


def _unreadable(tmp: Path) -> Path:
    path = tmp / "secret.onnx"
    path.write_bytes(model_with_io().SerializeToString())
    os.chmod(path, 0)
    drop_privileges()
    return path


def _sparse_huge(tmp: Path) -> Path:
    path = tmp / "huge.onnx"
    with open(path, "wb") as fh:
        fh.truncate(3 * 2 ** 30)
    return path


def _loop(tmp: Path) -> Path:
    (tmp / "a.onnx").symlink_to(tmp / "b.onnx")
    (tmp / "b.onnx").symlink_to(tmp / "a.onnx")
    return tmp / "a.onnx"


#: name, maker of a hostile path, error class, words.
HOSTILE_PATHS: List[Tuple[str, Callable[[Path], Path], str, Tuple[str, ...]]] = [
    ("fifo", _fifo, "ModelLoadError", ("fifo",)),
    ("dev_zero", lambda tmp: Path("/dev/zero"), "ModelLoadError", ("not a regular file",)),
    ("socket", _socket, "ModelLoadError", ("socket",)),
    ("unreadable", _unreadable, "ModelLoadError", ("permission",)),
    ("folder", lambda tmp: tmp, "ModelLoadError", ("folder",)),
    ("sparse_3gib", _sparse_huge, "ModelLoadError", ("limit",)),
    ("symlink_loop", _loop, "ModelLoadError", ()),
]


def _load_case(maker: Callable[[Path], Path], error: str, words: Tuple[str, ...]) -> Callable[[Path], None]:
    def run(tmp: Path) -> None:
        import trtlab

        path = maker(tmp)
        raises(lambda: trtlab.load(path), error, *words)

    return run


def _cli_inspect_case(maker: Callable[[Path], Path]) -> Callable[[Path], None]:
    def run(tmp: Path) -> None:
        cli_fails("inspect", maker(tmp))

    return run


def _fusion_path_case(maker: Callable[[Path], Path]) -> Callable[[Path], None]:
    def run(tmp: Path) -> None:
        import trtlab

        path = maker(tmp)
        raises(lambda: trtlab.fusion(path), "FusionError")

    return run


for _name, _maker, _error, _words in HOSTILE_PATHS:
    case("non-regular-files", name=f"load_{_name}", timeout=20)(_load_case(_maker, _error, _words))
    if _name in ("fifo", "dev_zero", "socket", "unreadable"):
        case("non-regular-files", name=f"cli_inspect_{_name}", timeout=20)(_cli_inspect_case(_maker))
        case("non-regular-files", name=f"fusion_path_{_name}", timeout=20)(_fusion_path_case(_maker))


@case("non-regular-files", timeout=20)
def feeds_fifo_cli(tmp: Path) -> None:
    path = tmp / "feeds.npz"
    os.mkfifo(path)
    cli_fails("bench", zoo_model(), "--feeds", path, "--iterations", "1", "--quiet", words=["fifo"])


@case("non-regular-files", timeout=20)
def garbage_bytes_load(tmp: Path) -> None:
    import trtlab

    raises(lambda: trtlab.load(os.urandom(4096)), "ModelLoadError")


# ----------------------------------------------------------------------------------------------
# The engine cache
# ----------------------------------------------------------------------------------------------


def _key(tag: str = "k") -> Any:
    from trtlab.backends.tensorrt.cache import CacheKey

    return CacheKey.make(tag.encode(), precision="fp32", settings={}, profiles=(), flavor="tensorrt_rtx",
                         trt_version="1", target="aot")


@case("engine-cache")
def cache_readonly_with_corrupt_entry(tmp: Path) -> None:
    from trtlab.backends.tensorrt.cache import EngineCache

    folder = tmp / "cache"
    cache = EngineCache(folder)
    cache.put(_key(), b"engine")
    path = cache.path(_key())
    path.write_bytes(b"garbage")
    os.chmod(folder, 0o555)
    drop_privileges()
    if os.access(folder, os.W_OK):
        raise Wrong("the folder is still writable: the fault was not set up")
    data, lookup = EngineCache(folder).get_or_build(_key(), lambda: b"rebuilt")
    if data != b"rebuilt" or lookup.status != "corrupt":
        raise Wrong(f"read-only cache with a corrupt entry gave {data!r}, {lookup.status}")


@case("engine-cache")
def cache_disk_full_is_a_warning(tmp: Path) -> None:
    from trtlab.backends.tensorrt.cache import EngineCache

    cache = EngineCache(tmp / "cache")
    with disk_full(limit=64), warned("not cached"):
        data, lookup = cache.get_or_build(_key(), lambda: b"x" * 4096)
    if data != b"x" * 4096:
        raise Wrong("the built engine was lost when the cache could not store it")
    no_temporaries(tmp / "cache")
    if cache.entries():
        raise Destroyed(f"a half-written entry was left: {list(cache.entries())}")


@case("engine-cache")
def cache_refuses_world_writable_folder(tmp: Path) -> None:
    from trtlab.backends.tensorrt.cache import EngineCache

    folder = tmp / "shared"
    folder.mkdir()
    os.chmod(folder, 0o777)
    raises(lambda: EngineCache(folder).get(_key()), "CacheError", "chmod o-w")


@case("engine-cache")
def cache_refuses_folder_of_another_user(tmp: Path) -> None:
    from trtlab.backends.tensorrt.cache import EngineCache

    folder = tmp / "theirs"
    folder.mkdir()
    if os.geteuid() == 0:
        os.chown(folder, 12345, 12345)
    else:
        folder = Path("/")  # owned by root, never by the user running the suite unprivileged
    raises(lambda: EngineCache(folder).get(_key()), "CacheError", "another user")


@case("engine-cache")
def cache_ignores_world_writable_entry(tmp: Path) -> None:
    from trtlab.backends.tensorrt.cache import EngineCache

    cache = EngineCache(tmp / "cache")
    cache.put(_key(), b"good")
    os.chmod(cache.path(_key()), 0o666)
    if cache.get(_key()).status == "hit":
        raise Wrong("an entry anyone could have replaced was used")


@case("engine-cache")
def cache_removes_stale_temporaries(tmp: Path) -> None:
    from trtlab.backends.tensorrt.cache import EngineCache

    folder = tmp / "cache"
    cache = EngineCache(folder)
    cache.put(_key(), b"engine")
    stale = folder / ".0123456789abcdef.xyz.tmp"
    stale.write_bytes(b"half")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    EngineCache(folder).get(_key())
    if stale.exists():
        raise Destroyed("a stale temporary file from a killed write was never removed")
    fresh = folder / ".fedcba9876543210.abc.tmp"
    fresh.write_bytes(b"half")
    EngineCache(folder).clear()
    if fresh.exists():
        raise Destroyed("EngineCache.clear() left a temporary file")


@case("engine-cache", timeout=20)
def cache_entry_is_a_fifo(tmp: Path) -> None:
    from trtlab.backends.tensorrt.cache import EngineCache

    cache = EngineCache(tmp / "cache")
    cache.put(_key("other"), b"x")
    os.mkfifo(cache.path(_key()))
    data, lookup = cache.get_or_build(_key(), lambda: b"built")
    if data != b"built":
        raise Wrong(f"a FIFO entry gave {data!r}")


@case("engine-cache")
def cache_concurrent_writers_leave_one_valid_entry(tmp: Path) -> None:
    from trtlab.backends.tensorrt.cache import EngineCache

    folder = tmp / "cache"
    pids = []
    for i in range(4):
        pid = os.fork()
        if pid == 0:
            try:
                for _ in range(20):
                    EngineCache(folder).put(_key(), b"E" * 50000)
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    if EngineCache(folder).get(_key()).data != b"E" * 50000:
        raise Wrong("concurrent writers left an invalid entry")
    no_temporaries(folder)


@case("engine-cache", quick=False, timeout=120)
def build_with_full_disk_still_builds(tmp: Path) -> None:
    import trtlab
    from trtlab.backends.tensorrt import flavor

    if not flavor.info().build:
        raise Wrong("TensorRT cannot build engines here; this case needs the builder")
    m = trtlab.load(F.conv_relu(batch=1))
    part = trtlab.partition(m, support={n: (True, "ok") for n in m.node_names})
    with disk_full(limit=0), warned("not"):
        with built(part, cache_dir=tmp / "cache", progress=False) as hybrid:
            engines = dict(hybrid.engines)
    if not engines or not all(len(e) for e in engines.values()):
        raise Wrong("no engine when the disk is full")
    if (tmp / "cache").exists():
        no_temporaries(tmp / "cache" / "engines") if (tmp / "cache" / "engines").exists() else None


# ----------------------------------------------------------------------------------------------
# trtlab bench --feeds and other CLI input
# ----------------------------------------------------------------------------------------------


def _npz(tmp: Path, name: str, **arrays: Any) -> Path:
    path = tmp / name
    np.savez(path, **arrays)
    return path


def _x(dtype: Any = np.float32, shape: Tuple[int, ...] = (2, 1, 8, 8)) -> np.ndarray:
    return np.zeros(shape, dtype)


#: name, extra argv (a callable of the scratch folder), words the error must have.
BENCH_CLI: List[Tuple[str, Callable[[Path], List[Any]], Tuple[str, ...]]] = [
    ("npy_file", lambda t: ["--feeds", (np.save(t / "x.npy", _x()), t / "x.npy")[1]], (".npz",)),
    ("wrong_dtype", lambda t: ["--feeds", _npz(t, "f.npz", input=_x(np.float64))], ("dtype", "float32")),
    ("missing_feed", lambda t: ["--feeds", _npz(t, "f.npz", other=_x())], ("missing", "input")),
    ("extra_feed", lambda t: ["--feeds", _npz(t, "f.npz", input=_x(), extra=_x())], ("unknown", "extra")),
    ("wrong_rank", lambda t: ["--feeds", _npz(t, "f.npz", input=np.zeros((8, 8), np.float32))], ("rank",)),
    ("wrong_dim", lambda t: ["--feeds", _npz(t, "f.npz", input=_x(shape=(2, 1, 9, 8)))], ("axis",)),
    ("object_array", lambda t: ["--feeds", _npz(t, "f.npz", input=np.array([{"a": 1}], dtype=object))],
     ("object",)),
    ("empty_archive", lambda t: ["--feeds", _npz(t, "f.npz")], ("no arrays",)),
    ("not_an_archive", lambda t: ["--feeds", (t.joinpath("f.npz").write_text("hello"), t / "f.npz")[1]],
     ("not a numpy",)),
    ("missing_file", lambda t: ["--feeds", t / "nope.npz"], ("does not exist",)),
    ("batch_negative", lambda t: ["--batch", "-3"], ("batch",)),
    ("batch_zero", lambda t: ["--batch", "0"], ("batch",)),
    ("batch_2_40", lambda t: ["--batch", str(2 ** 40)], ("limit",)),
    ("iterations_zero", lambda t: ["--iterations", "0"], ("iterations",)),
    ("warmup_negative", lambda t: ["--warmup", "-1"], ("warmup",)),
    ("int8_without_calibration", lambda t: ["--precision", "int8"], ("--calibration",)),
    ("int8_calibration_npy", lambda t: ["--precision", "int8", "--calibration",
                                        (np.save(t / "c.npy", _x()), t / "c.npy")[1]], (".npz",)),
    ("int8_calibration_wrong_name", lambda t: ["--precision", "int8", "--calibration",
                                               _npz(t, "c.npz", other=_x())], ("input",)),
]


def _bench_case(extra: Callable[[Path], List[Any]], words: Tuple[str, ...]) -> Callable[[Path], None]:
    def run(tmp: Path) -> None:
        argv = ["bench", zoo_model(), "--iterations", "2", "--warmup", "0", "--quiet", "--cache-dir", tmp / "c"]
        cli_fails(*argv, *extra(tmp), words=words)

    return run


for _name, _extra, _words in BENCH_CLI:
    case("cli-input-validation", name=f"bench_{_name}", timeout=60)(_bench_case(_extra, _words))


@case("cli-input-validation", timeout=60)
def build_int8_without_calibration(tmp: Path) -> None:
    cli_fails("build", zoo_model(), "--precision", "int8", "--quiet", "--cache-dir", tmp, words=["--calibration"])


@case("cli-input-validation", quick=False, timeout=180)
def build_int8_with_calibration_runs(tmp: Path) -> None:
    from trtlab import zoo

    x, _ = zoo.digits("calib")
    path = _npz(tmp, "calib.npz", input=x[:64])
    code, out, err = cli("build", zoo_model(), "--precision", "int8", "--calibration", path, "--quiet",
                         "--cache-dir", tmp / "c")
    if code or "int8" not in out.lower():
        raise Wrong(f"int8 build with --calibration failed (exit {code}): {err[-400:]} {out[-400:]}")


@case("cli-input-validation", timeout=60)
def partition_negative_min_subgraph_size(tmp: Path) -> None:
    cli_fails("partition", zoo_model(), "--out", tmp / "o", "--min-subgraph-size", "-1")


# ----------------------------------------------------------------------------------------------
# Run-time failures of ONNX Runtime
# ----------------------------------------------------------------------------------------------


def _gather() -> onnx.ModelProto:
    """idx[1] (int64) -> Gather(table[4]) -> y ; an index out of range fails at run time."""
    nodes = [helper.make_node("Gather", ["table", "idx"], ["g"], name="gather"),
             helper.make_node("Relu", ["g"], ["y"], name="relu")]
    return F._model(nodes, [F.vi("idx", [1], TensorProto.INT64)], [F.vi("y", [1])],
                    [F.const("table", np.arange(4, dtype=np.float32))])


@case("runtime-failures")
def hybrid_run_bad_index_is_run_error(tmp: Path) -> None:

    m, part = fallback_only(_gather())
    with built(part, cache_dir=tmp, progress=False) as hybrid:
        good = hybrid.run({"idx": np.array([2], np.int64)})
        if good["y"].tolist() != [2.0]:
            raise Wrong(f"Gather gave {good['y']}")
        raises(lambda: hybrid.run({"idx": np.array([10], np.int64)}), "RunError", "onnx runtime", "idx")


@case("runtime-failures")
def run_onnx_bad_index_is_run_error(tmp: Path) -> None:
    from trtlab.backends.onnxruntime.session import run_onnx

    raises(lambda: run_onnx(_gather(), {"idx": np.array([-9], np.int64)}), "RunError", "onnx runtime")


@case("runtime-failures")
def partition_run_bad_index_is_run_error(tmp: Path) -> None:
    m, part = fallback_only(_gather())
    raises(lambda: part.run({"idx": np.array([99], np.int64)}), "RunError")


@case("runtime-failures")
def fast_call_failure_is_run_error(tmp: Path) -> None:
    from trtlab.backends.onnxruntime.session import fast_call, session

    call = fast_call(session(_gather(), ["CPUExecutionProvider"]))
    raises(lambda: call(["y"], {"idx": np.array([7], np.int64)}), "RunError")


@case("runtime-failures")
def run_with_object_feed(tmp: Path) -> None:

    m, part = fallback_only(model_with_io())
    with built(part, cache_dir=tmp, progress=False) as hybrid:
        raises(lambda: hybrid.run({"x": np.array([[object()] * 3] * 2)}), "InputError")


@case("runtime-failures")
def run_with_ragged_list_feed(tmp: Path) -> None:

    m, part = fallback_only(model_with_io())
    with built(part, cache_dir=tmp, progress=False) as hybrid:
        raises(lambda: hybrid.run({"x": [[1.0, 2.0], [3.0]]}), "InputError")


@case("runtime-failures")
def benchmark_iterations_zero(tmp: Path) -> None:
    import trtlab

    raises(lambda: trtlab.benchmark(lambda f: f, {"x": np.zeros(2)}, iterations=0, progress=False),
           "InputError", "iterations")


@case("runtime-failures")
def random_inputs_negative_batch(tmp: Path) -> None:
    import trtlab
    from trtlab.feeds import random_inputs

    raises(lambda: random_inputs(trtlab.load(F.conv_relu()), batch=-3), "InputError", "batch")


# ----------------------------------------------------------------------------------------------
# Partition JSON
# ----------------------------------------------------------------------------------------------


def _tamper(mutate: Callable[[Dict[str, Any]], Any]) -> Callable[[Path], None]:
    def run(tmp: Path) -> None:
        import trtlab

        m, part = three_segments()
        doc = json.loads(part.to_json())
        mutate(doc)
        raises(lambda: trtlab.Partition.from_json(json.dumps(doc), m), "PartitionError", "json")

    return run


def _set(path: Sequence[Any], value: Any) -> Callable[[Dict[str, Any]], None]:
    def mutate(doc: Dict[str, Any]) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _swap_segments(doc: Dict[str, Any]) -> None:
    doc["segments"][0], doc["segments"][1] = doc["segments"][1], doc["segments"][0]


def _swap_and_reindex(doc: Dict[str, Any]) -> None:
    _swap_segments(doc)
    for i, seg in enumerate(doc["segments"]):
        seg["index"] = i


def _duplicate_segment(doc: Dict[str, Any]) -> None:
    doc["segments"].append(copy.deepcopy(doc["segments"][0]))


def _drop_output(doc: Dict[str, Any]) -> None:
    doc["segments"][0]["outputs"] = doc["segments"][0]["outputs"][:-1]


def _rename_output(doc: Dict[str, Any]) -> None:
    doc["segments"][0]["outputs"][0] = "no_such_tensor"


def _extra_input(doc: Dict[str, Any]) -> None:
    doc["segments"][-1]["inputs"].append("r")


def _reverse_nodes(doc: Dict[str, Any]) -> None:
    seg = max(doc["segments"], key=lambda s: len(s["nodes"]))
    seg["nodes"] = seg["nodes"][::-1]


def _move_node(doc: Dict[str, Any]) -> None:
    node = doc["segments"][0]["nodes"].pop()
    doc["segments"][-1]["nodes"].append(node)


def _flip_backend(doc: Dict[str, Any]) -> None:
    doc["segments"][1]["backend"] = "tensorrt" if doc["segments"][1]["backend"] == "fallback" else "fallback"


#: name, mutation of the JSON document.
PARTITION_JSON: List[Tuple[str, Callable[[Dict[str, Any]], Any]]] = [
    ("verdicts_list", _set(["verdicts"], [])),
    ("verdicts_null", _set(["verdicts"], None)),
    ("verdict_not_pair", lambda d: d["verdicts"].update({next(iter(d["verdicts"])): "yes"})),
    ("verdict_missing_node", lambda d: d["verdicts"].pop(next(iter(d["verdicts"])))),
    ("segments_object", _set(["segments"], {})),
    ("segment_not_object", lambda d: d["segments"].__setitem__(0, 5)),
    ("segment_nodes_text", lambda d: d["segments"][0].__setitem__("nodes", "relu")),
    ("segment_index_text", lambda d: d["segments"][0].__setitem__("index", "0")),
    ("segments_reordered", _swap_segments),
    ("segments_reordered_reindexed", _swap_and_reindex),
    ("segment_duplicated", _duplicate_segment),
    ("output_dropped", _drop_output),
    ("output_renamed", _rename_output),
    ("input_added", _extra_input),
    ("nodes_reversed", _reverse_nodes),
    ("node_moved", _move_node),
    ("backend_unknown", lambda d: d["segments"][0].__setitem__("backend", "cuda")),
    ("backend_flipped", _flip_backend),
    ("macs_tampered", lambda d: d["segments"][0].__setitem__("macs", 10 ** 12)),
    ("name_with_slash", lambda d: d["segments"][0].__setitem__("name", "../../etc/passwd")),
    ("name_dotdot", lambda d: d["segments"][0].__setitem__("name", "..")),
    ("name_empty", lambda d: d["segments"][0].__setitem__("name", "")),
    ("name_nul", lambda d: d["segments"][0].__setitem__("name", "a\x00b")),
    ("name_duplicate", lambda d: d["segments"][1].__setitem__("name", d["segments"][0]["name"])),
    ("name_too_long", lambda d: d["segments"][0].__setitem__("name", "x" * 300)),
    ("decisions_text", _set(["decisions"], "none")),
    ("forced_list", _set(["forced"], [])),
    ("settings_null", _set(["settings"], None)),
]

for _name, _mutate in PARTITION_JSON:
    case("partition-json-validation", name=f"partition_json_{_name}")(_tamper(_mutate))


@case("partition-json-validation")
def partition_json_deep_nesting(tmp: Path) -> None:
    import trtlab

    m, _ = three_segments()
    raises(lambda: trtlab.Partition.from_json("[" * 100000 + "]" * 100000, m), "PartitionError")


@case("partition-json-validation")
def partition_json_roundtrip_still_works(tmp: Path) -> None:
    import trtlab

    m, part = three_segments()
    back = trtlab.Partition.from_json(part.to_json(), m)
    if back.segments != part.segments:
        raise Wrong("a valid partition JSON no longer reads back")
    x = {"x": np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)}
    a, b = part.run(x), back.run(x)
    if not all(np.array_equal(a[k], b[k]) for k in a):
        raise Wrong("the read-back partition computes something else")


# ----------------------------------------------------------------------------------------------
# The calibration cache
# ----------------------------------------------------------------------------------------------


def _calibration_case(tamper: Callable[[Path], None]) -> Callable[[Path], None]:
    def run(tmp: Path) -> None:
        import trtlab
        from trtlab.precision import calibrate

        m = trtlab.load(F.mlp())
        data = {"x": np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)}
        fresh = calibrate(m, data, cache_dir=tmp / "cal")
        path = Path(fresh.attrs["cache_path"])
        tamper(path)
        with warned("recalibrat"):
            again = calibrate(m, data, cache_dir=tmp / "cal")
        if again.attrs["cache"] == "hit" or not np.allclose(again["amax"].to_numpy(), fresh["amax"].to_numpy()):
            raise Wrong(f"a tampered calibration cache was used (cache {again.attrs['cache']})")

    return run


def _edit_amax(path: Path) -> None:
    doc = json.loads(path.read_text())
    first = next(iter(doc["tensors"]))
    doc["tensors"][first]["amax"] = 1e-9
    path.write_text(json.dumps(doc))


def _amax_text(path: Path) -> None:
    doc = json.loads(path.read_text())
    for s in doc["tensors"].values():
        s["amax"] = "big"
    path.write_text(json.dumps(doc))


def _drop_tensor(path: Path) -> None:
    doc = json.loads(path.read_text())
    doc["tensors"].pop(next(iter(doc["tensors"])))
    path.write_text(json.dumps(doc))


#: name, tampering of the cache file.
CALIBRATION_CACHE: List[Tuple[str, Callable[[Path], None]]] = [
    ("amax_edited", _edit_amax),
    ("amax_text", _amax_text),
    ("tensor_dropped", _drop_tensor),
    ("json_list", lambda p: p.write_text("[1, 2, 3]")),
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[:40])),
    ("binary", lambda p: p.write_bytes(os.urandom(256))),
    ("deep_nesting", lambda p: p.write_text("[" * 100000 + "]" * 100000)),
]

for _name, _tamper_file in CALIBRATION_CACHE:
    case("calibration-cache", name=f"calibration_cache_{_name}")(_calibration_case(_tamper_file))


# ----------------------------------------------------------------------------------------------
# Unclear messages
# ----------------------------------------------------------------------------------------------


@case("clear-messages")
def constant_node_with_external_data(tmp: Path) -> None:
    import trtlab
    from onnx import external_data_helper

    value = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor = numpy_helper.from_array(value, "c_value")
    (tmp / "weights.bin").write_bytes(tensor.raw_data)
    external_data_helper.set_external_data(tensor, location="weights.bin", offset=0, length=len(tensor.raw_data))
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    nodes = [helper.make_node("Constant", [], ["c"], name="const", value=tensor),
             helper.make_node("Add", ["x", "c"], ["y"], name="add")]
    proto = F._model(nodes, [F.vi("x", [2, 3])], [F.vi("y", [2, 3])])
    (tmp / "m.onnx").write_bytes(proto.SerializeToString())
    m = trtlab.load(tmp / "m.onnx")
    from trtlab.backends.onnxruntime.session import run_onnx

    got = run_onnx(m, {"x": np.ones((2, 3), np.float32)})["y"]
    if not np.array_equal(got, value + 1):
        raise Wrong(f"external Constant computed {got}")


@case("clear-messages")
def external_data_escaping_the_folder(tmp: Path) -> None:
    import trtlab
    from onnx import external_data_helper

    tensor = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    external_data_helper.set_external_data(tensor, location="../../../../etc/hostname", offset=0, length=16)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    nodes = [helper.make_node("Add", ["x", "w"], ["y"], name="add")]
    proto = F._model(nodes, [F.vi("x", [4])], [F.vi("y", [4])], [tensor])
    (tmp / "m.onnx").write_bytes(proto.SerializeToString())
    raises(lambda: trtlab.load(tmp / "m.onnx"), "ExternalDataError", "external data")


@case("clear-messages")
def tensor_proto_given_as_model(tmp: Path) -> None:
    import trtlab

    path = tmp / "input_0.pb"
    path.write_bytes(numpy_helper.from_array(np.ones((1, 3, 8, 8), np.float32), "x").SerializeToString())
    raises(lambda: trtlab.load(path), "ModelLoadError", "tensor", "not a model")


@case("clear-messages")
def onnx_backend_test_input_given_as_model(tmp: Path) -> None:
    import glob

    import trtlab

    root = Path(onnx.__file__).parent / "backend" / "test" / "data"
    inputs = sorted(glob.glob(str(root / "*" / "*" / "test_data_set_0" / "input_0.pb")))
    if not inputs:
        raise Wrong(f"the onnx wheel's backend test data is missing under {root}")
    raises(lambda: trtlab.load(inputs[0]), "ModelLoadError", "tensor")


@case("clear-messages")
def compare_with_a_path_as_reference(tmp: Path) -> None:
    import trtlab

    path = tmp / "mlp.onnx"
    path.write_bytes(F.mlp().SerializeToString())
    data = {"x": np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)}
    table = trtlab.compare(str(path), {"same": F.mlp()}, data)
    if table["max_abs"].max() != 0:
        raise Wrong(f"a model compared with itself differs: {table}")


@case("clear-messages")
def compare_with_a_missing_path(tmp: Path) -> None:
    import trtlab

    raises(lambda: trtlab.compare(str(tmp / "nope.onnx"), {"m": F.mlp()}, {"x": np.zeros((2, 16), np.float32)}),
           "ModelLoadError", "not found")


@case("clear-messages")
def fusion_empty_file(tmp: Path) -> None:
    import trtlab

    (tmp / "layers.json").write_bytes(b"")
    err = raises(lambda: trtlab.fusion(tmp / "layers.json"), "FusionError", "empty")
    if "deserializ" in str(err).lower():
        raise BadError(f"an empty file is described as an engine: {err}")


# ----------------------------------------------------------------------------------------------
# Resource limits and thread safety
# ----------------------------------------------------------------------------------------------


def _constant_of_shape(n: int) -> onnx.ModelProto:
    """shape=[n, n] -> ConstantOfShape -> ReduceSum -> + x -> y ; a tiny file, a huge constant."""
    nodes = [helper.make_node("Constant", [], ["s"], name="shape",
                              value=helper.make_tensor("v", TensorProto.INT64, [2], [n, n])),
             helper.make_node("ConstantOfShape", ["s"], ["big"], name="cos"),
             helper.make_node("ReduceSum", ["big"], ["r"], name="sum", keepdims=0),
             helper.make_node("Add", ["x", "r"], ["y"], name="add")]
    return F._model(nodes, [F.vi("x", [1])], [F.vi("y", [1])])


@case("resource-limits", timeout=60)
def folding_skips_a_huge_constant(tmp: Path) -> None:
    import trtlab

    proto = _constant_of_shape(16384)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    vm = int(next(ln for ln in open("/proc/self/status") if ln.startswith("VmSize")).split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + (900 << 20), hard))
    try:
        m = trtlab.load(proto, fold_constants=True)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    if grown > 400 << 20:
        raise Wrong(f"load() of a {len(proto.SerializeToString())}-byte model grew memory by {grown >> 20} MiB")
    if "ConstantOfShape" not in set(m.nodes["op_type"]):
        raise Wrong("the huge constant vanished from the graph")


@case("resource-limits")
def folding_limit_is_configurable(tmp: Path) -> None:
    import trtlab

    small = trtlab.load(_constant_of_shape(8), fold_constants=True, fold_max_bytes=16)
    folded = trtlab.load(_constant_of_shape(8), fold_constants=True)
    if "ConstantOfShape" not in set(small.nodes["op_type"]) or "ConstantOfShape" in set(folded.nodes["op_type"]):
        raise Wrong("fold_max_bytes does not decide what is folded")
    from trtlab.backends.onnxruntime.session import run_onnx

    x = {"x": np.ones(1, np.float32)}
    if run_onnx(small, x)["y"][0] != run_onnx(folded, x)["y"][0]:
        raise Wrong("the limit changed what the model computes")


@case("resource-limits")
def symbolic_inference_never_changes_directory(tmp: Path) -> None:
    from trtlab import extract

    calls: List[str] = []
    real = os.chdir
    os.chdir = lambda path: calls.append(str(path))  # type: ignore[assignment]
    try:
        # A custom op leaves shapes unknown: inference is incomplete, the path that used to chdir.
        nodes = [helper.make_node("Mystery", ["x"], ["y"], name="m", domain="custom.adv")]
        proto = F._model(nodes, [F.vi("x", [2])], [F.vi("y", None)], extra_opsets=[("custom.adv", 1)])
        extract._symbolic_types(proto, ["y"])
    finally:
        os.chdir = real
    if calls:
        raise Wrong(f"shape inference changed the working directory of every thread: {calls}")
    if any(p.name.startswith("sym_shape_infer_temp") for p in Path.cwd().iterdir()):
        raise Destroyed("shape inference wrote a file into the working directory")


@case("resource-limits")
def feeds_too_large_for_random_inputs(tmp: Path) -> None:
    import trtlab
    from trtlab.feeds import random_inputs

    proto = F._model([helper.make_node("Relu", ["x"], ["y"], name="r")], [F.vi("x", [2 ** 20, 2 ** 20])],
                     [F.vi("y", [2 ** 20, 2 ** 20])])
    raises(lambda: random_inputs(trtlab.load(proto)), "InputError", "limit")


# ----------------------------------------------------------------------------------------------
# Validation at the other entry points
# ----------------------------------------------------------------------------------------------


def _unknown_op() -> onnx.ModelProto:
    proto = F.mlp()
    proto.graph.node.append(helper.make_node("NoSuchOp", ["y"], ["q"], name="ns"))
    return proto


def _mlp_partition() -> Any:
    import trtlab

    return trtlab.partition(trtlab.load(F.mlp()))


def _call(name: str, *args: Any, **kwargs: Any) -> Callable[[], Any]:
    def run() -> Any:
        import trtlab

        return getattr(trtlab, name)(*args, **kwargs)

    return run


#: name, call (made lazily in the child), error class, words.
ENTRY_POINTS: List[Tuple[str, Callable[[], Callable[[], Any]], str, Tuple[str, ...]]] = [
    ("build_workspace_negative", lambda: _call("build", _mlp_partition(), workspace=-5, progress=False),
     "BuildError", ("workspace",)),
    ("build_opt_level_text", lambda: _call("build", _mlp_partition(), opt_level="max", progress=False),
     "BuildError", ("opt_level",)),
    ("build_cache_dir_is_a_file", lambda: _call("build", _mlp_partition(), cache_dir="/etc/hostname",
                                                progress=False), "CacheError", ("not a folder",)),
    ("build_precision_unknown", lambda: _call("build", _mlp_partition(), precision="fp4", progress=False),
     "PrecisionError", ("fp4",)),
    ("build_int8_without_data", lambda: _call("build", _mlp_partition(), precision="int8", progress=False),
     "CalibrationError", ("calibration_data",)),
    ("build_shapes_negative", lambda: _call("build", _mlp_partition(), shapes={"x": (-1, 16)}, progress=False),
     "InputError", ("below 1",)),
    ("load_unknown_op", lambda: _call("load", _unknown_op()), "InvalidModelError", ("nosuchop",)),
    ("load_truncated_bytes", lambda: _call("load", F.mlp().SerializeToString()[:200]), "ModelLoadError",
     ("truncated",)),
    ("load_not_a_model_object", lambda: _call("load", 5), "ModelLoadError", ("cannot read",)),
    ("partition_support_text", lambda: _call("partition", F.mlp(), support="yes"), "PartitionError", ("support",)),
    ("partition_unknown_excluded_node", lambda: _call("partition", F.mlp(), exclude_nodes=["nope"]),
     "PartitionError", ("nope",)),
    ("check_support_unknown_source", lambda: _call("check_support", F.mlp(), source="magic"), "SupportError",
     ("magic",)),
    ("compare_candidates_a_list", lambda: _call("compare", F.mlp(), [F.mlp()], {"x": np.zeros((2, 16), np.float32)}),
     "CompareError", ("dict",)),
    ("compare_data_without_inputs", lambda: _call("compare", F.mlp(), {"a": F.mlp()},
                                                  {"y": np.zeros((2, 16), np.float32)}), "CompareError", ("x",)),
    ("benchmark_not_runnable", lambda: _call("benchmark", 5, {"x": np.zeros(2)}, iterations=1, progress=False),
     "InputError", ("callable",)),
    ("fusion_not_a_source", lambda: _call("fusion", 5), "FusionError", ("cannot read",)),
    ("fusion_garbage_engine", lambda: _call("fusion", os.urandom(5000)), "FusionError", ()),
]


def _entry_case(make: Callable[[], Callable[[], Any]], error: str, words: Tuple[str, ...]) -> Callable[[Path], None]:
    def run(tmp: Path) -> None:
        raises(make(), error, *words)

    return run


for _name, _make, _error, _words in ENTRY_POINTS:
    case("entry-point-validation", name=_name, timeout=60)(_entry_case(_make, _error, _words))
