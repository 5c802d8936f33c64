"""Evaluation of E2: retrieval protocols."""

from .retrieval import positive_ranks, retrieval_metrics, sample100_candidates, sample100_metrics

__all__ = ["positive_ranks", "retrieval_metrics", "sample100_candidates", "sample100_metrics"]
