"""Environment throughput on the reference calibration table, in one run.

* single env: ``gymnasium.make("AdaInf/Bandit-v0")`` steps/s (step + reset, as a training loop runs it) next to
  ``gymnasium.make("CartPole-v1")`` measured the same way in the same process (goal: ratio ≥ 1.0);
* ``AdaInfVecEnv`` (the SB3 ``VecEnv``) env-steps/s at 1024 envs with random actions drawn beforehand
  (goal ≥ 5,000,000);
* the same through ``gymnasium.make_vec(id, num_envs=1024, vectorization_mode="vector_entry_point")`` (the Gymnasium
  ``VectorEnv`` that cleanrl-style code gets; goal ≥ 5,000,000);
* the anytime env (``AdaInf/Anytime-v0``, random actions with the invalid-action fallback), in both action modes
  (``block``: run/skip/read/stop; ``stage``: stop or one of the stage menu's entries): single-env steps/s next to
  CartPole-v1 (interleaved as above; goal ≥ 0.5× in block mode), and env-steps/s of ``AnytimeVecEnv`` (SB3) and of
  ``gymnasium.make_vec`` at each of ``--anytime-sizes`` envs (goal ≥ 3,000,000 each at 1024, block mode), the
  Gymnasium one with dict observations (the default) and with ``obs_format="flat"``.

Usage: ``python benchmarks/bench_env.py [--table PATH] [--num-envs 1024] [--seconds 3]
[--anytime-sizes 16,256,1024,4096]`` (default table: the shipped reference calibration table). Last output line:
JSON with ``single_vs_cartpole``, ``vec_steps_per_s``, ``gym_vector_steps_per_s``, the anytime env at ``--num-envs``
in block mode (``anytime_single_steps_per_s``, ``anytime_single_vs_cartpole``, ``anytime_vec_steps_per_s``,
``anytime_gym_vector_steps_per_s``) and ``anytime``: per action mode its single-env rate and ratio and, per size,
``vec``, ``gym_vector`` and ``gym_vector_flat`` env-steps/s; with the 1-minute load average and the CPU count.
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
from adainf_env.envs.anytime.vec_env import AnytimeVecEnv
from adainf_env.tables.reference import reference_table_path
from adainf_env.envs.registration import ANYTIME_ID


@dataclasses.dataclass
class Config:
    table: str = str(reference_table_path("calib"))
    num_envs: int = 1024
    seconds: float = 3.0  # wall time per measurement
    mode: str = "bandit"
    anytime_sizes: str = "16,256,1024,4096"  # numbers of envs of the batched anytime measurements


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


def _interleaved(cart: gym.Env, env: gym.Env, n_actions: int, seconds: float) -> tuple[float, float]:
    """Median steps/s of CartPole-v1 and of ``env`` over three interleaved rounds (load from other processes hits
    both alike)."""
    cp, ev = [], []
    for _ in range(3):
        cp.append(single_steps_per_s(cart, 2, seconds / 3))
        ev.append(single_steps_per_s(env, n_actions, seconds / 3))
    return float(np.median(cp)), float(np.median(ev))


def bench_anytime(cfg: Config, table: Any, cart: gym.Env) -> dict[str, Any]:
    """The anytime env in both action modes: single (gymnasium.make, next to CartPole-v1), and at each size the SB3
    vec env and the Gymnasium vector env (dict and flat observations)."""
    sizes = [int(x) for x in cfg.anytime_sizes.split(",") if x.strip()]
    out: dict[str, Any] = {}
    for action_mode in ("block", "stage"):
        kw = dict(table=table, mode=cfg.mode, invalid_action="fallback", action_mode=action_mode)
        single = gym.make(ANYTIME_ID, **kw)
        n_actions = int(single.action_space.n)
        cart_sps, sps = _interleaved(cart, single, n_actions, cfg.seconds)
        res: dict[str, Any] = {"single_steps_per_s": round(sps), "cartpole_steps_per_s": round(cart_sps),
                               "single_vs_cartpole": round(sps / cart_sps, 3), "batched": {}}
        for n in sizes:
            venv = AnytimeVecEnv(table, n, mode=cfg.mode, invalid_action="fallback", action_mode=action_mode)
            venv.seed(0)
            venv.reset()

            def sb3_step(a: np.ndarray) -> None:
                venv.step_async(a)
                venv.step_wait()

            row = {"vec": round(batched_steps_per_s(sb3_step, n, n_actions, cfg.seconds))}
            for name, fmt in (("gym_vector", "dict"), ("gym_vector_flat", "flat")):
                envs = gym.make_vec(ANYTIME_ID, num_envs=n, vectorization_mode="vector_entry_point", obs_format=fmt,
                                    **kw)
                envs.reset(seed=0)
                row[name] = round(batched_steps_per_s(envs.step, n, n_actions, cfg.seconds))
            res["batched"][str(n)] = row
        out[action_mode] = res
    return out


def main() -> None:
    cfg = _cli()
    table = load_table(cfg.table)
    cart = gym.make("CartPole-v1")
    ada = gym.make("AdaInf/Bandit-v0" if cfg.mode == "bandit" else "AdaInf/Stream-v0", table=table)
    # Interleave the two single-env measurements so that load from other processes hits both alike.
    cart_sps, ada_sps = _interleaved(cart, ada, table.num_plans, cfg.seconds)
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
    anytime = bench_anytime(cfg, table, cart)
    blk = anytime["block"]
    # the headline anytime numbers: block actions, --num-envs envs (measured again if not among the sizes)
    at_n = blk["batched"].get(str(cfg.num_envs))
    if at_n is None:
        at_n = bench_anytime(dataclasses.replace(cfg, anytime_sizes=str(cfg.num_envs)), table, cart)["block"][
            "batched"][str(cfg.num_envs)]
    print(f"CartPole-v1 (gymnasium.make)      : {cart_sps:12,.0f} steps/s")
    print(f"AdaInf/{cfg.mode:6s} (gymnasium.make)  : {ada_sps:12,.0f} steps/s   ratio {ada_sps / cart_sps:.2f}x")
    print(f"AdaInfVecEnv x{cfg.num_envs} ({cfg.mode})       : {vec:12,.0f} env-steps/s")
    print(f"gymnasium.make_vec x{cfg.num_envs} ({cfg.mode}) : {gvec:12,.0f} env-steps/s")
    for action_mode, res in anytime.items():
        print(f"{ANYTIME_ID} {action_mode:5s} (gymnasium.make) : {res['single_steps_per_s']:12,.0f} steps/s   "
              f"ratio {res['single_vs_cartpole']:.2f}x (CartPole {res['cartpole_steps_per_s']:,.0f})")
        for n, row in res["batched"].items():
            print(f"  x{n:>5s}  AnytimeVecEnv {row['vec']:12,.0f}   make_vec {row['gym_vector']:12,.0f}   "
                  f"make_vec flat {row['gym_vector_flat']:12,.0f} env-steps/s")
    print(json.dumps({"single_vs_cartpole": round(ada_sps / cart_sps, 3), "vec_steps_per_s": round(vec),
                      "gym_vector_steps_per_s": round(gvec),
                      "anytime_single_steps_per_s": blk["single_steps_per_s"],
                      "anytime_single_vs_cartpole": blk["single_vs_cartpole"],
                      "anytime_vec_steps_per_s": at_n["vec"], "anytime_gym_vector_steps_per_s": at_n["gym_vector"],
                      "anytime": anytime,
                      "single_steps_per_s": round(ada_sps), "cartpole_steps_per_s": round(cart_sps),
                      "num_envs": cfg.num_envs, "mode": cfg.mode, "table": cfg.table,
                      "loadavg_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
