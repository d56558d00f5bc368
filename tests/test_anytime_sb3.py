"""The SB3 anytime learners (agents.sb3.anytime): the training env (bandit slots + token-bucket streams under the
Lagrangian wrapper), the deployed observation equal to the training one, learning on the toy table in both settings,
same seed → same numbers, bad options → ConfigError."""

from __future__ import annotations

import numpy as np
import pytest

from adainf_env.tables.toy import toy_anytime_table
from adainf_env.errors import ConfigError
from agents.evaluation.anytime_harness import evaluate_anytime_bandit, evaluate_anytime_stream
from agents.registry import anytime_policy_class
from agents.sb3.anytime import (AnytimeA2CPolicy, AnytimeMaskablePPOPolicy, AnytimePPOPolicy, ConcatVecEnv,
                                training_env)

MODES = ("block", "stage")


@pytest.fixture(scope="module")
def toy():
    return toy_anytime_table(1500, seed=0), toy_anytime_table(1500, seed=1, split="test")


def _env(calib, mode, **kw):
    return training_env(calib, **{"n_envs": 12, "train_budgets": (0.2, 0.4), "bandit_fraction": 0.25,
                                  "action_mode": mode, "invalid_action": "fallback", "seed": 3, **kw})


@pytest.mark.parametrize("mode", MODES)
def test_training_env_layout(toy, mode):
    calib, _ = toy
    venv = _env(calib, mode)
    assert isinstance(venv.venv, ConcatVecEnv) and venv.num_envs == 12
    # 9 stream envs split over the two averages, 3 unconstrained bandit envs
    t = venv.targets
    assert np.array_equal(t[:9], [0.2] * 5 + [0.4] * 4) and np.isnan(t[9:]).all()
    obs = venv.reset()
    assert obs.shape == (12,) + venv.observation_space.shape
    assert np.allclose(obs[:9, -2], t[:9]) and np.all(obs[9:, -2:] == 0)
    masks = np.stack(venv.env_method("action_masks"))
    assert masks.shape == (12, venv.action_space.n) and masks.any(1).all()
    rng = np.random.default_rng(0)
    costs = []
    for _ in range(50):
        obs, rew, dones, infos = venv.step(rng.integers(0, venv.action_space.n, size=12))
        costs += [i["cost"] for i in infos]
    assert np.isfinite(rew).all() and min(costs) >= 0.0


@pytest.mark.parametrize("mode", MODES)
def test_deployed_observation_is_the_training_observation(toy, mode):
    """What the policy sees in the harness (from the batch and the bucket state) is what the env showed in training,
    in the stream and in the bandit slots (target and λ included)."""
    calib, _ = toy
    pol = AnytimePPOPolicy(total_timesteps=256, n_envs=12, eval_every=256, action_mode=mode,
                           train_budgets=(0.2, 0.4)).fit(calib, seed=0)
    venv = _env(calib, mode, stage_menu=pol._tree)  # the policy's menu (built from its fit rows)
    venv.multipliers.lam[:] = pol._lam  # the deployed multipliers
    obs = venv.reset()
    rng = np.random.default_rng(1)
    for _ in range(7):
        obs, *_ = venv.step(rng.integers(0, venv.action_space.n, size=12))
    stream, bandit = venv.venv.parts[0], venv.venv.parts[-1].venv
    # the policy keeps the fit rows' features; the training env served the fit rows: compare on that table
    fit_tab = stream.table
    core = getattr(stream, "core", stream)  # the env's batched kernel: its bucket levels and stream positions
    for part, lo, state in ((stream, 0, {"avg_budget": 0.2, "level": core._level.copy(),
                                         "step": core._t.copy(), "horizon": 200}), (bandit, 9, None)):
        batch = part.state.blocks if mode == "stage" else part.state
        idx = np.arange(part.num_envs)
        node = part.state.node.copy() if mode == "stage" else None
        pol.begin(batch, idx, fit_tab, state)
        if mode == "stage":
            pol._node[idx] = node
        view = pol._stage_view(batch) if mode == "stage" else batch
        got = pol._observe(view, idx)
        assert np.allclose(got, obs[lo:lo + part.num_envs], atol=1e-6), part


