"""Why does a feature-based scheduler gain only so much in the stream setting with a shared average budget?

    python experiments/stream_ceiling.py --table-dir reference --avg-budget 0.2 --seeds 3

Compares, on the test table under a token bucket refilled with the average budget, ``hull_mix``, the calibration-fitted
``lagrangian`` router and two bounds (the router fitted on the test split; a router that reads the labels), and
measures how predictable correctness is from the stem features (per-plan test ROC-AUC) — see
:mod:`adainf_lab.ceiling`. Prints two tables; the last line is a JSON object with every number.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from adainf_env.errors import ConfigError
from adainf_env.fileio import atomic_write_json
from adainf_env.stream import DEFAULT_STREAM
from adainf_lab.ceiling import ceiling_analysis, format_ceiling, roc_auc
from adainf_lab.cli import parse_config, run_script
from adainf_lab.scheduler_options import SchedulerOptions
from adainf_lab.tables import load_split_tables, resolve_table_dir

__all__ = ["CeilingConfig", "main", "roc_auc"]


@dataclasses.dataclass
class CeilingConfig:
    """Ceiling analysis of feature-based routing under a shared average budget (stream setting)."""

    table_dir: Path = dataclasses.field(metadata={
        "help": "directory with table_calib.npz and table_test.npz, or 'reference' (the tables shipped in the package)"})
    avg_budget: float = dataclasses.field(default=0.2, metadata={"help": "average budget (token-bucket refill)"})
    seeds: int = dataclasses.field(default=3, metadata={"help": "seeds 0 … seeds−1 (fit and stream order)"})
    num_streams: int = dataclasses.field(default=DEFAULT_STREAM.num_streams,
                                         metadata={"help": "parallel streams per evaluation"})
    horizon: int = dataclasses.field(default=DEFAULT_STREAM.horizon, metadata={"help": "requests per stream"})
    bucket_cap: float = dataclasses.field(default=DEFAULT_STREAM.bucket_cap,
                                          metadata={"help": "token-bucket capacity (full-model units)"})
    epochs: int | None = dataclasses.field(default=None, metadata={
        "help": "training epochs of the lagrangian router's correctness model (None: its default)"})
    scheduler: SchedulerOptions = dataclasses.field(default_factory=SchedulerOptions, metadata={
        "help": "options of the lagrangian router"})
    out: Path | None = dataclasses.field(default=None, metadata={"help": "also write the JSON here (atomically)"})

    def __post_init__(self) -> None:
        if not 0 < self.avg_budget <= 1:
            raise ConfigError(f"--avg-budget must be in (0, 1], got {self.avg_budget}")
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be ≥ 1, got {self.seeds}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"--epochs must be ≥ 1, got {self.epochs}")
        self.router_kwargs()
        self.table_dir = resolve_table_dir(self.table_dir)

    def router_kwargs(self) -> dict[str, Any]:
        kw = self.scheduler.kwargs_for("lagrangian")
        if self.epochs is not None:
            kw["epochs"] = self.epochs
        return kw


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg = parse_config(CeilingConfig, argv, raise_errors=True)
    calib, test = load_split_tables(cfg.table_dir)
    summary = ceiling_analysis(calib, test, avg_budget=cfg.avg_budget, seeds=cfg.seeds,
                               router_kwargs=cfg.router_kwargs(), bucket_cap=cfg.bucket_cap,
                               num_streams=cfg.num_streams, horizon=cfg.horizon)
    print(format_ceiling(summary))
    if cfg.out is not None:
        atomic_write_json(cfg.out, summary)
    print(json.dumps(summary, default=float))
    return summary


if __name__ == "__main__":
    run_script(main)
