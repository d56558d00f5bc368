"""Plan codes and what is computed from them: the one home of the plan-code helpers.

A *plan* of a network with B skippable blocks says, block by block, whether the block's residual branch runs. It is
written two ways, and every module converts between them here:

* a **mask**: bool ``[B]`` (``[P, B]`` for P plans), blocks in execution order, ``True`` = executed;
* a **code**: an int, bit ``b`` set ⇔ block ``b`` executed (LSB = block 0), so plan 0 skips every block and
  ``2^B − 1`` runs them all. Codes need B ≤ 62 (they are int64).

Helpers:

* :func:`all_plans` — the complete plan space (every 2^B plan, row p = code p);
* :func:`masks_from_codes` / :func:`codes_from_masks` — the two conversions (inverse of each other);
* :func:`code_lookup` — the dense code → plan-index table of a plan list (−1 where a code is not a plan);
* :func:`top_block` — one past a plan's highest executed block: where its last decision is made, so where a read of
  it can happen in the anytime env (0 for plan 0);
* :func:`extension_mask` / :func:`extensions` — the plans that *extend* a plan ``c``: they take ``c``'s decisions up
  to its top block and run at least one later block, so everything computed for ``c`` is reused by them (the stage
  menu of the anytime env, the cascade baselines and the stage learner's candidates all use this one rule);
* :func:`plan_cost` — the additive cost model ``base + masks @ block_cost`` (numpy or torch): a plan's cost is what
  always runs (stem, head, every projection shortcut) plus the residual cost of each executed block. The MACs of
  :func:`adainf_env.costs.plan_macs`, the latency model of :func:`adainf_env.latency.plan_latency_ms`, the anytime
  env's :meth:`~adainf_env.envs.anytime.actions.BlockCosts.plan_cost`, the reference and toy tables' ``plan_macs`` and
  the live hinge learner's differentiable cost of its gates are all this one formula.

Per-plan costs that are *stored*, not computed — :meth:`adainf_env.tables.outcomes.OutcomeTable.plan_cost` (a
table's ``plan_macs`` as a fraction of the full model, or its measured latency) and the envs' ``plan_cost`` view of
it — are look-ups, not this formula.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from adainf_env.errors import ConfigError

__all__ = ["MAX_CODE_BLOCKS", "ALL_PLANS_MAX_BLOCKS", "all_plans", "masks_from_codes", "codes_from_masks",
           "code_lookup", "top_block", "extension_mask", "extensions", "plan_cost"]

#: The most blocks a plan code (int64, sign bit unused) can describe.
MAX_CODE_BLOCKS = 62
#: The most blocks :func:`all_plans` enumerates (2^20 plans).
ALL_PLANS_MAX_BLOCKS = 20


def masks_from_codes(codes: Sequence[int] | np.ndarray, num_blocks: int) -> np.ndarray:
    """Plan codes ``[P]`` (bit i set ⇔ block i executed, LSB = block 0) → bool masks ``[P, B]`` with B =
    ``num_blocks``. Bits at or above ``num_blocks`` are ignored."""
    codes = np.asarray(codes, dtype=np.int64)
    return ((codes[:, None] >> np.arange(num_blocks)) & 1).astype(bool)


def all_plans(num_blocks: int) -> np.ndarray:
    """The complete plan space: all 2^B plans as bool masks ``[2^B, B]``, row p = plan code p (the reference tables'
    column order). ``num_blocks`` outside [1, :data:`ALL_PLANS_MAX_BLOCKS`] → :class:`ConfigError`."""
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, (int, np.integer)) or \
            not 1 <= num_blocks <= ALL_PLANS_MAX_BLOCKS:
        raise ConfigError(f"all_plans: num_blocks must be an integer in [1, {ALL_PLANS_MAX_BLOCKS}], "
                          f"got {num_blocks!r}")
    return masks_from_codes(np.arange(1 << int(num_blocks)), int(num_blocks))


def codes_from_masks(masks: np.ndarray) -> np.ndarray:
    """Bool (or 0/1) masks ``[P, B]`` → plan codes ``[P]`` int64: the inverse of :func:`masks_from_codes`.

    More than :data:`MAX_CODE_BLOCKS` blocks → :class:`ConfigError` (a code would overflow int64)."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 2:
        raise ConfigError(f"plan masks must be a 2-D [plans, blocks] array, got shape {masks.shape}")
    if masks.shape[1] > MAX_CODE_BLOCKS:
        raise ConfigError(f"plan codes describe at most {MAX_CODE_BLOCKS} blocks, the masks have {masks.shape[1]}")
    return (masks.astype(np.int64) << np.arange(masks.shape[1])).sum(axis=1)


