"""The scheduler comparison driver: (scheduler, seed) jobs fitted on the calibration table and evaluated on the test
table by the plan-env harness (:mod:`agents.evaluation.harness`) or the anytime harness
(:mod:`agents.evaluation.anytime_harness`), run here, in worker processes or on torchrun ranks, and kept job by job.

It imports both harnesses; neither imports it. ``experiments/compare_schedulers.py`` is its command line.

**Kept job by job** (:class:`JobStore`): with a store, each finished job's records (and, when asked for, the fitted
scheduler's ``.npz`` and the anytime trace) are written to ``<dir>/<name>__<seed>.json`` (+ ``.scheduler.npz`` /
``.trace.npz``) the moment the job ends, by the process that ran it; a later run with the same jobs and the same store
runs only the jobs not found there. Every draw of a job is seeded by the job, so the resumed records equal an
uninterrupted run's (up to ``fit_s``, the fit's wall time). A job file written for other settings is refused
(:class:`~adainf_env.errors.ConfigError`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from adainf_env.envs.anytime.actions import AnytimeTable
from adainf_env.budgets import make_budget_process
from adainf_env.errors import ConfigError
from adainf_env.fileio import atomic_write, atomic_write_json, safe_np_load
from adainf_env.stream import StreamSpec
from adainf_env.tables.outcomes import OutcomeTable
from agents.evaluation.anytime_harness import anytime_stream_trace, evaluate_anytime_bandit, evaluate_anytime_stream
from agents.evaluation.harness import BANDIT_BUDGETS, check_budget_list, evaluate_bandit, evaluate_stream
from agents.evaluation.learning_curves import learner_curve
from agents.evaluation.stream_processes import SWEPT_VARIANTS, stream_process_for
from agents.progress import progress_disabled
from agents.registry import (ANYTIME_BASELINES, ANYTIME_SCHEDULERS, BASELINES, anytime_policy_class,
                             make_anytime_policy, make_scheduler, scheduler_class, scheduler_env)

__all__ = [
    "ComparisonJob",
    "JobResult",
    "JobRunner",
    "JobStore",
    "comparison_job",
    "comparison_jobs",
    "run_comparison",
    "run_anytime_comparison",
    "run_comparison_jobs",
    "save_fitted",
]


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

    @property
    def stream(self) -> StreamSpec:
        """The stream evaluations' size and bucket (the job keeps the three numbers as plain data for its store)."""
        return StreamSpec(num_streams=self.num_streams, horizon=self.horizon, bucket_cap=self.bucket_cap)


@dataclasses.dataclass
class JobResult:
    """What :func:`comparison_job` returns: the job's records and, if asked for, the fitted scheduler's ``.npz`` and
    the anytime policy's per-request trace (:func:`agents.evaluation.anytime_harness.anytime_stream_trace`)."""

    name: str
    seed: int
    records: list[dict[str, Any]]
    saved: bytes | None = None
    trace: dict[str, np.ndarray] | None = None
    curve: dict[str, Any] | None = None  # held-out score vs training steps (agents.evaluation.learning_curves)


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
            recs.append(stream(sched, job.test, variant, seed=seed, stream=job.stream))
            continue
        for b in job.stream_budgets:
            recs.append(stream(sched, job.test, stream_process_for(variant, b, floor), shared=(variant == "shared"),
                               seed=seed, stream=job.stream, budget_label=b, variant=variant))
    records = [{**r, "fit_s": round(fit_s, 3)} for r in recs]
    saved = trace = None
    if job.save and job.env == "plan":
        with tempfile.TemporaryDirectory() as d:  # Scheduler.save writes a file; the bytes travel back instead
            saved = sched.save(Path(d) / "scheduler.npz").read_bytes()
    if job.trace_process is not None and job.env == "anytime":
        trace = anytime_stream_trace(sched, job.test, job.trace_process, shared=job.trace_shared, seed=seed,
                                     stream=job.stream)
    return JobResult(name=job.name, seed=seed, records=records, saved=saved, trace=trace,
                     curve=learner_curve(sched, job.name, job.env))


