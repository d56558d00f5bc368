"""A natively batched SB3 ``VecEnv`` of N :class:`~adainf_env.envs.anytime.env.AnytimeEnv` (table mode).

Every step is one :class:`~adainf_env.envs.anytime.core.RequestBatch` step over all N envs (numpy over N). Requests take
different numbers of steps, so each env ends and restarts on its own (SB3 auto-reset, ``terminal_observation`` in its
info). Randomness follows the single env's protocol per env (:mod:`adainf_env.envs.core`): env i seeded ``s + i``
draws exactly the rows and budgets of ``AnytimeEnv(...).reset(seed=s + i)`` followed by plain ``reset()`` calls, so the
vec env equals N independent single envs driven with the same actions (tested).

:meth:`AnytimeVecEnv.step_arrays` is the batched step that both this SB3 ``VecEnv`` and the Gymnasium ``VectorEnv``
(:mod:`adainf_env.envs.anytime.gym_vector`) wrap.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from adainf_env.envs.anytime.core import ACTION_NAMES, AnytimeConfig, AnytimeTable, RequestBatch
from adainf_env.envs.anytime.render import pending_record, render_anytime, step_record
from adainf_env.envs.core import AnytimeConfigViews, RequestDraws, resolve_env_inputs
from adainf_env.errors import AdaInfError
from adainf_env.envs.options import RENDER_MODES, AnytimeOptions
from adainf_env.tables.outcomes import OutcomeTable
from adainf_env.envs.reward import overrun_paid
from adainf_env.envs.vec_base import BatchedVecEnv, build_vec_env

__all__ = ["AnytimeVecEnv", "make_anytime_vec_env", "STEP_KEYS", "READ_KEYS", "END_KEYS"]

# The info keys of a step, as the single env reports them: every step; steps that read; steps that end a request.
STEP_KEYS = ("cost", "total_cost", "budget", "overrun", "sample", "action", "position", "read", "request_done",
             "invalid_action")
READ_KEYS = ("read_plan", "read_pred", "read_conf")
END_KEYS = ("plan", "pred", "correct", "num_reads")
_ACTION_NAMES = np.array(ACTION_NAMES, dtype=object)


class AnytimeVecEnv(AnytimeConfigViews, BatchedVecEnv):
    """N anytime envs over one outcome table, stepped together.

    Arguments are those of :class:`~adainf_env.envs.anytime.env.AnytimeEnv` (table mode; no table → the shipped reference
    calibration table) plus ``num_envs``: ``options=AnytimeOptions(...)`` and/or its fields as keywords.
    Seeding follows SB3: ``seed(s)`` → env i is reset with seed ``s + i`` at the next ``reset()``.
    ``action_masks()`` returns ``[N, 4]``; MaskablePPO reaches it through ``env_method("action_masks")``.
    ``render_mode="rgb_array"`` gives one frame per env from ``get_images()`` (SB3's ``VecEnv.render``).
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
        opts, table = resolve_env_inputs(AnytimeOptions, options, option_kwargs, table=table, table_path=table_path,
                                         num_envs=num_envs)
        self.table = table
        self.options = opts
        self.cfg = c = AnytimeConfig.build(table=AnytimeTable.from_table(table, opts.cost_unit),
                                           features=table.features, options=opts)
        n = int(num_envs)
        self.render_mode = opts.render_mode  # before VecEnv.__init__, which warns when it is missing
        super().__init__(n, c.observation_space, c.action_space)
        self.mode = opts.mode
        self._ns = c.num_samples
        self._batch = RequestBatch(n, c.table, mask_over_budget=opts.mask_over_budget)
        self._rngs: list[np.random.Generator | None] = [None] * n
        self._draws = [RequestDraws(self._ns) for _ in range(n)]
        self._t = np.zeros(n, dtype=np.int64)
        self._proc_b = np.zeros(n)
        self._aux = np.zeros(n)
        self._level = np.zeros(n)
        self._refill = np.zeros(n)
        self._pin_b = np.full(n, np.nan)
        self._started = False
        self._actions: np.ndarray | None = None
        self._records: list[dict[str, Any] | None] = [None] * n  # each env's last step, for render_one()

    # ------------------------------------------------------------------ randomness (see env_core)
    def _draw(self, i: int) -> tuple[int, float]:
        s, k = self._draws[i].draw(self._rng(i))
        return s, float(self._draws[i].ubuf[k])

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
        for i, sd in enumerate(seeds):
            if sd is not None:
                self._rngs[i] = seeding.np_random(int(sd))[0]
                self._draws[i].invalidate()
        pins = [self.cfg.parse_options(o) if o else (None, None) for o in self._options]
        self._reset_seeds()
        self._reset_options()
        rows = [self._new_episode(i, *pins[i]) for i in range(self.num_envs)]
        self._started = True
        self._records = [None] * self.num_envs
        self.reset_infos = [{"sample": rows[i], "budget": float(self._batch.budget[i])} for i in range(self.num_envs)]
        return self._observe()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise AdaInfError("step_wait() called without step_async()")
        actions, self._actions = self._actions, None
        obs, rew, dones, data, terminal = self.step_arrays(actions)
        read, ended = data["read"], data["request_done"]
        dict_obs = self.cfg.obs_format == "dict"
        infos = []
        for i in range(self.num_envs):
            d: dict[str, Any] = {k: data[k][i].item() if k != "action" else data[k][i] for k in STEP_KEYS}
            if read[i]:
                d.update((k, data[k][i].item()) for k in READ_KEYS)
            if ended[i]:
                d.update((k, data[k][i].item()) for k in END_KEYS)
            if dones[i]:
                d["TimeLimit.truncated"] = False
                d["terminal_observation"] = ({k: v[i].copy() for k, v in terminal.items()} if dict_obs
                                             else terminal[i].copy())
            infos.append(d)
        return obs, rew, dones, infos

    def step_arrays(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, dict[str, np.ndarray], Any]:
        """One step of every env, as arrays: ``(obs, rewards [N] float32, dones [N], data, terminal_obs)``.

        ``data`` maps each info key of the single env (:data:`STEP_KEYS`, :data:`READ_KEYS`, :data:`END_KEYS`) to an
        array [N] (``action``: an object array of names); a :data:`READ_KEYS` entry means something only where
        ``data["read"]``, an :data:`END_KEYS` entry only where ``data["request_done"]``. Envs whose episode ended
        (``dones``) are already reset: ``obs`` holds their next episode's first observation and ``terminal_obs``
        (the batched observation after this step, ``None`` when no env is done) the ended one's last. The SB3 and
        Gymnasium vector interfaces both wrap this.
        """
        if not self._started:
            raise AdaInfError("AnytimeVecEnv.step() called before reset()")
        c = self.cfg
        batch = self._batch
        n = self.num_envs
        replaced = np.zeros(n, dtype=bool)
        if c.invalid_action == "fallback":
            actions, replaced = batch.substitute_invalid(actions)
        pos0 = batch.pos.copy()
        spent0 = batch.spent.copy()
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
        data = {"cost": reported, "total_cost": total, "budget": budgets, "overrun": overrun_paid(total, budgets),
                "sample": rows, "action": _ACTION_NAMES[a], "position": pos0, "read": res.read.copy(),
                "request_done": ended.copy(), "invalid_action": replaced,
                "read_plan": plans, "read_pred": batch.last_pred.copy(), "read_conf": batch.last_conf.copy(),
                "plan": plans, "pred": batch.last_pred.copy(), "correct": correct.astype(bool),
                "num_reads": batch.reads.copy()}
        if self.render_mode is not None:
            for i in range(n):
                self._records[i] = step_record(batch, i, action=int(a[i]), position=int(pos0[i]),
                                               cost=float(total[i] - spent0[i]), reward=float(rew[i]),
                                               correct=bool(correct[i]) if ended[i] else None)
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
        for i in np.flatnonzero(ended):
            if dones[i]:
                self._new_episode(int(i))
            else:
                self._next_request(int(i))
        return self._observe(), rew.astype(np.float32), dones, data, terminal

    def current_requests(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of every env's request in flight: (table rows [N] int64, budgets [N] float64)."""
        if not self._started:
            raise AdaInfError("current_requests() called before reset()")
        return self._batch.row.copy(), self._batch.budget.copy()

    # ------------------------------------------------------------------ masks, attributes, frames
    def action_masks(self) -> np.ndarray:
        """[N, 4] bool: valid actions (run, skip, read, stop) of each env."""
        if not self._started:
            raise AdaInfError("action_masks() called before reset()")
        return self._batch.masks()

    @property
    def state(self) -> RequestBatch:
        """The requests in flight (read-only use)."""
        return self._batch

    def render_one(self, i: int) -> np.ndarray | str | None:
        """Env ``i``'s last step as the render mode asks (its pending request before the first step)."""
        if self.render_mode is None:
            return None
        rec = self._records[i]
        if rec is None and self._started:
            rec = pending_record(self._batch, i)
        return render_anytime(self.render_mode, rec, self.table.plan_masks)


def make_anytime_vec_env(table_path_or_table: "str | os.PathLike | OutcomeTable", num_envs: int, *,
                         seed: int | None = None, **env_kwargs: Any) -> AnytimeVecEnv:
    """An :class:`AnytimeVecEnv`; with ``seed`` env i is seeded ``seed + i`` at the first reset."""
    return build_vec_env(AnytimeVecEnv, table_path_or_table, num_envs, seed=seed, **env_kwargs)
