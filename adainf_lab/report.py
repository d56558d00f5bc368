"""What an experiment run writes besides ``results.json``: TensorBoard events, the headline plot, a console table.

TensorBoard layout (``<run>/tensorboard``; open with ``tensorboard --logdir runs``):

* ``train/<metric>`` — while the scheduler trains, a :class:`TrainingMonitor` evaluates the current policy on a fixed
  subset of **calibration** rows (never the test split) at a few budgets: ``reward`` (mean of
  1[correct] − λ·max(0, cost − budget), the env's reward), ``accuracy``, ``mean_cost``, ``overrun_rate``,
  ``plan_entropy`` (nats, of the plan histogram over requests), averaged over the budgets, plus
  ``train/accuracy_by_budget/b0.40``… per budget. x axis: the learner's own step (env steps for SB3, epochs for the
  torch learners).
* ``test/<scheduler>/<metric>`` — the final evaluation on the test split, one point per budget with
  ``step = round(100·budget)`` (the x axis reads as the budget in %): accuracy, mean cost, overrun rate, reward and
  plan entropy, for the learned scheduler and the ``lut`` / ``oracle`` references.
* ``hparams`` — the run's configuration with summary metrics (``SummaryWriter.add_hparams``), so runs compare in
  TensorBoard's HParams tab.

SB3 learners additionally write their own ``rollout/*`` / ``train/*`` curves under ``<run>/tensorboard/<algo>_1``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from adainf_env.fileio import save_figure
from adainf_env.tables.outcomes import OutcomeTable
from adainf_env.feasibility import overrun as is_overrun
from agents.base import Scheduler
from agents.evaluation.metrics import plan_entropy
from agents.evaluation.report import overrun_label, scheduler_style

__all__ = ["TrainingMonitor", "plan_entropy", "decision_metrics", "log_test_records", "log_hparams",
           "plot_run", "format_comparison"]


def decision_metrics(scheduler: Scheduler, table: OutcomeTable, rows: np.ndarray, budget: float,
                     lam: float) -> dict[str, float]:
    """Accuracy, mean cost, overrun rate, env reward and plan entropy of ``scheduler`` on ``rows`` at ``budget``."""
    budgets = np.full(len(rows), float(budget))
    dec = scheduler.decide(table, rows, budgets)
    correct = table.correct[rows, dec.plan]
    overrun = np.maximum(dec.cost - budgets, 0.0)
    return {
        "accuracy": float(correct.mean()),
        "mean_cost": float(dec.cost.mean()),
        "overrun_rate": float(is_overrun(dec.cost, budgets).mean()),
        "reward": float((correct - lam * overrun).mean()),
        "plan_entropy": plan_entropy(dec.plan, table.num_plans),
    }


class TrainingMonitor:
    """Logs the current policy's behaviour on held calibration rows to TensorBoard while a scheduler trains.

    ``log(step, scheduler)`` is cheap (a policy forward on ``max_rows`` rows per budget) and is called from the
    learners' callbacks. Only calibration rows are used: the test split stays untouched until the final evaluation.
    """

    def __init__(self, writer: Any, calib: OutcomeTable, *, budgets: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.8),
                 lam: float = 1.0, max_rows: int = 2000, seed: int = 0) -> None:
        self.writer = writer
        self.calib = calib
        self.budgets = [float(b) for b in budgets]
        self.lam = float(lam)
        rng = np.random.default_rng([int(seed), 0x7B])
        n = calib.num_samples
        self.rows = np.sort(rng.choice(n, size=min(n, int(max_rows)), replace=False))
        self.history: list[dict[str, float]] = []

    def log(self, step: int, scheduler: Scheduler, extra: Mapping[str, float] | None = None) -> dict[str, float]:
        per_budget = [decision_metrics(scheduler, self.calib, self.rows, b, self.lam) for b in self.budgets]
        mean = {k: float(np.mean([m[k] for m in per_budget])) for k in per_budget[0]}
        for k, v in mean.items():
            self.writer.add_scalar(f"train/{k}", v, global_step=int(step))
        for b, m in zip(self.budgets, per_budget):
            self.writer.add_scalar(f"train/accuracy_by_budget/b{b:.2f}", m["accuracy"], global_step=int(step))
        for k, v in (extra or {}).items():
            if isinstance(v, (int, float)) and math.isfinite(float(v)):
                self.writer.add_scalar(f"train/learner_{k}", float(v), global_step=int(step))
        self.writer.flush()
        self.history.append({"step": int(step), **mean})
        return mean


def log_test_records(writer: Any, schedulers: Mapping[str, Scheduler], table: OutcomeTable,
                     records: Sequence[Mapping[str, Any]], *, lam: float) -> None:
    """Per-budget test metrics of each scheduler (step = budget in %), from the bandit records + plan entropy/reward
    recomputed from the records' plan histograms and the table."""
    for r in records:
        if r.get("setting") != "bandit":
            continue
        step = int(round(100 * float(r["budget"])))
        tag = r["scheduler"]
        for k in ("accuracy", "mean_cost", "overrun_rate"):
            writer.add_scalar(f"test/{tag}/{k}", float(r[k]), global_step=step)
        hist = r.get("plan_hist") or {}
        if hist:
            plans = np.repeat(np.array([int(k) for k in hist], dtype=np.int64),
                              np.array(list(hist.values()), dtype=np.int64))
            writer.add_scalar(f"test/{tag}/plan_entropy", plan_entropy(plans, int(plans.max()) + 1), global_step=step)
        writer.add_scalar(f"test/{tag}/reward", float(r["accuracy"]) - lam * float(r.get("mean_overrun", 0.0)),
                          global_step=step)
    writer.flush()


