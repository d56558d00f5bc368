"""Sharded table builds (one shard per rank, merged on rank 0) equal the one-process build; resume after a killed
rank; shards of another run refused; run_jobs returns one-process results in one-process order."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _tiny_backbones import TinyResNet
from adainf_env import load_table
from adainf_env.data import demo_archive_path
from adainf_env.errors import ConfigError, TableFormatError, TableMismatchError
from adainf_env.plans import all_plans
from adainf_env.tables.builder import build_table, prepare_build_inputs
from adainf_env.tables.shards import (
    ShardLayout,
    build_shard,
    merge_shards,
    run_identity,
    shard_dir_for,
)
from adainf_lab.distributed import DistEnv, rank_device, run_jobs, split_jobs

ROOT = Path(__file__).resolve().parents[1]
META = {"checkpoint_sha256": "ckpt-a", "dataset": "toy", "split": "test", "plan_space": "all"}


def _data(n: int, num_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8), rng.integers(0, num_classes, n)


def _inputs(model, imgs, labels, masks=None, batch_size=4):
    return prepare_build_inputs(model, imgs, labels, sample_index=np.arange(len(labels)) * 2, plan_masks=masks,
                                batch_size=batch_size, float_dtype="float32", channels_last=True, meta=META)


def _build_all_ranks(model, inputs, shard_dir, world, meta=META, on_batch=None):
    identity = run_identity(model, inputs, device=torch.device("cpu"), meta=meta, world_size=world)
    reports = [build_shard(model, inputs, shard_dir=shard_dir, identity=identity,
                           layout=ShardLayout(world_size=world, rank=r), progress=False, on_batch=on_batch)
               for r in range(world)]
    return identity, reports


@pytest.fixture(scope="module")
def tiny():
    model = TinyResNet(num_blocks=4)
    imgs, labels = _data(22, model.num_classes)  # 6 batches of 4 (the last one of 2 rows)
    single = build_table(model, imgs, labels, sample_index=np.arange(22) * 2, batch_size=4, progress=False,
                         meta=META)
    return model, imgs, labels, single


@pytest.mark.parametrize("world", [2, 3, 8])
def test_merged_shards_equal_the_single_process_table(tmp_path, tiny, world):
    model, imgs, labels, single = tiny
    inputs = _inputs(model, imgs, labels)
    shard_dir = tmp_path / "t.npz.shards"
    identity, reports = _build_all_ranks(model, inputs, shard_dir, world)
    assert sum(r.batches_built for r in reports) == 6 and sum(r.rows_built for r in reports) == 22
    assert max(r.batches_owned for r in reports) - min(r.batches_owned for r in reports) <= 1  # balanced
    merged = merge_shards(model, inputs, shard_dir=shard_dir, identity=identity, meta={**META, "build": {"w": world}})
    assert merged.content_hash() == single.content_hash()
    assert merged.meta["build"] == {"w": world} and merged.meta["plan_space"] == "all"


def test_killed_rank_loses_only_its_unfinished_batch(tmp_path, tiny):
    model, imgs, labels, single = tiny
    inputs = _inputs(model, imgs, labels)
    shard_dir = tmp_path / "t.npz.shards"
    identity = run_identity(model, inputs, device=torch.device("cpu"), meta=META, world_size=2)
    layouts = [ShardLayout(world_size=2, rank=r) for r in range(2)]
    build_shard(model, inputs, shard_dir=shard_dir, identity=identity, layout=layouts[0], progress=False)

    class Killed(Exception):
        pass

    def crash_after_first(batch, total):
        raise Killed

    with pytest.raises(Killed):  # rank 1 dies after writing its first batch (batch 1)
        build_shard(model, inputs, shard_dir=shard_dir, identity=identity, layout=layouts[1], progress=False,
                    on_batch=crash_after_first)
    with pytest.raises(TableFormatError, match=r"2 of 6 batches missing \(first \[3, 5\], ranks \[1\]\)"):
        merge_shards(model, inputs, shard_dir=shard_dir, identity=identity, meta=META)
    (shard_dir / ".batch-000003.npz.abc.tmp").write_bytes(b"half-written")  # a write cut short by a SIGKILL
    rebuilt: list[int] = []
    again = [build_shard(model, inputs, shard_dir=shard_dir, identity=identity, layout=lay, progress=False,
                         on_batch=lambda b, t: rebuilt.append(b)) for lay in layouts]
    assert rebuilt == [3, 5]  # only the missing batches are redone
    assert [r.batches_reused for r in again] == [3, 1]
    merged = merge_shards(model, inputs, shard_dir=shard_dir, identity=identity, meta=META)
    assert merged.content_hash() == single.content_hash()


def test_shards_of_another_run_are_refused(tmp_path, tiny):
    model, imgs, labels, _ = tiny
    inputs = _inputs(model, imgs, labels)
    shard_dir = tmp_path / "t.npz.shards"
    _build_all_ranks(model, inputs, shard_dir, 2)
    cpu = torch.device("cpu")

    def attempt(model_, inputs_, world, meta=META):
        identity = run_identity(model_, inputs_, device=cpu, meta=meta, world_size=world)
        build_shard(model_, inputs_, shard_dir=shard_dir, identity=identity,
                    layout=ShardLayout(world_size=world, rank=0), progress=False)

    with pytest.raises(TableMismatchError, match=r"world_size: 2 there, 3 here.*delete"):
        attempt(model, inputs, 3)
    subset = _inputs(model, imgs, labels, masks=all_plans(4)[3:])
    with pytest.raises(TableMismatchError, match=r"num_plans: 16 there, 13 here.*plans_sha256"):
        attempt(model, subset, 2, meta={**META, "plan_space": "structured"})
    other_weights = TinyResNet(num_blocks=4, seed=1)
    with pytest.raises(TableMismatchError, match="weights_sha256"):
        attempt(other_weights, _inputs(other_weights, imgs, labels), 2)
    with pytest.raises(TableMismatchError, match="checkpoint_sha256: 'ckpt-a' there, 'ckpt-b' here"):
        attempt(model, inputs, 2, meta={**META, "checkpoint_sha256": "ckpt-b"})
    with pytest.raises(TableMismatchError, match="split: 'test' there, 'calib' here"):
        attempt(model, inputs, 2, meta={**META, "split": "calib"})
    with pytest.raises(TableMismatchError, match="batch_size"):
        attempt(model, _inputs(model, imgs, labels, batch_size=5), 2)

    # A batch file of another run slipped into a compatible directory is refused by name, never merged.
    foreign_dir = tmp_path / "other.npz.shards"
    other_identity, _ = _build_all_ranks(model, inputs, foreign_dir, 2, meta={**META, "checkpoint_sha256": "x"})
    (shard_dir / "batch-000002.npz").write_bytes((foreign_dir / "batch-000002.npz").read_bytes())
    identity = run_identity(model, inputs, device=cpu, meta=META, world_size=2)
    with pytest.raises(TableMismatchError, match="batch-000002.npz: batch file of another run"):
        merge_shards(model, inputs, shard_dir=shard_dir, identity=identity, meta=META)
    with pytest.raises(TableMismatchError, match="batch-000002.npz: batch file of another run"):
        build_shard(model, inputs, shard_dir=shard_dir, identity=identity, layout=ShardLayout(2, 0), progress=False)


def test_shard_layout_and_env_checks():
    assert ShardLayout(3, 1).batches(8) == [1, 4, 7]
    assert split_jobs(5, 0, 2) == [0, 2, 4]
    with pytest.raises(ConfigError):
        ShardLayout(2, 2)
    with pytest.raises(ConfigError):
        ShardLayout(0, 0)
    assert DistEnv.from_environ({}) == DistEnv()
    assert DistEnv.from_environ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}).rank == 1
    with pytest.raises(ConfigError, match="incomplete"):
        DistEnv.from_environ({"RANK": "1"})
    with pytest.raises(ConfigError, match="invalid torchrun layout"):
        DistEnv.from_environ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    assert rank_device("cpu", DistEnv(rank=1, world_size=2, local_rank=1, launched=True)) == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            rank_device("cuda", DistEnv())


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "OMP_NUM_THREADS": "1"}


def _torchrun(args, tmp_path, nproc=2):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] + args
    return subprocess.run(cmd, cwd=ROOT, env={**_env(), "ADAINF_CACHE": str(tmp_path / "cache")},
                          capture_output=True, text=True, timeout=300)


_KILLING_LAUNCHER = """
import importlib.util, os, signal, sys
spec = importlib.util.spec_from_file_location("build_table_script", sys.argv[1])
script = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = script
spec.loader.exec_module(script)
real_build_shard = script.build_shard

