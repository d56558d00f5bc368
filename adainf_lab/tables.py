"""Calibration / test outcome tables for an experiment run: from a table directory, or built once and cached.

Cache layout: ``<cache>/<backbone>__<checkpoint sha256[:16]>__<dataset>__<split>__<rows hash[:12]>.npz``. The key holds
everything that determines a table's numbers — the backbone and the exact weights (hash of the checkpoint file), the
dataset, the split, and which samples (hash of the ``sample_index`` array and the data source's identity). A cached
file is reused only after :func:`adainf_env.load_table` validated it against the same backbone, checkpoint hash,
dataset and split (and its rows matched); an unreadable, corrupt or mismatched cache file is rebuilt, never trusted.
A build that is killed resumes from its partial checkpoint (``…npz.partial``) on the next run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from adainf_env.data import cache_dir
from adainf_env.errors import ConfigError, TableFormatError, TableMismatchError, UnsafeFileError
from adainf_env.tables.outcomes import OutcomeTable, find_split_tables, load_table, save_table
from adainf_env.tables.reference import REFERENCE_DIR
from adainf_env.tables.builder import build_table

__all__ = ["REFERENCE_ALIAS", "resolve_table_dir", "load_split_tables", "export_split_tables", "table_cache_path",
           "cached_table", "default_table_cache"]

#: ``--table-dir reference`` names the reference tables shipped in the package (``adainf_env/reference_data``).
REFERENCE_ALIAS = "reference"


def default_table_cache() -> Path:
    """``$ADAINF_CACHE/tables`` (default ``~/.cache/adainf/tables``)."""
    return cache_dir() / "tables"


def resolve_table_dir(table_dir: str | os.PathLike) -> Path:
    """The directory ``--table-dir`` names: ``reference`` (when no such directory exists here) is the shipped
    reference tables; any other value is a path, checked to hold ``table_calib.npz`` and ``table_test.npz``
    (ConfigError otherwise)."""
    path = Path(table_dir)
    if str(table_dir) == REFERENCE_ALIAS and not path.exists():
        path = REFERENCE_DIR
    missing = [f"table_{s}.npz" for s in ("calib", "test") if not (path / f"table_{s}.npz").is_file()]
    if missing:
        raise ConfigError(f"--table-dir {table_dir}: expected table_calib.npz and table_test.npz there, missing "
                          f"{', '.join(missing)}. Build them with experiments/build_table.py, take a pipeline run's "
                          f"<run>/tables, or use --table-dir {REFERENCE_ALIAS} (the tables shipped in the package)")
    return path


def load_split_tables(table_dir: str | os.PathLike, cost_unit: str = "macs") -> tuple[OutcomeTable, OutcomeTable]:
    """``(calib, test)`` from a table directory (project format or the reference layout), refused unless both
    describe the same backbone, weights, dataset and plan space and are different splits; a missing cost profile
    (``cost_unit="latency"``) fails here, before anything is fitted."""
    paths = find_split_tables(resolve_table_dir(table_dir))
    calib = load_table(paths["calib"], split="calib")
    test = load_table(paths["test"], split="test")
    for key in ("backbone", "checkpoint_sha256", "dataset"):
        if calib.meta.get(key) != test.meta.get(key):
            raise TableMismatchError(f"{table_dir}: calib and test tables differ in {key} "
                                     f"({calib.meta.get(key)!r} vs {test.meta.get(key)!r})")
    test.check_compatible(plan_masks=calib.plan_masks)
    calib.plan_cost(cost_unit), test.plan_cost(cost_unit)
    return calib, test


def export_split_tables(paths: Mapping[str, str | os.PathLike], out_dir: str | os.PathLike) -> Path:
    """Put the tables ``{"calib": path, "test": path}`` into ``out_dir`` as ``table_<split>.npz`` — the
    ``--table-dir`` layout — hard-linked when the file system allows (tables are large), else copied."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split, src in paths.items():
        dst = out / f"table_{split}.npz"
        dst.unlink(missing_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    return out


def _rows_key(sample_index: np.ndarray, source_id: str, plan_masks: np.ndarray | None) -> str:
    h = hashlib.sha256(np.ascontiguousarray(np.asarray(sample_index, dtype=np.int64)).tobytes())
    h.update(source_id.encode())
    if plan_masks is not None:  # a plan subset (large plan spaces) is part of what the table is
        h.update(np.ascontiguousarray(np.asarray(plan_masks, dtype=bool)).tobytes())
    return h.hexdigest()[:12]


def table_cache_path(cache: str | os.PathLike, *, backbone: str, checkpoint_sha256: str, dataset: str, split: str,
                     sample_index: np.ndarray, source_id: str, plan_masks: np.ndarray | None = None) -> Path:
    """Where the table for these inputs lives in the cache (see module docstring)."""
    return Path(cache) / (f"{backbone}__{checkpoint_sha256[:16]}__{dataset}__{split}__"
                          f"{_rows_key(sample_index, source_id, plan_masks)}.npz")


def cached_table(model: Any, images: np.ndarray, labels: np.ndarray, *, sample_index: np.ndarray,
                 checkpoint_sha256: str, dataset: str, split: str, source_id: str, cache: str | os.PathLike,
                 batch_size: int = 256, device: str = "cpu", progress: bool = True,
                 plan_masks: np.ndarray | None = None, extra_meta: Mapping[str, Any] | None = None,
                 log=print) -> tuple[OutcomeTable, Path, bool]:
    """The outcome table of ``model`` on ``images`` — reused from ``cache`` when a valid one exists, else built
    (resumably) and saved there. Returns ``(table, path, reused)``."""
    name = str(model.name)
    path = table_cache_path(cache, backbone=name, checkpoint_sha256=checkpoint_sha256, dataset=dataset, split=split,
                            sample_index=sample_index, source_id=source_id, plan_masks=plan_masks)
    if path.is_file():
        try:
            table = load_table(path, backbone=name, checkpoint_sha256=checkpoint_sha256, dataset=dataset, split=split,
                               plan_masks=plan_masks)
            if not np.array_equal(table.sample_index, np.asarray(sample_index, dtype=np.int64)):
                raise TableMismatchError(f"{path}: cached table covers other samples")
            log(f"[tables] reusing cached {split} table {path} ({table.num_samples} samples × {table.num_plans} plans)")
            return table, path, True
        except (TableFormatError, TableMismatchError, UnsafeFileError) as e:
            log(f"[tables] cached {split} table is unusable, rebuilding it: {e}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    meta = {"checkpoint_sha256": checkpoint_sha256, "dataset": dataset, "split": split, "data_source": source_id,
            **dict(extra_meta or {})}
    log(f"[tables] building the {split} table: {len(labels)} images × all plans of {name}")
    table = build_table(model, images, labels, sample_index=np.asarray(sample_index, dtype=np.int64),
                        plan_masks=plan_masks, batch_size=batch_size, device=device, meta=meta, progress=progress, resume_path=partial)
    save_table(table, path)
    partial.unlink(missing_ok=True)
    # Re-read what was written so the run uses exactly the validated file (content hash stamped by save_table).
    return load_table(path, backbone=name, checkpoint_sha256=checkpoint_sha256, dataset=dataset, split=split), path, False
