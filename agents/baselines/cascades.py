"""Cascades: run cheap plans first and escalate to a bigger plan only when the cheap answer looks unreliable.

* ``confidence_cascade`` — run plan *a*; if its max-softmax confidence is below a threshold τ, also run plan *b* and
  use *b*'s prediction (the classic early-exit / cascade rule, e.g. Wang et al., "IDK cascades", 2018).
* ``agreement_cascade`` — ABC, "Agreement-Based Cascading" (Kolawole et al., 2024): run a small ensemble of cheap
  plans; if at least ``r`` of them vote for the same class, answer that class, else run plan *b* and use its answer.

Both read the confidences / predictions of the *cheap* plans from the outcome table: those are computed at run time
before the escalation decision, so this is not peeking. Both are fitted on the calibration table only.

**Cost paid (documented choice).** A plan's activations after block j depend only on the decisions for blocks 0..j,
so a plan that agrees with an already-run plan on its first k decisions reuses that plan's computed prefix. Running a
set S of plans together therefore costs ``|S|·base + Σ_j res_j · #{distinct decision prefixes d_0..d_j in S with
d_j = 1}``, where ``res_j`` is block j's residual-branch cost and ``base`` the cost every plan pays (stem, shortcuts,
head). ``res_j`` and ``base`` are recovered from the table's per-plan costs by least squares (exact for additive
costs such as MACs). Conservatively, ``base`` is charged again for every plan run — the stem and the prefix's
shortcuts could be reused too (≤ 1.45 % of the full ResNet18 per escalation). If the plan costs are not additive in
the blocks (e.g. measured latency), no reuse is assumed and each plan is paid in full.
An escalated request costs cheap + escalation − reuse, so its cost may exceed the budget: the cascades are fitted so
the *expected* calibration cost is ≤ the budget (``budget_mode="average"``, default); ``budget_mode="strict"`` makes
the worst-case cost (escalated path) fit the budget instead.

**Fit.** Candidate configurations (plan pair / ensemble, escalation plan, threshold or agreement level) are
enumerated over the calibration Pareto front of plans; each gets its calibration (cost, accuracy); for any budget the
scheduler uses the most accurate configuration whose cost (expected or worst-case) is within it — fitted once, for
every budget. Single plans are configurations too, so on calibration a cascade is never worse than ``lut``.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from adainf_env.errors import ConfigError
from adainf_env.feasibility import Staircase, pareto_frontier
from adainf_env.tables.outcomes import OutcomeTable
from agents.base import Decisions, Scheduler, check_budgets

__all__ = ["ConfidenceCascade", "AgreementCascade", "additive_costs", "joint_cost"]


def additive_costs(plan_masks: np.ndarray, plan_cost: np.ndarray, tol: float = 1e-9) -> tuple[float, np.ndarray] | None:
    """(base, res[B]) with plan_cost ≈ base + masks @ res, or None when the costs are not additive."""
    masks = np.asarray(plan_masks, dtype=np.float64)
    a = np.concatenate([np.ones((len(masks), 1)), masks], axis=1)
    sol, *_ = np.linalg.lstsq(a, plan_cost, rcond=None)
    if np.abs(a @ sol - plan_cost).max() > tol * max(1.0, float(np.abs(plan_cost).max())):
        return None
    return float(sol[0]), sol[1:]


def joint_cost(plans: list[int] | tuple[int, ...], plan_masks: np.ndarray, plan_cost: np.ndarray,
               additive: tuple[float, np.ndarray] | None) -> float:
    """Cost of running ``plans`` on one sample, reusing shared decision prefixes (see module docstring)."""
    plans = list(dict.fromkeys(int(p) for p in plans))
    if additive is None:
        return float(sum(plan_cost[p] for p in plans))
    base, res = additive
    total = base * len(plans)
    masks = plan_masks[plans]
    for j in range(masks.shape[1]):
        prefixes = {tuple(m[: j + 1]) for m in masks if m[j]}
        total += res[j] * len(prefixes)
    return float(total)


class _Cascade(Scheduler):
    """Shared machinery: a table of configurations with calibration (cost, worst-case cost, accuracy)."""

    def __init__(self, *, budget_mode: str = "average", max_candidates: int = 40) -> None:
        if budget_mode not in ("average", "strict"):
            raise ConfigError(f"budget_mode must be 'average' or 'strict', got {budget_mode!r}")
        if isinstance(max_candidates, bool) or not isinstance(max_candidates, int) or max_candidates < 2:
            raise ConfigError(f"max_candidates must be an integer ≥ 2, got {max_candidates!r}")
        self.budget_mode = budget_mode
        self.max_candidates = max_candidates

    def config(self) -> dict[str, Any]:
        return {"budget_mode": self.budget_mode, "max_candidates": self.max_candidates}

    def _candidates(self, table: OutcomeTable) -> np.ndarray:
        cost = self.plan_space.plan_cost
        # tol=0: a plan strictly more accurate than every cheaper one, by any margin, is a candidate
        front = pareto_frontier(cost, table.accuracy_by_plan(), tol=0.0)
        if len(front) > self.max_candidates:  # keep the cheapest, the dearest and evenly spaced ones between
            front = front[np.unique(np.linspace(0, len(front) - 1, self.max_candidates).round().astype(int))]
        return front

    def _finish_fit(self, configs: dict[str, np.ndarray]) -> None:
        self.configs = {k: np.asarray(v) for k, v in configs.items()}
        self._build()

    def _build(self) -> None:
        key = self.configs["exp_cost"] if self.budget_mode == "average" else self.configs["max_cost"]
        self._stairs = Staircase(key, self.configs["accuracy"])
        self._additive = additive_costs(self.plan_space.plan_masks, self.plan_space.plan_cost)

    def state_arrays(self) -> dict[str, np.ndarray]:
        return dict(self.configs)

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.configs = {k: np.asarray(v) for k, v in arrays.items()}
        self._build()

    def select(self, features: np.ndarray, budgets: np.ndarray, state: dict[str, Any] | None = None) -> np.ndarray:
        raise ConfigError(f"{self.name} decides after running its cheap plans; use decide() with a table")

    def _rows_and_configs(self, table: OutcomeTable, rows: np.ndarray, budgets: np.ndarray,
                          state: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray]:
        """decide()'s shared prologue: check the table and budgets, pick each row's fitted configuration."""
        self._check_table(table)
        rows = np.asarray(rows, dtype=np.int64)
        return rows, self.chosen_configs(check_budgets(budgets, len(rows)), state)

    def chosen_configs(self, budgets: np.ndarray, state: dict[str, Any] | None = None) -> np.ndarray:
        """Index of the configuration used for each budget.

        With a shared average budget (``state["avg_budget"]``, token-bucket stream) the cascade targets the average
        budget rather than what is in the bucket: it is fitted so its *expected* cost meets its budget, and feeding it
        a bucket that has saved up would let escalations spend the savings and overrun without limit.
        """
        if state is not None and state.get("avg_budget") is not None:
            budgets = state["avg_budget"]
        return self._stairs.lookup(check_budgets(budgets))


class ConfidenceCascade(_Cascade):
    """Cheap plan a; if conf_a < τ escalate to plan b (paying b's cost minus the reused prefix of a)."""

    name = "confidence_cascade"

    def fit(self, table: OutcomeTable, *, seed: int = 0, cost_unit: str = "macs") -> "ConfidenceCascade":
        super().fit(table, seed=seed, cost_unit=cost_unit)
        cost = self.plan_space.plan_cost
        additive = additive_costs(self.plan_space.plan_masks, cost)
        correct = table.correct
        n = table.num_samples
        front = self._candidates(table)
        out: dict[str, list] = {k: [] for k in ("cheap", "big", "threshold", "exp_cost", "max_cost", "accuracy")}

        def add(a, b, thr, exp_c, max_c, acc):
            out["cheap"].append(a), out["big"].append(b), out["threshold"].append(thr)
            out["exp_cost"].append(exp_c), out["max_cost"].append(max_c), out["accuracy"].append(acc)

        for a in front:  # single plans: threshold 0 = never escalate
            add(a, a, 0.0, cost[a], cost[a], correct[:, a].mean())
        for a in front:
            conf_a = table.conf[:, a].astype(np.float64)
            order = np.argsort(conf_a, kind="stable")
            sorted_conf = conf_a[order]
            # thresholds between distinct confidence values: escalate exactly the k least confident samples
            thr = np.unique(sorted_conf)[1:]
            thr = np.concatenate([thr, [np.inf]])
            k = np.searchsorted(sorted_conf, thr, side="left")
            base_correct = correct[:, a].sum()
            for b in front:
                if cost[b] <= cost[a]:
                    continue
                extra = joint_cost([a, b], self.plan_space.plan_masks, cost, additive) - cost[a]
                gain = np.concatenate([[0], np.cumsum(correct[order, b].astype(np.int64) - correct[order, a])])
                acc = (base_correct + gain[k]) / n
                exp_c = cost[a] + k / n * extra
                for i in range(len(thr)):
                    add(a, b, thr[i], exp_c[i], cost[a] + extra, acc[i])
        self._finish_fit({"cheap": np.array(out["cheap"], dtype=np.int64),
                          "big": np.array(out["big"], dtype=np.int64),
                          "threshold": np.array(out["threshold"], dtype=np.float64),
                          "exp_cost": np.array(out["exp_cost"]), "max_cost": np.array(out["max_cost"]),
                          "accuracy": np.array(out["accuracy"])})
        return self

    def decide(self, table: OutcomeTable, rows: np.ndarray, budgets: np.ndarray,
               state: dict[str, Any] | None = None) -> Decisions:
        rows, cfg = self._rows_and_configs(table, rows, budgets, state)
        cost = self.plan_space.plan_cost
        a, b, thr = self.configs["cheap"][cfg], self.configs["big"][cfg], self.configs["threshold"][cfg]
        esc = (table.conf[rows, a] < thr) & (a != b)
        plan = np.where(esc, b, a)
        paid = cost[a].copy()
        for ai, bi in set(zip(a[esc].tolist(), b[esc].tolist())):
            sel = esc & (a == ai) & (b == bi)
            paid[sel] = joint_cost([ai, bi], self.plan_space.plan_masks, cost, self._additive)
        return Decisions(plan=plan.astype(np.int64), cost=paid)


def _majority(preds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Majority class and its vote count per row of preds [N, k] (ties → the earliest member's class)."""
    votes = (preds[:, :, None] == preds[:, None, :]).sum(axis=2)  # [N, k]
    top = votes.argmax(axis=1)
    return preds[np.arange(len(preds)), top], votes.max(axis=1)


class AgreementCascade(_Cascade):
    """ABC: an ensemble of 2–3 cheap plans; accept the majority class when ≥ r members agree, else escalate to b.

    The reported ``plan`` of a request is the escalation plan when escalated, else the ensemble's cheapest member
    that voted for the accepted class (the prediction is the majority class, which that member predicts).
    """

    name = "agreement_cascade"

    def __init__(self, *, budget_mode: str = "average", max_candidates: int = 40, ensemble_pool: int = 10) -> None:
        super().__init__(budget_mode=budget_mode, max_candidates=max_candidates)
        if isinstance(ensemble_pool, bool) or not isinstance(ensemble_pool, int) or ensemble_pool < 2:
            raise ConfigError(f"ensemble_pool must be an integer ≥ 2, got {ensemble_pool!r}")
        self.ensemble_pool = ensemble_pool

    def config(self) -> dict[str, Any]:
        return {**super().config(), "ensemble_pool": self.ensemble_pool}

    def fit(self, table: OutcomeTable, *, seed: int = 0, cost_unit: str = "macs") -> "AgreementCascade":
        super().fit(table, seed=seed, cost_unit=cost_unit)
        cost = self.plan_space.plan_cost
        masks = self.plan_space.plan_masks
        additive = additive_costs(masks, cost)
        correct, pred, label = table.correct, table.pred, table.label
        front = self._candidates(table)
        # ensemble members: the cheapest `ensemble_pool` front plans below half the full cost (cheap tiers)
        pool = [int(p) for p in front if cost[p] <= 0.5][: self.ensemble_pool]
        members, rs, bigs, exp_c, max_c, accs = [], [], [], [], [], []
        for p in front:  # single plans (no cascade)
            members.append([p, -1, -1]), rs.append(1), bigs.append(-1)
            exp_c.append(cost[p]), max_c.append(cost[p]), accs.append(correct[:, p].mean())
        for k in (2, 3):
            for ens in itertools.combinations(pool, k):
                maj, votes = _majority(pred[:, list(ens)].astype(np.int64))
                maj_ok = maj == label
                c_ens = joint_cost(list(ens), masks, cost, additive)
                for r in ([2] if k == 2 else [2, 3]):
                    accept = votes >= r
                    frac = 1.0 - accept.mean()
                    for b in front:
                        if cost[b] <= max(cost[list(ens)]):
                            continue
                        c_all = joint_cost(list(ens) + [int(b)], masks, cost, additive)
                        acc = np.where(accept, maj_ok, correct[:, b]).mean()
                        members.append(list(ens) + [-1] * (3 - k)), rs.append(r), bigs.append(int(b))
                        exp_c.append(c_ens + frac * (c_all - c_ens)), max_c.append(c_all), accs.append(acc)
        self._finish_fit({"members": np.array(members, dtype=np.int64), "agree": np.array(rs, dtype=np.int64),
                          "big": np.array(bigs, dtype=np.int64), "exp_cost": np.array(exp_c),
                          "max_cost": np.array(max_c), "accuracy": np.array(accs)})
        return self

    def decide(self, table: OutcomeTable, rows: np.ndarray, budgets: np.ndarray,
               state: dict[str, Any] | None = None) -> Decisions:
        rows, cfg = self._rows_and_configs(table, rows, budgets, state)
        cost = self.plan_space.plan_cost
        masks = self.plan_space.plan_masks
        plan = np.empty(len(rows), dtype=np.int64)
        paid = np.empty(len(rows))
        for c in np.unique(cfg):
            sel = np.flatnonzero(cfg == c)
            ens = [int(m) for m in self.configs["members"][c] if m >= 0]
            big, r = int(self.configs["big"][c]), int(self.configs["agree"][c])
            if big < 0:  # a single plan
                plan[sel], paid[sel] = ens[0], cost[ens[0]]
                continue
            preds = table.pred[rows[sel]][:, ens].astype(np.int64)
            maj, votes = _majority(preds)
            accept = votes >= r
            voter = np.asarray(ens)[(preds == maj[:, None]).argmax(axis=1)]
            plan[sel] = np.where(accept, voter, big)
            c_ens = joint_cost(ens, masks, cost, self._additive)
            paid[sel] = np.where(accept, c_ens, joint_cost(ens + [big], masks, cost, self._additive))
        return Decisions(plan=plan, cost=paid)
