"""A natively batched SB3 ``VecEnv`` of N AdaInf environments: the thin SB3 adapter of
:class:`~adainf_env.envs.plan.batched.PlanBatchedEnv` (the numpy core, which the Gymnasium ``VectorEnv`` of
:mod:`adainf_env.envs.plan.gym_vector` wraps too).

Same semantics as N independent :class:`~adainf_env.envs.plan.env.AdaInfEnv` seeded ``seed, seed+1, …`` (tested:
identical observations and rewards). ``infos`` is a lazy list: dicts (``terminal_observation``,
``TimeLimit.truncated``, and the single env's ``plan``/``cost``/``correct``/``overrun``/``budget``/``sample``) are built
only for the entries a caller reads, from arrays kept by reference, so per-step Python work is O(1) in N.
:meth:`AdaInfVecEnv.get_state` / :meth:`AdaInfVecEnv.set_state` (the core's) capture and restore everything the next
steps depend on, so a training run resumes on the exact same requests.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from adainf_env.envs.core import ActionError, PlanConfigViews
from adainf_env.envs.options import EnvOptions
from adainf_env.envs.plan.batched import PlanBatchedEnv
from adainf_env.tables.outcomes import OutcomeTable
from adainf_env.envs.vec_base import BatchedVecEnv, LazyInfos, build_vec_env

__all__ = ["AdaInfVecEnv", "make_vec_env", "LazyInfos", "ActionError"]


class AdaInfVecEnv(PlanConfigViews, BatchedVecEnv):
    """N AdaInf envs over one outcome table, stepped together with numpy: the SB3 ``VecEnv`` adapter of
    :class:`~adainf_env.envs.plan.batched.PlanBatchedEnv` (``self.core``).

    Arguments are those of :class:`~adainf_env.envs.plan.env.AdaInfEnv` (table mode only; no table → the shipped
    reference calibration table) plus ``num_envs``: ``options=EnvOptions(...)`` and/or its fields as keywords.
    ``render_mode="rgb_array"`` gives one frame per env from ``get_images()`` (SB3's ``VecEnv.render``).
    Seeding follows SB3: ``seed(s)`` → env i is reset with seed ``s + i`` at the next ``reset()``.
    ``action_masks()`` returns ``[N, P]``; MaskablePPO reaches it through ``env_method("action_masks")``.
    """

    _SHARED_ATTRS = ("render_mode", "mode", "cfg", "table", "plan_masks", "plan_cost", "lam", "observation_space",
                     "action_space", "budget_process", "metadata", "spec")
    STATE_FORMAT = PlanBatchedEnv.STATE_FORMAT

    def __init__(
        self,
        table: OutcomeTable | None = None,
        num_envs: int = 1,
        *,
        table_path: str | os.PathLike | None = None,
        options: EnvOptions | None = None,
        **option_kwargs: Any,
    ) -> None:
        self._adopt(PlanBatchedEnv(table, num_envs, table_path=table_path, options=options, **option_kwargs))
        self._ones = np.ones(self.num_envs, dtype=bool)
        self._zeros = np.zeros(self.num_envs, dtype=bool)

    def _wait(self, actions: Any) -> VecEnvStepReturn:
        obs, rewards, done, step_data, terminal_obs = self.core.step_arrays(actions)
        dones = self._ones.copy() if done else self._zeros.copy()
        infos = LazyInfos(self.num_envs, _InfoBuilder(step_data, terminal_obs, self.options.obs_format == "dict"))
        return obs, rewards, dones, infos  # type: ignore[return-value]

    def step_arrays(self, actions: Any) -> tuple[Any, np.ndarray, bool, tuple, Any]:
        """The core's batched step (:meth:`PlanBatchedEnv.step_arrays`)."""
        return self.core.step_arrays(actions)

    def get_state(self) -> dict[str, Any]:
        """Everything the next steps depend on (:meth:`PlanBatchedEnv.get_state`)."""
        return self.core.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`get_state` result (:meth:`PlanBatchedEnv.set_state`)."""
        self.core.set_state(state)


class _InfoBuilder:
    """Builds env i's info dict from one step's arrays (kept by reference; nothing is copied per step)."""

    __slots__ = ("data", "terminal", "dict_obs")

    def __init__(self, data: tuple, terminal: Any, dict_obs: bool) -> None:
        self.data = data
        self.terminal = terminal
        self.dict_obs = dict_obs

    def __call__(self, i: int) -> dict:
        a, cost, correct, over, b, s = self.data
        d = {"plan": int(a[i]), "cost": float(cost[i]), "correct": bool(correct[i]), "overrun": float(over[i]),
             "budget": float(b[i]), "sample": int(s[i]), "TimeLimit.truncated": False}
        if self.terminal is not None:
            t = self.terminal
            d["terminal_observation"] = {k: v[i].copy() for k, v in t.items()} if self.dict_obs else t[i].copy()
        return d


def make_vec_env(
    table_path_or_table: "str | os.PathLike | OutcomeTable",
    num_envs: int,
    mode: str = "bandit",
    *,
    seed: int | None = None,
    **env_kwargs: Any,
) -> AdaInfVecEnv:
    """An :class:`AdaInfVecEnv` of ``num_envs`` envs; with ``seed`` env i is seeded ``seed + i`` at the first reset,
    exactly as ``AdaInfEnv(...).reset(seed=seed + i)``."""
    return build_vec_env(AdaInfVecEnv, table_path_or_table, num_envs, seed=seed, mode=mode, **env_kwargs)
