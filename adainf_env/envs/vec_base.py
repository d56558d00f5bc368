"""The SB3 side of the batched envs: :class:`BatchedVecEnv`, the ``VecEnv`` adapter base over a numpy core
(:class:`~adainf_env.envs.core.BatchCore`), with SB3's sub-env attribute interface (``get_attr``/``set_attr``/
``env_method``/``env_is_wrapped``), frames, :class:`LazyInfos` and the ``make_*_vec_env`` seeding helper.

:class:`~adainf_env.envs.plan.vec_env.AdaInfVecEnv` and :class:`~adainf_env.envs.anytime.vec_env.AnytimeVecEnv` hold
all their envs in the arrays of their core, so there are no sub-env objects: :class:`BatchedVecEnv` answers SB3's
per-env queries from the core. A subclass sets ``_SHARED_ATTRS`` (attributes every env shares), adopts its core and
defines ``_wait`` (one core step → SB3's return).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Callable, TypeVar

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from adainf_env.errors import AdaInfError, ConfigError
from adainf_env.tables.outcomes import OutcomeTable

__all__ = ["BatchedVecEnv", "LazyInfos", "build_vec_env"]

V = TypeVar("V", bound=VecEnv)


class LazyInfos(Sequence):
    """A list-like of N info dicts built on first access (and cached, so callers may mutate them)."""

    __slots__ = ("_n", "_build", "_cache")

    def __init__(self, n: int, build: Callable[[int], dict]) -> None:
        self._n = n
        self._build = build
        self._cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        d = self._cache.get(i)
        if d is None:
            d = self._cache[i] = self._build(i)
        return d

    def __iter__(self):
        for i in range(self._n):
            yield self[i]

    def __repr__(self) -> str:
        return f"LazyInfos(n={self._n})"


class BatchedVecEnv(VecEnv):
    """Base of the SB3 ``VecEnv`` adapters over a numpy core (:class:`~adainf_env.envs.core.BatchCore`:
    :class:`~adainf_env.envs.plan.batched.PlanBatchedEnv`, :class:`~adainf_env.envs.anytime.batched.AnytimeBatchedEnv`).

    A subclass builds its core, calls :meth:`_adopt` and turns one core step into SB3's return in :meth:`_wait`. The
    core holds everything: seeds and reset options (``seed``/``set_options`` hand them over), the envs' state,
    ``action_masks()``, ``current_requests()`` and frames.
    """

    _SHARED_ATTRS: tuple[str, ...] = ()
    spec = None
    core: Any

    def _adopt(self, core: Any) -> None:
        """Take ``core`` as ``self.core``: its config, table, options, spaces and number of envs."""
        self.core = core
        self.cfg = core.cfg
        self.table = core.table
        self.options = core.options
        self.mode = core.mode
        self.render_mode = core.render_mode  # before VecEnv.__init__, which warns when it is missing
        VecEnv.__init__(self, core.num_envs, core.observation_space, core.action_space)
        self._actions: Any = None

    # ------------------------------------------------------------------ the VecEnv API over the core
    def seed(self, seed: int | None = None) -> Sequence[int | None]:  # type: ignore[override]
        """Env i is reset with seed ``seed + i`` at the next ``reset()`` (``None``: one random seed)."""
        return self.core.seed(seed)

    def set_options(self, options: list[dict] | dict | None = None) -> None:
        """Reset options (``{"sample": i, "budget": b}``) for the next ``reset()``: one dict for all envs or a list."""
        self.core.set_options(options)

    def reset(self) -> Any:
        obs = self.core.reset()
        self.reset_infos = self.core.reset_infos
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> Any:
        if self._actions is None:
            raise AdaInfError("step_wait() called without step_async()")
        actions, self._actions = self._actions, None
        return self._wait(actions)

    def _wait(self, actions: Any) -> Any:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def current_requests(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of every env's request in flight: (table rows [N] int64, budgets [N] float64)."""
        return self.core.current_requests()

    def action_masks(self) -> np.ndarray:
        """[N, A] bool: the valid actions of each env."""
        return self.core.action_masks()

    def render_one(self, i: int) -> Any:
        """Env ``i``'s last step as the render mode asks."""
        return self.core.render_one(i)

    def _rng(self, i: int) -> np.random.Generator:
        return self.core._rng(i)

    # ------------------------------------------------------------------ sub-env interface
    def _indices(self, indices: VecEnvIndices) -> list[int]:
        idx = [int(i) for i in self._get_indices(indices)]
        for i in idx:
            if not 0 <= i < self.num_envs:
                raise IndexError(f"env index {i} out of range [0, {self.num_envs})")
        return idx

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        idx = self._indices(indices)
        if attr_name == "action_masks":
            return [self.action_masks] * len(idx)  # sb3-contrib's is_masking_supported probes this
        if attr_name == "np_random":
            return [self._rng(i) for i in idx]
        if attr_name not in self._SHARED_ATTRS:
            raise AttributeError(f"{type(self).__name__} sub-envs expose {list(self._SHARED_ATTRS)}, not "
                                 f"{attr_name!r}")
        return [getattr(self, attr_name)] * len(idx)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        idx = self._indices(indices)
        name = type(self).__name__
        if attr_name == "lam":  # the Lagrangian learners move λ during training
            if len(idx) != self.num_envs:
                raise ConfigError(f"{name} shares lam across envs: set it for all envs (indices=None)")
            v = float(value)
            if not np.isfinite(v) or v < 0:
                raise ConfigError(f"lam (λ) must be a finite number ≥ 0, got {value!r}")
            self.cfg.lam = v
            return
        raise AttributeError(f"{name}: attribute {attr_name!r} cannot be set per env (only 'lam')")

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        idx = self._indices(indices)
        if method_name == "action_masks":
            m = self.action_masks()
            return [m[i] for i in idx]
        if method_name == "render":
            return [self.render_one(i) for i in idx]
        raise AttributeError(f"{type(self).__name__} supports env_method('action_masks') and 'render', not "
                             f"{method_name!r}; use VecEnv.reset()/step() for the rest")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def get_images(self) -> Sequence[np.ndarray | None]:
        """One frame per env of its last step (``render_mode="rgb_array"``; see :mod:`adainf_env.envs.render`)."""
        if self.render_mode != "rgb_array":
            return [None] * self.num_envs
        return [self.render_one(i) for i in range(self.num_envs)]

    def close(self) -> None:
        """Nothing to release: the envs are arrays in memory."""


def build_vec_env(cls: Callable[..., V], table_path_or_table: "str | os.PathLike | OutcomeTable", num_envs: int, *,
                  seed: int | None = None, **env_kwargs: Any) -> V:
    """``cls(table, num_envs, **env_kwargs)`` from a table or a table path; with ``seed`` env i is seeded
    ``seed + i`` at the first reset (as the single env's ``reset(seed=seed + i)``)."""
    name = getattr(cls, "__name__", "vec env")
    if isinstance(table_path_or_table, OutcomeTable):
        venv = cls(table_path_or_table, num_envs, **env_kwargs)
    elif isinstance(table_path_or_table, (str, os.PathLike)):
        venv = cls(None, num_envs, table_path=table_path_or_table, **env_kwargs)
    else:
        raise ConfigError(f"{name} needs a table path or an OutcomeTable, got {type(table_path_or_table).__name__}")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        venv.seed(int(seed))
    return venv
