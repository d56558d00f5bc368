"""Evaluation harness: budget sweeps (bandit), budget processes and shared budgets (stream) → result records.

Summaries, tables, CSV/JSON files, plots and TensorBoard output of the records are in :mod:`agents.evaluation.report`.

Every function returns or consumes **records**, plain JSON-able dicts with the keys of :data:`RECORD_FIELDS`:

``scheduler``     registry name (``lut``, ``ppo``, ``anytime_ppo``, …)
``env``           ``"plan"`` (one plan per request, this module) or ``"anytime"`` (block by block, reading the
                  network's answer on the way: :mod:`agents.evaluation.anytime_harness`, which adds ``mean_reads``)
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

Records from :func:`agents.evaluation.comparison.run_comparison` also carry ``fit_s`` (wall seconds of the fit: the only field that differs
between two runs of the same jobs).

Costs and budgets are fractions of the full model in the cost unit the scheduler was fitted with (MACs by default).

Stream evaluation runs ``num_streams`` independent streams of ``horizon`` requests side by side (the request stream
of :mod:`adainf_env.stream`: its :class:`~adainf_env.stream.StreamSpec`, draws and loop), so a scheduler is asked for
one batch of decisions per time step (the requests of step t of every stream) and its stream state is per stream.
Sample order: a seeded permutation of the table's rows (without replacement while rows last).

Stream state passed to ``Scheduler.select``/``decide`` (dict of [K] float64 arrays unless noted):
``level`` bucket level after this request's refill (shared only, else the budget), ``available`` = the budget given,
``avg_budget`` the average budget (shared only; None otherwise), ``process_budget`` the process's budget for this
request, ``cap`` the bucket capacity (float; nan without a bucket), ``step`` (int) and ``horizon`` (int).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from adainf_env.errors import ConfigError
from adainf_env.feasibility import overrun, overrun_amount
from adainf_env.stream import StreamSpec, draw_streams, run_streams
from adainf_env.tables.outcomes import OutcomeTable
from agents.base import Scheduler, check_budgets
from agents.evaluation.metrics import BUDGET_GRID
from agents.evaluation.stream_processes import stream_process_for

__all__ = [
    "RECORD_FIELDS",
    "BANDIT_BUDGETS",
    "decision_record",
    "check_budget_list",
    "evaluate_bandit",
    "evaluate_stream",
    "stream_process_for",
]

RECORD_FIELDS = ("scheduler", "is_bound", "setting", "variant", "budget", "seed", "accuracy", "mean_cost",
                 "mean_budget", "overrun_rate", "mean_overrun", "plan_hist", "num_requests")
#: Default per-request budgets of the bandit sweep (and average budgets of the stream runs).
BANDIT_BUDGETS = BUDGET_GRID


def check_budget_list(budgets: Iterable[float], what: str) -> list[float]:
    """``budgets`` as a non-empty list of floats in (0, 1]; :class:`ConfigError` naming ``what`` otherwise."""
    try:
        b = [float(x) for x in budgets]
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be numbers in (0, 1], got {budgets!r}") from None
    if not b:
        raise ConfigError(f"{what} is empty")
    check_budgets(np.asarray(b))
    return b


def decision_record(name: str, *, is_bound: bool, setting: str, variant: str, budget: float, seed: int,
                    correct: np.ndarray, costs: np.ndarray, given: np.ndarray | float, plans: np.ndarray,
                    num_plans: int, env: str | None = None) -> dict[str, Any]:
    """The :data:`RECORD_FIELDS` of N decisions, whether read from a table or executed live: ``correct`` [N] per
    request, ``costs`` [N] paid (fractions of the full model), ``given`` the budget available to each request ([N],
    or one number for all), ``plans`` [N] plan indices in ``[0, num_plans)`` (else :class:`ConfigError`). ``env``
    (``"plan"``/``"anytime"``) is put right after ``scheduler`` when given. Callers add provenance keys."""
    plans = np.asarray(plans, dtype=np.int64).reshape(-1)
    costs = np.asarray(costs, dtype=np.float64).reshape(-1)
    if plans.size and (plans.min() < 0 or plans.max() >= num_plans):
        raise ConfigError(f"{name}: returned plan indices outside [0, {num_plans})")
    scalar_budget = np.ndim(given) == 0
    given_arr = np.full(len(costs), float(given)) if scalar_budget else np.asarray(given, dtype=np.float64).reshape(-1)
    over = overrun_amount(costs, given_arr)
    hist = np.bincount(plans, minlength=num_plans)
    head = {"scheduler": name} if env is None else {"scheduler": name, "env": env}
    return {
        **head,
        "is_bound": bool(is_bound),
        "setting": setting,
        "variant": variant,
        "budget": float(budget),
        "seed": int(seed),
        "accuracy": float(np.mean(correct)),
        "mean_cost": float(costs.mean()),
        "mean_budget": float(given) if scalar_budget else float(given_arr.mean()),
        "overrun_rate": float(overrun(costs, given_arr).mean()),
        "mean_overrun": float(over.mean()),
        "plan_hist": {str(p): int(hist[p]) for p in np.flatnonzero(hist)},
        "num_requests": int(len(costs)),
    }


def _record(scheduler: Scheduler, table: OutcomeTable, *, setting: str, variant: str, budget: float, seed: int,
            rows: np.ndarray, plans: np.ndarray, costs: np.ndarray, given: np.ndarray) -> dict[str, Any]:
    """Metrics of N decisions read from ``table``: ``given`` is the budget available to each request."""
    rows, plans = np.asarray(rows).reshape(-1), np.asarray(plans, dtype=np.int64).reshape(-1)
    if plans.size and (plans.min() < 0 or plans.max() >= table.num_plans):  # before indexing the table
        raise ConfigError(f"{scheduler.name}: returned plan indices outside [0, {table.num_plans})")
    return {**decision_record(scheduler.name, is_bound=scheduler.is_bound, setting=setting, variant=variant,
                              budget=budget, seed=seed, correct=table.correct[rows, plans], costs=costs, given=given,
                              plans=plans, num_plans=table.num_plans, env="plan"),
            **scheduler.provenance()}


# --------------------------------------------------------------------------------------------------- bandit
def evaluate_bandit(scheduler: Scheduler, table: OutcomeTable, budgets: Sequence[float] = BANDIT_BUDGETS, *,
                    seed: int = 0, rows: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Budget sweep: for each budget, every row of ``table`` (or ``rows``) is one request with that budget.

    One record per budget (setting ``"bandit"``, variant ``"fixed"``). ``seed`` labels the record (the scheduler
    was fitted with it); the sweep itself draws nothing.
    """
    budgets = check_budget_list(budgets, "bandit budgets")
    rows = np.arange(table.num_samples) if rows is None else np.asarray(rows, dtype=np.int64)
    out = []
    for b in budgets:
        given = np.full(len(rows), b)
        dec = scheduler.decide(table, rows, given)
        out.append(_record(scheduler, table, setting="bandit", variant="fixed", budget=b, seed=seed, rows=rows,
                           plans=dec.plan, costs=dec.cost, given=given))
    return out


