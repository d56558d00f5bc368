"""The configuration of an end-to-end experiment run (:class:`PipelineConfig`) and the sizes of the offline demo.

Every field is a command-line option of the scripts built on it (``experiments/ppo_resnet18.py``,
``train_scheduler.py``, ``shifting_budgets.py``, ``resnet32_cifar100.py``, ``clip_vitb.py``; see
:mod:`adainf_lab.cli`). Validation runs in ``__post_init__``, so a bad value — including a ``--checkpoint``,
``--data`` or ``--table-dir`` that does not exist, a negative seed, a λ that is not a finite number ≥ 0, or an ``--out``
that would lose a run (:mod:`adainf_lab.rundir`) — stops the script before any work and before a run directory is
made.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np

from adainf_env.errors import ConfigError
from adainf_lab.rundir import check_run_flags
from adainf_lab.scheduler_options import SchedulerName, SchedulerOptions
from adainf_lab.tables import resolve_table_dir
from agents.base import check_budgets
from agents.evaluation.harness import BANDIT_BUDGETS
from agents.registry import check_names

__all__ = ["PipelineConfig", "DEMO", "demo_settings", "as_run", "show_progress", "check_seed"]

#: The demo at ``demo_scale = 1``: a narrow ResNet18 (width 8 = 1/64 of the MACs of the reference width 64; the same
#: 8 skippable blocks and 256 plans), trained with stochastic depth for 6 epochs on the sample's train images not held
#: out for calibration (batch 32, lr 0.05: the most held-out accuracy per CPU-second among the settings tried — about
#: 35 % after 6 epochs, against about 21 % for width 16 / batch 128 / 3 epochs at three times the compute); tables over
#: ``calib_images`` held-out train images and ``test_images`` test images.
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


def show_progress(requested: bool) -> bool:
    """Progress bars only when asked for and stderr is a terminal (a log file would fill with ``\\r`` updates)."""
    return bool(requested) and sys.stderr.isatty()


def _h(text: str, **kw: Any) -> Any:
    return dataclasses.field(metadata={"help": text}, **kw)


def check_seed(seed: int, what: str = "--seed") -> int:
    """A seed numpy and torch accept: an integer in [0, 2**32 − 1] (numpy refuses negative seeds with a traceback)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 32:
        raise ConfigError(f"{what} must be an integer in [0, 2**32 − 1], got {seed!r}")
    return int(seed)


def _check_positive(cfg: Any, names: tuple[str, ...]) -> None:
    for k in names:
        v = getattr(cfg, k)
        if v is not None and v < 1:
            raise ConfigError(f"--{k.replace('_', '-')} must be ≥ 1, got {v}")


