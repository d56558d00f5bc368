"""A natively batched SB3 ``VecEnv`` of N :class:`~adainf_env.envs.anytime.env.AnytimeEnv` (table mode): the thin SB3
adapter of :class:`~adainf_env.envs.anytime.batched.AnytimeBatchedEnv`, the numpy core that the Gymnasium ``VectorEnv``
(:mod:`adainf_env.envs.anytime.gym_vector`) wraps too.

Requests take different numbers of steps, so each env ends and restarts on its own (SB3 auto-reset,
``terminal_observation`` in its info). Env i seeded ``s + i`` draws exactly the rows and budgets of
``AnytimeEnv(...).reset(seed=s + i)`` followed by plain ``reset()`` calls, so the vec env equals N independent single
envs driven with the same actions (tested).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

from adainf_env.envs.anytime.batched import END_KEYS, READ_KEYS, STEP_KEYS, AnytimeBatchedEnv
from adainf_env.envs.anytime.core import RequestBatch
from adainf_env.envs.core import AnytimeConfigViews
from adainf_env.envs.options import RENDER_MODES, AnytimeOptions
from adainf_env.tables.outcomes import OutcomeTable
from adainf_env.envs.vec_base import BatchedVecEnv, LazyInfos, build_vec_env

__all__ = ["AnytimeVecEnv", "make_anytime_vec_env", "STEP_KEYS", "READ_KEYS", "END_KEYS"]


class AnytimeVecEnv(AnytimeConfigViews, BatchedVecEnv):
    """N anytime envs over one outcome table, stepped together: the SB3 ``VecEnv`` adapter of
    :class:`~adainf_env.envs.anytime.batched.AnytimeBatchedEnv` (``self.core``).

    Arguments are those of :class:`~adainf_env.envs.anytime.env.AnytimeEnv` (table mode; no table → the shipped reference
    calibration table) plus ``num_envs``: ``options=AnytimeOptions(...)`` and/or its fields as keywords.
    Seeding follows SB3: ``seed(s)`` → env i is reset with seed ``s + i`` at the next ``reset()``.
    ``action_masks()`` returns ``[N, 4]`` (``[N, 1 + K]`` with ``action_mode="stage"``); MaskablePPO reaches it
    through ``env_method("action_masks")``.
    ``render_mode="rgb_array"`` gives one frame per env from ``get_images()`` (SB3's ``VecEnv.render``).
    ``infos`` is a lazy list: env i's dict (the single env's info, plus ``terminal_observation`` and
    ``TimeLimit.truncated`` where its episode ended) is built only when read.
    """

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 4}
    _SHARED_ATTRS = ("render_mode", "mode", "cfg", "table", "block_costs", "lam", "observation_space", "action_space",
                     "budget_process", "metadata", "spec")

    def __init__(
        self,
        table: OutcomeTable | None = None,
        num_envs: int = 1,
        *,
        table_path: str | os.PathLike | None = None,
        options: AnytimeOptions | None = None,
        **option_kwargs: Any,
    ) -> None:
        self._adopt(AnytimeBatchedEnv(table, num_envs, table_path=table_path, options=options, **option_kwargs))

    def _wait(self, actions: Any) -> VecEnvStepReturn:
        obs, rew, dones, data, terminal = self.core.step_arrays(actions)
        infos = LazyInfos(self.num_envs, _InfoBuilder(data, dones, terminal, self.cfg.obs_format == "dict"))
        return obs, rew, dones, infos  # type: ignore[return-value]

    def step_arrays(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, dict[str, np.ndarray], Any]:
        """The core's batched step (:meth:`AnytimeBatchedEnv.step_arrays`)."""
        return self.core.step_arrays(actions)

    @property
    def state(self) -> RequestBatch:
        """The requests in flight (read-only use)."""
        return self.core.state


class _InfoBuilder:
    """Env i's SB3 info dict from one step's arrays (kept by reference; built only when a caller reads it)."""

    __slots__ = ("data", "dones", "terminal", "dict_obs", "_row")

    def __init__(self, data: dict[str, np.ndarray], dones: np.ndarray, terminal: Any, dict_obs: bool) -> None:
        self.data = data
        self.dones = dones
        self.terminal = terminal
        self.dict_obs = dict_obs
        self._row: dict[int, int] | None = None

    def __call__(self, i: int) -> dict[str, Any]:
        data = self.data
        d: dict[str, Any] = {k: data[k][i].item() if k != "action" else data[k][i] for k in STEP_KEYS}
        if data["read"][i]:
            d.update((k, data[k][i].item()) for k in READ_KEYS)
        if data["request_done"][i]:
            d.update((k, data[k][i].item()) for k in END_KEYS)
        if self.dones[i]:
            if self._row is None:  # terminal observations are batched over the done envs only
                self._row = {e: j for j, e in enumerate(np.flatnonzero(self.dones).tolist())}
            j, t = self._row[i], self.terminal
            d["TimeLimit.truncated"] = False
            d["terminal_observation"] = {k: v[j].copy() for k, v in t.items()} if self.dict_obs else t[j].copy()
        return d


def make_anytime_vec_env(table_path_or_table: "str | os.PathLike | OutcomeTable", num_envs: int, *,
                         seed: int | None = None, **env_kwargs: Any) -> AnytimeVecEnv:
    """An :class:`AnytimeVecEnv`; with ``seed`` env i is seeded ``seed + i`` at the first reset."""
    return build_vec_env(AnytimeVecEnv, table_path_or_table, num_envs, seed=seed, **env_kwargs)
