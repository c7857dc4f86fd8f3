"""On-disk engine cache.

An entry is one file named after the sha256 of its key. The file starts with a header (magic
line, header length, JSON with the key fields and the payload's size and sha256), then the
serialized engine. Writes go to a temporary file in the same folder and are renamed into place
with :func:`os.replace`, so readers never see a half-written entry and concurrent writers of the
same key leave exactly one valid file. A corrupt, truncated or mismatched entry is reported,
removed and rebuilt, never used.

Examples
--------
>>> import tempfile
>>> cache = EngineCache(tempfile.mkdtemp())
>>> key = CacheKey.make(b"onnx", precision="fp32", settings={}, profiles=(), flavor="tensorrt_rtx",
...                     trt_version="1.7", target="aot")
>>> cache.get(key).status
'miss'
>>> _ = cache.put(key, b"engine")
>>> cache.get(key).data
b'engine'
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from trtlab import _io
from trtlab.errors import CacheError

log = logging.getLogger(__name__)

__all__ = ["CacheKey", "CacheLookup", "EngineCache", "default_cache_dir"]

MAGIC = b"TRTLAB-ENGINE-CACHE v1\n"
_LEN = struct.Struct("<I")
SUFFIX = ".engine"


def default_cache_dir() -> Path:
    """Engine folder inside the trtlab cache dir (``TRTLAB_CACHE_DIR`` or the user cache dir)."""
    from trtlab.config import cache_dir

    return cache_dir() / "engines"


def _canonical(value: Any) -> Any:
    """JSON-friendly, order-stable form of settings and profiles."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


