"""Stage REINFORCE (``anytime_stage_reinforce``) on the toy anytime table: it learns (beats random in the stream and
the bandit, reaches the calibrated cascade where reading pays), is reproducible, follows the harness protocol and
refuses bad configs."""

from __future__ import annotations

import numpy as np
import pytest

from adainf_env.envs.anytime.actions import AnytimeTable
from adainf_env.tables.toy import toy_anytime_table
from adainf_env.errors import ConfigError
from agents.baselines.anytime_policies import script_costs
from agents.registry import make_anytime_policy
from agents.evaluation.anytime_harness import evaluate_anytime_bandit, evaluate_anytime_stream
from agents.evaluation.harness import stream_process_for
from agents.learners.anytime_stage import AnytimeStageReinforcePolicy, StageTree

FAST = {"iterations": 60, "stream_groups": 64, "bandit_groups": 32, "eval_every": 20}


@pytest.fixture(scope="module")
def toy():
    return toy_anytime_table(1500, seed=0), toy_anytime_table(1500, seed=1, split="test")


@pytest.fixture(scope="module")
def fitted(toy):
    return AnytimeStageReinforcePolicy(**FAST).fit(toy[0], seed=0)


def _stream(pol, table, budget, seed=0):
    floor = float(table.plan_cost().min())
    return evaluate_anytime_stream(pol, table, stream_process_for("shared", budget, floor), shared=True, seed=seed,
                                   num_streams=10, horizon=100, budget_label=budget, variant="shared")


def test_beats_random_and_reaches_cascade(toy, fitted):
    calib, test = toy
    rnd = make_anytime_policy("anytime_random").fit(calib, seed=0)
    casc = make_anytime_policy("anytime_conf_cascade").fit(calib, seed=0)
    for b in (0.3, 0.5):
        got = _stream(fitted, test, b)
        assert got["overrun_rate"] == 0.0
        assert got["accuracy"] > _stream(rnd, test, b)["accuracy"] + 0.1
        # on the toy a cheap plan's read tells exactly when it is right: the learner reads, stops or continues
        assert got["accuracy"] >= _stream(casc, test, b)["accuracy"] - 0.02
        assert got["mean_reads"] >= 1.0
    mine = evaluate_anytime_bandit(fitted, test, (0.3, 0.5, 1.0))
    base = evaluate_anytime_bandit(rnd, test, (0.3, 0.5, 1.0))
    assert all(r["overrun_rate"] == 0.0 for r in mine)
    assert np.mean([r["accuracy"] for r in mine]) > np.mean([r["accuracy"] for r in base]) + 0.1
    assert fitted.provenance() == {"selected_step": fitted.selected_step, "prior": False}
    assert 1 <= fitted.selected_step <= FAST["iterations"]
    assert fitted.name == "anytime_stage_reinforce" and fitted.is_bound is False


def test_same_seed_same_numbers(toy):
    calib, test = toy
    kw = {**FAST, "iterations": 20, "eval_every": 10}
    a = AnytimeStageReinforcePolicy(**kw).fit(calib, seed=3)
    b = AnytimeStageReinforcePolicy(**kw).fit(calib, seed=3)
    ra, rb = _stream(a, test, 0.4, seed=1), _stream(b, test, 0.4, seed=1)
    assert ra["accuracy"] == pytest.approx(rb["accuracy"], abs=1e-12)
    assert ra["mean_cost"] == pytest.approx(rb["mean_cost"], rel=1e-9)
    assert a.selected_step == b.selected_step
    np.testing.assert_allclose(a.lam, b.lam, rtol=1e-6, atol=1e-9)


def test_tree_costs_are_the_kernels(toy):
    calib, _ = toy
    at = AnytimeTable.from_table(calib)
    tree = StageTree(at, calib, first_pool=8, ext_pool=3, max_stages=3)
    assert tree.num_nodes > 1 + len(tree.first)  # some first plans have extensions
    for s in range(1, tree.num_nodes):
        for c in tree.child[s][tree.child[s] >= 0]:
            hi = int(np.floor(np.log2(max(tree.code[s], 1)))) + 1 if tree.code[s] else 0
            assert (tree.code[c] & ((1 << hi) - 1)) == tree.code[s] and tree.code[c] != tree.code[s]
            # a two-stage script costs exactly the parent's cost plus the child's increment (reuse counted once)
            path = [int(tree.code[s]), int(tree.code[c])]
            if tree.depth[s] == 1:
                assert script_costs(at, np.array([path]))[0, 1] == pytest.approx(tree.cum[c], abs=1e-12)


@pytest.mark.parametrize("bad", [{"iterations": 0}, {"group_size": 1}, {"lr": 0.0}, {"lr": float("nan")},
                                 {"cost_margin": 0.7}, {"stream_groups": 0, "bandit_groups": 0},
                                 {"explore_starts": 1.0}, {"train_budget": "bucket"}, {"prior": True},
                                 {"first_low": 2.0}, {"val_fraction": 1.0}])
def test_bad_config(bad):
    with pytest.raises(ConfigError):
        AnytimeStageReinforcePolicy(**bad)


def test_unfitted_is_refused(toy):
    from adainf_env.envs.anytime.core import RequestBatch

    calib, _ = toy
    at = AnytimeTable.from_table(calib)
    with pytest.raises(ConfigError):
        AnytimeStageReinforcePolicy().begin(RequestBatch(2, at), np.arange(2), calib)
