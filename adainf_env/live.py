"""Live outcomes: a real backbone and real images instead of an outcome table.

:class:`LiveSource` is what a user gives the envs (``AdaInfEnv(live=...)``, ``AnytimeEnv(live=...)``);
:class:`LiveRunner` validates it, computes the stem features of every image once and runs the backbone for a plan.
The anytime env's block-by-block runner builds on it (:class:`adainf_env.envs.anytime.env.AnytimeLiveRunner`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from adainf_env.costs import measure_macs, plan_macs_fraction
from adainf_env.errors import ConfigError
from adainf_env.plans import all_plans

__all__ = ["LiveSource", "LiveRunner"]


@dataclasses.dataclass
class LiveSource:
    """A real backbone and real images for the env's live mode.

    ``images``: uint8 [N, C, H, W] (numpy or torch); ``labels``: int [N]. ``plan_masks`` [P, B] (default: all
    2^B plans, B ≤ 12). ``plan_cost`` [P] fractions of the full model (default: MACs measured with
    :func:`adainf_env.costs.measure_macs`). The stem features of all images are computed once at env creation
    (the stem always runs, so this is what a deployed scheduler would read); each step runs the backbone for the
    chosen plan on the request's image.
    """

    backbone: Any
    images: Any
    labels: Any
    plan_masks: np.ndarray | None = None
    plan_cost: np.ndarray | None = None
    batch_size: int = 256


class LiveRunner:
    """Runs a real backbone for the live mode (see :class:`LiveSource`)."""

    def __init__(self, src: LiveSource) -> None:
        if not isinstance(src, LiveSource):
            raise ConfigError(f"live must be a LiveSource, got {type(src).__name__}")
        bb = src.backbone
        for attr in ("stem", "features", "head", "blocks", "prepare"):
            if not hasattr(bb, attr):
                raise ConfigError(f"live backbone must be a SkippableBackbone; {type(bb).__name__} lacks {attr!r}")
        images = torch.as_tensor(np.asarray(src.images)) if not isinstance(src.images, torch.Tensor) else src.images
        labels = np.asarray(src.labels).astype(np.int64).reshape(-1)
        if images.ndim != 4 or images.shape[0] == 0:
            raise ConfigError(f"live images must be [N, C, H, W] with N ≥ 1, got {tuple(images.shape)}")
        if labels.shape[0] != images.shape[0]:
            raise ConfigError(f"live labels have {labels.shape[0]} entries for {images.shape[0]} images")
        if (labels < 0).any() or (labels >= bb.num_classes).any():
            raise ConfigError(f"live labels must lie in [0, {bb.num_classes})")
        nb = len(bb.blocks)
        if src.plan_masks is None:
            if nb > 12:
                raise ConfigError(f"live backbone has {nb} blocks: pass LiveSource(plan_masks=[P, {nb}]) (2^{nb} is "
                                  "too many plans)")
            masks = all_plans(nb)
        else:
            masks = np.asarray(src.plan_masks)
            if masks.ndim != 2 or masks.shape[1] != nb or not np.isin(masks, (0, 1)).all():
                raise ConfigError(f"live plan_masks must be 0/1 [P, {nb}], got shape {masks.shape}")
            masks = masks.astype(bool)
        if src.plan_cost is None:
            cost = plan_macs_fraction(measure_macs(bb), masks)
        else:
            cost = np.asarray(src.plan_cost, dtype=np.float64)
            if cost.shape != (masks.shape[0],):
                raise ConfigError(f"live plan_cost must have shape ({masks.shape[0]},), got {cost.shape}")
        self.backbone = bb.eval()
        self.images = images
        self.labels = labels
        self.plan_masks = masks
        self.cost = cost
        self._device = next((p.device for p in bb.parameters()), torch.device("cpu"))
        feats = []
        with torch.no_grad():
            for i in range(0, images.shape[0], max(1, int(src.batch_size))):
                x = bb.prepare(images[i:i + src.batch_size].to(self._device))
                feats.append(bb.features(bb.stem(x)).float().cpu().numpy())
        self.features = np.concatenate(feats).astype(np.float32)

    def run(self, s: int, p: int) -> tuple[bool, float]:
        """Run plan ``p`` on image ``s``: (correct, cross-entropy of the true label in nats)."""
        with torch.no_grad():
            logits = self.backbone(self.images[s:s + 1].to(self._device),
                                   torch.as_tensor(self.plan_masks[p], device=self._device)).float()
            y = torch.tensor([int(self.labels[s])], device=self._device)
            ce = float(torch.nn.functional.cross_entropy(logits, y))
        return bool(int(logits.argmax(1)) == int(self.labels[s])), ce
