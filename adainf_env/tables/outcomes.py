"""Outcome tables: the result of running every plan of a plan space on every sample of a data split.

The table is the contract between the expensive world (backbones, GPUs, datasets) and the cheap one (environments,
RL, evaluation): everything above it runs on a laptop in seconds.

Representation (one everywhere):

* a **plan** is an index ``p`` into the table's plan list; ``plan_masks[p]`` is its boolean block mask (blocks in
  execution order, ``True`` = residual branch executed);
* a **cost** is a fraction of the full model (``plan_cost[p]``, in (0, 1]); by default MACs, or measured latency
  when the table carries a latency profile. A budget of 0.5 means "at most half the full model".

File format (``.npz``, plain numpy, no pickles; written atomically):

=================  ===========  =========================================================
array              shape        meaning
=================  ===========  =========================================================
``pred``           [N, P] u8/u16  predicted class under plan p
``loss``           [N, P] f16/32  cross-entropy of the true label under plan p (nats)
``conf``           [N, P] f16/32  max softmax probability in [0, 1]
``features``       [N, F] f32   always-computed (stem) features the scheduler reads
``label``          [N] i64      true class
``sample_index``   [N] i64      index of the sample in its split's source ordering
``plan_masks``     [P, B] bool  executed blocks per plan
``plan_macs``      [P] i64      MACs of each plan (per sample, at the table's input size)
``meta_json``      0-d str      JSON metadata (backbone, checkpoint hash, dataset, split, versions, content hash)
=================  ===========  =========================================================

:func:`load_table` also reads tables in the reference layout (keys ``pred loss conf stem_feat label``, one column
per plan code), labelled by the ``table_meta.json`` beside them (:mod:`adainf_env.tables.reference_meta`): the tables shipped
in ``adainf_env/reference_data`` and, recognised by content, the same tables in ``../shared/reference``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from adainf_env.errors import ConfigError, TableFormatError, TableMismatchError
from adainf_env.version import adainf_version
from adainf_env.fileio import atomic_write, safe_np_load, sha256_arrays
from adainf_env.plans import masks_from_codes, plan_cost
from adainf_env.tables.reference_meta import REFERENCE_META_NAME, SHIPPED_REFERENCE_DIR, ReferenceMeta, reference_meta_for

__all__ = ["OutcomeTable", "load_table", "save_table", "find_split_tables"]

FORMAT_VERSION = 1
_ARRAY_KEYS = ("pred", "loss", "conf", "features", "label", "sample_index", "plan_masks", "plan_macs")
_REFERENCE_KEYS = {"pred", "loss", "conf", "stem_feat", "label"}


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class OutcomeTable:
    """Outcome of every plan on every sample of one split. See the module docstring for array meanings."""

    pred: np.ndarray
    loss: np.ndarray
    conf: np.ndarray
    features: np.ndarray
    label: np.ndarray
    sample_index: np.ndarray
    plan_masks: np.ndarray
    plan_macs: np.ndarray
    meta: dict[str, Any]
    # Optional per-plan cost in the "latency" unit (fraction of the full plan's measured time), if profiled.
    plan_latency: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.validate()

    def __repr__(self) -> str:
        """One line naming what the table describes, never its arrays."""
        digest = self.meta.get("content_sha256") or self.content_hash()
        fields = {
            "samples": self.num_samples, "plans": self.num_plans, "blocks": self.num_blocks,
            "features": self.feature_dim, "classes": self.num_classes,
            **{k: self.meta.get(k) for k in ("backbone", "dataset", "split", "plan_space")},
            "latency": self.plan_latency is not None, "content_sha256": f"{digest[:12]}…",
        }
        return f"OutcomeTable({', '.join(f'{k}={v!r}' for k, v in fields.items())})"

    # ------------------------------------------------------------------ derived views
    @property
    def num_samples(self) -> int:
        return int(self.pred.shape[0])

    @property
    def num_plans(self) -> int:
        return int(self.plan_masks.shape[0])

    @property
    def num_blocks(self) -> int:
        return int(self.plan_masks.shape[1])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def num_classes(self) -> int:
        nc = self.meta.get("num_classes")  # absent or null: the largest class index seen + 1
        return int(nc) if nc is not None else int(max(self.pred.max(), self.label.max())) + 1

    @property
    def full_macs(self) -> int:
        return int(self.meta["full_macs"])

    @property
    def correct(self) -> np.ndarray:
        """[N, P] bool: plan p classifies sample n correctly. Cached after first use."""
        c = self.__dict__.get("_correct")
        if c is None:
            c = self.pred == self.label[:, None].astype(self.pred.dtype)
            object.__setattr__(self, "_correct", c)
        return c

    def plan_cost(self, unit: str = "macs") -> np.ndarray:
        """[P] float64 cost of each plan as a fraction of the full model ("macs" or "latency")."""
        if unit == "macs":
            return self.plan_macs.astype(np.float64) / float(self.full_macs)
        if unit == "latency":
            if self.plan_latency is None:
                raise TableMismatchError(
                    "this table carries no latency profile; attach one with "
                    "adainf_env.latency.attach_latency(table, profile, batch_size) or use cost_unit='macs'"
                )
            return np.asarray(self.plan_latency, dtype=np.float64)
        raise ConfigError(f"unknown cost unit {unit!r}; expected 'macs' or 'latency'")

    def accuracy_by_plan(self) -> np.ndarray:
        return self.correct.mean(axis=0)

    def full_plan(self) -> int:
        """Index of the plan that executes every block (raises if the plan space lacks it)."""
        idx = np.flatnonzero(self.plan_masks.all(axis=1))
        if idx.size == 0:
            raise TableFormatError("plan space has no full plan (all blocks executed)")
        return int(idx[0])

    def subset(self, rows: np.ndarray) -> "OutcomeTable":
        """A table over a subset of samples (same plans), e.g. a fit/validation split of the calibration table."""
        rows = np.asarray(rows)
        meta = dict(self.meta)
        meta.pop("content_sha256", None)
        return dataclasses.replace(
            self,
            pred=self.pred[rows],
            loss=self.loss[rows],
            conf=self.conf[rows],
            features=self.features[rows],
            label=self.label[rows],
            sample_index=self.sample_index[rows],
            meta=meta,
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in _ARRAY_KEYS}

    def content_hash(self) -> str:
        return sha256_arrays(self.arrays())

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check shapes, dtypes and value ranges; raise :class:`TableFormatError` naming the problem."""
        for k in _ARRAY_KEYS:
            a = getattr(self, k)
            if not isinstance(a, np.ndarray):
                raise TableFormatError(f"array {k!r} must be a numpy array, got {type(a).__name__}")
            if a.dtype == object:
                raise TableFormatError(f"array {k!r} has dtype object")
        n, p = self.pred.shape if self.pred.ndim == 2 else (None, None)
        if n is None:
            raise TableFormatError(f"pred must be 2-D [N, P], got shape {self.pred.shape}")
        if n == 0 or p == 0:
            raise TableFormatError(f"empty table: pred has shape {self.pred.shape}")
        for k in ("loss", "conf"):
            if getattr(self, k).shape != (n, p):
                raise TableFormatError(f"{k} has shape {getattr(self, k).shape}, expected {(n, p)} like pred")
        if self.features.ndim != 2 or self.features.shape[0] != n:
            raise TableFormatError(f"features has shape {self.features.shape}, expected [{n}, F]")
        for k in ("label", "sample_index"):
            if getattr(self, k).shape != (n,):
                raise TableFormatError(f"{k} has shape {getattr(self, k).shape}, expected ({n},)")
        if self.plan_masks.ndim != 2 or self.plan_masks.shape[0] != p or self.plan_masks.dtype != bool:
            raise TableFormatError(
                f"plan_masks must be bool [P={p}, B], got {self.plan_masks.dtype} {self.plan_masks.shape}"
            )
        if self.plan_macs.shape != (p,):
            raise TableFormatError(f"plan_macs has shape {self.plan_macs.shape}, expected ({p},)")
        if not np.issubdtype(self.pred.dtype, np.integer) or not np.issubdtype(self.label.dtype, np.integer):
            raise TableFormatError("pred and label must be integer arrays")
        for k in ("loss", "conf", "features"):
            a = getattr(self, k)
            if not np.issubdtype(a.dtype, np.floating):
                raise TableFormatError(f"{k} must be floating point, got {a.dtype}")
            if not np.isfinite(a).all():
                bad = int((~np.isfinite(a)).sum())
                raise TableFormatError(f"{k} contains {bad} NaN/inf value(s)")
        if (self.conf < 0).any() or (self.conf > 1.0001).any():
            raise TableFormatError("conf must lie in [0, 1]")
        if (self.loss < 0).any():
            raise TableFormatError("loss (cross-entropy) must be non-negative")
        if len(np.unique(self.plan_masks, axis=0)) != p:
            raise TableFormatError("plan_masks has duplicate plans")
        _check_meta(self.meta)
        if not np.issubdtype(self.plan_macs.dtype, np.integer):
            raise TableFormatError(f"plan_macs must be an integer array (MACs per plan), got {self.plan_macs.dtype}")
        if (self.plan_macs <= 0).any() or (self.plan_macs > self.meta["full_macs"]).any():
            raise TableFormatError("plan_macs must lie in (0, full_macs]")
        if self.plan_latency is not None:
            lat = np.asarray(self.plan_latency)
            if lat.shape != (p,) or not np.isfinite(lat).all() or (lat <= 0).any():
                raise TableFormatError("plan_latency must be a positive finite [P] array")
        for k in ("pred", "label"):  # class indices: ≥ 0, and < num_classes when the metadata says how many
            a = getattr(self, k)
            if int(a.min()) < 0:
                raise TableFormatError(f"{k} contains a negative class index ({int(a.min())})")
        nc = self.meta.get("num_classes")
        if nc is not None and (int(self.pred.max()) >= nc or int(self.label.max()) >= nc):
            raise TableFormatError(f"pred/label contain a class ≥ num_classes={nc} "
                                   f"(largest: pred {int(self.pred.max())}, label {int(self.label.max())})")
        if not np.issubdtype(self.sample_index.dtype, np.integer):
            raise TableFormatError(f"sample_index must be an integer array, got {self.sample_index.dtype}")
        if int(self.sample_index.min()) < 0:
            raise TableFormatError(f"sample_index contains a negative index ({int(self.sample_index.min())})")
        if len(np.unique(self.sample_index)) != n:
            raise TableFormatError(f"sample_index has {n - len(np.unique(self.sample_index))} duplicate(s): each row "
                                   "must be a distinct sample of its split")

    def check_compatible(
        self,
        *,
        backbone: str | None = None,
        checkpoint_sha256: str | None = None,
        dataset: str | None = None,
        split: str | None = None,
        plan_masks: np.ndarray | None = None,
    ) -> None:
        """Raise :class:`TableMismatchError` if this table was built for something other than what is given."""
        for key, want in (("backbone", backbone), ("checkpoint_sha256", checkpoint_sha256), ("dataset", dataset),
                          ("split", split)):
            have = self.meta.get(key)
            if want is not None and have != want:
                raise TableMismatchError(
                    f"table was built for {key}={have!r}, but {want!r} was expected; rebuild the table "
                    f"(experiments/build_table.py) for this {key}"
                )
        if plan_masks is not None:
            plan_masks = np.asarray(plan_masks, dtype=bool)
            if plan_masks.shape != self.plan_masks.shape or not np.array_equal(plan_masks, self.plan_masks):
                raise TableMismatchError(
                    f"plan space differs: table has plan_masks {self.plan_masks.shape}, expected {plan_masks.shape}"
                )


