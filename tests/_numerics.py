"""Float comparisons that hold on any x86-64 CPU.

Batched and per-row forwards, fused and unfused blocks, AVX2 and AVX-512 oneDNN kernels all sum in different orders,
so float32 results across code paths differ by a few ulps *of the largest magnitude involved*, not of each element:
a logit near zero in a row whose largest logit is 193 carries that row's rounding error. Every cross-path comparison
therefore allows ``rtol·|expected| + scale_tol·max|expected|`` per element, never a fixed absolute tolerance.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_float64", "assert_close_scaled", "assert_argmax_agrees"]


def as_float64(a: Any) -> np.ndarray:
    """A numpy float64 copy of an array-like or a (CPU) torch tensor."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def assert_close_scaled(actual: Any, expected: Any, *, rtol: float = 1e-4, scale_tol: float = 1e-5,
                        what: str = "values") -> None:
    """Assert ``|actual − expected| ≤ rtol·|expected| + scale_tol·max|expected|`` elementwise (same shapes)."""
    a, e = as_float64(actual), as_float64(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    assert np.isfinite(a).all() and np.isfinite(e).all(), f"{what}: non-finite values"
    scale = float(np.abs(e).max()) if e.size else 0.0
    allowed = rtol * np.abs(e) + scale_tol * scale
    err = np.abs(a - e)
    if not (err <= allowed).all():
        i = np.unravel_index(int(np.argmax(err - allowed)), err.shape)
        raise AssertionError(f"{what} differ beyond rtol={rtol}, scale_tol={scale_tol} (max|expected|={scale:.4g}): "
                             f"at {i} got {a[i]!r}, expected {e[i]!r} (|diff| {err[i]:.3g} > {allowed[i]:.3g}); "
                             f"{int((err > allowed).sum())} of {err.size} elements")


def assert_argmax_agrees(pred: Any, logits: Any, *, scale_tol: float = 1e-5) -> None:
    """Each row's predicted class is the argmax of ``logits``, or ties it within ``scale_tol·max|logits|``.

    A near-tie may resolve either way on another kernel; a real disagreement may not.
    """
    p = np.asarray(pred, dtype=np.int64)
    z = as_float64(logits)
    gap = z.max(axis=1) - z[np.arange(len(p)), p]
    tol = scale_tol * float(np.abs(z).max())
    assert (gap <= tol).all(), f"{int((gap > tol).sum())} row(s) predict a class below the top logit by > {tol:.3g}"
