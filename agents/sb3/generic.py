"""Any stable-baselines3 / sb3-contrib algorithm, by its class name, as a plan-env scheduler (``TRPO``, ``QRDQN``,
``ARS``, ``RecurrentPPO``, …): ``make_scheduler("TRPO")``, ``--algo QRDQN``, ``--schedulers TRPO``.

:class:`GenericSB3Scheduler` is :class:`~agents.sb3.scheduler.SB3Scheduler` with the algorithm taken from the
libraries instead of the four tuned built-ins, so it is trained and selected exactly like them: the same bandit
vec env over the calibration fit rows seen through :class:`~agents.sb3.obs.SchedulerObsWrapper` (action = one of the
candidate plans, ``Discrete(K)``), the same held-out selection callback
(:meth:`~agents.learners.base.Learner.keeps`, ``selected_step``), the same budget-restricted greedy ``select()`` and
the same ``save()`` / :func:`agents.load_scheduler`.

* Which algorithms: every class stable-baselines3 and sb3-contrib export that subclasses SB3's ``BaseAlgorithm``
  (:func:`sb3_algorithms`) and accepts a ``Discrete`` action space — checked when the name is resolved
  (:func:`check_discrete`), so ``SAC``, ``TD3``, ``DDPG``, ``TQC`` and ``CrossQ`` (Box actions only) are refused
  with SB3's own reason before anything trains.
* Defaults (``None`` options): the tuned built-ins' (:data:`agents.sb3.scheduler.DEFAULTS`) for the algorithm's
  family — ``ppo``'s for on-policy algorithms (TRPO, RecurrentPPO), ``dqn``'s for off-policy ones (QRDQN), each
  filtered to the keyword arguments the algorithm takes — and the algorithm's own otherwise (ARS: its own learning
  rate, one env). ``algo_kwargs`` go to the algorithm's constructor unchanged.
* Policy: the algorithm's own MLP policy (``MlpPolicy``; ``MlpLstmPolicy`` for RecurrentPPO) with ``hidden`` as
  ``net_arch`` and, where the policy takes them, :data:`POLICY_DEFAULTS` (25 quantiles for QRDQN instead of its 200:
  the quantile loss costs n_quantiles² per sample, which at 200 made a default-length fit take hours on two cores;
  with one-step bandit episodes there is no return distribution over time for the extra quantiles to resolve); ``prior=True`` (the default where it applies: non-recurrent actor-critic policies, e.g. TRPO) adds the
  residual-around-LUT head of the built-ins (:class:`agents.sb3.policy.LUTPrior`).
* Scores behind ``select()``: the action distribution's logits (actor-critic), the mean of the quantiles (QRDQN),
  Q-values (DQN-like), the action network's outputs (ARS). Recurrent policies: each request is its own one-step
  episode, so a request is scored from the LSTM's initial state (zeros, ``episode_start=1``) — the state every
  training episode started from.
* Checkpoints hold the parameters and the selection state; training itself is not resumable (its algorithm-specific
  state is not captured): a rerun on a checkpoint directory restarts from scratch with a warning, as ``dqn`` does.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from adainf_env.errors import ConfigError
from agents.sb3.callback import SelectionCallback
from agents.sb3.policy import LUTPrior
from agents.sb3.scheduler import DEFAULTS, SB3Scheduler

__all__ = ["GenericSB3Scheduler", "sb3_algorithms", "algorithm_class", "check_discrete", "accepted_kwargs",
           "sb3_scheduler_class", "POLICY_DEFAULTS", "LIBRARIES"]

#: The libraries searched for algorithm classes, in this order.
LIBRARIES = ("stable_baselines3", "sb3_contrib")
#: Policy keyword arguments set where the algorithm's policy takes them (see the module docstring).
POLICY_DEFAULTS: dict[str, Any] = {"n_quantiles": 25}


@functools.lru_cache(maxsize=None)
def sb3_algorithms() -> tuple[str, ...]:
    """Class names of the algorithms the installed stable-baselines3 and sb3-contrib export."""
    from stable_baselines3.common.base_class import BaseAlgorithm

    names: list[str] = []
    for lib in LIBRARIES:
        try:
            module = importlib.import_module(lib)
        except ImportError:
            continue
        for n in getattr(module, "__all__", dir(module)):
            obj = getattr(module, n, None)
            if isinstance(obj, type) and issubclass(obj, BaseAlgorithm) and n not in names:
                names.append(n)
    return tuple(names)


def algorithm_class(name: str) -> type:
    """The algorithm class exported as ``name`` by stable-baselines3 or sb3-contrib; :class:`ConfigError` otherwise."""
    if name in sb3_algorithms():
        for lib in LIBRARIES:
            try:
                obj = getattr(importlib.import_module(lib), name, None)
            except ImportError:
                continue
            if obj is not None:
                return obj
    raise ConfigError(f"{name!r} is not a stable-baselines3 / sb3-contrib algorithm; installed: "
                      f"{', '.join(sb3_algorithms())}")


def _policy_alias(cls: type) -> str:
    aliases = list(getattr(cls, "policy_aliases", {}))
    for a in ("MlpPolicy", "MlpLstmPolicy"):
        if a in aliases:
            return a
    mlp = [a for a in aliases if a.startswith("Mlp")]
    if not mlp:
        raise ConfigError(f"{cls.__name__} has no MLP policy (its policies: {aliases}); it needs image or dict "
                          "observations, not the scheduler's flat vector")
    return mlp[0]


class _SpacesEnv(gym.Env):
    """An env that only has spaces: what an SB3 algorithm is built on to check its action space or rebuild a policy
    (it is never stepped)."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space) -> None:
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        return np.zeros(self.observation_space.shape, dtype=self.observation_space.dtype), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        raise RuntimeError("_SpacesEnv is not stepped")


