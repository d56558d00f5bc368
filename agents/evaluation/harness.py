"""Evaluation harness: budget sweeps (bandit), budget processes and shared budgets (stream) → result records.

Summaries, tables, CSV/JSON files, plots and TensorBoard output of the records are in :mod:`agents.evaluation.report`.

Every function returns or consumes **records**, plain JSON-able dicts with the keys of :data:`RECORD_FIELDS`:

``scheduler``     registry name (``lut``, ``ppo``, …)
``is_bound``      True for schedulers that read labels / the evaluated split (``oracle``, ``lut_upper``)
``setting``       ``"bandit"`` (independent requests, each with the same budget) or ``"stream"``
``variant``       bandit: ``"fixed"``; stream: ``"shared"`` (token bucket: the *average* budget is constrained) or the
                  budget process's name (``"periodic"``, ``"random_walk"``, ``"trace"``…; every request has its own
                  budget)
``budget``        bandit: the per-request budget; stream: the average budget (the token bucket's refill per request,
                  or the process's nominal mean level)
``seed``          seed of the scheduler's fit and of the stream's sample order / budget draws
``accuracy``      fraction of requests classified correctly by the chosen plan
``mean_cost``     mean cost paid per request (fraction of the full model; cascades pay for what they recompute)
``mean_budget``   mean budget the scheduler was given per request (stream: what was available in the bucket)
``overrun_rate``  fraction of requests whose cost exceeded the budget available to them
``mean_overrun``  mean of max(0, cost − budget) over all requests
``plan_hist``     {plan index (str): number of requests} — non-zero entries only
``num_requests``  how many requests the record covers

Learned schedulers' records also carry (:meth:`agents.base.Scheduler.provenance`):

``selected_step`` the training step of the checkpoint held-out selection kept (epochs for the torch learners,
                  environment steps for stable-baselines3)
``prior``         whether the policy started as the look-up table (the learners' ``prior`` option)

Costs and budgets are fractions of the full model in the cost unit the scheduler was fitted with (MACs by default).

Stream evaluation runs ``num_streams`` independent streams of ``horizon`` requests side by side, so a scheduler is
asked for one batch of decisions per time step (the requests of step t of every stream) and its stream state is per
stream. Sample order: a seeded permutation of the table's rows (without replacement while rows last).

Stream state passed to ``Scheduler.select``/``decide`` (dict of [K] float64 arrays unless noted):
``level`` bucket level after this request's refill (shared only, else the budget), ``available`` = the budget given,
``avg_budget`` the average budget (shared only; None otherwise), ``process_budget`` the process's budget for this
request, ``cap`` the bucket capacity (float), ``step`` (int) and ``horizon`` (int).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from adainf_env.budgets import FixedBudget, PeriodicBudget, RandomWalkBudget, TokenBucket, make_budget_process
from adainf_env.errors import ConfigError
from adainf_env.feasibility import overrun, overrun_amount
from adainf_env.outcomes import OutcomeTable
from agents.base import Scheduler, check_budgets
from agents.evaluation.metrics import BUDGET_GRID
from agents.progress import progress_disabled

__all__ = [
    "RECORD_FIELDS",
    "BANDIT_BUDGETS",
    "evaluate_bandit",
    "evaluate_stream",
    "stream_process_for",
    "run_comparison",
]

RECORD_FIELDS = ("scheduler", "is_bound", "setting", "variant", "budget", "seed", "accuracy", "mean_cost",
                 "mean_budget", "overrun_rate", "mean_overrun", "plan_hist", "num_requests")
#: Default per-request budgets of the bandit sweep (and average budgets of the stream runs).
BANDIT_BUDGETS = BUDGET_GRID


def _check_budget_list(budgets: Iterable[float], what: str) -> list[float]:
    try:
        b = [float(x) for x in budgets]
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be numbers in (0, 1], got {budgets!r}") from None
    if not b:
        raise ConfigError(f"{what} is empty")
    check_budgets(np.asarray(b))
    return b


def _record(scheduler: Scheduler, table: OutcomeTable, *, setting: str, variant: str, budget: float, seed: int,
            rows: np.ndarray, plans: np.ndarray, costs: np.ndarray, given: np.ndarray) -> dict[str, Any]:
    """Metrics of N decisions: ``given`` is the budget available to each request."""
    rows, plans = np.asarray(rows).reshape(-1), np.asarray(plans, dtype=np.int64).reshape(-1)
    costs, given = np.asarray(costs, dtype=np.float64).reshape(-1), np.asarray(given, dtype=np.float64).reshape(-1)
    if plans.min() < 0 or plans.max() >= table.num_plans:
        raise ConfigError(f"{scheduler.name}: returned plan indices outside [0, {table.num_plans})")
    over = overrun_amount(costs, given)
    hist = np.bincount(plans, minlength=table.num_plans)
    return {
        "scheduler": scheduler.name,
        "is_bound": bool(scheduler.is_bound),
        "setting": setting,
        "variant": variant,
        "budget": float(budget),
        "seed": int(seed),
        "accuracy": float(table.correct[rows, plans].mean()),
        "mean_cost": float(costs.mean()),
        "mean_budget": float(given.mean()),
        "overrun_rate": float(overrun(costs, given).mean()),
        "mean_overrun": float(over.mean()),
        "plan_hist": {str(p): int(hist[p]) for p in np.flatnonzero(hist)},
        "num_requests": int(len(rows)),
        **scheduler.provenance(),
    }


# --------------------------------------------------------------------------------------------------- bandit
def evaluate_bandit(scheduler: Scheduler, table: OutcomeTable, budgets: Sequence[float] = BANDIT_BUDGETS, *,
                    seed: int = 0, rows: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Budget sweep: for each budget, every row of ``table`` (or ``rows``) is one request with that budget.

    One record per budget (setting ``"bandit"``, variant ``"fixed"``). ``seed`` labels the record (the scheduler
    was fitted with it); the sweep itself draws nothing.
    """
    budgets = _check_budget_list(budgets, "bandit budgets")
    rows = np.arange(table.num_samples) if rows is None else np.asarray(rows, dtype=np.int64)
    out = []
    for b in budgets:
        given = np.full(len(rows), b)
        dec = scheduler.decide(table, rows, given)
        out.append(_record(scheduler, table, setting="bandit", variant="fixed", budget=b, seed=seed, rows=rows,
                           plans=dec.plan, costs=dec.cost, given=given))
    return out


