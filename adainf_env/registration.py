"""Gymnasium ids for the AdaInf environment.

``gymnasium.make("AdaInf/Bandit-v0")`` and ``gymnasium.make("AdaInf/Stream-v0")`` build
:class:`adainf_env.env.AdaInfEnv` with ``mode`` preset on the shipped reference calibration table; every other
argument of the env is accepted (``table_path=PATH`` for another outcome table, ``options=EnvOptions(...)``, ...).
``gymnasium.make_vec(id, num_envs=N)`` builds the numpy-batched :class:`adainf_env.gym_vector.AdaInfVectorEnv`
(the ids' ``vector_entry_point``).
"""

from __future__ import annotations

import gymnasium

__all__ = ["BANDIT_ID", "STREAM_ID", "register_envs"]

BANDIT_ID = "AdaInf/Bandit-v0"
STREAM_ID = "AdaInf/Stream-v0"


def register_envs() -> None:
    """Register both ids (idempotent: importing adainf_env twice, or reloading it, does not warn)."""
    for env_id, mode in ((BANDIT_ID, "bandit"), (STREAM_ID, "stream")):
        if env_id in gymnasium.registry:
            continue
        # No TimeLimit: episode length is part of the env (1 request in bandit, episode_length in stream).
        gymnasium.register(id=env_id, entry_point="adainf_env.env:AdaInfEnv",
                           vector_entry_point="adainf_env.gym_vector:AdaInfVectorEnv", kwargs={"mode": mode})


register_envs()
