"""The end-to-end experiment pipeline behind ``experiments/ppo_resnet18.py`` and friends.

    data → backbone (trained with stochastic depth, or a checkpoint) → calibration + test outcome tables (cached)
         → scheduler fitted on calibration → evaluated on test against ``lut`` and ``oracle`` (a bound)
         → results.json / CSV / PNGs / TensorBoard events / config.json in the run directory

or, with ``table_dir``, straight from prebuilt tables (project format or ``../shared/reference``).

Modes (:func:`resolve_mode`):

* ``tables`` — ``table_dir`` given: no data, no backbone;
* ``full`` — real data found (``data`` given, ``download``, or a torchvision copy in a default location, see
  :mod:`adainf_lab.data`): train/load the backbone on the full dataset;
* ``demo`` — no data and no network needed: the small real CIFAR-10 JPG sample shipped in the package
  (``adainf_env/demo_data``), a narrow ResNet18 trained on it for about a minute, all plans tabled, the scheduler
  fitted and evaluated — a complete, real, small run (~3 min on 2 CPU cores). ``demo_scale`` < 1 shrinks it
  further (tests).

Scientific hygiene: the test split never trains the scheduler, never picks a ``lut`` plan and never selects a model;
``oracle`` reads test labels and is reported as a bound.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from adainf_env.errors import ConfigError
from adainf_env.fileio import atomic_write_json
from adainf_env.outcomes import OutcomeTable
from agents.evaluation.harness import BANDIT_BUDGETS

__all__ = ["PipelineConfig", "resolve_mode", "obtain_tables", "prepare_run", "fit_scheduler", "evaluate_against_references",
           "run_pipeline", "DEMO", "demo_settings"]

#: The demo at ``demo_scale = 1`` (≈ 3 min on 2 CPU cores): a narrow ResNet18 (width 8 = 1/64 of the MACs of the
#: reference width 64; the same 8 skippable blocks and 256 plans), trained with stochastic depth for 6 epochs on the
#: sample's train images not held out for calibration (batch 32, lr 0.05: the most held-out accuracy per CPU-second
#: among the settings tried here — ~35 % after 6 epochs on 4,400 images vs ~21 % for width 16 / batch 128 / 3 epochs at
#: 3× the CPU time); tables over ``calib_images`` held-out train images and ``test_images`` test images.
DEMO: dict[str, Any] = {"width": 8, "train_epochs": 6, "batch_size": 32, "lr": 0.05, "calib_images": 1000,
                        "test_images": 1000, "timesteps": 100_000}


def demo_settings(scale: float) -> dict[str, Any]:
    """Demo sizes at ``scale`` (1 = the real demo; tests use ~0.03). Epochs and images shrink with the scale."""
    if not 0 < scale <= 1:
        raise ConfigError(f"--demo-scale must be in (0, 1], got {scale}")
    return {
        "width": DEMO["width"],
        "train_epochs": max(1, int(round(DEMO["train_epochs"] * scale))),
        "batch_size": DEMO["batch_size"],
        "lr": DEMO["lr"],
        "calib_images": max(64, int(DEMO["calib_images"] * scale)),
        "test_images": max(64, int(DEMO["test_images"] * scale)),
        "train_images": None if scale >= 1 else max(64, int(4000 * scale)),
        "eval_images": max(32, int(300 * scale)),
        "timesteps": max(2048, int(DEMO["timesteps"] * scale)),
    }


def say(msg: str) -> None:
    """Print a progress line immediately (also when stdout is a file or a pipe)."""
    print(msg, flush=True)


def _h(text: str, **kw: Any) -> Any:
    return dataclasses.field(metadata={"help": text}, **kw)


@dataclasses.dataclass
class PipelineConfig:
    """Train a budget-aware scheduler end to end and evaluate it against the lut and oracle references."""

    algo: str = _h("scheduler to train (registry name: ppo, a2c, dqn, maskable_ppo, reinforce, blockdrop, hinge)",
                   default="ppo")
    backbone: str = _h("backbone (resnet18_cifar, resnet32_cifar)", default="resnet18_cifar")
    dataset: str = _h("dataset: cifar10, cifar100 (torchvision root or archive), imagefolder / imagenet (a local "
                      "<root>/train|val/<class>/ copy)", default="cifar10")
    table_dir: Path | None = _h("start from prebuilt tables: a directory with table_calib.npz and table_test.npz "
                                "(project format or ../shared/reference)", default=None)
    data: Path | None = _h("data: a torchvision root holding the dataset or an image-folder archive (.tgz); default: "
                           "search $ADAINF_DATA, ./data, ~/data, the cache; if none, run the demo", default=None)
    download: bool = _h("let torchvision download the dataset (needs network)", default=False)
    checkpoint: Path | None = _h("backbone checkpoint (state dict) instead of training one", default=None)
    out: Path | None = _h("run directory (default: a new runs/<backbone>__<algo>__<seed>__<time>)", default=None)
    runs_root: Path = _h("parent of new run directories", default=Path("runs"))
    table_cache: Path | None = _h("outcome-table cache (default $ADAINF_CACHE/tables or ~/.cache/adainf/tables)",
                                  default=None)
    seed: int = _h("seed of the splits, the backbone training and the scheduler", default=0)
    budgets: tuple[float, ...] = _h("test budgets (fractions of the full model's MACs)", default=BANDIT_BUDGETS)
    lam: float = _h("λ of the reward 1[correct] − λ·max(0, cost − budget) (learners that use it)", default=1.0)
    timesteps: int | None = _h("RL env steps for SB3 learners (default: the learner's tuned default)", default=None)
    epochs: int | None = _h("training epochs of torch learners (reinforce, hinge, blockdrop)", default=None)
    scheduler_kwargs: str = _h('extra JSON keyword arguments for the scheduler, e.g. \'{"n_envs": 128}\'',
                               default="{}")
    # backbone training (full mode)
    train_epochs: int = _h("backbone training epochs (full mode; stochastic depth)", default=60)
    width: int = _h("backbone width (64 = the reference ResNet18; the demo uses 16)", default=64)
    final_survival: float = _h("stochastic depth: survival probability of the last block (linear decay)",
                               default=0.5)
    num_calib: int = _h("train images held out as the calibration split (full mode)", default=10_000)
    calib_limit: int | None = _h("use only N calibration images (of the seeded calibration split) for the table",
                                 default=None)
    test_limit: int | None = _h("use only N evenly spaced test images for the table", default=None)
    device: str = _h("torch device for backbone training / table building (auto = cuda if available)",
                     default="auto")
    demo: bool = _h("run the offline demo on the shipped sample even if data is available", default=False)
    demo_scale: float = _h("shrink the demo (1 = the real ~3-min demo; tests use ~0.05)", default=1.0)
    plots: bool = _h("write PNGs", default=True)
    progress: bool = _h("progress bars", default=True)

    def __post_init__(self) -> None:
        from agents.base import check_budgets
        from agents.registry import scheduler_class

        from adainf_env.data import DATASETS

        scheduler_class(self.algo)  # unknown names fail before any work
        if self.dataset not in DATASETS:
            raise ConfigError(f"--dataset {self.dataset!r}: expected one of {', '.join(DATASETS)}")
        check_budgets(np.asarray(self.budgets, dtype=np.float64))
        if not self.budgets:
            raise ConfigError("--budgets is empty")
        if self.lam < 0:
            raise ConfigError(f"--lam must be ≥ 0, got {self.lam}")
        for k in ("timesteps", "epochs", "calib_limit", "test_limit"):
            v = getattr(self, k)
            if v is not None and v < 1:
                raise ConfigError(f"--{k.replace('_', '-')} must be ≥ 1, got {v}")
        if self.train_epochs < 1 or self.width < 1 or self.num_calib < 1:
            raise ConfigError("--train-epochs, --width and --num-calib must be ≥ 1")
        if not 0 < self.final_survival <= 1:
            raise ConfigError(f"--final-survival must be in (0, 1], got {self.final_survival}")
        demo_settings(self.demo_scale)
        try:
            kw = json.loads(self.scheduler_kwargs)
        except ValueError as e:
            raise ConfigError(f"--scheduler-kwargs is not valid JSON: {e}") from None
        if not isinstance(kw, dict):
            raise ConfigError("--scheduler-kwargs must be a JSON object")
        if self.table_dir is not None and (self.data is not None or self.checkpoint is not None or self.demo):
            raise ConfigError("--table-dir starts from prebuilt tables: it cannot be combined with --data, "
                              "--checkpoint or --demo")


@dataclasses.dataclass
class Mode:
    kind: str  # "tables" | "full" | "demo"
    data: Any = None  # adainf_lab.data.DataChoice (full / demo)
    reason: str = ""


def resolve_mode(cfg: PipelineConfig, *, allow_demo: bool = True) -> Mode:
    """Decide what the run does (see module docstring); raises DataSourceError when there is nothing to run on."""
    from adainf_lab.data import resolve_data

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
    import torch

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


def _spread(indices: np.ndarray, n: int | None) -> np.ndarray:
    """``n`` evenly spaced entries of sorted ``indices`` (all when None or ≥ len). Subsets are spread out because
    image-folder archives are sorted by class: "the first N" of a split would hold one or two classes."""
    indices = np.asarray(indices, dtype=np.int64)
    if n is None or n >= len(indices):
        return indices
    return indices[np.unique(np.linspace(0, len(indices) - 1, int(n)).round().astype(np.int64))]


def obtain_tables(cfg: PipelineConfig, mode: Mode, run_dir: Path, *, log: Callable[[str], None] = say,
                  plan_masks: np.ndarray | None = None) -> tuple[OutcomeTable, OutcomeTable, dict[str, Any]]:
    """``(calib, test, provenance)`` for the run: from ``table_dir``, or data → backbone → cached tables."""
    from adainf_env.data import load_images, make_splits
    from adainf_lab.backbone import obtain_backbone
    from adainf_lab.tables import cached_table, default_table_cache, tables_from_dir

    if mode.kind == "tables":
        calib, test = tables_from_dir(cfg.table_dir)
        return calib, test, {"tables": str(cfg.table_dir), "backbone": calib.meta.get("backbone"),
                             "checkpoint_sha256": calib.meta.get("checkpoint_sha256")}
    choice = mode.data
    demo = demo_settings(cfg.demo_scale) if mode.kind == "demo" else None
    clock = _Clock()
    train_x, train_y = load_images(choice.source, cfg.dataset, "train", download=choice.download)
    test_x, test_y = load_images(choice.source, cfg.dataset, "test", download=choice.download)
    log(f"[data] {cfg.dataset} from {choice.source}: {len(train_y)} train / {len(test_y)} test images "
        f"({clock.lap()})")
    num_calib = demo["calib_images"] if demo else cfg.num_calib
    if num_calib >= len(train_y):
        raise ConfigError(f"--num-calib {num_calib} leaves no training images (train split has {len(train_y)})")
    splits = make_splits(len(train_y), seed=cfg.seed, num_calib=num_calib)
    fit_idx = splits["fit"]
    if demo and demo["train_images"] is not None:
        fit_idx = _spread(fit_idx, demo["train_images"])
    calib_idx = _spread(splits["calib"], cfg.calib_limit)
    test_n = min(len(test_y), demo["test_images"] if demo else len(test_y), cfg.test_limit or len(test_y))
    test_idx = _spread(np.arange(len(test_y), dtype=np.int64), test_n)
    device = _device(cfg.device)
    names = class_names_for(cfg.dataset, choice.source)
    # held-out accuracy while training: calibration images (never trained on); a few hundred suffice in the demo
    eval_idx = _spread(splits["calib"], demo["eval_images"]) if demo else splits["calib"]
    model, weights_id, ckpt_path = obtain_backbone(cfg, train_x[fit_idx], train_y[fit_idx], run_dir,
                                                   width=demo["width"] if demo else cfg.width,
                                                   epochs=demo["train_epochs"] if demo else cfg.train_epochs,
                                                   device=device, num_classes=len(names), class_names=names,
                                                   eval_images=train_x[eval_idx], eval_labels=train_y[eval_idx],
                                                   batch_size=demo["batch_size"] if demo else 128,
                                                   lr=demo["lr"] if demo else 0.1, log=log)
    sha = weights_id
    log(f"[backbone] ready ({clock.lap()})")
    cache = cfg.table_cache or default_table_cache()
    common = dict(checkpoint_sha256=sha, dataset=cfg.dataset, source_id=choice.source_id, cache=cache,
                  device=device, progress=cfg.progress, plan_masks=plan_masks, log=log,
                  batch_size=256 if device == "cpu" else 1024)
    calib, calib_path, calib_reused = cached_table(model, train_x[calib_idx], train_y[calib_idx],
                                                   sample_index=calib_idx, split="calib", **common)
    test, test_path, test_reused = cached_table(model, test_x[test_idx], test_y[test_idx], sample_index=test_idx,
                                                split="test", **common)
    log(f"[tables] ready ({clock.lap()})")
    return calib, test, {"checkpoint": str(ckpt_path) if ckpt_path else None, "checkpoint_sha256": sha, "data": str(choice.source),
                         "data_kind": choice.kind, "calib_table": str(calib_path), "test_table": str(test_path),
                         "tables_reused": {"calib": calib_reused, "test": test_reused},
                         "num_fit_images": int(len(fit_idx))}


def class_names_for(dataset: str, source: Any) -> list[str]:
    """Class names in label order: built-in for CIFAR, folder names (``_`` → space) for image folders."""
    from adainf_env.data import class_names

    if dataset in ("cifar10", "cifar100"):
        return list(class_names(dataset))
    root = Path(source) / "train"
    if not root.is_dir():
        raise ConfigError(f"{source}: cannot read class names (no train/<class>/ folders)")
    return [d.name.replace("_", " ") for d in sorted(root.iterdir()) if d.is_dir()]


def _accepts(cls: type, name: str) -> bool:
    """Whether ``cls(name=...)`` is accepted, following ``**kwargs`` pass-through to base classes."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters
        except (TypeError, ValueError):
            return False
        if name in params:
            return True
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return False
    return False


