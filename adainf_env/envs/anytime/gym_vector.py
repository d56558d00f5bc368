"""The numpy-batched anytime env as a Gymnasium ``VectorEnv`` (what ``gymnasium.make_vec("AdaInf/Anytime-v0")``
returns).

:class:`AnytimeVectorEnv` is a thin adapter over :class:`~adainf_env.envs.anytime.batched.AnytimeBatchedEnv` (no SB3):
N envs step as one :class:`~adainf_env.envs.anytime.core.RequestBatch` step instead of N Python ``step`` calls. Same numbers as
``gymnasium.make_vec("AdaInf/Anytime-v0", num_envs=N, vectorization_mode="sync",
vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP})`` (tested), observations, rewards and infos alike.

Autoreset: ``AutoresetMode.SAME_STEP`` (``metadata["autoreset_mode"]``). An anytime episode takes several steps and
the envs end theirs at different steps. On the step where env i's episode ends, ``terminations[i]`` is True, the
returned observation of env i is already its next episode's first, and ``infos`` holds, as Gymnasium's
``SyncVectorEnv`` in this mode does,

* ``final_obs``: an object array [N] with env i's last observation of the ended episode (``None`` for the envs that
  did not end), and ``_final_obs`` (bool [N]);
* ``final_info``: the ended step's info of those envs (a dict of arrays [N], each ``key`` with its ``_key`` mask),
  and ``_final_info``;
* ``sample`` and ``budget`` of the new episode's first request for those envs (what ``reset`` reports).

Every other env's entries are its step info (``cost``, ``total_cost``, ``budget``, ``overrun``, ``sample``,
``action``, ``position``, ``read``, ``request_done``, ``invalid_action``; ``read_*`` after a read; ``plan``, ``pred``,
``correct``, ``num_reads`` when a request ended), each ``key`` with its ``_key`` mask. So the action chosen on the
returned observation always belongs to the episode that observation starts (no dummy step, unlike NEXT_STEP). Episodes
are never truncated. Rewards are float32. Seeding: ``reset(seed=s)`` seeds env i with ``s + i`` (a list gives one
seed per env), exactly as the single env's ``reset(seed=s + i)``. ``action_masks()`` gives ``[N, 4]``
(``[N, 1 + K]`` with ``action_mode="stage"``).
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import numpy as np

from adainf_env.envs.anytime.batched import END_KEYS, READ_KEYS, STEP_KEYS, AnytimeBatchedEnv
from adainf_env.envs.gym_vector_base import CoreVectorEnv, seed_and_options
from adainf_env.envs.options import AnytimeOptions
from adainf_env.tables.outcomes import OutcomeTable

__all__ = ["AnytimeVectorEnv"]

_RESET_KEYS = ("sample", "budget")


def _masked(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``values`` where ``mask``, else the empty value Gymnasium's info batching leaves (0, False or None)."""
    if values.dtype == object:
        return np.where(mask, values, None)
    return np.where(mask, values, np.zeros((), dtype=values.dtype))


class AnytimeVectorEnv(CoreVectorEnv):
    """``num_envs`` anytime envs as a Gymnasium ``VectorEnv`` (see the module docstring); arguments as
    :class:`~adainf_env.envs.anytime.env.AnytimeEnv` (table mode; no table → the shipped reference calibration table).
    ``self.core`` is the underlying :class:`~adainf_env.envs.anytime.batched.AnytimeBatchedEnv`."""

    def __init__(
        self,
        num_envs: int = 1,
        *,
        table: OutcomeTable | None = None,
        table_path: str | os.PathLike | None = None,
        options: AnytimeOptions | None = None,
        **option_kwargs: Any,
    ) -> None:
        self._adopt(AnytimeBatchedEnv(table, num_envs, table_path=table_path, options=options, **option_kwargs))
        self._no_trunc = np.zeros(self.num_envs, dtype=bool)

    @property
    def options(self) -> AnytimeOptions:
        return self.core.options

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        core = self.core
        self._np_random_seed = seed_and_options(core, seed, options)
        obs = core.reset()
        sample, budget = core.current_requests()
        return obs, {"sample": sample, "_sample": self._every.copy(), "budget": budget, "_budget": self._every.copy()}

    def step(self, actions: Any):
        obs, rewards, dones, data, terminal = self.core.step_arrays(actions)
        read, ended = data["read"], data["request_done"]
        infos: dict[str, Any] = {}
        if terminal is not None:
            alive = ~dones
            final: dict[str, Any] = {}
            self._put(final, data, dones, read, ended)
            infos.update(final_obs=self._split_obs(terminal, dones), _final_obs=dones.copy(), final_info=final,
                         _final_info=dones.copy())
            self._put(infos, data, alive, read, ended)
            # the reset envs report their new request, the others their served one
            sample, budget = self.core.current_requests()
            infos["sample"] = np.where(dones, sample, data["sample"])
            infos["budget"] = np.where(dones, budget, data["budget"])
            infos["_sample"] = self._every.copy()
            infos["_budget"] = self._every.copy()
        else:
            self._put(infos, data, None, read, ended)
        return obs, rewards, dones, self._no_trunc.copy(), infos

    def _put(self, target: dict[str, Any], data: dict[str, np.ndarray], who: np.ndarray | None, read: np.ndarray,
             ended: np.ndarray) -> None:
        """Add the step info of the envs ``who`` (None: every env) to ``target`` (keys with no env to report are
        left out). Where every env reports a key its array is the step's own (no masked copy)."""
        for keys, cond in ((STEP_KEYS, who), (READ_KEYS, read if who is None else who & read),
                           (END_KEYS, ended if who is None else who & ended)):
            if cond is None:
                for k in keys:
                    target[k] = data[k]
                    target["_" + k] = self._every.copy()
                continue
            if not cond.any():
                continue
            for k in keys:
                target[k] = _masked(data[k], cond)
                target["_" + k] = cond.copy()

    def _split_obs(self, batched: Any, which: np.ndarray) -> np.ndarray:
        """Object array [N]: env i's observation (row j of ``batched``, batched over the envs ``which``) where
        ``which``, else None. The rows are views of this step's own arrays (nothing else holds them)."""
        out = np.full(self.num_envs, None, dtype=object)
        if isinstance(batched, dict):  # one dict per env, built by C-level iteration (the bulk of a done env's cost)
            rows = list(map(dict, map(zip, itertools.repeat(list(batched)), zip(*batched.values()))))
        else:
            rows = list(batched)
        per_env = np.empty(len(rows), dtype=object)
        per_env[:] = rows
        out[which] = per_env
        return out
