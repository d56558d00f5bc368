"""Measured latency cost model: per-block wall-clock profiles, plan latencies, and a check of the additive model.

MACs (:mod:`adainf_env.costs`) are a proxy; what a deployment pays is time, and time is not proportional to MACs
(memory-bound skip paths, kernel-launch overhead at batch 1, cache effects). So we *measure*, on the current
device, at each batch size used:

* ``stem_ms``  — input normalisation + stem (always runs);
* ``block_ms[b]``  — block b executed (residual + shortcut + combine);
* ``skip_ms[b]``  — block b skipped (``block.skip``: shortcut + combine; identity-shortcut blocks are nearly free);
* ``residual_ms[b]``, ``shortcut_ms[b]`` — the two branches alone (for inspection);
* ``head_ms`` — pooling + classifier.

Additive model: ``plan_ms(p) = stem_ms + head_ms + Σ_b (block_ms[b] if p runs b else skip_ms[b])`` per batch of
that size. :func:`plan_latency` returns it as a fraction of the full model's time — the project's single cost unit —
so environments and schedulers can budget in measured time (``OutcomeTable.plan_latency`` via
:func:`attach_latency`); :func:`plan_latency_ms` gives milliseconds. :func:`validate_latency_model` times real
end-to-end plan forwards and reports how far the additive prediction is from them.

Timings are medians over ``repeats`` passes after ``warmup`` passes; on CUDA every call is bracketed by
``torch.cuda.synchronize()`` so the wall clock measures the kernels, not their launch.
Profiles are JSON (no pickles), written atomically, and carry the device name, thread count and torch version.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from adainf_env.errors import ConfigError, TableMismatchError
from adainf_env.fileio import atomic_write_json
from adainf_env.plans import plan_cost

__all__ = [
    "LatencyProfile",
    "LatencyValidation",
    "profile_latency",
    "plan_latency",
    "plan_latency_ms",
    "attach_latency",
    "validate_latency_model",
    "save_profile",
    "load_profile",
    "device_name",
    "time_callable",
]

PROFILE_FORMAT = 1
_PART_KEYS = ("block_ms", "skip_ms", "residual_ms", "shortcut_ms")


# ---------------------------------------------------------------------- timing
def device_name(device: torch.device | str = "cpu") -> str:
    """Human-readable device name: the GPU model, or the CPU model with the torch thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cpu: {model} ({torch.get_num_threads()} torch threads, {os.cpu_count()} cores)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock(clock: str, device: torch.device) -> Callable[[], float]:
    if clock == "wall":
        return time.perf_counter
    if clock == "process":
        if device.type != "cpu":
            raise ConfigError("clock='process' (CPU time of this process) only measures CPU work; use 'wall' on "
                              f"{device.type}")
        return time.process_time
    raise ConfigError(f"clock must be 'wall' or 'process', got {clock!r}")


def time_callable(fn: Callable[[], Any], *, repeats: int, warmup: int = 1,
                  device: torch.device | str = "cpu", clock: str = "wall") -> np.ndarray:
    """Milliseconds of ``repeats`` calls of ``fn`` (after ``warmup`` untimed calls), one per call.

    ``clock="wall"`` is elapsed time (what a request waits); ``clock="process"`` is the CPU time of this process,
    all threads summed — on a CPU shared with other jobs it excludes time spent waiting for a core, so profiles
    taken under changing load stay comparable (divide by the thread count for a dedicated-machine wall estimate).
    """
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"repeats must be ≥ 1 and warmup ≥ 0, got repeats={repeats}, warmup={warmup}")
    device = torch.device(device)
    now = _clock(clock, device)
    for _ in range(warmup):
        fn()
    _sync(device)
    out = np.empty(repeats, dtype=np.float64)
    for r in range(repeats):
        _sync(device)
        t0 = now()
        fn()
        _sync(device)
        out[r] = (now() - t0) * 1e3
    return out


