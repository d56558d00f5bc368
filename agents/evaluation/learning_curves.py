"""Learning curves, as RL papers draw them: held-out score vs training steps for every learner, mean and 95 %
interval over seeds.

Every learner keeps a fit history: at each checkpoint it scores its deployed (greedy) policy on the held-out part of
the *calibration* table (never the test split) — the score its selection rule (:meth:`agents.learners.base.Learner.keeps`)
reads. :func:`curve_from_history` turns one fitted learner's history into one curve; :func:`aggregate_curves` puts the
seeds of each learner together; :func:`write_learning_curves` writes them into a run directory:

* ``learning_curves.csv`` — one row per (learner, step): ``scheduler``, ``env``, ``unit``, ``metric``, ``step``,
  ``n_seeds`` and for ``accuracy`` and ``mean_cost`` the mean over seeds and its 95 % interval (``*_lo``/``*_hi``:
  rliable's stratified bootstrap over seeds, :func:`agents.evaluation.intervals.bootstrap_ci`; one seed → the value
  itself);
* ``learning_curves.png`` — one panel per learner, held-out accuracy (%) vs step with the interval shaded, and the
  held-out mean cost on a second axis where the learner records it;
* TensorBoard (``tb/`` of the run): ``learning_curves/<scheduler>/accuracy`` (and ``…/accuracy_lo``, ``…/accuracy_hi``,
  ``…/mean_cost``) at each step.

What a curve holds, by learner family (``unit`` and ``metric`` columns say which):

* plan-env learners (SB3 ``ppo``/``a2c``/``maskable_ppo``/``dqn`` and the torch ``hinge``/``reinforce``/
  ``blockdrop``): ``metric = "bandit"``, the mean held-out accuracy over the budget grid
  (:data:`~agents.evaluation.metrics.BUDGET_GRID`, over-budget choices wrong) and the mean cost of the chosen plans;
  ``unit = "env_steps"`` (requests served in training: SB3's ``num_timesteps``; the torch learners: epochs × fit rows).
  Step 0 is the untrained policy (with the LUT prior: the LUT), the logged reference the selection never returns;
* ``lagrangian`` selects by held-out BCE and records no held-out accuracy: no curve;
* anytime-env learners: ``metric = "bandit"`` (mean held-out bandit accuracy) where their history has the bandit
  sweep, else ``"stream"`` (mean held-out shared-bucket stream accuracy); the step is the learner's own (``unit =
  "env_steps"`` for the SB3 anytime learners, ``"updates"`` for the torch ones); mean cost is not recorded (NaN).

Seeds of one learner are put together at the steps every seed reached (runs stopped by a time limit end early).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adainf_env.errors import ConfigError
from adainf_env.fileio import atomic_write, save_figure
from agents.evaluation.intervals import bootstrap_ci

__all__ = ["curve_from_history", "learner_curve", "aggregate_curves", "write_learning_curves", "CSV_COLUMNS"]

#: Columns of ``learning_curves.csv`` (in order).
CSV_COLUMNS: tuple[str, ...] = ("scheduler", "env", "unit", "metric", "step", "n_seeds", "accuracy_mean",
                                "accuracy_lo", "accuracy_hi", "mean_cost_mean", "mean_cost_lo", "mean_cost_hi")

# SB3 learners count env steps; the torch anytime learners count policy updates.
_SB3_ANYTIME = ("anytime_ppo", "anytime_a2c", "anytime_maskable_ppo")


def _mean(v: Any) -> float:
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    return float(a.mean()) if a.size else math.nan


def curve_from_history(history: Sequence[Mapping[str, Any]], *, name: str, env: str = "plan",
                       fit_rows: int | None = None) -> dict[str, Any] | None:
    """One learner's fit history → ``{"name", "env", "unit", "metric", "points": [(step, accuracy, mean_cost)]}``,
    or ``None`` when the history holds no held-out accuracy (``lagrangian``, baselines: an empty history).

    Plan-env histories: SB3 entries ``{"timesteps", "val_score"[, "mean_cost"]}`` (env steps), torch entries
    ``{"epoch", "val_score"[, "env_steps", "mean_cost"]}`` — without ``env_steps`` the step is ``epoch × fit_rows``
    (``fit_rows`` given), else the epoch (``unit = "epochs"``). Anytime histories: ``{"step", "bandit" | "stream"}``."""
    if env not in ("plan", "anytime"):
        raise ConfigError(f"curve_from_history: env must be 'plan' or 'anytime', got {env!r}")
    pts: list[tuple[float, float, float]] = []
    unit = metric = None
    for h in history:
        if env == "plan":
            if "val_score" not in h:
                return None
            metric = "bandit"
            if "env_steps" in h:
                step, unit = float(h["env_steps"]), "env_steps"
            elif "timesteps" in h:
                step, unit = float(h["timesteps"]), "env_steps"
            elif "epoch" in h and fit_rows is not None:
                step, unit = float(h["epoch"]) * int(fit_rows), "env_steps"
            elif "epoch" in h:
                step, unit = float(h["epoch"]), "epochs"
            else:
                raise ConfigError(f"{name}: a history entry without a step ('timesteps', 'env_steps' or 'epoch'): "
                                  f"{sorted(h)}")
            pts.append((step, float(h["val_score"]), float(h.get("mean_cost", math.nan))))
        else:
            if "step" not in h:
                raise ConfigError(f"{name}: an anytime history entry without 'step': {sorted(h)}")
            key = "bandit" if "bandit" in h else "stream" if "stream" in h else None
            if key is None:
                return None
            metric = key
            unit = "env_steps" if name in _SB3_ANYTIME else "updates"
            pts.append((float(h["step"]), _mean(h[key]), float(h.get("mean_cost", math.nan))))
    if not pts:
        return None
    # a resumed or re-scored run may log a step twice: keep the last score of each step, in step order
    by_step = {p[0]: p for p in pts}
    return {"name": name, "env": env, "unit": unit, "metric": metric, "points": [by_step[s] for s in sorted(by_step)]}


def learner_curve(scheduler: Any, name: str, env: str) -> dict[str, Any] | None:
    """The curve of a fitted scheduler of registry ``name`` in ``env`` (``None`` for one without a fit history:
    the baselines, ``lagrangian``)."""
    history = getattr(scheduler, "history", None)
    return curve_from_history(history, name=name, env=env) if history else None


def _interval(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, lo, hi) over seeds; NaN values (not recorded) give NaN."""
    if np.isnan(values).any():
        return math.nan, math.nan, math.nan
    lo, hi = bootstrap_ci(values)
    return float(values.mean()), lo, hi


