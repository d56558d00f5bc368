"""What every trained scheduler shares, in both environments: :class:`Learner` (the plan env's torch table learners
and stable-baselines3 schedulers through :class:`LearnerBase`; the anytime env's learned policies through
:class:`AnytimeLearner`).

* :func:`split_rows` / :meth:`Learner.split` / :meth:`LearnerBase._split_and_candidates` — the seeded split of the calibration rows into a fit part and a held-out part; the test split
  never trains or selects anything.
* :meth:`Learner.run_identity` / :meth:`Learner.open_checkpoint` — the identity written into a checkpoint
  (scheduler, config, seed, table content, cost unit) and the rule that a checkpoint of another run is refused.
* :meth:`LearnerBase.held_out_scores` — accuracy, mean cost, overrun rate and plan entropy of the deployed policy
  (:meth:`LearnerBase._select_idx`) on held-out calibration rows at each budget of
  :data:`~agents.evaluation.metrics.BUDGET_GRID` (over-budget choices count as wrong).
* :meth:`Learner.keeps` — the one model-selection rule of every learner: among the policies scored *after* at
  least one training update, the one with the best mean held-out accuracy over the budget grid (an improvement at some
  budgets and a loss at others counts by its mean; nothing is vetoed). The untrained policy is scored and logged as a
  reference but is not a candidate, so a learner never reports its initialisation (with ``prior=True``: the LUT) as
  its result — what it reports is always what training produced. ``selected_step`` records which checkpoint won.
  One tie tolerance (:data:`SCORE_TOL`): scores are means over the same rows, so a tie up to float rounding is not an
  improvement.
* :meth:`LearnerBase.held_out_scores` (plan env) and :func:`held_out_bandit_accuracy` /
  :func:`held_out_stream_accuracy` (anytime env, through the anytime harness's ``serve_requests``) — the held-out
  sweeps the selection scores.
* :func:`single_thread` — torch on one intra-op thread while fitting (the networks are small; extra threads only
  contend on a shared CPU).
* :attr:`Learner.prior` — whether the policy started as the look-up table (a fixed per-plan prior on the logits,
  learnable deviations from it): an initialisation, recorded with every result (:meth:`LearnerBase.provenance`).
* :meth:`Learner.provenance` — ``selected_step`` and ``prior``, carried by every result record.
* :func:`weights_to_arrays` / :func:`load_weights` — a module's ``state_dict`` as named numpy arrays for
  :meth:`agents.base.Scheduler.save` (no pickles) and back.

torch is imported here; import this module only from learner modules (``import agents`` stays light).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adainf_env.envs.anytime.actions import AnytimeTable
from adainf_env.errors import CheckpointError, ConfigError
from adainf_env.feasibility import COST_TOL, overrun
from adainf_env.fileio import safe_torch_load
from adainf_env.stream import StreamSpec, run_streams
from adainf_env.tables.outcomes import OutcomeTable
from agents.base import AnytimePolicy, PlanSpace, Scheduler
from agents.evaluation.anytime_harness import serve_requests
from agents.evaluation.metrics import BUDGET_GRID, plan_entropy
from agents.learners.policy_nets import candidate_plans

__all__ = ["Learner", "LearnerBase", "AnytimeLearner", "HeldOutScores", "split_rows", "resolve_prior",
           "PRIOR_DEFAULT", "SCORE_TOL", "weights_to_arrays", "load_weights", "CHECKPOINT_NAME", "single_thread",
           "held_out_bandit_accuracy", "held_out_stream_accuracy", "HELD_OUT_STREAM"]

#: File name of the resumable checkpoint inside a ``checkpoint_dir``.
CHECKPOINT_NAME = "last.pt"

#: Default of every learner's ``prior`` option where its policy supports one (see :func:`resolve_prior`).
PRIOR_DEFAULT = True

#: The selection rule's tie tolerance: held-out scores are means over the same rows, so two scores within float
#: rounding of each other are a tie (and the earlier checkpoint is kept).
SCORE_TOL = 1e-12

#: The anytime learners' held-out shared-bucket streams: per average budget, 8 streams of 100 held-out requests (the
#: default bucket cap); :func:`held_out_stream_accuracy`'s defaults.
HELD_OUT_STREAM = StreamSpec(num_streams=8, horizon=100)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """torch on one intra-op thread inside (restored after): the learners' matrices are small, and intra-op threads
    only contend on a shared CPU. Same numbers either way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def split_rows(num_samples: int, val_fraction: float, seed: int, *, min_val: int = 0,
               who: str = "learner") -> tuple[np.ndarray, np.ndarray]:
    """``(held-out rows, fit rows)``, each sorted: a seeded permutation's first ``round(val_fraction·N)`` rows (at
    least ``min_val``) are held out. :class:`ConfigError` when no row is left to fit."""
    perm = np.random.default_rng(seed).permutation(num_samples)
    n_val = max(int(min_val), int(round(val_fraction * num_samples)))
    val_rows, fit_rows = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    if fit_rows.size == 0:
        raise ConfigError(f"{who}: no rows left to fit after holding out val_fraction={val_fraction}")
    return val_rows, fit_rows


