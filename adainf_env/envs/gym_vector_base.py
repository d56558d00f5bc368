"""What the Gymnasium ``VectorEnv`` adapters of both env kinds share (:class:`CoreVectorEnv`, :func:`seed_and_options`).

:class:`~adainf_env.envs.plan.gym_vector.AdaInfVectorEnv` and :class:`~adainf_env.envs.anytime.gym_vector.AnytimeVectorEnv`
are thin adapters over a numpy-batched core; this module holds what they have in common.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from adainf_env.envs.options import RENDER_MODES
from adainf_env.errors import ConfigError

__all__ = ["CoreVectorEnv", "seed_and_options"]


def seed_and_options(core: Any, seed: int | list[int | None] | None, options: dict[str, Any] | None) -> int | None:
    """Hand ``VectorEnv.reset(seed=, options=)`` to a numpy core (:class:`~adainf_env.envs.core.BatchCore`) before its
    ``reset()``: an int seeds env i with ``seed + i``, a list one seed per env; ``options`` go to every env. Returns
    the seed to record as ``np_random_seed`` (the int, else None)."""
    if seed is not None:
        if isinstance(seed, (list, tuple)):
            if len(seed) != core.num_envs:
                raise ConfigError(f"reset(seed=list) needs {core.num_envs} seeds, got {len(seed)}")
            core.seed_each(seed)
        else:
            core.seed(int(seed))
    if options is not None:
        core.set_options(options)
    return seed if isinstance(seed, int) else None


class CoreVectorEnv(VectorEnv):
    """What both Gymnasium adapters over a numpy core (:class:`~adainf_env.envs.plan.batched.PlanBatchedEnv`,
    :class:`~adainf_env.envs.anytime.batched.AnytimeBatchedEnv`; no SB3 involved) share: the batched spaces, ``options``, ``action_masks``,
    ``render`` and a read-only all-True ``_key`` mask (``self._every``). A subclass builds its core and calls
    :meth:`_adopt`; ``reset``/``step`` are its own (the autoreset bookkeeping differs)."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": list(RENDER_MODES), "render_fps": 4}

    def _adopt(self, core: Any) -> None:
        """Take ``core`` as ``self.core`` and its single-env spaces, batched ``num_envs`` times."""
        self.core = core
        self.num_envs = core.num_envs
        self.single_observation_space = core.observation_space
        self.single_action_space = core.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.render_mode = core.render_mode
        self._every = np.ones(self.num_envs, dtype=bool)
        self._every.flags.writeable = False

    @property
    def options(self) -> Any:
        return self.core.options

    def action_masks(self) -> np.ndarray:
        """``[N, A]`` valid actions per env (see the core's ``action_masks``)."""
        return self.core.action_masks()

    def render(self) -> tuple[Any, ...] | None:
        """One frame (``"rgb_array"``) or text line (``"ansi"``) per env of its last step."""
        if self.render_mode is None:
            return None
        return tuple(self.core.render_one(i) for i in range(self.num_envs))
