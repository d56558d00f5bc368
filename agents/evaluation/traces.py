"""Schedulers under shifting budgets (stream mode): per-request traces and the figure of ``shifting_budgets.py``.

The stream harness :func:`agents.evaluation.harness.evaluate_stream` runs ``num_streams`` streams of ``horizon`` requests and
asks the scheduler for one batch of decisions per time step. :class:`TraceRecorder` wraps a fitted scheduler and
records, at every step, the budget each request was given, the plan chosen, its cost and whether it was correct — so
the figure shows *how* a scheduler follows the budget, not only its averages.

Budget processes (``adainf_env.budgets`` specs; phases fixed so the streams are aligned and the plot is readable):

* ``random_walk``  random walk σ = 0.03 in [0.25, 0.9] starting at 0.6 (slow drift of the available compute);
* ``step``      0.8 → 0.3 → 0.6 → 0.4, switching every 150 requests (abrupt load changes);
* ``periodic``  sine between 0.25 and 0.85 with period 300 requests;
* ``trace``     replay of a CSV trace (``--trace PATH``); without one, a synthetic diurnal-like trace (seeded, written
  into the run directory and labelled synthetic).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from adainf_env.feasibility import overrun
from adainf_env.fileio import atomic_write, save_figure
from adainf_env.tables.outcomes import OutcomeTable
from agents.base import Decisions, Scheduler
from agents.evaluation.harness import evaluate_stream
from agents.evaluation.report import overrun_label, scheduler_color
from agents.progress import progress_disabled

__all__ = ["DEFAULT_PROCESSES", "TraceRecorder", "synthetic_trace", "run_stream_traces", "plot_stream_traces"]

DEFAULT_PROCESSES: dict[str, str] = {
    "random_walk": "random_walk:sigma=0.03,low=0.25,high=0.9,start=0.6",
    "step": "step:values=0.8/0.3/0.6/0.4,every=150",
    "periodic": "periodic:period=300,low=0.25,high=0.85,phase=0",
}


class TraceRecorder(Scheduler):
    """A transparent wrapper: forwards :meth:`decide` to ``inner`` and keeps what happened at each call."""

    def __init__(self, inner: Scheduler) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.is_bound = inner.is_bound  # type: ignore[misc]
        self.plan_space = inner.plan_space
        self.steps: list[dict[str, np.ndarray]] = []

    def decide(self, table: OutcomeTable, rows: np.ndarray, budgets: np.ndarray,
               state: dict[str, Any] | None = None) -> Decisions:
        dec = self.inner.decide(table, rows, budgets, state)
        self.steps.append({"budget": np.asarray(budgets, dtype=np.float64).copy(),
                           "cost": np.asarray(dec.cost, dtype=np.float64).copy(),
                           "correct": table.correct[np.asarray(rows), dec.plan].copy(),
                           "plan": np.asarray(dec.plan).copy()})
        return dec

    def arrays(self) -> dict[str, np.ndarray]:
        """``{budget, cost, correct, plan}`` each [num_streams, horizon]."""
        return {k: np.stack([s[k] for s in self.steps], axis=1) for k in ("budget", "cost", "correct", "plan")}


def synthetic_trace(path: str | Path, *, length: int = 1200, seed: int = 0) -> Path:
    """Write a synthetic diurnal-like budget trace (two load peaks per cycle plus seeded noise) as a CSV with a
    ``budget`` column. It stands in for a measured trace when none is given, and is labelled as synthetic."""
    rng = np.random.default_rng(seed)
    x = np.arange(length) / 600.0  # two cycles of 600 requests
    load = 0.55 * np.exp(-((x % 1 - 0.35) / 0.08) ** 2) + 0.45 * np.exp(-((x % 1 - 0.8) / 0.1) ** 2)
    noise = np.convolve(rng.normal(0, 0.05, length), np.ones(15) / 15, mode="same")
    budget = np.clip(0.85 - 0.6 * load + noise, 0.2, 1.0)
    buf = "budget\n" + "\n".join(f"{b:.4f}" for b in budget) + "\n"
    path = Path(path)
    with atomic_write(path, "w") as fh:
        fh.write(buf)
    return path


def run_stream_traces(schedulers: Mapping[str, Scheduler], test: OutcomeTable, processes: Mapping[str, Any], *,
                      seed: int, num_streams: int, horizon: int, shared: bool = False,
                      progress: bool = True) -> tuple[list[dict[str, Any]], dict[str, dict[str, dict]]]:
    """Every scheduler along every process on the test table → (records, traces[process][scheduler])."""
    records: list[dict[str, Any]] = []
    traces: dict[str, dict[str, dict]] = {}
    jobs = [(p, s) for p in processes for s in schedulers]
    for pname, sname in tqdm(jobs, desc="stream traces", disable=progress_disabled(progress)):
        rec = TraceRecorder(schedulers[sname])
        r = evaluate_stream(rec, test, processes[pname], shared=shared, seed=seed, num_streams=num_streams,
                            horizon=horizon, variant=pname)
        r["process_spec"] = processes[pname]
        records.append(r)
        traces.setdefault(pname, {})[sname] = rec.arrays()
    return records, traces


def _rolling(x: np.ndarray, w: int) -> np.ndarray:
    """Trailing mean over ``w`` steps (shorter at the start)."""
    c = np.cumsum(np.insert(np.asarray(x, dtype=np.float64), 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(0, idx - w)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_stream_traces(traces: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]], path: str | Path, *,
                       bounds: Sequence[str] = ("oracle", "lut_upper"), window: int = 50,
                       title: str = "", learned: str | None = None) -> Path:
    """One row per budget process: left, the budget given to stream 0 and each scheduler's chosen cost on stream 0
    (trailing mean over ``window // 5`` requests); right, rolling accuracy (trailing ``window`` requests, mean over
    streams). Each scheduler in its own colour (:func:`agents.evaluation.report.scheduler_color`), labelled
    "overruns X %" when it exceeds the budget it was given; bounds dashed and labelled "(bound)"; the ``learned`` scheduler is drawn last and thin over wide
    translucent reference lines, so it stays visible where it coincides with a reference."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    procs = list(traces)
    fig, axes = plt.subplots(len(procs), 2, figsize=(12, 2.9 * len(procs)), squeeze=False)
    for i, p in enumerate(procs):
        ax_c, ax_a = axes[i]
        first = next(iter(traces[p].values()))
        t = np.arange(first["budget"].shape[1])
        ax_c.plot(t, first["budget"][0], color="k", lw=1.6, label="budget (stream 0)")
        order = [s for s in traces[p] if s != learned] + ([learned] if learned in traces[p] else [])
        for s in order:
            tr = traces[p][s]
            bound = s in bounds
            rate = float(overrun(tr["cost"], tr["budget"]).mean())
            st: dict[str, Any] = dict(color=scheduler_color(s), lw=1.1, ls="--" if bound else "-",
                                      label=overrun_label(f"{s} (bound)" if bound else s, rate))
            if learned is not None and s != learned and not bound:
                st.update(lw=3.2, alpha=0.45)
            ax_c.plot(t, _rolling(tr["cost"][0], max(1, window // 5)), **st)
            ax_a.plot(t, 100 * _rolling(tr["correct"].mean(axis=0), window), **st)
        ax_c.set_ylabel("cost / budget\n(fraction of full MACs)")
        ax_c.set_ylim(0, 1.05)
        ax_c.set_title(f"{p}: budget and chosen cost over time", fontsize=9)
        ax_a.set_ylabel(f"rolling accuracy (%)\n(last {window} requests)")
        ax_a.set_title(f"{p}: rolling accuracy (mean over streams)", fontsize=9)
        for ax in (ax_c, ax_a):
            ax.grid(alpha=0.3)
            ax.set_xlabel("request index in the stream")
        ax_c.legend(fontsize=7, loc="lower left", ncol=2)
        ax_a.legend(fontsize=7, loc="lower left", ncol=2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
