"""Any stable-baselines3 / sb3-contrib algorithm as a scheduler (``ppo``, ``a2c``, ``dqn``, ``maskable_ppo``).

* :mod:`agents.sb3.scheduler` — :class:`~agents.sb3.scheduler.SB3Scheduler` and the per-algorithm named classes;
* :mod:`agents.sb3.policy` — the residual-around-LUT actor-critic policies;
* :mod:`agents.sb3.obs` — the policy's observation and the env wrapper (candidate actions, action masks);
* :mod:`agents.sb3.callback` — held-out scoring, selection, checkpoint and user callback during ``learn``;
* :mod:`agents.sb3.resume` — the training state a checkpoint holds.

Import :mod:`agents.sb3.scheduler` (or use :func:`agents.make_scheduler`): importing this package does not import
stable-baselines3.
"""
