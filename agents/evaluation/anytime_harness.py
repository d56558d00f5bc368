"""Evaluation of anytime policies: bandit budget sweeps and streams (budget processes, shared token bucket).

Records have the fields of :data:`agents.evaluation.harness.RECORD_FIELDS` plus ``"env": "anytime"`` and
``mean_reads`` (head evaluations per request). ``plan_hist`` counts the plan whose answer was given; ``mean_cost`` is
the exact cost paid (every block, shortcut and read, nothing twice). Requests are served by the env's kernel
(:class:`~adainf_env.envs.anytime.core.RequestBatch`), all requests of a batch side by side, so these numbers are those of
the anytime env (tested). Streams follow :func:`agents.evaluation.harness.evaluate_stream`: the same sample order and
budget draws for a seed, ``num_streams`` streams of ``horizon`` requests, the bucket starting empty.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from adainf_env.envs.anytime.actions import AnytimeTable
from adainf_env.envs.anytime.core import RequestBatch
from adainf_env.feasibility import COST_TOL
from adainf_env.stream import StreamSpec, draw_streams, run_streams
from adainf_env.tables.outcomes import OutcomeTable
from agents.base import AnytimePolicy, check_budgets
from agents.evaluation.metrics import BUDGET_GRID as BANDIT_BUDGETS

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
                         bucket_cap: float | None = None, seed: int = 0, num_streams: int | None = None,
                         horizon: int | None = None, stream: StreamSpec | None = None) -> dict[str, np.ndarray]:
    """Every request of ``num_streams`` streams of ``horizon`` requests along a budget ``process`` (through a token
    bucket when ``shared``) → ``[num_streams, horizon]`` arrays: ``row``, ``plan`` (answered), ``cost`` (paid),
    ``correct``, ``reads``, ``conf`` (confidence of the answer read), ``blocks`` (blocks run), ``given`` (budget
    available), ``proc`` (the process's budget). The size and bucket are ``stream`` (default
    :data:`adainf_env.stream.DEFAULT_STREAM`) with ``num_streams`` / ``horizon`` / ``bucket_cap`` overriding its
    fields where given; the draws and loop of :mod:`adainf_env.stream`, so the same draws as
    :func:`agents.evaluation.harness.evaluate_stream` for a seed. Without a bucket the policy gets no stream state."""
    spec = StreamSpec.of(stream, num_streams=num_streams, horizon=horizon, bucket_cap=bucket_cap)
    at = AnytimeTable.from_table(table)
    floor = float(at.costs.plan_cost(np.zeros((1, at.num_blocks)))[0])
    rows, proc_b, proc = draw_streams(table.num_samples, process, floor=floor, seed=seed, spec=spec)
    served = ("plan", "cost", "correct", "reads", "conf", "blocks")
    res = {k: np.empty(rows.shape, dtype=d) for k, d in (("plan", np.int64), ("cost", float), ("correct", bool),
                                                         ("reads", np.int64), ("conf", float),
                                                         ("blocks", np.int64))}

    def serve(t: int, rows_t: np.ndarray, budgets_t: np.ndarray, state: dict[str, Any]) -> np.ndarray:
        r = serve_requests(policy, table, rows_t, budgets_t, state=state if shared else None, at=at)
        for k in served:
            res[k][:, t] = r[k]
        return r["cost"]

    res["given"] = run_streams(serve, rows, proc_b, bucket=spec.bucket() if shared else None)
    res["proc"] = proc_b
    res["row"] = rows
    res["variant"] = np.array("shared" if shared else proc.name)
    return res


def evaluate_anytime_stream(policy: AnytimePolicy, table: OutcomeTable, process: Any, *, shared: bool = False,
                            bucket_cap: float | None = None, seed: int = 0, num_streams: int | None = None,
                            horizon: int | None = None, budget_label: float | None = None,
                            variant: str | None = None, stream: StreamSpec | None = None) -> dict[str, Any]:
    """``num_streams`` streams of ``horizon`` requests along a budget ``process`` (through a token bucket when
    ``shared``) → one record (:func:`anytime_stream_trace` summarised)."""
    if budget_label is not None:
        check_budgets(np.asarray([budget_label]))
    res = anytime_stream_trace(policy, table, process, shared=shared, bucket_cap=bucket_cap, seed=seed,
                               num_streams=num_streams, horizon=horizon, stream=stream)
    label = float(budget_label) if budget_label is not None else round(float(res["proc"].mean()), 4)
    rec = _record(policy, table, setting="stream", variant=variant or str(res["variant"]), budget=label, seed=seed,
                  plan=res["plan"], cost=res["cost"], correct=res["correct"], given=res["given"], reads=res["reads"])
    rec["mean_process_budget"] = float(res["proc"].mean())
    return rec
