"""A slow reference of the anytime env: the kernel, config, single env, SB3 vec env and Gymnasium vector env exactly as
they were before the vectorised rewrite (issue #19, commit 087aa02), kept for the equivalence test
(tests/test_anytime_kernel_equivalence.py). Table mode only, no rendering. Do not "fix" anything here: it is the
behaviour the fast implementation must reproduce to the last bit.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding

from adainf_env.budgets import BudgetProcess, make_budget_process
from adainf_env.envs.anytime.actions import ACTION_NAMES, AnytimeTable, NUM_ACTIONS, READ, RUN, SKIP, STOP
from adainf_env.envs.core import (ActionError, RequestDraws, action_vector, observation_parts, parse_reset_options,
                                  space_of_parts)
from adainf_env.envs.options import AnytimeOptions
from adainf_env.envs.reward import overrun_paid, step_reward
from adainf_env.errors import AdaInfError, ConfigError, TableFormatError
from adainf_env.feasibility import COST_TOL

# A reader maps (batch indices, table rows, plan indices) → (predicted class [k], confidence [k]).
Reader = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass
class StepResult:
    """One kernel step over the active requests: what each paid and which requests ended (arrays [N])."""

    cost: np.ndarray  # cost paid by this action (the stem is paid at start and not repeated here)
    ended: np.ndarray  # bool: the request ended with this action (STOP or its last block decided)
    read: np.ndarray  # bool: this action evaluated the head (READ, or the final read of an ending request)


class RequestBatch:
    """N requests in flight over an :class:`AnytimeTable` (see the module docstring for the semantics).

    State arrays (length N, read-only outside): ``row``, ``budget``, ``pos`` (next block to decide), ``code``
    (executed blocks as a bit code), ``chain`` (m), ``fresh`` (the current plan has not been read), ``spent``,
    ``reads``, ``last_conf``/``prev_conf``, ``last_pred``/``prev_pred`` (−1 before a read), ``answer`` (plan index of
    the last read, −1 before one), ``active``.
    """

    def __init__(self, n: int, table: AnytimeTable, *, mask_over_budget: bool = True) -> None:
        self.n = int(n)
        self.table = table
        self.costs = table.costs
        self.B = table.num_blocks
        self.mask_over_budget = bool(mask_over_budget)
        self._res = np.concatenate([self.costs.residual, [0.0]])  # padded so pos = B indexes safely
        self._sc = np.concatenate([self.costs.shortcut, [0.0]])
        self._suffix = self.costs.shortcut_suffix
        self._bit = np.concatenate([1 << np.arange(self.B, dtype=np.int64), [0]])
        z = np.zeros(self.n)
        self.row = np.zeros(self.n, dtype=np.int64)
        self.budget = z.copy()
        self.pos = np.zeros(self.n, dtype=np.int64)
        self.code = np.zeros(self.n, dtype=np.int64)
        self.chain = np.zeros(self.n, dtype=np.int64)
        self.fresh = np.ones(self.n, dtype=bool)
        self.spent = z.copy()
        self.reads = np.zeros(self.n, dtype=np.int64)
        self.last_conf = z.copy()
        self.prev_conf = z.copy()
        self.last_pred = np.full(self.n, -1, dtype=np.int64)
        self.prev_pred = np.full(self.n, -1, dtype=np.int64)
        self.answer = np.full(self.n, -1, dtype=np.int64)
        self.active = np.zeros(self.n, dtype=bool)
        # bookkeeping of the envs' per-step reports: cost not yet reported in info["cost"] (the stem, until the
        # request's first step) and overrun already charged in the reward
        self.unreported = z.copy()
        self.charged = z.copy()

    # ------------------------------------------------------------------ requests
    def start(self, idx: np.ndarray, rows: np.ndarray, budgets: np.ndarray) -> None:
        """Begin new requests in slots ``idx`` (table ``rows``, ``budgets``): the stem is paid."""
        idx = np.asarray(idx, dtype=np.int64)
        self.row[idx] = rows
        self.budget[idx] = budgets
        self.pos[idx] = 0
        self.code[idx] = 0
        self.chain[idx] = 0
        self.fresh[idx] = True
        self.spent[idx] = self.costs.stem
        self.reads[idx] = 0
        self.last_conf[idx] = 0.0
        self.prev_conf[idx] = 0.0
        self.last_pred[idx] = -1
        self.prev_pred[idx] = -1
        self.answer[idx] = -1
        self.active[idx] = True
        self.unreported[idx] = self.costs.stem
        self.charged[idx] = 0.0

    # ------------------------------------------------------------------ derived quantities
    def read_cost(self) -> np.ndarray:
        """[N] cost of reading the current plan now (0 if it has been read)."""
        return np.where(self.fresh, self._suffix[self.chain] + self.costs.head, 0.0)

    def run_cost(self) -> np.ndarray:
        """[N] cost of RUN now followed by the cheapest way to answer (a read right after); inf at the last position."""
        p = self.pos
        c = self._res[p] + self._sc[p] * (p >= self.chain) + self._suffix[np.minimum(p + 1, self.B)] + self.costs.head
        return np.where(p < self.B, c, np.inf)

    def cost_to_read(self, target: np.ndarray) -> np.ndarray:
        """[N] cost of reaching plan code ``target`` [N] from the current state (deciding blocks ``pos`` … up to its
        last executed block as it says) and reading it; inf where ``target`` does not extend the decisions so far.

        Used by policies to check that an escalation fits what is left of the budget before starting it.
        """
        target = np.asarray(target, dtype=np.int64)
        below = (1 << self.pos) - 1
        ok = (target & below) == self.code
        hi = np.where(target > 0, np.floor(np.log2(np.maximum(target, 1))).astype(np.int64) + 1, 0)
        cost = np.zeros(self.n)
        chain = self.chain.copy()
        code = self.code.copy()
        for j in range(self.B):
            passing = (j >= self.pos) & (j < hi)
            run = passing & (((target >> j) & 1) == 1)
            cost += np.where(passing, self._sc[j] * (j >= chain), 0.0) + np.where(run, self._res[j], 0.0)
            chain = np.where(run, j + 1, np.where(passing, np.maximum(chain, j + 1), chain))
            code = np.where(run, code | (1 << j), code)
        fresh = self.fresh | (code != self.code)
        cost += np.where(fresh, self._suffix[chain] + self.costs.head, 0.0)
        return np.where(ok, cost, np.inf)

    def agree(self) -> np.ndarray:
        """[N] bool: at least two reads and the last two predicted the same class."""
        return (self.reads >= 2) & (self.last_pred == self.prev_pred)

    def masks(self) -> np.ndarray:
        """[N, 4] valid actions of each slot (rows of inactive slots are all False)."""
        m = np.zeros((self.n, NUM_ACTIONS), dtype=bool)
        inside = self.active & (self.pos < self.B)
        nxt = self.code | self._bit[self.pos]
        run = inside & (self.table.code_to_plan[np.where(inside, nxt, 0)] >= 0)
        if self.mask_over_budget:
            run &= self.spent + self.run_cost() <= self.budget + COST_TOL
        m[:, RUN] = run
        m[:, SKIP] = inside
        m[:, READ] = self.active & self.fresh
        m[:, STOP] = self.active
        return m

    def substitute_invalid(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``invalid_action="fallback"``: each invalid action of an active slot → a valid one; (actions, replaced).

        A RUN that is not allowed becomes SKIP (or STOP at the last block); a READ of a plan already read becomes STOP
        (answer with what was read); an out-of-range action becomes STOP.
        """
        a = _as_actions(actions, self.n).copy()
        valid = self.masks()
        inrange = (a >= 0) & (a < NUM_ACTIONS)
        ok = inrange & valid[np.arange(self.n), np.clip(a, 0, NUM_ACTIONS - 1)]
        bad = self.active & ~ok
        if bad.any():
            a[bad] = np.where((a[bad] == RUN) & valid[bad, SKIP], SKIP, STOP)
        return a, bad

    # ------------------------------------------------------------------ the step
    def step(self, actions: np.ndarray, reader: Reader, *, only: np.ndarray | None = None) -> StepResult:
        """Apply ``actions`` [N] to the active slots (or to the slots ``only`` — a bool [N] subset of them).

        Every acted-on slot's action must be valid (:meth:`masks`), else :class:`ActionError` names the slot.
        """
        act = self.active if only is None else (np.asarray(only, dtype=bool) & self.active)
        a = _as_actions(actions, self.n)
        valid = self.masks()
        ok = valid[np.arange(self.n), np.clip(a, 0, NUM_ACTIONS - 1)] & (a >= 0) & (a < NUM_ACTIONS)
        bad = act & ~ok
        if bad.any():
            i = int(np.argmax(bad))
            allowed = [ACTION_NAMES[k] for k in np.flatnonzero(valid[i])]
            what = ACTION_NAMES[a[i]] if 0 <= a[i] < NUM_ACTIONS else repr(int(a[i]))
            raise ActionError(f"action {what} ({int(a[i])}) is not allowed here (slot {i}, block {int(self.pos[i])} "
                              f"of {self.B}, spent {self.spent[i]:.4f} of budget {self.budget[i]:.4f}); allowed: "
                              f"{allowed} — see action_masks()")
        cost = np.zeros(self.n)
        p = self.pos
        run = act & (a == RUN)
        skip = act & (a == SKIP)
        passing = run | skip
        # pass block p: its shortcut unless a read already computed it, its residual when run
        sc_due = self._sc[p] * (p >= self.chain)
        cost += np.where(passing, sc_due, 0.0) + np.where(run, self._res[p], 0.0)
        self.code = np.where(run, self.code | self._bit[p], self.code)
        self.chain = np.where(run, p + 1, np.where(skip, np.maximum(self.chain, p + 1), self.chain))
        self.fresh = self.fresh | run
        self.pos = np.where(passing, p + 1, p)
        ended = act & ((a == STOP) | (passing & (self.pos >= self.B)))
        reading = (act & (a == READ)) | (ended & self.fresh)
        if reading.any():
            cost += np.where(reading, self._suffix[self.chain] + self.costs.head, 0.0)
            idx = np.flatnonzero(reading)
            plans = self.table.code_to_plan[self.code[idx]]
            pred, conf = reader(idx, self.row[idx], plans)
            self.prev_pred[idx] = self.last_pred[idx]
            self.prev_conf[idx] = self.last_conf[idx]
            self.last_pred[idx] = pred
            self.last_conf[idx] = conf
            self.answer[idx] = plans
            self.reads[idx] += 1
            self.chain[idx] = self.B
            self.fresh[idx] = False
        self.spent += cost
        self.active = self.active & ~ended
        return StepResult(cost=cost, ended=ended, read=reading)


