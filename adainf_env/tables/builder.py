"""Build outcome tables: run every plan of a plan space on every sample, sharing work between plans.

Prefix sharing (depth-first over blocks)
----------------------------------------
Two plans that agree on blocks 0..i-1 have the same hidden state entering block i. :func:`evaluate_plans` therefore
walks the *prefix tree* of the requested plan masks depth-first: the stem runs once per batch, and at block ``i``
each distinct prefix state branches into "skip" (``combine(shortcut(h), None)``) and "run"
(``combine(shortcut(h), residual(h))``), sharing the shortcut between both branches. Each prefix is computed once per
batch, so the cost is Σ over prefixes instead of P full forwards. For all 2^B plans of a B-block network whose blocks
cost about the same, the residual work is (2^B − 1) block evaluations instead of B·2^(B−1): ≈ B/2 times less
(4× for ResNet18's 8 blocks). Only the B+1 states on the current root-to-leaf path are alive at any time, so memory is
O(B · batch), not O(2^B · batch).

Large plan spaces
-----------------
For B = 15 (ResNet-32) or 12 (ViT-B/32) enumerating all 2^B plans is wasteful; :func:`structured_plan_subset` gives a
documented subset, and the DFS expands only prefixes that lead to a requested plan.

Resume
------
With ``resume_path`` the partial table (rows done so far) is written atomically every ``checkpoint_every`` batches
together with a fingerprint of everything that determines the numbers (weights, images, labels, plans, batch size,
dtypes). A killed build started again with the same arguments continues after the last checkpoint and produces the
identical table; a checkpoint with another fingerprint is refused (:class:`~adainf_env.errors.TableMismatchError`).

Several processes or machines build one table in shards with :mod:`adainf_env.tables.shards`, from the same pieces
(:func:`prepare_build_inputs`, :func:`evaluate_batch`, :func:`assemble_table`) and the same batches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from adainf_env.costs import MacsProfile, measure_macs, plan_macs
from adainf_env.errors import ConfigError, TableFormatError, TableMismatchError
from adainf_env.fileio import atomic_write, safe_np_load
from adainf_env.plans import all_plans
from adainf_env.tables.outcomes import OutcomeTable, default_meta

__all__ = [
    "build_table",
    "BuildInputs",
    "prepare_build_inputs",
    "empty_outcome_arrays",
    "eval_on_device",
    "evaluate_batch",
    "assemble_table",
    "build_settings",
    "build_fingerprint",
    "weights_sha256",
    "evaluate_plans",
    "evaluate_plans_per_plan",
    "structured_plan_subset",
    "MAX_ENUMERATED_BLOCKS",
]

# Above this many blocks build_table refuses to enumerate all 2^B plans implicitly (2^10 = 1024 plans);
# pass plan_masks (e.g. structured_plan_subset) instead.
MAX_ENUMERATED_BLOCKS = 10
_RESUME_VERSION = 1


# ---------------------------------------------------------------------------------------------- plan spaces
def structured_plan_subset(num_blocks: int, num_random: int = 200, seed: int = 0) -> np.ndarray:
    """A documented subset of the 2^B plans for plan spaces too large to enumerate. Returns bool [P, B].

    In this order, duplicates removed (first occurrence kept):

    1. all-on (full model) and all-off (stem + shortcuts + head only);
    2. prefixes: the first k blocks on, k = 1..B-1 (early-exit-like plans);
    3. suffixes: the last k blocks on, k = 1..B-1;
    4. leave-one-out: every block on except block i (B plans), and the single-block plans: only block i on;
    5. every-other: blocks 0, 2, 4, … on, and its complement 1, 3, 5, …;
    6. ``num_random`` seeded random masks: for each, a keep-rate r ~ U(0, 1) and then each block on with
       probability r, so the sampled plans cover the whole cost range rather than clustering at B/2 blocks.
       Random masks already present are redrawn (up to a bounded number of attempts; never more than 2^B plans).

    Same ``(num_blocks, num_random, seed)`` → the same plans in the same order.
    """
    if not isinstance(num_blocks, (int, np.integer)) or num_blocks < 1:
        raise ConfigError(f"num_blocks must be a positive integer, got {num_blocks!r}")
    if not isinstance(num_random, (int, np.integer)) or num_random < 0:
        raise ConfigError(f"num_random must be a non-negative integer, got {num_random!r}")
    b = int(num_blocks)
    eye = np.eye(b, dtype=bool)
    structured = [np.ones((1, b), bool), np.zeros((1, b), bool)]
    ar = np.arange(b)
    structured.append(np.stack([ar < k for k in range(1, b)]) if b > 1 else np.zeros((0, b), bool))
    structured.append(np.stack([ar >= b - k for k in range(1, b)]) if b > 1 else np.zeros((0, b), bool))
    structured += [~eye, eye, (ar % 2 == 0)[None], (ar % 2 == 1)[None]]
    seen: set[bytes] = set()
    out: list[np.ndarray] = []
    for m in np.concatenate(structured):
        key = np.packbits(m).tobytes()
        if key not in seen:
            seen.add(key)
            out.append(m)
    rng = np.random.default_rng(seed)
    target = min(len(out) + int(num_random), 1 << min(b, 62))
    attempts = 0
    while len(out) < target and attempts < 100 * (int(num_random) + 1):
        attempts += 1
        m = rng.random(b) < rng.random()
        key = np.packbits(m).tobytes()
        if key not in seen:
            seen.add(key)
            out.append(m)
    return np.stack(out).astype(bool)


def _check_masks(plan_masks: np.ndarray, num_blocks: int) -> np.ndarray:
    m = np.asarray(plan_masks)
    if m.ndim != 2 or m.shape[1] != num_blocks or m.shape[0] < 1:
        raise ConfigError(f"plan_masks must be [P ≥ 1, B={num_blocks}], got shape {m.shape}")
    if m.dtype != bool:
        if not np.isin(m, (0, 1)).all():
            raise ConfigError("plan_masks must be boolean (or 0/1)")
        m = m.astype(bool)
    if len(np.unique(m, axis=0)) != m.shape[0]:
        raise ConfigError("plan_masks contains duplicate plans")
    return np.ascontiguousarray(m)


# ---------------------------------------------------------------------------------------------- evaluation
def _record(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """logits [n, C] → (pred, CE of the true label in nats, max softmax probability), all [n]."""
    logp = torch.log_softmax(logits.float(), dim=1)
    loss = -logp.gather(1, labels.view(-1, 1)).squeeze(1)
    conf = logp.max(dim=1).values.exp()
    return logits.argmax(dim=1), loss, conf


@torch.inference_mode()
def evaluate_plans(
    backbone: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, plan_masks: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Outcome of every plan on one batch by depth-first prefix sharing.

    ``images`` uint8 (or [0, 1] float) [n, C, H, W] on the backbone's device, ``labels`` int64 [n],
    ``plan_masks`` bool [P, B] (unique rows). Returns ``pred [n, P]`` int64, ``loss [n, P]`` and ``conf [n, P]``
    float32, and the stem features ``[n, F]`` float32. The backbone must be in eval mode.
    """
    masks = np.asarray(plan_masks, dtype=bool)
    num_blocks = masks.shape[1]
    blocks = list(backbone.blocks)
    n, p = images.shape[0], masks.shape[0]
    pred = torch.empty((n, p), dtype=torch.int64, device=images.device)
    loss = torch.empty((n, p), dtype=torch.float32, device=images.device)
    conf = torch.empty((n, p), dtype=torch.float32, device=images.device)
    h0 = backbone.stem(backbone.prepare(images))
    feats = backbone.features(h0).float()

    def dfs(h: torch.Tensor, depth: int, plans: np.ndarray) -> None:
        if depth == num_blocks:
            # Unique masks ⇒ exactly one plan reaches each leaf.
            pr, lo, co = _record(backbone.head(h), labels)
            j = int(plans[0])
            pred[:, j], loss[:, j], conf[:, j] = pr, lo, co
            return
        blk = blocks[depth]
        run = masks[plans, depth]
        s = blk.shortcut(h)
        if not run.all():
            dfs(blk.combine(s, None), depth + 1, plans[~run])
        if run.any():
            dfs(blk.combine(s, blk.residual(h)), depth + 1, plans[run])

    dfs(h0, 0, np.arange(p))
    return pred, loss, conf, feats