def comparison_jobs(
    names: Sequence[str],
    calib: OutcomeTable,
    test: OutcomeTable,
    *,
    seeds: Sequence[int] = (0,),
    bandit_budgets: Sequence[float] = BANDIT_BUDGETS,
    stream_budgets: Sequence[float] = BANDIT_BUDGETS,
    stream_variants: Sequence[str] = ("shared", "periodic"),
    num_streams: int | None = None,
    horizon: int | None = None,
    bucket_cap: float | None = None,
    stream: StreamSpec | None = None,
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
    bucket (``trace_shared``) or as each request's own budget. The stream evaluations' size and bucket: ``stream``
    (default :data:`adainf_env.stream.DEFAULT_STREAM`) with ``num_streams`` / ``horizon`` / ``bucket_cap`` overriding
    its fields where given.
    """
    bandit_budgets = check_budget_list(bandit_budgets, "bandit budgets") if bandit_budgets else []
    stream_budgets = check_budget_list(stream_budgets, "stream budgets") if stream_budgets else []
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
    spec = StreamSpec.of(stream, num_streams=num_streams, horizon=horizon, bucket_cap=bucket_cap)
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
                          stream_variants=tuple(stream_variants), num_streams=spec.num_streams, horizon=spec.horizon,
                          bucket_cap=spec.bucket_cap, cost_unit=cost_unit, save=save, torch_threads=torch_threads,
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
    num_streams: int | None = None,
    horizon: int | None = None,
    bucket_cap: float | None = None,
    stream: StreamSpec | None = None,
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
                           horizon=horizon, bucket_cap=bucket_cap, stream=stream, scheduler_kwargs=scheduler_kwargs,
                           cost_unit=cost_unit, save=save_dir is not None, torch_threads=torch_threads)
    results = run_comparison_jobs(jobs, runner=runner, progress=progress)
    if save_dir is not None:
        save_fitted(results, save_dir)
    return [rec for r in results for rec in r.records]


def run_comparison_jobs(jobs: Sequence[ComparisonJob], *, runner: JobRunner | None = None,
                        progress: bool = True, store: "JobStore | None" = None,
                        log: Callable[[str], None] | None = None) -> list[JobResult]:
    """Run the jobs one after another here (progress bar) or through ``runner``; results in job order.

    ``store``: jobs already kept there are read back instead of run (``log`` says how many), and each job run now is
    written there as soon as it ends, by the process that ran it (see :class:`JobStore`)."""
    jobs = list(jobs)
    results: list[JobResult | None] = [store.load(j) if store is not None else None for j in jobs]
    todo = [i for i, r in enumerate(results) if r is None]
    if store is not None and log is not None and len(todo) < len(jobs):
        log(f"[resume] {len(jobs) - len(todo)} of {len(jobs)} jobs already done in {store.directory}; "
            f"running the {len(todo)} left")
    fn: Callable[[ComparisonJob], JobResult] = (comparison_job if store is None
                                                 else functools.partial(run_and_keep, store=store))
    if runner is None:
        for i in tqdm(todo, desc="fit+evaluate", disable=progress_disabled(progress)):
            results[i] = fn(jobs[i])
    elif todo:
        # learners first: the long fits start early and the quick baselines fill the gaps at the end
        order = sorted(todo, key=lambda i: jobs[i].name in BASELINES or jobs[i].name in ANYTIME_BASELINES)
        done = list(runner([jobs[i] for i in order], fn))
        if len(done) != len(order):
            raise RuntimeError("the job runner returned a different number of results than jobs")
        for i, r in zip(order, done):
            results[i] = r
            if store is not None and not store.has(jobs[i]):  # run where the store is not at hand (another rank)
                store.save(jobs[i], r)
    if any(r is None or (r.name, r.seed) != (j.name, j.seed) for r, j in zip(results, jobs)):
        raise RuntimeError("the job runner returned results out of job order")
    return results  # type: ignore[return-value]


def run_and_keep(job: ComparisonJob, *, store: "JobStore") -> JobResult:
    """:func:`comparison_job`, then the result kept in ``store`` (a module-level function: it pickles to workers)."""
    result = comparison_job(job)
    store.save(job, result)
    return result


@dataclasses.dataclass(frozen=True)
class JobStore:
    """Finished jobs of one comparison in ``directory``: ``<name>__<seed>.json`` holds the job's settings and records
    (written last, atomically: its presence means the job is done), beside it ``<name>__<seed>.scheduler.npz`` (the
    fitted scheduler, when the job saves it) and ``<name>__<seed>.trace.npz`` (the anytime trace, when traced).
    Plain data only: it pickles to worker processes, which write their own jobs."""

    directory: Path

    @staticmethod
    def spec(job: ComparisonJob) -> dict[str, Any]:
        """The job's settings as JSON-able data (everything but the tables, which the run directory's config pins)."""
        spec = {f.name: getattr(job, f.name) for f in dataclasses.fields(job)
                if f.name not in ("calib", "test", "torch_threads")}
        return json.loads(json.dumps({**spec, "kwargs": dict(job.kwargs)}, sort_keys=True))

    def _stem(self, job: ComparisonJob) -> Path:
        return Path(self.directory) / f"{job.name}__{int(job.seed)}"

    def has(self, job: ComparisonJob) -> bool:
        """Whether ``job``'s record file is there (see :meth:`load` for whether it is complete and fits)."""
        stem = self._stem(job)
        return stem.with_name(stem.name + ".json").is_file()

    def save(self, job: ComparisonJob, result: JobResult) -> Path:
        """Keep ``result`` of ``job``: the side files first, the ``.json`` last (atomic writes)."""
        stem = self._stem(job)
        if result.saved is not None:
            with atomic_write(stem.with_name(stem.name + ".scheduler.npz"), "wb") as fh:
                fh.write(result.saved)
        if result.trace is not None:
            with atomic_write(stem.with_name(stem.name + ".trace.npz"), "wb") as fh:
                np.savez(fh, **result.trace)
        path = stem.with_name(stem.name + ".json")
        atomic_write_json(path, {"job": self.spec(job), "records": result.records,
                                 "saved": result.saved is not None, "trace": result.trace is not None,
                                 "curve": result.curve})
        return path

    def load(self, job: ComparisonJob) -> JobResult | None:
        """The kept result of ``job``, or None when it is not (completely) there; :class:`ConfigError` when the file
        was written for other settings."""
        stem = self._stem(job)
        path = stem.with_name(stem.name + ".json")
        if not path.is_file():
            return None
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: unreadable kept job ({e}); remove it to run the job again") from None
        if not isinstance(doc, dict) or doc.get("job") != self.spec(job) or not isinstance(doc.get("records"), list):
            raise ConfigError(f"{path}: kept job was written for other settings than {job.name!r} seed {job.seed} "
                              "of this comparison; use another run directory")
        saved = trace = None
        if job.save:
            side = stem.with_name(stem.name + ".scheduler.npz")
            if not doc.get("saved") or not side.is_file():
                return None
            saved = side.read_bytes()
        if job.trace_process is not None and job.env == "anytime":
            side = stem.with_name(stem.name + ".trace.npz")
            if not doc.get("trace") or not side.is_file():
                return None
            trace = safe_np_load(side)
        return JobResult(name=job.name, seed=int(job.seed), records=doc["records"], saved=saved, trace=trace,
                         curve=doc.get("curve"))


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