# --------------------------------------------------------------------------------------------------- stream
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


def evaluate_stream(scheduler: Scheduler, table: OutcomeTable, process: Any, *, shared: bool = False,
                    bucket_cap: float = 1.0, seed: int = 0, num_streams: int = 50, horizon: int = 200,
                    budget_label: float | None = None, variant: str | None = None) -> dict[str, Any]:
    """Run ``num_streams`` streams of ``horizon`` requests along a budget ``process`` → one record.

    ``shared=True``: requests share a compute budget — a :class:`adainf_env.budgets.TokenBucket` refilled by the
    process's budget per request (pass ``fixed:avg`` for an average budget), capped at ``bucket_cap``; the budget given
    to the scheduler is what is in the bucket (at most 1). Otherwise each request's budget is the process's value.
    The record's ``budget`` is ``budget_label`` (the nominal average) or else the realised mean process budget.
    """
    for k, v in (("num_streams", num_streams), ("horizon", horizon)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ConfigError(f"{k} must be an integer ≥ 1, got {v!r}")
    if budget_label is not None:
        check_budgets(np.asarray([budget_label]))
    cost_all = scheduler.plan_space.plan_cost if scheduler.plan_space is not None else table.plan_cost()
    proc = make_budget_process(process).bind(float(cost_all.min()))
    bucket = TokenBucket(cap=float(bucket_cap)) if shared else None
    rng = np.random.default_rng([int(seed), 0xADA1])
    k_, t_ = int(num_streams), int(horizon)
    n_req = k_ * t_
    reps = math.ceil(n_req / table.num_samples)
    rows = np.concatenate([rng.permutation(table.num_samples) for _ in range(reps)])[:n_req].reshape(k_, t_)
    plans = np.empty((k_, t_), dtype=np.int64)
    costs = np.empty((k_, t_))
    given = np.empty((k_, t_))
    proc_b = np.empty((k_, t_))
    level = np.zeros(k_)
    b_prev, aux = proc.start(rng.random(k_))
    for t in range(t_):
        u = rng.random(k_)  # one uniform per request, as the env's budget processes expect
        b = b_prev if t == 0 else proc.next(np.full(k_, t), b_prev, aux, u)
        b_prev = b
        proc_b[:, t] = b
        if bucket is not None:
            level = bucket.refill(level, b)
            avail = bucket.available(level)
            state = {"level": level.copy(), "available": avail, "avg_budget": b.copy(), "process_budget": b.copy(),
                     "cap": float(bucket_cap), "step": t, "horizon": t_}
        else:
            avail = b
            state = {"level": b.copy(), "available": b.copy(), "avg_budget": None, "process_budget": b.copy(),
                     "cap": float("nan"), "step": t, "horizon": t_}
        # a bucket drained to exactly 0 still lets the request run its cheapest plan (counted as an overrun)
        avail_ok = np.maximum(avail, 1e-12)
        dec = scheduler.decide(table, rows[:, t], avail_ok, state)
        plans[:, t], costs[:, t], given[:, t] = dec.plan, dec.cost, avail
        if bucket is not None:
            level = bucket.spend(level, dec.cost)
    label = float(budget_label) if budget_label is not None else round(float(proc_b.mean()), 4)
    rec = _record(scheduler, table, setting="stream", variant=variant or ("shared" if shared else proc.name),
                  budget=label, seed=seed, rows=rows, plans=plans, costs=costs, given=given)
    rec["mean_process_budget"] = float(proc_b.mean())
    return rec


# --------------------------------------------------------------------------------------------------- comparison
def run_comparison(
    names: Sequence[str],
    calib: OutcomeTable,
    test: OutcomeTable,
    *,
    seeds: Sequence[int] = (0,),
    bandit_budgets: Sequence[float] = BANDIT_BUDGETS,
    stream_budgets: Sequence[float] = BANDIT_BUDGETS,
    stream_variants: Sequence[str] = ("shared", "periodic"),
    num_streams: int = 50,
    horizon: int = 200,
    bucket_cap: float = 1.0,
    scheduler_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    cost_unit: str = "macs",
    progress: bool = True,
    on_fitted: Callable[[Scheduler, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Fit every scheduler in ``names`` on ``calib`` once per seed and evaluate it on ``test``.

    The test table never trains or chooses anything (``lut_upper`` and ``oracle`` read it by definition and are
    marked ``is_bound``). Returns all records (bandit sweep + one record per stream variant × average budget).
    ``on_fitted(scheduler, seed)`` is called after each fit (e.g. to save the scheduler in the run directory).
    """
    from agents.registry import make_scheduler, scheduler_class  # the registry imports every scheduler module

    bandit_budgets = _check_budget_list(bandit_budgets, "bandit budgets") if bandit_budgets else []
    stream_budgets = _check_budget_list(stream_budgets, "stream budgets") if stream_budgets else []
    if not names:
        raise ConfigError("no schedulers to compare")
    for n in names:
        scheduler_class(n)  # unknown names fail before any fitting
    kwargs = dict(scheduler_kwargs or {})
    unknown = set(kwargs) - set(names)
    if unknown:
        raise ConfigError(f"scheduler_kwargs given for schedulers not compared: {sorted(unknown)}")
    floor = float(calib.plan_cost(cost_unit).min())
    records: list[dict[str, Any]] = []
    jobs = [(n, int(s)) for s in seeds for n in names]
    for name, seed in tqdm(jobs, desc="fit+evaluate", disable=progress_disabled(progress)):
        sched = make_scheduler(name, **dict(kwargs.get(name, {})))
        t0 = time.perf_counter()
        sched.fit(calib, seed=seed, cost_unit=cost_unit)
        fit_s = time.perf_counter() - t0
        if on_fitted is not None:
            on_fitted(sched, seed)
        recs = evaluate_bandit(sched, test, bandit_budgets, seed=seed) if bandit_budgets else []
        for variant in stream_variants:
            if variant not in ("shared", "periodic", "random_walk"):
                # a process given as a spec (e.g. "trace:PATH"): evaluated once, labelled with its realised mean
                recs.append(evaluate_stream(sched, test, variant, seed=seed, num_streams=num_streams,
                                            horizon=horizon))
                continue
            for b in stream_budgets:
                proc = stream_process_for(variant, b, floor)
                recs.append(evaluate_stream(sched, test, proc, shared=(variant == "shared"), bucket_cap=bucket_cap,
                                            seed=seed, num_streams=num_streams, horizon=horizon, budget_label=b,
                                            variant=variant))
        for r in recs:
            r["fit_s"] = round(fit_s, 3)
        records.extend(recs)
    return records


# Report writers under their older import path (agents.evaluation.harness); new code imports agents.evaluation.report.
from agents.evaluation.report import markdown_tables, plot_summary, summarize, write_results, write_tensorboard  # noqa: E402,F401
