"""Our REINFORCE scheduler [``reinforce``] (Williams 1992) on an outcome table.

Policy: softmax over candidate plans from :class:`~agents.learners.policy_nets.PlanPolicy` (``policy="plans"``) or per-block
Bernoulli from :class:`~agents.learners.policy_nets.BlockPolicy` (``policy="blocks"``; needs a table holding all 2^B plans).

Per minibatch of calibration rows with budgets M sampled uniformly from the budget range, ``n_samples`` actions are
sampled per row and rewarded with the environment's bandit reward

    r = 1[correct] − λ · max(0, c_a − M)

The baseline is the reward of the greedy action (self-critical, Rennie et al. 2017) and an entropy bonus β·H keeps
exploration. With ``mask_over_budget=True`` (default) the policy only ever samples plans within the budget during
training as well (the action-mask view of the env; the overrun term is then always 0); ``False`` samples every plan
and lets λ teach the budget. Inference is the greedy action within budget (see :mod:`agents.learners.torch_learner`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from adainf_env.errors import ConfigError
from adainf_env.feasibility import feasible_with_fallback
from adainf_env.plans import code_lookup, codes_from_masks
from adainf_env.tables.outcomes import OutcomeTable
from agents.learners.policy_nets import BlockPolicy
from agents.learners.torch_learner import TorchTableLearner

__all__ = ["ReinforceScheduler", "block_plan_lookup", "block_scores_over_plans", "bernoulli_entropy"]


def block_plan_lookup(table: OutcomeTable) -> np.ndarray:
    """[2^B] array: block-mask code → index into the table's plan list (requires every plan to be present)."""
    b = table.num_blocks
    if b > 20 or table.num_plans != (1 << b):
        raise ConfigError(
            f"a per-block policy on a table needs every one of the 2^{b} plans; this table has {table.num_plans} "
            "(use policy='plans' for a plan subset)")
    return code_lookup(codes_from_masks(table.plan_masks), b)