# ---------------------------------------------------------------------- the profile
@dataclasses.dataclass(frozen=True)
class LatencyProfile:
    """Measured per-part latencies (milliseconds per *batch*) of a backbone at several batch sizes.

    Arrays are indexed ``[s]`` / ``[s, b]`` with ``s`` the position of the batch size in ``batch_sizes``.
    """

    backbone: str
    num_blocks: int
    device: str
    batch_sizes: tuple[int, ...]
    stem_ms: np.ndarray  # [S]
    head_ms: np.ndarray  # [S]
    block_ms: np.ndarray  # [S, B] block executed
    skip_ms: np.ndarray  # [S, B] block skipped
    residual_ms: np.ndarray  # [S, B] residual branch alone
    shortcut_ms: np.ndarray  # [S, B] shortcut alone
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        s, b = len(self.batch_sizes), int(self.num_blocks)
        if s == 0 or len(set(self.batch_sizes)) != s or any(int(x) < 1 for x in self.batch_sizes):
            raise ConfigError(f"batch_sizes must be distinct positive ints, got {self.batch_sizes}")
        if b < 1:
            raise ConfigError(f"num_blocks must be ≥ 1, got {b}")
        for k, shape in (("stem_ms", (s,)), ("head_ms", (s,))) + tuple((k, (s, b)) for k in _PART_KEYS):
            a = np.asarray(getattr(self, k), dtype=np.float64)
            if a.shape != shape:
                raise ConfigError(f"latency profile {k} has shape {a.shape}, expected {shape}")
            if not np.isfinite(a).all() or (a < 0).any():
                raise ConfigError(f"latency profile {k} must be finite and ≥ 0 ms")
            object.__setattr__(self, k, a)
        object.__setattr__(self, "batch_sizes", tuple(int(x) for x in self.batch_sizes))

    def index(self, batch_size: int) -> int:
        if batch_size not in self.batch_sizes:
            raise ConfigError(f"latency profile has no measurements at batch size {batch_size}; profiled batch "
                              f"sizes are {list(self.batch_sizes)} (run profile_latency with batch_sizes=...)")
        return self.batch_sizes.index(batch_size)

    def full_ms(self, batch_size: int) -> float:
        """Additive-model time (ms per batch) of the full model at ``batch_size``."""
        s = self.index(batch_size)
        return float(self.stem_ms[s] + self.head_ms[s] + self.block_ms[s].sum())

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": PROFILE_FORMAT, "backbone": self.backbone, "num_blocks": self.num_blocks,
                             "device": self.device, "batch_sizes": list(self.batch_sizes), "meta": self.meta}
        for k in ("stem_ms", "head_ms") + _PART_KEYS:
            d[k] = np.asarray(getattr(self, k)).tolist()
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "LatencyProfile":
        if not isinstance(d, dict):
            raise ConfigError(f"latency profile must be a JSON object, got {type(d).__name__}")
        if d.get("format") != PROFILE_FORMAT:
            raise ConfigError(f"latency profile format {d.get('format')!r}, expected {PROFILE_FORMAT}")
        missing = [k for k in ("backbone", "num_blocks", "device", "batch_sizes", "stem_ms", "head_ms") + _PART_KEYS
                   if k not in d]
        if missing:
            raise ConfigError(f"latency profile lacks {missing}")
        try:
            arrays = {k: np.asarray(d[k], dtype=np.float64) for k in ("stem_ms", "head_ms") + _PART_KEYS}
            batch_sizes = tuple(int(x) for x in d["batch_sizes"])
            num_blocks = int(d["num_blocks"])
        except (TypeError, ValueError, OverflowError) as e:
            raise ConfigError(f"latency profile has non-numeric entries ({e})") from None
        meta = d.get("meta", {})
        if not isinstance(meta, dict):
            raise ConfigError("latency profile 'meta' must be an object")
        return cls(backbone=str(d["backbone"]), num_blocks=num_blocks, device=str(d["device"]),
                   batch_sizes=batch_sizes, meta=meta, **arrays)


def _backbone_name(backbone: torch.nn.Module) -> str:
    return str(getattr(backbone, "name", type(backbone).__name__))


