"""The AdaInf hinge-loss scheduler with the live backbone (variant (b) of :mod:`agents.learners.hinge`).

The scheduler g(x, M) reads the backbone's stem features and the budget and outputs per-block logits; block masks are
drawn with the straight-through Gumbel-sigmoid estimator (Jang et al. 2017; Bengio et al. 2013): the forward pass uses
hard 0/1 gates, the backward pass the gradient of the relaxed gates (temperature ``tau``). The gates are fed to
``SkippableBackbone.forward(x, mask=[N, B] gates)`` (every residual is computed and multiplied by its gate, so the
loss is differentiable in the gates). Loss per sample (AdaInf):

    CE(y, f(x; gates)) + λ · max(0, cost(gates) − M),   cost(gates) = base + Σ_b gate_b · block_cost_b

with costs as fractions of the full model (``block_cost`` [B] = residual cost of each block, ``base_cost`` = the
always-run part). Backbone options (``finetune``): ``"none"`` (frozen backbone, only g trains), ``"full"`` (every
backbone weight trains jointly), ``"lora"`` (conv/linear layers inside the blocks get a trainable low-rank update
W + (α/r)·B·A with the original weights frozen — :class:`LoRAConv2d` / :class:`LoRALinear`; the AdaInf paper reports
both full and LoRA fine-tuning). Inference: the sigmoid > 0.5 mask, then the most probable within-budget mask if that
overruns (same rule as ``blockdrop``).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from adainf_env.backbones.base import SkippableBackbone
from adainf_env.errors import ConfigError
from agents.learners.policy_nets import BlockPolicy

__all__ = ["LoRALinear", "LoRAConv2d", "add_lora", "gumbel_sigmoid_st", "LiveHingeTrainer"]


class LoRALinear(nn.Module):
    """y = base(x) + (α/r)·x Aᵀ Bᵀ with base frozen; B starts at 0 so the wrapped layer starts identical."""

    def __init__(self, base: nn.Linear, rank: int = 4, alpha: float = 8.0) -> None:
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.A = nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * (x @ self.A.T @ self.B.T)


class LoRAConv2d(nn.Module):
    """Conv2d + low-rank update: a (k×k, C_in → r) conv followed by a 1×1 (r → C_out) conv initialised to 0."""

    def __init__(self, base: nn.Conv2d, rank: int = 4, alpha: float = 8.0) -> None:
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.down = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride, base.padding, base.dilation,
                              groups=1, bias=False)
        self.up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        nn.init.zeros_(self.up.weight)
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * self.up(self.down(x))


def add_lora(module: nn.Module, rank: int = 4, alpha: float = 8.0) -> int:
    """Replace every ungrouped Conv2d / Linear inside ``module`` by its LoRA wrapper (in place); returns the count."""
    n = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv2d) and child.groups == 1:
            setattr(module, name, LoRAConv2d(child, rank, alpha))
            n += 1
        elif isinstance(child, nn.Linear):
            setattr(module, name, LoRALinear(child, rank, alpha))
            n += 1
        elif not isinstance(child, (LoRAConv2d, LoRALinear)):
            n += add_lora(child, rank, alpha)
    return n


def gumbel_sigmoid_st(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Hard 0/1 gates in the forward pass, gradient of sigmoid((logits + logistic noise)/tau) in the backward pass."""
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype).clamp(1e-6, 1 - 1e-6)
    soft = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / tau)
    hard = (soft > 0.5).to(soft.dtype)
    return hard + soft - soft.detach()


class LiveHingeTrainer:
    """Train g(x, M) (and optionally the backbone) with the hinge loss on live images."""

    def __init__(self, backbone: SkippableBackbone, block_cost: Iterable[float], base_cost: float, *,
                 lam: float = 5.0, tau: float = 1.0, finetune: str = "none", lora_rank: int = 4, lr: float = 1e-3,
                 backbone_lr: float = 1e-4, hidden: tuple[int, ...] = (64,), seed: int = 0) -> None:
        if finetune not in ("none", "full", "lora"):
            raise ConfigError(f"finetune must be 'none', 'full' or 'lora', got {finetune!r}")
        if not lam >= 0 or not tau > 0:
            raise ConfigError(f"lam must be ≥ 0 and tau > 0, got {lam}, {tau}")
        self.block_cost = torch.as_tensor(list(block_cost), dtype=torch.float32)
        if self.block_cost.numel() != backbone.num_blocks:
            raise ConfigError(f"block_cost has {self.block_cost.numel()} entries, backbone has {backbone.num_blocks}")
        self.base_cost = float(base_cost)
        self.backbone, self.lam, self.tau, self.finetune = backbone, float(lam), float(tau), finetune
        torch.manual_seed(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.policy = BlockPolicy(backbone.feature_dim, backbone.num_blocks, hidden=hidden)
        for p in backbone.parameters():
            p.requires_grad_(finetune == "full")
        if finetune == "lora":
            add_lora(backbone.blocks, rank=lora_rank)
        groups = [{"params": list(self.policy.parameters()), "lr": lr}]
        bb = [p for p in backbone.parameters() if p.requires_grad]
        if bb:
            groups.append({"params": bb, "lr": backbone_lr})
        self.opt = torch.optim.Adam(groups)

    def fit_scaler(self, images: torch.Tensor) -> None:
        with torch.no_grad():
            f = self.backbone.features(self.backbone.stem(self.backbone.prepare(images)))
        self.policy.scaler.fit(f.numpy())

    def plan_cost(self, gates: torch.Tensor) -> torch.Tensor:
        return self.base_cost + gates @ self.block_cost.to(gates.dtype)

    def step(self, images: torch.Tensor, labels: torch.Tensor, budgets: torch.Tensor) -> dict[str, float]:
        """One optimisation step on a batch; returns loss, CE, mean hard cost and overrun rate."""
        self.backbone.train(self.finetune != "none")
        bb = self.backbone
        with torch.set_grad_enabled(self.finetune != "none"):
            h0 = bb.stem(bb.prepare(images))
        feats = bb.features(h0).detach()
        gates = gumbel_sigmoid_st(self.policy(feats, budgets), self.tau, self.gen)
        h = h0
        for i, blk in enumerate(bb.blocks):
            h = blk(h, gate=gates[:, i])
        ce = nn.functional.cross_entropy(bb.head(h), labels, reduction="none")
        cost = self.plan_cost(gates)
        loss = (ce + self.lam * torch.relu(cost - budgets)).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": float(loss.detach()), "ce": float(ce.mean().detach()), "cost": float(cost.mean().detach()),
                "overrun_rate": float((cost.detach() > budgets + 1e-9).float().mean())}

    @torch.no_grad()
    def masks(self, images: torch.Tensor, budgets: torch.Tensor) -> torch.Tensor:
        """Deterministic block masks [N, B] (bool) within budget where any plan fits."""
        bb = self.backbone
        bb.eval()
        logits = self.policy(bb.features(bb.stem(bb.prepare(images))), budgets)
        nb = logits.shape[1]
        codes = torch.arange(1 << nb)
        all_masks = ((codes[:, None] >> torch.arange(nb)) & 1).bool()
        cost = self.plan_cost(all_masks.float())
        score = nn.functional.logsigmoid(logits) @ all_masks.float().T + \
            nn.functional.logsigmoid(-logits) @ (~all_masks).float().T
        fits = cost[None, :] <= budgets[:, None] + 1e-9
        fits[:, 0] |= ~fits.any(dim=1)
        return all_masks[score.masked_fill(~fits, -math.inf).argmax(dim=1)]
