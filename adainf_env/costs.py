"""MACs cost model: per-part multiply-accumulate counts measured with ``torch.utils.flop_counter``.

No hand formulas: every number here comes from running the backbone's own modules on one input of the backbone's
``input_size`` under :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the FLOPs of convolutions,
linear layers, matmuls and attention. Those operators perform one multiply and one add per MAC, so
``MACs = FLOPs / 2``. Element-wise work (BatchNorm, ReLU, pooling, softmax) is not counted, as in the usual MACs
convention (and in ``../shared/reference/summary.json``).

A plan's MACs are ``stem + head + Σ_b shortcut_b + Σ_{b executed} residual_b`` (a skipped block still runs its
shortcut, e.g. the 1×1 projection of a down-sampling ResNet block). Costs are per sample.

Measured *latency* profiles live in :mod:`adainf_env.latency`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from adainf_env.errors import ConfigError
from adainf_env.plans import plan_cost

__all__ = ["MacsProfile", "measure_macs", "plan_macs", "plan_macs_fraction", "count_macs"]


@dataclasses.dataclass(frozen=True)
class MacsProfile:
    """Per-sample MACs of each part of a skippable backbone at its ``input_size``."""

    stem: int
    blocks: np.ndarray  # [B, 2] int64: (residual branch, shortcut) per block, execution order
    head: int
    input_size: tuple[int, ...]

    def __post_init__(self) -> None:
        b = np.asarray(self.blocks, dtype=np.int64)
        if b.ndim != 2 or b.shape[1] != 2:
            raise ConfigError(f"MacsProfile.blocks must be [B, 2] (residual, shortcut), got shape {b.shape}")
        if (b < 0).any() or self.stem < 0 or self.head < 0:
            raise ConfigError("MACs must be non-negative")
        object.__setattr__(self, "blocks", b)

    @property
    def num_blocks(self) -> int:
        return int(self.blocks.shape[0])

    @property
    def base(self) -> int:
        """MACs every plan pays: stem + head + all shortcuts (plan with every residual skipped)."""
        return int(self.stem + self.head + self.blocks[:, 1].sum())

    @property
    def full(self) -> int:
        """MACs of the full model (every residual executed)."""
        return int(self.base + self.blocks[:, 0].sum())

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, same layout as ``summary.json["macs"]`` of the reference (``fc`` = head)."""
        return {"stem": int(self.stem), "blocks": self.blocks.tolist(), "fc": int(self.head),
                "input_size": list(self.input_size)}


def count_macs(fn: Callable[..., Any], *args: Any) -> tuple[int, Any]:
    """Run ``fn(*args)`` under ``FlopCounterMode`` and return ``(MACs, output)``; MACs = counted FLOPs / 2."""
    with FlopCounterMode(display=False) as counter:
        out = fn(*args)
    flops = int(counter.get_total_flops())
    # Every counted operator (conv, mm/addmm/bmm, attention) reports 2 FLOPs per multiply-accumulate.
    return flops // 2, out


@torch.no_grad()
def measure_macs(backbone: torch.nn.Module) -> MacsProfile:
    """Measure per-sample MACs of ``backbone`` (a :class:`~adainf_env.backbones.base.SkippableBackbone`).

    One image of ``backbone.input_size`` is run through stem → every block (residual and shortcut counted
    separately, on the hidden state the full model would feed that block) → head, in eval mode on the backbone's
    device. The backbone's train/eval mode is restored afterwards.
    """
    for attr in ("stem", "head", "blocks", "prepare", "input_size"):
        if not hasattr(backbone, attr):
            raise ConfigError(f"measure_macs needs a SkippableBackbone; {type(backbone).__name__} lacks {attr!r}")
    was_training = backbone.training
    backbone.eval()
    try:
        device = next((p.device for p in backbone.parameters()), torch.device("cpu"))
        x = backbone.prepare(torch.zeros((1,) + tuple(backbone.input_size), device=device))
        stem, h = count_macs(backbone.stem, x)
        rows = []
        for blk in backbone.blocks:
            res_macs, r = count_macs(blk.residual, h)
            sc_macs, s = count_macs(blk.shortcut, h)
            rows.append((res_macs, sc_macs))
            h = blk.combine(s, r)
        head, _ = count_macs(backbone.head, h)
    finally:
        backbone.train(was_training)
    return MacsProfile(stem=stem, blocks=np.array(rows, dtype=np.int64).reshape(-1, 2), head=head,
                       input_size=tuple(int(s) for s in backbone.input_size))


def plan_macs(costs: MacsProfile, masks: np.ndarray) -> np.ndarray:
    """MACs [P] (int64, per sample) of each plan in ``masks`` [P, B] (bool, ``True`` = residual executed)."""
    m = np.asarray(masks)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.shape[1] != costs.num_blocks:
        raise ConfigError(f"plan masks must be [P, B={costs.num_blocks}], got shape {np.asarray(masks).shape}")
    if m.dtype != bool:
        if not np.isin(m, (0, 1)).all():
            raise ConfigError("plan masks must be boolean (or 0/1)")
        m = m.astype(bool)
    return plan_cost(m, costs.blocks[:, 0], base=costs.base)


def plan_macs_fraction(costs: MacsProfile, masks: np.ndarray) -> np.ndarray:
    """[P] float64 MACs of each plan in ``masks`` as a fraction of the full model's (the ``"macs"`` cost unit of the
    envs and schedulers): :func:`plan_macs` / ``costs.full``."""
    return plan_macs(costs, masks).astype(np.float64) / float(costs.full)
