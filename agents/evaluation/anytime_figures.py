"""Figures of the anytime env next to the plan env: accuracy vs mean cost, and where an anytime policy stops.

* :func:`plot_anytime_vs_plan` — accuracy vs mean cost paid of the anytime schedulers (solid) and the plan-env
  baselines (dashed: ``lut``, ``hull_mix``, ``lagrangian``, ``confidence_cascade``), one panel per setting (bandit
  per-request budget; stream with a shared average budget); bounds drawn in grey, never as competitors, the region
  above the oracles (``oracle``, ``anytime_oracle``) shaded as unreachable.
* :func:`plot_stopping_behaviour` — per traced policy, along a shifting budget (e.g. a step process): the budget and
  the mean cost paid / blocks run over time, and the cost at which each request stopped against the confidence of
  the answer it read, per budget level.

Inputs are a summary (:func:`agents.evaluation.report.summarize`) and per-request traces
(:func:`agents.evaluation.anytime_harness.anytime_stream_trace`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from adainf_env.fileio import save_figure
from agents.evaluation.report import overrun_label, scheduler_style
from agents.registry import ANYTIME_BASELINES, ANYTIME_SCHEDULERS

__all__ = ["PLAN_REFERENCES", "FIGURE_SETTINGS", "CEILINGS", "best_anytime", "plot_anytime_vs_plan", "plot_stopping_behaviour"]

#: Plan-env schedulers drawn as references in :func:`plot_anytime_vs_plan` (those present in the summary).
PLAN_REFERENCES: tuple[str, ...] = ("lut", "hull_mix", "lagrangian", "confidence_cascade")
#: (setting, variant, panel title) of :func:`plot_anytime_vs_plan`.
FIGURE_SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("bandit", "fixed", "bandit: every request has the budget"),
    ("stream", "shared", "stream: shared average budget (token bucket)"),
)
#: Bounds that cap every scheduler at a given cost (the cheapest plan right on each sample): shaded above. Other
#: bounds (``lut_upper``: the best static plan chosen on the test split) cap only static plans and are drawn as lines.
CEILINGS: tuple[str, ...] = ("oracle", "anytime_oracle")
# Random policies sit far below the rest and would squash the axis; they are the floor of the tests, not a reference.
_LEFT_OUT = ("random", "anytime_random")


def best_anytime(aiq_rows: Sequence[Mapping[str, Any]], candidates: Sequence[str]) -> str | None:
    """The anytime scheduler among ``candidates`` with the highest AIQ in the stream/shared setting (else bandit);
    bounds never. None when no candidate has an AIQ row."""
    for setting, variant in (("stream", "shared"), ("bandit", "fixed")):
        rows = [r for r in aiq_rows if r["scheduler"] in candidates and not r["is_bound"]
                and (r["setting"], r["variant"]) == (setting, variant)]
        if rows:
            return max(rows, key=lambda r: r["aiq_mean"])["scheduler"]
    return None


def _curve(rows: Sequence[Mapping[str, Any]], name: str) -> tuple[np.ndarray, np.ndarray, float]:
    rs = sorted((s for s in rows if s["scheduler"] == name), key=lambda s: s["budget"])
    x = np.array([s["mean_cost_mean"] for s in rs])
    y = np.array([100 * s["accuracy_mean"] for s in rs])
    return x, y, max(s.get("overrun_rate_mean", 0.0) for s in rs)


def plot_anytime_vs_plan(summary: Sequence[Mapping[str, Any]], out_path: str | os.PathLike, *,
                         plan_references: Sequence[str] = PLAN_REFERENCES) -> Path | None:
    """Accuracy vs mean cost paid: anytime schedulers vs plan-env baselines, one panel per setting present in
    ``summary`` (:data:`FIGURE_SETTINGS`). None (nothing written) when the summary has no anytime scheduler."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = [(s, v, t) for s, v, t in FIGURE_SETTINGS
              if any((r["setting"], r["variant"]) == (s, v) and r["scheduler"] in ANYTIME_SCHEDULERS
                     for r in summary)]
    if not panels:
        return None
    keep = [r for r in summary if r["scheduler"] not in _LEFT_OUT
            and (r["scheduler"] in ANYTIME_SCHEDULERS or r["scheduler"] in plan_references or r["is_bound"])]
    names = list(dict.fromkeys(r["scheduler"] for r in keep if not r["is_bound"]))
    # one distinct colour per scheduler of this figure, in a fixed order: anytime learners, anytime baselines, plan
    order = ([n for n in names if n in ANYTIME_SCHEDULERS and n not in ANYTIME_BASELINES]
             + [n for n in names if n in ANYTIME_BASELINES] + [n for n in names if n not in ANYTIME_SCHEDULERS])
    style = scheduler_style(order)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 5.4), squeeze=False)
    for ax, (setting, variant, title) in zip(axes[0], panels):
        rows = [r for r in keep if (r["setting"], r["variant"]) == (setting, variant)]
        ys = [100 * r["accuracy_mean"] for r in rows if not r["is_bound"]] or [0.0, 100.0]
        pad = max(1.0, 0.06 * (max(ys) - min(ys)))
        ylim = (min(ys) - pad, max(ys) + pad)
        bounds = list(dict.fromkeys(r["scheduler"] for r in rows if r["is_bound"]))
        for j, b in enumerate(bounds):
            x, y, _ = _curve(rows, b)
            if b in CEILINGS:  # no scheduler answers more requests right at that cost: the region above is shaded
                ax.fill_between(x, np.minimum(y, ylim[1] + 50), ylim[1] + 50, color="0.55", alpha=0.16, lw=0)
            ax.plot(x, y, color="0.3", lw=0.9, ls=(0, (4, 2 + 2 * j)),
                    label=f"{b} (bound{', region above shaded' if b in CEILINGS else ''})")
        for n in order:
            if not any(r["scheduler"] == n for r in rows):
                continue
            x, y, worst = _curve(rows, n)
            anytime = n in ANYTIME_SCHEDULERS
            label = overrun_label(n if anytime else f"{n} (plan env)", worst)
            st = style[n]
            ax.plot(x, y, color=st["color"], marker=st["marker"], lw=1.8 if anytime else 1.2,
                    ls="-" if anytime else "--", ms=5 if anytime else 4.5,
                    mfc=st["color"] if anytime else "white", label=label, zorder=3 if anytime else 2)
        ax.set_ylim(*ylim)
        ax.set_xlim(0, 1.02)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("mean cost paid per request (fraction of the full model)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    n_seeds = max(r["n_seeds"] for r in summary)
    fig.suptitle(f"anytime env (solid) vs plan-env baselines (dashed): accuracy vs cost, mean over {n_seeds} "
                 f"seed{'s' if n_seeds > 1 else ''}; one point per budget", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, Path(out_path), dpi=120)


def _levels(budget: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Budget level of every request: the distinct values of a step process (≤ 6), else terciles."""
    u = np.unique(np.round(budget, 6))
    if len(u) <= 6:
        return np.searchsorted(u, np.round(budget, 6)), [f"budget {v:g}" for v in u]
    edges = np.quantile(budget, [1 / 3, 2 / 3])
    lv = np.searchsorted(edges, budget, side="right")
    lo, hi = budget.min(), budget.max()
    bounds = [lo, *edges, hi]
    return lv, [f"budget {bounds[i]:.2f}–{bounds[i + 1]:.2f}" for i in range(3)]


def plot_stopping_behaviour(traces: Mapping[str, Mapping[str, np.ndarray]], out_path: str | os.PathLike, *,
                            process: str = "", shared: bool = True, max_points: int = 4000,
                            seed: int = 0) -> Path | None:
    """One row per traced policy (``{name: trace}``): (left) over the stream, the process's budget (``shared``: the
    token bucket's refill, i.e. the average budget; else each request's budget), the mean over streams of the cost
    paid, of the budget available and of the blocks run; (right) the cost at which each request stopped against the
    confidence of the answer it read, coloured by the process's budget level, with the mean cost per confidence bin.
    None when ``traces`` is empty. ``max_points`` requests (a seeded subsample) are drawn as dots."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not traces:
        return None
    level_colours = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
    fig, axes = plt.subplots(len(traces), 2, figsize=(12.5, 4.9 * len(traces)), squeeze=False,
                             gridspec_kw={"width_ratios": [1.25, 1.0]})
    rng = np.random.default_rng(seed)
    for (name, tr), (ax_t, ax_s) in zip(traces.items(), axes):
        cost, conf = np.asarray(tr["cost"], float), np.asarray(tr["conf"], float)
        blocks, given = np.asarray(tr["blocks"], float), np.asarray(tr["given"], float)
        proc = np.asarray(tr["proc"], float)
        correct = np.asarray(tr["correct"], bool)
        t = np.arange(cost.shape[1])
        ax_t.step(t, proc.mean(axis=0), where="post", color="0.2", lw=1.4,
                  label="average budget (bucket refill)" if shared else "budget per request")
        if shared:
            ax_t.plot(t, np.minimum(given, 1.0).mean(axis=0), color="0.55", lw=0.9, ls=":",
                      label="available in the bucket (mean)")
        ax_t.plot(t, cost.mean(axis=0), color="#1f77b4", lw=1.2, label="cost paid (mean over streams)")
        ax_t.set_ylabel("fraction of the full model")
        ax_t.set_xlabel("request in the stream")
        top = max(proc.max(), cost.max(), np.minimum(given, 1.0).mean(axis=0).max() if shared else 0.0)
        ax_t.set_ylim(0, min(1.05, top * 1.1))
        ax_b = ax_t.twinx()
        ax_b.plot(t, blocks.mean(axis=0), color="#ff7f0e", lw=1.0, alpha=0.9, label="blocks run (mean, right axis)")
        ax_b.set_ylabel("blocks run")
        ax_b.set_ylim(0, max(1.0, blocks.max()) * 1.1)
        h1, l1 = ax_t.get_legend_handles_labels()
        h2, l2 = ax_b.get_legend_handles_labels()
        ax_t.legend(h1 + h2, l1 + l2, fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
                    frameon=False)
        ax_t.set_title(f"{name}: accuracy {100 * correct.mean():.1f} %, mean cost {cost.mean():.3f}, "
                       f"mean reads {np.mean(tr['reads']):.2f}", fontsize=9.5)
        ax_t.grid(alpha=0.3)
        lv, labels = _levels(proc.reshape(-1))
        c, k, f = cost.reshape(-1), conf.reshape(-1), blocks.reshape(-1)
        pick = rng.permutation(c.size)[: min(max_points, c.size)]
        bins = np.linspace(0.0, 1.0, 11)
        for i, lab in enumerate(labels):
            col = level_colours[i % len(level_colours)]
            sel = pick[lv[pick] == i]
            ax_s.scatter(k[sel], c[sel] + rng.normal(0, 0.004, sel.size), s=5, alpha=0.18, color=col, lw=0)
            m = lv == i
            idx = np.clip(np.digitize(k[m], bins) - 1, 0, len(bins) - 2)
            cnt = np.bincount(idx, minlength=len(bins) - 1)
            mean_c = np.bincount(idx, weights=c[m], minlength=len(bins) - 1) / np.maximum(cnt, 1)
            ok = cnt >= 10
            mids = 0.5 * (bins[1:] + bins[:-1])
            ax_s.plot(mids[ok], mean_c[ok], color=col, lw=2, marker="o", ms=4,
                      label=f"{lab}: {m.mean() * 100:.0f} % of requests, mean blocks {f[m].mean():.1f}")
        ax_s.set_xlabel("confidence of the answer read at the stop")
        ax_s.set_ylabel("cost paid when it stopped")
        ax_s.set_xlim(0, 1.0)
        ax_s.grid(alpha=0.3)
        ax_s.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)
        ax_s.set_title("where requests stop (dots: requests; lines: mean cost per confidence bin)", fontsize=9.5)
    what = "average budget (token bucket)" if shared else "per-request budget"
    fig.suptitle(f"stopping behaviour under a shifting {what}{f' ({process})' if process else ''}, first seed, "
                 "test table", fontsize=10.5)
    fig.tight_layout()
    return save_figure(fig, Path(out_path), dpi=120)