@pytest.mark.parametrize("cls", [AnytimePPOPolicy, AnytimeA2CPolicy, AnytimeMaskablePPOPolicy])
def test_learners_beat_random_in_both_settings(toy, cls):
    calib, test = toy
    pol = cls(total_timesteps=24_000, n_envs=32, eval_every=8_000).fit(calib, seed=0)
    rnd = anytime_policy_class("anytime_random")().fit(calib, seed=0)
    budgets = (0.3, 0.5, 1.0)
    acc = np.mean([r["accuracy"] for r in evaluate_anytime_bandit(pol, test, budgets)])
    acc_r = np.mean([r["accuracy"] for r in evaluate_anytime_bandit(rnd, test, budgets)])
    assert acc > acc_r + 0.15
    for b in (0.3, 0.5):
        s = evaluate_anytime_stream(pol, test, f"fixed:{b}", shared=True, num_streams=10, horizon=100)
        s_r = evaluate_anytime_stream(rnd, test, f"fixed:{b}", shared=True, num_streams=10, horizon=100)
        assert s["accuracy"] > s_r["accuracy"] + 0.15 and s["overrun_rate"] == 0.0
    assert pol.provenance()["prior"] is False and pol.selected_step >= 1
    assert set(pol.report()["lam"]) == {f"{b:g}" for b in pol.train_budgets}


def test_same_seed_same_numbers(toy):
    calib, test = toy
    kw = {"total_timesteps": 4_000, "n_envs": 16, "eval_every": 2_000}
    a, b = AnytimePPOPolicy(**kw).fit(calib, seed=2), AnytimePPOPolicy(**kw).fit(calib, seed=2)
    assert a.history == b.history
    ra = evaluate_anytime_stream(a, test, "fixed:0.4", shared=True, num_streams=4, horizon=50)
    rb = evaluate_anytime_stream(b, test, "fixed:0.4", shared=True, num_streams=4, horizon=50)
    assert ra["accuracy"] == rb["accuracy"] and ra["mean_cost"] == rb["mean_cost"]


@pytest.mark.parametrize("bad, match", [
    ({"total_timesteps": 0}, "total_timesteps must be an integer"),
    ({"learning_rate": 0.0}, "learning_rate must be a number > 0"),
    ({"prior": True}, "no prior"),
    ({"algo_kwargs": 3}, "algo_kwargs must be a dict"),
    ({"val_fraction": 0.0}, "val_fraction must lie in"),
    ({"action_mode": "blocks"}, "action_mode must be one of"),
    ({"bandit_fraction": 1.0}, "bandit_fraction must lie in"),
    ({"train_budgets": []}, "train_budgets must be distinct"),
    ({"train_budgets": [0.3, 0.3]}, "train_budgets must be distinct"),
    ({"train_budgets": [1.5]}, "train_budgets must be distinct"),
    ({"train_budgets": "0.3"}, "train_budgets must be"),
    ({"lagrangian": 3}, "lagrangian must be a dict"),
])
def test_bad_options_are_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        AnytimePPOPolicy(**bad)


def test_bad_options_found_at_fit_are_config_errors(toy):
    calib, _ = toy
    with pytest.raises(ConfigError, match="bad algo_kwargs"):
        AnytimePPOPolicy(algo_kwargs={"no_such_arg": 1}, total_timesteps=100).fit(calib, seed=0)
    with pytest.raises(ConfigError, match="controller must be one of"):
        AnytimePPOPolicy(lagrangian={"controller": "p"}, total_timesteps=100).fit(calib, seed=0)
    with pytest.raises(ConfigError, match="at least one env per average budget"):
        AnytimePPOPolicy(n_envs=4, train_budgets=(0.2, 0.3, 0.4, 0.5), total_timesteps=100).fit(calib, seed=0)
