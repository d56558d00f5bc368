"""Average-cost constrained training for any algorithm: Lagrangian reward wrappers for the single env and both vector
envs.

Both AdaInf envs report what each step paid as ``info["cost"]`` (the anytime env: every block, shortcut and read as it
is charged, the stem with a request's first step; the plan env: the plan's cost on the request's only step), the way
Safety-Gymnasium reports its costs. A budget on the *average* cost — "at most b̄ of the full model per request on
average" — is then the constraint of a constrained MDP, ``max E[Σ r] s.t. E[cost per unit] ≤ b̄``, and its Lagrangian
relaxation is an ordinary MDP with the reward ``r − λ·c``. These wrappers turn any env into that MDP, so any RL
algorithm (PPO, A2C, DQN, MaskablePPO, your own) trains under an average budget unchanged:

* **reward**: ``r − λ·c`` on every step, ``c = info["cost"]``; with ``normalize=True`` (default) divided by ``1 + λ``
  (OmniSafe's scaling of the combined advantage: a large multiplier must not swamp the reward's scale, which matters
  when one policy learns several targets at once);
* **multiplier**: λ ≥ 0 per target, updated every ``update_every`` finished *units* (a request, or an episode) of that
  target from their mean cost ``J``: dual ascent ``λ ← clip(λ + lam_lr·(J − b̄)/b̄, 0, lam_max)`` (``controller="dual"``,
  the Lagrangian method of PPO-Lag; Ray, Achiam & Amodei 2019) or a PID controller on the same relative error
  (``controller="pid"``; Stooke, Achiam & Abbeel 2020, "Responsive Safety in RL by PID Lagrangian Methods"): the
  integral term is the dual-ascent multiplier, the proportional term reacts at once to a violation, the derivative
  term (on the EMA of J) damps the oscillation that plain dual ascent shows around the target;
* **observation**: the target b̄ (and λ, ``observe_lambda=True``) appended — a flat ``Box`` gets two more columns, a
  ``Dict`` space a ``"constraint"`` key — so one policy serves any average budget it was trained on (give each env of a
  vector env its own target, or draw one per episode in the single env) and can be asked for one in between;
* **info**: ``info["cost"]`` is left exactly as the env reported it (Safety-Gymnasium's convention: algorithms that
  read the cost themselves, e.g. OmniSafe's, still see it); the wrapper adds ``info["cost_target"]`` and
  ``info["lagrange_multiplier"]`` (the λ the step's reward was shaped with).

Units (``unit=``): ``"request"`` (default) — a unit ends on a step whose info has ``request_done`` True (the anytime
env), or on every step when the info has no such key (the plan env: one step per request); so the constraint is on the
mean cost *per request* whatever the episode layout (bandit or stream). ``"episode"`` — a unit is an episode (the
Safety-Gymnasium cost limit per episode, ``Σ c ≤ d``).

The three wrappers:

* :class:`LagrangianCostWrapper` — a ``gymnasium.Wrapper`` for one env; ``target`` a number or a sequence (one drawn per
  episode from the wrapper's own generator, seeded by ``reset(seed=)``); ``pin_budget=True`` passes
  ``{"budget": target}`` in the reset options, so an AdaInf env with a shared token bucket refills it at the target
  rate (``mode="stream", bucket=True``: the bucket and the multiplier then agree on the average);
* :class:`LagrangianVecEnvWrapper` — an SB3 ``VecEnvWrapper``; ``target`` a number or one per env;
* :class:`LagrangianVectorWrapper` — a Gymnasium ``VectorWrapper`` (same-step autoreset: the cost of an env whose
  episode ended this step is read from ``infos["final_info"]``); ``target`` a number or one per env.

All three share :class:`LagrangeMultipliers` (the controller) and the same options; ``freeze()`` stops the updates
(evaluation), ``multipliers`` exposes the controller (``.lam``, ``.targets``, ``.lam_at(b)``, ``.history``). Bad
options raise :class:`~adainf_env.errors.ConfigError` naming the value.

Example (any SB3 algorithm under an average budget of 0.3 on the anytime env, token-bucket training streams)::

    from adainf_env.envs.anytime.vec_env import AnytimeVecEnv
    from adainf_env.envs.wrappers import LagrangianVecEnvWrapper
    venv = AnytimeVecEnv(num_envs=16, mode="stream", bucket=True, budget="fixed:0.3", obs_format="flat",
                         invalid_action="fallback")
    venv = LagrangianVecEnvWrapper(venv, target=0.3)
    PPO("MlpPolicy", venv).learn(100_000)
"""

