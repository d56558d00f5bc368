"""Stage REINFORCE [``anytime_stage_reinforce``]: a small stochastic policy over a tree of Pareto stages, trained by
REINFORCE with a leave-one-out baseline and a Lagrange multiplier per average budget, on the anytime env's kernel.

The action set is small on purpose. A request first runs one plan ``a`` of the calibration fit rows' accuracy/cost
Pareto front; after reading a plan ``c`` the policy either STOPs (answers what it read) or continues to one of the
Pareto plans among ``c``'s extensions (plans that keep ``c``'s decisions up to its last executed block and run at
least one more, so the kernel reuses everything already computed), at most ``max_stages`` reads per request. These
plans form a tree (:class:`StageTree`) fixed at fit time from accuracies and costs only; which branch to take, and
when to stop, is learnt.

Policy. At tree node ``s`` (the start, or "just read the plan of s") the logit of action ``k`` (STOP = 0, child
``k − 1``) is ``β_{g,b}[s, k] + W_g[s, k] · φ − softplus(κ)·λ_b̄·Δc[s, k]`` with STOP's fixed at 0, where ``g`` is the
setting (per-request hard budget / shared token bucket), ``β_{g,b}`` a bias table per budget of
:data:`~agents.evaluation.metrics.BUDGET_GRID` (linearly interpolated in the request's budget, or the bucket's average
budget b̄), ``φ`` the readout (confidence, its log-odds, whether the last two answers agree, bucket level relative to
b̄ or room left relative to the request budget, cost spent relative to the budget) and ``Δc`` the exact incremental
cost of the child. All parameters start at zero (uniform over valid actions) apart from κ: no baseline's plans or
thresholds are used. Invalid actions (a child whose read no longer fits the budget or what the bucket holds) are
masked.

Training (:meth:`AnytimeStageReinforcePolicy.fit`) on the calibration *fit* rows: each update serves one request on
each of ``stream_groups`` simulated token-bucket streams (cap and horizon of the evaluation harness, the bucket
starting empty, the request's budget = what the bucket holds) and ``bandit_groups`` requests with a hard per-request
budget, each served ``group_size`` times side by side with independent samples. Return
``(1[correct] − λ_b̄·(cost − stem)) / (1 + λ_b̄)`` (λ = 0 under a hard budget), credited to every decision of the
request; the baseline is the mean return of the other copies (REINFORCE leave-one-out, Kool et al. 2019). λ_b̄ ≥ 0
follows dual ascent on mean cost ≤ b̄·(1 − ``cost_margin``) (the first copy of each stream advances its bucket, and
its costs feed the multiplier). Held-out selection (:meth:`agents.learners.base.Learner.keeps`, the one rule of every
learner; the split is :meth:`~agents.learners.base.Learner.split`): every ``eval_every`` updates the greedy policy serves
``held_out_streams`` shared-bucket streams of 100 requests on held-out calibration rows at every grid budget (20 ×
100 requests per budget cover the 20 % held-out rows about once, so the selection's noise stays below the
differences it has to resolve); the best mean accuracy (overruns count as wrong) is kept (``selected_step``). The
test split is never seen.

Options: ``train_budget`` — what a training stream request may spend (``"cap"``, default, or ``"level"``: what the
simulated bucket holds); ``first_low`` — in a bucket the first plan's cost lies in [first_low·b̄, b̄].
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from adainf_env.envs.anytime.actions import AnytimeTable, READ, STOP
from adainf_env.envs.anytime.core import RequestBatch
from adainf_env.envs.anytime.stages import StageTree
from adainf_env.errors import ConfigError
from adainf_env.feasibility import COST_TOL
from adainf_env.stream import DEFAULT_STREAM, StaggeredStreams
from adainf_env.tables.outcomes import OutcomeTable
from agents.baselines.anytime_policies import step_toward
from agents.evaluation.metrics import BUDGET_GRID
from agents.learners.base import AnytimeLearner, held_out_stream_accuracy, single_thread

__all__ = ["StageTree", "StageLogits", "AnytimeStageReinforcePolicy", "READOUT_FEATURES", "TRAIN_BUDGETS"]

#: What a training stream request may spend: the bucket's cap (default) or what the simulated bucket holds.
TRAIN_BUDGETS = ("cap", "level")

# Confidence levels of the readout's thermometer code (finer near 1, where softmax confidences crowd): a stop rule
# "continue when conf < τ" is one weight per level, learnt nearly independently of the others.
_CONF_LEVELS = np.array([0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99])
#: The readout φ at a decision (see the module docstring).
READOUT_FEATURES = ("conf", "log_odds", "agree", "level_rel", "spent_rel",
                    *(f"conf>{c:g}" for c in _CONF_LEVELS))
_LAM_MAX = 20.0  # a unit of the full model is never worth more than this many correct answers
_SETTINGS = 2  # 0: hard per-request budget (bandit), 1: shared token bucket (stream)


class StageLogits(nn.Module):
    """Logits ``[n, 1 + K]`` of the stage policy (module docstring): bias tables per setting and budget bin,
    readout weights per setting, node and action, and the price scale softplus(κ)."""

    def __init__(self, num_nodes: int, num_actions: int, num_bins: int, num_features: int) -> None:
        super().__init__()
        k = num_actions - 1
        self.bias = nn.Parameter(torch.zeros(_SETTINGS, num_bins, num_nodes, k))
        self.weight = nn.Parameter(torch.zeros(_SETTINGS, num_nodes, k, num_features))
        # the price term's scale: softplus(κ) = 1 logit per unit of λ·Δc at the start
        self.kappa = nn.Parameter(torch.tensor(math.log(math.e - 1.0)))

    def forward(self, setting: torch.Tensor, lo: torch.Tensor, frac: torch.Tensor, node: torch.Tensor,
                phi: torch.Tensor, priced: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b = self.bias[setting, lo, node] * (1 - frac[:, None]) + self.bias[setting, lo + 1, node] * frac[:, None]
        w = (self.weight[setting, node] * phi[:, None, :]).sum(-1)
        go = b + w - nn.functional.softplus(self.kappa) * priced
        out = torch.cat([torch.zeros_like(go[:, :1]), go], 1)
        return out.masked_fill(~mask, -1e9)


class _Decisions:
    """Inputs of every sampled decision of a batch (to recompute log-probabilities with gradients)."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []

    def add(self, *arrays: np.ndarray) -> None:
        self.parts.append(arrays)

    def cat(self) -> list[np.ndarray]:
        return [np.concatenate(x) for x in zip(*self.parts)]


