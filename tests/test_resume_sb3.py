"""Issue 7: SB3 scheduler training (PPO; A2C/MaskablePPO share the code path) resumes from its last checkpoint after
being killed and ends with exactly the numbers — held-out history, selected parameters, selections — of an
uninterrupted run with the same seed; a checkpoint of another run is refused."""

from __future__ import annotations

import numpy as np
import pytest

from adainf_env.errors import CheckpointError
from adainf_env.fileio import safe_torch_load
from adainf_env.tables.toy import make_toy_table

# 16 envs × 8 steps = 128 env steps per rollout; 24 rollouts; evaluation (and checkpoint) every 4 rollouts. Plain
# policy (prior=False) with a larger step size so that the held-out scores move during the run (with the LUT prior
# this short run never leaves the LUT, and equal histories would prove little).
KW = {"total_timesteps": 3072, "n_envs": 16, "eval_every": 4, "prior": False, "learning_rate": 3e-3,
      "algo_kwargs": {"n_steps": 8, "batch_size": 64, "n_epochs": 2}}


class Killed(RuntimeError):
    pass


def _kill_after(steps: int):
    def cb(num_timesteps: int, metrics: dict) -> None:
        if num_timesteps >= steps:
            raise Killed(f"simulated kill at {num_timesteps} env steps")
    return cb


@pytest.fixture(scope="module")
def table():
    return make_toy_table(600, seed=0)


@pytest.fixture(scope="module")
def reference(table, tmp_path_factory):
    from agents.sb3.scheduler import SB3Scheduler

    d = tmp_path_factory.mktemp("ref")
    return SB3Scheduler(algo="ppo", **KW).fit(table, seed=5, checkpoint_dir=d), d


def _assert_equal_tree(a, b, where: str = "") -> None:
    """Exact equality of two checkpoints (nested dicts/lists of tensors and plain values)."""
    import torch

    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_equal_tree(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal_tree(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


def _assert_same(ref, b, table) -> None:
    a, ref_dir = ref
    assert len({h["val_score"] for h in a.history}) > 2  # the policy did change during the run
    assert a.history == b.history
    sa, sb = a.state_arrays(), b.state_arrays()
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
    budgets = np.linspace(0.2, 1.0, table.num_samples)
    np.testing.assert_array_equal(a.select(table.features, budgets), b.select(table.features, budgets))


def test_killed_ppo_run_resumes_to_identical_result(table, reference, tmp_path):
    from agents.sb3.scheduler import SB3Scheduler

    seen: list[int] = []
    SB3Scheduler(algo="ppo", **KW).fit(table, seed=5, callback=lambda t, m: seen.append(t))
    # evaluations after rollouts 4, 8, …, 24; the checkpoint + callback follow at the next rollout start (after
    # train() on the evaluated rollout), so none follows the last one
    assert seen == [512, 1024, 1536, 2048, 2560]

    d = tmp_path / "killed"
    with pytest.raises(Killed):
        SB3Scheduler(algo="ppo", **KW).fit(table, seed=5, checkpoint_dir=d, callback=_kill_after(1024))
    saved = safe_torch_load(d / "last.pt")  # weights_only=True: tensors and plain containers only
    assert saved["timesteps"] == 1024 and saved["resume"]["num_timesteps"] == 1024
    assert len(saved["resume"]["selection"]["history"]) == 3  # untrained + 2 evaluations so far
    assert not list(d.glob(".*.tmp")), "atomic writes leave no temp files"

    resumed = SB3Scheduler(algo="ppo", **KW).fit(table, seed=5, checkpoint_dir=d)
    assert len(resumed.history) == 1 + 24 // 4 + 1  # untrained, every 4 rollouts, final
    _assert_same(reference, resumed, table)
    # The last checkpoints (at 2560 steps, 12 rollouts after the resume) are identical too: trained policy and
    # optimiser state, RNG states, env buffers, SB3 counters.
    ref_ckpt, res_ckpt = safe_torch_load(reference[1] / "last.pt"), safe_torch_load(d / "last.pt")
    assert ref_ckpt["timesteps"] == 2560
    _assert_equal_tree(ref_ckpt, res_ckpt)


def test_resume_from_a_later_checkpoint_is_identical_too(table, reference, tmp_path):
    """Kill twice (resume, kill again, resume): still the uninterrupted numbers."""
    from agents.sb3.scheduler import SB3Scheduler

    d = tmp_path / "twice"
    with pytest.raises(Killed):
        SB3Scheduler(algo="ppo", **KW).fit(table, seed=5, checkpoint_dir=d, callback=_kill_after(512))
    with pytest.raises(Killed):
        SB3Scheduler(algo="ppo", **KW).fit(table, seed=5, checkpoint_dir=d, callback=_kill_after(2000))
    assert safe_torch_load(d / "last.pt")["timesteps"] == 2048
    _assert_same(reference, SB3Scheduler(algo="ppo", **KW).fit(table, seed=5, checkpoint_dir=d), table)


def test_sb3_checkpoint_of_another_run_is_refused(table, tmp_path):
    from agents.sb3.scheduler import SB3Scheduler

    kw = {**KW, "total_timesteps": 768}
    SB3Scheduler(algo="ppo", **kw).fit(table, seed=0, checkpoint_dir=tmp_path)
    assert (tmp_path / "last.pt").is_file()
    with pytest.raises(CheckpointError, match="another run"):
        SB3Scheduler(algo="ppo", **kw).fit(table, seed=1, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="another run"):
        SB3Scheduler(algo="ppo", **{**kw, "lam": 3.0}).fit(table, seed=0, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="another run"):
        SB3Scheduler(algo="ppo", **kw).fit(make_toy_table(600, seed=1), seed=0, checkpoint_dir=tmp_path)


def test_sb3_pickle_checkpoint_is_refused(table, tmp_path):
    import pickle

    from adainf_env.errors import UnsafeFileError
    from agents.sb3.scheduler import SB3Scheduler

    class Boom:
        def __reduce__(self):
            return (print, ("payload ran",))

    (tmp_path / "last.pt").write_bytes(pickle.dumps({"x": Boom()}))
    with pytest.raises((UnsafeFileError, CheckpointError)):
        SB3Scheduler(algo="ppo", **KW).fit(table, seed=0, checkpoint_dir=tmp_path)
