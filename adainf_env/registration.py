"""Gymnasium ids for the AdaInf environment.

``gymnasium.make("AdaInf/Bandit-v0", table_path=PATH, ...)`` and ``gymnasium.make("AdaInf/Stream-v0", table_path=PATH,
...)`` build :class:`adainf_env.env.AdaInfEnv` with ``mode`` preset; every other argument of the env is accepted.
PATH is a project outcome table or a reference table (``../shared/reference/table_calib.npz``).
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
        gymnasium.register(id=env_id, entry_point="adainf_env.env:AdaInfEnv", kwargs={"mode": mode})


register_envs()
