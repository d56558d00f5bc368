"""The two interfaces every scheduler implements: :class:`Scheduler` (the plan env) and :class:`AnytimePolicy` (the
anytime env).

A (plan-env) scheduler g(x, M) maps cheap per-sample features and a budget to a plan index (into the outcome table's plan
list). Budgets and costs are fractions of the full model (see :mod:`adainf_env.tables.outcomes`).

Two entry points:

* :meth:`Scheduler.select` — ``features [N, F]``, ``budgets [N]`` (and, in the stream setting, the shared-budget
  state) → ``plans [N]``. This is what runs in deployment.
* :meth:`Scheduler.decide` — the evaluation harness's view over a table: returns the plan whose prediction is used
  *and* the cost actually paid. The default is ``select`` + the plan's cost; cascades (which run a cheap plan first
  and may recompute) and the oracle (which reads labels — a bound) override it.

An anytime policy (:class:`AnytimePolicy`) acts block by block on the anytime env's kernel
(:class:`~adainf_env.envs.anytime.core.RequestBatch`): :meth:`AnytimePolicy.fit` on a calibration table,
:meth:`AnytimePolicy.begin` for new requests, :meth:`AnytimePolicy.act` for one action per request in flight,
:meth:`AnytimePolicy.soft_budget` to say whether it may overrun a request's budget.

:data:`PLAN_PROTOCOL` and :data:`ANYTIME_PROTOCOL` name what a class needs to be run as one or the other
(:func:`missing_members`; the registry uses them to accept a user's own class by ``package.module:ClassName``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from adainf_env.envs.anytime.actions import AnytimeTable
from adainf_env.envs.anytime.core import RequestBatch
from adainf_env.errors import ConfigError, TableMismatchError
from adainf_env.fileio import atomic_write, safe_np_load
from adainf_env.plans import codes_from_masks
from adainf_env.tables.outcomes import OutcomeTable

__all__ = ["Scheduler", "AnytimePolicy", "Decisions", "PlanSpace", "check_budgets", "PLAN_PROTOCOL",
           "ANYTIME_PROTOCOL", "missing_members", "read_saved"]


def check_budgets(budgets: np.ndarray | float, n: int | None = None) -> np.ndarray:
    """Validate budgets (fractions of the full model, in (0, 1]) and return them as float64 [N]."""
    b = np.asarray(budgets, dtype=np.float64)
    if n is not None:
        b = np.broadcast_to(b, (n,)) if b.ndim == 0 else b
        if b.shape != (n,):
            raise ConfigError(f"budgets must have shape ({n},), got {b.shape}")
    if not np.isfinite(b).all() or (b <= 0).any() or (b > 1).any():
        bad = b[~(np.isfinite(b) & (b > 0) & (b <= 1))]
        raise ConfigError(f"budgets must lie in (0, 1] (fraction of the full model); got {bad[:5].tolist()}")
    return np.array(b, dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class Decisions:
    """What a scheduler did on N requests: the plan whose prediction counts and the cost paid (fraction)."""

    plan: np.ndarray  # [N] int64
    cost: np.ndarray  # [N] float64


@dataclasses.dataclass(frozen=True)
class PlanSpace:
    """Identity of the plan space / feature space a scheduler was fitted for (saved with it, checked on load)."""

    plan_masks: np.ndarray  # [P, B] bool
    plan_cost: np.ndarray  # [P] float64, fraction of the full model
    feature_dim: int
    cost_unit: str = "macs"

    @classmethod
    def from_table(cls, table: OutcomeTable, cost_unit: str = "macs") -> "PlanSpace":
        return cls(table.plan_masks.copy(), table.plan_cost(cost_unit), table.feature_dim, cost_unit)

    def check(self, other: "PlanSpace", what: str = "scheduler") -> None:
        if self.feature_dim != other.feature_dim:
            raise TableMismatchError(f"{what} was fitted on {self.feature_dim}-d features, got {other.feature_dim}-d")
        if self.plan_masks.shape != other.plan_masks.shape or not np.array_equal(self.plan_masks, other.plan_masks):
            raise TableMismatchError(
                f"{what} was fitted for a plan space of shape {self.plan_masks.shape}, got {other.plan_masks.shape} "
                "with different plans"
            )
        if self.cost_unit != other.cost_unit:
            raise TableMismatchError(f"{what} was fitted with cost unit {self.cost_unit!r}, got {other.cost_unit!r}")

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "plan_masks": self.plan_masks,
            "plan_cost": self.plan_cost,
            "feature_dim": np.array(self.feature_dim),
            "cost_unit": np.array(self.cost_unit),
        }

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> "PlanSpace":
        return cls(a["plan_masks"].astype(bool), a["plan_cost"].astype(np.float64), int(a["feature_dim"]),
                   str(a["cost_unit"]))


class Scheduler:
    """Base class. Subclasses set ``name`` and implement :meth:`fit` and :meth:`select` (or :meth:`decide`)."""

    name: ClassVar[str] = "scheduler"
    #: True for schedulers that read labels or the test split (oracle, lut_upper): plotted and tabled as bounds.
    is_bound: ClassVar[bool] = False

    plan_space: PlanSpace | None = None

    def fit(self, table: OutcomeTable, *, seed: int = 0, cost_unit: str = "macs") -> "Scheduler":
        """Fit on a calibration table (never the test split). Returns ``self``."""
        self.plan_space = PlanSpace.from_table(table, cost_unit)
        return self

    def select(self, features: np.ndarray, budgets: np.ndarray, state: dict[str, Any] | None = None) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} has no feature-only policy; use decide()")

    def decide(self, table: OutcomeTable, rows: np.ndarray, budgets: np.ndarray,
               state: dict[str, Any] | None = None) -> Decisions:
        """Plans and paid costs for ``table`` rows under ``budgets`` (see module docstring)."""
        self._check_table(table)
        budgets = check_budgets(budgets, len(rows))
        plan = np.asarray(self.select(table.features[rows], budgets, state), dtype=np.int64)
        return Decisions(plan=plan, cost=self.plan_space.plan_cost[plan])

    # ----------------------------------------------------------------- helpers
    def _validated_inputs(self, features: np.ndarray, budgets: np.ndarray, *, fitted: bool = True
                          ) -> tuple[np.ndarray, np.ndarray]:
        """``select``'s argument checks: fitted, features [N, F] of the fitted width, budgets in (0, 1]."""
        if not fitted or self.plan_space is None:
            raise ConfigError(f"{self.name}: call fit() before select()")
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.plan_space.feature_dim:
            raise ConfigError(f"{self.name}: features must be [N, {self.plan_space.feature_dim}], got "
                              f"{features.shape}")
        return features, check_budgets(budgets, features.shape[0])

    def _check_table(self, table: OutcomeTable) -> None:
        if self.plan_space is None:
            raise ConfigError(f"{self.name}: call fit() before using the scheduler")
        self.plan_space.check(PlanSpace.from_table(table, self.plan_space.cost_unit), self.name)

    def save(self, path: str | os.PathLike) -> Path:
        """Save to ``path``. Default: ``.npz`` of :meth:`state_arrays` + the plan space (atomic, no pickles)."""
        if self.plan_space is None:
            raise ConfigError(f"{self.name}: nothing to save before fit()")
        arrays = {f"ps_{k}": v for k, v in self.plan_space.to_arrays().items()}
        arrays.update({f"st_{k}": v for k, v in self.state_arrays().items()})
        arrays["scheduler"] = np.array(self.name)
        arrays["config_json"] = np.array(json.dumps(self.config(), sort_keys=True))
        path = Path(path)
        with atomic_write(path, "wb") as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, table: OutcomeTable | None = None) -> "Scheduler":
        """Load a scheduler of this class saved by :meth:`save`; if ``table`` is given, refuse a mismatched
        plan/feature space. A file of another scheduler is :class:`TableMismatchError`. To load a saved scheduler of
        any kind, :func:`agents.load_scheduler` finds its class by the saved name."""
        raw = read_saved(path)
        name = str(raw["scheduler"])
        if cls is Scheduler:
            raise ConfigError(f"{path}: Scheduler.load needs the scheduler's class; use agents.load_scheduler(path) "
                              f"to load the saved {name!r}")
        if name != cls.name:
            raise TableMismatchError(f"{path}: holds a {name!r} scheduler, not {cls.name!r}")
        return cls(**json.loads(str(raw["config_json"]))).restore(raw, table)

    def restore(self, raw: dict[str, np.ndarray], table: OutcomeTable | None = None) -> "Scheduler":
        """Put the fitted state of a saved file's arrays (:func:`read_saved`) into this scheduler, built with the
        saved config; with ``table``, refuse a mismatched plan/feature space. Returns ``self``."""
        self.plan_space = PlanSpace.from_arrays({k[3:]: v for k, v in raw.items() if k.startswith("ps_")})
        self.load_state_arrays({k[3:]: v for k, v in raw.items() if k.startswith("st_")})
        if table is not None:
            self._check_table(table)
        return self

    def provenance(self) -> dict[str, Any]:
        """Fields every result record of this scheduler carries besides the metrics (learners: ``selected_step``,
        ``prior``; see :meth:`agents.learners.base.LearnerBase.provenance`). Baselines: none."""
        return {}

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments (JSON-serialisable) needed to rebuild this scheduler."""
        return {}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Fitted state as named numpy arrays (override in learners)."""
        return {}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        pass


