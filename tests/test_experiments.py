"""Every experiment script smoke-runs with a tiny budget and leaves a complete run directory; the offline demo runs
with no ../shared, no data and no network, records what it ran and leaves reusable tables; bad arguments stop a
script with exit status 2 and one clear line before any work; scripts without data fail with a clear DataSourceError.

Tables for the table-driven scripts are the synthetic toy tables (adainf_env.tables.toy) saved in the project format, so
these tests need nothing outside the repository.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _archives import noise_jpeg_archive

ROOT = Path(__file__).resolve().parents[1]
RECORD_KEYS = {"scheduler", "setting", "budget", "seed", "accuracy", "mean_cost", "overrun_rate"}


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """No ../shared, no user data, caches in a temp dir, cwd without ./data: what a fresh machine sees."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("ADAINF_CACHE", str(home / "cache"))
    monkeypatch.setenv("ADAINF_SHARED", str(home / "no-shared"))
    monkeypatch.delenv("ADAINF_DATA", raising=False)
    monkeypatch.chdir(home)
    sys.path.insert(0, str(ROOT / "experiments"))
    yield
    sys.path.remove(str(ROOT / "experiments"))


@pytest.fixture(scope="module")
def toy_table_dir(tmp_path_factory) -> Path:
    from adainf_env.tables.outcomes import save_table
    from adainf_env.tables.toy import make_toy_table

    d = tmp_path_factory.mktemp("toy_tables")
    save_table(make_toy_table(1200, seed=0, split="calib"), d / "table_calib.npz")
    save_table(make_toy_table(600, seed=1, split="test"), d / "table_test.npz")
    return d


