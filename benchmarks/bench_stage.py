"""Speed of the anytime env's stage actions (``action_mode="stage"``) next to block actions, on one table.

For each action mode and each of bandit (uniform budgets) and a shared-bucket stream (``fixed:0.3``): single
``AnytimeEnv`` steps/s and requests/s, and ``AnytimeVecEnv`` × ``--num-envs`` env-steps/s and requests/s. Actions are
uniformly random *valid* ones, drawn from ``action_masks()`` at every step (included in the time: a masked policy
pays it too). A stage step runs several block steps on the kernel, so steps/s of the two modes are not comparable;
requests/s are.

Usage: ``python benchmarks/bench_stage.py [--table PATH] [--num-envs 1024] [--seconds 3]`` (default table: the shipped
reference calibration table). Last output line: JSON ``{"<mode>_<setting>_single_steps_per_s": …,
"…_single_requests_per_s": …, "…_vec_steps_per_s": …, "…_vec_requests_per_s": …}`` for mode ∈ {block, stage},
setting ∈ {bandit, stream}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np

from adainf_env.envs.anytime.env import AnytimeEnv
from adainf_env.envs.anytime.vec_env import AnytimeVecEnv
from adainf_env.tables.outcomes import load_table
from adainf_env.tables.reference import reference_table_path

SETTINGS = {"bandit": dict(mode="bandit", budget="uniform"),
            "stream": dict(mode="stream", budget="fixed:0.3", bucket=True)}


@dataclasses.dataclass
class Config:
    table: str = str(reference_table_path("calib"))
    num_envs: int = 1024
    seconds: float = 3.0  # wall time per measurement


def _cli() -> Config:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(Config):
        ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    return Config(**vars(ap.parse_args()))


def _valid_random(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniformly random valid action per row of ``masks`` ([..., A] bool)."""
    return np.argmax(np.where(masks, rng.random(masks.shape), -1.0), axis=-1)


def single_rates(env: AnytimeEnv, seconds: float) -> tuple[float, float]:
    """(steps/s, requests/s) of one env driven by random valid actions, reset when its episode ends."""
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    steps = requests = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(200):
            _, _, term, _, info = env.step(int(_valid_random(env.action_masks(), rng)))
            steps += 1
            requests += info["request_done"]
            if term:
                env.reset()
    dt = time.perf_counter() - t0
    return steps / dt, requests / dt


def vec_rates(venv: AnytimeVecEnv, seconds: float) -> tuple[float, float]:
    """(env-steps/s, requests/s) of the vec env driven by random valid actions (after a short warm-up)."""
    venv.seed(0)
    venv.reset()
    rng = np.random.default_rng(0)
    for _ in range(5):
        venv.step_arrays(_valid_random(venv.action_masks(), rng))
    steps = requests = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, _, data, _ = venv.step_arrays(_valid_random(venv.action_masks(), rng))
        steps += venv.num_envs
        requests += int(data["request_done"].sum())
    dt = time.perf_counter() - t0
    return steps / dt, requests / dt


def main() -> None:
    cfg = _cli()
    table = load_table(cfg.table)
    out: dict[str, int] = {}
    for mode in ("block", "stage"):
        for name, kw in SETTINGS.items():
            s_steps, s_req = single_rates(AnytimeEnv(table, action_mode=mode, **kw), cfg.seconds)
            v_steps, v_req = vec_rates(AnytimeVecEnv(table, cfg.num_envs, action_mode=mode, **kw), cfg.seconds)
            tag = f"{mode}_{name}"
            out.update({f"{tag}_single_steps_per_s": round(s_steps), f"{tag}_single_requests_per_s": round(s_req),
                        f"{tag}_vec_steps_per_s": round(v_steps), f"{tag}_vec_requests_per_s": round(v_req)})
            print(f"{tag:13s} AnytimeEnv {s_steps:10,.0f} steps/s {s_req:9,.0f} requests/s | AnytimeVecEnv "
                  f"x{cfg.num_envs} {v_steps:12,.0f} env-steps/s {v_req:11,.0f} requests/s", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
