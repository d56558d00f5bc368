"""The one request stream (adainf_env.stream): the spec, the seeded draws, the bucket loop, the training streams, and
the harnesses / held-out streams that run on it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adainf_env.budgets import TokenBucket
from adainf_env.errors import ConfigError
from adainf_env.stream import DEFAULT_STREAM, StaggeredStreams, StreamSpec, draw_streams, run_streams
from adainf_env.tables.toy import make_toy_table, toy_anytime_table
from agents.evaluation.anytime_harness import anytime_stream_trace, evaluate_anytime_stream
from agents.evaluation.harness import evaluate_stream
from agents.registry import make_anytime_policy, make_scheduler


@pytest.fixture(scope="module")
def toy():
    return make_toy_table(600, seed=0, split="calib"), make_toy_table(300, seed=1, split="test")


def test_spec_defaults_overrides_and_errors():
    assert (DEFAULT_STREAM.num_streams, DEFAULT_STREAM.horizon, DEFAULT_STREAM.bucket_cap) == (50, 200, 1.0)
    assert TokenBucket().cap == DEFAULT_STREAM.bucket_cap == DEFAULT_STREAM.bucket().cap
    s = StreamSpec.of(horizon=30)
    assert (s.num_streams, s.horizon, s.bucket_cap) == (50, 30, 1.0)
    assert StreamSpec.of(s, bucket_cap=2) == StreamSpec(50, 30, 2.0)
    assert StreamSpec.of(s) is s and StreamSpec.of() is DEFAULT_STREAM
    for kw, name in (({"num_streams": 0}, "num_streams"), ({"horizon": 2.5}, "horizon"),
                     ({"horizon": True}, "horizon"), ({"bucket_cap": 0.0}, "bucket_cap"),
                     ({"bucket_cap": math.inf}, "bucket_cap"), ({"bucket_cap": "1"}, "bucket_cap")):
        with pytest.raises(ConfigError, match=name) as e:
            StreamSpec(**kw)
        assert repr(next(iter(kw.values()))) in str(e.value)
    with pytest.raises(ConfigError, match="StreamSpec"):
        StreamSpec.of({"horizon": 3})


def test_draws_reproduce_the_pre_driver_harness_loop():
    """Exactly the draws the harness made before the driver (uniform drawn each step, next() from t = 1)."""
    spec = StreamSpec(num_streams=5, horizon=9)
    rows, budgets, proc = draw_streams(17, "random_walk:0.1", floor=0.15, seed=4, spec=spec)
    rng = np.random.default_rng([4, 0xADA1])
    ref_rows = np.concatenate([rng.permutation(17) for _ in range(math.ceil(45 / 17))])[:45].reshape(5, 9)
    b_prev, aux = proc.start(rng.random(5))
    ref = np.empty((5, 9))
    for t in range(9):
        u = rng.random(5)
        b = b_prev if t == 0 else proc.next(np.full(5, t), b_prev, aux, u)
        b_prev = b
        ref[:, t] = b
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_array_equal(budgets, ref)
    assert len(np.unique(ref)) > 5  # the walk moved: the budgets are not trivially equal
    r2, b2, _ = draw_streams(17, "random_walk:0.1", floor=0.15, seed=4, spec=spec)
    assert np.array_equal(r2, rows) and np.array_equal(b2, budgets)  # same seed -> same draws
    assert not np.array_equal(draw_streams(17, "random_walk:0.1", floor=0.15, seed=5, spec=spec)[0], rows)


def test_bucket_loop_refills_caps_and_spends():
    seen = []

    def serve(t, rows_t, budgets_t, state):
        seen.append(state)
        assert np.all(budgets_t >= 1e-12)
        return np.array([0.1, 0.5])  # stream 0 saves, stream 1 spends more than its refill

    rows = np.zeros((2, 8), dtype=np.int64)
    given = run_streams(serve, rows, np.full((2, 8), 0.3), bucket=TokenBucket(cap=1.0))
    np.testing.assert_allclose(given[0], [0.3, 0.5, 0.7, 0.9, 1.0, 1.0, 1.0, 1.0])  # carried over, capped at 1
    np.testing.assert_allclose(given[1], np.full(8, 0.3))  # overspent -> empty bucket, not debt
    st = seen[4]
    assert st["step"] == 4 and st["horizon"] == 8 and st["cap"] == 1.0
    np.testing.assert_allclose(st["level"], [1.0, 0.3])  # 0.8 + 0.3 capped at 1
    np.testing.assert_allclose(st["avg_budget"], [0.3, 0.3])
    # no bucket: each request gets its own budget, the state says so
    budgets = np.linspace(0.2, 0.9, 16).reshape(2, 8)
    seen.clear()
    given = run_streams(serve, rows, budgets, bucket=None)
    np.testing.assert_array_equal(given, budgets)
    assert seen[3]["avg_budget"] is None and math.isnan(seen[3]["cap"])
    np.testing.assert_array_equal(seen[3]["available"], budgets[:, 3])
    with pytest.raises(ConfigError, match="shapes"):
        run_streams(serve, rows, budgets[:, :4], bucket=None)


def test_staggered_streams_wrap_to_an_empty_bucket():
    spec = StreamSpec(horizon=4, bucket_cap=2.0)
    s = StaggeredStreams(np.array([0.5, 0.5]), np.array([0, 3]), spec)
    np.testing.assert_allclose(s.left, [1.0, 0.25])
    lv = [s.refill().copy()]
    s.pay(np.array([0.0, 0.0]))  # stream 1 wraps to position 0
    lv.append(s.refill().copy())
    np.testing.assert_allclose(lv, [[0.5, 0.5], [1.0, 0.5]])  # stream 0 saved; stream 1 restarted empty
    np.testing.assert_array_equal(s.t, [1, 0])
    for _ in range(3):
        s.pay(np.zeros(2))
        s.refill()
    assert s.level[1] == 2.0 and s.available()[1] == 1.0  # capped at the spec's cap, spends at most one model
    with pytest.raises(ConfigError, match="start positions"):
        StaggeredStreams(np.array([0.5]), np.array([4]), spec)


def test_harness_spec_argument_equals_keywords(toy):
    calib, test = toy
    lut = make_scheduler("lut").fit(calib)
    spec = StreamSpec(num_streams=6, horizon=20, bucket_cap=1.5)
    a = evaluate_stream(lut, test, "fixed:0.4", shared=True, seed=2, stream=spec)
    b = evaluate_stream(lut, test, "fixed:0.4", shared=True, seed=2, num_streams=6, horizon=20, bucket_cap=1.5)
    c = evaluate_stream(lut, test, "fixed:0.4", shared=True, seed=2, stream=StreamSpec.of(spec, bucket_cap=0.3))
    assert a == b and a["num_requests"] == 120 and a["mean_budget"] > c["mean_budget"]  # a cap below the refill binds
    with pytest.raises(ConfigError, match="bucket_cap"):
        evaluate_stream(lut, test, "fixed:0.4", shared=True, bucket_cap=-1.0)


def test_anytime_trace_on_the_driver():
    """The anytime harness serves the driver's draws: rows and process budgets equal draw_streams', the budget given
    is what the bucket holds, and the record summarises the trace."""
    calib, test = toy_anytime_table(600, seed=0), toy_anytime_table(300, seed=1, split="test")
    pol = make_anytime_policy("anytime_lut").fit(calib)
    spec = StreamSpec(num_streams=4, horizon=30)
    tr = anytime_stream_trace(pol, test, "fixed:0.3", shared=True, seed=5, stream=spec)
    rows, budgets, _ = draw_streams(test.num_samples, "fixed:0.3", floor=0.0, seed=5, spec=spec)
    np.testing.assert_array_equal(tr["row"], rows)
    np.testing.assert_array_equal(tr["proc"], budgets)
    level = np.zeros(4)
    for t in range(30):  # the bucket, replayed from the paid costs
        level = np.minimum(level + 0.3, 1.0)
        np.testing.assert_allclose(tr["given"][:, t], np.minimum(level, 1.0))
        level = np.maximum(level - tr["cost"][:, t], 0.0)
    rec = evaluate_anytime_stream(pol, test, "fixed:0.3", shared=True, seed=5, stream=spec, budget_label=0.3)
    assert rec["accuracy"] == pytest.approx(tr["correct"].mean()) and rec["num_requests"] == 120
