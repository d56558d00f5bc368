"""A synthetic outcome table with a known optimal policy — AdaInf's analogue of SB3's ``IdentityEnv``.

Each sample has a *type* t that is visible in its features (one-hot + Gaussian noise). Type t is classified
correctly by exactly the plans that execute every block in ``required[t]`` (a nested chain: type 0 needs nothing,
type 1 needs block 0, type 2 needs blocks 0–1, …). So, for a budget M, the best possible plan for a sample is the
cheapest plan that contains ``required[t]``, if it fits the budget. A scheduler that reads features and budgets can
reach that optimum; one that ignores features (random, a static table) cannot. Tests use it to show agents *learn*.
"""

from __future__ import annotations

import numpy as np

from adainf_env.tables.outcomes import OutcomeTable, default_meta, masks_from_codes

__all__ = ["make_toy_table", "toy_optimal_plans"]


def make_toy_table(
    num_samples: int = 2000,
    *,
    num_blocks: int = 4,
    num_classes: int = 5,
    noise: float = 0.1,
    seed: int = 0,
    split: str = "calib",
) -> OutcomeTable:
    """Build the toy table (all 2^B plans; block i costs (i+1) units; stem + head 1 unit)."""
    if num_blocks < 1 or num_blocks > 10:
        raise ValueError("num_blocks must be in [1, 10]")
    rng = np.random.default_rng(seed)
    num_types = num_blocks + 1
    masks = masks_from_codes(np.arange(1 << num_blocks), num_blocks)
    block_macs = np.arange(1, num_blocks + 1, dtype=np.int64) * 1000
    plan_macs = 1000 + masks.astype(np.int64) @ block_macs
    required = np.tril(np.ones((num_types, num_blocks), dtype=bool), k=-1)  # type t needs blocks 0..t-1
    types = rng.integers(0, num_types, size=num_samples)
    correct = (masks[None, :, :] | ~required[types][:, None, :]).all(axis=2)  # [N, P]
    label = rng.integers(0, num_classes, size=num_samples)
    pred = np.where(correct, label[:, None], (label[:, None] + 1) % num_classes).astype(np.uint8)
    loss = np.where(correct, 0.05, 2.5).astype(np.float32)
    conf = np.where(correct, 0.95, 0.40).astype(np.float32)
    features = np.eye(num_types, dtype=np.float32)[types] + noise * rng.standard_normal((num_samples, num_types)).astype(
        np.float32
    )
    meta = default_meta(
        backbone="toy", checkpoint_sha256=None, dataset="toy", split=split, num_classes=num_classes,
        full_macs=int(plan_macs.max()), plan_space="all", toy_types=types.tolist(), toy_seed=seed,
    )
    return OutcomeTable(
        pred=pred, loss=loss, conf=conf, features=features, label=label.astype(np.int64),
        sample_index=np.arange(num_samples, dtype=np.int64), plan_masks=masks, plan_macs=plan_macs, meta=meta,
    )


def toy_optimal_plans(table: OutcomeTable, budgets: np.ndarray) -> np.ndarray:
    """The best plan per sample under ``budgets`` (known by construction): cheapest correct plan within budget,
    else the cheapest plan overall (nothing within budget is correct)."""
    cost = table.plan_cost()
    budgets = np.broadcast_to(np.asarray(budgets, dtype=np.float64), (table.num_samples,))
    order = np.argsort(cost, kind="stable")
    ok = table.correct[:, order] & (cost[order][None, :] <= budgets[:, None] + 1e-12)
    first = np.where(ok.any(axis=1), ok.argmax(axis=1), 0)
    return order[first]
