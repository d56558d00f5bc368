"""stable-baselines3 / sb3-contrib algorithms by name on the anytime env (``anytime_ppo``, ``anytime_a2c``,
``anytime_maskable_ppo``), trained on the objective they are scored on. Manual: ``docs/anytime_learners.md``.

* **Actions**: the env's ``action_mode`` (default ``"stage"``: STOP or one entry of the fixed menu of Pareto extensions
  with computation reuse, built from the calibration *fit* rows only — :mod:`adainf_env.envs.anytime.stages`;
  ``"block"``: RUN / SKIP / READ / STOP). PPO and A2C see the env's ``invalid_action="fallback"`` (an invalid action is
  replaced, ``info`` says so), MaskablePPO the env's ``action_masks()``.
* **Training envs** (:func:`training_env`): ``n_envs`` :class:`~adainf_env.envs.anytime.vec_env.AnytimeVecEnv` slots
  over the fit rows, side by side in one SB3 ``VecEnv``: a fraction ``bandit_fraction`` with one request per episode
  under a hard per-request budget drawn uniformly (the bandit setting), the rest token-bucket streams
  (``mode="stream", bucket=True``: the request's budget is what the shared bucket holds, the bucket refilled at the
  stream's average budget b̄, ``episode_length`` = the evaluation's 200 requests, the bucket starting empty), spread
  evenly over ``train_budgets`` (b̄ of :data:`~agents.evaluation.metrics.BUDGET_GRID` from 0.2 by default). The
  whole vector env is wrapped in :class:`~adainf_env.envs.wrappers.LagrangianVecEnvWrapper`: each stream slot's target
  is its b̄ (the reward becomes ``(r − λ_b̄·c)/(1 + λ_b̄)`` with λ_b̄ by dual ascent on the mean request cost), the
  bandit slots are unconstrained (their budget is hard, masked), and the target and λ are appended to the
  observation, so one policy serves every average budget and the bandit. A bandit slot's observation carries the
  bucket part a stream slot has, filled as "a bucket that holds exactly this request's budget" (level = refill =
  budget, the whole stream left), so both settings share one observation space.
* **Deployment** (the anytime harness's protocol, :class:`~agents.base.AnytimePolicy`): the same flat observation of
  each request in flight, built by the env's own :meth:`~adainf_env.envs.anytime.config.AnytimeConfig.observe` from the
  harness's batch and its bucket state (``state``: level, average budget, stream position), the target and λ
  appended as in training (λ frozen at the selected checkpoint's, interpolated between the trained averages); greedy
  actions, invalid ones replaced as the env's fallback does (masked for MaskablePPO). A stage is executed as the block
  actions the env would take (RUN/SKIP by the target plan's bits, then READ), so every cost is the env's.
* **Selection**: every ``eval_every`` env steps the greedy policy is scored on held-out calibration rows — the mean
  bandit accuracy over the budget grid plus the mean shared-stream accuracy at the training averages (overruns count
  as wrong; :func:`~agents.learners.base.held_out_bandit_accuracy`,
  :func:`~agents.learners.base.held_out_stream_accuracy`) — and :meth:`~agents.learners.base.Learner.keeps` decides
  (the best after ≥ 1 update; ``selected_step`` = env steps). No prior: the policy starts random.
"""

from __future__ import annotations

import copy
import functools
import time
from typing import Any, Sequence

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from adainf_env.envs.anytime.actions import AnytimeTable, READ, STOP
from adainf_env.envs.anytime.config import AnytimeConfig
from adainf_env.envs.anytime.core import RequestBatch
from adainf_env.envs.anytime.stages import MENU_DEFAULTS, STAGE_STOP, StageBatch, StageTree
from adainf_env.envs.anytime.vec_env import AnytimeVecEnv
from adainf_env.envs.options import ACTION_MODES
from adainf_env.envs.wrappers import LagrangianVecEnvWrapper
from adainf_env.errors import ConfigError, check_count
from adainf_env.stream import DEFAULT_STREAM
from adainf_env.tables.outcomes import OutcomeTable
from agents.baselines.anytime_policies import step_toward
from agents.evaluation.metrics import BUDGET_GRID
from agents.learners.base import (AnytimeLearner, held_out_bandit_accuracy, held_out_stream_accuracy,
                                  single_thread)
