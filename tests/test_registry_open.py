"""The open registry: a user's own class by ``module:ClassName``, any SB3 / sb3-contrib algorithm by its class name,
``agents.register`` — each run end to end through the scripts, and clear refusals."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from adainf_env.tables.toy import toy_anytime_table
from adainf_env.errors import ConfigError
from adainf_env.tables.outcomes import save_table
from adainf_env.tables.toy import make_toy_table
from agents import registry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
import compare_schedulers as cs  # noqa: E402

TINY = ["--seeds", "1", "--bandit-budgets", "0.3", "0.7", "--stream-budgets", "0.5", "--num-streams", "4",
        "--horizon", "20", "--no-progress", "--no-plots", "--no-tensorboard"]

# A user's module: a plan-env scheduler, an anytime policy, and a class that is neither.
USER_MODULE = '''
import numpy as np
from adainf_env.envs.anytime.core import READ, RUN, STOP
from agents import AnytimePolicy, Scheduler


class CheapestFit(Scheduler):
    """The cheapest plan among the most accurate third of the plans that fit the budget."""
    name = "cheapest_fit"

    def fit(self, table, *, seed=0, cost_unit="macs"):
        super().fit(table, seed=seed, cost_unit=cost_unit)
        self.acc = table.accuracy_by_plan()
        return self

    def select(self, features, budgets, state=None):
        features, budgets = self._validated_inputs(features, budgets)
        cost = self.plan_space.plan_cost
        fits = cost[None, :] <= budgets[:, None]
        fits[:, np.argmin(cost)] |= ~fits.any(axis=1)
        return np.where(fits, self.acc[None, :], -1.0).argmax(axis=1)

    def state_arrays(self):  # what save() keeps and load_scheduler() restores
        return {"acc": self.acc}

    def load_state_arrays(self, arrays):
        self.acc = arrays["acc"]


class RunAllThenRead(AnytimePolicy):
    """Run every block while a RUN is affordable, read once, stop."""

    def act(self, batch):
        m = batch.masks()
        a = np.where(m[:, RUN], RUN, np.where(m[:, READ] & (batch.reads == 0), READ, STOP))
        return np.where(batch.active, a, STOP)


class NotAScheduler:
    def fit(self, table):
        return self


class SelectOnly:  # duck-typed, but the harness calls decide(), which only agents.Scheduler derives from select()
    name, is_bound = "select_only", False

    def fit(self, table, *, seed=0, cost_unit="macs"):
        return self

    def select(self, features, budgets, state=None):
        return np.zeros(len(budgets), dtype=np.int64)

    def provenance(self):
        return {}
'''


@pytest.fixture(scope="module")
def user_module(tmp_path_factory):
    d = tmp_path_factory.mktemp("user_code")
    (d / "my_scheds.py").write_text(textwrap.dedent(USER_MODULE))
    sys.path.insert(0, str(d))
    yield d
    sys.path.remove(str(d))
    sys.modules.pop("my_scheds", None)


@pytest.fixture(scope="module")
def anytime_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy_anytime_tables")
    save_table(toy_anytime_table(800, seed=0, split="calib"), d / "table_calib.npz")
    save_table(toy_anytime_table(600, seed=1, split="test"), d / "table_test.npz")
    return d


def _records(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())


def test_user_classes_run_end_to_end_through_compare_schedulers(user_module, anytime_dir, tmp_path):
    out = tmp_path / "run"
    cs.main(["--table-dir", str(anytime_dir), "--out", str(out), "--schedulers", "lut", "my_scheds:CheapestFit",
             "--anytime-schedulers", "anytime_lut", "my_scheds:RunAllThenRead", *TINY])
    recs = _records(out)
    by = {(r["scheduler"], r["env"]) for r in recs}
    assert {("my_scheds:CheapestFit", "plan"), ("my_scheds:RunAllThenRead", "anytime")} <= by
    mine = [r for r in recs if r["scheduler"] == "my_scheds:CheapestFit"]
    lut = {(r["setting"], r["variant"], r["budget"]): r for r in recs if r["scheduler"] == "lut"}
    assert len(mine) == len(lut) == 2 + 2  # bandit at 2 budgets, shared + periodic streams at one
    for r in mine:  # the same rule as lut (most accurate plan that fits): the same records
        ref = lut[(r["setting"], r["variant"], r["budget"])]
        assert (r["accuracy"], r["mean_cost"]) == (ref["accuracy"], ref["mean_cost"])
    anytime = [r for r in recs if r["scheduler"] == "my_scheds:RunAllThenRead"]
    assert anytime and all(r["overrun_rate"] == 0.0 and 0 < r["accuracy"] <= 1 for r in anytime)


def test_protocol_detection_and_refusals(user_module):
    assert registry.resolve("my_scheds:CheapestFit").env == "plan"
    assert registry.resolve("my_scheds:RunAllThenRead").env == "anytime"
    with pytest.raises(ConfigError, match=r"NotAScheduler is neither.*lacks decide\(\), provenance.*lacks begin\(\), "
                                          r"act\(\), soft_budget\(\)"):
        registry.resolve("my_scheds:NotAScheduler")
    with pytest.raises(ConfigError, match=r"SelectOnly is neither.*as a scheduler .* lacks decide\(\);"):
        registry.resolve("my_scheds:SelectOnly")
    with pytest.raises(ConfigError, match="defines no Missing"):
        registry.make_scheduler("my_scheds:Missing")
    with pytest.raises(ConfigError, match="importing no_such_pkg.mod failed"):
        registry.make_scheduler("no_such_pkg.mod:X")
    with pytest.raises(ConfigError, match="anytime-env policy: use make_anytime_policy"):
        registry.make_scheduler("my_scheds:RunAllThenRead")
    with pytest.raises(ConfigError, match="error: --schedulers|--schedulers: 'my_scheds:RunAllThenRead' is an anytime"):
        cs.CompareConfig(table_dir=Path("reference"), schedulers=("my_scheds:RunAllThenRead",))
    # built-in SB3 class names are the tuned built-ins; ones without discrete actions are refused, saying why
    assert registry.resolve("PPO").name == "ppo" and registry.resolve("MaskablePPO").name == "maskable_ppo"
    assert registry.resolve("trpo").name == "TRPO" and registry.resolve("recurrent_ppo").name == "RecurrentPPO"
    for algo in ("SAC", "TD3", "DDPG"):
        with pytest.raises(ConfigError, match=f"{algo} cannot schedule: .*Discrete.*Box"):
            registry.make_scheduler(algo)


def test_register_a_name_and_results_carry_it(user_module, tmp_path):
    from my_scheds import CheapestFit

    entry = registry.register("cheapest_fit_test", CheapestFit)
    try:
        assert entry.env == "plan" and "cheapest_fit_test" in registry.SCHEDULERS
        table = make_toy_table(400, num_blocks=3, seed=0)
        s = registry.make_scheduler("cheapest_fit_test").fit(table, seed=0)
        assert s.name == "cheapest_fit_test"
        loaded = registry.load_scheduler(s.save(tmp_path / "s.npz"), table=table)
        b = np.full(50, 0.5)
        assert type(loaded) is CheapestFit and np.array_equal(loaded.select(table.features[:50], b),
                                                              s.select(table.features[:50], b))
        with pytest.raises(ConfigError, match="built-in"):
            registry.register("lut", CheapestFit)
        with pytest.raises(ConfigError, match="follows the plan-env protocol, not 'anytime'"):
            registry.register("x_test", CheapestFit, env="anytime")
    finally:
        registry.REGISTRY.pop("cheapest_fit_test", None)


def test_sb3_contrib_trpo_end_to_end_through_compare_schedulers(tmp_path):
    d = tmp_path / "tables"
    d.mkdir()
    save_table(make_toy_table(600, num_blocks=3, seed=0, split="calib"), d / "table_calib.npz")
    save_table(make_toy_table(400, num_blocks=3, seed=1, split="test"), d / "table_test.npz")
    out = tmp_path / "run"
    kw = {"TRPO": {"total_timesteps": 2048, "n_envs": 16, "algo_kwargs": {"batch_size": 128}}}
    cs.main(["--table-dir", str(d), "--out", str(out), "--schedulers", "trpo", "lut",
             "--scheduler-kwargs", json.dumps(kw), *TINY])
    recs = [r for r in _records(out) if r["scheduler"] == "TRPO"]
    assert len(recs) == 4 and all(r["env"] == "plan" for r in recs)
    assert all(r["selected_step"] > 0 and r["prior"] is True for r in recs)  # held-out selection, LUT prior
    assert all(r["overrun_rate"] == 0.0 for r in recs if r["setting"] == "bandit")  # budget-restricted select


def test_qrdqn_through_train_scheduler_and_recurrent_ppo_scores(tmp_path):
    import train_scheduler

    out = tmp_path / "qrdqn"
    extra = {"algo_kwargs": {"learning_starts": 64, "batch_size": 32, "gradient_steps": 1, "buffer_size": 2000}}
    res = train_scheduler.main(["--algo", "QRDQN", "--table-dir", "reference", "--out", str(out), "--timesteps",
                                "512", "--scheduler.n-envs", "8", "--scheduler.extra", json.dumps(extra),
                                "--budgets", "0.5", "1.0", "--no-progress", "--no-plots"])
    assert res["algo"] == "QRDQN"
    recs = _records(out)
    assert {r["scheduler"] for r in recs} == {"QRDQN", "lut", "oracle"}
    assert all(r["selected_step"] > 0 for r in recs if r["scheduler"] == "QRDQN")
    # a recurrent policy scores each request from the LSTM's initial state: the same plans batched or one by one
    table = make_toy_table(300, num_blocks=3, seed=0)
    s = registry.make_scheduler("RecurrentPPO", total_timesteps=256, n_envs=16).fit(table, seed=0)
    b = np.full(8, 0.6)
    one_by_one = [int(s.select(table.features[i:i + 1], b[:1])[0]) for i in range(8)]
    assert list(s.select(table.features[:8], b)) == one_by_one


def test_example_custom_scheduler_runs(tmp_path):
    d = tmp_path / "tables"
    d.mkdir()
    save_table(make_toy_table(500, num_blocks=3, seed=0, split="calib"), d / "table_calib.npz")
    save_table(make_toy_table(500, num_blocks=3, seed=1, split="test"), d / "table_test.npz")
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "custom_scheduler.py"), str(d)], capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert [ln.split(":")[0].strip() for ln in lines] == ["lut", "margin_lut"]
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from custom_scheduler import MarginLUT
    finally:
        sys.path.remove(str(ROOT / "examples"))
    calib = make_toy_table(500, num_blocks=3, seed=0)
    lut = registry.make_scheduler("lut").fit(calib, seed=0)
    for margin in (0.8, 1.0):
        s = MarginLUT(margin=margin).fit(calib, seed=0)
        budgets = np.linspace(0.1, 1.0, calib.num_samples)
        cost = s.plan_space.plan_cost[s.select(calib.features, budgets)]
        fits = cost.min() <= margin * budgets
        assert (cost[fits] <= margin * budgets[fits] + 1e-12).all()  # the margin holds wherever it can
        if margin == 1.0:  # no margin: the look-up table's rule exactly
            assert np.array_equal(s.select(calib.features, budgets), lut.select(calib.features, budgets))


def test_sb3_algorithm_by_class_name_on_the_anytime_env(anytime_dir, tmp_path):
    """``anytime_<Algorithm>``: any on-policy actor-critic SB3 / sb3-contrib algorithm as an anytime learner, trained,
    selected and deployed like ``anytime_ppo``; algorithms that do not fit are refused, naming why."""
    e = registry.resolve("anytime_TRPO")
    assert (e.name, e.env, e.sb3) == ("anytime_trpo", "anytime", "TRPO")
    assert registry.resolve("anytime_PPO").name == "anytime_ppo"  # a tuned built-in stays the built-in
    for name, why in (("anytime_QRDQN", "not an on-policy"), ("anytime_RecurrentPPO", "recurrent"),
                      ("anytime_SAC", "not an on-policy")):
        with pytest.raises(ConfigError, match=why):
            registry.resolve(name)
    out = tmp_path / "run"
    kw = {"anytime_trpo": {"total_timesteps": 2048, "n_envs": 16, "eval_every": 1024,
                           "algo_kwargs": {"n_steps": 64, "batch_size": 256}}}
    cs.main(["--table-dir", str(anytime_dir), "--out", str(out), "--schedulers", "lut",
             "--anytime-schedulers", "anytime_TRPO", "anytime_random", "--scheduler-kwargs", json.dumps(kw), *TINY])
    recs = [r for r in _records(out) if r["scheduler"] == "anytime_trpo"]
    assert recs and all(r["env"] == "anytime" and r["selected_step"] > 0 for r in recs)
    assert all(r["overrun_rate"] == 0.0 for r in recs if r["setting"] == "bandit")
