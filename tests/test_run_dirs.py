"""Nothing lost, nothing late (issue #18): the run-directory rule (--resume / --overwrite), validation before any work,
the Ctrl-C line, and a killed compare_schedulers.py resumed job by job to the uninterrupted run's records."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _rundirs import snapshot, without_fit_s
from adainf_env.errors import ConfigError
from adainf_env.tables.outcomes import save_table
from adainf_env.tables.toy import make_toy_table
from adainf_lab.cli import run_script

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
import compare_schedulers as cs  # noqa: E402
import shifting_budgets  # noqa: E402
import train_scheduler  # noqa: E402

#: A comparison with a learner and baselines, small enough for seconds: 4 schedulers × 2 seeds = 8 jobs.
COMPARE = ["--schedulers", "hinge", "lut", "random", "oracle", "--seeds", "2", "--bandit-budgets", "0.3", "0.7",
           "--stream-budgets", "0.5", "--num-streams", "4", "--horizon", "20", "--no-progress", "--no-plots",
           "--no-tensorboard", "--scheduler-kwargs", '{"hinge": {"epochs": 2, "hidden": [16]}}']


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("toy_tables")
    save_table(make_toy_table(600, seed=0, split="calib"), d / "table_calib.npz")
    save_table(make_toy_table(300, seed=1, split="test"), d / "table_test.npz")
    return d


@pytest.fixture(scope="module")
def uninterrupted(toy_dir, tmp_path_factory) -> list[dict]:
    """The records of the comparison run straight through."""
    out = tmp_path_factory.mktemp("straight") / "run"
    cs.main(["--table-dir", str(toy_dir), "--out", str(out), *COMPARE])
    return json.loads((out / "results.json").read_text())


def _exits_2(main, argv: list[str], capsys) -> str:
    """Run ``main`` as a command: status 2 and exactly one ``error:`` line on stderr; returns that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_script(main, argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err.strip()


def _lut_run(toy_dir: Path, out: Path, *extra: str) -> dict:
    return train_scheduler.main(["--algo", "lut", "--table-dir", str(toy_dir), "--out", str(out), "--budgets", "0.5",
                                 "1.0", "--no-plots", "--no-progress", *extra])


def test_existing_run_directory_is_refused_and_left_unchanged(toy_dir, tmp_path, capsys):
    out = tmp_path / "run"
    _lut_run(toy_dir, out)
    before = snapshot(out)
    common = ["--table-dir", str(toy_dir), "--out", str(out), "--budgets", "0.5", "1.0", "--no-plots", "--no-progress"]
    for argv, match in (
        (["--algo", "lut", *common], r"--out .*run is an existing run directory; add --resume .* or --overwrite"),
        (["--algo", "hinge", *common], "existing run directory"),  # e.g. a PPO run over another run
        (["--algo", "hinge", *common, "--resume"], r"made with other arguments \(--algo: \"lut\" → \"hinge\"\)"),
        (["--algo", "lut", *common, "--lam", "2", "--resume"], r"--lam: 1.0 → 2.0"),
        (["--algo", "lut", *common, "--resume", "--overwrite"], "--resume and --overwrite contradict"),
    ):
        assert re.search(match, _exits_2(train_scheduler.main, argv, capsys))
        assert snapshot(out) == before  # refused before a byte was written
    # another script's run directory is refused on resume, by name
    err = _exits_2(cs.main, ["--table-dir", str(toy_dir), "--out", str(out), "--resume", *COMPARE], capsys)
    assert "made by another script" in err and snapshot(out) == before
    # --resume needs a run directory
    for argv, match in ((["--algo", "lut", "--table-dir", str(toy_dir), "--resume"], "--resume needs --out"),
                        (["--algo", "lut", "--table-dir", str(toy_dir), "--out", str(tmp_path), "--resume"],
                         "is not a run directory")):
        assert re.search(match, _exits_2(train_scheduler.main, argv, capsys))


def test_overwrite_moves_the_old_run_aside_whole(toy_dir, tmp_path, capsys):
    """A hinge run replaced by a lut run: the new directory holds nothing of the old one (no scheduler_hinge.npz,
    no hinge checkpoints, no mixed TensorBoard events); the old one is intact beside it."""
    out = tmp_path / "run"
    train_scheduler.main(["--algo", "hinge", "--table-dir", str(toy_dir), "--out", str(out), "--budgets", "0.5",
                          "--epochs", "1", "--scheduler.hidden", "8", "--no-plots", "--no-progress"])
    before = snapshot(out)
    assert "scheduler_hinge.npz" in before
    _lut_run(toy_dir, out, "--overwrite")
    assert "moved aside whole" in capsys.readouterr().out
    (old,) = tmp_path.glob("run.replaced-*")
    assert snapshot(old) == before
    now = snapshot(out)
    assert "scheduler_lut.npz" in now and not any("hinge" in f for f in now)
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert json.loads((out / "config.json").read_text())["config"]["algo"] == "lut"


def test_resume_says_from_which_step_and_ends_like_the_first_run(toy_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--algo", "hinge", "--table-dir", str(toy_dir), "--out", str(out), "--budgets", "0.5", "--epochs", "2",
            "--scheduler.hidden", "8", "--no-plots", "--no-progress"]
    train_scheduler.main(argv)
    first = json.loads((out / "results.json").read_text())
    config = (out / "config.json").read_bytes()
    log = capsys.readouterr().out
    assert "options epochs=2, hidden=[8], lam=1.0" in log and "resuming" not in log  # the options used, stated
    train_scheduler.main([*argv, "--resume"])
    log = capsys.readouterr().out
    assert "resuming from step 2" in log and "(resumed: same arguments)" in log
    assert without_fit_s(json.loads((out / "results.json").read_text())) == without_fit_s(first)
    assert (out / "config.json").read_bytes() == config  # a resumed run keeps its config.json


@pytest.mark.parametrize("script, argv, match", [
    (train_scheduler, ["--algo", "lut", "--seed", "-1"], r"--seed must be an integer in \[0, 2\*\*32 − 1\], got -1"),
    (train_scheduler, ["--algo", "lut", "--seed", str(2 ** 32)], "--seed must be an integer"),
    (train_scheduler, ["--algo", "lut", "--lam", "nan"], "--lam must be a finite number ≥ 0, got nan"),
    (train_scheduler, ["--algo", "lut", "--lam", "inf"], "--lam must be a finite number ≥ 0, got inf"),
    (shifting_budgets, ["--seed", "-3"], "--seed must be an integer"),
    (shifting_budgets, ["--processes", "drift"], "invalid choice 'drift'"),
    (cs, ["--seed-offset", "-1"], "--seed-offset must be an integer"),
    (cs, ["--behaviour-budget", "fixd:0.3"], "unknown budget process 'fixd'.*known processes: fixed, periodic"),
])
def test_bad_values_stop_before_any_work(toy_dir, tmp_path, capsys, script, argv, match):
    """One line, exit status 2, and no run directory (nothing written) for seeds, λ and process names."""
    err = _exits_2(script.main, [*argv, "--table-dir", str(toy_dir), "--runs-root", str(tmp_path / "runs"),
                                 "--no-progress"], capsys)
    assert re.search(match, err), err
    assert not (tmp_path / "runs").exists()


def test_bad_trace_is_reported_before_training(toy_dir, tmp_path, capsys):
    """A bad --trace CSV stops shifting_budgets.py at once (naming the line), not after the scheduler was fitted."""
    trace = tmp_path / "trace.csv"
    trace.write_text("budget\n0.5\n0.4\nlots\n")
    t0 = time.perf_counter()
    err = _exits_2(shifting_budgets.main, ["--table-dir", str(toy_dir), "--trace", str(trace), "--runs-root",
                                           str(tmp_path / "runs"), "--no-progress"], capsys)
    assert re.search(r"trace\.csv, line 4: 'lots' is not a number", err), err
    assert not (tmp_path / "runs").exists() and time.perf_counter() - t0 < 30


def test_bad_tables_leave_no_run_directory(tmp_path, capsys):
    """Tables that fail validation (here: a negative label) stop the run before its directory exists."""
    bad = tmp_path / "tables"
    bad.mkdir()
    t = make_toy_table(200, seed=0, split="calib")
    label = t.label.copy()
    label[3] = -1
    arrays = {k: getattr(t, k) for k in ("pred", "loss", "conf", "features", "sample_index", "plan_masks",
                                         "plan_macs")}
    from adainf_env.fileio import sha256_arrays

    meta = {**t.meta, "format_version": 1}
    meta["content_sha256"] = sha256_arrays({**arrays, "label": label})
    with open(bad / "table_calib.npz", "wb") as fh:
        np.savez(fh, **arrays, label=label, meta_json=np.array(json.dumps(meta)))
    save_table(make_toy_table(100, seed=1, split="test"), bad / "table_test.npz")
    for main, argv in ((train_scheduler.main, ["--algo", "lut"]), (shifting_budgets.main, []), (cs.main, [])):
        err = _exits_2(main, [*argv, "--table-dir", str(bad), "--runs-root", str(tmp_path / "runs"),
                              "--no-progress"], capsys)
        assert "label contains a negative class index (-1)" in err
        assert not (tmp_path / "runs").exists()


def test_ctrl_c_says_what_was_kept_and_resume_runs_only_the_missing_jobs(toy_dir, tmp_path, capsys, monkeypatch,
                                                                         uninterrupted):
    """Ctrl-C after 3 of 8 jobs: one line naming the kept jobs and the resume command; that command runs the 5 left
    and results.json equals the uninterrupted run's (fit times aside)."""
    import agents.evaluation.comparison as comparison

    real, calls = comparison.comparison_job, []

    def interrupted_after_three(job):
        calls.append((job.name, job.seed))
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(job)

    out = tmp_path / "run"
    argv = ["--table-dir", str(toy_dir), "--out", str(out), *COMPARE]
    monkeypatch.setattr(comparison, "comparison_job", interrupted_after_three)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_script(cs.main, argv)
    err = capsys.readouterr().err
    assert e.value.code == 130 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"interrupted: {out} keeps config.json, jobs/ (3 finished jobs)" in err
    command = err.split("resume with: ", 1)[1].strip()
    assert command.startswith("python ") and command.endswith(f"--out {out} --resume")
    assert not (out / "results.json").exists()
    monkeypatch.setattr(comparison, "comparison_job", real)

    calls.clear()
    monkeypatch.setattr(comparison, "comparison_job", lambda job: calls.append(job.name) or real(job))
    cs.main(shlex.split(command)[2:])
    assert len(calls) == 5 and "[resume] 3 of 8 jobs already done" in capsys.readouterr().out
    assert without_fit_s(json.loads((out / "results.json").read_text())) == without_fit_s(uninterrupted)


def test_killed_process_resumes_to_the_uninterrupted_records(toy_dir, tmp_path, uninterrupted):
    """A real SIGINT to a running compare_schedulers.py (after its first finished job): exit 130, one line, no
    traceback; the printed command resumes it and the records equal the uninterrupted run's (fit times aside)."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    script = str(ROOT / "experiments" / "compare_schedulers.py")
    proc = subprocess.Popen([sys.executable, script, "--table-dir", str(toy_dir), "--out", str(out), *COMPARE],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 240
    while proc.poll() is None and not list((out / "jobs").glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the comparison finished before it could be interrupted (machine too fast for this toy run)")
    assert proc.returncode == 130 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    kept = len(list((out / "jobs").glob("*.json")))
    assert 1 <= kept < 8 and not (out / "results.json").exists()
    command = shlex.split(err.split("resume with: ", 1)[1])
    done = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"[resume] {kept} of 8 jobs already done" in done.stdout
    assert without_fit_s(json.loads((out / "results.json").read_text())) == without_fit_s(uninterrupted)


def test_resume_refuses_changed_tables_and_foreign_job_files(toy_dir, tmp_path, uninterrupted):
    from agents.evaluation.comparison import JobStore, comparison_jobs
    from adainf_lab.tables import load_split_tables

    out = tmp_path / "run"
    cs.main(["--table-dir", str(toy_dir), "--out", str(out), *COMPARE])
    other = tmp_path / "other_tables"
    other.mkdir()
    save_table(make_toy_table(600, seed=5, split="calib"), other / "table_calib.npz")
    save_table(make_toy_table(300, seed=1, split="test"), other / "table_test.npz")
    before = snapshot(out)
    with pytest.raises(ConfigError, match="other arguments"):
        cs.main(["--table-dir", str(other), "--out", str(out), "--resume", *COMPARE])
    assert snapshot(out) == before
    # a kept job written for other settings is refused, not read back as this comparison's
    calib, test = load_split_tables(toy_dir)
    (job,) = comparison_jobs(["lut"], calib, test, seeds=[0], horizon=30)
    with pytest.raises(ConfigError, match="written for other settings"):
        JobStore(out / "jobs").load(job)


def test_bad_checkpoint_leaves_no_run_directory(tmp_path, capsys):
    """A checkpoint that is not a state dict of the backbone stops the run before data, training or a run directory."""
    import ppo_resnet18
    import torch

    from adainf_env.backbones import resnet18_cifar

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 8)
    wrong = tmp_path / "wrong.pt"
    torch.save({k: v for k, v in resnet18_cifar(width=4).state_dict().items() if "fc" not in k}, wrong)
    for ckpt in (garbage, wrong):
        err = _exits_2(ppo_resnet18.main, ["--checkpoint", str(ckpt), "--width", "4", "--runs-root",
                                           str(tmp_path / "runs"), "--no-progress"], capsys)
        assert str(ckpt) in err
        assert not (tmp_path / "runs").exists()


def test_sigterm_ends_like_ctrl_c(tmp_path, capsys):
    """SIGTERM (timeout, a batch scheduler) ends a command with the same one line as Ctrl-C, and the handler is
    restored afterwards."""
    from adainf_lab.cli import note_run_dir

    before = signal.getsignal(signal.SIGTERM)

    def main(argv):
        note_run_dir(tmp_path)
        (tmp_path / "config.json").write_text("{}")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal interrupts this
        raise AssertionError("SIGTERM did not end the run")

    with pytest.raises(SystemExit) as e:
        run_script(main, ["--out", str(tmp_path), "--seed", "3"])
    err = capsys.readouterr().err
    assert e.value.code == 130 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"interrupted: {tmp_path} keeps config.json; resume with: python ")
    assert err.strip().endswith(f"--seed 3 --out {tmp_path} --resume")
    assert signal.getsignal(signal.SIGTERM) == before
