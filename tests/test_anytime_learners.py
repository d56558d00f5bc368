"""Learned anytime schedulers (REINFORCE, PPO-Lagrangian) on the toy anytime table: they learn (beat random, reach
the calibrated cascade where reading pays), are reproducible, refuse bad configs, and the multiplier prices the
shared average budget."""

from __future__ import annotations

import numpy as np
import pytest

from adainf_env.tables.toy import toy_anytime_table
from adainf_env.errors import ConfigError
from agents.registry import make_anytime_policy
from agents.evaluation.anytime_harness import evaluate_anytime_bandit, evaluate_anytime_stream
from agents.evaluation.harness import stream_process_for
from agents.learners.stage_net import candidate_codes, chain_sum
from agents.learners.anytime_reinforce import AnytimeReinforcePolicy
from agents.learners.anytime_ppo_lagrangian import PPOLagrangianPolicy

FAST = {"iterations": 40, "requests_per_iter": 512, "eval_every": 20}
LEARNERS = [(AnytimeReinforcePolicy, {}), (PPOLagrangianPolicy, {"epochs": 2, "minibatches": 2})]


@pytest.fixture(scope="module")
def toy():
    return toy_anytime_table(1500, seed=0), toy_anytime_table(1500, seed=1, split="test")


def _stream_acc(pol, table, budget):
    floor = float(table.plan_cost().min())
    return evaluate_anytime_stream(pol, table, stream_process_for("shared", budget, floor), shared=True,
                                   num_streams=10, horizon=100, budget_label=budget, variant="shared")


@pytest.fixture(scope="module")
def fitted(toy):
    calib, _ = toy
    return {cls.name: cls(**FAST, **kw).fit(calib, seed=0) for cls, kw in LEARNERS}


@pytest.mark.parametrize("name", [c.name for c, _ in LEARNERS])
def test_learner_beats_random_and_reaches_cascade(toy, fitted, name):
    calib, test = toy
    pol = fitted[name]
    rnd = make_anytime_policy("anytime_random").fit(calib, seed=0)
    casc = make_anytime_policy("anytime_conf_cascade", budget_mode="average").fit(calib, seed=0)
    for b in (0.3, 0.5):
        acc = _stream_acc(pol, test, b)
        assert acc["overrun_rate"] == 0.0
        assert acc["accuracy"] > _stream_acc(rnd, test, b)["accuracy"] + 0.1
        # on the toy a read of a cheap plan tells exactly when it is right: the learner reads and stops
        assert acc["accuracy"] >= _stream_acc(casc, test, b)["accuracy"] - 0.01
        assert acc["mean_reads"] >= 1.0
    bandit = {r["budget"]: r for r in evaluate_anytime_bandit(pol, test, (0.3, 0.5, 1.0))}
    rnd_b = {r["budget"]: r for r in evaluate_anytime_bandit(rnd, test, (0.3, 0.5, 1.0))}
    assert all(r["overrun_rate"] == 0.0 for r in bandit.values())
    assert np.mean([r["accuracy"] for r in bandit.values()]) > np.mean([r["accuracy"] for r in rnd_b.values()]) + 0.1
    rep = pol.report()
    assert rep["prior"] is False and 1 <= rep["selected_step"] <= FAST["iterations"]
    assert pol.provenance() == {"selected_step": rep["selected_step"], "prior": False}


def test_same_seed_same_numbers(toy):
    calib, test = toy
    kw = {"iterations": 4, "requests_per_iter": 256, "eval_every": 4}
    for cls, extra in LEARNERS:
        a = cls(**kw, **extra).fit(calib, seed=3)
        b = cls(**kw, **extra).fit(calib, seed=3)
        ra, rb = _stream_acc(a, test, 0.4), _stream_acc(b, test, 0.4)
        assert ra["accuracy"] == rb["accuracy"] and ra["mean_cost"] == pytest.approx(rb["mean_cost"], rel=1e-9)
        assert np.allclose(a.lam, b.lam, rtol=1e-6, atol=1e-9)
        assert a.report()["selected_step"] == b.report()["selected_step"]


def test_multiplier_rises_when_over_budget_and_policy_meets_average_budget(toy):
    calib, test = toy
    pol = PPOLagrangianPolicy(iterations=1, requests_per_iter=256, lam_init=0.0, epochs=1, minibatches=1)
    pol.fit(calib, seed=0)
    before = pol.lam.copy()
    bins = np.arange(8) % pol.lam_budgets.size
    pol._dual_step({"stream_cost": np.where(pol.lam_budgets[bins] < 0.9, 0.95, 0.0), "stream_bin": bins})
    over = pol.lam_budgets[np.unique(bins)] < 0.9
    assert (pol.lam[np.unique(bins)][over] > before[np.unique(bins)][over]).all()
    assert (pol.lam >= 0).all()
    # after training the learnt prices keep the average cost within the average budget without the bucket's help
    trained = PPOLagrangianPolicy(**FAST, epochs=2, minibatches=2).fit(calib, seed=0)
    for b in (0.3, 0.5):
        r = _stream_acc(trained, test, b)
        assert r["mean_cost"] <= b + 1e-6 and r["overrun_rate"] == 0.0
    assert trained.lam[0] > 0.0  # the tightest grid budget binds on the toy


