"""Schedulers in stream mode under shifting budgets: drift, step, periodic and trace budget processes.

    python experiments/shifting_budgets.py --table-dir ../shared/reference
    python experiments/shifting_budgets.py --table-dir ../shared/reference --trace my_budgets.csv --shared

The learned scheduler (``--algo``, default ``hinge``) and the references (``--references``: ``lut``, ``hull_mix``,
``oracle`` — a bound) are fitted on the calibration table; each then serves ``--num-streams`` streams of ``--horizon``
test requests whose budget follows each process (:mod:`agents.evaluation.traces`). With ``--shared`` the requests share a
token bucket refilled by the process (the average cost is what is constrained). Writes ``results.json`` (stream
records of :mod:`agents.evaluation.harness`, ``variant`` = process), ``stream_traces.png`` (budget and chosen cost over time,
rolling accuracy, per scheduler), ``traces.npz``, TensorBoard events and ``config.json`` into the run directory.
Without ``--table-dir`` the tables come from the same data → backbone → tables pipeline as ppo_resnet18.py (demo
sample when no data is found).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

# On a shared or busy CPU, OpenMP threads that spin while waiting burn the cores other threads need (measured here on
# a loaded 2-core machine: backbone training with 2 spinning threads was several times slower than with 1); passive
# waiting costs little when the machine is idle. Must be set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if __package__ in (None, ""):  # allow `python experiments/shifting_budgets.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adainf_env.errors import ConfigError  # noqa: E402
from adainf_lab.pipeline import PipelineConfig  # noqa: E402

__all__ = ["ShiftingBudgetsConfig", "main"]


@dataclasses.dataclass
class ShiftingBudgetsConfig(PipelineConfig):
    """Stream mode under drift / step / periodic / trace budgets: budget vs chosen cost over time, rolling accuracy."""

    algo: str = dataclasses.field(default="hinge", metadata={"help": "learned scheduler to follow the budgets"})
    references: tuple[str, ...] = dataclasses.field(default=("lut", "hull_mix", "oracle"),
                                                    metadata={"help": "reference schedulers (oracle is a bound)"})
    processes: tuple[str, ...] = dataclasses.field(default=("drift", "step", "periodic", "trace"),
                                                   metadata={"help": "budget processes (drift, step, periodic, trace)"})
    trace: Path | None = dataclasses.field(default=None, metadata={
        "help": "CSV budget trace for the 'trace' process (default: a synthetic diurnal trace, labelled so)"})
    shared: bool = dataclasses.field(default=False, metadata={
        "help": "requests share a token bucket refilled by the process (average-cost constraint)"})
    num_streams: int = dataclasses.field(default=20, metadata={"help": "parallel streams per process"})
    horizon: int = dataclasses.field(default=600, metadata={"help": "requests per stream"})
    window: int = dataclasses.field(default=50, metadata={"help": "rolling-accuracy window (requests)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        from agents.evaluation.traces import DEFAULT_PROCESSES
        from agents.registry import scheduler_class

        for r in self.references:
            scheduler_class(r)
        bad = [p for p in self.processes if p not in DEFAULT_PROCESSES and p != "trace"]
        if bad or not self.processes:
            raise ConfigError(f"--processes: unknown {bad}; choose from {list(DEFAULT_PROCESSES) + ['trace']}")
        if self.num_streams < 1 or self.horizon < 2 or self.window < 1:
            raise ConfigError("--num-streams ≥ 1, --horizon ≥ 2 and --window ≥ 1 are required")
        if self.trace is not None and not Path(self.trace).is_file():
            raise ConfigError(f"--trace {self.trace}: no such file")


def main(argv: list[str] | None = None) -> dict:
    import numpy as np
    from torch.utils.tensorboard import SummaryWriter

    from adainf_env.fileio import atomic_write, atomic_write_json
    from adainf_lab.cli import parse_config
    from agents.evaluation.harness import summarize, write_results, write_tensorboard
    from adainf_lab.pipeline import demo_settings, fit_scheduler, prepare_run
    from agents.evaluation.traces import DEFAULT_PROCESSES, plot_stream_traces, run_stream_traces, synthetic_trace
    from agents.registry import make_scheduler

    cfg = parse_config(ShiftingBudgetsConfig, argv)
    mode, run_dir, calib, test, prov, _ = prepare_run(cfg, algo_label=f"shifting-{cfg.algo}",
                                                      script="shifting_budgets.py")
    processes = {p: DEFAULT_PROCESSES[p] for p in cfg.processes if p != "trace"}
    trace_note = None
    if "trace" in cfg.processes:
        path = cfg.trace or synthetic_trace(run_dir / "synthetic_trace.csv", seed=cfg.seed)
        trace_note = "given" if cfg.trace else "synthetic (no --trace given)"
        # a dict spec: a "trace:path=..." string would split the path at "/" (list shorthand of the spec parser)
        processes["trace"] = {"name": "trace", "path": str(path), "start": "zero"}
        print(f"[stream] trace process: {path} ({trace_note})", flush=True)
    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
    try:
        sched, _ = fit_scheduler(cfg, calib, run_dir, writer,
                                 timesteps=demo_settings(cfg.demo_scale)["timesteps"] if mode.kind == "demo" else None)
        scheds = {sched.name: sched}
        for r in cfg.references:
            scheds[r] = make_scheduler(r).fit(calib, seed=cfg.seed)
        records, traces = run_stream_traces(scheds, test, processes, seed=cfg.seed, num_streams=cfg.num_streams,
                                            horizon=cfg.horizon, shared=cfg.shared, progress=cfg.progress)
        # time series in TensorBoard: stream/<process>/<scheduler>/{budget,cost,rolling_accuracy}, step = request
        for p, by in traces.items():
            for s, tr in by.items():
                acc = np.convolve(tr["correct"].mean(axis=0), np.ones(cfg.window) / cfg.window, mode="valid")
                for t in range(0, tr["cost"].shape[1], max(1, cfg.horizon // 200)):
                    writer.add_scalar(f"stream/{p}/{s}/budget", float(tr["budget"][:, t].mean()), t)
                    writer.add_scalar(f"stream/{p}/{s}/cost", float(tr["cost"][:, t].mean()), t)
                    if t + cfg.window <= tr["cost"].shape[1]:
                        writer.add_scalar(f"stream/{p}/{s}/rolling_accuracy", float(acc[t]), t + cfg.window - 1)
    finally:
        writer.close()
    write_results(records, run_dir, plots=cfg.plots)
    write_tensorboard(summarize(records), run_dir / "tensorboard")
    arrays = {f"{p}__{s}__{k}": v for p, by in traces.items() for s, tr in by.items() for k, v in tr.items()}
    with atomic_write(run_dir / "traces.npz", "wb") as fh:
        np.savez_compressed(fh, **arrays)
    fig = None
    if cfg.plots:
        kind = "shared token bucket" if cfg.shared else "per-request budgets"
        fig = plot_stream_traces(traces, run_dir / "stream_traces.png", window=cfg.window, learned=cfg.algo,
                                 title=f"{'DEMO — ' if mode.kind == 'demo' else ''}{calib.meta.get('backbone')} "
                                       f"test table, {cfg.num_streams} streams × {cfg.horizon} requests ({kind})"
                                       + (f"; trace: {trace_note}" if trace_note else ""))
    print("\n[results] stream accuracy % / mean cost / overrun % per process:")
    for r in records:
        print(f"  {r['variant']:>9s}  {r['scheduler']:>10s}{' (bound)' if r['is_bound'] else '        '}  "
              f"{100 * r['accuracy']:6.2f}  {r['mean_cost']:.3f}  {100 * r['overrun_rate']:5.1f}  "
              f"(mean budget {r['mean_budget']:.3f})")
    summary = {"mode": mode.kind, "run_dir": str(run_dir), "processes": processes, "trace": trace_note,
               "figure": str(fig) if fig else None, "provenance": prov}
    atomic_write_json(run_dir / "run_summary.json", summary)
    print(f"[run] done → {run_dir}")
    return summary


if __name__ == "__main__":
    from adainf_env.errors import AdaInfError

    try:
        main()
    except AdaInfError as e:  # bad input: one clear line, no traceback
        sys.exit(f"error: {e}")
