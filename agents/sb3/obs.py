"""What an SB3 policy sees: the flat observation of an AdaInf request and the env wrapper that presents it.

Observation ``[x̂, M, log M, 1[c_k fits M] (K), 1[k = LUT plan at M] (K)]`` over K candidate plans; actions are
candidate indices, mapped to the env's plan indices; the action mask is the candidates that fit the budget
(:func:`adainf_env.feasibility.feasible_with_fallback`, the rule the harness counts overruns with).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from adainf_env.feasibility import Staircase, feasible_with_fallback

__all__ = ["ObsBuilder", "SchedulerObsWrapper"]


class ObsBuilder:
    """Features [N, F] + budgets [N] → flat policy observation (float32)
    ``[x̂, M, log M, 1[c_k ≤ M] (K), 1[k = LUT plan at M] (K)]``.

    The last block is the look-up table's choice for this budget (best fit-row accuracy among candidates that fit):
    a budget encoding from calibration statistics that lets the policy start from — and deviate per sample from —
    the static LUT instead of rediscovering it from noisy bandit rewards."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, cand_cost: np.ndarray, cand_acc: np.ndarray) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.cand_cost = np.asarray(cand_cost, dtype=np.float64)
        self.cand_acc = cand_acc

    @property
    def cand_acc(self) -> np.ndarray:
        """Accuracy of each candidate (the LUT's score); setting it rebuilds the LUT staircase."""
        return self._cand_acc

    @cand_acc.setter
    def cand_acc(self, acc: np.ndarray) -> None:
        self._cand_acc = np.asarray(acc, dtype=np.float64)
        self._lut = Staircase(self.cand_cost, self._cand_acc)

    @classmethod
    def fit(cls, features: np.ndarray, cand_cost: np.ndarray, cand_acc: np.ndarray) -> "ObsBuilder":
        f = np.asarray(features, dtype=np.float64)
        return cls(f.mean(0), np.maximum(f.std(0), 1e-6), cand_cost, cand_acc)

    @property
    def dim(self) -> int:
        return self.mean.size + 2 + 2 * self.cand_cost.size

    def lut_choice(self, budgets: np.ndarray) -> np.ndarray:
        """[N] candidate index of the look-up-table plan at each budget."""
        return self._lut.lookup(budgets)

    def fits(self, budgets: np.ndarray) -> np.ndarray:
        """[N, K] candidates that fit each budget (only the cheapest when none does): the action mask."""
        return feasible_with_fallback(self.cand_cost, budgets)

    def __call__(self, features: np.ndarray, budgets: np.ndarray) -> np.ndarray:
        b = np.clip(np.asarray(budgets, dtype=np.float64).reshape(-1), 1e-3, 1.0)
        x = (np.asarray(features, dtype=np.float32) - self.mean) / self.std
        lut = np.zeros((b.size, self.cand_cost.size), dtype=np.float32)
        lut[np.arange(b.size), self.lut_choice(b)] = 1.0
        return np.concatenate([x, b[:, None].astype(np.float32), np.log(b)[:, None].astype(np.float32),
                               self.fits(b).astype(np.float32), lut], axis=1).astype(np.float32)

    @property
    def space(self) -> spaces.Box:
        return spaces.Box(low=-np.inf, high=np.inf, shape=(self.dim,), dtype=np.float32)


class _ConvertedInfos(Sequence):
    """The env's (lazy) info list with each ``terminal_observation`` converted to the policy's flat observation.

    SB3 reads the info of every done env every step (and in bandit mode every env is done every step), so the
    conversion is batched: the first access to any terminal observation converts all of them in one
    :class:`ObsBuilder` call (one call per step instead of one per env)."""

    def __init__(self, infos: Sequence[dict], builder: ObsBuilder) -> None:
        self._infos, self._builder = infos, builder
        self._converted: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._infos)

    def _convert_all(self) -> np.ndarray:
        n = len(self._infos)
        out = np.zeros((n, self._builder.dim), dtype=np.float32)
        which, feats, budgets = [], [], []
        for j in range(n):
            t = self._infos[j].get("terminal_observation")
            if isinstance(t, dict):
                which.append(j)
                feats.append(np.asarray(t["features"]))
                budgets.append(float(np.asarray(t["budget"]).reshape(-1)[0]))
        if which:
            out[which] = self._builder(np.stack(feats), np.asarray(budgets))
        return out

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        d = self._infos[i]
        if isinstance(d.get("terminal_observation"), dict):
            if self._converted is None:
                self._converted = self._convert_all()
            d["terminal_observation"] = self._converted[int(i) % len(self)]
        return d


class SchedulerObsWrapper(VecEnvWrapper):
    """Present an :class:`AdaInfVecEnv` (dict obs, plan actions) as flat policy observations and candidate actions."""

    def __init__(self, venv: VecEnv, builder: ObsBuilder, candidates: np.ndarray) -> None:
        self.builder = builder
        self.candidates = np.asarray(candidates, dtype=np.int64)
        super().__init__(venv, observation_space=builder.space, action_space=spaces.Discrete(len(self.candidates)))
        self._budget = np.ones(venv.num_envs)

    def _convert(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        self._budget = np.asarray(obs["budget"], dtype=np.float64).reshape(-1)
        return self.builder(obs["features"], self._budget)

    def reset(self) -> np.ndarray:
        return self._convert(self.venv.reset())

    def step_async(self, actions: np.ndarray) -> None:
        self.venv.step_async(self.candidates[np.asarray(actions, dtype=np.int64).reshape(-1)])

    def step_wait(self):
        obs, rew, done, infos = self.venv.step_wait()
        return self._convert(obs), rew, done, _ConvertedInfos(infos, self.builder)

    def action_masks(self) -> np.ndarray:
        return self.builder.fits(self._budget)

    def get_state(self) -> dict[str, Any]:
        """The wrapped env's :meth:`~adainf_env.envs.plan.vec_env.AdaInfVecEnv.get_state` and the budgets of the current
        requests (the action mask's input)."""
        return {"env": self.venv.get_state(), "budget": self._budget.copy()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.venv.set_state(state["env"])
        self._budget = np.asarray(state["budget"], dtype=np.float64).reshape(-1).copy()

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        if attr_name == "action_masks":
            return [self.action_masks] * len(list(self._get_indices(indices)))
        return self.venv.get_attr(attr_name, indices)

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
        if method_name == "action_masks":
            idx = list(self._get_indices(indices))
            return list(self.action_masks()[idx])
        return self.venv.env_method(method_name, *args, indices=indices, **kwargs)


