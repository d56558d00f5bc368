"""The scheduler registry: one table of name → target → env, both factories, and the open names beyond it.

:data:`REGISTRY` is the one table: each :class:`Entry` names a scheduler (the name used in results: ``ppo``,
``lut``, ``anytime_ppo``, …), its target (``"package.module:ClassName"``, imported when the name is first used) and
its env:

* ``plan`` — plan-env schedulers (:class:`agents.base.Scheduler`: one plan per request), built by
  :func:`make_scheduler`, evaluated by :mod:`agents.evaluation.harness`;
* ``anytime`` — anytime-env policies (:class:`agents.base.AnytimePolicy`: ``fit``, ``begin``, ``act``,
  ``soft_budget``), built by :func:`make_anytime_policy`, evaluated by :mod:`agents.evaluation.anytime_harness`.
  The built-in names all start with ``anytime_``.

:data:`SCHEDULERS` and :data:`ANYTIME_SCHEDULERS` are live views of it (so a :func:`register`-ed name shows in them
too); :data:`BASELINES` and :data:`ANYTIME_BASELINES` list its built-in non-learned names. Command-line choices and help texts
(:func:`names_help`, :func:`check_names`) and the docs' lists are generated from it.

Open names — besides the table, every function taking a name (:func:`resolve`, :func:`make_scheduler`,
:func:`make_anytime_policy`, :func:`scheduler_env`, the ``--algo`` / ``--schedulers`` / ``--anytime-schedulers``
options of the scripts) accepts:

* ``"package.module:ClassName"`` — a user's own class. Its protocol is detected (:data:`agents.base.PLAN_PROTOCOL`,
  :data:`agents.base.ANYTIME_PROTOCOL`): a :class:`~agents.base.Scheduler` runs in the plan env, an
  :class:`~agents.base.AnytimePolicy` in the anytime env; a class fitting neither is refused, naming what it lacks.
  Its results carry the name as given.
* the class name of any stable-baselines3 or sb3-contrib algorithm (``TRPO``, ``QRDQN``, ``ARS``, ``RecurrentPPO``,
  …; case-insensitive, ``recurrent_ppo`` too) that supports the plan env's discrete actions: trained and selected like
  the built-in SB3 schedulers (:mod:`agents.sb3.generic`). One that does not (``SAC``, ``TD3``, ``DDPG``, ``TQC``,
  ``CrossQ``: Box actions only) is refused with the reason. ``PPO``, ``A2C``, ``DQN`` and ``MaskablePPO`` are the
  built-in (tuned) ``ppo``, ``a2c``, ``dqn`` and ``maskable_ppo``.
* ``anytime_<Algorithm>`` (``anytime_TRPO``, ``anytime_trpo``): the same algorithm as an anytime learner
  (:func:`agents.sb3.anytime.anytime_sb3_class`), trained, selected and deployed like ``anytime_ppo``; it must be an
  on-policy algorithm with a non-recurrent actor-critic ``MlpPolicy`` (refused with the reason otherwise).

:func:`register` adds a name for a library user (``agents.register("mine", "my_pkg.sched:MyScheduler")``).

Imports are lazy: ``import agents`` does not import stable-baselines3 or torch; a scheduler's module is imported only
when its name is asked for. A built-in scheduler whose optional dependency is missing is reported by
:func:`available_schedulers` as unavailable (with the reason) instead of breaking the whole registry.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal, get_args

from adainf_env.errors import ConfigError
from agents.base import ANYTIME_PROTOCOL, PLAN_PROTOCOL, AnytimePolicy, Scheduler, missing_members, read_saved

__all__ = ["Entry", "REGISTRY", "SCHEDULERS", "BASELINES", "ANYTIME_SCHEDULERS", "ANYTIME_BASELINES", "EnvName",
           "resolve", "register", "scheduler_class", "anytime_policy_class", "scheduler_env", "make_scheduler",
           "make_anytime_policy", "load_scheduler", "available_schedulers", "known_schedulers", "check_names",
           "names_help", "markdown_table", "uses_sb3"]

#: Which registry: ``plan``, ``anytime`` or ``all`` (both).
EnvName = Literal["plan", "anytime", "all"]


@dataclasses.dataclass(frozen=True)
class Entry:
    """One scheduler name: what it builds and where it runs.

    ``target``: ``"package.module:ClassName"`` or the class itself; ``env``: ``"plan"`` or ``"anytime"``;
    ``baseline``: a built-in non-learned scheduler (fitted in milliseconds, no torch) — the harnesses run these last
    and the figures panel them apart; ``sb3``: the stable-baselines3 / sb3-contrib algorithm class name it trains (``None``: not SB3);
    ``builtin``: shipped with AdaInf (its class's ``name`` must equal the entry's name).
    """

    name: str
    target: str | type
    env: Literal["plan", "anytime"]
    baseline: bool = False
    sb3: str | None = None
    builtin: bool = False


def _builtin(name: str, target: str, env: Literal["plan", "anytime"], *, baseline: bool = False,
             sb3: str | None = None) -> Entry:
    return Entry(name, target, env, baseline=baseline, sb3=sb3, builtin=True)


#: The one table (built-in names; :func:`register` adds more). Learners in agents/learners/ and agents/sb3/,
#: baselines in agents/baselines/.
REGISTRY: dict[str, Entry] = {e.name: e for e in (
    _builtin("ppo", "agents.sb3.scheduler:PPOScheduler", "plan", sb3="PPO"),
    _builtin("a2c", "agents.sb3.scheduler:A2CScheduler", "plan", sb3="A2C"),
    _builtin("dqn", "agents.sb3.scheduler:DQNScheduler", "plan", sb3="DQN"),
    _builtin("maskable_ppo", "agents.sb3.scheduler:MaskablePPOScheduler", "plan", sb3="MaskablePPO"),
    _builtin("reinforce", "agents.learners.reinforce:ReinforceScheduler", "plan"),
    _builtin("blockdrop", "agents.learners.blockdrop:BlockDropScheduler", "plan"),
    _builtin("hinge", "agents.learners.hinge:HingeScheduler", "plan"),
    _builtin("lagrangian", "agents.learners.lagrangian:LagrangianScheduler", "plan"),
    _builtin("lut", "agents.baselines.static:LUTScheduler", "plan", baseline=True),
    _builtin("lut_upper", "agents.baselines.static:LUTUpperScheduler", "plan", baseline=True),
    _builtin("hull_mix", "agents.baselines.static:HullMixScheduler", "plan", baseline=True),
    _builtin("random", "agents.baselines.static:RandomScheduler", "plan", baseline=True),
    _builtin("oracle", "agents.baselines.static:OracleScheduler", "plan", baseline=True),
    _builtin("confidence_cascade", "agents.baselines.cascades:ConfidenceCascade", "plan", baseline=True),
    _builtin("agreement_cascade", "agents.baselines.cascades:AgreementCascade", "plan", baseline=True),
    # anytime env: scripted baselines, then learners (torch / SB3)
    _builtin("anytime_conf_cascade", "agents.baselines.anytime_policies:ConfidenceCascadePolicy", "anytime",
             baseline=True),
    _builtin("anytime_agree_cascade", "agents.baselines.anytime_policies:AgreementCascadePolicy", "anytime",
             baseline=True),
    _builtin("anytime_lut", "agents.baselines.anytime_policies:LUTPolicy", "anytime", baseline=True),
    _builtin("anytime_hull_mix", "agents.baselines.anytime_policies:HullMixPolicy", "anytime", baseline=True),
    _builtin("anytime_oracle", "agents.baselines.anytime_policies:OraclePolicy", "anytime", baseline=True),
    _builtin("anytime_random", "agents.baselines.anytime_policies:RandomPolicy", "anytime", baseline=True),
    _builtin("anytime_reinforce", "agents.learners.anytime_reinforce:AnytimeReinforcePolicy", "anytime"),
    _builtin("anytime_stage_reinforce", "agents.learners.anytime_stage:AnytimeStageReinforcePolicy", "anytime"),
    _builtin("anytime_ppo_lagrangian", "agents.learners.anytime_ppo_lagrangian:PPOLagrangianPolicy", "anytime"),
    _builtin("anytime_ppo", "agents.sb3.anytime:AnytimePPOPolicy", "anytime", sb3="PPO"),
    _builtin("anytime_a2c", "agents.sb3.anytime:AnytimeA2CPolicy", "anytime", sb3="A2C"),
    _builtin("anytime_maskable_ppo", "agents.sb3.anytime:AnytimeMaskablePPOPolicy", "anytime", sb3="MaskablePPO"),
)}


class _View(Mapping[str, str]):
    """A live, read-only view of :data:`REGISTRY`: name → target of one env."""

    def __init__(self, env: str) -> None:
        self._env = env

    def _entries(self) -> list[Entry]:
        return [e for e in REGISTRY.values() if e.env == self._env]

    def __getitem__(self, name: str) -> str:
        for e in self._entries():
            if e.name == name:
                return e.target if isinstance(e.target, str) else _spec_of(e.target)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter([e.name for e in self._entries()])

    def __len__(self) -> int:
        return len(self._entries())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self)!r})"


#: Plan-env names → targets (a view of :data:`REGISTRY`).
SCHEDULERS: Mapping[str, str] = _View("plan")
#: Anytime-env names → targets (a view of :data:`REGISTRY`).
ANYTIME_SCHEDULERS: Mapping[str, str] = _View("anytime")
#: The non-learned plan-env schedulers and bounds (fitted in milliseconds; no torch).
BASELINES: tuple[str, ...] = tuple(e.name for e in REGISTRY.values() if e.env == "plan" and e.baseline)
#: The scripted anytime policies and bounds (no training; no torch).
ANYTIME_BASELINES: tuple[str, ...] = tuple(e.name for e in REGISTRY.values() if e.env == "anytime" and e.baseline)

_ENVS = ("plan", "anytime")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def _spec_of(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _check_env(env: str) -> None:
    if env not in get_args(EnvName):
        raise ConfigError(f"env must be one of {list(get_args(EnvName))}, got {env!r}")


def known_schedulers(env: EnvName = "plan") -> list[str]:
    """Registered names of the plan env (default), the anytime env, or ``all``."""
    _check_env(env)
    return [e.name for e in REGISTRY.values() if env in ("all", e.env)]


# ----------------------------------------------------------------- resolution
def _import_target(what: str, spec: str) -> type:
    """The class at ``"package.module:ClassName"``; :class:`ConfigError` saying what failed."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{what}: {spec!r} is not of the form 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{what} is not available: importing {module_name} failed ({e})") from e
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(f"{what} is not available: {module_name} defines no {attr}")
    if not isinstance(obj, type):
        raise ConfigError(f"{what}: {spec} is a {type(obj).__name__}, not a class")
    return obj


