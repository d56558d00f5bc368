"""REINFORCE [``anytime_reinforce``] (Williams 1992) on the anytime env: a stage policy (see
:mod:`agents.learners.anytime_policy`) trained by the likelihood-ratio gradient with a learned value baseline.

Per request the return is ``1[correct] − λ_b̄ · (request cost − stem)`` (γ = 1 within a request; λ = 0 for
per-request hard budgets, λ_b̄ from dual ascent on the shared average budget b̄ in streams), credited to each of its
stage decisions. Variance reduction: each request is served ``group_size`` times side by side (same row, same budget)
with independent samples and the baseline is the mean return of the other copies (REINFORCE leave-one-out, Kool et
al. 2019); with ``group_size=1`` a learned state value V(s) is the baseline instead. The advantage is normalised over
the batch; an entropy bonus β·H (annealed to 0) keeps exploration. One gradient step per batch.
"""

from __future__ import annotations

import numpy as np
import torch

from agents.learners.anytime_policy import AnytimeLearnerPolicy

__all__ = ["AnytimeReinforcePolicy"]


class AnytimeReinforcePolicy(AnytimeLearnerPolicy):
    """REINFORCE with a value baseline on the anytime env (keyword arguments: those of
    :class:`~agents.learners.anytime_policy.AnytimeLearnerPolicy`)."""

    name = "anytime_reinforce"
    num_values = 1

    def _update(self, data: dict[str, np.ndarray], it: int) -> None:
        obs, mask, priced, action = (torch.as_tensor(data[k]) for k in ("obs", "mask", "priced", "action"))
        ret_t = torch.as_tensor(data["request_return"], dtype=torch.float32)
        v = self.net.values(obs)[:, 0]
        if self.group_size >= 2:
            adv = ret_t - torch.as_tensor(self.group_baseline(data), dtype=torch.float32)
            vloss = torch.zeros(())
        else:
            adv = ret_t - v.detach()
            vloss = 0.5 * ((v - ret_t) ** 2).mean()
        adv = adv / (adv.std() + 1e-8)
        logp_all = torch.log_softmax(self.net.logits(obs, mask, priced), 1)
        logp = logp_all.gather(1, action[:, None])[:, 0]
        ent = -(logp_all.exp() * logp_all).masked_fill(~mask, 0.0).sum(1).mean()
        loss = -(logp * adv).mean() - self._entropy_coef(it) * ent + vloss
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        self.opt.step()
