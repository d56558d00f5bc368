"""Interval estimates over seeds for the report's tables and figures.

A seeded percentile bootstrap of the mean (rliable's ``get_interval_estimates`` does the same stratified bootstrap;
it is not used because importing it pulls ``arch``, whose release in this environment fails to import with the
installed pandas). With few seeds the interval is wide and coarse — it is drawn only when there is more than one seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["bootstrap_ci"]


def bootstrap_ci(values: Sequence[float], *, level: float = 0.95, reps: int = 2000, seed: int = 0
                 ) -> tuple[float, float]:
    """``(lo, hi)`` percentile-bootstrap interval of the mean of ``values`` (resampled with replacement ``reps``
    times, seeded: same values → same interval). One value → ``(v, v)``."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if v.size == 1:
        return float(v[0]), float(v[0])
    idx = np.random.default_rng(seed).integers(0, v.size, size=(int(reps), v.size))
    means = v[idx].mean(axis=1)
    a = (1.0 - level) / 2.0
    return float(np.quantile(means, a)), float(np.quantile(means, 1.0 - a))
