"""Report writers for evaluation records (:mod:`agents.evaluation.harness`): mean ± std summaries over seeds,
markdown tables, ``results.json``/``.csv``, ``summary.*``, accuracy-vs-budget/cost plots and TensorBoard scalars."""

from __future__ import annotations

import csv
import io
import json
import os
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from adainf_env.errors import ConfigError
from adainf_env.fileio import atomic_write, atomic_write_json, save_figure
from agents.evaluation.intervals import bootstrap_ci

__all__ = ["METRICS", "OVERRUN_MARK", "scheduler_color", "scheduler_style", "overrun_label", "summarize", "aiq_summary", "aiq_markdown", "markdown_tables", "plot_summary", "write_results",
           "write_tensorboard"]

#: Record metrics summarised as mean ± std over seeds.
METRICS = ("accuracy", "mean_cost", "mean_budget", "overrun_rate", "mean_overrun")


def summarize(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std over seeds per (scheduler, env, setting, variant, budget); ``env`` is "plan" or "anytime".

    ``std`` is the sample standard deviation over seeds (ddof = 1; 0 for a single seed). With more than one seed the
    row also holds ``accuracy_ci_lo``/``accuracy_ci_hi``: a 95 % percentile-bootstrap interval of the mean over seeds
    (:func:`agents.evaluation.intervals.bootstrap_ci`). Records of a named budget process carry ``process_spec``
    into the row. Order: first appearance.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = defaultdict(list)
    for r in records:
        missing = [k for k in ("scheduler", "setting", "budget", "seed", "accuracy", "mean_cost", "overrun_rate")
                   if k not in r]
        if missing:
            raise ConfigError(f"record lacks {missing}: {dict(r)!r:.200}")
        groups[(r["scheduler"], r.get("env", "plan"), r["setting"], r.get("variant", ""),
                float(r["budget"]))].append(r)
    out = []
    for (name, env, setting, variant, budget), rs in groups.items():
        row: dict[str, Any] = {"scheduler": name, "env": env, "is_bound": bool(rs[0].get("is_bound", False)),
                               "setting": setting, "variant": variant, "budget": budget,
                               "n_seeds": len({r["seed"] for r in rs})}
        if "process_spec" in rs[0]:
            row["process_spec"] = str(rs[0]["process_spec"])
        for m in METRICS:
            vals = np.array([r[m] for r in rs if m in r], dtype=np.float64)
            if vals.size == 0:
                continue
            row[f"{m}_mean"] = float(vals.mean())
            row[f"{m}_std"] = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
        if row["n_seeds"] > 1:
            row["accuracy_ci_lo"], row["accuracy_ci_hi"] = bootstrap_ci([r["accuracy"] for r in rs])
        out.append(row)
    return out


def aiq_summary(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Area under the accuracy–budget curve per scheduler (RouterBench's AIQ, Hu et al. 2024, over the budget grid):
    per seed, the trapezoid integral of accuracy over the budgets of a (setting, variant), divided by the budget range
    — the mean accuracy over that range, in [0, 1] — then mean ± std over seeds (ddof = 1).

    One row per (scheduler, setting, variant) with at least two budgets: ``aiq_mean``, ``aiq_std``, ``n_seeds``,
    ``budget_lo``, ``budget_hi``, ``n_budgets``, ``is_bound``. Every seed must cover the same budgets
    (:class:`ConfigError` otherwise): areas over different ranges are not comparable.
    """
    curves: dict[tuple, dict[int, dict[float, float]]] = defaultdict(lambda: defaultdict(dict))
    bound: dict[tuple, bool] = {}
    overruns: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        key = (r["scheduler"], r["setting"], r.get("variant", ""), r.get("env", "plan"))
        curves[key][int(r["seed"])][float(r["budget"])] = float(r["accuracy"])
        bound[key] = bool(r.get("is_bound", False))
        overruns[key].append(float(r.get("overrun_rate", 0.0)))
    out = []
    for key, by_seed in curves.items():
        grids = {tuple(sorted(c)) for c in by_seed.values()}
        if len(grids) > 1:
            raise ConfigError(f"aiq_summary: {key[0]} ({key[1]}/{key[2]}) has different budgets per seed: "
                              f"{sorted(grids)}")
        grid = np.array(next(iter(grids)))
        if grid.size < 2:
            continue
        areas = np.array([np.trapezoid([c[b] for b in grid], grid) / (grid[-1] - grid[0]) for c in by_seed.values()])
        # An area is only comparable among schedulers that meet their budgets: the mean overrun rate says which.
        out.append({"scheduler": key[0], "env": key[3], "is_bound": bound[key], "setting": key[1], "variant": key[2],
                    "overrun_rate_mean": float(np.mean(overruns[key])),
                    "n_seeds": int(areas.size), "budget_lo": float(grid[0]), "budget_hi": float(grid[-1]),
                    "n_budgets": int(grid.size), "aiq_mean": float(areas.mean()),
                    "aiq_std": float(areas.std(ddof=1)) if areas.size > 1 else 0.0})
    return out


def aiq_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """One markdown table per (setting, variant): AIQ (%) mean ± std over seeds, best first."""
    blocks = []
    for setting, variant in dict.fromkeys((r["setting"], r["variant"]) for r in rows):
        rs = sorted((r for r in rows if (r["setting"], r["variant"]) == (setting, variant)),
                    key=lambda r: -r["aiq_mean"])
        lo, hi = rs[0]["budget_lo"], rs[0]["budget_hi"]
        lines = [f"**{setting} / {variant} — AIQ**: accuracy % averaged over budgets {lo:g}…{hi:g} (trapezoid), "
                 f"{_over_seeds(rs)}; overrun: mean share of requests over their budget (an AIQ with overruns does "
                 "not meet the budget)", "", "| scheduler | env | AIQ % | overrun % | seeds |", "|---|---|---|---|---|"]
        lines += [f"| {r['scheduler']}{' (bound)' if r['is_bound'] else ''} | {r.get('env', 'plan')} | "
                  f"{_pm(r['aiq_mean'], r['aiq_std'], 100, 2, r['n_seeds'])} | {100 * r.get('overrun_rate_mean', 0.0):.1f} | "
                  f"{r['n_seeds']} |" for r in rs]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n" if blocks else ""


def _pm(mean: float, std: float, scale: float, digits: int, n: int) -> str:
    """``mean±std`` (scaled) over ``n`` seeds; the mean alone for one seed (a spread of one value says nothing)."""
    if n <= 1:
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f}±{std * scale:.{digits}f}"


def _over_seeds(rows: Sequence[Mapping[str, Any]]) -> str:
    """How a table's cells summarise seeds: "mean±std over seeds", or "one seed" when no row has more."""
    return "mean±std over seeds" if any(r["n_seeds"] > 1 for r in rows) else "one seed"


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
        lines = [f"**{setting} / {variant}** — accuracy % / mean cost / overrun rate %, {_over_seeds(rows)}; "
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
                k = s["n_seeds"]
                cells.append(f"{_pm(s['accuracy_mean'], s['accuracy_std'], 100, 2, k)} / "
                             f"{_pm(s['mean_cost_mean'], s['mean_cost_std'], 1, 3, k)} / "
                             f"{_pm(s['overrun_rate_mean'], s['overrun_rate_std'], 100, 1, k)}")
            label = f"{n} (bound)" if any(s["is_bound"] for s in rows if s["scheduler"] == n) else n
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


#: The one palette: a qualitative set of distinct colours. A scheduler's colour depends on its name only
#: (:func:`scheduler_color`), so it is the same in every panel and every figure of every run.
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
            "#7f7f7f", "#000000", "#393b79", "#637939", "#ad494a", "#8c6d31", "#7b4173", "#3182bd", "#e6550d",
            "#31a354", "#756bb1", "#636363", "#843c39", "#d6616b", "#6baed6", "#fd8d3c", "#74c476", "#9e9ac8",
            "#bd9e39", "#e7969c", "#5254a3")
_MARKERS = "osD^v<>PX*hp"
#: Overrun rate (share of requests over their budget) from which a drawn scheduler is marked as overrunning.
OVERRUN_MARK = 0.02


def _name_index(name: str) -> int:
    """The name's place in the registry (plan-env names, then anytime names), or a stable hash past them."""
    from agents.registry import known_schedulers  # light: the registry imports learners lazily

    known = list(dict.fromkeys(known_schedulers("plan") + known_schedulers("anytime")))
    if name in known:
        return known.index(name)
    return len(known) + zlib.crc32(name.encode()) % len(_PALETTE)


def scheduler_color(name: str) -> str:
    """The colour of scheduler ``name`` in every figure (one map keyed by name)."""
    return _PALETTE[_name_index(name) % len(_PALETTE)]


def scheduler_style(names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{name: {color, marker}}``: each scheduler's own colour (:func:`scheduler_color`) and marker, whatever else
    is drawn beside it."""
    return {n: {"color": scheduler_color(n), "marker": _MARKERS[_name_index(n) % len(_MARKERS)]} for n in names}


def overrun_label(label: str, rate: float) -> str:
    """``label`` marked ``[overruns X %]`` when the scheduler exceeds its budget on ≥ :data:`OVERRUN_MARK` of the
    requests (it meets the budget only on average): every figure drawing a scheduler labels it so."""
    return f"{label} [overruns {100 * rate:.0f} %]" if rate >= OVERRUN_MARK else label


def _panels(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    """Schedulers split into panels: learned (not registry baselines), baselines; bounds are drawn in every panel."""
    from agents.registry import ANYTIME_BASELINES, BASELINES  # the registry module is light (lazy imports)

    names = list(dict.fromkeys(s["scheduler"] for s in rows if not s["is_bound"]))
    learned = [n for n in names if n.split("+")[0].split("-")[0] not in BASELINES + ANYTIME_BASELINES]
    base = [n for n in names if n not in learned]
    return [(t, ns) for t, ns in (("learned schedulers", learned), ("baselines", base)) if ns]


def _line_figure(rows: Sequence[Mapping[str, Any]], setting: str, variant: str, xkey: str, xlabel: str,
                 style: dict[str, dict[str, Any]]) -> Any:
    import matplotlib.pyplot as plt

    panels = _panels(rows)
    bounds = list(dict.fromkeys(s["scheduler"] for s in rows if s["is_bound"]))
    n_seeds = max(s["n_seeds"] for s in rows)
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.2 * max(1, len(panels)), 4.6), sharey=True,
                             squeeze=False)
    # y range from the non-bound curves: a bound far above them would squash them into a sliver
    ys = [100 * s["accuracy_mean"] for s in rows if not s["is_bound"]] or [100 * s["accuracy_mean"] for s in rows]
    lo, hi = min(ys), max(ys)
    pad = max(1.0, 0.06 * (hi - lo))
    ylim = (lo - pad, hi + pad)
    for ax, (title, names) in zip(axes[0], panels or [("", [])]):
        for j, b in enumerate(bounds):  # bounds: shaded ceilings (the region above a bound is unreachable)
            rs = sorted((s for s in rows if s["scheduler"] == b), key=lambda s: s[xkey])
            x = np.array([s[xkey] for s in rs])
            y = np.array([100 * s["accuracy_mean"] for s in rs])
            ax.fill_between(x, np.minimum(y, ylim[1] + 50), ylim[1] + 50, color="0.55", alpha=0.18 + 0.1 * j,
                            lw=0, label=f"above {b} (bound)")
            ax.plot(x, y, color="0.35", lw=0.8, ls=(0, (4, 2 + 2 * j)))
            if y.max() > ylim[1]:  # say where the bound is when it lies above the axis
                ax.text(0.01, 0.98 - 0.06 * j, f"{b} (bound) up to {y.max():.1f} % (above the axis)",
                        transform=ax.transAxes, fontsize=7, va="top", color="0.25")
        for n in names:
            rs = sorted((s for s in rows if s["scheduler"] == n), key=lambda s: s["budget"])
            x = np.array([s[xkey] for s in rs])
            y = np.array([100 * s["accuracy_mean"] for s in rs])
            label = overrun_label(n, max(s.get("overrun_rate_mean", 0.0) for s in rs))
            ax.plot(x, y, lw=1.5, ms=4.5, label=label, **style[n])
            if n_seeds > 1 and all("accuracy_ci_lo" in s for s in rs):
                ax.fill_between(x, [100 * s["accuracy_ci_lo"] for s in rs], [100 * s["accuracy_ci_hi"] for s in rs],
                                color=style[n]["color"], alpha=0.15, lw=0)
        ax.set_ylim(*ylim)
        if xkey == "mean_cost_mean":
            ax.set_xlim(0, 1.02)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"{xlabel} (fraction of full-model cost)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    axes[0][0].set_ylabel("accuracy (%)")
    band = f"bands: 95 % bootstrap CI over {n_seeds} seeds" if n_seeds > 1 else "1 seed: no interval"
    fig.suptitle(f"{setting} / {variant}: accuracy vs {xlabel} ({band})", fontsize=10)
    fig.tight_layout()
    return fig


def _process_figure(rows: Sequence[Mapping[str, Any]], setting: str, style: dict[str, dict[str, Any]]) -> Any:
    """Named budget processes (one operating point each): one panel per process, accuracy per scheduler as a
    horizontal bar with its mean cost written beside it; bounds hatched ``//``; a scheduler that overruns its budgets
    cross-hatched ``xx`` and labelled "overruns X %" (its accuracy is bought with compute it was not given)."""
    import matplotlib.pyplot as plt

    procs = list(dict.fromkeys(s["variant"] for s in rows))
    names = list(dict.fromkeys(s["scheduler"] for s in rows))
    fig, axes = plt.subplots(1, len(procs), figsize=(3.6 * len(procs) + 1.2, 0.42 * len(names) + 1.6),
                             sharey=True, squeeze=False)
    accs = [100 * s["accuracy_mean"] for s in rows]
    for ax, p in zip(axes[0], procs):
        for i, n in enumerate(names):
            m = [s for s in rows if s["variant"] == p and s["scheduler"] == n]
            if not m:
                continue
            s = m[0]
            err = None
            if s["n_seeds"] > 1 and "accuracy_ci_lo" in s:
                err = [[100 * (s["accuracy_mean"] - s["accuracy_ci_lo"])], [100 * (s["accuracy_ci_hi"] - s["accuracy_mean"])]]
            over = s.get("overrun_rate_mean", 0.0)
            hatch = "//" if s["is_bound"] else ("xx" if over >= OVERRUN_MARK else None)
            ax.barh(i, 100 * s["accuracy_mean"], xerr=err, color=style[n]["color"], alpha=0.45 if s["is_bound"] else 0.85,
                    hatch=hatch, edgecolor="0.3", lw=0.5)
            ax.text(100 * s["accuracy_mean"] + 0.3, i, overrun_label(f"cost {s['mean_cost_mean']:.2f}", over),
                    va="center", fontsize=7, color="#b00000" if over >= OVERRUN_MARK else "black")
        ax.set_xlim(max(0.0, min(accs) - 5), max(accs) + 14)
        ax.set_title(p, fontsize=10)
        ax.set_xlabel("accuracy (%)")
        ax.grid(alpha=0.3, axis="x")
    axes[0][0].set_yticks(range(len(names)))
    axes[0][0].set_yticklabels([f"{n} (bound)" if any(s["is_bound"] for s in rows if s["scheduler"] == n) else n
                                for n in names], fontsize=8)
    axes[0][0].invert_yaxis()
    fig.suptitle(f"{setting}: accuracy under each budget process (one panel per process)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_summary(summary: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike) -> list[Path]:
    """PNGs of a summary (:func:`summarize`), written atomically:

    * per (setting, variant) swept over budgets: ``accuracy_vs_budget_*`` and ``accuracy_vs_cost_*`` — one panel for
      the learned schedulers, one for the baselines (a scheduler keeps its colour and marker everywhere); bounds
      (``is_bound``) as shaded ceilings over every panel; the y range fits the non-bound curves; bands = 95 %
      bootstrap CI over seeds, only with more than one seed; legends below the axes;
    * per setting, the named budget processes (rows with ``process_spec``, e.g. the shifting-budgets traces): one
      ``accuracy_by_process_<setting>.png`` with a panel per process."""
    import matplotlib

    matplotlib.use("Agg", force=False)

    out_dir = Path(out_dir)
    paths = []
    style = scheduler_style(list(dict.fromkeys(s["scheduler"] for s in summary)))
    swept = [s for s in summary if "process_spec" not in s]
    for setting, variant in dict.fromkeys((s["setting"], s["variant"]) for s in swept):
        rows = [s for s in swept if (s["setting"], s["variant"]) == (setting, variant)]
        for xkey, xlabel, fname in (("budget", "average budget" if setting == "stream" else "budget",
                                     f"accuracy_vs_budget_{setting}_{variant}.png"),
                                    ("mean_cost_mean", "mean cost paid", f"accuracy_vs_cost_{setting}_{variant}.png")):
            fig = _line_figure(rows, setting, variant, xkey, xlabel, style)
            paths.append(save_figure(fig, out_dir / fname, dpi=120))
    named = [s for s in summary if "process_spec" in s]
    for setting in dict.fromkeys(s["setting"] for s in named):
        fig = _process_figure([s for s in named if s["setting"] == setting], setting, style)
        paths.append(save_figure(fig, out_dir / f"accuracy_by_process_{setting}.png", dpi=120))
    return paths


def write_results(records: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike, *,
                  plots: bool = True) -> dict[str, Any]:
    """Write ``results.json`` (the records), ``results.csv`` (same, ``plan_hist`` as a JSON string),
    ``summary.json``/``summary.csv`` (mean ± std), ``aiq.json`` (:func:`aiq_summary`; not written when no scheduler
    has a curve over two budgets or more), ``summary.md`` (markdown tables, AIQ tables last; one seed: means only) and the PNGs into ``out_dir``. All atomic. Returns ``{"summary": [...], "aiq": [...],
    "markdown": str, "files": {name: Path}}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = [dict(r) for r in records]
    summary = summarize(records)
    aiq = aiq_summary(records)
    md = markdown_tables(summary) + ("\n" + aiq_markdown(aiq) if aiq else "")
    files: dict[str, Path] = {}
    atomic_write_json(out_dir / "results.json", records)
    files["results.json"] = out_dir / "results.json"
    atomic_write_json(out_dir / "summary.json", summary)
    files["summary.json"] = out_dir / "summary.json"
    if aiq:  # no curve over ≥ 2 budgets (e.g. only named budget processes): no AIQ, no file
        atomic_write_json(out_dir / "aiq.json", aiq)
        files["aiq.json"] = out_dir / "aiq.json"
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
    return {"summary": summary, "aiq": aiq, "markdown": md, "files": files}


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
