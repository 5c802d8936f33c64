"""Evaluation of E2: retrieval protocols and catalog embedding."""

from .embedding import embed_products
from .retrieval import positive_ranks, retrieval_metrics, sample100_candidates, sample100_metrics

__all__ = ["embed_products", "positive_ranks", "retrieval_metrics", "sample100_candidates", "sample100_metrics"]