def _build(cls: type, policy: Any, observation_space: spaces.Space, action_space: spaces.Space, *,
           setup: bool, policy_kwargs: dict[str, Any] | None = None) -> Any:
    kw: dict[str, Any] = {"device": "cpu", "verbose": 0, "_init_setup_model": setup}
    if policy_kwargs:
        kw["policy_kwargs"] = policy_kwargs
    if "buffer_size" in inspect.signature(cls.__init__).parameters:
        kw["buffer_size"] = 1  # no replay memory for a model that is never trained
    return cls(policy, _SpacesEnv(observation_space, action_space), **kw)


@functools.lru_cache(maxsize=None)
def check_discrete(name: str) -> None:
    """:class:`ConfigError` unless algorithm ``name`` accepts the plan env's ``Discrete`` actions (one per candidate
    plan). Builds the algorithm without its networks, so SB3's own action-space check decides."""
    cls = algorithm_class(name)
    try:
        _build(cls, _policy_alias(cls), spaces.Box(-1.0, 1.0, (2,), np.float32), spaces.Discrete(3), setup=False)
    except AssertionError as e:
        raise ConfigError(f"{name} cannot schedule: the plan env's action is a Discrete choice among candidate plans "
                          f"and {name} refuses it ({str(e).strip() or 'unsupported action space'})") from None


