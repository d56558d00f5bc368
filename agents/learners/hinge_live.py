"""The AdaInf hinge-loss scheduler with the live backbone (variant (b) of :mod:`agents.learners.hinge`).

The scheduler g(x, M) reads the backbone's stem features and the budget and outputs per-block logits; block masks are
drawn with the straight-through Gumbel-sigmoid estimator (Jang et al. 2017; Bengio et al. 2013): the forward pass uses
hard 0/1 gates, the backward pass the gradient of the relaxed gates (temperature ``tau``). The gates are fed to the
blocks as per-row gates (every residual is computed and multiplied by its gate, so the loss is differentiable in the
gates). Loss per sample (AdaInf), optionally with distillation from the frozen original full model (Hinton et al.
2015):

    (1 − α)·CE(y, f(x; gates)) + α·T²·KL(softmax(t(x)/T) ‖ softmax(f(x; gates)/T)) + λ·max(0, cost(gates) − M)

with ``cost(gates) = base + Σ_b gate_b · block_cost_b`` as fractions of the full model (``block_cost`` [B] = residual
cost of each block, ``base_cost`` = the always-run part), t(x) the logits of a frozen copy of the backbone as it was
when the trainer was built, running every block (α = ``kd_weight``, T = ``kd_temperature``). With
``anchor_fraction`` f > 0 (backbone training only) the first ⌈f·N⌉ rows of each batch also run the full plan with the
same task loss, added to the batch loss — the "sandwich rule" of universally slimmable networks (Yu & Huang 2019):
the largest configuration is trained in every step, so the shared weights cannot trade the full model's accuracy
for the cheaper plans' without paying for it in the loss.

Backbone options (``finetune``): ``"none"`` (frozen backbone, only g trains), ``"full"`` (every backbone weight trains
jointly), ``"lora"`` (conv/linear layers inside the blocks get a trainable low-rank update W + (α/r)·B·A with the
original weights frozen — :class:`LoRAConv2d` / :class:`LoRALinear`; the AdaInf paper reports both full and LoRA
fine-tuning). :func:`merge_lora` folds the updates into plain layers after training, so inference costs exactly the
original MACs.

Why ``freeze_bn`` (default): the backbone stays in eval mode while it trains. BatchNorm then normalises with the
running statistics the checkpoint was trained with — the statistics every plan is evaluated with — instead of the
statistics of a batch whose rows run different plans (each plan shifts the activations' distribution); eval mode also
turns off the backbone's own stochastic-depth drop-path, which the gates replace. The affine BN parameters still
train under ``"full"``.

Learning rates follow linear warm-up then cosine decay to 0 over ``total_steps`` (all parameter groups). Inference:
the most probable mask (product of per-block Bernoulli probabilities) among those within budget
(:func:`adainf_env.feasibility.masked_argmax`: the cheapest plan when none fits).

:meth:`LiveHingeTrainer.state_dict` / :meth:`~LiveHingeTrainer.load_state_dict` hold everything a step depends on
(policy, backbone incl. LoRA adapters, optimizer moments / momenta, lr-schedule positions, the Gumbel noise generator), so
training resumed from a checkpoint continues exactly as the uninterrupted run.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from adainf_env.backbones.base import SkippableBackbone
from adainf_env.errors import CheckpointError, ConfigError
from adainf_env.feasibility import masked_argmax
from adainf_env.plans import all_plans, plan_cost
from agents.learners.policy_nets import BlockPolicy

__all__ = ["FINETUNE_MODES", "LoRALinear", "LoRAConv2d", "add_lora", "merge_lora", "gumbel_sigmoid_st",
           "warmup_cosine", "LiveHingeTrainer"]

FINETUNE_MODES = ("none", "lora", "full")


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

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain Linear computing the same function (W + (α/r)·B·A)."""
        out = copy.deepcopy(self.base)
        out.weight.add_(self.scale * (self.B @ self.A))
        return out


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

    @torch.no_grad()
    def merged(self) -> nn.Conv2d:
        """A plain Conv2d computing the same function: the 1×1 ``up`` composed with the k×k ``down`` is one k×k conv
        with weight ``up[o, r] · down[r, i, u, v]`` summed over r (same stride, padding, dilation)."""
        out = copy.deepcopy(self.base)
        up = self.up.weight[:, :, 0, 0]  # [C_out, r]
        out.weight.add_(self.scale * torch.einsum("or,riuv->oiuv", up, self.down.weight))
        return out


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


