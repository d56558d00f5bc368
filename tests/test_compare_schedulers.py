"""Smoke tests of experiments/compare_schedulers.py on a toy table directory, its CLI and its bad-input errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adainf_env.errors import ConfigError
from adainf_env.outcomes import save_table
from adainf_env.toy import make_toy_table
from adainf_lab.cli import parse_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
import compare_schedulers as cs  # noqa: E402

TINY = ["--seeds", "2", "--bandit-budgets", "0.3", "0.7", "--stream-budgets", "0.5", "--num-streams", "4",
        "--horizon", "20", "--no-progress"]


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy_tables")
    save_table(make_toy_table(1500, seed=0, split="calib"), d / "table_calib.npz")
    save_table(make_toy_table(1500, seed=1, split="test"), d / "table_test.npz")
    return d


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
    recs = json.loads((out / "results.json").read_text())
    assert len(recs) == 5 * 2 * (2 + 2)
    assert {r["setting"] for r in recs} == {"bandit", "stream"}
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


@pytest.mark.parametrize("extra, match", [
    (["--schedulers", "lut", "ppo9"], "invalid choice 'ppo9'"),
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
    argv = ["--table-dir", str(toy_dir), "--out", str(tmp_path / "r"), *TINY, *extra]
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
    from adainf_env.reference_tables import REFERENCE_DIR

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
