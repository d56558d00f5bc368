"""AdaInf schedulers: the :class:`Scheduler` (plan env) and :class:`AnytimePolicy` (anytime env) interfaces, an open
registry of learners and baselines (:func:`make_scheduler`, :func:`make_anytime_policy`, :func:`register`; a user's
``package.module:ClassName`` or any stable-baselines3 / sb3-contrib algorithm by name), the evaluation harness.

Importing ``agents`` does not import stable-baselines3 or torch: learners are imported when their name is used.
"""

from __future__ import annotations

from agents.base import AnytimePolicy, Decisions, PlanSpace, Scheduler, check_budgets
from agents.evaluation import (
    evaluate_bandit,
    evaluate_stream,
    markdown_tables,
    run_comparison,
    summarize,
    write_results,
)
from agents.registry import (
    available_schedulers,
    known_schedulers,
    load_scheduler,
    make_anytime_policy,
    make_scheduler,
    register,
    resolve,
    scheduler_class,
)

__all__ = [
    "Scheduler",
    "AnytimePolicy",
    "Decisions",
    "PlanSpace",
    "check_budgets",
    "make_scheduler",
    "make_anytime_policy",
    "load_scheduler",
    "register",
    "resolve",
    "scheduler_class",
    "known_schedulers",
    "available_schedulers",
    "evaluate_bandit",
    "evaluate_stream",
    "run_comparison",
    "summarize",
    "markdown_tables",
    "write_results",
]
