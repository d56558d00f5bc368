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

Records from :func:`run_comparison` also carry ``fit_s`` (wall seconds of the fit: the only field that differs
between two runs of the same jobs).

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

import dataclasses
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from adainf_env.envs.anytime.core import AnytimeTable
from adainf_env.budgets import TokenBucket, make_budget_process
from adainf_env.errors import ConfigError
from adainf_env.feasibility import overrun, overrun_amount
from adainf_env.fileio import atomic_write
from adainf_env.tables.outcomes import OutcomeTable
from agents.base import Scheduler, check_budgets
from agents.baselines.anytime_policies import make_anytime_policy
from agents.evaluation.anytime_harness import anytime_stream_trace, evaluate_anytime_bandit, evaluate_anytime_stream
from agents.evaluation.metrics import BUDGET_GRID
from agents.evaluation.stream_processes import SWEPT_VARIANTS, check_stream_size, stream_process_for
from agents.progress import progress_disabled
from agents.registry import (ANYTIME_BASELINES, BASELINES, anytime_policy_class, make_scheduler, scheduler_class,
                             scheduler_env)

__all__ = [
    "RECORD_FIELDS",
    "BANDIT_BUDGETS",
    "decision_record",
    "evaluate_bandit",
    "evaluate_stream",
    "stream_process_for",
    "ComparisonJob",
    "JobResult",
    "JobRunner",
    "comparison_job",
    "comparison_jobs",
    "run_comparison",
    "run_comparison_jobs",
    "save_fitted",
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
def evaluate_stream(scheduler: Scheduler, table: OutcomeTable, process: Any, *, shared: bool = False,
                    bucket_cap: float = 1.0, seed: int = 0, num_streams: int = 50, horizon: int = 200,
                    budget_label: float | None = None, variant: str | None = None) -> dict[str, Any]:
    """Run ``num_streams`` streams of ``horizon`` requests along a budget ``process`` → one record.

    ``shared=True``: requests share a compute budget — a :class:`adainf_env.budgets.TokenBucket` refilled by the
    process's budget per request (pass ``fixed:avg`` for an average budget), capped at ``bucket_cap``; the budget given
    to the scheduler is what is in the bucket (at most 1). Otherwise each request's budget is the process's value.
    The record's ``budget`` is ``budget_label`` (the nominal average) or else the realised mean process budget.
    """
    check_stream_size(num_streams, horizon)
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
@dataclasses.dataclass(frozen=True)
class ComparisonJob:
    """One (scheduler, seed) of a comparison: all it needs, as plain data and the two tables, so it pickles to a
    worker process or a torchrun rank. ``env``: ``"plan"`` or ``"anytime"`` (which harness evaluates it)."""

    name: str
    env: str
    seed: int
    calib: OutcomeTable
    test: OutcomeTable
    kwargs: Mapping[str, Any]
    bandit_budgets: tuple[float, ...]
    stream_budgets: tuple[float, ...]
    stream_variants: tuple[str, ...]
    num_streams: int
    horizon: int
    bucket_cap: float
    cost_unit: str = "macs"
    save: bool = False  # return the fitted scheduler's .npz bytes (plan env; anytime policies have no saved form)
    torch_threads: int | None = None  # set torch's intra-op threads first (worker processes: 1)
    trace_process: str | None = None  # anytime env: also trace every request along this budget process
    trace_shared: bool = True  # the traced process refills a token bucket (else it is each request's budget)


@dataclasses.dataclass
class JobResult:
    """What :func:`comparison_job` returns: the job's records and, if asked for, the fitted scheduler's ``.npz`` and
    the anytime policy's per-request trace (:func:`agents.evaluation.anytime_harness.anytime_stream_trace`)."""

    name: str
    seed: int
    records: list[dict[str, Any]]
    saved: bytes | None = None
    trace: dict[str, np.ndarray] | None = None


def comparison_job(job: ComparisonJob) -> JobResult:
    """Fit ``job.name`` on the calibration table with ``job.seed`` and evaluate it on the test table: the bandit
    sweep, then every stream variant over the average budgets (a process spec such as ``trace:PATH`` once).

    Depends only on the job (every draw is seeded by it), so the records are the same in this process, in a worker
    process or on any torchrun rank (up to ``fit_s``, the fit's wall time in seconds).
    """
    if job.torch_threads is not None:
        import torch  # only to bound its thread pool; the scheduler modules import it when they need it

        torch.set_num_threads(int(job.torch_threads))
    seed = int(job.seed)
    if job.env == "anytime":
        sched: Any = make_anytime_policy(job.name, **dict(job.kwargs))
        t0 = time.perf_counter()
        sched.fit(job.calib, seed=seed)
        bandit, stream = evaluate_anytime_bandit, evaluate_anytime_stream
    else:
        sched = make_scheduler(job.name, **dict(job.kwargs))
        t0 = time.perf_counter()
        sched.fit(job.calib, seed=seed, cost_unit=job.cost_unit)
        bandit, stream = evaluate_bandit, evaluate_stream
    fit_s = time.perf_counter() - t0
    floor = float(job.calib.plan_cost(job.cost_unit).min())
    recs = bandit(sched, job.test, job.bandit_budgets, seed=seed) if job.bandit_budgets else []
    for variant in job.stream_variants:
        if variant not in SWEPT_VARIANTS:
            # a process given as a spec (e.g. "trace:PATH"): evaluated once, labelled with its realised mean
            recs.append(stream(sched, job.test, variant, seed=seed, num_streams=job.num_streams, horizon=job.horizon))
            continue
        for b in job.stream_budgets:
            recs.append(stream(sched, job.test, stream_process_for(variant, b, floor), shared=(variant == "shared"),
                               bucket_cap=job.bucket_cap, seed=seed, num_streams=job.num_streams,
                               horizon=job.horizon, budget_label=b, variant=variant))
    records = [{**r, "fit_s": round(fit_s, 3)} for r in recs]
    saved = trace = None
    if job.save and job.env == "plan":
        with tempfile.TemporaryDirectory() as d:  # Scheduler.save writes a file; the bytes travel back instead
            saved = sched.save(Path(d) / "scheduler.npz").read_bytes()
    if job.trace_process is not None and job.env == "anytime":
        trace = anytime_stream_trace(sched, job.test, job.trace_process, shared=job.trace_shared,
                                     bucket_cap=job.bucket_cap, seed=seed, num_streams=job.num_streams,
                                     horizon=job.horizon)
    return JobResult(name=job.name, seed=seed, records=records, saved=saved, trace=trace)


def comparison_jobs(
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
    save: bool = False,
    torch_threads: int | None = None,
    trace_process: str | None = None,
    trace_shared: bool = True,
) -> list[ComparisonJob]:
    """The checked (scheduler, seed) jobs of a comparison, seed-major (every scheduler of seed 0 first).

    ``names`` may mix plan-env schedulers and anytime-env policies (``anytime_*``,
    :data:`agents.registry.ANYTIME_SCHEDULERS`). Unknown names, kwargs for schedulers not compared, bad budgets and
    anytime policies without a per-block cost breakdown are :class:`ConfigError` before anything is fitted.
    ``trace_process`` (a budget-process spec, e.g. ``step:values=0.2/0.45,every=50``): the anytime jobs of the first
    seed also return a per-request trace along it (where each request stopped, what it read), refilling a token
    bucket (``trace_shared``) or as each request's own budget.
    """
    bandit_budgets = _check_budget_list(bandit_budgets, "bandit budgets") if bandit_budgets else []
    stream_budgets = _check_budget_list(stream_budgets, "stream budgets") if stream_budgets else []
    if not names:
        raise ConfigError("no schedulers to compare")
    if len(set(names)) != len(names):
        raise ConfigError(f"schedulers named twice: {sorted({n for n in names if list(names).count(n) > 1})}")
    envs = {n: scheduler_env(n) for n in names}
    for n, env in envs.items():  # unknown or unimportable names fail before any fitting
        anytime_policy_class(n) if env == "anytime" else scheduler_class(n)
    if any(e == "anytime" for e in envs.values()):
        AnytimeTable.from_table(calib, cost_unit)  # the anytime env needs per-block costs (MACs)
    kwargs = dict(scheduler_kwargs or {})
    unknown = set(kwargs) - set(names)
    if unknown:
        raise ConfigError(f"scheduler_kwargs given for schedulers not compared: {sorted(unknown)}")
    check_stream_size(num_streams, horizon)
    if torch_threads is not None and (isinstance(torch_threads, bool) or not isinstance(torch_threads, int)
                                      or torch_threads < 1):
        raise ConfigError(f"torch_threads must be an integer ≥ 1 or None, got {torch_threads!r}")
    if trace_process is not None:
        make_budget_process(trace_process)  # a bad spec fails here, not after the fits
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("no seeds")
    return [ComparisonJob(name=n, env=envs[n], seed=int(s), calib=calib, test=test, kwargs=dict(kwargs.get(n, {})),
                          bandit_budgets=tuple(bandit_budgets), stream_budgets=tuple(stream_budgets),
                          stream_variants=tuple(stream_variants), num_streams=int(num_streams), horizon=int(horizon),
                          bucket_cap=float(bucket_cap), cost_unit=cost_unit, save=save, torch_threads=torch_threads,
                          trace_process=trace_process if s == seeds[0] and envs[n] == "anytime" else None,
                          trace_shared=bool(trace_shared))
            for s in seeds for n in names]


#: ``runner(jobs, fn)`` → ``[fn(job) for job in jobs]`` in job order, however it spreads them (e.g.
#: ``functools.partial(adainf_lab.distributed.run_jobs, workers=N)``: worker processes and/or torchrun ranks).
JobRunner = Callable[[Sequence[ComparisonJob], Callable[[ComparisonJob], JobResult]], list[JobResult]]


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
    runner: JobRunner | None = None,
    save_dir: str | os.PathLike | None = None,
    torch_threads: int | None = None,
) -> list[dict[str, Any]]:
    """Fit every scheduler in ``names`` on ``calib`` once per seed and evaluate it on ``test``.

    The test table never trains or chooses anything (``lut_upper`` and ``oracle`` read it by definition and are
    marked ``is_bound``). Returns all records (bandit sweep + one record per stream variant × average budget), each
    with ``env`` (``"plan"`` or ``"anytime"``) and ``fit_s``. ``names`` may mix both envs (see
    :func:`comparison_jobs`).

    The (scheduler, seed) jobs run one after another here (with a progress bar), or through ``runner`` (see
    :data:`JobRunner`), which may spread them over processes: the records are the same either way, up to ``fit_s``.
    ``save_dir``: write each fitted plan-env scheduler there as ``<name>__<seed>.npz``.
    """
    jobs = comparison_jobs(names, calib, test, seeds=seeds, bandit_budgets=bandit_budgets,
                           stream_budgets=stream_budgets, stream_variants=stream_variants, num_streams=num_streams,
                           horizon=horizon, bucket_cap=bucket_cap, scheduler_kwargs=scheduler_kwargs,
                           cost_unit=cost_unit, save=save_dir is not None, torch_threads=torch_threads)
    results = run_comparison_jobs(jobs, runner=runner, progress=progress)
    if save_dir is not None:
        save_fitted(results, save_dir)
    return [rec for r in results for rec in r.records]


