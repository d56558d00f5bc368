"""One rule for "does this plan fit this budget", and what follows from it.

Every scheduler, both environments and the evaluation harness import these functions, so a plan a policy may pick
under a hard budget is never one the harness counts as an overrun.

Units: costs and budgets are fractions of the full model's cost (MACs or measured latency), in (0, 1].
Costs are computed as ratios of integers (MACs) or of measured milliseconds, so two plans whose exact costs are equal
may differ in the last bits; :data:`COST_TOL` absorbs that rounding and nothing more.

The functions accept numpy arrays; :func:`fits`, :func:`overrun` and :func:`masked_argmax` accept torch tensors too
(they use only broadcasting comparisons and ``where``), so torch learners share the same rule on their own devices.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "COST_TOL",
    "fits",
    "overrun",
    "overrun_amount",
    "cheapest",
    "feasible_with_fallback",
    "masked_argmax",
    "pareto_frontier",
    "upper_hull",
    "Staircase",
    "lut_choice",
]

# A plan whose cost equals the budget up to float rounding is within budget.
COST_TOL = 1e-9


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def fits(plan_cost: Any, budgets: Any) -> Any:
    """``[N, P]`` bool: plan p's cost ≤ budget n (+ :data:`COST_TOL`). ``plan_cost`` [P], ``budgets`` [N]."""
    if _is_torch(plan_cost) or _is_torch(budgets):
        import torch

        c = torch.as_tensor(plan_cost)
        b = torch.as_tensor(budgets, dtype=c.dtype, device=c.device).reshape(-1)
        return c[None, :] <= b[:, None] + COST_TOL
    c = np.asarray(plan_cost, dtype=np.float64)
    b = np.asarray(budgets, dtype=np.float64).reshape(-1)
    return c[None, :] <= b[:, None] + COST_TOL


def overrun(cost: Any, budgets: Any) -> Any:
    """Elementwise bool: a paid ``cost`` exceeds its ``budget`` (beyond :data:`COST_TOL`)."""
    if type(cost) is float and type(budgets) is float:  # the single env's per-step path: skip array conversion
        return cost > budgets + COST_TOL
    if _is_torch(cost) or _is_torch(budgets):
        return cost > budgets + COST_TOL
    return np.asarray(cost, dtype=np.float64) > np.asarray(budgets, dtype=np.float64) + COST_TOL


def overrun_amount(cost: Any, budgets: Any) -> Any:
    """``max(0, cost − budget)`` elementwise, in fractions of the full model (the hinge of the AdaInf loss)."""
    if _is_torch(cost) or _is_torch(budgets):
        import torch

        return torch.clamp(cost - budgets, min=0.0)
    return np.maximum(np.asarray(cost, dtype=np.float64) - np.asarray(budgets, dtype=np.float64), 0.0)


def cheapest(plan_cost: Any) -> int:
    """Index of the cheapest plan (the first one on ties)."""
    return int(np.argmin(np.asarray(plan_cost, dtype=np.float64)))


def feasible_with_fallback(plan_cost: Any, budgets: Any) -> Any:
    """:func:`fits`, except that a budget below every plan allows the cheapest plan (and only it).

    A budget no plan meets cannot be honoured; every scheduler then runs the cheapest plan and the harness counts the
    overrun. This is the action mask of the environments and the candidate set of every learner.
    """
    m = fits(plan_cost, budgets)
    none = ~m.any(1)
    m[:, cheapest(plan_cost if not _is_torch(plan_cost) else plan_cost.detach().cpu().numpy())] |= none
    return m


def masked_argmax(scores: Any, plan_cost: Any, budgets: Any) -> Any:
    """``[N]`` index of the best-scoring plan among those that fit each budget; the cheapest plan when none fits.

    ``scores`` is ``[N, P]`` (numpy or torch). Ties go to the lowest index, as ``argmax`` does.
    """
    mask = feasible_with_fallback(plan_cost, budgets)
    if _is_torch(scores):
        import torch

        neg = torch.finfo(scores.dtype).min
        mask = torch.as_tensor(mask, device=scores.device)
        return torch.where(mask, scores, torch.full_like(scores, neg)).argmax(1)
    s = np.asarray(scores, dtype=np.float64)
    return np.where(mask, s, -np.inf).argmax(1).astype(np.int64)


def pareto_frontier(cost: Any, score: Any, *, tol: float = 1e-12) -> np.ndarray:
    """Indices on the cost/score Pareto frontier, sorted by cost: each strictly better (by > ``tol``) than every
    cheaper one. Always holds the best of the cheapest plans, so every budget ≥ the cheapest cost has a candidate."""
    cost = np.asarray(cost, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    order = np.lexsort((-score, cost))  # by cost; equal cost: best score first
    keep: list[int] = []
    best = -np.inf
    for p in order:
        if score[p] > best + tol:
            keep.append(int(p))
            best = score[p]
    return np.asarray(keep, dtype=np.int64)


def upper_hull(cost: Any, score: Any) -> np.ndarray:
    """Indices of the upper concave hull of points (cost, score), from the cheapest point to the best one.

    Only the increasing part is kept: beyond the best-scoring point, paying more buys nothing. Mixing the two hull
    plans around a budget at random is the best any static randomised scheduler can do *on average*.
    """
    cost = np.asarray(cost, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    hull: list[int] = []
    for p in pareto_frontier(cost, score, tol=0.0).tolist():
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b lies on or below the segment a→p (cross product ≥ 0): it is not on the concave hull.
            cross = (cost[b] - cost[a]) * (score[p] - score[a]) - (score[b] - score[a]) * (cost[p] - cost[a])
            if cross >= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    return np.asarray(hull, dtype=np.int64)


class Staircase:
    """Best score among the options whose cost fits a budget, for any budget: a monotone step function.

    ``lookup(budgets)`` returns the option with the highest score among those that fit (ties → the cheaper option,
    then the lower index); a budget below every cost gets the cheapest option. This is the static look-up table.
    """

    def __init__(self, cost: Any, score: Any) -> None:
        cost = np.asarray(cost, dtype=np.float64)
        score = np.asarray(score, dtype=np.float64)
        order = np.lexsort((-score, cost))  # by cost, then best score first
        best = np.empty(len(order), dtype=np.int64)
        cur, cur_score = order[0], score[order[0]]
        for i, o in enumerate(order):
            if score[o] > cur_score:  # strict: an equally good but dearer option never replaces a cheaper one
                cur, cur_score = o, score[o]
            best[i] = cur
        self.sorted_cost = cost[order]
        self.best = best
        self.cheapest = int(order[0])

    def lookup(self, budgets: Any) -> np.ndarray:
        b = np.asarray(budgets, dtype=np.float64).reshape(-1)
        idx = np.searchsorted(self.sorted_cost, b + COST_TOL, side="right") - 1
        return np.where(idx >= 0, self.best[np.maximum(idx, 0)], self.cheapest).astype(np.int64)


def lut_choice(cost: Any, score: Any, budgets: Any) -> np.ndarray:
    """``[N]`` the look-up-table plan for each budget: best ``score`` among plans that fit, ties → cheaper."""
    return Staircase(cost, score).lookup(budgets)