def _detect_env(spec: str, cls: type) -> Literal["plan", "anytime"]:
    """The env whose protocol ``cls`` follows; :class:`ConfigError` naming what it lacks when it fits neither."""
    # outside the Scheduler hierarchy nothing turns select() into the decide() the harness calls: decide is needed
    protocol = PLAN_PROTOCOL if issubclass(cls, Scheduler) else tuple(
        "decide" if m == "select|decide" else m for m in PLAN_PROTOCOL)
    plan, anytime = missing_members(cls, protocol), missing_members(cls, ANYTIME_PROTOCOL)
    if issubclass(cls, Scheduler) and not plan:
        return "plan"
    if issubclass(cls, AnytimePolicy) and not anytime:
        return "anytime"
    if not plan and anytime:
        return "plan"
    if not anytime and plan:
        return "anytime"
    if not plan and not anytime:
        raise ConfigError(f"{spec}: fits both the plan-env and the anytime-env protocol; subclass "
                          "agents.Scheduler or agents.AnytimePolicy to say which")
    raise ConfigError(
        f"{spec} is neither a plan-env scheduler nor an anytime policy: as a scheduler (subclass agents.Scheduler) "
        f"it lacks {_members(plan)}; as an anytime policy (subclass agents.AnytimePolicy) it lacks {_members(anytime)}")