@pytest.mark.parametrize("bad", [{"iterations": 0}, {"lr": -1.0}, {"entropy": float("nan")}, {"candidates": "x"},
                                 {"val_fraction": 1.0}, {"stream_fraction": 1.5}, {"prior": True},
                                 {"group_size": 0}, {"cost_margin": 0.7}, {"hidden": []}])
def test_bad_configs_raise(bad):
    with pytest.raises(ConfigError):
        AnytimeReinforcePolicy(**bad)


@pytest.mark.parametrize("bad", [{"clip": 0.0}, {"epochs": 0}, {"gae_lambda": 1.5}])
def test_bad_ppo_configs_raise(bad):
    with pytest.raises(ConfigError):
        PPOLagrangianPolicy(**bad)


def test_unfitted_policy_refuses_to_act(toy):
    calib, test = toy
    with pytest.raises(ConfigError):
        evaluate_anytime_bandit(AnytimeReinforcePolicy(), test, (0.5,))


def test_candidates_and_chain_sum(toy):
    calib, _ = toy
    c = candidate_codes(calib)
    assert c.size >= 2 and 0 in c.tolist() and np.all(np.diff(c) > 0)
    assert candidate_codes(calib, "all").size == calib.num_plans
    with pytest.raises(ConfigError):
        candidate_codes(calib, "nope")
    # two requests: decisions 0 → 1 → 2 and 3 alone
    nxt = np.array([1, 2, -1, -1])
    assert np.allclose(chain_sum(np.array([1.0, 2.0, 3.0, 4.0]), nxt), [6.0, 5.0, 3.0, 4.0])
    assert np.allclose(chain_sum(np.array([1.0, 2.0, 3.0, 4.0]), nxt, 0.5), [1 + 0.5 * (2 + 1.5), 3.5, 3.0, 4.0])


# ---------------------------------------------------------------------- SB3 algorithms by name on the anytime env
SB3_FAST = {"total_timesteps": 12_000, "n_envs": 32, "eval_every": 6_000}


@pytest.mark.parametrize("algo", ["anytime_ppo", "anytime_a2c", "anytime_maskable_ppo"])
def test_sb3_on_anytime_env_beats_random(toy, algo):
    from agents.sb3.anytime import AnytimeA2CPolicy, AnytimeMaskablePPOPolicy, AnytimePPOPolicy

    cls = {c.name: c for c in (AnytimePPOPolicy, AnytimeA2CPolicy, AnytimeMaskablePPOPolicy)}[algo]
    calib, test = toy
    pol = cls(**SB3_FAST).fit(calib, seed=0)
    rnd = make_anytime_policy("anytime_random").fit(calib, seed=0)
    budgets = (0.3, 0.5, 1.0)
    acc = [r["accuracy"] for r in evaluate_anytime_bandit(pol, test, budgets)]
    acc_r = [r["accuracy"] for r in evaluate_anytime_bandit(rnd, test, budgets)]
    assert np.mean(acc) > np.mean(acc_r) + 0.1
    assert pol.provenance()["prior"] is False and pol.provenance()["selected_step"] >= 1


def test_sb3_same_seed_and_bad_configs(toy):
    from agents.sb3.anytime import AnytimePPOPolicy

    calib, test = toy
    kw = {"total_timesteps": 4_000, "n_envs": 16, "eval_every": 4_000}
    a = AnytimePPOPolicy(**kw).fit(calib, seed=2)
    b = AnytimePPOPolicy(**kw).fit(calib, seed=2)
    ra, rb = evaluate_anytime_bandit(a, test, (0.4,)), evaluate_anytime_bandit(b, test, (0.4,))
    assert ra[0]["accuracy"] == rb[0]["accuracy"]
    for bad in ({"total_timesteps": 0}, {"learning_rate": 0.0}, {"prior": True}, {"algo_kwargs": 3},
                {"val_fraction": 0.0}):
        with pytest.raises(ConfigError):
            AnytimePPOPolicy(**bad)
    with pytest.raises(ConfigError):
        AnytimePPOPolicy(algo_kwargs={"no_such_arg": 1}, total_timesteps=100).fit(calib, seed=0)
