"""Price-conditioned (Lagrangian) scheduler [``lagrangian``] for average-cost constraints.

Under a shared compute budget (the stream setting's token bucket) what is constrained is the *average* cost per
request, not each request's cost. The Lagrangian of "maximise E[1[correct]] s.t. E[cost] ≤ b̄" is

    max_π  E_x Σ_p π(p | x) · (P(correct | x, p) − μ · c_p)  + μ · b̄,

whose maximiser for a fixed price μ ≥ 0 is the per-sample rule ``p*(x) = argmax_p P(correct | x, p) − μ·c_p``; the
price μ(b̄) is the one at which the average cost of that rule equals b̄ (cost is non-increasing in μ). A static mixture
of two plans (``hull_mix``) is the same rule with a feature-blind P — so the gain over it is exactly what the features
say about which samples are easy.

Components (all fitted on the calibration table; the test split never trains or prices anything):

* **Correctness model** P̂(correct | x, p) for the candidate plans (the calibration accuracy/cost Pareto front):
  standardised stem features → MLP → one logit per plan; with ``prior=True`` *plus* the logit of the plan's
  calibration accuracy (last layer zero-initialised, so the untrained model predicts the base rates and its bandit
  rule is the LUT), with ``prior=False`` a plain MLP. Trained with binary cross-entropy on the fit rows; the epoch
  kept is the one (≥ 1: never the untrained model, as for every learner) with the lowest held-out BCE
  (``selected_step`` records it). Not the other learners' bandit-accuracy score: the deployed rule uses P̂ at every
  price μ, the bandit score tests only μ = 0 (on the toy table it is flat over epochs while the BCE falls 10×); the
  BCE, a proper scoring rule, scores the model for every price at once.
* **Price curve** μ(b̄): on the held-out rows (never seen by the correctness model's gradient steps) bisection finds,
  for a grid of average budgets, the smallest μ whose rule costs ≤ b̄ on average. Stored with the scheduler.
* **Bucket controller** (``gain``): in a token-bucket stream the price follows the bucket,
  ``μ_t = μ(b̄) · exp(gain · (target − level_t) / cap)`` with ``target = target_level·cap`` — a fuller bucket (budget
  about to be wasted at the cap) lowers the price, an emptier one raises it. ``gain = 0`` is the static price.
  Every request is restricted to plans within what it may spend (``available``), so it never overruns.
* **Bandit** (a per-request budget, no ``avg_budget`` in the state): μ = 0 — the most probably correct plan within
  the budget.

Save/load through :class:`~agents.base.Scheduler` (``.npz`` arrays, no pickles).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from adainf_env.errors import ConfigError
from adainf_env.feasibility import COST_TOL, masked_argmax
from adainf_env.tables.outcomes import OutcomeTable
from agents.base import PlanSpace, check_budgets
from agents.learners.base import PRIOR_DEFAULT, LearnerBase, load_weights, resolve_prior, split_rows, weights_to_arrays
from agents.learners.policy_nets import FeatureScaler, candidate_plans, mlp
from agents.progress import progress_disabled

__all__ = ["LagrangianScheduler", "CorrectnessModel", "price_curve", "price_for_budget", "route"]


class CorrectnessModel(nn.Module):
    """x [N, F] → logits [N, K] of P(correct | x, plan k): ``MLP(x̂) + logit(base rate_k)``."""

    def __init__(self, feature_dim: int, num_plans: int, *, hidden: Sequence[int] = (128, 128),
                 prior: bool = True) -> None:
        super().__init__()
        self.scaler = FeatureScaler(feature_dim)
        self.net = mlp([feature_dim, *hidden, num_plans])
        if prior:  # the base-rate logits (set by fit) carry the untrained model; the net learns deviations
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)
        self.register_buffer("base_logit", torch.zeros(num_plans))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.scaler(x)) + self.base_logit


def route(prob: np.ndarray, cost: np.ndarray, mu: np.ndarray | float, limit: np.ndarray | None = None) -> np.ndarray:
    """Candidate index ``argmax_k prob[n, k] − mu[n]·cost[k]`` over candidates with ``cost ≤ limit[n]`` (the
    cheapest candidate when none fits). ``prob`` [N, K], ``cost`` [K], ``mu`` scalar or [N]."""
    mu = np.broadcast_to(np.asarray(mu, dtype=np.float64), (prob.shape[0],))
    score = prob - mu[:, None] * cost[None, :]
    if limit is not None:
        return masked_argmax(score, cost, limit)
    return score.argmax(axis=1)


def _mean_cost(prob: np.ndarray, cost: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Mean cost of the unrestricted rule at each price of ``mu`` [G] → [G] (vectorised over prices)."""
    k = (prob[None, :, :] - mu[:, None, None] * cost[None, None, :]).argmax(axis=2)  # [G, N]
    return cost[k].mean(axis=1)


