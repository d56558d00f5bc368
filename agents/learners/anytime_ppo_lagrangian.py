"""PPO-Lagrangian [``anytime_ppo_lagrangian``] on the anytime env (the PPO-Lag of OmniSafe; Ray, Achiam & Amodei 2019,
"Benchmarking Safe Exploration in Deep RL"): PPO's clipped surrogate on a stage policy (see
:mod:`agents.learners.anytime_policy`) with a Lagrange multiplier on the expected-cost constraint.

* Two critics: V_r (reward: 1[correct] at the request's end) and V_c (cost: what each stage paid, the env's
  ``info["cost"]`` summed over the stage); GAE(γ, λ_GAE) advantages A_r, A_c over a request's decisions.
* Shared average budget b̄ (token-bucket streams): constraint E[request cost] ≤ b̄, one multiplier λ_b̄ ≥ 0 per grid
  budget, updated by dual ascent ``λ ← max(0, λ + η·(J_c − b̄)/b̄)`` from the rollouts' request costs; per-request hard
  budgets (masked) carry λ = 0.
* The policy maximises reward − λ·cost with OmniSafe's combined advantage ``(A_r − λ·A_c) / (1 + λ)``, normalised,
  ``epochs`` passes of ``minibatches`` minibatches per batch, ratio clipped to [1 − ε, 1 + ε].
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from adainf_env.errors import ConfigError, check_count
from agents.learners.anytime_policy import AnytimeLearnerPolicy
from agents.learners.stage_net import chain_sum

__all__ = ["PPOLagrangianPolicy"]


class PPOLagrangianPolicy(AnytimeLearnerPolicy):
    """PPO-Lagrangian stage policy. Extra keyword arguments: ``clip`` (ε), ``epochs``, ``minibatches``, ``gamma``
    (discount between a request's decisions), ``gae_lambda``."""

    name = "anytime_ppo_lagrangian"
    num_values = 2

    def __init__(self, *, clip: float = 0.2, epochs: int = 4, minibatches: int = 4, gamma: float = 1.0,
                 gae_lambda: float = 0.95, iterations: int = 200, **kwargs: Any) -> None:
        super().__init__(iterations=iterations, **kwargs)
        for k, v, lo, hi in (("clip", clip, 0.0, 1.0), ("gamma", gamma, 0.0, 1.0), ("gae_lambda", gae_lambda, 0.0, 1.0)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi \
                    or (k == "clip" and v == 0):
                raise ConfigError(f"{self.name}: {k} must lie in ({lo}, {hi}], got {v!r}" if k == "clip" else
                                  f"{self.name}: {k} must lie in [{lo}, {hi}], got {v!r}")
        for k, v in (("epochs", epochs), ("minibatches", minibatches)):
            check_count(v, f"{self.name}: {k}")
        self.clip, self.epochs, self.minibatches = float(clip), int(epochs), int(minibatches)
        self.gamma, self.gae_lambda = float(gamma), float(gae_lambda)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "clip": self.clip, "epochs": self.epochs, "minibatches": self.minibatches,
                "gamma": self.gamma, "gae_lambda": self.gae_lambda}

    def _update(self, data: dict[str, np.ndarray], it: int) -> None:
        obs, mask, priced, action = (torch.as_tensor(data[k]) for k in ("obs", "mask", "priced", "action"))
        old_logp = torch.as_tensor(data["logp"], dtype=torch.float32)
        nxt = data["next"]
        with torch.no_grad():
            v = self.net.values(obs).double().numpy()
        v_next = np.where((nxt >= 0)[:, None], v[np.maximum(nxt, 0)], 0.0)
        adv, ret = [], []
        for j, x in enumerate((data["reward"], data["cost"])):
            delta = x + self.gamma * v_next[:, j] - v[:, j]
            a = chain_sum(delta, nxt, self.gamma * self.gae_lambda)
            adv.append(a)
            ret.append(a + v[:, j])
        lam = data["lam"]
        a = (adv[0] - lam * adv[1]) / (1.0 + lam)
        a = torch.as_tensor((a - a.mean()) / (a.std() + 1e-8), dtype=torch.float32)
        ret_t = torch.as_tensor(np.stack(ret, axis=1), dtype=torch.float32)
        n = len(a)
        beta = self._entropy_coef(it)
        gen = torch.Generator().manual_seed(int(self._rng.integers(2 ** 31)))
        for _ in range(self.epochs):
            perm = torch.randperm(n, generator=gen)
            for mb in perm.chunk(self.minibatches):
                logp_all = torch.log_softmax(self.net.logits(obs[mb], mask[mb], priced[mb]), 1)
                logp = logp_all.gather(1, action[mb, None])[:, 0]
                ratio = torch.exp(logp - old_logp[mb])
                surr = torch.min(ratio * a[mb], ratio.clamp(1 - self.clip, 1 + self.clip) * a[mb])
                ent = -(logp_all.exp() * logp_all).masked_fill(~mask[mb], 0.0).sum(1).mean()
                vloss = ((self.net.values(obs[mb]) - ret_t[mb]) ** 2).sum(1).mean()
                loss = -surr.mean() - beta * ent + 0.5 * vloss
                self.opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
                self.opt.step()
