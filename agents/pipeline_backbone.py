"""The backbone of a pipeline run: loaded from ``--checkpoint`` or trained with stochastic depth."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["obtain_backbone"]


def obtain_backbone(cfg: Any, images: np.ndarray, labels: np.ndarray, run_dir: Path, *, width: int, epochs: int,
                    device: str, log: Callable[[str], None] = print) -> tuple[Any, Path]:
    """``(model in eval mode, checkpoint path)``. With ``cfg.checkpoint`` the weights are loaded (safely, checked
    against the architecture); otherwise a backbone is trained on ``images``/``labels`` (the *fit* split only)."""
    from adainf_env.backbones import load_backbone

    if cfg.checkpoint is not None:
        model = load_backbone(cfg.backbone, cfg.checkpoint, width=width, device=device)
        log(f"[backbone] {cfg.backbone} loaded from {cfg.checkpoint}")
        return model, Path(cfg.checkpoint)
    raise NotImplementedError("backbone training: waiting for the train_backbone library function")