class AnytimeStageReinforcePolicy(AnytimeLearner):
    """REINFORCE (leave-one-out) + per-average-budget Lagrange multipliers over a tree of Pareto stages."""

    name = "anytime_stage_reinforce"

    def __init__(self, *, iterations: int = 800, stream_groups: int = 256, bandit_groups: int = 64,
                 group_size: int = 4, lr: float = 0.05, entropy: float = 0.01, lam_lr: float = 0.2,
                 lam_init: float = 1.0, cost_margin: float = 0.0, first_pool: int = 16, ext_pool: int = 4,
                 max_stages: int = 3, val_fraction: float = 0.2, eval_every: int = 100,
                 explore_starts: float = 0.25, train_budget: str = "cap", first_low: float = 0.0,
                 held_out_streams: int = 20, prior: bool = False) -> None:
        super().__init__()
        for k, v, lo in (("iterations", iterations, 1), ("stream_groups", stream_groups, 0),
                         ("bandit_groups", bandit_groups, 0), ("group_size", group_size, 2),
                         ("first_pool", first_pool, 2), ("ext_pool", ext_pool, 1), ("max_stages", max_stages, 1),
                         ("eval_every", eval_every, 1), ("held_out_streams", held_out_streams, 1)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ConfigError(f"{self.name}: {k} must be an integer ≥ {lo}, got {v!r}")
        if stream_groups + bandit_groups < 1:
            raise ConfigError(f"{self.name}: stream_groups + bandit_groups must be ≥ 1")
        for k, v in (("lr", lr), ("entropy", entropy), ("lam_lr", lam_lr), ("lam_init", lam_init)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"{self.name}: {k} must be a finite number ≥ 0, got {v!r}")
        if not lr > 0:
            raise ConfigError(f"{self.name}: lr must be > 0, got {lr}")
        if not (isinstance(cost_margin, (int, float)) and 0.0 <= cost_margin < 0.5):
            raise ConfigError(f"{self.name}: cost_margin must lie in [0, 0.5), got {cost_margin!r}")
        if not (isinstance(first_low, (int, float)) and 0.0 <= first_low <= 1.0):
            raise ConfigError(f"{self.name}: first_low must lie in [0, 1], got {first_low!r}")
        if train_budget not in TRAIN_BUDGETS:
            raise ConfigError(f"{self.name}: train_budget must be one of {list(TRAIN_BUDGETS)}, got {train_budget!r}")
        if not (isinstance(explore_starts, (int, float)) and 0.0 <= explore_starts < 1.0):
            raise ConfigError(f"{self.name}: explore_starts must lie in [0, 1), got {explore_starts!r}")
        if not (isinstance(val_fraction, (int, float)) and 0.0 < val_fraction < 1.0):
            raise ConfigError(f"{self.name}: val_fraction must lie in (0, 1), got {val_fraction!r}")
        if prior is not False:
            raise ConfigError(f"{self.name}: no prior is supported (it starts from a uniform policy and keeps no "
                              f"baseline's decisions); use prior=False, got {prior!r}")
        self.iterations, self.stream_groups, self.bandit_groups = int(iterations), int(stream_groups), \
            int(bandit_groups)
        self.group_size, self.lr, self.entropy = int(group_size), float(lr), float(entropy)
        self.lam_lr, self.lam_init, self.cost_margin = float(lam_lr), float(lam_init), float(cost_margin)
        self.first_pool, self.ext_pool, self.max_stages = int(first_pool), int(ext_pool), int(max_stages)
        self.val_fraction, self.eval_every, self.prior = float(val_fraction), int(eval_every), False
        self.explore_starts, self.train_budget = float(explore_starts), train_budget
        self.first_low, self.held_out_streams = float(first_low), int(held_out_streams)
        self.net: StageLogits | None = None
        self.selected_step: int | None = None
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ identity
    def config(self) -> dict[str, Any]:
        return {"iterations": self.iterations, "stream_groups": self.stream_groups,
                "bandit_groups": self.bandit_groups, "group_size": self.group_size, "lr": self.lr,
                "entropy": self.entropy, "lam_lr": self.lam_lr, "lam_init": self.lam_init,
                "cost_margin": self.cost_margin, "first_pool": self.first_pool, "ext_pool": self.ext_pool,
                "max_stages": self.max_stages, "val_fraction": self.val_fraction, "eval_every": self.eval_every,
                "explore_starts": self.explore_starts, "train_budget": self.train_budget, "first_low": self.first_low,
                "held_out_streams": self.held_out_streams, "prior": self.prior}

    def report(self) -> dict[str, Any]:
        return {"selected_step": self.selected_step, "prior": self.prior, "held_out_score": self.best_score,
                "lam": {f"{b:g}": round(float(v), 4) for b, v in zip(self.grid, self.lam)},
                "num_nodes": int(self.tree.num_nodes), "fit_seconds": round(self.fit_seconds, 2)}

    # ------------------------------------------------------------------ fitting
    def fit(self, table: OutcomeTable, *, seed: int = 0) -> "AnytimeStageReinforcePolicy":
        with single_thread():
            return self._fit(table, seed=int(seed))

    def _fit(self, table: OutcomeTable, *, seed: int) -> "AnytimeStageReinforcePolicy":
        super().fit(table, seed=seed)
        t0 = time.perf_counter()
        val_rows, fit_rows = self.split(table.num_samples, seed)
        fit_tab, val_tab = table.subset(fit_rows), table.subset(val_rows)
        at_fit, at_val = AnytimeTable.from_table(fit_tab), AnytimeTable.from_table(val_tab)
        self.tree = StageTree(at_fit, fit_tab, first_pool=self.first_pool, ext_pool=self.ext_pool,
                              max_stages=self.max_stages)
        self._floor = float(self.tree.cum[self.tree.child[0][self.tree.child[0] >= 0]].min())
        self.grid = np.array([b for b in BUDGET_GRID if b >= self._floor] or [max(BUDGET_GRID)], dtype=np.float64)
        torch.manual_seed(seed)
        self._rng = np.random.default_rng([seed, 0x57A6E])
        self.net = StageLogits(self.tree.num_nodes, self.tree.num_actions, self.grid.size + 1,
                               len(READOUT_FEATURES))
        self.opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        self.lam = np.full(self.grid.size, self.lam_init)
        ns = self.stream_groups
        self._s_bin = np.arange(ns) % self.grid.size
        # the evaluation's streams (cap, horizon), each at a random (staggered) position of its stream
        self._streams = StaggeredStreams(self.grid[self._s_bin], self._rng.integers(0, DEFAULT_STREAM.horizon, size=ns))
        self.best_score, best, self.selected_step = -np.inf, None, None
        for it in range(1, self.iterations + 1):
            self._train_step(fit_tab, at_fit, it)
            if it % self.eval_every == 0 or it == self.iterations:
                score = self._held_out(val_tab, at_val, step=it)
                if self.keeps(score, self.best_score, step=it):
                    self.best_score, self.selected_step = score, it
                    best = (copy.deepcopy(self.net.state_dict()), self.lam.copy())
        self.net.load_state_dict(best[0])
        self.lam = best[1]
        self.net.eval()
        self.fit_seconds = time.perf_counter() - t0
        return self

    def _train_step(self, fit_tab: OutcomeTable, at: AnytimeTable, it: int) -> None:
        k, ns, nb = self.group_size, self.stream_groups, self.bandit_groups
        groups = ns + nb
        n = groups * k
        rows = np.repeat(self._rng.integers(0, fit_tab.num_samples, size=groups), k)
        self._streams.refill()  # a new stream starts with an empty bucket
        avail = self._streams.available()
        # hard budgets: half the grid's budgets, half uniform between the cheapest answer and the full model
        b_band = np.where(self._rng.random(nb) < 0.5, self.grid[self._rng.integers(0, self.grid.size, size=nb)],
                          self._rng.uniform(self._floor, 1.0, size=nb))
        # "cap": a stream request may spend up to the bucket's cap, so the multiplier, not the level mask, has to
        # learn the average budget (a level mask would hide overspending from it); "level": what the bucket holds
        cap = self._streams.spec.bucket_cap
        s_budget = np.full(ns, cap) if self.train_budget == "cap" else np.maximum(avail, 1e-12)
        budgets = np.repeat(np.concatenate([s_budget, b_band]), k)
        shared = np.repeat(np.arange(groups) < ns, k)
        avg = np.repeat(np.concatenate([self._streams.avg, b_band]), k)
        lam = np.repeat(np.concatenate([self.lam[self._s_bin], np.zeros(nb)]), k)
        batch = RequestBatch(n, at, mask_over_budget=True)
        batch.start(np.arange(n), rows, budgets)
        self._reset_slots(n)
        self._ctx_shared[:], self._ctx_avg[:], self._ctx_lam[:] = shared, avg, lam
        # exploring starts (Sutton & Barto 2018, §5.3): whole groups begin with one uniformly random first plan that
        # fits, so the decisions after a read are learnt at every first plan, not only at those the policy prefers;
        # that first choice is no policy decision (not in the gradient) and its costs do not price λ
        forced = self._rng.random(groups) < self.explore_starts
        self._forced_u = np.repeat(self._rng.random((groups, self.tree.num_actions)), k, axis=0)
        self._forced = np.repeat(forced, k)
        log = _Decisions()
        for _ in range(4 * at.num_blocks + 4):
            if not batch.active.any():
                break
            batch.step(self._act(batch, log), at.read_table)
        correct = at.correct[rows, batch.answer].astype(np.float64)
        total = batch.spent.copy()
        if ns:
            first = np.arange(ns) * k  # the first copy of each stream advances its bucket and prices λ
            self._streams.pay(total[first])
            self._dual_step(total[first], ~forced[:ns])
        ret = (correct - lam * (total - at.costs.stem)) / (1.0 + lam)
        g = ret.reshape(groups, k)
        adv = ret - ((g.sum(1, keepdims=True) - g) / (k - 1)).reshape(-1)  # leave-one-out baseline
        adv = adv / (adv.std() + 1e-8)
        slot, setting, lo, frac, node, phi, priced, mask, action = log.cat()
        logits = self.net(torch.as_tensor(setting), torch.as_tensor(lo), torch.as_tensor(frac),
                          torch.as_tensor(node), torch.as_tensor(phi), torch.as_tensor(priced),
                          torch.as_tensor(mask))
        logp_all = torch.log_softmax(logits, 1)
        logp = logp_all.gather(1, torch.as_tensor(action)[:, None])[:, 0]
        ent = -(logp_all.exp() * logp_all).masked_fill(~torch.as_tensor(mask), 0.0).sum(1)
        beta = self.entropy * max(0.0, 1.0 - it / self.iterations)
        loss = -(logp * torch.as_tensor(adv[slot], dtype=torch.float32)).sum() / n - beta * ent.sum() / n
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def _dual_step(self, cost: np.ndarray, on_policy: np.ndarray) -> None:
        """λ_b̄ ← clip(λ_b̄ + lr·(mean cost − d)/d, 0, 20), d = b̄·(1 − margin), per average budget (dual ascent)."""
        kb = self.grid.size
        cnt = np.bincount(self._s_bin[on_policy], minlength=kb)
        mean = np.bincount(self._s_bin[on_policy], weights=cost[on_policy], minlength=kb) / np.maximum(cnt, 1)
        d = self.grid * (1.0 - self.cost_margin)
        self.lam = np.where(cnt > 0, np.clip(self.lam + self.lam_lr * (mean - d) / d, 0.0, _LAM_MAX), self.lam)

    # ------------------------------------------------------------------ acting (harness protocol)
    def _reset_slots(self, n: int, idx: np.ndarray | None = None) -> None:
        if getattr(self, "_slots", -1) != n:
            self._slots = n
            self._node = np.zeros(n, dtype=np.int64)
            self._target = np.full(n, -1, dtype=np.int64)  # node being run towards (−1: decide next)
            self._done = np.zeros(n, dtype=bool)
            self._ctx_shared = np.zeros(n, dtype=bool)
            self._ctx_avg = np.zeros(n)
            self._ctx_lam = np.zeros(n)
        sel = slice(None) if idx is None else idx
        self._node[sel] = 0
        self._target[sel] = -1
        self._done[sel] = False

    def begin(self, batch: RequestBatch, idx: np.ndarray, table: OutcomeTable,
              state: dict[str, Any] | None = None) -> None:
        self._check_fitted()
        if self.net is None:
            raise ConfigError(f"{self.name}: call fit(calibration_table) first")
        if table.num_blocks != self.tree_blocks:
            raise ConfigError(f"{self.name}: fitted on {self.tree_blocks}-block plans, got {table.num_blocks}")
        idx = np.asarray(idx, dtype=np.int64)
        self._reset_slots(batch.n, idx)
        if state is not None and state.get("avg_budget") is not None:
            avg = np.broadcast_to(np.asarray(state["avg_budget"], dtype=np.float64), (len(idx),))
            self._ctx_shared[idx] = True
            self._ctx_avg[idx] = avg
            self._ctx_lam[idx] = np.interp(avg, self.grid, self.lam)
        else:
            self._ctx_shared[idx] = False
            self._ctx_avg[idx] = batch.budget[idx]
            self._ctx_lam[idx] = 0.0

    @property
    def tree_blocks(self) -> int:
        return int(self.at.num_blocks)

    def act(self, batch: RequestBatch) -> np.ndarray:
        with single_thread():
            return self._act(batch, None)

    def _inputs(self, batch: RequestBatch, need: np.ndarray) -> tuple[np.ndarray, ...]:
        """(setting, bin index, bin fraction, node, φ, λ·Δc, mask) of the slots ``need`` at a decision."""
        node = self._node[need]
        shared = self._ctx_shared[need]
        avg = np.maximum(self._ctx_avg[need], 1e-6)
        x = np.clip(avg, self.grid[0], self.grid[-1])
        lo = np.clip(np.searchsorted(self.grid, x, side="right") - 1, 0, self.grid.size - 1)
        hi_b = self.grid[np.minimum(lo + 1, self.grid.size - 1)]
        frac = np.where(hi_b > self.grid[lo], (x - self.grid[lo]) / np.maximum(hi_b - self.grid[lo], 1e-12), 0.0)
        start = node == 0
        inc = self.tree.inc[node]
        conf = batch.last_conf[need]
        odds = np.log(np.clip(conf, 1e-6, 1 - 1e-6) / np.clip(1 - conf, 1e-6, 1.0))
        budget, spent = batch.budget[need], batch.spent[need]
        level_rel = np.where(shared, np.clip(budget / avg - 1.0, -1.0, 4.0), np.clip((budget - spent) / avg, 0, 1))
        # centred near where stop/continue decisions are taken (confidences crowd near 1), so the bias and the
        # slopes of a threshold rule are not confounded at the start
        phi = np.stack([conf - 0.75, np.clip(odds, -8, 8) / 4.0 - 0.5, batch.agree()[need].astype(np.float64),
                        level_rel, spent / avg - 1.0], axis=1)
        therm = (conf[:, None] > _CONF_LEVELS[None, :]) - 0.5
        phi = np.concatenate([phi, therm], axis=1).astype(np.float32)
        phi[start, :3] = 0.0  # nothing read yet
        phi[start, 5:] = 0.0
        room = budget - spent + COST_TOL
        ok = np.isfinite(inc) & (inc <= room[:, None])
        if not batch.mask_over_budget:
            ok = np.isfinite(inc)
        # in a shared bucket the first plan is one of the Pareto plans near the average budget b̄ (cost within
        # [first_low·b̄, b̄]): what goes beyond b̄ is for the later stages to spend, on the requests that need it
        near = (self.tree.cum[np.maximum(self.tree.child[0], 0)][None, :] <= avg[:, None] + COST_TOL) & \
            (self.tree.cum[np.maximum(self.tree.child[0], 0)][None, :] >= self.first_low * avg[:, None])
        narrowed = ok & near
        use = start & shared & narrowed.any(1)
        ok = np.where(use[:, None], narrowed, ok)
        stop_ok = ~start | ~ok.any(1)  # at the start STOP only when no first plan fits (answers plan 0)
        mask = np.concatenate([stop_ok[:, None], ok], axis=1)
        priced = (self._ctx_lam[need, None] * np.where(np.isfinite(inc), inc, 0.0)).astype(np.float32)
        return shared.astype(np.int64), lo.astype(np.int64), frac.astype(np.float32), node, phi, priced, mask

    def _act(self, batch: RequestBatch, log: _Decisions | None) -> np.ndarray:
        a = np.full(batch.n, STOP, dtype=np.int64)
        live = np.flatnonzero(batch.active & ~self._done)
        need = live[self._target[live] < 0]
        if need.size:
            inp = self._inputs(batch, need)
            with torch.no_grad():
                logits = self.net(*(torch.as_tensor(x) for x in inp))
            if log is None:
                choice = logits.argmax(1).numpy()
            else:  # Gumbel-max: a seeded sample of softmax(logits)
                u = self._rng.random(logits.shape).clip(1e-12, 1 - 1e-12)
                choice = (logits + torch.as_tensor(-np.log(-np.log(u)), dtype=logits.dtype)).argmax(1).numpy()
                forced = self._forced[need] & (self._node[need] == 0)
                if forced.any():  # exploring starts: the group's random first plan among those that fit
                    valid = inp[-1][forced]
                    pick = np.where(valid[:, 1:], self._forced_u[need[forced], 1:], -1.0).argmax(1) + 1
                    choice[forced] = np.where(valid[:, 1:].any(1), pick, 0)
                keep = ~forced
                log.add(need[keep], *(x[keep] for x in inp), choice[keep])
            stop = choice == 0
            self._done[need[stop]] = True
            go_ = need[~stop]
            self._target[go_] = self.tree.child[self._node[go_], choice[~stop] - 1]
        go = live[(self._target[live] >= 0) & ~self._done[live]]
        if go.size == 0:
            return a
        step, deciding = step_toward(batch, go, self.tree.code[self._target[go]])  # STOP never taken: stage checked
        a[go] = np.where(deciding, step, READ)
        reading = go[~deciding]
        self._node[reading] = self._target[reading]  # after this READ the slot stands at the child node
        self._target[reading] = -1
        self._done[go[deciding & (step == STOP)]] = True
        return a

    # ------------------------------------------------------------------ held-out selection
    def _held_out(self, val_tab: OutcomeTable, at: AnytimeTable, *, step: int) -> float:
        """Mean accuracy of the greedy policy over shared-bucket streams on held-out rows at every grid budget
        (a request that overruns what the bucket holds counts as wrong)."""
        per = held_out_stream_accuracy(self, val_tab, at, self.grid, streams_per_budget=self.held_out_streams,
                                       seed=0x5E1EC7)
        score = float(per.mean())
        self.history.append({"step": step, "stream": per.round(4).tolist(), "score": score,
                             "lam": self.lam.round(4).tolist()})
        return score