def run_anytime_comparison(names: Sequence[str], calib: OutcomeTable, test: OutcomeTable, *,
                           seeds: Sequence[int] = (0,), bandit_budgets: Sequence[float] = BANDIT_BUDGETS,
                           stream_budgets: Sequence[float] = BANDIT_BUDGETS,
                           stream_variants: Sequence[str] = ("shared", "periodic"), num_streams: int | None = None,
                           horizon: int | None = None, bucket_cap: float | None = None,
                           stream: StreamSpec | None = None,
                           policy_kwargs: dict[str, dict[str, Any]] | None = None, progress: bool = False,
                           runner: JobRunner | None = None) -> list[dict[str, Any]]:
    """Fit each anytime policy on ``calib`` per seed, evaluate on ``test`` (bandit sweep + stream variants).

    :func:`run_comparison` restricted to anytime names: the same jobs, the same records (with ``env="anytime"``,
    ``fit_s`` and the learners' ``selected_step`` / ``prior``), ``runner`` to spread them.
    """
    plan_names = [n for n in names if n not in ANYTIME_SCHEDULERS]
    if plan_names:
        raise ConfigError(f"run_anytime_comparison takes anytime policies (anytime_*); got {plan_names} "
                          "(plan-env schedulers: run_comparison)")
    return run_comparison(names, calib, test, seeds=seeds, bandit_budgets=bandit_budgets,
                          stream_budgets=stream_budgets, stream_variants=stream_variants, num_streams=num_streams,
                          horizon=horizon, bucket_cap=bucket_cap, stream=stream, scheduler_kwargs=policy_kwargs,
                          progress=progress, runner=runner)
