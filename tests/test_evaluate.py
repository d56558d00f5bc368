"""Evaluation harness: record schema, stream bookkeeping, mean ± std, determinism, bad budgets, written files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from adainf_env.errors import ConfigError
from adainf_env.tables.toy import make_toy_table
from agents.evaluation.comparison import run_comparison
from agents.evaluation.harness import RECORD_FIELDS, evaluate_bandit, evaluate_stream
from agents.evaluation.report import markdown_tables, summarize, write_results
from agents.registry import make_scheduler


@pytest.fixture(scope="module")
def toy():
    return make_toy_table(2000, seed=0, split="calib"), make_toy_table(2000, seed=1, split="test")


def _check_record(r, table):
    assert set(RECORD_FIELDS) <= set(r)
    assert r["setting"] in ("bandit", "stream")
    for k in ("accuracy", "overrun_rate"):
        assert 0.0 <= r[k] <= 1.0
    assert 0.0 < r["mean_cost"] <= 1.0 and r["mean_overrun"] >= 0.0
    assert sum(r["plan_hist"].values()) == r["num_requests"]
    assert all(0 <= int(p) < table.num_plans for p in r["plan_hist"])
    json.dumps(r)  # JSON-able as is


def test_bandit_records_match_direct_computation(toy):
    calib, test = toy
    lut = make_scheduler("lut").fit(calib)
    recs = evaluate_bandit(lut, test, [0.25, 0.5, 1.0], seed=7)
    assert [r["budget"] for r in recs] == [0.25, 0.5, 1.0]
    cost = test.plan_cost()
    for r in recs:
        _check_record(r, test)
        assert r["seed"] == 7 and r["variant"] == "fixed" and r["num_requests"] == test.num_samples
        (plan,) = [int(p) for p in r["plan_hist"]]  # a static table: one plan per budget
        assert r["accuracy"] == pytest.approx(test.correct[:, plan].mean())
        assert r["mean_cost"] == pytest.approx(cost[plan]) and cost[plan] <= r["budget"]
        assert r["overrun_rate"] == 0.0


def test_stream_fixed_process_covering_the_table_equals_bandit(toy):
    calib, test = toy
    lut = make_scheduler("lut").fit(calib)
    (b,) = evaluate_bandit(lut, test, [0.5])
    s = evaluate_stream(lut, test, "fixed:0.5", num_streams=40, horizon=50, seed=3)  # 40·50 = every row once
    _check_record(s, test)
    assert s["setting"] == "stream" and s["variant"] == "fixed" and s["budget"] == 0.5
    for k in ("accuracy", "mean_cost", "overrun_rate", "plan_hist"):
        assert s[k] == b[k]


def test_shared_budget_constrains_the_average(toy):
    calib, test = toy
    for name in ("lut", "random", "hull_mix", "oracle"):
        s = make_scheduler(name).fit(calib, seed=0)
        r = evaluate_stream(s, test, "fixed:0.4", shared=True, bucket_cap=1.0, num_streams=20, horizon=100,
                            budget_label=0.4, variant="shared")
        _check_record(r, test)
        if name != "hull_mix":  # these never overrun what is in the bucket, so they cannot spend more than refilled
            assert r["overrun_rate"] == 0.0 and r["mean_cost"] <= 0.4 + 1e-9, (name, r)
        assert r["mean_cost"] <= 0.4 + 0.02, (name, r)
    # a bucket lets the static table save on cheap requests: it beats the per-request budget
    lut = make_scheduler("lut").fit(calib)
    shared = evaluate_stream(lut, test, "fixed:0.4", shared=True, num_streams=20, horizon=100)
    (fixed,) = evaluate_bandit(lut, test, [0.4])
    assert shared["mean_budget"] > 0.4 and shared["accuracy"] >= fixed["accuracy"]


def test_same_seed_same_numbers_other_seed_differs(toy):
    calib, test = toy

    def run(seed):
        s = make_scheduler("random").fit(calib, seed=seed)
        return evaluate_bandit(s, test, [0.5], seed=seed) + [
            evaluate_stream(s, test, "periodic:50", num_streams=5, horizon=40, seed=seed)]

    a, b, c = run(1), run(1), run(2)
    assert a == b
    assert a[0]["accuracy"] != c[0]["accuracy"] and a[1]["plan_hist"] != c[1]["plan_hist"]


def test_summarize_mean_and_std_over_seeds():
    recs = [{"scheduler": "x", "setting": "bandit", "variant": "fixed", "budget": 0.5, "seed": s, "accuracy": a,
             "mean_cost": 0.4, "overrun_rate": o, "is_bound": False} for s, a, o in ((0, 0.5, 0.0), (1, 0.7, 0.2))]
    recs.append({**recs[0], "budget": 0.3, "accuracy": 0.1})
    summ = summarize(recs)
    assert [(s["budget"], s["n_seeds"]) for s in summ] == [(0.5, 2), (0.3, 1)]
    s = summ[0]
    assert s["accuracy_mean"] == pytest.approx(0.6) and s["accuracy_std"] == pytest.approx(np.sqrt(0.02))
    assert s["overrun_rate_mean"] == pytest.approx(0.1) and s["mean_cost_std"] == 0.0
    assert summ[1]["accuracy_std"] == 0.0
    md = markdown_tables(summ)
    assert "60.00±14.14" in md and "| x |" in md
    with pytest.raises(ConfigError, match="lacks"):
        summarize([{"scheduler": "x"}])


@pytest.mark.parametrize("bad", [0.0, -0.2, 1.01, float("nan"), float("inf")])
def test_bad_budgets_are_refused(toy, bad):
    calib, test = toy
    lut = make_scheduler("lut").fit(calib)
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        evaluate_bandit(lut, test, [0.5, bad])
    with pytest.raises(ConfigError):
        evaluate_stream(lut, test, "fixed:0.5", budget_label=bad)
    with pytest.raises(ConfigError):
        run_comparison(["lut"], calib, test, stream_budgets=[bad], progress=False)


def test_stream_and_comparison_argument_errors(toy):
    calib, test = toy
    lut = make_scheduler("lut").fit(calib)
    with pytest.raises(ConfigError, match="horizon"):
        evaluate_stream(lut, test, "fixed:0.5", horizon=0)
    with pytest.raises(ConfigError, match="unknown budget process"):
        evaluate_stream(lut, test, "brownian")
    with pytest.raises(ConfigError, match="unknown scheduler"):
        run_comparison(["lut", "nope"], calib, test, progress=False)
    with pytest.raises(ConfigError, match="not compared"):
        run_comparison(["lut"], calib, test, scheduler_kwargs={"random": {}}, progress=False)


def test_run_comparison_and_written_files(tmp_path, toy):
    calib, test = toy
    names = ["lut", "oracle", "random", "confidence_cascade"]
    recs = run_comparison(names, calib, test, seeds=[0, 1], bandit_budgets=[0.3, 0.7], stream_budgets=[0.5],
                          stream_variants=("shared", "periodic"), num_streams=4, horizon=25, progress=False)
    assert len(recs) == len(names) * 2 * (2 + 2)
    for r in recs:
        _check_record(r, test)
    out = write_results(recs, tmp_path)
    loaded = json.loads((tmp_path / "results.json").read_text())
    assert loaded == json.loads(json.dumps(recs))
    with open(tmp_path / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(recs) and float(rows[0]["accuracy"]) == pytest.approx(recs[0]["accuracy"])
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert "accuracy_vs_budget_bandit_fixed.png" in pngs and "accuracy_vs_budget_stream_shared.png" in pngs
    assert all((tmp_path / p).stat().st_size > 5000 for p in pngs)
    assert "oracle (bound)" in out["markdown"] and "— AIQ**" in out["markdown"]
    aiq = {(r["scheduler"], r["setting"]): r for r in out["aiq"]}
    assert json.loads((tmp_path / "aiq.json").read_text()) == out["aiq"]
    # bandit budgets 0.3 and 0.7: the AIQ is the mean of the two accuracies (trapezoid / range), per seed
    for n in names:
        per_seed = [np.mean([r["accuracy"] for r in recs if r["scheduler"] == n and r["setting"] == "bandit"
                             and r["seed"] == s]) for s in (0, 1)]
        assert aiq[(n, "bandit")]["aiq_mean"] == pytest.approx(np.mean(per_seed))
        assert aiq[(n, "bandit")]["aiq_std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert (n, "stream") not in aiq  # one stream budget: no area
    assert all("accuracy_ci_lo" in s for s in out["summary"])  # 2 seeds → bootstrap intervals
    assert "lut (bound)" not in out["markdown"]
    assert len(out["summary"]) == len(names) * (2 + 2)


def test_aiq_refuses_different_grids_and_named_processes_share_one_figure(tmp_path):
    from agents.evaluation.report import aiq_summary, plot_summary, summarize

    base = {"scheduler": "a", "setting": "bandit", "variant": "fixed", "mean_cost": 0.3, "overrun_rate": 0.0}
    recs = [{**base, "seed": 0, "budget": 0.2, "accuracy": 0.5}, {**base, "seed": 0, "budget": 0.6, "accuracy": 0.7},
            {**base, "seed": 1, "budget": 0.2, "accuracy": 0.5}]
    with pytest.raises(ConfigError, match="different budgets"):
        aiq_summary(recs)
    assert aiq_summary(recs[:2])[0]["aiq_mean"] == pytest.approx(0.6)
    procs = [{**base, "setting": "stream", "variant": v, "seed": 0, "budget": 0.5, "accuracy": a, "process_spec": v}
             for v, a in (("random_walk", 0.6), ("step", 0.7), ("periodic", 0.65))]
    paths = plot_summary(summarize(procs), tmp_path)
    assert [p.name for p in paths] == ["accuracy_by_process_stream.png"]


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    from agents.evaluation.intervals import bootstrap_ci

    vals = [0.70, 0.74, 0.71, 0.69]
    lo, hi = bootstrap_ci(vals)
    # same values, same seed → same interval, every time (rliable resamples from numpy's global generator: a call
    # seeds it for itself and restores it, so other draws are untouched)
    assert {bootstrap_ci(vals) for _ in range(20)} == {(lo, hi)}
    np.random.seed(1)
    before = np.random.random(3)
    np.random.seed(1)
    bootstrap_ci(vals, seed=7)
    assert np.array_equal(np.random.random(3), before)
    assert min(vals) <= lo <= sum(vals) / len(vals) <= hi <= max(vals)
    assert bootstrap_ci([0.5]) == (0.5, 0.5)
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_one_colour_per_scheduler_name_and_overruns_marked(tmp_path):
    """A scheduler keeps its colour whatever else is drawn (one map keyed by name), different names in one figure get
    different colours, and a scheduler over its budget is labelled so in every figure (here the process bars)."""
    from agents.evaluation.report import overrun_label, plot_summary, scheduler_color, scheduler_style, summarize
    from agents.registry import known_schedulers

    a = scheduler_style(["lut", "oracle"])
    b = scheduler_style(["oracle", "hinge", "hull_mix", "lut", "my.module:Mine"])
    assert a["lut"] == b["lut"] and a["oracle"] == b["oracle"] and a["lut"]["color"] == scheduler_color("lut")
    builtin = known_schedulers("plan")
    assert len({scheduler_color(n) for n in builtin}) == len(builtin)
    assert scheduler_color("my.module:Mine") == scheduler_color("my.module:Mine")
    assert overrun_label("hull_mix", 0.27) == "hull_mix [overruns 27 %]" and overrun_label("lut", 0.0) == "lut"

    base = {"setting": "stream", "seed": 0, "budget": 0.5, "mean_cost": 0.5, "process_spec": "step"}
    recs = [{**base, "scheduler": "lut", "variant": "step", "accuracy": 0.6, "overrun_rate": 0.0},
            {**base, "scheduler": "hull_mix", "variant": "step", "accuracy": 0.7, "overrun_rate": 0.4}]
    import matplotlib.pyplot as plt

    texts: list[str] = []
    real = plt.Axes.text
    try:
        plt.Axes.text = lambda self, x, y, s, **kw: texts.append(s) or real(self, x, y, s, **kw)
        plot_summary(summarize(recs), tmp_path)
    finally:
        plt.Axes.text = real
    assert "cost 0.50 [overruns 40 %]" in texts and "cost 0.50" in texts


def test_summary_tables_show_no_spread_for_one_seed(toy):
    calib, test = toy
    lut = make_scheduler("lut").fit(calib, seed=0)
    one = markdown_tables(summarize(evaluate_bandit(lut, test, [0.3, 0.7], seed=0)))
    two = markdown_tables(summarize(evaluate_bandit(lut, test, [0.3, 0.7], seed=0)
                                    + evaluate_bandit(lut, test, [0.3, 0.7], seed=1)))
    assert "±" not in one and "one seed" in one
    assert "±0.00" in two and "mean±std over seeds" in two