READOUT = ("last_conf", "prev_conf", "agree", "reads", "read_current")


@dataclasses.dataclass
class AnytimeConfig:
    """Validated options of the anytime envs (:class:`~adainf_env.envs.options.AnytimeOptions`), their spaces,
    observations and rewards (one definition for the single env, the vec env and the Gymnasium vector env)."""

    options: AnytimeOptions
    process: BudgetProcess  # the options' budget process, bound to the cheapest answer's cost
    lam: float  # λ: starts as options.lam; the vec env lets set_attr("lam", ...) change it (Lagrangian training)
    table: AnytimeTable
    features: np.ndarray  # [N, F] float32, read-only
    observation_space: spaces.Space
    action_space: spaces.Space

    @property
    def num_samples(self) -> int:
        return int(self.features.shape[0])

    # the options, read where the envs used to keep them as fields
    mode = property(lambda self: self.options.mode)
    episode_length = property(lambda self: self.options.episode_length)
    bucket = property(lambda self: self.options.bucket)
    reward = property(lambda self: self.options.reward)
    penalty = property(lambda self: self.options.penalty)
    hard_penalty = property(lambda self: self.options.hard_penalty)
    obs_format = property(lambda self: self.options.obs_format)
    mask_over_budget = property(lambda self: self.options.mask_over_budget)
    invalid_action = property(lambda self: self.options.invalid_action)

    @classmethod
    def build(cls, *, table: AnytimeTable, features: np.ndarray, options: AnytimeOptions | None = None,
              **option_kwargs: Any) -> "AnytimeConfig":
        """From ``options`` and/or its fields as keywords (keywords win; see :class:`AnytimeOptions`)."""
        opts = AnytimeOptions.from_kwargs(options, **option_kwargs)
        if opts.reward == "neg_ce" and table.pred is not None and table.loss is None:
            raise ConfigError("reward='neg_ce' needs the table's loss")
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.ndim != 2 or not np.isfinite(features).all():
            raise TableFormatError(f"features must be a finite [N, F] array, got shape {features.shape}")
        features.setflags(write=False)
        costs = table.costs
        floor = float(costs.plan_cost(np.zeros((1, costs.num_blocks)))[0])  # the cheapest answer: plan 0
        process = make_budget_process(opts.budget).bind(floor)
        b = costs.num_blocks
        parts = observation_parts(features.shape[1], opts)  # features, budget, bucket: as the plan envs
        # [spent so far, cost of answering now, cost of RUN then answering]
        parts["costs"] = spaces.Box(low=np.zeros(3, np.float32),
                                    high=np.array([costs.max_request_cost, 1.0, 1.0], np.float32), dtype=np.float32)
        parts["position"] = spaces.Box(low=0.0, high=1.0, shape=(b + 1,), dtype=np.float32)
        parts["decisions"] = spaces.Box(low=0.0, high=1.0, shape=(b,), dtype=np.float32)
        parts["readout"] = spaces.Box(low=0.0, high=1.0, shape=(len(READOUT),), dtype=np.float32)
        return cls(options=opts, process=process, lam=opts.lam, table=table, features=features,
                   observation_space=space_of_parts(parts, opts.obs_format),
                   action_space=spaces.Discrete(NUM_ACTIONS))

    # ------------------------------------------------------------------ observations
    def observe(self, batch: RequestBatch, bucket_state: np.ndarray | None) -> Any:
        """Batched observation [N, ...] of every slot (``bucket_state`` [N, 3] when a bucket is on)."""
        n, b = batch.n, batch.B
        parts: dict[str, np.ndarray] = {
            "features": self.features.take(batch.row, axis=0),
            "budget": batch.budget.astype(np.float32)[:, None],
        }
        if self.bucket is not None:
            parts["bucket"] = np.asarray(bucket_state, dtype=np.float32)
        c = np.empty((n, 3), dtype=np.float32)
        c[:, 0] = batch.spent
        c[:, 1] = batch.read_cost()
        c[:, 2] = np.where(batch.pos < b, batch.run_cost(), 0.0)
        parts["costs"] = c
        pos = np.zeros((n, b + 1), dtype=np.float32)
        pos[np.arange(n), np.minimum(batch.pos, b)] = 1.0
        parts["position"] = pos
        parts["decisions"] = ((batch.code[:, None] >> np.arange(b)) & 1).astype(np.float32)
        r = np.empty((n, len(READOUT)), dtype=np.float32)
        r[:, 0] = batch.last_conf
        r[:, 1] = batch.prev_conf
        r[:, 2] = batch.agree()
        r[:, 3] = batch.reads / (b + 1)
        r[:, 4] = ~batch.fresh
        parts["readout"] = r
        if self.obs_format == "dict":
            return parts
        return np.concatenate(list(parts.values()), axis=1)

    # ------------------------------------------------------------------ rewards
    def rewards(self, batch: RequestBatch, res: StepResult, correct: np.ndarray, loss: np.ndarray | None,
                acted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(reward [N], cost reported this step [N]) for the acting slots; updates the batch's bookkeeping.

        Linear penalty: each step is charged λ × the overrun it adds (so a request's rewards sum to
        base − λ·max(0, total cost − budget)); ``base`` (1[correct] or −cross-entropy) arrives when it ends. Hard
        penalty: the ending step gets ``hard_penalty`` instead of ``base`` if the request overran.
        """
        over = overrun_paid(batch.spent, batch.budget)
        ended = res.ended
        ce = np.where(ended, loss, 0.0) if self.reward == "neg_ce" else None
        kw = dict(reward=self.reward, penalty=self.penalty, lam=self.lam, hard_penalty=self.hard_penalty)
        if self.penalty == "hard":
            rew = np.where(ended, step_reward(correct, ce, over, **kw), 0.0)
        else:  # the overrun this step adds (what was charged before is not charged again)
            rew = step_reward(correct & ended, ce, over - batch.charged, **kw)
        rew = np.where(acted, rew, 0.0)
        batch.charged = np.where(acted, over, batch.charged)
        reported = np.where(acted, res.cost + batch.unreported, 0.0)
        batch.unreported = np.where(acted, 0.0, batch.unreported)
        return rew, reported

    def parse_options(self, options: Any) -> tuple[int | None, float | None]:
        """reset(options={"sample": row, "budget": b}) → (pinned row or None, pinned budget or None)."""
        return parse_reset_options(options, self.num_samples)


def _as_actions(actions: Any, n: int) -> np.ndarray:
    return action_vector(actions, n, shape_msg="(one of run=0, skip=1, read=2, stop=3 per request), got shape {shape}",
                         dtype_msg="actions must be integers (run=0, skip=1, read=2, stop=3), got dtype {dtype}")





def _action_index(action: Any, strict: bool) -> int:
    if isinstance(action, (bool, np.bool_)):
        raise ActionError(f"action must be an integer in [0, {NUM_ACTIONS}) (run, skip, read, stop), got {action!r}")
    try:
        a = int(np.asarray(action).reshape(()))
        if np.asarray(action).dtype.kind not in "iu":
            raise TypeError
    except (TypeError, ValueError):
        raise ActionError(f"action must be an integer in [0, {NUM_ACTIONS}) (run, skip, read, stop), got "
                          f"{action!r}") from None
    if strict and not 0 <= a < NUM_ACTIONS:
        raise ActionError(f"action {a} out of range [0, {NUM_ACTIONS}) (run=0, skip=1, read=2, stop=3)")
    return a


class ReferenceAnytimeEnv:
    """The single env's reset/step (table mode) as before the rewrite: ``reset(seed=, options=)``, ``step(a)``,
    ``action_masks()``."""

    def __init__(self, table, **option_kwargs: Any) -> None:
        opts = AnytimeOptions.from_kwargs(None, **option_kwargs)
        self.cfg = AnytimeConfig.build(table=AnytimeTable.from_table(table, opts.cost_unit), features=table.features,
                                       options=opts)
        self.mode = opts.mode
        self._n = self.cfg.num_samples
        self._batch = RequestBatch(1, self.cfg.table, mask_over_budget=opts.mask_over_budget)
        self._zero = np.zeros(1, dtype=np.int64)
        self._draws = RequestDraws(self._n)
        self._rng: np.random.Generator | None = None
        self._done = True

    def _draw(self) -> tuple[int, float]:
        if self._rng is None:
            self._rng = seeding.np_random()[0]
        s, k = self._draws.draw(self._rng)
        return s, float(self._draws.ubuf[k])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._rng = seeding.np_random(seed)[0]
            self._draws.invalidate()
        pin_s, pin_b = self.cfg.parse_options(options)
        s, u = self._draw()
        s = s if pin_s is None else pin_s
        b0, self._aux = self.cfg.process.start(np.array([u]))
        self._proc_b = b0 if pin_b is None else np.array([pin_b])
        self._pin_b = pin_b
        self._t = 0
        if self.cfg.bucket is not None:
            self._level = np.array([float(self.cfg.bucket.initial)])
        self._begin(s)
        self._done = False
        return self._observe(), {"sample": s, "budget": float(self._batch.budget[0])}

    def _begin(self, s: int) -> None:
        bucket = self.cfg.bucket
        if bucket is None:
            budget = float(self._proc_b[0])
        else:
            self._refill = float(self._proc_b[0]) if bucket.rate is None else float(bucket.rate)
            self._level = bucket.refill(self._level, self._proc_b)
            budget = float(bucket.available(self._level)[0])
        self._batch.start(self._zero, np.array([s]), np.array([budget]))

    def _observe(self):
        bs = None
        if self.cfg.bucket is not None:
            T = self.cfg.episode_length
            bs = np.array([[self._level[0], self._refill, (T - self._t) / T]])
        obs = self.cfg.observe(self._batch, bs)
        if self.cfg.obs_format == "dict":
            return {k: v[0] for k, v in obs.items()}
        return obs[0]

    def action_masks(self) -> np.ndarray:
        return self._batch.masks()[0]

    def step(self, action):
        if self._done:
            raise AdaInfError("step() after the episode ended")
        batch = self._batch
        a = _action_index(action, self.cfg.invalid_action == "raise")
        replaced = False
        if self.cfg.invalid_action == "fallback":
            sub, bad = batch.substitute_invalid(np.array([a]))
            a, replaced = int(sub[0]), bool(bad[0])
        reader = self.cfg.table.read_table
        pos0 = int(batch.pos[0])
        res = batch.step(np.array([a]), reader)
        ended = bool(res.ended[0])
        s = int(batch.row[0])
        plan = int(batch.answer[0])
        correct = np.zeros(1, dtype=bool)
        loss = np.zeros(1)
        if ended:
            t = self.cfg.table
            correct[0] = t.correct[s, plan]
            loss[0] = t.loss[s, plan]
        rew, reported = self.cfg.rewards(batch, res, correct, loss if self.cfg.reward == "neg_ce" else None,
                                         np.ones(1, dtype=bool))
        budget = float(batch.budget[0])
        total = float(batch.spent[0])
        info: dict[str, Any] = {"cost": float(reported[0]), "total_cost": total, "budget": budget,
                                "overrun": overrun_paid(total, budget),
                                "sample": s, "action": ACTION_NAMES[a], "position": pos0,
                                "read": bool(res.read[0]), "request_done": ended, "invalid_action": replaced}
        if res.read[0]:
            info["read_plan"] = plan
            info["read_pred"] = int(batch.last_pred[0])
            info["read_conf"] = float(batch.last_conf[0])
        if ended:
            info.update(plan=plan, pred=int(batch.last_pred[0]), correct=bool(correct[0]),
                        num_reads=int(batch.reads[0]))
        terminated = False
        if ended:
            if self.mode == "bandit":
                terminated = True
            else:
                if self.cfg.bucket is not None:
                    self._level = self.cfg.bucket.spend(self._level, np.array([total]))
                self._t += 1
                if self._t >= self.cfg.episode_length:
                    terminated = True
                else:
                    s2, u = self._draw()
                    if self._pin_b is None:
                        self._proc_b = self.cfg.process.next(self._t, self._proc_b, self._aux, np.array([u]))
                    self._begin(s2)
        if terminated:
            self._done = True
        return self._observe(), float(rew[0]), terminated, False, info


STEP_KEYS = ("cost", "total_cost", "budget", "overrun", "sample", "action", "position", "read", "request_done",
             "invalid_action")
READ_KEYS = ("read_plan", "read_pred", "read_conf")
END_KEYS = ("plan", "pred", "correct", "num_reads")
_ACTION_NAMES = np.array(ACTION_NAMES, dtype=object)


class ReferenceAnytimeVecEnv:
    """The SB3 vec env's reset/step as before the rewrite: ``seed(s)`` (env i gets ``s + i``), ``reset()``,
    ``step(actions)`` → ``(obs, rewards, dones, infos)`` (a list of dicts), ``step_arrays``, ``action_masks()``."""

    def __init__(self, table, num_envs: int, **option_kwargs: Any) -> None:
        opts = AnytimeOptions.from_kwargs(None, **option_kwargs)
        self.options = opts
        self.cfg = c = AnytimeConfig.build(table=AnytimeTable.from_table(table, opts.cost_unit),
                                           features=table.features, options=opts)
        n = self.num_envs = int(num_envs)
        self._ns = c.num_samples
        self._batch = RequestBatch(n, c.table, mask_over_budget=opts.mask_over_budget)
        self._rngs: list[np.random.Generator | None] = [None] * n
        self._seeds: list[int | None] = [None] * n
        self._options: list[dict] = [{} for _ in range(n)]
        self._draws = [RequestDraws(self._ns) for _ in range(n)]
        self._t = np.zeros(n, dtype=np.int64)
        self._proc_b = np.zeros(n)
        self._aux = np.zeros(n)
        self._level = np.zeros(n)
        self._refill = np.zeros(n)
        self._pin_b = np.full(n, np.nan)

    def seed(self, seed: int) -> None:
        self._seeds = [seed + i for i in range(self.num_envs)]

    def set_options(self, options: dict | list[dict]) -> None:
        self._options = [dict(o) for o in options] if isinstance(options, list) else \
            [dict(options) for _ in range(self.num_envs)]

    def _rng(self, i: int) -> np.random.Generator:
        if self._rngs[i] is None:
            self._rngs[i] = seeding.np_random()[0]
        return self._rngs[i]

    def _draw(self, i: int) -> tuple[int, float]:
        s, k = self._draws[i].draw(self._rng(i))
        return s, float(self._draws[i].ubuf[k])

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

    def reset(self):
        for i, sd in enumerate(self._seeds):
            if sd is not None:
                self._rngs[i] = seeding.np_random(int(sd))[0]
                self._draws[i].invalidate()
        pins = [self.cfg.parse_options(o) if o else (None, None) for o in self._options]
        self._seeds = [None] * self.num_envs
        self._options = [{} for _ in range(self.num_envs)]
        rows = [self._new_episode(i, *pins[i]) for i in range(self.num_envs)]
        self.reset_infos = [{"sample": rows[i], "budget": float(self._batch.budget[i])} for i in range(self.num_envs)]
        return self._observe()

    def action_masks(self) -> np.ndarray:
        return self._batch.masks()

    def current_requests(self) -> tuple[np.ndarray, np.ndarray]:
        return self._batch.row.copy(), self._batch.budget.copy()

    def step(self, actions):
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

    def step_arrays(self, actions: Any):
        c = self.cfg
        batch = self._batch
        n = self.num_envs
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
        data = {"cost": reported, "total_cost": total, "budget": budgets, "overrun": overrun_paid(total, budgets),
                "sample": rows, "action": _ACTION_NAMES[a], "position": pos0, "read": res.read.copy(),
                "request_done": ended.copy(), "invalid_action": replaced,
                "read_plan": plans, "read_pred": batch.last_pred.copy(), "read_conf": batch.last_conf.copy(),
                "plan": plans, "pred": batch.last_pred.copy(), "correct": correct.astype(bool),
                "num_reads": batch.reads.copy()}
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


def _masked(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if values.dtype == object:
        return np.where(mask, values, None)
    return np.where(mask, values, np.zeros((), dtype=values.dtype))


class ReferenceAnytimeVectorEnv:
    """The Gymnasium vector env's reset/step as before the rewrite (over :class:`ReferenceAnytimeVecEnv`)."""

    def __init__(self, table, num_envs: int, **option_kwargs: Any) -> None:
        self.core = ReferenceAnytimeVecEnv(table, num_envs, **option_kwargs)
        self.num_envs = num_envs
        self._every = np.ones(num_envs, dtype=bool)
        self._no_trunc = np.zeros(num_envs, dtype=bool)

    def action_masks(self) -> np.ndarray:
        return self.core.action_masks()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        core = self.core
        if seed is not None:
            core.seed(int(seed))
        if options is not None:
            core.set_options(options)
        obs = core.reset()
        sample, budget = core.current_requests()
        return obs, {"sample": sample, "_sample": self._every.copy(), "budget": budget, "_budget": self._every.copy()}

    def step(self, actions: Any):
        obs, rewards, dones, data, terminal = self.core.step_arrays(actions)
        alive = ~dones
        read, ended = data["read"], data["request_done"]
        infos: dict[str, Any] = {}
        if dones.any():
            final: dict[str, Any] = {}
            self._put(final, data, dones, read, ended)
            per_env = self._split_obs(terminal, dones)
            infos.update(final_obs=per_env, _final_obs=dones.copy(), final_info=final, _final_info=dones.copy())
        self._put(infos, data, alive, read, ended)
        if dones.any():
            sample, budget = self.core.current_requests()
            infos["sample"] = np.where(dones, sample, data["sample"])
            infos["budget"] = np.where(dones, budget, data["budget"])
            infos["_sample"] = self._every.copy()
            infos["_budget"] = self._every.copy()
        return obs, rewards, dones, self._no_trunc.copy(), infos

    @staticmethod
    def _put(target, data, who, read, ended) -> None:
        for keys, cond in ((STEP_KEYS, who), (READ_KEYS, who & read), (END_KEYS, who & ended)):
            if not cond.any():
                continue
            for k in keys:
                target[k] = _masked(data[k], cond)
                target["_" + k] = cond.copy()

    def _split_obs(self, batched: Any, which: np.ndarray) -> np.ndarray:
        out = np.full(self.num_envs, None, dtype=object)
        for i in np.flatnonzero(which):
            out[i] = ({k: v[i].copy() for k, v in batched.items()} if isinstance(batched, dict)
                      else batched[i].copy())
        return out
