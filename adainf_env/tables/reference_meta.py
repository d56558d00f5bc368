"""Metadata of tables in the reference layout: what backbone, dataset, classes and plan space their arrays describe.

A reference-layout table (arrays ``pred loss conf stem_feat label``, one column per plan code) carries no metadata of
its own, so it is read only together with a ``table_meta.json`` beside it::

    {
      "format_version": 1,
      "backbone": "resnet18_cifar", "dataset": "cifar10",
      "classes": ["airplane", ...],                 # class index = position
      "num_blocks": 8, "plan_space": "all",         # column p = plan code p (bit i set <=> block i executed)
      "cost_unit": "macs",
      "macs": {"stem": ..., "fc": ..., "blocks": [[residual, shortcut], ...]},   # per sample, one row per block
      "checkpoint_sha256": "<sha256 of the checkpoint>" | null,
      "splits": {"calib": {"file": "table_calib.npz", "rows": 10000, "arrays_sha256": "...",
                           "sample_index_file": "calib_indices.npy", "content_sha256": "..."}, ...}
    }

``arrays_sha256`` (:func:`~adainf_env.fileio.sha256_arrays` of the five raw arrays) identifies a file's split by its
content; ``content_sha256`` is the loaded :class:`~adainf_env.tables.outcomes.OutcomeTable`'s content hash. Both are
optional for a hand-written sidecar and checked when present.

Without a sidecar, only the published reference tables are recognised — by their array hash, against the metadata
shipped in ``adainf_env/reference_data`` — so ``../shared/reference`` (the same bytes, no sidecar) keeps loading,
while any other table in this layout is refused instead of being labelled as the reference.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from adainf_env.errors import TableFormatError

__all__ = [
    "REFERENCE_META_NAME",
    "SHIPPED_REFERENCE_DIR",
    "ReferenceMeta",
    "SplitEntry",
    "read_reference_meta",
    "reference_meta_for",
]

REFERENCE_META_NAME = "table_meta.json"
SHIPPED_REFERENCE_DIR: Path = Path(__file__).resolve().parents[1] / "reference_data"
META_FORMAT_VERSION = 1
# 2^B columns are stored per row; beyond 16 blocks the layout would not be a sensible file.
_MAX_BLOCKS = 16
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclasses.dataclass(frozen=True)
class SplitEntry:
    """One split's file in a reference-layout directory."""

    split: str
    file: str
    rows: int | None
    arrays_sha256: str | None
    content_sha256: str | None
    sample_index_file: str | None


@dataclasses.dataclass(frozen=True)
class ReferenceMeta:
    """Validated ``table_meta.json``; ``directory`` is where its relative file names resolve."""

    directory: Path
    backbone: str
    dataset: str
    classes: tuple[str, ...]
    num_blocks: int
    plan_space: str
    cost_unit: str
    stem_macs: int
    fc_macs: int
    block_macs: np.ndarray  # [B, 2] int64: residual, shortcut MACs per block
    checkpoint_sha256: str | None
    splits: dict[str, SplitEntry]

    @property
    def num_plans(self) -> int:
        return 1 << self.num_blocks


