"""Build one outcome table in shards (one per process / GPU / machine) and merge them into the single-process table.

Layout
------
Batches are fixed by the batch size alone (batch b = rows ``b·batch_size …``), exactly as :func:`build_table` cuts
them, and batch b belongs to rank ``b mod world_size`` (strided, so ranks differ by at most one batch). Every batch is
evaluated with the same rows, plans and code as in a one-process build, so the merged arrays are the single-process
table's arrays: same :meth:`~adainf_env.tables.outcomes.OutcomeTable.content_hash` (on the same kind of device and kernels).

Files (a directory ``OUT.shards`` beside the output ``OUT``; every file written atomically)
-----------------------------------------------------------------------------------------
``identity.json``
    the run's identity (:func:`run_identity`): backbone, checkpoint and weights hashes, dataset, split, rows hash,
    plan space and plans hash, batch size, dtypes, device type, torch version and the shard count (world size).
``batch-000017.npz``
    ``pred loss conf features`` of one batch, stamped with the identity's hash, the batch number and the rank.

A killed rank loses only the batch it was computing: the same command run again skips every batch whose file exists
and redoes the rest. A directory or batch file from another run (other weights, rows, plans, settings or shard count)
is refused with :class:`~adainf_env.errors.TableMismatchError` naming what differs, never merged.
:func:`merge_shards` checks every batch is present exactly once before it assembles the table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from adainf_env.costs import measure_macs
from adainf_env.errors import ConfigError, TableFormatError, TableMismatchError
from adainf_env.fileio import atomic_write, atomic_write_json, safe_np_load, sha256_arrays
from adainf_env.tables.outcomes import OutcomeTable
from adainf_env.tables.builder import (
    BuildInputs,
    assemble_table,
    build_settings,
    empty_outcome_arrays,
    eval_on_device,
    evaluate_batch,
    weights_sha256,
)

__all__ = [
    "ShardLayout",
    "ShardReport",
    "shard_dir_for",
    "run_identity",
    "open_shard_dir",
    "build_shard",
    "merge_shards",
    "remove_shards",
]

SHARD_FORMAT = 1
_IDENTITY_FILE = "identity.json"
_BATCH_RE = re.compile(r"^batch-(\d{6})\.npz$")
_OUTCOME_KEYS = ("pred", "loss", "conf", "features")


@dataclasses.dataclass(frozen=True)
class ShardLayout:
    """Which batches one rank builds: batch b belongs to rank ``b mod world_size``."""

    world_size: int = 1
    rank: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.world_size, int) or self.world_size < 1:
            raise ConfigError(f"world_size must be a positive integer, got {self.world_size!r}")
        if not isinstance(self.rank, int) or not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank must lie in [0, {self.world_size}), got {self.rank!r}")

    def batches(self, num_batches: int) -> list[int]:
        return list(range(self.rank, num_batches, self.world_size))


@dataclasses.dataclass(frozen=True)
class ShardReport:
    """What one :func:`build_shard` call did."""

    rank: int
    batches_owned: int  # batches of this rank's shard
    batches_built: int  # computed in this call
    batches_reused: int  # found complete from an earlier (killed) call
    rows_built: int
    seconds: float  # wall-clock time of this call

    @property
    def rows_per_s(self) -> float:
        return self.rows_built / self.seconds if self.seconds > 0 else float("nan")


def shard_dir_for(out: str | os.PathLike) -> Path:
    """The shard directory of output table ``out`` (``OUT.shards`` beside it)."""
    out = Path(out)
    return out.with_name(out.name + ".shards")


def run_identity(backbone: torch.nn.Module, inputs: BuildInputs, *, device: torch.device,
                 meta: Mapping[str, Any] | None, world_size: int) -> dict[str, Any]:
    """Everything that decides a shard's numbers and place, as named fields (so a mismatch can say what differs)."""
    meta = dict(meta or {})
    rows = {"images": inputs.images, "labels": inputs.labels, "sample_index": inputs.sample_index}
    return {
        "shard_format": SHARD_FORMAT,
        "backbone": backbone.name,
        "checkpoint_sha256": meta.get("checkpoint_sha256"),
        "weights_sha256": weights_sha256(backbone),
        "dataset": meta.get("dataset"),
        "split": meta.get("split"),
        "num_rows": inputs.num_rows,
        "rows_sha256": sha256_arrays(rows),
        "plan_space": meta.get("plan_space"),
        "num_plans": int(inputs.masks.shape[0]),
        "plans_sha256": sha256_arrays({"plan_masks": inputs.masks}),
        **build_settings(backbone, inputs, device),
        "world_size": int(world_size),
    }