def price_curve(prob: np.ndarray, cost: np.ndarray, avg_budgets: np.ndarray, *, iters: int = 50) -> np.ndarray:
    """For each average budget, the smallest price μ ≥ 0 whose rule :func:`route` has mean cost ≤ it on the rows of
    ``prob`` (bisection, all budgets at once; the mean cost is non-increasing in μ). A budget the μ = 0 rule already
    meets gives 0; one below the cheapest candidate gives the price at which every row takes the cheapest."""
    b = np.asarray(avg_budgets, dtype=np.float64).reshape(-1) + COST_TOL  # "≤ b̄" with the harness's tolerance
    prob = np.asarray(prob, dtype=np.float64)
    # above max Δprob / Δcost every row takes the cheapest candidate
    gaps = np.diff(np.unique(cost))
    hi_all = 2.0 / max(float(gaps.min()) if gaps.size else 1.0, 1e-12)
    lo, hi = np.zeros_like(b), np.full_like(b, hi_all)
    done = _mean_cost(prob, cost, lo) <= b
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        over = _mean_cost(prob, cost, mid) > b
        lo, hi = np.where(over, mid, lo), np.where(over, hi, mid)
    return np.where(done, 0.0, hi)


def price_for_budget(prob: np.ndarray, cost: np.ndarray, avg_budget: float, *, iters: int = 50) -> float:
    """:func:`price_curve` for one average budget."""
    return float(price_curve(prob, cost, np.array([avg_budget]), iters=iters)[0])


