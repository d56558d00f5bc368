"""Per-decision metrics shared by the harness, the learners' held-out scoring and the lab's reports.

Costs and budgets are fractions of the full model; an overrun is what :func:`adainf_env.feasibility.overrun` says.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BUDGET_GRID", "plan_entropy"]

#: The per-request budgets (fractions of the full model) of the bandit sweep, and the grid on which the learners
#: score held-out calibration rows for model selection.
BUDGET_GRID: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


def plan_entropy(plans: np.ndarray, num_plans: int) -> float:
    """Entropy (nats) of the histogram of chosen ``plans`` over ``num_plans`` plans: 0 = one plan for every request."""
    plans = np.asarray(plans, dtype=np.int64).reshape(-1)
    if plans.size == 0:
        return 0.0
    hist = np.bincount(plans, minlength=int(num_plans)) / plans.size
    p = hist[hist > 0]
    return float(-(p * np.log(p)).sum())
