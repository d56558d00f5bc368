"""The anytime-inference Gymnasium environment (see :class:`AnytimeEnv` for its manual)."""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np

import torch

from adainf_env.envs.anytime.actions import ACTION_NAMES, AnytimeTable, BlockCosts, NUM_ACTIONS, READ, RUN, SKIP, STOP
from adainf_env.envs.anytime.config import AnytimeConfig
from adainf_env.envs.anytime.core import RequestBatch
from adainf_env.envs.anytime.render import pending_record, render_anytime, step_record
from adainf_env.envs.anytime.stages import STAGE_STOP, stage_menu
from adainf_env.costs import count_macs, measure_macs
from adainf_env.envs.core import ActionError, AnytimeConfigViews, RequestDraws, resolve_env_inputs
from adainf_env.errors import AdaInfError, ConfigError
from adainf_env.live import LiveRunner, LiveSource
from adainf_env.envs.options import RENDER_MODES, AnytimeOptions
from adainf_env.tables.outcomes import OutcomeTable
from adainf_env.envs.reward import overrun_paid, step_reward

__all__ = ["AnytimeEnv", "AnytimeLiveRunner", "LiveSource", "ActionError", "RUN", "SKIP", "READ", "STOP"]


class AnytimeEnv(AnytimeConfigViews, gym.Env):
    """AdaInf anytime inference: serve a request block by block, read the network's answer when it pays, stop.

    ## Description
    A skippable backbone is ``stem → block_0 → … → block_{B−1} → head``. Each request (an image, a table row) starts
    with the stem computed. The agent then decides, block by block, whether to execute the block's residual branch
    (RUN) or only its shortcut (SKIP). At any time it may READ: evaluate the head on the current activations with every
    later block skipped — the prediction and confidence of the plan "decisions so far, the rest skipped" (in table
    mode: that plan's entry of the outcome table). It STOPs with the last answer read. Early-exit cascades with
    computation reuse (run plan a, read; if unsure continue to a bigger plan from the activations already computed)
    are episodes of this env; so is any learned policy that stops when what it has read is good enough.

    ## Action Space
    ``Discrete(4)``:

    | action | name | effect | cost (fraction of the full model) |
    |---|---|---|---|
    | 0 | RUN  | execute block ``pos``'s residual (and its shortcut), ``pos += 1`` | residual + shortcut (shortcut free if a read computed it) |
    | 1 | SKIP | shortcut only, ``pos += 1`` | shortcut (free if a read computed it) |
    | 2 | READ | evaluate the head on the current plan, continue | the shortcuts of the later blocks not yet computed + head |
    | 3 | STOP | answer with the last answer read; reads first if the current plan has not been read | that read, if any |

    After the decision for the last block the request ends as after STOP. ``action_masks()`` (bool ``[4]``, for
    sb3-contrib's MaskablePPO) marks the valid actions; taking an invalid one raises :class:`ActionError`:

    * RUN/SKIP only before the last block; RUN only if the plan with that block added is in the table's plan list and,
      with ``mask_over_budget=True`` (default), only if the request can still answer within its budget afterwards
      (spent + this block + a read right after ≤ budget): under masking no request overruns unless even the stem and a
      read of the cheapest plan exceed its budget (then only SKIP/STOP/READ remain and the overrun is charged);
    * READ only if the current plan has not been read (a second read of the same plan tells nothing new);
    * STOP always (so every request can end: it pays one read at most — a request never ends without an answer).

    ``invalid_action="fallback"`` (for learners without action masking, and for checkers that step random actions)
    replaces an invalid action instead of raising: a RUN that is not allowed becomes SKIP, a READ of a plan already
    read becomes STOP; ``info["invalid_action"]`` says when it happened.

    ## Observation Space
    ``obs_format="dict"`` (default) or ``"flat"`` (the parts concatenated in this order), float32; the bounds depend on
    the feature dimension, the options and the block costs, never on the data seen (features: the finite float32
    range; the first three parts are the plan envs' own, :func:`adainf_env.envs.core.observation_parts`):

    | key | shape | meaning |
    |---|---|---|
    | ``features`` | [F] | stem features of the request (always computed) |
    | ``budget`` | [1] | the request's budget (bandit / per-request process) or what is in the shared bucket (≤ 1) |
    | ``bucket`` | [3] | shared bucket only: level after refill, this request's refill, fraction of the episode left |
    | ``costs`` | [3] | spent so far (incl. stem), cost of answering now (STOP), cost of RUN + answering right after |
    | ``position`` | [B+1] | one-hot of the next block to decide |
    | ``decisions`` | [B] | 1 = block executed so far |
    | ``readout`` | [5] | last confidence, previous confidence, last two answers agree, reads / (B+1), current plan read |

    ## Costs
    Exact and in fractions of the full model, from the table's per-block MACs (``meta["macs"]``; reference tables:
    ``summary.json``): the stem once per request, each executed residual, each shortcut and each head evaluation once —
    computed activations are kept, so nothing is paid twice (see :mod:`adainf_env.envs.anytime.core`). A plan run
    straight through and read once costs exactly its table cost. ``info["cost"]`` is the cost paid by this step (the
    stem is reported with the request's first step), so a request's ``info["cost"]`` sum to its total, as
    Safety-Gymnasium reports costs; ``info["total_cost"]`` is the running total.

    ## Rewards
    ``reward="correct"``: 1 if the final answer is right, else 0, on the request's last step. ``"neg_ce"``: minus the
    cross-entropy (nats) of the answered plan instead. ``penalty="linear"`` (default): every step is charged
    λ × (the overrun it adds), so a request's rewards sum to ``base − λ·max(0, total cost − budget)`` exactly (λ = ``lam``
    per unit of the full model). ``penalty="hard"``: the last step gives ``hard_penalty`` instead of ``base`` if the
    request overran.

    ## Budgets
    ``mode="bandit"``: one request per episode, budget drawn from the budget process: a hard per-request budget when
    ``mask_over_budget=True``, a soft one (λ-penalised) otherwise. ``mode="stream"``: ``episode_length`` requests per
    episode, budgets from the process (``step``, ``periodic``, ``random_walk``, ``trace``…), or with ``bucket`` a shared
    token bucket refilled by the process each request, the request's budget is what is in it (≤ 1) and its total cost
    is taken out when it ends — the same bucket as :class:`~adainf_env.envs.plan.env.AdaInfEnv`, so ``budget="fixed:0.2",
    bucket=True`` constrains the *average* cost to 0.2.

    ## Stage actions (``action_mode="stage"``)
    The agent picks whole *stages* instead of blocks: from the plan it has read it either STOPs or runs on to one of
    a fixed menu of next plans and reads it (:mod:`adainf_env.envs.anytime.stages`, ``docs/stage_actions.md``).

    * Menu: a tree of Pareto stages built from a table's plan accuracies and costs only (``stage_menu``: None → built
      from the served table with 16 first plans, 4 extensions per plan, at most 3 stages; a dict of those sizes
      ``first_pool``/``ext_pool``/``max_stages``; or a :class:`~adainf_env.envs.anytime.stages.StageTree` built from
      the calibration table, for an env serving other rows). The first stage's entries are plans of the accuracy/cost
      Pareto front; after reading plan ``c`` the entries are Pareto plans among ``c``'s extensions (they keep ``c``'s
      decisions, so every block and shortcut computed is reused).
    * Action space ``Discrete(1 + K)`` (``K``: the most entries of any menu node): 0 = STOP (as the block STOP:
      answer the last answer read, reading the current plan first if unread), ``k`` = run to entry ``k``'s plan
      (RUN/SKIP each undecided block by its bits) and read it; reaching the last block ends the request with that
      read. ``action_masks()`` (bool ``[1 + K]``): STOP always; entry ``k`` where the current node has one and, with
      ``mask_over_budget=True``, spent + its exact cost ≤ budget. ``invalid_action="fallback"`` turns an invalid
      action into STOP; ``info["action"]`` is ``"stop"`` or ``"stage_k"``.
    * Costs and rewards: exactly those of the same block actions — a stage *is* executed as its RUN/SKIP/READ steps on
      the block kernel, so ``info["cost"]`` is their sum (stem with a request's first step) and the reward their
      rewards' sum (units as above: 1[correct] or −CE nats on the request's last step, minus λ × overrun in fractions
      of the full model).
    * Observation: the block-mode parts (readouts so far — last and previous confidence, agreement, reads —, cost spent,
      budget, bucket level, refill and fraction of the stream left) plus ``menu`` [3K]: each entry's exact cost from
      here (0 if absent), its plan's accuracy on the menu's table (0 if absent), 1 where it is a valid action now.
    * Episode end: as block mode (bandit: the request ends; stream: the ``episode_length``-th request ends); a request
      takes at most ``max_stages`` + 1 steps. Table mode only (a live source steps block by block).

    ## Starting State / Seeding
    Same protocol as :class:`~adainf_env.envs.plan.env.AdaInfEnv` (:mod:`adainf_env.envs.core`): each request draws its table row
    (a permutation per pass) and one uniform for its budget from ``np_random``; same seed → same episodes.
    ``reset(options={"sample": i, "budget": b})`` pins the first request.

    ## Episode End
    Bandit: when the request ends (``terminated=True``). Stream: when the ``episode_length``-th request ends; between
    requests the step that ends one returns the next request's first observation (``info["request_done"]``). Never
    truncated.

    ## Arguments
    ``AnytimeEnv(table=None, *, table_path=None, live=None, options=None, **option_kwargs)``; the options are the
    fields of :class:`~adainf_env.envs.options.AnytimeOptions` (those of :class:`~adainf_env.envs.options.EnvOptions` plus
    ``invalid_action``), given as ``options=AnytimeOptions(...)`` and/or as keywords (keywords win):
    ``mode="bandit", episode_length=200, budget="uniform", bucket=None, lam=1.0, reward="correct", penalty="linear",
    hard_penalty=-1.0, cost_unit="macs", obs_format="dict", mask_over_budget=True, invalid_action="raise",
    action_mode="block", stage_menu=None, render_mode=None``. An unknown keyword raises ConfigError.

    * ``table``/``table_path``: an outcome table whose plan list is closed under truncation (e.g. all 2^B plans) with
      per-block MACs; ``live``: a :class:`~adainf_env.live.LiveSource` — the real backbone is run block by block
      (activations kept, as charged; :class:`AnytimeLiveRunner`). None of them: the reference calibration table
      shipped with the package (:func:`adainf_env.tables.reference.reference_table_path`).
    * ``cost_unit`` must be ``"macs"`` (latency profiles have no per-block breakdown); ``action_type`` must stay
      ``"plan"`` (the actions are always the four above).
    * ``render_mode``: None, ``"ansi"`` (a text line about the last step) or ``"rgb_array"`` (a uint8 frame of it: the
      blocks run so far, the cost spent against the budget, the answer right or wrong once given;
      :mod:`adainf_env.envs.anytime.render`).

    Bad arguments raise :class:`~adainf_env.errors.ConfigError`, bad tables
    :class:`~adainf_env.errors.TableFormatError`, bad actions :class:`ActionError`.

    Registered as ``AdaInf/Anytime-v0`` (works with no arguments: ``gymnasium.make("AdaInf/Anytime-v0")``).
    ``gymnasium.make_vec("AdaInf/Anytime-v0", num_envs=N)`` gives the numpy-batched
    :class:`~adainf_env.envs.anytime.gym_vector.AnytimeVectorEnv` (same-step autoreset); SB3 users can take
    :class:`~adainf_env.envs.anytime.vec_env.AnytimeVecEnv` directly.

    ## Version History
    * v0: initial version (bandit and stream modes, token bucket, table and live outcomes).
    * v0 (unchanged dynamics): options as one :class:`~adainf_env.envs.options.AnytimeOptions`; the shipped reference
      calibration table is the default source; the features Box spans the finite float32 range (as the plan envs);
      ``render_mode="rgb_array"``; a Gymnasium ``vector_entry_point``.
    * v0 (block dynamics unchanged): ``action_mode="stage"`` (stage actions over a menu of Pareto extensions).
    """

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 4}

    def __init__(
        self,
        table: OutcomeTable | None = None,
        *,
        table_path: str | os.PathLike | None = None,
        live: LiveSource | None = None,
        options: AnytimeOptions | None = None,
        **option_kwargs: Any,
    ) -> None:
        opts, table = resolve_env_inputs(AnytimeOptions, options, option_kwargs, table=table, table_path=table_path,
                                         live=live)
        self._live: AnytimeLiveRunner | None = None
        if live is not None:
            self._live = AnytimeLiveRunner(live)
            at = self._live.anytime_table
            features = self._live.features
            self._plan_masks = self._live.plan_masks
        else:
            at = AnytimeTable.from_table(table, opts.cost_unit)
            features = table.features
            self._plan_masks = table.plan_masks
        self.options = opts
        self.cfg = AnytimeConfig.build(table=at, features=features, options=opts,
                                       menu=stage_menu(opts.action_mode, opts.stage_menu, at, table))
        self.table = table
        self.observation_space = self.cfg.observation_space
        self.action_space = self.cfg.action_space
        self.render_mode = opts.render_mode
        self.mode = opts.mode
        self._n = self.cfg.num_samples
        self._batch = self.cfg.new_batch(1)
        # the fast path (block actions on a table): the request as Python scalars, the batch only written on demand
        self._one = self.cfg.new_one() if live is None else None
        self._zero = np.zeros(1, dtype=np.int64)
        self._draws = RequestDraws(self._n)
        self._started = False
        self._done = True
        self._last: dict[str, Any] | None = None  # the last step, for render()

    # ------------------------------------------------------------------ properties
    @property
    def num_blocks(self) -> int:
        return self.cfg.table.num_blocks

    @property
    def state(self) -> RequestBatch:
        """The request in flight (a :class:`~adainf_env.envs.anytime.core.RequestBatch` of one slot; read-only use)."""
        if self._one is not None:
            self._one.write_to(self._batch)
        return self._batch

    # ------------------------------------------------------------------ randomness (same protocol as AdaInfEnv)
    def _draw(self) -> tuple[int, float]:
        """Next request: (table row, its uniform for the budget process)."""
        s, k = self._draws.draw(self.np_random)
        return s, float(self._draws.ubuf[k])

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._draws.invalidate()
        pin_s, pin_b = self.cfg.parse_options(options)
        s, u = self._draw()
        s = s if pin_s is None else pin_s
        b0, self._aux = self.cfg.process.start(np.array([u]))
        self._proc_b = b0 if pin_b is None else np.array([pin_b])
        self._pin_b = pin_b
        self._t = 0
        if self.cfg.bucket is not None:
            self._level = np.array([float(self.cfg.bucket.initial)])
        self._begin(s)
        self._started = True
        self._done = False
        self._last = None
        budget = self._one.budget if self._one is not None else float(self._batch.budget[0])
        return self._observe(), {"sample": s, "budget": budget}

    def _begin(self, s: int) -> None:
        """Start request ``s`` with the current process budget (through the bucket if any)."""
        bucket = self.cfg.bucket
        if bucket is None:
            budget = float(self._proc_b[0])
        else:
            self._refill = float(self._proc_b[0]) if bucket.rate is None else float(bucket.rate)
            self._level = bucket.refill(self._level, self._proc_b)
            budget = float(bucket.available(self._level)[0])
        if self._one is not None:
            self._one.start(s, budget)
            return
        self._batch.start(self._zero, np.array([s]), np.array([budget]))
        if self._live is not None:
            self._live.begin(s)

    def _observe(self):
        bs = None
        if self.cfg.bucket is not None:
            T = self.cfg.episode_length
            if self._one is not None:
                return self.cfg.observe_one(self._one, (self._level[0], self._refill, (T - self._t) / T))
            bs = np.array([[self._level[0], self._refill, (T - self._t) / T]])
        elif self._one is not None:
            return self.cfg.observe_one(self._one, None)
        obs = self.cfg.observe(self._batch, bs)
        if self.cfg.obs_format == "dict":
            return {k: v[0] for k, v in obs.items()}
        return obs[0]

    def action_masks(self) -> np.ndarray:
        """Valid actions now (bool [4]: run, skip, read, stop; stage mode: [1 + K], stop and the menu entries)."""
        if not self._started or self._done:
            raise AdaInfError("action_masks() needs a request in flight; call reset() first")
        if self._one is not None:
            return np.array(self._one.masks())
        return self._batch.masks()[0]

    def step(self, action):
        if self._done:
            raise AdaInfError("step() called " + ("before reset()" if not self._started else
                                                  "after the episode ended") + "; call reset() first")
        if self._one is not None:
            return self._step_one(action)
        batch = self._batch
        a = _action_index(action, self.cfg.invalid_action == "raise", self.cfg.action_names)
        replaced = False
        if self.cfg.invalid_action == "fallback":
            sub, bad = batch.substitute_invalid(np.array([a]))
            a, replaced = int(sub[0]), bool(bad[0])
        if self._live is None:
            reader = self.cfg.table.read_table
        else:
            if not batch.masks()[0, a]:
                batch.step(np.array([a]), self._live.read)  # raises the ActionError with the full message
            pos = int(batch.pos[0])
            if a == RUN:
                self._live.run(pos)
            elif a == SKIP:
                self._live.skip(pos)
            reader = self._live.read
        pos0, spent0 = int(batch.pos[0]), float(batch.spent[0])
        res = batch.step(np.array([a]), reader)
        ended = bool(res.ended[0])
        s = int(batch.row[0])
        plan = int(batch.answer[0])
        correct = np.zeros(1, dtype=bool)
        loss = np.zeros(1)
        if ended:
            if self._live is None:
                t = self.cfg.table
                correct[0] = t.correct[s, plan]
                loss[0] = t.loss[s, plan]
            else:
                correct[0], loss[0] = self._live.outcome()
        rew, reported = self.cfg.rewards(batch, res, correct, loss if self.cfg.reward == "neg_ce" else None,
                                         np.ones(1, dtype=bool))
        budget = float(batch.budget[0])
        total = float(batch.spent[0])
        info: dict[str, Any] = {"cost": float(reported[0]), "total_cost": total, "budget": budget,
                                "overrun": overrun_paid(total, budget),
                                "sample": s, "action": self.cfg.action_names[a], "position": pos0,
                                "read": bool(res.read[0]), "request_done": ended, "invalid_action": replaced}
        if res.read[0]:
            info["read_plan"] = plan
            info["read_pred"] = int(batch.last_pred[0])
            info["read_conf"] = float(batch.last_conf[0])
        if ended:
            info.update(plan=plan, pred=int(batch.last_pred[0]), correct=bool(correct[0]),
                        num_reads=int(batch.reads[0]))
        if self.render_mode is not None:
            self._last = step_record(batch, 0, action=self.cfg.action_names[a], position=pos0, cost=total - spent0,
                                     reward=float(rew[0]),
                                     correct=bool(correct[0]) if ended else None)
        if ended:
            self._end_request(total)
        return self._observe(), float(rew[0]), self._done, False, info

    def _step_one(self, action: Any):
        """:meth:`step` on the fast path (a table, block or stage actions; the same numbers as the batch path,
        tested)."""
        one, c = self._one, self.cfg
        a = action if type(action) is int and 0 <= action < len(c.action_names) else \
            _action_index(action, c.invalid_action == "raise", c.action_names)
        replaced = False
        if not one.valid(a):
            if c.invalid_action == "raise":
                self.state.step(np.array([a]), c.table.read_table)  # raises the ActionError with the full message
            # RequestBatch.substitute_invalid's rule (StageBatch's: STOP)
            a, replaced = (STAGE_STOP if c.menu is not None else SKIP if a == RUN else STOP), True
        pos0, spent0 = one.pos, one.spent
        cost, ended, reading = one.step(a)
        s, plan, total, budget = one.row, one.answer, one.spent, one.budget
        # the reward (AnytimeConfig.rewards for one request, on Python floats)
        over = overrun_paid(total, budget)
        correct = ended and bool(c.table.correct.item(s, plan))
        ce = (c.table.loss.item(s, plan) if ended else 0.0) if c.reward == "neg_ce" else None
        kw = dict(reward=c.reward, penalty=c.penalty, lam=c.lam, hard_penalty=c.hard_penalty)
        if c.penalty == "hard":
            rew = step_reward(correct, ce, over, **kw) if ended else 0.0
        else:
            rew = step_reward(correct, ce, over - one.charged, **kw)
        one.charged = over
        reported = cost + one.unreported
        one.unreported = 0.0
        info: dict[str, Any] = {"cost": reported, "total_cost": total, "budget": budget,
                                "overrun": over, "sample": s, "action": c.action_names[a],
                                "position": pos0, "read": reading, "request_done": ended, "invalid_action": replaced}
        if reading:
            info["read_plan"] = plan
            info["read_pred"] = one.last_pred
            info["read_conf"] = one.last_conf
        if ended:
            info.update(plan=plan, pred=one.last_pred, correct=correct, num_reads=one.reads)
        if self.render_mode is not None:
            self._last = step_record(self.state, 0, action=c.action_names[a], position=pos0, cost=total - spent0,
                                     reward=float(rew), correct=correct if ended else None)
        if ended:
            self._end_request(total)
        return self._observe(), float(rew), self._done, False, info

    def _end_request(self, total: float) -> None:
        """The request ended having paid ``total``: the episode ends (bandit, or the stream's last request), or the
        bucket pays and the stream's next request starts."""
        if self.mode == "bandit":
            self._done = True
            return
        if self.cfg.bucket is not None:
            self._level = self.cfg.bucket.spend(self._level, np.array([total]))
        self._t += 1
        if self._t >= self.cfg.episode_length:
            self._done = True
            return
        s2, u = self._draw()
        if self._pin_b is None:
            self._proc_b = self.cfg.process.next(self._t, self._proc_b, self._aux, np.array([u]))
        self._begin(s2)

    def render(self):
        """``"rgb_array"``: a uint8 [H, W, 3] frame of the last step (:func:`adainf_env.envs.render.render_frame`: the
        blocks run so far, the cost spent against the budget, the answer right or wrong once the request ended);
        ``"ansi"``: a text line about it. Before the first step: the pending request."""
        if self.render_mode is None:
            return None
        rec = self._last
        if rec is None:
            rec = pending_record(self.state, 0) if self._started else None
        return render_anytime(self.render_mode, rec, self._plan_masks)

    def close(self) -> None:
        """Nothing to release: tables are in memory and a live backbone is owned by the caller."""


