"""Budget processes: where each request's compute budget comes from.

A budget is a fraction of the full model's cost (MACs, or measured latency) in (0, 1]. The environment
(:mod:`adainf_env.envs.plan.env`) asks a budget process for one budget per request.

Randomness contract (what makes :class:`~adainf_env.envs.plan.vec_env.AdaInfVecEnv` reproduce N independent
:class:`~adainf_env.envs.plan.env.AdaInfEnv` exactly): every process is a *stateless, vectorised* function of

* ``u`` — one uniform number in [0, 1) per request, drawn by the env from its ``np_random`` (every process consumes
  exactly one per request, used or not, so switching the process never shifts the sample order);
* ``t`` — the request's index inside the episode (0 for the first request);
* ``b_prev`` and ``aux`` — the previous budget and one per-episode float (a phase, a trace offset) that
  :meth:`BudgetProcess.start` returns.

All methods take and return float64 numpy arrays of any shape (the single env uses shape (1,), the vec env (N,)).

Processes (name → class; ``make_budget_process`` builds one from a string or dict):

=================  ==========================================================================================
``uniform``        b ~ U[low, high]; ``low`` defaults to the cheapest plan's cost, ``high`` to 1.
``fixed``          b = value.
``random_walk``    b_0 ~ U[low, high] (or ``start``); b_t = clip(b_{t-1} + σ·√12·(u − ½), low, high)
                   — increments uniform with standard deviation σ (``sigma``).
``step``           b_t = values[(t // every) % len(values)]: a deterministic step schedule.
``periodic``       period ``period`` requests, random phase per episode (or ``phase``). ``shape="sine"``:
                   b = low + (high − low)·(½ + ½·sin 2π(t/period + phase)); ``shape="load"``: the budget falls
                   when a diurnal two-peak load curve rises (morning peak at 0.35, evening peak at 0.8 of the
                   period): b = high − (high − low)·load(x).
``trace``          replay of a CSV trace (one budget per row; a header row and a ``budget`` column optional);
                   the episode starts at a random row (``start="random"``) or row 0 (``start="zero"``), wraps.
=================  ==========================================================================================

:class:`TokenBucket` turns any process into a *shared* compute budget (stream mode): each request refills the
bucket by the process's budget (the average budget, when the process is ``fixed``), unspent budget carries over
up to ``cap``, a request may spend what is in the bucket (at most 1, one full model), so what is constrained is the
average cost over the stream, not every request.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from adainf_env.errors import ConfigError

__all__ = [
    "BudgetProcess",
    "UniformBudget",
    "FixedBudget",
    "RandomWalkBudget",
    "StepBudget",
    "PeriodicBudget",
    "TraceBudget",
    "TokenBucket",
    "make_budget_process",
    "load_trace",
    "check_budget_value",
    "BUDGET_PROCESSES",
    "DEFAULT_BUCKET_CAP",
]

#: A token bucket's default capacity (one full-model run): the default of :class:`TokenBucket`, of the envs'
#: ``bucket=True`` and of :class:`adainf_env.stream.StreamSpec`.
DEFAULT_BUCKET_CAP = 1.0


def check_budget_value(value: Any, what: str = "budget") -> float:
    """A single budget as float in (0, 1], else :class:`ConfigError` naming ``what``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number in (0, 1] (fraction of the full model), got {value!r}") from None
    if not (math.isfinite(v) and 0.0 < v <= 1.0):
        raise ConfigError(f"{what} must lie in (0, 1] (fraction of the full model), got {value!r}")
    return v


def _check_range(low: float | None, high: float, name: str) -> None:
    check_budget_value(high, f"{name}: high")
    if low is not None:
        check_budget_value(low, f"{name}: low")
        if low > high:
            raise ConfigError(f"{name}: low={low} must not exceed high={high}")


