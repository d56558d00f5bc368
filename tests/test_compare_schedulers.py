"""Smoke tests of experiments/compare_schedulers.py on a toy table directory, its CLI and its bad-input errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _rundirs import without_fit_s
from adainf_env.tables.toy import toy_anytime_table
from adainf_env.errors import ConfigError, TableFormatError
from adainf_env.tables.outcomes import save_table
from adainf_env.tables.toy import make_toy_table
from adainf_lab.cli import parse_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
import compare_schedulers as cs  # noqa: E402

TINY = ["--seeds", "2", "--bandit-budgets", "0.3", "0.7", "--stream-budgets", "0.5", "--num-streams", "4",
        "--horizon", "20", "--no-progress"]


def _table_dir(d, make_table):
    """``d`` holding ``table_calib.npz`` and ``table_test.npz``: 1500 rows each from ``make_table`` (seeds 0 and 1)."""
    save_table(make_table(1500, seed=0, split="calib"), d / "table_calib.npz")
    save_table(make_table(1500, seed=1, split="test"), d / "table_test.npz")
    return d


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    return _table_dir(tmp_path_factory.mktemp("toy_tables"), make_toy_table)


@pytest.fixture(scope="module")
def anytime_dir(tmp_path_factory):
    """Toy tables with a per-block cost breakdown, so both envs run on them."""
    return _table_dir(tmp_path_factory.mktemp("toy_anytime_tables"), toy_anytime_table)


def test_compare_writes_run_directory(toy_dir, tmp_path):
    out = tmp_path / "run"
    res = cs.main(["--table-dir", str(toy_dir), "--out", str(out), "--schedulers", "lut", "oracle", "random",
                   "hull_mix", "confidence_cascade", "--save-schedulers", *TINY])
    for f in ("config.json", "results.json", "results.csv", "summary.json", "summary.csv", "summary.md",
              "accuracy_vs_budget_bandit_fixed.png", "accuracy_vs_budget_stream_shared.png",
              "accuracy_vs_budget_stream_periodic.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert len(list((out / "schedulers").glob("*.npz"))) == 5 * 2
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["seeds"] == 2 and cfg["seeds_used"] == [0, 1] and "commit" in cfg["git"]
    # the toy table has no per-block costs: the anytime schedulers (asked for by default) are left out, with why
    assert cfg["anytime_schedulers"] == [] and "per-block cost" in cfg["unavailable"]["anytime_*"]
    recs = json.loads((out / "results.json").read_text())
    assert len(recs) == 5 * 2 * (2 + 2)
    assert {r["setting"] for r in recs} == {"bandit", "stream"} and {r["env"] for r in recs} == {"plan"}
    assert res["run_dir"] == out and "| oracle (bound) |" in res["markdown"]


def test_default_run_dir_name_and_script_entry_point(toy_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "experiments" / "compare_schedulers.py"), "--table-dir", str(toy_dir),
           "--runs-root", str(tmp_path), "--schedulers", "lut", "random", "--no-tensorboard", "--no-plots", *TINY]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    (run,) = list(tmp_path.iterdir())
    assert run.name.startswith("toy__compare__0__") and (run / "results.json").is_file()
    assert "| lut |" in p.stdout
    bad = subprocess.run(cmd[:2] + ["--table-dir", str(tmp_path / "nowhere")], capture_output=True, text=True,
                         timeout=300, env=env)
    assert bad.returncode == 2 and "table_calib.npz" in bad.stderr and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


ANYTIME = ["--schedulers", "lut", "hull_mix", "oracle", "--anytime-schedulers", "anytime_conf_cascade",
           "anytime_oracle", "anytime_reinforce", "--scheduler-kwargs",
           '{"anytime_reinforce": {"iterations": 6, "requests_per_iter": 256, "eval_every": 3}}']


def test_both_envs_in_one_comparison(anytime_dir, tmp_path):
    out = tmp_path / "run"
    res = cs.main(["--table-dir", str(anytime_dir), "--out", str(out), "--no-tensorboard", *TINY, *ANYTIME])
    recs = json.loads((out / "results.json").read_text())
    env = {r["scheduler"]: r["env"] for r in recs}
    assert env == {"lut": "plan", "hull_mix": "plan", "oracle": "plan", "anytime_conf_cascade": "anytime",
                   "anytime_oracle": "anytime", "anytime_reinforce": "anytime"}
    assert len(recs) == 6 * 2 * (2 + 2)  # schedulers × seeds × (2 bandit budgets + shared + periodic)
    learned = [r for r in recs if r["scheduler"] == "anytime_reinforce"]
    assert all(1 <= r["selected_step"] <= 6 and r["prior"] is False for r in learned)
    assert all("selected_step" not in r for r in recs if r["scheduler"] in ("anytime_conf_cascade", "lut"))
    assert all(r["is_bound"] == r["scheduler"].endswith("oracle") for r in recs)
    # summaries and AIQ keep the two envs apart (one row per scheduler × setting × variant × budget)
    assert len(res["summary"]) == 6 * (2 + 2)
    assert {r["scheduler"] for r in res["aiq"]} == set(env)
    assert "| anytime_oracle (bound) |" in res["markdown"] and "| anytime_reinforce |" in res["markdown"]
    for f in ("anytime_vs_plan.png", "anytime_stopping_behaviour.png", "anytime_traces.npz"):
        assert (out / f).is_file() and (out / f).stat().st_size > 5000, f
    traces = np.load(out / "anytime_traces.npz", allow_pickle=False)
    cost, given = traces["anytime_reinforce__cost"], traces["anytime_reinforce__given"]
    assert cost.shape == given.shape == (4, 20)  # num_streams × horizon, first seed only
    assert (cost <= given + 1e-9).all()  # the bucket is a hard budget: no request spends more than is in it
    proc = traces["anytime_reinforce__proc"]
    assert set(np.unique(proc)) <= {0.2, 0.4} and not any(k.startswith("lut__") for k in traces.files)


def test_workers_give_the_records_of_one_process(anytime_dir, tmp_path):
    """(scheduler, seed) jobs in 2 spawned worker processes: the same records as in this process, except fit_s."""
    argv = ["--table-dir", str(anytime_dir), "--no-tensorboard", "--no-plots", *TINY, "--schedulers", "lut",
            "hull_mix", "confidence_cascade", "random", "--anytime-schedulers", "anytime_conf_cascade",
            "anytime_agree_cascade", "anytime_random"]
    one = cs.main([*argv, "--out", str(tmp_path / "one")])["records"]
    two = cs.main([*argv, "--out", str(tmp_path / "two"), "--workers", "2"])["records"]
    assert len(one) == 7 * 2 * 4 and without_fit_s(one) == without_fit_s(two)
    cfg = json.loads((tmp_path / "two" / "config.json").read_text())
    assert cfg["jobs"] == {"count": 7 * 2, "workers": 2, "world_size": 1}


def test_no_anytime_and_anytime_errors(anytime_dir, toy_dir, tmp_path):
    out = cs.main(["--table-dir", str(anytime_dir), "--out", str(tmp_path / "r"), "--no-anytime", "--no-plots",
                   "--no-tensorboard", *TINY, "--schedulers", "lut"])
    assert {r["scheduler"] for r in out["records"]} == {"lut"}
    with pytest.raises(TableFormatError, match="per-block cost"):  # asked for by name on a table without block costs
        cs.main(["--table-dir", str(toy_dir), "--out", str(tmp_path / "s"), *TINY, "--schedulers", "lut",
                 "--anytime-schedulers", "anytime_lut"])
    assert not (tmp_path / "s").exists()  # checked before the run directory is created


@pytest.mark.parametrize("extra, match", [
    (["--schedulers", "lut", "ppo9"], "--schedulers: unknown scheduler 'ppo9'"),
    (["--anytime-schedulers", "anytime_lut", "lut"], "--anytime-schedulers: 'lut' is a plan-env scheduler"),
    (["--anytime-schedulers", "anytime_lut", "--no-anytime"], "contradict"),
    (["--workers", "0"], "--workers"),
    (["--behaviour-budget", "stairs:3"], "stairs"),
    (["--bandit-budgets", "0.5", "1.5"], r"\(0, 1\]"),
    (["--seeds", "0"], "seeds"),
    (["--scheduler-kwargs", "{not json"], "JSON"),
    (["--scheduler-kwargs", '{"random": {}}', "--schedulers", "lut"], "not compared"),
    (["--horizon", "ten"], "--horizon"),
    (["--cost-unit", "joules"], "invalid choice 'joules'"),
])
def test_bad_input_is_a_config_error(toy_dir, tmp_path, extra, match):
    """Bad input — on the command line or found by the harness — is a ConfigError from main(); the script's entry
    point turns it into one ``error:`` line and exit status 2 (see test_default_run_dir_name_and_script_entry_point)."""
    argv = ["--table-dir", str(toy_dir), "--out", str(tmp_path / "r"), "--no-anytime", *TINY, *extra]
    with pytest.raises(ConfigError, match=match):
        cs.main(argv)


def test_cli_parses_lists_bools_and_optionals(toy_dir):
    cfg = parse_config(cs.CompareConfig, ["--table-dir", str(toy_dir), "--schedulers", "lut", "random", "oracle",
                                          "--no-plots", "--out", "None", "--bucket-cap", "2"], raise_errors=True)
    assert cfg.schedulers == ("lut", "random", "oracle") and cfg.plots is False and cfg.out is None
    assert cfg.bucket_cap == 2.0 and cfg.table_dir == toy_dir and cfg.seeds == 3
    with pytest.raises(ConfigError, match="table-dir"):
        parse_config(cs.CompareConfig, [], raise_errors=True)
    ref = parse_config(cs.CompareConfig, ["--table-dir", "reference"], raise_errors=True)
    from adainf_env.tables.reference import REFERENCE_DIR

    assert ref.table_dir == REFERENCE_DIR


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(["--seeds", "--schedulers", "--bucket-cap", "--plots", "--no-plots",
                                           "--out", "--bandit-budgets", "--table-dir", "--horizon", "--x"]),
                          st.text(max_size=8)), max_size=8))
def test_cli_parsing_raises_only_config_errors(argv):
    if any(a in ("-h", "--help") for a in argv):
        return
    try:
        cfg = parse_config(cs.CompareConfig, argv, raise_errors=True)
    except ConfigError:
        return
    assert isinstance(cfg, cs.CompareConfig) and cfg.seeds >= 1
