"""Budget processes and the token bucket: values, determinism, validation (adainf_env/budgets.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adainf_env.budgets import (
    FixedBudget,
    PeriodicBudget,
    RandomWalkBudget,
    StepBudget,
    TokenBucket,
    TraceBudget,
    UniformBudget,
    load_trace,
    make_budget_process,
)
from adainf_env.errors import ConfigError


def _run(proc, n_steps=400, n=3, seed=0):
    """Roll a process forward as the env does: one uniform per request."""
    rng = np.random.default_rng(seed)
    b, aux = proc.start(rng.random(n))
    out = [b]
    for t in range(1, n_steps):
        b = proc.next(t, b, aux, rng.random(n))
        out.append(b)
    return np.stack(out)


def test_uniform_covers_cheapest_to_one():
    p = make_budget_process("uniform").bind(0.05)
    assert p.low == 0.05 and p.high == 1.0
    b = _run(p, 2000)
    assert b.min() >= 0.05 and b.max() <= 1.0
    assert b.min() < 0.06 and b.max() > 0.99  # it does spread over the whole range
    assert abs(b.mean() - 0.525) < 0.02


def test_fixed_step_periodic_trace_values(tmp_path):
    assert np.all(_run(make_budget_process("fixed:0.3").bind(0.01)) == 0.3)
    s = _run(make_budget_process("step:values=0.8/0.3,every=5").bind(0.01), 20, n=1)[:, 0]
    assert s.tolist() == [0.8] * 5 + [0.3] * 5 + [0.8] * 5 + [0.3] * 5
    per = make_budget_process({"name": "periodic", "period": 10, "phase": 0.0, "low": 0.2, "high": 0.6}).bind(0.01)
    v = _run(per, 21, n=1)[:, 0]
    assert v[0] == pytest.approx(0.4) and v[10] == pytest.approx(0.4) and v.max() <= 0.6 and v.min() >= 0.2
    assert v[2] > 0.55 and v[7] < 0.25  # sine peaks a quarter period in, troughs at three quarters
    load = _run(PeriodicBudget(period=100, phase=0.0, shape="load").bind(0.1), 100, n=1)[:, 0]
    assert load[80] < 0.2 and load[5] > 0.95  # the budget falls at the evening load peak
    f = tmp_path / "trace.csv"
    f.write_text("time,budget\n0,0.5\n1,0.25\n\n2,0.75\n")
    tr = make_budget_process({"name": "trace", "path": str(f), "start": "zero"})
    assert _run(tr, 6, n=1)[:, 0].tolist() == [0.5, 0.25, 0.75, 0.5, 0.25, 0.75]


def test_random_walk_moves_within_bounds_with_given_sigma():
    p = RandomWalkBudget(sigma=0.02, low=0.1, high=0.9).bind(0.01)
    b = _run(p, 3000, n=8)
    assert b.min() >= 0.1 and b.max() <= 0.9
    steps = np.diff(b, axis=0)
    inner = (b[:-1] > 0.2) & (b[:-1] < 0.8)
    assert np.std(steps[inner]) == pytest.approx(0.02, rel=0.1)


def _roll(proc, u):
    b, aux = proc.start(u[0])
    out = [b]
    for t in range(1, len(u)):
        b = proc.next(t, b, aux, u[t])
        out.append(b)
    return np.stack(out)


@pytest.mark.parametrize("spec", ["uniform", "random_walk", "periodic", "step", "fixed:0.4",
                                  {"name": "trace", "values": [0.2, 0.5, 0.9]}, "periodic:shape=load"])
def test_processes_are_pure_and_batch_invariant(spec):
    """Same uniforms → same budgets; N envs at once == each env alone (the vec env relies on this)."""
    p = make_budget_process(spec).bind(0.02)
    u = np.random.default_rng(3).random((60, 5))
    together = _roll(p, u)
    assert np.array_equal(together, _roll(p, u))
    alone = np.concatenate([_roll(p, u[:, i:i + 1]) for i in range(5)], axis=1)
    assert np.array_equal(together, alone)
    assert (together > 0).all() and (together <= 1).all()


def test_token_bucket_constrains_average_cost():
    tb = TokenBucket(cap=1.0)
    level = np.array([0.0])
    spent = 0.0
    for t in range(100):
        level = tb.refill(level, np.array([0.2]))
        avail = tb.available(level)
        cost = avail.copy()  # a greedy scheduler spends everything it may
        spent += float(cost[0])
        level = tb.spend(level, cost)
    assert spent == pytest.approx(100 * 0.2)  # average cost = the refill rate, never more
    # saving up: spending little lets a later request run the full model
    level = np.array([0.0])
    for _ in range(5):
        level = tb.spend(tb.refill(level, np.array([0.2])), np.array([0.0]))
    assert tb.available(tb.refill(level, np.array([0.2])))[0] == 1.0
    assert TokenBucket(rate=0.3).refill(np.array([0.0]), np.array([0.9]))[0] == pytest.approx(0.3)


@pytest.mark.parametrize("spec", ["nope", {"name": "gauss"}, 3, "fixed:1.5", "fixed:0", "fixed:nan", "uniform:2",
                                  {"name": "uniform", "low": 0.8, "high": 0.3}, "step:values=0.2/0.3,every=0",
                                  "periodic:period=-1", {"name": "periodic", "shape": "square"},
                                  {"name": "fixed", "value": 0.3, "colour": 1}, "trace", "random_walk:sigma=-1",
                                  "fixed:abc", {"name": "uniform", "low": "x"}])
def test_bad_specs_raise_config_error(spec):
    with pytest.raises(ConfigError):
        make_budget_process(spec).bind(0.01)


@pytest.mark.parametrize("text,line", [("0.5\nabc\n", 2), ("0.5\n0.2\n1.5\n", 3), ("budget\n0.1\n-0.2\n", 3),
                                       ("0.4\nnan\n", 2), ("", None), ("# only a comment\n", None),
                                       ("a,b\n0.1,0.2\n0.3,zz\n", 3)])
def test_garbage_trace_names_the_line(tmp_path, text, line):
    f = tmp_path / "t.csv"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_trace(f)
    assert str(f) in str(e.value)
    if line is not None:
        assert f"line {line}" in str(e.value)


def test_trace_binary_and_missing_file(tmp_path):
    f = tmp_path / "bin.csv"
    f.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(ConfigError):
        make_budget_process(f"trace:{f}")
    with pytest.raises(ConfigError, match="does not exist"):
        make_budget_process(f"trace:{tmp_path / 'missing.csv'}")


def test_trace_random_start_uses_uniform():
    tr = TraceBudget(values=np.linspace(0.1, 1.0, 10))
    b, off = tr.start(np.array([0.0, 0.55, 0.999]))
    assert off.tolist() == [0, 5, 9] and b.tolist() == pytest.approx([0.1, 0.6, 1.0])


def test_classes_direct_construction_validates():
    with pytest.raises(ConfigError):
        FixedBudget(0.0)
    with pytest.raises(ConfigError):
        StepBudget(values=())
    with pytest.raises(ConfigError):
        TokenBucket(cap=0)
    with pytest.raises(ConfigError):
        TokenBucket(initial=2.0, cap=1.0)
    with pytest.raises(ConfigError):
        UniformBudget(low=0.5, high=0.2).bind(0.1)


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.text(max_size=30), st.dictionaries(st.sampled_from(["name", "value", "low", "high", "sigma",
                                                                         "period", "every", "values", "x"]),
                                                        st.one_of(st.floats(allow_nan=True), st.integers(-5, 5),
                                                                  st.text(max_size=5),
                                                                  st.sampled_from(["uniform", "fixed", "step",
                                                                                   "periodic", "random_walk"])),
                                                        max_size=4)))
def test_make_budget_process_only_raises_config_error(spec):
    """Arbitrary specs either build a process whose budgets lie in (0, 1], or raise ConfigError — nothing else."""
    try:
        p = make_budget_process(spec).bind(0.05)
    except ConfigError:
        return
    b = _run(p, 30, n=2)
    assert np.isfinite(b).all() and (b > 0).all() and (b <= 1).all()


def test_trace_spec_with_key_value_path(tmp_path):
    """``trace:path=/abs/dir/file.csv`` keeps the path intact ("/" is not the list shorthand there)."""
    from adainf_env.budgets import make_budget_process

    csv = tmp_path / "sub" / "trace.csv"
    csv.parent.mkdir()
    csv.write_text("budget\n0.3\n0.6\n0.9\n")
    proc = make_budget_process(f"trace:path={csv},start=zero")
    assert proc.__class__.__name__ == "TraceBudget"


@pytest.mark.parametrize("spec", ["fixd:0.3", "fixd", "drift:0.02", "rand_walk:sigma=0.1", {"name": "fixd", "value": 0.3}])
def test_unknown_process_is_named_with_the_known_ones(spec):
    """A misspelt process name is reported as unknown (not as a bad positional argument), with every known name."""
    from adainf_env.budgets import BUDGET_PROCESSES

    with pytest.raises(ConfigError, match="unknown budget process") as e:
        make_budget_process(spec)
    name = spec.partition(":")[0] if isinstance(spec, str) else spec["name"]
    assert repr(name) in str(e.value) and all(k in str(e.value) for k in BUDGET_PROCESSES)
