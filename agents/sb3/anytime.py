"""stable-baselines3 / sb3-contrib algorithms by name on the anytime env (``anytime_ppo``, ``anytime_a2c``,
``anytime_maskable_ppo``): the block-level actions of ``AdaInf/Anytime-v0`` (RUN / SKIP / READ / STOP), trained on
:class:`~adainf_env.envs.anytime.vec_env.AnytimeVecEnv` over the calibration *fit* rows.

* Training env: bandit mode (one request per episode, a hard per-request budget drawn uniformly), flat observations;
  PPO and A2C see the env's ``invalid_action="fallback"`` (an invalid action is replaced, ``info`` says so),
  MaskablePPO the env's ``action_masks()``. An episode is a request of up to 2B + 1 steps with its reward at the end,
  so the discount is γ = 1 (nothing to trade off in time within a request) and GAE λ = 0.95 trades bias for
  variance over those steps.
* Deployment (the anytime harness's protocol, :class:`~agents.baselines.anytime_policies.AnytimePolicy`): the same
  flat observation of each request in flight, built by the env's own
  :meth:`~adainf_env.envs.anytime.core.AnytimeConfig.observe`, the greedy action, invalid ones substituted as the env's
  fallback does (masked for MaskablePPO). In a shared-bucket stream the request's budget is what the bucket holds.
* Selection: every ``eval_every`` env steps the greedy policy is scored on held-out calibration rows (bandit sweep over
  :data:`~agents.evaluation.metrics.BUDGET_GRID`, over-budget answers count as wrong); the best mean after ≥ 1 update is
  kept (``selected_step`` = env steps). No prior: the policy starts random.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np

from adainf_env.envs.anytime.core import STOP, AnytimeConfig, AnytimeTable, RequestBatch
from adainf_env.envs.anytime.vec_env import AnytimeVecEnv
from adainf_env.errors import ConfigError
from adainf_env.feasibility import COST_TOL
from adainf_env.tables.outcomes import OutcomeTable
from agents.baselines.anytime_policies import AnytimePolicy
from agents.evaluation.anytime_harness import serve_requests
from agents.evaluation.metrics import BUDGET_GRID
from agents.learners.base import single_thread, split_rows

__all__ = ["AnytimeSB3Policy", "AnytimePPOPolicy", "AnytimeA2CPolicy", "AnytimeMaskablePPOPolicy", "ANYTIME_ALGOS"]

ANYTIME_ALGOS = ("ppo", "a2c", "maskable_ppo")

#: Per-algorithm defaults (γ = 1 within a request, GAE λ = 0.95); sized for about a minute per fit on two cores.
_DEFAULT_KWARGS: dict[str, dict[str, Any]] = {
    "ppo": {"n_steps": 32, "batch_size": 1024, "n_epochs": 4, "gamma": 1.0, "gae_lambda": 0.95, "ent_coef": 0.01},
    "maskable_ppo": {"n_steps": 32, "batch_size": 1024, "n_epochs": 4, "gamma": 1.0, "gae_lambda": 0.95,
                     "ent_coef": 0.01},
    "a2c": {"n_steps": 16, "gamma": 1.0, "gae_lambda": 0.95, "ent_coef": 0.01},
}


def _algo_class(algo: str) -> type:
    if algo == "ppo":
        from stable_baselines3 import PPO
        return PPO
    if algo == "a2c":
        from stable_baselines3 import A2C
        return A2C
    from sb3_contrib import MaskablePPO
    return MaskablePPO


class AnytimeSB3Policy(AnytimePolicy):
    """An SB3 algorithm (``algo``) on the anytime env. Keyword arguments: ``total_timesteps``, ``n_envs``,
    ``learning_rate``, ``algo_kwargs`` (merged over the defaults), ``eval_every`` (env steps), ``val_fraction``,
    ``prior`` (must be False)."""

    name = "anytime_sb3"
    algo = "ppo"

    def __init__(self, *, total_timesteps: int = 200_000, n_envs: int = 64, learning_rate: float = 1e-3,
                 algo_kwargs: dict[str, Any] | None = None, eval_every: int = 50_000, val_fraction: float = 0.2,
                 prior: bool = False) -> None:
        super().__init__()
        for k, v in (("total_timesteps", total_timesteps), ("n_envs", n_envs), ("eval_every", eval_every)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"{self.name}: {k} must be an integer ≥ 1, got {v!r}")
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or not learning_rate > 0:
            raise ConfigError(f"{self.name}: learning_rate must be a number > 0, got {learning_rate!r}")
        if not (isinstance(val_fraction, (int, float)) and 0.0 < val_fraction < 1.0):
            raise ConfigError(f"{self.name}: val_fraction must lie in (0, 1), got {val_fraction!r}")
        if algo_kwargs is not None and not isinstance(algo_kwargs, dict):
            raise ConfigError(f"{self.name}: algo_kwargs must be a dict, got {type(algo_kwargs).__name__}")
        if not isinstance(prior, (bool, np.bool_)) or prior:
            raise ConfigError(f"{self.name}: no prior is supported on the anytime env; use prior=False")
        self.total_timesteps, self.n_envs, self.learning_rate = int(total_timesteps), int(n_envs), float(learning_rate)
        self.algo_kwargs = {**_DEFAULT_KWARGS[self.algo], **(algo_kwargs or {})}
        self.eval_every, self.val_fraction, self.prior = int(eval_every), float(val_fraction), False
        self.model = None
        self.selected_step: int | None = None
        self.history: list[dict[str, Any]] = []

    def config(self) -> dict[str, Any]:
        return {"total_timesteps": self.total_timesteps, "n_envs": self.n_envs, "learning_rate": self.learning_rate,
                "algo_kwargs": dict(self.algo_kwargs), "eval_every": self.eval_every,
                "val_fraction": self.val_fraction, "prior": self.prior}

    def provenance(self) -> dict[str, Any]:
        return {"selected_step": self.selected_step, "prior": self.prior}

    # ------------------------------------------------------------------ fitting
    def fit(self, table: OutcomeTable, *, seed: int = 0) -> "AnytimeSB3Policy":
        with single_thread():  # small networks: intra-op threads only contend on a shared CPU
            return self._fit(table, int(seed))

    def _fit(self, table: OutcomeTable, seed: int) -> "AnytimeSB3Policy":
        from stable_baselines3.common.callbacks import BaseCallback

        super().fit(table, seed=seed)
        val_rows, fit_rows = split_rows(table.num_samples, self.val_fraction, seed, who=self.name)
        fit_tab, val_tab = table.subset(fit_rows), table.subset(val_rows)
        masked = self.algo == "maskable_ppo"
        venv = AnytimeVecEnv(fit_tab, self.n_envs, mode="bandit", budget="uniform", obs_format="flat",
                             invalid_action="raise" if masked else "fallback")
        venv.seed(seed)
        try:
            self.model = _algo_class(self.algo)("MlpPolicy", venv, learning_rate=self.learning_rate, seed=seed,
                                                verbose=0, device="cpu", **self.algo_kwargs)
        except TypeError as e:
            raise ConfigError(f"{self.name}: bad algo_kwargs for {self.algo}: {e}") from None
        at_val = AnytimeTable.from_table(val_tab)
        best: dict[str, Any] = {"score": -np.inf, "state": None}
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
        self._select(val_tab, at_val, int(self.model.num_timesteps), best)
        self.model.policy.load_state_dict(best["state"])
        self.fit_seconds = time.perf_counter() - t0
        return self

    def _select(self, val_tab: OutcomeTable, at: AnytimeTable, step: int, best: dict[str, Any]) -> None:
        n = val_tab.num_samples
        grid = [b for b in BUDGET_GRID if b >= float(self.cost.min())]
        rows, budgets = np.tile(np.arange(n), len(grid)), np.repeat(grid, n)
        r = serve_requests(self, val_tab, rows, budgets, at=at)
        ok = r["correct"] & (r["cost"] <= budgets + COST_TOL)
        accs = [float(ok[i * n:(i + 1) * n].mean()) for i in range(len(grid))]
        score = float(np.mean(accs))
        self.history.append({"step": step, "bandit": accs, "score": score})
        if score > best["score"]:
            best.update(score=score, state=copy.deepcopy(self.model.policy.state_dict()))
            self.selected_step = step

    # ------------------------------------------------------------------ acting (harness protocol)
    def begin(self, batch: RequestBatch, idx: np.ndarray, table: OutcomeTable,
              state: dict[str, Any] | None = None) -> None:
        self._check_fitted()
        if self.model is None:
            raise ConfigError(f"{self.name}: call fit(calibration_table) first")
        if getattr(self, "_obs_table", None) is not table:
            self._obs_table = table
            self._obs_cfg = AnytimeConfig.build(table=batch.table, features=table.features, mode="bandit",
                                                obs_format="flat")

    def act(self, batch: RequestBatch) -> np.ndarray:
        a = np.full(batch.n, STOP, dtype=np.int64)
        live = np.flatnonzero(batch.active)
        if live.size == 0:
            return a
        obs = self._obs_cfg.observe(batch, None)[live]
        kw = {"action_masks": batch.masks()[live]} if self.algo == "maskable_ppo" else {}
        act, _ = self.model.predict(obs, deterministic=True, **kw)
        a[live] = np.asarray(act, dtype=np.int64).reshape(-1)
        sub, _ = batch.substitute_invalid(np.where(batch.active, a, STOP))  # the env's fallback
        return np.where(batch.active, sub, STOP)


class AnytimePPOPolicy(AnytimeSB3Policy):
    name, algo = "anytime_ppo", "ppo"


class AnytimeA2CPolicy(AnytimeSB3Policy):
    name, algo = "anytime_a2c", "a2c"


class AnytimeMaskablePPOPolicy(AnytimeSB3Policy):
    name, algo = "anytime_maskable_ppo", "maskable_ppo"
