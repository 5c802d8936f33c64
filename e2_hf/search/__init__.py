"""Entity-aware search: an on-disk index of global and regional embeddings, text queries against
either, and results as an image grid or an HTML page."""

from .build import IndexingReport, add_catalog, open_or_create_index
from .index import EmbeddingIndex, EmbeddingIndexError, IndexItem, model_fingerprint
from .query import SearchHit, search_embedding, search_text, text_query_embedding
from .render import render_grid, render_html, write_results

__all__ = [
    "EmbeddingIndex",
    "EmbeddingIndexError",
    "IndexItem",
    "IndexingReport",
    "SearchHit",
    "add_catalog",
    "model_fingerprint",
    "open_or_create_index",
    "render_grid",
    "render_html",
    "search_embedding",
    "search_text",
    "text_query_embedding",
    "write_results",
]
