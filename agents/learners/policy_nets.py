"""Small torch policies g(x, M) shared by the torch learners (``hinge``, ``reinforce``, ``blockdrop``).

Inputs: the table's always-computed stem features ``x [N, F]`` (standardised with a :class:`FeatureScaler` fitted on
the calibration fit rows) and the budget ``M [N]`` (fraction of the full model), fed as ``(M, log M)``.

Two output heads:

* :class:`PlanPolicy` — logits over a list of K *candidate plans* (indices into the table's plan list). Its logits
  carry a cost-aware prior ``−softplus(κ)·relu(c_p − M)/scale`` (κ learnt): a plan's logit falls as it overruns the
  budget, so "argmax over plans within budget" is expressible by a small net for every M at once (the optimum of
  the hinge loss, see :mod:`agents.learners.hinge`, is exactly such a budget-masked argmin of expected loss).
* :class:`BlockPolicy` — B per-block Bernoulli logits (BlockDrop style, Wu et al. 2018).

Also :func:`pareto_plans` — the accuracy/cost Pareto frontier of a (calibration) table, the default candidate set:
on the reference ResNet18 table it keeps 15 of 256 plans, which removes plans no budget would ever choose and makes
learning faster and less noisy (documented in each learner's ``plans`` option; ``plans="all"`` keeps every plan).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from adainf_env.errors import ConfigError
from adainf_env.feasibility import fits, lut_choice, pareto_frontier
from adainf_env.tables.outcomes import OutcomeTable

__all__ = ["FeatureScaler", "PlanPolicy", "BlockPolicy", "budget_inputs", "pareto_plans", "candidate_plans",
           "mlp"]

_MIN_BUDGET = 1e-3  # budgets are validated to (0, 1]; clamp before log for numerical safety


def budget_inputs(budget: torch.Tensor) -> torch.Tensor:
    """``[N]`` budgets (fractions) → ``[N, 2]`` network inputs ``(M, log M)``."""
    b = budget.clamp_min(_MIN_BUDGET)
    return torch.stack([b, torch.log(b)], dim=-1)


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class FeatureScaler(nn.Module):
    """Per-dimension standardisation (x − mean) / std with statistics fitted on calibration rows only."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(feature_dim))
        self.register_buffer("std", torch.ones(feature_dim))

    def fit(self, features: np.ndarray) -> "FeatureScaler":
        f = torch.as_tensor(np.asarray(features, dtype=np.float64))
        self.mean.copy_(f.mean(0).to(self.mean.dtype))
        # 1e-6 floor: a constant feature must not produce inf/NaN.
        self.std.copy_(f.std(0, unbiased=False).clamp_min(1e-6).to(self.std.dtype))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(self.mean.dtype) - self.mean) / self.std


