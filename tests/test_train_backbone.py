"""experiments/train_backbone.py: a tiny run stopped after epoch 1 and resumed ends exactly like an uninterrupted one."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from adainf_env import load_backbone
from adainf_env.data import demo_archive_path
from adainf_env.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("train_backbone_script", ROOT / "experiments" / "train_backbone.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("cache")
    script = _script()

    def _run(out: Path, *extra: str) -> dict:
        threads = torch.get_num_threads()
        # One intra-op thread: tiny convs on a shared 2-core box are ~8x slower with 2 contending threads.
        torch.set_num_threads(1)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("ADAINF_CACHE", str(cache))
            args = ["--out", str(out), "--backbone", "resnet32_cifar", "--data", str(demo_archive_path()),
                    "--num-calib", "1000", "--width", "4", "--epochs", "2", "--batch-size", "32", "--limit-fit",
                    "128", "--limit-eval", "64", "--seed", "7", "--no-progress", "--device", "cpu", *extra]
            try:
                return script.main(args)
            finally:
                torch.set_num_threads(threads)
    return _run


def _drop_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def test_killed_after_epoch_one_then_resumed_matches_uninterrupted(run, tmp_path: Path) -> None:
    full = run(tmp_path / "full")
    part = run(tmp_path / "resumed", "--stop-after-epochs", "1")
    assert not part["complete"] and part["epochs_done"] == 1
    assert not (tmp_path / "resumed" / "checkpoint.pt").exists() and (tmp_path / "resumed" / "resume.pt").exists()
    resumed = run(tmp_path / "resumed", "--resume")
    assert resumed["complete"] and full["complete"]
    assert _drop_time(resumed["history"]) == _drop_time(full["history"])
    assert resumed["test_acc"] == full["test_acc"]
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The weights actually moved (a test that cannot fail is no test) and load through the public loader.
    init = torch.load(tmp_path / "full" / "resume.pt", weights_only=True)["model"]
    assert all(torch.equal(init[k], a[k]) for k in a)  # resume.pt holds the final epoch
    model = load_backbone("resnet32_cifar", checkpoint=tmp_path / "full" / "checkpoint.pt", width=4)
    assert model.num_blocks == 15
    cfg = (tmp_path / "full" / "config.json").read_text()
    assert '"git"' in cfg and '"resnet32_cifar"' in cfg


def test_resume_with_other_settings_is_refused(run, tmp_path: Path) -> None:
    run(tmp_path / "r", "--stop-after-epochs", "1")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "r").rglob("*")}
    with pytest.raises(ConfigError, match=r"other arguments \(--lr: 0.1 → 0.05\)"):
        run(tmp_path / "r", "--lr", "0.05", "--resume")
    with pytest.raises(ConfigError, match="existing run directory"):
        run(tmp_path / "r")
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "r").rglob("*")} == before  # nothing written
    run(tmp_path / "r", "--lr", "0.05", "--overwrite", "--stop-after-epochs", "1")  # the old run moved aside whole
    (old,) = tmp_path.glob("r.replaced-*")
    assert {p.relative_to(old) for p in old.rglob("*")} == {p.relative_to(tmp_path / "r") for p in before}
    assert json.loads((tmp_path / "r" / "config.json").read_text())["config"]["lr"] == 0.05


def test_bad_config_rejected(run, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--limit-fit must be ≥ 1, got 0"):
        run(tmp_path / "x", "--limit-fit", "0")
    assert not (tmp_path / "x").exists()  # refused before any work
    with pytest.raises(ConfigError, match="fewer than batch_size"):
        run(tmp_path / "y", "--limit-fit", "8")
