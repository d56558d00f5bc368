"""The residual-around-LUT policies of the SB3 actor-critic schedulers (PPO, A2C, MaskablePPO).

``logits = W·latent + s·1[k = LUT plan at M]`` with ``W`` zero-initialised (``s`` = the scheduler's ``prior_scale``;
``prior=False`` = SB3's plain MLP policy), so the untrained policy's most probable plan within budget is the look-up-table plan. The LUT one-hot is the
last block of the observation (:class:`agents.sb3.obs.ObsBuilder`).
"""

from __future__ import annotations

from typing import Any

import torch

from adainf_env.errors import ConfigError

__all__ = ["ALGOS", "LUTPrior", "PriorExtractor", "policy_class"]

ALGOS = ("ppo", "a2c", "dqn", "maskable_ppo")


class PriorExtractor(torch.nn.Module):
    """Wraps SB3's ``MlpExtractor``: the actor latent is ``[MLP latent, the observation's LUT one-hot]`` so the
    (linear) action head can add a fixed-at-init ``s·1[k = LUT plan at M]`` to the logits (see :class:`LUTPrior`)."""

    def __init__(self, base: torch.nn.Module, k: int) -> None:
        super().__init__()
        self.base, self.k = base, int(k)
        self.latent_dim_pi = base.latent_dim_pi + self.k
        self.latent_dim_vf = base.latent_dim_vf

    def _prior(self, features: torch.Tensor) -> torch.Tensor:
        return features[:, features.shape[1] - self.k:]  # ObsBuilder puts the LUT one-hot last

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pi, vf = self.base(features)
        return torch.cat([pi, self._prior(features)], dim=1), vf

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.base.forward_actor(features), self._prior(features)], dim=1)

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self.base.forward_critic(features)


class LUTPrior:
    """Mixin for SB3 actor-critic policies: residual policy around the look-up table.

    ``logits = W·latent + s·1[k = LUT plan at M]`` with ``W`` zero-initialised, so the *untrained* policy's most probable
    plan within budget is exactly the LUT plan (its probability e^s / (e^s + K − 1): s = 3 leaves ~40 % exploration
    over K = 15 candidates), and PPO learns per-sample deviations from it. Both parts stay trainable.
    ``lut_prior_dims = 0`` is SB3's plain policy."""

    def __init__(self, *args: Any, lut_prior_dims: int = 0, lut_prior_scale: float = 0.0, **kwargs: Any) -> None:
        self.lut_prior_dims, self.lut_prior_scale = int(lut_prior_dims), float(lut_prior_scale)
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]

    def _build_mlp_extractor(self) -> None:
        super()._build_mlp_extractor()  # type: ignore[misc]
        if self.lut_prior_dims:
            self.mlp_extractor = PriorExtractor(self.mlp_extractor, self.lut_prior_dims)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)  # type: ignore[misc]
        k = self.lut_prior_dims
        if k:
            head = self.action_net  # type: ignore[attr-defined]
            with torch.no_grad():  # in place: the optimiser built by super()._build holds these tensors
                head.weight.zero_()
                head.bias.zero_()
                head.weight[:, head.weight.shape[1] - k:] = self.lut_prior_scale * torch.eye(k)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        d = super()._get_constructor_parameters()  # type: ignore[misc]
        d.update(lut_prior_dims=self.lut_prior_dims, lut_prior_scale=self.lut_prior_scale)
        return d



def policy_class(algo: str) -> type:
    if algo in ("ppo", "a2c"):
        from stable_baselines3.common.policies import ActorCriticPolicy

        return type("LUTPriorActorCriticPolicy", (LUTPrior, ActorCriticPolicy), {})
    if algo == "dqn":
        from stable_baselines3.dqn.policies import DQNPolicy
        return DQNPolicy
    if algo == "maskable_ppo":
        from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy

        return type("LUTPriorMaskableActorCriticPolicy", (LUTPrior, MaskableActorCriticPolicy), {})
    raise ConfigError(f"unknown SB3 algorithm {algo!r}; known: {', '.join(ALGOS)}")


