"""Real faults for tests: a full disk made by the kernel's file-size limit."""

from __future__ import annotations

import contextlib
import resource
import signal
from typing import Iterator


@contextlib.contextmanager
def disk_full(limit: int = 0) -> Iterator[None]:
    """Writes past ``limit`` bytes of any file fail (EFBIG) for this process, as on a full disk."""
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
