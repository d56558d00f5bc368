"""Stage actions of the anytime env: a fixed menu of Pareto extensions with computation reuse (:class:`StageTree`),
and the request batch that takes one stage per step (:class:`StageBatch`).

A *stage* is "run from the current plan to plan ``c`` and read it": RUN or SKIP every undecided block up to ``c``'s
last executed block as ``c``'s bits say, then READ (no READ when that last block is the network's last: passing it
ends the request with a read of the final plan, exactly as in block actions). It is executed as that sequence of
block actions on :class:`~adainf_env.envs.anytime.core.RequestBatch` (:func:`advance`), so a stage costs exactly what
the same block actions cost — with reuse: the shortcuts a read computed are not paid again by the blocks skipped
after it, and a RUN right after a read reuses the read's shortcut.

The menu is a tree (:class:`StageTree`), fixed from a calibration table's plan accuracies and costs only. Node 0 is a
request's start; its children are up to ``first_pool`` plans of the accuracy/cost Pareto front, evenly spread over
it. After the plan ``c`` of node ``s`` was read, the children of ``s`` are up to ``ext_pool`` Pareto plans among
``c``'s *extensions* (:func:`adainf_env.plans.extensions`: plans that keep ``c``'s decisions up to its last
executed block and run at least one more, so everything computed is reused); a request takes at most
``max_stages`` stages. The stage learner (:mod:`agents.learners.anytime_stage`) and the env's
``action_mode="stage"`` share this one definition.

Stage actions (``Discrete(1 + K)``, ``K`` = the most children of any node): ``0`` = STOP (answer with the last answer
read — reading the current plan first if it has not been read, as the block STOP does), ``k ≥ 1`` = the ``k``-th
child of the current node. Entry ``k`` is masked where the node has fewer than ``k`` children (absent), and — with
``mask_over_budget=True`` — where the request cannot afford it (spent + the stage's exact cost > budget).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from adainf_env.envs.anytime.actions import AnytimeTable, READ, RUN, Reader, SKIP, STOP
from adainf_env.envs.anytime.core import OneRequest, RequestBatch, StepResult
from adainf_env.envs.core import ActionError, action_vector
from adainf_env.envs.options import check_menu_sizes
from adainf_env.errors import ConfigError
from adainf_env.feasibility import COST_TOL, pareto_frontier
from adainf_env.plans import codes_from_masks, extensions, top_block
from adainf_env.tables.outcomes import OutcomeTable

__all__ = ["advance", "script_costs", "StageTree", "StageBatch", "StageOne", "stage_menu",
           "MENU_DEFAULTS", "STAGE_STOP"]

#: The stage action that stops (answers with the last answer read).
STAGE_STOP = 0
#: Menu sizes of :class:`StageTree` when none are given (those of the stage learner).
MENU_DEFAULTS = {"first_pool": 16, "ext_pool": 4, "max_stages": 3}


def advance(batch: RequestBatch, target: np.ndarray, reader: Reader, only: np.ndarray,
            trace: list[tuple[np.ndarray, np.ndarray]] | None = None) -> StepResult:
    """Run the active slots ``only`` (bool [N]) of ``batch`` to plan code ``target`` [N] and read it: one stage.

    Block by block: RUN or SKIP block ``pos`` as the target's bit says until its last executed block is decided,
    then READ unless the plan has been read already (passing the last block ends the request with its read). The
    target must extend each slot's decisions so far. Returns the stage's :class:`StepResult` (costs summed over its
    block steps; ``ended``/``read``: any of them). With ``trace``, each block step's (actions [N], acting [N]) is
    appended to it — the block actions that reproduce the stage.
    """
    n = batch.n
    target = np.maximum(np.asarray(target, dtype=np.int64), 0)
    go = np.asarray(only, dtype=bool) & batch.active
    hi = top_block(target)
    cost, ended, read = np.zeros(n), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)

    def block_step(actions: np.ndarray, acting: np.ndarray) -> None:
        nonlocal cost, ended, read
        r = batch.step(actions, reader, only=acting)
        cost = cost + r.cost
        ended, read = ended | r.ended, read | r.read
        if trace is not None:
            trace.append((actions.copy(), acting.copy()))

    while True:
        need = go & batch.active & (batch.pos < hi)
        if not need.any():
            break
        bit = (target >> np.minimum(batch.pos, 62)) & 1
        block_step(np.where(bit == 1, RUN, SKIP), need)
    rd = go & batch.active & batch.fresh
    if rd.any():
        block_step(np.full(n, READ), rd)
    return StepResult(cost=cost, ended=ended, read=read)


def script_costs(at: AnytimeTable, scripts: np.ndarray) -> np.ndarray:
    """[K, S] cumulative cost after reading each stage of each script [K, S] of plan codes (−1 = no stage), run in a
    :class:`RequestBatch` by :func:`advance` (so exactly as the env charges): column s is the cost of a request that
    stops after stage s."""
    scripts = np.asarray(scripts, dtype=np.int64)
    k, s_max = scripts.shape
    batch = RequestBatch(k, at, mask_over_budget=False)
    batch.start(np.arange(k), np.zeros(k, dtype=np.int64), np.ones(k))
    out = np.full((k, s_max), np.nan)

    def reader(idx, rows, plans):
        return np.zeros(len(idx), dtype=np.int64), np.zeros(len(idx))

    for s in range(s_max):
        has = scripts[:, s] >= 0
        advance(batch, scripts[:, s], reader, has)
        out[has, s] = batch.spent[has]
    return out


def _spread(codes: np.ndarray, pool: int) -> np.ndarray:
    """At most ``pool`` of ``codes`` (sorted by cost already), evenly spaced, ends kept."""
    if len(codes) <= pool:
        return codes
    return codes[np.unique(np.linspace(0, len(codes) - 1, pool).round().astype(int))]


class StageTree:
    """The stage menu (module docstring), built from ``table``'s plan accuracies and costs only.

    Nodes: 0 = a request's start; every other node = "the plan ``code[s]`` was just read" on one path of stages.
    ``child[s, k]`` (k < K) is the node of stage action k + 1 (−1: none); ``cum[s]`` is the exact cost of a request
    that stops at s (kernel-charged, with reuse), so a child's incremental cost is ``inc[s, k] = cum[child] − cum[s]``
    (inf where absent). ``acc[s]`` is the accuracy of node s's plan on ``table`` (node 0: plan 0's), ``depth[s]`` the
    stages taken to reach it, ``first`` the first stage's plan codes, ``num_actions`` = 1 + K, ``costs`` the block
    costs it was charged with, ``menu_table`` the fixed part of the env's ``menu`` observation per node (float32
    [nodes, 2K]). ``at`` is ``AnytimeTable.from_table(table)``.
    """

    def __init__(self, at: AnytimeTable, table: OutcomeTable, *, first_pool: int, ext_pool: int,
                 max_stages: int) -> None:
        check_menu_sizes({"first_pool": first_pool, "ext_pool": ext_pool, "max_stages": max_stages})
        codes = codes_from_masks(table.plan_masks)
        cost, acc = table.plan_cost(), table.accuracy_by_plan()
        by_cost = lambda c: c[np.argsort(cost[at.code_to_plan[c]], kind="stable")]  # noqa: E731
        first = by_cost(codes[pareto_frontier(cost, acc)])
        first = _spread(first, first_pool)

        def menu_after(c: int) -> np.ndarray:
            e = extensions(codes, c)
            if e.size == 0:
                return e
            p = at.code_to_plan[e]
            return _spread(by_cost(e[pareto_frontier(cost[p], acc[p])]), ext_pool)

        node_code, depth, parent, kids = [0], [0], [-1], [list(first)]
        paths: list[list[int]] = [[]]
        frontier = []
        for a in first:
            frontier.append((0, int(a)))
        while frontier:
            par, c = frontier.pop(0)
            s = len(node_code)
            node_code.append(c)
            depth.append(depth[par] + 1)
            parent.append(par)
            paths.append(paths[par] + [c])
            nxt = list(menu_after(c)) if depth[-1] < max_stages else []
            kids.append(nxt)
            frontier.extend((s, int(x)) for x in nxt)
        n = len(node_code)
        self.num_actions = 1 + max(len(k) for k in kids)
        self.code = np.array(node_code, dtype=np.int64)
        self.depth = np.array(depth, dtype=np.int64)
        self.child = np.full((n, self.num_actions - 1), -1, dtype=np.int64)
        # children were appended breadth-first in kids order: recover their node ids from (parent, code)
        index = {(p, c): i for i, (p, c) in enumerate(zip(parent, node_code)) if i > 0}
        for s, ks in enumerate(kids):
            for k, c in enumerate(ks):
                self.child[s, k] = index[(s, int(c))]
        script = np.full((n, max_stages), -1, dtype=np.int64)
        for s, p in enumerate(paths):
            script[s, : len(p)] = p
        cum = np.full(n, at.costs.stem)
        if n > 1:
            sc = script_costs(at, script[1:])
            cum[1:] = sc[np.arange(n - 1), self.depth[1:] - 1]
        self.cum = cum
        self.inc = np.where(self.child >= 0, cum[np.maximum(self.child, 0)] - cum[:, None], np.inf)
        self.num_nodes = n
        self.first = first
        self.acc = acc[at.code_to_plan[self.code]].astype(np.float64)
        self.costs = at.costs
        self.max_stages = int(max_stages)
        # the menu observation's fixed part, per node (float32 [nodes, 2K]): each entry's cost from there and its
        # plan's accuracy, both 0 where absent
        present = self.child >= 0
        self.menu_table = np.concatenate([np.where(present, self.inc, 0.0),
                                          np.where(present, self.acc[np.maximum(self.child, 0)], 0.0)],
                                         axis=1).astype(np.float32)

    @property
    def num_blocks(self) -> int:
        return self.costs.num_blocks

    def check_fits(self, at: AnytimeTable) -> None:
        """Refuse (:class:`ConfigError`) a menu built for other plans or other block costs than ``at``'s."""
        if at.num_blocks != self.num_blocks:
            raise ConfigError(f"stage menu: built for {self.num_blocks}-block plans, the table has {at.num_blocks}")
        for name in ("residual", "shortcut", "stem", "head"):
            mine, theirs = np.asarray(getattr(self.costs, name)), np.asarray(getattr(at.costs, name))
            if not np.allclose(mine, theirs, rtol=0.0, atol=1e-12):
                raise ConfigError(f"stage menu: built with other block costs ({name}) than the table's; build it "
                                  "from a table of the same backbone")
        if (at.code_to_plan[self.code] < 0).any():
            bad = int(self.code[np.argmax(at.code_to_plan[self.code] < 0)])
            raise ConfigError(f"stage menu: its plan code {bad} is not a plan of the table")

    def new_batch(self, n: int, table: AnytimeTable, *, mask_over_budget: bool = True) -> "StageBatch":
        """``n`` requests taking stage actions over this menu (:class:`StageBatch`; what
        :meth:`~adainf_env.envs.anytime.config.AnytimeConfig.new_batch` builds in stage mode)."""
        return StageBatch(n, table, self, mask_over_budget=mask_over_budget)

    def new_one(self, table: AnytimeTable, *, mask_over_budget: bool = True) -> "StageOne":
        """One request taking stage actions over this menu, as Python scalars (:class:`StageOne`)."""
        return StageOne(table, self, mask_over_budget=mask_over_budget)


