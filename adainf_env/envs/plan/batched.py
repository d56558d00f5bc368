"""The numpy core of the batched plan envs (no stable-baselines3, no Gymnasium vector API): N AdaInf environments in
arrays. The SB3 ``VecEnv`` (:class:`~adainf_env.envs.plan.vec_env.AdaInfVecEnv`) and the Gymnasium ``VectorEnv``
(:class:`~adainf_env.envs.plan.gym_vector.AdaInfVectorEnv`) are thin adapters on it.

Same semantics as N independent :class:`~adainf_env.envs.plan.env.AdaInfEnv` seeded ``seed, seed+1, …`` (tested: identical
observations and rewards), but every step is a handful of numpy operations over all envs:

* outcome lookups are gathers in precomputed flat ``correct``/``loss`` arrays and a ``[P]`` cost array;
* each env keeps its own ``np.random.Generator`` (seeded exactly as the single env's ``np_random``), but randomness
  is drawn in bulk — a permutation of the table per pass and :data:`~adainf_env.envs.core.RNG_CHUNK` uniforms per
  refill — stored transposed (``[Ns, N]``, ``[K, N]``) so the per-step draw is a contiguous row view; refills loop
  over envs once per pass / chunk only (amortised O(1) per step);
* all envs are reset together (SB3 resets all at ``reset()``; bandit episodes all end every step, stream episodes
  all end after ``episode_length``), so the per-step buffer positions are scalars;
* ``infos`` is a lazy list: dicts (``terminal_observation``, ``TimeLimit.truncated``, and the single env's
  ``plan``/``cost``/``correct``/``overrun``/``budget``/``sample``) are built only for the entries a caller reads,
  from arrays kept by reference. Per-step Python work is therefore O(1) in N;
* :meth:`PlanBatchedEnv.get_state` / :meth:`PlanBatchedEnv.set_state` capture and restore all of the above (plain JSON
  values and numpy arrays), so a training run resumes on the exact same requests;
* :meth:`PlanBatchedEnv.step_arrays` is the batched step that both adapters wrap.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from adainf_env.envs.core import RNG_CHUNK, BatchCore, EnvConfig, PlanConfigViews, env_generator, resolve_env_inputs
from adainf_env.errors import AdaInfError, ConfigError
from adainf_env.feasibility import feasible_with_fallback
from adainf_env.envs.options import EnvOptions
from adainf_env.tables.outcomes import OutcomeTable
from adainf_env.envs.render import render_frame, render_text
from adainf_env.envs.reward import overrun_paid, step_reward

__all__ = ["PlanBatchedEnv"]


_REFILL_BLOCK = 128  # envs per transposed block write at a refill (a 512 B contiguous run per destination row)


class PlanBatchedEnv(PlanConfigViews, BatchCore):
    """N AdaInf envs over one outcome table, stepped together with numpy (see the module docstring):
    ``reset()``, ``step_arrays``, ``get_state``/``set_state``, ``action_masks()``, ``current_requests()``,
    ``render_one(i)``; seeds and reset options through :class:`~adainf_env.envs.core.BatchCore`.

    Arguments are those of :class:`~adainf_env.envs.plan.env.AdaInfEnv` (table mode only; no table → the shipped
    reference calibration table) plus ``num_envs``: ``options=EnvOptions(...)`` and/or its fields as keywords.
    """

    def __init__(
        self,
        table: OutcomeTable | None = None,
        num_envs: int = 1,
        *,
        table_path: str | os.PathLike | None = None,
        options: EnvOptions | None = None,
        **option_kwargs: Any,
    ) -> None:
        opts, table = resolve_env_inputs(EnvOptions, options, option_kwargs, table=table, table_path=table_path,
                                         num_envs=num_envs)
        self.table = table
        self.options = opts
        self.cfg = c = EnvConfig.from_table(table, opts)
        self.render_mode = opts.render_mode
        self.mode = opts.mode
        n = int(num_envs)
        self._init_envs(n)
        self.observation_space = c.observation_space
        self.action_space = c.action_space
        self._ns = c.num_samples
        self._P = c.num_plans
        self._correct_flat = c.correct.reshape(-1).view(np.uint8) if c.correct.flags.c_contiguous else \
            np.ascontiguousarray(c.correct).reshape(-1).view(np.uint8)
        self._loss_flat = c.loss.reshape(-1).astype(np.float64) if opts.reward == "neg_ce" else None
        # Transposed buffers (row k = every env's k-th draw) so that a step reads one contiguous row. Refills
        # generate env by env into a small row-major block and transpose it in (see _draw): no strided writes.
        # int32 halves the permutation memory (N=1024 envs × 10k rows = 40 MB).
        idx_dtype = np.int32 if self._ns < 2**31 else np.int64
        self._perm = np.zeros((self._ns, n), dtype=idx_dtype)
        # Bandit budgets depend only on the uniform, so bandit mode stores budgets instead of uniforms.
        self._ubuf = np.zeros((RNG_CHUNK, n), dtype=np.float64)
        self._ones = np.ones(n, dtype=bool)
        self._zeros = np.zeros(n, dtype=bool)
        self._pos = self._ns
        self._upos = RNG_CHUNK
        self._started = False
        self._obs: Any = None
        self._bucket_on = c.bucket is not None
        self._bandit = opts.mode == "bandit"
        self._last_step: tuple | None = None  # the last step's arrays, for get_images()

    # ------------------------------------------------------------------ randomness (see env_core)
    def _draw(self) -> tuple[np.ndarray, np.ndarray]:
        """Every env's next request: (table rows [N], uniforms [N]); refills loop over envs in protocol order."""
        refill_s = self._pos >= self._ns
        refill_u = self._upos >= RNG_CHUNK
        if refill_s or refill_u:
            blk = _REFILL_BLOCK
            perm_tmp = np.empty((blk, self._ns), dtype=self._perm.dtype) if refill_s else None
            u_tmp = np.empty((blk, RNG_CHUNK)) if refill_u else None
            for i0 in range(0, self.num_envs, blk):
                i1 = min(i0 + blk, self.num_envs)
                for i in range(i0, i1):
                    r = self._rng(i)  # per env: permutation first, then uniforms (the protocol's order)
                    if refill_s:
                        perm_tmp[i - i0] = r.permutation(self._ns)
                    if refill_u:
                        r.random(RNG_CHUNK, out=u_tmp[i - i0])
                if refill_s:
                    self._perm[:, i0:i1] = perm_tmp[: i1 - i0].T
                if refill_u:
                    u = u_tmp[: i1 - i0]
                    # Processes are elementwise in u, so one call per block equals one call per env (tested).
                    self._ubuf[:, i0:i1] = (self.cfg.process.start(u)[0] if self._bandit else u).T
            if refill_s:
                self._pos = 0
            if refill_u:
                self._upos = 0
        s = self._perm[self._pos].astype(np.int64)
        self._pos += 1
        k = self._upos
        self._upos += 1
        return s, k

    # ------------------------------------------------------------------ the batched API
    def reset(self) -> Any:
        """Start a new episode in every env (applying the seeds and reset options given since the last reset) →
        the batched first observation; ``reset_infos`` holds each env's ``{"sample", "budget"}``."""
        seeds = self._seeds
        if any(s is not None for s in seeds):
            if any(s is None for s in seeds):
                raise ConfigError("AdaInfVecEnv resets all envs together: seed all of them (VecEnv.seed) or none")
            for i, sd in enumerate(seeds):
                self._rngs[i] = env_generator(int(sd))
            self._pos = self._ns
            self._upos = RNG_CHUNK
        pins = [self.cfg.parse_options(o) if o else (None, None) for o in self._options]
        self._reset_seeds()
        self._reset_options()
        s, k = self._draw()
        pin_b = np.full(self.num_envs, np.nan)
        for i, (ps, pb) in enumerate(pins):
            if ps is not None:
                s[i] = ps
            if pb is not None:
                pin_b[i] = pb
        self._pin_b = pin_b if np.isfinite(pin_b).any() else None
        self._start(s, k)
        self._started = True
        self.reset_infos = [{"sample": int(s[i]), "budget": float(self._budget[i])} for i in range(self.num_envs)]
        return self._obs

    def _start(self, s: np.ndarray, k: int) -> None:
        """Begin an episode in every env: first request (rows ``s``, uniform row ``k``)."""
        self._s = s
        if self._bandit:
            b = self._ubuf[k]  # holds budgets in bandit mode
            self._budget = b if self._pin_b is None else np.where(np.isnan(self._pin_b), b, self._pin_b)
        else:
            b0, self._aux = self.cfg.process.start(self._ubuf[k])
            self._proc_b = b0 if self._pin_b is None else np.where(np.isnan(self._pin_b), b0, self._pin_b)
            self._t = 0
            if self._bucket_on:
                self._level = np.full(self.num_envs, self.cfg.bucket.initial)
            self._stream_budget()
        self._obs = self._make_obs()

    def _stream_budget(self) -> None:
        bucket = self.cfg.bucket
        if bucket is None:
            self._budget = self._proc_b
            return
        self._refill = self._proc_b if bucket.rate is None else np.full(self.num_envs, bucket.rate)
        self._level = bucket.refill(self._level, self._proc_b)
        self._budget = bucket.available(self._level)

    def _make_obs(self):
        f = self.cfg.features.take(self._s, axis=0)
        b = self._budget.astype(np.float32)[:, None]
        parts = {"features": f, "budget": b}
        if self._bucket_on:
            T = self.options.episode_length
            k = np.empty((self.num_envs, 3), dtype=np.float32)
            k[:, 0] = self._level
            k[:, 1] = self._refill
            k[:, 2] = (T - self._t) / T
            parts["bucket"] = k
        if self.options.obs_format == "dict":
            return parts
        return np.concatenate(list(parts.values()), axis=1)

    def step_arrays(self, actions: Any) -> tuple[Any, np.ndarray, bool, tuple, Any]:
        """One step of every env, as arrays: ``(obs, rewards [N] float32, done, step_data, terminal_obs)``.

        ``step_data`` = (plan [N], cost [N], correct [N], overrun [N], budget [N], sample [N]) of the requests just
        served. All envs end their episodes together (``done``: bandit every step, stream after
        ``episode_length``); then ``obs`` is already the next episode's first request and ``terminal_obs`` the
        observation the ended episode's last action was chosen on (``None`` when not done). The SB3 and Gymnasium
        vector interfaces both wrap this.
        """
        if not self._started:
            raise AdaInfError("AdaInfVecEnv.step() called before reset()")
        c = self.cfg
        a = c.plans_of_actions(actions, self.num_envs)
        s = self._s
        b = self._budget
        flat = s * self._P + a
        correct = self._correct_flat.take(flat)
        cost = c.cost.take(a)
        over = overrun_paid(cost, b)
        ce = self._loss_flat.take(flat) if self._loss_flat is not None else None
        opts = self.options
        rewards = step_reward(correct, ce, over, reward=opts.reward, penalty=opts.penalty, lam=c.lam,
                              hard_penalty=opts.hard_penalty).astype(np.float32)
        prev_obs = self._obs
        # b may be a row of the pre-drawn budget buffer (bandit mode) that _draw() refills below: copy it for the
        # lazily built infos.
        step_data = (a, cost, correct, over, b.copy(), s)
        if self.render_mode is not None:
            self._last_step = step_data + (rewards,)
        if self._bandit:
            done = True
        else:
            if self._bucket_on:
                self._level = c.bucket.spend(self._level, cost)
            self._t += 1
            done = self._t >= opts.episode_length
        if done:
            # SB3 auto-reset: every env's episode ends here; the next request starts a new one.
            self._pin_b = None  # reset options only apply to the episode they were given for
            s2, k = self._draw()
            self._start(s2, k)
        else:
            s2, k = self._draw()
            self._s = s2
            u = self._ubuf[k]
            if self._pin_b is None:
                self._proc_b = c.process.next(self._t, self._proc_b, self._aux, u)
            else:
                nxt = c.process.next(self._t, self._proc_b, self._aux, u)
                self._proc_b = np.where(np.isnan(self._pin_b), nxt, self._pin_b)
            self._stream_budget()
            self._obs = self._make_obs()
        return self._obs, rewards, done, step_data, prev_obs if done else None

    # ------------------------------------------------------------------ state (checkpoint / resume)
    STATE_FORMAT = "AdaInfVecEnv/1"

    def _table_id(self) -> str:
        tid = getattr(self, "_table_sha256", None)
        if tid is None:
            tid = self._table_sha256 = self.table.content_hash()
        return tid

    def get_state(self) -> dict[str, Any]:
        """Everything the env's next steps depend on, as ``{"meta": {...}, "arrays": {...}}``.

        ``meta`` holds JSON values only (str, int, float, bool, None, lists and dicts of them): the format tag, the
        identity of the env (``num_envs``, ``mode``, ``obs_format``, ``bucket``, ``table_sha256``, ``num_samples``,
        ``num_plans``), ``started``, the buffer positions ``pos``/``upos``, the stream request index ``t``, ``lam``
        (settable through ``set_attr``), the per-env generator states ``rngs`` (numpy ``bit_generator.state`` dicts;
        ``None`` for an env never seeded) and the pending ``seeds``/``options`` of ``VecEnv.seed``/``set_options``.
        ``arrays`` holds numpy arrays: ``perm`` [Ns, N] (this pass's permutations), ``ubuf`` [RNG_CHUNK, N] (uniforms;
        budgets in bandit mode), ``sample`` [N] and ``budget`` [N] (current requests), ``pin_b`` [N] (pinned
        budgets, NaN = none; only when pinned), and in stream mode ``proc_b``, ``aux`` and, with a bucket,
        ``level``, ``refill``. The observation is recomputed from these.

        No pickled objects: save it with ``np.savez(..., meta=json.dumps(state["meta"]), **state["arrays"])`` or
        with ``torch.save`` after turning the arrays into tensors; both load with ``allow_pickle=False`` /
        ``weights_only=True``, and :meth:`set_state` accepts tensors in place of arrays.
        """
        meta: dict[str, Any] = {
            "format": self.STATE_FORMAT, "num_envs": self.num_envs, "mode": self.options.mode,
            "obs_format": self.options.obs_format, "bucket": self._bucket_on, "table_sha256": self._table_id(),
            "num_samples": self._ns, "num_plans": self._P, "started": self._started, "pos": int(self._pos),
            "upos": int(self._upos), "lam": float(self.cfg.lam),
            "rngs": [None if r is None else r.bit_generator.state for r in self._rngs],
            "seeds": [None if sd is None else int(sd) for sd in self._seeds],
            "options": [dict(o) if o else {} for o in self._options],
        }
        arrays: dict[str, np.ndarray] = {"perm": self._perm.copy(), "ubuf": self._ubuf.copy()}
        if self._started:
            arrays["sample"] = np.asarray(self._s, dtype=np.int64).copy()
            arrays["budget"] = np.asarray(self._budget, dtype=np.float64).copy()
            if self._pin_b is not None:
                arrays["pin_b"] = self._pin_b.copy()
            if not self._bandit:
                meta["t"] = int(self._t)
                arrays["proc_b"] = np.asarray(self._proc_b, dtype=np.float64).copy()
                arrays["aux"] = np.asarray(self._aux, dtype=np.float64).copy()
                if self._bucket_on:
                    arrays["level"] = np.asarray(self._level, dtype=np.float64).copy()
                    arrays["refill"] = np.asarray(self._refill, dtype=np.float64).copy()
        return {"meta": meta, "arrays": arrays}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`get_state` result; the env then continues exactly as the one it was taken from.

        Raises :class:`ConfigError` when the state is malformed or belongs to another env (other ``num_envs``,
        mode, observation format, bucket setting or table). Pending seeds/options are those of the saved env.
        """
        if not isinstance(state, Mapping) or set(state) != {"meta", "arrays"}:
            raise ConfigError("vec env state must be a dict with keys 'meta' and 'arrays' (from get_state())")
        meta, arrays = state["meta"], state["arrays"]
        if not isinstance(meta, Mapping) or not isinstance(arrays, Mapping):
            raise ConfigError("vec env state: 'meta' and 'arrays' must be dicts")
        if meta.get("format") != self.STATE_FORMAT:
            raise ConfigError(f"vec env state has format {meta.get('format')!r}; expected {self.STATE_FORMAT!r}")
        mine = {"num_envs": self.num_envs, "mode": self.options.mode, "obs_format": self.options.obs_format,
                "bucket": self._bucket_on, "num_samples": self._ns, "num_plans": self._P}
        for k, v in mine.items():
            if meta.get(k) != v:
                raise ConfigError(f"vec env state does not fit this env: {k} is {meta.get(k)!r} in the state, "
                                  f"{v!r} here")
        if meta.get("table_sha256") != self._table_id():
            raise ConfigError("vec env state was taken on another outcome table (content hashes differ)")
        n = self.num_envs
        try:
            rngs = [None if r is None else _generator_from_state(r) for r in meta["rngs"]]
            seeds = list(meta["seeds"])
            options = [dict(o) for o in meta["options"]]
            started = bool(meta["started"])
            pos, upos, lam = int(meta["pos"]), int(meta["upos"]), float(meta["lam"])
            a = {k: np.asarray(v).copy() for k, v in arrays.items()}  # tensors → arrays too
            perm = a["perm"].astype(self._perm.dtype, copy=False)
            ubuf = a["ubuf"].astype(np.float64, copy=False)
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"vec env state is malformed: {type(e).__name__}: {e}") from None
        if len(rngs) != n or len(seeds) != n or len(options) != n:
            raise ConfigError(f"vec env state: rngs/seeds/options must have {n} entries")
        if perm.shape != self._perm.shape or ubuf.shape != self._ubuf.shape:
            raise ConfigError(f"vec env state: buffers have shapes {perm.shape}, {ubuf.shape}; expected "
                              f"{self._perm.shape}, {self._ubuf.shape}")
        if not (0 <= pos <= self._ns and 0 <= upos <= RNG_CHUNK):
            raise ConfigError(f"vec env state: positions pos={pos}, upos={upos} out of range")
        need = ["sample", "budget"] if started else []
        if started and not self._bandit:
            need += ["proc_b", "aux"] + (["level", "refill"] if self._bucket_on else [])
        for k in need + (["pin_b"] if "pin_b" in a else []):
            if k not in a or a[k].shape != (n,):
                raise ConfigError(f"vec env state: array {k!r} missing or not of shape ({n},)")
        if started and ((a["sample"] < 0) | (a["sample"] >= self._ns)).any():
            raise ConfigError("vec env state: sample rows out of range for this table")
        self._rngs = rngs
        self._perm[...] = perm
        self._ubuf[...] = ubuf
        self._pos, self._upos = pos, upos
        self._seeds = [None if sd is None else int(sd) for sd in seeds]
        self._options = options
        self.cfg.lam = lam
        self._started = started
        self._actions = None
        if not started:
            self._obs = None
            return
        self._s = a["sample"].astype(np.int64)
        self._budget = a["budget"].astype(np.float64)
        self._pin_b = a["pin_b"].astype(np.float64) if "pin_b" in a else None
        if not self._bandit:
            try:
                self._t = int(meta["t"])
            except (KeyError, TypeError, ValueError):
                raise ConfigError("vec env state: stream mode needs the request index 't'") from None
            self._proc_b = a["proc_b"].astype(np.float64)
            self._aux = a["aux"].astype(np.float64)
            if self._bucket_on:
                self._level = a["level"].astype(np.float64)
                self._refill = a["refill"].astype(np.float64)
        self._obs = self._make_obs()

    # ------------------------------------------------------------------ masks and attributes
    def action_masks(self) -> np.ndarray:
        """[N, P] bool: plans within each env's budget (cheapest always valid)."""
        if self.options.action_type != "plan":
            raise ConfigError("action_masks() is defined for Discrete plan actions (action_type='plan')")
        if not self._started:
            raise AdaInfError("action_masks() called before reset()")
        if not self.options.mask_over_budget:
            return np.ones((self.num_envs, self._P), dtype=bool)
        return feasible_with_fallback(self.cfg.cost, self._budget)

    def current_requests(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of every env's pending request: (table rows [N] int64, budgets [N] float64)."""
        if not self._started:
            raise AdaInfError("current_requests() called before reset()")
        return np.asarray(self._s, dtype=np.int64).copy(), np.asarray(self._budget, dtype=np.float64).copy()

    def render_one(self, i: int) -> np.ndarray | str | None:
        """Env ``i``'s last step as the render mode asks (the pending request before the first step)."""
        if self.render_mode is None:
            return None
        if self._last_step is None:
            rec: dict[str, Any] = {"plan": None, "cost": None, "correct": None, "overrun": 0.0, "reward": None,
                                   "budget": float(self._budget[i]) if self._started else 1.0,
                                   "sample": int(self._s[i]) if self._started else None}
        else:
            a, cost, correct, over, b, s, rew = self._last_step
            rec = {"plan": int(a[i]), "cost": float(cost[i]), "correct": bool(correct[i]), "overrun": float(over[i]),
                   "budget": float(b[i]), "sample": int(s[i]), "reward": float(rew[i])}
        return render_text(rec) if self.render_mode == "ansi" else render_frame(rec, self.cfg.plan_masks)


def _generator_from_state(state: Any) -> np.random.Generator:
    """A generator from a numpy ``bit_generator.state`` dict; :class:`ConfigError` for anything else."""
    name = state.get("bit_generator") if isinstance(state, Mapping) else None
    cls = getattr(np.random, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, np.random.BitGenerator)):
        raise ConfigError(f"vec env state holds an unknown numpy bit generator {name!r}")
    bg = cls()
    try:
        bg.state = dict(state)
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"vec env state: invalid {name} state ({e})") from None
    return np.random.Generator(bg)
