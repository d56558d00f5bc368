"""AnytimeEnv / AnytimeVecEnv: checkers, exact cost accounting, masks and errors, seeding, vec = N singles, live = table."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from adainf_env.envs.anytime.env import AnytimeEnv
from adainf_env.envs.anytime.actions import BlockCosts, READ, RUN, SKIP, STOP
from adainf_env.tables.toy import toy_anytime_table
from adainf_env.envs.anytime.vec_env import AnytimeVecEnv, make_anytime_vec_env
from adainf_env.envs.core import ActionError
from adainf_env.errors import ConfigError, TableFormatError
from adainf_env.tables.toy import make_toy_table


@pytest.fixture(scope="module")
def toy():
    return toy_anytime_table(500, num_blocks=4, seed=0)


def _random_episode(env, rng, seed=None, options=None):
    """One request with uniformly random valid actions → (actions, infos, rewards)."""
    env.reset(seed=seed, options=options)
    acts, infos, rews = [], [], []
    done = False
    while True:
        a = int(rng.choice(np.flatnonzero(env.action_masks())))
        _, r, done, _, info = env.step(a)
        acts.append(a), infos.append(info), rews.append(r)
        if done or info["request_done"]:
            return acts, infos, rews


def _independent_cost(costs: BlockCosts, actions: list[int]) -> float:
    """Cost of an action sequence by memoised computation nodes: (part, block, input decisions) paid once each."""
    B = costs.num_blocks
    done: set = set()
    total = costs.stem
    d: list[int] = []
    read_states: set = set()

    def pay(key, c):
        nonlocal total
        if key not in done:
            done.add(key)
            total += c

    def read():
        for j in range(len(d), B):
            pay(("sc", j, tuple(d) + (0,) * (j - len(d))), costs.shortcut[j])
        state = tuple(d) + (0,) * (B - len(d))
        pay(("head", state), costs.head)
        read_states.add(state)

    for a in actions:
        if a in (RUN, SKIP):
            j = len(d)
            pay(("sc", j, tuple(d)), costs.shortcut[j])
            if a == RUN:
                pay(("res", j, tuple(d)), costs.residual[j])
            d.append(1 if a == RUN else 0)
            if len(d) == B:
                read()
        elif a == READ:
            read()
        else:
            read()
    return total


@pytest.mark.parametrize("mode", ["bandit", "stream"])
def test_gymnasium_and_sb3_checkers(toy, mode):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    kw = dict(mode=mode, budget="fixed:0.6", episode_length=5)
    if mode == "stream":
        kw["bucket"] = True
    check_env(AnytimeEnv(toy, **kw), skip_render_check=True)
    sb3_check_env(AnytimeEnv(toy, invalid_action="fallback", **kw))
    sb3_check_env(AnytimeEnv(toy, invalid_action="fallback", obs_format="flat", **kw))


def test_cost_accounting_equals_independent_count(toy):
    costs = BlockCosts.from_table(toy)
    env = AnytimeEnv(toy, budget="uniform", mask_over_budget=False)
    rng = np.random.default_rng(1)
    for ep in range(400):
        acts, infos, _ = _random_episode(env, rng, seed=ep if ep == 0 else None)
        want = _independent_cost(costs, acts)
        assert infos[-1]["total_cost"] == pytest.approx(want, abs=1e-12)
        assert sum(i["cost"] for i in infos) == pytest.approx(want, abs=1e-12)  # per-step costs sum to the total
    # a plan run straight through and read once costs exactly its table cost, for every plan
    cost = toy.plan_cost()
    for p, mask in enumerate(toy.plan_masks):
        env.reset(options={"sample": 0, "budget": 1.0})
        hi = int(np.flatnonzero(mask).max()) + 1 if mask.any() else 0
        info = {}
        for j in range(hi):
            _, _, _, _, info = env.step(RUN if mask[j] else SKIP)
        if not info.get("request_done"):
            _, _, _, _, info = env.step(STOP)
        assert info["plan"] == p
        assert info["total_cost"] == pytest.approx(cost[p], abs=1e-12)
        assert info["correct"] == bool(toy.correct[0, p])


def test_reference_costs_and_reads(calib_table):
    env = AnytimeEnv(calib_table, budget="fixed:1.0")
    costs = env.block_costs
    assert costs.plan_cost(calib_table.plan_masks) == pytest.approx(calib_table.plan_cost(), abs=1e-12)
    # plan 4 (block 2), read, continue to plan 20 (blocks 2 and 4): the shortcut of block 3 was computed by the read
    obs, _ = env.reset(options={"sample": 7})
    for a in (SKIP, SKIP, RUN):
        env.step(a)
    _, _, _, _, info = env.step(READ)
    assert info["read_plan"] == 4 and info["total_cost"] == pytest.approx(calib_table.plan_cost()[4])
    assert info["read_conf"] == pytest.approx(calib_table.conf[7, 4])
    _, _, _, _, info = env.step(SKIP)
    assert info["cost"] == 0.0  # block 3's shortcut is on the read chain
    _, _, _, _, info = env.step(RUN)
    assert info["cost"] == pytest.approx(costs.residual[4])  # its shortcut too
    _, r, done, _, info = env.step(STOP)
    assert done and info["plan"] == 20 and r == float(calib_table.correct[7, 20])
    extra = costs.shortcut[5:].sum() + costs.head
    assert info["cost"] == pytest.approx(extra)
    assert info["total_cost"] == pytest.approx(calib_table.plan_cost()[4] + costs.residual[4] + extra)


def test_masks_and_action_errors(toy):
    env = AnytimeEnv(toy, budget="fixed:0.35")
    env.reset(seed=0)
    m = env.action_masks()
    assert m.tolist() == [True, True, True, True]
    env.step(READ)
    assert not env.action_masks()[READ]
    with pytest.raises(ActionError, match="read"):
        env.step(READ)
    env.step(RUN)  # block 0 (0.088) + a read (0.097) after the first read (0.123) → within 0.35
    assert not env.action_masks()[RUN]  # block 1 (0.175 + read) no longer fits
    with pytest.raises(ActionError, match="not allowed"):
        env.step(RUN)
    for bad in (4, -1, 1.5, "run", True, np.array([0, 1])):
        with pytest.raises(ActionError):
            env.step(bad)
    # the fallback replaces instead of raising
    fb = AnytimeEnv(toy, budget="fixed:0.35", invalid_action="fallback")
    fb.reset(seed=0)
    fb.step(READ)
    fb.step(RUN)
    _, _, _, _, info = fb.step(RUN)
    assert info["invalid_action"] and info["action"] == "skip"
    fb.step(READ)
    _, _, done, _, info = fb.step(READ)
    assert info["invalid_action"] and info["action"] == "stop" and done
    # with masking, no request overruns a budget that covers the cheapest answer
    env = AnytimeEnv(toy, budget="uniform:0.13")
    rng = np.random.default_rng(0)
    for _ in range(200):
        _, infos, _ = _random_episode(env, rng)
        assert infos[-1]["overrun"] == 0.0


def test_rewards_sum_to_outcome_minus_overrun(toy):
    env = AnytimeEnv(toy, budget="uniform", lam=2.0, mask_over_budget=False)
    rng = np.random.default_rng(2)
    env.reset(seed=3)
    for _ in range(300):
        _, infos, rews = _random_episode(env, rng)
        last = infos[-1]
        assert sum(rews) == pytest.approx(float(last["correct"]) - 2.0 * last["overrun"], abs=1e-9)
        assert last["overrun"] == pytest.approx(max(0.0, last["total_cost"] - last["budget"]), abs=1e-12)


def test_bad_configs(toy):
    for kw, err in ((dict(mode="batch"), ConfigError), (dict(bucket=True), ConfigError), (dict(lam=-1.0), ConfigError),
                    (dict(cost_unit="latency"), ConfigError), (dict(invalid_action="ignore"), ConfigError),
                    (dict(budget="fixed:1.5"), ConfigError), (dict(budget="nope"), ConfigError),
                    (dict(episode_length=0, mode="stream"), ConfigError), (dict(obs_format="image"), ConfigError)):
        with pytest.raises(err):
            AnytimeEnv(toy, **kw)
    with pytest.raises(ConfigError, match="at most one"):
        AnytimeEnv(toy, table_path="x.npz")  # two sources (none: the shipped reference table, see test_gym_tooling)
    with pytest.raises(ConfigError, match="action_type"):
        AnytimeEnv(toy, action_type="mask")
    with pytest.raises(TableFormatError, match="per-block"):
        AnytimeEnv(make_toy_table(50))  # no per-block breakdown
    sub = dataclasses.replace(toy, pred=toy.pred[:, 1:], loss=toy.loss[:, 1:], conf=toy.conf[:, 1:],
                              plan_masks=toy.plan_masks[1:], plan_macs=toy.plan_macs[1:])
    with pytest.raises(TableFormatError, match="truncation"):
        AnytimeEnv(sub)  # plan 0 missing: a read right after the stem has no outcome
    wrong = dataclasses.replace(toy, meta={**toy.meta, "macs": {**toy.meta["macs"], "fc": 999}})
    with pytest.raises(TableFormatError, match="add up"):
        AnytimeEnv(wrong)
    env = AnytimeEnv(toy)
    with pytest.raises(ConfigError):
        env.reset(options={"sample": 10**6})
    with pytest.raises(ConfigError):
        env.reset(options={"budget": 0.0})
    with pytest.raises(Exception, match="reset"):
        AnytimeEnv(toy).step(STOP)


def _drive(env, seed, steps, rng_seed):
    rng = np.random.default_rng(rng_seed)
    obs, _ = env.reset(seed=seed)
    out = []
    for _ in range(steps):
        a = int(rng.choice(np.flatnonzero(env.action_masks())))
        obs, r, done, _, info = env.step(a)
        out.append((r, info["cost"], info["sample"], info["budget"], float(obs["costs"][0])))
        if done:
            obs, _ = env.reset()
    return out


def test_same_seed_same_numbers(toy):
    kw = dict(mode="stream", budget="random_walk", bucket={"cap": 2.0}, episode_length=7)
    a = _drive(AnytimeEnv(toy, **kw), 5, 500, 0)
    b = _drive(AnytimeEnv(toy, **kw), 5, 500, 0)
    c = _drive(AnytimeEnv(toy, **kw), 6, 500, 0)
    assert a == b
    assert a != c


@pytest.mark.parametrize("kw", [dict(mode="bandit", budget="uniform"),
                                dict(mode="stream", budget="fixed:0.35", bucket=True, episode_length=9),
                                dict(mode="stream", budget="periodic", episode_length=6, obs_format="flat")])
def test_vec_env_equals_independent_envs(toy, kw):
    n, steps = 6, 600
    venv = make_anytime_vec_env(toy, n, seed=11, **kw)
    singles = [AnytimeEnv(toy, **kw) for _ in range(n)]
    vobs = venv.reset()
    sobs = [e.reset(seed=11 + i)[0] for i, e in enumerate(singles)]
    rng = np.random.default_rng(0)
    flat = kw.get("obs_format") == "flat"

    def same_obs(vo, so):
        if flat:
            np.testing.assert_array_equal(vo, np.stack(so))
        else:
            for k in vo:
                np.testing.assert_array_equal(vo[k], np.stack([o[k] for o in so]))

    same_obs(vobs, sobs)
    for _ in range(steps):
        masks = venv.action_masks()
        np.testing.assert_array_equal(masks, np.stack([e.action_masks() for e in singles]))
        acts = np.array([rng.choice(np.flatnonzero(m)) for m in masks])
        vobs, vr, vd, vinfo = venv.step(acts)
        sobs = []
        for i, e in enumerate(singles):
            o, r, d, _, info = e.step(int(acts[i]))
            assert vr[i] == pytest.approx(r, abs=1e-6) and vd[i] == d
            assert vinfo[i]["cost"] == info["cost"] and vinfo[i]["sample"] == info["sample"]
            if d:
                term = vinfo[i]["terminal_observation"]
                np.testing.assert_array_equal(term if flat else term["costs"], o if flat else o["costs"])
                o, _ = e.reset()
            sobs.append(o)
        same_obs(vobs, sobs)


def test_vec_env_errors_and_sb3_interface(toy):
    venv = AnytimeVecEnv(toy, 3, budget="fixed:0.3")
    with pytest.raises(Exception, match="reset"):
        venv.step(np.zeros(3, dtype=int))
    venv.reset()
    venv.step(np.full(3, READ))
    with pytest.raises(ActionError):
        venv.step(np.full(3, READ))
    with pytest.raises(ActionError):
        venv.step(np.zeros(2, dtype=int))
    assert len(venv.env_method("action_masks")) == 3
    with pytest.raises(ConfigError):
        AnytimeVecEnv(toy, 0)


def test_live_equals_table_tiny_backbone():
    torch = pytest.importorskip("torch")
    from _tiny_backbones import TinyResNet

    from adainf_env.envs.anytime.env import AnytimeLiveRunner
    from adainf_env.envs.plan.env import LiveSource
    from adainf_env.tables.builder import build_table

    model = TinyResNet(num_blocks=4, width=4, seed=3)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8)
    labels = rng.integers(0, model.num_classes, 6)
    table = build_table(model, imgs, labels, sample_index=np.arange(6), batch_size=6, progress=False)
    tenv = AnytimeEnv(table, budget="fixed:1.0")
    lenv = AnytimeEnv(live=LiveSource(model, imgs, labels), budget="fixed:1.0")
    counter = AnytimeLiveRunner(LiveSource(model, imgs, labels), count_macs=True)
    lenv._live = counter  # same backbone, counting every MAC the live episode executes
    full = counter.full_macs
    pick = np.random.default_rng(4)
    with torch.no_grad():
        for ep in range(30):
            s = ep % 6
            counter.macs = 0
            tenv.reset(options={"sample": s})
            lenv.reset(options={"sample": s})
            done = False
            while not done:
                m = tenv.action_masks()
                assert (m == lenv.action_masks()).all()
                a = int(pick.choice(np.flatnonzero(m)))
                _, rt, done, _, it = tenv.step(a)
                _, rl, done_l, _, il = lenv.step(a)
                assert done == done_l and it["cost"] == pytest.approx(il["cost"], abs=1e-12)
                if it["read"]:
                    assert it["read_pred"] == il["read_pred"]
                    assert it["read_conf"] == pytest.approx(il["read_conf"], abs=1e-4)
            assert rt == rl and it["plan"] == il["plan"]
            # the live runner executed exactly the MACs the env charged: nothing computed twice, nothing for free
            assert counter.macs == pytest.approx(il["total_cost"] * full, rel=1e-9)