def _members(names: list[str]) -> str:
    """``["fit", "select|decide", "is_bound"]`` → ``"fit(), select() or decide(), is_bound"`` (methods with ())."""
    def one(m: str) -> str:
        return m if m == "is_bound" else f"{m}()"
    return ", ".join(" or ".join(one(alt) for alt in m.split("|")) for m in names)


def _snake(name: str) -> str:
    """``MaskablePPO`` → ``maskable_ppo``, ``RecurrentPPO`` → ``recurrent_ppo``, ``QRDQN`` → ``qrdqn``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _sb3_entry(name: str) -> Entry | None:
    """The entry of an SB3 / sb3-contrib algorithm class name (``None`` when ``name`` is none): ``TRPO`` for the plan
    env, ``anytime_TRPO`` (case-insensitive; snake case too) for the anytime env. A tuned built-in algorithm maps to
    its built-in entry; another one is checked for the env (SAC, TD3, … on the plan env; off-policy, recurrent, …
    on the anytime env) and refused with the reason."""
    env = "anytime" if name.lower().startswith("anytime_") else "plan"
    key = name[len("anytime_"):].lower() if env == "anytime" else name.lower()
    if not re.fullmatch(r"[a-z0-9_]+", key):
        return None
    from agents.sb3.generic import check_discrete, sb3_algorithms  # lazy: stable-baselines3 only when asked for

    cls_name = next((c for c in sb3_algorithms() if key in (c.lower(), _snake(c))), None)
    if cls_name is None:
        return None
    builtin = [e for e in REGISTRY.values() if e.builtin and e.env == env and e.sb3 == cls_name]
    if builtin:
        return builtin[0]
    if env == "plan":
        check_discrete(cls_name)
        return Entry(cls_name, f"agents.sb3.generic:{cls_name}", "plan", sb3=cls_name)
    from agents.sb3.anytime import check_anytime_algorithm

    check_anytime_algorithm(cls_name)
    return Entry(f"anytime_{_snake(cls_name)}", f"agents.sb3.anytime:anytime_sb3_class({cls_name})", "anytime",
                 sb3=cls_name)


def resolve(name: str) -> Entry:
    """The :class:`Entry` of ``name``: a registered name, a ``package.module:ClassName`` (protocol detected), or an
    SB3 / sb3-contrib algorithm class name (see the module docstring). :class:`ConfigError` otherwise, listing the
    registered names."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a scheduler name must be a non-empty string, got {name!r}")
    if name in REGISTRY:
        return REGISTRY[name]
    if ":" in name:
        cls = _import_target(f"scheduler {name!r}", name)
        return Entry(name, cls, _detect_env(name, cls))
    entry = _sb3_entry(name) if "." not in name else None
    if entry is not None:
        return entry
    raise ConfigError(f"unknown scheduler {name!r}; known plan-env schedulers: {', '.join(SCHEDULERS)}; "
                      f"anytime-env schedulers: {', '.join(ANYTIME_SCHEDULERS)}; or a stable-baselines3 / "
                      "sb3-contrib algorithm (e.g. TRPO, QRDQN; anytime_TRPO for the anytime env), or "
                      "'package.module:ClassName'")