from agents.sb3.generic import accepted_kwargs, algorithm_class, check_discrete
from agents.sb3.scheduler import _algo_class

__all__ = ["AnytimeSB3Policy", "AnytimePPOPolicy", "AnytimeA2CPolicy", "AnytimeMaskablePPOPolicy", "ANYTIME_ALGOS",
           "training_env", "ConcatVecEnv", "TRAIN_BUDGETS", "HORIZON", "anytime_sb3_class", "check_anytime_algorithm"]

ANYTIME_ALGOS = ("ppo", "a2c", "maskable_ppo")
#: Average budgets of the training streams by default (those of the budget grid from 0.2: the shared-stream
#: evaluation's averages).
TRAIN_BUDGETS = tuple(b for b in BUDGET_GRID if b >= 0.2 - 1e-9)
#: Requests per training stream (the evaluation harness's stream length, :data:`adainf_env.stream.DEFAULT_STREAM`).
HORIZON = DEFAULT_STREAM.horizon

#: Per-algorithm defaults (see docs/anytime_learners.md for how they were chosen, on calibration data only).
_DEFAULT_KWARGS: dict[str, dict[str, Any]] = {
    "ppo": {"n_steps": 64, "batch_size": 1024, "n_epochs": 8, "gamma": 1.0, "gae_lambda": 0.95, "ent_coef": 0.03,
            "policy_kwargs": {"net_arch": [128, 128]}},
    "maskable_ppo": {"n_steps": 64, "batch_size": 1024, "n_epochs": 8, "gamma": 1.0, "gae_lambda": 0.95,
                     "ent_coef": 0.03, "policy_kwargs": {"net_arch": [128, 128]}},
    "a2c": {"n_steps": 16, "gamma": 1.0, "gae_lambda": 0.95, "ent_coef": 0.03,
            "policy_kwargs": {"net_arch": [128, 128]}},
}
#: Defaults of the Lagrangian wrapper (its keyword arguments; ``lagrangian=`` updates them).
_LAGRANGIAN_DEFAULTS: dict[str, Any] = {"lam_init": 1.0, "lam_lr": 0.2, "update_every": 256, "controller": "dual",
                                         "unit_episodes": True}


class ConcatVecEnv(VecEnv):
    """Several SB3 vec envs with equal spaces stepped as one (env indices in order); ``env_method``/``get_attr``
    (e.g. MaskablePPO's ``action_masks``) are gathered from each. ``seed(s)`` seeds the i-th part with ``s + offset``
    (its first env's global index), so env j gets ``s + j`` as in any SB3 vec env."""

    def __init__(self, parts: Sequence[VecEnv]) -> None:
        if not parts:
            raise ConfigError("ConcatVecEnv needs at least one vec env")
        first = parts[0]
        for p in parts[1:]:
            if p.observation_space != first.observation_space or p.action_space != first.action_space:
                raise ConfigError(f"ConcatVecEnv: spaces differ ({p.observation_space} vs {first.observation_space})")
        self.parts = list(parts)
        self._bounds = np.cumsum([0] + [p.num_envs for p in parts])
        super().__init__(int(self._bounds[-1]), first.observation_space, first.action_space)

    def _split(self, x: np.ndarray) -> list[np.ndarray]:
        return [x[self._bounds[i]:self._bounds[i + 1]] for i in range(len(self.parts))]

    def reset(self):
        return np.concatenate([p.reset() for p in self.parts])

    def step_async(self, actions: np.ndarray) -> None:
        for p, a in zip(self.parts, self._split(np.asarray(actions))):
            p.step_async(a)

    def step_wait(self):
        out = [p.step_wait() for p in self.parts]
        return (np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out]),
                np.concatenate([o[2] for o in out]), [i for o in out for i in o[3]])

    def seed(self, seed: int | None = None) -> list[int | None]:
        return [s for i, p in enumerate(self.parts)
                for s in p.seed(None if seed is None else int(seed) + int(self._bounds[i]))]

    def _gather(self, fn: str, name: str, indices: Any, *args: Any, **kwargs: Any) -> list[Any]:
        idx = self._get_indices(indices)
        out = [x for p in self.parts for x in getattr(p, fn)(name, *args, **kwargs)]
        return [out[i] for i in idx]

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return self._gather("get_attr", attr_name, indices)

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        if indices is not None:
            raise ConfigError("ConcatVecEnv.set_attr sets an attribute of every env (indices=None)")
        for p in self.parts:
            p.set_attr(attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list[Any]:
        return self._gather("env_method", method_name, indices, *method_args, **method_kwargs)

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False] * len(self._get_indices(indices))

    def close(self) -> None:
        for p in self.parts:
            p.close()


