"""The registry's two maps (plan env, anytime env): names, lazy imports of the anytime learners, clear errors."""

from __future__ import annotations

import subprocess
import sys
from typing import get_args

import pytest

from adainf_env.errors import ConfigError
from agents.baselines.anytime_policies import make_anytime_policy
from agents.registry import (ANYTIME_BASELINES, ANYTIME_SCHEDULERS, SCHEDULERS, AnytimeSchedulerName,
                             available_schedulers, known_schedulers, make_scheduler, scheduler_env)


def test_anytime_names_are_separate_and_listed():
    assert set(get_args(AnytimeSchedulerName)) == set(ANYTIME_SCHEDULERS)
    assert set(ANYTIME_BASELINES) < set(ANYTIME_SCHEDULERS) and not set(ANYTIME_SCHEDULERS) & set(SCHEDULERS)
    assert all(n.startswith("anytime_") for n in ANYTIME_SCHEDULERS)
    assert known_schedulers() == list(SCHEDULERS) and known_schedulers("anytime") == list(ANYTIME_SCHEDULERS)
    assert set(available_schedulers("all")) == set(SCHEDULERS) | set(ANYTIME_SCHEDULERS)
    assert {scheduler_env(n) for n in SCHEDULERS} == {"plan"}
    assert {scheduler_env(n) for n in ANYTIME_SCHEDULERS} == {"anytime"}
    for name in ANYTIME_SCHEDULERS:  # every registered class answers to its name (checked when resolved)
        assert make_anytime_policy(name).name == name


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
            "from agents.baselines.anytime_policies import make_anytime_policy\n"
            "make_anytime_policy('anytime_conf_cascade')\n"
            "assert 'stable_baselines3' not in sys.modules and 'agents.learners.anytime_reinforce' not in sys.modules\n"
            "make_anytime_policy('anytime_reinforce')\n"
            "assert 'agents.learners.anytime_reinforce' in sys.modules and 'stable_baselines3' not in sys.modules\n"
            "make_anytime_policy('anytime_ppo')\n"
            "assert 'stable_baselines3' in sys.modules\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
