"""The registry's one table (plan env, anytime env): names, views, lazy imports of the learners, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from adainf_env.errors import ConfigError
from adainf_lab.scheduler_options import AnytimeSchedulerName, SchedulerName
from agents.registry import (ANYTIME_BASELINES, ANYTIME_SCHEDULERS, BASELINES, REGISTRY, SCHEDULERS,
                             available_schedulers, check_names, known_schedulers, make_anytime_policy,
                             make_scheduler, markdown_table, names_help, scheduler_env)


def test_one_table_and_its_views():
    assert set(REGISTRY) == set(SCHEDULERS) | set(ANYTIME_SCHEDULERS)
    assert set(ANYTIME_BASELINES) < set(ANYTIME_SCHEDULERS) and not set(ANYTIME_SCHEDULERS) & set(SCHEDULERS)
    assert set(BASELINES) < set(SCHEDULERS)
    assert all(n.startswith("anytime_") for n in ANYTIME_SCHEDULERS)
    assert known_schedulers() == list(SCHEDULERS) and known_schedulers("anytime") == list(ANYTIME_SCHEDULERS)
    assert SCHEDULERS["lut"] == REGISTRY["lut"].target == "agents.baselines.static:LUTScheduler"
    assert set(available_schedulers("all")) == set(REGISTRY)
    assert {scheduler_env(n) for n in SCHEDULERS} == {"plan"}
    assert {scheduler_env(n) for n in ANYTIME_SCHEDULERS} == {"anytime"}
    for name in ANYTIME_SCHEDULERS:  # every registered class answers to its name (checked when resolved)
        assert make_anytime_policy(name).name == name


def test_cli_help_and_checks_come_from_the_registry():
    for alias, env in ((SchedulerName, "plan"), (AnytimeSchedulerName, "anytime")):
        assert get_args(alias)[0] is str  # a string checked against the registry, not a hand-kept Literal
        metavar = get_args(alias)[1].metavar
        assert all(n in metavar for n in known_schedulers(env)) and "MODULE:CLASS" in metavar
        assert all(n in names_help(env) for n in known_schedulers(env))
    assert check_names(("lut", "hinge"), "plan", option="--schedulers") == ("lut", "hinge")
    assert check_names("anytime_lut", "anytime", option="--anytime-schedulers") == ("anytime_lut",)
    with pytest.raises(ConfigError, match=r"--schedulers: 'anytime_lut' is an anytime-env scheduler.*--anytime-sched"):
        check_names(("anytime_lut",), "plan", option="--schedulers")
    with pytest.raises(ConfigError, match="--algo: unknown scheduler 'ppo9'"):
        check_names("ppo9", "plan", option="--algo")


def test_docs_list_the_registry():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "adding_a_scheduler.md").read_text()
    block = doc.split("<!-- registry-table:")[1].split("-->", 1)[1].split("<!-- /registry-table -->")[0]
    assert block.strip() == markdown_table()


def test_wrong_env_and_unknown_names_are_config_errors():
    with pytest.raises(ConfigError, match="use make_anytime_policy"):
        make_scheduler("anytime_lut")
    with pytest.raises(ConfigError, match="use make_scheduler"):
        make_anytime_policy("lut")
    with pytest.raises(ConfigError, match="anytime-env schedulers"):
        scheduler_env("ppo9")
    with pytest.raises(ConfigError, match="env must be"):
        available_schedulers("both")
    with pytest.raises(ConfigError, match="bad arguments"):
        make_anytime_policy("anytime_reinforce", iterationz=3)


def test_anytime_learners_import_only_when_asked_for():
    code = ("import sys\n"
            "from agents.registry import make_anytime_policy\n"
            "make_anytime_policy('anytime_conf_cascade')\n"
            "assert 'stable_baselines3' not in sys.modules and 'agents.learners.anytime_reinforce' not in sys.modules\n"
            "make_anytime_policy('anytime_reinforce')\n"
            "assert 'agents.learners.anytime_reinforce' in sys.modules and 'stable_baselines3' not in sys.modules\n"
            "make_anytime_policy('anytime_ppo')\n"
            "assert 'stable_baselines3' in sys.modules\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
