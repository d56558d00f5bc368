"""The plan env: one execution plan per request (``AdaInf/Bandit-v0``, ``AdaInf/Stream-v0``).

:mod:`~adainf_env.envs.plan.env` (the Gymnasium env, its class docstring is the manual),
:mod:`~adainf_env.envs.plan.batched` (the numpy core of the batched envs, no SB3), its adapters
:mod:`~adainf_env.envs.plan.vec_env` (SB3 ``VecEnv``) and :mod:`~adainf_env.envs.plan.gym_vector` (the Gymnasium
``VectorEnv`` that ``gymnasium.make_vec`` returns).
"""
