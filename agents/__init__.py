"""AdaInf schedulers: one :class:`Scheduler` interface, a registry of learners and baselines, the evaluation harness.

Importing ``agents`` does not import stable-baselines3 or torch: learners are imported when their name is used
(:func:`make_scheduler`).
"""

from __future__ import annotations

from agents.base import Decisions, PlanSpace, Scheduler, check_budgets
from agents.evaluation import (
    evaluate_bandit,
    evaluate_stream,
    markdown_tables,
    run_comparison,
    summarize,
    write_results,
)
from agents.registry import available_schedulers, known_schedulers, make_scheduler, scheduler_class

__all__ = [
    "Scheduler",
    "Decisions",
    "PlanSpace",
    "check_budgets",
    "make_scheduler",
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
