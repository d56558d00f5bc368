"""The numpy core of the batched anytime envs: N :class:`~adainf_env.envs.anytime.env.AnytimeEnv` (table mode) in
arrays, stepped together. It depends on neither stable-baselines3 nor Gymnasium's vector API; the SB3 ``VecEnv``
(:class:`~adainf_env.envs.anytime.vec_env.AnytimeVecEnv`) and the Gymnasium ``VectorEnv``
(:class:`~adainf_env.envs.anytime.gym_vector.AnytimeVectorEnv`) are thin adapters on it.

Every step is one kernel step over all N envs (:class:`~adainf_env.envs.anytime.core.RequestBatch`; numpy over N, no
per-env Python): requests take different numbers of steps, so each env ends and restarts on its own. Randomness follows
the single env's protocol per env (:mod:`adainf_env.envs.core`), with every env's permutation and uniform buffer held
in one array and refilled only for the envs whose buffer ran out: env i seeded ``s + i`` draws exactly the rows and
budgets of ``AnytimeEnv(...).reset(seed=s + i)`` followed by plain ``reset()`` calls, so the batch equals N
independent single envs driven with the same actions (tested).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from adainf_env.envs.anytime.actions import AnytimeTable, NUM_ACTIONS, RUN, SKIP, STOP
from adainf_env.envs.anytime.config import AnytimeConfig
from adainf_env.envs.anytime.core import RequestBatch, _as_actions
from adainf_env.envs.anytime.render import pending_record, render_anytime, step_record
from adainf_env.envs.anytime.stages import stage_menu
from adainf_env.envs.core import RNG_CHUNK, AnytimeConfigViews, BatchCore, env_generator, resolve_env_inputs
from adainf_env.errors import AdaInfError
from adainf_env.envs.options import AnytimeOptions
from adainf_env.tables.outcomes import OutcomeTable

__all__ = ["AnytimeBatchedEnv", "STEP_KEYS", "READ_KEYS", "END_KEYS"]

# The info keys of a step, as the single env reports them: every step; steps that read; steps that end a request.
STEP_KEYS = ("cost", "total_cost", "budget", "overrun", "sample", "action", "position", "read", "request_done",
             "invalid_action")
READ_KEYS = ("read_plan", "read_pred", "read_conf")
END_KEYS = ("plan", "pred", "correct", "num_reads")


class AnytimeBatchedEnv(AnytimeConfigViews, BatchCore):
    """N anytime envs over one outcome table as arrays (see the module docstring): ``reset()``, ``step_arrays``,
    ``action_masks()``, ``current_requests()``, ``render_one(i)``; seeds and reset options through
    :class:`~adainf_env.envs.core.BatchCore` (``seed``, ``seed_each``, ``set_options``).

    Arguments are those of :class:`~adainf_env.envs.anytime.env.AnytimeEnv` (table mode; no table → the shipped
    reference calibration table) plus ``num_envs``: ``options=AnytimeOptions(...)`` and/or its fields as keywords.
    """

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
        at = AnytimeTable.from_table(table, opts.cost_unit)
        self.cfg = c = AnytimeConfig.build(table=at, features=table.features, options=opts,
                                           menu=stage_menu(opts.action_mode, opts.stage_menu, at, table))
        n = int(num_envs)
        self._init_envs(n)
        self.render_mode = opts.render_mode
        self.observation_space = c.observation_space
        self.action_space = c.action_space
        self.mode = opts.mode
        self._ns = c.num_samples
        self._batch = c.new_batch(n)
        self._names = np.array(c.action_names, dtype=object)
        # Each env's draws (the protocol of adainf_env.envs.core.RequestDraws), held for all envs in arrays: row i of
        # _perm / _ubuf is env i's permutation / uniform buffer, _ppos / _upos its positions (exhausted → refilled
        # from its own generator when it next draws).
        self._perm = np.zeros((n, self._ns), dtype=np.uint16 if self._ns <= 1 << 16 else np.int64)
        self._ppos = np.full(n, self._ns, dtype=np.int64)
        self._ubuf = np.zeros((n, RNG_CHUNK))
        self._upos = np.full(n, RNG_CHUNK, dtype=np.int64)
        self._t = np.zeros(n, dtype=np.int64)
        self._proc_b = np.zeros(n)
        self._aux = np.zeros(n)
        self._level = np.zeros(n)
        self._refill = np.zeros(n)
        self._pin_b = np.full(n, np.nan)
        self._every = np.arange(n)
        self._no_replace = np.zeros(n, dtype=bool)
        self._no_replace.flags.writeable = False
        self._fallback = opts.invalid_action == "fallback"
        self._ce = opts.reward == "neg_ce"
        self._started = False
        self._records: list[dict[str, Any] | None] = [None] * n  # each env's last step, for render_one()

    # ------------------------------------------------------------------ randomness (see env_core)
    def _draw(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The next request of each env ``idx``: (table rows, uniforms for the budget process). Refills (a new
        permutation, then new uniforms, as the protocol orders them) loop over the few envs whose buffer ran out."""
        pp, up = self._ppos[idx], self._upos[idx]
        need_p, need_u = pp >= self._ns, up >= RNG_CHUNK
        if need_p.any() or need_u.any():
            for j in np.flatnonzero(need_p | need_u).tolist():
                i = int(idx[j])
                r = self._rng(i)
                if need_p[j]:
                    self._perm[i] = r.permutation(self._ns)
                    pp[j] = 0
                if need_u[j]:
                    r.random(RNG_CHUNK, out=self._ubuf[i])
                    up[j] = 0
        s = self._perm.reshape(-1).take(idx * self._ns + pp).astype(np.int64)  # flat gathers (faster)
        u = self._ubuf.reshape(-1).take(idx * RNG_CHUNK + up)
        self._ppos[idx] = pp + 1
        self._upos[idx] = up + 1
        return s, u

    # ------------------------------------------------------------------ episodes and requests
    def _restart(self, idx: np.ndarray, new_episode: np.ndarray, pin_s: np.ndarray | None = None,
                 pin_b: np.ndarray | None = None) -> np.ndarray:
        """Envs ``idx`` take their next request: a new episode where ``new_episode``, else the episode's next
        request (``pin_s`` / ``pin_b``: reset options of new episodes, −1 / NaN where none). Returns the rows."""
        c = self.cfg
        s, u = self._draw(idx)
        if pin_s is not None:
            s = np.where(pin_s >= 0, pin_s, s)
        ep, nxt = idx[new_episode], idx[~new_episode]
        if ep.size:
            b0, aux = c.process.start(u[new_episode])
            pb = np.full(ep.size, np.nan) if pin_b is None else pin_b[new_episode]
            self._proc_b[ep] = np.where(np.isnan(pb), b0, pb)
            self._pin_b[ep] = pb
            self._aux[ep] = aux
            self._t[ep] = 0
            if c.bucket is not None:
                self._level[ep] = c.bucket.initial
        if nxt.size:
            free = np.isnan(self._pin_b[nxt])  # a pinned budget holds for the whole episode
            if free.any():
                f = nxt[free]
                self._proc_b[f] = c.process.next(self._t[f], self._proc_b[f], self._aux[f], u[~new_episode][free])
        bucket = c.bucket
        if bucket is None:
            budget = self._proc_b[idx]
        else:
            self._refill[idx] = self._proc_b[idx] if bucket.rate is None else bucket.rate
            self._level[idx] = bucket.refill(self._level[idx], self._proc_b[idx])
            budget = bucket.available(self._level[idx])
        self._batch.start(idx, s, budget)
        return s

    def _bucket_state(self, idx: np.ndarray | None = None) -> np.ndarray | None:
        if self.cfg.bucket is None:
            return None
        T = self.cfg.episode_length
        level, refill, t = (self._level, self._refill, self._t) if idx is None else \
            (self._level[idx], self._refill[idx], self._t[idx])
        return np.stack([level, refill, (T - t) / T], axis=1)

    def _observe(self, idx: np.ndarray | None = None):
        return self.cfg.observe(self._batch, self._bucket_state(idx), idx)

    # ------------------------------------------------------------------ the batched API
    def reset(self) -> Any:
        """Start a new episode in every env (applying the seeds and reset options given since the last reset) →
        the batched first observation; ``reset_infos`` holds each env's ``{"sample", "budget"}``."""
        n = self.num_envs
        for i, sd in enumerate(self._seeds):
            if sd is not None:
                self._rngs[i] = env_generator(sd)
                self._ppos[i] = self._ns
                self._upos[i] = RNG_CHUNK
        pins = [self.cfg.parse_options(o) if o else (None, None) for o in self._options]
        self._reset_seeds()
        self._reset_options()
        pin_s = np.array([-1 if p is None else p for p, _ in pins], dtype=np.int64)
        pin_b = np.array([np.nan if b is None else b for _, b in pins], dtype=np.float64)
        rows = self._restart(self._every, np.ones(n, dtype=bool), pin_s, pin_b)
        self._started = True
        self._records = [None] * n
        budget = self._batch.budget.tolist()
        self.reset_infos = [{"sample": r, "budget": b} for r, b in zip(rows.tolist(), budget)]
        return self._observe()

    def step_arrays(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, dict[str, np.ndarray], Any]:
        """One step of every env, as arrays: ``(obs, rewards [N] float32, dones [N], data, terminal_obs)``.

        ``data`` maps each info key of the single env (:data:`STEP_KEYS`, :data:`READ_KEYS`, :data:`END_KEYS`) to an
        array [N] (``action``: an object array of names); a :data:`READ_KEYS` entry means something only where
        ``data["read"]``, an :data:`END_KEYS` entry only where ``data["request_done"]``. Envs whose episode ended
        (``dones``) are already reset: ``obs`` holds their next episode's first observation and ``terminal_obs``
        the ended ones' last (batched over ``np.flatnonzero(dones)`` only, in that order; ``None`` when no env is
        done). The arrays are this step's own (nothing later writes to them). The SB3 and Gymnasium vector
        interfaces both wrap this.
        """
        if not self._started:
            raise AdaInfError("step() called before reset()")
        c = self.cfg
        batch = self._batch
        a = _as_actions(actions, self.num_envs)
        replaced = self._no_replace
        if c.menu is not None:  # stage actions: the StageBatch checks them and runs each on the block kernel
            if self._fallback:
                a, replaced = batch.substitute_invalid(a)
            pos0 = batch.pos
            spent0 = batch.spent.copy() if self.render_mode is not None else None
            res = batch.step(a, c.table.read_table)
        else:
            s = batch.state_index()
            ok = batch._valid(a, s)
            if not ok.all():
                if not self._fallback:
                    batch.step(a, c.table.read_table)  # raises the ActionError naming the slot
                replaced = ~ok
                a = np.where(replaced, np.where(a == RUN, SKIP, STOP), a)  # RequestBatch.substitute_invalid's rule
            pos0 = batch.pos
            spent0 = batch.spent.copy() if self.render_mode is not None else None
            res = batch._apply(s * (NUM_ACTIONS + 1) + a, c.table.read_table)  # every env is active
        ended = res.ended
        rows = batch.row.copy()
        plans = batch.answer.copy()
        any_end = ended.any()
        if any_end:
            flat = rows * c.table.correct.shape[1] + np.maximum(plans, 0)
            correct = ended & c.table.correct.reshape(-1).take(flat)
            loss = np.where(ended, c.table.loss.reshape(-1).take(flat), 0.0) if self._ce else None
        else:
            correct = np.zeros(self.num_envs, dtype=bool)
            loss = np.zeros(self.num_envs) if self._ce else None
        rew, reported = c.rewards(batch, res, correct, loss, None)
        total = batch.spent.copy()
        budgets = batch.budget.copy()
        pred = batch.last_pred.copy()
        # rewards() left each request's overrun so far in batch.charged: overrun_paid(total, budgets), computed once
        data = {"cost": reported, "total_cost": total, "budget": budgets, "overrun": batch.charged.copy(),
                "sample": rows, "action": self._names[a], "position": pos0, "read": res.read,
                "request_done": ended, "invalid_action": replaced,
                "read_plan": plans, "read_pred": pred, "read_conf": batch.last_conf.copy(),
                "plan": plans, "pred": pred, "correct": correct, "num_reads": batch.reads.copy()}
        if self.render_mode is not None:
            for i in range(self.num_envs):
                self._records[i] = step_record(batch, i, action=self._names[a[i]], position=int(pos0[i]),
                                               cost=float(total[i] - spent0[i]), reward=float(rew[i]),
                                               correct=bool(correct[i]) if ended[i] else None)
        terminal = None
        if any_end:
            idx = np.flatnonzero(ended)
            if c.mode == "bandit":
                dones = ended.copy()
                new_ep = np.ones(idx.size, dtype=bool)
            else:
                if c.bucket is not None:
                    self._level[idx] = c.bucket.spend(self._level[idx], total[idx])
                self._t[idx] += 1
                new_ep = self._t[idx] >= c.episode_length
                dones = np.zeros(self.num_envs, dtype=bool)
                dones[idx[new_ep]] = True
            if new_ep.any():
                terminal = self._observe(idx[new_ep])
            self._restart(idx, new_ep)
        else:
            dones = ended.copy()
        return self._observe(), rew.astype(np.float32), dones, data, terminal

    def current_requests(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of every env's request in flight: (table rows [N] int64, budgets [N] float64)."""
        if not self._started:
            raise AdaInfError("current_requests() called before reset()")
        return self._batch.row.copy(), self._batch.budget.copy()

    # ------------------------------------------------------------------ masks, attributes, frames
    def action_masks(self) -> np.ndarray:
        """[N, 4] bool: valid actions (run, skip, read, stop) of each env; stage mode: [N, 1 + K]."""
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
