"""The end-to-end experiment pipeline behind ``experiments/ppo_resnet18.py`` and ``experiments/train_scheduler.py``.

    data → backbone (trained with stochastic depth, or a checkpoint) → calibration + test outcome tables (cached)
         → scheduler fitted on calibration → evaluated on test against ``lut`` and ``oracle`` (a bound)
         → results.json / CSV / PNGs / TensorBoard events / config.json in the run directory

or, with ``table_dir``, straight from prebuilt tables (project format, the reference layout, or ``reference``: the
tables shipped in the package).

Modes (:func:`resolve_mode`):

* ``tables`` — ``table_dir`` given: no data, no backbone;
* ``full`` — real data found (``data`` given, ``download``, or a torchvision copy in a default location, see
  :mod:`adainf_lab.data`): train/load the backbone on the full dataset;
* ``demo`` — no data and no network needed: the small real CIFAR-10 JPG sample shipped in the package
  (``adainf_env/demo_data``), a narrow ResNet18 trained on it, all plans tabled, the scheduler fitted and evaluated —
  a complete, real, small run (sizes: :data:`adainf_lab.config.DEMO`). ``demo_scale`` < 1 shrinks it further (tests).

A run that builds its tables also leaves them in ``<run>/tables`` in the ``--table-dir`` layout, and prints the
command that reuses them.

Scientific hygiene: the test split never trains the scheduler, never picks a ``lut`` plan and never selects a model;
``oracle`` reads test labels and is reported as a bound.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from adainf_env.backbones import load_backbone
from adainf_env.data import class_names, demo_archive_path, load_images, make_splits
from adainf_env.errors import AdaInfError, ConfigError
from adainf_env.fileio import atomic_write_json, safe_torch_load
from adainf_env.tables.outcomes import OutcomeTable
from adainf_lab.backbone import obtain_backbone
from adainf_lab.cli import config_to_dict, parse_config
from adainf_lab.config import PipelineConfig, as_run, demo_settings, show_progress
from adainf_lab.data import DataChoice, evenly_spaced, resolve_data
from adainf_lab.report import TrainingMonitor, format_comparison, log_hparams, log_test_records, plot_run
from adainf_lab.rundir import open_run_dir
from adainf_lab.scheduler_options import accepts
from adainf_lab.tables import cached_table, default_table_cache, export_split_tables, load_split_tables
from agents.evaluation.harness import evaluate_bandit
from agents.evaluation.report import write_results
from agents.learners.base import CHECKPOINT_NAME, single_thread
from agents.registry import make_scheduler, scheduler_class, uses_sb3

__all__ = ["Mode", "PreparedRun", "resolve_mode", "obtain_tables", "prepare_run", "fit_scheduler", "options_used",
           "checkpoint_step",
           "evaluate_against_references", "run_pipeline", "pipeline_main", "class_names_for", "say"]


def say(msg: str) -> None:
    """Print a progress line immediately (also when stdout is a file or a pipe)."""
    print(msg, flush=True)


@dataclasses.dataclass
class Mode:
    kind: str  # "tables" | "full" | "demo"
    data: DataChoice | None = None
    reason: str = ""


@dataclasses.dataclass
class PreparedRun:
    """What :func:`prepare_run` hands to the scheduler stage."""

    mode: Mode
    cfg: PipelineConfig  # as it runs (the demo's sizes in demo mode)
    run_dir: Path
    calib: OutcomeTable
    test: OutcomeTable
    provenance: dict[str, Any]
    full_command: str


def resolve_mode(cfg: PipelineConfig, *, allow_demo: bool = True) -> Mode:
    """Decide what the run does (see module docstring); raises DataSourceError when there is nothing to run on."""
    if cfg.table_dir is not None:
        return Mode("tables", None, f"prebuilt tables in {cfg.table_dir}")
    choice = resolve_data(cfg.data, cfg.dataset, download=cfg.download, allow_demo=allow_demo,
                          force_demo=cfg.demo)
    if choice.kind == "demo":
        why = "--demo given" if cfg.demo else "no local CIFAR-10 found and no --data / --download given"
        return Mode("demo", choice, why)
    return Mode("full", choice, f"{cfg.dataset} from {choice.source}")


def _device(name: str) -> str:
    if name != "auto":
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


class _Clock:
    """Wall and process-CPU seconds since the last ``lap`` (logged per stage, so a slow step is visible)."""

    def __init__(self) -> None:
        self.t, self.c = time.perf_counter(), time.process_time()

    def lap(self) -> str:
        t, c = time.perf_counter(), time.process_time()
        out = f"{t - self.t:.1f} s wall, {c - self.c:.1f} s CPU"
        self.t, self.c = t, c
        return out


def class_names_for(dataset: str, source: Any) -> list[str]:
    """Class names in label order: built-in for CIFAR, folder names (``_`` → space) for image folders."""
    if dataset in ("cifar10", "cifar100"):
        return list(class_names(dataset))
    root = Path(source) / "train"
    if not root.is_dir():
        raise ConfigError(f"{source}: cannot read class names (no train/<class>/ folders)")
    return [d.name.replace("_", " ") for d in sorted(root.iterdir()) if d.is_dir()]


def obtain_tables(cfg: PipelineConfig, mode: Mode, run_dir: Path, *, log: Callable[[str], None] = say,
                  plan_masks: np.ndarray | None = None,
                  tables: tuple[OutcomeTable, OutcomeTable] | None = None
                  ) -> tuple[OutcomeTable, OutcomeTable, dict[str, Any]]:
    """``(calib, test, provenance)`` for the run: from ``table_dir`` (``tables``: already loaded from it), or data →
    backbone → cached tables (also exported to ``run_dir/tables``). ``cfg`` is the configuration as it runs
    (:func:`adainf_lab.config.as_run`)."""
    if mode.kind == "tables":
        calib, test = tables if tables is not None else load_split_tables(cfg.table_dir)
        return calib, test, {"tables": str(cfg.table_dir), "backbone": calib.meta.get("backbone"),
                             "checkpoint_sha256": calib.meta.get("checkpoint_sha256")}
    choice = mode.data
    demo = demo_settings(cfg.demo_scale) if mode.kind == "demo" else None
    clock = _Clock()
    train_x, train_y = load_images(choice.source, cfg.dataset, "train", download=choice.download)
    test_x, test_y = load_images(choice.source, cfg.dataset, "test", download=choice.download)
    log(f"[data] {cfg.dataset} from {choice.source}: {len(train_y)} train / {len(test_y)} test images "
        f"({clock.lap()})")
    if cfg.num_calib >= len(train_y):
        raise ConfigError(f"--num-calib {cfg.num_calib} leaves no training images (train split has {len(train_y)})")
    splits = make_splits(len(train_y), seed=cfg.seed, num_calib=cfg.num_calib)
    fit_idx = splits["fit"]
    if demo and demo["train_images"] is not None:
        fit_idx = evenly_spaced(fit_idx, demo["train_images"])
    calib_idx = evenly_spaced(splits["calib"], cfg.calib_limit)
    test_idx = evenly_spaced(np.arange(len(test_y), dtype=np.int64), cfg.test_limit)
    device = _device(cfg.device)
    names = class_names_for(cfg.dataset, choice.source)
    # held-out accuracy while training: calibration images (never trained on); a few hundred suffice in the demo
    eval_idx = evenly_spaced(splits["calib"], demo["eval_images"]) if demo else splits["calib"]
    model, weights_id, ckpt_path = obtain_backbone(cfg, train_x[fit_idx], train_y[fit_idx], run_dir,
                                                   width=cfg.width, epochs=cfg.train_epochs, device=device,
                                                   num_classes=len(names), class_names=names,
                                                   eval_images=train_x[eval_idx], eval_labels=train_y[eval_idx],
                                                   batch_size=demo["batch_size"] if demo else 128,
                                                   lr=demo["lr"] if demo else 0.1, log=log)
    log(f"[backbone] ready ({clock.lap()})")
    common = dict(checkpoint_sha256=weights_id, dataset=cfg.dataset, source_id=choice.source_id,
                  cache=cfg.table_cache or default_table_cache(), device=device, progress=show_progress(cfg.progress),
                  plan_masks=plan_masks, log=log, batch_size=256 if device == "cpu" else 1024)
    calib, calib_path, calib_reused = cached_table(model, train_x[calib_idx], train_y[calib_idx],
                                                   sample_index=calib_idx, split="calib", **common)
    test, test_path, test_reused = cached_table(model, test_x[test_idx], test_y[test_idx], sample_index=test_idx,
                                                split="test", **common)
    tables_dir = export_split_tables({"calib": calib_path, "test": test_path}, run_dir / "tables")
    log(f"[tables] ready in {tables_dir} ({clock.lap()})")
    return calib, test, {"checkpoint": str(ckpt_path) if ckpt_path else None, "checkpoint_sha256": weights_id,
                         "data": str(choice.source), "data_kind": choice.kind, "tables": str(tables_dir),
                         "cached_tables": {"calib": str(calib_path), "test": str(test_path)},
                         "tables_reused": {"calib": calib_reused, "test": test_reused},
                         "num_fit_images": int(len(fit_idx))}


def _scheduler_kwargs(cfg: PipelineConfig, run_dir: Path) -> dict[str, Any]:
    """Keyword arguments of ``cfg.algo``: the typed ``--scheduler.*`` options, then the run's settings where the
    scheduler takes them (env steps, epochs, λ, TensorBoard and checkpoint directories, progress bar)."""
    cls = scheduler_class(cfg.algo)
    kw = cfg.scheduler.kwargs_for(cfg.algo)
    settings: dict[str, Any] = {"total_timesteps": cfg.timesteps, "epochs": cfg.epochs, "lam": cfg.lam,
                                "tensorboard_log": str(run_dir / "tensorboard"),
                                "checkpoint_dir": str(run_dir / "checkpoints" / cfg.algo)}
    if not uses_sb3(cfg.algo):  # SB3's own bar needs `rich`; the torch learners use tqdm
        settings["progress"] = show_progress(cfg.progress)
    for k, v in settings.items():
        if v is not None and accepts(cls, k):
            kw.setdefault(k, v)
    return kw


def options_used(kw: dict[str, Any]) -> str:
    """The scheduler's options as the log states them: ``key=value`` of what was passed (paths left out), or that
    the scheduler's own defaults are used."""
    shown = {k: v for k, v in kw.items() if k not in ("tensorboard_log", "checkpoint_dir", "progress")}
    if not shown:
        return "the scheduler's default options"
    return "options " + ", ".join(f"{k}={v}" for k, v in sorted(shown.items()))