def merge_lora(module: nn.Module) -> int:
    """Replace every LoRA wrapper inside ``module`` by its merged plain layer (in place); returns the count. After
    merging, the state dict has the original architecture's keys (loadable by ``load_backbone``)."""
    n = 0
    for name, child in list(module.named_children()):
        if isinstance(child, (LoRAConv2d, LoRALinear)):
            setattr(module, name, child.merged())
            n += 1
        else:
            n += merge_lora(child)
    return n


def gumbel_sigmoid_st(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Hard 0/1 gates in the forward pass, gradient of sigmoid((logits + logistic noise)/tau) in the backward pass.

    The noise is drawn on the CPU from ``generator`` (one seeded stream on every device) and moved to the logits."""
    u = torch.rand(logits.shape, generator=generator, dtype=torch.float32).clamp(1e-6, 1 - 1e-6)
    u = u.to(device=logits.device, dtype=logits.dtype)
    soft = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / tau)
    hard = (soft > 0.5).to(soft.dtype)
    return hard + soft - soft.detach()


def warmup_cosine(step: int, *, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate factor: linear warm-up 1/w … 1 over ``warmup_steps``, then cosine decay from 1 towards 0 at
    ``total_steps`` (Loshchilov & Hutter 2017, without restarts). Steps past the end keep the last factor."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * t))


class LiveHingeTrainer:
    """Train g(x, M) (and optionally the backbone) with the hinge loss on live images (see module docstring)."""

    def __init__(self, backbone: SkippableBackbone, block_cost: Iterable[float], base_cost: float, *,
                 lam: float = 5.0, tau: float = 1.0, finetune: str = "none", lora_rank: int = 4,
                 lora_alpha: float = 8.0, lr: float = 1e-3, backbone_lr: float = 1e-4, hidden: tuple[int, ...] = (64,),
                 kd_weight: float = 0.0, kd_temperature: float = 4.0, freeze_bn: bool = True,
                 anchor_fraction: float = 0.0, backbone_optimizer: str = "adam",
                 total_steps: int | None = None, warmup_steps: int = 0, device: str | torch.device = "cpu",
                 seed: int = 0) -> None:
        if finetune not in FINETUNE_MODES:
            raise ConfigError(f"finetune must be 'none', 'full' or 'lora', got {finetune!r}")
        if not lam >= 0 or not tau > 0:
            raise ConfigError(f"lam must be ≥ 0 and tau > 0, got {lam}, {tau}")
        if not 0 <= kd_weight <= 1 or not kd_temperature > 0:
            raise ConfigError(f"kd_weight must be in [0, 1] and kd_temperature > 0, got {kd_weight}, {kd_temperature}")
        if backbone_optimizer not in ("adam", "sgd"):
            raise ConfigError(f"backbone_optimizer must be 'adam' or 'sgd', got {backbone_optimizer!r}")
        if not 0 <= anchor_fraction <= 1:
            raise ConfigError(f"anchor_fraction must be in [0, 1], got {anchor_fraction}")
        if not lr > 0 or not backbone_lr > 0:
            raise ConfigError(f"learning rates must be > 0, got lr={lr}, backbone_lr={backbone_lr}")
        if total_steps is not None and total_steps < 1 or warmup_steps < 0:
            raise ConfigError(f"total_steps must be ≥ 1 (or None) and warmup_steps ≥ 0, got {total_steps}, "
                              f"{warmup_steps}")
        self.device = torch.device(device)
        self.block_cost = torch.as_tensor(list(block_cost), dtype=torch.float32, device=self.device)
        if self.block_cost.numel() != backbone.num_blocks:
            raise ConfigError(f"block_cost has {self.block_cost.numel()} entries, backbone has {backbone.num_blocks}")
        self.base_cost = float(base_cost)
        self.backbone, self.lam, self.tau, self.finetune = backbone.to(self.device), float(lam), float(tau), finetune
        self.kd_weight, self.kd_temperature, self.freeze_bn = float(kd_weight), float(kd_temperature), bool(freeze_bn)
        self.anchor_fraction = float(anchor_fraction) if finetune != "none" else 0.0
        self.total_steps, self.warmup_steps = total_steps, int(warmup_steps)
        self.steps_done = 0
        torch.manual_seed(seed)  # policy / LoRA initialisation
        self.gen = torch.Generator().manual_seed(seed)
        # The distillation teacher: the backbone as given (before LoRA / fine-tuning), frozen, always the full plan.
        self.teacher: SkippableBackbone | None = None
        if self.kd_weight > 0:
            self.teacher = copy.deepcopy(backbone).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        self.policy = BlockPolicy(backbone.feature_dim, backbone.num_blocks, hidden=hidden).to(self.device)
        for p in backbone.parameters():
            p.requires_grad_(finetune == "full")
        if finetune == "lora":
            add_lora(backbone.blocks, rank=lora_rank, alpha=lora_alpha)
            backbone.to(self.device)
        # The policy: Adam. The backbone: Adam or SGD with Nesterov momentum (how the reference was trained). Adam's
        # first steps move every weight by about the learning rate whatever its gradient (sign-like updates): on a
        # converged network that is a large, incoherent change in function, where SGD's steps scale with the gradient.
        self.opts: list[torch.optim.Optimizer] = [torch.optim.Adam(self.policy.parameters(), lr=lr)]
        bb = [p for p in backbone.parameters() if p.requires_grad]
        if bb:
            self.opts.append(torch.optim.Adam(bb, lr=backbone_lr) if backbone_optimizer == "adam" else
                             torch.optim.SGD(bb, lr=backbone_lr, momentum=0.9, nesterov=True))
        self.lr_schedules: list[Any] = []
        if total_steps is not None:
            self.lr_schedules = [torch.optim.lr_scheduler.LambdaLR(
                o, lambda s: warmup_cosine(s, total_steps=int(total_steps), warmup_steps=self.warmup_steps))
                for o in self.opts]
        self._all_masks = torch.as_tensor(all_plans(backbone.num_blocks))  # plan-code order

    # ------------------------------------------------------------------ helpers
    def _stem_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bb = self.backbone
        h0 = bb.stem(bb.prepare(images.to(self.device)))
        return h0, bb.features(h0)

    def fit_scaler(self, images: torch.Tensor) -> None:
        """Standardise the policy's inputs with the stem-feature statistics of ``images`` (training images)."""
        with torch.no_grad():
            _, f = self._stem_features(images)
        self.policy.scaler.fit(f.cpu().numpy())

    def plan_cost(self, gates: torch.Tensor) -> torch.Tensor:
        """[N] cost of gates [N, B] (relaxed or hard, differentiable): the additive model of
        :func:`adainf_env.plans.plan_cost`, on the gates' device and dtype."""
        return plan_cost(gates, self.block_cost, base=self.base_cost)

    def all_plan_costs(self) -> np.ndarray:
        """[2^B] cost (fraction of the full model) of every plan, in plan-code order (bit b = block b executed)."""
        return self.plan_cost(self._all_masks.float().to(self.device)).cpu().double().numpy()

    def lrs(self) -> list[float]:
        """Current learning rates: [policy] or [policy, backbone]."""
        return [float(o.param_groups[0]["lr"]) for o in self.opts]

    # ------------------------------------------------------------------ training
    def warm_start(self, features: torch.Tensor, budgets: torch.Tensor, target_masks: torch.Tensor, *,
                   steps: int = 300, smoothing: float = 0.1, lr: float = 3e-3) -> float:
        """Fit the policy's block logits to given masks (e.g. the look-up table's plan for each budget) by binary
        cross-entropy with smoothed targets (1 − s, s), so the warm-started gates stay stochastic under the Gumbel
        noise. Uses its own optimizer; the training optimizer and noise generator are untouched. Returns the final
        loss."""
        if not 0 <= smoothing < 0.5 or steps < 1:
            raise ConfigError(f"warm_start needs steps ≥ 1 and smoothing in [0, 0.5), got {steps}, {smoothing}")
        x, b = features.to(self.device), budgets.to(self.device)
        y = target_masks.to(self.device).float() * (1 - 2 * smoothing) + smoothing
        opt = torch.optim.Adam(self.policy.parameters(), lr=lr)
        loss = torch.zeros(())
        for _ in range(int(steps)):
            loss = nn.functional.binary_cross_entropy_with_logits(self.policy(x, b), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return float(loss.detach())

    def _teacher_logits(self, images: torch.Tensor) -> torch.Tensor | None:
        if self.teacher is None:
            return None
        with torch.no_grad():
            return self.teacher(images)

    def _task_loss(self, logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-row (task, CE, T²-scaled KL to the teacher) — task = (1 − α)·CE + α·KL, or CE without a teacher."""
        ce = nn.functional.cross_entropy(logits, labels, reduction="none")
        if teacher is None:
            return ce, ce, torch.zeros_like(ce)
        t = self.kd_temperature
        kd = (t * t) * nn.functional.kl_div(nn.functional.log_softmax(logits / t, dim=1),
                                            nn.functional.log_softmax(teacher / t, dim=1),
                                            reduction="none", log_target=True).sum(1)
        return (1 - self.kd_weight) * ce + self.kd_weight * kd, ce, kd

    def step(self, images: torch.Tensor, labels: torch.Tensor, budgets: torch.Tensor) -> dict[str, float]:
        """One optimisation step on a batch; returns loss terms, mean hard cost and overrun rate."""
        images, labels, budgets = images.to(self.device), labels.to(self.device), budgets.to(self.device)
        bb = self.backbone
        bb.train(self.finetune != "none" and not self.freeze_bn)
        teacher = self._teacher_logits(images)
        with torch.set_grad_enabled(self.finetune == "full"):
            h0, feats = self._stem_features(images)
        gates = gumbel_sigmoid_st(self.policy(feats.detach(), budgets), self.tau, self.gen)
        h = h0
        for i, blk in enumerate(bb.blocks):
            h = blk(h, gate=gates[:, i])
        logits = bb.head(h)
        task, ce, kd = self._task_loss(logits, labels, teacher)
        cost = self.plan_cost(gates)
        hinge = torch.relu(cost - budgets)
        loss = (task + self.lam * hinge).mean()
        anchor = torch.zeros(())
        k = int(math.ceil(self.anchor_fraction * len(images)))
        if k:  # the full plan on the first k rows, same task loss: keeps the full model's accuracy while g's plans train
            hf = h0[:k]
            for blk in bb.blocks:
                hf = blk(hf)
            anchor = self._task_loss(bb.head(hf), labels[:k], None if teacher is None else teacher[:k])[0].mean()
            loss = loss + anchor
        for o in self.opts:
            o.zero_grad(set_to_none=True)
        loss.backward()
        for o in self.opts:
            o.step()
        for sch in self.lr_schedules:
            sch.step()
        self.steps_done += 1
        bb.eval()
        return {"loss": float(loss.detach()), "ce": float(ce.mean().detach()), "kd": float(kd.mean().detach()),
                "anchor": float(anchor.detach()),
                "hinge": float(hinge.mean().detach()), "cost": float(cost.mean().detach()),
                "overrun_rate": float((cost.detach() > budgets + 1e-9).float().mean())}

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def plans(self, images: torch.Tensor, budgets: torch.Tensor) -> torch.Tensor:
        """Plan codes [N] (bit b = block b executed): the most probable mask within each budget."""
        self.backbone.eval()
        _, feats = self._stem_features(images)
        return self.plans_from_features(feats, budgets)

    @torch.no_grad()
    def plans_from_features(self, feats: torch.Tensor, budgets: torch.Tensor) -> torch.Tensor:
        logits = self.policy(feats.to(self.device), budgets.to(self.device)).cpu().double()
        m = self._all_masks.double()
        score = nn.functional.logsigmoid(logits) @ m.T + nn.functional.logsigmoid(-logits) @ (1 - m).T
        return masked_argmax(score, torch.as_tensor(self.all_plan_costs()), budgets.cpu().double())

    @torch.no_grad()
    def masks(self, images: torch.Tensor, budgets: torch.Tensor) -> torch.Tensor:
        """Deterministic block masks [N, B] (bool) within budget where any plan fits."""
        return self._all_masks[self.plans(images, budgets).cpu()]

    # ------------------------------------------------------------------ resumable state
    def state_dict(self) -> dict[str, Any]:
        """Everything the next step depends on (tensors and plain values: loadable with ``weights_only=True``)."""
        return {"policy": self.policy.state_dict(), "backbone": self.backbone.state_dict(),
                "optimizers": [o.state_dict() for o in self.opts],
                "lr_schedules": [sch.state_dict() for sch in self.lr_schedules],
                "gumbel_generator": self.gen.get_state(), "steps_done": self.steps_done,
                "finetune": self.finetune}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("finetune") != self.finetune:
            raise CheckpointError(f"trainer checkpoint is for finetune={state.get('finetune')!r}, this trainer is "
                                  f"{self.finetune!r}")
        self.policy.load_state_dict(state["policy"])
        self.backbone.load_state_dict(state["backbone"])
        if len(state["optimizers"]) != len(self.opts) or len(state["lr_schedules"]) != len(self.lr_schedules):
            raise CheckpointError("trainer checkpoint and trainer disagree on the optimizers / lr schedules")
        for o, sd in zip(self.opts, state["optimizers"]):
            o.load_state_dict(sd)
        for sch, sd in zip(self.lr_schedules, state["lr_schedules"]):
            sch.load_state_dict(sd)
        self.gen.set_state(state["gumbel_generator"])
        self.steps_done = int(state["steps_done"])
