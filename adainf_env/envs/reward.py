"""The reward of one request, shared by :class:`~adainf_env.envs.plan.env.AdaInfEnv` and
:class:`~adainf_env.envs.plan.vec_env.AdaInfVecEnv` (Python scalars for the single env, numpy arrays for the batched one).

With ``cost`` and ``budget`` fractions of the full model and ``overrun`` what :func:`overrun_paid` returns:

* ``reward="correct"``: ``1[prediction correct] − λ·overrun``, in [−λ, 1];
* ``reward="neg_ce"``: ``−CE(true label) − λ·overrun`` (CE in nats);
* ``penalty="hard"``: ``hard_penalty`` whenever ``overrun > 0``, the base reward otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from adainf_env.feasibility import overrun

__all__ = ["overrun_paid", "step_reward"]


def overrun_paid(cost: Any, budget: Any) -> Any:
    """``cost − budget`` where :func:`adainf_env.feasibility.overrun` says the plan exceeds the budget, else 0.

    So a plan the action mask allows (it fits, up to the shared tolerance) never pays a penalty. Scalars in →
    a float out; arrays in → a float64 array out.
    """
    if type(cost) is float and type(budget) is float:  # the single env's per-step path: Python floats
        # cost ≤ budget can never be an overrun (the tolerance only widens "fits"), so most steps of a policy that
        # respects its budget skip the numpy call; the rule itself is feasibility's.
        if cost <= budget or not overrun(cost, budget):
            return 0.0
        return cost - budget
    return np.where(overrun(cost, budget), np.subtract(cost, budget, dtype=np.float64), 0.0)


def step_reward(correct: Any, ce: Any, over: Any, *, reward: str, penalty: str, lam: float,
                hard_penalty: float) -> Any:
    """Reward of requests whose prediction was ``correct`` (bool), with cross-entropy ``ce`` (nats; read only for
    ``reward="neg_ce"``) and overrun ``over`` (from :func:`overrun_paid`). Broadcasts like numpy; scalars in →
    a float out."""
    base = -ce if reward == "neg_ce" else correct * 1.0
    if penalty == "hard":
        if isinstance(over, np.ndarray):
            return np.where(over > 0.0, hard_penalty, base)
        return hard_penalty if over > 0.0 else base
    return base - lam * over