from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorWrapper
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from adainf_env.errors import ConfigError

__all__ = ["LagrangeMultipliers", "LagrangianCostWrapper", "LagrangianVecEnvWrapper", "LagrangianVectorWrapper",
           "CONTROLLERS", "UNITS", "CONSTRAINT_KEY"]

CONTROLLERS = ("dual", "pid")
UNITS = ("request", "episode")
#: Key of the appended part of a ``Dict`` observation: ``[target, λ]`` (``[target]`` without ``observe_lambda``).
CONSTRAINT_KEY = "constraint"


def _number(v: Any, name: str, *, lo: float, hi: float = math.inf, lo_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
        raise ConfigError(f"{name} must be a finite number, got {v!r}")
    if (v <= lo if lo_open else v < lo) or v > hi:
        lo_s = f"> {lo:g}" if lo_open else f"≥ {lo:g}"
        raise ConfigError(f"{name} must be {lo_s}" + (f" and ≤ {hi:g}" if hi < math.inf else "") + f", got {v!r}")
    return float(v)


def _targets(target: Any, who: str, *, allow_none: bool = False) -> np.ndarray:
    """``target`` (a number or a non-empty sequence of numbers > 0; with ``allow_none`` entries may be None:
    unconstrained, NaN in the array) → float64 array."""
    vals = [target] if isinstance(target, (int, float, np.integer, np.floating)) and not isinstance(target, bool) \
        else target
    if isinstance(vals, (str, bytes)) or not isinstance(vals, (Sequence, np.ndarray)) or len(vals) == 0:
        raise ConfigError(f"{who}: target must be a number > 0 or a non-empty sequence of them, got {target!r}")
    out = np.array([np.nan if (v is None and allow_none) else _number(v, f"{who}: target", lo=0.0, lo_open=True)
                    for v in vals], dtype=np.float64)
    if np.isnan(out).all():
        raise ConfigError(f"{who}: at least one env needs a target (None marks an unconstrained env), got {target!r}")
    return out


class LagrangeMultipliers:
    """One multiplier λ ≥ 0 per distinct target average cost, updated from finished units' costs.

    ``add(target_index [k], unit_cost [k])`` records finished units; every ``update_every`` units of a target its
    multiplier moves (:meth:`_step`) by the mean cost of those units. ``lam_at(b)`` interpolates λ between the targets
    (a policy asked for an average it was not trained on sees the interpolated price). ``history`` lists
    ``(target, mean cost, λ after)`` per update. See the module docstring for the two controllers.
    """

    def __init__(self, targets: np.ndarray, *, controller: Literal["dual", "pid"] = "dual", lam_init: float = 1.0,
                 lam_lr: float = 0.05, lam_max: float = 20.0, update_every: int = 64, pid_kp: float = 0.5,
                 pid_ki: float = 0.05, pid_kd: float = 0.5, pid_ema: float = 0.9, who: str = "lagrangian") -> None:
        if controller not in CONTROLLERS:
            raise ConfigError(f"{who}: controller must be one of {list(CONTROLLERS)}, got {controller!r}")
        if isinstance(update_every, bool) or not isinstance(update_every, (int, np.integer)) or update_every < 1:
            raise ConfigError(f"{who}: update_every must be an integer ≥ 1 (finished units), got {update_every!r}")
        self.lam_max = _number(lam_max, f"{who}: lam_max", lo=0.0, lo_open=True)
        lam_init = _number(lam_init, f"{who}: lam_init", lo=0.0, hi=self.lam_max)
        self.lam_lr = _number(lam_lr, f"{who}: lam_lr", lo=0.0)
        self.pid_kp = _number(pid_kp, f"{who}: pid_kp", lo=0.0)
        self.pid_ki = _number(pid_ki, f"{who}: pid_ki", lo=0.0)
        self.pid_kd = _number(pid_kd, f"{who}: pid_kd", lo=0.0)
        self.pid_ema = _number(pid_ema, f"{who}: pid_ema", lo=0.0, hi=1.0)
        if self.pid_ema == 1.0:
            raise ConfigError(f"{who}: pid_ema must be < 1 (1 would never move the averages), got {pid_ema!r}")
        self.controller, self.update_every = controller, int(update_every)
        t = np.asarray(targets, dtype=np.float64)
        self.targets = np.unique(t[np.isfinite(t)])
        k = self.targets.size
        self.lam = np.full(k, lam_init)
        self._sum, self._cnt = np.zeros(k), np.zeros(k, dtype=np.int64)
        # PID state: integral (starts at λ_init, so both controllers start from the same price), EMAs of the relative
        # error (P term) and of the cost (D term) and the previous cost EMA
        self._integral = np.full(k, lam_init)
        self._err_ema = np.zeros(k)
        self._cost_ema = np.full(k, np.nan)
        self.frozen = False
        self.history: list[tuple[float, float, float]] = []

    def index(self, target: np.ndarray | float) -> np.ndarray:
        """Index of each target in :attr:`targets` (every target given must be one of them; −1 for NaN:
        unconstrained)."""
        t = np.atleast_1d(np.asarray(target, dtype=np.float64))
        free = np.isnan(t)
        i = np.clip(np.searchsorted(self.targets, np.where(free, self.targets[0], t)), 0, self.targets.size - 1)
        if free.any():
            return np.where(free, -1, self.index(np.where(free, self.targets[0], t)))
        if not np.allclose(self.targets[i], t, rtol=0, atol=1e-12):
            raise ConfigError(f"target(s) {t[~np.isclose(self.targets[i], t)].tolist()} not among "
                              f"{self.targets.tolist()}")
        return i

    def lam_at(self, target: np.ndarray | float) -> np.ndarray:
        """λ for average budget(s) ``target``: the target's own, interpolated between targets, clamped at the ends;
        0 for NaN (an unconstrained env)."""
        t = np.asarray(target, dtype=np.float64)
        return np.where(np.isnan(t), 0.0, np.interp(np.nan_to_num(t), self.targets, self.lam))

    def add(self, idx: np.ndarray, unit_cost: np.ndarray) -> None:
        """Record finished units (target indices ``idx``, their costs); update every target that has enough."""
        keep = np.asarray(idx) >= 0  # unconstrained envs' units price nothing
        idx, unit_cost = np.asarray(idx)[keep], np.asarray(unit_cost)[keep]
        if self.frozen or len(idx) == 0:
            return
        np.add.at(self._sum, idx, unit_cost)
        np.add.at(self._cnt, idx, 1)
        for k in np.flatnonzero(self._cnt >= self.update_every):
            self._step(int(k), self._sum[k] / self._cnt[k])
            self._sum[k], self._cnt[k] = 0.0, 0

    def _step(self, k: int, mean_cost: float) -> None:
        d = self.targets[k]
        err = (mean_cost - d) / d
        if self.controller == "dual":
            self.lam[k] = min(max(self.lam[k] + self.lam_lr * err, 0.0), self.lam_max)
        else:
            self._integral[k] = min(max(self._integral[k] + self.pid_ki * err, 0.0), self.lam_max)
            a = self.pid_ema
            self._err_ema[k] = a * self._err_ema[k] + (1 - a) * err
            prev = self._cost_ema[k]
            self._cost_ema[k] = mean_cost if np.isnan(prev) else a * prev + (1 - a) * mean_cost
            rise = 0.0 if np.isnan(prev) else max(0.0, (self._cost_ema[k] - prev) / d)
            self.lam[k] = min(max(self.pid_kp * self._err_ema[k] + self._integral[k] + self.pid_kd * rise, 0.0),
                              self.lam_max)
        self.history.append((float(d), float(mean_cost), float(self.lam[k])))


class _Shaper:
    """What the three wrappers share: options, the controller, per-env unit accounting, reward and observation."""

    def _setup(self, obs_space: spaces.Space, targets: np.ndarray, *, unit: str, normalize: bool,
               observe_lambda: bool, who: str, **controller: Any) -> None:
        if unit not in UNITS:
            raise ConfigError(f"{who}: unit must be one of {list(UNITS)}, got {unit!r}")
        for k, v in (("normalize", normalize), ("observe_lambda", observe_lambda)):
            if not isinstance(v, (bool, np.bool_)):
                raise ConfigError(f"{who}: {k} must be True or False, got {v!r}")
        self.unit, self.normalize, self.observe_lambda = unit, bool(normalize), bool(observe_lambda)
        self.multipliers = LagrangeMultipliers(targets, who=who, **controller)
        extra = 2 if self.observe_lambda else 1
        hi = np.array([max(1.0, float(np.nanmax(targets))), self.multipliers.lam_max][:extra], dtype=np.float32)
        part = spaces.Box(low=np.zeros(extra, np.float32), high=hi, dtype=np.float32)
        if isinstance(obs_space, spaces.Dict):
            if CONSTRAINT_KEY in obs_space.spaces:
                raise ConfigError(f"{who}: the observation already has a {CONSTRAINT_KEY!r} key (wrapped twice?)")
            self._dict_obs = True
            self.shaped_observation_space = spaces.Dict({**obs_space.spaces, CONSTRAINT_KEY: part})
        elif isinstance(obs_space, spaces.Box) and len(obs_space.shape) == 1:
            self._dict_obs = False
            self.shaped_observation_space = spaces.Box(
                low=np.concatenate([obs_space.low, part.low]).astype(np.float32),
                high=np.concatenate([obs_space.high, part.high]).astype(np.float32), dtype=np.float32)
        else:
            raise ConfigError(f"{who}: the observation space must be a 1-d Box or a Dict to append the target to, "
                              f"got {obs_space}")

    def freeze(self, frozen: bool = True) -> None:
        """Stop (``True``) or resume the multiplier updates (rewards and observations keep using the current λ)."""
        self.multipliers.frozen = bool(frozen)

    def _constraint(self, target: np.ndarray) -> np.ndarray:
        """[N, 1 or 2] float32: target (and λ) per env; zeros for an unconstrained env."""
        cols = [np.nan_to_num(target)] + ([self.multipliers.lam_at(target)] if self.observe_lambda else [])
        return np.stack(cols, axis=-1).astype(np.float32)

    def _augment(self, obs: Any, target: np.ndarray) -> Any:
        """Batched observation [N, ...] with the constraint part appended."""
        c = self._constraint(target)
        if self._dict_obs:
            return {**obs, CONSTRAINT_KEY: c}
        return np.concatenate([np.asarray(obs, dtype=np.float32).reshape(len(target), -1), c], axis=1)

    def _shape(self, rew: np.ndarray, cost: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shaped rewards, λ used) for rewards ``rew`` and costs ``cost`` [N]."""
        lam = self.multipliers.lam_at(target)
        out = rew - lam * cost
        if self.normalize:
            out = out / (1.0 + lam)
        return out, lam

    def _account(self, acc: np.ndarray, cost: np.ndarray, unit_end: np.ndarray, tidx: np.ndarray) -> None:
        """Add ``cost`` to each env's running unit cost ``acc`` (in place); finished units feed the multipliers."""
        acc += cost
        if unit_end.any():
            self.multipliers.add(tidx[unit_end], acc[unit_end])
            acc[unit_end] = 0.0

    def _unit_end(self, request_done: np.ndarray | None, done: np.ndarray) -> np.ndarray:
        if self.unit == "episode" or request_done is None:
            return done if self.unit == "episode" else np.ones_like(done, dtype=bool)
        return request_done | done


def _cost_of(info: dict[str, Any], who: str) -> float:
    c = info.get("cost")
    if c is None:
        raise ConfigError(f"{who}: the env's step info has no 'cost' (Safety-Gymnasium's per-step cost); this wrapper "
                          "needs an env that reports one")
    return float(c)


class LagrangianCostWrapper(_Shaper, gym.Wrapper):
    """One env under an average-cost constraint: reward ``r − λ·c`` (÷ (1 + λ) with ``normalize``), the target (and
    λ) appended to the observation, λ by dual ascent or PID (see the module docstring for every option).

    Keyword arguments: ``target`` (number > 0, or a sequence: one drawn per episode), ``unit`` (``"request"`` |
    ``"episode"``), ``controller`` (``"dual"`` | ``"pid"``), ``lam_init`` (1.0), ``lam_lr`` (0.05), ``lam_max``
    (20), ``update_every`` (64 units), ``pid_kp``/``pid_ki``/``pid_kd``/``pid_ema`` (0.5 / 0.05 / 0.5 / 0.9),
    ``normalize`` (True), ``observe_lambda`` (True), ``pin_budget`` (False: see the module docstring)."""

    def __init__(self, env: gym.Env, *, target: float | Sequence[float], unit: Literal["request", "episode"] = "request",
                 controller: Literal["dual", "pid"] = "dual", lam_init: float = 1.0, lam_lr: float = 0.05,
                 lam_max: float = 20.0, update_every: int = 64, pid_kp: float = 0.5, pid_ki: float = 0.05,
                 pid_kd: float = 0.5, pid_ema: float = 0.9, normalize: bool = True, observe_lambda: bool = True,
                 pin_budget: bool = False) -> None:
        gym.Wrapper.__init__(self, env)
        who = type(self).__name__
        self._choices = _targets(target, who)
        if not isinstance(pin_budget, (bool, np.bool_)):
            raise ConfigError(f"{who}: pin_budget must be True or False, got {pin_budget!r}")
        self.pin_budget = bool(pin_budget)
        self._setup(env.observation_space, self._choices, unit=unit, normalize=normalize,
                    observe_lambda=observe_lambda, who=who, controller=controller, lam_init=lam_init, lam_lr=lam_lr,
                    lam_max=lam_max, update_every=update_every, pid_kp=pid_kp, pid_ki=pid_ki, pid_kd=pid_kd,
                    pid_ema=pid_ema)
        self.observation_space = self.shaped_observation_space
        self._rng = np.random.default_rng()
        self._target = np.array([self._choices[0]])
        self._acc = np.zeros(1)
        self._who = who

    @property
    def target(self) -> float:
        """The current episode's target average cost."""
        return float(self._target[0])

    def _one(self, obs: Any) -> Any:
        batched = {k: np.asarray(v)[None] for k, v in obs.items()} if self._dict_obs else np.asarray(obs)[None]
        out = self._augment(batched, self._target)
        return {k: v[0] for k, v in out.items()} if self._dict_obs else out[0]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._rng = np.random.default_rng([int(seed), 0x1A6])
        self._target = np.array([self._choices[self._rng.integers(self._choices.size)]])
        if self.pin_budget:
            options = {**(options or {}), "budget": self.target}
        obs, info = self.env.reset(seed=seed, options=options)
        self._acc[:] = 0.0
        info = {**info, "cost_target": self.target}
        return self._one(obs), info

    def step(self, action: Any):
        obs, rew, term, trunc, info = self.env.step(action)
        cost = np.array([_cost_of(info, self._who)])
        shaped, lam = self._shape(np.array([float(rew)]), cost, self._target)
        done = np.array([bool(term or trunc)])
        rd = np.array([bool(info["request_done"])]) if "request_done" in info else None
        self._account(self._acc, cost, self._unit_end(rd, done), self.multipliers.index(self._target))
        info = {**info, "cost_target": self.target, "lagrange_multiplier": float(lam[0])}
        return self._one(obs), float(shaped[0]), term, trunc, info


def _per_env_targets(target: Any, n: int, who: str) -> np.ndarray:
    t = _targets(target, who, allow_none=True)
    if t.size == 1:
        return np.full(n, t[0])
    if t.size != n:
        raise ConfigError(f"{who}: target must be one number or one per env ({n}), got {t.size} values")
    return t


class LagrangianVecEnvWrapper(_Shaper, VecEnvWrapper):
    """An SB3 ``VecEnv`` under average-cost constraints (one target per env, or one for all; ``None`` for an
    unconstrained env: reward as the env gives it, target and λ observed as 0 — e.g. envs with per-request hard budgets
    trained alongside); options as :class:`LagrangianCostWrapper` without ``pin_budget`` (give each env's budget
    process its target yourself).

    ``unit_episodes=True``: the learner's episodes are the units — ``dones`` is True at each unit's end (not a
    truncation: nothing is bootstrapped across it) while the env's stream, and its token bucket, go on. With the
    multiplier pricing the average, each request is then its own episode of return ``r − λ·c`` (undiscounted inside
    the request whatever γ), the per-request objective the Lagrangian relaxation decomposes into; the bucket's state
    stays in the observation."""

    def __init__(self, venv: VecEnv, *, target: float | Sequence[float],
                 unit: Literal["request", "episode"] = "request", controller: Literal["dual", "pid"] = "dual",
                 lam_init: float = 1.0, lam_lr: float = 0.05, lam_max: float = 20.0, update_every: int = 64,
                 pid_kp: float = 0.5, pid_ki: float = 0.05, pid_kd: float = 0.5, pid_ema: float = 0.9,
                 normalize: bool = True, observe_lambda: bool = True, unit_episodes: bool = False) -> None:
        who = type(self).__name__
        if not isinstance(unit_episodes, (bool, np.bool_)):
            raise ConfigError(f"{who}: unit_episodes must be True or False, got {unit_episodes!r}")
        self.unit_episodes = bool(unit_episodes)
        self._target = _per_env_targets(target, venv.num_envs, who)
        self._setup(venv.observation_space, self._target, unit=unit, normalize=normalize,
                    observe_lambda=observe_lambda, who=who, controller=controller, lam_init=lam_init, lam_lr=lam_lr,
                    lam_max=lam_max, update_every=update_every, pid_kp=pid_kp, pid_ki=pid_ki, pid_kd=pid_kd,
                    pid_ema=pid_ema)
        VecEnvWrapper.__init__(self, venv, observation_space=self.shaped_observation_space)
        self._tidx = self.multipliers.index(self._target)
        self._acc = np.zeros(venv.num_envs)
        self._who = who

    @property
    def targets(self) -> np.ndarray:
        """Each env's target average cost (a copy)."""
        return self._target.copy()

    def reset(self):
        self._acc[:] = 0.0
        return self._augment(self.venv.reset(), self._target)

    def step_wait(self):
        obs, rew, dones, infos = self.venv.step_wait()
        cost = np.array([_cost_of(i, self._who) for i in infos])
        shaped, lam = self._shape(np.asarray(rew, dtype=np.float64), cost, self._target)
        rd = np.array([bool(i["request_done"]) for i in infos]) if infos and "request_done" in infos[0] else None
        unit_end = self._unit_end(rd, np.asarray(dones, dtype=bool))
        self._account(self._acc, cost, unit_end, self._tidx)
        obs = self._augment(obs, self._target)
        c = self._constraint(self._target)
        for k, i in enumerate(infos):
            i["cost_target"] = float(self._target[k])
            i["lagrange_multiplier"] = float(lam[k])
            if "terminal_observation" in i:
                t = i["terminal_observation"]
                i["terminal_observation"] = ({**t, CONSTRAINT_KEY: c[k]} if self._dict_obs else
                                             np.concatenate([np.asarray(t, dtype=np.float32).reshape(-1), c[k]]))
        if self.unit_episodes:  # the learner's episode ends with the unit (the env's stream goes on)
            for k in np.flatnonzero(unit_end & ~np.asarray(dones, dtype=bool)):
                infos[k]["TimeLimit.truncated"] = False
                infos[k]["terminal_observation"] = obs[k].copy() if not self._dict_obs else \
                    {key: v[k].copy() for key, v in obs.items()}
            dones = np.asarray(dones, dtype=bool) | unit_end
        return obs, shaped.astype(np.float32), dones, infos


class LagrangianVectorWrapper(_Shaper, VectorWrapper):
    """A Gymnasium ``VectorEnv`` (same-step autoreset) under average-cost constraints (one target per env, or one for
    all; ``None``: unconstrained, as :class:`LagrangianVecEnvWrapper`); options as :class:`LagrangianVecEnvWrapper`."""

    def __init__(self, env: gym.vector.VectorEnv, *, target: float | Sequence[float],
                 unit: Literal["request", "episode"] = "request", controller: Literal["dual", "pid"] = "dual",
                 lam_init: float = 1.0, lam_lr: float = 0.05, lam_max: float = 20.0, update_every: int = 64,
                 pid_kp: float = 0.5, pid_ki: float = 0.05, pid_kd: float = 0.5, pid_ema: float = 0.9,
                 normalize: bool = True, observe_lambda: bool = True) -> None:
        VectorWrapper.__init__(self, env)
        who = type(self).__name__
        mode = env.metadata.get("autoreset_mode")
        if mode is not None and getattr(mode, "name", str(mode)) != "SAME_STEP":
            raise ConfigError(f"{who}: needs a vector env with AutoresetMode.SAME_STEP (the step that ends an episode "
                              f"carries its cost in final_info), got {mode}")
        self._target = _per_env_targets(target, env.num_envs, who)
        self._setup(env.single_observation_space, self._target, unit=unit, normalize=normalize,
                    observe_lambda=observe_lambda, who=who, controller=controller, lam_init=lam_init, lam_lr=lam_lr,
                    lam_max=lam_max, update_every=update_every, pid_kp=pid_kp, pid_ki=pid_ki, pid_kd=pid_kd,
                    pid_ema=pid_ema)
        self.single_observation_space = self.shaped_observation_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, env.num_envs)
        self._tidx = self.multipliers.index(self._target)
        self._acc = np.zeros(env.num_envs)
        self._who = who

    @property
    def targets(self) -> np.ndarray:
        return self._target.copy()

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._acc[:] = 0.0
        return self._augment(obs, self._target), info

    def _field(self, infos: dict[str, Any], key: str, done: np.ndarray) -> np.ndarray | None:
        """Per-env ``key`` of this step: from ``final_info`` for the envs whose episode ended, else the step info."""
        n = self.num_envs
        out, have = np.zeros(n), np.zeros(n, dtype=bool)
        if key in infos:
            m = np.asarray(infos.get("_" + key, np.ones(n, dtype=bool)), dtype=bool)
            out = np.where(m, np.asarray(infos[key], dtype=np.float64), out)
            have |= m
        fin = infos.get("final_info")
        if fin is not None and key in fin:
            m = np.asarray(fin.get("_" + key, done), dtype=bool) & done
            out = np.where(m, np.asarray(fin[key], dtype=np.float64), out)
            have |= m
        if not have.any():
            return None
        if not have.all():
            raise ConfigError(f"{self._who}: step info has no {key!r} for env(s) {np.flatnonzero(~have).tolist()}")
        return out

    def step(self, actions: Any):
        obs, rew, term, trunc, infos = self.env.step(actions)
        done = np.asarray(term, dtype=bool) | np.asarray(trunc, dtype=bool)
        cost = self._field(infos, "cost", done)
        if cost is None:
            raise ConfigError(f"{self._who}: the env's step info has no 'cost' (Safety-Gymnasium's per-step cost)")
        shaped, lam = self._shape(np.asarray(rew, dtype=np.float64), cost, self._target)
        rd = self._field(infos, "request_done", done)
        self._account(self._acc, cost, self._unit_end(None if rd is None else rd.astype(bool), done), self._tidx)
        infos = {**infos, "cost_target": self._target.copy(), "lagrange_multiplier": lam}
        if "final_obs" in infos:
            fo = infos["final_obs"]
            if isinstance(fo, np.ndarray) and fo.dtype == object:  # one entry per env (None where none ended)
                c = self._constraint(self._target)
                fo = fo.copy()
                for k in np.flatnonzero(done):
                    t = fo[k]
                    if t is not None:
                        fo[k] = ({**t, CONSTRAINT_KEY: c[k]} if self._dict_obs else
                                 np.concatenate([np.asarray(t, dtype=np.float32).reshape(-1), c[k]]))
            else:  # a batched observation (every env ended together)
                fo = self._augment(fo, self._target)
            infos["final_obs"] = fo
        return self._augment(obs, self._target), shaped.astype(np.float32), term, trunc, infos
