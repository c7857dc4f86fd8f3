"""TensorRT builds in worker processes.

A TensorRT build can segfault, abort or hang inside the native library. Every build (and every
bisection step of build-failure isolation) therefore runs in a child process of a small pool
(:class:`concurrent.futures.ProcessPoolExecutor`, ``spawn`` start method: no TensorRT or CUDA
state is inherited). A child that dies is a recorded build failure::

    TensorRT crashed with signal 11 (SIGSEGV) while building trt_3

and a build that runs past its timeout is one too (the pool is then replaced). The process that
called :func:`trtlab.build` -- a notebook kernel -- survives both.

Examples
--------
>>> from trtlab.backends.tensorrt.workers import BuildPool
>>> pool = BuildPool(workers=2, timeout=600)                          # doctest: +SKIP
>>> engine = pool.run(build_engine, onnx_bytes, profile, settings)    # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing as mp
import os
import pickle
import signal
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

from trtlab.errors import BuildError

log = logging.getLogger(__name__)

__all__ = ["BuildPool", "default_pool", "crash_error", "DEFAULT_TIMEOUT"]

#: Seconds one build may take before it counts as hung.
DEFAULT_TIMEOUT = 1800.0


def _call(fn: Callable[..., Any], args: Tuple[Any, ...]) -> Tuple[str, Any]:
    """Run ``fn(*args)`` in the worker; errors come back as data (exceptions may not pickle)."""
    try:
        return "ok", fn(*args)
    except BuildError as exc:
        return "build_error", (str(exc), getattr(exc, "stage", "build"), list(getattr(exc, "errors", []) or []))
    except Exception as exc:  # any library failure inside the build is a build failure
        return "error", (type(exc).__name__, str(exc))


def _worker_init() -> None:
    # A worker never shows progress bars or asks for input.
    os.environ["TRTLAB_PROGRESS"] = "0"


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


def crash_error(segment: str, detail: str, stage: str = "crash") -> BuildError:
    """The :class:`BuildError` recorded when a build worker dies or hangs."""
    exc = BuildError(f"{detail} while building {segment}")
    exc.stage = stage  # type: ignore[attr-defined]
    exc.errors = [f"{detail} while building {segment}"]  # type: ignore[attr-defined]
    return exc


class BuildPool:
    """A small pool of build workers that survives crashing builds.

    Parameters
    ----------
    workers
        Number of worker processes (default: the machine's cores).
    timeout
        Seconds one job may run before it is a failure and the pool is replaced.
    context
        ``multiprocessing`` start method: ``"spawn"`` (default) or ``"forkserver"``.
    """

    def __init__(self, workers: Optional[int] = None, timeout: Optional[float] = DEFAULT_TIMEOUT,
                 context: str = "spawn") -> None:
        if context not in ("spawn", "forkserver"):
            raise BuildError(f"BuildPool(context={context!r}): use 'spawn' or 'forkserver' (a forked "
                             "TensorRT or CUDA state is not safe to reuse).")
        self.workers = max(1, int(workers or os.cpu_count() or 1))
        self.timeout = timeout
        self.context = context
        self._executor: Optional[ProcessPoolExecutor] = None
        self._lock = threading.Lock()
        self.replaced = 0

    def __repr__(self) -> str:
        return f"BuildPool(workers={self.workers}, timeout={self.timeout}, context={self.context!r})"

    # -- pool lifecycle -----------------------------------------------------------------------
    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(self.workers, mp_context=mp.get_context(self.context),
                                                     initializer=_worker_init)
            return self._executor

    def _replace(self, pool: ProcessPoolExecutor) -> None:
        """Drop a broken or hung pool; the next job starts a fresh one."""
        with self._lock:
            if self._executor is not pool:
                return
            self._executor = None
            self.replaced += 1
        _kill(pool)

    def shutdown(self) -> None:
        """Stop the workers."""
        with self._lock:
            pool, self._executor = self._executor, None
        if pool is not None:
            _kill(pool)

    # -- jobs ---------------------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], *args: Any) -> "Future[Any]":
        """Start ``fn(*args)`` in a worker; :meth:`result` collects it.

        A daemonic process (a Dask or multiprocessing worker) may not start children, and a full
        ``/dev/shm`` leaves no room for the pool's semaphores: then the job runs here, in this
        process, and a TensorRT crash would end it (logged once as a warning).
        """
        if mp.current_process().daemon:
            return self._run_here(fn, args, "this is a daemonic process, which may not start workers")
        try:
            pool = self._pool()
        except OSError as exc:
            return self._run_here(fn, args, f"no worker could start ({exc})")
        with _main_not_reimported():
            try:
                fut = pool.submit(_call, fn, args)
            except BrokenProcessPool:
                self._replace(pool)
                pool = self._pool()
                fut = pool.submit(_call, fn, args)
        fut._trtlab_job = (pool, fn, args)  # type: ignore[attr-defined]
        return fut

    def _run_here(self, fn: Callable[..., Any], args: Tuple[Any, ...], why: str) -> "Future[Any]":
        if not getattr(self, "_warned_here", False):
            log.warning("TensorRT builds run in this process: %s", why)
            self._warned_here = True
        fut: "Future[Any]" = Future()
        fut.set_result(_call(fn, args))
        return fut

    def result(self, fut: "Future[Any]", segment: str = "segment", *, solo: bool = False) -> Any:
        """The job's value; a crash, hang or build error raises :class:`BuildError`.

        When a worker dies every job of the pool fails with it, so a job that sees a crash is run
        again alone in a one-worker pool: only the job that crashes there is blamed.
        """
        pool, fn, args = getattr(fut, "_trtlab_job", (None, None, ()))
        try:
            status, value = fut.result(timeout=self.timeout)
        except FutureTimeout:
            if pool is not None:
                self._replace(pool)
            raise crash_error(segment, f"TensorRT did not finish within {self.timeout:g} s (hang)",
                              stage="timeout") from None
        except BrokenProcessPool:
            codes = _exit_codes(pool) if pool is not None else []
            if pool is not None:
                self._replace(pool)
            if not solo and fn is not None:
                alone = BuildPool(1, self.timeout, self.context)
                try:
                    return alone.result(alone.submit(fn, *args), segment, solo=True)
                finally:
                    alone.shutdown()
            detail = "TensorRT crashed"
            dead = [c for c in codes if c is not None and c < 0]
            if dead:
                detail = f"TensorRT crashed with signal {-dead[0]} ({_signal_name(-dead[0])})"
            elif codes and codes[0] is not None:
                detail = f"TensorRT crashed (worker exit code {codes[0]})"
            elif codes:
                detail = "TensorRT crashed (the worker died; its exit status could not be read)"
            raise crash_error(segment, detail) from None
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise BuildError(f"Build job for {segment} could not be sent to a worker: {exc}") from None
        if status == "ok":
            return value
        if status == "build_error":
            message, stage, errors = value
            exc = BuildError(message)
            exc.stage = stage  # type: ignore[attr-defined]
            exc.errors = errors  # type: ignore[attr-defined]
            raise exc
        kind, message = value
        exc = BuildError(f"{kind} while building {segment}: {message}")
        exc.stage = "build"  # type: ignore[attr-defined]
        exc.errors = [f"{kind}: {message}"]  # type: ignore[attr-defined]
        raise exc

    def run(self, fn: Callable[..., Any], *args: Any, segment: str = "segment") -> Any:
        """``fn(*args)`` in a worker, waited for."""
        return self.result(self.submit(fn, *args), segment)

    def map(self, fn: Callable[..., Any], jobs: Sequence[Tuple[Any, ...]],
            segment: str = "segment") -> List[Any]:
        """Run every job in parallel; each result is a value or the :class:`BuildError` it raised."""
        futures = [self.submit(fn, *args) for args in jobs]
        out: List[Any] = []
        for fut in futures:
            try:
                out.append(self.result(fut, segment))
            except BuildError as exc:
                out.append(exc)
        return out


@contextlib.contextmanager
def _main_not_reimported() -> Iterator[None]:
    """Start workers without re-running the user's script in them.

    A ``spawn`` child imports the parent's ``__main__`` file before its first job; a script
    without an ``if __name__ == "__main__":`` guard would then run again, build again and start
    more workers. Build jobs never need ``__main__`` (builders from it run in this process), so
    the file is hidden while workers start.
    """
    main = sys.modules.get("__main__")
    hidden = {}
    if main is not None and getattr(main, "__spec__", None) is None:
        for attr in ("__file__",):
            if hasattr(main, attr):
                hidden[attr] = getattr(main, attr)
                delattr(main, attr)
    try:
        yield
    finally:
        for attr, value in hidden.items():
            setattr(main, attr, value)


def _exit_codes(pool: ProcessPoolExecutor, wait: float = 5.0) -> List[Optional[int]]:
    """Exit codes of the pool's workers (``-N`` for signal N).

    The pool's manager thread reaps a dead worker concurrently; while it does, ``exitcode`` can
    read ``None`` for a moment, so the codes are polled until known or ``wait`` seconds pass.
    """
    procs = list((getattr(pool, "_processes", None) or {}).values())
    deadline = time.monotonic() + wait
    codes: List[Optional[int]] = []
    for p in procs:
        code = None
        while True:
            try:
                p.join(timeout=0.2)
                code = p.exitcode
            except Exception:  # already reaped by the manager thread: its code lands shortly
                code = getattr(getattr(p, "_popen", None), "returncode", None)
            if code is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        codes.append(code)
    return sorted(codes, key=lambda c: (c is None, c if c is not None else 0))


def _kill(pool: ProcessPoolExecutor) -> None:
    for p in list((getattr(pool, "_processes", None) or {}).values()):
        if p.is_alive():
            p.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def picklable(fn: Any) -> bool:
    """Whether ``fn`` can be sent to a worker (module-level functions can; closures and functions
    of a notebook or script, whose ``__main__`` a worker does not have, cannot)."""
    if getattr(fn, "__module__", None) in ("__main__", "__mp_main__"):
        return False
    try:
        pickle.dumps(fn)
        return True
    except Exception:  # pickle raises several types for unpicklable objects
        return False


_DEFAULT: Optional[BuildPool] = None
_DEFAULT_LOCK = threading.Lock()


def default_pool(workers: Optional[int] = None, timeout: Optional[float] = None) -> BuildPool:
    """The process-wide build pool (made on first use, stopped at exit)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        want_workers = max(1, int(workers or os.cpu_count() or 1))
        want_timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        if _DEFAULT is None or _DEFAULT.workers != want_workers or _DEFAULT.timeout != want_timeout:
            if _DEFAULT is not None:
                _DEFAULT.shutdown()
            _DEFAULT = BuildPool(want_workers, want_timeout)
        return _DEFAULT


@atexit.register
def _stop_default() -> None:
    if _DEFAULT is not None:
        _DEFAULT.shutdown()
