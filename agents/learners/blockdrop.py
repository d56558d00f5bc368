"""BlockDrop [``blockdrop``] (Wu et al., "BlockDrop: Dynamic Inference Paths in Residual Networks", CVPR 2018),
made budget-aware — the AdaInf paper's BlockDrop row.

Policy: per-block Bernoulli probabilities s = sigmoid(g(x, M)) (:class:`~agents.learners.policy_nets.BlockPolicy`); the budget
M is an input (that is the budget-awareness the original lacks). Training is REINFORCE on BlockDrop's reward

    R(u) = 1 − (|u| / B)²   if the plan u classifies x correctly,   −γ otherwise,

with the self-critical baseline (reward of the policy's greedy plan, as in BlockDrop) and BlockDrop's exploration
bound: actions are sampled from s' = α·s + (1 − α)·(1 − s) (α = 0.8 in the paper).

Budget (``mask_over_budget=True``, default): the factorised Bernoulli(s') distribution over block masks is restricted
to the masks within the budget and renormalised — action masking, as MaskablePPO does — so every sampled plan fits M,
the log-probability in the REINFORCE gradient is that of the restricted distribution, and the greedy (baseline and
inference) plan is its mode, the most probable plan within budget. ``mask_over_budget=False`` samples unrestricted
masks and penalises a plan whose cost exceeds M like a wrong answer and additionally by λ·(cost − M)
(``R = −γ − λ·overrun``): measured on the reference ResNet18 table, the exploration noise then makes most sampled
masks overrun at moderate budgets, and the policy learns to switch almost every block off (budget 0.4: mean cost
0.15, 62 % accuracy on held-out calibration rows vs 87 % for the LUT) — the reason the masked form is the default.

What stays BlockDrop's by design: its reward pays for using fewer blocks whatever the budget. On the reference table
the static plan maximising E[R] is the LUT plan up to budget 0.5 and then stays at the 0.49-cost plan (89.9 % calib
accuracy vs 91.4 % for the best plan), so at budgets above 0.5 BlockDrop leaves budget unused by design.

Inference: the most probable plan under the factorised Bernoulli policy among plans within the budget (equal to
BlockDrop's thresholded plan whenever that fits); with ``restrict_to_budget=False``, plain thresholding s > 0.5.
Needs a table with all 2^B plans (the reference and toy tables have them).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from adainf_env.errors import ConfigError
from adainf_env.feasibility import feasible_with_fallback
from adainf_env.tables.outcomes import OutcomeTable
from agents.learners.policy_nets import BlockPolicy
from agents.learners.reinforce import bernoulli_entropy, block_plan_lookup, block_scores_over_plans
from agents.learners.torch_learner import TorchTableLearner

__all__ = ["BlockDropScheduler"]


class BlockDropScheduler(TorchTableLearner):
    """Budget-conditioned BlockDrop. Extra keyword arguments: ``gamma`` (γ, penalty for a wrong answer, ≥ 0),
    ``alpha`` (exploration bound in (0.5, 1]), ``lam`` (λ, overrun penalty ≥ 0), ``entropy`` (β ≥ 0),
    ``n_samples`` (sampled masks per row per step)."""

    name = "blockdrop"
    supports_prior = False  # per-block Bernoulli policy: no per-plan logit to start from the LUT

    def __init__(self, *, gamma: float = 5.0, alpha: float = 0.8, lam: float = 10.0, entropy: float = 0.0,
                 n_samples: int = 4, mask_over_budget: bool = True, epochs: int = 30, batch_size: int = 256, lr: float = 3e-3,
                 weight_decay: float = 1e-4, hidden: Sequence[int] = (128, 128), val_fraction: float = 0.2,
                 restrict_to_budget: bool = True, prior: bool | None = None, progress: bool | None = None) -> None:
        super().__init__(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, hidden=hidden,
                         plans="all", val_fraction=val_fraction, restrict_to_budget=restrict_to_budget,
                         prior=prior, progress=progress)
        if not (gamma >= 0 and lam >= 0 and entropy >= 0):
            raise ConfigError(f"gamma, lam and entropy must be ≥ 0, got {gamma}, {lam}, {entropy}")
        if not 0.5 < alpha <= 1.0:
            raise ConfigError(f"alpha must be in (0.5, 1], got {alpha}")
        if int(n_samples) < 1:
            raise ConfigError(f"n_samples must be ≥ 1, got {n_samples}")
        self.gamma, self.alpha, self.lam, self.entropy = float(gamma), float(alpha), float(lam), float(entropy)
        self.n_samples = int(n_samples)
        self.mask_over_budget = bool(mask_over_budget)

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.pop("plans")
        cfg.pop("prior_scale")  # ``prior`` stays (always False): every learner's records say whether it had one
        cfg.update(gamma=self.gamma, alpha=self.alpha, lam=self.lam, entropy=self.entropy, n_samples=self.n_samples,
                   mask_over_budget=self.mask_over_budget)
        return cfg

    def _build_policy(self, feature_dim: int, cand_cost: np.ndarray, num_blocks: int,
                      cand_acc: np.ndarray | None = None) -> nn.Module:
        return BlockPolicy(feature_dim, num_blocks, hidden=self.hidden)

    def _candidate_scores(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        assert self.policy is not None and self.plan_space is not None and self.candidates is not None
        logits = self.policy(x, b).double()
        masks = torch.as_tensor(self.plan_space.plan_masks[self.candidates])
        if not self.restrict_to_budget:  # BlockDrop's own inference: threshold each block at 0.5
            thr = (logits > 0).to(torch.float64)
            return -(thr[:, None, :] - masks[None].double()).abs().sum(-1)
        return block_scores_over_plans(logits, masks)

    def _prepare(self, table: OutcomeTable, cost: np.ndarray) -> None:
        self._code_to_plan = torch.as_tensor(block_plan_lookup(table))
        self._weights = torch.as_tensor(1 << np.arange(table.num_blocks), dtype=torch.int64)
        self._correct_t = torch.as_tensor(table.correct)
        self._cost_t = torch.as_tensor(cost, dtype=torch.float32)
        self._nblocks_t = torch.as_tensor(table.plan_masks.sum(1), dtype=torch.float32)
        self._masks_t = torch.as_tensor(table.plan_masks, dtype=torch.float32)  # [P, B], plans in table order
        self._B = table.num_blocks

    def _reward(self, rows: torch.Tensor, plans: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        corr = torch.gather(self._correct_t[rows], 1, plans)
        frac = self._nblocks_t[plans] / self._B
        over = torch.relu(self._cost_t[plans] - b[:, None])
        r = torch.where(corr, 1.0 - frac ** 2, torch.full_like(frac, -self.gamma))
        return torch.where(over > 0, -self.gamma - self.lam * over, r)

    def _batch_loss(self, rows: torch.Tensor, budgets: torch.Tensor,
                    gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        assert self.policy is not None
        b = budgets.float()
        logits = self.policy(self._features_t[rows], b)
        s = torch.sigmoid(logits)
        s_explore = self.alpha * s + (1 - self.alpha) * (1 - s)
        if self.mask_over_budget:
            return self._masked_loss(rows, b, logits, s_explore, gen)
        n, nb = logits.shape
        u = torch.rand((n, self.n_samples, nb), generator=gen) < s_explore.detach()[:, None, :]
        plans = self._code_to_plan[(u.long() * self._weights).sum(-1)]
        greedy = self._code_to_plan[((s.detach() > 0.5).long() * self._weights).sum(-1)][:, None]
        r, r_greedy = self._reward(rows, plans, b), self._reward(rows, greedy, b)
        eps = 1e-6
        lp = torch.where(u, torch.log(s_explore[:, None, :] + eps), torch.log(1 - s_explore[:, None, :] + eps)).sum(-1)
        ent = bernoulli_entropy(logits)
        loss = -((r - r_greedy) * lp).mean() - self.entropy * ent
        return loss, {"loss": float(loss.detach()), "reward": float(r.mean()), "greedy_reward": float(r_greedy.mean()),
                      "entropy": float(ent.detach())}

    def _masked_loss(self, rows: torch.Tensor, b: torch.Tensor, logits: torch.Tensor, s_explore: torch.Tensor,
                     gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """REINFORCE on the Bernoulli(s') mask distribution restricted to plans within budget (see module doc)."""
        eps = 1e-6
        fits = feasible_with_fallback(self._cost_t, b)  # [N, P]; below every plan: the cheapest only
        m = self._masks_t
        lp_all = torch.log(s_explore + eps) @ m.T + torch.log(1 - s_explore + eps) @ (1 - m).T  # [N, P]
        lp_all = lp_all.masked_fill(~fits, float("-inf"))
        logp = lp_all - torch.logsumexp(lp_all, dim=1, keepdim=True)
        plans = torch.multinomial(logp.detach().exp(), self.n_samples, replacement=True, generator=gen)  # [N, S]
        with torch.no_grad():  # greedy = mode of the (unexplored) restricted policy = the inference plan
            greedy = block_scores_over_plans(logits.detach(), m).masked_fill(~fits, float("-inf"))
            greedy = greedy.argmax(dim=1, keepdim=True)
        r, r_greedy = self._reward(rows, plans, b), self._reward(rows, greedy, b)
        lp = torch.gather(logp, 1, plans)
        ent = bernoulli_entropy(logits)
        loss = -((r - r_greedy) * lp).mean() - self.entropy * ent
        return loss, {"loss": float(loss.detach()), "reward": float(r.mean()), "greedy_reward": float(r_greedy.mean()),
                      "entropy": float(ent.detach())}