def run_comparison_jobs(jobs: Sequence[ComparisonJob], *, runner: JobRunner | None = None,
                        progress: bool = True) -> list[JobResult]:
    """Run the jobs one after another here (progress bar) or through ``runner``; results in job order."""
    jobs = list(jobs)
    if runner is None:
        results = [comparison_job(j) for j in tqdm(jobs, desc="fit+evaluate", disable=progress_disabled(progress))]
    else:
        # learners first: the long fits start early and the quick baselines fill the gaps at the end
        order = sorted(range(len(jobs)), key=lambda i: jobs[i].name in BASELINES or jobs[i].name in ANYTIME_BASELINES)
        done = list(runner([jobs[i] for i in order], comparison_job))
        if len(done) != len(jobs):
            raise RuntimeError("the job runner returned a different number of results than jobs")
        results = [None] * len(jobs)
        for i, r in zip(order, done):
            results[i] = r
    if len(results) != len(jobs) or any((r.name, r.seed) != (j.name, j.seed) for r, j in zip(results, jobs)):
        raise RuntimeError("the job runner returned results out of job order")
    return results


def save_fitted(results: Sequence[JobResult], save_dir: str | os.PathLike) -> list[Path]:
    """Write the fitted schedulers the jobs returned as ``save_dir/<name>__<seed>.npz`` (atomic); their paths."""
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in results:
        if r.saved is not None:
            with atomic_write(save_dir / f"{r.name}__{r.seed}.npz", "wb") as fh:
                fh.write(r.saved)
            paths.append(save_dir / f"{r.name}__{r.seed}.npz")
    return paths