def register(name: str, target: str | type, *, env: Literal["plan", "anytime"] | None = None) -> Entry:
    """Register ``name`` for ``target`` (a class, or ``"package.module:ClassName"``, imported now to check it), so
    every factory and script accepts the name. ``env`` (``"plan"`` / ``"anytime"``): detected from the class's
    protocol when ``None``. A built-in name cannot be replaced; registering a name again
    replaces the earlier registration. Returns the entry."""
    if not isinstance(name, str) or not _NAME.match(name) or ":" in name:
        raise ConfigError(f"register: name must be an identifier-like string (letters, digits, _ . -), got {name!r}")
    if name in REGISTRY and REGISTRY[name].builtin:
        raise ConfigError(f"register: {name!r} is a built-in scheduler name; choose another")
    if isinstance(target, str):
        cls = _import_target(f"register({name!r})", target)
    elif isinstance(target, type):
        cls = target
    else:
        raise ConfigError(f"register: target must be a class or 'package.module:ClassName', got {target!r}")
    detected = _detect_env(name, cls)
    if env is not None and env != detected:
        raise ConfigError(f"register({name!r}): {cls.__name__} follows the {detected}-env protocol, not {env!r}")
    REGISTRY[name] = Entry(name, cls, detected)
    return REGISTRY[name]


