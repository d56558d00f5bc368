"""Your own scheduler, run like the built-in ones (docs/adding_a_scheduler.md).

    python examples/custom_scheduler.py                     # fit on the reference calib table, test vs lut
    PYTHONPATH=examples python experiments/compare_schedulers.py --table-dir reference --seeds 1 --no-anytime \
        --schedulers lut custom_scheduler:MarginLUT          # every setting, next to the built-ins

A class is a plan-env scheduler when it subclasses :class:`agents.Scheduler` and implements ``fit`` and ``select``
(features [N, F] and budgets [N] → plan indices [N]); give it by ``module:ClassName`` or ``agents.register`` a name.
"""

from __future__ import annotations

import sys

import numpy as np

from agents import Scheduler


class MarginLUT(Scheduler):
    """The calibration table's most accurate plan whose cost fits ``margin`` × the budget (cheapest if none fits)."""

    name = "margin_lut"

    def __init__(self, *, margin: float = 0.9) -> None:
        self.margin = float(margin)

    def config(self) -> dict:
        return {"margin": self.margin}  # what save() records and load_scheduler() rebuilds it from

    def fit(self, table, *, seed: int = 0, cost_unit: str = "macs") -> "MarginLUT":
        super().fit(table, seed=seed, cost_unit=cost_unit)  # the plan space: plan costs, feature width
        self.accuracy = table.accuracy_by_plan()  # calibration rows only, never the test split
        return self

    def select(self, features, budgets, state=None) -> np.ndarray:
        features, budgets = self._validated_inputs(features, budgets)
        cost = self.plan_space.plan_cost
        fits = cost[None, :] <= self.margin * budgets[:, None]
        fits[:, np.argmin(cost)] |= ~fits.any(axis=1)
        return np.where(fits, self.accuracy[None, :], -1.0).argmax(axis=1)


def main(table_dir: str = "reference") -> dict[str, list[float]]:
    """Register the class, fit it and ``lut`` on the calib table, print their test accuracy per budget."""
    import agents
    from adainf_lab.tables import load_split_tables, resolve_table_dir

    agents.register("margin_lut", MarginLUT)
    calib, test = load_split_tables(resolve_table_dir(table_dir))
    budgets = [0.3, 0.5, 0.7, 1.0]
    out = {}
    for name in ("lut", "margin_lut"):
        sched = agents.make_scheduler(name).fit(calib, seed=0)
        out[name] = [r["accuracy"] for r in agents.evaluate_bandit(sched, test, budgets, seed=0)]
        print(f"{name:>10}: " + "  ".join(f"{b:g}: {100 * a:.2f}%" for b, a in zip(budgets, out[name])))
    return out


if __name__ == "__main__":
    main(*sys.argv[1:2])
