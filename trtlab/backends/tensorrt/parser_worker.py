"""TensorRT's ONNX parser in a forked worker process, started before the caller imports onnx.

A fresh ``trtlab partition`` process imports onnx (and NumPy) to load the model, and TensorRT
to parse it: one after the other on one core, though the machine has more. :func:`start` forks
a worker at the start of the command; the worker imports TensorRT and makes a builder, network
and parser while the command imports onnx and loads the model, then answers parser calls
(:func:`trtlab.backends.tensorrt.parser._run_parser` on the bytes it is sent) over a pipe.
:func:`trtlab.backends.tensorrt.parser.parse_support` sends it exactly the bytes and path it
would give an in-process parser, so the answer is the same. The worker also reports the
flavor, version and whether it can parse, so the command never imports TensorRT itself.

* A crash of the parser (a signal) ends the worker, not the command: the call raises
  :class:`ParserCrash`, which ``parse_support`` reports as a :class:`~trtlab.errors.SupportError`.
* The worker exits when the pipe from the caller closes (:meth:`ParserWorker.close`, or the
  caller's death), or after :data:`IDLE_TIMEOUT` seconds without a request; ``close`` reaps it
  (killing it after :data:`EXIT_TIMEOUT` seconds).
* Where ``os.fork`` is missing or fails, or other threads run (forking them is unsafe),
  :func:`start` returns ``None`` and the caller parses in process, as the library API does.
  The ``trtlab`` command also parses in process when the machine has no core to spare
  (:func:`spare_core`): two processes taking turns on busy cores are slower than one.

Examples
--------
>>> from trtlab.backends.tensorrt import parser_worker
>>> with parser_worker.start() as worker:                                  # doctest: +SKIP
...     table = check_support(load(path), source="parser", worker=worker)
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import struct
import threading
import time
from typing import Any, Callable, List, Optional, Set, Tuple

log = logging.getLogger(__name__)

__all__ = ["ParserWorker", "ParserCrash", "start", "spare_core", "IDLE_TIMEOUT", "EXIT_TIMEOUT"]

#: Seconds the worker waits for a request before it exits on its own.
IDLE_TIMEOUT = 600.0
#: Seconds :meth:`ParserWorker.close` waits for the worker to exit before killing it.
EXIT_TIMEOUT = 5.0

_HEADER = struct.Struct("<Q")
#: Pipe buffer asked for on Linux (the default maximum an unprivileged process may set).
PIPE_BYTES = 1 << 20

#: ``run(data, path, made)`` -> the parser's answer; ``made`` is a ready (builder, network,
#: parser, logger) or None.
Runner = Callable[[bytes, Optional[str], Any], Any]


class ParserCrash(RuntimeError):
    """The worker died while the parser ran (a crash in TensorRT)."""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _write_all(fd: int, part: Any) -> None:
    view = memoryview(part)
    while view:
        view = view[os.write(fd, view):]


def _write(fd: int, value: Any) -> None:
    """One message: its length, then ``value`` pickled."""
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    _write_all(fd, _HEADER.pack(len(data)))
    _write_all(fd, data)


def _read_exact(fd: int, size: int) -> Optional[bytearray]:
    buffer = bytearray(size)
    view = memoryview(buffer)
    while view:
        got = os.readv(fd, [view])
        if not got:
            return None
        view = view[got:]
    return buffer


def _wait(fd: int, timeout: Optional[float]) -> bool:
    return timeout is None or bool(select.select([fd], [], [], timeout)[0])


def _read(fd: int, timeout: Optional[float] = None) -> Any:
    """The next message of :func:`_write` on ``fd``; ``None`` at end of file or after ``timeout`` s."""
    head = _read_exact(fd, _HEADER.size) if _wait(fd, timeout) else None
    if head is None:
        return None
    data = _read_exact(fd, _HEADER.unpack(head)[0])
    return None if data is None else pickle.loads(data)


#: A request: the path's length (:data:`_NO_PATH` for none) and the model's; then both, raw (a
#: model's bytes are not pickled: each copy of megabytes costs page faults on both sides).
_REQUEST = struct.Struct("<QQ")
_NO_PATH = (1 << 64) - 1


def _send_request(fd: int, data: Any, path: Optional[str]) -> None:
    encoded = b"" if path is None else os.fsencode(path)
    _write_all(fd, _REQUEST.pack(_NO_PATH if path is None else len(encoded), len(data)) + encoded)
    _write_all(fd, data)


def _read_request(fd: int, timeout: Optional[float]) -> Optional[Tuple[bytearray, Optional[str]]]:
    head = _read_exact(fd, _REQUEST.size) if _wait(fd, timeout) else None
    if head is None:
        return None
    path_size, size = _REQUEST.unpack(head)
    path: Optional[str] = None
    if path_size != _NO_PATH:
        encoded = _read_exact(fd, path_size)
        if encoded is None:
            return None
        path = os.fsdecode(bytes(encoded))
    data = _read_exact(fd, size)
    return None if data is None else (data, path)


def _default_runner(data: bytes, path: Optional[str], made: Any) -> Any:
    from trtlab.backends.tensorrt.parser import _run_parser

    return _run_parser(data, path, made=made)


def _make() -> Any:
    from trtlab.backends.tensorrt import flavor as _trt

    return _trt.make_parser(_trt.quiet_logger())


def _serve(requests: int, replies: int, run: Runner) -> None:
    """The worker: import TensorRT, say hello, answer parser calls until end of file."""
    from trtlab.backends.tensorrt import flavor as _trt

    made = None
    try:
        name = _trt.flavor()
        version = str(_trt.module().__version__)
        try:
            made = _make()
            problem = None
        except Exception as exc:  # noqa: BLE001 - reported to the caller, who parses in process
            problem = f"{type(exc).__name__}: {exc}"
        hello = ("hello", name, version, problem)
    except Exception as exc:  # noqa: BLE001 - e.g. MissingDependencyError
        hello = ("hello", None, None, f"{type(exc).__name__}: {exc}")
    _write(replies, hello)
    if hello[3] is not None:  # the caller parses in process
        return
    if run is _default_runner:
        import trtlab.backends.tensorrt.parser  # noqa: F401 - while the caller loads the model
    while True:
        message = _read_request(requests, IDLE_TIMEOUT)
        if message is None:
            return
        data, path = message  # the parser reads a bytearray as it reads bytes
        try:
            reply: Tuple[Any, ...] = ("ok", run(data, path, made))
        except Exception as exc:  # noqa: BLE001 - re-raised in the caller with the same text
            reply = ("error", type(exc).__name__, str(exc))
        made = None
        del data, message
        _write(replies, reply)
        if reply[0] == "ok" and getattr(reply[1], "ok", True):
            continue  # every node imported: no re-check pass follows
        try:
            made = _make()  # ready for the next call (a re-check pass) while the caller works
        except Exception:  # noqa: BLE001 - the next call makes its own and reports the failure
            made = None


class ParserWorker:
    """A forked process that runs TensorRT's ONNX parser (see the module docstring).

    Made by :func:`start`; use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, pid: int, requests: int, replies: int) -> None:
        self.pid = pid
        self._requests: Optional[int] = requests
        self._replies: Optional[int] = replies
        self._hello: Optional[Tuple[Any, ...]] = None
        self._status: Optional[int] = None
        self._meanwhile: List[Callable[[], Any]] = []

    def __repr__(self) -> str:
        state = "closed" if self._requests is None else "running"
        return f"ParserWorker(pid={self.pid}, {state})"

    def __enter__(self) -> "ParserWorker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # -- what the worker reports ----------------------------------------------------------------
    def _greeting(self) -> Tuple[Any, ...]:
        if self._hello is None:
            message = None if self._replies is None else _read(self._replies)
            self._hello = message if message is not None else (
                "hello", None, None, f"the parser worker exited before it was ready ({self._reap()})")
        return self._hello

    @property
    def flavor(self) -> Optional[str]:
        """``"tensorrt"`` or ``"tensorrt_rtx"`` as the worker imported it (None if it could not)."""
        return self._greeting()[1]

    @property
    def version(self) -> Optional[str]:
        """The version string of the worker's TensorRT module (None if it could not import it)."""
        return self._greeting()[2]

    @property
    def problem(self) -> Optional[str]:
        """Why the worker cannot parse (None when it can)."""
        return self._greeting()[3]

    @property
    def can_parse(self) -> bool:
        """The worker imported TensorRT and made a parser: calls will be answered."""
        return self.problem is None and self.version is not None and self._requests is not None

    def version_tuple(self) -> Tuple[int, ...]:
        """:attr:`version` as integers, as :func:`trtlab.backends.tensorrt.flavor.version_tuple`."""
        from trtlab.backends.tensorrt.flavor import parse_version

        return parse_version(self.version or "")

    # -- calls ----------------------------------------------------------------------------------
    def while_parsing(self, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` once in this process while the worker parses the next call (work the
        caller needs next and that does not depend on the answer, such as its imports). An
        error of ``fn`` is logged, not raised: the caller meets it again where it needs the work."""
        self._meanwhile.append(fn)

    def run(self, data: bytes, path: Optional[str] = None) -> Any:
        """The parser's answer for ``data`` (and ``path``, locating external weights).

        Raises
        ------
        ParserCrash
            The worker died while parsing (its signal or exit code is named).
        RuntimeError, TypeError, ...
            What the parser raised, with its message.
        """
        if not self.can_parse:
            raise ParserCrash(f"the parser worker cannot parse: {self.problem or 'it was closed'}")
        assert self._requests is not None and self._replies is not None
        try:
            _send_request(self._requests, data, path)
            meanwhile, self._meanwhile = self._meanwhile, []
            for fn in meanwhile:
                try:
                    fn()
                except Exception as exc:  # noqa: BLE001 - raised again where the caller needs it
                    log.debug("work while parsing failed: %s", exc)
            reply = _read(self._replies)
        except OSError:  # a broken pipe included
            reply = None
        if reply is None:
            how = self._reap()
            self.close()
            raise ParserCrash(f"the parser process died ({how}) while parsing; TensorRT crashed on this model")
        if reply[0] == "ok":
            return reply[1]
        kind = {"TypeError": TypeError, "ValueError": ValueError}.get(reply[1], RuntimeError)
        raise kind(reply[2])

    def _reap(self, timeout: float = EXIT_TIMEOUT) -> str:
        """Wait up to ``timeout`` s for the worker's exit; how it ended (killed if still running)."""
        deadline = time.monotonic() + timeout
        while self._status is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere
                self._status = 0
                break
            if pid:
                self._status = status
            elif time.monotonic() >= deadline:
                log.warning("parser worker %d did not exit within %.0f s; killed", self.pid, timeout)
                os.kill(self.pid, signal.SIGKILL)
                self._status = os.waitpid(self.pid, 0)[1]
            else:
                time.sleep(0.001)
        status = self._status
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            return f"signal {number} ({_signal_name(number)})"
        return f"exit code {os.waitstatus_to_exitcode(status)}"

    def close(self, wait: bool = True) -> None:
        """End the worker (end of file on its pipe) and reap it; safe to call twice.

        With ``wait=False`` the worker is told to exit but not waited for (a process holding
        TensorRT takes about 20 ms to exit): call ``close()`` again later to reap it.
        """
        requests, replies = self._requests, self._replies
        self._requests = self._replies = None
        for fd in (requests, replies):
            if fd is not None:
                _OPEN.discard(fd)
                os.close(fd)
        if wait and self._status is None:
            self._reap()


#: The caller's ends of the pipes of running workers: a worker forked later closes its copies,
#: so each worker still sees end of file when its own caller closes it.
_OPEN: Set[int] = set()


def _widen(fd: int) -> None:
    """A pipe buffer of up to :data:`PIPE_BYTES` (Linux): a model's bytes cross in a few writes,
    not one 64 KiB round trip between the processes each."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):
        pass


def spare_core() -> bool:
    """Whether the machine has a core to spare for a worker: its 1-minute load average is below
    the number of cores this process may use plus one half (True where the load is unknown).

    The worker pays off only when it runs beside its caller; on a machine whose cores are all
    busy the two processes take turns, and the parser is as fast in the caller (the answers are
    the same either way). The average counts the processes that ran one after the other in the
    last minute (the caller's own command line included), so a load of about the core count
    still leaves room: on 2 cores, ``trtlab partition`` with the worker was as fast or faster
    than without it at a load of 2.2, and 5-10% slower at 3.1-3.3."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores >= 2
    return cores >= 2 and load < cores + 0.5


def _forkable() -> bool:
    return hasattr(os, "fork") and threading.active_count() == 1


def start(run: Optional[Runner] = None) -> Optional[ParserWorker]:
    """Fork a parser worker; ``None`` (parse in process) where forking is unavailable or unsafe.

    Parameters
    ----------
    run : callable, optional
        ``run(data, path, made)`` executed in the worker for each call; default: TensorRT's
        parser (:func:`trtlab.backends.tensorrt.parser._run_parser`).
    """
    if not _forkable():
        log.debug("parser worker not started: os.fork is unavailable or other threads run")
        return None
    runner = run or _default_runner
    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    _widen(requests_w)
    try:
        pid = os.fork()
    except OSError as exc:
        for fd in (requests_r, requests_w, replies_r, replies_w):
            os.close(fd)
        log.debug("parser worker not started: fork failed (%s)", exc)
        return None
    if pid == 0:  # the worker: never returns into the caller's code
        code = 0
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends it quietly; the caller reports
            import faulthandler

            faulthandler.disable()  # a crash is reported by the caller, not as this stack
            for fd in (requests_w, replies_r, *_OPEN):
                os.close(fd)
            _serve(requests_r, replies_w, runner)
        except BaseException:  # noqa: BLE001 - the caller sees the exit code
            code = 1
        finally:
            os._exit(code)
    os.close(requests_r)
    os.close(replies_w)
    _OPEN.update((requests_w, replies_r))
    log.debug("parser worker %d started", pid)
    return ParserWorker(pid, requests_w, replies_r)