def checkpoint_step(path: Path) -> int | None:
    """The training step a learner's resumable checkpoint was written at (epochs for the torch learners, env steps
    for stable-baselines3), or None when there is none. Read with ``weights_only=True``; an unreadable checkpoint is
    left to the learner, which refuses it with the reason."""
    if not path.is_file():
        return None
    try:
        saved = safe_torch_load(path)
    except AdaInfError:
        return None
    for key in ("epoch", "timesteps", "step"):
        if isinstance(saved, dict) and isinstance(saved.get(key), (int, np.integer)):
            return int(saved[key])
    return None


def fit_scheduler(cfg: PipelineConfig, calib: OutcomeTable, run_dir: Path, writer: Any, *,
                  log: Callable[[str], None] = say):
    """Construct ``cfg.algo`` with the run's settings, fit it on the calibration table (TensorBoard curves under
    ``run_dir/tensorboard``, resumable checkpoints under ``run_dir/checkpoints``), save it; ``(scheduler, fit s)``."""
    kw = _scheduler_kwargs(cfg, run_dir)
    ckpt_dir = run_dir / "checkpoints" / cfg.algo
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    sched = make_scheduler(cfg.algo, **kw)
    fit_params = inspect.signature(sched.fit).parameters
    fit_kw: dict[str, Any] = {}
    if "callback" in fit_params:
        monitor = TrainingMonitor(writer, calib, lam=cfg.lam, seed=cfg.seed)
        fit_kw["callback"] = lambda step, metrics: monitor.log(step, sched, extra=metrics)
    if "checkpoint_dir" in fit_params:
        fit_kw["checkpoint_dir"] = ckpt_dir
    log(f"[{cfg.algo}] training on the calibration table ({calib.num_samples} samples, {calib.num_plans} plans; "
        f"{options_used(kw)})")
    step = checkpoint_step(ckpt_dir / CHECKPOINT_NAME)
    if step is not None:
        log(f"[{cfg.algo}] resuming from step {step} ({ckpt_dir / CHECKPOINT_NAME})")
    t0, clock = time.perf_counter(), _Clock()
    # Table learners run small MLPs on small batches: extra intra-op threads only add synchronisation (on a loaded
    # CPU they multiply the CPU time per env step). Restored afterwards.
    with single_thread():
        sched.fit(calib, seed=cfg.seed, **fit_kw)
    fit_s = time.perf_counter() - t0
    log(f"[{cfg.algo}] trained ({clock.lap()})")
    sched.save(run_dir / f"scheduler_{cfg.algo}.npz")
    return sched, fit_s


