"""Exception types raised by AdaInf.

Every error a user can provoke with bad input (a wrong file, a wrong argument) is one of these, so callers can catch
``AdaInfError`` and tests can assert on the specific subclass. Each subclasses ``ValueError`` too, so code written
against plain Python conventions keeps working.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "check_count",
    "AdaInfError",
    "ConfigError",
    "DataSourceError",
    "CheckpointError",
    "TableFormatError",
    "TableMismatchError",
    "UnsafeFileError",
]


class AdaInfError(ValueError):
    """Base class of every user-facing AdaInf error."""


class ConfigError(AdaInfError):
    """An argument or configuration value is out of range, of the wrong type, or names something unknown."""


class DataSourceError(AdaInfError):
    """No usable dataset could be found, or an archive is corrupt or truncated."""


class CheckpointError(AdaInfError):
    """A checkpoint does not fit the architecture it is loaded into, or cannot be read safely."""


class TableFormatError(AdaInfError):
    """An outcome-table file is malformed: missing arrays, wrong shapes or dtypes, NaN/inf, bad hash."""


class TableMismatchError(AdaInfError):
    """An outcome table is well-formed but was built for another backbone, checkpoint, dataset, split or plan space."""


class UnsafeFileError(AdaInfError):
    """A file would need unpickling (arbitrary code execution) to load; AdaInf refuses it."""


def check_count(value: Any, name: str) -> int:
    """``value`` as an int if it is an integer ≥ 1 (a bool is not), else :class:`ConfigError` naming ``name`` and the
    value (``"{name} must be an integer ≥ 1, got {value!r}"``)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be an integer ≥ 1, got {value!r}")
    return int(value)