@dataclass(frozen=True)
class CacheKey:
    """Everything an engine depends on. ``digest`` is the file name of the entry."""

    onnx_sha256: str
    precision: str
    settings: str
    profiles: str
    flavor: str
    trt_version: str
    target: str

    @classmethod
    def make(cls, onnx_bytes: bytes, *, precision: str, settings: Mapping[str, Any],
             profiles: Any, flavor: str, trt_version: str, target: str) -> "CacheKey":
        """Build a key from the segment's serialized ONNX and its build settings.

        ``target`` is the GPU compute capability engines are built for, or ``"aot"`` for an
        ahead-of-time build without a GPU.
        """
        return cls(
            onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest(),
            precision=str(precision),
            settings=json.dumps(_canonical(settings), sort_keys=True, separators=(",", ":")),
            profiles=json.dumps(_canonical(profiles), sort_keys=True, separators=(",", ":")),
            flavor=str(flavor),
            trt_version=str(trt_version),
            target=str(target),
        )

    def fields(self) -> Dict[str, str]:
        return {
            "onnx_sha256": self.onnx_sha256,
            "precision": self.precision,
            "settings": self.settings,
            "profiles": self.profiles,
            "flavor": self.flavor,
            "trt_version": self.trt_version,
            "target": self.target,
        }

    @property
    def digest(self) -> str:
        text = json.dumps(self.fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class CacheLookup:
    """Result of a cache read.

    ``status`` is ``"hit"``, ``"miss"`` (no entry), ``"corrupt"`` (bad magic, header, size or
    checksum), ``"mismatch"`` (the entry was written for other key fields), ``"untrusted"`` (the
    entry is writable by every user or owned by another user; not used) or ``"disabled"``.
    """

    status: str
    path: Optional[Path]
    data: Optional[bytes] = None
    detail: str = ""


class EngineCache:
    """A folder of engine entries keyed by :class:`CacheKey`.

    Parameters
    ----------
    directory
        Folder of the entries, created on first write. ``None`` uses :func:`default_cache_dir`.
    """

    def __init__(self, directory: Union[str, os.PathLike, None] = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self._checked = False

    def __repr__(self) -> str:
        return f"EngineCache({str(self.directory)!r})"

    def path(self, key: CacheKey) -> Path:
        return self.directory / f"{key.digest}{SUFFIX}"

    def check(self) -> None:
        """Refuse a folder another user could write engines into; remove stale temporary files.

        An engine is code the GPU runs: a cache folder writable by other users (or owned by
        another user) lets them hand engines to everyone who uses it. Checked once per cache
        object, before the first read or write.

        Raises
        ------
        CacheError
            The folder (or an existing parent made for it) is writable by others, or owned by
            another user; the message gives the command that fixes it.
        """
        if self._checked:
            return
        try:
            st = os.stat(self.directory)
        except FileNotFoundError:
            return  # created with safe permissions on first write
        except OSError as exc:
            raise CacheError(f"Could not examine engine cache folder {self.directory}: {exc}. Pass "
                             "another cache_dir= or set TRTLAB_CACHE_DIR.") from exc
        if not stat.S_ISDIR(st.st_mode):
            raise CacheError(f"Engine cache folder {self.directory} is not a folder. Pass a folder as "
                             "cache_dir= or set TRTLAB_CACHE_DIR to one.")
        problem = _unsafe(st)
        if problem:
            raise CacheError(
                f"Engine cache folder {self.directory} is {problem}: anyone who can write there can "
                f"hand TensorRT engines to this user. Fix it with `{_fix(self.directory, st)}`, or "
                "pass a private cache_dir= / set TRTLAB_CACHE_DIR to a folder only you can write.")
        self._checked = True
        removed = _io.remove_stale_temps(self.directory)
        if removed:
            log.info("removed %d stale temporary file(s) from %s", removed, self.directory)

    def get(self, key: CacheKey) -> CacheLookup:
        """Read and verify the entry of ``key``; a bad entry is removed (if it can be) and reported."""
        self.check()
        path = self.path(key)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return CacheLookup("miss", path, detail="no entry")
        except OSError as exc:
            raise CacheError(
                f"Could not read engine cache entry {path}: {exc}. Check the folder's permissions, "
                "pass another cache_dir=, or set TRTLAB_CACHE_DIR."
            ) from exc
        if not stat.S_ISREG(st.st_mode):
            log.warning("engine cache entry %s is not a regular file; it is not used", path.name)
            return CacheLookup("corrupt", path, detail="not a regular file")
        problem = _unsafe(st)
        if problem:
            log.warning("engine cache entry %s is %s; it is not used and will be rebuilt", path.name, problem)
            return CacheLookup("untrusted", path, detail=problem)
        try:
            raw = _io.read_bytes(path, what="Engine cache entry", error=CacheError)
        except CacheError as exc:
            if not os.path.exists(path):
                return CacheLookup("miss", path, detail="no entry")
            raise CacheError(f"{exc} Check the folder's permissions, pass another cache_dir=, or "
                             "set TRTLAB_CACHE_DIR.") from exc.__cause__
        status, detail, data = _decode(raw, key)
        if status != "hit":
            log.warning("engine cache entry %s is %s (%s); it will be rebuilt", path.name, status, detail)
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:  # read-only or foreign folder: the entry stays, unused
                log.warning("could not remove bad engine cache entry %s: %s", path, exc)
            return CacheLookup(status, path, detail=detail)
        return CacheLookup("hit", path, data=data, detail=f"{len(data)} bytes")

    def put(self, key: CacheKey, data: bytes) -> Path:
        """Write ``data`` for ``key`` atomically (temporary file, fsync, rename, folder fsync)."""
        if not data:
            raise CacheError(f"Refusing to cache an empty engine for key {key.digest[:12]}.")
        self.check()
        path = self.path(key)
        try:
            _make_private_dir(self.directory)
            self.check()
            fd, tmp = tempfile.mkstemp(prefix=f".{key.digest[:16]}.", suffix=".tmp", dir=self.directory)
        except OSError as exc:
            raise CacheError(
                f"Could not write to engine cache folder {self.directory}: {exc}. "
                "Pass a writable cache_dir= or set TRTLAB_CACHE_DIR."
            ) from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(_encode(key, data))
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
            _io.fsync_dir(self.directory)
        except BaseException as exc:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            if isinstance(exc, OSError):
                raise CacheError(f"Could not write engine cache entry {path}: {exc}. Free some space, "
                                 "pass another cache_dir= or set TRTLAB_CACHE_DIR.") from exc
            raise
        return path

    def get_or_build(self, key: CacheKey, build: Callable[[], bytes]) -> Tuple[bytes, CacheLookup]:
        """The cached engine of ``key``, or ``build()``'s result after storing it.

        Returns the engine bytes and the lookup (its status says hit, miss, corrupt or mismatch).
        An engine that cannot be stored (folder not writable, disk full) is still returned, with
        a warning.
        """
        lookup = self.get(key)
        if lookup.status == "hit" and lookup.data is not None:
            return lookup.data, lookup
        data = build()
        self.keep(key, data)
        return data, lookup

    def keep(self, key: CacheKey, data: bytes) -> bool:
        """:meth:`put`, where a disk fault (full, read-only) is a warning: the engine just isn't
        cached. Other refusals (an unsafe folder, an empty engine) still raise. Returns whether
        the engine was stored."""
        try:
            self.put(key, data)
        except CacheError as exc:
            if not isinstance(exc.__cause__, OSError):
                raise
            log.warning("engine not cached: %s", exc)
            return False
        return True

    def entries(self) -> Dict[str, Path]:
        """Entry digests present on disk."""
        if not self.directory.is_dir():
            return {}
        return {p.name[: -len(SUFFIX)]: p for p in self.directory.glob(f"*{SUFFIX}")}

    def clear(self) -> int:
        """Remove every entry and every temporary file left by an interrupted write.

        Returns how many entries were removed. Entries that cannot be removed (read-only folder)
        are left with a warning.
        """
        removed = 0
        for path in self.entries().values():
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("could not remove engine cache entry %s: %s", path, exc)
        if self.directory.is_dir():
            _io.remove_stale_temps(self.directory, older_than=0.0)
        return removed


def _unsafe(st: os.stat_result) -> str:
    """Why a cache folder or entry with this stat cannot be trusted ("" when it can)."""
    if st.st_mode & stat.S_IWOTH:
        return "writable by every user"
    if hasattr(os, "geteuid") and st.st_uid not in (os.geteuid(), 0):
        return f"owned by another user (uid {st.st_uid})"
    return ""


def _fix(directory: Path, st: os.stat_result) -> str:
    if st.st_mode & stat.S_IWOTH:
        return f"chmod o-w {directory}"
    return f"mkdir -p ~/.cache/trtlab && export TRTLAB_CACHE_DIR=~/.cache/trtlab  # {directory} is not yours"


def _make_private_dir(directory: Path) -> None:
    """Create the cache folder (and missing parents) writable by its owner only (umask kept otherwise)."""
    missing = []
    parent = directory
    while not parent.exists():
        missing.append(parent)
        if parent.parent == parent:
            break
        parent = parent.parent
    directory.mkdir(parents=True, exist_ok=True)
    for made in missing:
        try:
            os.chmod(made, stat.S_IMODE(os.stat(made).st_mode) & ~0o022)
        except OSError:
            pass


def _encode(key: CacheKey, data: bytes) -> bytes:
    header = dict(key.fields(), digest=key.digest, size=len(data),
                  sha256=hashlib.sha256(data).hexdigest())
    blob = json.dumps(header, sort_keys=True).encode()
    return MAGIC + _LEN.pack(len(blob)) + blob + bytes(data)


def _decode(raw: bytes, key: CacheKey) -> Tuple[str, str, bytes]:
    if not raw.startswith(MAGIC):
        return "corrupt", "not a trtlab engine cache entry (bad magic)", b""
    start = len(MAGIC) + _LEN.size
    if len(raw) < start:
        return "corrupt", "truncated header", b""
    (hlen,) = _LEN.unpack_from(raw, len(MAGIC))
    if len(raw) < start + hlen:
        return "corrupt", "truncated header", b""
    try:
        header = json.loads(raw[start:start + hlen].decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "corrupt", "unreadable header", b""
    if not isinstance(header, dict):
        return "corrupt", "unreadable header", b""
    wanted = key.fields()
    differing = [k for k, v in wanted.items() if header.get(k) != v]
    if differing:
        return "mismatch", "key fields differ: " + ", ".join(differing), b""
    data = raw[start + hlen:]
    if len(data) != header.get("size"):
        return "corrupt", f"truncated payload ({len(data)} of {header.get('size')} bytes)", b""
    if hashlib.sha256(data).hexdigest() != header.get("sha256"):
        return "corrupt", "payload checksum mismatch", b""
    return "hit", "", data