def read_saved(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a file written by :meth:`Scheduler.save` (no pickles); :class:`TableMismatchError` for any other
    file. ``str(raw["scheduler"])`` is the saved scheduler's name, ``raw["config_json"]`` its constructor config."""
    raw = safe_np_load(path)
    if "scheduler" not in raw or "config_json" not in raw:
        raise TableMismatchError(f"{path}: not a saved AdaInf scheduler")
    return raw


class AnytimePolicy:
    """Base class of the anytime-env policies: what the anytime harness
    (:mod:`agents.evaluation.anytime_harness`), the anytime envs and the comparison driver call.

    Subclasses set ``name`` and implement :meth:`act` (and usually :meth:`fit` and :meth:`begin`, calling these
    first). ``is_bound``: the policy reads labels (a bound, e.g. ``anytime_oracle``); ``needs_soft_budget``: it
    meets budgets only on average and is served under the env's soft budget (:meth:`soft_budget`).
    """

    name: ClassVar[str] = "anytime_policy"
    is_bound: ClassVar[bool] = False
    needs_soft_budget: ClassVar[bool] = False

    def __init__(self) -> None:
        self.at: AnytimeTable | None = None

    def fit(self, table: OutcomeTable, *, seed: int = 0) -> "AnytimePolicy":
        """Fit on a calibration table (never the test split): here the kernel table, the plan codes and costs."""
        self.at = AnytimeTable.from_table(table)
        self.seed = int(seed)
        self.codes = codes_from_masks(table.plan_masks)
        self.cost = table.plan_cost()
        return self

    def _check_fitted(self) -> None:
        if self.at is None:
            raise ConfigError(f"{self.name}: call fit(calibration_table) first")

    def soft_budget(self, state: dict[str, Any] | None) -> bool:
        """Whether requests given ``state`` are served under the env's soft budget (the policy may overrun)."""
        return self.needs_soft_budget

    def begin(self, batch: RequestBatch, idx: np.ndarray, table: OutcomeTable,
              state: dict[str, Any] | None = None) -> None:
        """New requests in slots ``idx`` (their rows and budgets are in ``batch``; ``state``: stream bucket arrays
        for those slots — ``available``, ``avg_budget``, ``level``, ``cap``, ``step``, ``horizon``)."""
        self._check_fitted()

    def act(self, batch: RequestBatch) -> np.ndarray:
        """[N] kernel actions (RUN / SKIP / READ / STOP) for the active slots of ``batch`` (STOP elsewhere)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement act()")

    def provenance(self) -> dict[str, Any]:
        """Fields every result record of this policy carries besides the metrics (learners: ``selected_step``,
        ``prior``). Scripted policies: none."""
        return {}


#: What a class needs to run as a plan-env scheduler: ``fit`` and a policy (``select`` or ``decide``) — subclassing
#: :class:`Scheduler` supplies the rest (``decide`` from ``select``, ``provenance``, ``is_bound``, ``save``).
PLAN_PROTOCOL: tuple[str, ...] = ("fit", "select|decide", "provenance", "is_bound")
#: What a class needs to run as an anytime policy (subclassing :class:`AnytimePolicy` supplies all but ``act``).
ANYTIME_PROTOCOL: tuple[str, ...] = ("fit", "begin", "act", "soft_budget", "provenance", "is_bound")

# methods whose base-class versions only raise NotImplementedError: inherited, they do not count as implemented
_STUBS = {"select": Scheduler.select, "act": AnytimePolicy.act}


def missing_members(cls: type, protocol: tuple[str, ...]) -> list[str]:
    """The members of ``protocol`` (``"a|b"``: either) that class ``cls`` lacks; ``[]`` when it fits. A method
    inherited only as the base class's ``NotImplementedError`` stub counts as missing; ``decide`` counts only where
    it is not :class:`Scheduler`'s default (which calls ``select``)."""
    def has(member: str) -> bool:
        attr = getattr(cls, member, None)
        if attr is None:
            return False
        if member == "decide":
            return attr is not Scheduler.decide
        return attr is not _STUBS.get(member)

    return [m for m in protocol if not any(has(alt) for alt in m.split("|"))]
