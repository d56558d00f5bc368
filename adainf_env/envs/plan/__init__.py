"""The plan env: one execution plan per request (``AdaInf/Bandit-v0``, ``AdaInf/Stream-v0``).

:mod:`~adainf_env.envs.plan.env` (the Gymnasium env, its class docstring is the manual),
:mod:`~adainf_env.envs.plan.vec_env` (numpy-batched SB3 ``VecEnv``), :mod:`~adainf_env.envs.plan.gym_vector`
(the Gymnasium ``VectorEnv`` that ``gymnasium.make_vec`` returns).
"""
