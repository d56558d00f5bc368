"""The reference outcome tables shipped inside the package, so a fresh clone runs real experiments with no other data.

``adainf_env/reference_data/`` holds the calibration and test tables of a stochastic-depth ResNet18 on CIFAR-10
(every one of its 256 plans on 10,000 images per split), the metadata that names what they describe
(``table_meta.json``) and their provenance (``PROVENANCE.md``: which checkpoint, how they were built, hashes).
The directory is a ``--table-dir``: ``find_split_tables(REFERENCE_DIR)`` returns both splits.
"""

from __future__ import annotations

from pathlib import Path

from adainf_env.errors import ConfigError
from adainf_env.tables.outcomes import OutcomeTable, load_table
from adainf_env.tables.reference_meta import SHIPPED_REFERENCE_DIR

__all__ = ["REFERENCE_DIR", "REFERENCE_SPLITS", "reference_table_path", "load_reference_table"]

REFERENCE_DIR: Path = SHIPPED_REFERENCE_DIR
REFERENCE_SPLITS: tuple[str, ...] = ("calib", "test")


def reference_table_path(split: str) -> Path:
    """Path of the shipped reference table of ``split`` ("calib" or "test")."""
    if split not in REFERENCE_SPLITS:
        raise ConfigError(f"reference split must be one of {list(REFERENCE_SPLITS)}, got {split!r}")
    path = REFERENCE_DIR / f"table_{split}.npz"
    if not path.is_file():
        raise ConfigError(
            f"shipped reference table {path} is missing: the package was installed without its data files "
            "(reinstall with `pip install -e .` from a full checkout)"
        )
    return path


def load_reference_table(split: str) -> OutcomeTable:
    """Load and validate the shipped reference table of ``split`` ("calib" or "test")."""
    return load_table(reference_table_path(split))
