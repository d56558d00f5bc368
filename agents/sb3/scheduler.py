"""Stable-Baselines3 schedulers [``ppo``, ``a2c``, ``dqn``, ``maskable_ppo``] — any algorithm by one argument.

``SB3Scheduler(algo="ppo" | "a2c" | "dqn" | "maskable_ppo", ...)`` trains the algorithm on an
:class:`~adainf_env.envs.plan.vec_env.AdaInfVecEnv` (table mode, bandit: one request per episode, budget uniform in
[cheapest plan, 1], reward ``1[correct] − λ·max(0, cost − budget)``) built over the *fit* part of the calibration
table; the held-out part (``val_fraction``) scores the policy every ``eval_every`` rollouts/steps (mean accuracy over a
budget grid, as for the torch learners; the untrained policy is scored as a reference) and the best-scoring parameters
after at least one update are kept (:meth:`~agents.learners.base.LearnerBase.keeps`, the one rule of every learner;
``selected_step`` = the environment step of that evaluation). Unknown ``algo`` → ConfigError.

The env is seen through :class:`~agents.sb3.obs.SchedulerObsWrapper` (an SB3 ``VecEnvWrapper``):

* observation = ``[standardised features, M, log M, 1[c_k ≤ M], 1[k = LUT plan at M]]`` (flat Box, see
  :class:`~agents.sb3.obs.ObsBuilder`; the scaler is fitted on the fit rows), so a small MLP can rank "plans that fit" for every budget;
* action = index into the candidate plans (by default the accuracy/cost Pareto frontier of the fit rows, 15 of
  256 plans on the reference ResNet18 table — ``plans="all"`` keeps every plan), mapped to the env's plan index;
* ``action_masks()`` = candidates that fit the budget (:mod:`adainf_env.feasibility`), for MaskablePPO.

Policy (PPO, A2C, MaskablePPO) with ``prior=True``: a residual policy around the look-up table,
``logits = W·latent + s·1[k = LUT plan]`` with ``W`` zero-initialised (``s = prior_scale``), so the untrained policy's
most probable plan within budget is the LUT plan (:mod:`agents.sb3.policy`); ``prior=False`` is SB3's plain MLP
policy. DQN with ``prior=True`` (its Q-network is SB3's): a *LUT margin* at choice time — the greedy choice (deployed
and scored on held-out rows) is ``argmax_k Q(s, k) + prior_scale·1[k = LUT plan at M]``, so the policy leaves the
LUT plan only where Q says another plan is at least ``prior_scale`` (in reward units: accuracy) better; exploration
during training is SB3's ε-greedy on Q alone. ``prior_scale=None`` takes the algorithm's default (:data:`DEFAULTS`).

``select()`` is the deterministic policy (argmax of the action probabilities, or of Q for DQN) restricted to plans
within the budget (``restrict_to_budget=True``, the default; ``False`` = SB3's unrestricted ``predict``).

Logging: with ``tensorboard_log`` SB3 writes its TensorBoard events there, and the selection callback adds
``adainf/val_score``, ``adainf/val_accuracy@M``, ``adainf/mean_cost``, ``adainf/overrun_rate`` and
``adainf/plan_entropy`` on the held-out rows.

Resume (PPO, A2C, MaskablePPO). With ``checkpoint_dir`` (``fit(..., checkpoint_dir=)`` or the constructor's)
``last.pt`` is written atomically at the first rollout boundary after each evaluation — i.e. at the *start* of the
next rollout, after SB3's ``train()`` on the evaluated rollout, when the rollout buffer holds nothing that is still
needed. It holds everything the rest of the run depends on: policy + optimiser state, SB3's counters and last
observation, the global RNG states and the vec env's own state (:mod:`agents.sb3.resume`), and the selection state
(history, best parameters and score, the untrained policy's accuracies, reward accumulators). Only tensors and plain
containers: ``torch.load(weights_only=True)`` loads it. ``fit`` on a directory holding a checkpoint of the same
scheduler, config, seed, table and cost unit continues from it and ends bit-identical to an uninterrupted run
(tests/test_resume_sb3.py); a checkpoint of another run is refused (:class:`~adainf_env.errors.CheckpointError`).
DQN's checkpoint (written at each evaluation) holds the parameters only — its replay buffer (``buffer_size`` ×
observation) is not saved, so a DQN run restarts from scratch (with a warning) instead of resuming.
``fit(..., callback=f)`` calls ``f(num_timesteps, metrics)`` after each evaluation's checkpoint (metrics = the
held-out scores); it may raise (the tests use it to simulate a kill).

Saving: SB3's own ``.zip`` stores parts of the model with cloudpickle, which AdaInf never loads. ``save()`` writes the
policy's ``state_dict`` as arrays + a JSON config (:meth:`agents.base.Scheduler.save`); ``load()`` rebuilds the policy
network from the config and loads the arrays — nothing is unpickled.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from adainf_env.errors import CheckpointError, ConfigError
from adainf_env.feasibility import masked_argmax
from adainf_env.tables.outcomes import OutcomeTable
from adainf_env.envs.plan.vec_env import make_vec_env
from agents.learners.base import (PRIOR_DEFAULT, LearnerBase, load_weights, resolve_prior, single_thread,
                                  weights_to_arrays)
from agents.sb3.callback import SelectionCallback, StepCallback
from agents.sb3.obs import ObsBuilder, SchedulerObsWrapper
from agents.sb3.policy import ALGOS, policy_class

__all__ = ["SB3Scheduler", "PPOScheduler", "A2CScheduler", "DQNScheduler", "MaskablePPOScheduler", "ALGOS",
           "DEFAULTS", "PRIOR_SCALE", "StepCallback", "ObsBuilder", "SchedulerObsWrapper"]

#: Scale of the LUT prior where :data:`DEFAULTS` names none (see :class:`~agents.sb3.policy.LUTPrior`).
PRIOR_SCALE = 3.0

#: Per-algorithm defaults, chosen for a small CPU budget on *calibration* data only — the reference calibration table
#: split 60/40 (fit / score, 3 seeds) and the routing table's calibration draw scored on a third draw
#: (:mod:`agents.evaluation.routing_gains`) — never a test split. ``prior`` (see
#: :data:`~agents.learners.base.PRIOR_DEFAULT`): start as the LUT (residual policy, :class:`~agents.sb3.policy.LUTPrior`,
#: scale ``prior_scale``): without it the learners have to rediscover from noisy bandit rewards which of ~15 plans of
#: nearly equal accuracy is best at high budgets, and settle on plans of cost ≈ 0.49 at every budget ≥ 0.5.
#: ``prior_scale`` 5 for PPO: at 3 the policy's ~40 % exploration mass lets PPO's clipped updates drift off the LUT
#: at the high budgets where ~6 plans lie within 1.5 pt (calibration: −0.17 pt at 1.0 over 3 seeds, −0.50 for one;
#: at 5: no loss at any budget), while 5 still captures ≥ 94 % of the routing gain at 0.4. MaskablePPO (masked
#: exploration: no such drift) and A2C (its one-step updates need the exploration) keep 3. DQN: LUT margin 0.3,
#: learning rate 3e-4, one gradient step per env step (was 1e-3 and 4, no margin: its per-sample Q estimates of
#: plans ~1 pt apart were noisier than the differences, −2.3 to −4.0 pt against ``lut`` on every budget; margins 0.05 /
#: 0.15 alone still lost 4.4 / 2.6 pt; together: −0.03 pt, 96 % of the routing gain). 100k env steps: enough for
#: ≥ 83 % of the routing gain at 0.4 on every seed; on the reference tables the held-out score stops improving well
#: before (the stem features say little about which plan a sample needs). docs/learners.md has the measurements.
DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {"total_timesteps": 100_000, "n_envs": 256, "learning_rate": 1e-3, "prior_scale": 5.0,
            "algo_kwargs": {"n_steps": 8, "batch_size": 512, "n_epochs": 4, "gamma": 0.0, "gae_lambda": 1.0,
                            "ent_coef": 0.0}},
    "maskable_ppo": {"total_timesteps": 100_000, "n_envs": 256, "learning_rate": 1e-3, "prior_scale": PRIOR_SCALE,
                     "algo_kwargs": {"n_steps": 8, "batch_size": 512, "n_epochs": 4, "gamma": 0.0,
                                     "gae_lambda": 1.0, "ent_coef": 0.0}},
    "a2c": {"total_timesteps": 100_000, "n_envs": 256, "learning_rate": 1e-3, "prior_scale": PRIOR_SCALE,
            "algo_kwargs": {"n_steps": 1, "gamma": 0.0, "ent_coef": 0.0}},
    "dqn": {"total_timesteps": 100_000, "n_envs": 32, "learning_rate": 3e-4, "prior_scale": 0.3,
            "algo_kwargs": {"buffer_size": 100_000, "learning_starts": 2_000, "batch_size": 256, "gamma": 0.0,
                            "train_freq": 1, "gradient_steps": 1, "target_update_interval": 1_000,
                            "exploration_fraction": 0.3, "exploration_final_eps": 0.02}},
}


def _algo_class(algo: str) -> type:
    if algo == "ppo":
        from stable_baselines3 import PPO
        return PPO
    if algo == "a2c":
        from stable_baselines3 import A2C
        return A2C
    if algo == "dqn":
        from stable_baselines3 import DQN
        return DQN
    if algo == "maskable_ppo":
        from sb3_contrib import MaskablePPO
        return MaskablePPO
    raise ConfigError(f"unknown SB3 algorithm {algo!r}; known: {', '.join(ALGOS)}")


class SB3Scheduler(LearnerBase):
    """A stable-baselines3 algorithm as an AdaInf scheduler (see the module docstring). ``algo`` picks it;
    ``None`` values take the per-algorithm :data:`DEFAULTS`; ``algo_kwargs`` are passed to the SB3 constructor."""

    name = "sb3"

    def __init__(self, *, algo: str = "ppo", total_timesteps: int | None = None, n_envs: int | None = None,
                 learning_rate: float | None = None, lam: float = 1.0, hidden: Sequence[int] = (64, 64),
                 plans: str | Sequence[int] = "pareto", val_fraction: float = 0.2, eval_every: int = 10,
                 restrict_to_budget: bool = True, algo_kwargs: dict[str, Any] | None = None,
                 tensorboard_log: str | None = None, checkpoint_dir: str | None = None,
                 prior: bool | None = None, prior_scale: float | None = None, progress: bool = False) -> None:
        d = self._defaults(algo)
        self.algo = algo
        self.name = algo  # results name = algorithm name (instance attribute shadows the class default)
        self.total_timesteps = int(total_timesteps if total_timesteps is not None else d["total_timesteps"])
        self.n_envs = int(n_envs if n_envs is not None else d["n_envs"])
        self.learning_rate = float(learning_rate if learning_rate is not None else d["learning_rate"])
        if self.total_timesteps < 1 or self.n_envs < 1 or not self.learning_rate > 0:
            raise ConfigError("total_timesteps and n_envs must be ≥ 1 and learning_rate > 0")
        if not lam >= 0:
            raise ConfigError(f"lam (λ) must be ≥ 0, got {lam}")
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.lam = float(lam)
        self.hidden = [int(h) for h in hidden]
        self.plans = plans if isinstance(plans, str) else [int(p) for p in plans]
        if isinstance(plans, str) and plans not in ("pareto", "all"):
            raise ConfigError(f"plans must be 'pareto', 'all' or a list of plan indices, got {plans!r}")
        self.val_fraction = float(val_fraction)
        self.eval_every = int(eval_every)
        self.restrict_to_budget = bool(restrict_to_budget)
        self.algo_kwargs = {**d["algo_kwargs"], **dict(algo_kwargs or {})}
        self.tensorboard_log = tensorboard_log
        self.checkpoint_dir = checkpoint_dir
        self.progress = bool(progress)
        prior_scale = float(prior_scale if prior_scale is not None else d.get("prior_scale", PRIOR_SCALE))
        if not (math.isfinite(prior_scale) and prior_scale > 0):
            raise ConfigError(f"prior_scale must be a finite number > 0, got {prior_scale}")
        self.prior = resolve_prior(prior, default=PRIOR_DEFAULT, supported=self._prior_supported(), who=algo)
        self.prior_scale = float(prior_scale)
        self.policy: Any = None
        self.candidates: np.ndarray | None = None
        self.builder: ObsBuilder | None = None
        self.history: list[dict[str, float]] = []

    def config(self) -> dict[str, Any]:
        return {"algo": self.algo, "total_timesteps": self.total_timesteps, "n_envs": self.n_envs,
                "learning_rate": self.learning_rate, "lam": self.lam, "hidden": self.hidden, "plans": self.plans,
                "val_fraction": self.val_fraction, "eval_every": self.eval_every,
                "restrict_to_budget": self.restrict_to_budget, "algo_kwargs": self.algo_kwargs,
                "prior": self.prior, "prior_scale": self.prior_scale}

    # ----------------------------------------------------------------- the algorithm (hooks of agents.sb3.generic)
    def _defaults(self, algo: str) -> dict[str, Any]:
        """The per-algorithm defaults (:data:`DEFAULTS`); ConfigError for an unknown ``algo``."""
        if algo not in ALGOS:
            raise ConfigError(f"unknown SB3 algorithm {algo!r}; known: {', '.join(ALGOS)}")
        return DEFAULTS[algo]

    def _prior_supported(self) -> bool:
        return self.algo in ALGOS  # PPO, A2C, MaskablePPO: residual logits; DQN: the LUT margin on Q

    def _sb3_class(self) -> type:
        return _algo_class(self.algo)

    def _policy_arg(self) -> Any:
        return policy_class(self.algo)

    def _on_rollouts(self) -> bool:
        """Evaluate every ``eval_every`` rollouts (on-policy) rather than every ~1/10 of the run's env steps."""
        return self.algo != "dqn"

    # ----------------------------------------------------------------- policy construction
    def _policy_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"net_arch": list(self.hidden)}
        if self.prior and self.algo != "dqn":  # DQN's prior is a margin at choice time (_scores), not in the net
            assert self.candidates is not None
            kw.update(lut_prior_dims=len(self.candidates), lut_prior_scale=self.prior_scale)
        return kw

    def _build_policy(self) -> Any:
        assert self.builder is not None and self.candidates is not None
        cls = policy_class(self.algo)
        return cls(self.builder.space, spaces.Discrete(len(self.candidates)), lambda _: self.learning_rate,
                   **self._policy_kwargs())

    def state_arrays(self) -> dict[str, np.ndarray]:
        assert self.policy is not None and self.builder is not None and self.candidates is not None
        out = weights_to_arrays(self.policy)
        out.update(candidates=self.candidates, obs_mean=self.builder.mean, obs_std=self.builder.std,
                   obs_acc=self.builder.cand_acc,
                   selected_step=np.array(-1 if self.selected_step is None else self.selected_step))
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        assert self.plan_space is not None
        self.candidates = arrays["candidates"].astype(np.int64)
        self.builder = ObsBuilder(arrays["obs_mean"], arrays["obs_std"], self.plan_space.plan_cost[self.candidates],
                                  arrays["obs_acc"])
        step = int(arrays.get("selected_step", -1))
        self.selected_step = None if step < 0 else step
        self.policy = self._build_policy()
        load_weights(self.policy, arrays, who=self.name)
        self.policy.set_training_mode(False)

    # ----------------------------------------------------------------- inference
    def _scores(self, obs: np.ndarray) -> torch.Tensor:
        o = torch.as_tensor(obs)
        with torch.no_grad():
            if self.algo == "dqn":
                q = self.policy.q_net(o).double()
                if self.prior:  # the LUT margin: the LUT plan's Q + prior_scale (ObsBuilder puts its one-hot last)
                    q = q + self.prior_scale * o[:, o.shape[1] - len(self.candidates):].double()
                return q
            return self.policy.get_distribution(o).distribution.logits.double()

    def _select_idx(self, features: np.ndarray, budgets: np.ndarray) -> np.ndarray:
        assert self.builder is not None and self.candidates is not None
        self.policy.set_training_mode(False)
        scores = self._scores(self.builder(features, budgets))
        if self.restrict_to_budget:
            return self.candidates[masked_argmax(scores, torch.as_tensor(self.builder.cand_cost),
                                                 torch.as_tensor(budgets)).numpy()]
        return self.candidates[scores.argmax(dim=1).numpy()]

    # ----------------------------------------------------------------- training
    def make_env(self, table: OutcomeTable, seed: int, cost_unit: str = "macs") -> SchedulerObsWrapper:
        venv = make_vec_env(table, self.n_envs, "bandit", seed=int(seed), lam=self.lam, cost_unit=cost_unit)
        return SchedulerObsWrapper(venv, self.builder, self.candidates)

    def fit(self, table: OutcomeTable, *, seed: int = 0, cost_unit: str = "macs",
            checkpoint_dir: str | Path | None = None, callback: StepCallback | None = None) -> "SB3Scheduler":
        """Train on the calibration ``table``. ``checkpoint_dir`` (default: the constructor's) holds ``last.pt``;
        one from the same scheduler/config/seed/table/cost unit is resumed (see the module docstring), one from
        another run is refused. ``callback(num_timesteps, metrics)`` runs after each evaluation's checkpoint."""
        val_rows, fit_rows = self._setup(table, seed, cost_unit)
        env = self.make_env(table.subset(fit_rows), seed, cost_unit)
        model = self._sb3_class()(
            self._policy_arg(), env, learning_rate=self.learning_rate, seed=int(seed), device="cpu", verbose=0,
            policy_kwargs=self._policy_kwargs(), tensorboard_log=self.tensorboard_log, **dict(self.algo_kwargs))
        self.policy = model.policy
        ckpt = self.checkpoint_path(checkpoint_dir if checkpoint_dir is not None else self.checkpoint_dir)
        ident = self.run_identity(table, seed, cost_unit)
        cb = SelectionCallback(self, table, val_rows if val_rows.size else fit_rows, self.eval_every, ckpt,
                               on_rollouts=self._on_rollouts(), ident=ident, user_callback=callback)
        if not self._on_rollouts():
            cb.every = max(1, self.total_timesteps // (self.n_envs * 10))  # ~10 evaluations per run
        remaining = self._resume(self.open_checkpoint(ckpt, ident), ckpt, model, cb)
        # A 64-unit MLP on 512-row batches gains nothing from intra-op threads; on a shared small CPU the extra
        # thread's spin-waits cost CPU time. Same numbers either way (determinism tests).
        with single_thread():
            # On resume SB3 adds num_timesteps back: _total_timesteps (the progress denominator) = total_timesteps.
            model.learn(total_timesteps=remaining, callback=cb, progress_bar=self.progress,
                        tb_log_name=f"{self.algo}_seed{seed}", reset_num_timesteps=not cb.resumed)
        if cb.best_state is not None:
            self.policy.load_state_dict(cb.best_state)
        self.selected_step = cb.best_step
        self.builder.cand_acc = table.correct[:, self.candidates].mean(axis=0)
        self.policy.set_training_mode(False)
        self.history = cb.history
        env.close()
        return self

    def _setup(self, table: OutcomeTable, seed: int, cost_unit: str) -> tuple[np.ndarray, np.ndarray]:
        """Split the rows, pick the candidates and fit the observation builder on the fit rows."""
        val_rows, fit_rows = self._split_and_candidates(table, seed, cost_unit)
        cost = self.plan_space.plan_cost
        # the observation's LUT statistics come from the fit rows; after selection, from all calibration rows
        self.builder = ObsBuilder.fit(table.features[fit_rows], cost[self.candidates],
                                      table.correct[fit_rows][:, self.candidates].mean(axis=0))
        return val_rows, fit_rows

    def _resume(self, saved: dict[str, Any] | None, ckpt: Path | None, model: Any, cb: SelectionCallback) -> int:
        """Restore a checkpoint of this run into ``model`` and ``cb`` → the env steps left to train."""
        if saved is None:
            return self.total_timesteps
        if "resume" not in saved:
            warnings.warn(f"{ckpt}: {self.algo} training is not resumable (its replay buffer is not "
                          "checkpointed); training from scratch and overwriting it", stacklevel=3)
            return self.total_timesteps
        cb.model = model  # learn() initialises the callback again (same model)
        try:
            cb.restore(saved)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, ConfigError) as e:
            raise CheckpointError(f"{ckpt}: incomplete or inconsistent resume state "
                                  f"({type(e).__name__}: {str(e)[:200]})") from None
        return max(0, self.total_timesteps - model.num_timesteps)


def _named(algo: str) -> type[SB3Scheduler]:
    class _Named(SB3Scheduler):
        def __init__(self, *, algo: str = algo, **kwargs: Any) -> None:
            if algo != type(self).name:
                raise ConfigError(f"{type(self).__name__} runs {type(self).name!r}, not {algo!r}; "
                                  "use SB3Scheduler(algo=...) to pick another algorithm")
            super().__init__(algo=algo, **kwargs)

    _Named.name = algo
    return _Named


PPOScheduler = type("PPOScheduler", (_named("ppo"),), {"__doc__": "SB3 PPO scheduler [``ppo``]."})
A2CScheduler = type("A2CScheduler", (_named("a2c"),), {"__doc__": "SB3 A2C scheduler [``a2c``]."})
DQNScheduler = type("DQNScheduler", (_named("dqn"),), {"__doc__": "SB3 DQN scheduler [``dqn``]."})
MaskablePPOScheduler = type("MaskablePPOScheduler", (_named("maskable_ppo"),),
                            {"__doc__": "sb3-contrib MaskablePPO scheduler [``maskable_ppo``] (plans over budget "
                                        "masked during training)."})