def _pad_bandit(obs: np.ndarray, num_features: int) -> np.ndarray:
    """A bandit observation [N, D] with the bucket part inserted as "a bucket holding exactly this request's budget"
    (level = refill = budget, the whole stream left)."""
    obs = np.asarray(obs, dtype=np.float32)
    at = num_features + 1
    b = obs[:, num_features:at]
    return np.concatenate([obs[:, :at], b, b, np.ones_like(b), obs[:, at:]], axis=1)


class _BanditAsStream(VecEnvWrapper):
    """A bandit :class:`AnytimeVecEnv` observed with a stream env's observation space (:func:`_pad_bandit`)."""

    def __init__(self, venv: AnytimeVecEnv, space: spaces.Box) -> None:
        self._f = venv.cfg.features.shape[1]
        super().__init__(venv, observation_space=space)

    def reset(self):
        return _pad_bandit(self.venv.reset(), self._f)

    def step_wait(self):
        obs, rew, dones, infos = self.venv.step_wait()
        for i in infos:
            if "terminal_observation" in i:
                i["terminal_observation"] = _pad_bandit(i["terminal_observation"][None], self._f)[0]
        return _pad_bandit(obs, self._f), rew, dones, infos


def training_env(table: OutcomeTable, *, n_envs: int, train_budgets: Sequence[float], bandit_fraction: float,
                 action_mode: str, invalid_action: str, seed: int, horizon: int = HORIZON,
                 lagrangian: dict[str, Any] | None = None,
                 stage_menu: StageTree | None = None) -> LagrangianVecEnvWrapper:
    """The SB3 training env of the anytime learners (module docstring): bandit slots and token-bucket stream slots at
    each average budget of ``train_budgets`` over ``table``, one ``VecEnv``, under the Lagrangian wrapper (stream
    slots' target = their average budget, bandit slots unconstrained). Env j is seeded ``seed + j``. Stage mode: every
    slot uses ``stage_menu`` (default: the env's own, built from ``table``)."""
    n_bandit = int(round(bandit_fraction * n_envs))
    n_stream = n_envs - n_bandit
    budgets = [float(b) for b in train_budgets]
    if n_stream and n_stream < len(budgets):
        raise ConfigError(f"n_envs={n_envs} leaves {n_stream} stream envs for {len(budgets)} train_budgets; "
                          "give at least one env per average budget")
    common: dict[str, Any] = dict(obs_format="flat", invalid_action=invalid_action, action_mode=action_mode)
    if action_mode == "stage" and stage_menu is not None:
        common["stage_menu"] = stage_menu
    parts: list[VecEnv] = []
    targets: list[float | None] = []
    counts = [len(c) for c in np.array_split(np.arange(n_stream), len(budgets))] if n_stream else []
    for b, k in zip(budgets, counts):
        parts.append(AnytimeVecEnv(table, k, mode="stream", bucket=True, budget=f"fixed:{b}", episode_length=horizon,
                                   **common))
        targets += [b] * k
    if n_bandit:
        bandit = AnytimeVecEnv(table, n_bandit, mode="bandit", budget="uniform", **common)
        space = parts[0].observation_space if parts else _padded_space(bandit)
        parts.append(_BanditAsStream(bandit, space))
        targets += [None] * n_bandit
    venv = ConcatVecEnv(parts)
    venv.seed(seed)
    return LagrangianVecEnvWrapper(venv, target=targets, **{**_LAGRANGIAN_DEFAULTS, **(lagrangian or {})})


