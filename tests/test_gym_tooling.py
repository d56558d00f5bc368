"""Standard tooling works on the registered ids: no-argument make, env checkers, SB3 make_vec_env + PPO, a model
moving from the calibration env to the test env, rgb_array rendering and recording wrappers, and the Gymnasium
vector entry point (same numbers as Gymnasium's own SyncVectorEnv; a cleanrl-style training loop)."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest

import adainf_env  # noqa: F401  (registers the ids)
from adainf_env.errors import ConfigError
from adainf_env.envs.plan.gym_vector import AdaInfVectorEnv
from adainf_env.tables.reference import reference_table_path
from adainf_env.envs.anytime.actions import READ, RUN
from adainf_env.tables.toy import toy_anytime_table
from adainf_env.envs.anytime.gym_vector import AnytimeVectorEnv
from adainf_env.envs.registration import ANYTIME_ID, BANDIT_ID, STREAM_ID
from adainf_env.envs.render import FRAME_HEIGHT, FRAME_WIDTH
from adainf_env.tables.toy import make_toy_table

IDS = [BANDIT_ID, STREAM_ID]


@pytest.fixture(scope="module")
def toy():
    return make_toy_table(300, num_blocks=4, seed=5)


@pytest.fixture
def one_torch_thread():
    """SB3 runs tiny networks: one intra-op thread avoids OpenMP workers spinning against the env loop (when torch
    was imported before adainf_env could set OMP_WAIT_POLICY=PASSIVE, as under pytest)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _checker_warnings(env) -> list[str]:
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        gym_check(env.unwrapped)
        sb3_check(env.unwrapped, warn=True)
    # Gymnasium's checker notes that a Dict observation is not a Box when SB3's checker is run on it; nothing else.
    return [str(x.message) for x in w if "MultiInputPolicy" not in str(x.message)]


@pytest.mark.parametrize("env_id", IDS + [ANYTIME_ID])
def test_make_with_no_arguments_serves_the_shipped_calibration_table(env_id):
    env = gym.make(env_id)
    assert env.unwrapped.table.meta["split"] == "calib"
    assert env.unwrapped.table.num_samples == 10_000
    assert _checker_warnings(env) == []


def test_observation_space_does_not_depend_on_the_table(toy):
    calib = gym.make(BANDIT_ID)
    test = gym.make(BANDIT_ID, table_path=reference_table_path("test"))
    assert calib.observation_space == test.observation_space
    # every test observation lies inside the space (the old min/max Box of the calibration table missed some)
    feats = test.unwrapped.table.features
    assert calib.observation_space["features"].contains(feats.max(0)) and \
        calib.observation_space["features"].contains(feats.min(0))
    # a table of another size shares the space too, up to its feature dimension
    other = gym.make(BANDIT_ID, table=toy.subset(np.arange(50)))
    assert other.observation_space == gym.make(BANDIT_ID, table=toy).observation_space