def fit_scheduler(cfg: PipelineConfig, calib: OutcomeTable, run_dir: Path, writer: Any, *,
                  timesteps: int | None = None, log: Callable[[str], None] = say):
    """Construct ``cfg.algo`` with the run's settings, fit it on the calibration table (TensorBoard curves under
    ``run_dir/tensorboard``, resumable checkpoints under ``run_dir/checkpoints``), save it, return it."""
    from adainf_lab.report import TrainingMonitor
    from agents.registry import make_scheduler, scheduler_class

    cls = scheduler_class(cfg.algo)
    kw: dict[str, Any] = dict(json.loads(cfg.scheduler_kwargs))
    steps = cfg.timesteps or timesteps
    tb_dir = run_dir / "tensorboard"
    ckpt_dir = run_dir / "checkpoints" / cfg.algo
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if steps is not None and _accepts(cls, "total_timesteps"):
        kw.setdefault("total_timesteps", int(steps))
    if cfg.epochs is not None and _accepts(cls, "epochs"):
        kw.setdefault("epochs", int(cfg.epochs))
    if _accepts(cls, "lam"):
        kw.setdefault("lam", cfg.lam)
    if _accepts(cls, "tensorboard_log"):
        kw.setdefault("tensorboard_log", str(tb_dir))
    if _accepts(cls, "checkpoint_dir"):
        kw.setdefault("checkpoint_dir", str(ckpt_dir))
    if _accepts(cls, "progress") and cfg.algo not in ("ppo", "a2c", "dqn", "maskable_ppo"):
        kw.setdefault("progress", cfg.progress)  # SB3's own bar needs `rich`; the torch learners use tqdm
    sched = make_scheduler(cfg.algo, **kw)
    fit_params = inspect.signature(sched.fit).parameters
    fit_kw: dict[str, Any] = {}
    if "callback" in fit_params:
        monitor = TrainingMonitor(writer, calib, lam=cfg.lam, seed=cfg.seed)
        fit_kw["callback"] = lambda step, metrics: monitor.log(step, sched, extra=metrics)
    if "checkpoint_dir" in fit_params:
        fit_kw["checkpoint_dir"] = ckpt_dir
    what = f"{kw['total_timesteps']} env steps" if "total_timesteps" in kw else "default settings"
    log(f"[{cfg.algo}] training on the calibration table ({calib.num_samples} samples, {calib.num_plans} plans, "
        f"{what})")
    import torch

    t0, clock = time.perf_counter(), _Clock()
    threads = torch.get_num_threads()
    # Table learners run small MLPs on small batches: intra-op threads only add synchronisation (measured here: PPO
    # on a loaded 2-core machine used several times more CPU per env step with 2 threads than with 1). Restored afterwards.
    torch.set_num_threads(1)
    try:
        sched.fit(calib, seed=cfg.seed, **fit_kw)
    finally:
        torch.set_num_threads(threads)
    fit_s = time.perf_counter() - t0
    log(f"[{cfg.algo}] trained ({clock.lap()})")
    sched.save(run_dir / f"scheduler_{cfg.algo}.npz")
    return sched, fit_s


