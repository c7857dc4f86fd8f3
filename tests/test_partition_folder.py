"""Partition folders read back (trtlab.partition_folder), with weights copied or referenced in place.

The model under test is ``factories.mlp`` with its weights in external data files::

    x[2,16] -> MatMul(w1) -> Add(b1) -> Relu (excluded) -> Gemm(w2, b2) -> Softmax -> y[2,10]

``external`` keeps every tensor in one data file (``weights.bin``); ``mixed`` keeps only ``w1`` in
``w1.bin`` and ``w2`` (1,280 bytes) embedded in the model file.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import factories as F
import trtlab
from trtlab import _io
from trtlab.backends.onnxruntime.session import session
from trtlab.backends.tensorrt import flavor as trt
from trtlab.cli import main as cli
from trtlab.errors import PartitionError
from trtlab.extract import weights_mode, write_partition
from trtlab.partition_folder import check_weights, read_partition, segment_file


def _external(folder):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mlp.onnx"
    onnx.save_model(F.mlp(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    return path, ["weights.bin"]


def _mixed(folder):
    folder.mkdir(parents=True, exist_ok=True)
    proto = F.mlp()
    w1 = next(t for t in proto.graph.initializer if t.name == "w1")
    (folder / "w1.bin").write_bytes(w1.raw_data)
    length = len(w1.raw_data)
    w1.ClearField("raw_data")
    w1.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", "w1.bin"), ("offset", "0"), ("length", str(length))):
        entry = w1.external_data.add()
        entry.key, entry.value = key, value
    path = folder / "mlp.onnx"
    path.write_bytes(proto.SerializeToString())
    return path, ["w1.bin"]


MAKERS = {"external": _external, "mixed": _mixed}


def _feeds():
    return {"x": np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)}


def _expected(path):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["y"], _feeds())[0]


def _part(path):
    m = trtlab.load(path)
    return trtlab.partition(m, support=trtlab.check_support(m, source="rules"), exclude_ops=("Relu",))


def _run_files(folder, part):
    """Every segment file of ``folder`` in order, each in its own ONNX Runtime session."""
    env = dict(_feeds())
    for seg in part.segments:
        sf = segment_file(folder, seg.index)
        sess = session(sf.proto, ["CPUExecutionProvider"], base_dir=sf.weights_dir)
        names = [o.name for o in sess.get_outputs()]
        env.update(zip(names, sess.run(names, {t: env[t] for t in seg.inputs})))
    return env["y"]


# -- the weight mode ----------------------------------------------------------------------------

def test_auto_references_external_data_and_copies_embedded(tmp_path):
    path, _ = _external(tmp_path / "m")
    assert weights_mode(trtlab.load(path)) == "reference"
    assert weights_mode(trtlab.load(F.mlp())) == "copy"
    with pytest.raises(PartitionError, match="no weights as external data.*--weights copy"):
        weights_mode(trtlab.load(F.mlp()), "reference")
    with pytest.raises(PartitionError, match="not a weight mode"):
        weights_mode(trtlab.load(path), "link")


# -- reference: nothing copied, read back, built and run ----------------------------------------

@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_reference_partition_copies_no_weight_and_runs_like_the_original(tmp_path, kind):
    path, data_files = MAKERS[kind](tmp_path / "m")
    expected = _expected(path)
    part = _part(path)
    assert len(part.segments) == 3
    out = tmp_path / "out"
    written = write_partition(part, out)  # auto: reference
    assert "weights.data" not in written and not (out / "weights.data").exists()
    doc = json.loads((out / "partition.json").read_text())
    record = doc["weights"]
    assert record["mode"] == "reference" and record["folder"] == str(path.parent.resolve())
    assert sorted(record["files"]) == data_files
    for name in data_files:
        st = os.stat(path.parent / name)
        assert record["files"][name] == {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    assert record["model_file"]["path"] == str(path.resolve())
    manifest = json.loads((out / _io.MANIFEST).read_text())
    assert manifest["weights"] == "reference"
    assert sorted(manifest["files"]) == sorted(n for n in written if n != _io.MANIFEST)  # the folder only
    w2 = []
    for name in written:
        if name.endswith(".onnx"):
            saved = onnx.load(str(out / name), load_external_data=False)
            locations = {e.value for t in saved.graph.initializer for e in t.external_data if e.key == "location"}
            assert locations <= set(data_files)
            w2 += [t for t in saved.graph.initializer if t.name == "w2"]
    if kind == "mixed":  # weights the model embeds stay embedded: no stub without data
        assert w2 and all(len(t.raw_data) == 32 * 10 * 4 for t in w2)

    np.testing.assert_allclose(_run_files(out, part), expected, rtol=1e-6, atol=1e-7)
    back = read_partition(out)
    assert [s.nodes for s in back.segments] == [s.nodes for s in part.segments]
    assert back.model.path.resolve() == path.resolve()
    hybrid = trtlab.build(back, cache_dir=False, progress=False)
    np.testing.assert_allclose(hybrid.run(_feeds())["y"], expected, rtol=1e-5, atol=1e-6)


def test_tensorrt_parser_reads_a_reference_segment_from_the_weights_folder(tmp_path):
    if not trt.info().parse:
        pytest.skip(f"no TensorRT ONNX parser installed: {trt.info().reason}")
    from trtlab.backends.tensorrt.parser import _run_parser

    path, _ = _external(tmp_path / "m")
    part = _part(path)
    write_partition(part, tmp_path / "out", weights="reference")
    seg = next(s for s in part.segments if s.backend == "tensorrt")
    sf = segment_file(tmp_path / "out", seg.index)
    assert sf.parser_path == str(path.parent / sf.path.name)
    run = _run_parser(sf.proto.SerializeToString(), sf.parser_path)
    assert run.ok, run
    # the segment as a trtlab Model: the parser path and every step read the weights' folder
    seg_model = sf.model()
    assert seg_model.base_dir == path.parent.resolve()
    assert trtlab.check_support(seg_model, source="parser").frame["supported"].all()
    feeds = {t: np.random.default_rng(2).standard_normal((2, 16)).astype(np.float32) for t in seg.inputs}
    want = session(sf.proto, ["CPUExecutionProvider"], base_dir=sf.weights_dir).run(None, feeds)
    got = trtlab.build(trtlab.partition(seg_model), cache_dir=False, progress=False).run(feeds)
    np.testing.assert_allclose(list(got.values())[0], want[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("change", ["moved", "rewritten", "touched"])
def test_changed_original_weights_are_refused_with_the_fix(tmp_path, change):
    path, _ = _external(tmp_path / "m")
    part = _part(path)
    out = tmp_path / "out"
    write_partition(part, out, weights="reference")
    data = path.parent / "weights.bin"
    if change == "moved":
        data.rename(tmp_path / "elsewhere.bin")
        match = r"weights\.bin, which cannot be read.*moved or deleted.*--weights copy"
    elif change == "rewritten":
        raw = bytearray(data.read_bytes())
        raw[0] ^= 0xFF
        data.write_bytes(bytes(raw))
        os.utime(data, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns + 1_000_000))
        match = r"changed since the partition was written.*--force.*--weights copy"
    else:
        data.write_bytes(data.read_bytes() + b"\0" * 8)  # resized
        match = r"changed since the partition was written"
    for read in (lambda: read_partition(out), lambda: segment_file(out, 0), lambda: check_weights(out)):
        with pytest.raises(PartitionError, match=match):
            read()


def test_a_model_with_other_weights_is_refused(tmp_path):
    path, _ = _external(tmp_path / "m")
    write_partition(_part(path), tmp_path / "out", weights="reference")
    other, _ = _external(tmp_path / "other")
    with pytest.raises(PartitionError, match="reads its weights from"):
        read_partition(tmp_path / "out", trtlab.load(other))


def test_reference_over_the_folder_holding_the_weights_is_refused_and_nothing_lost(tmp_path, monkeypatch):
    path, _ = _external(tmp_path / "m")
    copied = tmp_path / "copied"
    write_partition(_part(path), copied, weights="copy")
    # a segment of the copied folder refers to copied/weights.data: partitioning it by reference
    # over that folder would delete the data it refers to
    seg = trtlab.load(next(copied.glob("00_*.onnx")))
    before = sorted(p.name for p in copied.iterdir())
    part = trtlab.partition(seg, support=trtlab.check_support(seg, source="rules"))
    with pytest.raises(PartitionError, match="holds the weights its segments refer to"):
        write_partition(part, copied, overwrite=True, weights="reference")
    assert sorted(p.name for p in copied.iterdir()) == before
    # refused before any segment is made or any weight read
    import trtlab.extract as extract

    def no_plan(*args, **kwargs):
        raise AssertionError("the folder was planned before its destination was checked")

    monkeypatch.setattr(extract, "folder_plan", no_plan)
    with pytest.raises(PartitionError, match="holds the weights its segments refer to"):
        write_partition(part, copied, overwrite=True, weights="reference")
    check_weights(copied)


# -- copy: self-contained -----------------------------------------------------------------------

def test_copy_partition_stands_alone_after_the_original_is_deleted(tmp_path):
    path, _ = _external(tmp_path / "m")
    expected = _expected(path)
    part = _part(path)
    out = tmp_path / "out"
    written = write_partition(part, out, weights="copy")
    assert (out / "weights.data").is_file() and "weights.data" in json.loads((out / _io.MANIFEST).read_text())["files"]
    assert json.loads((out / "partition.json").read_text())["weights"]["mode"] == "copy"
    shutil.rmtree(path.parent)
    env = dict(_feeds())
    for seg in part.segments:
        file = out / next(n for n in written if n.startswith(f"{seg.index:02d}_"))
        onnx.checker.check_model(str(file), full_check=True)
        sess = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        env.update(zip(names, sess.run(names, {t: env[t] for t in seg.inputs})))
    np.testing.assert_allclose(env["y"], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(_run_files(out, part), expected, rtol=1e-6, atol=1e-7)
    assert check_weights(out) == out
    with pytest.raises(PartitionError, match="cannot be read.*read_partition\\(folder, model\\)"):
        read_partition(out)


@pytest.mark.parametrize("weights", ["copy", "reference"])
def test_manifest_lists_every_file_as_it_is_on_disk(tmp_path, weights, monkeypatch):
    """The MANIFEST's sizes and sha256 (taken from memory while writing, the copied weights with
    the zero gaps between aligned tensors) are those of the files read back."""
    import hashlib

    path, _ = _external(tmp_path / "m")
    out = tmp_path / "out"

    def no_read_back(file):
        raise AssertionError(f"{file} was read back to be hashed")

    monkeypatch.setattr(_io, "_file_sha256", no_read_back)
    write_partition(_part(path), out, weights=weights)
    files = json.loads((out / _io.MANIFEST).read_text())["files"]
    on_disk = sorted(p.name for p in out.iterdir() if p.name != _io.MANIFEST)
    assert sorted(files) == on_disk
    for name, entry in files.items():
        data = (out / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}, name
    if weights == "copy":
        layout = [t for t in onnx.load(str(out / next(n for n in on_disk if n.endswith(".onnx"))),
                                       load_external_data=False).graph.initializer]
        spans = sorted((int(dict((e.key, e.value) for e in t.external_data)["offset"]),
                        int(dict((e.key, e.value) for e in t.external_data)["length"])) for t in layout)
        assert len(spans) >= 2 and spans[1][0] > spans[0][0] + spans[0][1]  # a gap of zeros between


def test_a_damaged_copy_folder_is_refused(tmp_path):
    path, _ = _external(tmp_path / "m")
    out = tmp_path / "out"
    write_partition(_part(path), out, weights="copy")
    with open(out / "weights.data", "r+b") as fh:
        fh.truncate(100)
    with pytest.raises(PartitionError, match="weights.data has 100 bytes.*truncated"):
        read_partition(out)
    with pytest.raises(PartitionError, match="no partition.json"):
        read_partition(tmp_path / "m")


# -- the CLI --------------------------------------------------------------------------------------

def test_cli_says_where_the_weights_are_and_builds_the_folder(tmp_path, capsys):
    path, _ = _external(tmp_path / "m")
    out = tmp_path / "out"
    assert cli.main(["partition", str(path), "--out", str(out), "--source", "rules", "--exclude-op", "Relu"]) == 0
    text = capsys.readouterr().out
    assert "not copied" in text and str(path.parent.resolve()) in text and "--weights copy" in text
    assert not (out / "weights.data").exists()

    assert cli.main(["build", str(out), "--json", "--quiet"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["segment"] for r in doc["executors"]] == [s.name for s in read_partition(out).segments]

    copied = tmp_path / "copied"
    assert cli.main(["partition", str(path), "--out", str(copied), "--source", "rules",
                     "--weights", "copy", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["weights"]["mode"] == "copy" and "self-contained" in doc["weights"]["note"]
    assert (copied / "weights.data").is_file()

    (path.parent / "weights.bin").rename(tmp_path / "moved.bin")
    assert cli.main(["build", str(out), "--quiet"]) == cli.EXIT_INPUT
    assert "moved or deleted" in capsys.readouterr().err


def test_cli_refuses_reference_for_embedded_weights(tmp_path, capsys):
    path = tmp_path / "mlp.onnx"
    path.write_bytes(F.mlp().SerializeToString())
    assert cli.main(["partition", str(path), "--out", str(tmp_path / "out"), "--source", "rules",
                     "--weights", "reference"]) == cli.EXIT_INPUT
    assert "--weights copy" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
