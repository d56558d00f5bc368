"""The Lagrangian average-cost wrappers (adainf_env.envs.wrappers): dual ascent / PID drive a toy env's average cost to
its target, the shaped reward is exactly r − λ·c (÷ 1 + λ), the cost stays reported as the env reported it, request
units of the anytime env are whole requests, bad options are ConfigErrors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from stable_baselines3.common.vec_env import DummyVecEnv

from adainf_env.envs.anytime.actions import STOP
from adainf_env.tables.toy import toy_anytime_table
from adainf_env.envs.anytime.vec_env import AnytimeVecEnv
from adainf_env.envs.wrappers import (CONSTRAINT_KEY, LagrangianCostWrapper, LagrangianVecEnvWrapper,
                                      LagrangianVectorWrapper)
from adainf_env.errors import ConfigError


class ValueEnv(gym.Env):
    """Each step shows a value v ~ U(0, 1); action 1 collects v as reward and costs 1, action 0 is free. Under price λ
    the best response is "act iff v > λ", whose average cost is 1 − λ: the multiplier must find λ = 1 − target."""

    def __init__(self, horizon: int = 10) -> None:
        self.observation_space = spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self.horizon = horizon

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.v = 0, float(self.np_random.random())
        return np.array([self.v], np.float32), {}

    def step(self, action):
        run = int(action) == 1
        r, c = (self.v, 1.0) if run else (0.0, 0.0)
        self.t += 1
        self.v = float(self.np_random.random())
        return np.array([self.v], np.float32), r, False, self.t >= self.horizon, {"cost": c}


def best_response(obs: np.ndarray) -> np.ndarray:
    """Act iff the value exceeds the price read from the observation ([v, target, λ])."""
    obs = np.atleast_2d(obs)
    return (obs[:, 0] > obs[:, 2]).astype(np.int64)


@pytest.mark.parametrize("controller", ["dual", "pid"])
def test_single_env_average_cost_reaches_target(controller):
    env = LagrangianCostWrapper(ValueEnv(), target=0.3, controller=controller, update_every=50)
    obs, _ = env.reset(seed=0)
    costs = []
    for _ in range(40_000):
        obs, _, term, trunc, info = env.step(int(best_response(obs)[0]))
        costs.append(info["cost"])
        if term or trunc:
            obs, _ = env.reset()
    avg = float(np.mean(costs[-20_000:]))
    assert abs(avg - 0.3) <= 0.05 * 0.3, avg
    assert abs(env.multipliers.lam[0] - 0.7) < 0.05  # the price that makes the best response spend 0.3
    assert env.observation_space.shape == (3,)


def test_sb3_vec_wrapper_one_policy_two_targets():
    venv = DummyVecEnv([ValueEnv for _ in range(8)])
    venv.seed(1)
    w = LagrangianVecEnvWrapper(venv, target=[0.2] * 4 + [0.5] * 4, update_every=40)
    obs = w.reset()
    assert obs.shape == (8, 3) and np.allclose(obs[:, 1], [0.2] * 4 + [0.5] * 4)
    costs = []
    for _ in range(6000):
        obs, rew, dones, infos = w.step(best_response(obs))
        costs.append([i["cost"] for i in infos])
        assert all(i["terminal_observation"].shape == (3,) for i in infos if "terminal_observation" in i)
    late = np.asarray(costs)[-3000:]
    for cols, target in ((slice(0, 4), 0.2), (slice(4, 8), 0.5)):
        assert abs(late[:, cols].mean() - target) <= 0.05 * target, (target, late[:, cols].mean())
    assert np.allclose(w.multipliers.lam, [0.8, 0.5], atol=0.05)


def test_gym_vector_wrapper_reaches_target_and_reports_final_obs():
    env = SyncVectorEnv([ValueEnv for _ in range(4)], autoreset_mode=AutoresetMode.SAME_STEP)
    w = LagrangianVectorWrapper(env, target=0.4, controller="pid", update_every=40)
    obs, _ = w.reset(seed=3)
    costs = []
    for _ in range(8000):
        obs, rew, term, trunc, infos = w.step(best_response(obs))
        done = term | trunc
        # the cost of an env whose episode ended this step is read from final_info
        cost = np.where(done, infos["final_info"]["cost"], 0.0) if done.any() else np.zeros(4)
        costs.append(np.where(infos.get("_cost", np.zeros(4, bool)), infos.get("cost", 0.0), cost))
        if done.any():
            assert all(infos["final_obs"][k].shape == (3,) for k in np.flatnonzero(done))
    assert abs(np.asarray(costs)[-4000:].mean() - 0.4) <= 0.05 * 0.4


def test_shaped_reward_and_request_units_on_the_anytime_env():
    """Exactly (r − λ·c)/(1 + λ) per step with c = info["cost"] as the env reports it; each finished request feeds the
    multiplier its total cost (update_every=1: one update per request)."""
    table = toy_anytime_table(300, seed=2)
    raw = AnytimeVecEnv(table, 4, mode="stream", bucket=True, budget="fixed:0.4", episode_length=5,
                        obs_format="flat", invalid_action="fallback")
    ref = AnytimeVecEnv(table, 4, mode="stream", bucket=True, budget="fixed:0.4", episode_length=5,
                        obs_format="flat", invalid_action="fallback")
    raw.seed(7)
    ref.seed(7)
    targets = [0.3, 0.4, 0.5, 0.6]  # one per env: each env's requests feed its own multiplier, one at a time
    w = LagrangianVecEnvWrapper(raw, target=targets, update_every=1, lam_lr=0.1, normalize=True)
    obs, ref_obs = w.reset(), ref.reset()
    assert np.array_equal(obs[:, :-2], ref_obs) and obs.shape[1] == ref_obs.shape[1] + 2
    rng = np.random.default_rng(0)
    totals = []
    for _ in range(200):
        a = rng.integers(0, 4, size=4)
        lam_before = w.multipliers.lam.copy()
        obs, rew, dones, infos = w.step(a)
        _, ref_rew, _, ref_infos = ref.step(a)
        cost = np.array([i["cost"] for i in ref_infos])
        assert np.allclose([i["cost"] for i in infos], cost)  # reported as the env reports it
        assert np.allclose(rew, (ref_rew - lam_before * cost) / (1 + lam_before), atol=1e-6)
        assert np.allclose(obs[:, -1], w.multipliers.lam) and np.allclose(obs[:, -2], targets)  # target, λ observed
        totals += [(targets[k], i["total_cost"]) for k, i in enumerate(ref_infos) if i["request_done"]]
    assert len(w.multipliers.history) == len(totals) > 20
    for b in targets:
        assert np.allclose([h[1] for h in w.multipliers.history if h[0] == b], [c for t, c in totals if t == b])


def test_dict_observation_gets_a_constraint_key_and_freeze_stops_updates():
    table = toy_anytime_table(200, seed=1)
    env = gym.make("AdaInf/Anytime-v0", table=table, mode="stream", bucket=True, budget="fixed:0.3",
                   episode_length=4, invalid_action="fallback")
    w = LagrangianCostWrapper(env, target=[0.3, 0.5], pin_budget=True, update_every=1)
    assert CONSTRAINT_KEY in w.observation_space.spaces
    obs, info = w.reset(seed=0)
    assert w.observation_space.contains(obs) and info["budget"] <= w.target + 1e-9
    w.freeze()
    for _ in range(30):
        obs, _, term, trunc, _ = w.step(STOP)
        assert obs[CONSTRAINT_KEY][0] == np.float32(w.target)
        if term or trunc:
            obs, _ = w.reset()
    assert w.multipliers.history == []


@pytest.mark.parametrize("kwargs, match", [
    ({"target": 0.0}, "target must be > 0"),
    ({"target": "0.3"}, "target must be a number"),
    ({"target": []}, "target must be a number"),
    ({"target": 0.3, "unit": "step"}, "unit must be one of"),
    ({"target": 0.3, "controller": "pi"}, "controller must be one of"),
    ({"target": 0.3, "update_every": 0}, "update_every must be an integer"),
    ({"target": 0.3, "lam_max": 0}, "lam_max must be > 0"),
    ({"target": 0.3, "lam_init": 30.0}, "lam_init must be ≥ 0 and ≤ 20"),
    ({"target": 0.3, "lam_lr": -1.0}, "lam_lr must be ≥ 0"),
    ({"target": 0.3, "pid_ema": 1.0}, "pid_ema must be < 1"),
    ({"target": 0.3, "normalize": "yes"}, "normalize must be True or False"),
    ({"target": 0.3, "pin_budget": 1}, "pin_budget must be True or False"),
])
def test_bad_options_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        LagrangianCostWrapper(ValueEnv(), **kwargs)


def test_bad_envs_are_config_errors():
    with pytest.raises(ConfigError, match="one number or one per env"):
        LagrangianVecEnvWrapper(DummyVecEnv([ValueEnv] * 3), target=[0.2, 0.3])

    class NoCost(ValueEnv):
        def step(self, action):
            o, r, te, tr, _ = super().step(action)
            return o, r, te, tr, {}

    w = LagrangianCostWrapper(NoCost(), target=0.3)
    w.reset(seed=0)
    with pytest.raises(ConfigError, match="no 'cost'"):
        w.step(1)

    class Image(ValueEnv):
        def __init__(self) -> None:
            super().__init__()
            self.observation_space = spaces.Box(0.0, 1.0, shape=(2, 2), dtype=np.float32)

    with pytest.raises(ConfigError, match="1-d Box or a Dict"):
        LagrangianCostWrapper(Image(), target=0.3)
    with pytest.raises(ConfigError, match="SAME_STEP"):
        LagrangianVectorWrapper(SyncVectorEnv([ValueEnv]), target=0.3)


def test_unconstrained_envs_keep_their_reward_and_do_not_move_the_multiplier():
    venv = DummyVecEnv([ValueEnv for _ in range(4)])
    ref = DummyVecEnv([ValueEnv for _ in range(4)])
    venv.seed(5)
    ref.seed(5)
    w = LagrangianVecEnvWrapper(venv, target=[None, None, 0.3, 0.3], update_every=10)
    obs, ref_obs = w.reset(), ref.reset()
    for _ in range(300):
        a = best_response(obs)
        obs, rew, _, _ = w.step(a)
        _, ref_rew, _, _ = ref.step(a)
        assert np.array_equal(rew[:2], ref_rew[:2].astype(np.float32))  # unconstrained: the env's reward
        assert np.all(obs[:2, 1:] == 0.0)  # target and λ observed as 0
    # only the constrained envs' 600 units fed the one multiplier: 60 updates of 10
    assert len(w.multipliers.history) == 60 and w.multipliers.targets.tolist() == [0.3]
    with pytest.raises(ConfigError, match="at least one env needs a target"):
        LagrangianVecEnvWrapper(DummyVecEnv([ValueEnv] * 2), target=[None, None])


def test_unit_episodes_end_the_learners_episode_at_each_request_while_the_stream_goes_on():
    table = toy_anytime_table(300, seed=2)
    kw = dict(mode="stream", bucket=True, budget="fixed:0.4", episode_length=50, obs_format="flat",
              invalid_action="fallback")
    raw, ref = AnytimeVecEnv(table, 3, **kw), AnytimeVecEnv(table, 3, **kw)
    raw.seed(1)
    ref.seed(1)
    w = LagrangianVecEnvWrapper(raw, target=0.4, unit_episodes=True)
    obs, ref_obs = w.reset(), ref.reset()
    rng = np.random.default_rng(3)
    ended = 0
    for _ in range(100):
        a = rng.integers(0, 4, size=3)
        obs, _, dones, infos = w.step(a)
        ref_obs, _, ref_dones, ref_infos = ref.step(a)
        rd = np.array([i["request_done"] for i in ref_infos])
        assert np.array_equal(dones, rd | ref_dones) and not ref_dones.any()  # the stream itself goes on
        assert np.array_equal(obs[:, :-2], ref_obs)  # same env state: the bucket was not reset
        for k in np.flatnonzero(dones):
            assert infos[k]["TimeLimit.truncated"] is False and infos[k]["terminal_observation"].shape == obs[k].shape
        ended += int(dones.sum())
    assert ended > 10


def test_plan_env_vector_wrapper_prices_each_request():
    """The plan env (one request per step, every env done together in the bandit): the Gymnasium vector wrapper reads
    the cost from final_info and prices it; the chosen plan's cost is each unit."""
    from adainf_env.tables.toy import make_toy_table

    table = make_toy_table(300, num_blocks=3, seed=0)
    env = gym.make_vec("AdaInf/Bandit-v0", num_envs=4, table=table, obs_format="flat")
    ref = gym.make_vec("AdaInf/Bandit-v0", num_envs=4, table=table, obs_format="flat")
    w = LagrangianVectorWrapper(env, target=0.5, update_every=1)
    obs, _ = w.reset(seed=0)
    ref.reset(seed=0)
    assert obs.shape[1] == env.single_observation_space.shape[0] + 2
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = rng.integers(0, env.single_action_space.n, size=4)
        lam = w.multipliers.lam[0]
        obs, rew, term, trunc, infos = w.step(a)
        _, ref_rew, *_ = ref.step(a)
        cost = np.asarray(infos["final_info"]["cost"], dtype=np.float64)
        assert np.allclose(cost, table.plan_cost()[a])
        assert np.allclose(rew, (ref_rew - lam * cost) / (1 + lam), atol=1e-6)
        assert np.isclose(w.multipliers.history[-1][1], cost.mean())
        assert infos["final_obs"].shape == obs.shape
