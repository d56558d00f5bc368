"""Compare schedulers on outcome tables: fit on the calibration table, report on the test table.

    python experiments/compare_schedulers.py --table-dir reference --seeds 3 --out DIR

``--table-dir`` holds ``table_calib.npz`` and ``table_test.npz`` (project tables from experiments/build_table.py or a
pipeline run's ``<run>/tables``); ``reference`` names the reference tables shipped in the package. Scheduler options
are given per scheduler name, ``--scheduler-kwargs '{"ppo": {"total_timesteps": 20000}}'``: a JSON mapping, because
each compared scheduler takes its own options (the single-scheduler scripts have typed ``--scheduler.*`` options). Writes into the run directory: ``config.json`` (config + git revision), ``results.json`` /
``results.csv`` (one record per scheduler × setting × budget × seed, see :mod:`agents.evaluation.harness`), ``summary.*``
(mean ± std over seeds), PNGs (accuracy vs budget; bounds dashed), TensorBoard events under ``tb/``; prints the
markdown tables.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Literal

from adainf_env.errors import ConfigError
from adainf_lab.cli import parse_config, run_script
from adainf_lab.config import show_progress
from adainf_lab.rundir import make_run_dir, save_config
from adainf_lab.scheduler_options import SchedulerName
from adainf_lab.tables import load_split_tables, resolve_table_dir
from agents.evaluation.harness import BANDIT_BUDGETS, run_comparison
from agents.evaluation.report import write_results, write_tensorboard
from agents.registry import available_schedulers

__all__ = ["CompareConfig", "main"]


@dataclasses.dataclass
class CompareConfig:
    """Fit schedulers on the calibration table, evaluate them on the test table (bandit + stream settings)."""

    table_dir: Path = dataclasses.field(metadata={
        "help": "directory with table_calib.npz and table_test.npz, or 'reference' (the tables shipped in the package)"})
    out: Path | None = dataclasses.field(default=None, metadata={"help": "run directory (default: new one in --runs-root)"})
    runs_root: Path = dataclasses.field(default=Path("runs"), metadata={"help": "parent of new run directories"})
    seeds: int = dataclasses.field(default=3, metadata={"help": "number of seeds (seed-offset … seed-offset+seeds−1)"})
    seed_offset: int = dataclasses.field(default=0, metadata={"help": "first seed"})
    schedulers: tuple[SchedulerName, ...] = dataclasses.field(
        default=(), metadata={"help": "registry names to compare (default: every importable scheduler)"})
    bandit_budgets: tuple[float, ...] = dataclasses.field(default=BANDIT_BUDGETS,
                                                          metadata={"help": "bandit per-request budgets"})
    stream_budgets: tuple[float, ...] = dataclasses.field(default=BANDIT_BUDGETS,
                                                          metadata={"help": "stream average budgets"})
    stream_variants: tuple[Literal["shared", "periodic", "random_walk"], ...] = dataclasses.field(
        default=("shared", "periodic"),
        metadata={"help": "stream settings: shared (token bucket, average budget), periodic, random_walk"})
    num_streams: int = dataclasses.field(default=50, metadata={"help": "parallel streams per stream evaluation"})
    horizon: int = dataclasses.field(default=200, metadata={"help": "requests per stream"})
    bucket_cap: float = dataclasses.field(default=1.0, metadata={"help": "token-bucket capacity (full-model units)"})
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


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(CompareConfig, argv, raise_errors=True)
    calib, test = load_split_tables(cfg.table_dir, cfg.cost_unit)
    names = list(cfg.schedulers)
    skipped = {}
    if not names:
        avail = available_schedulers()
        names = [n for n, why in avail.items() if why is None]
        skipped = {n: why for n, why in avail.items() if why is not None}
    seeds = list(range(cfg.seed_offset, cfg.seed_offset + cfg.seeds))
    run_dir = make_run_dir(backbone=calib.meta.get("backbone", "table"), algo="compare", seed=cfg.seed_offset,
                           out=cfg.out, root=cfg.runs_root)
    save_config(run_dir, cfg, extra={"schedulers": names, "unavailable": skipped, "seeds_used": seeds,
                                     "tables": {"calib": calib.meta.get("source_path", str(cfg.table_dir)),
                                                "test": test.meta.get("source_path", str(cfg.table_dir))}})
    on_fitted = None
    if cfg.save_schedulers:
        (run_dir / "schedulers").mkdir(exist_ok=True)

        def on_fitted(sched, seed):
            sched.save(run_dir / "schedulers" / f"{sched.name}__{seed}.npz")
    t0 = time.perf_counter()
    records = run_comparison(
        names, calib, test, seeds=seeds, bandit_budgets=cfg.bandit_budgets, stream_budgets=cfg.stream_budgets,
        stream_variants=cfg.stream_variants, num_streams=cfg.num_streams, horizon=cfg.horizon,
        bucket_cap=cfg.bucket_cap, scheduler_kwargs=json.loads(cfg.scheduler_kwargs), cost_unit=cfg.cost_unit,
        progress=show_progress(cfg.progress), on_fitted=on_fitted,
    )
    out = write_results(records, run_dir, plots=cfg.plots)
    if cfg.tensorboard:
        write_tensorboard(out["summary"], run_dir / "tb")
    print(f"# compare_schedulers: {len(names)} schedulers × {len(seeds)} seeds, fit on calib "
          f"({calib.num_samples} rows), report on test ({test.num_samples} rows), {time.perf_counter() - t0:.1f} s")
    if skipped:
        print(f"# not available: {', '.join(skipped)}")
    print(out["markdown"])
    print(f"# run directory: {run_dir}")
    return {"run_dir": run_dir, **out}


if __name__ == "__main__":
    run_script(main)
