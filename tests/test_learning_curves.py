"""Learning curves (agents.evaluation.learning_curves): histories → curves, intervals over seeds, the files written,
and compare_schedulers.py writing them for a tiny real run."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from adainf_env.errors import ConfigError
from adainf_env.tables.outcomes import save_table
from adainf_env.tables.toy import make_toy_table
from agents.evaluation.intervals import bootstrap_ci
from agents.evaluation.learning_curves import (CSV_COLUMNS, aggregate_curves, curve_from_history, learner_curve,
                                               write_learning_curves)

ROOT = Path(__file__).resolve().parents[1]


def _sb3_history(scores, costs, every=100):
    return [{"timesteps": float(i * every), "val_score": s, "mean_cost": c} for i, (s, c) in enumerate(zip(scores, costs))]


def test_histories_of_each_learner_family_become_curves():
    sb3 = curve_from_history(_sb3_history([0.5, 0.6], [0.4, 0.5]), name="ppo")
    assert sb3["unit"] == "env_steps" and sb3["metric"] == "bandit"
    assert sb3["points"] == [(0.0, 0.5, 0.4), (100.0, 0.6, 0.5)]
    torch_h = [{"epoch": 0.0, "env_steps": 0.0, "val_score": 0.4, "mean_cost": 0.3},
               {"epoch": 1.0, "env_steps": 800.0, "val_score": 0.7, "mean_cost": 0.35, "loss": 1.0}]
    assert curve_from_history(torch_h, name="hinge")["points"][1] == (800.0, 0.7, 0.35)
    old = [{"epoch": 2.0, "val_score": 0.7}]  # no env_steps: epochs × fit rows, or epochs
    (step, acc, cost), = curve_from_history(old, name="hinge", fit_rows=50)["points"]
    assert (step, acc) == (100.0, 0.7) and math.isnan(cost)  # mean cost not recorded: NaN
    assert curve_from_history(old, name="hinge")["unit"] == "epochs"
    anytime = curve_from_history([{"step": 0, "bandit": [0.2, 0.4], "stream": [0.9], "score": 1.2},
                                  {"step": 5, "bandit": [0.4, 0.6], "stream": [0.9], "score": 1.4}],
                                 name="anytime_reinforce", env="anytime")
    assert anytime["metric"] == "bandit" and anytime["unit"] == "updates"
    np.testing.assert_allclose([p[1] for p in anytime["points"]], [0.3, 0.5])
    stage = curve_from_history([{"step": 10, "stream": [0.6, 0.8], "score": 0.7}], name="anytime_ppo",
                               env="anytime")
    assert stage["metric"] == "stream" and stage["unit"] == "env_steps" and stage["points"][0][1] == pytest.approx(0.7)
    # lagrangian selects by BCE: no held-out accuracy, no curve; baselines have no history
    assert curve_from_history([{"epoch": 0.0, "val_bce": 0.3}], name="lagrangian") is None
    assert learner_curve(object(), "lut", "plan") is None
    with pytest.raises(ConfigError, match="env must be"):
        curve_from_history([], name="x", env="both")
    with pytest.raises(ConfigError, match="without a step"):
        curve_from_history([{"val_score": 0.5}], name="ppo")


def test_intervals_are_rliable_bootstrap_over_seeds_at_common_steps():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.5, 0.9, size=(3, 4))
    costs = rng.uniform(0.2, 0.8, size=(3, 4))
    curves = [curve_from_history(_sb3_history(scores[s], costs[s]), name="ppo") for s in range(3)]
    # a seed stopped early (time limit): only the steps every seed reached are aggregated
    curves.append(curve_from_history(_sb3_history([0.1, 0.2], [0.1, 0.1]), name="a2c"))
    curves.append(curve_from_history(_sb3_history([0.3], [0.2]), name="a2c"))
    rows = aggregate_curves(curves)
    ppo = [r for r in rows if r["scheduler"] == "ppo"]
    assert [r["step"] for r in ppo] == [0.0, 100.0, 200.0, 300.0] and all(r["n_seeds"] == 3 for r in ppo)
    for j, r in enumerate(ppo):
        assert r["accuracy_mean"] == pytest.approx(scores[:, j].mean())
        assert (r["accuracy_lo"], r["accuracy_hi"]) == pytest.approx(bootstrap_ci(scores[:, j]))
        assert r["accuracy_lo"] <= r["accuracy_mean"] <= r["accuracy_hi"]
        assert scores[:, j].min() - 1e-12 <= r["accuracy_lo"] and r["accuracy_hi"] <= scores[:, j].max() + 1e-12
        assert (r["mean_cost_lo"], r["mean_cost_hi"]) == pytest.approx(bootstrap_ci(costs[:, j]))
    a2c = [r for r in rows if r["scheduler"] == "a2c"]
    assert [r["step"] for r in a2c] == [0.0] and a2c[0]["accuracy_mean"] == pytest.approx(0.2)
    one = aggregate_curves([curve_from_history(_sb3_history([0.7], [0.5]), name="dqn")])[0]
    assert one["accuracy_lo"] == one["accuracy_hi"] == one["accuracy_mean"] == 0.7  # one seed: no interval
    mixed = [curve_from_history(_sb3_history([0.5], [0.5]), name="hinge"),
             curve_from_history([{"epoch": 1.0, "val_score": 0.5}], name="hinge")]
    with pytest.raises(ConfigError, match="mix units"):
        aggregate_curves(mixed)


def test_real_learners_write_csv_figure_and_tensorboard(tmp_path):
    from agents.registry import make_scheduler

    table = make_toy_table(600, seed=0)
    curves = []
    for seed in (0, 1):
        ppo = make_scheduler("ppo", total_timesteps=1024, n_envs=16, eval_every=2,
                             algo_kwargs={"batch_size": 128}).fit(table, seed=seed)
        hinge = make_scheduler("hinge", epochs=3, progress=False).fit(table, seed=seed)
        curves += [learner_curve(ppo, "ppo", "plan"), learner_curve(hinge, "hinge", "plan"),
                   learner_curve(make_scheduler("lut").fit(table), "lut", "plan")]
    files = write_learning_curves(curves, tmp_path, tensorboard_dir=tmp_path / "tb")
    assert set(files) == {"learning_curves.csv", "learning_curves.png"}
    assert (tmp_path / "learning_curves.png").stat().st_size > 0
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    with open(tmp_path / "learning_curves.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert {r["scheduler"] for r in rows} == {"ppo", "hinge"}  # lut has no fit history
    hinge = [r for r in rows if r["scheduler"] == "hinge"]
    # the untrained policy (step 0) and every epoch; env steps = epochs × fit rows (600 − 20 % held out)
    assert [float(r["step"]) for r in hinge] == [0.0, 480.0, 960.0, 1440.0]
    ppo = [r for r in rows if r["scheduler"] == "ppo"]
    assert float(ppo[0]["step"]) == 0.0 and float(ppo[-1]["step"]) >= 1024
    for r in rows:
        assert r["n_seeds"] == "2" and r["unit"] == "env_steps" and r["metric"] == "bandit"
        assert float(r["accuracy_lo"]) <= float(r["accuracy_mean"]) <= float(r["accuracy_hi"])
        assert 0.0 < float(r["mean_cost_mean"]) <= 1.0
    # no learner → header only, no figure
    files = write_learning_curves([None, None], tmp_path / "empty")
    assert set(files) == {"learning_curves.csv"}
    assert (tmp_path / "empty" / "learning_curves.csv").read_text().strip() == ",".join(CSV_COLUMNS)


def test_compare_schedulers_writes_learning_curves(tmp_path):
    sys.path.insert(0, str(ROOT / "experiments"))
    import compare_schedulers as cs

    d = tmp_path / "tables"
    d.mkdir()
    save_table(make_toy_table(600, seed=0, split="calib"), d / "table_calib.npz")
    save_table(make_toy_table(600, seed=1, split="test"), d / "table_test.npz")
    out = tmp_path / "run"
    cs.main(["--table-dir", str(d), "--out", str(out), "--schedulers", "lut", "hinge", "--no-anytime", "--seeds", "2",
             "--bandit-budgets", "0.5", "--stream-budgets", "0.5", "--num-streams", "2", "--horizon", "10",
             "--scheduler-kwargs", '{"hinge": {"epochs": 2}}', "--no-progress"])
    with open(out / "learning_curves.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["scheduler"], float(r["step"]), r["n_seeds"]) for r in rows] == \
        [("hinge", 0.0, "2"), ("hinge", 480.0, "2"), ("hinge", 960.0, "2")]
    assert (out / "learning_curves.png").stat().st_size > 0