class PlanPolicy(nn.Module):
    """Logits over K candidate plans: ``MLP([x̂, M, log M, 1[c ≤ M]]) − softplus(κ)·relu(c − M)/cost_scale``."""

    def __init__(self, feature_dim: int, plan_cost: np.ndarray, *, hidden: Sequence[int] = (128, 128),
                 cost_prior: bool = True, plan_prior: np.ndarray | None = None, prior_scale: float = 3.0) -> None:
        super().__init__()
        cost = np.asarray(plan_cost, dtype=np.float64)
        if cost.ndim != 1 or cost.size == 0:
            raise ConfigError(f"plan_cost must be a non-empty 1-D array, got shape {cost.shape}")
        self.scaler = FeatureScaler(feature_dim)
        # inputs: features, (M, log M), and which candidates fit the budget (1[c_p ≤ M], K values) — the last makes
        # "best plan among those that fit" a simple function of the input for every budget.
        self.net = mlp([feature_dim + 2 + cost.size, *hidden, cost.size])
        self.register_buffer("plan_cost", torch.as_tensor(cost, dtype=torch.float32))
        self.cost_prior = bool(cost_prior)
        # The prior's unit: one "step" of overrun is the mean gap between sorted plan costs (≈ one plan level).
        gaps = np.diff(np.unique(cost))
        self.cost_scale = float(gaps.mean()) if gaps.size else 1.0
        self.kappa = nn.Parameter(torch.tensor(0.0))
        # LUT prior (``plan_prior`` = the candidates' calibration accuracies): ``prior_scale·1[k = LUT plan at M]`` is
        # added to the logits and the last layer is zero-initialised, so the untrained policy's within-budget argmax
        # is the look-up-table plan, as for the SB3 policies (:mod:`agents.sb3.policy`); training learns per-sample
        # deviations. A bounded bonus (not accuracy/τ logits) keeps the softmax unsaturated: gradients still flow.
        prior = np.zeros(cost.size) if plan_prior is None else np.asarray(plan_prior, dtype=np.float64)
        if prior.shape != cost.shape:
            raise ConfigError(f"plan_prior must have shape {cost.shape}, got {prior.shape}")
        self.register_buffer("plan_prior", torch.as_tensor(prior, dtype=torch.float64))
        self.prior_scale = 0.0 if plan_prior is None else float(prior_scale)
        if plan_prior is not None:
            last = self.net[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
        xs = self.scaler(x)
        b = budget.to(xs.dtype)
        cost = self.plan_cost.to(xs.dtype)
        fit = fits(cost, b).to(xs.dtype)
        logits = self.net(torch.cat([xs, budget_inputs(b), fit], dim=-1))
        if self.cost_prior:
            over = torch.relu(cost[None, :] - b[:, None]) / self.cost_scale
            logits = logits - nn.functional.softplus(self.kappa) * over
        if self.prior_scale:
            lut = lut_choice(self.plan_cost.double(), self.plan_prior, b.detach().double())  # [N] LUT plan at M
            logits = logits + self.prior_scale * nn.functional.one_hot(torch.as_tensor(lut), cost.numel()).to(xs.dtype)
        return logits


class BlockPolicy(nn.Module):
    """B per-block Bernoulli logits from ``[x̂, M, log M]`` (BlockDrop's policy network, budget-conditioned)."""

    def __init__(self, feature_dim: int, num_blocks: int, *, hidden: Sequence[int] = (128, 128)) -> None:
        super().__init__()
        self.scaler = FeatureScaler(feature_dim)
        self.net = mlp([feature_dim + 2, *hidden, int(num_blocks)])

    def forward(self, x: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
        xs = self.scaler(x)
        return self.net(torch.cat([xs, budget_inputs(budget.to(xs.dtype))], dim=-1))


def pareto_plans(table: OutcomeTable, cost: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Plans on the accuracy/cost Pareto frontier of ``table`` (rows ``rows``): sorted by cost, each strictly more
    accurate than every cheaper plan. Always contains the cheapest plan, so every budget ≥ it has a candidate."""
    corr = table.correct if rows is None else table.correct[rows]
    return pareto_frontier(cost, corr.mean(axis=0))


def candidate_plans(table: OutcomeTable, cost: np.ndarray, plans: str | Sequence[int], rows: np.ndarray) -> np.ndarray:
    """Resolve a learner's ``plans`` option: ``"pareto"`` (frontier on ``rows``), ``"all"``, or explicit indices."""
    if isinstance(plans, str):
        if plans == "pareto":
            return pareto_plans(table, cost, rows)
        if plans == "all":
            return np.arange(table.num_plans, dtype=np.int64)
        raise ConfigError(f"plans must be 'pareto', 'all' or a list of plan indices, got {plans!r}")
    idx = np.unique(np.asarray(plans, dtype=np.int64))
    if idx.size == 0 or idx.min() < 0 or idx.max() >= table.num_plans:
        raise ConfigError(f"plan indices must lie in [0, {table.num_plans}), got {list(plans)[:10]}")
    return idx
