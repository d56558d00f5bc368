"""Train resnet18_cifar / resnet32_cifar with stochastic depth on CIFAR-10/100 (resumable).

    python experiments/train_backbone.py --backbone resnet18_cifar --data ../shared/data/cifar10-jpg.tgz \
        --calib-indices ../shared/reference/calib_indices.npy --epochs 180 --out runs/r18

Trains on the *fit* split only (train minus the calibration split: seeded, or the reference calib indices), reports
held-out accuracy on the calibration split per epoch and test accuracy at the end. Writes to ``--out``:
``checkpoint.pt`` (state dict, loadable with ``adainf_env.load_backbone(name, checkpoint=...)``), ``resume.pt``
(every epoch), ``metrics.json``, ``config.json`` (config + git revision). Re-running with the same arguments and
``--out DIR --resume`` resumes from the last finished epoch (other arguments are refused before anything is written);
an existing ``--out`` without ``--resume`` or ``--overwrite`` is refused (:mod:`adainf_lab.rundir`). GPU when present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from adainf_env import load_backbone
from adainf_env.backbones.training import TrainSettings, evaluate_accuracy, train_backbone
from adainf_env.data import load_images, make_splits
from adainf_env.errors import ConfigError
from adainf_env.fileio import atomic_write_json, sha256_arrays
from adainf_lab.cli import parse_config, run_script
from adainf_lab.config import check_seed, show_progress
from adainf_lab.data import evenly_spaced
from adainf_lab.rundir import check_run_flags, open_run_dir

__all__ = ["Config", "main"]


@dataclass
class Config:
    """Train a skippable CIFAR ResNet with stochastic depth."""

    out: Path = field(metadata={"help": "run directory; an existing one needs --resume (continue it, same arguments) "
                                        "or --overwrite (move it aside whole)"})
    resume: bool = field(default=False, metadata={"help": "continue the training in --out from its last epoch"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace the run in --out: the old directory is moved aside whole to <out>.replaced-<time>"})
    backbone: Literal["resnet18_cifar", "resnet32_cifar"] = field(default="resnet18_cifar",
                                                                   metadata={"help": "architecture"})
    dataset: Literal["cifar10", "cifar100"] = field(default="cifar10", metadata={"help": "dataset"})
    data: str | None = field(default=None, metadata={"help": "archive path or torchvision root (see load_images)"})
    download: bool = field(default=False, metadata={"help": "let torchvision download CIFAR into --data"})
    calib_indices: Path | None = field(default=None, metadata={
        "help": "use these train indices as the calibration split (e.g. ../shared/reference/calib_indices.npy)"})
    num_calib: int = field(default=10_000, metadata={"help": "calibration-split size when seeded"})
    width: int | None = field(default=None, metadata={"help": "base width (default: the architecture's own)"})
    final_survival: float = field(default=0.5, metadata={"help": "survival probability of the last block"})
    epochs: int = field(default=180, metadata={"help": "epochs"})
    batch_size: int = field(default=128, metadata={"help": "batch size"})
    lr: float = field(default=0.1, metadata={"help": "peak learning rate (cosine schedule)"})
    momentum: float = field(default=0.9, metadata={"help": "Nesterov momentum"})
    weight_decay: float = field(default=5e-4, metadata={"help": "weight decay (not on BN/bias)"})
    seed: int = field(default=0, metadata={"help": "seed (split, init, augmentation, drop-path)"})
    limit_fit: int | None = field(default=None, metadata={"help": "train on N evenly spaced fit images (smoke runs)"})
    limit_eval: int | None = field(default=None, metadata={"help": "evaluate on N evenly spaced calib / test images"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda[:i]"})
    stop_after_epochs: int | None = field(default=None, metadata={
        "help": "stop this invocation after N total epochs (resume later with the same --out)"})
    progress: bool = field(default=True, metadata={"help": "progress bars (drawn only when stderr is a terminal)"})

    def __post_init__(self) -> None:
        for name in ("limit_fit", "limit_eval", "stop_after_epochs"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be ≥ 1, got {v}")
        check_seed(self.seed)
        check_run_flags(self.out, resume=self.resume, overwrite=self.overwrite)


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_config(Config, argv, raise_errors=True)
    images, labels = load_images(cfg.data, dataset=cfg.dataset, split="train", download=cfg.download)
    splits = make_splits(len(images), seed=cfg.seed, num_calib=cfg.num_calib,
                         reference_calib_indices=cfg.calib_indices)
    fit, calib = evenly_spaced(splits["fit"], cfg.limit_fit), evenly_spaced(splits["calib"], cfg.limit_eval)
    fit_x, fit_y = np.ascontiguousarray(images[fit]), labels[fit]
    settings = TrainSettings(backbone=cfg.backbone, num_classes=10 if cfg.dataset == "cifar10" else 100,
                             width=cfg.width, final_survival=cfg.final_survival, epochs=cfg.epochs,
                             batch_size=cfg.batch_size, lr=cfg.lr, momentum=cfg.momentum,
                             weight_decay=cfg.weight_decay, seed=cfg.seed)
    fingerprint = sha256_arrays({"x": fit_x, "y": fit_y})
    out = open_run_dir(cfg, backbone=cfg.backbone, algo="train", seed=cfg.seed, out=cfg.out, resume=cfg.resume,
                       overwrite=cfg.overwrite, log=print,
                       extra={"data_fingerprint": fingerprint, "num_fit": int(len(fit)),
                              "num_calib": int(len(calib))}).path
    metrics = train_backbone(settings, fit_images=fit_x, fit_labels=fit_y, eval_images=images[calib],
                             eval_labels=labels[calib], out=out, data_fingerprint=fingerprint, device=cfg.device,
                             stop_after_epochs=cfg.stop_after_epochs,
                             progress=show_progress(cfg.progress))
    if metrics["complete"]:
        test_x, test_y = load_images(cfg.data, dataset=cfg.dataset, split="test", download=cfg.download)
        keep = evenly_spaced(np.arange(len(test_x)), cfg.limit_eval)
        test_x, test_y = test_x[keep], test_y[keep]
        model = load_backbone(cfg.backbone, checkpoint=out / "checkpoint.pt",
                              **({"width": cfg.width} if cfg.width else {}))
        metrics["test_acc"] = evaluate_accuracy(model, test_x, test_y)
        atomic_write_json(out / "metrics.json", metrics)
        print(f"done: held-out (calib) acc {metrics['final_eval_acc']:.4f}, test acc {metrics['test_acc']:.4f} "
              f"→ {out / 'checkpoint.pt'}")
    else:
        print(f"stopped after epoch {metrics['epochs_done']}/{cfg.epochs}; resume with the same arguments and "
              f"--out {out} --resume")
    return metrics


if __name__ == "__main__":
    run_script(main)