def accepted_kwargs(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``kwargs`` that algorithm class ``cls`` takes as keyword arguments."""
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in kwargs.items() if k in params}


def _defaults_for(name: str) -> dict[str, Any]:
    """Defaults of the generic scheduler of algorithm ``name`` (see the module docstring)."""
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
    from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

    cls = algorithm_class(name)
    family = "ppo" if issubclass(cls, OnPolicyAlgorithm) else "dqn" if issubclass(cls, OffPolicyAlgorithm) else None
    if family is None:
        lr = inspect.signature(cls.__init__).parameters.get("learning_rate")
        own = lr.default if lr is not None and isinstance(lr.default, (int, float)) else 1e-3
        return {"total_timesteps": DEFAULTS["ppo"]["total_timesteps"], "n_envs": 1, "learning_rate": float(own),
                "algo_kwargs": {}}
    d = DEFAULTS[family]
    return {**d, "algo_kwargs": accepted_kwargs(cls, d["algo_kwargs"])}


class GenericSB3Scheduler(SB3Scheduler):
    """A stable-baselines3 / sb3-contrib algorithm named by ``algo`` (its class name) as a scheduler (see the module
    docstring); the keyword arguments are :class:`~agents.sb3.scheduler.SB3Scheduler`'s. Built by
    :func:`sb3_scheduler_class` (one subclass per algorithm, whose ``name`` is the class name)."""

    name = "sb3_generic"
    #: The selection callback saves parameters only (see the module docstring).
    resumable_training = False

    def __init__(self, *, algo: str | None = None, **kwargs: Any) -> None:
        algo = type(self).name if algo is None else algo
        if algo != type(self).name:
            raise ConfigError(f"{type(self).__name__} runs {type(self).name!r}, not {algo!r}")
        super().__init__(algo=algo, **kwargs)

    # ----------------------------------------------------------------- the algorithm (SB3Scheduler's hooks)
    def _defaults(self, algo: str) -> dict[str, Any]:
        check_discrete(algo)
        return _defaults_for(algo)

    def _sb3_class(self) -> type:
        return algorithm_class(self.algo)

    def _base_policy(self) -> type:
        cls = self._sb3_class()
        return cls.policy_aliases[_policy_alias(cls)]

    def _recurrent(self) -> bool:
        return "Lstm" in _policy_alias(self._sb3_class())

    def _prior_supported(self) -> bool:
        from stable_baselines3.common.policies import ActorCriticPolicy

        return issubclass(self._base_policy(), ActorCriticPolicy) and not self._recurrent()

    def _policy_arg(self) -> Any:
        if self.prior:
            base = self._base_policy()
            return type(f"LUTPrior{base.__name__}", (LUTPrior, base), {})
        return _policy_alias(self._sb3_class())

    def _policy_kwargs(self) -> dict[str, Any]:
        params = inspect.signature(self._base_policy().__init__).parameters
        return {**{k: v for k, v in POLICY_DEFAULTS.items() if k in params}, **super()._policy_kwargs()}

    def _on_rollouts(self) -> bool:
        from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

        return not issubclass(self._sb3_class(), OffPolicyAlgorithm)

    def _build_policy(self) -> Any:
        assert self.builder is not None and self.candidates is not None
        model = _build(self._sb3_class(), self._policy_arg(), self.builder.space, spaces.Discrete(len(self.candidates)),
                       setup=True, policy_kwargs=self._policy_kwargs())
        return model.policy

    def _resume(self, saved: dict[str, Any] | None, ckpt: Path | None, model: Any, cb: SelectionCallback) -> int:
        if saved is not None and "resume" not in saved:
            warnings.warn(f"{ckpt}: {self.algo} training is not resumable (its algorithm state is not "
                          "checkpointed); training from scratch and overwriting it", stacklevel=3)
            return self.total_timesteps
        return super()._resume(saved, ckpt, model, cb)

    # ----------------------------------------------------------------- inference
    def _scores(self, obs: np.ndarray) -> torch.Tensor:
        """[N, K] scores of the candidate plans (see the module docstring): the argmax is the policy's greedy
        action, and budget restriction masks the scores of plans over budget."""
        pol = self.policy
        o = torch.as_tensor(obs)
        with torch.no_grad():
            if self._recurrent():
                n = o.shape[0]
                layers, _, hidden = pol.lstm_hidden_state_shape
                zeros = torch.zeros(layers, n, hidden)
                dist, _ = pol.get_distribution(o, (zeros, zeros.clone()), torch.ones(n))
                return dist.distribution.logits.double()
            if hasattr(pol, "get_distribution"):
                return pol.get_distribution(o).distribution.logits.double()
            if hasattr(pol, "quantile_net"):
                return pol.quantile_net(o).mean(dim=1).double()
            if hasattr(pol, "q_net"):
                return pol.q_net(o).double()
            if hasattr(pol, "action_net"):
                return pol.action_net(pol.extract_features(o, pol.features_extractor)).double()
        raise ConfigError(f"{self.algo}: its policy ({type(pol).__name__}) exposes no per-action scores "
                          "(distribution logits, Q-values or quantiles)")


@functools.lru_cache(maxsize=None)
def sb3_scheduler_class(name: str) -> type[GenericSB3Scheduler]:
    """The scheduler class of algorithm ``name`` (its class name; :class:`ConfigError` for an unknown name or one
    that refuses discrete actions). One class per name, so ``name`` is a class attribute like the built-ins'."""
    check_discrete(name)
    return type(f"{name}Scheduler", (GenericSB3Scheduler,),
                {"name": name, "__doc__": f"stable-baselines3 / sb3-contrib {name} as a scheduler [``{name}``].",
                 "__module__": __name__})

