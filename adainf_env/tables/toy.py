"""Synthetic outcome tables, the one home of every toy table the tests, examples and evaluations build.

* :func:`make_toy_table` — a table with a known optimal policy, AdaInf's analogue of SB3's ``IdentityEnv``
  (below); :func:`toy_optimal_plans` is that optimum.
* :func:`toy_anytime_table` — the same table with a per-block cost breakdown that has projection shortcuts, for the
  anytime env (reads, reuse and "nothing paid twice" all matter).
* :func:`make_routing_table` — a table where routing each input to its own block provably beats any static plan
  under a hard budget (:mod:`agents.evaluation.routing_gains` measures what each scheduler captures of that gap).

All three have the complete plan space (every 2^B plan, in plan-code order) and their ``plan_macs`` follow the
additive cost model (:func:`adainf_env.plans.plan_cost`).

The toy table: each sample has a *type* t that is visible in its features (one-hot + Gaussian noise). Type t is
classified correctly by exactly the plans that execute every block in ``required[t]`` (a nested chain: type 0 needs nothing,
type 1 needs block 0, type 2 needs blocks 0–1, …). So, for a budget M, the best possible plan for a sample is the
cheapest plan that contains ``required[t]``, if it fits the budget. A scheduler that reads features and budgets can
reach that optimum; one that ignores features (random, a static table) cannot. Tests use it to show agents *learn*.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from adainf_env.envs.anytime.actions import attach_block_macs
from adainf_env.errors import ConfigError
from adainf_env.plans import all_plans, plan_cost
from adainf_env.tables.outcomes import OutcomeTable, default_meta

__all__ = ["make_toy_table", "toy_optimal_plans", "toy_anytime_table", "make_routing_table"]


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
        raise ConfigError(f"make_toy_table: num_blocks must be in [1, 10], got {num_blocks!r}")
    rng = np.random.default_rng(seed)
    num_types = num_blocks + 1
    masks = all_plans(num_blocks)
    block_macs = np.arange(1, num_blocks + 1, dtype=np.int64) * 1000
    plan_macs = plan_cost(masks, block_macs, base=1000)
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


def toy_anytime_table(num_samples: int = 2000, *, num_blocks: int = 4, seed: int = 0, split: str = "calib",
                      noise: float = 0.1) -> OutcomeTable:
    """:func:`make_toy_table` with a per-block cost breakdown that has projection shortcuts (the anytime env's toy).

    Block i's residual costs (i+1)·1000 MACs, every odd block has a 150·(i+1)-MAC shortcut, stem 300, head 200, so
    reads, reuse and "nothing paid twice" all matter. The toy's confidences (0.95 when the plan is right, else 0.40)
    make an early read informative: a cascade can learn to stop exactly when the cheap plan is right. The breakdown
    is in ``meta["macs"]`` (:func:`adainf_env.envs.anytime.actions.attach_block_macs`, checked to add up).
    """
    t = make_toy_table(num_samples, num_blocks=num_blocks, seed=seed, split=split, noise=noise)
    res = np.arange(1, num_blocks + 1, dtype=np.int64) * 1000
    sc = np.where(np.arange(num_blocks) % 2 == 1, 150 * np.arange(1, num_blocks + 1), 0).astype(np.int64)
    stem, head = 300, 200
    plan_macs = plan_cost(t.plan_masks, res, base=stem + head + int(sc.sum()))
    meta = dict(t.meta)
    meta["full_macs"] = int(plan_macs.max())
    meta.pop("content_sha256", None)
    t = dataclasses.replace(t, plan_macs=plan_macs, meta=meta)
    return attach_block_macs(t, stem=stem, blocks=np.stack([res, sc], axis=1), head=head)


def make_routing_table(num_samples: int = 2000, *, num_blocks: int = 4, easy: float = 0.2, noise: float = 0.3,
                       num_classes: int = 5, seed: int = 0, split: str = "calib") -> OutcomeTable:
    """The routing table (all 2^B plans; every block and the stem + head cost one unit each). A share ``easy`` of
    the samples is right under every plan; each other sample has a type t (uniform over the B blocks) and is right
    exactly when block t runs. Features: one-hot of the type (an extra column for easy samples) + N(0, noise²).

    At a budget that pays for k of the B blocks the best static plan is right on ``easy + (1 − easy)·k/B`` of the
    samples, while running each sample's own block is right on all of them (up to feature noise). Out-of-range
    arguments → :class:`ConfigError` naming them."""
    if not 1 <= num_blocks <= 10 or not 0.0 <= easy < 1.0 or noise < 0 or num_samples < 1:
        raise ConfigError(f"make_routing_table: need 1 ≤ num_blocks ≤ 10, 0 ≤ easy < 1, noise ≥ 0, num_samples ≥ 1; "
                          f"got {num_blocks}, {easy}, {noise}, {num_samples}")
    rng = np.random.default_rng(seed)
    masks = all_plans(num_blocks)
    plan_macs = plan_cost(masks, np.full(num_blocks, 1000, dtype=np.int64), base=1000)
    is_easy = rng.random(num_samples) < easy
    types = np.where(is_easy, num_blocks, rng.integers(0, num_blocks, size=num_samples))
    correct = np.where(is_easy[:, None], True, masks[:, np.minimum(types, num_blocks - 1)].T)  # [N, P]
    label = rng.integers(0, num_classes, size=num_samples)
    pred = np.where(correct, label[:, None], (label[:, None] + 1) % num_classes).astype(np.uint8)
    features = (np.eye(num_blocks + 1, dtype=np.float32)[types]
                + noise * rng.standard_normal((num_samples, num_blocks + 1)).astype(np.float32))
    meta = default_meta(backbone="routing_toy", checkpoint_sha256=None, dataset="routing_toy", split=split,
                        num_classes=num_classes, full_macs=int(plan_macs.max()), plan_space="all", toy_seed=seed)
    return OutcomeTable(pred=pred, loss=np.where(correct, 0.05, 2.5).astype(np.float32),
                        conf=np.where(correct, 0.95, 0.40).astype(np.float32), features=features,
                        label=label.astype(np.int64), sample_index=np.arange(num_samples, dtype=np.int64),
                        plan_masks=masks, plan_macs=plan_macs, meta=meta)
