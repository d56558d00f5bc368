"""Checkpoint state of an SB3 training run: everything the rest of the run depends on, as tensors and plain
containers (``torch.load(weights_only=True)`` loads it).

What is captured (on-policy algorithms, at a rollout start — see :mod:`agents.sb3.scheduler`): ``num_timesteps``
(from which SB3 derives the learning-rate/clip-range progress once ``learn(remaining, reset_num_timesteps=False)``
restores ``_total_timesteps``), ``_n_updates``, ``_episode_num``, ``_last_obs``/``_last_episode_starts``, the
global torch / numpy / ``random`` RNG states (action sampling uses torch's, ``RolloutBuffer.get`` permutes minibatches
with numpy's) and the env state (:meth:`~adainf_env.envs.plan.vec_env.AdaInfVecEnv.get_state` through
:meth:`~agents.sb3.obs.SchedulerObsWrapper.get_state`). Policy, optimiser and selection state are written by the
selection callback beside it.
"""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import torch

__all__ = ["training_state", "restore_training_state"]


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, copy=True))


def _np_global_state() -> dict[str, Any]:
    st = np.random.get_state(legacy=False)
    return {"bit_generator": st["bit_generator"], "key": _t(st["state"]["key"].astype(np.int64)),
            "pos": int(st["state"]["pos"]), "has_gauss": int(st["has_gauss"]), "gauss": float(st["gauss"])}


def _set_np_global_state(st: dict[str, Any]) -> None:
    np.random.set_state({"bit_generator": st["bit_generator"],
                         "state": {"key": st["key"].numpy().astype(np.uint32), "pos": int(st["pos"])},
                         "has_gauss": int(st["has_gauss"]), "gauss": float(st["gauss"])})


def _env_state_to_tensors(state: dict[str, Any]) -> dict[str, Any]:
    # meta as JSON text: the generator states hold 128-bit integers, which JSON keeps exact
    env = state["env"]
    return {"env": {"meta": json.dumps(env["meta"]), "arrays": {k: _t(v) for k, v in env["arrays"].items()}},
            "budget": _t(state["budget"])}


def _env_state_from_tensors(saved: dict[str, Any]) -> dict[str, Any]:
    env = saved["env"]
    return {"env": {"meta": json.loads(env["meta"]), "arrays": {k: v.numpy() for k, v in env["arrays"].items()}},
            "budget": saved["budget"].numpy()}


def training_state(model: Any) -> dict[str, Any]:
    """The resume state of an SB3 ``model`` whose env is a :class:`~agents.sb3.obs.SchedulerObsWrapper`."""
    py = random.getstate()
    return {"num_timesteps": int(model.num_timesteps), "n_updates": int(model._n_updates),
            "episode_num": int(model._episode_num),
            "last_obs": _t(model._last_obs), "last_episode_starts": _t(model._last_episode_starts),
            "torch_rng": torch.get_rng_state(), "np_rng": _np_global_state(),
            "py_rng": [int(x) for x in py[1]], "py_gauss": py[2],
            "env": _env_state_to_tensors(model.env.get_state())}


def restore_training_state(model: Any, r: dict[str, Any]) -> None:
    """Load a :func:`training_state` into ``model`` (built with the same seed, policy and optimiser already loaded)."""
    model.num_timesteps, model._n_updates = int(r["num_timesteps"]), int(r["n_updates"])
    model._episode_num = int(r["episode_num"])
    model._last_obs = r["last_obs"].numpy().copy()
    model._last_episode_starts = r["last_episode_starts"].numpy().copy()
    model.env.set_state(_env_state_from_tensors(r["env"]))
    torch.set_rng_state(r["torch_rng"])
    _set_np_global_state(r["np_rng"])
    st = random.getstate()
    gauss = r.get("py_gauss")
    random.setstate((st[0], tuple(int(x) for x in r["py_rng"]), None if gauss is None else float(gauss)))
