"""The anytime envs' configuration: validated options, spaces, observations and rewards (:class:`AnytimeConfig`),
one definition for the single env, the batched core and both adapters; the kernel is :mod:`~adainf_env.envs.anytime.core`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
from gymnasium import spaces

from adainf_env.budgets import BudgetProcess, make_budget_process
from adainf_env.envs.anytime.core import OneRequest, RequestBatch, StepResult
from adainf_env.envs.anytime.actions import ACTION_NAMES, NUM_ACTIONS, AnytimeTable
from adainf_env.envs.core import observation_parts, parse_reset_options, space_of_parts
from adainf_env.envs.options import AnytimeOptions
from adainf_env.envs.reward import overrun_paid, step_reward
from adainf_env.errors import ConfigError, TableFormatError
from adainf_env.plans import all_plans, masks_from_codes

__all__ = ["AnytimeConfig", "READOUT"]


READOUT = ("last_conf", "prev_conf", "agree", "reads", "read_current")


@dataclasses.dataclass
class AnytimeConfig:
    """Validated options of the anytime envs (:class:`~adainf_env.envs.options.AnytimeOptions`), their spaces,
    observations and rewards (one definition for the single env, the vec env and the Gymnasium vector env)."""

    options: AnytimeOptions
    process: BudgetProcess  # the options' budget process, bound to the cheapest answer's cost
    lam: float  # λ: starts as options.lam; the vec env lets set_attr("lam", ...) change it (Lagrangian training)
    table: AnytimeTable
    features: np.ndarray  # [N, F] float32, read-only
    observation_space: spaces.Space
    action_space: spaces.Space
    menu: Any = None  # action_mode="stage": the stage menu (adainf_env.envs.anytime.stages.StageTree)

    @property
    def num_samples(self) -> int:
        return int(self.features.shape[0])

    @functools.cached_property
    def action_names(self) -> tuple[str, ...]:
        """Name of each action: run, skip, read, stop; in stage mode stop, stage_1 … stage_K."""
        if self.menu is None:
            return ACTION_NAMES
        return ("stop",) + tuple(f"stage_{k}" for k in range(1, self.menu.num_actions))

    def new_batch(self, n: int) -> "RequestBatch":
        """The requests in flight of an env of ``n`` slots: a :class:`RequestBatch`, or in stage mode a
        :class:`~adainf_env.envs.anytime.stages.StageBatch` over one."""
        if self.menu is None:
            return RequestBatch(n, self.table, mask_over_budget=self.mask_over_budget)
        return self.menu.new_batch(n, self.table, mask_over_budget=self.mask_over_budget)  # stages builds on us

    def new_one(self) -> "OneRequest":
        """The single env's fast-path request (table mode): a :class:`OneRequest`, or in stage mode a
        :class:`~adainf_env.envs.anytime.stages.StageOne` over one."""
        if self.menu is None:
            return OneRequest(self.table, mask_over_budget=self.mask_over_budget)
        return self.menu.new_one(self.table, mask_over_budget=self.mask_over_budget)

    # the options, read where the envs used to keep them as fields
    mode = property(lambda self: self.options.mode)
    episode_length = property(lambda self: self.options.episode_length)
    bucket = property(lambda self: self.options.bucket)
    reward = property(lambda self: self.options.reward)
    penalty = property(lambda self: self.options.penalty)
    hard_penalty = property(lambda self: self.options.hard_penalty)
    obs_format = property(lambda self: self.options.obs_format)
    mask_over_budget = property(lambda self: self.options.mask_over_budget)
    invalid_action = property(lambda self: self.options.invalid_action)

    @classmethod
    def build(cls, *, table: AnytimeTable, features: np.ndarray, options: AnytimeOptions | None = None,
              menu: Any = None, **option_kwargs: Any) -> "AnytimeConfig":
        """From ``options`` and/or its fields as keywords (keywords win; see :class:`AnytimeOptions`); ``menu``: the
        stage menu, given exactly when ``action_mode="stage"`` (:func:`adainf_env.envs.anytime.stages.stage_menu`)."""
        opts = AnytimeOptions.from_kwargs(options, **option_kwargs)
        if (opts.action_mode == "stage") != (menu is not None):
            raise ConfigError(f"action_mode={opts.action_mode!r} needs " +
                              ("a stage menu" if menu is None else "no stage menu"))
        if opts.reward == "neg_ce" and table.pred is not None and table.loss is None:
            raise ConfigError("reward='neg_ce' needs the table's loss")
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.ndim != 2 or not np.isfinite(features).all():
            raise TableFormatError(f"features must be a finite [N, F] array, got shape {features.shape}")
        features.setflags(write=False)
        costs = table.costs
        floor = float(costs.plan_cost(np.zeros((1, costs.num_blocks)))[0])  # the cheapest answer: plan 0
        process = make_budget_process(opts.budget).bind(floor)
        b = costs.num_blocks
        parts = observation_parts(features.shape[1], opts)  # features, budget, bucket: as the plan envs
        # [spent so far, cost of answering now, cost of RUN then answering]
        parts["costs"] = spaces.Box(low=np.zeros(3, np.float32),
                                    high=np.array([costs.max_request_cost, 1.0, 1.0], np.float32), dtype=np.float32)
        parts["position"] = spaces.Box(low=0.0, high=1.0, shape=(b + 1,), dtype=np.float32)
        parts["decisions"] = spaces.Box(low=0.0, high=1.0, shape=(b,), dtype=np.float32)
        parts["readout"] = spaces.Box(low=0.0, high=1.0, shape=(len(READOUT),), dtype=np.float32)
        if menu is not None:  # each entry's cost from here, its plan's calibration accuracy, valid now
            k = menu.num_actions - 1
            high = np.concatenate([np.full(k, costs.max_request_cost), np.ones(2 * k)]).astype(np.float32)
            parts["menu"] = spaces.Box(low=np.zeros(3 * k, np.float32), high=high, dtype=np.float32)
        return cls(options=opts, process=process, lam=opts.lam, table=table, features=features,
                   observation_space=space_of_parts(parts, opts.obs_format),
                   action_space=spaces.Discrete(NUM_ACTIONS if menu is None else menu.num_actions), menu=menu)

    # ------------------------------------------------------------------ observations
    @functools.cached_property
    def _obs_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """float32 per kernel state ``s``: [0, cost of answering now, cost of RUN then answering (0 at the end)] and
        the one-hot of the position; per plan code its decision bits (None above 12 blocks: computed per step)."""
        kt, b = self.table.kernel, self.table.num_blocks
        s = np.arange(2 * (b + 1))
        pos = s // 2
        # column 0 (spent so far) is the slot's own; 2-D tables are gathered with take (fancy indexing is slower)
        costs = np.stack([np.zeros(len(s)), kt.read_cost, np.where(pos < b, kt.run_cost, 0.0)], axis=1).astype(
            np.float32)
        onehot = np.zeros((len(s), b + 1), dtype=np.float32)
        onehot[s, np.minimum(pos, b)] = 1.0
        bits = None
        if b <= 12:
            bits = all_plans(b).astype(np.float32)
        return costs, onehot, bits

    def observe(self, batch: RequestBatch, bucket_state: np.ndarray | None, idx: np.ndarray | None = None) -> Any:
        """Batched observation [N, ...] of every slot, or [k, ...] of the slots ``idx`` (``bucket_state``: [N, 3]
        or [k, 3] when a bucket is on)."""
        b = batch.B
        row, pos, fresh, code = batch.row, batch.pos, batch.fresh, batch.code
        spent, budget, reads = batch.spent, batch.budget, batch.reads
        last_conf, prev_conf, last_pred, prev_pred = batch.last_conf, batch.prev_conf, batch.last_pred, batch.prev_pred
        if idx is not None:
            row, pos, fresh, code = (x[idx] for x in (row, pos, fresh, code))
            spent, budget, reads = (x[idx] for x in (spent, budget, reads))
            last_conf, prev_conf, last_pred, prev_pred = (x[idx] for x in (last_conf, prev_conf, last_pred, prev_pred))
        n = len(row)
        cost_tab, onehot, bits = self._obs_tables
        s = pos * 2 + fresh
        c = cost_tab.take(s, axis=0)
        c[:, 0] = spent
        r = np.empty((n, len(READOUT)), dtype=np.float32)
        r[:, 0] = last_conf
        r[:, 1] = prev_conf
        r[:, 2] = (reads >= 2) & (last_pred == prev_pred)  # RequestBatch.agree
        r[:, 3] = reads / (b + 1)
        r[:, 4] = ~fresh
        parts: dict[str, np.ndarray] = {
            "features": self.features.take(row, axis=0),
            "budget": budget.astype(np.float32)[:, None],
        }
        if self.bucket is not None:
            parts["bucket"] = np.asarray(bucket_state, dtype=np.float32)
        parts["costs"] = c
        parts["position"] = onehot.take(s, axis=0)
        parts["decisions"] = bits.take(code, axis=0) if bits is not None else \
            masks_from_codes(code, b).astype(np.float32)
        parts["readout"] = r
        if self.menu is not None:
            parts["menu"] = batch.menu_observation(idx)
        if self.obs_format == "dict":
            return parts
        # flat: one row-contiguous gather of the features (zero-padded to the full width), the other parts written
        # into their columns (concatenating seven [n, k] blocks row by row is several times slower)
        out = self._flat_features.take(row, axis=0)
        o = self.features.shape[1]
        for k, v in parts.items():
            if k != "features":
                out[:, o:o + v.shape[1]] = v
                o += v.shape[1]
        return out

    @functools.cached_property
    def _flat_features(self) -> np.ndarray:
        """[num_samples, flat observation width] float32: each row's features, zeros after them."""
        width = int(np.prod(self.observation_space.shape))
        out = np.zeros((self.num_samples, width), dtype=np.float32)
        out[:, :self.features.shape[1]] = self.features
        return out

    @functools.cached_property
    def _one_tables(self) -> tuple[list[list[float]], list[list[float]] | None]:
        """:meth:`observe_one`'s per-state one-hot positions and per-code decision bits as Python lists."""
        _, onehot, bits = self._obs_tables
        return onehot.tolist(), None if bits is None else bits.tolist()

    def observe_one(self, req: "OneRequest", bucket_state: tuple[float, float, float] | None) -> Any:
        """The observation of one request (the single env's fast path): equal to :meth:`observe` of a batch holding
        it (a few Python operations and one float32 array instead of a dozen numpy calls)."""
        b = req.B
        onehot, bits = self._one_tables
        vals: list[Any] = [req.budget]
        if bucket_state is not None:
            vals += bucket_state
        vals += (req.spent, req.read_cost(), req.run_cost_or_zero())
        vals += onehot[2 * req.pos + req.fresh]
        vals += bits[req.code] if bits is not None else [(req.code >> j) & 1 for j in range(b)]
        vals += (req.last_conf, req.prev_conf, req.reads >= 2 and req.last_pred == req.prev_pred, req.reads / (b + 1),
                 not req.fresh)
        if self.menu is not None:  # a StageOne
            vals += req.menu_values()
        small = np.array(vals, dtype=np.float32)
        feat = self.features[req.row]
        if self.obs_format != "dict":
            return np.concatenate((feat, small))
        o = 1 if bucket_state is None else 4
        parts = {"features": feat.copy(), "budget": small[:1]}
        if bucket_state is not None:
            parts["bucket"] = small[1:4]
        parts["costs"] = small[o:o + 3]
        parts["position"] = small[o + 3:o + b + 4]
        parts["decisions"] = small[o + b + 4:o + 2 * b + 4]
        r0 = o + 2 * b + 4
        parts["readout"] = small[r0:r0 + len(READOUT)]
        if self.menu is not None:
            parts["menu"] = small[r0 + len(READOUT):]
        return parts

    # ------------------------------------------------------------------ rewards
    def rewards(self, batch: RequestBatch, res: StepResult, correct: np.ndarray, loss: np.ndarray | None,
                acted: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(reward [N], cost reported this step [N]) for the acting slots (``acted``; None: every slot); updates the
        batch's bookkeeping.

        Linear penalty: each step is charged λ × the overrun it adds (so a request's rewards sum to
        base − λ·max(0, total cost − budget)); ``base`` (1[correct] or −cross-entropy) arrives when it ends. Hard
        penalty: the ending step gets ``hard_penalty`` instead of ``base`` if the request overran.
        """
        over = overrun_paid(batch.spent, batch.budget)
        ended = res.ended
        ce = np.where(ended, loss, 0.0) if self.reward == "neg_ce" else None
        kw = dict(reward=self.reward, penalty=self.penalty, lam=self.lam, hard_penalty=self.hard_penalty)
        if self.penalty == "hard":
            rew = np.where(ended, step_reward(correct, ce, over, **kw), 0.0)
        else:  # the overrun this step adds (what was charged before is not charged again)
            rew = step_reward(correct & ended, ce, over - batch.charged, **kw)
        if acted is None:
            batch.charged = over
            reported = res.cost + batch.unreported
            batch.unreported = np.zeros(batch.n)
            return rew, reported
        rew = np.where(acted, rew, 0.0)
        batch.charged = np.where(acted, over, batch.charged)
        reported = np.where(acted, res.cost + batch.unreported, 0.0)
        batch.unreported = np.where(acted, 0.0, batch.unreported)
        return rew, reported

    def parse_options(self, options: Any) -> tuple[int | None, float | None]:
        """reset(options={"sample": row, "budget": b}) → (pinned row or None, pinned budget or None)."""
        return parse_reset_options(options, self.num_samples)
