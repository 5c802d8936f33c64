"""Evaluation of E2: retrieval protocols, per-entity metrics and catalog embedding."""

from .embedding import CatalogEmbeddings, embed_catalog, embed_products, embed_texts, load_for_inference
from .entities import distinct_tags, linear_probe_accuracy, region_retrieval_metrics, tag_value_matrix
from .retrieval import positive_ranks, retrieval_metrics, sample100_candidates, sample100_metrics

__all__ = [
    "CatalogEmbeddings",
    "distinct_tags",
    "embed_catalog",
    "embed_products",
    "embed_texts",
    "linear_probe_accuracy",
    "load_for_inference",
    "positive_ranks",
    "region_retrieval_metrics",
    "tag_value_matrix",
    "retrieval_metrics",
    "sample100_candidates",
    "sample100_metrics",
]