def bernoulli_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the summed per-block Bernoulli entropies (nats), differentiable in ``logits``."""
    p = torch.sigmoid(logits)
    return -(p * nn.functional.logsigmoid(logits) + (1 - p) * nn.functional.logsigmoid(-logits)).sum(-1).mean()


def block_scores_over_plans(block_logits: torch.Tensor, plan_masks: torch.Tensor) -> torch.Tensor:
    """Log-likelihood of each plan under factorised Bernoulli(sigmoid(logits)): [N, B] × [K, B] → [N, K].
    Its argmax over within-budget plans is the most probable plan that fits the budget."""
    logp = nn.functional.logsigmoid(block_logits)
    log1mp = nn.functional.logsigmoid(-block_logits)
    m = plan_masks.to(block_logits.dtype)
    return logp @ m.T + log1mp @ (1 - m).T


class ReinforceScheduler(TorchTableLearner):
    """REINFORCE with a self-critical baseline and entropy bonus. Extra keyword arguments: ``lam`` (λ ≥ 0),
    ``entropy`` (β ≥ 0), ``n_samples`` (actions per row per step), ``policy`` ("plans" | "blocks"),
    ``mask_over_budget``."""

    name = "reinforce"

    def __init__(self, *, lam: float = 2.0, entropy: float = 0.01, n_samples: int = 4, policy: str = "plans",
                 mask_over_budget: bool = True, epochs: int = 30, batch_size: int = 256, lr: float = 3e-3,
                 weight_decay: float = 1e-4, hidden: Sequence[int] = (128, 128), plans: str | Sequence[int] = "pareto",
                 val_fraction: float = 0.2, restrict_to_budget: bool = True, prior: bool | None = None,
                 prior_scale: float = 3.0, progress: bool | None = None) -> None:
        if policy not in ("plans", "blocks"):
            raise ConfigError(f"policy must be 'plans' or 'blocks', got {policy!r}")
        self.supports_prior = policy == "plans"  # a per-block Bernoulli policy has no per-plan logit to bias
        super().__init__(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, hidden=hidden,
                         plans=plans if policy == "plans" else "all", val_fraction=val_fraction,
                         restrict_to_budget=restrict_to_budget, prior=prior, prior_scale=prior_scale,
                         progress=progress)
        if not (lam >= 0 and entropy >= 0):
            raise ConfigError(f"lam and entropy must be ≥ 0, got {lam}, {entropy}")
        if int(n_samples) < 1:
            raise ConfigError(f"n_samples must be ≥ 1, got {n_samples}")
        self.lam, self.entropy, self.n_samples = float(lam), float(entropy), int(n_samples)
        self.policy_kind = policy
        self.mask_over_budget = bool(mask_over_budget)

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update(lam=self.lam, entropy=self.entropy, n_samples=self.n_samples, policy=self.policy_kind,
                   mask_over_budget=self.mask_over_budget)
        if self.policy_kind == "blocks":
            cfg.pop("plans")
        return cfg

    # ----------------------------------------------------------------- policy
    def _build_policy(self, feature_dim: int, cand_cost: np.ndarray, num_blocks: int,
                      cand_acc: np.ndarray | None = None) -> nn.Module:
        if self.policy_kind == "blocks":
            return BlockPolicy(feature_dim, num_blocks, hidden=self.hidden)
        return super()._build_policy(feature_dim, cand_cost, num_blocks, cand_acc)

    def _candidate_scores(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        assert self.policy is not None and self.plan_space is not None and self.candidates is not None
        out = self.policy(x, b)
        if self.policy_kind == "blocks":
            masks = torch.as_tensor(self.plan_space.plan_masks[self.candidates])
            return block_scores_over_plans(out.double(), masks)
        return out

    def _prepare(self, table: OutcomeTable, cost: np.ndarray) -> None:
        assert self.candidates is not None
        self._correct_t = torch.as_tensor(table.correct[:, self.candidates]).float()
        self._cost_t = torch.as_tensor(cost[self.candidates], dtype=torch.float32)
        if self.policy_kind == "blocks":
            # candidates are all plans in table order here; map block codes straight to plan indices
            self._code_to_plan = torch.as_tensor(block_plan_lookup(table))
            self._weights = torch.as_tensor(1 << np.arange(table.num_blocks), dtype=torch.int64)

    def _reward(self, rows: torch.Tensor, plans: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Env bandit reward for plan indices ``plans`` [N, S] of rows [N] under budgets [N]."""
        corr = torch.gather(self._correct_t[rows], 1, plans)
        over = torch.relu(self._cost_t[plans] - b[:, None])
        return corr - self.lam * over

    def _batch_loss(self, rows: torch.Tensor, budgets: torch.Tensor,
                    gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        assert self.policy is not None
        b = budgets.float()
        out = self.policy(self._features_t[rows], b)
        if self.policy_kind == "blocks":
            return self._block_loss(rows, b, out, gen)
        logits = out
        if self.mask_over_budget:
            fits = feasible_with_fallback(self._cost_t, b)
            logits = logits.masked_fill(~fits, float("-inf"))
        logp = torch.log_softmax(logits, dim=-1)
        probs = logp.exp()
        actions = torch.multinomial(probs.detach(), self.n_samples, replacement=True, generator=gen)  # [N, S]
        greedy = logits.detach().argmax(dim=1, keepdim=True)
        r = self._reward(rows, actions, b)
        r_greedy = self._reward(rows, greedy, b)
        adv = r - r_greedy
        ent = -(probs * logp.masked_fill(probs == 0, 0.0)).sum(-1).mean()
        loss = -(adv * torch.gather(logp, 1, actions)).mean() - self.entropy * ent
        return loss, {"loss": float(loss.detach()), "reward": float(r.mean()), "greedy_reward": float(r_greedy.mean()),
                      "entropy": float(ent.detach())}

    def _block_loss(self, rows: torch.Tensor, b: torch.Tensor, logits: torch.Tensor,
                    gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """Per-block Bernoulli REINFORCE on the same env reward (over-budget samples pay λ·overrun)."""
        n, nb = logits.shape
        p = torch.sigmoid(logits)
        u = torch.rand((n, self.n_samples, nb), generator=gen) < p.detach()[:, None, :]
        plans = self._code_to_plan[(u.long() * self._weights).sum(-1)]
        greedy = self._code_to_plan[((p.detach() > 0.5).long() * self._weights).sum(-1)][:, None]
        r, r_greedy = self._reward(rows, plans, b), self._reward(rows, greedy, b)
        lp = torch.where(u, nn.functional.logsigmoid(logits)[:, None, :],
                         nn.functional.logsigmoid(-logits)[:, None, :]).sum(-1)
        ent = bernoulli_entropy(logits)
        loss = -((r - r_greedy) * lp).mean() - self.entropy * ent
        return loss, {"loss": float(loss.detach()), "reward": float(r.mean()), "greedy_reward": float(r_greedy.mean()),
                      "entropy": float(ent.detach())}
