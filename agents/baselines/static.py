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
from adainf_env.feasibility import Staircase, fits, upper_hull
from adainf_env.tables.outcomes import OutcomeTable
from agents.base import Decisions, Scheduler, check_budgets

__all__ = ["LUTScheduler", "LUTUpperScheduler", "HullMixScheduler", "RandomScheduler", "OracleScheduler"]

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
        """[N] number of plans that fit each budget: they are the first ones in :attr:`_cost_order`."""
        return fits(self.plan_space.plan_cost, budgets).sum(axis=1)

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
        ok = table.correct[rows][:, order] & fits(cost[order], budgets)
        plan = order[np.where(ok.any(axis=1), ok.argmax(axis=1), 0)]
        return Decisions(plan=plan.astype(np.int64), cost=cost[plan])