def read_reference_meta(path: str | Path) -> ReferenceMeta:
    """Read and validate a ``table_meta.json``; :class:`TableFormatError` names the first problem."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise TableFormatError(f"{path}: unreadable table metadata ({type(e).__name__}: {e})") from None
    if not isinstance(raw, dict):
        raise TableFormatError(f"{path}: table metadata must be a JSON object")
    try:
        return _parse(raw, path)
    except TableFormatError as e:
        raise TableFormatError(f"{path}: {e}") from None


def reference_meta_for(table_path: Path, arrays_sha256: str) -> tuple[ReferenceMeta, SplitEntry]:
    """The metadata and split entry describing the reference-layout table at ``table_path``.

    ``table_meta.json`` beside the table decides; without one, the table must be one of the shipped reference
    tables (same array hash), and the shipped metadata describes it.
    """
    sidecar = table_path.parent / REFERENCE_META_NAME
    if sidecar.is_file():
        meta = read_reference_meta(sidecar)
        return meta, _entry_for(meta, table_path, arrays_sha256, sidecar)
    shipped = SHIPPED_REFERENCE_DIR / REFERENCE_META_NAME
    if shipped.is_file():
        meta = read_reference_meta(shipped)
        for entry in meta.splits.values():
            if entry.arrays_sha256 == arrays_sha256:
                return meta, entry
    raise TableFormatError(
        f"{table_path}: a table in the reference layout (arrays pred/loss/conf/stem_feat/label) needs "
        f"{REFERENCE_META_NAME} beside it naming its backbone, dataset, classes, plan space and MACs (see "
        f"{shipped} for the fields); without one only the published reference tables are recognised, and this "
        "file's arrays are not one of them"
    )


def _entry_for(meta: ReferenceMeta, table_path: Path, arrays_sha256: str, sidecar: Path) -> SplitEntry:
    for entry in meta.splits.values():
        if entry.arrays_sha256 == arrays_sha256:
            return entry
    for entry in meta.splits.values():
        if entry.file == table_path.name:
            if entry.arrays_sha256 is not None:
                raise TableFormatError(
                    f"{table_path}: its arrays differ from what {sidecar} describes for split {entry.split!r} "
                    f"(arrays_sha256 {arrays_sha256[:16]}…, expected {entry.arrays_sha256[:16]}…): the file is "
                    "corrupt, edited, or the metadata belongs to another table"
                )
            return entry
    raise TableFormatError(
        f"{table_path}: not listed in {sidecar} (splits {sorted(meta.splits)} name files "
        f"{sorted(e.file for e in meta.splits.values())})"
    )


# ---------------------------------------------------------------------------------------------- parsing
def _parse(raw: dict[str, Any], path: Path) -> ReferenceMeta:
    if raw.get("format_version") != META_FORMAT_VERSION:
        raise TableFormatError(f"format_version {raw.get('format_version')!r}, expected {META_FORMAT_VERSION}")
    backbone, dataset = _text(raw, "backbone"), _text(raw, "dataset")
    classes = raw.get("classes")
    if (not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) and c for c in classes)
            or len(set(classes)) != len(classes)):
        raise TableFormatError(f"'classes' must list at least two distinct class names, got {classes!r}")
    num_blocks = raw.get("num_blocks")
    if not _is_int(num_blocks) or not 1 <= num_blocks <= _MAX_BLOCKS:
        raise TableFormatError(f"'num_blocks' must be an integer in [1, {_MAX_BLOCKS}], got {num_blocks!r}")
    if raw.get("plan_space") != "all":
        raise TableFormatError(
            f"'plan_space' is {raw.get('plan_space')!r}; the reference layout stores every plan (column p = plan "
            "code p), so it must be 'all' — convert other plan spaces to the project format (save_table)"
        )
    if raw.get("cost_unit") != "macs":
        raise TableFormatError(f"'cost_unit' must be 'macs', got {raw.get('cost_unit')!r}")
    stem, fc, blocks = _macs(raw.get("macs"), num_blocks)
    ckpt = raw.get("checkpoint_sha256")
    if ckpt is not None and not (isinstance(ckpt, str) and _SHA256.fullmatch(ckpt)):
        raise TableFormatError(f"'checkpoint_sha256' must be 64 lowercase hex digits or null, got {ckpt!r}")
    return ReferenceMeta(
        directory=path.parent, backbone=backbone, dataset=dataset, classes=tuple(classes), num_blocks=num_blocks,
        plan_space="all", cost_unit="macs", stem_macs=stem, fc_macs=fc, block_macs=blocks,
        checkpoint_sha256=ckpt, splits=_splits(raw.get("splits")),
    )


def _text(raw: dict[str, Any], key: str) -> str:
    v = raw.get(key)
    if not isinstance(v, str) or not v.strip():
        raise TableFormatError(f"{key!r} must be a non-empty string, got {v!r}")
    return v


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _macs(macs: Any, num_blocks: int) -> tuple[int, int, np.ndarray]:
    if not isinstance(macs, dict):
        raise TableFormatError(f"'macs' must be an object with stem, fc and blocks, got {macs!r}")
    stem, fc, blocks = macs.get("stem"), macs.get("fc"), macs.get("blocks")
    if not (_is_int(stem) and _is_int(fc) and stem >= 0 and fc >= 0):
        raise TableFormatError(f"macs.stem and macs.fc must be non-negative integers, got {stem!r}, {fc!r}")
    if (not isinstance(blocks, list) or len(blocks) != num_blocks
            or not all(isinstance(b, list) and len(b) == 2 and all(_is_int(v) and v >= 0 for v in b)
                       for b in blocks)):
        raise TableFormatError(
            f"macs.blocks must list [residual, shortcut] non-negative integers for each of the {num_blocks} blocks"
        )
    arr = np.asarray(blocks, dtype=np.int64)
    if (arr[:, 0] <= 0).any():
        raise TableFormatError("every block's residual branch must cost > 0 MACs (otherwise skipping it saves nothing)")
    return int(stem), int(fc), arr


def _splits(splits: Any) -> dict[str, SplitEntry]:
    if not isinstance(splits, dict) or not splits:
        raise TableFormatError("'splits' must map split names to their files")
    out: dict[str, SplitEntry] = {}
    for name, e in splits.items():
        if (not isinstance(e, dict) or not isinstance(e.get("file"), str) or not e["file"] or "/" in e["file"]
                or "\\" in e["file"]):
            raise TableFormatError(f"splits.{name} must be an object with a 'file' name (beside the metadata)")
        rows = e.get("rows")
        if rows is not None and (not _is_int(rows) or rows <= 0):
            raise TableFormatError(f"splits.{name}.rows must be a positive integer, got {rows!r}")
        for key in ("arrays_sha256", "content_sha256"):
            v = e.get(key)
            if v is not None and not (isinstance(v, str) and _SHA256.fullmatch(v)):
                raise TableFormatError(f"splits.{name}.{key} must be 64 lowercase hex digits, got {v!r}")
        idx = e.get("sample_index_file")
        if idx is not None and (not isinstance(idx, str) or not idx or "/" in idx or "\\" in idx):
            raise TableFormatError(f"splits.{name}.sample_index_file must be a file name beside the metadata")
        out[name] = SplitEntry(split=name, file=e["file"], rows=rows, arrays_sha256=e.get("arrays_sha256"),
                               content_sha256=e.get("content_sha256"), sample_index_file=idx)
    files = [e.file for e in out.values()]
    if len(set(files)) != len(files):
        raise TableFormatError(f"two splits name the same file: {files}")
    return out
