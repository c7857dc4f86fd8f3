"""trtlab._io: atomic writes, folder swaps with a manifest, regular-file reads."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

from faults import disk_full
from trtlab import _io
from trtlab.errors import FileReadError, FileWriteError, OutputExistsError


def test_write_bytes_replaces_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "f.bin"
    _io.write_bytes(target, b"old")
    _io.write_bytes(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_write_failure_keeps_the_previous_file(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"precious")
    with disk_full(16), pytest.raises(FileWriteError) as info:
        _io.write_bytes(target, b"x" * 4096)
    assert "Nothing existing was changed" in str(info.value)
    assert target.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_existing_destination_refused_without_overwrite(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("mine")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        _io.write_text(target, "theirs", overwrite=False)
    assert target.read_text() == "mine"


def test_check_destination_of_folders(tmp_path):
    assert _io.check_destination(tmp_path / "new", folder=True) == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    _io.check_destination(tmp_path / "empty", folder=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="a file of that name"):
        _io.check_destination(tmp_path / "file", folder=True, overwrite=True)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="not empty"):
        _io.check_destination(tmp_path / "foreign", folder=True)
    with pytest.raises(OutputExistsError, match="not written by trtlab"):
        _io.check_destination(tmp_path / "foreign", folder=True, overwrite=True)


def test_atomic_dir_swaps_whole_folder_with_manifest(tmp_path):
    out = tmp_path / "out"
    with _io.atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("one")
        (tmp / "b.txt").write_text("two")
    manifest = json.loads((out / _io.MANIFEST).read_text())
    assert manifest["files"]["a.txt"]["sha256"] == hashlib.sha256(b"one").hexdigest()
    with _io.atomic_dir(out, overwrite=True) as tmp:
        (tmp / "c.txt").write_text("three")
    assert sorted(os.listdir(out)) == [_io.MANIFEST, "c.txt"]
    assert os.listdir(tmp_path) == ["out"]


def test_atomic_dir_lists_known_digests_and_reads_back_the_rest(tmp_path):
    """Files written with ``put`` are listed from the digest taken in memory; a file the caller
    wrote otherwise, or changed after ``put`` (another size), is read back and hashed."""
    out = tmp_path / "out"
    known = {}
    with _io.atomic_dir(out, known=known) as tmp:
        _io.put(tmp, "a.bin", b"one", known)
        (tmp / "b.txt").write_text("two")
        _io.put(tmp, "c.txt", "three", known)
        (tmp / "c.txt").write_text("changed")
        _io.put(tmp, "d.bin", b"four", known)
        known["d.bin"] = (4, "0" * 64)  # the listing takes a known digest as given
    files = json.loads((out / _io.MANIFEST).read_text())["files"]
    assert files["a.bin"] == {"bytes": 3, "sha256": hashlib.sha256(b"one").hexdigest()}
    assert files["b.txt"] == {"bytes": 3, "sha256": hashlib.sha256(b"two").hexdigest()}
    assert files["c.txt"] == {"bytes": 7, "sha256": hashlib.sha256(b"changed").hexdigest()}
    assert files["d.bin"]["sha256"] == "0" * 64
    assert (out / "a.bin").read_bytes() == b"one"


def test_atomic_dir_failure_keeps_previous_folder(tmp_path):
    out = tmp_path / "out"
    with _io.atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("one")
    with pytest.raises(RuntimeError):
        with _io.atomic_dir(out, overwrite=True) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("killed half-way")
    assert sorted(os.listdir(out)) == [_io.MANIFEST, "a.txt"]
    assert os.listdir(tmp_path) == ["out"]


def test_read_bytes_refuses_what_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    start = time.perf_counter()
    with pytest.raises(FileReadError, match="FIFO"):
        _io.read_bytes(fifo)
    assert time.perf_counter() - start < 5
    with pytest.raises(FileReadError, match="character device"):
        _io.read_bytes("/dev/zero")
    with pytest.raises(FileReadError, match="folder"):
        _io.read_bytes(tmp_path)
    with pytest.raises(FileReadError, match="does not exist"):
        _io.read_bytes(tmp_path / "nope")
    big = tmp_path / "big"
    big.write_bytes(b"x" * 100)
    with pytest.raises(FileReadError, match="over the limit"):
        _io.read_bytes(big, limit=99)
    assert _io.read_bytes(big, limit=100) == b"x" * 100


def test_remove_stale_temps_keeps_fresh_ones_and_real_files(tmp_path):
    stale, fresh, real = tmp_path / ".a.bin.trtlab-tmp", tmp_path / ".b.tmp", tmp_path / "keep.tmp"
    for p in (stale, fresh, real):
        p.write_bytes(b"x")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    assert _io.remove_stale_temps(tmp_path) == 1
    assert sorted(os.listdir(tmp_path)) == [".b.tmp", "keep.tmp"]
