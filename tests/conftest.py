"""Shared fixtures. Tests that need ../shared (real CIFAR-10 archive, reference backbone and tables) skip cleanly
when it is absent, so the suite runs on a machine that has only the repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# As adainf_env does for library users: OpenMP threads that spin while waiting slow SB3 tests ~10x on a busy CPU.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
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


def _reference_split(split: str):
    """The reference table of ``split``: from ../shared when present, else the copy shipped inside the package (the
    same bytes), so table-only tests also run on a fresh clone."""
    from adainf_env import load_table
    from adainf_env.tables.reference import load_reference_table

    shared = REFERENCE / f"table_{split}.npz"
    return load_table(shared) if shared.is_file() else load_reference_table(split)


@pytest.fixture(scope="session")
def calib_table():
    return _reference_split("calib")


@pytest.fixture(scope="session")
def test_table():
    return _reference_split("test")
