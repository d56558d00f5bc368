"""The one interface every scheduler implements.

A scheduler g(x, M) maps cheap per-sample features and a budget to a plan index (into the outcome table's plan
list). Budgets and costs are fractions of the full model (see :mod:`adainf_env.tables.outcomes`).

Two entry points:

* :meth:`Scheduler.select` — ``features [N, F]``, ``budgets [N]`` (and, in the stream setting, the shared-budget
  state) → ``plans [N]``. This is what runs in deployment.
* :meth:`Scheduler.decide` — the evaluation harness's view over a table: returns the plan whose prediction is used
  *and* the cost actually paid. The default is ``select`` + the plan's cost; cascades (which run a cheap plan first
  and may recompute) and the oracle (which reads labels — a bound) override it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from adainf_env.errors import ConfigError, TableMismatchError
from adainf_env.fileio import atomic_write, safe_np_load
from adainf_env.tables.outcomes import OutcomeTable

__all__ = ["Scheduler", "Decisions", "PlanSpace", "check_budgets"]


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
        """Load a scheduler saved by :meth:`save`; if ``table`` is given, refuse a mismatched plan/feature space."""
        raw = safe_np_load(path)
        if "scheduler" not in raw:
            raise TableMismatchError(f"{path}: not a saved AdaInf scheduler")
        name = str(raw["scheduler"])
        if cls.name != "scheduler" and name != cls.name:
            raise TableMismatchError(f"{path}: holds a {name!r} scheduler, not {cls.name!r}")
        target = cls if cls.name == name else _registry_lookup(name)
        obj = target(**json.loads(str(raw["config_json"])))
        obj.plan_space = PlanSpace.from_arrays({k[3:]: v for k, v in raw.items() if k.startswith("ps_")})
        obj.load_state_arrays({k[3:]: v for k, v in raw.items() if k.startswith("st_")})
        if table is not None:
            obj._check_table(table)
        return obj

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


def _registry_lookup(name: str) -> type[Scheduler]:
    from agents.registry import scheduler_class  # late import: registry imports every scheduler module

    return scheduler_class(name)
