"""Evaluation of E2: retrieval protocols, per-entity metrics and catalog embedding."""

from ..lazy import lazy_exports

# public name -> the module it lives in, imported when the name is first used
_EXPORTS = {
    "CatalogEmbeddings": ".embedding",
    "embed_catalog": ".embedding",
    "embed_products": ".embedding",
    "embed_texts": ".embedding",
    "load_for_inference": ".embedding",
    "distinct_tags": ".entities",
    "linear_probe_accuracy": ".entities",
    "region_retrieval_metrics": ".entities",
    "tag_value_matrix": ".entities",
    "positive_ranks": ".retrieval",
    "retrieval_metrics": ".retrieval",
    "sample100_candidates": ".retrieval",
    "sample100_metrics": ".retrieval",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