def _identity_sha(identity: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dict(identity), sort_keys=True, default=str).encode()).hexdigest()


def _describe_difference(have: Mapping[str, Any], want: Mapping[str, Any]) -> str:
    diffs = [f"{k}: {have.get(k)!r} there, {want.get(k)!r} here" for k in sorted(set(have) | set(want))
             if have.get(k) != want.get(k)]
    return "; ".join(diffs[:6]) + (f"; … ({len(diffs) - 6} more)" if len(diffs) > 6 else "")


def open_shard_dir(shard_dir: str | os.PathLike, identity: Mapping[str, Any]) -> Path:
    """Create ``shard_dir`` for this run, or check that the one there belongs to it (same identity)."""
    shard_dir = Path(shard_dir)
    path = shard_dir / _IDENTITY_FILE
    if path.exists():
        try:
            have = json.loads(path.read_text())
        except (ValueError, OSError):
            have = None
        if not isinstance(have, dict):
            raise TableFormatError(f"{path}: unreadable shard identity; delete {shard_dir} to start over")
        if have != dict(identity):
            raise TableMismatchError(
                f"{shard_dir} holds shards of another run ({_describe_difference(have, identity)}); they are never "
                f"merged: delete {shard_dir} or choose another --out"
            )
    else:
        shard_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, dict(identity))
    return shard_dir


def _batch_path(shard_dir: Path, batch: int) -> Path:
    return shard_dir / f"batch-{batch:06d}.npz"


def _read_batch(path: Path, identity_sha: str, batch: int, num_rows: int, inputs: BuildInputs,
                feature_dim: int) -> dict[str, np.ndarray]:
    """One batch file's outcome arrays, after checking it belongs to this run and has the expected shapes."""
    raw = safe_np_load(path)
    try:
        sha, b = str(raw["identity_sha256"]), int(raw["batch"])
    except (KeyError, TypeError, ValueError):
        raise TableFormatError(f"{path}: not a table shard batch file") from None
    if sha != identity_sha:
        raise TableMismatchError(f"{path}: batch file of another run (identity hash differs); it is never merged: "
                                 f"delete {path.parent} or choose another --out")
    if b != batch:
        raise TableFormatError(f"{path}: holds batch {b}, its name says {batch}")
    want = empty_outcome_arrays(inputs, num_rows, feature_dim)
    out = {}
    for k in _OUTCOME_KEYS:
        a = raw.get(k)
        if a is None or a.shape != want[k].shape or a.dtype != want[k].dtype:
            raise TableFormatError(f"{path}: array {k!r} missing or not {want[k].dtype} {want[k].shape}")
        out[k] = a
    return out


def _count_batch_files(shard_dir: Path) -> int:
    return sum(1 for e in os.scandir(shard_dir) if _BATCH_RE.match(e.name))


