"""Filtered link-prediction evaluation."""

from kgweave.evaluation.ranking import (
    EvaluationResult,
    evaluate,
    filtered_ranks,
    metrics_from_ranks,
    realistic_rank,
)

__all__ = ["EvaluationResult", "evaluate", "filtered_ranks", "metrics_from_ranks", "realistic_rank"]