def code_lookup(codes: np.ndarray, num_blocks: int) -> np.ndarray:
    """``[2^B]`` int64: entry ``c`` is the index of plan code ``c`` in ``codes`` (a plan list's codes, e.g.
    ``codes_from_masks(plan_masks)``), −1 where ``c`` is not in the list. B = ``num_blocks`` ≤
    :data:`ALL_PLANS_MAX_BLOCKS`, else :class:`ConfigError` (the table would not fit in memory)."""
    if not 0 <= num_blocks <= ALL_PLANS_MAX_BLOCKS:
        raise ConfigError(f"code_lookup: a dense table of 2^{num_blocks} codes is too large (at most "
                          f"{ALL_PLANS_MAX_BLOCKS} blocks)")
    lookup = np.full(1 << num_blocks, -1, dtype=np.int64)
    lookup[np.asarray(codes, dtype=np.int64)] = np.arange(len(codes))
    return lookup


def top_block(codes: np.ndarray) -> np.ndarray:
    """``[K]`` one past the highest executed block of each plan code (0 for plan 0): the number of blocks a plan
    decides before its answer can be read, so where a read of it happens in the anytime env."""
    c = np.asarray(codes, dtype=np.int64)
    t = np.where(c > 0, np.floor(np.log2(np.maximum(c, 1))).astype(np.int64) + 1, 0)
    # above 2^53 the float log2 can round up (2^62 − 1 → 62.0): one too many where the code has no bit t − 1
    return np.where((c >> np.maximum(t - 1, 0)) == 0, np.maximum(t - 1, 0), t)


def extension_mask(codes: np.ndarray, of: int | np.ndarray) -> np.ndarray:
    """Which of the plan ``codes`` ``[K]`` extend plan ``of``: bool ``[K]`` for one plan code, ``[S, K]`` for an
    array ``[S]`` of them.

    Plan x extends plan c when it agrees with c on every block below c's top block (:func:`top_block`) and is not c
    itself — so it executes at least one block after c's last, and a request that ran and read c reaches x without
    paying anything twice. Plan 0 is extended by every other plan."""
    codes = np.asarray(codes, dtype=np.int64)
    of = np.asarray(of, dtype=np.int64)
    low = (np.int64(1) << top_block(of)) - 1
    return ((codes & low[..., None]) == of[..., None]) & (codes != of[..., None])


def extensions(codes: np.ndarray, of: int) -> np.ndarray:
    """The codes among ``codes`` that extend plan ``of`` (:func:`extension_mask`), in their order."""
    codes = np.asarray(codes, dtype=np.int64)
    return codes[extension_mask(codes, of)]


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def plan_cost(masks: Any, block_cost: Any, *, base: Any = 0.0) -> Any:
    """``base + masks @ block_cost``: the cost of each plan of ``masks`` ``[P, B]`` (or one mask ``[B]``) under the
    additive cost model — ``base`` (what every plan runs: stem, head, shortcuts) plus the cost ``block_cost[b]``
    ``[B]`` of each executed block.

    numpy: the masks are multiplied as int64 when ``block_cost`` is integer (MACs: exact), else as float64, with
    ``block_cost`` as given; the sum is ``base + product``, in that order. torch (``masks`` a tensor, e.g. relaxed
    gates in [0, 1] with gradients): ``block_cost`` is moved to the masks' device and dtype and the result is a
    tensor. A mask width other than ``len(block_cost)`` → :class:`ConfigError`.
    """
    if _is_torch(masks):
        import torch

        cost = torch.as_tensor(block_cost).to(device=masks.device, dtype=masks.dtype)
        if masks.shape[-1] != cost.shape[-1]:
            raise ConfigError(f"plan masks have {masks.shape[-1]} blocks, block_cost has {cost.shape[-1]}")
        return base + masks @ cost
    cost = np.asarray(block_cost)
    if cost.ndim != 1:
        raise ConfigError(f"block_cost must be 1-D [blocks], got shape {cost.shape}")
    m = np.asarray(masks, dtype=np.int64 if np.issubdtype(cost.dtype, np.integer) else np.float64)
    if m.shape[-1:] != cost.shape:
        raise ConfigError(f"plan masks have shape {m.shape}, block_cost has {cost.size} blocks; expected "
                          f"[plans, {cost.size}]")
    return base + m @ cost
