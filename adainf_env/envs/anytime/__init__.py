"""The anytime env: a request served block by block (``AdaInf/Anytime-v0``).

:mod:`~adainf_env.envs.anytime.core` (block costs, the batched request kernel, observations),
:mod:`~adainf_env.envs.anytime.env` (the Gymnasium env, its class docstring is the manual),
:mod:`~adainf_env.envs.anytime.vec_env` (numpy-batched SB3 ``VecEnv``), :mod:`~adainf_env.envs.anytime.gym_vector`
(the Gymnasium ``VectorEnv``), :mod:`~adainf_env.envs.anytime.render` (frames and text),
:mod:`~adainf_env.envs.anytime.stages` (the stage menu and stage actions, ``action_mode="stage"``).
"""
