"""The anytime-inference kernel shared by :class:`~adainf_env.envs.anytime.env.AnytimeEnv`,
:class:`~adainf_env.envs.anytime.vec_env.AnytimeVecEnv` and the anytime evaluation harness.

A request is served block by block. :class:`RequestBatch` holds N requests in flight and applies one action to each
(numpy over N), so the single env (N = 1), the vec env and the harness share one definition of what an action does
and what it costs.

Actions (``Discrete(4)``): ``RUN`` = 0, ``SKIP`` = 1, ``READ`` = 2, ``STOP`` = 3 — see the env's manual.

Exact cost accounting (fractions of the full model; see :class:`BlockCosts`). The hidden state after deciding blocks
0..i−1 is ``h_i``. Passing block i computes its shortcut ``sc_i(h_i)`` (always) and, for RUN, its residual. A READ at
position i evaluates the plan "decisions so far, every later block skipped": it runs the shortcut-only chain
``g_i = h_i, g_{j+1} = combine(sc_j(g_j))`` to the end and the head. Everything computed is kept, so nothing is paid
twice: while the agent keeps skipping after a read, the chain *is* its path (the shortcuts are already computed), and
a RUN right after a read reuses the read's ``sc_i(h_i)``. The state that captures this is ``m`` (the chain extent):
shortcuts of blocks ``pos ≤ j < m`` on the current path are already computed. Hence

* RUN at i:  ``res_i + sc_i·[i ≥ m]``; then ``m = i + 1`` (a new path: nothing beyond it computed);
* SKIP at i: ``sc_i·[i ≥ m]``; then ``m = max(m, i + 1)``;
* READ:      ``Σ_{j ≥ m} sc_j + head``; then ``m = B``. Reading twice without running a block in between would read
  the same plan again (masked: it tells nothing new);
* STOP:      a READ first if the current plan has not been read yet, then the request ends with the last answer read;
* after the decision for the last block the request ends the same way (a read of the final plan unless it was read).

The stem is paid when the request starts.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from adainf_env.envs.anytime.actions import (ACTION_NAMES, NOOP, NUM_ACTIONS, READ, RUN, SKIP, STOP, AnytimeTable,
                                             Reader)
from adainf_env.envs.core import ActionError, action_vector
from adainf_env.feasibility import COST_TOL
from adainf_env.plans import top_block

__all__ = ["RequestBatch", "StepResult"]

@dataclasses.dataclass
class StepResult:
    """One kernel step over the active requests: what each paid and which requests ended (arrays [N])."""

    cost: np.ndarray  # cost paid by this action (the stem is paid at start and not repeated here)
    ended: np.ndarray  # bool: the request ended with this action (STOP or its last block decided)
    read: np.ndarray  # bool: this action evaluated the head (READ, or the final read of an ending request)


class RequestBatch:
    """N requests in flight over an :class:`AnytimeTable` (see the module docstring for the semantics).

    State arrays (length N, read-only outside): ``row``, ``budget``, ``pos`` (next block to decide), ``code``
    (executed blocks as a bit code), ``fresh`` (the current plan has not been read), ``spent``, ``reads``,
    ``last_conf``/``prev_conf``, ``last_pred``/``prev_pred`` (−1 before a read), ``answer`` (plan index of the last
    read, −1 before one), ``active``; ``chain`` (m) is derived from ``pos`` and ``fresh``.

    A step is a handful of numpy gathers in :class:`KernelTables` over all N slots (no per-slot Python), so the single
    env (N = 1), the vec envs and the harness pay the same few operations whatever N is.
    """

    def __init__(self, n: int, table: AnytimeTable, *, mask_over_budget: bool = True) -> None:
        self.n = int(n)
        self.table = table
        self.costs = table.costs
        self.B = table.num_blocks
        self.mask_over_budget = bool(mask_over_budget)
        self.kt = table.kernel
        self._every_plan = table.every_code_is_plan
        self._slots = np.arange(self.n)
        z = np.zeros(self.n)
        self.row = np.zeros(self.n, dtype=np.int64)
        self.budget = z.copy()
        self.pos = np.zeros(self.n, dtype=np.int64)
        self.code = np.zeros(self.n, dtype=np.int64)
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
    @property
    def chain(self) -> np.ndarray:
        """[N] chain extent m: shortcuts of blocks ``pos ≤ j < m`` on the current path are computed (``pos`` while
        the current plan is unread, ``B`` once read)."""
        return np.where(self.fresh, self.pos, self.B)

    def state_index(self) -> np.ndarray:
        """[N] each slot's :class:`KernelTables` state ``2·pos + fresh``."""
        return self.pos * 2 + self.fresh

    def read_cost(self) -> np.ndarray:
        """[N] cost of reading the current plan now (0 if it has been read)."""
        return self.kt.read_cost[self.state_index()]

    def run_cost(self) -> np.ndarray:
        """[N] cost of RUN now followed by the cheapest way to answer (a read right after); inf at the last position."""
        return self.kt.run_cost[self.state_index()]

    def cost_to_read(self, target: np.ndarray) -> np.ndarray:
        """[N] cost of reaching plan code ``target`` [N] from the current state (deciding blocks ``pos`` … up to its
        last executed block as it says) and reading it; inf where ``target`` does not extend the decisions so far.

        Used by policies to check that an escalation fits what is left of the budget before starting it.
        """
        target = np.asarray(target, dtype=np.int64)
        below = (1 << self.pos) - 1
        ok = (target & below) == self.code
        hi = top_block(target)
        cost = np.zeros(self.n)
        chain = self.chain
        code = self.code.copy()
        res, sc = self.costs.residual, self.costs.shortcut
        for j in range(self.B):
            passing = (j >= self.pos) & (j < hi)
            run = passing & (((target >> j) & 1) == 1)
            cost += np.where(passing, sc[j] * (j >= chain), 0.0) + np.where(run, res[j], 0.0)
            chain = np.where(run, j + 1, np.where(passing, np.maximum(chain, j + 1), chain))
            code = np.where(run, code | (1 << j), code)
        fresh = self.fresh | (code != self.code)
        cost += np.where(fresh, self.costs.shortcut_suffix[chain] + self.costs.head, 0.0)
        return np.where(ok, cost, np.inf)

    def agree(self) -> np.ndarray:
        """[N] bool: at least two reads and the last two predicted the same class."""
        return (self.reads >= 2) & (self.last_pred == self.prev_pred)

    def _run_ok(self, s: np.ndarray) -> np.ndarray:
        """[N] bool: RUN is allowed in each slot (an active slot is always before its last block)."""
        run = self.active.copy()
        if not self._every_plan:
            nxt = self.code | (1 << np.minimum(self.pos, self.B - 1))
            run &= self.table.code_to_plan[np.where(run, nxt, 0)] >= 0
        if self.mask_over_budget:
            run &= self.spent + self.kt.run_cost[s] <= self.budget + COST_TOL
        return run

    def masks(self) -> np.ndarray:
        """[N, 4] valid actions of each slot (rows of inactive slots are all False)."""
        s = self.state_index()
        m = np.empty((self.n, NUM_ACTIONS), dtype=bool)
        m[:, RUN] = self._run_ok(s)
        m[:, SKIP] = self.active
        m[:, READ] = self.active & self.fresh
        m[:, STOP] = self.active
        return m

    def substitute_invalid(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``invalid_action="fallback"``: each invalid action of an active slot → a valid one; (actions, replaced).

        A RUN that is not allowed becomes SKIP (or STOP at the last block); a READ of a plan already read becomes STOP
        (answer with what was read); an out-of-range action becomes STOP.
        """
        a = _as_actions(actions, self.n).copy()
        bad = self.active & ~self._valid(a, self.state_index())
        if bad.any():
            a[bad] = np.where(a[bad] == RUN, SKIP, STOP)  # SKIP is valid wherever a slot is active
        return a, bad

    def _valid(self, a: np.ndarray, s: np.ndarray) -> np.ndarray:
        """[N] bool: action ``a`` is valid in each active slot (out-of-range actions are not)."""
        inrange = (a >= 0) & (a < NUM_ACTIONS)
        ok = self.kt.allowed[s * (NUM_ACTIONS + 1) + np.where(inrange, a, NOOP)] & self.active
        run = a == RUN
        if run.any():
            ok &= ~run | self._run_ok(s)
        return ok

    # ------------------------------------------------------------------ the step
    def step(self, actions: np.ndarray, reader: Reader, *, only: np.ndarray | None = None) -> StepResult:
        """Apply ``actions`` [N] to the active slots (or to the slots ``only`` — a bool [N] subset of them).

        Every acted-on slot's action must be valid (:meth:`masks`), else :class:`ActionError` names the slot.
        """
        act = self.active if only is None else (np.asarray(only, dtype=bool) & self.active)
        a = _as_actions(actions, self.n)
        s = self.state_index()
        bad = act & ~self._valid(a, s)
        if bad.any():
            i = int(np.argmax(bad))
            valid = self.masks()
            allowed = [ACTION_NAMES[k] for k in np.flatnonzero(valid[i])]
            what = ACTION_NAMES[a[i]] if 0 <= a[i] < NUM_ACTIONS else repr(int(a[i]))
            raise ActionError(f"action {what} ({int(a[i])}) is not allowed here (slot {i}, block {int(self.pos[i])} "
                              f"of {self.B}, spent {self.spent[i]:.4f} of budget {self.budget[i]:.4f}); allowed: "
                              f"{allowed} — see action_masks()")
        return self._apply(s * (NUM_ACTIONS + 1) + np.where(act, a, NOOP), reader)

    def _apply(self, k: np.ndarray, reader: Reader) -> StepResult:
        """The step of validated kernel entries ``k`` [N] (``NOOP`` where a slot does not act)."""
        kt = self.kt
        cost = kt.cost[k]
        self.code = self.code | kt.code_bit[k]  # new arrays, as callers may hold the previous step's
        self.pos = self.pos + kt.advance[k]
        ended = kt.ends[k]
        reading = kt.reads[k]
        self.fresh = kt.next_fresh[k]
        if reading.any():
            idx = np.flatnonzero(reading)
            plans = self.table.code_to_plan[self.code[idx]]
            pred, conf = reader(idx, self.row[idx], plans)
            self.prev_pred[idx] = self.last_pred[idx]
            self.prev_conf[idx] = self.last_conf[idx]
            self.last_pred[idx] = pred
            self.last_conf[idx] = conf
            self.answer[idx] = plans
            self.reads[idx] += 1
        self.spent += cost
        self.active = self.active & ~ended
        return StepResult(cost=cost, ended=ended, read=reading)


class OneRequest:
    """One request in flight as Python scalars: the single env's fast path (no numpy call per step), reading the same
    :class:`KernelTables` as :class:`RequestBatch`, so both take the same steps at the same costs (tested).

    Attributes as in :class:`RequestBatch`, for the one request: ``row``, ``budget``, ``pos``, ``code``, ``fresh``,
    ``spent``, ``reads``, ``last_conf``, ``prev_conf``, ``last_pred``, ``prev_pred``, ``answer``, ``active``,
    ``unreported``, ``charged``. :meth:`write_to` copies them into slot 0 of a :class:`RequestBatch` (for code that
    reads the kernel state: policies, rendering, error messages).
    """

    __slots__ = ("table", "B", "mask_over_budget", "_cost", "_advance", "_bit", "_ends", "_reads", "_next_fresh",
                 "_allowed", "_run_cost", "_read_cost", "_code_plan", "_every_plan", "_stem",
                 "row", "budget", "pos", "code", "fresh", "spent", "reads", "last_conf", "prev_conf", "last_pred",
                 "prev_pred", "answer", "active", "unreported", "charged")

    def __init__(self, table: AnytimeTable, *, mask_over_budget: bool = True) -> None:
        kt = table.kernel
        self.table = table
        self.B = table.num_blocks
        self.mask_over_budget = bool(mask_over_budget)
        self._cost, self._advance, self._bit = kt.cost.tolist(), kt.advance.tolist(), kt.code_bit.tolist()
        self._ends, self._reads, self._next_fresh = kt.ends.tolist(), kt.reads.tolist(), kt.next_fresh.tolist()
        self._allowed = kt.allowed.tolist()
        self._run_cost, self._read_cost = kt.run_cost.tolist(), kt.read_cost.tolist()
        self._code_plan = table.code_to_plan.tolist()
        self._every_plan = table.every_code_is_plan
        self._stem = float(table.costs.stem)
        self.start(0, 1.0)
        self.active = False

    def start(self, row: int, budget: float) -> None:
        """Begin a new request (table ``row``, ``budget``): the stem is paid."""
        self.row, self.budget = row, budget
        self.pos = self.code = self.reads = 0
        self.fresh = self.active = True
        self.spent = self.unreported = self._stem
        self.last_conf = self.prev_conf = self.charged = 0.0
        self.last_pred = self.prev_pred = self.answer = -1

    def run_ok(self) -> bool:
        """RUN is allowed now (:meth:`RequestBatch.masks`)."""
        if not self.active:
            return False
        if not self._every_plan and self._code_plan[self.code | (1 << self.pos)] < 0:
            return False
        return not self.mask_over_budget or \
            self.spent + self._run_cost[2 * self.pos + self.fresh] <= self.budget + COST_TOL

    def masks(self) -> list[bool]:
        """Valid actions now: [run, skip, read, stop]."""
        act = self.active
        return [self.run_ok(), act, act and self.fresh, act]

    def valid(self, a: int) -> bool:
        """Action ``a`` (any int) is valid now."""
        if not (self.active and 0 <= a < NUM_ACTIONS):
            return False
        return self._allowed[(2 * self.pos + self.fresh) * (NUM_ACTIONS + 1) + a] and (a != RUN or self.run_ok())

    def read_cost(self) -> float:
        return self._read_cost[2 * self.pos + self.fresh]

    def run_cost_or_zero(self) -> float:
        """What ``observe`` shows for RUN then answering: its cost, 0 after the last block."""
        return self._run_cost[2 * self.pos + self.fresh] if self.pos < self.B else 0.0

    def step(self, a: int) -> tuple[float, bool, bool]:
        """Apply a valid action ``a`` (check with :meth:`valid`) → (cost paid, request ended, head read); a read takes
        its prediction and confidence from the table."""
        k = (2 * self.pos + self.fresh) * (NUM_ACTIONS + 1) + a
        cost = self._cost[k]
        self.pos += self._advance[k]
        self.code |= self._bit[k]
        ended, reading = self._ends[k], self._reads[k]
        self.fresh = self._next_fresh[k]
        if reading:
            plan = self._code_plan[self.code]
            t = self.table
            self.prev_pred, self.prev_conf = self.last_pred, self.last_conf
            self.last_pred, self.last_conf = t.pred.item(self.row, plan), t.conf.item(self.row, plan)
            self.answer = plan
            self.reads += 1
        self.spent += cost
        if ended:
            self.active = False
        return cost, ended, reading

    def write_to(self, batch: RequestBatch) -> None:
        """Copy this request into slot 0 of ``batch``."""
        for name in ("row", "budget", "pos", "code", "fresh", "spent", "reads", "last_conf", "prev_conf", "last_pred",
                     "prev_pred", "answer", "active", "unreported", "charged"):
            getattr(batch, name)[0] = getattr(self, name)


def _as_actions(actions: Any, n: int) -> np.ndarray:
    return action_vector(actions, n, shape_msg="(one of run=0, skip=1, read=2, stop=3 per request), got shape {shape}",
                         dtype_msg="actions must be integers (run=0, skip=1, read=2, stop=3), got dtype {dtype}")


__all__ += ["OneRequest"]
