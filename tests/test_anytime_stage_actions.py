"""Stage actions of the anytime env (``action_mode="stage"``, :mod:`adainf_env.envs.anytime.stages`): the menu's
costs are the kernel's, masks hide absent and unaffordable entries, and every stage episode equals the block episode
of the same RUN/SKIP/READ/STOP actions (costs, rewards, outcomes) in bandit, stream and bucket modes."""

from __future__ import annotations

import numpy as np
import pytest

from adainf_env.envs.anytime.core import AnytimeTable, RequestBatch, toy_anytime_table
from adainf_env.envs.anytime.stages import STAGE_STOP, StageBatch, StageTree, script_costs, top_block
from adainf_env.envs.core import ActionError
from adainf_env.errors import ConfigError
from adainf_env.feasibility import COST_TOL


@pytest.fixture(scope="module")
def toy():
    return toy_anytime_table(600, num_blocks=4, seed=0)


@pytest.fixture(scope="module")
def menu(toy):
    return StageTree(AnytimeTable.from_table(toy), toy, first_pool=16, ext_pool=4, max_stages=3)


def _random_valid(rng, masks):
    return np.array([rng.choice(np.flatnonzero(m)) if m.any() else STAGE_STOP for m in masks])


def test_menu_costs_and_masks_are_the_kernels(toy, menu):
    """At every node a random walk reaches, each entry's cost is RequestBatch.cost_to_read of its plan from the
    slot's state, entries extend the plan read, and the mask is exactly "present and affordable"."""
    at = AnytimeTable.from_table(toy)
    assert menu.num_actions == 1 + max(len(menu.first), int((menu.child >= 0).sum(1).max()))
    rng = np.random.default_rng(0)
    n = 200
    sb = StageBatch(n, at, menu)
    sb.start(np.arange(n), rng.integers(0, toy.num_samples, n), rng.uniform(0.1, 1.3, n))
    seen_absent = seen_unaffordable = 0
    while sb.active.any():
        m = sb.masks()
        inc = sb.stage_costs()
        for k in range(menu.num_actions - 1):
            child = menu.child[sb.node, k]
            has = child >= 0
            tgt = np.where(has, menu.code[np.maximum(child, 0)], 0)
            want = sb.blocks.cost_to_read(tgt)
            live = sb.active & has
            np.testing.assert_allclose(inc[live, k], want[live], rtol=0, atol=1e-12)
            # the entry extends the decisions so far (up to the current plan's top block)
            hi = top_block(menu.code[sb.node])
            assert ((tgt[live] & ((1 << hi[live]) - 1)) == sb.code[live]).all()
            fits = sb.spent + want <= sb.budget + COST_TOL
            np.testing.assert_array_equal(m[:, k + 1], sb.active & has & fits)
            seen_absent += int((sb.active & ~has).sum())
            seen_unaffordable += int((sb.active & has & ~fits).sum())
        np.testing.assert_array_equal(m[:, STAGE_STOP], sb.active)
        sb.step(_random_valid(rng, m), at.read_table)
    assert seen_absent > 0 and seen_unaffordable > 0  # both kinds of masking were exercised
    assert (sb.spent <= sb.budget + COST_TOL)[sb.budget >= menu.cum[menu.child[0][menu.child[0] >= 0]].min()].all()


def test_stage_batch_replays_as_block_actions(toy, menu):
    """A StageBatch and a RequestBatch fed the stage's block actions (its trace) stay identical, and the trace is
    RUN/SKIP by the target's bits then READ (no READ when the last block ended the request)."""
    at = AnytimeTable.from_table(toy)
    rng = np.random.default_rng(1)
    n = 100
    rows, budgets = rng.integers(0, toy.num_samples, n), rng.uniform(0.2, 1.2, n)
    sb, bb = StageBatch(n, at, menu, mask_over_budget=False), RequestBatch(n, at, mask_over_budget=False)
    sb.start(np.arange(n), rows, budgets)
    bb.start(np.arange(n), rows, budgets)
    while sb.active.any():
        a = _random_valid(rng, sb.masks())
        res = sb.step(a, at.read_table)
        cost = np.zeros(n)
        for acts, acting in sb.trace:
            cost += bb.step(acts, at.read_table, only=acting).cost
        np.testing.assert_array_equal(res.cost, cost)
        for k in ("spent", "pos", "code", "reads", "answer", "last_conf", "active"):
            np.testing.assert_array_equal(getattr(sb, k), getattr(bb, k))
    assert (sb.reads >= 1).all()


def test_script_costs_of_single_plans_are_table_costs(toy):
    at = AnytimeTable.from_table(toy)
    from adainf_env.tables.outcomes import codes_from_masks

    codes = codes_from_masks(toy.plan_masks)
    np.testing.assert_allclose(script_costs(at, codes[:, None])[:, 0], toy.plan_cost(), atol=1e-12)


def test_stage_batch_errors(toy, menu):
    at = AnytimeTable.from_table(toy)
    sb = StageBatch(3, at, menu)
    sb.start(np.arange(3), np.zeros(3, dtype=np.int64), np.full(3, 0.05))  # nothing but STOP fits
    with pytest.raises(ActionError, match="stage action 1 is not allowed"):
        sb.step(np.ones(3, dtype=np.int64), at.read_table)
    with pytest.raises(ActionError, match="shape"):
        sb.step(np.zeros(2, dtype=np.int64), at.read_table)
    a, bad = sb.substitute_invalid(np.array([1, 0, 99]))
    np.testing.assert_array_equal(a, [STAGE_STOP] * 3)
    np.testing.assert_array_equal(bad, [True, False, True])
    other = toy_anytime_table(100, num_blocks=3, seed=0)
    with pytest.raises(ConfigError, match="4-block plans, the table has 3"):
        StageBatch(2, AnytimeTable.from_table(other), menu)
    with pytest.raises(ConfigError, match="first_pool"):
        StageTree(at, toy, first_pool=1, ext_pool=4, max_stages=3)
