"""Baselines of the anytime env (:class:`~adainf_env.envs.anytime.env.AnytimeEnv`): scripted policies over plan sequences.

Every policy here acts on the kernel state (:class:`~adainf_env.envs.anytime.core.RequestBatch`, ``env.state`` of the
envs), so it runs unchanged in the single env, the vec env and the anytime harness, with one definition of costs.
A policy serves a request as a *script*: a sequence of plan codes ``t_0 ⊂ t_1 ⊂ …`` each extending the previous one's
decisions (the anytime env never recomputes a block: later stages continue from the activations already computed).
It decides each block as the current target says, reads the target, and then either stops or moves to the next
target by its rule.

* ``anytime_conf_cascade`` — read plan a; if its confidence < τ and the rest of the way to plan b (b extends a) fits
  what is left of the budget, continue to b and answer with b. (a, b, τ) are chosen on the calibration table for
  each budget: the most accurate configuration whose worst-case cost fits the budget (``budget_mode="strict"``, the
  per-request budget of the bandit) or whose expected calibration cost does (``"average"``, a shared bucket).
  ``bucket_gain`` κ > 0 raises the threshold with what the bucket has saved up: τ' = τ + κ·(available − b̄).
* ``anytime_agree_cascade`` — read a, continue to b, read b; if a and b predict the same class answer b, else continue
  to c (c extends b) if it fits and answer c.
* ``anytime_lut`` — run the LUT plan (best calibration accuracy within the budget given), read, stop.
* ``anytime_hull_mix`` — the plan env's ``hull_mix``: a random mix of two hull plans whose *expected* cost is the
  (average) budget; it overruns per-request budgets and needs the env's soft budget (``needs_soft_budget``).
* ``anytime_oracle`` — *a bound*: the cheapest plan that is right on this sample within budget (reads labels).
* ``anytime_random`` — uniformly random valid actions (the floor of the learning tests).

Thresholds and plans are fitted on the calibration table only. The protocol every anytime policy follows is
:class:`agents.base.AnytimePolicy`; :class:`ScriptedPolicy` here adds the script stepping the cascades and static
plans share. Build any of them by name with :func:`agents.registry.make_anytime_policy`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from adainf_env.envs.anytime.actions import READ, RUN, SKIP, STOP
from adainf_env.envs.anytime.core import RequestBatch
from adainf_env.envs.anytime.stages import script_costs  # the env's stage helpers
from adainf_env.errors import ConfigError
from adainf_env.feasibility import COST_TOL, Staircase, pareto_frontier
from adainf_env.plans import extensions, top_block
from adainf_env.tables.outcomes import OutcomeTable
from agents.base import AnytimePolicy
from agents.baselines.static import HullMixScheduler, LUTScheduler, OracleScheduler

__all__ = ["ScriptedPolicy", "step_toward", "ConfidenceCascadePolicy", "AgreementCascadePolicy", "LUTPolicy",
           "HullMixPolicy", "OraclePolicy", "RandomPolicy", "script_costs"]


def step_toward(batch: RequestBatch, rows: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The next block decision of each request ``rows`` on its way to plan code ``target``: RUN or SKIP block
    ``pos`` by the target's bit, STOP where a RUN can no longer be afforded (answer what was read). Returns
    ``(step, deciding)``; ``deciding`` is False once every block up to the target's top block is decided (then the
    caller READs or STOPs)."""
    pos = batch.pos[rows]
    deciding = pos < top_block(target)
    bit = (target >> np.minimum(pos, 62)) & 1
    step = np.where(bit == 1, RUN, SKIP)
    step = np.where((step == RUN) & ~batch.masks()[rows, RUN], STOP, step)
    return step, deciding


