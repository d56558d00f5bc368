"""Gymnasium ids for the AdaInf environment.

``gymnasium.make("AdaInf/Bandit-v0")`` and ``gymnasium.make("AdaInf/Stream-v0")`` build
:class:`adainf_env.envs.plan.env.AdaInfEnv` with ``mode`` preset on the shipped reference calibration table; every other
argument of the env is accepted (``table_path=PATH`` for another outcome table, ``options=EnvOptions(...)``, ...).
``gymnasium.make_vec(id, num_envs=N)`` builds the numpy-batched :class:`adainf_env.envs.plan.gym_vector.AdaInfVectorEnv`
(the ids' ``vector_entry_point``).

``gymnasium.make("AdaInf/Anytime-v0")`` builds :class:`adainf_env.envs.anytime.env.AnytimeEnv` (block-by-block anytime
inference) on the same default table, with ``invalid_action="fallback"`` (tools that know only the id step
unmasked actions); ``gymnasium.make_vec("AdaInf/Anytime-v0", num_envs=N)`` the numpy-batched
:class:`adainf_env.envs.anytime.gym_vector.AnytimeVectorEnv` (same-step autoreset).
"""

from __future__ import annotations

import gymnasium

__all__ = ["BANDIT_ID", "STREAM_ID", "ANYTIME_ID", "register_envs"]

BANDIT_ID = "AdaInf/Bandit-v0"
STREAM_ID = "AdaInf/Stream-v0"
ANYTIME_ID = "AdaInf/Anytime-v0"


def register_envs() -> None:
    """Register the ids (idempotent: importing adainf_env twice, or reloading it, does not warn)."""
    for env_id, mode in ((BANDIT_ID, "bandit"), (STREAM_ID, "stream")):
        if env_id in gymnasium.registry:
            continue
        # No TimeLimit: episode length is part of the env (1 request in bandit, episode_length in stream).
        gymnasium.register(id=env_id, entry_point="adainf_env.envs.plan.env:AdaInfEnv",
                           vector_entry_point="adainf_env.envs.plan.gym_vector:AdaInfVectorEnv", kwargs={"mode": mode})
    if ANYTIME_ID not in gymnasium.registry:
        # Bandit mode by default (one request per episode, several steps); mode="stream" for streams. Tools that
        # know only the id (env checkers, cleanrl, rl-zoo) step actions without the mask: an invalid one falls back to
        # a valid one (reported in info["invalid_action"]); invalid_action="raise" restores the strict env.
        gymnasium.register(id=ANYTIME_ID, entry_point="adainf_env.envs.anytime.env:AnytimeEnv",
                           vector_entry_point="adainf_env.envs.anytime.gym_vector:AnytimeVectorEnv",
                           kwargs={"invalid_action": "fallback"})


register_envs()
