"""Issue 7: training of the torch learners (hinge, reinforce, blockdrop) resumes from its last checkpoint after being
killed and ends with exactly the numbers of an uninterrupted run with the same seed."""

from __future__ import annotations

import numpy as np
import pytest

from adainf_env.errors import CheckpointError
from adainf_env.fileio import safe_torch_load
from adainf_env.tables.toy import make_toy_table


class Killed(RuntimeError):
    pass


def _kill_after(k: int):
    def cb(epoch: int, metrics: dict) -> None:
        if epoch >= k:
            raise Killed(f"simulated kill after epoch {epoch}")
    return cb


@pytest.fixture(scope="module")
def table():
    return make_toy_table(800, seed=0)


@pytest.mark.parametrize("name", ["hinge", "reinforce", "blockdrop"])
def test_killed_run_resumes_to_identical_result(table, tmp_path, name):
    from agents.registry import make_scheduler

    kw = {"epochs": 6, "progress": False, "batch_size": 128}
    ref = make_scheduler(name, **kw).fit(table, seed=5, checkpoint_dir=tmp_path / "ref")

    d = tmp_path / "killed"
    with pytest.raises(Killed):
        make_scheduler(name, **kw).fit(table, seed=5, checkpoint_dir=d, callback=_kill_after(3))
    saved = safe_torch_load(d / "last.pt")  # weights_only=True: a plain-tensor checkpoint
    assert saved["epoch"] == 3
    assert not list(d.glob(".*.tmp")), "atomic writes leave no temp files"

    resumed = make_scheduler(name, **kw).fit(table, seed=5, checkpoint_dir=d)
    assert resumed.history == ref.history
    a, b = ref.state_arrays(), resumed.state_arrays()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    budgets = np.linspace(0.2, 1.0, table.num_samples)
    np.testing.assert_array_equal(ref.select(table.features, budgets), resumed.select(table.features, budgets))


def test_checkpoint_of_another_run_is_refused(table, tmp_path):
    from agents.learners.hinge import HingeScheduler

    HingeScheduler(epochs=2, progress=False).fit(table, seed=0, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="another run"):
        HingeScheduler(epochs=2, progress=False).fit(table, seed=1, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="another run"):
        HingeScheduler(epochs=2, lam=3.0, progress=False).fit(table, seed=0, checkpoint_dir=tmp_path)


def test_pickle_checkpoint_is_refused(table, tmp_path):
    import pickle

    from adainf_env.errors import UnsafeFileError
    from agents.learners.hinge import HingeScheduler

    class Boom:
        def __reduce__(self):
            return (print, ("payload ran",))

    (tmp_path / "last.pt").write_bytes(pickle.dumps({"x": Boom()}))
    with pytest.raises((UnsafeFileError, CheckpointError)):
        HingeScheduler(epochs=1, progress=False).fit(table, seed=0, checkpoint_dir=tmp_path)
