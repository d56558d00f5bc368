"""Shared training loop for the torch learners on an outcome table (``hinge``, ``reinforce``, ``blockdrop``).

What every learner gets from :class:`TorchTableLearner`:

* **Fit on calibration only.** ``fit(table)`` splits the calibration rows (seeded) into a fit part and a held-out
  part (``val_fraction``, :func:`agents.learners.base.split_rows`); the feature scaler is fitted on the fit part,
  the policy is trained on it, and the epoch (≥ 1) whose policy scores best on the held-out part (mean accuracy over
  a budget grid, with over-budget choices counted as wrong; :meth:`~agents.learners.base.LearnerBase.keeps`) is kept
  (``selected_step``) — early stopping / model selection never sees the test split.
* **Prior** (``prior``, default :data:`~agents.learners.base.PRIOR_DEFAULT`): the plan policy's logits get
  ``prior_scale·1[k = LUT plan at M]`` and a zero-initialised last layer, so the untrained policy is the LUT and
  training learns per-sample deviations from it (the SB3 policies' prior, same scale); ``prior=False`` is a plainly
  initialised network.
* **Budgets sampled during training** uniformly in ``[cheapest candidate cost, 1]`` (fractions of the full model),
  so one policy serves every budget.
* **Determinism.** All training randomness flows from one ``torch.Generator`` seeded by ``fit(seed=)``; network init
  uses ``torch.manual_seed(seed)`` inside ``torch.random.fork_rng`` (the caller's global RNG is untouched).
* **Resume.** With ``checkpoint_dir``, after every epoch ``last.pt`` is written atomically holding the model,
  optimiser, generator state, best-so-far state and history (plain tensors/containers: loadable with
  ``torch.load(weights_only=True)``). ``fit(..., checkpoint_dir=D)`` on a directory that holds a checkpoint of the
  same config, seed and table continues from it; the resumed run ends bit-identical to an uninterrupted one.
  A checkpoint from another config/seed/table is refused (:class:`~adainf_env.errors.CheckpointError`).
* **Inference restricted to the budget** (``restrict_to_budget=True``, default): the argmax is taken over candidate
  plans that fit the budget (:func:`adainf_env.feasibility.masked_argmax`: if none fits — a budget below the
  cheapest plan — the cheapest plan is used), so the overrun rate is 0. ``restrict_to_budget=False`` gives the raw
  argmax.
* **Save/load** through :class:`~agents.base.Scheduler` (``.npz``, no pickles): the policy's state_dict as arrays.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from adainf_env.errors import ConfigError
from adainf_env.feasibility import masked_argmax
from adainf_env.fileio import atomic_torch_save
from adainf_env.tables.outcomes import OutcomeTable
from agents.learners.base import PRIOR_DEFAULT, LearnerBase, load_weights, resolve_prior, weights_to_arrays
from agents.learners.policy_nets import PlanPolicy
from agents.progress import progress_disabled

__all__ = ["TorchTableLearner", "EpochCallback"]

#: ``callback(epoch, metrics)`` after each epoch's checkpoint; may raise (tests use it to simulate a kill).
EpochCallback = Callable[[int, dict[str, float]], None]


class TorchTableLearner(LearnerBase):
    """Base class; subclasses implement :meth:`_build_policy`, :meth:`_prepare` and :meth:`_batch_loss`."""

    name = "torch_learner"
    #: Whether the policy can start as the LUT (a per-plan logit prior: :class:`PlanPolicy`'s ``plan_prior``).
    supports_prior = True

    def __init__(self, *, epochs: int = 30, batch_size: int = 256, lr: float = 3e-3, weight_decay: float = 1e-4,
                 hidden: Sequence[int] = (128, 128), plans: str | Sequence[int] = "pareto",
                 val_fraction: float = 0.2, restrict_to_budget: bool = True, prior: bool | None = None,
                 prior_scale: float = 3.0, progress: bool | None = None) -> None:
        if not (math.isfinite(prior_scale) and prior_scale > 0):
            raise ConfigError(f"prior_scale must be a finite number > 0, got {prior_scale}")
        self.prior = resolve_prior(prior, default=PRIOR_DEFAULT, supported=self.supports_prior, who=self.name)
        self.prior_scale = float(prior_scale)
        if int(epochs) < 1 or int(batch_size) < 1:
            raise ConfigError(f"epochs and batch_size must be ≥ 1, got {epochs}, {batch_size}")
        if not (lr > 0 and math.isfinite(lr)) or weight_decay < 0:
            raise ConfigError(f"lr must be > 0 and weight_decay ≥ 0, got {lr}, {weight_decay}")
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.hidden = [int(h) for h in hidden]
        self.plans = plans if isinstance(plans, str) else [int(p) for p in plans]
        if isinstance(plans, str) and plans not in ("pareto", "all"):
            raise ConfigError(f"plans must be 'pareto', 'all' or a list of plan indices, got {plans!r}")
        self.val_fraction = float(val_fraction)
        self.restrict_to_budget = bool(restrict_to_budget)
        self.progress = progress
        self.policy: nn.Module | None = None
        self.candidates: np.ndarray | None = None
        self.history: list[dict[str, float]] = []

    # ----------------------------------------------------------------- config / state
    def config(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                "weight_decay": self.weight_decay, "hidden": self.hidden, "plans": self.plans,
                "val_fraction": self.val_fraction, "restrict_to_budget": self.restrict_to_budget,
                "prior": self.prior, "prior_scale": self.prior_scale}

    def state_arrays(self) -> dict[str, np.ndarray]:
        assert self.policy is not None and self.candidates is not None
        return {**weights_to_arrays(self.policy), "candidates": self.candidates,
                "selected_step": np.array(-1 if self.selected_step is None else self.selected_step)}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        assert self.plan_space is not None
        self.candidates = arrays["candidates"].astype(np.int64)
        step = int(arrays.get("selected_step", -1))
        self.selected_step = None if step < 0 else step
        self.policy = self._build_policy(self.plan_space.feature_dim, self.plan_space.plan_cost[self.candidates],
                                         self.plan_space.plan_masks.shape[1])
        load_weights(self.policy, arrays, who=self.name)

    # ----------------------------------------------------------------- subclass hooks
    def _build_policy(self, feature_dim: int, cand_cost: np.ndarray, num_blocks: int,
                      cand_acc: np.ndarray | None = None) -> nn.Module:
        prior = None
        if self.prior:
            # at load time the prior buffer is overwritten by the saved one; zeros here only fix its shape
            prior = np.zeros(len(cand_cost)) if cand_acc is None else cand_acc
        return PlanPolicy(feature_dim, cand_cost, hidden=self.hidden, plan_prior=prior, prior_scale=self.prior_scale)

    def _prepare(self, table: OutcomeTable, cost: np.ndarray) -> None:
        """Precompute per-row training targets for ``self.candidates`` (tensors kept on ``self``)."""
        raise NotImplementedError

    def _batch_loss(self, rows: torch.Tensor, budgets: torch.Tensor,
                    gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    # ----------------------------------------------------------------- inference
    def _candidate_scores(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """[N, K] scores whose argmax (within budget) is the chosen candidate."""
        assert self.policy is not None
        return self.policy(x, b)

    def _select_idx(self, features: np.ndarray, budgets: np.ndarray) -> np.ndarray:
        assert self.policy is not None and self.candidates is not None and self.plan_space is not None
        x = torch.as_tensor(np.asarray(features, dtype=np.float32))
        b = torch.as_tensor(budgets, dtype=torch.float32)
        self.policy.eval()
        with torch.no_grad():
            scores = self._candidate_scores(x, b).double()
        if self.restrict_to_budget:
            cand_cost = torch.as_tensor(self.plan_space.plan_cost[self.candidates])
            return self.candidates[masked_argmax(scores, cand_cost, torch.as_tensor(budgets)).numpy()]
        return self.candidates[scores.argmax(dim=1).numpy()]

    # ----------------------------------------------------------------- training
    def fit(self, table: OutcomeTable, *, seed: int = 0, cost_unit: str = "macs",
            checkpoint_dir: str | Path | None = None, callback: EpochCallback | None = None) -> "TorchTableLearner":
        """Train on the calibration ``table`` (see the module docstring for split, selection and resume)."""
        val_rows, fit_rows = self._setup(table, seed, cost_unit)
        cost = self.plan_space.plan_cost
        opt = torch.optim.Adam(self.policy.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(int(seed))
        b_lo = float(cost[self.candidates].min())
        ckpt = self.checkpoint_path(checkpoint_dir)
        ident = self.run_identity(table, seed, cost_unit)
        score_rows = val_rows if val_rows.size else fit_rows
        start, best_score, best_state, best_step = self._resume(self.open_checkpoint(ckpt, ident), opt, gen)
        if start == 0:  # the untrained policy (= the LUT with the prior) is scored as a reference, not a candidate
            scores = self.held_out_scores(table, score_rows)
            self.history = [{"epoch": 0.0, "env_steps": 0.0, "val_score": scores.score,
                             "mean_cost": float(np.mean(scores.mean_cost))}]
        fit_t = torch.as_tensor(fit_rows)
        bar = tqdm(range(start, self.epochs), desc=f"{self.name} fit", disable=progress_disabled(self.progress),
                   initial=start, total=self.epochs, leave=False)
        for epoch in bar:
            metrics = self._train_epoch(fit_t, b_lo, opt, gen)
            metrics["epoch"] = float(epoch + 1)
            scores = self.held_out_scores(table, score_rows)
            metrics["val_score"] = scores.score
            metrics["mean_cost"] = float(np.mean(scores.mean_cost))  # held-out, for the learning curves
            metrics["env_steps"] = float((epoch + 1) * fit_rows.size)  # requests seen: one per fit row per epoch
            self.history.append(metrics)
            if self.keeps(scores, best_score, step=epoch + 1):
                best_score, best_state, best_step = scores.score, _clone_state(self.policy), epoch + 1
            bar.set_postfix(val=f"{metrics['val_score']:.4f}")
            if ckpt is not None:
                atomic_torch_save({"ident": ident, "epoch": epoch + 1, "model": self.policy.state_dict(),
                                   "opt": opt.state_dict(), "gen": gen.get_state(), "best_score": best_score,
                                   "best_state": best_state, "best_step": best_step, "history": self.history}, ckpt)
            if callback is not None:
                callback(epoch + 1, metrics)
        bar.close()
        self.selected_step = best_step
        self._finish(table, best_state)
        return self

    def _setup(self, table: OutcomeTable, seed: int, cost_unit: str) -> tuple[np.ndarray, np.ndarray]:
        """Split the rows, pick the candidates, build the (seeded) policy and the training targets."""
        val_rows, fit_rows = self._split_and_candidates(table, seed, cost_unit)
        cost = self.plan_space.plan_cost
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            cand_acc = table.correct[fit_rows][:, self.candidates].mean(axis=0)
            self.policy = self._build_policy(table.feature_dim, cost[self.candidates], table.num_blocks, cand_acc)
        self.policy.scaler.fit(table.features[fit_rows])
        self._table = table
        self._prepare(table, cost)
        self._features_t = torch.as_tensor(table.features, dtype=torch.float32)
        return val_rows, fit_rows

    def _resume(self, saved: dict[str, Any] | None, opt: torch.optim.Optimizer, gen: torch.Generator
                ) -> tuple[int, float, dict[str, torch.Tensor] | None, int | None]:
        """Load a checkpoint of this run into the policy, optimiser and generator → (epoch, best score, best state,
        best epoch); ``(0, -inf, None, None)`` without one."""
        if saved is None:
            self.history = []
            return 0, -math.inf, None, None
        self.policy.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        gen.set_state(saved["gen"])
        self.history = [dict(h) for h in saved["history"]]
        return int(saved["epoch"]), float(saved["best_score"]), saved["best_state"], saved.get("best_step")

    def _train_epoch(self, fit_t: torch.Tensor, b_lo: float, opt: torch.optim.Optimizer,
                     gen: torch.Generator) -> dict[str, float]:
        """One pass over the fit rows in a seeded order, budgets uniform in [b_lo, 1] → mean batch statistics."""
        self.policy.train()
        order = fit_t[torch.randperm(fit_t.numel(), generator=gen)]
        sums: dict[str, float] = {}
        nb = 0
        for i in range(0, order.numel(), self.batch_size):
            rows = order[i:i + self.batch_size]
            budgets = b_lo + (1.0 - b_lo) * torch.rand(rows.numel(), generator=gen, dtype=torch.float64)
            loss, stats = self._batch_loss(rows, budgets, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            nb += 1
        return {k: v / nb for k, v in sums.items()}

    def _finish(self, table: OutcomeTable, best_state: dict[str, torch.Tensor] | None) -> None:
        """Deploy the selected parameters; the LUT prior moves to all calibration rows; drop training tensors."""
        if best_state is not None:
            self.policy.load_state_dict(best_state)
        if self.prior and hasattr(self.policy, "plan_prior"):
            # Selection used fit-row statistics; the deployed prior, like the LUT, uses all calibration rows.
            acc_all = table.correct[:, self.candidates].mean(axis=0)
            self.policy.plan_prior.copy_(torch.as_tensor(acc_all, dtype=torch.float64))
        self.policy.eval()
        del self._table, self._features_t


def _clone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
