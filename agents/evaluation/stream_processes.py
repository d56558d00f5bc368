"""The budget processes of the harnesses' stream variants, around a nominal average budget.

One home for both harnesses (plan env: :mod:`agents.evaluation.harness`; anytime env:
:mod:`agents.evaluation.anytime_harness`), so a stream variant means the same process in both.
"""

from __future__ import annotations

from typing import Any

from adainf_env.budgets import FixedBudget, PeriodicBudget, RandomWalkBudget, make_budget_process

__all__ = ["SWEPT_VARIANTS", "stream_process_for"]

#: Stream variants swept over the average-budget grid; any other variant is a process spec evaluated once.
SWEPT_VARIANTS: tuple[str, ...] = ("shared", "periodic", "random_walk")


def stream_process_for(kind: str, avg_budget: float, floor: float, **kw: Any):
    """The budget process of stream variant ``kind`` around the nominal average budget ``avg_budget``.

    * ``shared``: ``fixed:avg_budget`` refilling a token bucket (the per-request budget is what is in the bucket).
    * ``periodic``: a sine between avg ± δ, δ = min(0.15, avg − floor, 1 − avg), period 200 requests: load swings
      whose mean is the average budget.
    * ``random_walk``: starts at avg, increments σ = 0.03, reflected into [avg − δ, avg + δ] (δ as above).
    * anything else: handed to :func:`adainf_env.budgets.make_budget_process` unchanged (e.g. ``trace:PATH``);
      the record's budget is then the realised mean budget.
    """
    avg = float(avg_budget)
    delta = max(0.0, min(0.15, avg - floor, 1.0 - avg))
    if kind == "shared":
        return FixedBudget(value=avg)
    if kind == "periodic":
        return PeriodicBudget(period=kw.get("period", 200.0), low=avg - delta, high=avg + delta, shape="sine")
    if kind == "random_walk":
        return RandomWalkBudget(sigma=kw.get("sigma", 0.03), low=avg - delta, high=avg + delta, start_value=avg)
    return make_budget_process(kind)

