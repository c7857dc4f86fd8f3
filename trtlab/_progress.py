"""Notebook-aware progress bars that can be silenced."""

from __future__ import annotations

from typing import Any, Iterable, Optional


def progress_enabled(enabled: Optional[bool] = True) -> bool:
    """Whether a progress bar should be shown.

    ``TRTLAB_PROGRESS=0`` turns bars off everywhere (see :mod:`trtlab.config`).
    """
    if enabled is False:
        return False
    from trtlab.config import progress_default

    return progress_default()


def progress(iterable: Optional[Iterable[Any]] = None, *, total: Optional[int] = None,
             desc: Optional[str] = None, enabled: Optional[bool] = True, **kwargs: Any) -> Any:
    """Wrap ``iterable`` in a ``tqdm.auto`` bar (a plain iterator when disabled)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not progress_enabled(enabled),
                leave=False, **kwargs)