def build_shard_then_die(*args, **kw):  # rank 1 is SIGKILLed right after writing its first batch
    if os.environ["RANK"] == "1":
        kw["on_batch"] = lambda batch, total: os.kill(os.getpid(), signal.SIGKILL)
    return real_build_shard(*args, **kw)

script.build_shard = build_shard_then_die
sys.exit(script.main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_torchrun_two_ranks_equal_the_single_process_build_also_after_a_killed_rank(tmp_path, monkeypatch):
    """experiments/build_table.py under torchrun (2 gloo ranks) writes the table one process writes; with rank 1
    SIGKILLed mid-way, the same command run again redoes only the missing batches and writes it too."""
    script_path = ROOT / "experiments" / "build_table.py"
    spec = importlib.util.spec_from_file_location("build_table_script", script_path)
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, script)  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(script)
    monkeypatch.setenv("ADAINF_CACHE", str(tmp_path / "cache"))
    common = ["--data", str(demo_archive_path()), "--split", "test", "--limit", "12", "--batch-size", "3",
              "--plans", "structured", "--num-random", "0", "--no-progress"]  # 4 batches, 2 per rank
    assert script.main(common + ["--out", str(tmp_path / "one.npz")]) == 0
    one = load_table(tmp_path / "one.npz")
    assert one.meta["build"]["world_size"] == 1 and one.meta["build"]["backend"] is None

    done = _torchrun([str(script_path), *common, "--out", str(tmp_path / "two.npz")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    two = load_table(tmp_path / "two.npz", split="test")
    assert two.content_hash() == one.content_hash()
    assert two.meta["build"]["world_size"] == 2 and two.meta["build"]["backend"] == "gloo"
    assert not shard_dir_for(tmp_path / "two.npz").exists()  # removed once the table is written

    launcher = tmp_path / "launch_and_kill.py"
    launcher.write_text(_KILLING_LAUNCHER)
    out = tmp_path / "killed.npz"
    killed = _torchrun([str(launcher), str(script_path), *common, "--out", str(out)], tmp_path)
    assert killed.returncode != 0 and not out.exists()
    shards = shard_dir_for(out)
    assert (shards / "batch-000001.npz").is_file() and not (shards / "batch-000003.npz").exists()
    again = _torchrun([str(script_path), *common, "--out", str(out)], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "rank 1/2 (cpu): 1 batches built, 1 kept from an earlier run" in again.stderr
    assert load_table(out).content_hash() == one.content_hash()


# ---------------------------------------------------------------------------------------------- run_jobs
def toy_job(job: tuple[str, int]) -> dict:
    """A job whose result depends only on the job (name, seed)."""
    name, seed = job
    rng = np.random.default_rng(seed)
    return {"name": name, "seed": seed, "score": float(rng.normal()), "draw": int(rng.integers(1 << 30))}


JOBS = [(name, seed) for name in ("greedy", "lut", "ppo") for seed in range(3)]


def test_run_jobs_in_worker_processes_equals_one_process():
    one = run_jobs(JOBS, toy_job)
    assert one == [toy_job(j) for j in JOBS]
    assert run_jobs(JOBS, toy_job, workers=2) == one
    assert run_jobs([], toy_job, workers=2) == []
    with pytest.raises(ConfigError, match="workers"):
        run_jobs(JOBS, toy_job, workers=0)


def test_run_jobs_under_torchrun_equals_one_process(tmp_path):
    script = tmp_path / "jobs.py"
    script.write_text(
        "import json, os\n"
        "from adainf_lab.distributed import DistEnv, run_jobs\n"
        "from test_distributed_build import JOBS, toy_job\n"
        "out = run_jobs(JOBS, toy_job)\n"
        "if DistEnv.from_environ().is_main:\n"
        "    print('RESULT ' + json.dumps(out))\n"
    )
    done = _torchrun([str(script)], tmp_path, nproc=2)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    assert json.loads(line[len("RESULT "):]) == [toy_job(j) for j in JOBS]
