"""AdaInf environment package: data, skippable backbones, cost model, outcome tables and the Gymnasium env."""

from __future__ import annotations

import os

# OpenMP threads that spin while waiting (libgomp's default, ACTIVE) take the cores that the env, SB3's Python loop
# and other processes need; on a shared or busy CPU a small PPO run slows down by an order of magnitude.
# Passive waiting costs little on an idle machine. OpenMP reads the variable once, when torch
# loads it, so this only helps when adainf_env is imported before torch; an explicit OMP_WAIT_POLICY always wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from adainf_env.version import adainf_version  # noqa: E402

__version__ = adainf_version()

from adainf_env.errors import (  # noqa: E402
    AdaInfError,
    CheckpointError,
    ConfigError,
    DataSourceError,
    TableFormatError,
    TableMismatchError,
    UnsafeFileError,
)
from adainf_env.tables.outcomes import OutcomeTable, load_table, save_table  # noqa: E402
from adainf_env.backbones import load_backbone  # noqa: E402
from adainf_env.envs.plan.env import AdaInfEnv  # noqa: E402
from adainf_env.envs import registration as _registration  # noqa: E402,F401  (registers AdaInf/Bandit-v0, Stream-v0)


def __getattr__(name: str):
    # The vec env imports stable-baselines3; load it only when asked for.
    if name in ("AdaInfVecEnv", "make_vec_env"):
        from adainf_env.envs.plan import vec_env

        return getattr(vec_env, name)
    if name == "AdaptiveExecutor":
        from adainf_env.executor import AdaptiveExecutor

        return AdaptiveExecutor
    raise AttributeError(f"module 'adainf_env' has no attribute {name!r}")


__all__ = [
    "__version__",
    "OutcomeTable",
    "load_table",
    "save_table",
    "load_backbone",
    "AdaInfEnv",
    "AdaInfVecEnv",
    "make_vec_env",
    "AdaptiveExecutor",
    "AdaInfError",
    "CheckpointError",
    "ConfigError",
    "DataSourceError",
    "TableFormatError",
    "TableMismatchError",
    "UnsafeFileError",
]
