"""Evaluation: the harnesses (bandit budget sweeps, stream / shared-bucket runs → result records), the comparison driver
(:mod:`agents.evaluation.comparison`), the report writers
(summaries, tables, files, plots, TensorBoard), per-decision metrics and per-request stream traces."""

from agents.evaluation.comparison import run_comparison
from agents.evaluation.harness import evaluate_bandit, evaluate_stream
from agents.evaluation.metrics import BUDGET_GRID, plan_entropy
from agents.evaluation.report import markdown_tables, summarize, write_results

__all__ = ["evaluate_bandit", "evaluate_stream", "run_comparison", "summarize", "markdown_tables", "write_results",
           "BUDGET_GRID", "plan_entropy"]
