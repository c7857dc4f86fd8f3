"""Safe file input and output: every file trtlab writes or reads goes through here.

Writes are atomic: the data goes to a temporary file in the destination's folder, is flushed
and fsynced, renamed over the destination, and the folder is fsynced, so a crash, a kill or a
full disk leaves either the old file or the new one, never a half-written one. A folder of
outputs (a partition, a report) is written to a temporary folder beside the destination, gets a
``MANIFEST.json`` (file names, sizes, sha256) and is swapped in whole.

An existing destination is refused before any work starts (:func:`check_destination`) unless
``overwrite=True``; then it is replaced atomically. A folder is only replaced when trtlab wrote
it (it holds a manifest) or it is empty, so ``--force`` never deletes a folder of other files.

Reads accept only regular files (no FIFO, socket or device such as ``/dev/zero``) up to a size
limit, and turn OS errors into :class:`~trtlab.errors.TrtlabError` subclasses.

Examples
--------
>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> write_text(folder / "a.txt", "hello").read_text()
'hello'
>>> read_bytes(folder / "a.txt")
b'hello'
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Type, Union

from trtlab.errors import FileReadError, FileWriteError, OutputExistsError, TrtlabError

log = logging.getLogger(__name__)

__all__ = [
    "MANIFEST",
    "TEMP_MARK",
    "atomic_dir",
    "atomic_path",
    "check_destination",
    "fsync_dir",
    "put",
    "read_bytes",
    "read_text",
    "remove_stale_temps",
    "write_bytes",
    "write_text",
]

PathLike = Union[str, os.PathLike]

#: Name of the manifest written into every folder of outputs.
MANIFEST = "MANIFEST.json"
#: Every temporary file or folder trtlab creates carries this mark in its name.
TEMP_MARK = ".trtlab-tmp"
#: Default read limit: the largest protobuf ONNX accepts in one file (2 GiB).
DEFAULT_READ_LIMIT = 2 ** 31


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def read_bytes(path: PathLike, *, limit: int = DEFAULT_READ_LIMIT, what: str = "File",
               error: Type[TrtlabError] = FileReadError) -> bytes:
    """The bytes of the regular file ``path``, refusing anything else.

    Parameters
    ----------
    path
        File to read (symbolic links are followed).
    limit
        Largest size accepted, in bytes.
    what
        How the message names the file (``"Model"``, ``"Feeds"`` …).
    error
        :class:`~trtlab.errors.TrtlabError` subclass raised on failure (it is also raised for a
        missing file, as the caller's error type).

    Raises
    ------
    FileReadError
        (or ``error``) missing, not a regular file (FIFO, socket, device, folder), over ``limit``,
        or unreadable (permissions, I/O error).
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist. Check the path.") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be examined ({exc.strerror or exc}). Check the path "
                    "and the permissions of its folders.") from exc
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {path} is {_kind(st.st_mode)}, not a regular file; trtlab reads only "
                    "regular files. Copy the data into a file and pass its path.")
    if st.st_size > limit:
        raise error(f"{what} {path} is {st.st_size:,} bytes, over the limit of {limit:,} bytes. "
                    "Pass a smaller file, or raise the limit if the file is expected to be that large.")
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO after the stat, open() does not hang.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except PermissionError as exc:
        raise error(f"{what} {path} is not readable by this user (permission denied). Fix its "
                    f"permissions (chmod u+r {path}) or copy it somewhere readable.") from exc
    except OSError as exc:
        raise error(f"{what} {path} could not be opened ({exc.strerror or exc}).") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} {path} is {_kind(st.st_mode)}, not a regular file; trtlab reads "
                        "only regular files.")
        chunks = []
        remaining = limit + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise error(f"{what} {path} could not be read ({exc.strerror or exc}).") from exc
    finally:
        os.close(fd)
    if len(data) > limit:
        raise error(f"{what} {path} grew over the limit of {limit:,} bytes while it was read.")
    return data


def read_text(path: PathLike, *, limit: int = DEFAULT_READ_LIMIT, what: str = "File",
              error: Type[TrtlabError] = FileReadError) -> str:
    """The UTF-8 text of the regular file ``path`` (see :func:`read_bytes`)."""
    data = read_bytes(path, limit=limit, what=what, error=error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.start} cannot be decoded). "
                    "Pass a text file.") from exc


# ----------------------------------------------------------------------------------------------
# Writing one file
# ----------------------------------------------------------------------------------------------


