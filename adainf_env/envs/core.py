"""Precomputed arrays, spaces and action parsing shared by :class:`~adainf_env.envs.plan.env.AdaInfEnv` and
:class:`~adainf_env.envs.plan.vec_env.AdaInfVecEnv`, so both build spaces and read actions identically (their options are one
:class:`~adainf_env.envs.options.EnvOptions`; their reward is :func:`adainf_env.envs.reward.step_reward`).

Randomness protocol (the contract that makes N independent envs and one vec env of N produce the same numbers):
each env owns one ``np.random.Generator``; every request makes two draws from it, in this order —

1. the sample: position ``pos`` of a permutation of the table's rows; when a pass is exhausted a new permutation
   ``rng.permutation(N)`` is drawn (sampling without replacement, reshuffled each pass);
2. one uniform for the budget process: position ``upos`` of a buffer of :data:`RNG_CHUNK` uniforms,
   refilled with ``rng.random(RNG_CHUNK)`` when exhausted (drawing in chunks keeps per-step work tiny).

Reseeding (``reset(seed=...)``) discards both buffers. :class:`RequestDraws` is this protocol for one env (the
single envs and the anytime vec env use it; :class:`~adainf_env.envs.plan.vec_env.AdaInfVecEnv` stores the same draws of all
its envs transposed, see there).

Why the envs do not run :func:`adainf_env.stream.run_streams` (the request stream of the harnesses and the learners'
held-out streams, which draw all rows of an evaluation from one generator): this per-env protocol is the envs' seeding
contract (a vec env of N reproduces N single envs; episodes reseed per env) and their per-step code is speed-critical.
They share with :mod:`adainf_env.stream` the bucket arithmetic (:class:`~adainf_env.budgets.TokenBucket` refill /
available / spend and its default cap) and the default stream length (``episode_length`` =
:data:`adainf_env.stream.DEFAULT_STREAM`'s horizon).
"""

from __future__ import annotations

import copy
import dataclasses
import operator
import os
from collections.abc import Sequence
from typing import Any, Mapping

import numpy as np
from gymnasium import spaces

from adainf_env.budgets import BudgetProcess, TokenBucket, check_budget_value, make_budget_process
from adainf_env.errors import AdaInfError, ConfigError, TableFormatError, check_count
from adainf_env.envs.options import EnvOptions
from adainf_env.plans import MAX_CODE_BLOCKS, codes_from_masks
from adainf_env.tables.outcomes import OutcomeTable, load_table
from adainf_env.tables.reference import reference_table_path

__all__ = ["ActionError", "AnytimeConfigViews", "BatchCore", "ConfigViews", "EnvConfig", "PlanConfigViews", "RNG_CHUNK",
           "RequestDraws", "env_generator", "observation_parts", "observation_space",
           "parse_reset_options", "resolve_env_inputs", "source_table", "space_of_parts"]

RNG_CHUNK = 1024  # uniforms drawn per refill of the budget buffer (part of the seeding contract; do not vary)


class ActionError(AdaInfError):
    """An action outside the action space: plan index out of range, wrong shape/type, unknown block mask."""


class RequestDraws:
    """One env's draws under the randomness protocol above: ``draw(rng)`` → (table row, index ``k`` into ``ubuf``).

    ``k == 0`` exactly when ``ubuf`` was just refilled (callers that precompute from the uniforms, like the bandit
    budgets of :class:`~adainf_env.envs.plan.env.AdaInfEnv`, refresh then). :meth:`invalidate` discards both buffers (reseeding).
    """

    __slots__ = ("num_samples", "perm", "pos", "ubuf", "upos")

    def __init__(self, num_samples: int) -> None:
        self.num_samples = int(num_samples)
        self.invalidate()

    def invalidate(self) -> None:
        self.perm = np.empty(0, dtype=np.int64)
        self.pos = self.num_samples  # exhausted → the next request draws a permutation
        self.ubuf = np.empty(0)
        self.upos = RNG_CHUNK

    def draw(self, rng: np.random.Generator) -> tuple[int, int]:
        if self.pos >= self.num_samples:
            self.perm = rng.permutation(self.num_samples)
            self.pos = 0
        s = int(self.perm[self.pos])
        self.pos += 1
        if self.upos >= RNG_CHUNK:
            self.ubuf = rng.random(RNG_CHUNK)
            self.upos = 0
        k = self.upos
        self.upos += 1
        return s, k


