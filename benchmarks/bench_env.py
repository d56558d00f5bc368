"""Environment throughput on the reference calibration table, in one run.

* single env: ``gymnasium.make("AdaInf/Bandit-v0")`` steps/s (step + reset, as a training loop runs it) next to
  ``gymnasium.make("CartPole-v1")`` measured the same way in the same process (goal: ratio ≥ 1.0);
* ``AdaInfVecEnv`` (the SB3 ``VecEnv``) env-steps/s at 1024 envs with random actions drawn beforehand
  (goal ≥ 5,000,000);
* the same through ``gymnasium.make_vec(id, num_envs=1024, vectorization_mode="vector_entry_point")`` (the Gymnasium
  ``VectorEnv`` that cleanrl-style code gets; goal ≥ 5,000,000);
* the anytime env (``AdaInf/Anytime-v0``, block-by-block steps, random actions with the id's invalid-action
  fallback): single-env steps/s, and env-steps/s of ``AnytimeVecEnv`` (SB3) and of ``gymnasium.make_vec`` at
  ``--num-envs``.

Usage: ``python benchmarks/bench_env.py [--table PATH] [--num-envs 1024] [--seconds 3]`` (default table: the shipped
reference calibration table). Last output line: JSON with ``single_vs_cartpole``, ``vec_steps_per_s``,
``gym_vector_steps_per_s`` and the anytime ``anytime_single_steps_per_s``, ``anytime_vec_steps_per_s``,
``anytime_gym_vector_steps_per_s``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from typing import Any, Callable

import gymnasium as gym
import numpy as np

import adainf_env  # noqa: F401  (registers the ids)
from adainf_env import load_table, make_vec_env
from adainf_env.envs.anytime.core import NUM_ACTIONS
from adainf_env.envs.anytime.vec_env import AnytimeVecEnv
from adainf_env.tables.reference import reference_table_path
from adainf_env.envs.registration import ANYTIME_ID


@dataclasses.dataclass
class Config:
    table: str = str(reference_table_path("calib"))
    num_envs: int = 1024
    seconds: float = 3.0  # wall time per measurement
    mode: str = "bandit"


def _cli() -> Config:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(Config):
        ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    return Config(**vars(ap.parse_args()))


def single_steps_per_s(env: gym.Env, n_actions: int, seconds: float) -> float:
    """Steps/s of a plain training loop: step, reset when the episode ends."""
    env.reset(seed=0)
    actions = [int(a) for a in np.random.default_rng(0).integers(0, n_actions, 4096)]
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        for a in actions:
            _, _, term, trunc, _ = env.step(a)
            if term or trunc:
                env.reset()
        n += len(actions)
        if time.perf_counter() >= deadline:
            break
    return n / (time.perf_counter() - t0)


def batched_steps_per_s(step: Callable[[np.ndarray], Any], num_envs: int, num_actions: int, seconds: float) -> float:
    """Env-steps/s of ``step(actions)`` on ``num_envs`` envs (random actions drawn beforehand; the env is reset)."""
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, num_actions, num_envs) for _ in range(64)]
    for a in batches[:8]:  # warm-up: first permutation / uniform chunk refills happen here
        step(a)
    steps = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        for a in batches:
            step(a)
        steps += len(batches)
        if time.perf_counter() >= deadline:
            break
    return steps * num_envs / (time.perf_counter() - t0)


def bench_anytime(cfg: Config, table: Any) -> dict[str, int]:
    """Steps/s of the anytime env: single (gymnasium.make), SB3 vec env and Gymnasium vector env."""
    kw = dict(table=table, mode=cfg.mode, invalid_action="fallback")
    single = single_steps_per_s(gym.make(ANYTIME_ID, **kw), NUM_ACTIONS, cfg.seconds)
    venv = AnytimeVecEnv(table, cfg.num_envs, mode=cfg.mode, invalid_action="fallback")
    venv.seed(0)
    venv.reset()

    def sb3_step(a: np.ndarray) -> None:
        venv.step_async(a)
        venv.step_wait()

    vec = batched_steps_per_s(sb3_step, cfg.num_envs, NUM_ACTIONS, cfg.seconds)
    envs = gym.make_vec(ANYTIME_ID, num_envs=cfg.num_envs, vectorization_mode="vector_entry_point", **kw)
    envs.reset(seed=0)
    gvec = batched_steps_per_s(envs.step, cfg.num_envs, NUM_ACTIONS, cfg.seconds)
    return {"anytime_single_steps_per_s": round(single), "anytime_vec_steps_per_s": round(vec),
            "anytime_gym_vector_steps_per_s": round(gvec)}


def main() -> None:
    cfg = _cli()
    table = load_table(cfg.table)
    cart = gym.make("CartPole-v1")
    ada = gym.make("AdaInf/Bandit-v0" if cfg.mode == "bandit" else "AdaInf/Stream-v0", table=table)
    # Interleave the two single-env measurements so that load from other processes hits both alike.
    cp, ad = [], []
    for _ in range(3):
        cp.append(single_steps_per_s(cart, 2, cfg.seconds / 3))
        ad.append(single_steps_per_s(ada, table.num_plans, cfg.seconds / 3))
    cart_sps, ada_sps = float(np.median(cp)), float(np.median(ad))
    venv = make_vec_env(table, cfg.num_envs, mode=cfg.mode, seed=0)
    venv.reset()

    def sb3_step(a: np.ndarray) -> None:  # what SB3's collect_rollouts calls
        venv.step_async(a)
        venv.step_wait()

    vec = batched_steps_per_s(sb3_step, cfg.num_envs, table.num_plans, cfg.seconds)
    env_id = "AdaInf/Bandit-v0" if cfg.mode == "bandit" else "AdaInf/Stream-v0"
    envs = gym.make_vec(env_id, num_envs=cfg.num_envs, vectorization_mode="vector_entry_point", table=table)
    envs.reset(seed=0)
    gvec = batched_steps_per_s(envs.step, cfg.num_envs, table.num_plans, cfg.seconds)
    anytime = bench_anytime(cfg, table)
    print(f"CartPole-v1 (gymnasium.make)      : {cart_sps:12,.0f} steps/s")
    print(f"AdaInf/{cfg.mode:6s} (gymnasium.make)  : {ada_sps:12,.0f} steps/s   ratio {ada_sps / cart_sps:.2f}x")
    print(f"AdaInfVecEnv x{cfg.num_envs} ({cfg.mode})       : {vec:12,.0f} env-steps/s")
    print(f"gymnasium.make_vec x{cfg.num_envs} ({cfg.mode}) : {gvec:12,.0f} env-steps/s")
    print(f"{ANYTIME_ID} (gymnasium.make) : {anytime['anytime_single_steps_per_s']:12,.0f} steps/s")
    print(f"AnytimeVecEnv x{cfg.num_envs} ({cfg.mode})      : {anytime['anytime_vec_steps_per_s']:12,.0f} env-steps/s")
    print(f"make_vec {ANYTIME_ID} x{cfg.num_envs} : {anytime['anytime_gym_vector_steps_per_s']:12,.0f} env-steps/s")
    print(json.dumps({"single_vs_cartpole": round(ada_sps / cart_sps, 3), "vec_steps_per_s": round(vec),
                      "gym_vector_steps_per_s": round(gvec), **anytime,
                      "single_steps_per_s": round(ada_sps), "cartpole_steps_per_s": round(cart_sps),
                      "num_envs": cfg.num_envs, "mode": cfg.mode, "table": cfg.table,
                      "loadavg_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