def fsync_dir(folder: PathLike) -> None:
    """Flush a folder's entries (a rename in it) to disk; best effort where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot fsync a folder
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP, errno.EROFS):
            raise
    finally:
        os.close(fd)


def _write_error(path: Path, exc: OSError, what: str) -> FileWriteError:
    reason = exc.strerror or str(exc)
    fix = {errno.ENOSPC: "Free some space on that disk or write elsewhere.",
           errno.EDQUOT: "Free some space (disk quota exceeded) or write elsewhere.",
           errno.EROFS: "The file system is read-only: write elsewhere.",
           errno.EACCES: "Fix the folder's permissions or write elsewhere.",
           errno.EPERM: "Fix the folder's permissions or write elsewhere."}.get(
        exc.errno or 0, "Check the path, the permissions and the free space.")
    err = FileWriteError(f"Could not write {what} {path}: {reason}. Nothing existing was changed. {fix}")
    err.errno = exc.errno
    return err


def check_destination(path: PathLike, *, overwrite: bool = False, folder: bool = False,
                      what: str = "output file") -> Path:
    """Refuse an existing destination before any work starts.

    Parameters
    ----------
    path
        Destination file (or folder when ``folder=True``).
    overwrite
        Accept an existing destination; it is replaced atomically at the end.
    folder
        The destination is a folder of outputs. An empty folder is always accepted; a non-empty
        one only with ``overwrite=True`` and only if trtlab wrote it (it holds ``MANIFEST.json``).

    Raises
    ------
    OutputExistsError
        The destination exists (and ``overwrite`` is false), or is of the wrong kind.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise _write_error(path, exc, what) from exc
    is_dir = stat.S_ISDIR(st.st_mode)
    if folder:
        if not is_dir:
            raise OutputExistsError(f"Cannot write the {what} folder {path}: a file of that name exists. "
                                    "Pass a folder path, or remove the file.")
        try:
            entries = os.listdir(path)
        except OSError as exc:
            raise _write_error(path, exc, what) from exc
        if not entries:
            return path
        if not overwrite:
            raise OutputExistsError(f"The {what} folder {path} already exists and is not empty. Pass "
                                    "overwrite=True (CLI: --force) to replace it, or another path.")
        if MANIFEST not in entries:
            raise OutputExistsError(
                f"The {what} folder {path} exists and was not written by trtlab (it has no {MANIFEST}); "
                "trtlab does not replace folders of other files even with overwrite=True / --force. "
                "Pass another path, or empty the folder yourself.")
        return path
    if is_dir:
        raise OutputExistsError(f"Cannot write the {what} {path}: a folder of that name exists. "
                                "Pass a file path.")
    if not overwrite:
        raise OutputExistsError(f"The {what} {path} already exists. Pass overwrite=True "
                                "(CLI: --force) to replace it, or another path.")
    return path


@contextlib.contextmanager
def atomic_path(path: PathLike, *, overwrite: bool = True, mode: int = 0o644,
                what: str = "file") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed to ``path``.

    For libraries that write by file name (``DataFrame.to_csv``, ``Figure.savefig``). On any
    error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    check_destination(path, overwrite=overwrite, what=what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name[:80]}.", suffix=TEMP_MARK, dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise _write_error(path, exc, what) from exc
    tmp = Path(tmp_name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, mode)
        if not overwrite and os.path.lexists(path):
            raise OutputExistsError(f"The {what} {path} appeared while it was being written; "
                                    "it was left as it is.")
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        _unlink_quietly(tmp)
        if isinstance(exc, TrtlabError):
            raise
        raise _write_error(path, exc, what) from exc
    except BaseException:
        _unlink_quietly(tmp)
        raise


def write_bytes(path: PathLike, data: Union[bytes, bytearray, memoryview], *, overwrite: bool = True,
                mode: int = 0o644, what: str = "file") -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename, folder fsync).

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is false.
    FileWriteError
        The disk is full, read-only or not writable; ``path`` is left as it was.
    """
    path = Path(path)
    with atomic_path(path, overwrite=overwrite, mode=mode, what=what) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
    return path


def write_text(path: PathLike, text: str, *, overwrite: bool = True, mode: int = 0o644,
               what: str = "file") -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`write_bytes`)."""
    return write_bytes(path, text.encode("utf-8"), overwrite=overwrite, mode=mode, what=what)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# ----------------------------------------------------------------------------------------------
# Writing a folder
# ----------------------------------------------------------------------------------------------


def _file_sha256(path: Path) -> str:
    import hashlib  # imported here: it loads OpenSSL (MBs), and reading a model never hashes

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _in_threads(jobs: Sequence[Tuple[Callable[[Any], Any], Any]], threads: int) -> List[Any]:
    """``[fn(arg) for fn, arg in jobs]``, run on up to ``threads`` threads when there are several
    (for calls that release the GIL: fsync, hashing); the first failure is raised."""
    if len(jobs) <= 1:
        return [fn(arg) for fn, arg in jobs]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(threads, len(jobs))) as pool:
        return [future.result() for future in [pool.submit(fn, arg) for fn, arg in jobs]]


def _fsync_all(files: Sequence[Path], folders: Sequence[Path]) -> None:
    """fsync every file and folder, all at once: the file system commits concurrent fsyncs
    together (one journal commit instead of one per file: 10 small files 6 ms instead of 25-50 ms
    on ext4), and each call still returns only once its data is on disk."""
    _in_threads([(_fsync_file, f) for f in files] + [(fsync_dir, d) for d in folders], 16)


def _tree(root: Path) -> Tuple[List[Path], List[Path]]:
    files: List[Path] = []
    folders: List[Path] = []
    for dirpath, _, names in os.walk(root):
        folders.append(Path(dirpath))
        files += [Path(dirpath) / name for name in sorted(names)]
    return files, folders


