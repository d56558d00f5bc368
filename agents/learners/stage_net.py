"""The parts of the learned anytime stage policy (:mod:`agents.learners.anytime_policy`) that are not the learner
itself: the candidate targets (:func:`candidate_codes`), the network (:class:`StageNet`: logits over STOP + K
candidates priced by the Lagrange multiplier, value heads), the decision records of a batch of requests
(:class:`Rollout`) and sums along a request's decisions (:func:`chain_sum`, for returns to go and GAE).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from adainf_env.errors import ConfigError
from adainf_env.feasibility import pareto_frontier
from adainf_env.plans import codes_from_masks, extension_mask
from adainf_env.tables.outcomes import OutcomeTable
from agents.learners.policy_nets import mlp

__all__ = ["CANDIDATE_SETS", "STOP_ACTION", "candidate_codes", "chain_sum", "StageNet", "Rollout"]

#: The candidate sets of the stage policy's ``candidates`` option.
CANDIDATE_SETS = ("pareto_ext", "all")
#: Index of STOP among the policy's actions; action k ≥ 1 is candidate k − 1.
STOP_ACTION = 0


def candidate_codes(table: OutcomeTable, mode: str = "pareto_ext") -> np.ndarray:
    """Sorted plan codes the policy may target, from ``table``'s (calibration fit rows') accuracies."""
    if mode not in CANDIDATE_SETS:
        raise ConfigError(f"candidates must be one of {list(CANDIDATE_SETS)}, got {mode!r}")
    codes = codes_from_masks(table.plan_masks)
    if mode == "all":
        return np.sort(codes)
    cost, acc = table.plan_cost(), table.accuracy_by_plan()
    front = pareto_frontier(cost, acc)
    keep = set(int(codes[p]) for p in front)
    for p in front:
        a = int(codes[p])
        ext = np.flatnonzero(extension_mask(codes, a))
        if ext.size:
            keep.update(int(codes[e]) for e in ext[pareto_frontier(cost[ext], acc[ext])])
    return np.array(sorted(keep), dtype=np.int64)


def chain_sum(x: np.ndarray, nxt: np.ndarray, decay: float | np.ndarray = 1.0) -> np.ndarray:
    """``y[i] = x[i] + decay·y[nxt[i]]`` along each request's decisions (``nxt`` −1 at the last): sums to go, GAE."""
    x = np.asarray(x, dtype=np.float64)
    y = x.copy()
    has = nxt >= 0
    for _ in range(len(x)):
        new = x + np.where(has, decay * y[np.maximum(nxt, 0)], 0.0)
        if np.array_equal(new, y):
            break
        y = new
    return y


class StageNet(nn.Module):
    """Logits over STOP + K candidates and ``num_values`` value heads (reward, cost) from one observation vector."""

    def __init__(self, obs_dim: int, num_actions: int, hidden: Sequence[int], num_values: int,
                 shared_col: int) -> None:
        super().__init__()
        # one output head per setting (per-request budget / shared bucket) on a common body: the two settings want
        # different choices from the same request (the most accurate plan that fits vs the best one at a price)
        self.num_actions, self.shared_col = int(num_actions), int(shared_col)
        self.pi = mlp([obs_dim, *hidden, 2 * num_actions], nn.Tanh)
        self.v = mlp([obs_dim, *hidden, num_values], nn.Tanh)
        # the price term's scale softplus(κ) (learnt; starts at 5 logits per unit of λ·cost)
        self.kappa = nn.Parameter(torch.tensor(5.0))

    def logits(self, obs: torch.Tensor, mask: torch.Tensor, priced: torch.Tensor) -> torch.Tensor:
        """``pi(obs) − softplus(κ)·λ·c`` with ``priced`` = λ·c [N, A] (each stage's incremental cost at the
        request's price λ): the multiplier acts on the logits directly, so a change of λ moves the policy at once."""
        out = self.pi(obs)
        a = self.num_actions
        head = torch.where(obs[:, self.shared_col:self.shared_col + 1] > 0.5, out[:, a:], out[:, :a])
        return (head - nn.functional.softplus(self.kappa) * priced).masked_fill(~mask, -1e9)

    def values(self, obs: torch.Tensor) -> torch.Tensor:
        return self.v(obs)


class Rollout:
    """Decision records of one batch of requests (numpy, in the order the decisions were taken)."""

    def __init__(self) -> None:
        self.obs: list[np.ndarray] = []
        self.mask: list[np.ndarray] = []
        self.action: list[np.ndarray] = []
        self.logp: list[np.ndarray] = []
        self.slot: list[np.ndarray] = []
        self.spent: list[np.ndarray] = []
        self.priced: list[np.ndarray] = []

    def add(self, obs, mask, priced, action, logp, slot, spent) -> None:
        for k, v in (("obs", obs), ("mask", mask), ("priced", priced), ("action", action), ("logp", logp),
                     ("slot", slot), ("spent", spent)):
            getattr(self, k).append(v)

    def finish(self, correct: np.ndarray, total: np.ndarray, lam: np.ndarray) -> dict[str, np.ndarray]:
        """Arrays over decisions: ``reward`` (1[correct] at a request's last decision), ``cost`` (cost paid from this
        decision to the next / to the end), ``last`` (the request's last decision), ``lam`` (its multiplier)."""
        cat = {k: np.concatenate(getattr(self, k)) for k in ("obs", "mask", "priced", "action", "logp", "slot",
                                                              "spent")}
        slot, spent = cat["slot"], cat["spent"]
        order = np.lexsort((np.arange(len(slot)), slot))  # by slot, then time
        nxt = np.full(len(slot), -1, dtype=np.int64)
        same = slot[order][1:] == slot[order][:-1]
        nxt[order[:-1][same]] = order[1:][same]
        last = nxt < 0
        end_spent = np.where(last, total[slot], spent[np.maximum(nxt, 0)])
        cat.update(reward=np.where(last, correct[slot].astype(np.float64), 0.0), cost=end_spent - spent, last=last,
                   next=nxt, lam=lam[slot])
        return cat