def _class_of(entry: Entry) -> type:
    if entry.sb3 is not None and not entry.builtin:
        if entry.env == "anytime":
            from agents.sb3.anytime import anytime_sb3_class

            return anytime_sb3_class(entry.sb3, entry.name)
        from agents.sb3.generic import sb3_scheduler_class

        return sb3_scheduler_class(entry.sb3)
    cls = entry.target if isinstance(entry.target, type) else \
        _import_target(f"{entry.env}-env scheduler {entry.name!r}", entry.target)
    if entry.builtin and getattr(cls, "name", None) != entry.name:
        raise ConfigError(f"registry error: {_spec_of(cls)}.name is {getattr(cls, 'name', None)!r}, expected "
                          f"{entry.name!r}")
    return cls


def scheduler_env(name: str) -> str:
    """``"plan"`` or ``"anytime"``: the env (and harness) ``name`` belongs to (see :func:`resolve`)."""
    return resolve(name).env


def _class_in(name: str, env: str) -> type:
    """The class of ``name`` (imported on demand) when it runs in ``env``; :class:`ConfigError` otherwise."""
    entry = resolve(name)
    if entry.env != env:
        kind, known = ("scheduler", SCHEDULERS) if env == "plan" else ("anytime policy", ANYTIME_SCHEDULERS)
        other = "an anytime-env policy: use make_anytime_policy" if entry.env == "anytime" else \
            "a plan-env scheduler: use make_scheduler"
        raise ConfigError(f"unknown {kind} {name!r} ({other}); known: {', '.join(known)}")
    return _class_of(entry)


def scheduler_class(name: str) -> type:
    """The plan-env scheduler class of ``name`` (imported on demand); :class:`ConfigError` otherwise."""
    return _class_in(name, "plan")


def anytime_policy_class(name: str) -> type:
    """The anytime policy class of ``name`` (imported on demand); :class:`ConfigError` otherwise."""
    return _class_in(name, "anytime")


def _construct(entry: Entry, cls: type, kwargs: dict[str, Any], kind: str) -> Any:
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"bad arguments for {kind} {entry.name!r}: {e}") from None
    if not entry.builtin and getattr(obj, "name", None) != entry.name:
        obj.name = entry.name  # results carry the name it was asked for (a class spec, a registered name)
    return obj


def make_scheduler(name: str, **kwargs: Any) -> Scheduler:
    """Construct (unfitted) the plan-env scheduler ``name`` (see :func:`resolve`) with keyword arguments."""
    return _construct(resolve(name), scheduler_class(name), kwargs, "scheduler")


