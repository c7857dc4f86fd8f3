"""Notebook-aware progress bars, shown only where someone watches, and easy to silence.

A bar shows when the caller allows it (``enabled``), the environment does not forbid it
(``TRTLAB_PROGRESS=0`` or ``TQDM_DISABLE``, see :mod:`trtlab.config`) and the output goes to a
terminal or a Jupyter notebook. ``TRTLAB_PROGRESS=1`` shows bars even on redirected output.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable, Optional, TextIO


def in_notebook() -> bool:
    """Whether the code runs in a Jupyter kernel (where tqdm draws a widget)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    get = getattr(ipython, "get_ipython", None)
    shell = get() if callable(get) else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def _is_terminal(stream: Optional[TextIO]) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # a closed or detached stream
        return False


def progress_enabled(enabled: Optional[bool] = True, stream: Optional[TextIO] = None) -> bool:
    """Whether a progress bar should be shown.

    Parameters
    ----------
    enabled
        The caller's wish; ``False`` always wins.
    stream
        Where the bar would be written (default ``sys.stderr``).
    """
    if enabled is False:
        return False
    from trtlab.config import progress_mode

    mode = progress_mode()
    if mode is not None:
        return mode
    return in_notebook() or _is_terminal(sys.stderr if stream is None else stream)


class _Quiet:
    """A progress bar nobody sees: iterates ``iterable``; ``update``, ``close`` ... do nothing.

    Given where no bar shows, so tqdm (and the asyncio it pulls in) is not imported for it.
    """

    def __init__(self, iterable: Optional[Iterable[Any]] = None, total: Optional[int] = None) -> None:
        self.iterable = iterable
        self.total = total
        self.n = 0

    def __iter__(self) -> Any:
        return iter(self.iterable if self.iterable is not None else ())

    def __enter__(self) -> "_Quiet":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def update(self, n: int = 1) -> None:
        self.n += n

    def _nothing(self, *args: Any, **kwargs: Any) -> None:
        return None

    set_postfix_str = set_postfix = set_description = refresh = close = _nothing


def progress(iterable: Optional[Iterable[Any]] = None, *, total: Optional[int] = None,
             desc: Optional[str] = None, enabled: Optional[bool] = True, **kwargs: Any) -> Any:
    """Wrap ``iterable`` in a ``tqdm.auto`` bar (a plain pass-through when disabled)."""
    if not progress_enabled(enabled):
        return _Quiet(iterable, total)
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, **kwargs)
