"""How much can a feature-based scheduler gain in the stream setting with a shared average budget?

:func:`ceiling_analysis` compares, on the test table, under a token bucket refilled with the average budget b̄
(``agents.evaluation.harness.evaluate_stream``, the harness's shared setting):

* ``hull_mix`` — static mixture of two calibration-hull plans (the feature-blind optimum for an average budget);
* ``lagrangian`` — per-sample router argmax_p P̂(correct | x, p) − μ·c_p (:mod:`agents.learners.lagrangian`), fitted
  on calib;
* ``lagrangian_fit_on_test (bound)`` — the same router with its correctness model and price fitted on the *test*
  split, then evaluated on that same split: a bound for this model class on these features (no calibration→test
  shift, partly in-sample);
* ``label_router (bound)`` — :class:`LabelRouter`: the same rule with the true correctness of each (sample, plan) in
  place of P̂ and the price set on the test labels: a bound for any router over these plans.

and how predictable correctness is from the features: per candidate plan, the test ROC-AUC (:func:`roc_auc`) of
P̂(correct | x, p) for the calibration-fitted and the test-fitted model, plus the AUC of the full model's own
max-softmax confidence (known only *after* running the plan: a reference for "easy to tell").
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from adainf_env.stream import StreamSpec
from adainf_env.tables.outcomes import OutcomeTable
from agents.base import Decisions, Scheduler, check_budgets
from agents.evaluation.harness import evaluate_stream, stream_process_for
from agents.learners.lagrangian import price_for_budget, route
from adainf_env.feasibility import pareto_frontier
from agents.registry import make_scheduler

__all__ = ["roc_auc", "LabelRouter", "SETTINGS", "ceiling_analysis", "format_ceiling"]

#: The compared settings, in report order (bounds say so in their name).
SETTINGS = ("hull_mix", "lagrangian", "lagrangian_fit_on_test (bound)", "label_router (bound)")


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """ROC-AUC of ``score`` for binary ``label`` (Mann–Whitney U with mid-ranks for ties); NaN if one class only."""
    score = np.asarray(score, dtype=np.float64)
    label = np.asarray(label, dtype=bool)
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    # mid-ranks: every run of equal scores gets the mean of the ranks it spans
    first = np.r_[True, s[1:] != s[:-1]]
    run_id = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(s)] - 1
    mid = 0.5 * (starts + ends) + 1.0
    ranks = np.empty(len(s))
    ranks[order] = mid[run_id]
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class LabelRouter(Scheduler):
    """argmax_p 1[correct(x, p)] − μ·c_p within what may be spent, μ set on the evaluated table's labels — a bound
    (reads labels)."""

    name = "label_router"
    is_bound = True

    def decide(self, table, rows, budgets, state=None):  # type: ignore[override]
        self._check_table(table)
        budgets = check_budgets(budgets, len(rows))
        cost = self.plan_space.plan_cost
        if getattr(self, "_cache", (None,))[0] is not table:
            cand = pareto_frontier(cost, table.accuracy_by_plan())
            self._cache = (table, cand, table.correct[:, cand].astype(np.float64), {})
        _, cand, corr, prices = self._cache
        avg = None
        if state and state.get("avg_budget") is not None:
            avg = float(np.asarray(state["avg_budget"]).reshape(-1)[0])
        mu = 0.0
        if avg is not None:
            if avg not in prices:
                prices[avg] = price_for_budget(corr, cost[cand], avg)
            mu = prices[avg]
        plan = cand[route(corr[rows], cost[cand], mu, budgets)]
        return Decisions(plan=plan, cost=cost[plan])


def _stream(sched: Scheduler, test: OutcomeTable, avg_budget: float, floor: float, seed: int, *,
            stream: StreamSpec) -> dict[str, float]:
    proc = stream_process_for("shared", avg_budget, floor)
    r = evaluate_stream(sched, test, proc, shared=True, seed=seed, stream=stream, budget_label=avg_budget)
    return {"accuracy": r["accuracy"], "mean_cost": r["mean_cost"], "overrun_rate": r["overrun_rate"]}


def _aucs(sched: Any, test: OutcomeTable) -> np.ndarray:
    prob = sched.predict_correct(test.features)
    return np.array([roc_auc(prob[:, k], test.correct[:, p]) for k, p in enumerate(sched.candidates)])


def _setting_stats(rs: list[dict[str, float]]) -> dict[str, float]:
    a = np.array([r["accuracy"] for r in rs]) * 100
    return {"accuracy_mean": float(a.mean()), "accuracy_std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "mean_cost": float(np.mean([r["mean_cost"] for r in rs])),
            "overrun_rate": float(np.mean([r["overrun_rate"] for r in rs]))}


def ceiling_analysis(calib: OutcomeTable, test: OutcomeTable, *, avg_budget: float, seeds: int,
                     router_kwargs: Mapping[str, Any] | None = None, bucket_cap: float | None = None,
                     num_streams: int | None = None, horizon: int | None = None, near: float = 0.15,
                     stream: StreamSpec | None = None) -> dict[str, Any]:
    """Every number of the analysis (see module docstring) over seeds ``0 … seeds−1``, as a JSON-able dict.

    The streams: ``stream`` (default :data:`adainf_env.stream.DEFAULT_STREAM`) with ``bucket_cap`` /
    ``num_streams`` / ``horizon`` overriding its fields where given."""
    kw = dict(router_kwargs or {})
    floor = float(calib.plan_cost().min())
    spec = StreamSpec.of(stream, num_streams=num_streams, horizon=horizon, bucket_cap=bucket_cap)
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in SETTINGS}
    auc_calib, auc_test = [], []
    cand = None
    for seed in range(seeds):
        hull = make_scheduler("hull_mix").fit(calib, seed=seed)
        rows["hull_mix"].append(_stream(hull, test, avg_budget, floor, seed, stream=spec))
        lag = make_scheduler("lagrangian", progress=False, **kw).fit(calib, seed=seed)
        rows["lagrangian"].append(_stream(lag, test, avg_budget, floor, seed, stream=spec))
        # the bound: correctness model and price fitted on the evaluated (test) split, same candidate plans
        lag_t = make_scheduler("lagrangian", progress=False, **{**kw, "plans": [int(p) for p in lag.candidates]})
        lag_t.fit(test, seed=seed)
        rows["lagrangian_fit_on_test (bound)"].append(_stream(lag_t, test, avg_budget, floor, seed, stream=spec))
        rows["label_router (bound)"].append(_stream(LabelRouter().fit(test, seed=seed), test, avg_budget, floor,
                                                    seed, stream=spec))
        auc_calib.append(_aucs(lag, test))
        by_plan = dict(zip(lag_t.candidates.tolist(), _aucs(lag_t, test)))
        auc_test.append(np.array([by_plan[int(p)] for p in lag.candidates]))
        cand = lag.candidates
    settings = {name: _setting_stats(rs) for name, rs in rows.items()}
    for s in settings.values():
        s["gain_over_hull_mix_pt"] = s["accuracy_mean"] - settings["hull_mix"]["accuracy_mean"]
    cost = calib.plan_cost()[cand]
    ac, at = np.mean(auc_calib, axis=0), np.mean(auc_test, axis=0)
    close = np.abs(cost - avg_budget) <= near
    return {"avg_budget": avg_budget, "bucket_cap": spec.bucket_cap, "seeds": seeds, "settings": settings,
            "auc": {"plans": [int(p) for p in cand], "cost": cost.tolist(),
                    "test_accuracy": [float(test.correct[:, p].mean()) for p in cand],
                    "fit_calib": ac.tolist(), "fit_test_bound": at.tolist(),
                    "own_confidence": [roc_auc(test.conf[:, p], test.correct[:, p]) for p in cand],
                    "near": near, "fit_calib_mean_near_budget": float(ac[close].mean()) if close.any() else None}}


def format_ceiling(summary: Mapping[str, Any]) -> str:
    """The analysis as two console tables (stream settings; per-plan predictability)."""
    b = summary["avg_budget"]
    lines = [f"stream, shared average budget {b:g} (token bucket cap {summary['bucket_cap']:g}), test split, "
             f"{summary['seeds']} seeds — accuracy % / mean cost / overrun %, mean ± std"]
    for name, s in summary["settings"].items():
        lines.append(f"  {name:32s} {s['accuracy_mean']:6.2f} ± {s['accuracy_std']:4.2f}   {s['mean_cost']:.3f}   "
                     f"{100 * s['overrun_rate']:4.1f}")
    auc = summary["auc"]
    lines += ["", "predictability of correctness from the features (test ROC-AUC, mean over seeds)",
              "  plan  cost    test acc  AUC P̂ (fit calib)  AUC P̂ (fit test, bound)  AUC own confidence (after run)"]
    for k, p in enumerate(auc["plans"]):
        lines.append(f"  {p:4d}  {auc['cost'][k]:.3f}   {100 * auc['test_accuracy'][k]:6.2f}   "
                     f"{auc['fit_calib'][k]:.3f}              {auc['fit_test_bound'][k]:.3f}                    "
                     f"{auc['own_confidence'][k]:.3f}")
    lines.append(f"  mean AUC (calib-fitted) over plans with cost within ±{auc['near']:g} of {b:g}: "
                 f"{auc['fit_calib_mean_near_budget']}")
    return "\n".join(lines)