#: Metadata fields and the types they must have when present (``full_macs`` is required).
_META_TYPES: dict[str, tuple[type, ...]] = {"backbone": (str,), "dataset": (str,), "split": (str,),
                                            "plan_space": (str,), "checkpoint_sha256": (str, type(None)),
                                            "content_sha256": (str,), "source": (str,), "source_path": (str,)}


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_meta(meta: Any) -> None:
    """Table metadata: a dict; ``full_macs`` an integer > 0; ``num_classes`` (if present) an integer ≥ 1;
    ``classes`` a list of ``num_classes`` strings; the descriptive fields strings. :class:`TableFormatError` names the
    field and its value."""
    if not isinstance(meta, dict):
        raise TableFormatError(f"metadata must be a dict, got {type(meta).__name__}")
    if "full_macs" not in meta:
        raise TableFormatError("metadata lacks 'full_macs'")
    if not _is_int(meta["full_macs"]) or meta["full_macs"] <= 0:
        raise TableFormatError(f"metadata field 'full_macs' must be an integer > 0 (MACs of the full model), got "
                               f"{meta['full_macs']!r}")
    nc = meta.get("num_classes")
    if nc is not None and (not _is_int(nc) or nc < 1):
        raise TableFormatError(f"metadata field 'num_classes' must be an integer ≥ 1, got {nc!r}")
    classes = meta.get("classes")
    if classes is not None and (not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)
                                or (nc is not None and len(classes) != nc)):
        raise TableFormatError(f"metadata field 'classes' must be a list of {nc if nc is not None else 'the'} class "
                               f"name strings, got {str(classes)[:80]!r}")
    for k, types in _META_TYPES.items():
        if k in meta and not isinstance(meta[k], types):
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise TableFormatError(f"metadata field {k!r} must be {want}, got {meta[k]!r}")


