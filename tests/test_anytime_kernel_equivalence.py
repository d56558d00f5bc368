"""The vectorised anytime env reproduces the slow reference (tests/_anytime_reference.py, the implementation before
issue #19) to the last bit: observations, rewards, dones, action masks and infos of the single env, the SB3 vec env
and the Gymnasium vector env, over more than 10,000 random episodes (bandit, stream, token bucket; masked random
actions, and unmasked ones through the invalid-action fallback); and stage actions (issue #20) executed on the new
kernel and on the reference kernel, over more than 16,000 random stage episodes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from _anytime_reference import ReferenceAnytimeEnv, ReferenceAnytimeVecEnv, ReferenceAnytimeVectorEnv
from adainf_env.envs.anytime.actions import NUM_ACTIONS
from adainf_env.tables.toy import toy_anytime_table
from adainf_env.envs.anytime.env import AnytimeEnv
from adainf_env.envs.anytime.gym_vector import AnytimeVectorEnv
from adainf_env.envs.anytime.vec_env import AnytimeVecEnv

# (name, options, random actions masked?) — every mode, budget kind, reward, penalty and observation format
CONFIGS = [
    ("bandit", dict(mode="bandit", budget="uniform"), True),
    ("bandit_soft_ce_flat", dict(mode="bandit", budget="uniform:0.2", mask_over_budget=False, lam=2.0,
                                 reward="neg_ce", obs_format="flat"), True),
    ("bandit_fallback", dict(mode="bandit", budget="fixed:0.3", invalid_action="fallback", penalty="hard",
                             hard_penalty=-0.5), False),
    ("stream_bucket", dict(mode="stream", budget="fixed:0.35", bucket=True, episode_length=7), True),
    ("stream_bucket_rate_walk", dict(mode="stream", budget="random_walk", bucket={"cap": 2.0, "rate": 0.3},
                                     episode_length=5, obs_format="flat", mask_over_budget=False, lam=0.5), True),
    ("stream_periodic", dict(mode="stream", budget="periodic", episode_length=6, penalty="hard"), True),
    ("stream_step_fallback", dict(mode="stream", budget="step:values=0.8/0.2,every=3", episode_length=9,
                                  invalid_action="fallback", bucket=True), False),
]


@pytest.fixture(scope="module")
def tables(calib_table):
    return {"reference": calib_table, "toy": toy_anytime_table(300, num_blocks=5, seed=1)}


def same(a: Any, b: Any, where: str) -> None:
    """``a`` and ``b`` are equal in type and value, recursively (arrays: dtype, shape and every element)."""
    if isinstance(b, dict):
        assert isinstance(a, dict) and sorted(a) == sorted(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in b:
            same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, \
            f"{where}: {getattr(a, 'dtype', type(a))} {getattr(a, 'shape', '')} != {b.dtype} {b.shape}"
        if b.dtype == object:
            for i, (x, y) in enumerate(zip(a.ravel(), b.ravel())):
                same(x, y, f"{where}[{i}]")
        else:
            np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(b, (list, tuple)):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    else:
        assert type(a) is type(b) and (a == b or (a != a and b != b)), f"{where}: {a!r} != {b!r}"


def _actions(rng: np.random.Generator, masks: np.ndarray, masked: bool) -> np.ndarray:
    if not masked:  # anything, even out of range: the fallback substitutes
        return rng.integers(-1, NUM_ACTIONS + 1, len(masks))
    return np.array([rng.choice(np.flatnonzero(m)) for m in masks])


@pytest.mark.parametrize("table_name", ["reference", "toy"])
@pytest.mark.parametrize("name, kw, masked", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_vec_envs_equal_reference(tables, table_name, name, kw, masked):
    """SB3 vec env and Gymnasium vector env, 48 envs × 100 steps each, against the reference."""
    table = tables[table_name]
    n, steps = 48, 100
    new, ref = AnytimeVecEnv(table, n, **kw), ReferenceAnytimeVecEnv(table, n, **kw)
    gnew, gref = AnytimeVectorEnv(n, table=table, **kw), ReferenceAnytimeVectorEnv(table, n, **kw)
    new.seed(3)
    ref.seed(3)
    pin = {"sample": 5, "budget": 0.4}
    new.set_options(pin)
    ref.set_options(pin)
    same(new.reset(), ref.reset(), "reset obs")
    same(new.reset_infos, ref.reset_infos, "reset infos")
    same(gnew.reset(seed=7, options=pin), gref.reset(seed=7, options=pin), "gym reset")
    rng = np.random.default_rng(0)
    episodes = 0
    for t in range(steps):
        masks = ref.action_masks()
        same(new.action_masks(), masks, f"masks t={t}")
        a = _actions(rng, masks, masked)
        same(new.step(a), ref.step(a), f"sb3 step t={t}")
        gmasks = gref.action_masks()
        same(gnew.action_masks(), gmasks, f"gym masks t={t}")
        ga = _actions(rng, gmasks, masked)
        out = gref.step(ga)
        same(gnew.step(ga), out, f"gym step t={t}")
        episodes += int(out[2].sum())
    # episodes of the Gymnasium interface alone (the SB3 one ends about as many): together with the single-env
    # test, the configurations and tables here run well over 10,000 episodes (and many more requests)
    assert episodes >= (1000 if kw["mode"] == "bandit" else 50)


@pytest.mark.parametrize("name, kw, masked", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_single_env_equals_reference(tables, name, kw, masked):
    """The single env (its own fast path) against the reference: 400 bandit episodes or 80 stream episodes (of 5-9
    requests) on each table."""
    for table in tables.values():
        new, ref = AnytimeEnv(table, **kw), ReferenceAnytimeEnv(table, **kw)
        rng = np.random.default_rng(1)
        for ep in range(400 if kw["mode"] == "bandit" else 80):
            opts = {"sample": ep % 17} if ep % 5 == 0 else ({"budget": 0.25} if ep % 7 == 0 else None)
            seed = ep if ep % 40 == 0 else None
            same(new.reset(seed=seed, options=opts), ref.reset(seed=seed, options=opts), f"reset ep={ep}")
            done = False
            while not done:
                masks = ref.action_masks()
                same(new.action_masks(), masks, f"masks ep={ep}")
                a = int(_actions(rng, masks[None], masked)[0])
                out = ref.step(a)
                same(new.step(a), out, f"step ep={ep} a={a}")
                done = out[2]



@pytest.mark.parametrize("mask_over_budget", [True, False])
def test_stage_actions_on_the_new_kernel_equal_the_reference_kernel(tables, mask_over_budget):
    """Stage actions (each a run of RUN/SKIP then READ, :mod:`adainf_env.envs.anytime.stages`) executed on the new
    kernel and on the reference one: the same costs, ends, reads, masks and request state, over thousands of random
    stage episodes per table."""
    from _anytime_reference import RequestBatch as ReferenceBatch
    from adainf_env.envs.anytime.actions import AnytimeTable
    from adainf_env.envs.anytime.stages import StageBatch, stage_menu

    state = ("row", "budget", "pos", "code", "fresh", "chain", "spent", "reads", "last_conf", "prev_conf",
             "last_pred", "prev_pred", "answer", "active", "node")
    for name, table in tables.items():
        at = AnytimeTable.from_table(table)
        tree = stage_menu("stage", None, at, table)
        n = 64
        new = StageBatch(n, at, tree, mask_over_budget=mask_over_budget)
        ref = StageBatch(n, at, tree, mask_over_budget=mask_over_budget)
        object.__setattr__(ref, "blocks", ReferenceBatch(n, at, mask_over_budget=mask_over_budget))
        rng = np.random.default_rng(2)
        everyone = np.arange(n)
        rows, budgets = rng.integers(0, table.num_samples, n), rng.uniform(0.1, 1.0, n)
        new.start(everyone, rows, budgets)
        ref.start(everyone, rows, budgets)
        episodes = 0
        for t in range(300):
            masks = ref.masks()
            same(new.masks(), masks, f"{name} masks t={t}")
            a = _actions(rng, masks, True)
            r_new, r_ref = new.step(a, at.read_table), ref.step(a, at.read_table)
            for k in ("cost", "ended", "read"):
                same(getattr(r_new, k), getattr(r_ref, k), f"{name} {k} t={t}")
            for k in state:
                same(np.asarray(getattr(new, k)), np.asarray(getattr(ref, k)), f"{name} {k} t={t}")
            done = np.flatnonzero(r_ref.ended)
            episodes += done.size
            rows, budgets = rng.integers(0, table.num_samples, done.size), rng.uniform(0.1, 1.0, done.size)
            new.start(done, rows, budgets)
            ref.start(done, rows, budgets)
        assert episodes >= 4000, episodes
