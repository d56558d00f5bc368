"""Schedulers in stream mode under shifting budgets: random_walk, step, periodic and trace budget processes.

    python experiments/shifting_budgets.py --table-dir reference
    python experiments/shifting_budgets.py --table-dir reference --trace my_budgets.csv --shared

The learned scheduler (``--algo``, default ``hinge``) and the references (``--references``: ``lut``, ``hull_mix``,
``oracle`` — a bound) are fitted on the calibration table; each then serves ``--num-streams`` streams of ``--horizon``
test requests whose budget follows each process (:mod:`agents.evaluation.traces`). With ``--shared`` the requests
share a token bucket refilled by the process (the average cost is what is constrained). Writes ``results.json``
(stream records of :mod:`agents.evaluation.harness`, ``variant`` = process), ``stream_traces.png`` (budget and chosen
cost over time, rolling accuracy, per scheduler), ``traces.npz``, TensorBoard events and ``config.json`` into the run
directory. Without ``--table-dir`` the tables come from the same data → backbone → tables pipeline as
ppo_resnet18.py (demo sample when no data is found).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from adainf_env.budgets import load_trace
from adainf_env.errors import ConfigError
from adainf_env.fileio import atomic_write, atomic_write_json
from adainf_lab.cli import parse_config, run_script
from adainf_lab.config import PipelineConfig, show_progress
from adainf_lab.pipeline import PreparedRun, fit_scheduler, prepare_run
from adainf_lab.scheduler_options import SchedulerName, SchedulerNames
from agents.evaluation.report import summarize, write_results, write_tensorboard
from agents.evaluation.traces import DEFAULT_PROCESSES, plot_stream_traces, run_stream_traces, synthetic_trace
from agents.registry import check_names, make_scheduler

__all__ = ["ShiftingBudgetsConfig", "main"]

#: The budget processes, by the names of :data:`adainf_env.budgets.BUDGET_PROCESSES` (``random_walk`` is the slow drift).
Process = Literal["random_walk", "step", "periodic", "trace"]


@dataclasses.dataclass
class ShiftingBudgetsConfig(PipelineConfig):
    """Stream mode under random_walk / step / periodic / trace budgets: budget vs chosen cost over time, rolling
    accuracy."""

    algo: SchedulerName = dataclasses.field(default="hinge", metadata={"help": "learned scheduler to follow the budgets"})
    references: SchedulerNames = dataclasses.field(default=("lut", "hull_mix", "oracle"),
                                                              metadata={"help": "reference schedulers (oracle is a bound)"})
    processes: tuple[Process, ...] = dataclasses.field(default=("random_walk", "step", "periodic", "trace"),
                                                       metadata={"help": "budget processes"})
    trace: Path | None = dataclasses.field(default=None, metadata={
        "help": "CSV budget trace for the 'trace' process (None: a synthetic diurnal trace, labelled so)"})
    shared: bool = dataclasses.field(default=False, metadata={
        "help": "requests share a token bucket refilled by the process (average-cost constraint)"})
    num_streams: int = dataclasses.field(default=20, metadata={"help": "parallel streams per process"})
    horizon: int = dataclasses.field(default=600, metadata={"help": "requests per stream"})
    window: int = dataclasses.field(default=50, metadata={"help": "rolling-accuracy window (requests)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.references = check_names(self.references, "plan", option="--references")
        if not self.processes:
            raise ConfigError("--processes is empty")
        if self.num_streams < 1 or self.horizon < 2 or self.window < 1:
            raise ConfigError("--num-streams ≥ 1, --horizon ≥ 2 and --window ≥ 1 are required")
        if self.trace is not None:
            if "trace" not in self.processes:
                raise ConfigError(f"--trace {self.trace} is given but --processes leaves out 'trace'")
            load_trace(self.trace)  # the whole CSV is checked now, before any training (ConfigError naming the line)


def budget_processes(cfg: ShiftingBudgetsConfig, run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """The process specs to run and, with ``trace``, where the trace came from (given or synthetic)."""
    processes: dict[str, Any] = {p: DEFAULT_PROCESSES[p] for p in cfg.processes if p != "trace"}
    if "trace" not in cfg.processes:
        return processes, None
    path = cfg.trace or synthetic_trace(run_dir / "synthetic_trace.csv", seed=cfg.seed)
    note = "given" if cfg.trace else "synthetic (no --trace given)"
    # a dict spec: a "trace:path=..." string would split the path at "/" (list shorthand of the spec parser)
    processes["trace"] = {"name": "trace", "path": str(path), "start": "zero"}
    print(f"[stream] trace process: {path} ({note})", flush=True)
    return processes, note


def log_traces(writer: SummaryWriter, traces: dict, *, window: int, horizon: int) -> None:
    """TensorBoard time series ``stream/<process>/<scheduler>/{budget,cost,rolling_accuracy}``, step = request."""
    for p, by in traces.items():
        for s, tr in by.items():
            acc = np.convolve(tr["correct"].mean(axis=0), np.ones(window) / window, mode="valid")
            for t in range(0, tr["cost"].shape[1], max(1, horizon // 200)):
                writer.add_scalar(f"stream/{p}/{s}/budget", float(tr["budget"][:, t].mean()), t)
                writer.add_scalar(f"stream/{p}/{s}/cost", float(tr["cost"][:, t].mean()), t)
                if t + window <= tr["cost"].shape[1]:
                    writer.add_scalar(f"stream/{p}/{s}/rolling_accuracy", float(acc[t]), t + window - 1)


def run_streams(cfg: ShiftingBudgetsConfig, run: PreparedRun, processes: dict[str, Any]):
    """Fit the learned scheduler and the references on calib, serve the test streams; ``(records, traces)``."""
    writer = SummaryWriter(log_dir=str(run.run_dir / "tensorboard"))
    try:
        sched, _ = fit_scheduler(run.cfg, run.calib, run.run_dir, writer)
        scheds = {sched.name: sched}
        for r in cfg.references:
            scheds[r] = make_scheduler(r).fit(run.calib, seed=cfg.seed)
        records, traces = run_stream_traces(scheds, run.test, processes, seed=cfg.seed, num_streams=cfg.num_streams,
                                            horizon=cfg.horizon, shared=cfg.shared,
                                            progress=show_progress(cfg.progress))
        log_traces(writer, traces, window=cfg.window, horizon=cfg.horizon)
    finally:
        writer.close()
    return records, traces


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(ShiftingBudgetsConfig, argv, raise_errors=True)
    run = prepare_run(cfg, algo_label=f"shifting-{cfg.algo}", script="shifting_budgets.py")
    processes, trace_note = budget_processes(cfg, run.run_dir)
    records, traces = run_streams(cfg, run, processes)
    write_results(records, run.run_dir, plots=cfg.plots)
    write_tensorboard(summarize(records), run.run_dir / "tensorboard")
    arrays = {f"{p}__{s}__{k}": v for p, by in traces.items() for s, tr in by.items() for k, v in tr.items()}
    with atomic_write(run.run_dir / "traces.npz", "wb") as fh:
        np.savez_compressed(fh, **arrays)
    fig = None
    if cfg.plots:
        kind = "shared token bucket" if cfg.shared else "per-request budgets"
        fig = plot_stream_traces(traces, run.run_dir / "stream_traces.png", window=cfg.window, learned=cfg.algo,
                                 title=f"{'DEMO — ' if run.mode.kind == 'demo' else ''}"
                                       f"{run.calib.meta.get('backbone')} test table, {cfg.num_streams} streams × "
                                       f"{cfg.horizon} requests ({kind})"
                                       + (f"; trace: {trace_note}" if trace_note else ""))
    print("\n[results] stream accuracy % / mean cost / overrun % per process:")
    for r in records:
        print(f"  {r['variant']:>9s}  {r['scheduler']:>10s}{' (bound)' if r['is_bound'] else '        '}  "
              f"{100 * r['accuracy']:6.2f}  {r['mean_cost']:.3f}  {100 * r['overrun_rate']:5.1f}  "
              f"(mean budget {r['mean_budget']:.3f})")
    summary = {"mode": run.mode.kind, "run_dir": str(run.run_dir), "processes": processes, "trace": trace_note,
               "figure": str(fig) if fig else None, "provenance": run.provenance}
    atomic_write_json(run.run_dir / "run_summary.json", summary)
    print(f"[run] done → {run.run_dir}")
    return summary


if __name__ == "__main__":
    run_script(main)