def _action_index(action: Any, strict: bool, names: tuple[str, ...] = ACTION_NAMES) -> int:
    """The action as an int; out of range → :class:`ActionError` when ``strict``, else kept (the fallback maps it).
    ``names``: the action names (block actions, or stop and the stage menu's entries)."""
    n = len(names)
    what = ", ".join(f"{name}={k}" for k, name in enumerate(names)) if n <= NUM_ACTIONS else \
        f"{names[0]}=0, {names[1]}=1 … {names[-1]}={n - 1}"
    if isinstance(action, (bool, np.bool_)):
        raise ActionError(f"action must be an integer in [0, {n}) ({what}), got {action!r}")
    try:
        a = int(np.asarray(action).reshape(()))
        if np.asarray(action).dtype.kind not in "iu":
            raise TypeError
    except (TypeError, ValueError):
        raise ActionError(f"action must be an integer in [0, {n}) ({what}), got {action!r}") from None
    if strict and not 0 <= a < n:
        raise ActionError(f"action {a} out of range [0, {n}) ({what})")
    return a


class AnytimeLiveRunner:
    """Runs the real backbone block by block for :class:`AnytimeEnv`, keeping what it computed (as the env charges).

    State per request: ``h`` (activations entering the next block) and ``chain`` (block j → (shortcut output,
    activations after it) on the current path with later blocks skipped), filled by a read and reused by SKIPs and
    the shortcut of a RUN, cleared when a block is run. With ``count_macs=True`` every module call is counted with
    :func:`adainf_env.costs.count_macs` into ``macs`` (tests compare it with the env's accounting).
    """

    def __init__(self, src: LiveSource, *, count_macs: bool = False) -> None:
        base = LiveRunner(src)  # validates the source, computes the stem features of every image
        bb = base.backbone
        if len(bb.blocks) > 12:
            raise ConfigError(f"live anytime mode enumerates all 2^B plans; the backbone has {len(bb.blocks)} blocks")
        self.backbone = bb
        self.images = base.images
        self.labels = base.labels
        self.features = base.features
        self.plan_masks = base.plan_masks
        self._device = base._device
        prof = measure_macs(bb)
        self.full_macs = prof.full
        self.costs = BlockCosts.from_macs(prof.to_dict(), prof.full)
        self.anytime_table = AnytimeTable.for_plans(base.plan_masks, self.costs, pred=None, conf=None, correct=None,
                                                    loss=None, label=None)
        self.count = bool(count_macs)
        self.macs = 0
        self._logits = None

    def _call(self, fn, *args):
        if not self.count:
            return fn(*args)
        m, out = count_macs(fn, *args)
        self.macs += m
        return out

    def begin(self, s: int) -> None:
        with torch.no_grad():
            x = self.backbone.prepare(self.images[s:s + 1].to(self._device))
            self.h = self._call(self.backbone.stem, x)
        self.s = s
        self.pos = 0
        self.chain: dict[int, tuple[Any, Any]] = {}
        self._logits = None

    def run(self, i: int) -> None:
        blk = self.backbone.blocks[i]
        with torch.no_grad():
            sc = self.chain[i][0] if i in self.chain else self._call(blk.shortcut, self.h)
            r = self._call(blk.residual, self.h)
            self.h = blk.combine(sc, r)
        self.chain = {}
        self.pos = i + 1

    def skip(self, i: int) -> None:
        if i in self.chain:
            self.h = self.chain[i][1]
        else:
            blk = self.backbone.blocks[i]
            with torch.no_grad():
                self.h = blk.combine(self._call(blk.shortcut, self.h), None)
        self.pos = i + 1

    def read(self, idx: np.ndarray, rows: np.ndarray, plans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The reader of the kernel: head on the current path with the later blocks skipped."""
        g = self.h
        with torch.no_grad():
            for j in range(self.pos, len(self.backbone.blocks)):
                if j not in self.chain:
                    blk = self.backbone.blocks[j]
                    sc = self._call(blk.shortcut, g)
                    self.chain[j] = (sc, blk.combine(sc, None))
                g = self.chain[j][1]
            logits = self._call(self.backbone.head, g).float()
        self._logits = logits
        prob = torch.softmax(logits, dim=1)
        conf, pred = prob.max(dim=1)
        return pred.cpu().numpy().astype(np.int64), conf.cpu().numpy().astype(np.float64)

    def outcome(self) -> tuple[bool, float]:
        """(correct, cross-entropy in nats) of the last read."""
        y = torch.tensor([int(self.labels[self.s])], device=self._logits.device)
        ce = float(torch.nn.functional.cross_entropy(self._logits, y))
        return bool(int(self._logits.argmax(1)) == int(self.labels[self.s])), ce