def aggregate_curves(curves: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Curves of several learners and seeds (:func:`curve_from_history` outputs) → rows of ``learning_curves.csv``:
    per learner, at each step every one of its seeds reached, the mean and 95 % interval over seeds of the held-out
    accuracy and mean cost. Curves of one learner must share ``env``, ``unit`` and ``metric``."""
    by_name: dict[str, list[Mapping[str, Any]]] = {}
    for c in curves:
        by_name.setdefault(c["name"], []).append(c)
    rows: list[dict[str, Any]] = []
    for name, cs in by_name.items():
        kinds = {(c["env"], c["unit"], c["metric"]) for c in cs}
        if len(kinds) > 1:
            raise ConfigError(f"learning curves of {name!r} mix units/metrics: {sorted(kinds)}")
        env, unit, metric = kinds.pop()
        per_seed = [{p[0]: p for p in c["points"]} for c in cs]
        steps = sorted(set.intersection(*(set(d) for d in per_seed)))
        for s in steps:
            acc = np.array([d[s][1] for d in per_seed])
            cost = np.array([d[s][2] for d in per_seed])
            a, a_lo, a_hi = _interval(acc)
            m, m_lo, m_hi = _interval(cost)
            rows.append({"scheduler": name, "env": env, "unit": unit, "metric": metric, "step": s,
                         "n_seeds": len(per_seed), "accuracy_mean": a, "accuracy_lo": a_lo, "accuracy_hi": a_hi,
                         "mean_cost_mean": m, "mean_cost_lo": m_lo, "mean_cost_hi": m_hi})
    return rows


def _write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS))
    w.writeheader()
    for r in rows:
        w.writerow({k: r[k] for k in CSV_COLUMNS})
    with atomic_write(path, "w") as fh:
        fh.write(buf.getvalue())
    return path


def _plot(rows: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from agents.evaluation.report import scheduler_color

    names = list(dict.fromkeys(r["scheduler"] for r in rows))
    if not names:
        return None
    cols = min(4, len(names))
    nrows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        rs = [r for r in rows if r["scheduler"] == name]
        x = np.array([r["step"] for r in rs])
        acc = 100 * np.array([[r["accuracy_mean"], r["accuracy_lo"], r["accuracy_hi"]] for r in rs])
        color = scheduler_color(name)
        ax.plot(x, acc[:, 0], color=color, marker=".", label="held-out accuracy")
        ax.fill_between(x, acc[:, 1], acc[:, 2], color=color, alpha=0.25, linewidth=0)
        ax.set_title(f"{name} ({rs[0]['env']}, n={rs[0]['n_seeds']})", fontsize=9)
        ax.set_xlabel(rs[0]["unit"].replace("_", " "), fontsize=8)
        ax.set_ylabel(f"held-out {rs[0]['metric']} accuracy %", fontsize=8)
        ax.tick_params(labelsize=7)
        cost = np.array([[r["mean_cost_mean"], r["mean_cost_lo"], r["mean_cost_hi"]] for r in rs])
        if not np.isnan(cost[:, 0]).all():
            ax2 = ax.twinx()
            ax2.plot(x, cost[:, 0], color="0.4", linestyle="--", linewidth=1, label="held-out mean cost")
            ax2.fill_between(x, cost[:, 1], cost[:, 2], color="0.4", alpha=0.12, linewidth=0)
            ax2.set_ylabel("mean cost (full = 1)", fontsize=8, color="0.4")
            ax2.tick_params(labelsize=7, colors="0.4")
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.suptitle("Learning curves: held-out calibration score vs training steps (mean, 95 % bootstrap CI over seeds)",
                 fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def _tensorboard(rows: Sequence[Mapping[str, Any]], log_dir: Path) -> Path:
    from torch.utils.tensorboard import SummaryWriter  # lazy: torch only when TensorBoard output is wanted

    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for r in rows:
            for tag, key in (("accuracy", "accuracy_mean"), ("accuracy_lo", "accuracy_lo"),
                             ("accuracy_hi", "accuracy_hi"), ("mean_cost", "mean_cost_mean")):
                if not math.isnan(r[key]):
                    writer.add_scalar(f"learning_curves/{r['scheduler']}/{tag}", r[key], global_step=int(r["step"]))
    finally:
        writer.close()
    return log_dir


def write_learning_curves(curves: Sequence[Mapping[str, Any] | None], out_dir: str | os.PathLike, *,
                          plots: bool = True, tensorboard_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Write ``learning_curves.csv`` (always, header only when no learner has a curve), ``learning_curves.png``
    (``plots`` and at least one curve) and TensorBoard scalars (into ``tensorboard_dir`` when given) for the
    ``curves`` of every (learner, seed) — ``None`` entries (baselines) are skipped. Returns ``{file name: path}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = aggregate_curves([c for c in curves if c is not None])
    files = {"learning_curves.csv": _write_csv(rows, out_dir / "learning_curves.csv")}
    if plots and rows:
        p = _plot(rows, out_dir / "learning_curves.png")
        if p is not None:
            files[p.name] = p
    if tensorboard_dir is not None and rows:
        _tensorboard(rows, Path(tensorboard_dir))
    return files
