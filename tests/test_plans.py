"""The plan-code helpers (adainf_env.plans) against brute-force definitions, and the toy tables' content pinned.

Every module that converts masks and codes, finds a plan's top block or its extensions, or adds up a plan's cost from
per-block costs calls these helpers; the tests check each against the definition written out on masks, so a change
to one of them cannot quietly change what the env, the menus or the learners compute.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adainf_env.costs import MacsProfile, plan_macs, plan_macs_fraction
from adainf_env.envs.anytime.actions import AnytimeTable, BlockCosts
from adainf_env.envs.anytime.stages import StageTree
from adainf_env.errors import ConfigError
from adainf_env.fileio import sha256_arrays
from adainf_env.plans import all_plans, code_lookup, codes_from_masks, extension_mask, extensions, masks_from_codes, plan_cost, top_block
from adainf_env.tables.toy import make_routing_table, make_toy_table, toy_anytime_table

B = 5
CODES = np.arange(1 << B)


def test_codes_and_masks_are_inverse_and_bit_b_is_block_b():
    masks = masks_from_codes(CODES, B)
    assert masks.shape == (32, B) and masks.dtype == bool
    assert masks[0b10110].tolist() == [False, True, True, False, True]  # LSB = block 0
    assert np.array_equal(codes_from_masks(masks), CODES)
    assert np.array_equal(codes_from_masks(masks.astype(np.int8)), CODES)  # 0/1 masks too


def test_all_plans_is_every_code_in_order():
    assert np.array_equal(all_plans(B), masks_from_codes(CODES, B))
    assert all_plans(1).tolist() == [[False], [True]]
    for bad in (0, 21, True, 2.0):
        with pytest.raises(ConfigError, match=f"all_plans: num_blocks must be an integer in \\[1, 20\\], got {bad!r}"):
            all_plans(bad)


def test_codes_from_masks_refuses_what_a_code_cannot_hold():
    with pytest.raises(ConfigError, match="at most 62 blocks, the masks have 63"):
        codes_from_masks(np.zeros((2, 63), dtype=bool))
    with pytest.raises(ConfigError, match=r"2-D \[plans, blocks\].*\(5,\)"):
        codes_from_masks(np.zeros(5, dtype=bool))


def test_code_lookup_maps_each_code_to_its_plan_index():
    assert code_lookup(np.array([5, 0, 3]), 3).tolist() == [1, -1, -1, 2, -1, 0, -1, -1]
    assert np.array_equal(code_lookup(CODES[::-1], B), CODES[::-1])
    with pytest.raises(ConfigError, match="2\\^21 codes is too large"):
        code_lookup(np.array([0]), 21)


def test_top_block_is_one_past_the_last_executed_block():
    masks = masks_from_codes(CODES, B)
    want = [0 if not m.any() else int(np.flatnonzero(m)[-1]) + 1 for m in masks]
    assert top_block(CODES).tolist() == want
    big = np.array([1 << 61, (1 << 62) - 1], dtype=np.int64)  # exact at the widest codes
    assert top_block(big).tolist() == [62, 62]


def test_extensions_keep_the_decisions_up_to_the_top_block_and_run_one_more():
    masks = masks_from_codes(CODES, B)
    full = extension_mask(CODES, CODES)  # [S, K] for an array of plans
    assert full.shape == (32, 32)
    for c in CODES:
        hi = int(top_block(np.array([c]))[0])
        want = [bool((masks[x, :hi] == masks[c, :hi]).all() and masks[x, hi:].any()) for x in CODES]
        assert extension_mask(CODES, int(c)).tolist() == want
        assert full[c].tolist() == want
        assert extensions(CODES, int(c)).tolist() == [int(x) for x in CODES[want]]
    assert extensions(CODES, 0).tolist() == list(range(1, 32))  # every plan extends plan 0
    assert extensions(CODES, 31).size == 0  # nothing extends the full plan


def test_plan_cost_is_base_plus_the_executed_blocks():
    masks = masks_from_codes(CODES, B)
    res = np.array([7, 11, 13, 17, 19], dtype=np.int64)
    got = plan_cost(masks, res, base=100)
    assert got.dtype == np.int64
    assert got.tolist() == [100 + sum(int(r) for r, m in zip(res, row) if m) for row in masks]
    frac = np.array([0.1, 0.25, 0.05, 0.3, 0.15])
    got = plan_cost(masks, frac, base=0.15)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, [0.15 + frac[row].sum() for row in masks], rtol=0, atol=1e-15)
    # one mask [B] (a dot product: BLAS may sum in another order than the [P, B] product, so the last bit can differ)
    np.testing.assert_allclose(plan_cost(masks[7], frac, base=0.15), got[7], rtol=0, atol=1e-15)
    with pytest.raises(ConfigError, match=r"plan masks have shape \(32, 5\), block_cost has 4 blocks"):
        plan_cost(masks, frac[:4])


def test_plan_cost_on_torch_gates_is_the_same_formula_and_differentiable():
    masks = masks_from_codes(CODES, B)
    frac = np.array([0.1, 0.25, 0.05, 0.3, 0.15])
    gates = torch.tensor(masks, dtype=torch.float64, requires_grad=True)
    got = plan_cost(gates, torch.tensor(frac, dtype=torch.float32), base=0.15)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    np.testing.assert_allclose(got.detach().numpy(), plan_cost(masks, frac.astype(np.float32).astype(np.float64),
                                                               base=0.15), rtol=0, atol=1e-15)
    got.sum().backward()
    assert torch.allclose(gates.grad, torch.tensor(frac, dtype=torch.float32).double().expand(32, B))
    with pytest.raises(ConfigError, match="plan masks have 5 blocks, block_cost has 3"):
        plan_cost(gates, torch.ones(3))


def test_block_costs_and_the_toy_tables_follow_the_one_cost_model():
    t = toy_anytime_table(50, num_blocks=B, seed=0)
    costs = BlockCosts.from_table(t)
    base = costs.stem + costs.head + float(costs.shortcut.sum())
    assert np.array_equal(costs.plan_cost(t.plan_masks), plan_cost(t.plan_masks, costs.residual, base=base))
    np.testing.assert_allclose(costs.plan_cost(t.plan_masks), t.plan_cost(), rtol=0, atol=1e-12)
    toy = make_toy_table(50, num_blocks=B)
    assert np.array_equal(toy.plan_macs, plan_cost(toy.plan_masks, 1000 * np.arange(1, B + 1), base=1000))
    route = make_routing_table(50, num_blocks=B)
    assert np.array_equal(route.plan_macs, plan_cost(route.plan_masks, np.full(B, 1000), base=1000))


def test_measured_macs_follow_the_one_cost_model():
    prof = MacsProfile(stem=300, blocks=np.array([[1000, 0], [2000, 300], [3000, 0], [4000, 600], [5000, 0]]),
                       head=200, input_size=(3, 32, 32))
    masks = masks_from_codes(CODES, B)
    macs = plan_macs(prof, masks)
    assert macs.dtype == np.int64 and macs.tolist() == plan_cost(masks, prof.blocks[:, 0], base=1400).tolist()
    assert macs[-1] == prof.full == 15000 + 1400
    frac = plan_macs_fraction(prof, masks)
    assert frac.dtype == np.float64 and np.array_equal(frac, macs / prof.full) and frac[-1] == 1.0


def test_the_stage_menu_offers_only_extensions():
    t = toy_anytime_table(300, num_blocks=B, seed=1)
    tree = StageTree(AnytimeTable.from_table(t), t, first_pool=8, ext_pool=3, max_stages=3)
    assert tree.num_nodes > 1 + len(tree.first)
    for s in range(1, tree.num_nodes):
        kids = tree.child[s][tree.child[s] >= 0]
        assert extension_mask(tree.code[kids], int(tree.code[s])).all()


# sha256 (first 20 hex digits) of the arrays of each toy table (names, dtypes, shapes, bytes; metadata aside), taken
# before the tables moved into adainf_env/tables/toy.py: the same arguments must keep giving the same table.
_TOY_HASHES = {
    "make_toy_table": "5a5e82a6a76d10dc26fc",
    "toy_anytime_table": "5b3432de9ac93ebfa8dd",
    "make_routing_table": "0ab2f0738614fc76dde2",
}


@pytest.mark.parametrize("make,kwargs", [(make_toy_table, {}), (toy_anytime_table, {"num_blocks": 5}),
                                         (make_routing_table, {})], ids=lambda x: getattr(x, "__name__", ""))
def test_toy_tables_are_the_same_bit_for_bit(make, kwargs):
    t = make(300, seed=3, **kwargs)
    keys = ("pred", "loss", "conf", "features", "label", "sample_index", "plan_masks", "plan_macs")
    assert sha256_arrays({k: getattr(t, k) for k in keys})[:20] == _TOY_HASHES[make.__name__]


def test_toy_tables_refuse_out_of_range_arguments():
    with pytest.raises(ConfigError, match="num_blocks must be in \\[1, 10\\], got 11"):
        make_toy_table(10, num_blocks=11)
    with pytest.raises(ConfigError, match="make_routing_table"):
        make_routing_table(10, easy=1.0)
