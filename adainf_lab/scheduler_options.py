"""Typed scheduler options of the experiment scripts (``--scheduler.n-envs 64``) → a scheduler's keyword arguments.

Every field left at ``None`` keeps the scheduler's own tuned default. Setting an option the chosen scheduler does not
take is a :class:`~adainf_env.errors.ConfigError` before any work starts (e.g. ``--scheduler.n-envs`` with ``hinge``).

The typed fields cover what is tuned across schedulers. The rest — options of one scheduler only, and SB3's own
algorithm hyperparameters, which SB3 takes as a nested ``algo_kwargs`` mapping whose keys depend on the algorithm —
go through the documented escape hatch ``--scheduler.extra '{"algo_kwargs": {"ent_coef": 0.01}}'`` (a JSON object of
keyword arguments, checked against the scheduler's constructor the same way).

Scheduler names on the command line (:data:`SchedulerName`, :data:`AnytimeSchedulerName`, and the tuples
:data:`SchedulerNames`, :data:`AnytimeSchedulerNames`) are strings: a registered
name, a stable-baselines3 / sb3-contrib algorithm (``TRPO``) or ``package.module:ClassName``
(:func:`agents.registry.resolve`). Each script's config checks them against the registry before any work
(:func:`agents.registry.check_names`: one ``error:`` line, exit status 2), and ``--help`` shows the names the registry
knows (generated from :data:`agents.registry.REGISTRY`).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from typing import Annotated, Any, Literal

import tyro

from adainf_env.errors import ConfigError
from agents.registry import known_schedulers, scheduler_class

__all__ = ["SchedulerName", "AnytimeSchedulerName", "SchedulerNames", "AnytimeSchedulerNames", "SchedulerOptions",
           "accepts"]


def _metavar(env: str) -> str:
    extra = "|SB3_ALGO|MODULE:CLASS" if env == "plan" else "|MODULE:CLASS"
    return "{" + ",".join(known_schedulers(env)) + "}" + extra


#: A plan-env scheduler name (``--algo``, ``--schedulers``): ``--help`` shows the registry's names.
SchedulerName = Annotated[str, tyro.conf.arg(metavar=_metavar("plan"))]
#: An anytime-env policy name.
AnytimeSchedulerName = Annotated[str, tyro.conf.arg(metavar=_metavar("anytime"))]
#: Several plan-env scheduler names (``--schedulers a b …``; the metavar is the whole option's).
SchedulerNames = Annotated[tuple[str, ...], tyro.conf.arg(metavar=_metavar("plan") + " …")]
#: Several anytime-env policy names (``--anytime-schedulers a b …``).
AnytimeSchedulerNames = Annotated[tuple[str, ...], tyro.conf.arg(metavar=_metavar("anytime") + " …")]


def accepts(cls: type, name: str) -> bool:
    """Whether ``cls(name=...)`` is accepted, following ``**kwargs`` pass-through to base classes."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters
        except (TypeError, ValueError):
            return False
        if name in params:
            return True
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return False
    return False


def _h(text: str) -> Any:
    return dataclasses.field(default=None, metadata={"help": text})


@dataclasses.dataclass
class SchedulerOptions:
    """Scheduler options (unset = the scheduler's own default)."""

    n_envs: int | None = _h("parallel envs of the batched env (SB3 learners)")
    lr: float | None = _h("learning rate (SB3 learning_rate; lr of the torch learners)")
    batch_size: int | None = _h("minibatch size (torch learners)")
    weight_decay: float | None = _h("weight decay (torch learners)")
    hidden: tuple[int, ...] | None = _h("hidden layer widths of the policy / router MLP, e.g. 128 128")
    val_fraction: float | None = _h("calibration rows held out to select the best checkpoint")
    eval_every: int | None = _h("held-out evaluation every N rollouts (SB3 learners)")
    plans: Literal["pareto", "all"] | None = _h("candidate plans: the calibration Pareto set or all plans")
    extra: str = dataclasses.field(default="{}", metadata={
        "help": 'escape hatch: JSON object of further keyword arguments, e.g. \'{"algo_kwargs": {"ent_coef": 0.01}}\''})

    def __post_init__(self) -> None:
        for k in ("n_envs", "batch_size", "eval_every"):
            v = getattr(self, k)
            if v is not None and v < 1:
                raise ConfigError(f"--scheduler.{k.replace('_', '-')} must be ≥ 1, got {v}")
        if self.val_fraction is not None and not 0 < self.val_fraction < 1:
            raise ConfigError(f"--scheduler.val-fraction must be in (0, 1), got {self.val_fraction}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"--scheduler.lr must be > 0, got {self.lr}")
        if self.hidden is not None and (not self.hidden or min(self.hidden) < 1):
            raise ConfigError(f"--scheduler.hidden needs widths ≥ 1, got {self.hidden}")
        self.extra_kwargs()

    def extra_kwargs(self) -> dict[str, Any]:
        try:
            kw = json.loads(self.extra)
        except ValueError as e:
            raise ConfigError(f"--scheduler.extra is not valid JSON: {e}") from None
        if not isinstance(kw, dict):
            raise ConfigError("--scheduler.extra must be a JSON object of keyword arguments")
        return kw

    def kwargs_for(self, name: str) -> dict[str, Any]:
        """Keyword arguments for scheduler ``name``: the options that were set, under the scheduler's own names;
        ConfigError for an option ``name`` does not take."""
        cls = scheduler_class(name)
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "extra" or v is None:
                continue
            key = "learning_rate" if f.name == "lr" and accepts(cls, "learning_rate") else f.name
            if not accepts(cls, key):
                raise ConfigError(f"--scheduler.{f.name.replace('_', '-')} is not an option of scheduler {name!r}")
            out[key] = list(v) if isinstance(v, tuple) else v
        for k, v in self.extra_kwargs().items():
            if not accepts(cls, k):
                raise ConfigError(f"--scheduler.extra: {k!r} is not an option of scheduler {name!r}")
            out[k] = v
        return out
