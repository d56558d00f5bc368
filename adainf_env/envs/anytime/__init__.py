"""The anytime env: a request served block by block (``AdaInf/Anytime-v0``).

:mod:`~adainf_env.envs.anytime.core` (block costs, the kernel tables, the batched request kernel and its one-request
fast path, observations), :mod:`~adainf_env.envs.anytime.env` (the Gymnasium env, its class docstring is the manual),
:mod:`~adainf_env.envs.anytime.batched` (the numpy core of the batched envs, no SB3), its adapters
:mod:`~adainf_env.envs.anytime.vec_env` (SB3 ``VecEnv``) and :mod:`~adainf_env.envs.anytime.gym_vector` (the
Gymnasium ``VectorEnv``), :mod:`~adainf_env.envs.anytime.render` (frames and text),
:mod:`~adainf_env.envs.anytime.stages` (the stage menu and stage actions, ``action_mode="stage"``).
"""
