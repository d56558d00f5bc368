"""Why does a feature-based scheduler gain only so much in the stream setting with a shared average budget?

    python experiments/stream_ceiling.py --table-dir ../shared/reference --avg-budget 0.2 --seeds 3

Compares, on the test table, under a token bucket refilled with the average budget b̄ (``agents.evaluation.harness.
evaluate_stream``, the harness's shared setting):

* ``hull_mix``   — static mixture of two calibration-hull plans (the feature-blind optimum for an average budget);
* ``lagrangian`` — per-sample router argmax_p P̂(correct | x, p) − μ·c_p (:mod:`agents.learners.lagrangian`), fitted on calib;
* ``lagrangian fitted on test`` — the same router with its correctness model and price fitted on the *test* split
  (70 % fit / 30 % early stopping + price), then evaluated on that same split: **a bound** for this model class on
  these features (no calibration→test shift, partly in-sample);
* ``label router`` — the same rule with the true correctness of each (sample, plan) in place of P̂ and the price set
  on the test labels: **a bound** for any router over these plans (what perfect difficulty prediction would buy).

and how predictable correctness is from the 64-d stem features: per candidate plan, the test ROC-AUC of P̂(correct|x,p)
(0.5 = no information) for the calibration-fitted and the test-fitted model, plus the AUC of the full model's own
max-softmax confidence (computed *after* running the plan, so not available to a scheduler: a reference for "easy to
tell"). Prints a table; the last line is a JSON object with every number.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # allow `python experiments/stream_ceiling.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from adainf_env.errors import AdaInfError, ConfigError  # noqa: E402

__all__ = ["CeilingConfig", "main", "roc_auc", "LabelRouter"]


@dataclasses.dataclass
class CeilingConfig:
    """Ceiling analysis of feature-based routing under a shared average budget (stream setting)."""

    table_dir: Path = dataclasses.field(metadata={"help": "directory with table_calib.npz and table_test.npz"})
    avg_budget: float = dataclasses.field(default=0.2, metadata={"help": "average budget (token-bucket refill)"})
    seeds: int = dataclasses.field(default=3, metadata={"help": "seeds 0 … seeds−1 (fit and stream order)"})
    num_streams: int = dataclasses.field(default=50, metadata={"help": "parallel streams per evaluation"})
    horizon: int = dataclasses.field(default=200, metadata={"help": "requests per stream"})
    bucket_cap: float = dataclasses.field(default=1.0, metadata={"help": "token-bucket capacity (full-model units)"})
    scheduler_kwargs: str = dataclasses.field(default="{}", metadata={"help": "JSON kwargs for the lagrangian router"})
    out: Path | None = dataclasses.field(default=None, metadata={"help": "also write the JSON here (atomically)"})

    def __post_init__(self) -> None:
        if not 0 < self.avg_budget <= 1:
            raise ConfigError(f"--avg-budget must be in (0, 1], got {self.avg_budget}")
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be ≥ 1, got {self.seeds}")


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """ROC-AUC of ``score`` for binary ``label`` (Mann–Whitney U with mid-ranks for ties); NaN if one class only."""
    score = np.asarray(score, dtype=np.float64)
    label = np.asarray(label, dtype=bool)
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):  # mid-ranks over runs of equal scores
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i:j + 1] = 0.5 * (i + j) + 1.0
        i = j + 1
    r = np.empty(len(s))
    r[order] = ranks
    return float((r[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _label_router_class():
    from agents.base import Decisions, Scheduler, check_budgets
    from agents.learners.lagrangian import price_for_budget, route
    from agents.learners.policy_nets import pareto_plans

    class LabelRouter(Scheduler):
        """argmax_p 1[correct(x, p)] − μ·c_p within what may be spent, μ set on the evaluated table's labels — a
        bound (reads labels)."""

        name = "label_router"
        is_bound = True

        def decide(self, table, rows, budgets, state=None):  # type: ignore[override]
            self._check_table(table)
            budgets = check_budgets(budgets, len(rows))
            cost = self.plan_space.plan_cost
            if getattr(self, "_cache", (None,))[0] is not table:
                cand = pareto_plans(table, cost)
                corr = table.correct[:, cand].astype(np.float64)
                self._cache = (table, cand, corr, {})
            _, cand, corr, prices = self._cache
            avg = float(np.asarray(state["avg_budget"]).reshape(-1)[0]) if state and state.get("avg_budget") \
                is not None else None
            mu = 0.0
            if avg is not None:
                if avg not in prices:
                    prices[avg] = price_for_budget(corr, cost[cand], avg)
                mu = prices[avg]
            plan = cand[route(corr[rows], cost[cand], mu, budgets)]
            return Decisions(plan=plan, cost=cost[plan])

    return LabelRouter


LabelRouter = None  # set lazily by main() (keeps `import experiments.stream_ceiling` light)


def _stream(sched: Any, test: Any, cfg: CeilingConfig, floor: float, seed: int) -> dict[str, float]:
    from agents.evaluation.harness import evaluate_stream, stream_process_for

    proc = stream_process_for("shared", cfg.avg_budget, floor)
    r = evaluate_stream(sched, test, proc, shared=True, bucket_cap=cfg.bucket_cap, seed=seed,
                        num_streams=cfg.num_streams, horizon=cfg.horizon, budget_label=cfg.avg_budget)
    return {"accuracy": r["accuracy"], "mean_cost": r["mean_cost"], "overrun_rate": r["overrun_rate"]}


def _aucs(sched: Any, test: Any) -> np.ndarray:
    prob = sched.predict_correct(test.features)
    return np.array([roc_auc(prob[:, k], test.correct[:, p]) for k, p in enumerate(sched.candidates)])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from adainf_env.fileio import atomic_write_json
    from adainf_lab.cli import parse_config
    from agents.registry import make_scheduler
    from experiments.compare_schedulers import load_split_tables

    global LabelRouter
    cfg = parse_config(CeilingConfig, argv)
    try:
        kw = json.loads(cfg.scheduler_kwargs)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--scheduler-kwargs is not valid JSON: {e}") from None
    calib, test = load_split_tables(cfg.table_dir)
    LabelRouter = _label_router_class()
    floor = float(calib.plan_cost().min())
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in
                                                ("hull_mix", "lagrangian", "lagrangian_fit_on_test (bound)",
                                                 "label_router (bound)")}
    auc_calib, auc_test = [], []
    cand = None
    for seed in range(cfg.seeds):
        rows["hull_mix"].append(_stream(make_scheduler("hull_mix").fit(calib, seed=seed), test, cfg, floor, seed))
        lag = make_scheduler("lagrangian", progress=False, **kw).fit(calib, seed=seed)
        rows["lagrangian"].append(_stream(lag, test, cfg, floor, seed))
        # the bound: the correctness model and price fitted on the evaluated (test) split itself
        lag_t = make_scheduler("lagrangian", progress=False, **{**kw, "plans": [int(p) for p in lag.candidates]})
        lag_t.fit(test, seed=seed)  # same candidate plans as the calibration-fitted router
        rows["lagrangian_fit_on_test (bound)"].append(_stream(lag_t, test, cfg, floor, seed))
        rows["label_router (bound)"].append(_stream(LabelRouter().fit(test, seed=seed), test, cfg, floor, seed))
        auc_calib.append(_aucs(lag, test))
        by_plan = dict(zip(lag_t.candidates.tolist(), _aucs(lag_t, test)))  # same plans, index order
        auc_test.append(np.array([by_plan[int(p)] for p in lag.candidates]))
        cand = lag.candidates
    cost = calib.plan_cost()[cand]
    conf_auc = np.array([roc_auc(test.conf[:, p], test.correct[:, p]) for p in cand])
    summary: dict[str, Any] = {"avg_budget": cfg.avg_budget, "seeds": cfg.seeds, "settings": {}}
    print(f"stream, shared average budget {cfg.avg_budget:g} (token bucket cap {cfg.bucket_cap:g}), test split, "
          f"{cfg.seeds} seeds — accuracy % / mean cost / overrun %, mean ± std")
    for name, rs in rows.items():
        a = np.array([r["accuracy"] for r in rs]) * 100
        c = np.array([r["mean_cost"] for r in rs])
        o = np.array([r["overrun_rate"] for r in rs]) * 100
        summary["settings"][name] = {"accuracy_mean": a.mean(), "accuracy_std": a.std(ddof=1) if a.size > 1 else 0.0,
                                     "mean_cost": c.mean(), "overrun_rate": o.mean() / 100}
        print(f"  {name:32s} {a.mean():6.2f} ± {a.std(ddof=1) if a.size > 1 else 0:4.2f}   {c.mean():.3f}   "
              f"{o.mean():4.1f}")
    hm = summary["settings"]["hull_mix"]["accuracy_mean"]
    for name in rows:
        summary["settings"][name]["gain_over_hull_mix_pt"] = summary["settings"][name]["accuracy_mean"] - hm
    ac = np.mean(auc_calib, axis=0)
    at = np.mean(auc_test, axis=0)
    print("\npredictability of correctness from the 64-d stem features (test ROC-AUC, mean over seeds)")
    print("  plan  cost    test acc  AUC P̂ (fit calib)  AUC P̂ (fit test, bound)  AUC own confidence (after run)")
    for k, p in enumerate(cand):
        print(f"  {int(p):4d}  {cost[k]:.3f}   {100 * test.correct[:, p].mean():6.2f}   {ac[k]:.3f}"
              f"              {at[k]:.3f}                    {conf_auc[k]:.3f}")
    near = np.abs(cost - cfg.avg_budget) <= 0.15
    summary["auc"] = {"plans": [int(p) for p in cand], "cost": cost.tolist(), "fit_calib": ac.tolist(),
                      "fit_test_bound": at.tolist(), "own_confidence": conf_auc.tolist(),
                      "fit_calib_mean_near_budget": float(ac[near].mean()) if near.any() else None}
    print(f"  mean AUC (calib-fitted) over plans with cost within ±0.15 of {cfg.avg_budget:g}: "
          f"{summary['auc']['fit_calib_mean_near_budget']}")
    if cfg.out is not None:
        atomic_write_json(cfg.out, summary)
    print(json.dumps(summary, default=float))
    return summary


if __name__ == "__main__":
    try:
        main()
    except AdaInfError as e:  # bad input: one clear line, no traceback
        sys.exit(f"error: {e}")
