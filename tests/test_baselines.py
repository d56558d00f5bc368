"""Baselines, bounds and cascades: cross-check values, orderings on the toy table, budgets, save/load, registry."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from adainf_env.errors import ConfigError, TableMismatchError
from adainf_env.tables.toy import make_toy_table, toy_optimal_plans
from agents.registry import load_scheduler
from agents.baselines.cascades import additive_costs, joint_cost
from agents.evaluation.harness import evaluate_bandit
from agents.registry import BASELINES, make_scheduler, scheduler_class

BUDGETS = [0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0]


@pytest.fixture(scope="module")
def toy():
    return make_toy_table(3000, seed=0, split="calib"), make_toy_table(3000, seed=1, split="test")


def _acc(recs):
    return {r["budget"]: r["accuracy"] for r in recs}


# ------------------------------------------------------------------ reference cross-check (../shared/README.md)
def test_lut_reproduces_reference_cross_check(calib_table, test_table):
    lut = make_scheduler("lut").fit(calib_table)
    acc = _acc(evaluate_bandit(lut, test_table, [0.3, 0.4, 0.5, 0.8]))
    want = {0.3: 79.21, 0.4: 86.88, 0.5: 89.35, 0.8: 90.79}
    for b, v in want.items():
        assert round(100 * acc[b], 2) == v, (b, acc[b])


def test_lut_does_not_read_test_labels(calib_table, test_table):
    lut = make_scheduler("lut").fit(calib_table)
    rows = np.arange(test_table.num_samples)
    shuffled = dataclasses.replace(test_table, label=np.random.default_rng(0).permutation(test_table.label))
    for b in (0.3, 0.7):
        a = lut.decide(test_table, rows, np.full(len(rows), b)).plan
        assert np.array_equal(a, lut.decide(shuffled, rows, np.full(len(rows), b)).plan)
    upper = make_scheduler("lut_upper").fit(calib_table)
    assert upper.is_bound and not lut.is_bound
    up = _acc(evaluate_bandit(upper, test_table, BUDGETS))
    lo = _acc(evaluate_bandit(lut, test_table, BUDGETS))
    assert all(up[b] >= lo[b] for b in BUDGETS) and up[1.0] > lo[1.0]


def test_cascades_on_reference_beat_lut_on_calib_and_meet_budget_on_average(calib_table):
    lut = _acc(evaluate_bandit(make_scheduler("lut").fit(calib_table), calib_table, BUDGETS))
    for name in ("confidence_cascade", "agreement_cascade"):
        s = make_scheduler(name).fit(calib_table)
        recs = evaluate_bandit(s, calib_table, BUDGETS)
        for r in recs:
            assert r["mean_cost"] <= r["budget"] + 1e-9, (name, r["budget"], r["mean_cost"])
            assert r["accuracy"] >= lut[r["budget"]] - 1e-12, (name, r["budget"])
    conf = _acc(evaluate_bandit(make_scheduler("confidence_cascade").fit(calib_table), calib_table, [0.4]))
    assert conf[0.4] > lut[0.4] + 0.01  # escalating the unsure samples buys > 1 pt at 40 % of the MACs


# ------------------------------------------------------------------ toy table with a known optimum
def test_oracle_is_the_known_optimum_and_orders_oracle_lut_random(toy):
    calib, test = toy
    rows = np.arange(test.num_samples)
    oracle = make_scheduler("oracle").fit(calib)
    for b in (0.3, 0.5, 0.8):
        dec = oracle.decide(test, rows, np.full(len(rows), b))
        assert np.array_equal(dec.plan, toy_optimal_plans(test, np.full(len(rows), b)))
    recs = {n: evaluate_bandit(make_scheduler(n).fit(calib, seed=0), test, [0.3, 0.5, 0.8])
            for n in ("oracle", "lut", "random")}
    scores = {n: _acc(r) for n, r in recs.items()}
    for b in (0.3, 0.5, 0.8):
        assert scores["oracle"][b] >= scores["lut"][b] > scores["random"][b] + 0.05, (b, scores)
    # nested toy types: the best static plan already solves every solvable sample, but the oracle pays far less
    for ro, rl in zip(recs["oracle"], recs["lut"]):
        assert ro["mean_cost"] < 0.8 * rl["mean_cost"], (ro, rl)


def test_budget_below_cheapest_plan_picks_cheapest_and_counts_overrun(toy):
    calib, test = toy
    cheapest = int(np.argmin(calib.plan_cost()))
    tiny = 0.5 * calib.plan_cost().min()
    for name in ("lut", "random", "hull_mix", "oracle", "confidence_cascade", "agreement_cascade"):
        s = make_scheduler(name).fit(calib)
        (rec,) = evaluate_bandit(s, test, [tiny])
        assert rec["plan_hist"] == {str(cheapest): test.num_samples}, name
        assert rec["overrun_rate"] == 1.0, name


def test_random_within_budget_and_seeded(toy):
    calib, test = toy
    rows = np.arange(test.num_samples)
    b = np.full(len(rows), 0.5)
    p1 = make_scheduler("random").fit(calib, seed=3).decide(test, rows, b)
    p2 = make_scheduler("random").fit(calib, seed=3).decide(test, rows, b)
    p3 = make_scheduler("random").fit(calib, seed=4).decide(test, rows, b)
    assert np.array_equal(p1.plan, p2.plan) and not np.array_equal(p1.plan, p3.plan)
    assert (p1.cost <= 0.5 + 1e-12).all()
    assert len(np.unique(p1.plan)) == int((calib.plan_cost() <= 0.5).sum())  # every affordable plan gets used


def test_hull_mix_meets_average_budget_and_dominates_lut_on_calib(calib_table):
    hm = make_scheduler("hull_mix").fit(calib_table, seed=0)
    lut = _acc(evaluate_bandit(make_scheduler("lut").fit(calib_table), calib_table, BUDGETS[:-1]))
    for r in evaluate_bandit(hm, calib_table, BUDGETS[:-1]):
        assert abs(r["mean_cost"] - r["budget"]) < 0.01, r
        assert r["accuracy"] >= lut[r["budget"]] - 0.005, r  # hull ≥ staircase, up to sampling noise
    # the mixture endpoints are adjacent hull plans, the probability reproduces the average exactly
    lo, hi, q = hm.mixture(np.array([0.2, 0.45]))
    c = hm.plan_space.plan_cost
    assert np.allclose(q * c[lo] + (1 - q) * c[hi], [0.2, 0.45])


def test_strict_cascade_never_overruns(toy, calib_table):
    for table in (toy[0], calib_table):
        s = make_scheduler("confidence_cascade", budget_mode="strict").fit(table)
        for r in evaluate_bandit(s, table, [0.3, 0.5, 0.9]):
            assert r["overrun_rate"] == 0.0


def test_joint_cost_reuses_shared_prefix(toy):
    calib, _ = toy
    cost, masks = calib.plan_cost(), calib.plan_masks
    add = additive_costs(masks, cost)
    full = 11000.0  # toy: stem+head 1000, block i costs (i+1)·1000
    assert add is not None and np.isclose(add[0], 1000 / full) and np.allclose(add[1], [1000 / full, 2000 / full,
                                                                                         3000 / full, 4000 / full])
    p01, p0, p1 = 0b0011, 0b0001, 0b0010
    # {0} and {0,1} share the prefix "block 0 executed": block 0 is paid once, the base twice
    assert np.isclose(joint_cost([p0, p01], masks, cost, add), (2 * 1000 + 1000 + 2000) / full)
    # {1} and {0,1} differ at block 0: nothing reused
    assert np.isclose(joint_cost([p1, p01], masks, cost, add), cost[p1] + cost[p01])
    assert np.isclose(joint_cost([p0, p01], masks, cost, None), cost[p0] + cost[p01])


# ------------------------------------------------------------------ save / load, plan-space refusal, registry
@pytest.mark.parametrize("name", BASELINES)
def test_save_load_round_trip_and_refusal(tmp_path, toy, name):
    calib, test = toy
    s = make_scheduler(name).fit(calib, seed=1)
    path = s.save(tmp_path / f"{name}.npz")
    loaded = load_scheduler(path, table=test)
    assert type(loaded) is type(s)
    rows = np.arange(200)
    b = np.linspace(0.1, 1.0, 200)
    if name in ("random", "hull_mix"):  # seeded draws: a fresh fit and a load with the same seed agree
        s = make_scheduler(name).fit(calib, seed=1)
    d1, d2 = s.decide(test, rows, b), loaded.decide(test, rows, b)
    assert np.array_equal(d1.plan, d2.plan) and np.allclose(d1.cost, d2.cost)
    perm = np.random.default_rng(0).permutation(test.num_plans)  # same plans, another order: another plan space
    reordered = dataclasses.replace(test, pred=test.pred[:, perm], loss=test.loss[:, perm], conf=test.conf[:, perm],
                                    plan_masks=test.plan_masks[perm], plan_macs=test.plan_macs[perm])
    with pytest.raises(TableMismatchError, match="plan space"):
        load_scheduler(path, table=reordered)
    with pytest.raises(TableMismatchError, match="features"):
        load_scheduler(path, table=make_toy_table(300, num_blocks=3, seed=2))
    with pytest.raises(TableMismatchError):
        scheduler_class("lut" if name != "lut" else "random").load(path)


def test_registry_errors_and_lazy_imports():
    with pytest.raises(ConfigError, match="known plan-env schedulers: .*lut.*oracle"):
        make_scheduler("ppo2")
    with pytest.raises(ConfigError, match="bad arguments"):
        make_scheduler("lut", alpha=1)
    with pytest.raises(ConfigError, match="budget_mode"):
        make_scheduler("confidence_cascade", budget_mode="sometimes")
    code = ("import sys, agents; from agents import make_scheduler; make_scheduler('lut');"
            "print('stable_baselines3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_bad_budgets_refused(toy):
    calib, test = toy
    s = make_scheduler("lut").fit(calib)
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match=r"\(0, 1\]"):
            s.decide(test, np.arange(3), np.full(3, bad))
    with pytest.raises(ConfigError, match="fit"):
        make_scheduler("lut").decide(test, np.arange(3), np.full(3, 0.5))