def env_generator(seed: int | None = None) -> np.random.Generator:
    """One env's generator, exactly as Gymnasium's ``np_random`` for that seed (``PCG64`` on
    ``SeedSequence(seed)``; fresh entropy for ``None``), without importing Gymnasium."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ConfigError(f"a seed must be a non-negative integer, got {seed!r}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(None if seed is None else int(seed))))


class BatchCore:
    """What the numpy cores of the batched envs share (they depend on neither SB3 nor Gymnasium's vector API): each
    env's generator under the randomness protocol above, and the seeds / reset options waiting for the next
    ``reset()``. The SB3 ``VecEnv`` (:mod:`adainf_env.envs.vec_base`) and the Gymnasium ``VectorEnv``
    (:mod:`adainf_env.envs.gym_vector_base`) adapters hand their seeds and options to these methods.
    """

    num_envs: int

    def _init_envs(self, n: int) -> None:
        self.num_envs = int(n)
        self._rngs: list[np.random.Generator | None] = [None] * self.num_envs
        self._reset_seeds()
        self._reset_options()

    def _rng(self, i: int) -> np.random.Generator:
        r = self._rngs[i]
        if r is None:  # an env never seeded gets fresh entropy, like gymnasium's lazy np_random
            r = self._rngs[i] = env_generator()
        return r

    def seed(self, seed: int | None = None) -> list[int | None]:
        """Env i is reset with seed ``seed + i`` at the next ``reset()`` (SB3's ``VecEnv.seed``: ``None`` draws one
        seed from numpy's global generator). Returns the seeds."""
        if seed is None:
            seed = int(np.random.randint(0, np.iinfo(np.uint32).max, dtype=np.uint32))
        return self.seed_each([int(seed) + i for i in range(self.num_envs)])

    def seed_each(self, seeds: Sequence[int | None]) -> list[int | None]:
        """One seed per env (``None``: that env keeps its generator) for the next ``reset()``."""
        if len(seeds) != self.num_envs:
            raise ConfigError(f"{self.num_envs} seeds needed (one per env), got {len(seeds)}")
        for sd in seeds:
            if sd is not None:
                env_generator(sd)  # checks it
        self._seeds = [None if sd is None else int(sd) for sd in seeds]
        return list(self._seeds)

    def set_options(self, options: dict[str, Any] | Sequence[dict[str, Any]] | None = None) -> None:
        """Reset options (``{"sample": i, "budget": b}``) for the next ``reset()``: one dict for every env or one
        per env (SB3's ``VecEnv.set_options``)."""
        if options is None:
            options = {}
        self._options = copy.deepcopy([options] * self.num_envs if isinstance(options, dict) else list(options))

    def _reset_seeds(self) -> None:
        self._seeds: list[int | None] = [None] * self.num_envs

    def _reset_options(self) -> None:
        self._options: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]


def source_table(table: OutcomeTable | None, table_path: str | os.PathLike | None, live: Any = None) -> \
        OutcomeTable | None:
    """The outcome table an env serves: ``table``, the one at ``table_path``, none for a ``live`` source, or (none
    of them given) the reference calibration table shipped with the package. More than one → :class:`ConfigError`."""
    if sum(x is not None for x in (table, table_path, live)) > 1:
        raise ConfigError("give at most one of table=, table_path= or live= (none: the shipped reference "
                          "calibration table)")
    if table is None and live is None:
        table = load_table(table_path if table_path is not None else reference_table_path("calib"))
    return table


class ConfigViews:
    """Read-only views of ``self.cfg`` that every AdaInf env (single or batched, plan or anytime) exposes: the
    Lagrange multiplier ``lam`` (λ; the Lagrangian learners move it through ``cfg.lam``) and the budget process."""

    cfg: Any

    @property
    def lam(self) -> float:
        return self.cfg.lam

    @property
    def budget_process(self) -> BudgetProcess:
        return self.cfg.process


class PlanConfigViews(ConfigViews):
    """:class:`ConfigViews` plus the plan envs' plans: ``plan_masks`` [P, B] bool and ``plan_cost`` [P]."""

    @property
    def plan_masks(self) -> np.ndarray:
        return self.cfg.plan_masks

    @property
    def plan_cost(self) -> np.ndarray:
        return self.cfg.cost


class AnytimeConfigViews(ConfigViews):
    """:class:`ConfigViews` plus the anytime envs' per-block costs (an ``anytime_core.BlockCosts``)."""

    @property
    def block_costs(self) -> Any:
        return self.cfg.table.costs


def resolve_env_inputs(options_type: Any, options: Any, option_kwargs: Mapping[str, Any], *,
                       table: OutcomeTable | None, table_path: str | os.PathLike | None, live: Any = None,
                       num_envs: Any = None) -> tuple[Any, OutcomeTable | None]:
    """What every AdaInf env constructor does first: its options (``options_type.from_kwargs(options,
    **option_kwargs)``), then, for a vec env, a check of ``num_envs``, then the table it serves (:func:`source_table`).
    Returns ``(options, table)``; bad input → :class:`ConfigError`."""
    opts = options_type.from_kwargs(options, **option_kwargs)
    if num_envs is not None:
        check_count(num_envs, "num_envs")
    return opts, source_table(table, table_path, live)


def observation_parts(feature_dim: int, options: EnvOptions) -> dict[str, spaces.Box]:
    """The observation parts every AdaInf env shares: ``features``, ``budget`` and, with a token bucket, ``bucket``.

    A function of the feature dimension and the options only, never of the data, so every table of a backbone
    (calibration, test, live) gives the same space and a policy trained on one runs on another. Features are any
    finite float32 (they are whatever the backbone's stem pools: ReLU outputs for the reference network, noisy
    one-hots for the toy table; :meth:`EnvConfig.build` refuses NaN/inf), so their Box spans the finite float32 range
    rather than ±inf, which Gymnasium's checker flags. The budget is a fraction of the full model; the bucket part is
    bounded by the bucket's capacity.
    """
    big = np.finfo(np.float32).max
    parts: dict[str, spaces.Box] = {
        "features": spaces.Box(low=-big, high=big, shape=(int(feature_dim),), dtype=np.float32),
        "budget": spaces.Box(low=0.0, high=1.0, shape=(1,), dtype=np.float32),
    }
    bucket: TokenBucket | None = options.bucket
    if bucket is not None:
        # [bucket level after refill (fraction of full model), this request's refill, fraction of episode left]
        parts["bucket"] = spaces.Box(low=np.zeros(3, np.float32),
                                     high=np.array([bucket.cap, 1.0, 1.0], np.float32), dtype=np.float32)
    return parts


def space_of_parts(parts: Mapping[str, spaces.Box], obs_format: str) -> spaces.Space:
    """``Dict(parts)`` for ``obs_format="dict"``, else one Box concatenating them in order."""
    if obs_format == "dict":
        return spaces.Dict(dict(parts))
    return spaces.Box(low=np.concatenate([p.low for p in parts.values()]),
                      high=np.concatenate([p.high for p in parts.values()]), dtype=np.float32)


def observation_space(feature_dim: int, options: EnvOptions) -> spaces.Space:
    """The plan envs' observation space (see :func:`observation_parts`)."""
    return space_of_parts(observation_parts(feature_dim, options), options.obs_format)


def action_vector(actions: Any, n: int, *, shape_msg: str, dtype_msg: str) -> np.ndarray:
    """Batched discrete actions → int64 [n]: a trailing action dim of 1 is dropped (some callers keep it for
    Discrete) and integral floats (e.g. from a float policy buffer) are accepted; else ActionError with
    ``"actions must have shape ({n},) " + shape_msg`` (``{shape}`` filled) or ``dtype_msg`` (``{dtype}`` filled)."""
    a = np.asarray(actions)
    if a.shape == (n, 1):
        a = a[:, 0]
    if a.shape != (n,):
        raise ActionError(f"actions must have shape ({n},) " + shape_msg.format(shape=a.shape))
    if a.dtype.kind not in "iu":
        if a.dtype.kind == "f" and np.isfinite(a).all() and (a == np.floor(a)).all():
            a = a.astype(np.int64)
        else:
            raise ActionError(dtype_msg.format(dtype=a.dtype))
    return a.astype(np.int64, copy=False)


def parse_reset_options(options: Any, num_samples: int) -> tuple[int | None, float | None]:
    """``reset(options={"sample": i, "budget": b})`` → (pinned table row or None, pinned budget or None)."""
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
        if not 0 <= s < num_samples:
            raise ConfigError(f"reset option 'sample'={s} out of range [0, {num_samples})")
    b = options.get("budget")
    if b is not None:
        b = check_budget_value(b, "reset option 'budget'")
    return s, b


@dataclasses.dataclass
class EnvConfig:
    """Validated options plus the arrays every step reads (no per-step allocation beyond the outputs)."""

    options: EnvOptions
    process: BudgetProcess  # the options' budget process, bound to the cheapest plan's cost
    lam: float  # λ: starts as options.lam; the vec env lets set_attr("lam", ...) change it (Lagrangian training)
    # arrays
    features: np.ndarray  # [N, F] float32, read-only
    correct: np.ndarray | None  # [N, P] bool (None in live mode)
    loss: np.ndarray | None  # [N, P] float32
    cost: np.ndarray  # [P] float64 fraction of the full model
    plan_masks: np.ndarray  # [P, B] bool
    codes_sorted: np.ndarray  # [P] int64 plan codes, sorted (MultiBinary actions)
    code_order: np.ndarray  # [P] plan index of each sorted code
    cheapest: int
    observation_space: spaces.Space
    action_space: spaces.Space

    @property
    def bucket(self) -> TokenBucket | None:
        return self.options.bucket

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
        options: EnvOptions,
    ) -> "EnvConfig":
        if not isinstance(options, EnvOptions):
            raise ConfigError(f"options must be an EnvOptions, got {type(options).__name__}")
        features = np.ascontiguousarray(features, dtype=np.float32)
        cost = np.ascontiguousarray(cost, dtype=np.float64)
        if features.ndim != 2:
            raise TableFormatError(f"features must be [N, F], got shape {features.shape}")
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
        process = make_budget_process(options.budget).bind(float(cost.min()))

        plan_masks = np.asarray(plan_masks, dtype=bool)
        codes = codes_from_masks(plan_masks) if plan_masks.shape[1] <= MAX_CODE_BLOCKS else None
        if codes is None:
            if options.action_type == "mask":
                raise ConfigError(f"MultiBinary actions need ≤ {MAX_CODE_BLOCKS} blocks, the plans have "
                                  f"{plan_masks.shape[1]}")
            codes = np.arange(cost.size, dtype=np.int64)
        order = np.argsort(codes, kind="stable")
        act_space: spaces.Space = (spaces.Discrete(int(cost.size)) if options.action_type == "plan"
                                   else spaces.MultiBinary(int(plan_masks.shape[1])))
        return cls(
            options=options, process=process, lam=options.lam, features=features, correct=correct, loss=loss,
            cost=cost, plan_masks=plan_masks, codes_sorted=codes[order], code_order=order,
            cheapest=int(np.argmin(cost)), observation_space=observation_space(features.shape[1], options),
            action_space=act_space,
        )

    @classmethod
    def from_table(cls, table: OutcomeTable, options: EnvOptions) -> "EnvConfig":
        if not isinstance(table, OutcomeTable):
            raise ConfigError(f"table must be an OutcomeTable, got {type(table).__name__}")
        return cls.build(features=table.features, correct=table.correct, loss=table.loss,
                         cost=table.plan_cost(options.cost_unit), plan_masks=table.plan_masks, options=options)

    # ------------------------------------------------------------------ actions
    def plan_of(self, action: Any) -> int:
        """One env's action → plan index, or :class:`ActionError`."""
        if self.options.action_type == "plan":
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
        codes = codes_from_masks(m)
        pos = np.minimum(np.searchsorted(self.codes_sorted, codes), self.num_plans - 1)
        bad = self.codes_sorted[pos] != codes
        if bad.any():
            raise ActionError(f"block mask {m[int(np.argmax(bad))].astype(int).tolist()} is not in the plan list "
                              f"({self.num_plans} plans); choose one of env.plan_masks")
        return self.code_order[pos]

    def plans_of_actions(self, actions: Any, n: int) -> np.ndarray:
        """Batched actions → plan indices [n] (vec env)."""
        if self.options.action_type == "mask":
            return self.plans_of_masks(actions, n)
        a = action_vector(actions, n, shape_msg="(one plan index per env), got {shape}",
                          dtype_msg="actions must be integer plan indices, got dtype {dtype}")
        if n and (int(a.min()) < 0 or int(a.max()) >= self.num_plans):
            raise ActionError(f"plan index out of range [0, {self.num_plans}): got min {int(a.min())}, "
                              f"max {int(a.max())}")
        return a

    # ------------------------------------------------------------------ options
    def parse_options(self, options: Any) -> tuple[int | None, float | None]:
        """reset(options={"sample": i, "budget": b}) → (pinned sample row or None, pinned budget or None)."""
        return parse_reset_options(options, self.num_samples)
