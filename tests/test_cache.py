"""Engine cache: keys, hits, misses, corrupt entries, concurrent writers."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import numpy as np
import pytest

from trtlab import config
from trtlab.backends.tensorrt.cache import MAGIC, CacheKey, EngineCache, default_cache_dir

BASE = dict(precision="fp32", settings={"workspace": None, "opt_level": 3}, profiles=[["x", [[1, 3], [2, 3], [4, 3]]]],
            flavor="tensorrt_rtx", trt_version="1.7.1.116", target="aot")


def key(**change):
    fields = dict(BASE, **change)
    onnx_bytes = fields.pop("onnx", b"segment-onnx")
    return CacheKey.make(onnx_bytes, **fields)


def test_key_changes_with_every_field():
    base = key()
    variants = [key(onnx=b"other"), key(precision="fp16"), key(settings={"workspace": 1 << 20, "opt_level": 3}),
                key(profiles=[["x", [[1, 3], [2, 3], [8, 3]]]]), key(flavor="tensorrt"),
                key(trt_version="1.8.0"), key(target="sm8.9")]
    digests = {v.digest for v in variants}
    assert base.digest not in digests
    assert len(digests) == len(variants)


def test_key_is_stable_and_order_independent():
    a = CacheKey.make(b"m", precision="fp32", settings={"a": 1, "b": 2}, profiles=[], flavor="f",
                      trt_version="1", target="aot")
    b = CacheKey.make(b"m", precision="fp32", settings={"b": 2, "a": 1}, profiles=[], flavor="f",
                      trt_version="1", target="aot")
    assert a.digest == b.digest
    assert a.fields()["onnx_sha256"] == "62c66a7a5dd70c3146618063c344e531e6d4b59e379808443ce962b3abd63c5a"


def test_miss_then_hit(tmp_path):
    cache = EngineCache(tmp_path)
    k = key()
    assert cache.get(k).status == "miss"
    cache.put(k, b"engine-bytes")
    lookup = cache.get(k)
    assert lookup.status == "hit"
    assert lookup.data == b"engine-bytes"
    assert lookup.path == tmp_path / f"{k.digest}.engine"


def test_get_or_build_builds_once(tmp_path):
    cache = EngineCache(tmp_path)
    calls = []

    def make():
        calls.append(1)
        return b"built"

    data1, first = cache.get_or_build(key(), make)
    data2, second = cache.get_or_build(key(), make)
    assert (data1, data2) == (b"built", b"built")
    assert (first.status, second.status) == ("miss", "hit")
    assert len(calls) == 1


@pytest.mark.parametrize("damage", ["truncate_payload", "flip_byte", "bad_magic", "truncate_header", "empty"])
def test_corrupt_entry_is_detected_and_rebuilt(tmp_path, damage):
    cache = EngineCache(tmp_path)
    k = key()
    path = cache.put(k, b"0123456789" * 10)
    raw = path.read_bytes()
    if damage == "truncate_payload":
        raw = raw[:-7]
    elif damage == "flip_byte":
        raw = raw[:-1] + bytes([raw[-1] ^ 0xFF])
    elif damage == "bad_magic":
        raw = b"X" + raw[1:]
    elif damage == "truncate_header":
        raw = raw[: len(MAGIC) + 6]
    else:
        raw = b""
    path.write_bytes(raw)
    lookup = cache.get(k)
    assert lookup.status == "corrupt"
    assert lookup.data is None
    assert not path.exists()
    data, lookup = cache.get_or_build(k, lambda: b"fresh")
    assert lookup.status == "miss" and data == b"fresh"
    assert cache.get(k).data == b"fresh"


def test_mismatched_entry_is_not_used(tmp_path):
    cache = EngineCache(tmp_path)
    wanted, other = key(), key(precision="int8")
    cache.put(other, b"int8-engine")
    # an entry for other key fields sitting under this key's name (copied or renamed by hand)
    os.replace(cache.path(other), cache.path(wanted))
    lookup = cache.get(wanted)
    assert lookup.status == "mismatch"
    assert "precision" in lookup.detail


def test_put_leaves_no_temporary_files(tmp_path):
    cache = EngineCache(tmp_path)
    cache.put(key(), b"abc")
    assert [p.name for p in tmp_path.iterdir()] == [f"{key().digest}.engine"]


def test_default_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TRTLAB_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c" / "engines"
    assert EngineCache().directory == tmp_path / "c" / "engines"
    monkeypatch.delenv("TRTLAB_CACHE_DIR")
    assert default_cache_dir() == config.cache_dir() / "engines"


def test_refuses_empty_engine(tmp_path):
    from trtlab.errors import CacheError

    with pytest.raises(CacheError, match="empty engine"):
        EngineCache(tmp_path).put(key(), b"")


def _writer(directory: str, seed: int, out) -> None:
    cache = EngineCache(directory)
    payload = np.random.default_rng(0).bytes(200_000)  # same key -> same engine in every process

    def make() -> bytes:
        return payload

    for _ in range(5):
        data, lookup = cache.get_or_build(key(), make)
        assert data == payload
    out.put(seed)


def test_four_processes_same_key_leave_one_valid_entry(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), i, queue)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert sorted(queue.get(timeout=5) for _ in procs) == [0, 1, 2, 3]
    files = sorted(Path(tmp_path).iterdir())
    assert [f.name for f in files] == [f"{key().digest}.engine"]
    lookup = EngineCache(tmp_path).get(key())
    assert lookup.status == "hit"
    assert lookup.data == np.random.default_rng(0).bytes(200_000)


def test_unwritable_folder_returns_the_engine_uncached(tmp_path, monkeypatch):
    import tempfile

    from trtlab.errors import CacheError

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(tempfile, "mkstemp", deny)
    cache = EngineCache(tmp_path)
    with pytest.raises(CacheError, match="writable cache_dir"):
        cache.put(key(), b"engine")
    data, lookup = cache.get_or_build(key(), lambda: b"engine")
    assert (data, lookup.status) == (b"engine", "miss")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CacheError, match="empty engine"):
        cache.get_or_build(key(), lambda: b"")
