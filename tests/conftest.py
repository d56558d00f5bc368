"""Shared fixtures. Tests that need ../shared (real CIFAR-10 archive, reference backbone and tables) skip cleanly
when it is absent, so the suite runs on a machine that has only the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED = Path(os.environ.get("ADAINF_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
REFERENCE = SHARED / "reference"
ARCHIVE = SHARED / "data" / "cifar10-jpg.tgz"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not (REFERENCE / "table_calib.npz").is_file():
        pytest.skip(f"reference tables not found at {REFERENCE} (../shared is absent)")
    return REFERENCE


@pytest.fixture(scope="session")
def reference_checkpoint(reference_dir: Path) -> Path:
    p = reference_dir / "resnet18_sd_cifar10.pt"
    if not p.is_file():
        pytest.skip(f"reference checkpoint not found at {p}")
    return p


@pytest.fixture(scope="session")
def cifar_archive() -> Path:
    if not ARCHIVE.is_file():
        pytest.skip(f"CIFAR-10 JPG archive not found at {ARCHIVE} (../shared is absent)")
    return ARCHIVE


@pytest.fixture(scope="session")
def calib_table(reference_dir: Path):
    from adainf_env import load_table

    return load_table(reference_dir / "table_calib.npz")


@pytest.fixture(scope="session")
def test_table(reference_dir: Path):
    from adainf_env import load_table

    return load_table(reference_dir / "table_test.npz")
