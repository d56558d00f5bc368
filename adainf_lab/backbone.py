"""The backbone of a pipeline run: loaded from ``--checkpoint``, trained with stochastic depth, or (CLIP) built
zero-shot from pretrained weights / a random initialisation.

Every backbone comes with a ``weights_id`` that keys the outcome-table cache: the sha256 of its checkpoint file, or,
for weights that exist only in memory (a randomly initialised CLIP), the sha256 of its state-dict tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from adainf_env.backbones import load_backbone
from adainf_env.backbones.training import TrainSettings, train_backbone
from adainf_env.fileio import sha256_arrays, sha256_file
from adainf_lab.config import show_progress

__all__ = ["obtain_backbone", "state_dict_sha256"]


def state_dict_sha256(model: Any) -> str:
    """Content hash of a model's weights (names, dtypes, shapes, bytes) — identifies in-memory weights."""
    return sha256_arrays({k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})


def obtain_backbone(cfg: Any, images: np.ndarray, labels: np.ndarray, run_dir: Path, *, width: int, epochs: int,
                    device: str, num_classes: int, eval_images: np.ndarray, eval_labels: np.ndarray,
                    batch_size: int = 128, lr: float = 0.1, log: Callable[[str], None] = print,
                    class_names: list[str] | None = None) -> tuple[Any, str, Path | None]:
    """``(model in eval mode, weights_id, checkpoint path or None)``.

    * ``cfg.checkpoint`` → weights loaded safely and checked against the architecture;
    * ``clip_vit_b32`` without a checkpoint → random initialisation (seeded), reported loudly by the caller;
    * otherwise a backbone is trained with stochastic depth on ``images``/``labels`` (the *fit* split only) and its
      checkpoint written into ``run_dir/backbone`` (re-running with the same ``--out`` resumes a killed training);
      ``eval_images`` (calibration images, never trained on) give the per-epoch held-out accuracy.
    """
    if cfg.backbone == "clip_vit_b32":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(cfg.seed))
            model = load_backbone("clip_vit_b32", cfg.checkpoint, class_names=class_names, device=device)
        if cfg.checkpoint is not None:
            log(f"[backbone] clip_vit_b32 with weights from {cfg.checkpoint}")
            return model, sha256_file(cfg.checkpoint), Path(cfg.checkpoint)
        return model, "random-" + state_dict_sha256(model), None
    if cfg.checkpoint is not None:
        model = load_backbone(cfg.backbone, cfg.checkpoint, width=width, device=device)
        log(f"[backbone] {cfg.backbone} loaded from {cfg.checkpoint}")
        return model, sha256_file(cfg.checkpoint), Path(cfg.checkpoint)
    settings = TrainSettings(backbone=cfg.backbone, num_classes=int(num_classes), width=int(width),
                             final_survival=float(cfg.final_survival), epochs=int(epochs), batch_size=int(batch_size),
                             lr=float(lr), momentum=0.9, weight_decay=5e-4, seed=int(cfg.seed))
    out = Path(run_dir) / "backbone"
    fit_x = np.ascontiguousarray(images)
    log(f"[backbone] training {cfg.backbone} (width {width}) with stochastic depth (final survival "
        f"{cfg.final_survival}) for {epochs} epoch(s) on {len(fit_x)} fit images ({device})")
    metrics = train_backbone(settings, fit_images=fit_x, fit_labels=labels, eval_images=eval_images,
                             eval_labels=eval_labels, out=out, data_fingerprint=sha256_arrays({"x": fit_x, "y": labels}),
                             device=device, progress=show_progress(cfg.progress), log=log)
    ckpt = out / "checkpoint.pt"
    model = load_backbone(cfg.backbone, ckpt, width=width, device=device)
    log(f"[backbone] trained: held-out (calibration) accuracy {100 * metrics['final_eval_acc']:.2f} % → {ckpt}")
    return model, sha256_file(ckpt), ckpt
