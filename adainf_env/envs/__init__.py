"""The AdaInf environments, grouped by kind.

* :mod:`adainf_env.envs.plan` — pick one execution plan per request (``AdaInf/Bandit-v0``, ``AdaInf/Stream-v0``):
  the Gymnasium env, the numpy-batched SB3 ``VecEnv`` and the Gymnasium ``VectorEnv`` adapter.
* :mod:`adainf_env.envs.anytime` — serve a request block by block, reading the network's answer on the way
  (``AdaInf/Anytime-v0``): the same three forms over one batched kernel.

Shared by both: :mod:`~adainf_env.envs.options` (the options, one frozen dataclass), :mod:`~adainf_env.envs.reward`
(the one reward function), :mod:`~adainf_env.envs.core` (request draws, observation parts, action checks),
:mod:`~adainf_env.envs.render`, :mod:`~adainf_env.envs.vec_base` (what the SB3 ``VecEnv`` classes share),
:mod:`~adainf_env.envs.gym_vector_base` (what the Gymnasium ``VectorEnv`` adapters share) and
:mod:`~adainf_env.envs.registration` (the ids).
"""
