"""The request stream: K streams of T requests, each request a table row and a budget, through a token bucket.

One home for what a *stream evaluation* is, used by both harnesses
(:func:`agents.evaluation.harness.evaluate_stream`, :func:`agents.evaluation.anytime_harness.anytime_stream_trace`),
the comparison driver and :mod:`adainf_lab.ceiling` (draws and loop), the learners' held-out streams
(:func:`agents.learners.base.held_out_stream_accuracy`: the loop, on rows drawn uniformly from the held-out split) and
their training streams (:class:`StaggeredStreams`); the envs take their default horizon from :data:`DEFAULT_STREAM`
and refill / spend through :class:`~adainf_env.budgets.TokenBucket`, as every piece here does.

* :class:`StreamSpec` — the size of a stream evaluation and its bucket: ``num_streams`` streams side by side,
  ``horizon`` requests each, a token bucket of capacity ``bucket_cap`` (fractions of one full-model run).
  :data:`DEFAULT_STREAM` holds the defaults (50 × 200, cap 1), the one place they are written;
  :meth:`StreamSpec.of` applies a caller's overrides (``num_streams=``, ``horizon=``, ``bucket_cap=``) to a spec.
* :func:`draw_streams` — the seeded draws of a stream evaluation: the sample order (a seeded permutation of the
  table's rows, without replacement while rows last, reshuffled each pass) and the budget process's value for every
  request (one uniform per request, used or not). Draw order, the seeding contract of the harnesses' records:
  ``rng = default_rng([seed, 0xADA1])``; ``ceil(K·T / N)`` permutations; ``K`` uniforms for
  :meth:`~adainf_env.budgets.BudgetProcess.start`; then ``K`` uniforms per time step ``t = 0 … T−1``.
* :func:`run_streams` — the one loop: at every time step, each stream's bucket is refilled by that request's budget
  (``shared``), the budget given is what the bucket holds (at most 1; else the request's own budget), the caller's
  ``serve`` decides all K requests of the step at once and returns what they cost, and the bucket pays it.

The envs (:mod:`adainf_env.envs.plan`, :mod:`adainf_env.envs.anytime`) step one request at a time with a per-env
generator and their own draw protocol (:data:`adainf_env.envs.core.RNG_CHUNK`: a row and a buffered uniform per
request, reseeded per episode) — a seeding contract different from the harnesses' per-evaluation permutation, and
per-step code whose speed matters — so they share the bucket arithmetic (:class:`~adainf_env.budgets.TokenBucket`'s
``refill`` / ``available`` / ``spend``, and its default cap) and the default horizon (their ``episode_length``), not
this loop. The learners' *training* streams (:class:`StaggeredStreams`) advance one request per training iteration,
each stream at its own position of the horizon (staggered, wrapping), so they are a state the learner steps, not this
loop; they use the same spec and bucket arithmetic.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

from adainf_env.budgets import DEFAULT_BUCKET_CAP, BudgetProcess, TokenBucket, make_budget_process
from adainf_env.errors import ConfigError, check_count

__all__ = ["StreamSpec", "DEFAULT_STREAM", "STREAM_SEED_TAG", "draw_streams", "run_streams", "ServeFn",
           "StaggeredStreams"]

#: Second word of the stream evaluation's seed (``default_rng([seed, STREAM_SEED_TAG])``).
STREAM_SEED_TAG = 0xADA1

#: ``serve(t, rows, budgets, state) -> costs``: decide the K requests of time step ``t`` (table ``rows`` [K], the
#: budget given to each [K], never below 1e-12, and the stream state) and return what each cost [K].
ServeFn = Callable[[int, np.ndarray, np.ndarray, dict[str, Any]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class StreamSpec:
    """The size of a stream evaluation and its token bucket (validated; :class:`ConfigError` names a bad value).

    ``num_streams`` streams of ``horizon`` requests side by side; ``bucket_cap`` the token bucket's capacity in
    full-model runs (used when the stream shares a budget). ``StreamSpec()`` is the project's default, 50 × 200 with
    cap 1 (:data:`DEFAULT_STREAM`).
    """

    num_streams: int = 50
    horizon: int = 200
    bucket_cap: float = DEFAULT_BUCKET_CAP

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_streams", check_count(self.num_streams, "num_streams"))
        object.__setattr__(self, "horizon", check_count(self.horizon, "horizon"))
        cap = self.bucket_cap
        if isinstance(cap, bool) or not isinstance(cap, (int, float, np.integer, np.floating)) \
                or not (math.isfinite(cap) and cap > 0):
            raise ConfigError(f"bucket_cap must be a finite number > 0 (full-model units), got {cap!r}")
        object.__setattr__(self, "bucket_cap", float(cap))

    @classmethod
    def of(cls, spec: "StreamSpec | None" = None, *, num_streams: int | None = None, horizon: int | None = None,
           bucket_cap: float | None = None) -> "StreamSpec":
        """``spec`` (default :data:`DEFAULT_STREAM`) with the fields given here (not None) replaced — how functions
        that take both a ``stream`` spec and the separate keyword arguments resolve them."""
        base = DEFAULT_STREAM if spec is None else spec
        if not isinstance(base, StreamSpec):
            raise ConfigError(f"stream must be a StreamSpec, got {type(base).__name__}: {base!r}")
        over = {k: v for k, v in (("num_streams", num_streams), ("horizon", horizon), ("bucket_cap", bucket_cap))
                if v is not None}
        return dataclasses.replace(base, **over) if over else base

    def bucket(self) -> TokenBucket:
        """The shared-budget token bucket of these streams (capacity ``bucket_cap``, starting empty)."""
        return TokenBucket(cap=self.bucket_cap)


#: The default stream evaluation: 50 streams × 200 requests, token-bucket cap 1.
DEFAULT_STREAM = StreamSpec()


def draw_streams(num_samples: int, process: Any, *, floor: float, seed: int,
                 spec: StreamSpec = DEFAULT_STREAM) -> tuple[np.ndarray, np.ndarray, BudgetProcess]:
    """The seeded draws of a stream evaluation over a table of ``num_samples`` rows → ``(rows, budgets, process)``:
    ``rows`` [K, T] int64 table rows, ``budgets`` [K, T] the budget process's value for every request, and the
    process (``process`` built by :func:`~adainf_env.budgets.make_budget_process` and bound to ``floor``, the cheapest
    plan's cost). Draw order in the module docstring; same ``seed`` → same arrays."""
    proc = make_budget_process(process).bind(float(floor))
    rng = np.random.default_rng([int(seed), STREAM_SEED_TAG])
    k_, t_ = spec.num_streams, spec.horizon
    reps = math.ceil(k_ * t_ / int(num_samples))
    rows = np.concatenate([rng.permutation(int(num_samples)) for _ in range(reps)])[: k_ * t_].reshape(k_, t_)
    budgets = np.empty((k_, t_))
    b, aux = proc.start(rng.random(k_))
    for t in range(t_):
        u = rng.random(k_)  # one uniform per request, as the env's budget processes expect
        if t > 0:
            b = proc.next(np.full(k_, t), b, aux, u)
        budgets[:, t] = b
    return rows, budgets, proc


def run_streams(serve: ServeFn, rows: np.ndarray, budgets: np.ndarray, *,
                bucket: TokenBucket | None) -> np.ndarray:
    """Serve K streams of T requests (``rows``, ``budgets``: [K, T]) → the budget given to every request [K, T].

    At time step ``t``: with a ``bucket`` (a shared budget), ``level ← refill(level, budgets[:, t])`` and the budget
    given is ``available(level)`` (at most 1), the buckets starting empty; without one it is ``budgets[:, t]``.
    ``serve(t, rows[:, t], max(given, 1e-12), state)`` returns the K costs (a bucket drained to exactly 0 still lets
    a request run its cheapest plan, counted as an overrun by the caller), and the bucket pays them.

    ``state`` (dict of [K] float64 arrays unless noted, the ``state`` of ``Scheduler.decide`` / anytime policies):
    ``level`` the bucket level after refill (no bucket: the budget), ``available`` the budget given, ``avg_budget``
    the refill (no bucket: None), ``process_budget`` the request's budget, ``cap`` the capacity (float; no bucket:
    nan), ``step`` (int) and ``horizon`` (int).
    """
    rows, budgets = np.asarray(rows), np.asarray(budgets, dtype=np.float64)
    if rows.ndim != 2 or rows.shape != budgets.shape:
        raise ConfigError(f"rows and budgets must both be [streams, horizon] arrays, got shapes {rows.shape} and "
                          f"{budgets.shape}")
    k_, t_ = rows.shape
    given = np.empty((k_, t_))
    level = np.zeros(k_)
    cap = float(bucket.cap) if bucket is not None else float("nan")
    for t in range(t_):
        b = budgets[:, t].copy()
        if bucket is not None:
            level = bucket.refill(level, b)
            avail = bucket.available(level)
            state = {"level": level.copy(), "available": avail.copy(), "avg_budget": b.copy(), "process_budget": b,
                     "cap": cap, "step": t, "horizon": t_}
        else:
            avail = b
            state = {"level": b.copy(), "available": b.copy(), "avg_budget": None, "process_budget": b.copy(),
                     "cap": cap, "step": t, "horizon": t_}
        given[:, t] = avail
        cost = serve(t, rows[:, t], np.maximum(avail, 1e-12), state)
        if bucket is not None:
            level = bucket.spend(level, np.asarray(cost, dtype=np.float64))
    return given


class StaggeredStreams:
    """The learners' simulated training streams: K token-bucket streams at fixed average budgets ``avg`` [K], stream
    ``i`` at request ``start[i]`` of a ``spec.horizon``-request stream, advanced one request per call pair.

    :meth:`refill` begins a request (a stream at position 0 starts with an empty bucket, then every bucket is
    refilled by its average budget) and returns the levels; :meth:`pay` ends it (the bucket pays the request's cost,
    the stream moves one request on and wraps to 0 after the last). ``level``, ``t`` and ``left`` (fraction of the
    stream left, ``1 − t / horizon``) are what a learner shows its policy. Starting positions are the caller's draw.
    """

    def __init__(self, avg: np.ndarray, start: np.ndarray, spec: StreamSpec = DEFAULT_STREAM) -> None:
        self.avg = np.asarray(avg, dtype=np.float64).reshape(-1)
        self.t = np.asarray(start, dtype=np.int64).reshape(-1)
        if self.t.shape != self.avg.shape:
            raise ConfigError(f"StaggeredStreams: {self.avg.size} average budgets but {self.t.size} start positions")
        if self.t.size and (self.t.min() < 0 or self.t.max() >= spec.horizon):
            raise ConfigError(f"StaggeredStreams: start positions must lie in [0, horizon={spec.horizon}), got "
                              f"{int(self.t.min())} … {int(self.t.max())}")
        self.spec = spec
        self.bucket = spec.bucket()
        self.level = np.zeros(self.avg.size)

    @property
    def left(self) -> np.ndarray:
        """Fraction of each stream still to come, ``1 − t / horizon``."""
        return 1.0 - self.t / self.spec.horizon

    def refill(self) -> np.ndarray:
        """Begin a request: empty the buckets of streams at position 0, refill all by ``avg`` → the levels [K]."""
        self.level = np.where(self.t == 0, 0.0, self.level)
        self.level = self.bucket.refill(self.level, self.avg)
        return self.level

    def available(self) -> np.ndarray:
        """What each bucket lets the current request spend (at most 1)."""
        return self.bucket.available(self.level)

    def pay(self, cost: np.ndarray) -> None:
        """End a request: each bucket pays its stream's ``cost`` [K] and the stream moves one request on."""
        self.level = self.bucket.spend(self.level, cost)
        self.t = (self.t + 1) % self.spec.horizon