def _padded_space(bandit: AnytimeVecEnv) -> spaces.Box:
    f = bandit.cfg.features.shape[1]
    sp = bandit.observation_space
    lo, hi = _pad_bandit(sp.low[None], f)[0], _pad_bandit(sp.high[None], f)[0]
    return spaces.Box(low=lo, high=hi, dtype=np.float32)


class AnytimeSB3Policy(AnytimeLearner):
    """An SB3 algorithm (``algo``) on the anytime env (module docstring; manual: ``docs/anytime_learners.md``).

    Keyword arguments: ``total_timesteps``, ``n_envs``, ``learning_rate``, ``algo_kwargs`` (merged over the
    defaults), ``eval_every`` (env steps), ``val_fraction``, ``action_mode`` (``"stage"`` | ``"block"``),
    ``train_budgets`` (average budgets of the training streams), ``bandit_fraction`` (share of bandit envs),
    ``lagrangian`` (options of :class:`~adainf_env.envs.wrappers.LagrangianVecEnvWrapper` over the defaults),
    ``prior`` (must be False)."""

    name = "anytime_sb3"
    algo = "ppo"

    def __init__(self, *, total_timesteps: int = 300_000, n_envs: int = 64, learning_rate: float = 1e-3,
                 algo_kwargs: dict[str, Any] | None = None, eval_every: int = 50_000, val_fraction: float = 0.2,
                 action_mode: str = "stage", train_budgets: Sequence[float] = TRAIN_BUDGETS,
                 bandit_fraction: float = 0.5, lagrangian: dict[str, Any] | None = None,
                 prior: bool = False) -> None:
        super().__init__()
        for k, v in (("total_timesteps", total_timesteps), ("n_envs", n_envs), ("eval_every", eval_every)):
            check_count(v, f"{self.name}: {k}")
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or not learning_rate > 0:
            raise ConfigError(f"{self.name}: learning_rate must be a number > 0, got {learning_rate!r}")
        if not (isinstance(val_fraction, (int, float)) and 0.0 < val_fraction < 1.0):
            raise ConfigError(f"{self.name}: val_fraction must lie in (0, 1), got {val_fraction!r}")
        if algo_kwargs is not None and not isinstance(algo_kwargs, dict):
            raise ConfigError(f"{self.name}: algo_kwargs must be a dict, got {type(algo_kwargs).__name__}")
        if lagrangian is not None and not isinstance(lagrangian, dict):
            raise ConfigError(f"{self.name}: lagrangian must be a dict of LagrangianVecEnvWrapper options, got "
                              f"{type(lagrangian).__name__}")
        if action_mode not in ACTION_MODES:
            raise ConfigError(f"{self.name}: action_mode must be one of {list(ACTION_MODES)}, got {action_mode!r}")
        if isinstance(bandit_fraction, bool) or not isinstance(bandit_fraction, (int, float)) \
                or not 0.0 <= bandit_fraction < 1.0:
            raise ConfigError(f"{self.name}: bandit_fraction must lie in [0, 1) (stream envs carry the averages), "
                              f"got {bandit_fraction!r}")
        try:
            tb = tuple(float(b) for b in train_budgets)
        except (TypeError, ValueError):
            raise ConfigError(f"{self.name}: train_budgets must be a sequence of numbers, got {train_budgets!r}") \
                from None
        if not tb or any(not 0.0 < b <= 1.0 for b in tb) or len(set(tb)) != len(tb):
            raise ConfigError(f"{self.name}: train_budgets must be distinct average budgets in (0, 1], got "
                              f"{train_budgets!r}")
        if not isinstance(prior, (bool, np.bool_)) or prior:
            raise ConfigError(f"{self.name}: no prior is supported on the anytime env; use prior=False")
        self.total_timesteps, self.n_envs, self.learning_rate = int(total_timesteps), int(n_envs), float(learning_rate)
        self.algo_kwargs = {**self._default_kwargs(), **(algo_kwargs or {})}
        self.eval_every, self.val_fraction, self.prior = int(eval_every), float(val_fraction), False
        self.action_mode, self.train_budgets, self.bandit_fraction = action_mode, tuple(sorted(tb)), float(
            bandit_fraction)
        self.lagrangian = {**_LAGRANGIAN_DEFAULTS, **(lagrangian or {})}
        self.masked_deploy = True
        self.model = None
        self.selected_step: int | None = None
        self.history: list[dict[str, Any]] = []

    def _algorithm(self) -> type:
        """The SB3 algorithm class this learner trains (a tuned built-in, or any by class name: :func:`anytime_sb3_class`)."""
        return _algo_class(self.algo) if self.algo in _DEFAULT_KWARGS else algorithm_class(self.algo)

    def _default_kwargs(self) -> dict[str, Any]:
        """The tuned defaults of the built-in algorithms; for another on-policy algorithm, ``ppo``'s filtered to the
        keyword arguments it takes (``gamma = 1`` within a request, the same network)."""
        if self.algo in _DEFAULT_KWARGS:
            return copy.deepcopy(_DEFAULT_KWARGS[self.algo])
        return accepted_kwargs(algorithm_class(self.algo), copy.deepcopy(_DEFAULT_KWARGS["ppo"]))

    def config(self) -> dict[str, Any]:
        return {"total_timesteps": self.total_timesteps, "n_envs": self.n_envs, "learning_rate": self.learning_rate,
                "algo_kwargs": dict(self.algo_kwargs), "eval_every": self.eval_every,
                "val_fraction": self.val_fraction, "action_mode": self.action_mode,
                "train_budgets": list(self.train_budgets), "bandit_fraction": self.bandit_fraction,
                "lagrangian": dict(self.lagrangian), "prior": self.prior}

    def report(self) -> dict[str, Any]:
        """The selected step, the multipliers it was deployed with and the held-out score that selected it."""
        return {"selected_step": self.selected_step, "prior": self.prior, "held_out_score": self.best_score,
                "lam": {f"{b:g}": round(float(v), 4) for b, v in zip(self._lam_targets, self._lam)}}

    # ------------------------------------------------------------------ fitting
    def fit(self, table: OutcomeTable, *, seed: int = 0) -> "AnytimeSB3Policy":
        with single_thread():  # small networks: intra-op threads only contend on a shared CPU
            return self._fit(table, int(seed))

    def _fit(self, table: OutcomeTable, seed: int) -> "AnytimeSB3Policy":
        from stable_baselines3.common.callbacks import BaseCallback

        super().fit(table, seed=seed)
        val_rows, fit_rows = self.split(table.num_samples, seed)
        fit_tab, val_tab = table.subset(fit_rows), table.subset(val_rows)
        masked = self.algo == "maskable_ppo"
        # the stage menu: from the calibration fit rows' accuracies and costs only, shared by training and deployment
        self._tree = StageTree(AnytimeTable.from_table(fit_tab), fit_tab, **MENU_DEFAULTS) \
            if self.action_mode == "stage" else None
        venv = training_env(fit_tab, n_envs=self.n_envs, train_budgets=self.train_budgets,
                            bandit_fraction=self.bandit_fraction, action_mode=self.action_mode,
                            invalid_action="raise" if masked else "fallback", seed=seed, lagrangian=self.lagrangian,
                            stage_menu=self._tree)
        self._lagr = venv.multipliers
        self._num_features = table.feature_dim
        try:
            self.model = self._algorithm()("MlpPolicy", venv, learning_rate=self.learning_rate, seed=seed,
                                                verbose=0, device="cpu", **self.algo_kwargs)
        except TypeError as e:
            raise ConfigError(f"{self.name}: bad algo_kwargs for {self.algo}: {e}") from None
        at_val = AnytimeTable.from_table(val_tab)
        self.best_score = -np.inf
        best: dict[str, Any] = {"state": None, "lam": None}
        owner = self

        class _Select(BaseCallback):
            def __init__(self) -> None:
                super().__init__()
                self.next_eval = owner.eval_every

            def _on_step(self) -> bool:
                return True

            def _on_rollout_end(self) -> None:
                if self.num_timesteps >= self.next_eval:
                    self.next_eval += owner.eval_every
                    owner._select(val_tab, at_val, self.num_timesteps, best)

        t0 = time.perf_counter()
        self.model.learn(total_timesteps=self.total_timesteps, callback=_Select())
        if not self.history or self.history[-1]["step"] != int(self.model.num_timesteps):
            self._select(val_tab, at_val, int(self.model.num_timesteps), best)
        self.model.policy.load_state_dict(best["state"])
        self._lam = best["lam"]
        self.fit_seconds = time.perf_counter() - t0
        return self

    def _select(self, val_tab: OutcomeTable, at: AnytimeTable, step: int, best: dict[str, Any]) -> None:
        """Score the greedy policy (with the current multipliers) on the held-out rows; keep it if it is the best."""
        self._lam_targets, self._lam = self._lagr.targets.copy(), self._lagr.lam.copy()
        grid = [b for b in BUDGET_GRID if b >= float(self.cost.min())]
        bandit = held_out_bandit_accuracy(self, val_tab, at, grid)
        stream = held_out_stream_accuracy(self, val_tab, at, np.asarray(self.train_budgets), seed=0xE7A1).tolist()
        score = float(np.mean(bandit) + np.mean(stream))
        self.history.append({"step": step, "bandit": bandit, "stream": stream, "score": score,
                             "lam": self._lam.round(4).tolist()})
        if self.keeps(score, self.best_score, step=step):
            self.best_score, self.selected_step = score, step
            best.update(state=copy.deepcopy(self.model.policy.state_dict()), lam=self._lam.copy())

    # ------------------------------------------------------------------ acting (harness protocol)
    def begin(self, batch: RequestBatch, idx: np.ndarray, table: OutcomeTable,
              state: dict[str, Any] | None = None) -> None:
        self._check_fitted()
        if self.model is None:
            raise ConfigError(f"{self.name}: call fit(calibration_table) first")
        if table.feature_dim != self._num_features:
            raise ConfigError(f"{self.name}: fitted on {self._num_features}-d features, got {table.feature_dim}-d")
        if getattr(self, "_obs_table", None) is not table or getattr(self, "_obs_at", None) is not batch.table:
            self._obs_table, self._obs_at = table, batch.table
            common = dict(table=batch.table, features=table.features, obs_format="flat",
                          action_mode=self.action_mode, menu=self._tree)
            self._cfg_stream = AnytimeConfig.build(mode="stream", bucket=True, episode_length=HORIZON, **common)
            self._cfg_bandit = AnytimeConfig.build(mode="bandit", **common)
        n = batch.n
        if getattr(self, "_slots", -1) != n:
            self._slots = n
            self._ctx = np.zeros((n, 5))  # shared flag, level, refill (average budget), fraction left, target
            self._node = np.zeros(n, dtype=np.int64)
            self._target = np.full(n, -1, dtype=np.int64)
            self._stopped = np.zeros(n, dtype=bool)
        idx = np.asarray(idx, dtype=np.int64)
        c = self._ctx
        if state is not None and state.get("avg_budget") is not None:
            k = len(idx)
            avg = np.broadcast_to(np.asarray(state["avg_budget"], dtype=np.float64), (k,))
            c[idx, 0] = 1.0
            c[idx, 1] = np.broadcast_to(np.asarray(state["level"], dtype=np.float64), (k,))
            c[idx, 2] = avg
            hor = float(state.get("horizon", HORIZON))
            c[idx, 3] = np.broadcast_to(1.0 - np.asarray(state.get("step", 0), dtype=np.float64) / hor, (k,))
            c[idx, 4] = avg
        else:
            c[idx] = 0.0
        self._node[idx] = 0
        self._target[idx] = -1
        self._stopped[idx] = False

    def _observe(self, batch: Any, live: np.ndarray) -> np.ndarray:
        """Flat observations of slots ``live`` as in training: the env's own, the bucket part from the stream state
        (or padded as in the bandit envs), the target and λ appended."""
        shared = self._ctx[live, 0] > 0.5
        out = np.empty((live.size, self.model.observation_space.shape[0]), dtype=np.float32)
        f = self._num_features
        if shared.any():
            s = live[shared]
            bs = np.zeros((batch.n, 3))
            bs[s] = self._ctx[s, 1:4]
            out[shared, :-2] = self._cfg_stream.observe(batch, bs)[s]
        if (~shared).any():
            b = live[~shared]
            out[~shared, :-2] = _pad_bandit(self._cfg_bandit.observe(batch, None)[b], f)
        target = np.where(shared, self._ctx[live, 4], np.nan)
        out[:, -2] = np.nan_to_num(target)
        out[:, -1] = np.where(shared, np.interp(np.nan_to_num(target), self._lam_targets, self._lam), 0.0)
        return out

    def act(self, batch: RequestBatch) -> np.ndarray:
        with single_thread():
            if self.action_mode == "stage":
                return self._act_stage(batch)
            return self._act_block(batch)

    def _predict(self, obs: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """The most probable *valid* action of each observation (``masks`` [k, A]): MaskablePPO's own masked greedy
        action, and the same rule on PPO's / A2C's action distribution (what they learnt of invalid actions — that
        the env turns them into a fallback — is not asked of them at deployment)."""
        if self.masked_deploy or self.algo == "maskable_ppo":
            import torch

            obs_t, _ = self.model.policy.obs_to_tensor(obs)
            with torch.no_grad():
                logits = self.model.policy.get_distribution(obs_t).distribution.logits.numpy()
            return np.where(masks, logits, -np.inf).argmax(1).astype(np.int64)
        act, _ = self.model.predict(obs, deterministic=True)
        return np.asarray(act, dtype=np.int64).reshape(-1)

    def _act_block(self, batch: RequestBatch) -> np.ndarray:
        a = np.full(batch.n, STOP, dtype=np.int64)
        live = np.flatnonzero(batch.active)
        if live.size == 0:
            return a
        a[live] = self._predict(self._observe(batch, live), batch.masks()[live])
        sub, _ = batch.substitute_invalid(np.where(batch.active, a, STOP))  # the env's fallback
        return np.where(batch.active, sub, STOP)

    def _stage_view(self, batch: RequestBatch) -> StageBatch:
        """The harness's block batch seen as the env's stage batch (this policy's menu nodes)."""
        view = getattr(self, "_view", None)
        if view is None or view.n != batch.n or view.blocks.table is not batch.table:
            view = self._view = StageBatch(batch.n, batch.table, self._tree,
                                           mask_over_budget=batch.mask_over_budget)
        view.blocks = batch
        view.node = self._node
        return view

    def _act_stage(self, batch: RequestBatch) -> np.ndarray:
        """Block actions of each slot's stage in progress; a stage decision (the policy's greedy stage action,
        invalid → STOP as the env's fallback) where a slot has none."""
        a = np.full(batch.n, STOP, dtype=np.int64)
        live = np.flatnonzero(batch.active & ~self._stopped)
        need = live[self._target[live] < 0]
        if need.size:
            view = self._stage_view(batch)
            masks = view.masks()
            choice = self._predict(self._observe(view, need), masks[need])
            full = np.full(batch.n, STAGE_STOP, dtype=np.int64)
            full[need] = choice
            full, _ = view.substitute_invalid(np.where(batch.active, full, STAGE_STOP))
            choice = full[need]
            stop = choice == STAGE_STOP
            self._stopped[need[stop]] = True
            nxt = self._tree.child[self._node[need[~stop]], choice[~stop] - 1]
            self._node[need[~stop]] = nxt
            self._target[need[~stop]] = self._tree.code[nxt]
        go = live[(self._target[live] >= 0) & ~self._stopped[live]]
        if go.size:
            step, deciding = step_toward(batch, go, self._target[go])  # the stage fits: no RUN turns into STOP
            a[go] = np.where(deciding, step, np.where(batch.fresh[go], READ, STOP))
            done = ~deciding
            self._target[go[done]] = -1  # after this READ the next call decides again
        return a


class AnytimePPOPolicy(AnytimeSB3Policy):
    name, algo = "anytime_ppo", "ppo"


class AnytimeA2CPolicy(AnytimeSB3Policy):
    name, algo = "anytime_a2c", "a2c"


class AnytimeMaskablePPOPolicy(AnytimeSB3Policy):
    name, algo = "anytime_maskable_ppo", "maskable_ppo"


def check_anytime_algorithm(cls_name: str) -> None:
    """:class:`ConfigError` unless SB3 / sb3-contrib algorithm ``cls_name`` can be an anytime learner here: an
    on-policy algorithm whose ``MlpPolicy`` is a (non-recurrent) actor-critic policy with a categorical action
    distribution — what training on the stage / block actions and the greedy masked deployment (the logits of the
    valid actions) need. Off-policy (DQN-like), recurrent and evolution-strategy algorithms are refused, naming why."""
    from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
    from stable_baselines3.common.policies import ActorCriticPolicy

    cls = algorithm_class(cls_name)
    policy = getattr(cls, "policy_aliases", {}).get("MlpPolicy")
    why = ("is not an on-policy algorithm" if not issubclass(cls, OnPolicyAlgorithm) else
           "has no MlpPolicy (a recurrent algorithm: its policy state is not carried across a request's steps)"
           if policy is None else
           "'s MlpPolicy is not an actor-critic policy" if not issubclass(policy, ActorCriticPolicy) else None)
    if why is not None:
        raise ConfigError(f"{cls_name} cannot be an anytime learner here: the anytime SB3 learners train an on-policy "
                          "actor-critic MlpPolicy (PPO, A2C, MaskablePPO, TRPO, ...) and deploy greedily over the "
                          f"logits of the valid actions; {cls_name} {why}".replace(f"{cls_name} 's", f"{cls_name}'s"))
    check_discrete(cls_name)


@functools.lru_cache(maxsize=None)
def anytime_sb3_class(cls_name: str, name: str) -> type:
    """The anytime learner ``name`` (the registry's ``anytime_<algorithm>``, e.g. ``anytime_trpo``) of SB3 /
    sb3-contrib algorithm ``cls_name``: an :class:`AnytimeSB3Policy` trained, selected and deployed exactly like
    ``anytime_ppo`` (:func:`check_anytime_algorithm` says which algorithms fit)."""
    check_anytime_algorithm(cls_name)
    return type(f"Anytime{cls_name}Policy", (AnytimeSB3Policy,),
                {"name": name, "algo": cls_name, "__module__": __name__,
                 "__doc__": f"{cls_name} (stable-baselines3 / sb3-contrib) on the anytime env, as AnytimeSB3Policy."})
