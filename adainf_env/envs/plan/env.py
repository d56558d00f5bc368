"""The AdaInf Gymnasium environment (see :class:`AdaInfEnv` for its manual)."""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np

from adainf_env.envs.core import ActionError, EnvConfig, PlanConfigViews, RequestDraws, resolve_env_inputs
from adainf_env.errors import AdaInfError, ConfigError
from adainf_env.feasibility import feasible_with_fallback
from adainf_env.live import LiveRunner, LiveSource
from adainf_env.envs.options import RENDER_MODES, EnvOptions
from adainf_env.tables.outcomes import OutcomeTable
from adainf_env.envs.render import render_frame, render_text
from adainf_env.envs.reward import overrun_paid, step_reward

__all__ = ["AdaInfEnv", "LiveSource", "ActionError"]


class AdaInfEnv(PlanConfigViews, gym.Env):
    """Choose which blocks of a network to run for each inference request, under a compute budget.

    ## Description
    Each request is an input (an image) and a budget, a fraction of the full model's cost. The agent sees cheap
    features of the input (the pooled output of the always-run stem) and the budget, and picks a *plan* — which
    skippable residual blocks to execute. It is rewarded for a correct prediction and penalised for exceeding the
    budget. Outcomes come from an :class:`~adainf_env.tables.outcomes.OutcomeTable` (every plan evaluated on every sample
    beforehand: thousands of times faster than running the network) or, in live mode, from running the backbone.
    This is the AdaInf problem (scheduler g(x, M) → plan) as an RL environment.

    ## Action Space
    ``Discrete(P)`` (default): the index of a plan in the table's plan list (``env.plan_masks[p]`` is its block mask,
    ``env.plan_cost[p]`` its cost). With ``action_type="mask"``: ``MultiBinary(B)``, a block mask (1 = execute the
    block's residual branch) that must be one of the table's plans, else :class:`ActionError`.
    ``env.action_masks()`` returns the valid-plan mask for sb3-contrib's MaskablePPO: plans over budget are masked
    (when ``mask_over_budget=True``, the default), the cheapest plan is always valid.

    ## Observation Space
    ``Dict`` (default) or, with ``obs_format="flat"``, a ``Box`` concatenating the parts in this order:

    | key        | shape | dtype   | range              | meaning                                                  |
    |------------|-------|---------|--------------------|----------------------------------------------------------|
    | features   | (F,)  | float32 | finite float32     | stem features of the request's input                     |
    | budget     | (1,)  | float32 | (0, 1]             | budget of this request, fraction of the full model       |
    | bucket     | (3,)  | float32 | [0,cap]×[0,1]×[0,1] | stream + token bucket only: bucket level after refill, this request's refill, fraction of the episode left |

    The space depends only on the feature dimension F and the options, never on the table's values: the calibration
    and test tables of a backbone give the same space, so a policy trained on one loads and runs on the other.

    ## Rewards
    With ``cost`` and ``budget`` fractions of the full model (``cost_unit="macs"``: MACs, ``"latency"``: measured
    time) and ``overrun = cost − budget`` when the plan does not fit the budget by
    :func:`adainf_env.feasibility.overrun` (the rule of the action mask and the evaluation harness), else 0
    (:func:`adainf_env.envs.reward.step_reward`):

    * ``reward="correct"`` (default): ``1[prediction correct] − λ·overrun`` — in [−λ, 1];
    * ``reward="neg_ce"``: ``−CE(true label) − λ·overrun`` (CE in nats);
    * ``penalty="hard"``: when ``overrun > 0`` the reward is ``hard_penalty`` (default −1) instead.

    ``info`` of every step: ``plan``, ``cost``, ``correct`` (bool), ``overrun``, ``budget``, ``sample`` (table row).

    ## Starting State
    A request: the next sample of a random permutation of the table's rows (without replacement, reshuffled
    every pass) and a budget from the budget process (default uniform in [cheapest plan cost, 1]).
    ``reset(options={"sample": i, "budget": b})`` pins the first request's sample row and/or the budget (in stream
    mode the pinned budget holds for the whole episode).

    ## Episode End
    ``mode="bandit"``: after one request (``terminated=True``). ``mode="stream"``: after ``episode_length``
    requests (``terminated=True``; the horizon is part of the task and is observed through the bucket's
    "fraction left"). Never truncated. The observation returned with ``terminated=True`` is the last request's.

    ## Arguments
    ``AdaInfEnv(table=None, *, table_path=None, live=None, options=None, **option_kwargs)``; the options are the
    fields of :class:`~adainf_env.envs.options.EnvOptions`, given as ``options=EnvOptions(...)`` and/or as keywords
    (keywords win): ``mode="bandit", episode_length=200, budget="uniform", bucket=None, lam=1.0, reward="correct",
    penalty="linear", hard_penalty=-1.0, cost_unit="macs", obs_format="dict", action_type="plan",
    mask_over_budget=True, render_mode=None``. An unknown keyword raises ConfigError.

    * ``table`` / ``table_path``: an OutcomeTable or a path for :func:`adainf_env.load_table`; ``live``: a
      :class:`LiveSource` instead. None of them: the reference calibration table shipped with the package
      (:func:`adainf_env.tables.reference.reference_table_path`).
    * ``budget``: a budget process spec for :func:`adainf_env.budgets.make_budget_process` (``"uniform"``,
      ``"fixed:0.3"``, ``"random_walk"``, ``"step"``, ``"periodic"``, ``"trace:FILE.csv"``, a dict, or an object).
    * ``bucket``: stream mode only. ``True``, a dict or a :class:`~adainf_env.budgets.TokenBucket`: requests share a
      compute budget refilled by the budget process each request (so ``budget="fixed:0.2", bucket=True`` constrains
      the *average* cost to 0.2); the request's budget is what is in the bucket (at most 1).
    * ``lam`` (λ ≥ 0), ``reward``, ``penalty``, ``hard_penalty``: see Rewards.
    * ``render_mode``: None, ``"ansi"`` (a text line about the last step) or ``"rgb_array"`` (a uint8 frame of it:
      the plan's blocks run/skipped, the cost paid against the budget, correct or not; :mod:`adainf_env.envs.render`).

    Registered as ``AdaInf/Bandit-v0`` and ``AdaInf/Stream-v0``; both work with no arguments:
    ``gymnasium.make("AdaInf/Stream-v0", budget="fixed:0.2", bucket=True)``. ``gymnasium.make_vec(id, num_envs=N)``
    gives the numpy-batched :class:`~adainf_env.envs.plan.gym_vector.AdaInfVectorEnv` (same-step autoreset); SB3 users can
    take :class:`~adainf_env.envs.plan.vec_env.AdaInfVecEnv` directly.
    Bad arguments raise :class:`~adainf_env.errors.ConfigError`; bad tables
    :class:`~adainf_env.errors.TableFormatError`; bad actions :class:`ActionError`.

    ## Version History
    * v0: initial version (bandit and stream modes, token bucket, table and live outcomes).
    * v0 (unchanged dynamics): the shipped reference calibration table is the default source; the features Box
      spans the finite float32 range instead of the table's min/max (data-independent space); a plan within budget
      up to the shared feasibility tolerance pays no overrun; ``render_mode="rgb_array"``; options as one
      :class:`~adainf_env.envs.options.EnvOptions`; a Gymnasium ``vector_entry_point``.
    """

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 4}

    def __init__(
        self,
        table: OutcomeTable | None = None,
        *,
        table_path: str | os.PathLike | None = None,
        live: LiveSource | None = None,
        options: EnvOptions | None = None,
        **option_kwargs: Any,
    ) -> None:
        opts, table = resolve_env_inputs(EnvOptions, options, option_kwargs, table=table, table_path=table_path,
                                         live=live)
        self.options = opts
        self._live: LiveRunner | None = None
        if live is not None:
            self._live = LiveRunner(live)
            if opts.cost_unit != "macs" and live.plan_cost is None:
                raise ConfigError("live mode: cost_unit='latency' needs LiveSource(plan_cost=...) (a latency profile)")
            self.cfg = EnvConfig.build(features=self._live.features, correct=None, loss=None, cost=self._live.cost,
                                       plan_masks=self._live.plan_masks, options=opts)
        else:
            self.cfg = EnvConfig.from_table(table, opts)
        self.table = table
        c = self.cfg
        self.observation_space = c.observation_space
        self.action_space = c.action_space
        self.render_mode = opts.render_mode
        self.mode = opts.mode
        # Hot-path aliases: the bandit step is a handful of Python operations, attribute chains through cfg count.
        self._n = c.num_samples
        self._features = c.features
        self._correct = c.correct
        self._loss = c.loss
        self._cost = c.cost
        self._cost_list = c.cost.tolist()
        self._bandit = opts.mode == "bandit"
        self._dict_obs = opts.obs_format == "dict"
        self._reward_ce = opts.reward == "neg_ce"
        self._reward_kw = dict(reward=opts.reward, penalty=opts.penalty, lam=opts.lam, hard_penalty=opts.hard_penalty)
        self._plan_action = opts.action_type == "plan"
        self._draws = RequestDraws(self._n)
        self._bbuf: list[float] = []  # bandit budgets of the draws' uniform buffer (refreshed when it refills)
        self._s: int | None = None  # current request's table row; None before the first reset
        self._done = True
        self._budget = 1.0
        self._obs: Any = None
        self._last: dict[str, Any] | None = None  # the last step's outcome, for render()

    # ------------------------------------------------------------------ randomness
    def _draw(self) -> tuple[int, int]:
        """Next request: (table row, index into the uniform buffer). See env_core for the protocol."""
        s, k = self._draws.draw(self.np_random)
        if k == 0 and self._bandit:  # a fresh uniform buffer: bandit budgets depend only on it, a chunk at once
            self._bbuf = self.cfg.process.start(self._draws.ubuf)[0].tolist()
        return s, k

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._draws.invalidate()
        pin_s, pin_b = self.cfg.parse_options(options)
        s, k = self._draw()
        if pin_s is not None:
            s = pin_s
        self._s = s
        self._done = False
        if self._bandit:
            self._budget = self._bbuf[k] if pin_b is None else pin_b
            obs = self._make_obs()
        else:
            self._pin_b = pin_b
            b0, aux = self.cfg.process.start(self._draws.ubuf[k:k + 1])
            self._aux = aux
            self._proc_b = b0 if pin_b is None else np.array([pin_b])
            self._t = 0
            self._stream_budget(initial=True)
            obs = self._make_obs()
        self._obs = obs
        return obs, {"sample": s, "budget": self._budget}

    def _stream_budget(self, initial: bool) -> None:
        bucket = self.cfg.bucket
        if bucket is None:
            self._budget = float(self._proc_b[0])
            return
        level = np.array([bucket.initial]) if initial else self._level
        self._refill = self._proc_b if bucket.rate is None else np.array([bucket.rate])
        self._level = bucket.refill(level, self._proc_b)
        self._budget = float(bucket.available(self._level)[0])

    def _make_obs(self):
        f = self._features[self._s].copy()
        b = np.array([self._budget], dtype=np.float32)
        if self.cfg.bucket is not None:
            T = self.options.episode_length
            k = np.array([self._level[0], self._refill[0], (T - self._t) / T], dtype=np.float32)
            if self._dict_obs:
                return {"features": f, "budget": b, "bucket": k}
            return np.concatenate([f, b, k])
        if self._dict_obs:
            return {"features": f, "budget": b}
        return np.concatenate([f, b])

    def step(self, action):
        if self._done:
            raise AdaInfError("step() called " + ("before reset()" if self._s is None else
                                                  "after the episode ended") + "; call reset() first")
        p = self.cfg.plan_of(action) if not (self._plan_action and type(action) is int and
                                             0 <= action < len(self._cost_list)) else action
        s = self._s
        b = self._budget
        cost = self._cost_list[p]
        over = overrun_paid(cost, b)
        if self._live is None:
            correct = bool(self._correct[s, p])
            ce = float(self._loss[s, p]) if self._reward_ce else 0.0
        else:
            correct, ce = self._live.run(s, p)
        reward = step_reward(correct, ce, over, **self._reward_kw)
        info = {"plan": p, "cost": cost, "correct": correct, "overrun": over, "budget": b, "sample": s}
        if self.render_mode is not None:
            self._last = {**info, "reward": reward}
        if self._bandit:
            self._done = True
            return self._copy_obs(), reward, True, False, info
        # stream: spend from the shared bucket, then present the next request (or end the episode)
        if self.cfg.bucket is not None:
            self._level = self.cfg.bucket.spend(self._level, np.array([cost]))
        self._t += 1
        if self._t >= self.options.episode_length:
            self._done = True
            return self._copy_obs(), reward, True, False, info
        s, k = self._draw()
        self._s = s
        if self._pin_b is None:
            self._proc_b = self.cfg.process.next(self._t, self._proc_b, self._aux, self._draws.ubuf[k:k + 1])
        self._stream_budget(initial=False)
        self._obs = self._make_obs()
        return self._obs, reward, False, False, info

    def _copy_obs(self):
        o = self._obs
        if self._dict_obs:
            return {k: v.copy() for k, v in o.items()}
        return o.copy()

    def action_masks(self) -> np.ndarray:
        """Valid plans for the current request (bool [P]): within budget, the cheapest plan always valid."""
        if not self._plan_action:
            raise ConfigError("action_masks() is defined for Discrete plan actions (action_type='plan')")
        if not self.options.mask_over_budget:
            return np.ones(self.cfg.num_plans, dtype=bool)
        return feasible_with_fallback(self._cost, self._budget)[0]

    def render(self):
        """``"ansi"``: a text line about the last step; ``"rgb_array"``: a uint8 [H, W, 3] frame of it (see
        :func:`adainf_env.envs.render.render_frame`), or of the pending request before the first step."""
        if self.render_mode is None:
            return None
        last = self._last
        if last is None:  # no step yet: show the pending request (budget only)
            last = {"plan": None, "cost": None, "correct": None, "overrun": 0.0, "reward": None,
                    "budget": self._budget, "sample": self._s}
        if self.render_mode == "ansi":
            return render_text(last)
        return render_frame(last, self.cfg.plan_masks)

    def close(self) -> None:
        """Nothing to release: tables are in memory and a live backbone is owned by the caller."""