class ScriptedPolicy(AnytimePolicy):
    """Base of the scripted policies: per-slot scripts of plan codes, stepped against a :class:`RequestBatch`.

    Subclasses implement :meth:`fit` and :meth:`_scripts` (each new request's script) and may override
    :meth:`_continue` (whether to go on to the next stage after a read).
    """

    max_stages = 1

    def __init__(self) -> None:
        super().__init__()
        self._n = 0

    # ------------------------------------------------------------------ acting
    def _ensure(self, n: int) -> None:
        if self._n != n:
            self._n = n
            self.script = np.zeros((n, self.max_stages), dtype=np.int64)
            self.stages = np.ones(n, dtype=np.int64)
            self.stage = np.zeros(n, dtype=np.int64)
            self.param = np.zeros(n)

    def begin(self, batch: RequestBatch, idx: np.ndarray, table: OutcomeTable,
              state: dict[str, Any] | None = None) -> None:
        super().begin(batch, idx, table, state)
        self._ensure(batch.n)
        idx = np.asarray(idx, dtype=np.int64)
        script, stages, param = self._scripts(batch, idx, table, state)
        self.script[idx] = -1
        self.script[idx, : script.shape[1]] = script
        self.stages[idx] = stages
        self.stage[idx] = 0
        self.param[idx] = param

    def _scripts(self, batch: RequestBatch, idx: np.ndarray, table: OutcomeTable,
                 state: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _continue(self, batch: RequestBatch, idx: np.ndarray) -> np.ndarray:
        """bool [k]: go on to stage ``stage + 1`` after reading the current target (slots ``idx``)."""
        return np.zeros(len(idx), dtype=bool)

    def act(self, batch: RequestBatch) -> np.ndarray:
        """[N] actions for the active slots of ``batch`` (STOP elsewhere)."""
        a = np.full(batch.n, STOP, dtype=np.int64)
        act = np.flatnonzero(batch.active)
        if act.size == 0:
            return a
        # after reading the current target: stop, or move to the next stage if the rule says so and it fits
        read_target = act[batch.reads[act] > self.stage[act]]
        if read_target.size:
            more = self.stage[read_target] + 1 < self.stages[read_target]
            cand = read_target[more]
            go = np.zeros(len(read_target), dtype=bool)
            if cand.size:
                nxt = self.script[cand, self.stage[cand] + 1]
                fits = batch.spent[cand] + _cost_to_read(batch, cand, nxt) <= batch.budget[cand] + COST_TOL
                go[more] = self._continue(batch, cand) & (fits | ~batch.mask_over_budget)
            self.stage[read_target[go]] += 1
            # a slot that read its target and does not go on stops (a stays STOP); mark it done
            self.stage[read_target[~go]] = self.stages[read_target[~go]]
        live = act[self.stage[act] < self.stages[act]]
        if live.size == 0:
            return a
        step, deciding = step_toward(batch, live, self.script[live, self.stage[live]])
        last = self.stage[live] + 1 >= self.stages[live]
        a[live] = np.where(deciding, step, np.where(last, STOP, READ))
        return a


def _cost_to_read(batch: RequestBatch, idx: np.ndarray, target: np.ndarray) -> np.ndarray:
    full = np.full(batch.n, -1, dtype=np.int64)
    full[idx] = target
    out = np.full(batch.n, np.inf)
    sel = np.zeros(batch.n, dtype=bool)
    sel[idx] = True
    t = np.where(sel, full, batch.code)
    c = batch.cost_to_read(t)
    out[idx] = c[idx]
    return out[idx]


class _FittedConfigs(ScriptedPolicy):
    """Policies choosing one configuration per request from a calibration table of (exp cost, worst cost, accuracy)."""

    def __init__(self, *, budget_mode: str = "strict", max_thresholds: int = 256) -> None:
        super().__init__()
        if budget_mode not in ("strict", "average"):
            raise ConfigError(f"budget_mode must be 'strict' (worst case fits the budget) or 'average', got "
                              f"{budget_mode!r}")
        if isinstance(max_thresholds, bool) or not isinstance(max_thresholds, int) or max_thresholds < 2:
            raise ConfigError(f"max_thresholds must be an integer ≥ 2, got {max_thresholds!r}")
        self.budget_mode = budget_mode
        self.max_thresholds = max_thresholds

    def _finish(self, cfg: dict[str, list]) -> None:
        self.configs = {k: np.asarray(v) for k, v in cfg.items()}
        key = self.configs["exp_cost"] if self.budget_mode == "average" else self.configs["max_cost"]
        self._stairs_avg = Staircase(self.configs["exp_cost"], self.configs["accuracy"])
        self._stairs_max = Staircase(self.configs["max_cost"], self.configs["accuracy"])
        self._stairs = Staircase(key, self.configs["accuracy"])

    def soft_budget(self, state: dict[str, Any] | None) -> bool:
        """``average`` mode without a shared bucket meets the budget on average only (per-request overruns counted);
        with a bucket it escalates only when the bucket covers it."""
        return self.budget_mode == "average" and (state is None or state.get("avg_budget") is None)

    def chosen(self, budgets: np.ndarray, state: dict[str, Any] | None) -> np.ndarray:
        """Configuration per request: for the average budget of a shared bucket (expected cost), else for the
        request's budget (worst case in ``strict`` mode)."""
        if state is not None and state.get("avg_budget") is not None:
            return self._stairs_avg.lookup(state["avg_budget"])
        return self._stairs.lookup(budgets)

    def _thresholds(self, conf: np.ndarray) -> np.ndarray:
        u = np.unique(conf)
        if len(u) > self.max_thresholds:
            u = np.unique(np.quantile(conf, np.linspace(0, 1, self.max_thresholds)))
        return np.concatenate([u[1:], [np.inf]])


class ConfidenceCascadePolicy(_FittedConfigs):
    """Read a; if conf < τ (+ κ·bucket savings) and b fits, continue to b (b extends a)."""

    name = "anytime_conf_cascade"
    max_stages = 2

    def __init__(self, *, budget_mode: str = "strict", max_thresholds: int = 256, bucket_gain: float = 0.0) -> None:
        super().__init__(budget_mode=budget_mode, max_thresholds=max_thresholds)
        if not np.isfinite(bucket_gain) or bucket_gain < 0:
            raise ConfigError(f"bucket_gain must be a finite number ≥ 0, got {bucket_gain!r}")
        self.bucket_gain = float(bucket_gain)

    def fit(self, table: OutcomeTable, *, seed: int = 0) -> "ConfidenceCascadePolicy":
        super().fit(table, seed=seed)
        acc = table.accuracy_by_plan()
        front = pareto_frontier(self.cost, acc)
        correct = table.correct
        n = table.num_samples
        cfg: dict[str, list] = {k: [] for k in ("a", "b", "tau", "exp_cost", "max_cost", "accuracy")}
        pairs = [(int(self.codes[p]), int(self.codes[p])) for p in front]
        for p in front:
            pairs += [(int(self.codes[p]), int(c)) for c in extensions(self.codes, int(self.codes[p]))]
        plan_of = self.at.code_to_plan
        sc = script_costs(self.at, np.array([[a, b if b != a else -1] for a, b in pairs]))
        for (a, b), (c1, c2) in zip(pairs, sc):
            pa, pb = plan_of[a], plan_of[b]
            if a == b:
                cfg["a"].append(a), cfg["b"].append(b), cfg["tau"].append(0.0)
                cfg["exp_cost"].append(c1), cfg["max_cost"].append(c1), cfg["accuracy"].append(acc[pa])
                continue
            conf_a = table.conf[:, pa].astype(np.float64)
            order = np.argsort(conf_a, kind="stable")
            thr = self._thresholds(conf_a)
            k = np.searchsorted(conf_a[order], thr, side="left")  # escalated: the k least confident
            gain = np.concatenate([[0], np.cumsum(correct[order, pb].astype(np.int64) - correct[order, pa])])
            accs = (correct[:, pa].sum() + gain[k]) / n
            exp_c = c1 + k / n * (c2 - c1)
            keep = k > 0
            m = int(keep.sum())
            cfg["a"] += [a] * m
            cfg["b"] += [b] * m
            cfg["tau"] += thr[keep].tolist()
            cfg["exp_cost"] += exp_c[keep].tolist()
            cfg["max_cost"] += [c2] * m
            cfg["accuracy"] += accs[keep].tolist()
        self._finish(cfg)
        return self

    def _scripts(self, batch, idx, table, state):
        c = self.chosen(batch.budget[idx], state)
        a, b = self.configs["a"][c], self.configs["b"][c]
        tau = self.configs["tau"][c].astype(np.float64)
        if self.bucket_gain and state is not None and state.get("avg_budget") is not None:
            tau = tau + self.bucket_gain * (np.asarray(state["available"]) - np.asarray(state["avg_budget"]))
        return np.stack([a, b], axis=1), np.where(a == b, 1, 2), tau

    def _continue(self, batch, idx):
        return batch.last_conf[idx] < self.param[idx]


class AgreementCascadePolicy(_FittedConfigs):
    """Read a, continue to b, read b; if a and b agree answer b, else continue to c (c extends b) if it fits."""

    name = "anytime_agree_cascade"
    max_stages = 3

    def __init__(self, *, budget_mode: str = "strict", pool: int = 8) -> None:
        super().__init__(budget_mode=budget_mode)
        if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
            raise ConfigError(f"pool must be an integer ≥ 1, got {pool!r}")
        self.pool = pool

    def _front_of(self, codes: np.ndarray, acc_by_code) -> list[int]:
        plans = self.at.code_to_plan[codes]
        f = codes[pareto_frontier(self.cost[plans], acc_by_code[plans])]
        if len(f) > self.pool:
            f = f[np.unique(np.linspace(0, len(f) - 1, self.pool).round().astype(int))]
        return [int(x) for x in f]

    def fit(self, table: OutcomeTable, *, seed: int = 0) -> "AgreementCascadePolicy":
        super().fit(table, seed=seed)
        acc = table.accuracy_by_plan()
        plan_of = self.at.code_to_plan
        triples = [(int(self.codes[p]), -1, -1) for p in pareto_frontier(self.cost, acc)]
        for a in self._front_of(self.codes, acc):
            for b in self._front_of(extensions(self.codes, a), acc) if len(extensions(self.codes, a)) else []:
                ext = extensions(self.codes, b)
                for c in self._front_of(ext, acc) if len(ext) else []:
                    triples.append((a, b, c))
        tri = np.array(triples, dtype=np.int64)
        sc = script_costs(self.at, tri)
        cfg: dict[str, list] = {k: [] for k in ("a", "b", "c", "exp_cost", "max_cost", "accuracy")}
        pred, correct = table.pred, table.correct
        for (a, b, c), costs in zip(tri.tolist(), sc):
            if b < 0:
                e = m = costs[0]
                ac = acc[plan_of[a]]
            else:
                pa, pb, pc = plan_of[a], plan_of[b], plan_of[c]
                agree = pred[:, pa] == pred[:, pb]
                ac = float(np.where(agree, correct[:, pb], correct[:, pc]).mean())
                e = costs[1] + (1.0 - agree.mean()) * (costs[2] - costs[1])
                m = costs[2]
            for k, v in (("a", a), ("b", b), ("c", c), ("exp_cost", e), ("max_cost", m), ("accuracy", ac)):
                cfg[k].append(v)
        self._finish(cfg)
        return self

    def _scripts(self, batch, idx, table, state):
        c = self.chosen(batch.budget[idx], state)
        s = np.stack([self.configs[k][c] for k in ("a", "b", "c")], axis=1)
        return s, np.where(s[:, 1] < 0, 1, 3), np.zeros(len(idx))

    def _continue(self, batch, idx):
        first = self.stage[idx] == 0  # after a: always read b; after b: go on only if a and b disagree
        return first | (batch.last_pred[idx] != batch.prev_pred[idx])


class _StaticPlanPolicy(ScriptedPolicy):
    """A plan-env scheduler's plan, run straight through and read once."""

    scheduler_cls: type = LUTScheduler

    def fit(self, table: OutcomeTable, *, seed: int = 0) -> "_StaticPlanPolicy":
        super().fit(table, seed=seed)
        self.scheduler = self.scheduler_cls().fit(table, seed=seed)
        return self

    def _scripts(self, batch, idx, table, state):
        rows = batch.row[idx]
        plans = self.scheduler.decide(table, rows, batch.budget[idx], state).plan
        return self.codes[plans][:, None], np.ones(len(idx), dtype=np.int64), np.zeros(len(idx))


class LUTPolicy(_StaticPlanPolicy):
    name = "anytime_lut"
    scheduler_cls = LUTScheduler


class HullMixPolicy(_StaticPlanPolicy):
    name = "anytime_hull_mix"
    scheduler_cls = HullMixScheduler
    needs_soft_budget = True


class OraclePolicy(_StaticPlanPolicy):
    name = "anytime_oracle"
    scheduler_cls = OracleScheduler
    is_bound = True


class RandomPolicy(AnytimePolicy):
    """Uniformly random valid actions (seeded)."""

    name = "anytime_random"

    def fit(self, table: OutcomeTable, *, seed: int = 0) -> "RandomPolicy":
        super().fit(table, seed=seed)
        self._rng = np.random.default_rng(seed)
        return self

    def act(self, batch: RequestBatch) -> np.ndarray:
        m = batch.masks()
        r = self._rng.random(m.shape) * m
        return np.where(batch.active, r.argmax(axis=1), STOP).astype(np.int64)