def test_ppo_trained_on_calib_loads_and_runs_on_test(tmp_path, one_torch_thread):
    from stable_baselines3 import PPO

    calib = gym.make(BANDIT_ID)
    model = PPO("MultiInputPolicy", calib, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(128)
    model.save(tmp_path / "ppo")
    test = gym.make(BANDIT_ID, table_path=reference_table_path("test"))
    loaded = PPO.load(tmp_path / "ppo", env=test, device="cpu")
    obs, _ = test.reset(seed=0)
    action, _ = loaded.predict(obs, deterministic=True)
    assert 0 <= int(action) < test.action_space.n
    loaded.learn(64)  # and it keeps training on the test env's spaces
    model.set_env(test)


def test_sb3_make_vec_env_with_ppo(toy, one_torch_thread):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env(BANDIT_ID, n_envs=4, seed=0, env_kwargs={"table": toy})
    assert venv.render_mode == "rgb_array"  # SB3 asks for rgb_array by default
    model = PPO("MultiInputPolicy", venv, n_steps=128, batch_size=128, n_epochs=1, seed=0, device="cpu")
    model.learn(2048)
    frames = venv.get_images()
    assert len(frames) == 4 and frames[0].shape == (FRAME_HEIGHT, FRAME_WIDTH, 3) and frames[0].dtype == np.uint8


def _outcome_pixel(frame: np.ndarray) -> tuple[int, ...]:
    return tuple(int(c) for c in frame[74, FRAME_WIDTH // 2])  # the middle of the outcome strip


def test_rgb_array_frame_shows_the_step(toy):
    env = gym.make(BANDIT_ID, table=toy, render_mode="rgb_array", budget="fixed:0.5")
    env.reset(seed=0)
    first = env.render()
    assert first.shape == (FRAME_HEIGHT, FRAME_WIDTH, 3) and first.dtype == np.uint8
    frames = {}
    for p in (0, toy.num_plans - 1):  # nothing executed vs every block executed
        env.reset(seed=1)
        _, _, _, _, info = env.step(p)
        frames[p] = (env.render(), info)
    (f0, i0), (f1, i1) = frames[0], frames[toy.num_plans - 1]
    assert not np.array_equal(f0[8:32], f1[8:32])  # the plan cells differ
    for f, info in ((f0, i0), (f1, i1)):
        want = (15, 157, 88) if info["correct"] else (219, 68, 55)
        assert _outcome_pixel(f) == want
    # the full plan costs 1.0 > 0.5: its cost bar shows a red overrun part right of the budget tick
    assert i1["overrun"] > 0 and tuple(f1[50, 8 + int(0.9 * (FRAME_WIDTH - 16))]) == (219, 68, 55)
    text = gym.make(BANDIT_ID, table=toy, render_mode="ansi")
    text.reset(seed=0)
    assert "no step yet" in text.render()
    text.step(0)
    assert "plan 0" in text.render()


def test_render_collection_wrapper_records_frames(toy):
    env = gym.wrappers.RenderCollection(gym.make(STREAM_ID, table=toy, render_mode="rgb_array", episode_length=5))
    env.reset(seed=0)
    for _ in range(5):
        env.step(env.action_space.sample())
    frames = env.render()
    assert len(frames) == 6 and all(f.shape == (FRAME_HEIGHT, FRAME_WIDTH, 3) for f in frames)


def test_record_video_wrapper(toy, tmp_path):
    pytest.importorskip("moviepy", reason="RecordVideo writes mp4 through moviepy (not a dependency)")
    env = gym.wrappers.RecordVideo(gym.make(BANDIT_ID, table=toy, render_mode="rgb_array"), str(tmp_path))
    env.reset(seed=0)
    env.step(0)
    env.close()
    assert list(tmp_path.glob("*.mp4"))


# ---------------------------------------------------------------------------------------------- vector entry point
@pytest.mark.parametrize("env_id", IDS)
def test_make_vec_uses_the_batched_env(env_id, toy):
    for mode in (None, "vector_entry_point"):
        envs = gym.make_vec(env_id, num_envs=3, vectorization_mode=mode, table=toy)
        assert isinstance(envs, AdaInfVectorEnv) and envs.num_envs == 3
        assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP


VEC_SETTINGS = [
    (BANDIT_ID, {}),
    (BANDIT_ID, {"obs_format": "flat", "reward": "neg_ce"}),
    (STREAM_ID, {"episode_length": 4, "budget": "fixed:0.3", "bucket": True}),
    (STREAM_ID, {"episode_length": 3, "obs_format": "flat", "penalty": "hard"}),
]


def _fast_and_sync(env_id, n, table, kw):
    """``n`` envs as the id's own ``make_vec`` VectorEnv and as Gymnasium's SyncVectorEnv of single envs (same-step
    autoreset), both reset with seed 3 (same first observations asserted): ``fast, slow, same_obs, flat, (reset
    info of fast, of slow)`` with ``same_obs`` an observation equality for ``kw``'s obs format."""
    fast = gym.make_vec(env_id, num_envs=n, table=table, **kw)
    slow = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync", table=table,
                        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}, **kw)
    flat = kw.get("obs_format") == "flat"

    def same_obs(a, b):
        return np.array_equal(a, b) if flat else all(np.array_equal(a[k], b[k]) for k in b)

    of, inf_f = fast.reset(seed=3)
    os_, inf_s = slow.reset(seed=3)
    assert same_obs(of, os_)
    return fast, slow, same_obs, flat, (inf_f, inf_s)


@pytest.mark.parametrize("env_id,kw", VEC_SETTINGS)
def test_vector_env_equals_gymnasium_sync_same_step(env_id, kw, toy):
    n = 4
    fast, slow, same_obs, flat, (inf_f, inf_s) = _fast_and_sync(env_id, n, toy, kw)
    assert np.array_equal(inf_f["sample"], inf_s["sample"]) and np.allclose(inf_f["budget"], inf_s["budget"])
    rng = np.random.default_rng(0)
    for t in range(60):
        a = rng.integers(0, toy.num_plans, n)
        of, rf, tf, trf, inf_f = fast.step(a)
        os_, rs, ts, trs, inf_s = slow.step(a)
        assert same_obs(of, os_), t
        assert np.allclose(rf, rs, atol=1e-6) and np.array_equal(tf, ts) and np.array_equal(trf, trs)
        assert set(inf_f) == set(inf_s), (set(inf_f), set(inf_s))
        served_f = inf_f["final_info"] if tf.all() else inf_f
        served_s = inf_s["final_info"] if ts.all() else inf_s
        for k in ("plan", "cost", "correct", "overrun", "budget", "sample"):
            assert np.allclose(served_f[k], served_s[k]), k
        if tf.all():
            fo = inf_f["final_obs"]
            for i in range(n):
                want = inf_s["final_obs"][i]
                assert np.array_equal(fo[i], want) if flat else all(np.array_equal(fo[k][i], want[k]) for k in want)


def test_vector_env_render_and_bad_seed_list(toy):
    envs = gym.make_vec(BANDIT_ID, num_envs=2, table=toy, render_mode="rgb_array")
    envs.reset(seed=0)
    envs.step(np.array([0, 1]))
    frames = envs.render()
    assert len(frames) == 2 and frames[1].shape == (FRAME_HEIGHT, FRAME_WIDTH, 3)
    with pytest.raises(ConfigError, match="2 seeds"):
        envs.reset(seed=[1, 2, 3])


def test_cleanrl_style_policy_gradient_loop_beats_random(toy, one_torch_thread):
    """The loop cleanrl scripts run on ``gym.make_vec``: batched obs → torch policy → batched actions. A linear softmax
    policy trained by REINFORCE on the toy table (where the best plan depends on the sample type) beats random."""
    import torch

    torch.manual_seed(0)
    envs = gym.make_vec(BANDIT_ID, num_envs=128, table=toy, obs_format="flat", lam=2.0)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    n_plans = int(envs.single_action_space.n)
    policy = torch.nn.Linear(envs.single_observation_space.shape[0], n_plans)
    opt = torch.optim.Adam(policy.parameters(), lr=0.05)
    obs, _ = envs.reset(seed=0)
    rand_rewards, learned = [], []
    rng = np.random.default_rng(0)
    for it in range(150):
        logits = policy(torch.as_tensor(obs))
        dist = torch.distributions.Categorical(logits=logits)
        act = dist.sample()
        next_obs, rew, term, trunc, infos = envs.step(act.numpy())
        assert term.all() and "episode" in infos  # bandit: every episode is one request
        r = torch.as_tensor(rew, dtype=torch.float32)
        loss = -((r - r.mean()) * dist.log_prob(act)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it >= 120:
            learned.append(float(rew.mean()))
        obs = next_obs
    for _ in range(30):
        _, rew, _, _, _ = envs.step(rng.integers(0, n_plans, 128))
        rand_rewards.append(float(rew.mean()))
    assert np.mean(learned) > np.mean(rand_rewards) + 0.2, (np.mean(learned), np.mean(rand_rewards))


# ---------------------------------------------------------------------------------------------- AdaInf/Anytime-v0
@pytest.fixture(scope="module")
def toy_anytime():
    return toy_anytime_table(300, num_blocks=4, seed=5)


def test_anytime_sb3_make_vec_env_and_frames(toy_anytime, one_torch_thread):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env(ANYTIME_ID, n_envs=3, seed=0, env_kwargs={"table": toy_anytime, "budget": "fixed:0.4"})
    assert venv.render_mode == "rgb_array"
    model = PPO("MultiInputPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(192)
    frames = venv.get_images()
    assert len(frames) == 3 and frames[0].shape == (FRAME_HEIGHT, FRAME_WIDTH, 3) and frames[0].dtype == np.uint8


def test_anytime_frames_show_the_request(toy_anytime):
    env = gym.make(ANYTIME_ID, table=toy_anytime, render_mode="rgb_array", budget="fixed:1.0")
    env.reset(seed=0, options={"sample": 0})
    before = env.render()
    assert before.shape == (FRAME_HEIGHT, FRAME_WIDTH, 3) and _outcome_pixel(before) == (160, 160, 160)
    env.step(RUN)
    ran = env.render()
    assert not np.array_equal(before[8:32], ran[8:32])  # block 0 is now drawn as executed
    done = False
    while not done:
        _, _, done, _, info = env.step(3)  # STOP
    want = (15, 157, 88) if info["correct"] else (219, 68, 55)
    assert _outcome_pixel(env.render()) == want
    text = gym.make(ANYTIME_ID, table=toy_anytime, render_mode="ansi")
    text.reset(seed=0)
    assert "no step yet" in text.render()
    text.step(READ)
    assert "read" in text.render()
    frames = gym.make_vec(ANYTIME_ID, num_envs=2, table=toy_anytime, render_mode="rgb_array")
    frames.reset(seed=0)
    frames.step(np.array([RUN, READ]))
    assert [f.shape for f in frames.render()] == [(FRAME_HEIGHT, FRAME_WIDTH, 3)] * 2


def test_anytime_make_vec_uses_the_batched_env(toy_anytime):
    for mode in (None, "vector_entry_point"):
        envs = gym.make_vec(ANYTIME_ID, num_envs=3, vectorization_mode=mode, table=toy_anytime)
        assert isinstance(envs, AnytimeVectorEnv) and envs.num_envs == 3
        assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
        assert envs.options.invalid_action == "fallback"  # the id's preset, as gym.make(ANYTIME_ID)


def _same_info(a: dict, b: dict, where: str) -> None:
    """Gymnasium-batched infos equal: same keys, same masks, same values where a mask is set."""
    assert set(a) == set(b), (where, set(a) ^ set(b))
    for k in b:
        if k.startswith("_") or k == "final_obs":
            continue
        if isinstance(b[k], dict):
            _same_info(a[k], b[k], f"{where}/{k}")
            continue
        m = b["_" + k]
        assert np.array_equal(a["_" + k], m), (where, k)
        if b[k].dtype == object:
            assert list(a[k][m]) == list(b[k][m]), (where, k)
        else:
            np.testing.assert_allclose(a[k][m].astype(float), b[k][m].astype(float), rtol=0, atol=1e-12,
                                       err_msg=f"{where}: {k}")


ANYTIME_VEC_SETTINGS = [
    {"budget": "uniform"},
    {"budget": "fixed:0.3", "invalid_action": "raise", "obs_format": "flat"},
    {"mode": "stream", "episode_length": 3, "budget": "fixed:0.35", "bucket": True},
    {"mode": "stream", "episode_length": 4, "budget": "periodic", "reward": "neg_ce", "penalty": "hard",
     "mask_over_budget": False},
]


@pytest.mark.parametrize("kw", ANYTIME_VEC_SETTINGS)
def test_anytime_vector_env_equals_gymnasium_sync_same_step(kw, toy_anytime):
    """Episodes end at different steps per env: final_obs / final_info / the new requests' sample and budget land
    exactly where Gymnasium's own SyncVectorEnv (same-step autoreset, of single AnytimeEnvs) puts them."""
    n = 5
    fast, slow, same_obs, flat, (inf_f, inf_s) = _fast_and_sync(ANYTIME_ID, n, toy_anytime, kw)
    _same_info(inf_f, inf_s, "reset")
    rng = np.random.default_rng(0)
    strict = kw.get("invalid_action") == "raise"
    ends, partial = 0, False
    for t in range(120):
        masks = fast.action_masks()
        assert np.array_equal(masks, np.stack(slow.call("action_masks")))
        # valid actions under "raise"; under "fallback" any action (the fallback itself is compared too)
        a = (np.array([rng.choice(np.flatnonzero(m)) for m in masks]) if strict else rng.integers(0, 4, n))
        of, rf, tf, trf, inf_f = fast.step(a)
        os_, rs, ts, trs, inf_s = slow.step(a)
        assert same_obs(of, os_), t
        assert rf.dtype == np.float32
        np.testing.assert_allclose(rf, rs, atol=1e-6)
        assert np.array_equal(tf, ts) and np.array_equal(trf, trs)
        _same_info(inf_f, inf_s, f"step {t}")
        if ts.any():
            ends += 1
            partial |= bool(ts.sum() < n)  # envs end on their own steps
            for i in np.flatnonzero(ts):
                want, got = inf_s["final_obs"][i], inf_f["final_obs"][i]
                assert np.array_equal(got, want) if flat else all(np.array_equal(got[k], want[k]) for k in want)
            assert all(inf_f["final_obs"][i] is None for i in np.flatnonzero(~ts))
    assert ends > 5 and partial


def test_anytime_cleanrl_style_loop_beats_random(toy_anytime, one_torch_thread):
    """A cleanrl-style REINFORCE loop on ``gym.make_vec(ANYTIME_ID)``: batched obs → torch policy → batched actions,
    episodes of several steps ending at different times (same-step autoreset: returns accumulate per env and are
    closed where ``terminations``). A linear softmax policy learns to answer better per unit cost than random."""
    import torch

    torch.manual_seed(0)
    n = 64
    envs = gym.make_vec(ANYTIME_ID, num_envs=n, table=toy_anytime, obs_format="flat", budget="fixed:0.5",
                        mask_over_budget=False, lam=2.0)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    policy = torch.nn.Linear(envs.single_observation_space.shape[0], 4)
    opt = torch.optim.Adam(policy.parameters(), lr=0.05)
    obs, _ = envs.reset(seed=0)

    def run(steps, act_fn):
        nonlocal obs
        returns = []
        for _ in range(steps):
            obs, rew, term, trunc, infos = envs.step(act_fn(obs))
            if "episode" in infos:
                returns.extend(infos["episode"]["r"][infos["_episode"]].tolist())
        return returns

    rng = np.random.default_rng(0)
    random_returns = run(60, lambda o: rng.integers(0, 4, n))
    for _ in range(40):  # 40 updates of 8 steps
        logps, rews, dones = [], [], []
        for _ in range(8):
            dist = torch.distributions.Categorical(logits=policy(torch.as_tensor(obs)))
            act = dist.sample()
            obs, rew, term, trunc, _ = envs.step(act.numpy())
            logps.append(dist.log_prob(act))
            rews.append(torch.as_tensor(rew, dtype=torch.float32))
            dones.append(torch.as_tensor(term | trunc, dtype=torch.float32))
        ret, g = [], torch.zeros(n)
        for r, d in zip(reversed(rews), reversed(dones)):  # returns to go, cut at episode ends
            g = r + 0.99 * g * (1.0 - d)
            ret.append(g)
        ret = torch.stack(ret[::-1])
        loss = -((ret - ret.mean()) * torch.stack(logps)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        learned = run(60, lambda o: torch.distributions.Categorical(logits=policy(torch.as_tensor(o))).sample().numpy())
    assert len(random_returns) > 50 and len(learned) > 50
    assert np.mean(learned) > np.mean(random_returns) + 0.1, (np.mean(learned), np.mean(random_returns))