@torch.inference_mode()
def profile_latency(
    backbone: torch.nn.Module,
    *,
    batch_sizes: Sequence[int] = (1, 256),
    device: torch.device | str | None = None,
    repeats: int = 10,
    warmup: int = 2,
    seed: int = 0,
    clock: str = "wall",
    progress: bool = True,
) -> LatencyProfile:
    """Measure a :class:`LatencyProfile` of ``backbone`` (moved to ``device`` if given; eval mode).

    Each block is timed in context (one network pass per repeat, see the comment below) on the hidden state the full
    model feeds it, from a seeded random [0, 1] image batch. Cost: about ``2 × (repeats + warmup)`` full-model
    forwards per batch size. ``clock``: see :func:`time_callable`.
    """
    from tqdm.auto import tqdm

    if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
        raise ConfigError(f"batch_sizes must be positive ints, got {list(batch_sizes)}")
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"repeats must be ≥ 1 and warmup ≥ 0, got repeats={repeats}, warmup={warmup}")
    if device is not None:
        backbone.to(device)
    backbone.eval()
    dev = next((p.device for p in backbone.parameters()), torch.device("cpu"))
    nb = len(backbone.blocks)
    gen = torch.Generator().manual_seed(seed)
    rows: dict[str, list[Any]] = {k: [] for k in ("stem_ms", "head_ms") + _PART_KEYS}

    now = _clock(clock, dev)

    def timed(fn: Callable[[torch.Tensor], torch.Tensor], arg: torch.Tensor) -> tuple[float, torch.Tensor]:
        _sync(dev)
        t0 = now()
        out = fn(arg)
        _sync(dev)
        return (now() - t0) * 1e3, out

    # In-context timing: each repeat is one pass through the network in execution order, timing every part on the
    # hidden state the full model feeds it. Timing a block many times in a row instead keeps its weights hot in
    # the CPU caches and under-predicts a real forward, where each block's weights arrive cold (most at batch 1,
    # where weights dominate the memory traffic). The executed block is timed first (cold, as in a forward), then
    # its skip path, then the two branches (for inspection only).
    with tqdm(total=len(batch_sizes) * (warmup + repeats), desc=f"latency profile {_backbone_name(backbone)}",
              disable=not progress) as bar:
        for bs in batch_sizes:
            x = torch.rand((int(bs),) + tuple(backbone.input_size), generator=gen).to(dev)
            t = {k: np.empty((repeats, nb)) for k in _PART_KEYS}
            t_stem, t_head = np.empty(repeats), np.empty(repeats)
            for r in range(-warmup, repeats):
                ms_stem, h = timed(lambda a: backbone.stem(backbone.prepare(a)), x)
                row = {k: np.empty(nb) for k in _PART_KEYS}
                for b, blk in enumerate(backbone.blocks):
                    row["block_ms"][b], h_next = timed(blk, h)
                    row["skip_ms"][b], _ = timed(blk.skip, h)
                    row["residual_ms"][b], _ = timed(blk.residual, h)
                    row["shortcut_ms"][b], _ = timed(blk.shortcut, h)
                    h = h_next
                ms_head, _ = timed(backbone.head, h)
                bar.update()
                if r >= 0:
                    t_stem[r], t_head[r] = ms_stem, ms_head
                    for k in _PART_KEYS:
                        t[k][r] = row[k]
            rows["stem_ms"].append(float(np.median(t_stem)))
            rows["head_ms"].append(float(np.median(t_head)))
            for k in _PART_KEYS:
                rows[k].append(np.median(t[k], axis=0))
    meta = {"threads": torch.get_num_threads(), "torch": torch.__version__, "repeats": repeats, "warmup": warmup,
            "statistic": "median", "clock": clock, "created_unix": time.time()}
    return LatencyProfile(backbone=_backbone_name(backbone), num_blocks=nb, device=device_name(dev),
                          batch_sizes=tuple(int(b) for b in batch_sizes), meta=meta,
                          **{k: np.asarray(v, dtype=np.float64) for k, v in rows.items()})


# ---------------------------------------------------------------------- plan costs
def _masks(profile: LatencyProfile, plan_masks: Any) -> np.ndarray:
    m = np.asarray(plan_masks)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.shape[1] != profile.num_blocks:
        raise ConfigError(f"plan_masks must be [P, B={profile.num_blocks}] for this latency profile, got shape "
                          f"{np.asarray(plan_masks).shape}")
    if m.dtype != bool:
        if not np.isin(m, (0, 1)).all():
            raise ConfigError("plan_masks must be boolean (or 0/1)")
        m = m.astype(bool)
    return m


def plan_latency_ms(profile: LatencyProfile, plan_masks: Any, batch_size: int) -> np.ndarray:
    """[P] predicted milliseconds per batch of ``batch_size`` for each plan (additive model)."""
    s = profile.index(batch_size)
    m = _masks(profile, plan_masks)
    base = profile.stem_ms[s] + profile.head_ms[s] + profile.skip_ms[s].sum()
    return plan_cost(m, profile.block_ms[s] - profile.skip_ms[s], base=base)


def plan_latency(profile: LatencyProfile, plan_masks: Any, batch_size: int) -> np.ndarray:
    """[P] predicted latency of each plan as a fraction of the full model's (the env's / schedulers' cost unit)."""
    ms = plan_latency_ms(profile, plan_masks, batch_size)
    frac = ms / profile.full_ms(batch_size)
    # A skipped block can time slightly slower than its executed self by noise; costs stay in (0, 1].
    return np.clip(frac, 1e-6, 1.0)


def attach_latency(table: Any, profile: LatencyProfile, batch_size: int) -> Any:
    """Copy of an :class:`~adainf_env.tables.outcomes.OutcomeTable` whose ``plan_latency`` comes from ``profile``."""
    if profile.num_blocks != table.num_blocks:
        raise TableMismatchError(f"latency profile has {profile.num_blocks} blocks, table has {table.num_blocks}")
    want = table.meta.get("backbone")
    if want is not None and want != profile.backbone:
        raise TableMismatchError(f"latency profile was measured on backbone {profile.backbone!r}, table is for "
                                 f"{want!r}")
    meta = dict(table.meta)
    meta["latency_profile"] = {"device": profile.device, "batch_size": int(batch_size), "unit": "fraction",
                               "full_ms": profile.full_ms(batch_size), "backbone": profile.backbone}
    return dataclasses.replace(table, plan_latency=plan_latency(profile, table.plan_masks, batch_size), meta=meta)


