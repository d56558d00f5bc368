"""The options of the AdaInf environments, spelled out once.

:class:`AnytimeOptions` (the anytime env's) is :class:`EnvOptions` plus ``invalid_action``.

:class:`EnvOptions` is what :class:`~adainf_env.envs.plan.env.AdaInfEnv`, :class:`~adainf_env.envs.plan.vec_env.AdaInfVecEnv` and
:class:`~adainf_env.envs.core.EnvConfig` take; both env constructors also accept its fields as keyword arguments
(``AdaInfEnv(table, mode="stream", lam=0.5)`` ≡ ``AdaInfEnv(table, options=EnvOptions(mode="stream", lam=0.5))``).
Validation happens here, at construction: a bad value raises :class:`~adainf_env.errors.ConfigError` naming it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal, Mapping

import numpy as np

from adainf_env.budgets import TokenBucket
from adainf_env.errors import ConfigError
from adainf_env.stream import DEFAULT_STREAM

__all__ = ["EnvOptions", "AnytimeOptions", "make_bucket", "MODES", "REWARDS", "PENALTIES", "OBS_FORMATS",
           "ACTION_TYPES", "COST_UNITS", "RENDER_MODES", "INVALID_ACTIONS", "ACTION_MODES", "MENU_MIN_SIZES",
           "check_menu_sizes"]

MODES = ("bandit", "stream")
REWARDS = ("correct", "neg_ce")
PENALTIES = ("linear", "hard")
OBS_FORMATS = ("dict", "flat")
ACTION_TYPES = ("plan", "mask")
COST_UNITS = ("macs", "latency")
RENDER_MODES = ("ansi", "rgb_array")
INVALID_ACTIONS = ("raise", "fallback")
ACTION_MODES = ("block", "stage")
#: The stage menu's sizes and their least values (:class:`~adainf_env.envs.anytime.stages.StageTree`).
MENU_MIN_SIZES = {"first_pool": 2, "ext_pool": 1, "max_stages": 1}


def make_bucket(bucket: Any) -> TokenBucket | None:
    """``None``/``False`` → no bucket; ``True`` → default :class:`TokenBucket`; a dict of its fields; or one."""
    if bucket is None or bucket is False:
        return None
    if bucket is True:
        return TokenBucket()
    if isinstance(bucket, TokenBucket):
        return bucket
    if isinstance(bucket, Mapping):
        extra = set(bucket) - {"rate", "cap", "initial"}
        if extra:
            raise ConfigError(f"bucket: unknown key(s) {sorted(extra)}; expected rate, cap, initial")
        return TokenBucket(**bucket)
    raise ConfigError(f"bucket must be None, True, a dict(rate=, cap=, initial=) or a TokenBucket, got {bucket!r}")


def check_menu_sizes(sizes: Mapping[str, Any]) -> None:
    """Refuse (:class:`ConfigError`, naming the value) stage-menu sizes that are unknown or below
    :data:`MENU_MIN_SIZES`."""
    extra = set(sizes) - set(MENU_MIN_SIZES)
    if extra:
        raise ConfigError(f"stage_menu: unknown key(s) {sorted(extra)}; expected {sorted(MENU_MIN_SIZES)}")
    for k, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < MENU_MIN_SIZES[k]:
            raise ConfigError(f"stage_menu: {k} must be an integer ≥ {MENU_MIN_SIZES[k]}, got {v!r}")


def _finite_number(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
        raise ConfigError(f"{name} must be a finite number, got {v!r}")
    return float(v)


def _choice(v: Any, name: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(v, str) or v not in allowed:
        raise ConfigError(f"unknown {name} {v!r}; expected one of {list(allowed)}")
    return v


@dataclasses.dataclass(frozen=True)
class EnvOptions:
    """How the environment behaves (the data source — a table or a live backbone — is given separately).

    * ``mode``: ``"bandit"`` (one request per episode) or ``"stream"`` (``episode_length`` requests).
    * ``budget``: a budget-process spec for :func:`adainf_env.budgets.make_budget_process` (``"uniform"``,
      ``"fixed:0.3"``, ``"random_walk"``, ``"step"``, ``"periodic"``, ``"trace:FILE.csv"``, a dict, or an object).
    * ``bucket``: stream mode only; ``True``, a dict or a :class:`~adainf_env.budgets.TokenBucket` (a shared compute
      budget); normalised to a ``TokenBucket`` or ``None``.
    * ``lam`` (λ ≥ 0, overrun penalty weight), ``reward`` (``"correct"`` or ``"neg_ce"``), ``penalty``
      (``"linear"`` or ``"hard"``), ``hard_penalty`` (the reward of an overrun under ``penalty="hard"``): see
      :func:`adainf_env.envs.reward.step_reward`.
    * ``cost_unit``: ``"macs"`` or ``"latency"`` (which cost the budget is a fraction of).
    * ``obs_format``: ``"dict"`` or ``"flat"`` (one Box); ``action_type``: ``"plan"`` (Discrete) or ``"mask"``
      (MultiBinary block mask); ``mask_over_budget``: ``action_masks()`` hides plans over budget.
    * ``render_mode``: ``None``, ``"ansi"`` (a text line) or ``"rgb_array"`` (a frame, see :mod:`adainf_env.envs.render`).
    """

    mode: Literal["bandit", "stream"] = "bandit"
    episode_length: int = DEFAULT_STREAM.horizon  # the evaluation's stream length (adainf_env.stream)
    budget: Any = "uniform"
    bucket: Any = None
    lam: float = 1.0
    reward: Literal["correct", "neg_ce"] = "correct"
    penalty: Literal["linear", "hard"] = "linear"
    hard_penalty: float = -1.0
    cost_unit: Literal["macs", "latency"] = "macs"
    obs_format: Literal["dict", "flat"] = "dict"
    action_type: Literal["plan", "mask"] = "plan"
    mask_over_budget: bool = True
    render_mode: Literal["ansi", "rgb_array"] | None = None

    def __post_init__(self) -> None:
        _choice(self.mode, "mode", MODES)
        el = self.episode_length
        if isinstance(el, bool) or not isinstance(el, (int, np.integer)) or el < 1:
            raise ConfigError(f"episode_length must be an integer ≥ 1 (requests per stream episode), got {el!r}")
        lam = _finite_number(self.lam, "lam (λ, overrun penalty weight)")
        if lam < 0:
            raise ConfigError(f"lam (λ) must be ≥ 0, got {lam}")
        _choice(self.reward, "reward", REWARDS)
        _choice(self.penalty, "penalty", PENALTIES)
        _choice(self.cost_unit, "cost_unit", COST_UNITS)
        _choice(self.obs_format, "obs_format", OBS_FORMATS)
        _choice(self.action_type, "action_type", ACTION_TYPES)
        if not isinstance(self.mask_over_budget, (bool, np.bool_)):
            raise ConfigError(f"mask_over_budget must be a bool, got {self.mask_over_budget!r}")
        if self.render_mode is not None and self.render_mode not in RENDER_MODES:
            raise ConfigError(f"render_mode must be None or one of {list(RENDER_MODES)}, got {self.render_mode!r}")
        bucket = make_bucket(self.bucket)
        if bucket is not None and self.mode != "stream":
            raise ConfigError("a shared token-bucket budget needs mode='stream' (bandit episodes are one request)")
        set_ = object.__setattr__  # normalise in place (frozen dataclass)
        set_(self, "episode_length", int(el))
        set_(self, "lam", lam)
        set_(self, "hard_penalty", _finite_number(self.hard_penalty, "hard_penalty"))
        set_(self, "mask_over_budget", bool(self.mask_over_budget))
        set_(self, "bucket", bucket)

    @classmethod
    def from_kwargs(cls, options: "EnvOptions | None" = None, **kwargs: Any) -> "EnvOptions":
        """``options`` with ``kwargs`` replacing its fields (or the defaults, without ``options``).

        An unknown keyword raises :class:`ConfigError` listing the valid ones.
        """
        if options is not None and not isinstance(options, EnvOptions):
            raise ConfigError(f"options must be an EnvOptions, got {type(options).__name__}")
        if options is not None and not isinstance(options, cls):
            # an EnvOptions given to the anytime env: keep its values, add the anytime defaults
            options = cls(**{f.name: getattr(options, f.name) for f in dataclasses.fields(options)})
        names = {f.name for f in dataclasses.fields(cls)}
        extra = set(kwargs) - names
        if extra:
            raise ConfigError(f"unknown env option(s) {sorted(extra)}; expected the fields of {cls.__name__}: "
                              f"{sorted(names)} (and table=, table_path=, live=)")
        return dataclasses.replace(options, **kwargs) if options is not None else cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class AnytimeOptions(EnvOptions):
    """The options of :class:`~adainf_env.envs.anytime.env.AnytimeEnv`: those of :class:`EnvOptions` plus

    * ``invalid_action``: ``"raise"`` (an action outside ``action_masks()`` raises
      :class:`~adainf_env.envs.core.ActionError`) or ``"fallback"`` (it is replaced by a valid one, see the env).
    * ``action_mode``: ``"block"`` (default: run, skip, read, stop) or ``"stage"`` (stop, or run to one of a fixed
      menu of Pareto extensions and read it; :mod:`adainf_env.envs.anytime.stages`).
    * ``stage_menu`` (stage mode only): ``None`` (the menu built from the served table with
      :data:`~adainf_env.envs.anytime.stages.MENU_DEFAULTS`), a dict of its sizes (``first_pool`` ≥ 2,
      ``ext_pool`` ≥ 1, ``max_stages`` ≥ 1), or a :class:`~adainf_env.envs.anytime.stages.StageTree` built
      elsewhere (e.g. from the calibration table, for an env serving test rows).

    The anytime env's actions are always ``Discrete(4)`` (run, skip, read, stop), so ``action_type`` must stay
    ``"plan"``; it charges every block, shortcut and head separately, so ``cost_unit`` must be ``"macs"`` (a latency
    profile has per-plan totals only).
    """

    invalid_action: Literal["raise", "fallback"] = "raise"
    action_mode: Literal["block", "stage"] = "block"
    stage_menu: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice(self.invalid_action, "invalid_action", INVALID_ACTIONS)
        _choice(self.action_mode, "action_mode", ACTION_MODES)
        menu = self.stage_menu
        if menu is not None and self.action_mode != "stage":
            raise ConfigError(f"stage_menu={menu!r} needs action_mode='stage' (got {self.action_mode!r})")
        if isinstance(menu, Mapping):
            check_menu_sizes(menu)
        elif menu is not None and not callable(getattr(menu, "check_fits", None)):
            # a menu object is a StageTree (adainf_env.envs.anytime.stages, which builds on the kernel above this
            # module): known here by the method the env calls on it
            raise ConfigError(f"stage_menu must be None, a dict of menu sizes or a StageTree, got {menu!r}")
        if self.action_type != "plan":
            raise ConfigError("the anytime env's actions are Discrete(4) (run, skip, read, stop): action_type must "
                              f"stay 'plan', got {self.action_type!r}")
        if self.cost_unit != "macs":
            raise ConfigError(f"the anytime env charges every block, shortcut and head separately and needs per-block "
                              f"costs; cost_unit={self.cost_unit!r} has only per-plan totals. Use cost_unit='macs'")