def build_shard(
    backbone: torch.nn.Module,
    inputs: BuildInputs,
    *,
    shard_dir: str | os.PathLike,
    identity: Mapping[str, Any],
    layout: ShardLayout,
    device: str | torch.device = "cpu",
    progress: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> ShardReport:
    """Build the batches of ``layout.rank`` that are not on disk yet, one atomic file per batch.

    ``identity`` is :func:`run_identity` of this run (its ``world_size`` must be ``layout.world_size``). Existing
    batch files of this rank are checked to belong to this run and skipped. ``on_batch(batch, num_batches)`` is
    called after each batch written. The progress bar of rank 0 counts the batches of all ranks found in
    ``shard_dir`` (the total); other ranks show their own share.
    """
    if identity.get("world_size") != layout.world_size:
        raise ConfigError(f"identity is for {identity.get('world_size')} shards, layout for {layout.world_size}")
    shard_dir = open_shard_dir(shard_dir, identity)
    sha = _identity_sha(identity)
    num_batches = inputs.num_batches
    owned = layout.batches(num_batches)
    feature_dim = int(backbone.feature_dim)
    todo = []
    for b in owned:
        path = _batch_path(shard_dir, b)
        if path.exists():
            rows = inputs.batch_rows(b)
            _read_batch(path, sha, b, rows.stop - rows.start, inputs, feature_dim)
        else:
            todo.append(b)
    total_view = layout.rank == 0 and layout.world_size > 1
    bar = tqdm(total=num_batches if total_view else len(owned),
               initial=_count_batch_files(shard_dir) if total_view else len(owned) - len(todo),
               disable=not progress or not sys.stderr.isatty(), unit="batch", position=layout.rank,
               desc=f"rank {layout.rank}/{layout.world_size}" + (" (all ranks)" if total_view else ""))
    rows_built, t0 = 0, time.perf_counter()
    with eval_on_device(backbone, device) as dev:
        for b in todo:
            arrays = evaluate_batch(backbone, inputs, b, dev)
            with atomic_write(_batch_path(shard_dir, b), "wb") as fh:
                np.savez(fh, identity_sha256=np.array(sha), batch=np.array(b, dtype=np.int64),
                         rank=np.array(layout.rank, dtype=np.int64), **arrays)
            rows_built += arrays["pred"].shape[0]
            if total_view:
                bar.n = _count_batch_files(shard_dir)
                bar.refresh()
            else:
                bar.update(1)
            if on_batch is not None:
                on_batch(b, num_batches)
    bar.close()
    return ShardReport(rank=layout.rank, batches_owned=len(owned), batches_built=len(todo),
                       batches_reused=len(owned) - len(todo), rows_built=rows_built,
                       seconds=time.perf_counter() - t0)


def merge_shards(
    backbone: torch.nn.Module,
    inputs: BuildInputs,
    *,
    shard_dir: str | os.PathLike,
    identity: Mapping[str, Any],
    meta: Mapping[str, Any] | None = None,
) -> OutcomeTable:
    """Assemble the table from the batch files of every rank (all must be present, all of this run).

    The result is validated (:class:`OutcomeTable`) and has the arrays of a one-process :func:`build_table` run.
    """
    shard_dir = open_shard_dir(shard_dir, identity)
    sha = _identity_sha(identity)
    num_batches = inputs.num_batches
    present = {int(m.group(1)) for e in os.scandir(shard_dir) if (m := _BATCH_RE.match(e.name))}
    stray = sorted(b for b in present if b >= num_batches)
    if stray:
        raise TableMismatchError(f"{shard_dir}: batch files {stray[:5]} beyond the {num_batches} batches of this run")
    missing = sorted(set(range(num_batches)) - present)
    if missing:
        world = int(identity["world_size"])
        ranks = sorted({b % world for b in missing})
        raise TableFormatError(
            f"{shard_dir}: {len(missing)} of {num_batches} batches missing (first {missing[:5]}, ranks {ranks}); "
            "run the same command again to build them (on several machines the output directory must be on a "
            "filesystem every node shares)"
        )
    costs = measure_macs(backbone)
    arrays = empty_outcome_arrays(inputs, inputs.num_rows, int(backbone.feature_dim))
    for b in range(num_batches):
        rows = inputs.batch_rows(b)
        part = _read_batch(_batch_path(shard_dir, b), sha, b, rows.stop - rows.start, inputs,
                           arrays["features"].shape[1])
        for k in _OUTCOME_KEYS:
            arrays[k][rows] = part[k]
    return assemble_table(backbone, inputs, arrays, costs, meta)


def remove_shards(shard_dir: str | os.PathLike) -> None:
    """Delete a shard directory once its merged table is saved."""
    shutil.rmtree(shard_dir, ignore_errors=True)