def _listing(root: Path, files: Sequence[Path], known: Optional[Mapping[str, Tuple[int, str]]] = None
             ) -> Dict[str, dict]:
    """MANIFEST entries (size, sha256) of ``files``: from ``known`` (name -> (size, sha256), see
    :func:`put`) where the file has that size, the others read back and hashed in parallel
    (hashlib releases the GIL)."""
    known = known or {}
    entries: Dict[str, dict] = {}
    unknown: List[Path] = []
    for f in files:
        name = f.relative_to(root).as_posix()
        if name == MANIFEST:
            continue
        size = f.stat().st_size
        if name in known and known[name][0] == size:
            entries[name] = {"bytes": size, "sha256": known[name][1]}
        else:
            entries[name] = {"bytes": size}
            unknown.append(f)
    for f, digest in zip(unknown, _in_threads([(_file_sha256, f) for f in unknown], 4)):
        entries[f.relative_to(root).as_posix()]["sha256"] = digest
    return dict(sorted(entries.items()))


def put(folder: Path, name: str, data: Union[bytes, str], known: Dict[str, Tuple[int, str]]) -> None:
    """Write ``data`` (text as UTF-8) to ``folder / name`` in the folder of :func:`atomic_dir`,
    recording its size and sha256 in ``known`` (given to ``atomic_dir``): the MANIFEST then
    lists it without reading it back."""
    import hashlib

    raw = data.encode("utf-8") if isinstance(data, str) else data
    with open(folder / name, "wb") as fh:
        fh.write(raw)
    known[name] = (len(raw), hashlib.sha256(raw).hexdigest())


def _rename_exchange() -> Optional[Callable[[str, str], int]]:
    """``renameat2(RENAME_EXCHANGE)`` on Linux: swap two folders in one atomic step."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, exchange = -100, 2

    def swap(a: str, b: str) -> int:
        if func(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), exchange) != 0:
            return ctypes.get_errno()
        return 0

    return swap


@contextlib.contextmanager
def atomic_dir(path: PathLike, *, overwrite: bool = False, what: str = "output",
               meta: Optional[dict] = None, known: Optional[Mapping[str, Tuple[int, str]]] = None
               ) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` whole.

    The caller writes its files into the yielded folder. On success every file is fsynced, a
    ``MANIFEST.json`` (file names, sizes, sha256, ``meta``) is written, and the folder is swapped
    in (``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere two renames). On any error the
    temporary folder is removed and ``path`` is untouched. The destination is checked with
    :func:`check_destination` before the caller's work starts. ``known``: the sizes and sha256
    of files the caller wrote from memory (filled by :func:`put` while the caller writes), which
    the MANIFEST takes instead of reading the files back.
    """
    path = Path(path)
    check_destination(path, overwrite=overwrite, folder=True, what=what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name[:80]}.", suffix=TEMP_MARK, dir=path.parent))
    except OSError as exc:
        raise _write_error(path, exc, f"{what} folder") from exc
    old: Optional[Path] = None
    try:
        yield tmp
        files, folders = _tree(tmp)
        manifest = {"format": "trtlab-manifest", "version": 1, "files": _listing(tmp, files, known), **(meta or {})}
        with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=1, sort_keys=True)
        os.chmod(tmp, 0o755)
        if tmp / MANIFEST not in files:
            files.append(tmp / MANIFEST)
        _fsync_all(files, folders)
        # Checked again: the destination may have been filled while the work ran.
        check_destination(path, overwrite=overwrite, folder=True, what=what)
        if os.path.lexists(path):
            swap = _rename_exchange()
            code = swap(str(tmp), str(path)) if swap else errno.ENOSYS
            if code == 0:
                old = tmp  # tmp now holds the previous folder
            else:
                old = Path(tempfile.mkdtemp(prefix=f".{path.name[:80]}.old.", suffix=TEMP_MARK,
                                            dir=path.parent))
                os.rmdir(old)
                os.rename(path, old)
                try:
                    os.rename(tmp, path)
                except OSError:
                    os.rename(old, path)
                    old = None
                    raise
        else:
            os.rename(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        if old is not tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, TrtlabError):
            raise
        raise _write_error(path, exc, f"{what} folder") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_stale_temps(folder: PathLike, *, older_than: float = 3600.0) -> int:
    """Remove trtlab temporary files and folders in ``folder`` older than ``older_than`` seconds.

    They are left behind only when a process was killed between writing and renaming. Returns
    how many were removed; a folder that cannot be listed or written is skipped with a log line.
    """
    import time

    removed = 0
    now = time.time()
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        if not (name.endswith(TEMP_MARK) or name.endswith(".tmp")) or not name.startswith("."):
            continue
        full = Path(folder) / name
        try:
            if now - os.lstat(full).st_mtime < older_than:
                continue
            if full.is_dir() and not full.is_symlink():
                shutil.rmtree(full)
            else:
                full.unlink()
            removed += 1
        except OSError as exc:
            log.info("could not remove stale temporary %s: %s", full, exc)
    return removed