def evaluate_against_references(sched: Any, calib: OutcomeTable, test: OutcomeTable, budgets: tuple[float, ...], *,
                                seed: int, references: tuple[str, ...] = ("lut", "oracle")):
    """Bandit records (issue-4 format) of ``sched`` and the references on the test table; references fit on calib."""
    from agents.evaluation.harness import evaluate_bandit
    from agents.registry import make_scheduler

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


def prepare_run(cfg: PipelineConfig, *, algo_label: str, allow_demo: bool = True, script: str = "ppo_resnet18.py",
                full_command: str | None = None, log: Callable[[str], None] = say,
                extra_config: dict[str, Any] | None = None, plan_masks: np.ndarray | None = None,
                demo_description: str | None = None):
    """Resolve the mode, create the run directory (config.json + git revision), print the demo banner, and get the
    calibration and test tables. Returns ``(mode, run_dir, calib, test, provenance, full_command)``."""
    from adainf_lab.rundir import make_run_dir, save_config

    mode = resolve_mode(cfg, allow_demo=allow_demo)
    if mode.kind == "tables":
        from adainf_env.outcomes import find_split_tables

        find_split_tables(cfg.table_dir)  # a wrong --table-dir fails before a run directory is made
    backbone_label = cfg.backbone if mode.kind != "demo" else f"{cfg.backbone}-demo"
    run_dir = make_run_dir(backbone=backbone_label, algo=algo_label, seed=cfg.seed, out=cfg.out, root=cfg.runs_root)
    full_cmd = full_command or (f"python experiments/{script} --data /path/to/cifar10   "
                                f"(a torchvision root, or an image-folder archive such as cifar10-jpg.tgz; "
                                f"add --download to fetch it), or start from tables: "
                                f"python experiments/{script} --table-dir DIR")
    if mode.kind == "demo":
        bar = "=" * 100
        what = demo_description or (
            f"a narrow stochastic-depth ResNet18 (width {DEMO['width']}) trained for about a minute, its outcome "
            f"tables for all 256 plans, {algo_label} trained on the calibration table and evaluated against the "
            f"references on held-out test images")
        log(f"{bar}\nDEMO MODE ({mode.reason}).\nThis is a small but real end-to-end run on the "
            f"{len_demo_note()} shipped in the package: {what}.\n"
            f"Numbers from the demo are NOT the paper-scale results. For the full experiment run:\n    {full_cmd}"
            f"\n{bar}")
    else:
        log(f"[run] mode: {mode.kind} ({mode.reason})")
    log(f"[run] run directory: {run_dir}")
    save_config(run_dir, cfg, extra={"mode": mode.kind, "mode_reason": mode.reason,
                                     "demo_settings": demo_settings(cfg.demo_scale) if mode.kind == "demo" else None,
                                     **dict(extra_config or {})})
    calib, test, prov = obtain_tables(cfg, mode, run_dir, log=log, plan_masks=plan_masks)
    return mode, run_dir, calib, test, prov, full_cmd


