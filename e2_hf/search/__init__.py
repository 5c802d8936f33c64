"""Entity-aware search: an index of global and regional embeddings (a folder searched with FAISS,
or a Milvus collection: `open_store`), text or image queries (one or a batch) against either,
results as an image grid, an HTML page or JSON lines, and an export as a Hugging Face dataset."""

from ..lazy import lazy_exports

# public name -> the module it lives in, imported when the name is first used
_EXPORTS = {
    "IndexingReport": ".build",
    "add_catalog": ".build",
    "open_or_create_index": ".build",
    "SearchSettings": ".engine",
    "EmbeddingIndex": ".index",
    "EmbeddingIndexError": ".index",
    "EmbeddingStore": ".index",
    "IndexItem": ".index",
    "model_fingerprint": ".index",
    "MilvusIndex": ".milvus",
    "open_store": ".milvus",
    "SearchHit": ".query",
    "SearchQuery": ".query",
    "read_queries": ".query",
    "run_queries": ".query",
    "search_embedding": ".query",
    "search_embeddings": ".query",
    "search_images": ".query",
    "search_text": ".query",
    "search_texts": ".query",
    "text_query_embedding": ".query",
    "render_grid": ".render",
    "render_html": ".render",
    "write_results": ".render",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