def log_hparams(writer: Any, config: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
    """``add_hparams`` with the scalar/str config fields (others stringified) and the summary metrics."""
    hp: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, bool) or isinstance(v, (int, float, str)):
            hp[k] = v
        elif v is None:
            hp[k] = "none"
        else:
            hp[k] = str(v)
    clean = {f"hparam/{k}": float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    writer.add_hparams(hp, clean, run_name="hparams")
    writer.flush()


def _by(records: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    """Bandit records of one scheduler, averaged over seeds, sorted by budget."""
    groups: dict[float, list[Mapping[str, Any]]] = {}
    for r in records:
        if r["scheduler"] == name and r.get("setting") == "bandit":
            groups.setdefault(float(r["budget"]), []).append(r)
    out = []
    for b in sorted(groups):
        rs = groups[b]
        out.append({"budget": b, **{k: float(np.mean([x[k] for x in rs]))
                                    for k in ("accuracy", "mean_cost", "overrun_rate")},
                    "is_bound": bool(rs[0].get("is_bound", False))})
    return out


def plot_run(records: Sequence[Mapping[str, Any]], path: str | Path, *, title: str,
             full_accuracy: float | None = None, learned: str | None = None) -> Path:
    """The run's headline figure: accuracy vs budget (left) and mean cost paid vs budget (right), one line per
    scheduler; bounds dashed and labelled "(bound)"; the y = budget diagonal on the right shows budgets are respected
    (points above it overran). The ``learned`` scheduler is drawn last, thin with × markers, over wide translucent
    reference lines, so that where it coincides with ``lut`` both stay visible. Written atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["scheduler"] for r in records if r.get("setting") == "bandit"))
    colors = {n: st["color"] for n, st in scheduler_style(names).items()}
    if learned in names:  # draw the learned scheduler on top
        names = [n for n in names if n != learned] + [learned]
    fig, (ax_a, ax_c) = plt.subplots(1, 2, figsize=(11, 5.2))
    for n in names:
        rs = _by(records, n)
        if not rs:
            continue
        bound = rs[0]["is_bound"]
        x = [r["budget"] for r in rs]
        style: dict[str, Any] = dict(color=colors[n], marker="o", ms=4, linestyle="--" if bound else "-",
                                     label=overrun_label(f"{n} (bound)" if bound else n,
                                                         max(r["overrun_rate"] for r in rs)))
        if n == learned:
            style.update(marker="x", ms=7, lw=1.4, zorder=4)
        elif not bound and learned is not None:
            style.update(lw=4, alpha=0.45, zorder=2)
        if bound:  # a bound is a ceiling: shade what lies above it instead of drawing one more line
            y = np.array([100 * r["accuracy"] for r in rs])
            ax_a.fill_between(x, y, 101, color="0.6", alpha=0.2, lw=0)
        ax_a.plot(x, [100 * r["accuracy"] for r in rs], **style)
        ax_c.plot(x, [r["mean_cost"] for r in rs], **style)
    if full_accuracy is not None:
        ax_a.axhline(100 * full_accuracy, color="0.5", lw=0.8, ls=":", label="full model")
    ax_a.set_xlabel("budget (fraction of full-model MACs)")
    ax_a.set_ylabel("test accuracy (%)")
    ax_a.set_title("accuracy vs budget")
    ax_a.grid(alpha=0.3)
    ax_a.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3, frameon=False)
    ax_c.plot([0, 1], [0, 1], color="0.5", lw=0.8, ls=":", label="cost = budget")
    ax_c.set_xlabel("budget (fraction of full-model MACs)")
    ax_c.set_ylabel("mean cost paid (fraction)")
    ax_c.set_title("mean cost vs budget (above the diagonal = overrun)")
    ax_c.set_xlim(0, 1.02)
    ax_c.set_ylim(0, 1.02)
    ax_c.grid(alpha=0.3)
    ax_c.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def format_comparison(records: Sequence[Mapping[str, Any]], learned: str, *, reference: str = "lut") -> str:
    """A console table: per budget, accuracy % of every scheduler and the learned one's gap to ``reference``."""
    names = list(dict.fromkeys(r["scheduler"] for r in records if r.get("setting") == "bandit"))
    by = {n: {r["budget"]: r for r in _by(records, n)} for n in names}
    budgets = sorted({b for n in names for b in by[n]})
    head = ["budget"] + [f"{n}{' (bound)' if any(r['is_bound'] for r in by[n].values()) else ''}" for n in names]
    head += [f"{learned}-{reference} (pt)", f"{learned} cost", f"{learned} overrun"]
    lines = ["  ".join(f"{h:>14s}" for h in head)]
    for b in budgets:
        cells = [f"{b:14.2f}"]
        for n in names:
            r = by[n].get(b)
            cells.append(f"{100 * r['accuracy']:14.2f}" if r else f"{'–':>14s}")
        lr, rr = by.get(learned, {}).get(b), by.get(reference, {}).get(b)
        cells.append(f"{100 * (lr['accuracy'] - rr['accuracy']):+14.2f}" if lr and rr else f"{'–':>14s}")
        cells.append(f"{lr['mean_cost']:14.3f}" if lr else f"{'–':>14s}")
        cells.append(f"{100 * lr['overrun_rate']:13.1f}%" if lr else f"{'–':>14s}")
        lines.append("  ".join(cells))
    return "\n".join(lines)