# --------------------------------------------------------------------------------------------------- stream
def evaluate_stream(scheduler: Scheduler, table: OutcomeTable, process: Any, *, shared: bool = False,
                    bucket_cap: float | None = None, seed: int = 0, num_streams: int | None = None,
                    horizon: int | None = None, budget_label: float | None = None, variant: str | None = None,
                    stream: StreamSpec | None = None) -> dict[str, Any]:
    """Run ``num_streams`` streams of ``horizon`` requests along a budget ``process`` → one record.

    The stream's size and bucket are ``stream`` (default :data:`adainf_env.stream.DEFAULT_STREAM`, 50 × 200, cap 1)
    with ``num_streams`` / ``horizon`` / ``bucket_cap`` overriding its fields where given; draws and loop are
    :func:`adainf_env.stream.draw_streams` and :func:`adainf_env.stream.run_streams`.
    ``shared=True``: requests share a compute budget — a :class:`adainf_env.budgets.TokenBucket` refilled by the
    process's budget per request (pass ``fixed:avg`` for an average budget), capped at ``bucket_cap``; the budget given
    to the scheduler is what is in the bucket (at most 1). Otherwise each request's budget is the process's value.
    The record's ``budget`` is ``budget_label`` (the nominal average) or else the realised mean process budget.
    """
    spec = StreamSpec.of(stream, num_streams=num_streams, horizon=horizon, bucket_cap=bucket_cap)
    if budget_label is not None:
        check_budgets(np.asarray([budget_label]))
    cost_all = scheduler.plan_space.plan_cost if scheduler.plan_space is not None else table.plan_cost()
    rows, proc_b, proc = draw_streams(table.num_samples, process, floor=float(cost_all.min()), seed=seed, spec=spec)
    plans = np.empty(rows.shape, dtype=np.int64)
    costs = np.empty(rows.shape)

    def serve(t: int, rows_t: np.ndarray, budgets_t: np.ndarray, state: dict[str, Any]) -> np.ndarray:
        dec = scheduler.decide(table, rows_t, budgets_t, state)
        plans[:, t], costs[:, t] = dec.plan, dec.cost
        return costs[:, t]

    given = run_streams(serve, rows, proc_b, bucket=spec.bucket() if shared else None)
    label = float(budget_label) if budget_label is not None else round(float(proc_b.mean()), 4)
    rec = _record(scheduler, table, setting="stream", variant=variant or ("shared" if shared else proc.name),
                  budget=label, seed=seed, rows=rows, plans=plans, costs=costs, given=given)
    rec["mean_process_budget"] = float(proc_b.mean())
    return rec