# ---------------------------------------------------------------------- save / load
def save_table(table: OutcomeTable, path: str | os.PathLike) -> Path:
    """Write ``table`` to ``path`` (``.npz``) atomically, stamping its content hash into the metadata."""
    path = Path(path)
    meta = dict(table.meta)
    meta["format_version"] = FORMAT_VERSION
    meta["content_sha256"] = table.content_hash()
    arrays = table.arrays()
    if table.plan_latency is not None:
        arrays["plan_latency"] = np.asarray(table.plan_latency, dtype=np.float64)
    arrays["meta_json"] = np.array(json.dumps(meta, sort_keys=True))
    with atomic_write(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def default_meta(**kw: Any) -> dict[str, Any]:
    """Metadata every builder should record: caller-supplied keys plus package versions and the host."""
    versions = {"numpy": np.__version__, "python": platform.python_version()}
    try:
        import torch

        versions["torch"] = torch.__version__
    except ImportError:  # pragma: no cover - torch is a hard dependency, but tables are readable without it
        pass
    versions["adainf"] = adainf_version()
    return {"format_version": FORMAT_VERSION, "versions": versions, **kw}


def load_table(
    path: str | os.PathLike,
    *,
    backbone: str | None = None,
    checkpoint_sha256: str | None = None,
    dataset: str | None = None,
    split: str | None = None,
    plan_masks: np.ndarray | None = None,
) -> OutcomeTable:
    """Load and validate an outcome table (project format, or the reference layout with its ``table_meta.json``).

    Keyword arguments, when given, must match the table's metadata or :class:`TableMismatchError` is raised.
    Never unpickles: a pickle-bearing file raises :class:`~adainf_env.errors.UnsafeFileError`.
    """
    path = Path(path)
    raw = safe_np_load(path)
    if "meta_json" in raw:
        table = _from_project_arrays(raw, path)
    elif _REFERENCE_KEYS <= set(raw):
        table = _from_reference_arrays(raw, path)
    else:
        raise TableFormatError(
            f"{path}: not an outcome table (arrays {sorted(raw)}; expected {list(_ARRAY_KEYS) + ['meta_json']} "
            f"or the reference layout {sorted(_REFERENCE_KEYS)})"
        )
    table.check_compatible(
        backbone=backbone, checkpoint_sha256=checkpoint_sha256, dataset=dataset, split=split, plan_masks=plan_masks
    )
    return table


def _from_project_arrays(raw: dict[str, np.ndarray], path: Path) -> OutcomeTable:
    missing = [k for k in _ARRAY_KEYS if k not in raw]
    if missing:
        raise TableFormatError(f"{path}: missing arrays {missing}")
    try:
        meta = json.loads(str(raw["meta_json"]))
    except ValueError:
        meta = None
    if not isinstance(meta, dict):  # an isinstance check, not an assert: asserts vanish under python -O
        raise TableFormatError(f"{path}: meta_json is not a JSON object")
    if meta.get("format_version") != FORMAT_VERSION:
        raise TableFormatError(f"{path}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    arrays = {k: raw[k] for k in _ARRAY_KEYS}
    want = meta.get("content_sha256")
    if want is not None and sha256_arrays(arrays) != want:
        raise TableFormatError(f"{path}: content hash mismatch — the file is corrupt or was edited")
    try:
        return OutcomeTable(**arrays, meta=meta, plan_latency=raw.get("plan_latency"))
    except TableFormatError as e:
        raise TableFormatError(f"{path}: {e}") from None


def _from_reference_arrays(raw: dict[str, np.ndarray], path: Path) -> OutcomeTable:
    """Adapt the reference layout to :class:`OutcomeTable`, labelled by its ``table_meta.json`` (see
    :mod:`adainf_env.tables.reference_meta`)."""
    # Shapes and kinds first, so that the conversions below cannot fail with a bare numpy error.
    for k in sorted(_REFERENCE_KEYS):
        if raw[k].dtype.kind not in "iuf" or (k != "label" and raw[k].ndim != 2):
            raise TableFormatError(f"{path}: reference array {k!r} must be numeric and 2-D (label 1-D), got "
                                   f"{raw[k].dtype} {raw[k].shape}")
    if raw["label"].ndim != 1 or any(raw[k].shape[0] != raw["label"].shape[0] for k in _REFERENCE_KEYS):
        raise TableFormatError(f"{path}: reference arrays disagree on the number of rows "
                               f"({ {k: raw[k].shape for k in sorted(_REFERENCE_KEYS)} })")
    ref, entry = reference_meta_for(path, sha256_arrays({k: raw[k] for k in _REFERENCE_KEYS}))
    n, num_plans = raw["pred"].shape
    if num_plans != ref.num_plans:
        raise TableFormatError(f"{path}: {num_plans} plan columns, but its metadata says {ref.num_blocks} blocks "
                               f"with plan space 'all' (2^{ref.num_blocks} = {ref.num_plans} plans)")
    if entry.rows is not None and entry.rows != n:
        raise TableFormatError(f"{path}: {n} rows, its metadata says {entry.rows}")
    masks = masks_from_codes(np.arange(num_plans), ref.num_blocks)
    always = ref.stem_macs + ref.fc_macs + int(ref.block_macs[:, 1].sum())  # stem, head and every shortcut run
    plan_macs = plan_cost(masks, ref.block_macs[:, 0], base=always)
    summary = _reference_summary(ref)
    meta = default_meta(
        backbone=ref.backbone,
        checkpoint_sha256=ref.checkpoint_sha256,
        dataset=ref.dataset,
        split=entry.split,
        num_classes=len(ref.classes),
        classes=list(ref.classes),
        full_macs=int(plan_macs.max()),
        plan_space=ref.plan_space,
        source="reference",
        source_path=str(path),
    )
    meta["versions"]["reference_torch"] = summary.get("torch")
    latency = None
    if isinstance(summary.get("latency_ms_b256"), dict):
        lat = np.array([summary["latency_ms_b256"].get(str(p), np.nan) for p in range(num_plans)], dtype=np.float64)
        if np.isfinite(lat).all() and (lat > 0).all():
            latency = lat / lat[num_plans - 1]
            meta["latency_profile"] = {"device": summary.get("device"), "batch_size": 256, "unit": "fraction"}
    try:
        table = OutcomeTable(
            pred=raw["pred"],
            loss=raw["loss"].astype(np.float32),
            conf=raw["conf"].astype(np.float32) / 255.0,
            features=raw["stem_feat"].astype(np.float32),
            label=raw["label"].astype(np.int64),
            sample_index=_reference_sample_index(ref, entry.sample_index_file, n),
            plan_masks=masks,
            plan_macs=plan_macs.astype(np.int64),
            meta=meta,
            plan_latency=latency,
        )
    except TableFormatError as e:
        raise TableFormatError(f"{path}: {e}") from None
    if entry.content_sha256 is not None:
        if table.content_hash() != entry.content_sha256:
            raise TableFormatError(f"{path}: the loaded table's content hash differs from its metadata's "
                                   "content_sha256 (sample index or MACs disagree with the ones it was published with)")
        table.meta["content_sha256"] = entry.content_sha256
    return table


def _reference_summary(ref: ReferenceMeta) -> dict[str, Any]:
    """``summary.json`` beside the metadata (optional: latency profile, build versions); its MACs must agree."""
    path = ref.directory / "summary.json"
    if not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        summary = None
    if not isinstance(summary, dict):
        raise TableFormatError(f"{path}: summary.json is not a JSON object")
    macs = summary.get("macs")
    if macs is not None:
        want = {"stem": ref.stem_macs, "fc": ref.fc_macs, "blocks": ref.block_macs.tolist()}
        if macs != want:
            raise TableFormatError(f"{path}: its MACs disagree with {ref.directory / REFERENCE_META_NAME}")
    return summary


def _reference_sample_index(ref: ReferenceMeta, name: str | None, n: int) -> np.ndarray:
    if name is None:
        return np.arange(n, dtype=np.int64)
    path = ref.directory / name
    try:
        idx = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise TableFormatError(f"{path}: unreadable sample index ({type(e).__name__}: {e})") from None
    if not isinstance(idx, np.ndarray) or idx.shape != (n,) or idx.dtype.kind not in "iu":
        raise TableFormatError(f"{path}: expected {n} integer sample indices, got "
                               f"{getattr(idx, 'dtype', type(idx).__name__)} {getattr(idx, 'shape', '')}")
    if (idx < 0).any() or len(np.unique(idx)) != n:
        raise TableFormatError(f"{path}: sample indices must be distinct and non-negative")
    return idx.astype(np.int64)


def find_split_tables(table_dir: str | os.PathLike) -> dict[str, Path]:
    """``{"calib": path, "test": path}`` for a directory holding ``table_calib.npz`` and ``table_test.npz``.

    The project's build script, the shipped reference tables (``adainf_env/reference_data``) and
    ``../shared/reference`` all use these names.
    """
    table_dir = Path(table_dir)
    out = {s: table_dir / f"table_{s}.npz" for s in ("calib", "test")}
    missing = [str(p) for p in out.values() if not p.is_file()]
    if missing:
        raise TableFormatError(
            f"{table_dir}: expected table_calib.npz and table_test.npz; missing {missing}. Build them with "
            f"experiments/build_table.py, or pass --table-dir reference for the shipped reference tables "
            f"({SHIPPED_REFERENCE_DIR})"
        )
    return out
