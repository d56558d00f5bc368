"""The benchmark scripts run end to end (tiny settings) and end with the JSON line the README quotes.

Speed targets live in the scripts' printed numbers, never in assertions here: these tests check the scripts work and
report the keys they promise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _last_json(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_bench_env_reports_ratio_and_vec_rate(tmp_path):
    from adainf_env.tables.toy import toy_anytime_table
    from adainf_env.tables.outcomes import save_table

    # The toy with a per-block cost breakdown: the anytime part of the benchmark charges each block and read.
    table = save_table(toy_anytime_table(200, seed=0), tmp_path / "toy.npz")
    res = _last_json(["benchmarks/bench_env.py", "--table", str(table), "--num-envs", "8", "--seconds", "0.2"])
    assert res["single_vs_cartpole"] > 0 and res["vec_steps_per_s"] > 0 and res["gym_vector_steps_per_s"] > 0
    assert res["anytime_single_steps_per_s"] > 0 and res["anytime_gym_vector_steps_per_s"] > 0


def test_bench_table_prefix_sharing_matches_per_plan(tmp_path):
    res = _last_json(["benchmarks/bench_table.py", "--num-images", "2", "--batch-size", "2", "--threads", "1",
                      "--shared", str(tmp_path / "absent")])
    assert res["identical_pred"] is True and res["speedup"] > 0 and res["num_plans"] == 256
