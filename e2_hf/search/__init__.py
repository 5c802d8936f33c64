"""Entity-aware search: an on-disk index of global and regional embeddings searched with FAISS,
text or image queries (one or a batch) against either, results as an image grid, an HTML page or
JSON lines, and an export as a Hugging Face dataset."""

from .build import IndexingReport, add_catalog, open_or_create_index
from .engine import SearchSettings
from .index import EmbeddingIndex, EmbeddingIndexError, IndexItem, model_fingerprint
from .query import (
    SearchHit,
    SearchQuery,
    read_queries,
    run_queries,
    search_embedding,
    search_embeddings,
    search_images,
    search_text,
    search_texts,
    text_query_embedding,
)
from .render import render_grid, render_html, write_results

__all__ = [
    "EmbeddingIndex",
    "EmbeddingIndexError",
    "IndexItem",
    "IndexingReport",
    "SearchHit",
    "SearchQuery",
    "SearchSettings",
    "add_catalog",
    "model_fingerprint",
    "open_or_create_index",
    "read_queries",
    "render_grid",
    "render_html",
    "run_queries",
    "search_embedding",
    "search_embeddings",
    "search_images",
    "search_text",
    "search_texts",
    "text_query_embedding",
    "write_results",
]