def evaluate_against_references(sched: Any, calib: OutcomeTable, test: OutcomeTable, budgets: Sequence[float], *,
                                seed: int, references: tuple[str, ...] = ("lut", "oracle")):
    """Bandit records (:mod:`agents.evaluation.harness` format) of ``sched`` and the references on the test table;
    the references are fitted on calib."""
    scheds = {sched.name: sched}
    for name in references:
        scheds[name] = make_scheduler(name).fit(calib, seed=seed)
    records = []
    for s in scheds.values():
        records += evaluate_bandit(s, test, budgets, seed=seed)
    return scheds, records


def _gaps(records: list[dict[str, Any]], learned: str, ref: str = "lut") -> dict[str, float]:
    acc = {(r["scheduler"], r["budget"]): r["accuracy"] for r in records if r["setting"] == "bandit"}
    return {f"{b:g}": round(100 * (acc[(learned, b)] - acc[(ref, b)]), 3)
            for (n, b) in acc if n == learned and (ref, b) in acc}


def demo_note() -> str:
    """What the demo runs on, for its banner."""
    p = demo_archive_path()
    size = p.stat().st_size / 1e6 if p.is_file() else 0.0
    return f"real CIFAR-10 JPG sample ({p.name}, {size:.1f} MB)"


def _demo_banner(mode: Mode, cfg: PipelineConfig, full_cmd: str, demo_description: str | None) -> str:
    bar = "=" * 100
    what = demo_description or (
        f"a narrow stochastic-depth ResNet18 (width {cfg.width}) trained for {cfg.train_epochs} epoch(s), its outcome "
        f"tables for all 256 plans, {cfg.algo} trained on the calibration table and evaluated against the "
        f"references on held-out test images")
    return (f"{bar}\nDEMO MODE ({mode.reason}).\nThis is a small but real end-to-end run on the {demo_note()} "
            f"shipped in the package: {what}.\nNumbers from the demo are NOT the paper-scale results. For the full "
            f"experiment run:\n    {full_cmd}\n{bar}")


