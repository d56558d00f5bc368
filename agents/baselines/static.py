"""Non-learned schedulers and bounds: ``lut``, ``lut_upper``, ``hull_mix``, ``random``, ``oracle``.

All are fitted on a calibration table only (the test split never chooses a plan), except the two *bounds*, which are
flagged ``is_bound = True`` and plotted/tabled as such:

* ``lut_upper`` chooses its per-budget plan on the very table it is evaluated on (an upper curve for any static plan);
* ``oracle`` reads the labels of each sample (cheapest correct plan within budget).

Costs and budgets are fractions of the full model (MACs by default). A budget below the cheapest plan cannot be met:
every scheduler here then picks the cheapest plan, and the harness counts it as an overrun.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from adainf_env.errors import ConfigError
from adainf_env.outcomes import OutcomeTable
from agents.base import Decisions, Scheduler, check_budgets

__all__ = ["LUTScheduler", "LUTUpperScheduler", "HullMixScheduler", "RandomScheduler", "OracleScheduler",
           "Staircase", "upper_hull"]

# Budgets and costs are float fractions; a plan whose cost equals the budget up to rounding is within budget.
COST_TOL = 1e-9


class Staircase:
    """Best score among the options whose cost is ≤ a budget, for any budget: a monotone step function.

    ``cost[i]``, ``score[i]`` describe option i. ``lookup(budgets)`` returns the option index with the highest score
    among those with cost ≤ budget (ties → the cheaper option); a budget below every cost gets the cheapest option.
    """

    def __init__(self, cost: np.ndarray, score: np.ndarray) -> None:
        cost = np.asarray(cost, dtype=np.float64)
        score = np.asarray(score, dtype=np.float64)
        # Sort by cost, then by descending score, so the first of equal-cost options is the best one.
        order = np.lexsort((-score, cost))
        best = np.empty(len(order), dtype=np.int64)
        cur, cur_score = order[0], score[order[0]]
        for i, o in enumerate(order):
            if score[o] > cur_score:  # strict: an equally good but dearer option never replaces a cheaper one
                cur, cur_score = o, score[o]
            best[i] = cur
        self.sorted_cost = cost[order]
        self.best = best
        self.cheapest = int(order[0])

    def lookup(self, budgets: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self.sorted_cost, np.asarray(budgets, dtype=np.float64) + COST_TOL, side="right") - 1
        return np.where(idx >= 0, self.best[np.maximum(idx, 0)], self.cheapest).astype(np.int64)


def upper_hull(cost: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Indices of the upper concave hull of points (cost, score), from the cheapest point to the best one.

    Only the increasing part is kept: beyond the best-scoring point, paying more buys nothing.
    """
    cost = np.asarray(cost, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    order = np.lexsort((-score, cost))
    # drop points not better than a cheaper one (keeps the Pareto staircase), then Andrew's monotone chain (upper).
    pareto: list[int] = []
    for o in order:
        if not pareto or score[o] > score[pareto[-1]]:
            if pareto and cost[o] == cost[pareto[-1]]:
                continue
            pareto.append(int(o))
    hull: list[int] = []
    for p in pareto:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b lies on or below the segment a→p: remove it (cross product ≥ 0 means a right turn is missing)
            cross = (cost[b] - cost[a]) * (score[p] - score[a]) - (score[b] - score[a]) * (cost[p] - cost[a])
            if cross >= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    return np.asarray(hull, dtype=np.int64)


class _TableBaseline(Scheduler):
    """Shared fit: per-plan calibration accuracy and the cost staircase."""

    def fit(self, table: OutcomeTable, *, seed: int = 0, cost_unit: str = "macs") -> "_TableBaseline":
        super().fit(table, seed=seed, cost_unit=cost_unit)
        self.seed = int(seed)
        self.calib_accuracy = table.accuracy_by_plan().astype(np.float64)
        self._build()
        return self

    def _build(self) -> None:
        self._stairs = Staircase(self.plan_space.plan_cost, self.calib_accuracy)
        self._rng = np.random.default_rng(self.seed)

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {"calib_accuracy": self.calib_accuracy, "seed": np.array(self.seed)}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.calib_accuracy = np.asarray(arrays["calib_accuracy"], dtype=np.float64)
        self.seed = int(arrays["seed"])
        self._build()

    def _plans_within(self, budgets: np.ndarray) -> np.ndarray:
        """[N] number of plans affordable under each budget (plans sorted by cost)."""
        return np.searchsorted(self.plan_space.plan_cost[self._cost_order], budgets + COST_TOL, side="right")

    @property
    def _cost_order(self) -> np.ndarray:
        return np.argsort(self.plan_space.plan_cost, kind="stable")


class LUTScheduler(_TableBaseline):
    """Static look-up table: per budget, the plan with the best *calibration* accuracy among plans within budget."""

    name = "lut"

    def select(self, features: np.ndarray, budgets: np.ndarray, state: dict[str, Any] | None = None) -> np.ndarray:
        budgets = check_budgets(budgets, len(features))
        return self._stairs.lookup(budgets)


class LUTUpperScheduler(LUTScheduler):
    """``lut`` with its plans chosen on the table it is evaluated on — an upper curve for static plans, *a bound*.

    It reads the labels of the evaluated table, so it has no feature-only policy; use :meth:`decide`.
    """

    name = "lut_upper"
    is_bound = True

    def select(self, features: np.ndarray, budgets: np.ndarray, state: dict[str, Any] | None = None) -> np.ndarray:
        raise ConfigError("lut_upper is a bound chosen on the evaluated table's labels; it has only decide()")

    def decide(self, table: OutcomeTable, rows: np.ndarray, budgets: np.ndarray,
               state: dict[str, Any] | None = None) -> Decisions:
        self._check_table(table)
        budgets = check_budgets(budgets, len(rows))
        cache = getattr(self, "_upper_cache", None)
        if cache is None or cache[0] is not table:
            # the whole evaluated table chooses, not the current batch: a per-batch choice would be a noisier bound
            cache = (table, Staircase(self.plan_space.plan_cost, table.accuracy_by_plan()))
            self._upper_cache = cache
        plan = cache[1].lookup(budgets)
        return Decisions(plan=plan, cost=self.plan_space.plan_cost[plan])


class RandomScheduler(_TableBaseline):
    """A plan drawn uniformly among the plans within budget (the cheapest plan if none is); seeded at fit."""

    name = "random"

    def select(self, features: np.ndarray, budgets: np.ndarray, state: dict[str, Any] | None = None) -> np.ndarray:
        budgets = check_budgets(budgets, len(features))
        n_ok = self._plans_within(budgets)
        r = np.floor(self._rng.random(len(budgets)) * np.maximum(n_ok, 1)).astype(np.int64)
        return self._cost_order[np.where(n_ok > 0, r, 0)]


class HullMixScheduler(_TableBaseline):
    """Static randomised mixture of two LUT plans on the upper convex hull of (cost, calibration accuracy).

    For an *average* budget b̄ between two adjacent hull plans (c_i, c_j) it picks plan i with probability
    q = (c_j − b̄) / (c_j − c_i), else plan j, so the expected cost is exactly b̄ and the expected accuracy is the hull's
    value at b̄ — the best any static (feature-blind) policy can do under an average-cost constraint. This is the
    baseline for the stream setting with a shared average budget. The average budget is ``state["avg_budget"]`` when
    the harness passes one (token-bucket stream), else the per-request budget (which it may then overrun).
    """

    name = "hull_mix"

    def _build(self) -> None:
        super()._build()
        self.hull = upper_hull(self.plan_space.plan_cost, self.calib_accuracy)

    def mixture(self, avg_budget: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cheaper plan, dearer plan, probability of the cheaper plan) per average budget."""
        hc = self.plan_space.plan_cost[self.hull]
        b = np.clip(np.asarray(avg_budget, dtype=np.float64), hc[0], hc[-1])
        j = np.clip(np.searchsorted(hc, b, side="left"), 1, max(len(hc) - 1, 1))
        i = j - 1
        if len(hc) == 1:
            return self.hull[np.zeros_like(j)], self.hull[np.zeros_like(j)], np.ones_like(b)
        q = (hc[j] - b) / (hc[j] - hc[i])
        return self.hull[i], self.hull[j], np.clip(q, 0.0, 1.0)

    def select(self, features: np.ndarray, budgets: np.ndarray, state: dict[str, Any] | None = None) -> np.ndarray:
        budgets = check_budgets(budgets, len(features))
        target = budgets
        if state is not None and state.get("avg_budget") is not None:
            target = check_budgets(state["avg_budget"], len(features))
        lo, hi, q = self.mixture(target)
        return np.where(self._rng.random(len(target)) < q, lo, hi).astype(np.int64)


class OracleScheduler(_TableBaseline):
    """Per sample, the cheapest plan that classifies it correctly within budget, else the cheapest plan.

    Reads the labels of the evaluated table: *a bound* on any scheduler over this plan space.
    """

    name = "oracle"
    is_bound = True

    def select(self, features: np.ndarray, budgets: np.ndarray, state: dict[str, Any] | None = None) -> np.ndarray:
        raise ConfigError("oracle reads labels; it has only decide()")

    def decide(self, table: OutcomeTable, rows: np.ndarray, budgets: np.ndarray,
               state: dict[str, Any] | None = None) -> Decisions:
        self._check_table(table)
        rows = np.asarray(rows, dtype=np.int64)
        budgets = check_budgets(budgets, len(rows))
        cost = self.plan_space.plan_cost
        order = self._cost_order
        ok = table.correct[rows][:, order] & (cost[order][None, :] <= budgets[:, None] + COST_TOL)
        plan = order[np.where(ok.any(axis=1), ok.argmax(axis=1), 0)]
        return Decisions(plan=plan.astype(np.int64), cost=cost[plan])
