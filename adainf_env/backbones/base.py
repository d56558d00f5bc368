"""The one interface every AdaInf backbone implements.

A backbone is ``stem → block_0 → … → block_{B-1} → head``:

* the **stem** always runs; its globally pooled output (:meth:`SkippableBackbone.features`) is what a scheduler
  reads, so choosing a plan costs nothing beyond the stem;
* each **block** has a residual branch that may be skipped and a shortcut that always runs
  (``block(x) = combine(shortcut(x), residual(x))``; skipped: ``combine(shortcut(x), None)``);
* the **head** maps the last hidden state to class logits.

A *plan* is a boolean block mask [B] (``True`` = residual executed). Plans are indices into a plan list everywhere
else in AdaInf; masks appear only at this edge.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from adainf_env.backbones.stochastic_depth import drop_path

__all__ = ["SkippableBlock", "SkippableBackbone"]


class SkippableBlock(nn.Module):
    """A residual block whose residual branch can be skipped, gated per sample, or dropped (stochastic depth)."""

    survival_prob: float = 1.0  # stochastic-depth survival probability used in training mode

    def residual(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def combine(self, shortcut: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        return shortcut if residual is None else shortcut + residual

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        """Output when the residual branch is skipped."""
        return self.combine(self.shortcut(x), None)

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        """Run the block. ``gate`` [N] in [0, 1] multiplies each row's residual (0 = skipped, differentiable)."""
        r = drop_path(self.residual(x), self.survival_prob, self.training)
        if gate is not None:
            r = r * gate.to(r.dtype).view((-1,) + (1,) * (r.ndim - 1))
        return self.combine(self.shortcut(x), r)


class SkippableBackbone(nn.Module):
    """Base class: subclasses set ``blocks`` (a ModuleList of :class:`SkippableBlock`) and implement :meth:`stem`,
    :meth:`features`, :meth:`head`.

    Inputs to :meth:`forward` / :meth:`stem` are images as uint8 [N, C, H, W] or float in [0, 1];
    :meth:`prepare` converts, resizes to ``input_size`` and normalises, so callers never handle preprocessing.
    """

    name: str = "backbone"
    blocks: nn.ModuleList

    def __init__(self, *, num_classes: int, input_size: tuple[int, int, int], mean: Sequence[float],
                 std: Sequence[float]) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.input_size = tuple(int(s) for s in input_size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    # ----------------------------------------------------------------- subclass API
    def stem(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Prepared images → hidden state entering block 0."""
        raise NotImplementedError

    def features(self, h: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Stem hidden state → scheduler features [N, F] (pooled, cheap)."""
        raise NotImplementedError

    def head(self, h: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Last hidden state → logits [N, num_classes]."""
        raise NotImplementedError

    # ----------------------------------------------------------------- shared behaviour
    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def feature_dim(self) -> int:
        with torch.no_grad():
            dev = self.mean.device
            x = torch.zeros((1,) + self.input_size, device=dev)
            return int(self.features(self.stem(self.prepare(x))).shape[1])

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 or [0, 1] float images → normalised float at ``input_size``."""
        if x.ndim != 4 or x.shape[1] != self.input_size[0]:
            raise ValueError(f"{self.name}: expected images [N, {self.input_size[0]}, H, W], got {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        x = x.to(self.mean.dtype)
        if tuple(x.shape[2:]) != self.input_size[1:]:
            x = nn.functional.interpolate(x, size=self.input_size[1:], mode="bicubic", align_corners=False)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits under a plan.

        ``mask`` None → full model; bool [B] → one plan for the batch (skipped blocks are not computed);
        float/bool [N, B] → per-row gates (every block computed, residuals multiplied by the gate; use this for
        differentiable training, the executor for fast mixed-plan inference).
        """
        h = self.stem(self.prepare(x))
        if mask is None:
            for blk in self.blocks:
                h = blk(h)
        elif mask.ndim == 1:
            if mask.shape[0] != self.num_blocks:
                raise ValueError(f"{self.name}: plan mask has {mask.shape[0]} entries, model has {self.num_blocks}")
            for blk, run in zip(self.blocks, mask.tolist()):
                h = blk(h) if run else blk.skip(h)
        else:
            if mask.shape != (h.shape[0], self.num_blocks):
                raise ValueError(f"{self.name}: gate mask must be [N={h.shape[0]}, B={self.num_blocks}], got "
                                 f"{tuple(mask.shape)}")
            for i, blk in enumerate(self.blocks):
                h = blk(h, gate=mask[:, i])
        return self.head(h)

    def set_survival_probs(self, probs: Sequence[float]) -> None:
        if len(probs) != self.num_blocks:
            raise ValueError(f"need {self.num_blocks} survival probabilities, got {len(probs)}")
        for blk, p in zip(self.blocks, probs):
            if not 0.0 < p <= 1.0:
                raise ValueError(f"survival probability must be in (0, 1], got {p}")
            blk.survival_prob = float(p)