@dataclasses.dataclass
class PipelineConfig:
    """Train a budget-aware scheduler end to end and evaluate it against the lut and oracle references."""

    algo: SchedulerName = _h("scheduler to train", default="ppo")
    backbone: Literal["resnet18_cifar", "resnet32_cifar", "clip_vit_b32"] = _h("backbone", default="resnet18_cifar")
    dataset: Literal["cifar10", "cifar100", "imagenet", "imagefolder"] = _h(
        "dataset: cifar10 / cifar100 (torchvision root or archive), imagefolder / imagenet (a local "
        "<root>/train|val/<class>/ copy)", default="cifar10")
    table_dir: Path | None = _h("start from prebuilt tables: a directory with table_calib.npz and table_test.npz, or "
                                "'reference' for the reference tables shipped in the package", default=None)
    data: Path | None = _h("data: a torchvision root holding the dataset or an image-folder archive (.tgz); default: "
                           "search $ADAINF_DATA, ./data, ~/data, the cache; if none, run the demo", default=None)
    download: bool = _h("let torchvision download the dataset (needs network)", default=False)
    checkpoint: Path | None = _h("backbone checkpoint (state dict) instead of training one", default=None)
    out: Path | None = _h("run directory (None: a new runs/<backbone>__<algo>__<seed>__<time>); an existing one "
                          "needs --resume or --overwrite", default=None)
    resume: bool = _h("continue the run in --out (same arguments; refused otherwise) from what it keeps", default=False)
    overwrite: bool = _h("replace the run in --out: the old directory is moved aside whole to <out>.replaced-<time>",
                         default=False)
    runs_root: Path = _h("parent of new run directories", default=Path("runs"))
    table_cache: Path | None = _h("outcome-table cache (None: $ADAINF_CACHE/tables or ~/.cache/adainf/tables)",
                                  default=None)
    seed: int = _h("seed of the splits, the backbone training and the scheduler", default=0)
    budgets: tuple[float, ...] = _h("test budgets (fractions of the full model's MACs)", default=BANDIT_BUDGETS)
    lam: float = _h("λ of the reward 1[correct] − λ·max(0, cost − budget) (learners that use it)", default=1.0)
    timesteps: int | None = _h("RL env steps for SB3 learners (default: the learner's tuned default)", default=None)
    epochs: int | None = _h("training epochs of torch learners (reinforce, hinge, blockdrop, lagrangian)",
                            default=None)
    scheduler: SchedulerOptions = _h("scheduler options", default_factory=SchedulerOptions)
    train_epochs: int = _h("backbone training epochs (full mode; stochastic depth)", default=60)
    width: int = _h(f"backbone width (64 = the reference ResNet18; the demo uses {DEMO['width']})", default=64)
    final_survival: float = _h("stochastic depth: survival probability of the last block (linear decay)",
                               default=0.5)
    num_calib: int = _h("train images held out as the calibration split (full mode)", default=10_000)
    calib_limit: int | None = _h("use only N calibration images (of the seeded calibration split) for the table",
                                 default=None)
    test_limit: int | None = _h("use only N evenly spaced test images for the table", default=None)
    device: str = _h("torch device for backbone training / table building: auto (cuda if available), cpu, cuda:0",
                     default="auto")
    demo: bool = _h("run the offline demo on the shipped sample even if data is available", default=False)
    demo_scale: float = _h("shrink the demo (1 = the full demo; tests use ~0.03)", default=1.0)
    plots: bool = _h("write PNGs", default=True)
    progress: bool = _h("progress bars (drawn only when stderr is a terminal)", default=True)

    def __post_init__(self) -> None:
        self.algo = check_names(self.algo, "plan", option="--algo")[0]  # unknown names fail here (trpo → TRPO)
        self.scheduler.kwargs_for(self.algo)  # options the scheduler does not take fail here
        if not self.budgets:
            raise ConfigError("--budgets is empty")
        check_budgets(np.asarray(self.budgets, dtype=np.float64))
        if not (0 <= self.lam < float("inf")):
            raise ConfigError(f"--lam must be a finite number ≥ 0, got {self.lam}")
        check_seed(self.seed)
        _check_positive(self, ("timesteps", "epochs", "calib_limit", "test_limit", "train_epochs", "width",
                               "num_calib"))
        if not 0 < self.final_survival <= 1:
            raise ConfigError(f"--final-survival must be in (0, 1], got {self.final_survival}")
        demo_settings(self.demo_scale)
        self._check_paths()

    def _check_paths(self) -> None:
        if self.table_dir is not None:
            if self.data is not None or self.checkpoint is not None or self.demo:
                raise ConfigError("--table-dir starts from prebuilt tables: it cannot be combined with --data, "
                                  "--checkpoint or --demo")
            self.table_dir = resolve_table_dir(self.table_dir)
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise ConfigError(f"--checkpoint {self.checkpoint}: no such file")
        if self.data is not None and not self.download and not Path(self.data).expanduser().exists():
            raise ConfigError(f"--data {self.data}: no such file or directory (give an image-folder archive, a "
                              f"torchvision root, or add --download)")
        check_run_flags(self.out, resume=self.resume, overwrite=self.overwrite)


def as_run(cfg: PipelineConfig, mode_kind: str) -> PipelineConfig:
    """The configuration that actually runs in ``mode_kind``: for the demo, its backbone width, epochs, calibration
    and test sizes and env steps replace the full-run values (so config.json and the TensorBoard hparams record
    what ran) and ``demo`` is True; otherwise ``cfg`` itself."""
    if mode_kind != "demo":
        return cfg
    d = demo_settings(cfg.demo_scale)
    return dataclasses.replace(cfg, demo=True, width=d["width"], train_epochs=d["train_epochs"],
                               num_calib=d["calib_images"], timesteps=cfg.timesteps or d["timesteps"],
                               test_limit=min(d["test_images"], cfg.test_limit or d["test_images"]))