def check_run_dir(run: Path, *, schedulers: set[str], setting: str = "bandit") -> list[dict]:
    """The run directory holds config.json (config + git revision), results.json in the harness's record format, a
    TensorBoard events file and at least one PNG."""
    cfg = json.loads((run / "config.json").read_text())
    assert "config" in cfg and "git" in cfg and set(cfg["git"]) >= {"commit", "dirty"}
    records = json.loads((run / "results.json").read_text())
    assert records and all(RECORD_KEYS <= set(r) for r in records)
    assert {r["scheduler"] for r in records} >= schedulers
    assert {r["setting"] for r in records} == {setting}
    for r in records:
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["overrun_rate"] <= 1.0 and 0.0 < r["mean_cost"] <= 1.0
    events = list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and any(e.stat().st_size > 0 for e in events)
    pngs = list(run.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    return records


def _tb_tags(run: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for ev in (run / "tensorboard").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(ev))
        acc.Reload()
        tags |= set(acc.Tags().get("scalars", []))
    return tags


def test_ppo_from_table_dir(toy_table_dir, tmp_path):
    import ppo_resnet18

    out = tmp_path / "run"
    summary = ppo_resnet18.main(["--table-dir", str(toy_table_dir), "--out", str(out), "--timesteps", "6144",
                                 "--scheduler.n-envs", "64", "--budgets", "0.4", "0.7", "1.0",
                                 "--no-progress"])
    records = check_run_dir(out, schedulers={"ppo", "lut", "oracle"})
    assert summary["mode"] == "tables"
    assert {r["budget"] for r in records} == {0.4, 0.7, 1.0}
    assert [r["is_bound"] for r in records if r["scheduler"] == "oracle"] == [True] * 3
    assert (out / "accuracy_cost_vs_budget.png").is_file()
    # the learned scheduler respects budgets and the oracle bound is an upper bound on the test table
    acc = {(r["scheduler"], r["budget"]): r for r in records}
    for b in (0.4, 0.7, 1.0):
        assert acc[("ppo", b)]["overrun_rate"] <= 0.02
        assert acc[("oracle", b)]["accuracy"] >= acc[("ppo", b)]["accuracy"]
    tags = _tb_tags(out)
    assert {"test/ppo/accuracy", "test/lut/accuracy", "test/ppo/plan_entropy", "test/ppo/reward"} <= tags
    assert any(t.startswith("adainf/") for t in tags)  # SB3 training curves (held-out calibration rows)
    assert (out / "tensorboard" / "hparams").is_dir()


@pytest.mark.parametrize("algo", ["reinforce", "hinge"])
def test_train_scheduler_torch_learners(algo, toy_table_dir, tmp_path):
    import train_scheduler

    out = tmp_path / algo
    train_scheduler.main(["--algo", algo, "--table-dir", str(toy_table_dir), "--out", str(out), "--epochs", "3",
                          "--budgets", "0.5", "1.0", "--scheduler.hidden", "32", "--no-progress"])
    check_run_dir(out, schedulers={algo, "lut", "oracle"})
    tags = _tb_tags(out)
    # training curves from the TrainingMonitor (calibration rows) + the final test metrics
    assert {"train/reward", "train/accuracy", "train/mean_cost", "train/overrun_rate", "train/plan_entropy",
            f"test/{algo}/accuracy"} <= tags


def test_shifting_budgets(toy_table_dir, tmp_path):
    import shifting_budgets

    out = tmp_path / "shift"
    shifting_budgets.main(["--table-dir", str(toy_table_dir), "--out", str(out), "--epochs", "2", "--horizon", "60",
                           "--num-streams", "3", "--window", "10", "--no-progress"])
    records = check_run_dir(out, schedulers={"hinge", "lut", "hull_mix", "oracle"}, setting="stream")
    assert {r["variant"] for r in records} == {"random_walk", "step", "periodic", "trace"}
    assert not (out / "aiq.json").exists()  # one operating point per process: no AIQ, no empty file
    assert "±" not in (out / "summary.md").read_text() and "one seed" in (out / "summary.md").read_text()
    assert all(r["num_requests"] == 180 for r in records)
    assert (out / "stream_traces.png").is_file() and (out / "synthetic_trace.csv").is_file()
    traces = np.load(out / "traces.npz", allow_pickle=False)
    assert traces["step__lut__budget"].shape == (3, 60)
    # the lut never pays more than the budget it was given (its plan is the best one within budget)
    assert (traces["periodic__lut__cost"] <= traces["periodic__lut__budget"] + 1e-9).all()


def test_resnet32_cifar100_needs_data(tmp_path):
    import resnet32_cifar100

    from adainf_env.errors import DataSourceError

    with pytest.raises(DataSourceError, match="no cifar100 data found.*--download"):
        resnet32_cifar100.main(["--out", str(tmp_path / "r32")])
    assert not (tmp_path / "r32").exists()  # nothing half-made


def _fake_cifar100_archive(path: Path, per_class: dict[str, int]) -> Path:
    """A tiny image-folder archive with CIFAR-100's 100 class folders (random-noise JPEGs): exercises the same code
    path as the real dataset without shipping it."""
    from adainf_env.data import CIFAR100_CLASSES

    return noise_jpeg_archive(path, CIFAR100_CLASSES, per_class)


def test_resnet32_cifar100_smoke(tmp_path):
    import resnet32_cifar100

    archive = _fake_cifar100_archive(tmp_path / "c100.tgz", {"train": 3, "test": 1})
    out = tmp_path / "r32"
    summary = resnet32_cifar100.main(["--data", str(archive), "--out", str(out), "--num-calib", "100",
                                      "--train-epochs", "1", "--width", "4", "--num-random-plans", "0",
                                      "--epochs", "2", "--budgets", "0.5", "1.0", "--no-progress"])
    check_run_dir(out, schedulers={"hinge", "lut", "oracle"})
    assert summary["mode"] == "full" and summary["num_plans"] < 2 ** 15  # the structured subset, not 2^15
    assert (out / "backbone" / "checkpoint.pt").is_file()
    # the tables were cached: a second run with the same checkpoint reuses them (validated by checkpoint hash)
    again = resnet32_cifar100.main(["--data", str(archive), "--out", str(tmp_path / "r32b"), "--checkpoint",
                                    str(out / "backbone" / "checkpoint.pt"), "--width", "4", "--num-calib", "100",
                                    "--num-random-plans", "0", "--epochs", "1", "--budgets", "1.0", "--no-progress"])
    assert again["provenance"]["tables_reused"] == {"calib": True, "test": True}


def test_clip_vitb_random_weights_says_so(tmp_path, capsys):
    import clip_vitb

    out = tmp_path / "clip"
    clip_vitb.main(["--out", str(out), "--calib-limit", "5", "--test-limit", "5", "--epochs", "1",
                    "--budgets", "0.5", "1.0", "--no-progress"])
    printed = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in printed and "DEMO MODE" in printed
    check_run_dir(out, schedulers={"hinge", "lut", "oracle"})
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["random_weights"] is True and cfg["num_plans"] == clip_vitb.RANDOM_SUBSET["num_plans"]


def _offline_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAINF_")}
    env.update(HOME=str(tmp_path), ADAINF_CACHE=str(tmp_path / "cache"), ADAINF_SHARED=str(tmp_path / "none"),
               OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"),
               # no network: point every proxy at a closed port, so any download attempt fails loudly
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="")
    return env


def test_demo_offline_subprocess(tmp_path):
    """`python experiments/ppo_resnet18.py` on a machine with no ../shared, no data and no network: the demo runs
    on the shipped sample, says so, writes results.json, records the sizes it ran in config.json, and leaves its
    tables in <run>/tables, reusable with --table-dir (shrunk with --demo-scale to keep the test short)."""
    env = _offline_env(tmp_path)
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "ppo_resnet18.py"), "--out", str(out),
                           "--demo-scale", "0.03"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DEMO MODE" in proc.stdout and "python experiments/ppo_resnet18.py --data" in proc.stdout
    assert "\r" not in proc.stderr  # no progress bars when stderr is not a terminal
    check_run_dir(out, schedulers={"ppo", "lut", "oracle"})
    cfg = json.loads((out / "config.json").read_text())
    from adainf_lab.config import demo_settings

    demo = demo_settings(0.03)
    assert cfg["mode"] == "demo" and cfg["config"]["demo"] is True
    assert cfg["config"]["width"] == demo["width"] and cfg["config"]["train_epochs"] == demo["train_epochs"]
    assert cfg["config"]["timesteps"] == demo["timesteps"] and cfg["config"]["num_calib"] == demo["calib_images"]
    assert (out / "backbone" / "checkpoint.pt").is_file()
    # the tables are in the --table-dir layout, and the printed command reuses them with no data and no backbone
    assert (out / "tables" / "table_calib.npz").is_file() and (out / "tables" / "table_test.npz").is_file()
    reuse = f"--table-dir {out / 'tables'}"
    assert reuse in proc.stdout
    again = subprocess.run([sys.executable, str(ROOT / "experiments" / "train_scheduler.py"), "--algo", "hinge",
                            "--table-dir", str(out / "tables"), "--out", str(tmp_path / "again"), "--epochs", "2"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "DEMO" not in again.stdout
    check_run_dir(tmp_path / "again", schedulers={"hinge", "lut", "oracle"})


def _bad_input(main, argv, capsys) -> str:
    """``main(argv)`` must refuse ``argv`` with a ConfigError before doing anything (nothing printed: no banner);
    as a command, :func:`adainf_lab.cli.run_script` turns it into one ``error:`` line and exit status 2."""
    from adainf_env.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        main(argv)
    assert capsys.readouterr().out == ""
    return str(e.value)


@pytest.mark.parametrize("argv, match", [
    (["--algo", "nope"], "unknown scheduler 'nope'"),
    (["--budgets", "0", "1.5"], r"budgets must lie in \(0, 1\]"),
    (["--timesteps", "ten"], "--timesteps"),
    (["--bogus"], "Unrecognized options: --bogus"),
    (["--table-dir", "reference", "--checkpoint", "x.pt"], "cannot be combined"),
    (["--table-dir", "reference", "--algo", "hinge", "--scheduler.n-envs", "8"],
     "--scheduler.n-envs is not an option of scheduler 'hinge'"),
    (["--table-dir", "reference", "--scheduler.extra", "{not json"], "--scheduler.extra is not valid JSON"),
    (["--demo-scale", "2"], "--demo-scale must be in"),
])
def test_bad_argument_exits_2_with_one_line(argv, match, capsys):
    import ppo_resnet18

    err = _bad_input(ppo_resnet18.main, argv, capsys)
    assert re.search(match, err), err


def test_bad_paths_stop_before_any_work(tmp_path, capsys):
    """A missing --checkpoint / --table-dir / --data stops before the DEMO banner and leaves no run directory."""
    import ppo_resnet18

    for argv, match in ((["--checkpoint", str(tmp_path / "missing.pt")], "--checkpoint .*missing.pt: no such file"),
                        (["--table-dir", str(tmp_path)], "table_calib.npz"),
                        (["--data", str(tmp_path / "nothing.tgz")], "--data .*nothing.tgz: no such file")):
        out = tmp_path / "run"
        assert re.search(match, _bad_input(ppo_resnet18.main, [*argv, "--out", str(out)], capsys))
        assert not out.exists() and not (tmp_path / "runs").exists()


def test_script_entry_point_exit_status(tmp_path):
    """As a command: a bad value → status 2, one line, no traceback; --help → status 0 and lists the choices."""
    script = str(ROOT / "experiments" / "train_scheduler.py")
    bad = subprocess.run([sys.executable, script, "--algo", "hinge", "--table-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, env=_offline_env(tmp_path))
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: --table-dir")
    assert len(bad.stderr.strip().splitlines()) == 1 and bad.stdout == ""
    typo = subprocess.run([sys.executable, script, "--algo", "hinge", "--epochs", "ten"], capture_output=True,
                          text=True, timeout=300, env=_offline_env(tmp_path))
    assert typo.returncode == 2 and re.fullmatch(r"error: command line: .*--epochs.*\n", typo.stderr), typo.stderr
    helped = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, timeout=300,
                            env=_offline_env(tmp_path))
    assert helped.returncode == 0 and "maskable_ppo" in helped.stdout and "--scheduler.n-envs" in helped.stdout


def test_reference_alias_names_the_shipped_tables():
    from adainf_env.tables.reference import REFERENCE_DIR
    from adainf_lab.config import PipelineConfig

    cfg = PipelineConfig(table_dir=Path("reference"))
    assert cfg.table_dir == REFERENCE_DIR