def run_pipeline(cfg: PipelineConfig, *, allow_demo: bool = True, script: str = "ppo_resnet18.py",
                 full_command: str | None = None, log: Callable[[str], None] = say,
                 plan_masks: np.ndarray | None = None, extra_config: dict[str, Any] | None = None,
                 title_note: str = "", demo_description: str | None = None) -> dict[str, Any]:
    """Run one experiment end to end (see module docstring); returns a summary dict (also ``run_summary.json``)."""
    from torch.utils.tensorboard import SummaryWriter

    from adainf_lab.cli import config_to_dict
    from agents.evaluation.harness import write_results
    from adainf_lab.report import format_comparison, log_hparams, log_test_records, plot_run

    t_start = time.perf_counter()
    mode, run_dir, calib, test, prov, full_cmd = prepare_run(cfg, algo_label=cfg.algo, allow_demo=allow_demo,
                                                             script=script, full_command=full_command, log=log,
                                                             plan_masks=plan_masks, extra_config=extra_config,
                                                             demo_description=demo_description)
    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
    try:
        sched, fit_s = fit_scheduler(cfg, calib, run_dir, writer, log=log,
                                     timesteps=demo_settings(cfg.demo_scale)["timesteps"] if mode.kind == "demo"
                                     else None)
        scheds, records = evaluate_against_references(sched, calib, test, cfg.budgets, seed=cfg.seed)
        for r in records:
            r["fit_s"] = round(fit_s, 3) if r["scheduler"] == cfg.algo else None
        write_results(records, run_dir, plots=cfg.plots)  # results.json/.csv, summary.*, accuracy PNGs
        full_acc = float(test.correct[:, test.full_plan()].mean())
        figure = None
        demo_tag = ""
        if mode.kind == "demo":
            demo_tag = ("DEMO — " if cfg.backbone == "clip_vit_b32" else
                        f"DEMO (width-{DEMO['width']} net, small real sample) — ")
        if cfg.plots:
            figure = plot_run(records, run_dir / "accuracy_cost_vs_budget.png", full_accuracy=full_acc,
                              learned=cfg.algo, title=f"{demo_tag}{title_note}"
                                    f"{calib.meta.get('backbone')} on "
                                    f"{calib.meta.get('dataset')} test ({test.num_samples} images): {cfg.algo} vs "
                                    f"lut (calib-chosen) and oracle (bound)")
        log_test_records(writer, scheds, test, records, lam=cfg.lam)
        gaps = _gaps(records, cfg.algo)
        hp_metrics = {"mean_accuracy": float(np.mean([r["accuracy"] for r in records if r["scheduler"] == cfg.algo])),
                      "min_gap_to_lut_pt": min(gaps.values()) if gaps else float("nan"),
                      "max_overrun_rate": max(r["overrun_rate"] for r in records if r["scheduler"] == cfg.algo),
                      "fit_seconds": fit_s}
        log_hparams(writer, config_to_dict(cfg), hp_metrics)
    finally:
        writer.close()
    wall = time.perf_counter() - t_start
    table_txt = format_comparison(records, cfg.algo)
    log(f"\n[results] test accuracy (%) per budget — {cfg.algo} vs lut (chosen on calib) and oracle (a bound):\n"
        f"{table_txt}")
    summary = {"mode": mode.kind, "run_dir": str(run_dir), "wall_s": round(wall, 2), "fit_s": round(fit_s, 2),
               "algo": cfg.algo, "gap_to_lut_pt": gaps, "full_model_test_accuracy": full_acc,
               "calib_samples": calib.num_samples, "test_samples": test.num_samples, "num_plans": calib.num_plans,
               "provenance": prov, "files": sorted(p.name for p in run_dir.iterdir()),
               "figure": str(figure) if figure else None}
    atomic_write_json(run_dir / "run_summary.json", summary)
    log(f"[run] done in {wall:.1f} s wall ({time.process_time():.0f} s CPU in this process) → "
        f"{run_dir}/results.json")
    if mode.kind == "demo":
        log(f"[run] that was the DEMO. Full experiment: {full_cmd}")
    return summary


def len_demo_note() -> str:
    from adainf_env.data import demo_archive_path

    p = demo_archive_path()
    size = p.stat().st_size / 1e6 if p.is_file() else 0.0
    return f"real CIFAR-10 JPG sample ({p.name}, {size:.1f} MB)"
