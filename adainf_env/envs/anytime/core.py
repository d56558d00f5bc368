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
import functools
import json
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from gymnasium import spaces

from adainf_env.budgets import BudgetProcess, make_budget_process
from adainf_env.envs.core import ActionError, action_vector, observation_parts, parse_reset_options, space_of_parts
from adainf_env.errors import ConfigError, TableFormatError
from adainf_env.feasibility import COST_TOL
from adainf_env.envs.options import AnytimeOptions
from adainf_env.plans import all_plans, code_lookup, codes_from_masks, masks_from_codes, plan_cost, top_block
from adainf_env.tables.outcomes import OutcomeTable
from adainf_env.envs.reward import overrun_paid, step_reward

__all__ = ["RUN", "SKIP", "READ", "STOP", "NUM_ACTIONS", "ACTION_NAMES", "BlockCosts", "attach_block_macs",
           "AnytimeTable", "RequestBatch", "StepResult", "MAX_BLOCKS"]

RUN, SKIP, READ, STOP = 0, 1, 2, 3
NUM_ACTIONS = 4
ACTION_NAMES = ("run", "skip", "read", "stop")
# Plans are looked up by code in a dense [2^B] array; 2^20 entries (8 MB) is the most we allow.
MAX_BLOCKS = 20


@dataclasses.dataclass(frozen=True)
class BlockCosts:
    """Per-part costs as fractions of the full model: the stem, each block's residual branch and shortcut, the head.

    A plan's cost is ``stem + head + Σ shortcut + Σ_{executed} residual`` (the full model is 1).
    """

    stem: float
    residual: np.ndarray  # [B] float64
    shortcut: np.ndarray  # [B] float64
    head: float

    def __post_init__(self) -> None:
        res = np.asarray(self.residual, dtype=np.float64).reshape(-1)
        sc = np.asarray(self.shortcut, dtype=np.float64).reshape(-1)
        if res.shape != sc.shape or res.size == 0:
            raise ConfigError(f"block costs: residual {res.shape} and shortcut {sc.shape} must be equal non-empty [B]")
        vals = np.concatenate([res, sc, [self.stem, self.head]])
        if not np.isfinite(vals).all() or (vals < 0).any():
            raise ConfigError("block costs must be finite and non-negative")
        for a in (res, sc):
            a.setflags(write=False)
        object.__setattr__(self, "residual", res)
        object.__setattr__(self, "shortcut", sc)
        # suffix[j] = Σ_{k ≥ j} shortcut_k (length B + 1): what a read at chain extent j pays besides the head
        suffix = np.concatenate([np.cumsum(sc[::-1])[::-1], [0.0]])
        suffix.setflags(write=False)
        object.__setattr__(self, "shortcut_suffix", suffix)

    @property
    def num_blocks(self) -> int:
        return int(self.residual.size)

    def plan_cost(self, masks: np.ndarray) -> np.ndarray:
        """[P] cost of each plan of ``masks`` [P, B] run alone (stem, every shortcut, its residuals, one head)."""
        return plan_cost(masks, self.residual, base=self.stem + self.head + float(self.shortcut.sum()))

    @property
    def max_request_cost(self) -> float:
        """An upper bound of one request's cost: every block run, every shortcut on every read chain, B + 1 reads."""
        b = self.num_blocks
        return float(self.stem + self.residual.sum() + self.shortcut.sum()
                     + (b + 1) * (self.shortcut.sum() + self.head))

    @classmethod
    def from_macs(cls, macs: Mapping[str, Any], full_macs: int | float) -> "BlockCosts":
        """From a MACs breakdown ``{"stem": int, "blocks": [[residual, shortcut], ...], "fc": int}`` (the layout of
        :meth:`adainf_env.costs.MacsProfile.to_dict` and of the reference ``summary.json["macs"]``)."""
        try:
            stem, head = float(macs["stem"]), float(macs["fc"])
            blocks = np.asarray(macs["blocks"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as e:
            raise TableFormatError(f"MACs breakdown unreadable ({e!r}); expected stem, blocks [[res, sc], ...], fc") \
                from None
        if blocks.ndim != 2 or blocks.shape[1] != 2:
            raise TableFormatError(f"MACs breakdown: blocks must be [B, 2] (residual, shortcut), got {blocks.shape}")
        full = float(full_macs)
        if not full > 0:
            raise TableFormatError(f"full-model MACs must be > 0, got {full_macs!r}")
        return cls(stem=stem / full, residual=blocks[:, 0] / full, shortcut=blocks[:, 1] / full, head=head / full)

    @classmethod
    def from_table(cls, table: OutcomeTable, cost_unit: str = "macs") -> "BlockCosts":
        """The table's per-block MACs, checked against its per-plan MACs.

        Project tables carry them in ``meta["macs"]``; reference-layout tables in the ``summary.json`` beside the file.
        Measured latency has no per-block breakdown, so ``cost_unit="latency"`` is refused.
        """
        if cost_unit != "macs":
            raise ConfigError(f"the anytime env charges every block, shortcut and head separately and needs per-block "
                              f"costs; cost_unit={cost_unit!r} has only per-plan totals. Use cost_unit='macs'")
        macs = table.meta.get("macs")
        if macs is None and table.meta.get("source") == "reference" and table.meta.get("source_path"):
            summary = Path(table.meta["source_path"]).parent / "summary.json"
            try:
                macs = json.loads(summary.read_text())["macs"]
            except (OSError, ValueError, KeyError) as e:
                raise TableFormatError(f"{summary}: no readable per-block MACs ({e!r})") from None
        if macs is None:
            raise TableFormatError(
                "this outcome table has no per-block cost breakdown (meta['macs'] with stem, blocks [[residual, "
                "shortcut], ...], fc), which the anytime env needs to charge each block and head; rebuild it with "
                "experiments/build_table.py or attach one with adainf_env.envs.anytime.core.attach_block_macs")
        costs = cls.from_macs(macs, table.full_macs)
        if costs.num_blocks != table.num_blocks:
            raise TableFormatError(f"MACs breakdown has {costs.num_blocks} blocks, the table's plans have "
                                   f"{table.num_blocks}")
        want = table.plan_macs.astype(np.float64) / float(table.full_macs)
        got = costs.plan_cost(table.plan_masks)
        if np.abs(got - want).max() > 1e-9:
            raise TableFormatError("the per-block MACs breakdown does not add up to the table's per-plan MACs "
                                   f"(largest difference {np.abs(got - want).max():.3g} of the full model)")
        return costs


def attach_block_macs(table: OutcomeTable, *, stem: int, blocks: Any, head: int) -> OutcomeTable:
    """``table`` with a per-block MACs breakdown in its metadata (checked to add up to its per-plan MACs).

    For tables built without one (e.g. :func:`adainf_env.tables.toy.make_toy_table`)."""
    meta = dict(table.meta)
    meta["macs"] = {"stem": int(stem), "blocks": np.asarray(blocks, dtype=np.int64).tolist(), "fc": int(head)}
    out = dataclasses.replace(table, meta=meta)
    BlockCosts.from_table(out)
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class AnytimeTable:
    """What the kernel reads from an outcome table: per-(row, plan) outcomes and the code → plan lookup.

    The plan list must be closed under truncation (every plan with its later blocks skipped is a plan too), because a
    read evaluates "the decisions so far, the rest skipped". Every complete plan space (all 2^B plans) is.
    """

    costs: BlockCosts
    code_to_plan: np.ndarray  # [2^B] int64, −1 where the code is not a plan
    pred: np.ndarray | None  # [N, P] int64 (None: live outcomes)
    conf: np.ndarray | None  # [N, P] float64
    correct: np.ndarray | None  # [N, P] bool
    loss: np.ndarray | None  # [N, P] float64
    label: np.ndarray | None  # [N] int64

    @property
    def num_blocks(self) -> int:
        return self.costs.num_blocks

    @classmethod
    def for_plans(cls, plan_masks: np.ndarray, costs: BlockCosts, **outcomes: Any) -> "AnytimeTable":
        masks = np.asarray(plan_masks, dtype=bool)
        b = masks.shape[1]
        if b != costs.num_blocks:
            raise TableFormatError(f"plans have {b} blocks, the block costs {costs.num_blocks}")
        if b > MAX_BLOCKS:
            raise ConfigError(f"the anytime env supports at most {MAX_BLOCKS} skippable blocks, got {b}")
        codes = codes_from_masks(masks)
        lookup = code_lookup(codes, b)
        for i in range(b):
            trunc = codes & ((1 << i) - 1)
            if (lookup[trunc] < 0).any():
                bad = int(codes[np.argmax(lookup[trunc] < 0)])
                raise TableFormatError(
                    f"the plan list is not closed under truncation: plan code {bad} with blocks ≥ {i} skipped "
                    f"(code {bad & ((1 << i) - 1)}) is not a plan, so a read at block {i} has no outcome; the anytime "
                    "env needs such tables (e.g. the complete plan space)")
        lookup.setflags(write=False)
        return cls(costs=costs, code_to_plan=lookup, **outcomes)

    @classmethod
    def from_table(cls, table: OutcomeTable, cost_unit: str = "macs") -> "AnytimeTable":
        if not isinstance(table, OutcomeTable):
            raise ConfigError(f"table must be an OutcomeTable, got {type(table).__name__}")
        return cls.for_plans(
            table.plan_masks, BlockCosts.from_table(table, cost_unit),
            pred=np.ascontiguousarray(table.pred, dtype=np.int64),
            conf=np.ascontiguousarray(table.conf, dtype=np.float64),
            correct=np.ascontiguousarray(table.correct), loss=np.ascontiguousarray(table.loss, dtype=np.float64),
            label=np.asarray(table.label, dtype=np.int64))

    @functools.cached_property
    def kernel(self) -> "KernelTables":
        """The step tables of these block costs (:class:`KernelTables`)."""
        return KernelTables.build(self.costs)

    @functools.cached_property
    def every_code_is_plan(self) -> bool:
        """Every plan code is in the plan list (the complete plan space): RUN needs no plan-list check."""
        return bool((self.code_to_plan >= 0).all())

    def read_table(self, idx: np.ndarray, rows: np.ndarray, plans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reader over the table: (prediction, confidence) of plan ``plans`` on table rows ``rows``."""
        flat = rows * self.pred.shape[1] + plans  # flat gathers: faster than 2-D fancy indexing
        return self.pred.reshape(-1).take(flat), self.conf.reshape(-1).take(flat)


# A reader maps (batch indices, table rows, plan indices) → (predicted class [k], confidence [k]).
Reader = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


# the kernel's pseudo-action of a slot that does not act this step (the tables have NUM_ACTIONS + 1 columns)
NOOP = NUM_ACTIONS


@dataclasses.dataclass(frozen=True, eq=False)
class KernelTables:
    """What one step does, precomputed for every kernel state and action (so a step is a few gathers).

    The state of a request that matters for costs is ``(pos, fresh)``: the chain extent ``m`` of the module docstring
    is always ``pos`` while the current plan has not been read and ``B`` once it has (a read computes the chain to the
    end, a RUN starts a new path at ``pos``, a SKIP moves both along). State index ``s = 2·pos + fresh`` for
    ``pos`` in ``0 … B``; a step of state ``s`` with action ``a`` (``NOOP`` = 4 for a slot that does not act) reads
    entry ``k = s·5 + a``. Every float is computed with the operations, in the order, of the block-by-block formulas
    (``(shortcut + residual) + read``), so a precomputed cost is bit for bit what those formulas give.
    """

    num_blocks: int
    cost: np.ndarray  # [S·5] float64: paid by the action (its block, and the read it makes or ends with)
    advance: np.ndarray  # [S·5] int64: 1 where the action passes block pos (RUN, SKIP)
    code_bit: np.ndarray  # [S·5] int64: the bit RUN sets in the plan code (1 << pos), else 0
    ends: np.ndarray  # [S·5] bool: the request ends (STOP, or its last block decided)
    reads: np.ndarray  # [S·5] bool: the head is evaluated (READ, or the final read of an ending unread plan)
    next_fresh: np.ndarray  # [S·5] bool: the plan after the step has not been read
    allowed: np.ndarray  # [S·5] bool: the action is structurally valid (RUN also needs the plan list and budget)
    read_cost: np.ndarray  # [S] float64: cost of reading the current plan now (0 once read)
    run_cost: np.ndarray  # [S] float64: RUN now then a read right after (inf at pos = B)

    @classmethod
    def build(cls, costs: BlockCosts) -> "KernelTables":
        b = costs.num_blocks
        res, sc, suffix, head = costs.residual, costs.shortcut, costs.shortcut_suffix, costs.head
        s_count = 2 * (b + 1)
        k_count = s_count * (NUM_ACTIONS + 1)
        cost = np.zeros(k_count)
        advance = np.zeros(k_count, dtype=np.int64)
        code_bit = np.zeros(k_count, dtype=np.int64)
        ends = np.zeros(k_count, dtype=bool)
        reads = np.zeros(k_count, dtype=bool)
        next_fresh = np.zeros(k_count, dtype=bool)
        allowed = np.zeros(k_count, dtype=bool)
        read_cost = np.zeros(s_count)
        run_cost = np.full(s_count, np.inf)
        zero = np.float64(0.0)
        for p in range(b + 1):
            for f in (0, 1):
                s = 2 * p + f
                chain = p if f else b
                read_cost[s] = suffix[chain] + head if f else 0.0
                if p < b:
                    sc_due = sc[p] * (p >= chain)
                    run_cost[s] = res[p] + sc_due + suffix[min(p + 1, b)] + head
                for a in range(NUM_ACTIONS + 1):
                    k = s * (NUM_ACTIONS + 1) + a
                    next_fresh[k] = bool(f)
                    if a == NOOP:
                        continue
                    inside = p < b
                    allowed[k] = a == STOP or (a == READ and bool(f)) or (a in (RUN, SKIP) and inside)
                    if not allowed[k]:
                        continue
                    passing = a in (RUN, SKIP)
                    paid = (np.float64(sc[p]) * (p >= chain) if passing else zero) + (res[p] if a == RUN else zero)
                    new_chain = p + 1 if a == RUN else (max(chain, p + 1) if a == SKIP else chain)
                    fresh = bool(f) or a == RUN
                    new_pos = p + 1 if passing else p
                    end = a == STOP or (passing and new_pos >= b)
                    read = a == READ or (end and fresh)
                    if read:
                        paid = paid + (suffix[new_chain] + head)
                    cost[k] = paid
                    advance[k] = int(passing)
                    code_bit[k] = (1 << p) if a == RUN else 0
                    ends[k] = end
                    reads[k] = read
                    next_fresh[k] = fresh and not read
        out = cls(num_blocks=b, cost=cost, advance=advance, code_bit=code_bit, ends=ends, reads=reads,
                  next_fresh=next_fresh, allowed=allowed, read_cost=read_cost, run_cost=run_cost)
        for v in dataclasses.astuple(out)[1:]:
            v.setflags(write=False)
        return out


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
    menu: Any = None  # action_mode="stage": the stage menu (adainf_env.envs.anytime.stages.StageTree)

    @property
    def num_samples(self) -> int:
        return int(self.features.shape[0])

    @functools.cached_property
    def action_names(self) -> tuple[str, ...]:
        """Name of each action: run, skip, read, stop; in stage mode stop, stage_1 … stage_K."""
        if self.menu is None:
            return ACTION_NAMES
        return ("stop",) + tuple(f"stage_{k}" for k in range(1, self.menu.num_actions))

    def new_batch(self, n: int) -> "RequestBatch":
        """The requests in flight of an env of ``n`` slots: a :class:`RequestBatch`, or in stage mode a
        :class:`~adainf_env.envs.anytime.stages.StageBatch` over one."""
        if self.menu is None:
            return RequestBatch(n, self.table, mask_over_budget=self.mask_over_budget)
        return self.menu.new_batch(n, self.table, mask_over_budget=self.mask_over_budget)  # stages builds on us

    def new_one(self) -> "OneRequest":
        """The single env's fast-path request (table mode): a :class:`OneRequest`, or in stage mode a
        :class:`~adainf_env.envs.anytime.stages.StageOne` over one."""
        if self.menu is None:
            return OneRequest(self.table, mask_over_budget=self.mask_over_budget)
        return self.menu.new_one(self.table, mask_over_budget=self.mask_over_budget)

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
              menu: Any = None, **option_kwargs: Any) -> "AnytimeConfig":
        """From ``options`` and/or its fields as keywords (keywords win; see :class:`AnytimeOptions`); ``menu``: the
        stage menu, given exactly when ``action_mode="stage"`` (:func:`adainf_env.envs.anytime.stages.stage_menu`)."""
        opts = AnytimeOptions.from_kwargs(options, **option_kwargs)
        if (opts.action_mode == "stage") != (menu is not None):
            raise ConfigError(f"action_mode={opts.action_mode!r} needs " +
                              ("a stage menu" if menu is None else "no stage menu"))
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
        if menu is not None:  # each entry's cost from here, its plan's calibration accuracy, valid now
            k = menu.num_actions - 1
            high = np.concatenate([np.full(k, costs.max_request_cost), np.ones(2 * k)]).astype(np.float32)
            parts["menu"] = spaces.Box(low=np.zeros(3 * k, np.float32), high=high, dtype=np.float32)
        return cls(options=opts, process=process, lam=opts.lam, table=table, features=features,
                   observation_space=space_of_parts(parts, opts.obs_format),
                   action_space=spaces.Discrete(NUM_ACTIONS if menu is None else menu.num_actions), menu=menu)

    # ------------------------------------------------------------------ observations
    @functools.cached_property
    def _obs_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """float32 per kernel state ``s``: [0, cost of answering now, cost of RUN then answering (0 at the end)] and
        the one-hot of the position; per plan code its decision bits (None above 12 blocks: computed per step)."""
        kt, b = self.table.kernel, self.table.num_blocks
        s = np.arange(2 * (b + 1))
        pos = s // 2
        # column 0 (spent so far) is the slot's own; 2-D tables are gathered with take (fancy indexing is slower)
        costs = np.stack([np.zeros(len(s)), kt.read_cost, np.where(pos < b, kt.run_cost, 0.0)], axis=1).astype(
            np.float32)
        onehot = np.zeros((len(s), b + 1), dtype=np.float32)
        onehot[s, np.minimum(pos, b)] = 1.0
        bits = None
        if b <= 12:
            bits = all_plans(b).astype(np.float32)
        return costs, onehot, bits

    def observe(self, batch: RequestBatch, bucket_state: np.ndarray | None, idx: np.ndarray | None = None) -> Any:
        """Batched observation [N, ...] of every slot, or [k, ...] of the slots ``idx`` (``bucket_state``: [N, 3]
        or [k, 3] when a bucket is on)."""
        b = batch.B
        row, pos, fresh, code = batch.row, batch.pos, batch.fresh, batch.code
        spent, budget, reads = batch.spent, batch.budget, batch.reads
        last_conf, prev_conf, last_pred, prev_pred = batch.last_conf, batch.prev_conf, batch.last_pred, batch.prev_pred
        if idx is not None:
            row, pos, fresh, code = (x[idx] for x in (row, pos, fresh, code))
            spent, budget, reads = (x[idx] for x in (spent, budget, reads))
            last_conf, prev_conf, last_pred, prev_pred = (x[idx] for x in (last_conf, prev_conf, last_pred, prev_pred))
        n = len(row)
        cost_tab, onehot, bits = self._obs_tables
        s = pos * 2 + fresh
        c = cost_tab.take(s, axis=0)
        c[:, 0] = spent
        r = np.empty((n, len(READOUT)), dtype=np.float32)
        r[:, 0] = last_conf
        r[:, 1] = prev_conf
        r[:, 2] = (reads >= 2) & (last_pred == prev_pred)  # RequestBatch.agree
        r[:, 3] = reads / (b + 1)
        r[:, 4] = ~fresh
        parts: dict[str, np.ndarray] = {
            "features": self.features.take(row, axis=0),
            "budget": budget.astype(np.float32)[:, None],
        }
        if self.bucket is not None:
            parts["bucket"] = np.asarray(bucket_state, dtype=np.float32)
        parts["costs"] = c
        parts["position"] = onehot.take(s, axis=0)
        parts["decisions"] = bits.take(code, axis=0) if bits is not None else \
            masks_from_codes(code, b).astype(np.float32)
        parts["readout"] = r
        if self.menu is not None:
            parts["menu"] = batch.menu_observation(idx)
        if self.obs_format == "dict":
            return parts
        # flat: one row-contiguous gather of the features (zero-padded to the full width), the other parts written
        # into their columns (concatenating seven [n, k] blocks row by row is several times slower)
        out = self._flat_features.take(row, axis=0)
        o = self.features.shape[1]
        for k, v in parts.items():
            if k != "features":
                out[:, o:o + v.shape[1]] = v
                o += v.shape[1]
        return out

    @functools.cached_property
    def _flat_features(self) -> np.ndarray:
        """[num_samples, flat observation width] float32: each row's features, zeros after them."""
        width = int(np.prod(self.observation_space.shape))
        out = np.zeros((self.num_samples, width), dtype=np.float32)
        out[:, :self.features.shape[1]] = self.features
        return out

    @functools.cached_property
    def _one_tables(self) -> tuple[list[list[float]], list[list[float]] | None]:
        """:meth:`observe_one`'s per-state one-hot positions and per-code decision bits as Python lists."""
        _, onehot, bits = self._obs_tables
        return onehot.tolist(), None if bits is None else bits.tolist()

    def observe_one(self, req: "OneRequest", bucket_state: tuple[float, float, float] | None) -> Any:
        """The observation of one request (the single env's fast path): equal to :meth:`observe` of a batch holding
        it (a few Python operations and one float32 array instead of a dozen numpy calls)."""
        b = req.B
        onehot, bits = self._one_tables
        vals: list[Any] = [req.budget]
        if bucket_state is not None:
            vals += bucket_state
        vals += (req.spent, req.read_cost(), req.run_cost_or_zero())
        vals += onehot[2 * req.pos + req.fresh]
        vals += bits[req.code] if bits is not None else [(req.code >> j) & 1 for j in range(b)]
        vals += (req.last_conf, req.prev_conf, req.reads >= 2 and req.last_pred == req.prev_pred, req.reads / (b + 1),
                 not req.fresh)
        if self.menu is not None:  # a StageOne
            vals += req.menu_values()
        small = np.array(vals, dtype=np.float32)
        feat = self.features[req.row]
        if self.obs_format != "dict":
            return np.concatenate((feat, small))
        o = 1 if bucket_state is None else 4
        parts = {"features": feat.copy(), "budget": small[:1]}
        if bucket_state is not None:
            parts["bucket"] = small[1:4]
        parts["costs"] = small[o:o + 3]
        parts["position"] = small[o + 3:o + b + 4]
        parts["decisions"] = small[o + b + 4:o + 2 * b + 4]
        r0 = o + 2 * b + 4
        parts["readout"] = small[r0:r0 + len(READOUT)]
        if self.menu is not None:
            parts["menu"] = small[r0 + len(READOUT):]
        return parts

    # ------------------------------------------------------------------ rewards
    def rewards(self, batch: RequestBatch, res: StepResult, correct: np.ndarray, loss: np.ndarray | None,
                acted: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(reward [N], cost reported this step [N]) for the acting slots (``acted``; None: every slot); updates the
        batch's bookkeeping.

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
        if acted is None:
            batch.charged = over
            reported = res.cost + batch.unreported
            batch.unreported = np.zeros(batch.n)
            return rew, reported
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


__all__ += ["Reader", "AnytimeConfig", "READOUT", "KernelTables", "NOOP", "OneRequest"]
