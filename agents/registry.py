"""Scheduler registry: the names used in results (``ppo``, ``lut``, …) → Scheduler classes.

Imports are lazy: ``import agents`` does not import stable-baselines3 or torch; a learner's module is imported only
when its name is asked for. A learner whose optional dependency is missing is reported by :func:`available_schedulers`
as unavailable (with the reason) instead of breaking the whole registry.
"""

from __future__ import annotations

import importlib
from typing import Any

from adainf_env.errors import ConfigError

__all__ = ["SCHEDULERS", "BASELINES", "scheduler_class", "make_scheduler", "available_schedulers",
           "known_schedulers"]

# name -> "module:ClassName": learners in agents/learners/ and agents/sb3/, baselines in agents/baselines/.
SCHEDULERS: dict[str, str] = {
    "ppo": "agents.sb3.scheduler:PPOScheduler",
    "a2c": "agents.sb3.scheduler:A2CScheduler",
    "dqn": "agents.sb3.scheduler:DQNScheduler",
    "maskable_ppo": "agents.sb3.scheduler:MaskablePPOScheduler",
    "reinforce": "agents.learners.reinforce:ReinforceScheduler",
    "blockdrop": "agents.learners.blockdrop:BlockDropScheduler",
    "hinge": "agents.learners.hinge:HingeScheduler",
    "lagrangian": "agents.learners.lagrangian:LagrangianScheduler",
    "lut": "agents.baselines.static:LUTScheduler",
    "lut_upper": "agents.baselines.static:LUTUpperScheduler",
    "hull_mix": "agents.baselines.static:HullMixScheduler",
    "random": "agents.baselines.static:RandomScheduler",
    "oracle": "agents.baselines.static:OracleScheduler",
    "confidence_cascade": "agents.baselines.cascades:ConfidenceCascade",
    "agreement_cascade": "agents.baselines.cascades:AgreementCascade",
}
#: The non-learned schedulers and bounds (fitted in milliseconds; no torch).
BASELINES: tuple[str, ...] = ("lut", "lut_upper", "hull_mix", "random", "oracle", "confidence_cascade",
                              "agreement_cascade")


def known_schedulers() -> list[str]:
    return list(SCHEDULERS)


def scheduler_class(name: str) -> type:
    """The Scheduler class registered under ``name``; :class:`ConfigError` naming the known names otherwise."""
    if not isinstance(name, str) or name not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler {name!r}; known schedulers: {', '.join(SCHEDULERS)}")
    module_name, cls_name = SCHEDULERS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"scheduler {name!r} is not available: importing {module_name} failed ({e})") from e
    try:
        cls = getattr(module, cls_name)
    except AttributeError:
        raise ConfigError(f"scheduler {name!r} is not available: {module_name} defines no {cls_name}") from None
    if getattr(cls, "name", None) != name:
        raise ConfigError(f"registry error: {module_name}.{cls_name}.name is {getattr(cls, 'name', None)!r}, "
                          f"expected {name!r}")
    return cls


def make_scheduler(name: str, **kwargs: Any):
    """Construct the scheduler registered under ``name`` with keyword arguments (unfitted)."""
    cls = scheduler_class(name)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"bad arguments for scheduler {name!r}: {e}") from None


def available_schedulers() -> dict[str, str | None]:
    """``{name: None}`` for importable schedulers, ``{name: reason}`` for those that are not (yet) importable."""
    out: dict[str, str | None] = {}
    for name in SCHEDULERS:
        try:
            scheduler_class(name)
            out[name] = None
        except ConfigError as e:
            out[name] = str(e)
    return out