class BudgetProcess:
    """Base class. Subclasses are frozen dataclasses (picklable, hashable, comparable)."""

    name: str = "?"

    def bind(self, floor: float) -> "BudgetProcess":
        """Fill defaults that depend on the plan space (``low`` = cheapest plan cost ``floor``); validate."""
        return self

    def start(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First budget of an episode and the episode's ``aux`` value, from one uniform per env."""
        raise NotImplementedError

    def next(self, t: np.ndarray, b_prev: np.ndarray, aux: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Budget of request ``t`` ≥ 1 of the episode."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class UniformBudget(BudgetProcess):
    low: float | None = None
    high: float = 1.0
    name = "uniform"

    def bind(self, floor: float) -> "UniformBudget":
        low = self.low if self.low is not None else min(floor, self.high)
        _check_range(low, self.high, self.name)
        return dataclasses.replace(self, low=float(low))

    def start(self, u):
        return self.low + (self.high - self.low) * u, np.zeros_like(u)

    def next(self, t, b_prev, aux, u):
        return self.low + (self.high - self.low) * u


@dataclasses.dataclass(frozen=True)
class FixedBudget(BudgetProcess):
    value: float = 0.5
    name = "fixed"

    def __post_init__(self) -> None:
        check_budget_value(self.value, "fixed budget value")

    def start(self, u):
        return np.full_like(u, float(self.value)), np.zeros_like(u)

    def next(self, t, b_prev, aux, u):
        return np.full_like(u, float(self.value))


@dataclasses.dataclass(frozen=True)
class RandomWalkBudget(BudgetProcess):
    sigma: float = 0.05
    low: float | None = None
    high: float = 1.0
    start_value: float | None = None
    name = "random_walk"

    def __post_init__(self) -> None:
        if not (math.isfinite(float(self.sigma)) and float(self.sigma) >= 0):
            raise ConfigError(f"random_walk: sigma must be a finite number ≥ 0, got {self.sigma!r}")
        if self.start_value is not None:
            check_budget_value(self.start_value, "random_walk: start_value")

    def bind(self, floor: float) -> "RandomWalkBudget":
        low = self.low if self.low is not None else min(floor, self.high)
        _check_range(low, self.high, self.name)
        if self.start_value is not None and not low <= self.start_value <= self.high:
            raise ConfigError(f"random_walk: start_value={self.start_value} outside [low={low}, high={self.high}]")
        return dataclasses.replace(self, low=float(low))

    def start(self, u):
        if self.start_value is not None:
            return np.full_like(u, float(self.start_value)), np.zeros_like(u)
        return self.low + (self.high - self.low) * u, np.zeros_like(u)

    def next(self, t, b_prev, aux, u):
        # √12·(u − ½) has unit variance, so sigma is the increment's standard deviation (fraction of full model).
        return np.clip(b_prev + (self.sigma * math.sqrt(12.0)) * (u - 0.5), self.low, self.high)


@dataclasses.dataclass(frozen=True)
class StepBudget(BudgetProcess):
    values: tuple[float, ...] = (0.8, 0.3, 0.6)
    every: int = 100
    name = "step"

    def __post_init__(self) -> None:
        vals = tuple(self.values) if isinstance(self.values, (list, tuple, np.ndarray)) else None
        if not vals:
            raise ConfigError(f"step: values must be a non-empty list of budgets, got {self.values!r}")
        object.__setattr__(self, "values", tuple(check_budget_value(v, "step: value") for v in vals))
        if isinstance(self.every, bool) or not isinstance(self.every, (int, np.integer)) or self.every < 1:
            raise ConfigError(f"step: every must be an integer ≥ 1 (requests per step), got {self.every!r}")

    def _at(self, t):
        arr = np.asarray(self.values, dtype=np.float64)
        return arr[(np.asarray(t, dtype=np.int64) // int(self.every)) % len(arr)]

    def start(self, u):
        return np.full_like(u, self.values[0]), np.zeros_like(u)

    def next(self, t, b_prev, aux, u):
        return np.broadcast_to(self._at(t), np.shape(u)).astype(np.float64)


def _load_curve(x: np.ndarray) -> np.ndarray:
    """Diurnal request load in [0, 1] over one period x ∈ [0, 1): a morning and a (higher) evening peak."""
    m = 0.6 * np.exp(-(((x - 0.35) / 0.08) ** 2))
    e = np.exp(-(((x - 0.8) / 0.1) ** 2))
    return np.minimum(m + e, 1.0)


@dataclasses.dataclass(frozen=True)
class PeriodicBudget(BudgetProcess):
    period: float = 200.0
    low: float | None = None
    high: float = 1.0
    shape: str = "sine"
    phase: float | None = None
    name = "periodic"

    def __post_init__(self) -> None:
        if not (math.isfinite(float(self.period)) and float(self.period) > 0):
            raise ConfigError(f"periodic: period must be > 0 requests, got {self.period!r}")
        if self.shape not in ("sine", "load"):
            raise ConfigError(f"periodic: shape must be 'sine' or 'load', got {self.shape!r}")
        if self.phase is not None and not (math.isfinite(float(self.phase)) and 0 <= float(self.phase) < 1):
            raise ConfigError(f"periodic: phase must lie in [0, 1) (fraction of a period), got {self.phase!r}")

    def bind(self, floor: float) -> "PeriodicBudget":
        low = self.low if self.low is not None else min(floor, self.high)
        _check_range(low, self.high, self.name)
        return dataclasses.replace(self, low=float(low))

    def _value(self, t, phase):
        x = np.asarray(t, dtype=np.float64) / float(self.period) + phase
        if self.shape == "sine":
            v = self.low + (self.high - self.low) * (0.5 + 0.5 * np.sin(2.0 * np.pi * x))
        else:
            v = self.high - (self.high - self.low) * _load_curve(np.mod(x, 1.0))
        return np.clip(v, self.low, self.high)

    def start(self, u):
        phase = np.full_like(u, float(self.phase)) if self.phase is not None else np.array(u, dtype=np.float64)
        return self._value(np.zeros_like(u), phase), phase

    def next(self, t, b_prev, aux, u):
        return self._value(np.broadcast_to(np.asarray(t, dtype=np.float64), np.shape(u)), aux)


def load_trace(path: str | os.PathLike, column: str | int | None = None) -> np.ndarray:
    """Read a budget trace from a CSV file → float64 [L], each in (0, 1].

    One budget per row. An optional first header row names the columns; with several columns the ``budget``
    column (or ``column``, a name or 0-based index) is used, else the last one. Blank lines and lines starting with
    ``#`` are skipped. Anything else that is not a budget raises :class:`ConfigError` naming the file and line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"budget trace {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"budget trace {path} is unreadable: {e}") from None
    values: list[float] = []
    col_idx: int | None = column if isinstance(column, int) and not isinstance(column, bool) else None
    header_seen = False
    for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [c.strip() for c in row]
        if not cells or all(c == "" for c in cells) or cells[0].startswith("#"):
            continue
        if not header_seen and not values:
            header_seen = True
            if not _is_number(cells[0 if len(cells) == 1 else -1]) and not any(_is_number(c) for c in cells):
                names = [c.lower() for c in cells]
                want = str(column).lower() if isinstance(column, str) else "budget"
                if want in names:
                    col_idx = names.index(want)
                elif isinstance(column, str):
                    raise ConfigError(f"budget trace {path}: no column {column!r} in header {cells}")
                continue
        idx = col_idx if col_idx is not None else len(cells) - 1
        if idx >= len(cells) or idx < -len(cells):
            raise ConfigError(f"budget trace {path}, line {lineno}: no column {idx} in {row!r}")
        cell = cells[idx]
        try:
            v = float(cell)
        except ValueError:
            raise ConfigError(f"budget trace {path}, line {lineno}: {cell!r} is not a number") from None
        if not (math.isfinite(v) and 0.0 < v <= 1.0):
            raise ConfigError(f"budget trace {path}, line {lineno}: budget {cell!r} outside (0, 1]")
        values.append(v)
    if not values:
        raise ConfigError(f"budget trace {path} holds no budgets")
    return np.asarray(values, dtype=np.float64)


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True, eq=False)
class TraceBudget(BudgetProcess):
    values: np.ndarray = dataclasses.field(default_factory=lambda: np.array([1.0]))
    start_at: str = "random"
    source: str | None = None
    name = "trace"

    def __post_init__(self) -> None:
        v = np.asarray(self.values, dtype=np.float64).reshape(-1)
        if v.size == 0 or not np.isfinite(v).all() or (v <= 0).any() or (v > 1).any():
            raise ConfigError("trace: values must be a non-empty list of budgets in (0, 1]")
        v.setflags(write=False)
        object.__setattr__(self, "values", v)
        if self.start_at not in ("random", "zero"):
            raise ConfigError(f"trace: start must be 'random' or 'zero', got {self.start_at!r}")

    @classmethod
    def from_csv(cls, path: str | os.PathLike, *, start: str = "random", column: str | int | None = None):
        return cls(values=load_trace(path, column), start_at=start, source=str(path))

    def start(self, u):
        n = len(self.values)
        off = np.zeros_like(u) if self.start_at == "zero" else np.minimum(np.floor(u * n), n - 1)
        return self.values[off.astype(np.int64)], off

    def next(self, t, b_prev, aux, u):
        idx = (aux.astype(np.int64) + np.asarray(t, dtype=np.int64)) % len(self.values)
        return self.values[idx]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TraceBudget) and self.start_at == other.start_at and np.array_equal(
            self.values, other.values)

    __hash__ = None  # type: ignore[assignment]


@dataclasses.dataclass(frozen=True)
class TokenBucket:
    """Shared compute budget for the stream mode (all quantities in fractions of one full-model run).

    Per request: ``level ← min(cap, level + refill)`` where ``refill`` is ``rate`` if given, else the budget
    process's value for this request (the average budget when the process is ``fixed``); the request may spend
    ``available = min(level, 1)``; after it, ``level ← max(level − cost, 0)``. An overrun (cost > available) is
    penalised by the env's reward and leaves the bucket empty, not in debt, so it is not charged twice.
    """

    rate: float | None = None
    cap: float = DEFAULT_BUCKET_CAP
    initial: float = 0.0

    def __post_init__(self) -> None:
        if self.rate is not None:
            check_budget_value(self.rate, "token bucket rate")
        for k in ("cap", "initial"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not math.isfinite(v):
                raise ConfigError(f"token bucket {k} must be a finite number, got {v!r}")
        if self.cap <= 0:
            raise ConfigError(f"token bucket cap must be > 0 (fraction of the full model), got {self.cap}")
        if not 0 <= self.initial <= self.cap:
            raise ConfigError(f"token bucket initial level must lie in [0, cap={self.cap}], got {self.initial}")

    def refill(self, level: np.ndarray, process_budget: np.ndarray) -> np.ndarray:
        add = process_budget if self.rate is None else self.rate
        return np.minimum(level + add, self.cap)

    @staticmethod
    def available(level: np.ndarray) -> np.ndarray:
        return np.minimum(level, 1.0)

    @staticmethod
    def spend(level: np.ndarray, cost: np.ndarray) -> np.ndarray:
        return np.maximum(level - cost, 0.0)


BUDGET_PROCESSES: dict[str, type[BudgetProcess]] = {
    "uniform": UniformBudget,
    "fixed": FixedBudget,
    "random_walk": RandomWalkBudget,
    "step": StepBudget,
    "periodic": PeriodicBudget,
    "trace": TraceBudget,
}

# The one positional argument accepted by the string form "name:ARG".
_POSITIONAL = {"fixed": "value", "trace": "path", "uniform": "low", "random_walk": "sigma", "periodic": "period"}


def _parse_scalar(s: str) -> Any:
    s = s.strip()
    for conv in (int, float):
        try:
            return conv(s)
        except ValueError:
            pass
    if "/" in s:  # list shorthand for step schedules: values=0.8/0.3/0.6
        return [_parse_scalar(x) for x in s.split("/")]
    return s


def _check_process_name(name: Any, spec: Any) -> None:
    """:class:`ConfigError` naming an unknown process (and the spec it came from) with the known names."""
    if not isinstance(name, str) or name not in BUDGET_PROCESSES:
        raise ConfigError(f"unknown budget process {name!r} in spec {spec!r}; known processes: "
                          f"{', '.join(sorted(BUDGET_PROCESSES))}")


def make_budget_process(spec: "str | Mapping[str, Any] | BudgetProcess") -> BudgetProcess:
    """Build a budget process from a spec.

    Accepted forms: a :class:`BudgetProcess`; a name (``"uniform"``); ``"name:ARG"`` with the process's main
    argument (``"fixed:0.3"``, ``"trace:path.csv"``, ``"random_walk:0.02"``); ``"name:k=v,k=v"``
    (``"step:values=0.8/0.3,every=50"``); a dict ``{"name": "periodic", "period": 100, "shape": "load"}``.
    Unknown names or arguments raise :class:`ConfigError`.
    """
    if isinstance(spec, BudgetProcess):
        return spec
    if isinstance(spec, str):
        name, _, rest = spec.partition(":")
        _check_process_name(name.strip(), spec)
        kwargs: dict[str, Any] = {}
        if rest:
            if "=" not in rest:
                if name not in _POSITIONAL:
                    raise ConfigError(f"budget process {name!r} takes no positional argument (got {spec!r})")
                kwargs[_POSITIONAL[name]] = rest if name == "trace" else _parse_scalar(rest)
            else:
                for item in rest.split(","):
                    k, eq, v = item.partition("=")
                    if not eq:
                        raise ConfigError(f"budget spec {spec!r}: expected key=value, got {item!r}")
                    # A path is taken verbatim: "/" is the list shorthand of _parse_scalar, not of file names.
                    kwargs[k.strip()] = v.strip() if k.strip() == "path" else _parse_scalar(v)
        spec = {"name": name.strip(), **kwargs}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"budget process spec must be a name, a dict or a BudgetProcess, got {type(spec).__name__}")
    kwargs = dict(spec)
    name = kwargs.pop("name", None)
    _check_process_name(name, spec)
    if name == "trace":
        path = kwargs.pop("path", None)
        if "values" in kwargs:
            if path is not None:
                raise ConfigError("trace: give either path or values, not both")
            kwargs["start_at"] = kwargs.pop("start", "random")
            return _construct(TraceBudget, kwargs, name)
        if path is None:
            raise ConfigError("trace: needs path=CSV file (or values=[...])")
        extra = set(kwargs) - {"start", "column"}
        if extra:
            raise ConfigError(f"trace: unknown argument(s) {sorted(extra)}; expected path, start, column")
        return TraceBudget.from_csv(path, **kwargs)
    if name == "random_walk" and "start" in kwargs:
        kwargs["start_value"] = kwargs.pop("start")
    if name == "step" and isinstance(kwargs.get("values"), (int, float)):
        kwargs["values"] = [kwargs["values"]]
    return _construct(BUDGET_PROCESSES[name], kwargs, name)


def _construct(cls: type, kwargs: dict[str, Any], name: str) -> BudgetProcess:
    fields = {f.name for f in dataclasses.fields(cls)} - {"source"}
    extra = set(kwargs) - fields
    if extra:
        raise ConfigError(f"{name}: unknown argument(s) {sorted(extra)}; expected {sorted(fields)}")
    for k, v in kwargs.items():
        if k in ("low", "high", "value", "sigma", "period", "phase", "start_value") and v is not None:
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ConfigError(f"{name}: {k} must be a number, got {v!r}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{name}: bad arguments ({e})") from None