class LagrangianScheduler(LearnerBase):
    """Per-sample correctness model + a price on compute (see the module docstring). Keyword arguments: training
    (``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``hidden``, ``val_fraction``), candidate set (``plans``:
    "pareto" | "all" | indices), controller (``gain`` ≥ 0, ``target_level`` in [0, 1]), ``progress``."""

    name = "lagrangian"

    def __init__(self, *, epochs: int = 25, batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 1e-4,
                 hidden: Sequence[int] = (128, 128), plans: str | Sequence[int] = "pareto", val_fraction: float = 0.3,
                 gain: float = 1.0, target_level: float = 0.5, price_grid: int = 64, prior: bool | None = None,
                 progress: bool | None = None) -> None:
        if int(epochs) < 1 or int(batch_size) < 1 or int(price_grid) < 2:
            raise ConfigError(f"epochs, batch_size ≥ 1 and price_grid ≥ 2 required, got {epochs}, {batch_size}, "
                              f"{price_grid}")
        if not (lr > 0 and math.isfinite(lr)) or not weight_decay >= 0:
            raise ConfigError(f"lr must be > 0 and weight_decay ≥ 0, got {lr}, {weight_decay}")
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1) (the price is fitted on held-out rows), got "
                              f"{val_fraction}")
        if not (math.isfinite(gain) and gain >= 0) or not 0.0 <= target_level <= 1.0:
            raise ConfigError(f"gain must be ≥ 0 and target_level in [0, 1], got {gain}, {target_level}")
        if isinstance(plans, str) and plans not in ("pareto", "all"):
            raise ConfigError(f"plans must be 'pareto', 'all' or a list of plan indices, got {plans!r}")
        self.epochs, self.batch_size, self.lr = int(epochs), int(batch_size), float(lr)
        self.weight_decay = float(weight_decay)
        self.hidden = [int(h) for h in hidden]
        self.plans = plans if isinstance(plans, str) else [int(p) for p in plans]
        self.val_fraction, self.gain, self.target_level = float(val_fraction), float(gain), float(target_level)
        self.price_grid = int(price_grid)
        self.prior = resolve_prior(prior, default=PRIOR_DEFAULT, supported=True, who=self.name)
        self.progress = progress
        self.model: CorrectnessModel | None = None
        self.candidates: np.ndarray | None = None
        self.grid_budget: np.ndarray | None = None  # [G] average budgets (fractions)
        self.grid_price: np.ndarray | None = None  # [G] μ(b̄), accuracy per unit of cost
        self.history: list[dict[str, float]] = []

    def config(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                "weight_decay": self.weight_decay, "hidden": self.hidden, "plans": self.plans,
                "val_fraction": self.val_fraction, "gain": self.gain, "target_level": self.target_level,
                "price_grid": self.price_grid, "prior": self.prior}

    # ----------------------------------------------------------------- state
    def state_arrays(self) -> dict[str, np.ndarray]:
        assert self.model is not None
        out = weights_to_arrays(self.model)
        out.update(candidates=self.candidates, grid_budget=self.grid_budget, grid_price=self.grid_price,
                   selected_step=np.array(-1 if self.selected_step is None else self.selected_step))
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        assert self.plan_space is not None
        self.candidates = arrays["candidates"].astype(np.int64)
        self.grid_budget = arrays["grid_budget"].astype(np.float64)
        self.grid_price = arrays["grid_price"].astype(np.float64)
        step = int(arrays.get("selected_step", -1))
        self.selected_step = None if step < 0 else step
        self.model = CorrectnessModel(self.plan_space.feature_dim, len(self.candidates), hidden=self.hidden,
                                      prior=self.prior)
        load_weights(self.model, arrays, who=self.name)
        self.model.eval()

    # ----------------------------------------------------------------- inference
    def predict_correct(self, features: np.ndarray) -> np.ndarray:
        """P̂(correct | x, candidate k) [N, K]."""
        if self.model is None:
            raise ConfigError(f"{self.name}: call fit() before using the scheduler")
        self.model.eval()
        with torch.no_grad():
            return torch.sigmoid(self.model(torch.as_tensor(np.asarray(features, dtype=np.float32)))).double().numpy()

    def price(self, avg_budget: np.ndarray) -> np.ndarray:
        """μ(b̄) interpolated on the fitted grid (accuracy per unit of cost)."""
        assert self.grid_budget is not None and self.grid_price is not None
        return np.interp(np.asarray(avg_budget, dtype=np.float64), self.grid_budget, self.grid_price)

    def select(self, features: np.ndarray, budgets: np.ndarray, state: dict[str, Any] | None = None) -> np.ndarray:
        features, budgets = self._validated_inputs(features, budgets, fitted=self.model is not None)
        cost = self.plan_space.plan_cost[self.candidates]
        prob = self.predict_correct(features)
        mu = np.zeros(features.shape[0])
        if state is not None and state.get("avg_budget") is not None:
            avg = check_budgets(state["avg_budget"], features.shape[0])
            mu = self.price(avg)
            cap = float(state.get("cap", float("nan")))
            if self.gain > 0 and state.get("level") is not None and math.isfinite(cap) and cap > 0:
                level = np.asarray(state["level"], dtype=np.float64).reshape(-1)
                mu = mu * np.exp(self.gain * (self.target_level * cap - level) / cap)
        return self.candidates[route(prob, cost, mu, budgets)]

    def _is_fitted(self) -> bool:
        return self.model is not None

    def _select_idx(self, features: np.ndarray, budgets: np.ndarray) -> np.ndarray:
        """The bandit rule (μ = 0): the most probably correct candidate within each budget (held-out scoring)."""
        prob = self.predict_correct(features)
        return self.candidates[route(prob, self.plan_space.plan_cost[self.candidates], 0.0, budgets)]

    # ----------------------------------------------------------------- training
    def fit(self, table: OutcomeTable, *, seed: int = 0, cost_unit: str = "macs") -> "LagrangianScheduler":
        self.plan_space = PlanSpace.from_table(table, cost_unit)
        cost_all = self.plan_space.plan_cost
        val_rows, fit_rows = split_rows(table.num_samples, self.val_fraction, seed, min_val=1, who=self.name)
        self.candidates = candidate_plans(table, cost_all, self.plans, np.arange(table.num_samples))
        k = len(self.candidates)
        y = torch.as_tensor(table.correct[:, self.candidates], dtype=torch.float32)
        x = torch.as_tensor(table.features, dtype=torch.float32)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.model = CorrectnessModel(table.feature_dim, k, hidden=self.hidden, prior=self.prior)
        self.model.scaler.fit(table.features[fit_rows])
        if self.prior:
            rate = y[fit_rows].mean(0).clamp(1e-4, 1 - 1e-4)
            self.model.base_logit.copy_(torch.log(rate) - torch.log1p(-rate))
        opt = torch.optim.Adam(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(int(seed))
        bce = nn.BCEWithLogitsLoss()
        fit_t, val_t = torch.as_tensor(fit_rows), torch.as_tensor(val_rows)

        def val_loss() -> float:
            self.model.eval()
            with torch.no_grad():
                return float(bce(self.model(x[val_t]), y[val_t]))

        # the untrained model is a logged reference; epochs ≥ 1 are the candidates
        self.history = [{"epoch": 0.0, "val_bce": val_loss()}]
        best, best_state, best_step = math.inf, None, None
        for epoch in tqdm(range(self.epochs), desc=f"{self.name} fit", leave=False,
                          disable=progress_disabled(self.progress)):
            self.model.train()
            order = fit_t[torch.randperm(fit_t.numel(), generator=gen)]
            for i in range(0, order.numel(), self.batch_size):
                rows = order[i:i + self.batch_size]
                loss = bce(self.model(x[rows]), y[rows])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            v = val_loss()
            self.history.append({"epoch": float(epoch + 1), "val_bce": v})
            if v < best:
                best, best_step = v, epoch + 1
                best_state = {n: t.clone() for n, t in self.model.state_dict().items()}
        self.selected_step = best_step
        self.model.load_state_dict(best_state)
        self.model.eval()
        # Price curve on held-out rows: the correctness model never took a gradient step on them.
        prob_val = self.predict_correct(table.features[val_rows])
        cand_cost = cost_all[self.candidates]
        self.grid_budget = np.linspace(float(cand_cost.min()), 1.0, self.price_grid)
        self.grid_price = price_curve(prob_val, cand_cost, self.grid_budget)
        return self
