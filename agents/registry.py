"""Scheduler registry: the names used in results (``ppo``, ``lut``, ``anytime_ppo``, …) → classes.

Two maps, one per environment, because the two kinds of scheduler follow different protocols and harnesses:

* :data:`SCHEDULERS` — plan-env schedulers (:class:`agents.base.Scheduler`: one plan per request), built by
  :func:`make_scheduler`, evaluated by :mod:`agents.evaluation.harness`;
* :data:`ANYTIME_SCHEDULERS` — anytime-env policies (the stage protocol of
  :class:`agents.baselines.anytime_policies.AnytimePolicy`: ``fit``, ``begin``, ``act``, ``soft_budget``), built by
  :func:`agents.baselines.anytime_policies.make_anytime_policy`, evaluated by :mod:`agents.evaluation.anytime_harness`.
  Their names all start with ``anytime_``, so a name says its env (:func:`scheduler_env`).

Imports are lazy: ``import agents`` does not import stable-baselines3 or torch; a learner's module is imported only
when its name is asked for. A learner whose optional dependency is missing is reported by :func:`available_schedulers`
as unavailable (with the reason) instead of breaking the whole registry.
"""

from __future__ import annotations

import importlib
from typing import Any, Literal, get_args

from adainf_env.errors import ConfigError

__all__ = ["SCHEDULERS", "BASELINES", "ANYTIME_SCHEDULERS", "ANYTIME_BASELINES", "AnytimeSchedulerName", "EnvName",
           "scheduler_class", "anytime_policy_class", "scheduler_env", "make_scheduler", "available_schedulers",
           "known_schedulers"]

#: Which registry: ``plan`` (:data:`SCHEDULERS`), ``anytime`` (:data:`ANYTIME_SCHEDULERS`) or ``all`` (both).
EnvName = Literal["plan", "anytime", "all"]

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


# name -> "module:ClassName" of the anytime-env policies: scripted baselines, then learners (torch / SB3).
ANYTIME_SCHEDULERS: dict[str, str] = {
    "anytime_conf_cascade": "agents.baselines.anytime_policies:ConfidenceCascadePolicy",
    "anytime_agree_cascade": "agents.baselines.anytime_policies:AgreementCascadePolicy",
    "anytime_lut": "agents.baselines.anytime_policies:LUTPolicy",
    "anytime_hull_mix": "agents.baselines.anytime_policies:HullMixPolicy",
    "anytime_oracle": "agents.baselines.anytime_policies:OraclePolicy",
    "anytime_random": "agents.baselines.anytime_policies:RandomPolicy",
    "anytime_reinforce": "agents.learners.anytime_reinforce:AnytimeReinforcePolicy",
    "anytime_stage_reinforce": "agents.learners.anytime_stage:AnytimeStageReinforcePolicy",
    "anytime_ppo_lagrangian": "agents.learners.ppo_lagrangian:PPOLagrangianPolicy",
    "anytime_ppo": "agents.sb3.anytime:AnytimePPOPolicy",
    "anytime_a2c": "agents.sb3.anytime:AnytimeA2CPolicy",
    "anytime_maskable_ppo": "agents.sb3.anytime:AnytimeMaskablePPOPolicy",
}
#: The scripted anytime policies and bounds (no training; no torch).
ANYTIME_BASELINES: tuple[str, ...] = ("anytime_conf_cascade", "anytime_agree_cascade", "anytime_lut",
                                      "anytime_hull_mix", "anytime_oracle", "anytime_random")
#: Every anytime name, for command-line choices (a test keeps it equal to :data:`ANYTIME_SCHEDULERS`).
AnytimeSchedulerName = Literal["anytime_conf_cascade", "anytime_agree_cascade", "anytime_lut", "anytime_hull_mix",
                               "anytime_oracle", "anytime_random", "anytime_reinforce", "anytime_stage_reinforce",
                               "anytime_ppo_lagrangian", "anytime_ppo", "anytime_a2c", "anytime_maskable_ppo"]


def _registry(env: str) -> dict[str, str]:
    if env == "plan":
        return SCHEDULERS
    if env == "anytime":
        return ANYTIME_SCHEDULERS
    if env == "all":
        return {**SCHEDULERS, **ANYTIME_SCHEDULERS}
    raise ConfigError(f"env must be one of {list(get_args(EnvName))}, got {env!r}")


def known_schedulers(env: EnvName = "plan") -> list[str]:
    """Registered names of the plan env (default), the anytime env, or ``all``."""
    return list(_registry(env))


def scheduler_env(name: str) -> str:
    """``"plan"`` or ``"anytime"``: the env (and harness) a registered name belongs to."""
    if name in SCHEDULERS:
        return "plan"
    if name in ANYTIME_SCHEDULERS:
        return "anytime"
    raise ConfigError(f"unknown scheduler {name!r}; known plan-env schedulers: {', '.join(SCHEDULERS)}; "
                      f"anytime-env schedulers: {', '.join(ANYTIME_SCHEDULERS)}")


def _load(name: str, target: str, kind: str) -> type:
    module_name, cls_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{kind} {name!r} is not available: importing {module_name} failed ({e})") from e
    try:
        cls = getattr(module, cls_name)
    except AttributeError:
        raise ConfigError(f"{kind} {name!r} is not available: {module_name} defines no {cls_name}") from None
    if getattr(cls, "name", None) != name:
        raise ConfigError(f"registry error: {module_name}.{cls_name}.name is {getattr(cls, 'name', None)!r}, "
                          f"expected {name!r}")
    return cls


def anytime_policy_class(name: str) -> type:
    """The anytime policy class registered under ``name`` (imported on demand); :class:`ConfigError` otherwise."""
    if not isinstance(name, str) or name not in ANYTIME_SCHEDULERS:
        hint = " (a plan-env scheduler: use make_scheduler)" if name in SCHEDULERS else ""
        raise ConfigError(f"unknown anytime policy {name!r}{hint}; known: {', '.join(ANYTIME_SCHEDULERS)}")
    return _load(name, ANYTIME_SCHEDULERS[name], "anytime policy")


def scheduler_class(name: str) -> type:
    """The Scheduler class registered under ``name``; :class:`ConfigError` naming the known names otherwise."""
    if not isinstance(name, str) or name not in SCHEDULERS:
        hint = " (an anytime-env policy: use make_anytime_policy)" if name in ANYTIME_SCHEDULERS else ""
        raise ConfigError(f"unknown scheduler {name!r}{hint}; known schedulers: {', '.join(SCHEDULERS)}")
    return _load(name, SCHEDULERS[name], "scheduler")


def make_scheduler(name: str, **kwargs: Any):
    """Construct the scheduler registered under ``name`` with keyword arguments (unfitted)."""
    cls = scheduler_class(name)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"bad arguments for scheduler {name!r}: {e}") from None


def available_schedulers(env: EnvName = "plan") -> dict[str, str | None]:
    """``{name: None}`` for importable schedulers, ``{name: reason}`` for those that are not (yet) importable — of the
    plan env (default), the anytime env, or ``all``."""
    out: dict[str, str | None] = {}
    for name in _registry(env):
        try:
            anytime_policy_class(name) if name in ANYTIME_SCHEDULERS else scheduler_class(name)
            out[name] = None
        except ConfigError as e:
            out[name] = str(e)
    return out
