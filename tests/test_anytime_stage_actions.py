"""Stage actions of the anytime env (``action_mode="stage"``, :mod:`adainf_env.envs.anytime.stages`): the menu's
costs are the kernel's, masks hide absent and unaffordable entries, and every stage episode equals the block episode
of the same RUN/SKIP/READ/STOP actions (costs, rewards, outcomes) in bandit, stream and bucket modes."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from adainf_env.envs.anytime.actions import AnytimeTable, READ, RUN, SKIP, STOP
from adainf_env.envs.anytime.core import RequestBatch
from adainf_env.tables.toy import toy_anytime_table
from adainf_env.envs.anytime.env import AnytimeEnv
from adainf_env.envs.anytime.stages import STAGE_STOP, StageBatch, StageTree, script_costs
from adainf_env.plans import top_block
from adainf_env.envs.anytime.vec_env import AnytimeVecEnv, make_anytime_vec_env
from adainf_env.envs.core import ActionError
from adainf_env.envs.registration import ANYTIME_ID
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
    from adainf_env.plans import codes_from_masks

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


# ---------------------------------------------------------------------- the env's action_mode="stage"
def _block_actions(menu: StageTree, node: int, pos: int, k: int, num_blocks: int) -> list[int]:
    """The block actions of stage action ``k`` at menu node ``node`` with block ``pos`` next (read off the menu here,
    independently of StageBatch): RUN/SKIP by the target's bits up to its top block, then READ unless passing the
    last block ended the request."""
    if k == STAGE_STOP:
        return [STOP]
    target = int(menu.code[menu.child[node, k - 1]])
    hi = int(top_block(np.array([target]))[0])
    acts = [RUN if (target >> j) & 1 else SKIP for j in range(pos, hi)]
    return acts + ([READ] if hi < num_blocks else [])


EQUIV = [dict(mode="bandit", budget="uniform"),
         dict(mode="bandit", budget="uniform", mask_over_budget=False, lam=2.0, reward="neg_ce"),
         dict(mode="stream", budget="periodic", episode_length=6),
         dict(mode="stream", budget="fixed:0.35", bucket=True, episode_length=9),
         dict(mode="stream", budget="random_walk", bucket={"cap": 2.0}, episode_length=7, penalty="hard")]


@pytest.mark.parametrize("kw", EQUIV)
def test_stage_episodes_equal_block_episodes(toy, kw):
    """Random masked stage episodes and the block env driven with each stage's RUN/SKIP/READ/STOP actions: the same
    rewards (summed over the stage's block steps), costs, observations, request ends and outcomes."""
    stage, block = AnytimeEnv(toy, action_mode="stage", **kw), AnytimeEnv(toy, **kw)
    menu = stage.cfg.menu
    so, _ = stage.reset(seed=3)
    bo, _ = block.reset(seed=3)
    rng = np.random.default_rng(7)
    node, requests, stages, reads = 0, 0, 0, 0
    for _ in range(500):
        masks = stage.action_masks()
        assert masks.shape == (menu.num_actions,) and masks[STAGE_STOP]
        k = int(rng.choice(np.flatnonzero(masks)))
        acts = _block_actions(menu, node, int(stage.state.pos[0]), k, toy.num_blocks)
        so, sr, sterm, strunc, sinfo = stage.step(k)
        rew, cost = 0.0, 0.0
        for i, a in enumerate(acts):
            assert block.action_masks()[a], (kw, k, acts)  # an allowed stage is allowed block by block
            bo, br, bterm, btrunc, binfo = block.step(a)
            rew, cost = rew + br, cost + binfo["cost"]
            assert not binfo["request_done"] or i == len(acts) - 1  # only the stage's last block step may end it
        assert sr == pytest.approx(rew, abs=1e-9) and sinfo["cost"] == pytest.approx(cost, abs=1e-12)
        assert (sterm, strunc) == (bterm, btrunc)
        for key in ("total_cost", "budget", "overrun", "sample", "read", "request_done"):
            assert sinfo[key] == pytest.approx(binfo[key], abs=1e-12), key
        assert sinfo["action"] == ("stop" if k == STAGE_STOP else f"stage_{k}")
        for key in bo:  # every block-mode part is observed alike (stage mode adds "menu")
            np.testing.assert_array_equal(so[key], bo[key], err_msg=key)
        stages += k != STAGE_STOP
        reads += sinfo["read"]
        node = 0 if sinfo["request_done"] else int(menu.child[node, k - 1])
        if sinfo["request_done"]:
            requests += 1
            for key in ("plan", "pred", "correct", "num_reads"):
                assert sinfo[key] == binfo[key], key
        if sterm:
            so, _ = stage.reset()
            bo, _ = block.reset()
            node = 0
    assert requests >= 100 and stages >= 200 and reads >= 300


def test_menu_observation_and_masks(toy):
    env = AnytimeEnv(toy, action_mode="stage", budget="fixed:0.3")
    menu = env.cfg.menu
    k = menu.num_actions - 1
    assert env.action_space == gym.spaces.Discrete(menu.num_actions)
    assert env.observation_space["menu"].shape == (3 * k,)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    for _ in range(200):
        m = env.action_masks()
        inc = menu.inc[env.state.node[0]]
        present = np.isfinite(inc)
        np.testing.assert_allclose(obs["menu"][:k], np.where(present, inc, 0.0), rtol=1e-6)
        np.testing.assert_array_equal(obs["menu"][2 * k:], m[1:])
        assert not (m[1:] & ~present).any()  # absent entries are masked
        assert not m[1:][present & (env.state.spent[0] + inc > 0.3 + COST_TOL)].any()  # unaffordable ones too
        assert env.observation_space.contains(obs)
        obs, _, term, _, _ = env.step(int(rng.choice(np.flatnonzero(m))))
        if term:
            obs, _ = env.reset()
    with pytest.raises(ActionError, match="out of range"):
        env.step(menu.num_actions)
    tight = AnytimeEnv(toy, action_mode="stage", budget="fixed:0.01")  # below every plan: only STOP is allowed
    tight.reset(seed=0)
    np.testing.assert_array_equal(tight.action_masks(), [True] + [False] * k)
    with pytest.raises(ActionError, match="stage action 1 is not allowed"):
        tight.step(1)
    loose = AnytimeEnv(toy, action_mode="stage", budget="fixed:0.01", invalid_action="fallback")
    loose.reset(seed=0)
    _, _, term, _, info = loose.step(1)
    assert info["invalid_action"] and info["action"] == "stop" and term and info["num_reads"] == 1


@pytest.mark.parametrize("mode", ["bandit", "stream"])
def test_gymnasium_and_sb3_checkers(toy, mode):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    kw = dict(mode=mode, budget="fixed:0.6", episode_length=5, action_mode="stage", invalid_action="fallback")
    if mode == "stream":
        kw["bucket"] = True
    check_env(gym.make(ANYTIME_ID, table=toy, **kw).unwrapped)
    sb3_check_env(AnytimeEnv(toy, **kw))
    sb3_check_env(AnytimeEnv(toy, obs_format="flat", **kw))


def _parts(obs):
    """An observation's arrays by name (a flat observation is one part)."""
    return obs if isinstance(obs, dict) else {"flat": obs}


@pytest.mark.parametrize("kw", [dict(mode="stream", budget="fixed:0.35", bucket=True, episode_length=4),
                                dict(mode="bandit", budget="uniform", obs_format="flat", mask_over_budget=False,
                                     reward="neg_ce")])
def test_vec_envs_equal_independent_stage_envs(toy, kw):
    """AnytimeVecEnv (StageBatch) and gymnasium.make_vec of stage envs equal N single stage envs (StageOne) driven
    with the same actions: observations, masks, rewards, ends, costs and action names."""
    n, kw = 5, {**kw, "action_mode": "stage"}
    venv = make_anytime_vec_env(toy, n, seed=11, **kw)
    gvec = gym.make_vec(ANYTIME_ID, num_envs=n, vectorization_mode="vector_entry_point", table=toy, **kw)
    singles = [AnytimeEnv(toy, **kw) for _ in range(n)]
    vobs = venv.reset()
    gobs, _ = gvec.reset(seed=11)
    sobs = [e.reset(seed=11 + i)[0] for i, e in enumerate(singles)]
    rng = np.random.default_rng(0)
    for _ in range(150):
        for key, v in _parts(vobs).items():
            np.testing.assert_array_equal(v, np.stack([_parts(o)[key] for o in sobs]), err_msg=key)
            np.testing.assert_array_equal(_parts(gobs)[key], v, err_msg=key)
        masks = venv.action_masks()
        np.testing.assert_array_equal(masks, np.stack([e.action_masks() for e in singles]))
        np.testing.assert_array_equal(gvec.unwrapped.action_masks(), masks)
        acts = np.array([rng.choice(np.flatnonzero(m)) for m in masks])
        vobs, vr, vd, vinfo = venv.step(acts)
        gobs, gr, gterm, _, _ = gvec.step(acts)
        np.testing.assert_array_equal(gr, vr)
        np.testing.assert_array_equal(gterm, vd)
        sobs = []
        for i, e in enumerate(singles):
            o, r, d, _, info = e.step(int(acts[i]))
            assert vr[i] == pytest.approx(r, abs=1e-6) and vd[i] == d
            assert vinfo[i]["cost"] == info["cost"] and vinfo[i]["action"] == info["action"]
            sobs.append(e.reset()[0] if d else o)


def test_bad_options(toy):
    for bad, match in ((dict(action_mode="stages"), "'stages'"),
                       (dict(stage_menu={"first_pool": 4}), "needs action_mode='stage'"),
                       (dict(action_mode="stage", stage_menu={"first_pool": 1}), "first_pool must be an integer ≥ 2"),
                       (dict(action_mode="stage", stage_menu={"max_stage": 2}), "'max_stage'"),
                       (dict(action_mode="stage", stage_menu="big"), "'big'")):
        with pytest.raises(ConfigError, match=match):
            AnytimeEnv(toy, **bad)
        with pytest.raises(ConfigError, match=match):
            AnytimeVecEnv(toy, 2, **bad)
    other = toy_anytime_table(200, num_blocks=3, seed=0)
    menu3 = StageTree(AnytimeTable.from_table(other), other, first_pool=4, ext_pool=2, max_stages=2)
    with pytest.raises(ConfigError, match="3-block plans, the table has 4"):
        AnytimeEnv(toy, action_mode="stage", stage_menu=menu3)


def test_menu_from_calibration_serves_test_rows(toy):
    """A menu built from the calibration table drives an env over other rows; dict sizes shape the menu."""
    test = toy_anytime_table(300, num_blocks=4, seed=1, split="test")
    menu = StageTree(AnytimeTable.from_table(toy), toy, first_pool=3, ext_pool=2, max_stages=2)
    env = AnytimeEnv(test, action_mode="stage", stage_menu=menu)
    assert env.cfg.menu is menu and env.action_space.n == 4
    small = AnytimeEnv(toy, action_mode="stage", stage_menu={"first_pool": 3, "ext_pool": 2, "max_stages": 2})
    np.testing.assert_array_equal(small.cfg.menu.code, menu.code)
    np.testing.assert_array_equal(small.cfg.menu.child, menu.child)


def _drive(env, seed, steps):
    out = []
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        _, r, term, _, info = env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
        out.append((r, info["cost"], info["sample"], info["action"]))
        if term:
            env.reset()
    return out


def test_same_seed_same_numbers(toy):
    kw = dict(mode="stream", budget="random_walk", bucket={"cap": 2.0}, episode_length=7, action_mode="stage")
    a = _drive(AnytimeEnv(toy, **kw), 5, 300)
    assert a == _drive(AnytimeEnv(toy, **kw), 5, 300)
    assert a != _drive(AnytimeEnv(toy, **kw), 6, 300)


def test_maskable_ppo_learns_stage_actions():
    """A short MaskablePPO run on stage actions (the env's action_masks()) beats uniformly random valid stages on
    held-out toy rows by a wide margin (bandit, uniform budgets; reward = 1[correct])."""
    import torch
    from sb3_contrib import MaskablePPO

    calib, test = toy_anytime_table(1500, seed=0), toy_anytime_table(1500, seed=1, split="test")
    menu = StageTree(AnytimeTable.from_table(calib), calib, first_pool=16, ext_pool=4, max_stages=3)
    kw = dict(action_mode="stage", stage_menu=menu, budget="uniform", obs_format="flat")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        venv = AnytimeVecEnv(calib, 16, **kw)
        venv.seed(0)
        model = MaskablePPO("MlpPolicy", venv, n_steps=64, batch_size=256, n_epochs=4, learning_rate=3e-3,
                            gamma=1.0, seed=0, verbose=0)
        model.learn(4096)
    finally:
        torch.set_num_threads(threads)

    def accuracy(policy, n=2000):
        env = AnytimeVecEnv(test, 64, **kw)
        env.seed(5)
        obs = env.reset()
        rng = np.random.default_rng(5)
        total, ended = 0.0, 0
        while ended < n:
            m = env.action_masks()
            if policy is None:
                a = np.argmax(np.where(m, rng.random(m.shape), -1.0), axis=1)
            else:
                a, _ = policy.predict(obs, action_masks=m, deterministic=True)
            obs, r, done, _ = env.step(a)
            total, ended = total + float(r[done].sum()), ended + int(done.sum())
        return total / ended

    learned, rand = accuracy(model), accuracy(None)
    assert learned > rand + 0.1, (learned, rand)


def test_render_names_stage_actions(toy):
    env = AnytimeEnv(toy, action_mode="stage", budget="fixed:0.6", render_mode="ansi")
    env.reset(seed=0)
    env.step(1)
    assert "stage_1" in env.render()
    env = AnytimeEnv(toy, action_mode="stage", budget="fixed:0.6", render_mode="rgb_array")
    env.reset(seed=0)
    env.step(STAGE_STOP)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3
    venv = AnytimeVecEnv(toy, 2, action_mode="stage", budget="fixed:0.6", render_mode="ansi")
    venv.reset()
    venv.step(np.array([STAGE_STOP, 1]))
    assert " stop " in venv.render_one(0) and " stage_1 " in venv.render_one(1)


@pytest.mark.parametrize("mask_over_budget", [True, False])
def test_stage_one_equals_stage_batch(toy, menu, mask_over_budget):
    """The single env's fast path (StageOne, Python scalars) takes the same stages at the same costs as StageBatch:
    masks, menu observations, costs, ends, reads and the request state after each stage, bit for bit."""
    from adainf_env.envs.anytime.stages import StageOne

    at = AnytimeTable.from_table(toy)
    rng = np.random.default_rng(2)
    one, sb = StageOne(at, menu, mask_over_budget=mask_over_budget), StageBatch(1, at, menu,
                                                                                mask_over_budget=mask_over_budget)
    for _ in range(150):
        row, budget = int(rng.integers(0, toy.num_samples)), float(rng.uniform(0.05, 1.2))
        one.start(row, budget)
        sb.start(np.array([0]), np.array([row]), np.array([budget]))
        while sb.active[0]:
            m = sb.masks()[0]
            assert one.masks() == m.tolist() and not one.valid(len(m))
            np.testing.assert_array_equal(np.array(one.menu_values(), np.float32), sb.menu_observation()[0])
            a = int(rng.choice(np.flatnonzero(m)))
            res = sb.step(np.array([a]), at.read_table)
            assert one.step(a) == (res.cost[0], res.ended[0], res.read[0])
            for key in ("spent", "pos", "code", "fresh", "reads", "answer", "last_conf", "active", "node"):
                assert getattr(one, key) == getattr(sb, key)[0], key
        copy = StageBatch(1, at, menu)
        one.write_to(copy)
        assert copy.node[0] == one.node and copy.spent[0] == one.spent and copy.answer[0] == one.answer


def test_bench_stage_runs(tmp_path):
    """benchmarks/bench_stage.py runs end to end (tiny settings) and ends with its JSON line (speeds are printed,
    never asserted)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from adainf_env.tables.outcomes import save_table

    root = Path(__file__).resolve().parents[1]
    table = save_table(toy_anytime_table(200, seed=0), tmp_path / "toy.npz")
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "benchmarks/bench_stage.py", "--table", str(table), "--num-envs", "8",
                          "--seconds", "0.1"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    for mode in ("block", "stage"):
        for setting in ("bandit", "stream"):
            assert res[f"{mode}_{setting}_vec_requests_per_s"] > 0 and res[f"{mode}_{setting}_single_steps_per_s"] > 0
