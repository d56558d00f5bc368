"""The anytime actions and what each one costs, precomputed (used by the kernel, :mod:`~adainf_env.envs.anytime.core`).

The action codes (``RUN`` = 0, ``SKIP`` = 1, ``READ`` = 2, ``STOP`` = 3), :class:`BlockCosts` (stem, each block's
residual branch and shortcut, the head, as fractions of the full model), :class:`AnytimeTable` (an outcome table seen
by plan code, with those costs attached) and :class:`KernelTables` (what every action does from every kernel state:
cost paid, plan bit, end, read, next state — the exact accounting of the kernel's module docstring).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from adainf_env.errors import ConfigError, TableFormatError
from adainf_env.plans import code_lookup, codes_from_masks, plan_cost
from adainf_env.tables.outcomes import OutcomeTable

__all__ = ["RUN", "SKIP", "READ", "STOP", "NUM_ACTIONS", "ACTION_NAMES", "NOOP", "MAX_BLOCKS", "BlockCosts",
           "attach_block_macs", "AnytimeTable", "Reader", "KernelTables"]


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
                "experiments/build_table.py or attach one with adainf_env.envs.anytime.actions.attach_block_macs")
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
