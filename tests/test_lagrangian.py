"""The price-conditioned (Lagrangian) router: its price meets the average budget, it uses the features to beat the
best static mixture under a shared budget, it is deterministic, saves/loads, refuses bad input; the ceiling script
runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adainf_env.errors import ConfigError, TableMismatchError
from adainf_env.tables.toy import make_toy_table


@pytest.fixture(scope="module")
def toy():
    return make_toy_table(1200, seed=0), make_toy_table(1200, seed=1, split="test")


@pytest.fixture(scope="module")
def fitted(toy):
    from agents.learners.lagrangian import LagrangianScheduler

    return LagrangianScheduler(epochs=15, progress=False).fit(toy[0], seed=0)


def test_price_meets_average_budget_and_is_monotone():
    from agents.learners.lagrangian import price_for_budget, route

    rng = np.random.default_rng(0)
    prob = np.sort(rng.random((500, 5)), axis=1)  # dearer plans more often right
    cost = np.array([0.1, 0.2, 0.4, 0.7, 1.0])
    prices = []
    for b in (0.15, 0.3, 0.5, 0.8):
        mu = price_for_budget(prob, cost, b)
        assert cost[route(prob, cost, mu)].mean() <= b + 1e-9
        # the smallest such price: a slightly lower one overspends (unless μ = 0 already fits)
        if mu > 0:
            assert cost[route(prob, cost, mu * 0.98)].mean() > b
        prices.append(mu)
    assert all(a >= b for a, b in zip(prices, prices[1:]))  # more budget → lower price
    limit = np.full(500, 0.25)
    assert (cost[route(prob, cost, 0.0, limit)] <= 0.25).all()


def test_router_beats_hull_mix_in_shared_stream_on_toy(toy, fitted):
    """On the toy table the features reveal which blocks a sample needs: the router must beat the best static
    (feature-blind) mixture under the same average budget, without overrunning the bucket."""
    from agents.evaluation.harness import evaluate_stream, stream_process_for
    from agents.registry import make_scheduler

    train, test = toy
    floor = float(train.plan_cost().min())
    hull = make_scheduler("hull_mix").fit(train, seed=0)
    for b in (0.3, 0.5):
        kw = dict(shared=True, seed=0, num_streams=10, horizon=100, budget_label=b)
        r = evaluate_stream(fitted, test, stream_process_for("shared", b, floor), **kw)
        h = evaluate_stream(hull, test, stream_process_for("shared", b, floor), **kw)
        assert r["accuracy"] > h["accuracy"] + 0.05, (b, r["accuracy"], h["accuracy"])
        assert r["mean_cost"] <= b + 0.02 and r["overrun_rate"] == 0.0


def test_router_bandit_within_budget_and_beats_random(toy, fitted):
    _, test = toy
    cost = test.plan_cost()
    for b in (0.3, 0.6):
        plans = fitted.select(test.features, np.full(test.num_samples, b))
        assert (cost[plans] <= b + 1e-9).all()
        ok = np.flatnonzero(cost <= b + 1e-12)
        rnd = np.random.default_rng(0).choice(ok, test.num_samples)
        rows = np.arange(test.num_samples)
        assert test.correct[rows, plans].mean() > test.correct[rows, rnd].mean() + 0.05


def test_same_seed_same_numbers_save_load_and_refusals(toy, fitted, tmp_path):
    from agents.registry import load_scheduler
    from agents.learners.lagrangian import LagrangianScheduler

    train, test = toy
    again = LagrangianScheduler(epochs=15, progress=False).fit(train, seed=0)
    a, b = fitted.state_arrays(), again.state_arrays()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    path = fitted.save(tmp_path / "lag.npz")
    loaded = load_scheduler(path, table=test)
    budgets = np.linspace(0.1, 1.0, test.num_samples)
    state = {"avg_budget": np.full(test.num_samples, 0.4), "level": np.linspace(0, 1, test.num_samples), "cap": 1.0}
    np.testing.assert_array_equal(loaded.select(test.features, budgets, state), fitted.select(test.features, budgets,
                                                                                              state))
    with pytest.raises(TableMismatchError):
        load_scheduler(path, table=make_toy_table(100, num_blocks=3, seed=2))
    for bad in ({"val_fraction": 0.0}, {"gain": -1.0}, {"target_level": 2.0}, {"epochs": 0}, {"plans": "best"}):
        with pytest.raises(ConfigError):
            LagrangianScheduler(**bad)
    with pytest.raises(ConfigError):
        LagrangianScheduler().select(test.features[:2], np.full(2, 0.5))
    with pytest.raises(ConfigError):
        fitted.select(test.features[:2], np.full(2, 1.5))


def test_stream_ceiling_script_runs(tmp_path, capsys):
    import sys
    from pathlib import Path

    from adainf_env.tables.outcomes import save_table

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from experiments.stream_ceiling import main, roc_auc

    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    save_table(make_toy_table(400, seed=0), tmp_path / "table_calib.npz")
    save_table(make_toy_table(400, seed=1, split="test"), tmp_path / "table_test.npz")
    out = main(["--table-dir", str(tmp_path), "--avg-budget", "0.4", "--seeds", "1", "--num-streams", "4",
                "--horizon", "50", "--epochs", "5", "--out",
                str(tmp_path / "c.json")])
    s = out["settings"]
    assert s["label_router (bound)"]["accuracy_mean"] >= s["lagrangian"]["accuracy_mean"]
    assert json.loads((tmp_path / "c.json").read_text())["avg_budget"] == 0.4
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("{")
