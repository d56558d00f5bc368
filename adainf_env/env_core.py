"""Configuration, validation and precomputed arrays shared by :class:`~adainf_env.env.AdaInfEnv` and
:class:`~adainf_env.vec_env.AdaInfVecEnv`, so both parse arguments, build spaces and compute rewards identically.

Randomness protocol (the contract that makes N independent envs and one vec env of N produce the same numbers):
each env owns one ``np.random.Generator``; every request makes two draws from it, in this order —

1. the sample: position ``pos`` of a permutation of the table's rows; when a pass is exhausted a new permutation
   ``rng.permutation(N)`` is drawn (sampling without replacement, reshuffled each pass);
2. one uniform for the budget process: position ``upos`` of a buffer of :data:`RNG_CHUNK` uniforms,
   refilled with ``rng.random(RNG_CHUNK)`` when exhausted (drawing in chunks keeps per-step work tiny).

Reseeding (``reset(seed=...)``) discards both buffers.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from typing import Any, Mapping

import numpy as np
from gymnasium import spaces

from adainf_env.budgets import BudgetProcess, TokenBucket, check_budget_value, make_budget_process
from adainf_env.errors import AdaInfError, ConfigError, TableFormatError
from adainf_env.outcomes import OutcomeTable, codes_from_masks

__all__ = ["ActionError", "EnvConfig", "RNG_CHUNK", "MODES"]

RNG_CHUNK = 1024  # uniforms drawn per refill of the budget buffer (part of the seeding contract; do not vary)
MODES = ("bandit", "stream")
REWARDS = ("correct", "neg_ce")
PENALTIES = ("linear", "hard")
OBS_FORMATS = ("dict", "flat")
ACTION_TYPES = ("plan", "mask")


class ActionError(AdaInfError):
    """An action outside the action space: plan index out of range, wrong shape/type, unknown block mask."""


def _finite_number(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
        raise ConfigError(f"{name} must be a finite number, got {v!r}")
    return float(v)


def _choice(v: Any, name: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(v, str) or v not in allowed:
        raise ConfigError(f"unknown {name} {v!r}; expected one of {list(allowed)}")
    return v


def make_bucket(bucket: Any) -> TokenBucket | None:
    if bucket is None or bucket is False:
        return None
    if bucket is True:
        return TokenBucket()
    if isinstance(bucket, TokenBucket):
        return bucket
    if isinstance(bucket, Mapping):
        extra = set(bucket) - {"rate", "cap", "initial"}
        if extra:
            raise ConfigError(f"bucket: unknown key(s) {sorted(extra)}; expected rate, cap, initial")
        return TokenBucket(**bucket)
    raise ConfigError(f"bucket must be None, True, a dict(rate=, cap=, initial=) or a TokenBucket, got {bucket!r}")


@dataclasses.dataclass
class EnvConfig:
    """Validated env arguments plus the arrays every step reads (no per-step allocation beyond the outputs)."""

    mode: str
    episode_length: int
    process: BudgetProcess
    bucket: TokenBucket | None
    lam: float
    reward: str
    penalty: str
    hard_penalty: float
    cost_unit: str
    obs_format: str
    action_type: str
    mask_over_budget: bool
    # arrays
    features: np.ndarray  # [N, F] float32, read-only
    correct: np.ndarray  # [N, P] bool (None in live mode)
    loss: np.ndarray | None  # [N, P] float32
    cost: np.ndarray  # [P] float64 fraction of the full model
    plan_masks: np.ndarray  # [P, B] bool
    codes_sorted: np.ndarray  # [P] int64 plan codes, sorted (MultiBinary actions)
    code_order: np.ndarray  # [P] plan index of each sorted code
    cheapest: int
    observation_space: spaces.Space
    action_space: spaces.Space

    @property
    def num_samples(self) -> int:
        return int(self.features.shape[0])

    @property
    def num_plans(self) -> int:
        return int(self.cost.shape[0])

    @classmethod
    def build(
        cls,
        *,
        features: np.ndarray,
        correct: np.ndarray | None,
        loss: np.ndarray | None,
        cost: np.ndarray,
        plan_masks: np.ndarray,
        mode: str,
        episode_length: int,
        budget: Any,
        bucket: Any,
        lam: float,
        reward: str,
        penalty: str,
        hard_penalty: float,
        cost_unit: str,
        obs_format: str,
        action_type: str,
        mask_over_budget: bool,
    ) -> "EnvConfig":
        mode = _choice(mode, "mode", MODES)
        if isinstance(episode_length, bool) or not isinstance(episode_length, (int, np.integer)) or episode_length < 1:
            raise ConfigError(f"episode_length must be an integer ≥ 1 (requests per stream episode), got "
                              f"{episode_length!r}")
        lam = _finite_number(lam, "lam (λ, overrun penalty weight)")
        if lam < 0:
            raise ConfigError(f"lam (λ) must be ≥ 0, got {lam}")
        reward = _choice(reward, "reward", REWARDS)
        penalty = _choice(penalty, "penalty", PENALTIES)
        hard_penalty = _finite_number(hard_penalty, "hard_penalty")
        obs_format = _choice(obs_format, "obs_format", OBS_FORMATS)
        action_type = _choice(action_type, "action_type", ACTION_TYPES)
        bucket = make_bucket(bucket)
        if bucket is not None and mode != "stream":
            raise ConfigError("a shared token-bucket budget needs mode='stream' (bandit episodes are one request)")
        if not isinstance(mask_over_budget, (bool, np.bool_)):
            raise ConfigError(f"mask_over_budget must be a bool, got {mask_over_budget!r}")

        features = np.ascontiguousarray(features, dtype=np.float32)
        cost = np.ascontiguousarray(cost, dtype=np.float64)
        if not np.isfinite(features).all():
            raise TableFormatError("features contain NaN/inf")
        if cost.ndim != 1 or not np.isfinite(cost).all() or (cost <= 0).any() or (cost > 1 + 1e-9).any():
            raise TableFormatError(f"plan costs must be finite fractions in (0, 1], got range "
                                   f"[{np.nanmin(cost) if cost.size else 'empty'}, {np.nanmax(cost) if cost.size else ''}]")
        if correct is not None:
            correct = np.ascontiguousarray(correct, dtype=bool)
        if loss is not None:
            loss = np.ascontiguousarray(loss, dtype=np.float32)
            if not np.isfinite(loss).all():
                raise TableFormatError("loss (cross-entropy) contains NaN/inf")
        for a in (features, correct, loss, cost):
            if a is not None:
                a.setflags(write=False)
        process = make_budget_process(budget).bind(float(cost.min()))

        plan_masks = np.asarray(plan_masks, dtype=bool)
        codes = codes_from_masks(plan_masks) if plan_masks.shape[1] <= 62 else None
        if codes is None:
            if action_type == "mask":
                raise ConfigError("MultiBinary actions need ≤ 62 blocks")
            codes = np.arange(cost.size, dtype=np.int64)
        order = np.argsort(codes, kind="stable")

        f_low = features.min(axis=0)
        f_high = features.max(axis=0)
        # A constant feature (e.g. a ReLU channel that is 0 on every sample) would give a degenerate Box, which
        # Gymnasium's checker flags; widen it by one unit above (observations still lie inside).
        f_high = np.where(f_high > f_low, f_high, f_low + 1.0).astype(np.float32)
        parts: dict[str, spaces.Box] = {
            "features": spaces.Box(low=f_low, high=f_high, shape=f_low.shape, dtype=np.float32),
            "budget": spaces.Box(low=0.0, high=1.0, shape=(1,), dtype=np.float32),
        }
        if bucket is not None:
            # [bucket level after refill (fraction of full model), this request's refill, fraction of episode left]
            parts["bucket"] = spaces.Box(low=np.zeros(3, np.float32),
                                         high=np.array([bucket.cap, 1.0, 1.0], np.float32), dtype=np.float32)
        if obs_format == "dict":
            obs_space: spaces.Space = spaces.Dict(parts)
        else:
            obs_space = spaces.Box(low=np.concatenate([p.low for p in parts.values()]),
                                   high=np.concatenate([p.high for p in parts.values()]), dtype=np.float32)
        act_space: spaces.Space = (spaces.Discrete(int(cost.size)) if action_type == "plan"
                                   else spaces.MultiBinary(int(plan_masks.shape[1])))
        return cls(
            mode=mode, episode_length=int(episode_length), process=process, bucket=bucket, lam=lam, reward=reward,
            penalty=penalty, hard_penalty=hard_penalty, cost_unit=cost_unit, obs_format=obs_format,
            action_type=action_type, mask_over_budget=bool(mask_over_budget), features=features, correct=correct,
            loss=loss, cost=cost, plan_masks=plan_masks, codes_sorted=codes[order], code_order=order,
            cheapest=int(np.argmin(cost)), observation_space=obs_space, action_space=act_space,
        )

    @classmethod
    def from_table(cls, table: OutcomeTable, *, cost_unit: str = "macs", **kw: Any) -> "EnvConfig":
        if not isinstance(table, OutcomeTable):
            raise ConfigError(f"table must be an OutcomeTable, got {type(table).__name__}")
        cost_unit = _choice(cost_unit, "cost_unit", ("macs", "latency"))
        return cls.build(features=table.features, correct=table.correct, loss=table.loss,
                         cost=table.plan_cost(cost_unit), plan_masks=table.plan_masks, cost_unit=cost_unit, **kw)

    # ------------------------------------------------------------------ actions
    def plan_of(self, action: Any) -> int:
        """One env's action → plan index, or :class:`ActionError`."""
        if self.action_type == "plan":
            if isinstance(action, (bool, np.bool_)):
                raise ActionError(f"action must be an integer plan index in [0, {self.num_plans}), got {action!r}")
            try:
                p = operator.index(action)
            except TypeError:
                shape = getattr(action, "shape", None)
                raise ActionError(
                    f"action must be an integer plan index in [0, {self.num_plans}), got {type(action).__name__} "
                    f"{action!r}" + (f" of shape {shape}" if shape is not None else "")) from None
            if not 0 <= p < self.num_plans:
                raise ActionError(f"plan index {p} out of range [0, {self.num_plans})")
            return p
        return int(self.plans_of_masks(np.asarray(action)[None] if np.ndim(action) == 1 else action, 1)[0])

    def plans_of_masks(self, masks: Any, n: int) -> np.ndarray:
        """[n, B] 0/1 block masks → plan indices [n]; every mask must be in the plan list."""
        b = self.plan_masks.shape[1]
        try:
            m = np.asarray(masks)
        except Exception:  # noqa: BLE001 - ragged input etc.
            raise ActionError(f"block-mask action must be a 0/1 array of shape ({b},)") from None
        if m.shape != (n, b):
            want = (b,) if n == 1 else (n, b)
            raise ActionError(f"block-mask action must have shape {want}, got {m.shape[1:] if n == 1 else m.shape}")
        if m.dtype != bool:
            if not np.issubdtype(m.dtype, np.number) or not np.isin(m, (0, 1)).all():
                raise ActionError("block-mask action must contain only 0/1 (or booleans)")
        codes = (m.astype(np.int64) << np.arange(b, dtype=np.int64)).sum(axis=1)
        pos = np.minimum(np.searchsorted(self.codes_sorted, codes), self.num_plans - 1)
        bad = self.codes_sorted[pos] != codes
        if bad.any():
            raise ActionError(f"block mask {m[int(np.argmax(bad))].astype(int).tolist()} is not in the plan list "
                              f"({self.num_plans} plans); choose one of env.plan_masks")
        return self.code_order[pos]

    def plans_of_actions(self, actions: Any, n: int) -> np.ndarray:
        """Batched actions → plan indices [n] (vec env)."""
        if self.action_type == "mask":
            return self.plans_of_masks(actions, n)
        a = np.asarray(actions)
        if a.shape == (n, 1):  # some callers keep a trailing action dim for Discrete
            a = a[:, 0]
        if a.shape != (n,):
            raise ActionError(f"actions must have shape ({n},) (one plan index per env), got {a.shape}")
        if a.dtype.kind not in "iu":
            if a.dtype.kind == "f" and np.isfinite(a).all() and (a == np.floor(a)).all():
                a = a.astype(np.int64)  # integral floats (e.g. from a float policy buffer) are accepted
            else:
                raise ActionError(f"actions must be integer plan indices, got dtype {a.dtype}")
        if n and (int(a.min()) < 0 or int(a.max()) >= self.num_plans):
            raise ActionError(f"plan index out of range [0, {self.num_plans}): got min {int(a.min())}, "
                              f"max {int(a.max())}")
        return a.astype(np.int64, copy=False)

    # ------------------------------------------------------------------ options
    def parse_options(self, options: Any) -> tuple[int | None, float | None]:
        """reset(options={"sample": i, "budget": b}) → (pinned sample row or None, pinned budget or None)."""
        if options is None:
            return None, None
        if not isinstance(options, Mapping):
            raise ConfigError(f"reset options must be a dict, got {type(options).__name__}")
        extra = set(options) - {"sample", "budget"}
        if extra:
            raise ConfigError(f"unknown reset option(s) {sorted(extra)}; expected 'sample' and/or 'budget'")
        s = options.get("sample")
        if s is not None:
            try:
                if isinstance(s, (bool, np.bool_)):
                    raise TypeError
                s = operator.index(s)
            except TypeError:
                raise ConfigError(f"reset option 'sample' must be an integer row index, got {s!r}") from None
            if not 0 <= s < self.num_samples:
                raise ConfigError(f"reset option 'sample'={s} out of range [0, {self.num_samples})")
        b = options.get("budget")
        if b is not None:
            b = check_budget_value(b, "reset option 'budget'")
        return s, b