# ---------------------------------------------------------------------- validation against end-to-end times
@dataclasses.dataclass(frozen=True)
class LatencyValidation:
    """Additive-model predictions vs measured end-to-end ``backbone.forward(x, mask)`` times (ms per batch)."""

    batch_size: int
    plan_masks: np.ndarray  # [K, B]
    predicted_ms: np.ndarray  # [K]
    measured_ms: np.ndarray  # [K] median
    rel_err: np.ndarray  # [K] |predicted − measured| / measured
    mean_rel_err: float
    max_rel_err: float
    clock: str = "wall"

    def to_dict(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "plans": self.plan_masks.astype(int).tolist(),
                "predicted_ms": self.predicted_ms.tolist(), "measured_ms": self.measured_ms.tolist(),
                "rel_err": self.rel_err.tolist(), "mean_rel_err": self.mean_rel_err,
                "max_rel_err": self.max_rel_err, "clock": self.clock}


@torch.inference_mode()
def validate_latency_model(
    backbone: torch.nn.Module,
    profile: LatencyProfile,
    plan_masks: Any,
    *,
    batch_size: int,
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
    clock: str | None = None,
    progress: bool = True,
) -> LatencyValidation:
    """Time ``backbone.forward(x, mask=m)`` for each plan mask and compare with :func:`plan_latency_ms`.

    ``clock`` defaults to the one the profile was measured with.
    """
    from tqdm.auto import tqdm

    masks = _masks(profile, plan_masks)
    if _backbone_name(backbone) != profile.backbone or len(backbone.blocks) != profile.num_blocks:
        raise ConfigError(f"profile is for {profile.backbone!r} ({profile.num_blocks} blocks), backbone is "
                          f"{_backbone_name(backbone)!r} ({len(backbone.blocks)} blocks)")
    predicted = plan_latency_ms(profile, masks, batch_size)
    clock = str(profile.meta.get("clock", "wall")) if clock is None else clock
    dev = next((p.device for p in backbone.parameters()), torch.device("cpu"))
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((int(batch_size),) + tuple(backbone.input_size), generator=gen).to(dev)
    mts = [torch.from_numpy(m) for m in masks]
    # Round-robin over plans (one timed call of each plan per round, median over rounds): on a shared machine the
    # load drifts over minutes, and timing plan after plan would charge that drift to whichever plan came last.
    for mt in mts:
        for _ in range(warmup):
            backbone(x, mask=mt)
    times = np.empty((repeats, len(mts)))
    for r in tqdm(range(repeats), desc=f"validate latency model b{batch_size}", disable=not progress):
        for k, mt in enumerate(mts):
            times[r, k] = time_callable(lambda: backbone(x, mask=mt), repeats=1, warmup=0, device=dev,
                                        clock=clock)[0]
    measured = np.median(times, axis=0)
    rel = np.abs(predicted - measured) / measured
    return LatencyValidation(batch_size=int(batch_size), plan_masks=masks, predicted_ms=predicted,
                             measured_ms=measured, rel_err=rel, mean_rel_err=float(rel.mean()),
                             max_rel_err=float(rel.max()), clock=clock)


# ---------------------------------------------------------------------- files
def save_profile(profile: LatencyProfile, path: str | os.PathLike) -> Path:
    """Write ``profile`` as JSON, atomically (temp file + rename)."""
    path = Path(path)
    atomic_write_json(path, profile.to_dict())
    return path


def load_profile(path: str | os.PathLike, *, backbone: str | torch.nn.Module | None = None,
                 num_blocks: int | None = None) -> LatencyProfile:
    """Read a profile written by :func:`save_profile`; refuse it if it was measured for another backbone.

    ``backbone`` may be a name or a backbone module (then its name and block count are both checked).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such latency profile file")
    try:
        d = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{path}: not a JSON latency profile ({e})") from None
    try:
        prof = LatencyProfile.from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    if isinstance(backbone, torch.nn.Module):
        num_blocks = len(backbone.blocks) if num_blocks is None else num_blocks
        backbone = _backbone_name(backbone)
    if backbone is not None and prof.backbone != backbone:
        raise TableMismatchError(f"{path}: latency profile was measured on {prof.backbone!r}, not {backbone!r}")
    if num_blocks is not None and prof.num_blocks != int(num_blocks):
        raise TableMismatchError(f"{path}: latency profile has {prof.num_blocks} blocks, backbone has {num_blocks}")
    return prof