def prepare_run(cfg: PipelineConfig, *, algo_label: str, allow_demo: bool = True, script: str = "ppo_resnet18.py",
                full_command: str | None = None, log: Callable[[str], None] = say,
                extra_config: dict[str, Any] | None = None, plan_masks: np.ndarray | None = None,
                demo_description: str | None = None) -> PreparedRun:
    """Resolve the mode, validate (prebuilt tables loaded and checked, a ``--checkpoint`` loaded into its
    architecture, the run-directory rule applied), then open the run directory (a new run's config.json: the
    configuration as it runs + git revision), print the demo banner, and get the tables."""
    mode = resolve_mode(cfg, allow_demo=allow_demo)
    cfg = as_run(cfg, mode.kind)
    backbone_label = cfg.backbone if mode.kind != "demo" else f"{cfg.backbone}-demo"
    full_cmd = full_command or (f"python experiments/{script} --data /path/to/cifar10   "
                                f"(a torchvision root, or an image-folder archive such as cifar10-jpg.tgz; "
                                f"add --download to fetch it), or start from tables: "
                                f"python experiments/{script} --table-dir reference")
    tables = load_split_tables(cfg.table_dir) if mode.kind == "tables" else None
    if cfg.checkpoint is not None and cfg.backbone != "clip_vit_b32":
        # a checkpoint that is unreadable, pickled or does not fit the architecture fails now, not after the data
        # were loaded and the run directory made (CLIP's fit needs the class names of the data: checked on load)
        load_backbone(cfg.backbone, cfg.checkpoint, width=cfg.width, device="cpu")
    extra = {"mode": mode.kind, "mode_reason": mode.reason,
             "demo_settings": demo_settings(cfg.demo_scale) if mode.kind == "demo" else None,
             **dict(extra_config or {})}
    opened = open_run_dir(cfg, backbone=backbone_label, algo=algo_label, seed=cfg.seed, out=cfg.out,
                          root=cfg.runs_root, resume=cfg.resume, overwrite=cfg.overwrite, extra=extra, log=log)
    run_dir = opened.path
    if mode.kind == "demo":
        log(_demo_banner(mode, cfg, full_cmd, demo_description))
    else:
        log(f"[run] mode: {mode.kind} ({mode.reason})")
    log(f"[run] run directory: {run_dir}{' (resumed: same arguments)' if opened.resumed else ''}")
    calib, test, prov = obtain_tables(cfg, mode, run_dir, log=log, plan_masks=plan_masks, tables=tables)
    return PreparedRun(mode, cfg, run_dir, calib, test, prov, full_cmd)


