"""Output comparison shared by the real-model tests."""

from __future__ import annotations

import numpy as np


def assert_close(name: str, got: np.ndarray, want: np.ndarray, rtol: float, *, check_dtype: bool = True) -> None:
    """``got`` equals ``want``: floats within ``rtol`` (absolute tolerance scaled by the output's
    largest magnitude), everything else exactly."""
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    if check_dtype:
        assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
    if np.issubdtype(want.dtype, np.floating):
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=name)
    else:
        np.testing.assert_array_equal(got, want, err_msg=name)
