"""The numpy-batched AdaInf env as a Gymnasium ``VectorEnv`` (what ``gymnasium.make_vec`` returns).

``gymnasium.make_vec("AdaInf/Bandit-v0", num_envs=N)`` (the ids' ``vector_entry_point``; also with
``vectorization_mode="vector_entry_point"``) builds :class:`AdaInfVectorEnv`: a thin adapter over
:class:`~adainf_env.envs.plan.batched.PlanBatchedEnv` (no SB3), so N envs step as a few numpy operations instead of N Python ``step``
calls. Same numbers as ``gymnasium.make_vec(..., vectorization_mode="sync",
vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})`` (tested).

Autoreset: ``AutoresetMode.SAME_STEP``. All envs end their episodes on the same step (bandit: every step; stream:
every ``episode_length`` steps). On that step ``terminations`` is all True, the returned observation is already the
next episode's first request, and ``infos`` holds

* ``final_obs``: the *batched* observation the ended step's actions were chosen on (an array ``[N, ...]``, or a dict
  of them for ``obs_format="dict"``; index it per key, not per env), with ``_final_obs`` (all True);
* ``final_info``: the served requests' ``plan``, ``cost``, ``correct``, ``overrun``, ``budget``, ``sample`` (arrays
  ``[N]``, each with its ``_key`` mask), with ``_final_info``; the ``_key`` masks are one shared read-only array;
* ``sample`` and ``budget``: the new requests (what ``reset`` reports).

On the other steps (stream, mid-episode) ``infos`` is the served requests' ``plan`` … ``sample`` directly. Episodes
are never truncated. Rewards are float32. Seeding: ``reset(seed=s)`` seeds env i with ``s + i`` (a list gives one
seed per env), exactly as the single env ``reset(seed=s + i)``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from adainf_env.envs.options import EnvOptions
from adainf_env.tables.outcomes import OutcomeTable
from adainf_env.envs.plan.batched import PlanBatchedEnv
from adainf_env.envs.gym_vector_base import CoreVectorEnv, seed_and_options

__all__ = ["AdaInfVectorEnv"]

_STEP_KEYS = ("plan", "cost", "correct", "overrun", "budget", "sample")


class AdaInfVectorEnv(CoreVectorEnv):
    """``num_envs`` AdaInf envs as a Gymnasium ``VectorEnv``; arguments as :class:`~adainf_env.envs.plan.env.AdaInfEnv`
    (table mode; no table → the shipped reference calibration table). ``self.core`` is the underlying
    :class:`~adainf_env.envs.plan.batched.PlanBatchedEnv` (``get_state``/``set_state``, ``action_masks``)."""

    def __init__(
        self,
        num_envs: int = 1,
        *,
        table: OutcomeTable | None = None,
        table_path: str | os.PathLike | None = None,
        options: EnvOptions | None = None,
        **option_kwargs: Any,
    ) -> None:
        self._adopt(PlanBatchedEnv(table, num_envs, table_path=table_path, options=options, **option_kwargs))
        n = self.num_envs
        # Every env ends its episode on the same step: the read-only all-True "_key" mask serves every info key.
        self._all_done = np.ones(n, dtype=bool)
        self._none_done = np.zeros(n, dtype=bool)

    @property
    def options(self) -> EnvOptions:
        return self.core.options

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        self._np_random_seed = seed_and_options(self.core, seed, options)
        obs = self.core.reset()
        return obs, self._request_info()

    def _request_info(self) -> dict[str, Any]:
        every = self._every
        sample, budget = self.core.current_requests()
        return {"sample": sample, "_sample": every, "budget": budget, "_budget": every}

    def step(self, actions: Any):
        obs, rewards, done, data, terminal_obs = self.core.step_arrays(actions)
        every = self._every
        step_info: dict[str, Any] = {}
        for k, v in zip(_STEP_KEYS, data):
            step_info[k] = v.view(bool) if k == "correct" else v  # the table's correct flags are stored as uint8
            step_info["_" + k] = every
        if done:
            infos = self._request_info()
            infos.update(final_obs=terminal_obs, _final_obs=every, final_info=step_info, _final_info=every)
        else:
            infos = step_info
        return obs, rewards, (self._all_done if done else self._none_done).copy(), self._none_done.copy(), infos