def resolve_prior(prior: bool | None, *, default: bool, supported: bool, who: str) -> bool:
    """A learner's ``prior`` option: ``None`` → ``default`` where the policy supports a prior (else False);
    ``True`` where it does not → :class:`ConfigError`."""
    if prior is None:
        return bool(default and supported)
    if not isinstance(prior, (bool, np.bool_)):
        raise ConfigError(f"{who}: prior must be True, False or None (the default), got {prior!r}")
    if prior and not supported:
        raise ConfigError(f"{who}: this policy has no look-up-table prior; use prior=False")
    return bool(prior)


def weights_to_arrays(module: torch.nn.Module, prefix: str = "w_") -> dict[str, np.ndarray]:
    """``{prefix + name: array}`` of a module's ``state_dict``."""
    return {f"{prefix}{k}": v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def load_weights(module: torch.nn.Module, arrays: dict[str, np.ndarray], *, who: str, prefix: str = "w_") -> None:
    """Load the arrays written by :func:`weights_to_arrays`; :class:`CheckpointError` when they do not fit."""
    state = {k[len(prefix):]: torch.as_tensor(v) for k, v in arrays.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{who}: saved weights do not fit the policy: {str(e)[:300]}") from None


@dataclasses.dataclass(frozen=True)
class HeldOutScores:
    """Per-budget metrics of a policy on held-out calibration rows (lists aligned with ``budgets``)."""

    budgets: list[float]
    accuracy: list[float]  # over-budget choices count as wrong
    mean_cost: list[float]
    overrun_rate: list[float]
    plan_entropy: list[float]

    @property
    def score(self) -> float:
        """The selection score: mean held-out accuracy over the budget grid."""
        return float(np.mean(self.accuracy))


class Learner:
    """What every trained scheduler shares, in either env (a mixin over :class:`~agents.base.Scheduler` or
    :class:`~agents.base.AnytimePolicy`): the seeded split, the selection rule, checkpoint identity, provenance.

    Subclasses set ``name`` and ``val_fraction`` and implement ``config()``.
    """

    name: str
    val_fraction: float
    #: True: the untrained policy is the look-up table (the LUT prior); set by each learner's ``prior`` option.
    prior: bool = False
    #: Training step of the selected checkpoint (the learner's unit: epochs or updates for the torch learners,
    #: environment steps for stable-baselines3); ``None`` before fit.
    selected_step: int | None = None

    def split(self, num_samples: int, seed: int, *, min_val: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(held-out rows, fit rows)`` of the calibration table (:func:`split_rows` with ``self.val_fraction``)."""
        return split_rows(num_samples, self.val_fraction, int(seed), min_val=min_val, who=self.name)

    # ----------------------------------------------------------------- run and checkpoint identity
    def run_identity(self, table: OutcomeTable, seed: int, cost_unit: str) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: scheduler, config, seed, table content, cost unit."""
        return {"scheduler": self.name, "config": json.dumps(self.config(), sort_keys=True), "seed": int(seed),
                "table": table.meta.get("content_sha256") or table.content_hash(), "cost_unit": cost_unit}

    @staticmethod
    def checkpoint_path(checkpoint_dir: str | Path | None) -> Path | None:
        return Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None

    @staticmethod
    def open_checkpoint(ckpt: Path | None, ident: dict[str, Any]) -> dict[str, Any] | None:
        """The checkpoint at ``ckpt`` if there is one (``None`` otherwise); :class:`CheckpointError` when it was
        written by another run."""
        if ckpt is None or not ckpt.is_file():
            return None
        saved = safe_torch_load(ckpt)
        if not isinstance(saved, dict) or saved.get("ident") != ident:
            why = "scheduler/config/seed/table differ" if isinstance(saved, dict) and "ident" in saved else \
                "it carries no run identity: an older AdaInf wrote it"
            raise CheckpointError(f"{ckpt}: checkpoint was written for another run ({why}); "
                                  "use another checkpoint_dir or delete it")
        return saved

    # ----------------------------------------------------------------- selection and provenance
    @staticmethod
    def keeps(score: "HeldOutScores | float", best_score: float, *, step: int) -> bool:
        """The one selection rule: does the policy scored ``score`` (a held-out score, or :class:`HeldOutScores`)
        after ``step`` training steps replace the best so far (held-out score ``best_score``)? Candidates are the
        policies after ≥ 1 step (see the module docstring); the first of equal scores (within :data:`SCORE_TOL`)
        wins (earlier = less fitted to the fit rows)."""
        value = score.score if isinstance(score, HeldOutScores) else float(score)
        return step > 0 and value > best_score + SCORE_TOL

    def provenance(self) -> dict[str, Any]:
        """What every result record of this learner carries: ``selected_step`` and ``prior``."""
        return {"selected_step": self.selected_step, "prior": bool(self.prior)}


class LearnerBase(Learner, Scheduler):
    """Base of the trained plan-env schedulers. Subclasses set ``restrict_to_budget``, ``val_fraction`` and ``plans``
    and implement :meth:`_select_idx` (the deployed policy) and :meth:`fit`."""

    restrict_to_budget: bool = True

    # ----------------------------------------------------------------- inference hook
    def _select_idx(self, features: np.ndarray, budgets: np.ndarray) -> np.ndarray:
        """Plan indices (into the table's plan list) for features [N, F] and validated budgets [N]."""
        raise NotImplementedError

    def select(self, features: np.ndarray, budgets: np.ndarray, state: dict[str, Any] | None = None) -> np.ndarray:
        features, budgets = self._validated_inputs(features, budgets, fitted=self._is_fitted())
        return self._select_idx(features, budgets)

    def _is_fitted(self) -> bool:
        return getattr(self, "policy", None) is not None

    # ----------------------------------------------------------------- split and candidates
    def _split_and_candidates(self, table: OutcomeTable, seed: int, cost_unit: str) -> tuple[np.ndarray, np.ndarray]:
        """Set the plan space and the candidate plans (``self.plans``) → ``(held-out rows, fit rows)``
        (:meth:`Learner.split`). The candidate set is a calibration statistic like the LUT: computed on all
        calibration rows."""
        self.plan_space = PlanSpace.from_table(table, cost_unit)
        val_rows, fit_rows = self.split(table.num_samples, seed)
        self.candidates = candidate_plans(table, self.plan_space.plan_cost, self.plans, np.arange(table.num_samples))
        return val_rows, fit_rows

    # ----------------------------------------------------------------- held-out scoring
    def held_out_scores(self, table: OutcomeTable, rows: np.ndarray) -> HeldOutScores:
        """The deployed policy on held-out calibration ``rows`` at each grid budget the plans can meet."""
        assert self.plan_space is not None
        cost = self.plan_space.plan_cost
        grid = [b for b in BUDGET_GRID if b >= cost.min()] or [1.0]
        accs, costs, overs, ents = [], [], [], []
        for b in grid:
            plans = self._select_idx(table.features[rows], np.full(rows.size, b))
            over = overrun(cost[plans], b)
            accs.append(float((table.correct[rows, plans] & ~over).mean()))
            costs.append(float(cost[plans].mean()))
            overs.append(float(over.mean()))
            ents.append(plan_entropy(plans, len(cost)))
        return HeldOutScores(list(grid), accs, costs, overs, ents)


class AnytimeLearner(Learner, AnytimePolicy):
    """Base of the learned anytime-env policies (``anytime_reinforce``, ``anytime_ppo_lagrangian``,
    ``anytime_stage_reinforce``, the anytime SB3 policies): :class:`Learner` on the anytime protocol. Held-out
    scoring: :func:`held_out_bandit_accuracy` and :func:`held_out_stream_accuracy` on the held-out rows, selection
    by :meth:`Learner.keeps`."""


def held_out_bandit_accuracy(policy: AnytimePolicy, val_tab: OutcomeTable, at: AnytimeTable,
                             budgets: Sequence[float]) -> list[float]:
    """Per-budget accuracy of ``policy`` serving every held-out row of ``val_tab`` once at each per-request
    budget in ``budgets`` (the bandit sweep; an answer over its budget counts as wrong)."""
    n = val_tab.num_samples
    grid = [float(b) for b in budgets]
    rows, b = np.tile(np.arange(n), len(grid)), np.repeat(grid, n)
    r = serve_requests(policy, val_tab, rows, b, at=at)
    ok = r["correct"] & (r["cost"] <= b + COST_TOL)
    return [float(ok[i * n:(i + 1) * n].mean()) for i in range(len(grid))]


def held_out_stream_accuracy(policy: AnytimePolicy, val_tab: OutcomeTable, at: AnytimeTable, budgets: np.ndarray,
                             *, seed: int, streams_per_budget: int | None = None,
                             horizon: int | None = None) -> np.ndarray:
    """Per-budget accuracy of ``policy`` over ``streams_per_budget`` shared-bucket streams of ``horizon`` held-out
    rows at each average budget in ``budgets`` (a request that overruns what the bucket holds counts as wrong).
    ``streams_per_budget`` / ``horizon`` default to :data:`HELD_OUT_STREAM`'s."""
    spec = StreamSpec.of(HELD_OUT_STREAM, num_streams=streams_per_budget, horizon=horizon)
    streams_per_budget, horizon = spec.num_streams, spec.horizon
    k = streams_per_budget * budgets.size
    avg = np.repeat(budgets, streams_per_budget)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, val_tab.num_samples, size=(k, horizon))
    correct, cost = np.zeros((k, horizon), dtype=bool), np.zeros((k, horizon))

    def serve(t: int, rows_t: np.ndarray, budgets_t: np.ndarray, state: dict[str, Any]) -> np.ndarray:
        r = serve_requests(policy, val_tab, rows_t, budgets_t, state=state, at=at)
        correct[:, t], cost[:, t] = r["correct"], r["cost"]
        return r["cost"]

    # the request stream of adainf_env.stream: each stream's bucket refilled by its average budget
    given = run_streams(serve, rows, np.repeat(avg[:, None], horizon, axis=1), bucket=spec.bucket())
    return (correct & (cost <= given + COST_TOL)).reshape(budgets.size, -1).mean(1)
