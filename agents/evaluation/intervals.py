"""Interval estimates over seeds for the report's tables and figures.

rliable's stratified bootstrap (Agarwal et al., "Deep RL at the Edge of the Statistical Precipice", NeurIPS 2021):
runs (seeds) are resampled with replacement, the mean is recomputed, and the percentile interval of those means is
reported. Seeded, so the same values give the same interval. With few seeds the interval is wide and coarse — it is
drawn only when there is more than one seed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from rliable import library as rly
from rliable import metrics

__all__ = ["bootstrap_ci"]


def bootstrap_ci(values: Sequence[float], *, level: float = 0.95, reps: int = 2000, seed: int = 0
                 ) -> tuple[float, float]:
    """``(lo, hi)`` percentile-bootstrap interval of the mean of ``values`` (one value per seed), by rliable's
    ``get_interval_estimates`` with ``reps`` resamples and a seeded random state. One value → ``(v, v)``."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if v.size == 1:
        return float(v[0]), float(v[0])
    # rliable's StratifiedBootstrap draws its resamples from numpy's *global* generator (np.random.choice), not from
    # the random_state it is given: seed the global state for this call and restore it after, so the interval is
    # the same for the same values and seed, and nothing else's randomness is touched.
    saved = np.random.get_state()
    try:
        np.random.seed(seed)
        with warnings.catch_warnings():
            # arch (rliable's bootstrap backend) deprecates the RandomState argument rliable passes.
            warnings.simplefilter("ignore", FutureWarning)
            _, ci = rly.get_interval_estimates({"x": v[:, None]}, lambda s: np.array([metrics.aggregate_mean(s)]),
                                               reps=int(reps), confidence_interval_size=level,
                                               random_state=np.random.RandomState(seed))
    finally:
        np.random.set_state(saved)
    lo, hi = ci["x"][:, 0]
    return float(lo), float(hi)
