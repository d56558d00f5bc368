"""Evaluation: the harness (bandit budget sweeps, stream / shared-bucket runs → result records) and report writers."""

from agents.evaluation.harness import (
    evaluate_bandit,
    evaluate_stream,
    markdown_tables,
    run_comparison,
    summarize,
    write_results,
)

__all__ = ["evaluate_bandit", "evaluate_stream", "run_comparison", "summarize", "markdown_tables", "write_results"]
