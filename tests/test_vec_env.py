"""AdaInfVecEnv: same numbers as N independent AdaInfEnv, SB3 VecEnv contract, MaskablePPO masks, bad input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from adainf_env import AdaInfEnv, AdaInfVecEnv, make_vec_env
from adainf_env.envs.plan.env import ActionError
from adainf_env.errors import AdaInfError, ConfigError
from adainf_env.tables.toy import make_toy_table
from adainf_env.envs.plan.vec_env import LazyInfos


@pytest.fixture(scope="module")
def toy():
    # 300 rows: several passes (reshuffles) and uniform-buffer refills (1024 draws) happen within 2,500 steps.
    return make_toy_table(300, num_blocks=4, seed=2)


SETTINGS = [
    ("bandit", {}),
    ("bandit", {"budget": "random_walk", "obs_format": "flat", "reward": "neg_ce"}),
    ("stream", {"episode_length": 7}),
    ("stream", {"episode_length": 9, "budget": "fixed:0.3", "bucket": {"cap": 1.5}, "penalty": "hard"}),
    ("stream", {"episode_length": 5, "budget": "periodic:period=4", "obs_format": "flat"}),
    ("stream", {"episode_length": 6, "budget": {"name": "trace", "values": [0.2, 0.9, 0.5]}, "bucket": True}),
    ("stream", {"episode_length": 4, "budget": "step:values=0.7/0.2,every=2", "action_type": "mask"}),
]


@pytest.mark.parametrize("mode,kw", SETTINGS)
def test_vec_env_equals_independent_envs(toy, mode, kw):
    n, seed, steps = 5, 100, 2500
    envs = [AdaInfEnv(toy, mode=mode, **kw) for _ in range(n)]
    obs = [e.reset(seed=seed + i)[0] for i, e in enumerate(envs)]
    venv = make_vec_env(toy, n, mode=mode, seed=seed, **kw)
    vobs = venv.reset()
    rng = np.random.default_rng(0)
    flat = kw.get("obs_format") == "flat"

    def stacked(os_):
        return np.stack(os_) if flat else {k: np.stack([o[k] for o in os_]) for k in os_[0]}

    def equal(x, y):
        return np.array_equal(x, y) if flat else all(np.array_equal(x[k], y[k]) for k in x)

    for t in range(steps):
        assert equal(vobs, stacked(obs)), f"observations differ at step {t}"
        p = rng.integers(0, toy.num_plans, n)
        a = toy.plan_masks[p].astype(np.int8) if kw.get("action_type") == "mask" else p
        vobs, vrew, vdone, vinfo = venv.step(a)
        rews = []
        for i, e in enumerate(envs):
            o, r, term, trunc, info = e.step(a[i] if kw.get("action_type") == "mask" else int(a[i]))
            rews.append(r)
            assert vdone[i] == (term or trunc)
            if t % 97 == 0:  # infos are lazy; spot-check that they match the single env's
                for k in ("plan", "cost", "correct", "overrun", "budget", "sample"):
                    assert vinfo[i][k] == pytest.approx(info[k]), k
            if term:
                assert equal(vinfo[i]["terminal_observation"], o)
                o, _ = e.reset()
            obs[i] = o
        assert np.array_equal(vrew, np.array(rews, dtype=np.float32)), f"rewards differ at step {t}"


def test_sb3_vec_env_contract(toy):
    venv = make_vec_env(toy, 4, mode="stream", seed=0, episode_length=3)
    assert venv.render_mode is None and venv.num_envs == 4
    obs = venv.reset()
    assert venv.observation_space.contains({k: v[0] for k, v in obs.items()})
    assert len(venv.reset_infos) == 4
    for t in range(3):
        obs, rew, done, infos = venv.step(np.zeros(4, dtype=np.int64))
        assert rew.dtype == np.float32 and done.dtype == bool and len(infos) == 4
        assert infos[0]["TimeLimit.truncated"] is False
    assert done.all() and "terminal_observation" in infos[3] and infos[-1] is infos[3]
    infos[1]["terminal_observation"] = "mutated"  # wrappers such as VecNormalize edit infos in place
    assert infos[1]["terminal_observation"] == "mutated" and len(infos[1:3]) == 2
    assert venv.env_is_wrapped(object) == [False] * 4
    assert venv.get_attr("render_mode") == [None] * 4 and venv.has_attr("action_masks")
    assert venv.get_attr("lam", indices=[1, 2]) == [1.0, 1.0]
    venv.set_attr("lam", 0.5)
    assert venv.get_attr("lam") == [0.5] * 4
    with pytest.raises(AttributeError):
        venv.get_attr("nonexistent")
    with pytest.raises(AttributeError):
        venv.env_method("nonexistent")
    assert venv.seed(7) == [7, 8, 9, 10]


def test_vec_env_works_with_sb3_wrappers_and_ppo(toy):
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

    venv = VecNormalize(VecMonitor(make_vec_env(toy, 8, seed=0)), norm_reward=False)
    model = PPO("MultiInputPolicy", venv, n_steps=16, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(256)
    assert model.num_timesteps >= 256


def test_maskable_ppo_gets_masks(toy):
    from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported

    venv = make_vec_env(toy, 6, seed=1, budget="fixed:0.3")
    venv.reset()
    assert is_masking_supported(venv)
    m = get_action_masks(venv)
    cost = toy.plan_cost()
    assert m.shape == (6, toy.num_plans) and np.array_equal(m[0], (cost <= 0.3) | (cost == cost.min()))
    single = AdaInfEnv(toy, budget="fixed:0.3")
    single.reset(seed=1)
    assert np.array_equal(m[0], single.action_masks())


def test_maskable_ppo_learns_a_step(toy):
    from sb3_contrib import MaskablePPO

    venv = make_vec_env(toy, 8, seed=0)
    model = MaskablePPO("MultiInputPolicy", venv, n_steps=16, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(128)
    assert model.num_timesteps >= 128


def test_infos_are_lazy_and_o1(toy):
    venv = make_vec_env(toy, 512, seed=0)
    venv.reset()
    _, _, _, infos = venv.step(np.zeros(512, dtype=np.int64))
    assert isinstance(infos, LazyInfos) and infos._cache == {}  # nothing built until read
    _ = infos[5]
    assert set(infos._cache) == {5}


def test_same_seed_same_numbers_and_pickle(toy):
    def roll(v):
        v.reset()
        out = []
        for t in range(300):
            o, r, d, _ = v.step(np.full(3, t % toy.num_plans))
            out.append((o["features"].copy(), r.copy()))
        return out

    a = roll(make_vec_env(toy, 3, seed=4))
    b = roll(make_vec_env(toy, 3, seed=4))
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    v = make_vec_env(toy, 3, seed=4)
    v.reset()
    v.step(np.zeros(3, dtype=np.int64))
    w = pickle.loads(pickle.dumps(v))
    for _ in range(50):
        o1, r1, _, _ = v.step(np.ones(3, dtype=np.int64))
        o2, r2, _, _ = w.step(np.ones(3, dtype=np.int64))
        assert np.array_equal(r1, r2) and np.array_equal(o1["budget"], o2["budget"])


@pytest.mark.parametrize("actions", [np.array([0, 1]), np.array([0, 1, 99]), np.array([-1, 0, 0]),
                                     np.array([0.5, 1.0, 2.0]), np.array([[0, 1, 2]]), np.array(["a", "b", "c"]),
                                     np.array([np.nan, 0, 0])])
def test_bad_vec_actions(toy, actions):
    v = make_vec_env(toy, 3, seed=0)
    v.reset()
    with pytest.raises(ActionError):
        v.step(actions)


def test_bad_vec_arguments(toy, tmp_path):
    with pytest.raises(ConfigError):
        make_vec_env(toy, 0)
    with pytest.raises(ConfigError):
        make_vec_env(toy, 2, mode="batch")
    with pytest.raises(ConfigError):
        make_vec_env(toy, 2, seed=-1)
    with pytest.raises(ConfigError):
        make_vec_env(42, 2)
    with pytest.raises(ConfigError):
        make_vec_env(toy, 2, lam=-1)
    with pytest.raises(ConfigError):
        make_vec_env(toy, 2, budget="fixed:2")
    bad = tmp_path / "bad.csv"
    bad.write_text("0.3\n0.4\nseven\n")
    with pytest.raises(ConfigError, match="line 3"):
        make_vec_env(toy, 2, mode="stream", budget=f"trace:{bad}")
    v = make_vec_env(toy, 2)
    with pytest.raises(AdaInfError, match="reset"):
        v.step(np.zeros(2, dtype=np.int64))
    v.set_options({"budget": 3.0})
    with pytest.raises(ConfigError):
        v.reset()


def test_reference_table_vec_env(reference_dir):
    v = make_vec_env(str(reference_dir / "table_calib.npz"), 16, mode="stream", seed=0, budget="fixed:0.2",
                     bucket=True)
    assert isinstance(v, AdaInfVecEnv)
    obs = v.reset()
    assert obs["features"].shape == (16, 64) and obs["bucket"].shape == (16, 3)
    masks = v.action_masks()
    assert masks.shape == (16, 256) and masks.any(axis=1).all()


def test_info_budget_is_the_observed_budget_across_buffer_refills(toy):
    """info["budget"] of a step equals the budget the agent observed for it, also on steps that refill the
    pre-drawn random buffers (every 1024 steps); infos are read lazily, after the refill."""
    from adainf_env.envs.core import RNG_CHUNK

    venv = make_vec_env(toy, 3, mode="bandit", seed=5)
    obs = venv.reset()
    for _ in range(RNG_CHUNK + 10):
        seen = obs["budget"][:, 0].copy()
        obs, _, _, infos = venv.step(np.zeros(3, dtype=np.int64))
        got = np.array([infos[i]["budget"] for i in range(3)], dtype=np.float32)
        np.testing.assert_array_equal(got, seen)


# ---------------------------------------------------------------------------------------------- get_state / set_state
def _run(venv, steps, seed, mask=False, toy=None):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        p = rng.integers(0, venv.action_space.n if not mask else toy.num_plans, venv.num_envs)
        obs, rew, done, infos = venv.step(toy.plan_masks[p].astype(np.int8) if mask else p)
        flat = obs if isinstance(obs, np.ndarray) else np.concatenate([obs[k] for k in sorted(obs)], axis=1)
        out.append((flat.copy(), rew.copy(), done.copy(), infos[0]["budget"], infos[-1]["sample"]))
    return out


def _same(a, b):
    assert len(a) == len(b)
    for t, (x, y) in enumerate(zip(a, b)):
        for u, v in zip(x, y):
            assert np.array_equal(u, v), f"step {t} differs"


@pytest.mark.parametrize("mode,kw", SETTINGS)
def test_get_set_state_replays_exactly(toy, mode, kw):
    """k steps, snapshot, m steps (through reshuffles and buffer refills), restore, the same m steps again."""
    venv = make_vec_env(toy, 3, mode=mode, seed=7, **kw)
    venv.reset()
    mask = kw.get("action_type") == "mask"
    _run(venv, 250, seed=1, mask=mask, toy=toy)
    state = venv.get_state()
    assert state["meta"]["pos"] == 251 and state["meta"]["upos"] == 251  # reset drew one request, each step one more
    first = _run(venv, 900, seed=2, mask=mask, toy=toy)  # crosses permutation (300 rows) and uniform (1024) refills
    venv.set_state(state)
    _same(first, _run(venv, 900, seed=2, mask=mask, toy=toy))
    # a fresh env of the same configuration continues identically from the state, too
    other = make_vec_env(toy, 3, mode=mode, **kw)
    other.set_state(state)
    _same(first, _run(other, 900, seed=2, mask=mask, toy=toy))


def test_state_is_plain_data_and_survives_savez_and_torch_weights_only(toy, tmp_path):
    import json

    import torch

    venv = make_vec_env(toy, 4, mode="stream", seed=3, episode_length=5, bucket=True)
    venv.reset()
    venv.set_options({"budget": 0.4})  # pending options are part of the state
    _run(venv, 13, seed=0, toy=toy)
    st = venv.get_state()
    meta_json = json.dumps(st["meta"])  # JSON-able: no pickled objects
    assert all(isinstance(v, np.ndarray) for v in st["arrays"].values())
    np.savez(tmp_path / "s.npz", meta=np.array(meta_json), **st["arrays"])
    torch.save({"meta": st["meta"], "arrays": {k: torch.from_numpy(v) for k, v in st["arrays"].items()}},
               tmp_path / "s.pt")
    ref = _run(venv, 40, seed=5, toy=toy)
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        from_npz = {"meta": json.loads(str(z["meta"])), "arrays": {k: z[k] for k in z.files if k != "meta"}}
    from_pt = torch.load(tmp_path / "s.pt", weights_only=True)  # tensors accepted in place of arrays
    for loaded in (from_npz, from_pt):
        venv.set_state(loaded)
        _same(ref, _run(venv, 40, seed=5, toy=toy))


def test_state_before_reset_and_pending_seeds(toy):
    venv = make_vec_env(toy, 2, seed=11)
    st = venv.get_state()  # not started; seeds pending
    a = venv.reset()
    venv2 = make_vec_env(toy, 2)
    venv2.set_state(st)
    b = venv2.reset()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_set_state_rejects_other_envs(toy):
    venv = make_vec_env(toy, 3, seed=0)
    venv.reset()
    st = venv.get_state()
    with pytest.raises(ConfigError, match="num_envs"):
        make_vec_env(toy, 4).set_state(st)
    with pytest.raises(ConfigError, match="mode"):
        make_vec_env(toy, 3, mode="stream").set_state(st)
    with pytest.raises(ConfigError, match="another outcome table"):
        make_vec_env(make_toy_table(300, num_blocks=4, seed=3), 3).set_state(st)
    with pytest.raises(ConfigError, match="meta"):
        venv.set_state({"rngs": []})
    bad = {"meta": dict(st["meta"]), "arrays": dict(st["arrays"])}
    bad["meta"]["rngs"] = [{"bit_generator": "os.system"}] * 3
    with pytest.raises(ConfigError, match="bit generator"):
        venv.set_state(bad)
    bad = {"meta": dict(st["meta"]), "arrays": {k: v for k, v in st["arrays"].items() if k != "budget"}}
    with pytest.raises(ConfigError, match="budget"):
        venv.set_state(bad)


def test_batched_cores_need_neither_sb3_nor_gymnasium_vector_adapters(toy):
    """The numpy cores of both batched envs (and both Gymnasium adapters on them) import no stable-baselines3; a core
    stepped alone gives the SB3 vec env's numbers."""
    import subprocess
    import sys

    code = ("import sys; import adainf_env.envs.plan.batched, adainf_env.envs.anytime.batched, "
            "adainf_env.envs.plan.gym_vector, adainf_env.envs.anytime.gym_vector; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'stable_baselines3'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    from adainf_env.envs.plan.batched import PlanBatchedEnv

    core, venv = PlanBatchedEnv(toy, 4, mode="stream", episode_length=3), make_vec_env(toy, 4, mode="stream",
                                                                                         episode_length=3)
    core.seed(9)
    venv.seed(9)
    np.testing.assert_array_equal(core.reset()["budget"], venv.reset()["budget"])
    for t in range(7):
        a = np.full(4, t % toy.num_plans)
        obs_c, rew_c, done_c, _, _ = core.step_arrays(a)
        obs_v, rew_v, done_v, _ = venv.step(a)
        np.testing.assert_array_equal(rew_c, rew_v)
        np.testing.assert_array_equal(obs_c["features"], obs_v["features"])
        assert np.all(done_v == done_c)
    with pytest.raises(ConfigError, match="4 seeds"):
        core.seed_each([1, 2])
