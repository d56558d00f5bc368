"""adainf_lab.cli (tyro-backed config → CLI, one way to fail) and the typed --scheduler.* options."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, get_args

import pytest

from adainf_env.errors import ConfigError
from adainf_lab.cli import config_to_dict, parse_config
from adainf_lab.scheduler_options import SchedulerName, SchedulerOptions
from agents.registry import SCHEDULERS


@dataclasses.dataclass
class _Cfg:
    """A config for the tests."""

    table_dir: Path = dataclasses.field(metadata={"help": "tables"})
    seeds: int = dataclasses.field(default=3, metadata={"help": "number of seeds"})
    mode: Literal["fast", "slow"] = "fast"
    budgets: tuple[float, ...] = (0.3, 0.5)
    out: Path | None = None
    plots: bool = True
    scheduler: SchedulerOptions = dataclasses.field(default_factory=SchedulerOptions)

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be ≥ 1, got {self.seeds}")


def test_parses_types_lists_flags_optionals_and_nested_options():
    cfg = parse_config(_Cfg, ["--table-dir", "x", "--budgets", "0.2", "0.4", "--no-plots", "--out", "None",
                              "--mode", "slow", "--scheduler.n-envs", "16", "--scheduler.hidden", "64", "64"])
    assert cfg.table_dir == Path("x") and cfg.budgets == (0.2, 0.4) and cfg.plots is False and cfg.out is None
    assert cfg.mode == "slow" and cfg.scheduler.n_envs == 16 and cfg.scheduler.hidden == (64, 64)
    assert config_to_dict(cfg)["scheduler"]["hidden"] == [64, 64]  # nested → JSON-able


@pytest.mark.parametrize("argv, match", [
    (["--table-dir", "x", "--seeds", "0"], r"^--seeds must be ≥ 1, got 0$"),  # the config's own error, unchanged
    (["--table-dir", "x", "--seeds", "many"], "command line: .*--seeds"),
    (["--table-dir", "x", "--mode", "medium"], "command line: .*invalid choice 'medium'"),
    (["--seeds", "2"], "command line: .*--table-dir"),  # required option missing
    (["--table-dir", "x", "--nope"], "command line: Unrecognized options: --nope"),
])
def test_bad_input_raises_config_error_on_request(argv, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(_Cfg, argv, raise_errors=True)


def test_bad_input_exits_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(_Cfg, ["--table-dir", "x", "--seeds", "0"])
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: --seeds must be ≥ 1, got 0\n"


def test_help_exits_0_and_shows_choices_and_help_texts(capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(_Cfg, ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "{fast,slow}" in out and "number of seeds" in out and "--scheduler.n-envs" in out


def test_scheduler_names_are_the_registry():
    # a str checked against the registry (agents.registry.check_names); --help lists the registry's names
    assert get_args(SchedulerName)[0] is str
    assert all(n in get_args(SchedulerName)[1].metavar for n in SCHEDULERS)


def test_scheduler_options_map_to_each_schedulers_own_keywords():
    opts = SchedulerOptions(lr=1e-3, hidden=(32,), extra='{"val_fraction": 0.25}')
    assert opts.kwargs_for("ppo") == {"learning_rate": 1e-3, "hidden": [32], "val_fraction": 0.25}
    assert opts.kwargs_for("hinge") == {"lr": 1e-3, "hidden": [32], "val_fraction": 0.25}
    assert SchedulerOptions().kwargs_for("lut") == {}  # nothing set: every scheduler keeps its defaults
    with pytest.raises(ConfigError, match="--scheduler.n-envs is not an option of scheduler 'hinge'"):
        SchedulerOptions(n_envs=8).kwargs_for("hinge")
    with pytest.raises(ConfigError, match="'bogus' is not an option of scheduler 'ppo'"):
        SchedulerOptions(extra='{"bogus": 1}').kwargs_for("ppo")
    with pytest.raises(ConfigError, match="JSON object"):
        SchedulerOptions(extra="[1, 2]")
    with pytest.raises(ConfigError, match="val-fraction"):
        SchedulerOptions(val_fraction=1.5)
