"""A natively batched SB3 ``VecEnv`` of N :class:`~adainf_env.anytime.AnytimeEnv` (table mode).

Every step is one :class:`~adainf_env.anytime_core.RequestBatch` step over all N envs (numpy over N). Requests take
different numbers of steps, so each env ends and restarts on its own (SB3 auto-reset, ``terminal_observation`` in its
info). Randomness follows the single env's protocol per env (:mod:`adainf_env.env_core`): env i seeded ``s + i``
draws exactly the rows and budgets of ``AnytimeEnv(...).reset(seed=s + i)`` followed by plain ``reset()`` calls, so the
vec env equals N independent single envs driven with the same actions (tested).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from adainf_env.anytime_core import ACTION_NAMES, AnytimeConfig, AnytimeTable, RequestBatch
from adainf_env.budgets import TokenBucket
from adainf_env.env_core import RNG_CHUNK
from adainf_env.errors import AdaInfError, ConfigError
from adainf_env.outcomes import OutcomeTable, load_table

__all__ = ["AnytimeVecEnv", "make_anytime_vec_env"]


class AnytimeVecEnv(VecEnv):
    """N anytime envs over one outcome table, stepped together.

    Arguments are those of :class:`~adainf_env.anytime.AnytimeEnv` (table mode) plus ``num_envs``. Seeding follows
    SB3: ``seed(s)`` → env i is reset with seed ``s + i`` at the next ``reset()``. ``action_masks()`` returns
    ``[N, 4]``; MaskablePPO reaches it through ``env_method("action_masks")``.
    """

    def __init__(
        self,
        table: OutcomeTable | None = None,
        num_envs: int = 1,
        *,
        table_path: str | os.PathLike | None = None,
        mode: str = "bandit",
        episode_length: int = 200,
        budget: Any = "uniform",
        bucket: bool | dict | TokenBucket | None = None,
        lam: float = 1.0,
        reward: str = "correct",
        penalty: str = "linear",
        hard_penalty: float = -1.0,
        cost_unit: str = "macs",
        obs_format: str = "dict",
        mask_over_budget: bool = True,
        invalid_action: str = "raise",
    ) -> None:
        if (table is None) == (table_path is None):
            raise ConfigError("give exactly one of table= or table_path=")
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ConfigError(f"num_envs must be an integer ≥ 1, got {num_envs!r}")
        if table_path is not None:
            table = load_table(table_path)
        self.table = table
        self.cfg = c = AnytimeConfig.build(
            table=AnytimeTable.from_table(table, cost_unit), features=table.features, mode=mode,
            episode_length=episode_length, budget=budget, bucket=bucket, lam=lam, reward=reward, penalty=penalty,
            hard_penalty=hard_penalty, obs_format=obs_format, mask_over_budget=mask_over_budget,
            invalid_action=invalid_action)
        n = int(num_envs)
        self.render_mode = None  # before VecEnv.__init__, which warns when it is missing
        super().__init__(n, c.observation_space, c.action_space)
        self.mode = c.mode
        self._ns = c.num_samples
        self._batch = RequestBatch(n, c.table, mask_over_budget=c.mask_over_budget)
        self._rngs: list[np.random.Generator | None] = [None] * n
        self._perm = [np.empty(0, dtype=np.int64)] * n
        self._spos = np.full(n, self._ns, dtype=np.int64)
        self._ubuf = [np.empty(0)] * n
        self._upos = np.full(n, RNG_CHUNK, dtype=np.int64)
        self._t = np.zeros(n, dtype=np.int64)
        self._proc_b = np.zeros(n)
        self._aux = np.zeros(n)
        self._level = np.zeros(n)
        self._refill = np.zeros(n)
        self._pin_b = np.full(n, np.nan)
        self._started = False
        self._actions: np.ndarray | None = None

    # ------------------------------------------------------------------ randomness (see env_core)
    def _rng(self, i: int) -> np.random.Generator:
        r = self._rngs[i]
        if r is None:  # an env never seeded gets fresh entropy, like gymnasium's lazy np_random
            r = self._rngs[i] = seeding.np_random()[0]
        return r

    def _draw(self, i: int) -> tuple[int, float]:
        if self._spos[i] >= self._ns:
            self._perm[i] = self._rng(i).permutation(self._ns)
            self._spos[i] = 0
        s = int(self._perm[i][self._spos[i]])
        self._spos[i] += 1
        if self._upos[i] >= RNG_CHUNK:
            self._ubuf[i] = self._rng(i).random(RNG_CHUNK)
            self._upos[i] = 0
        u = float(self._ubuf[i][self._upos[i]])
        self._upos[i] += 1
        return s, u

    # ------------------------------------------------------------------ episodes and requests
    def _new_episode(self, i: int, pin_s: int | None = None, pin_b: float | None = None) -> int:
        s, u = self._draw(i)
        s = s if pin_s is None else pin_s
        b0, aux = self.cfg.process.start(np.array([u]))
        self._proc_b[i] = b0[0] if pin_b is None else pin_b
        self._pin_b[i] = np.nan if pin_b is None else pin_b
        self._aux[i] = aux[0]
        self._t[i] = 0
        if self.cfg.bucket is not None:
            self._level[i] = self.cfg.bucket.initial
        self._begin(i, s)
        return s

    def _next_request(self, i: int) -> None:
        s, u = self._draw(i)
        if np.isnan(self._pin_b[i]):
            self._proc_b[i] = self.cfg.process.next(self._t[i:i + 1], self._proc_b[i:i + 1], self._aux[i:i + 1],
                                                    np.array([u]))[0]
        self._begin(i, s)

    def _begin(self, i: int, s: int) -> None:
        bucket = self.cfg.bucket
        if bucket is None:
            budget = self._proc_b[i]
        else:
            self._refill[i] = self._proc_b[i] if bucket.rate is None else bucket.rate
            self._level[i] = bucket.refill(self._level[i:i + 1], self._proc_b[i:i + 1])[0]
            budget = float(bucket.available(self._level[i:i + 1])[0])
        self._batch.start(np.array([i]), np.array([s]), np.array([budget]))

    def _observe(self):
        bs = None
        if self.cfg.bucket is not None:
            T = self.cfg.episode_length
            bs = np.stack([self._level, self._refill, (T - self._t) / T], axis=1)
        return self.cfg.observe(self._batch, bs)

    # ------------------------------------------------------------------ VecEnv API
    def reset(self) -> VecEnvObs:
        seeds = self._seeds
        if any(s is not None for s in seeds):
            for i, sd in enumerate(seeds):
                if sd is not None:
                    self._rngs[i] = seeding.np_random(int(sd))[0]
                    self._spos[i] = self._ns
                    self._upos[i] = RNG_CHUNK
        pins = [self.cfg.parse_options(o) if o else (None, None) for o in self._options]
        self._reset_seeds()
        self._reset_options()
        rows = [self._new_episode(i, *pins[i]) for i in range(self.num_envs)]
        self._started = True
        self.reset_infos = [{"sample": rows[i], "budget": float(self._batch.budget[i])} for i in range(self.num_envs)]
        return self._observe()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if not self._started:
            raise AdaInfError("AnytimeVecEnv.step() called before reset()")
        if self._actions is None:
            raise AdaInfError("step_wait() called without step_async()")
        c = self.cfg
        batch = self._batch
        n = self.num_envs
        actions, self._actions = self._actions, None
        replaced = np.zeros(n, dtype=bool)
        if c.invalid_action == "fallback":
            actions, replaced = batch.substitute_invalid(actions)
        pos0 = batch.pos.copy()
        res = batch.step(actions, c.table.read_table)
        a = np.asarray(actions).reshape(n).astype(np.int64)
        ended = res.ended
        rows = batch.row.copy()
        plans = batch.answer.copy()
        correct = np.where(ended, c.table.correct[rows, np.maximum(plans, 0)], False)
        loss = np.where(ended, c.table.loss[rows, np.maximum(plans, 0)], 0.0) if c.reward == "neg_ce" else None
        rew, reported = c.rewards(batch, res, correct, loss, np.ones(n, dtype=bool))
        total = batch.spent.copy()
        budgets = batch.budget.copy()
        dones = np.zeros(n, dtype=bool)
        if ended.any():
            idx = np.flatnonzero(ended)
            if c.mode == "bandit":
                dones[idx] = True
            else:
                if c.bucket is not None:
                    self._level[idx] = c.bucket.spend(self._level[idx], total[idx])
                self._t[idx] += 1
                dones[idx] = self._t[idx] >= c.episode_length
        terminal = self._observe() if dones.any() else None
        infos = []
        for i in range(n):
            d: dict[str, Any] = {"cost": float(reported[i]), "total_cost": float(total[i]),
                                 "budget": float(budgets[i]),
                                 "overrun": float(max(0.0, total[i] - budgets[i])) if total[i] - budgets[i] > 1e-9
                                 else 0.0, "sample": int(rows[i]), "action": ACTION_NAMES[a[i]],
                                 "position": int(pos0[i]), "read": bool(res.read[i]),
                                 "request_done": bool(ended[i]), "invalid_action": bool(replaced[i])}
            if res.read[i]:
                d.update(read_plan=int(plans[i]), read_pred=int(batch.last_pred[i]),
                         read_conf=float(batch.last_conf[i]))
            if ended[i]:
                d.update(plan=int(plans[i]), pred=int(batch.last_pred[i]), correct=bool(correct[i]),
                         num_reads=int(batch.reads[i]))
            if dones[i]:
                d["TimeLimit.truncated"] = False
                d["terminal_observation"] = ({k: v[i].copy() for k, v in terminal.items()}
                                             if c.obs_format == "dict" else terminal[i].copy())
            infos.append(d)
        for i in np.flatnonzero(ended):
            if dones[i]:
                self._new_episode(int(i))
            else:
                self._next_request(int(i))
        return self._observe(), rew.astype(np.float32), dones, infos

    # ------------------------------------------------------------------ masks and attributes
    def action_masks(self) -> np.ndarray:
        """[N, 4] bool: valid actions (run, skip, read, stop) of each env."""
        if not self._started:
            raise AdaInfError("action_masks() called before reset()")
        return self._batch.masks()

    @property
    def state(self) -> RequestBatch:
        """The requests in flight (read-only use)."""
        return self._batch

    @property
    def block_costs(self):
        return self.cfg.table.costs

    @property
    def lam(self) -> float:
        return self.cfg.lam

    @property
    def budget_process(self):
        return self.cfg.process

    _SHARED_ATTRS = ("render_mode", "mode", "cfg", "table", "block_costs", "lam", "observation_space", "action_space",
                     "budget_process", "metadata", "spec")
    spec = None
    metadata = {"render_modes": []}

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
            raise AttributeError(f"AnytimeVecEnv sub-envs expose {list(self._SHARED_ATTRS)}, not {attr_name!r}")
        return [getattr(self, attr_name)] * len(idx)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        idx = self._indices(indices)
        if attr_name == "lam":
            if len(idx) != self.num_envs:
                raise ConfigError("AnytimeVecEnv shares lam across envs: set it for all envs (indices=None)")
            v = float(value)
            if not np.isfinite(v) or v < 0:
                raise ConfigError(f"lam (λ) must be a finite number ≥ 0, got {value!r}")
            self.cfg.lam = v
            return
        raise AttributeError(f"AnytimeVecEnv: attribute {attr_name!r} cannot be set per env (only 'lam')")

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        idx = self._indices(indices)
        if method_name == "action_masks":
            m = self.action_masks()
            return [m[i] for i in idx]
        if method_name == "render":
            return [None] * len(idx)
        raise AttributeError(f"AnytimeVecEnv supports env_method('action_masks') and 'render', not {method_name!r}")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None] * self.num_envs

    def close(self) -> None:
        pass


def make_anytime_vec_env(table_path_or_table: "str | os.PathLike | OutcomeTable", num_envs: int, *,
                         seed: int | None = None, **env_kwargs: Any) -> AnytimeVecEnv:
    """An :class:`AnytimeVecEnv`; with ``seed`` env i is seeded ``seed + i`` at the first reset."""
    if isinstance(table_path_or_table, OutcomeTable):
        venv = AnytimeVecEnv(table_path_or_table, num_envs, **env_kwargs)
    elif isinstance(table_path_or_table, (str, os.PathLike)):
        venv = AnytimeVecEnv(None, num_envs, table_path=table_path_or_table, **env_kwargs)
    else:
        raise ConfigError(f"make_anytime_vec_env needs a table path or an OutcomeTable, got "
                          f"{type(table_path_or_table).__name__}")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
        venv.seed(int(seed))
    return venv