def make_anytime_policy(name: str, **kwargs: Any) -> AnytimePolicy:
    """Construct (unfitted) the anytime policy ``name`` (see :func:`resolve`): a scripted baseline, a learner
    (``anytime_reinforce``, ``anytime_ppo_lagrangian``, ``anytime_ppo``, …) whose torch / stable-baselines3 module is
    imported only now, or a user's class. Unknown names and bad arguments are :class:`ConfigError`."""
    return _construct(resolve(name), anytime_policy_class(name), kwargs, "anytime policy")


def load_scheduler(path: str | os.PathLike, table: Any = None) -> Scheduler:
    """Load a plan-env scheduler saved by :meth:`agents.base.Scheduler.save`, whatever its kind (its class is found
    by the saved name); with ``table`` (an :class:`~adainf_env.tables.outcomes.OutcomeTable`), refuse a mismatched
    plan/feature space."""
    raw = read_saved(path)
    sched = make_scheduler(str(raw["scheduler"]), **json.loads(str(raw["config_json"])))
    return sched.restore(raw, table)


def available_schedulers(env: EnvName = "plan") -> dict[str, str | None]:
    """``{name: None}`` for importable schedulers, ``{name: reason}`` for those that are not (yet) importable — of the
    plan env (default), the anytime env, or ``all`` (registered names only)."""
    out: dict[str, str | None] = {}
    for name in known_schedulers(env):
        try:
            _class_of(REGISTRY[name])
            out[name] = None
        except ConfigError as e:
            out[name] = str(e)
    return out


def uses_sb3(name: str) -> bool:
    """Whether ``name`` trains a stable-baselines3 / sb3-contrib algorithm (its progress bar needs ``rich``)."""
    return resolve(name).sb3 is not None


# ----------------------------------------------------------------- command lines
def check_names(names: Any, env: Literal["plan", "anytime"], *, option: str) -> tuple[str, ...]:
    """Command-line scheduler names of ``env`` → their canonical names (``trpo`` → ``TRPO``);
    :class:`ConfigError` naming ``option`` for a name that is unknown or of the other env."""
    one = isinstance(names, str)
    out = []
    for n in [names] if one else list(names):
        try:
            entry = resolve(n)
        except ConfigError as e:
            raise ConfigError(f"{option}: {e}") from None
        if entry.env != env:
            other = "--anytime-schedulers" if entry.env == "anytime" else "--schedulers"
            article = "an" if entry.env == "anytime" else "a"
            raise ConfigError(f"{option}: {n!r} is {article} {entry.env}-env scheduler, not for the {env} env"
                              + (f" (give it to {other})" if option in ("--schedulers", "--anytime-schedulers")
                                 else ""))
        out.append(entry.name)
    return tuple(out)


def markdown_table() -> str:
    """The registered names as a markdown table (name, env, kind, class): the list in docs/adding_a_scheduler.md is
    this text (a test keeps them equal; regenerate with ``python -c "import agents.registry as r;
    print(r.markdown_table())"``)."""
    rows = ["| name | env | kind | class |", "| --- | --- | --- | --- |"]
    for e in REGISTRY.values():
        kind = "baseline" if e.baseline else f"learner (SB3 {e.sb3})" if e.sb3 else "learner"
        target = e.target if isinstance(e.target, str) else _spec_of(e.target)
        rows.append(f"| `{e.name}` | {e.env} | {kind} | `{target}` |")
    return "\n".join(rows)


def names_help(env: Literal["plan", "anytime"]) -> str:
    """The names ``env`` accepts, for a command-line help text (generated from :data:`REGISTRY`)."""
    names = ", ".join(known_schedulers(env))
    sb3 = "; any stable-baselines3 / sb3-contrib algorithm with discrete actions (e.g. TRPO, QRDQN, ARS, RecurrentPPO)" \
        if env == "plan" else ""
    return f"{names}{sb3}; or package.module:ClassName (your own {'Scheduler' if env == 'plan' else 'AnytimePolicy'})"
