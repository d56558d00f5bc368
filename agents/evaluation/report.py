"""Report writers for evaluation records (:mod:`agents.evaluation.harness`): mean ± std summaries over seeds,
markdown tables, ``results.json``/``.csv``, ``summary.*``, accuracy-vs-budget/cost plots and TensorBoard scalars."""

from __future__ import annotations

import csv
import io
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from adainf_env.errors import ConfigError
from adainf_env.fileio import atomic_write, atomic_write_json, save_figure

__all__ = ["METRICS", "summarize", "markdown_tables", "plot_summary", "write_results", "write_tensorboard"]

#: Record metrics summarised as mean ± std over seeds.
METRICS = ("accuracy", "mean_cost", "mean_budget", "overrun_rate", "mean_overrun")


def summarize(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std over seeds per (scheduler, setting, variant, budget).

    ``std`` is the sample standard deviation over seeds (ddof = 1; 0 for a single seed). Order: first appearance.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        missing = [k for k in ("scheduler", "setting", "budget", "seed", "accuracy", "mean_cost", "overrun_rate")
                   if k not in r]
        if missing:
            raise ConfigError(f"record lacks {missing}: {dict(r)!r:.200}")
        groups[(r["scheduler"], r["setting"], r.get("variant", ""), float(r["budget"]))].append(r)
    out = []
    for (name, setting, variant, budget), rs in groups.items():
        row: dict[str, Any] = {"scheduler": name, "is_bound": bool(rs[0].get("is_bound", False)), "setting": setting,
                               "variant": variant, "budget": budget, "n_seeds": len({r["seed"] for r in rs})}
        for m in METRICS:
            vals = np.array([r[m] for r in rs if m in r], dtype=np.float64)
            if vals.size == 0:
                continue
            row[f"{m}_mean"] = float(vals.mean())
            row[f"{m}_std"] = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
        out.append(row)
    return out


def _pm(mean: float, std: float, scale: float, digits: int) -> str:
    return f"{mean * scale:.{digits}f}±{std * scale:.{digits}f}"


def markdown_tables(summary: Sequence[Mapping[str, Any]]) -> str:
    """One markdown table per (setting, variant): rows = schedulers, columns = budgets,
    cells = accuracy % / mean cost / overrun rate %, each mean±std over seeds."""
    blocks = []
    keys = list(dict.fromkeys((s["setting"], s["variant"]) for s in summary))
    for setting, variant in keys:
        rows = [s for s in summary if (s["setting"], s["variant"]) == (setting, variant)]
        budgets = sorted({s["budget"] for s in rows})
        names = list(dict.fromkeys(s["scheduler"] for s in rows))
        what = "average budget" if setting == "stream" else "budget"
        lines = [f"**{setting} / {variant}** — accuracy % / mean cost / overrun rate %, mean±std over seeds; "
                 f"columns: {what}", "",
                 "| scheduler | " + " | ".join(f"{b:g}" for b in budgets) + " |",
                 "|---|" + "---|" * len(budgets)]
        for n in names:
            cells = []
            for b in budgets:
                m = [s for s in rows if s["scheduler"] == n and s["budget"] == b]
                if not m:
                    cells.append("–")
                    continue
                s = m[0]
                cells.append(f"{_pm(s['accuracy_mean'], s['accuracy_std'], 100, 2)} / "
                             f"{_pm(s['mean_cost_mean'], s['mean_cost_std'], 1, 3)} / "
                             f"{_pm(s['overrun_rate_mean'], s['overrun_rate_std'], 100, 1)}")
            label = f"{n} (bound)" if any(s["is_bound"] for s in rows if s["scheduler"] == n) else n
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def plot_summary(summary: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike) -> list[Path]:
    """PNGs per (setting, variant): accuracy vs budget and accuracy vs mean cost, one line per scheduler, error bars =
    std over seeds; bounds (``is_bound``) dashed and labelled "(bound)". Written atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    paths = []
    keys = list(dict.fromkeys((s["setting"], s["variant"]) for s in summary))
    for setting, variant in keys:
        rows = [s for s in summary if (s["setting"], s["variant"]) == (setting, variant)]
        names = list(dict.fromkeys(s["scheduler"] for s in rows))
        for xkey, xlabel, fname in (("budget", "average budget" if setting == "stream" else "budget",
                                     f"accuracy_vs_budget_{setting}_{variant}.png"),
                                    ("mean_cost_mean", "mean cost paid", f"accuracy_vs_cost_{setting}_{variant}.png")):
            fig, ax = plt.subplots(figsize=(9.5, 5))
            for i, n in enumerate(names):
                rs = sorted((s for s in rows if s["scheduler"] == n), key=lambda s: s["budget"])
                bound = rs[0]["is_bound"]
                x = np.array([s[xkey] for s in rs])
                y = np.array([100 * s["accuracy_mean"] for s in rs])
                yerr = np.array([100 * s["accuracy_std"] for s in rs])
                xerr = np.array([s["mean_cost_std"] for s in rs]) if xkey == "mean_cost_mean" else None
                label = f"{n} (bound)" if bound else n
                worst = max(s.get("overrun_rate_mean", 0.0) for s in rs)
                if worst > 0.02:  # meets its budget only on average: say so in the legend
                    label += f" [overruns ≤{100 * worst:.0f}%]"
                # tab20 + a marker cycle: 15 schedulers stay distinguishable (the default cycle repeats after 10)
                ax.errorbar(x, y, yerr=yerr, xerr=xerr, marker="os^vDP*X"[i % 8], ms=4, capsize=3,
                            color=plt.get_cmap("tab20")(i % 20), linestyle="--" if bound else "-", label=label)
            if xkey == "mean_cost_mean":
                ax.set_xlim(0, 1.02)
            ax.set_xlabel(f"{xlabel} (fraction of full-model cost)")
            ax.set_ylabel("accuracy (%)")
            ax.set_title(f"{setting} / {variant}: accuracy vs {xlabel} (error bars: std over seeds)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
            fig.tight_layout()
            paths.append(save_figure(fig, out_dir / fname, dpi=120))
    return paths


def write_results(records: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike, *,
                  plots: bool = True) -> dict[str, Any]:
    """Write ``results.json`` (the records), ``results.csv`` (same, ``plan_hist`` as a JSON string),
    ``summary.json``/``summary.csv`` (mean ± std), ``summary.md`` (markdown tables) and the PNGs into ``out_dir``.
    All atomic. Returns ``{"summary": [...], "markdown": str, "files": {name: Path}}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = [dict(r) for r in records]
    summary = summarize(records)
    md = markdown_tables(summary)
    files: dict[str, Path] = {}
    atomic_write_json(out_dir / "results.json", records)
    files["results.json"] = out_dir / "results.json"
    atomic_write_json(out_dir / "summary.json", summary)
    files["summary.json"] = out_dir / "summary.json"
    for fname, rows in (("results.csv", records), ("summary.csv", summary)):
        cols = list(dict.fromkeys(k for r in rows for k in r))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v for k, v in r.items()})
        with atomic_write(out_dir / fname, "w") as fh:
            fh.write(buf.getvalue())
        files[fname] = out_dir / fname
    with atomic_write(out_dir / "summary.md", "w") as fh:
        fh.write(md)
    files["summary.md"] = out_dir / "summary.md"
    if plots and summary:
        for p in plot_summary(summary, out_dir):
            files[p.name] = p
    return {"summary": summary, "markdown": md, "files": files}


def write_tensorboard(summary: Sequence[Mapping[str, Any]], log_dir: str | os.PathLike) -> Path:
    """TensorBoard scalars of a summary: ``<setting>_<variant>/<metric>/<scheduler>`` (mean over seeds), one step
    per budget (step = round(100·budget), so the x axis reads as the budget in %). Returns the log directory."""
    from torch.utils.tensorboard import SummaryWriter  # lazy: torch only when TensorBoard output is wanted

    log_dir = Path(log_dir)
    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for s in summary:
            for m in ("accuracy", "mean_cost", "overrun_rate", "mean_overrun"):
                if f"{m}_mean" in s:
                    writer.add_scalar(f"{s['setting']}_{s['variant']}/{m}/{s['scheduler']}", s[f"{m}_mean"],
                                      global_step=int(round(100 * s["budget"])))
    finally:
        writer.close()
    return log_dir