@torch.inference_mode()
def evaluate_plans_per_plan(
    backbone: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, plan_masks: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same outputs as :func:`evaluate_plans`, computed the naive way: one full ``backbone(x, mask)`` per plan.

    The baseline of ``benchmarks/bench_table.py`` and the reference of the equality tests.
    """
    masks = np.asarray(plan_masks, dtype=bool)
    outs = [_record(backbone(images, torch.from_numpy(m.copy())), labels) for m in masks]
    feats = backbone.features(backbone.stem(backbone.prepare(images))).float()
    return (torch.stack([o[0] for o in outs], 1), torch.stack([o[1] for o in outs], 1),
            torch.stack([o[2] for o in outs], 1), feats)


# ---------------------------------------------------------------------------------------------- build inputs
@dataclasses.dataclass(frozen=True, eq=False)
class BuildInputs:
    """Validated inputs of a table build: rows, plans and the settings that decide every number of the table."""

    images: np.ndarray  # uint8 [N, C, H, W]
    labels: np.ndarray  # int [N]
    sample_index: np.ndarray  # int [N]
    masks: np.ndarray  # bool [P, B], unique rows
    num_classes: int
    batch_size: int
    float_dtype: str  # "float32" | "float16" for loss and conf
    channels_last: bool

    @property
    def num_rows(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_batches(self) -> int:
        return -(-self.num_rows // self.batch_size)

    @property
    def pred_dtype(self) -> np.dtype:
        c = self.num_classes
        return np.dtype(np.uint8 if c <= 256 else (np.uint16 if c <= 65536 else np.int32))

    def batch_rows(self, batch: int) -> slice:
        """Rows of batch ``batch``: batches are fixed by ``batch_size`` alone, whoever computes them."""
        return slice(batch * self.batch_size, min(self.num_rows, (batch + 1) * self.batch_size))


def prepare_build_inputs(
    backbone: torch.nn.Module,
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    *,
    sample_index: np.ndarray,
    plan_masks: np.ndarray | None,
    batch_size: int,
    float_dtype: str,
    channels_last: bool,
    meta: Mapping[str, Any] | None,
) -> BuildInputs:
    """Check every argument of a build (see :func:`build_table`) and return them normalised."""
    if not hasattr(backbone, "blocks") or not hasattr(backbone, "stem"):
        raise ConfigError(f"build_table needs a SkippableBackbone, got {type(backbone).__name__}")
    imgs = images.cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if imgs.ndim != 4 or imgs.shape[0] == 0:
        raise ConfigError(f"images must be a non-empty [N, C, H, W] array, got shape {imgs.shape}")
    if imgs.dtype != np.uint8:
        raise ConfigError(f"images must be uint8 (0..255), got {imgs.dtype}")
    n = imgs.shape[0]
    labels = np.asarray(labels)
    sample_index = np.asarray(sample_index)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(f"labels must be integer [N={n}], got {labels.dtype} {labels.shape}")
    if sample_index.shape != (n,) or not np.issubdtype(sample_index.dtype, np.integer):
        raise ConfigError(f"sample_index must be integer [N={n}], got {sample_index.dtype} {sample_index.shape}")
    num_classes = int(backbone.num_classes)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ConfigError(f"labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    num_blocks = int(backbone.num_blocks)
    if plan_masks is None:
        if num_blocks > MAX_ENUMERATED_BLOCKS:
            raise ConfigError(
                f"{backbone.name} has {num_blocks} blocks: 2^{num_blocks} plans are too many to enumerate; pass "
                "plan_masks=structured_plan_subset(num_blocks, num_random, seed)"
            )
        plan_masks = all_plans(num_blocks)
    masks = _check_masks(plan_masks, num_blocks)
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if float_dtype not in ("float32", "float16"):
        raise ConfigError(f"float_dtype must be 'float32' or 'float16', got {float_dtype!r}")
    if meta is not None and meta.get("backbone", backbone.name) != backbone.name:
        raise ConfigError(f"meta says backbone={meta['backbone']!r} but the model is {backbone.name!r}")
    return BuildInputs(images=imgs, labels=labels, sample_index=sample_index, masks=masks, num_classes=num_classes,
                       batch_size=int(batch_size), float_dtype=float_dtype, channels_last=bool(channels_last))


def empty_outcome_arrays(inputs: BuildInputs, num_rows: int, feature_dim: int) -> dict[str, np.ndarray]:
    """Zeroed ``pred``/``loss``/``conf``/``features`` for ``num_rows`` rows, in the table's dtypes."""
    p = inputs.masks.shape[0]
    return {
        "pred": np.zeros((num_rows, p), dtype=inputs.pred_dtype),
        "loss": np.zeros((num_rows, p), dtype=inputs.float_dtype),
        "conf": np.zeros((num_rows, p), dtype=inputs.float_dtype),
        "features": np.zeros((num_rows, feature_dim), dtype=np.float32),
    }


@contextlib.contextmanager
def eval_on_device(backbone: torch.nn.Module, device: str | torch.device) -> Iterator[torch.device]:
    """Put ``backbone`` in eval mode on ``device`` for a build; its train/eval mode is restored afterwards."""
    device = torch.device(device)
    was_training = backbone.training
    backbone.eval().to(device)
    try:
        yield device
    finally:
        backbone.train(was_training)


def evaluate_batch(backbone: torch.nn.Module, inputs: BuildInputs, batch: int,
                   device: torch.device) -> dict[str, np.ndarray]:
    """Outcome arrays of batch ``batch`` (rows :meth:`BuildInputs.batch_rows`), in the table's dtypes."""
    rows = inputs.batch_rows(batch)
    xb = torch.from_numpy(inputs.images[rows]).to(device)
    if inputs.channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    yb = torch.from_numpy(inputs.labels[rows].astype(np.int64)).to(device)
    pr, lo, co, fe = evaluate_plans(backbone, xb, yb, inputs.masks)
    return {
        "pred": pr.cpu().numpy().astype(inputs.pred_dtype),
        "loss": lo.cpu().numpy().astype(inputs.float_dtype),
        "conf": co.cpu().numpy().astype(inputs.float_dtype),
        "features": fe.cpu().numpy(),
    }


def assemble_table(backbone: torch.nn.Module, inputs: BuildInputs, arrays: Mapping[str, np.ndarray],
                   costs: MacsProfile, meta: Mapping[str, Any] | None) -> OutcomeTable:
    """The validated :class:`OutcomeTable` from the computed outcome arrays of all rows and the run's metadata.

    ``meta`` keys override the filled-in ones (``backbone``, ``num_classes``, ``full_macs``, ``plan_space``, ``macs``,
    ``batch_size``); ``plan_space`` defaults to "all" for the complete 2^B plan space, else "subset".
    """
    meta = dict(meta or {})
    masks = inputs.masks
    complete = masks.shape[0] == (1 << masks.shape[1])
    plan_space = meta.pop("plan_space", "all" if complete else "subset")
    full_meta = default_meta(
        **{
            "backbone": backbone.name,
            "num_classes": inputs.num_classes,
            "full_macs": costs.full,
            "plan_space": plan_space,
            "macs": costs.to_dict(),
            "batch_size": inputs.batch_size,
            **meta,
        }
    )
    conf = arrays["conf"]
    # Clamp ranges a float16 rounding could push outside the loader's checks.
    if inputs.float_dtype == "float16":
        conf = np.clip(conf, 0.0, 1.0)
    return OutcomeTable(
        pred=arrays["pred"],
        loss=np.maximum(arrays["loss"], 0, dtype=arrays["loss"].dtype),
        conf=conf,
        features=arrays["features"],
        label=inputs.labels.astype(np.int64),
        sample_index=inputs.sample_index.astype(np.int64),
        plan_masks=masks,
        plan_macs=plan_macs(costs, masks),
        meta=full_meta,
    )


def build_settings(backbone: torch.nn.Module, inputs: BuildInputs, device: torch.device) -> dict[str, Any]:
    """Settings that change a table's numbers besides weights, rows and plans (part of every fingerprint)."""
    return {"batch_size": inputs.batch_size, "float_dtype": inputs.float_dtype, "channels_last": inputs.channels_last,
            "backbone": backbone.name, "device_type": device.type, "torch": torch.__version__}


def weights_sha256(backbone: torch.nn.Module) -> str:
    """sha256 over the backbone's state dict (names and values, as loaded; bfloat16 hashed as float32)."""
    h = hashlib.sha256()
    for name, t in sorted(backbone.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes() if t.dtype != torch.bfloat16
                 else t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def build_fingerprint(backbone: torch.nn.Module, inputs: BuildInputs, settings: Mapping[str, Any]) -> str:
    """sha256 over everything that determines the table's numbers: settings, weights, images, labels, rows, plans."""
    h = hashlib.sha256()
    h.update(json.dumps(dict(settings), sort_keys=True, default=str).encode())
    h.update(weights_sha256(backbone).encode())
    for a in (inputs.images, inputs.labels, inputs.sample_index, inputs.masks):
        a = np.ascontiguousarray(a)
        h.update(repr((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- resume state
def _save_resume(path: Path, fingerprint: str, done: int, arrays: Mapping[str, np.ndarray]) -> None:
    with atomic_write(path, "wb") as fh:
        np.savez(fh, fingerprint=np.array(fingerprint), done=np.array(done, dtype=np.int64),
                 version=np.array(_RESUME_VERSION, dtype=np.int64), **arrays)


def _load_resume(path: Path, fingerprint: str, arrays: Mapping[str, np.ndarray]) -> int:
    """Copy a compatible checkpoint's rows into ``arrays``; return the number of rows already done."""
    raw = safe_np_load(path)
    try:
        version, fp, done = int(raw["version"]), str(raw["fingerprint"]), int(raw["done"])
    except (KeyError, TypeError, ValueError) as e:
        raise TableFormatError(f"{path}: not a table-build checkpoint ({e})") from None
    if version != _RESUME_VERSION:
        raise TableFormatError(f"{path}: checkpoint version {version}, expected {_RESUME_VERSION}")
    if fp != fingerprint:
        raise TableMismatchError(
            f"{path}: resume checkpoint was made for other weights, data, plans or settings; delete it or pass "
            "another resume path"
        )
    n = next(iter(arrays.values())).shape[0]
    if not 0 <= done <= n:
        raise TableFormatError(f"{path}: checkpoint claims {done} rows done of {n}")
    for k, dst in arrays.items():
        src = raw.get(k)
        if src is None or src.shape != dst.shape or src.dtype != dst.dtype:
            raise TableFormatError(f"{path}: checkpoint array {k!r} missing or of the wrong shape/dtype")
        dst[:done] = src[:done]
    return done


# ---------------------------------------------------------------------------------------------- public builder
def build_table(
    backbone: torch.nn.Module,
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    *,
    sample_index: np.ndarray,
    plan_masks: np.ndarray | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    meta: Mapping[str, Any] | None = None,
    progress: bool = True,
    resume_path: str | os.PathLike | None = None,
    checkpoint_every: int = 4,
    float_dtype: str = "float32",
    channels_last: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> OutcomeTable:
    """Evaluate every plan on every sample (prefix-sharing DFS) and return an :class:`OutcomeTable`.

    Args:
        backbone: a :class:`~adainf_env.backbones.base.SkippableBackbone`; put in eval mode and moved to
            ``device`` (its train/eval mode is restored afterwards).
        images: uint8 [N, C, H, W] (the backbone prepares / normalises them itself).
        labels: [N] true classes in [0, num_classes).
        sample_index: [N] index of each sample in its split's source ordering.
        plan_masks: bool [P, B]; default all 2^B plans in plan-code order (only for B ≤ ``MAX_ENUMERATED_BLOCKS``;
            use :func:`structured_plan_subset` for larger B).
        batch_size: images per DFS pass.
        meta: metadata stored in the table (``checkpoint_sha256``, ``dataset``, ``split``, ``plan_space`` …);
            ``backbone``, ``num_classes``, ``full_macs`` and the measured MACs are filled in.
        resume_path: checkpoint file for resuming a killed build (see module docstring); written every
            ``checkpoint_every`` batches. The caller deletes it once the table is saved.
        float_dtype: "float32" or "float16" for ``loss`` and ``conf``.
        channels_last: feed 4-D inputs in channels-last memory format (faster oneDNN convolutions on CPU).
        on_batch: called as ``on_batch(batches_done, num_batches)`` after each batch (progress hooks, tests).
    """
    inputs = prepare_build_inputs(backbone, images, labels, sample_index=sample_index, plan_masks=plan_masks,
                                  batch_size=batch_size, float_dtype=float_dtype, channels_last=channels_last,
                                  meta=meta)
    if not isinstance(checkpoint_every, (int, np.integer)) or checkpoint_every < 1:
        raise ConfigError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}")
    with eval_on_device(backbone, device) as dev:
        costs = measure_macs(backbone)
        arrays = empty_outcome_arrays(inputs, inputs.num_rows, int(backbone.feature_dim))
        fingerprint = ""
        start_batch = 0
        if resume_path is not None:
            resume_path = Path(resume_path)
            fingerprint = build_fingerprint(backbone, inputs, build_settings(backbone, inputs, dev))
            if resume_path.exists():
                start_batch = -(-_load_resume(resume_path, fingerprint, arrays) // inputs.batch_size)
        num_batches = inputs.num_batches
        bar = tqdm(total=num_batches, initial=start_batch, disable=not progress, unit="batch",
                   desc=f"table {backbone.name} ({inputs.masks.shape[0]} plans)")
        for bi in range(start_batch, num_batches):
            rows = inputs.batch_rows(bi)
            for k, v in evaluate_batch(backbone, inputs, bi, dev).items():
                arrays[k][rows] = v
            if resume_path is not None and ((bi + 1) % checkpoint_every == 0 or bi + 1 == num_batches):
                _save_resume(resume_path, fingerprint, rows.stop, arrays)
            bar.update(1)
            if on_batch is not None:
                on_batch(bi + 1, num_batches)
        bar.close()
    return assemble_table(backbone, inputs, arrays, costs, meta)