def stage_menu(action_mode: str, stage_menu_option: Any, at: AnytimeTable, table: OutcomeTable | None) -> \
        StageTree | None:
    """The menu an anytime env with options ``action_mode`` / ``stage_menu`` uses: None in block mode; in stage mode
    the given :class:`StageTree` (checked against ``at``), or one built from ``table`` (the outcome table the env
    serves) with :data:`MENU_DEFAULTS` updated by a ``stage_menu`` dict. ``table`` None (a live source) →
    :class:`ConfigError` in stage mode."""
    if action_mode != "stage":
        return None
    if table is None:
        raise ConfigError("action_mode='stage' is for outcome tables; a live source steps block by block: use "
                          "action_mode='block'")
    if stage_menu_option is not None and not isinstance(stage_menu_option, Mapping):  # a StageTree (options check)
        stage_menu_option.check_fits(at)
        return stage_menu_option
    sizes = dict(MENU_DEFAULTS)
    sizes.update(stage_menu_option or {})
    return StageTree(at, table, **sizes)


class _ReadThrough:
    """Attributes not named in ``_OWN`` are the wrapped request state's (the attribute named ``_INNER``), read and
    written through."""

    _OWN: frozenset[str] = frozenset()
    _INNER = ""

    def __getattr__(self, name: str) -> Any:
        if name in type(self)._OWN:  # not set yet (during __init__)
            raise AttributeError(name)
        return getattr(getattr(self, self._INNER), name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in type(self)._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(getattr(self, self._INNER), name, value)


class StageBatch(_ReadThrough):
    """N requests in flight that take stage actions: a :class:`RequestBatch` (``blocks``) plus each slot's node of
    the menu ``tree``.

    Same public interface as :class:`RequestBatch` — ``start``, ``masks``, ``substitute_invalid``, ``step`` — with
    stage actions in place of block actions; every other attribute (the state arrays ``row``, ``budget``, ``pos``,
    ``spent``, ``reads``, ``last_conf`` …, and ``read_cost()``, ``agree()`` …) is the block batch's, read and
    written through, so code that observes or rewards a :class:`RequestBatch` works on it unchanged.
    """

    _OWN = frozenset({"blocks", "tree", "node", "trace", "n"})
    _INNER = "blocks"

    def __init__(self, n: int, table: AnytimeTable, tree: StageTree, *, mask_over_budget: bool = True) -> None:
        tree.check_fits(table)
        self.blocks = RequestBatch(n, table, mask_over_budget=mask_over_budget)
        self.tree = tree
        self.n = self.blocks.n
        self.node = np.zeros(self.n, dtype=np.int64)
        # the block actions of the last step: (actions [N], acting [N]) per block step
        self.trace: list[tuple[np.ndarray, np.ndarray]] = []

    @property
    def num_actions(self) -> int:
        return self.tree.num_actions

    # ------------------------------------------------------------------ requests
    def start(self, idx: np.ndarray, rows: np.ndarray, budgets: np.ndarray) -> None:
        """Begin new requests in slots ``idx`` at the menu's start (node 0); the stem is paid."""
        self.blocks.start(idx, rows, budgets)
        self.node[np.asarray(idx, dtype=np.int64)] = 0

    # ------------------------------------------------------------------ derived quantities
    def stage_costs(self) -> np.ndarray:
        """[N, K] exact cost of each menu entry from each slot's state (reaching its plan and reading it; inf where
        absent)."""
        return self.tree.inc.take(self.node, axis=0)

    def _entries_ok(self, idx: np.ndarray | None) -> np.ndarray:
        """[N, K] (or [k, K] of the slots ``idx``) bool: the menu entries that are valid actions now."""
        b = self.blocks
        node, spent, budget, active = self.node, b.spent, b.budget, b.active
        if idx is not None:
            node, spent, budget, active = node[idx], spent[idx], budget[idx], active[idx]
        inc = self.tree.inc.take(node, axis=0)
        if b.mask_over_budget:
            ok = spent[:, None] + inc <= budget[:, None] + COST_TOL  # inf (absent) never fits
        else:
            ok = np.isfinite(inc)
        return ok & active[:, None]

    def masks(self) -> np.ndarray:
        """[N, 1 + K] valid stage actions of each slot (rows of inactive slots are all False): STOP always; entry k
        where the node has a k-th child and, with ``mask_over_budget``, it fits what is left of the budget."""
        m = np.empty((self.n, self.tree.num_actions), dtype=bool)
        m[:, STAGE_STOP] = self.blocks.active
        m[:, 1:] = self._entries_ok(None)
        return m

    def menu_observation(self, idx: np.ndarray | None = None) -> np.ndarray:
        """[N, 3K] float32 (or [k, 3K] of the slots ``idx``): each entry's exact cost from here (0 where absent), its
        plan's accuracy on the menu's table (0 where absent), and 1 where it is a valid action now."""
        k = self.tree.num_actions - 1
        node = self.node if idx is None else self.node[idx]
        out = np.empty((len(node), 3 * k), dtype=np.float32)
        out[:, :2 * k] = self.tree.menu_table.take(node, axis=0)
        out[:, 2 * k:] = self._entries_ok(idx)
        return out

    def substitute_invalid(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``invalid_action="fallback"``: each invalid action of an active slot → STOP; (actions, replaced)."""
        a = _as_stage_actions(actions, self.n, self.tree.num_actions).copy()
        valid = self.masks()
        ok = (a >= 0) & (a < self.tree.num_actions)
        ok &= valid[np.arange(self.n), np.clip(a, 0, self.tree.num_actions - 1)]
        bad = self.blocks.active & ~ok
        a[bad] = STAGE_STOP
        return a, bad

    # ------------------------------------------------------------------ the step
    def step(self, actions: np.ndarray, reader: Reader, *, only: np.ndarray | None = None) -> StepResult:
        """Apply stage ``actions`` [N] to the active slots (or to ``only``, a bool [N] subset of them): STOP, or run
        to the chosen entry's plan and read it (:func:`advance`). Every acted-on slot's action must be valid
        (:meth:`masks`), else :class:`ActionError` names the slot. The block actions taken are in ``trace``."""
        b = self.blocks
        act = b.active if only is None else (np.asarray(only, dtype=bool) & b.active)
        na = self.tree.num_actions
        a = _as_stage_actions(actions, self.n, na)
        valid = self.masks()
        ok = valid[np.arange(self.n), np.clip(a, 0, na - 1)] & (a >= 0) & (a < na)
        bad = act & ~ok
        if bad.any():
            i = int(np.argmax(bad))
            allowed = [int(k) for k in np.flatnonzero(valid[i])]
            raise ActionError(f"stage action {int(a[i])} is not allowed here (slot {i}, menu node "
                              f"{int(self.node[i])} with {int((self.tree.child[self.node[i]] >= 0).sum())} entries, "
                              f"spent {b.spent[i]:.4f} of budget {b.budget[i]:.4f}); allowed: {allowed} "
                              "(0 = stop) — see action_masks()")
        self.trace = []
        stop = act & (a == STAGE_STOP)
        go = act & (a != STAGE_STOP)
        cost, ended, read = np.zeros(self.n), np.zeros(self.n, dtype=bool), np.zeros(self.n, dtype=bool)
        if stop.any():
            r = b.step(np.full(self.n, STOP), reader, only=stop)
            self.trace.append((np.full(self.n, STOP), stop.copy()))
            cost, ended, read = r.cost, r.ended.copy(), r.read.copy()
        if go.any():
            nxt = self.tree.child[self.node, np.clip(a - 1, 0, na - 2)]
            r = advance(b, np.where(go, self.tree.code[np.maximum(nxt, 0)], 0), reader, go, self.trace)
            cost, ended, read = cost + r.cost, ended | r.ended, read | r.read
            self.node = np.where(go, nxt, self.node)
        return StepResult(cost=cost, ended=ended, read=read)


def _as_stage_actions(actions: Any, n: int, num_actions: int) -> np.ndarray:
    return action_vector(actions, n,
                         shape_msg=f"(one stage action per request: 0 = stop, 1..{num_actions - 1} = menu entries), "
                                   "got shape {shape}",
                         dtype_msg="stage actions must be integers (0 = stop, k = the k-th menu entry), got dtype "
                                   "{dtype}")


class StageOne(_ReadThrough):
    """One request taking stage actions, as Python scalars: the single env's fast path — a :class:`OneRequest`
    (``one``) plus its menu node. The same stages as :class:`StageBatch` (each run as its block actions on the
    kernel's tables, costs added in the same order), without a numpy call per block.

    Interface of :class:`OneRequest` with stage actions: ``start``, ``masks`` (a list, ``[1 + K]``), ``valid``,
    ``step`` → ``(cost, ended, read)``, ``menu_values`` (the ``menu`` observation as a list), ``write_to`` (into a
    :class:`StageBatch`); every other attribute is the request's, read and written through.
    """

    _OWN = frozenset({"one", "tree", "node", "num_actions", "_inc", "_child", "_code", "_top", "_menu"})
    _INNER = "one"

    def __init__(self, table: AnytimeTable, tree: StageTree, *, mask_over_budget: bool = True) -> None:
        tree.check_fits(table)
        self.one = OneRequest(table, mask_over_budget=mask_over_budget)
        self.tree = tree
        self.node = 0
        self.num_actions = tree.num_actions
        self._inc = tree.inc.tolist()
        self._child = tree.child.tolist()
        self._code = tree.code.tolist()
        self._top = top_block(tree.code).tolist()
        self._menu = tree.menu_table.tolist()

    def start(self, row: int, budget: float) -> None:
        """Begin a new request at the menu's start (node 0); the stem is paid."""
        self.one.start(row, budget)
        self.node = 0

    def _entries_ok(self) -> list[bool]:
        """The menu entries that are valid actions now (:meth:`StageBatch.masks`' rule, on Python floats)."""
        one = self.one
        inc = self._inc[self.node]
        if not one.active:
            return [False] * len(inc)
        if one.mask_over_budget:
            spent, limit = one.spent, one.budget + COST_TOL
            return [spent + c <= limit for c in inc]  # inf (absent) never fits
        return [c != np.inf for c in inc]

    def masks(self) -> list[bool]:
        """Valid stage actions now: [stop, entry 1, …, entry K]."""
        return [self.one.active] + self._entries_ok()

    def valid(self, a: int) -> bool:
        """Stage action ``a`` (any int) is valid now."""
        if not 0 <= a < self.num_actions:
            return False
        return self.one.active if a == STAGE_STOP else self._entries_ok()[a - 1]

    def menu_values(self) -> list[float]:
        """The ``menu`` observation: each entry's cost from here, its plan's accuracy, 1 where valid now."""
        return self._menu[self.node] + [float(x) for x in self._entries_ok()]

    def step(self, a: int) -> tuple[float, bool, bool]:
        """Apply a valid stage action ``a`` (check with :meth:`valid`) → (cost paid, request ended, head read)."""
        one = self.one
        if a == STAGE_STOP:
            return one.step(STOP)
        nxt = self._child[self.node][a - 1]
        target, hi = self._code[nxt], self._top[nxt]
        cost, ended, reading = 0.0, False, False
        while one.active and one.pos < hi:
            c, e, r = one.step(RUN if (target >> one.pos) & 1 else SKIP)
            cost, ended, reading = cost + c, ended or e, reading or r
        if one.active and one.fresh:
            c, e, r = one.step(READ)
            cost, ended, reading = cost + c, ended or e, reading or r
        self.node = nxt
        return cost, ended, reading

    def write_to(self, batch: StageBatch) -> None:
        """Copy this request, and its menu node, into slot 0 of ``batch``."""
        self.one.write_to(batch)
        batch.node[0] = self.node
