"""The SB3 callback that scores the policy on held-out calibration rows, keeps the selected parameters, writes the
checkpoint and calls the user's callback (see :mod:`agents.sb3.scheduler` for when each happens)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from adainf_env.fileio import atomic_torch_save
from adainf_env.tables.outcomes import OutcomeTable
from agents.sb3.resume import restore_training_state, training_state

if TYPE_CHECKING:
    from agents.sb3.scheduler import SB3Scheduler

__all__ = ["SelectionCallback", "StepCallback"]

#: ``callback(num_timesteps, metrics)`` after each evaluation's checkpoint; may raise (tests simulate a kill so).
StepCallback = Callable[[int, dict[str, float]], None]


class SelectionCallback(BaseCallback):
    """Every ``every`` calls of ``_on_rollout_end`` (PPO/A2C/MaskablePPO) or ``every`` steps (DQN): score the policy
    on held-out calibration rows, log to TensorBoard, keep the best parameters (the scheduler's
    :meth:`~agents.learners.base.LearnerBase.keeps`); then write an atomic checkpoint and call the user callback —
    on-policy: at the next rollout start (a resumable point); DQN: at once (parameters only)."""

    def __init__(self, sched: "SB3Scheduler", table: OutcomeTable, rows: np.ndarray, every: int,
                 checkpoint: Path | None, on_rollouts: bool, ident: dict[str, Any] | None = None,
                 user_callback: StepCallback | None = None) -> None:
        super().__init__()
        self.sched, self.table, self.rows, self.every = sched, table, rows, max(1, int(every))
        self.checkpoint, self.on_rollouts = checkpoint, on_rollouts
        self.ident, self.user_callback = ident, user_callback
        self.count = 0  # completed rollouts (PPO/A2C) or steps (DQN)
        self.resumed = False  # True: state restored from a checkpoint, the untrained policy was scored before
        self._pending = False  # an evaluation happened; checkpoint + user callback at the next rollout boundary
        self.best_score = -math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_step: int | None = None  # env step of the selected evaluation
        self.history: list[dict[str, float]] = []
        self._reward_sum, self._reward_n = 0.0, 0  # env reward since the last evaluation (our vec env emits no
        # Monitor "episode" infos, so SB3's rollout/ep_rew_mean would stay empty)

    def _evaluate(self) -> None:
        if self._reward_n:
            self.logger.record("adainf/train_reward", self._reward_sum / self._reward_n)
            self._reward_sum, self._reward_n = 0.0, 0
        scores = self.sched.held_out_scores(self.table, self.rows)
        for b, a in zip(scores.budgets, scores.accuracy):
            self.logger.record(f"adainf/val_accuracy@{b:g}", a)
        for k, v in (("val_score", scores.score), ("mean_cost", np.mean(scores.mean_cost)),
                     ("overrun_rate", np.mean(scores.overrun_rate)), ("plan_entropy", np.mean(scores.plan_entropy))):
            self.logger.record(f"adainf/{k}", float(v))
        self.history.append({"timesteps": float(self.num_timesteps), "val_score": scores.score,
                             "mean_cost": float(np.mean(scores.mean_cost))})
        # a candidate once the parameters have had an update (PPO/A2C train after the rollout that triggers this;
        # DQN only after ``learning_starts``)
        step = int(self.num_timesteps) if int(getattr(self.model, "_n_updates", 1)) > 0 else 0
        if self.sched.keeps(scores, self.best_score, step=step):
            self.best_score, self.best_step = scores.score, int(self.num_timesteps)
            self.best_state = {k: v.detach().clone() for k, v in self.model.policy.state_dict().items()}

    def _save(self, resumable: bool) -> None:
        m = self.model
        ckpt: dict[str, Any] = {"ident": self.ident, "timesteps": int(m.num_timesteps),
                                "policy": m.policy.state_dict(), "optimizer": m.policy.optimizer.state_dict(),
                                "best_state": self.best_state, "best_score": float(self.best_score),
                                "best_step": self.best_step}
        if resumable:
            ckpt["resume"] = training_state(m)
            ckpt["resume"]["selection"] = {
                "count": self.count, "history": self.history, "reward_sum": self._reward_sum, "reward_n": self._reward_n}
        atomic_torch_save(ckpt, self.checkpoint)

    def restore(self, saved: dict[str, Any]) -> None:
        """Load the state written by :meth:`_save` into ``self.model`` (already built with the same seed) and self."""
        m, r = self.model, saved["resume"]
        m.policy.load_state_dict(saved["policy"])
        m.policy.optimizer.load_state_dict(saved["optimizer"])
        restore_training_state(m, r)
        sel = r["selection"]
        self.count = int(sel["count"])
        self.history = [dict(h) for h in sel["history"]]
        self._reward_sum, self._reward_n = float(sel["reward_sum"]), int(sel["reward_n"])
        self.best_state, self.best_score = saved["best_state"], float(saved["best_score"])
        self.best_step = saved["best_step"]
        self.resumed = True

    def _after_evaluation(self) -> None:
        """Checkpoint (if asked) + user callback. On-policy algorithms call this at the next rollout start, when
        the evaluated rollout has been trained on and the rollout buffer holds nothing still needed."""
        if self.checkpoint is not None:
            # a scheduler whose algorithm's training state agents.sb3.resume does not capture (the generic SB3
            # algorithms) saves parameters only, as DQN does
            self._save(resumable=self.on_rollouts and getattr(self.sched, "resumable_training", True))
        if self.user_callback is not None:
            self.user_callback(int(self.num_timesteps), dict(self.history[-1]))

    def _tick(self) -> None:
        self.count += 1
        if self.count % self.every == 0:
            self._evaluate()
            if self.on_rollouts:
                self._pending = True
            else:
                self._after_evaluation()

    def _on_rollout_start(self) -> None:
        if self._pending:
            self._pending = False
            self._after_evaluation()

    def _on_rollout_end(self) -> None:
        if self.on_rollouts:
            self._tick()

    def _on_step(self) -> bool:
        rewards = self.locals.get("rewards")
        if rewards is not None:
            self._reward_sum += float(np.sum(rewards))
            self._reward_n += int(np.size(rewards))
        if not self.on_rollouts:
            self._tick()
        return True

    def _on_training_start(self) -> None:
        if not self.resumed:
            self._evaluate()  # the untrained policy (= the LUT with ``prior``): a logged reference, not a candidate

    def _on_training_end(self) -> None:
        self._evaluate()
        self.logger.dump(self.num_timesteps)  # flush the final held-out scores to TensorBoard