def _headline_plot(run: PreparedRun, records: list[dict[str, Any]], full_acc: float, title_note: str) -> Path:
    cfg, calib, test = run.cfg, run.calib, run.test
    demo_tag = ""
    if run.mode.kind == "demo":
        demo_tag = "DEMO — " if cfg.backbone == "clip_vit_b32" else f"DEMO (width-{cfg.width} net, small real sample) — "
    return plot_run(records, run.run_dir / "accuracy_cost_vs_budget.png", full_accuracy=full_acc, learned=cfg.algo,
                    title=f"{demo_tag}{title_note}{calib.meta.get('backbone')} on {calib.meta.get('dataset')} test "
                          f"({test.num_samples} images): {cfg.algo} vs lut (calib-chosen) and oracle (bound)")


def _hparam_metrics(records: list[dict[str, Any]], algo: str, gaps: dict[str, float], fit_s: float) -> dict:
    mine = [r for r in records if r["scheduler"] == algo]
    return {"mean_accuracy": float(np.mean([r["accuracy"] for r in mine])),
            "min_gap_to_lut_pt": min(gaps.values()) if gaps else float("nan"),
            "max_overrun_rate": max(r["overrun_rate"] for r in mine), "fit_seconds": fit_s}


def _reuse_command(run: PreparedRun, script: str) -> str | None:
    """The command that starts from this run's tables (None when the run started from a table directory)."""
    if run.mode.kind == "tables":
        return None
    return f"python experiments/{script} --table-dir {run.run_dir / 'tables'} --algo {run.cfg.algo}"


def run_pipeline(cfg: PipelineConfig, *, allow_demo: bool = True, script: str = "ppo_resnet18.py",
                 full_command: str | None = None, log: Callable[[str], None] = say,
                 plan_masks: np.ndarray | None = None, extra_config: dict[str, Any] | None = None,
                 title_note: str = "", demo_description: str | None = None) -> dict[str, Any]:
    """Run one experiment end to end (see module docstring); returns a summary dict (also ``run_summary.json``)."""
    t_start = time.perf_counter()
    run = prepare_run(cfg, algo_label=cfg.algo, allow_demo=allow_demo, script=script, full_command=full_command,
                      log=log, plan_masks=plan_masks, extra_config=extra_config, demo_description=demo_description)
    cfg, run_dir, calib, test = run.cfg, run.run_dir, run.calib, run.test
    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
    try:
        sched, fit_s = fit_scheduler(cfg, calib, run_dir, writer, log=log)
        scheds, records = evaluate_against_references(sched, calib, test, cfg.budgets, seed=cfg.seed)
        for r in records:
            r["fit_s"] = round(fit_s, 3) if r["scheduler"] == cfg.algo else None
        write_results(records, run_dir, plots=cfg.plots)  # results.json/.csv, summary.*, accuracy PNGs
        full_acc = float(test.correct[:, test.full_plan()].mean())
        figure = _headline_plot(run, records, full_acc, title_note) if cfg.plots else None
        log_test_records(writer, scheds, test, records, lam=cfg.lam)
        gaps = _gaps(records, cfg.algo)
        log_hparams(writer, config_to_dict(cfg), _hparam_metrics(records, cfg.algo, gaps, fit_s))
    finally:
        writer.close()
    wall = time.perf_counter() - t_start
    log(f"\n[results] test accuracy (%) per budget — {cfg.algo} vs lut (chosen on calib) and oracle (a bound):\n"
        f"{format_comparison(records, cfg.algo)}")
    reuse = _reuse_command(run, script)
    summary = {"mode": run.mode.kind, "run_dir": str(run_dir), "wall_s": round(wall, 2), "fit_s": round(fit_s, 2),
               "algo": cfg.algo, "gap_to_lut_pt": gaps, "full_model_test_accuracy": full_acc,
               "calib_samples": calib.num_samples, "test_samples": test.num_samples, "num_plans": calib.num_plans,
               "provenance": run.provenance, "files": sorted(p.name for p in run_dir.iterdir()),
               "figure": str(figure) if figure else None, "reuse_tables_command": reuse}
    atomic_write_json(run_dir / "run_summary.json", summary)
    log(f"[run] done in {wall:.1f} s wall ({time.process_time():.0f} s CPU in this process) → "
        f"{run_dir}/results.json")
    if reuse:
        log(f"[run] reuse these tables (no backbone, no table building; any --algo): {reuse}")
    if run.mode.kind == "demo":
        log(f"[run] that was the DEMO. Full experiment: {run.full_command}")
    return summary


def pipeline_main(argv: Sequence[str] | None, *, script: str, config_cls: type[PipelineConfig] = PipelineConfig,
                  **kwargs: Any) -> dict[str, Any]:
    """Parse ``argv`` into ``config_cls`` (ConfigError on a bad argument) and :func:`run_pipeline` it."""
    return run_pipeline(parse_config(config_cls, argv, raise_errors=True), script=script, **kwargs)
