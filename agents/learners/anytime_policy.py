"""Learned anytime schedulers: a stage policy over the anytime env's kernel, shared by ``anytime_reinforce`` and
``anytime_ppo_lagrangian``.

The policy acts at *decision points* of a request — when it starts, and after each read — and chooses the next
*stage*: STOP (answer with what was read) or a target plan code ``t`` among K candidates. A target is served as the
env's actions (RUN/SKIP through the blocks as ``t`` says, then READ) on the kernel
(:class:`~adainf_env.envs.anytime.core.RequestBatch`), so every cost is the env's exact cost with computation reuse, and a
target is valid only if it extends the decisions so far (the env never recomputes a block), gives a new read, and its
read still fits the request's budget (the env's hard budget; the masks of the env make the same promise). This is an
options (semi-MDP) view of ``AdaInf/Anytime-v0``: the block-level actions are the options' fixed internals, the
choices that matter — which plan to try first, whether what was read is good enough, where to go next — are learnt.

Observation at a decision point (:meth:`AnytimeLearnerPolicy._encode`): the standardised stem features, the budget
context (request budget; average budget, bucket level and fraction of the stream left in the shared-bucket setting;
a flag for it), cost spent and left, the readouts (last and previous confidence, agreement of the last two answers,
whether and how often it read) and the decisions so far (executed blocks, position). The confidence of what was read
is what pays (it predicts correctness far better than the stem features).

Candidates (``candidates=``): ``"pareto_ext"`` (default) — the calibration fit rows' accuracy/cost Pareto plans and,
for each, the Pareto plans among its extensions (the second stages a cascade could use); ``"all"`` — every plan.
This restricts the action set; it keeps no baseline's decisions.

Training (subclasses implement :meth:`AnytimeLearnerPolicy._update`): batched rollouts on the calibration *fit* rows,
a mixture of per-request hard budgets (the bandit) and token-bucket streams with a shared average budget b̄ (cap and
horizon as in the evaluation harness). In streams the reward is 1[correct] and the cost is the request's cost; a
Lagrange multiplier λ_b̄ ≥ 0 per average budget of :data:`~agents.evaluation.metrics.BUDGET_GRID` prices the
constraint E[cost] ≤ b̄·(1 − ``cost_margin``) and is updated by dual ascent from the rollouts' costs (the per-step
costs ``info["cost"]`` of the env summed over a request). In training a stream request may spend up to the bucket's
cap (the policy sees the simulated level): the multiplier, not the level mask, must learn the average budget, else
the mask hides overspending from it. Deployment masks by what the bucket holds. Bandit requests carry λ = 0: their
budget is hard (masked).

Model selection: every ``eval_every`` updates the greedy policy is scored on held-out calibration rows
(:meth:`agents.learners.base.Learner.split`) — the bandit sweep and shared-bucket streams at a few budgets
(:func:`~agents.learners.base.held_out_bandit_accuracy`, :func:`~agents.learners.base.held_out_stream_accuracy`) — and
the policy :meth:`~agents.learners.base.Learner.keeps` (the one selection rule of every learner) is kept
(``selected_step`` in :meth:`provenance`; the untrained policy is scored as a logged reference only). The test split is
never seen.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Sequence

import numpy as np
import torch

from adainf_env.envs.anytime.actions import AnytimeTable, READ, STOP
from adainf_env.envs.anytime.core import RequestBatch
from adainf_env.errors import ConfigError, check_count
from adainf_env.feasibility import COST_TOL
from adainf_env.stream import DEFAULT_STREAM, StaggeredStreams
from adainf_env.plans import extension_mask, top_block
from adainf_env.tables.outcomes import OutcomeTable
from agents.baselines.anytime_policies import script_costs, step_toward
from agents.evaluation.metrics import BUDGET_GRID
from agents.learners.base import AnytimeLearner, held_out_bandit_accuracy, held_out_stream_accuracy, single_thread
from agents.learners.policy_nets import FeatureScaler
from agents.learners.stage_net import CANDIDATE_SETS, STOP_ACTION, Rollout, StageNet, candidate_codes

__all__ = ["AnytimeLearnerPolicy"]

_HELD_OUT_STREAM_BUDGETS = (0.2, 0.3, 0.4, 0.6)
# Confidence levels of the readout's thermometer code (finer near 1, where softmax confidences crowd).
_CONF_LEVELS = np.array([0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99])
# Largest multiplier: a unit of the full model is never worth more than this many correct answers.
_LAM_MAX = 20.0


class AnytimeLearnerPolicy(AnytimeLearner):
    """Base of the learned stage policies (see the module docstring). Subclasses implement :meth:`_update`."""

    name = "anytime_learner"
    num_values = 1
    max_stages = 1

    def __init__(self, *, iterations: int = 900, requests_per_iter: int = 1024, stream_fraction: float = 0.5,
                 lr: float = 3e-3, hidden: Sequence[int] = (128, 128), entropy: float = 0.02,
                 lam_lr: float = 0.5, lam_init: float = 1.0, candidates: str = "pareto_ext",
                 val_fraction: float = 0.2, eval_every: int = 100, time_limit_s: float | None = None,
                 group_size: int = 4, cost_margin: float = 0.01, explore_starts: float = 0.25,
                 prior: bool = False) -> None:
        super().__init__()
        for k, v in (("iterations", iterations), ("requests_per_iter", requests_per_iter), ("eval_every", eval_every),
                     ("group_size", group_size)):
            check_count(v, f"{self.name}: {k}")
        for k, v, lo in (("lr", lr, 0.0), ("entropy", entropy, 0.0), ("lam_lr", lam_lr, 0.0),
                         ("lam_init", lam_init, 0.0)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < lo:
                raise ConfigError(f"{self.name}: {k} must be a finite number ≥ {lo}, got {v!r}")
        if not (isinstance(explore_starts, (int, float)) and 0.0 <= explore_starts < 1.0):
            raise ConfigError(f"{self.name}: explore_starts must lie in [0, 1), got {explore_starts!r}")
        if not (isinstance(cost_margin, (int, float)) and 0.0 <= cost_margin < 0.5):
            raise ConfigError(f"{self.name}: cost_margin must lie in [0, 0.5), got {cost_margin!r}")
        if requests_per_iter < group_size:
            raise ConfigError(f"{self.name}: requests_per_iter ({requests_per_iter}) must be ≥ group_size "
                              f"({group_size})")
        if not lr > 0:
            raise ConfigError(f"{self.name}: lr must be > 0, got {lr}")
        if not (isinstance(stream_fraction, (int, float)) and 0.0 <= stream_fraction <= 1.0):
            raise ConfigError(f"{self.name}: stream_fraction must lie in [0, 1], got {stream_fraction!r}")
        if not (isinstance(val_fraction, (int, float)) and 0.0 < val_fraction < 1.0):
            raise ConfigError(f"{self.name}: val_fraction must lie in (0, 1), got {val_fraction!r}")
        if candidates not in CANDIDATE_SETS:
            raise ConfigError(f"{self.name}: candidates must be one of {list(CANDIDATE_SETS)}, got {candidates!r}")
        if time_limit_s is not None and not (isinstance(time_limit_s, (int, float)) and time_limit_s > 0):
            raise ConfigError(f"{self.name}: time_limit_s must be a number > 0 or None, got {time_limit_s!r}")
        if not isinstance(prior, (bool, np.bool_)):
            raise ConfigError(f"{self.name}: prior must be a bool, got {prior!r}")
        if prior:
            raise ConfigError(f"{self.name}: no prior is supported (this learner starts from a random policy and keeps "
                              "no baseline's decisions); use prior=False")
        hidden = [int(h) for h in hidden]
        if not hidden or min(hidden) < 1:
            raise ConfigError(f"{self.name}: hidden must be a non-empty list of layer widths ≥ 1, got {hidden!r}")
        self.iterations, self.requests_per_iter = int(iterations), int(requests_per_iter)
        self.stream_fraction, self.lr, self.hidden = float(stream_fraction), float(lr), hidden
        self.entropy, self.lam_lr, self.lam_init = float(entropy), float(lam_lr), float(lam_init)
        self.candidates, self.val_fraction, self.eval_every = candidates, float(val_fraction), int(eval_every)
        self.time_limit_s, self.prior = time_limit_s, bool(prior)
        self.group_size, self.cost_margin = int(group_size), float(cost_margin)
        self.explore_starts = float(explore_starts)
        self.net: StageNet | None = None
        self.history: list[dict[str, Any]] = []
        self.selected_step: int | None = None

    # ------------------------------------------------------------------ identity
    def config(self) -> dict[str, Any]:
        return {"iterations": self.iterations, "requests_per_iter": self.requests_per_iter,
                "stream_fraction": self.stream_fraction, "lr": self.lr, "hidden": list(self.hidden),
                "entropy": self.entropy, "lam_lr": self.lam_lr, "lam_init": self.lam_init,
                "candidates": self.candidates, "val_fraction": self.val_fraction, "eval_every": self.eval_every,
                "time_limit_s": self.time_limit_s, "group_size": self.group_size, "cost_margin": self.cost_margin,
                "explore_starts": self.explore_starts, "prior": self.prior}

    def report(self) -> dict[str, Any]:
        """What the results record per learned scheduler: the selected training step, the prior, λ, training size."""
        return {"selected_step": self.selected_step, "prior": self.prior, "updates_run": self.updates_run,
                "train_requests": self.train_requests,
                "lam": {f"{b:g}": round(float(v), 4) for b, v in zip(self.lam_budgets, self.lam)},
                "held_out_score": self.best_score, "num_candidates": int(self.cand.size)}

    # ------------------------------------------------------------------ fitting
    def fit(self, table: OutcomeTable, *, seed: int = 0) -> "AnytimeLearnerPolicy":
        with single_thread():
            return self._fit(table, seed=seed)

    def _fit(self, table: OutcomeTable, *, seed: int) -> "AnytimeLearnerPolicy":
        super().fit(table, seed=seed)
        val_rows, fit_rows = self.split(table.num_samples, seed)
        fit_tab, val_tab = table.subset(fit_rows), table.subset(val_rows)
        self.cand = candidate_codes(fit_tab, self.candidates)
        self._build_costs()
        torch.manual_seed(int(seed))
        self._rng = np.random.default_rng([int(seed), 0xA17])
        self.scaler = FeatureScaler(table.feature_dim).fit(fit_tab.features)
        self.net = StageNet(self._obs_dim(), 1 + self.cand.size, self.hidden, self.num_values,
                            shared_col=table.feature_dim + 3)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        self.lam_budgets = np.array([b for b in BUDGET_GRID if b >= self._floor], dtype=np.float64)
        self.lam = np.full(self.lam_budgets.size, self.lam_init)
        self._init_streams()
        at_fit = AnytimeTable.from_table(fit_tab)
        at_val = AnytimeTable.from_table(val_tab)
        t0 = time.perf_counter()
        self._held_out(val_tab, at_val, step=0)  # the untrained policy: logged as a reference, never the result
        self.best_score, best_state, self.selected_step = -np.inf, None, None
        self.updates_run = 0
        self.train_requests = 0
        for it in range(1, self.iterations + 1):
            data = self._collect(fit_tab, at_fit)
            self._update(data, it)
            self._dual_step(data)
            self.updates_run = it
            out_of_time = self.time_limit_s is not None and time.perf_counter() - t0 > self.time_limit_s
            if it % self.eval_every == 0 or it == self.iterations or out_of_time:
                score = self._held_out(val_tab, at_val, step=it)
                if self.keeps(score, self.best_score, step=it):
                    self.best_score, self.selected_step = score, it
                    best_state = copy.deepcopy(self.net.state_dict())
            if out_of_time:
                break
        self.net.load_state_dict(best_state)
        self.net.eval()
        self.fit_seconds = time.perf_counter() - t0
        return self

    @property
    def _floor(self) -> float:
        return float(self.cost.min())

    def _build_costs(self) -> None:
        """Incremental cost of reaching and reading each candidate from every decision state, by the kernel.

        Decision states: the start of a request (state 0) and "just read plan a" for each a in candidates ∪ {0}
        (state 1 + index); after reading a the request stands at block ``top_block(a)`` with the read chain computed.
        """
        at, cand = self.at, self.cand
        states = np.union1d(cand, [0])
        self._state_codes = states
        self._state_of = np.full(1 << at.num_blocks, -1, dtype=np.int64)
        self._state_of[states] = 1 + np.arange(states.size)
        k = cand.size
        start = script_costs(at, cand[:, None])[:, 0] - at.costs.stem
        pairs = np.stack([np.repeat(states, k), np.tile(cand, states.size)], axis=1)
        sc = script_costs(at, pairs)
        inc = (sc[:, 1] - sc[:, 0]).reshape(states.size, k)
        self._inc = np.vstack([start[None, :], inc])  # [1 + |states|, K]
        ext = extension_mask(cand, states)
        self._ext = np.vstack([np.ones((1, k), dtype=bool), ext])  # which candidates extend each state's plan

    def _state_index(self, batch: RequestBatch, idx: np.ndarray) -> np.ndarray:
        code = batch.code[idx]
        start = (batch.reads[idx] == 0) & (batch.pos[idx] == 0) & (code == 0)
        after = ~batch.fresh[idx] & (batch.reads[idx] > 0) & (batch.pos[idx] == top_block(code))
        s = np.where(start, 0, np.where(after, self._state_of[code], -1))
        if (s < 0).any():
            raise RuntimeError(f"{self.name}: a decision was asked in a state the stage policy never reaches")
        return s

    def _masks(self, batch: RequestBatch, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """([k, 1 + K] valid stage actions, [k, 1 + K] their incremental costs): STOP is always valid (cost 0
        here: what it reads was paid); a candidate if it extends the plan read so far and its read fits."""
        s = self._state_index(batch, idx)
        room = batch.budget[idx] - batch.spent[idx] + COST_TOL
        ok = self._ext[s] & (self._inc[s] <= room[:, None])
        if not batch.mask_over_budget:
            ok = self._ext[s]
        n = len(idx)
        mask = np.concatenate([np.ones((n, 1), dtype=bool), ok], axis=1)
        return mask, np.concatenate([np.zeros((n, 1)), np.where(self._ext[s], self._inc[s], 0.0)], axis=1)

    # ------------------------------------------------------------------ observations
    def _obs_dim(self) -> int:
        b = self.at.num_blocks
        return self.scaler.mean.numel() + 13 + _CONF_LEVELS.size + b + (b + 1)

    def _encode(self, features: np.ndarray, batch: RequestBatch, idx: np.ndarray, ctx: dict[str, np.ndarray]
                ) -> np.ndarray:
        b = batch.B
        n = len(idx)
        z = self.scaler(torch.as_tensor(features[batch.row[idx]])).numpy().astype(np.float32)
        avail = batch.budget[idx]
        spent = batch.spent[idx]
        reads = batch.reads[idx]
        ctx_cols = np.stack([avail, ctx["avg"][idx], np.minimum(ctx["level"][idx], 1.0), ctx["shared"][idx],
                             ctx["left"][idx], spent, avail - spent, batch.last_conf[idx], batch.prev_conf[idx],
                             batch.agree()[idx].astype(np.float64), (reads > 0).astype(np.float64), reads / (b + 1),
                             np.log1p(ctx["lam"][idx])],
                            axis=1)
        # thermometer code of the last confidence: a threshold rule on it ("stop when sure") is linear in these
        therm = (batch.last_conf[idx, None] > _CONF_LEVELS[None, :]).astype(np.float32)
        bits = (batch.code[idx, None] >> np.arange(b)) & 1
        pos = np.zeros((n, b + 1))
        pos[np.arange(n), np.minimum(batch.pos[idx], b)] = 1.0
        return np.concatenate([z, ctx_cols.astype(np.float32), therm, bits.astype(np.float32), pos.astype(np.float32)],
                              axis=1)

    # ------------------------------------------------------------------ acting (harness protocol)
    def begin(self, batch: RequestBatch, idx: np.ndarray, table: OutcomeTable,
              state: dict[str, Any] | None = None) -> None:
        self._check_fitted()
        if self.net is None:
            raise ConfigError(f"{self.name}: call fit(calibration_table) first")
        if table.feature_dim != self.scaler.mean.numel():
            raise ConfigError(f"{self.name}: fitted on {self.scaler.mean.numel()}-d features, got "
                              f"{table.feature_dim}-d")
        idx = np.asarray(idx, dtype=np.int64)
        self._ensure_ctx(batch.n)
        self._features = table.features
        self._ctx_from_state(batch, idx, state)
        self._target[idx] = -1

    def _ensure_ctx(self, n: int) -> None:
        if getattr(self, "_ctx_n", -1) != n:
            self._ctx_n = n
            self._ctx = {k: np.zeros(n) for k in ("avg", "level", "shared", "left", "lam")}
            self._target = np.full(n, -1, dtype=np.int64)
            self._done = np.zeros(n, dtype=bool)
            self._forced = np.zeros(n, dtype=bool)

    def _ctx_from_state(self, batch: RequestBatch, idx: np.ndarray, state: dict[str, Any] | None) -> None:
        c = self._ctx
        if state is not None and state.get("avg_budget") is not None:
            c["avg"][idx] = np.broadcast_to(np.asarray(state["avg_budget"], dtype=np.float64), (len(idx),))
            c["level"][idx] = np.broadcast_to(np.asarray(state["level"], dtype=np.float64), (len(idx),))
            c["shared"][idx] = 1.0
            step, hor = state.get("step", 0), state.get("horizon", DEFAULT_STREAM.horizon)
            c["left"][idx] = np.broadcast_to(1.0 - np.asarray(step, dtype=np.float64) / float(hor), (len(idx),))
            # the price learnt for this average budget (interpolated between the grid's multipliers)
            c["lam"][idx] = np.interp(c["avg"][idx], self.lam_budgets, self.lam)
        else:
            c["avg"][idx] = batch.budget[idx]
            c["level"][idx] = batch.budget[idx]
            c["shared"][idx] = 0.0
            c["left"][idx] = 1.0
            c["lam"][idx] = 0.0
        self._done[idx] = False

    def act(self, batch: RequestBatch) -> np.ndarray:
        with single_thread():
            return self._act(batch, rollout=None)

    def _act(self, batch: RequestBatch, rollout: Rollout | None) -> np.ndarray:
        """One kernel action per active slot; a stage decision where a slot has no target (greedy unless
        ``rollout`` records sampled decisions)."""
        a = np.full(batch.n, STOP, dtype=np.int64)
        live = np.flatnonzero(batch.active & ~self._done)
        need = live[self._target[live] < 0]
        if need.size:
            obs = self._encode(self._features, batch, need, self._ctx)
            mask, inc = self._masks(batch, need)
            priced = (self._ctx["lam"][need, None] * inc).astype(np.float32)
            with torch.no_grad():
                logits = self.net.logits(torch.as_tensor(obs), torch.as_tensor(mask), torch.as_tensor(priced))
            forced = self._forced[need]
            if forced.any():  # exploring starts: a uniformly random first stage, not a policy decision
                u = np.where(mask[forced], self._rng.random((int(forced.sum()), mask.shape[1])), -1.0)
                u[:, STOP_ACTION] = -1.0
                first = u.argmax(1)
                self._forced[need[forced]] = False
                self._target[need[forced]] = self.cand[first - 1]
                need, obs, mask, priced, logits = (need[~forced], obs[~forced], mask[~forced], priced[~forced],
                                                   logits[torch.as_tensor(~forced)])
            if rollout is None:
                choice = logits.argmax(1).numpy()
            else:
                g = torch.as_tensor(-np.log(-np.log(self._rng.random(logits.shape).clip(1e-12, 1 - 1e-12))),
                                    dtype=logits.dtype)
                choice = (logits + g).argmax(1).numpy()  # Gumbel-max: a sample of softmax(logits), seeded
                logp = torch.log_softmax(logits, 1).numpy()[np.arange(need.size), choice]
                rollout.add(obs, mask, priced, choice, logp, need, batch.spent[need].copy())
            stop = choice == STOP_ACTION
            self._done[need[stop]] = True
            self._target[need[~stop]] = self.cand[choice[~stop] - 1]
        go = live[(self._target[live] >= 0) & ~self._done[live]]
        if go.size == 0:
            return a
        step, deciding = step_toward(batch, go, self._target[go])  # a STOP here is never taken: the stage was checked
        a[go] = np.where(deciding, step, READ)
        reading = ~deciding
        self._target[go[reading]] = -1  # after this READ the next call decides again
        self._done[go[deciding & (step == STOP)]] = True
        return a

    # ------------------------------------------------------------------ training rollouts
    def _init_streams(self) -> None:
        k = self.group_size
        groups = self.requests_per_iter // k
        self._n_stream = int(round(self.stream_fraction * groups)) * k
        ns = self._n_stream
        self._s_bin = (np.arange(ns) // k) % max(self.lam_budgets.size, 1)
        # the evaluation's streams (cap, horizon), each group at a random (staggered) position of its stream
        self._streams = StaggeredStreams(self.lam_budgets[self._s_bin] if ns else np.zeros(0),
                                         np.repeat(self._rng.integers(0, DEFAULT_STREAM.horizon, size=ns // k), k))

    def _collect(self, fit_tab: OutcomeTable, at: AnytimeTable) -> dict[str, np.ndarray]:
        """Serve ``requests_per_iter`` requests side by side with sampled stage decisions; stream slots advance
        their buckets by one request. Requests come in groups of ``group_size`` copies (same row, same budget or
        stream budget b̄) sampled independently: the group is the baseline of :meth:`group_baseline`."""
        k, ns = self.group_size, self._n_stream
        n = self.requests_per_iter // k * k
        nb = n - ns
        rows = np.repeat(self._rng.integers(0, fit_tab.num_samples, size=n // k), k)
        self._streams.refill()  # a new stream starts with an empty bucket
        # per-request budgets: half from the grid the sweep reports (each plan on the Pareto front is the best choice
        # only over a narrow budget interval; drawing the grid's budgets often resolves the choice exactly there),
        # half uniform so that every budget in between is learnt too
        g = nb // k
        grid = self.lam_budgets
        b_band = np.where(self._rng.random(g) < 0.5, grid[self._rng.integers(0, grid.size, size=g)],
                          self._rng.uniform(max(self._floor, 0.1), 1.0, size=g))
        b_band = np.repeat(b_band, k)
        # Stream requests are served under the bucket's cap, not its level: the average budget is the Lagrangian
        # constraint's to enforce (λ_b̄ sees every intended cost; a level mask would hide overspending from it and
        # teach "take what the bucket holds"). The policy still sees the simulated level; deployment masks by it.
        budgets = np.concatenate([b_band, np.full(ns, min(self._streams.spec.bucket_cap, 1.0))])
        batch = RequestBatch(n, at, mask_over_budget=True)
        batch.start(np.arange(n), rows, budgets)
        self._ensure_ctx(n)
        self._features = fit_tab.features
        idx = np.arange(n)
        self._ctx_from_state(batch, idx, None)
        if ns:
            s = np.arange(nb, n)
            self._ctx["avg"][s] = self._streams.avg
            self._ctx["level"][s] = self._streams.level
            self._ctx["shared"][s] = 1.0
            self._ctx["left"][s] = self._streams.left
            self._ctx["lam"][s] = self.lam[self._s_bin]
        self._target[:] = -1
        # exploring starts (Sutton & Barto 2018, §5.3): some requests begin with a random first stage, so the
        # decisions after a read are learnt from every plan one could have read, not only from those the policy
        # already prefers; whole groups, so a group's requests stay comparable
        self._forced[:] = np.repeat(self._rng.random(n // k) < self.explore_starts, k)
        forced = self._forced.copy()
        lam = np.concatenate([np.zeros(nb), self.lam[self._s_bin]])
        ro = Rollout()
        for _ in range(4 * at.num_blocks + 4):
            if not batch.active.any():
                break
            batch.step(self._act(batch, ro), at.read_table)
        correct = at.correct[rows, batch.answer]
        total = batch.spent.copy()
        if ns:
            self._streams.pay(total[nb:])
        self.train_requests += n
        data = ro.finish(correct, total, lam)
        data["group"] = data["slot"] // k
        # OmniSafe's scaling (r − λ·c)/(1 + λ): a large multiplier must not swamp the other budgets' gradients
        data["request_return"] = ((correct.astype(np.float64) - lam * (total - at.costs.stem)) / (1.0 + lam))[
            data["slot"]]
        on_policy = ~forced[nb:]  # the multiplier prices the policy's own costs
        data["stream_cost"] = total[nb:][on_policy]
        data["stream_bin"] = self._s_bin[on_policy]
        return data

    def _dual_step(self, data: dict[str, np.ndarray]) -> None:
        """λ_b̄ ← clip(λ_b̄ + lr·(mean request cost − d)/d, 0, 20), d = b̄·(1 − margin), per average budget (dual
        ascent)."""
        if not self._n_stream:
            return
        k = self.lam_budgets.size
        cnt = np.bincount(data["stream_bin"], minlength=k)
        mean_cost = np.bincount(data["stream_bin"], weights=data["stream_cost"], minlength=k) / np.maximum(cnt, 1)
        target = self.lam_budgets * (1.0 - self.cost_margin)
        viol = (mean_cost - target) / target
        self.lam = np.where(cnt > 0, np.clip(self.lam + self.lam_lr * viol, 0.0, _LAM_MAX), self.lam)

    def _update(self, data: dict[str, np.ndarray], it: int) -> None:
        raise NotImplementedError

    def group_baseline(self, data: dict[str, np.ndarray]) -> np.ndarray:
        """Per decision: the mean request return of the *other* requests of its group (leave-one-out; it does not
        depend on the decision's own actions, so the gradient stays unbiased)."""
        k = self.group_size
        if k < 2:
            return np.zeros(len(data["slot"]))
        slot, g = data["slot"], data["group"]
        r_slot = np.zeros(self.requests_per_iter // k * k)
        r_slot[slot] = data["request_return"]
        g_sum = r_slot.reshape(-1, k).sum(1)
        return (g_sum[g] - r_slot[slot]) / (k - 1)

    def _entropy_coef(self, it: int) -> float:
        """β, annealed linearly to 0 over the run."""
        return self.entropy * max(0.0, 1.0 - it / self.iterations)

    # ------------------------------------------------------------------ held-out scoring
    def _held_out(self, val_tab: OutcomeTable, at: AnytimeTable, *, step: int) -> float:
        """Mean held-out accuracy of the greedy policy: bandit sweep + shared-bucket streams (overruns count as
        wrong)."""
        self.net.eval()
        bandit = held_out_bandit_accuracy(self, val_tab, at, [b for b in BUDGET_GRID if b >= self._floor])
        stream = self._held_out_streams(val_tab, at)
        score = float(np.mean(bandit) + np.mean(stream))
        self.history.append({"step": step, "bandit": bandit, "stream": stream, "score": score,
                             "lam": self.lam.round(4).tolist()})
        self.net.train()
        return score

    def _held_out_streams(self, val_tab: OutcomeTable, at: AnytimeTable) -> list[float]:
        budgets = np.array([b for b in _HELD_OUT_STREAM_BUDGETS if b >= self._floor])
        per = held_out_stream_accuracy(self, val_tab, at, budgets, seed=0xE7A1)
        return [float(x) for x in per]
