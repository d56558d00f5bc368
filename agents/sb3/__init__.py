"""Any stable-baselines3 / sb3-contrib algorithm as a scheduler (``ppo``, ``a2c``, ``dqn``, ``maskable_ppo``).
Import :mod:`agents.sb3.scheduler` (or use :func:`agents.make_scheduler`): importing this package does not import
stable-baselines3."""
