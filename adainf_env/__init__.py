"""AdaInf environment package: data, skippable backbones, cost model, outcome tables and the Gymnasium env."""

from __future__ import annotations

__version__ = "0.1.0"

from adainf_env.errors import (  # noqa: E402
    AdaInfError,
    CheckpointError,
    ConfigError,
    DataSourceError,
    TableFormatError,
    TableMismatchError,
    UnsafeFileError,
)
from adainf_env.outcomes import OutcomeTable, load_table, save_table  # noqa: E402
from adainf_env.backbones import load_backbone  # noqa: E402

__all__ = [
    "__version__",
    "OutcomeTable",
    "load_table",
    "save_table",
    "load_backbone",
    "AdaInfError",
    "CheckpointError",
    "ConfigError",
    "DataSourceError",
    "TableFormatError",
    "TableMismatchError",
    "UnsafeFileError",
]
