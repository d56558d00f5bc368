"""Outcome tables: every plan × every sample, and everything that makes, checks or ships them.

:mod:`~adainf_env.tables.outcomes` (:class:`OutcomeTable`: validated, hashed, atomic ``.npz``),
:mod:`~adainf_env.tables.builder` (prefix-shared builder), :mod:`~adainf_env.tables.shards` (sharded, resumable
builds across processes), :mod:`~adainf_env.tables.reference` and :mod:`~adainf_env.tables.reference_meta` (the
reference tables shipped in ``adainf_env/reference_data/`` and their metadata), :mod:`~adainf_env.tables.toy`
(synthetic tables with a known optimum).
"""
