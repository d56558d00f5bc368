"""Stochastic depth (Huang et al., 2016, "Deep Networks with Stochastic Depth"): per-sample branch dropping and the
linear survival-probability rule.

Training a residual network while randomly dropping whole residual branches per sample makes the network robust to
blocks being skipped at inference — exactly what adaptive inference exploits.
"""

from __future__ import annotations

import torch

__all__ = ["drop_path", "linear_survival_probs"]


def drop_path(x: torch.Tensor, survival_prob: float, training: bool, scale_by_keep: bool = True) -> torch.Tensor:
    """Zero the residual branch ``x`` [N, ...] of each sample independently with probability ``1 - survival_prob``.

    With ``scale_by_keep`` the kept rows are divided by ``survival_prob`` ("inverse scaling") so the expected output
    is unchanged and inference needs no rescaling. Identity when not training or when ``survival_prob == 1``.
    """
    if not 0.0 < survival_prob <= 1.0:
        raise ValueError(f"survival_prob must be in (0, 1], got {survival_prob}")
    if not training or survival_prob == 1.0:
        return x
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    keep = x.new_empty(shape).bernoulli_(survival_prob)
    if scale_by_keep:
        keep.div_(survival_prob)
    return x * keep


def linear_survival_probs(num_blocks: int, final_survival: float = 0.5) -> list[float]:
    """Linear-decay rule of Huang et al.: p_l = 1 − (l / L)(1 − p_L) for blocks l = 1..L.

    The reference ResNet18 used this with p_L = 0.5: 1 − 0.5/8 at block 0, 0.5 at block 7.
    """
    if num_blocks < 1:
        raise ValueError("num_blocks must be ≥ 1")
    if not 0.0 < final_survival <= 1.0:
        raise ValueError(f"final_survival must be in (0, 1], got {final_survival}")
    return [1.0 - (i + 1) / num_blocks * (1.0 - final_survival) for i in range(num_blocks)]
