"""Evaluation of anytime policies: bandit budget sweeps and streams (budget processes, shared token bucket).

Records have the fields of :data:`agents.evaluation.harness.RECORD_FIELDS` plus ``"env": "anytime"`` and
``mean_reads`` (head evaluations per request). ``plan_hist`` counts the plan whose answer was given; ``mean_cost`` is
the exact cost paid (every block, shortcut and read, nothing twice). Requests are served by the env's kernel
(:class:`~adainf_env.envs.anytime.core.RequestBatch`), all requests of a batch side by side, so these numbers are those of
the anytime env (tested). Streams follow :func:`agents.evaluation.harness.evaluate_stream`: the same sample order and
budget draws for a seed, ``num_streams`` streams of ``horizon`` requests, the bucket starting empty.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from adainf_env.envs.anytime.core import AnytimeTable, RequestBatch
from adainf_env.budgets import TokenBucket, make_budget_process
from adainf_env.feasibility import COST_TOL
from adainf_env.tables.outcomes import OutcomeTable
from agents.base import AnytimePolicy, check_budgets
from agents.evaluation.metrics import BUDGET_GRID as BANDIT_BUDGETS
from agents.evaluation.stream_processes import check_stream_size

__all__ = ["serve_requests", "evaluate_anytime_bandit", "anytime_stream_trace", "evaluate_anytime_stream"]


def serve_requests(policy: AnytimePolicy, table: OutcomeTable, rows: np.ndarray, budgets: np.ndarray, *,
                   state: dict[str, Any] | None = None, at: AnytimeTable | None = None) -> dict[str, np.ndarray]:
    """Serve requests (table ``rows``, ``budgets``) with ``policy`` → [N] arrays: ``plan`` (the plan whose answer was
    given), ``cost`` (paid), ``correct``, ``reads`` (head evaluations), ``conf`` (confidence of the answer read) and
    ``blocks`` (residual blocks run).

    The env's hard budget (RUN masked when the answer would no longer fit) unless the policy asks for the soft one
    (``policy.soft_budget(state)``: ``hull_mix``, and cascades meeting an average budget without a bucket).
    """
    rows = np.asarray(rows, dtype=np.int64)
    budgets = np.asarray(budgets, dtype=np.float64)
    at = at or AnytimeTable.from_table(table)
    n = len(rows)
    batch = RequestBatch(n, at, mask_over_budget=not policy.soft_budget(state))
    batch.start(np.arange(n), rows, budgets)
    policy.begin(batch, np.arange(n), table, state)
    for _ in range(4 * at.num_blocks + 4):  # a request takes at most 2B + 1 steps
        if not batch.active.any():
            break
        batch.step(policy.act(batch), at.read_table)
    else:
        raise RuntimeError(f"{policy.name}: requests did not end within the longest possible episode")
    plan = batch.answer.copy()
    blocks = np.bitwise_count(batch.code).astype(np.int64)  # the code's set bits: the blocks run
    return {"plan": plan, "cost": batch.spent.copy(), "correct": at.correct[rows, plan], "reads": batch.reads.copy(),
            "conf": batch.last_conf.copy(), "blocks": blocks}


def _record(policy: AnytimePolicy, table: OutcomeTable, *, setting: str, variant: str, budget: float, seed: int,
            plan: np.ndarray, cost: np.ndarray, correct: np.ndarray, given: np.ndarray,
            reads: np.ndarray) -> dict[str, Any]:
    plan, cost, given = plan.reshape(-1), cost.reshape(-1), given.reshape(-1)
    over = np.maximum(cost - given, 0.0)
    hist = np.bincount(plan, minlength=table.num_plans)
    return {
        "scheduler": policy.name, "is_bound": bool(policy.is_bound), "setting": setting, "variant": variant,
        "budget": float(budget), "seed": int(seed), "accuracy": float(correct.mean()),
        "mean_cost": float(cost.mean()), "mean_budget": float(given.mean()),
        "overrun_rate": float((over > COST_TOL).mean()), "mean_overrun": float(over.mean()),
        "plan_hist": {str(p): int(hist[p]) for p in np.flatnonzero(hist)}, "num_requests": int(plan.size),
        "env": "anytime", "mean_reads": float(reads.mean()), **_provenance(policy),
    }


def _provenance(policy: AnytimePolicy) -> dict[str, Any]:
    """The learners' ``selected_step`` (training step held-out selection kept) and ``prior``; scripted baselines
    have none."""
    prov = getattr(policy, "provenance", None)
    return dict(prov()) if callable(prov) else {}


def evaluate_anytime_bandit(policy: AnytimePolicy, table: OutcomeTable, budgets: Sequence[float] = BANDIT_BUDGETS,
                            *, seed: int = 0) -> list[dict[str, Any]]:
    """Every row of ``table`` is one request with each budget → one record per budget."""
    budgets = check_budgets(np.asarray(list(budgets), dtype=np.float64))
    at = AnytimeTable.from_table(table)
    rows = np.arange(table.num_samples)
    out = []
    for b in budgets.tolist():
        given = np.full(len(rows), b)
        r = serve_requests(policy, table, rows, given, at=at)
        out.append(_record(policy, table, setting="bandit", variant="fixed", budget=b, seed=seed, given=given,
                           plan=r["plan"], cost=r["cost"], correct=r["correct"], reads=r["reads"]))
    return out


def anytime_stream_trace(policy: AnytimePolicy, table: OutcomeTable, process: Any, *, shared: bool = False,
                         bucket_cap: float = 1.0, seed: int = 0, num_streams: int = 50,
                         horizon: int = 200) -> dict[str, np.ndarray]:
    """Every request of ``num_streams`` streams of ``horizon`` requests along a budget ``process`` (through a token
    bucket when ``shared``) → ``[num_streams, horizon]`` arrays: ``row``, ``plan`` (answered), ``cost`` (paid),
    ``correct``, ``reads``, ``conf`` (confidence of the answer read), ``blocks`` (blocks run), ``given`` (budget
    available), ``proc`` (the process's budget). Same draws as :func:`agents.evaluation.harness.evaluate_stream`
    for a seed."""
    check_stream_size(num_streams, horizon)
    at = AnytimeTable.from_table(table)
    floor = float(at.costs.plan_cost(np.zeros((1, at.num_blocks)))[0])
    proc = make_budget_process(process).bind(floor)
    bucket = TokenBucket(cap=float(bucket_cap)) if shared else None
    rng = np.random.default_rng([int(seed), 0xADA1])
    k_, t_ = int(num_streams), int(horizon)
    reps = math.ceil(k_ * t_ / table.num_samples)
    rows = np.concatenate([rng.permutation(table.num_samples) for _ in range(reps)])[: k_ * t_].reshape(k_, t_)
    served = ("plan", "cost", "correct", "reads", "conf", "blocks")
    res = {k: np.empty((k_, t_), dtype=d) for k, d in (("plan", np.int64), ("cost", float), ("correct", bool),
                                                       ("reads", np.int64), ("conf", float), ("blocks", np.int64),
                                                       ("given", float), ("proc", float))}
    res["row"] = rows
    level = np.zeros(k_)
    b_prev, aux = proc.start(rng.random(k_))
    for t in range(t_):
        u = rng.random(k_)
        b = b_prev if t == 0 else proc.next(np.full(k_, t), b_prev, aux, u)
        b_prev = b
        if bucket is not None:
            level = bucket.refill(level, b)
            avail = bucket.available(level)
            state = {"level": level.copy(), "available": avail.copy(), "avg_budget": b.copy(),
                     "process_budget": b.copy(), "cap": float(bucket_cap), "step": t, "horizon": t_}
        else:
            avail = b
            state = None
        # a drained bucket still lets a request answer with the cheapest read (counted as an overrun)
        r = serve_requests(policy, table, rows[:, t], np.maximum(avail, 1e-12), state=state, at=at)
        for k in served:
            res[k][:, t] = r[k]
        res["given"][:, t] = avail
        res["proc"][:, t] = b
        if bucket is not None:
            level = bucket.spend(level, r["cost"])
    res["variant"] = np.array("shared" if shared else proc.name)
    return res


def evaluate_anytime_stream(policy: AnytimePolicy, table: OutcomeTable, process: Any, *, shared: bool = False,
                            bucket_cap: float = 1.0, seed: int = 0, num_streams: int = 50, horizon: int = 200,
                            budget_label: float | None = None, variant: str | None = None) -> dict[str, Any]:
    """``num_streams`` streams of ``horizon`` requests along a budget ``process`` (through a token bucket when
    ``shared``) → one record (:func:`anytime_stream_trace` summarised)."""
    if budget_label is not None:
        check_budgets(np.asarray([budget_label]))
    res = anytime_stream_trace(policy, table, process, shared=shared, bucket_cap=bucket_cap, seed=seed,
                               num_streams=num_streams, horizon=horizon)
    label = float(budget_label) if budget_label is not None else round(float(res["proc"].mean()), 4)
    rec = _record(policy, table, setting="stream", variant=variant or str(res["variant"]), budget=label, seed=seed,
                  plan=res["plan"], cost=res["cost"], correct=res["correct"], given=res["given"], reads=res["reads"])
    rec["mean_process_budget"] = float(res["proc"].mean())
    return rec
