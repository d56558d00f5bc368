"""Batched adaptive inference: run a batch whose samples follow *different* plans, and save real time doing it.

Adaptive-inference papers (BlockDrop, Wu et al. 2018; SkipNet, Wang et al. 2018; AdaLLaVA) report FLOPs or
batch-size-1 latency, because multiplying a skipped block's output by a 0/1 gate inside a batch still computes it.
This engine turns skipped MACs into wall-clock time:

1. the stem runs on the whole batch and its pooled output is handed to a scheduler
   ``scheduler_fn(features [N, F], budgets [N]) -> plans [N]`` (an index into ``plan_masks``; ``adainf_env`` never
   imports a scheduler, any callable works — e.g. ``agents.Scheduler.select``);
2. block by block, the rows whose plan executes the block are *gathered*, the full block runs on that subset only,
   the other rows take the block's cheap skip path (``block.skip``: the shortcut, identity for most blocks), and the
   two results are *scattered* back into one batch (strategy ``"gather"``);
   alternatively the batch is split into one group per distinct plan and each group runs its plan end to end
   (strategy ``"group"``), which wins when a few plans cover many rows;
3. the head runs on the whole batch.

Every row therefore sees exactly the computation ``backbone.forward(x_row, mask=plan_masks[plan_row])`` performs,
so predictions equal running each sample alone (up to float reassociation in batched kernels; tests check it).

``strategy="auto"`` (default) picks ``"group"`` when the batch holds on average at least
:data:`GROUP_MIN_ROWS_PER_PLAN` rows per distinct plan and ``"gather"`` otherwise: with many distinct plans the
per-plan sub-batches of ``"group"`` are too small to use the kernels well, while with a few plans a whole plan on
its sub-batch stays in cache. ``benchmarks/bench_executor.py`` measures both on a given machine.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import torch

from adainf_env.costs import measure_macs, plan_macs_fraction
from adainf_env.errors import ConfigError

__all__ = ["AdaptiveExecutor", "ExecResult", "SchedulerFn", "STRATEGIES", "GROUP_MIN_ROWS_PER_PLAN"]

#: ``(features [N, F], budgets [N] float64) -> plans [N]`` (integer indices into the executor's ``plan_masks``).
SchedulerFn = Callable[[Any, np.ndarray], Any]

STRATEGIES = ("auto", "gather", "group")
#: ``auto`` runs one sub-batch per plan when the batch has at least this many rows per distinct plan on average.
GROUP_MIN_ROWS_PER_PLAN = 16


@dataclasses.dataclass(frozen=True)
class ExecResult:
    """Outcome of :meth:`AdaptiveExecutor.run` on N inputs (row order = input order)."""

    pred: np.ndarray  # [N] int64   predicted class
    conf: np.ndarray  # [N] float32 max softmax probability in [0, 1]
    plan: np.ndarray  # [N] int64   plan index chosen by the scheduler
    cost: np.ndarray  # [N] float64 plan cost, fraction of the full model (the executor's cost unit)
    logits: np.ndarray  # [N, C] float32


def _name(backbone: torch.nn.Module) -> str:
    return getattr(backbone, "name", type(backbone).__name__)


def _check_options(*, strategy: str, feature_format: str, bucket: Any) -> None:
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    if feature_format not in ("numpy", "torch"):
        raise ConfigError(f"feature_format must be 'numpy' or 'torch', got {feature_format!r}")
    if not isinstance(bucket, (int, np.integer)) or isinstance(bucket, bool) or bucket < 0:
        raise ConfigError(f"bucket must be an int ≥ 0, got {bucket!r}")


def _checked_plan_masks(plan_masks: Any, backbone: torch.nn.Module) -> np.ndarray:
    """The plan space as bool [P, B], checked against the backbone (which must be a SkippableBackbone)."""
    for attr in ("stem", "features", "head", "blocks", "prepare", "input_size"):
        if not hasattr(backbone, attr):
            raise ConfigError(f"AdaptiveExecutor needs a SkippableBackbone; {type(backbone).__name__} lacks {attr!r}")
    masks = np.asarray(plan_masks)
    if masks.ndim != 2 or masks.shape[0] == 0:
        raise ConfigError(f"plan_masks must be a non-empty [P, B] array, got shape {masks.shape}")
    if masks.dtype != bool:
        if not np.isin(masks, (0, 1)).all():
            raise ConfigError("plan_masks must be boolean (or 0/1)")
        masks = masks.astype(bool)
    num_blocks = len(backbone.blocks)
    if masks.shape[1] != num_blocks:
        raise ConfigError(f"plan_masks has {masks.shape[1]} blocks per plan, backbone {_name(backbone)!r} has "
                          f"{num_blocks}")
    return masks


def _checked_plan_cost(plan_cost: Any, backbone: torch.nn.Module, masks: np.ndarray) -> tuple[np.ndarray, str]:
    """``(cost [P] float64, unit)``: the given costs ("given"), or MACs fractions measured on the backbone."""
    if plan_cost is None:
        plan_cost, unit = plan_macs_fraction(measure_macs(backbone), masks), "macs"
    else:
        unit = "given"
    cost = np.asarray(plan_cost, dtype=np.float64)
    if cost.shape != (masks.shape[0],):
        raise ConfigError(f"plan_cost must have shape ({masks.shape[0]},) like plan_masks, got {cost.shape}")
    if not np.isfinite(cost).all() or (cost <= 0).any():
        raise ConfigError("plan_cost must be positive and finite (fraction of the full model)")
    return cost, unit


def _probe_feature_dim(backbone: torch.nn.Module, device: torch.device) -> int:
    """Size of the stem features the scheduler receives, from one blank input."""
    with torch.inference_mode():
        probe = torch.zeros((1,) + tuple(backbone.input_size), device=device)
        return int(backbone.features(backbone.stem(backbone.prepare(probe))).shape[1])


class AdaptiveExecutor:
    """Run mixed-plan batches on a :class:`~adainf_env.backbones.base.SkippableBackbone`.

    Args:
        backbone: the network (put in eval mode; its device is the executor's device).
        plan_masks: bool [P, B] — the plan space; row p is plan p's block mask (``True`` = residual executed).
        plan_cost: [P] cost of each plan as a fraction of the full model (e.g. ``table.plan_cost("latency")``).
            ``None`` → MACs fractions measured with :func:`adainf_env.costs.measure_macs`.
        feature_dim: if given, the feature size the scheduler expects (e.g. ``table.feature_dim``); checked now
            against the backbone so a mismatch fails before any request is served.
        strategy: ``"gather"`` (per-block row gather/scatter), ``"group"`` (one sub-batch per plan) or ``"auto"``.
        channels_last: convert the backbone (in place) and inputs to channels-last memory format. Off by default:
            whether it helps depends on the device (it usually does on GPUs with tensor cores); measure with
            ``benchmarks/bench_executor.py --channels-last``.
        compile: wrap each block's run/skip path, the stem and the head in ``torch.compile(dynamic=True)``.
        compile_mode: ``torch.compile`` mode; ``"reduce-overhead"`` = CUDA graphs (then the gather strategy is
            always used, so each graph replays at most once per batch).
        bucket: when > 0, gathered subsets are padded (by repeating a row) to a multiple of ``bucket`` rows so that
            compiled kernels / CUDA graphs see few distinct shapes; padded rows are computed and discarded.
        feature_format: ``"numpy"`` (default, float32 array on the CPU) or ``"torch"`` (tensor on the device) for
            the features handed to ``scheduler_fn``.
    """

    def __init__(
        self,
        backbone: torch.nn.Module,
        plan_masks: np.ndarray,
        plan_cost: np.ndarray | None = None,
        *,
        feature_dim: int | None = None,
        strategy: str = "auto",
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: str | None = None,
        bucket: int = 0,
        feature_format: str = "numpy",
    ) -> None:
        _check_options(strategy=strategy, feature_format=feature_format, bucket=bucket)
        masks = _checked_plan_masks(plan_masks, backbone)
        self.backbone = backbone.eval()
        self.plan_masks = masks
        self.num_plans, self.num_blocks = masks.shape
        self.strategy = strategy
        self.bucket = int(bucket)
        self.feature_format = feature_format
        self.channels_last = bool(channels_last)
        self.device = next((p.device for p in backbone.parameters()), torch.device("cpu"))
        if self.channels_last:
            backbone.to(memory_format=torch.channels_last)
        self.plan_cost, self.cost_unit = _checked_plan_cost(plan_cost, backbone, masks)
        self.feature_dim = _probe_feature_dim(backbone, self.device)
        if feature_dim is not None and int(feature_dim) != self.feature_dim:
            raise ConfigError(f"feature-size mismatch: the scheduler expects {int(feature_dim)}-d features, backbone "
                              f"{_name(backbone)!r} produces {self.feature_dim}-d")
        self._build_paths(compile=compile, compile_mode=compile_mode)

    def _build_paths(self, *, compile: bool, compile_mode: str | None) -> None:
        """Callables per block (``run`` = whole block, ``skip`` = shortcut), stem and head; compiled when asked."""
        backbone = self.backbone
        blocks = list(backbone.blocks)
        self._run_fns: list[Callable[[torch.Tensor], torch.Tensor]] = [b.__call__ for b in blocks]
        self._skip_fns: list[Callable[[torch.Tensor], torch.Tensor]] = [b.skip for b in blocks]
        self._stem_fn: Callable[[torch.Tensor], torch.Tensor] = lambda x: backbone.stem(backbone.prepare(x))
        self._head_fn: Callable[[torch.Tensor], torch.Tensor] = backbone.head
        self.compiled = bool(compile)
        self._cudagraphs = bool(compile) and compile_mode is not None and "reduce-overhead" in compile_mode
        if compile:
            kw: dict[str, Any] = {"dynamic": True}
            if compile_mode is not None:
                kw["mode"] = compile_mode
            self._run_fns = [torch.compile(f, **kw) for f in self._run_fns]
            self._skip_fns = [torch.compile(f, **kw) for f in self._skip_fns]
            self._stem_fn = torch.compile(self._stem_fn, **kw)
            self._head_fn = torch.compile(self._head_fn, **kw)

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_table(cls, backbone: torch.nn.Module, table: Any, *, cost_unit: str = "macs",
                   **kwargs: Any) -> "AdaptiveExecutor":
        """Executor over an :class:`~adainf_env.tables.outcomes.OutcomeTable`'s plan space, costs and feature size."""
        return cls(backbone, table.plan_masks, table.plan_cost(cost_unit), feature_dim=table.feature_dim, **kwargs)

    # ------------------------------------------------------------------ validation
    def _check_images(self, images: Any) -> torch.Tensor:
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images)
        if not isinstance(images, torch.Tensor):
            raise ConfigError(f"images must be a torch.Tensor or numpy array, got {type(images).__name__}")
        if images.ndim != 4:
            raise ConfigError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
        if images.shape[0] == 0:
            raise ConfigError("empty batch: images has 0 rows")
        c = int(self.backbone.input_size[0])
        if images.shape[1] != c:
            raise ConfigError(f"images have {images.shape[1]} channels, backbone expects {c} ([N, {c}, H, W])")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise ConfigError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}")
        return images

    @staticmethod
    def _check_budgets(budgets: Any, n: int) -> np.ndarray:
        try:
            b = np.asarray(budgets, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"budgets must be numbers in (0, 1], got {type(budgets).__name__}") from None
        if b.ndim == 0:
            b = np.full(n, float(b))
        if b.shape != (n,):
            raise ConfigError(f"budgets must be a scalar or have shape ({n},) like the batch, got {b.shape}")
        ok = np.isfinite(b) & (b > 0) & (b <= 1)
        if not ok.all():
            raise ConfigError(f"budgets must lie in (0, 1] (fraction of the full model); got {b[~ok][:5].tolist()}")
        return b

    def _check_plans(self, plans: Any, n: int) -> np.ndarray:
        if isinstance(plans, torch.Tensor):
            plans = plans.detach().cpu().numpy()
        p = np.asarray(plans)
        if p.ndim == 0:
            p = p.reshape(1)
        if p.shape != (n,):
            raise ConfigError(f"scheduler returned plans of shape {p.shape}, expected ({n},) — one plan per row")
        if p.dtype == bool or not np.issubdtype(p.dtype, np.integer):
            raise ConfigError(f"scheduler must return integer plan indices, got dtype {p.dtype}")
        bad = (p < 0) | (p >= self.num_plans)
        if bad.any():
            raise ConfigError(f"plan index out of range: {p[bad][:5].tolist()} not in [0, {self.num_plans})")
        return p.astype(np.int64)

    # ------------------------------------------------------------------ execution
    def run(self, images: Any, scheduler_fn: SchedulerFn, budgets: Any) -> ExecResult:
        """Schedule and execute a batch: ``images`` [N, C, H, W] uint8 or float in [0, 1], ``budgets`` scalar or [N]
        fractions of the full model in (0, 1]."""
        x = self._check_images(images)
        n = int(x.shape[0])
        b = self._check_budgets(budgets, n)
        with torch.inference_mode():
            x = self._to_device(x)
            h = self._stem_fn(x)
            feats = self.backbone.features(h)
            if feats.ndim != 2 or feats.shape[1] != self.feature_dim:
                raise ConfigError(f"feature-size mismatch: backbone features {tuple(feats.shape)}, expected "
                                  f"[N, {self.feature_dim}]")
            f_arg = feats if self.feature_format == "torch" else feats.float().cpu().numpy()
            plans = self._check_plans(scheduler_fn(f_arg, b), n)
            logits = self.execute_hidden(h, plans)
            probs = torch.softmax(logits.float(), dim=1)
            conf, pred = probs.max(dim=1)
            return ExecResult(
                pred=pred.cpu().numpy().astype(np.int64),
                conf=conf.cpu().numpy().astype(np.float32),
                plan=plans,
                cost=self.plan_cost[plans],
                logits=logits.float().cpu().numpy(),
            )

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        """Move a checked batch to the engine's device/layout (and open a new CUDA-graph step when graphs are on)."""
        if self._cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def execute(self, images: Any, plans: Any) -> torch.Tensor:
        """Logits [N, C] for images under given per-row plan indices (no scheduler; used by benchmarks/tests)."""
        x = self._check_images(images)
        p = self._check_plans(plans, int(x.shape[0]))
        with torch.inference_mode():
            x = self._to_device(x)
            out = self.execute_hidden(self._stem_fn(x), p)
            # A CUDA-graph output lives in the graph's memory pool and is overwritten by the next replay.
            return out.clone() if self._cudagraphs else out

    def choose_strategy(self, plans: np.ndarray) -> str:
        """The strategy used for this batch of plan indices."""
        if self._cudagraphs:
            # CUDA graphs (cudagraph trees) replay each compiled block at most once per step: only the gather
            # strategy guarantees that (grouping would call a block once per plan group).
            return "gather"
        if self.strategy != "auto":
            return self.strategy
        distinct = int(np.unique(plans).size)
        return "group" if plans.size >= GROUP_MIN_ROWS_PER_PLAN * distinct else "gather"

    def execute_hidden(self, h: torch.Tensor, plans: np.ndarray) -> torch.Tensor:
        """Blocks + head on stem output ``h`` [N, ...] for validated plan indices [N] (inference mode)."""
        if self.choose_strategy(plans) == "group":
            return self._run_grouped(h, plans)
        return self._run_gathered(h, plans)

    def _run_path(self, h: torch.Tensor, mask: np.ndarray) -> torch.Tensor:
        for run, skip, on in zip(self._run_fns, self._skip_fns, mask.tolist()):
            h = run(h) if on else skip(h)
        return self._head_fn(h)

    def _run_grouped(self, h: torch.Tensor, plans: np.ndarray) -> torch.Tensor:
        uniq, inverse = np.unique(plans, return_inverse=True)
        if uniq.size == 1:
            return self._run_path(h, self.plan_masks[uniq[0]])
        out: torch.Tensor | None = None
        for g, p in enumerate(uniq.tolist()):
            rows = torch.from_numpy(np.flatnonzero(inverse == g)).to(h.device)
            y = self._run_path(h.index_select(0, rows), self.plan_masks[p])
            if out is None:
                out = y.new_empty((h.shape[0],) + tuple(y.shape[1:]))
            out.index_copy_(0, rows, y)
        assert out is not None
        return out

    def _padded(self, idx: np.ndarray) -> np.ndarray:
        """Pad an index set to a multiple of ``bucket`` rows by repeating its last row (results discarded)."""
        k = idx.size
        if self.bucket <= 0 or k % self.bucket == 0:
            return idx
        extra = self.bucket - k % self.bucket
        return np.concatenate([idx, np.full(extra, idx[-1], dtype=idx.dtype)])

    def _run_gathered(self, h: torch.Tensor, plans: np.ndarray) -> torch.Tensor:
        masks = self.plan_masks[plans]  # [N, B] bool
        n = h.shape[0]
        for i in range(self.num_blocks):
            col = masks[:, i]
            k = int(col.sum())
            if k == n:
                h = self._run_fns[i](h)
                continue
            if k == 0:
                h = self._skip_fns[i](h)
                continue
            run_idx = np.flatnonzero(col)
            skip_idx = np.flatnonzero(~col)
            y_run = self._subset(self._run_fns[i], h, run_idx)
            y_skip = self._subset(self._skip_fns[i], h, skip_idx)
            out = y_run.new_empty((n,) + tuple(y_run.shape[1:]))
            if self.channels_last and out.ndim == 4:
                out = out.contiguous(memory_format=torch.channels_last)
            out.index_copy_(0, torch.from_numpy(run_idx).to(h.device), y_run)
            out.index_copy_(0, torch.from_numpy(skip_idx).to(h.device), y_skip)
            h = out
        return self._head_fn(h)

    def _subset(self, fn: Callable[[torch.Tensor], torch.Tensor], h: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        padded = self._padded(idx)
        y = fn(h.index_select(0, torch.from_numpy(padded).to(h.device)))
        return y[: idx.size] if padded.size != idx.size else y
