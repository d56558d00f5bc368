"""Compare schedulers on outcome tables: fit on the calibration table, report on the test table.

    python experiments/compare_schedulers.py --table-dir reference --seeds 3 --out DIR
    python experiments/compare_schedulers.py --table-dir reference --seeds 3 --workers 2 --out DIR   # 2 processes
    torchrun --nproc_per_node=K experiments/compare_schedulers.py --table-dir reference --seeds 3 --out DIR

Both environments are compared in the same settings: the plan env (``--schedulers``: one plan per request) and the
anytime env (``--anytime-schedulers``, names ``anytime_*``: blocks run one by one, the network's answer read on the
way; ``--no-anytime`` leaves them out). Every record says which (``env``: ``plan`` | ``anytime``).

Runs are never lost: an existing ``--out`` is refused unless ``--resume`` (same arguments: the jobs already kept in
``<run>/jobs`` are read back, only the missing ones run, and ``results.json`` equals an uninterrupted run's up to
``fit_s``) or ``--overwrite`` (the old directory moved aside whole); Ctrl-C ends with one line naming the finished
jobs kept and the command that resumes (:mod:`adainf_lab.rundir`).

The (scheduler, seed) jobs are independent and seeded by themselves, so ``--workers N`` (N local worker processes,
each with one torch thread: the networks are small, and N workers on N cores must not oversubscribe them) and
torchrun ranks (rank r runs jobs r, r+W, …; only rank 0 writes the run directory) give the same records as one
process, up to ``fit_s`` (the fit's wall time).

``--table-dir`` holds ``table_calib.npz`` and ``table_test.npz`` (project tables from experiments/build_table.py or a
pipeline run's ``<run>/tables``); ``reference`` names the reference tables shipped in the package. Scheduler options
are given per scheduler name, ``--scheduler-kwargs '{"ppo": {"total_timesteps": 20000}}'``: a JSON mapping, because
each compared scheduler takes its own options (the single-scheduler scripts have typed ``--scheduler.*`` options). Writes into the run directory: ``config.json`` (config + git revision), ``results.json`` /
``results.csv`` (one record per scheduler × setting × budget × seed, see :mod:`agents.evaluation.harness`), ``summary.*``
(mean ± std over seeds), ``aiq.json``, PNGs (accuracy vs budget; bounds shaded), TensorBoard events under ``tb/``;
``learning_curves.csv`` / ``learning_curves.png`` (every learner's held-out score vs training steps, mean and 95 %
interval over seeds: :mod:`agents.evaluation.learning_curves`, also in ``tb/``);
with anytime schedulers also ``anytime_vs_plan.png`` (accuracy vs mean cost of the anytime schedulers and the
plan-env baselines), ``anytime_stopping_behaviour.png`` (where the best learned anytime policy and the calibrated
cascade stop vs the confidence they read, under the shifting ``--behaviour-budget``, by default refilling the shared
token bucket) and its data ``anytime_traces.npz``; prints
the markdown tables.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from adainf_env.envs.anytime.actions import AnytimeTable
from adainf_env.budgets import make_budget_process
from adainf_env.errors import AdaInfError, ConfigError
from adainf_env.fileio import atomic_write
from adainf_env.stream import DEFAULT_STREAM
from adainf_env.tables.outcomes import OutcomeTable
from adainf_lab.cli import parse_config, run_script
from adainf_lab.config import check_seed, show_progress
from adainf_lab.distributed import DistEnv, run_jobs
from adainf_lab.rundir import check_run_flags, open_run_dir
from adainf_lab.scheduler_options import AnytimeSchedulerNames, SchedulerNames
from adainf_lab.tables import load_split_tables, resolve_table_dir
from agents.evaluation.anytime_figures import best_anytime, plot_anytime_vs_plan, plot_stopping_behaviour
from agents.evaluation.comparison import JobResult, JobStore, comparison_jobs, run_comparison_jobs, save_fitted
from agents.evaluation.harness import BANDIT_BUDGETS
from agents.evaluation.learning_curves import write_learning_curves
from agents.evaluation.report import write_results, write_tensorboard
from agents.registry import ANYTIME_BASELINES, available_schedulers, check_names

__all__ = ["CompareConfig", "main"]


@dataclasses.dataclass
class CompareConfig:
    """Fit schedulers on the calibration table, evaluate them on the test table (bandit + stream settings)."""

    table_dir: Path = dataclasses.field(metadata={
        "help": "directory with table_calib.npz and table_test.npz, or 'reference' (the tables shipped in the package)"})
    out: Path | None = dataclasses.field(default=None, metadata={
        "help": "run directory (default: new one in --runs-root); an existing one needs --resume or --overwrite"})
    resume: bool = dataclasses.field(default=False, metadata={
        "help": "continue the comparison in --out (same arguments, else refused): run only the jobs not kept there"})
    overwrite: bool = dataclasses.field(default=False, metadata={
        "help": "replace the run in --out: the old directory is moved aside whole to <out>.replaced-<time>"})
    runs_root: Path = dataclasses.field(default=Path("runs"), metadata={"help": "parent of new run directories"})
    seeds: int = dataclasses.field(default=3, metadata={"help": "number of seeds (seed-offset … seed-offset+seeds−1)"})
    seed_offset: int = dataclasses.field(default=0, metadata={"help": "first seed"})
    schedulers: SchedulerNames = dataclasses.field(
        default=(), metadata={"help": "plan-env schedulers to compare (default: every importable one)"})
    anytime_schedulers: AnytimeSchedulerNames = dataclasses.field(
        default=(), metadata={"help": "anytime-env schedulers to compare (default: every importable one, when the "
                                      "tables carry per-block costs)"})
    anytime: bool = dataclasses.field(default=True, metadata={"help": "compare anytime-env schedulers too"})
    workers: int = dataclasses.field(default=1, metadata={
        "help": "local worker processes for the (scheduler, seed) jobs (1: in this process); each uses one torch "
                "thread. Under torchrun: workers per rank"})
    behaviour_budget: str = dataclasses.field(default="step:values=0.2/0.4,every=50", metadata={
        "help": "shifting budget process of the anytime stopping-behaviour figure"})
    behaviour_shared: bool = dataclasses.field(default=True, metadata={
        "help": "the behaviour budget refills a shared token bucket (--no-behaviour-shared: each request's budget)"})
    bandit_budgets: tuple[float, ...] = dataclasses.field(default=BANDIT_BUDGETS,
                                                          metadata={"help": "bandit per-request budgets"})
    stream_budgets: tuple[float, ...] = dataclasses.field(default=BANDIT_BUDGETS,
                                                          metadata={"help": "stream average budgets"})
    stream_variants: tuple[Literal["shared", "periodic", "random_walk"], ...] = dataclasses.field(
        default=("shared", "periodic"),
        metadata={"help": "stream settings: shared (token bucket, average budget), periodic, random_walk"})
    num_streams: int = dataclasses.field(default=DEFAULT_STREAM.num_streams,
                                         metadata={"help": "parallel streams per stream evaluation"})
    horizon: int = dataclasses.field(default=DEFAULT_STREAM.horizon, metadata={"help": "requests per stream"})
    bucket_cap: float = dataclasses.field(default=DEFAULT_STREAM.bucket_cap,
                                          metadata={"help": "token-bucket capacity (full-model units)"})
    cost_unit: Literal["macs", "latency"] = dataclasses.field(default="macs", metadata={
        "help": "what a budget is a fraction of: the full model's MACs, or its latency (needs a latency profile)"})
    scheduler_kwargs: str = dataclasses.field(
        default="{}", metadata={"help": 'JSON {name: {kwarg: value}}, e.g. \'{"ppo": {"total_timesteps": 20000}}\''})
    save_schedulers: bool = dataclasses.field(default=False, metadata={"help": "save each fitted scheduler"})
    plots: bool = dataclasses.field(default=True, metadata={"help": "write PNGs"})
    tensorboard: bool = dataclasses.field(default=True, metadata={"help": "write TensorBoard events"})
    progress: bool = dataclasses.field(default=True, metadata={
        "help": "progress bars (drawn only when stderr is a terminal)"})

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be ≥ 1, got {self.seeds}")
        check_seed(self.seed_offset, "--seed-offset")
        check_seed(self.seed_offset + self.seeds - 1, "--seed-offset + --seeds − 1 (the last seed)")
        check_run_flags(self.out, resume=self.resume, overwrite=self.overwrite)
        if self.workers < 1:
            raise ConfigError(f"--workers must be ≥ 1, got {self.workers}")
        self.schedulers = check_names(self.schedulers, "plan", option="--schedulers")  # trpo → TRPO
        self.anytime_schedulers = check_names(self.anytime_schedulers, "anytime", option="--anytime-schedulers")
        if self.anytime_schedulers and not self.anytime:
            raise ConfigError("--anytime-schedulers and --no-anytime contradict each other")
        make_budget_process(self.behaviour_budget)
        for k in ("num_streams", "horizon"):
            if getattr(self, k) < 1:
                raise ConfigError(f"--{k.replace('_', '-')} must be ≥ 1, got {getattr(self, k)}")
        if not (self.bucket_cap > 0 and self.bucket_cap < float("inf")):
            raise ConfigError(f"--bucket-cap must be a finite number > 0 (full-model units), got {self.bucket_cap}")
        try:
            kw = json.loads(self.scheduler_kwargs)
        except ValueError as e:
            raise ConfigError(f"--scheduler-kwargs is not valid JSON: {e}") from None
        if not isinstance(kw, dict) or not all(isinstance(v, dict) for v in kw.values()):
            raise ConfigError("--scheduler-kwargs must be a JSON object {name: {kwarg: value}}")
        self.table_dir = resolve_table_dir(self.table_dir)


def _check_same_tables(run_dir: Path, calib: OutcomeTable, test: OutcomeTable) -> None:
    """A resumed comparison must read the tables its kept jobs were computed on (same content hashes)."""
    saved = json.loads((run_dir / "config.json").read_text()).get("tables", {})
    for name, table in (("calib", calib), ("test", test)):
        h = saved.get(f"{name}_sha256")
        if h is not None and h != table.content_hash():
            raise ConfigError(f"--resume: the {name} table in --table-dir has changed since {run_dir} was made "
                              f"(content hash {table.content_hash()[:12]}…, was {h[:12]}…); use another --out")


def _anytime_names(cfg: CompareConfig, calib: OutcomeTable) -> tuple[list[str], dict[str, str]]:
    """The anytime schedulers to compare and, when defaulted, those left out with the reason."""
    if not cfg.anytime:
        return [], {}
    if cfg.anytime_schedulers:
        return list(cfg.anytime_schedulers), {}  # asked for by name: a missing requirement is an error later
    try:
        AnytimeTable.from_table(calib, cfg.cost_unit)
    except AdaInfError as e:  # e.g. latency costs or a table without a per-block MACs breakdown
        return [], {"anytime_*": str(e)}
    avail = available_schedulers("anytime")
    return [n for n, why in avail.items() if why is None], {n: why for n, why in avail.items() if why is not None}


def _write_anytime_outputs(run_dir: Path, results: list[JobResult], summary: list[dict[str, Any]],
                           aiq: list[dict[str, Any]], cfg: CompareConfig) -> list[Path]:
    """``anytime_traces.npz`` (the first seed's per-request traces along ``--behaviour-budget``) and, with plots,
    the anytime-vs-plan and stopping-behaviour figures."""
    traces = {r.name: r.trace for r in results if r.trace is not None}
    out: list[Path] = []
    if traces:
        with atomic_write(run_dir / "anytime_traces.npz", "wb") as fh:
            np.savez(fh, **{f"{n}__{k}": v for n, tr in traces.items() for k, v in tr.items()})
        out.append(run_dir / "anytime_traces.npz")
    if not cfg.plots:
        return out
    p = plot_anytime_vs_plan(summary, run_dir / "anytime_vs_plan.png")
    out += [p] if p is not None else []
    learned = [n for n in traces if n not in ANYTIME_BASELINES]
    shown = [n for n in (best_anytime(aiq, learned), "anytime_conf_cascade") if n in traces]
    if not shown:  # no learner and no cascade traced: the best traced scripted policy
        shown = [n for n in [best_anytime(aiq, [n for n in traces if n != "anytime_oracle"])] if n is not None]
    p = plot_stopping_behaviour({n: traces[n] for n in shown}, run_dir / "anytime_stopping_behaviour.png",
                                process=cfg.behaviour_budget, shared=cfg.behaviour_shared)
    out += [p] if p is not None else []
    return out


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(CompareConfig, argv, raise_errors=True)
    dist = DistEnv.from_environ()
    calib, test = load_split_tables(cfg.table_dir, cfg.cost_unit)
    names = list(cfg.schedulers)
    skipped = {}
    if not names:
        avail = available_schedulers()
        names = [n for n, why in avail.items() if why is None]
        skipped = {n: why for n, why in avail.items() if why is not None}
    anytime_names, anytime_skipped = _anytime_names(cfg, calib)
    skipped.update(anytime_skipped)
    seeds = list(range(cfg.seed_offset, cfg.seed_offset + cfg.seeds))
    parallel = cfg.workers > 1 or dist.world_size > 1
    # every rank checks the jobs (bad input fails everywhere alike) before rank 0 creates anything
    jobs = comparison_jobs(
        names + anytime_names, calib, test, seeds=seeds, bandit_budgets=cfg.bandit_budgets,
        stream_budgets=cfg.stream_budgets, stream_variants=cfg.stream_variants, num_streams=cfg.num_streams,
        horizon=cfg.horizon, bucket_cap=cfg.bucket_cap, scheduler_kwargs=json.loads(cfg.scheduler_kwargs),
        cost_unit=cfg.cost_unit, save=cfg.save_schedulers, torch_threads=1 if parallel else None,
        trace_process=cfg.behaviour_budget if anytime_names else None, trace_shared=cfg.behaviour_shared)
    run_dir = None
    if dist.is_main:
        opened = open_run_dir(cfg, backbone=calib.meta.get("backbone", "table"), algo="compare", seed=cfg.seed_offset,
                              out=cfg.out, root=cfg.runs_root, resume=cfg.resume, overwrite=cfg.overwrite, log=print,
                              extra={"schedulers": names, "anytime_schedulers": anytime_names,
                                     "unavailable": skipped, "seeds_used": seeds,
                                     "jobs": {"count": len(jobs), "workers": cfg.workers,
                                              "world_size": dist.world_size},
                                     "tables": {"calib": calib.meta.get("source_path", str(cfg.table_dir)),
                                                "test": test.meta.get("source_path", str(cfg.table_dir)),
                                                "calib_sha256": calib.content_hash(),
                                                "test_sha256": test.content_hash()}})
        run_dir = opened.path
        if opened.resumed:
            _check_same_tables(run_dir, calib, test)
    # finished jobs are kept in <run>/jobs, each by the process that ran it (rank 0's worker processes; the jobs of
    # other torchrun ranks once gathered), and skipped when the run is resumed
    store = JobStore(run_dir / "jobs") if run_dir is not None else None
    t0 = time.perf_counter()
    runner = functools.partial(run_jobs, workers=cfg.workers) if parallel else None
    results = run_comparison_jobs(jobs, runner=runner, progress=show_progress(cfg.progress), store=store,
                                  log=print if dist.is_main else None)
    wall_s = time.perf_counter() - t0
    if not dist.is_main:
        return {"run_dir": None, "rank": dist.rank}
    records = [rec for r in results for rec in r.records]
    if cfg.save_schedulers:
        save_fitted(results, run_dir / "schedulers")
    out = write_results(records, run_dir, plots=cfg.plots)
    for p in _write_anytime_outputs(run_dir, results, out["summary"], out["aiq"], cfg):
        out["files"][p.name] = p
    if cfg.tensorboard:
        write_tensorboard(out["summary"], run_dir / "tb")
    out["files"].update(write_learning_curves([r.curve for r in results], run_dir, plots=cfg.plots,
                                              tensorboard_dir=run_dir / "tb" if cfg.tensorboard else None))
    print(f"# compare_schedulers: {len(names)} plan-env + {len(anytime_names)} anytime-env schedulers × "
          f"{len(seeds)} seeds, fit on calib ({calib.num_samples} rows), report on test ({test.num_samples} rows), "
          f"{wall_s:.1f} s ({cfg.workers} worker{'s' if cfg.workers > 1 else ''} × {dist.world_size} rank"
          f"{'s' if dist.world_size > 1 else ''})")
    if skipped:
        print(f"# not available: {', '.join(skipped)}")
    print(out["markdown"])
    print(f"# run directory: {run_dir}")
    return {"run_dir": run_dir, "records": records, **out}


if __name__ == "__main__":
    run_script(main)
