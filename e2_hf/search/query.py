"""Searching an index with text or image queries, one or a batch, against the global embedding or
one entity's regional embedding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.catalogs import json_object
from ..modeling import E2CLIPEmbedder, E2CLIPModel, E2CLIPProcessor
from .engine import search_index
from .index import EmbeddingIndex, EmbeddingIndexError, IndexItem, model_fingerprint


@dataclass
class SearchHit:
    rank: int  # 1-based
    row: int
    score: float  # cosine similarity (approximate indices may quantise it)
    item: IndexItem

    def to_json(self) -> dict[str, Any]:
        return {"rank": self.rank, "row": self.row, "score": self.score, "product_id": self.item.product_id,
                "description": self.item.description, "tags": self.item.tags}  # fmt: skip


def search_embeddings(index: EmbeddingIndex, queries: torch.Tensor, entity: str | None = None,
                      top_k: int = 10) -> list[list[SearchHit]]:  # fmt: skip
    """For each query vector (`[q, dim]`, any norm), the `top_k` rows most similar to it: by the
    global image embedding, or by the regional embedding of `entity`. One FAISS search serves the
    batch; the index type (exact or approximate) is the index's, on the GPUs with `index.faiss_gpu`."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if queries.ndim != 2 or queries.shape[1] != index.dim:
        raise EmbeddingIndexError(f"the query embeddings have shape {tuple(queries.shape)}, need [q, {index.dim}]")
    if not torch.isfinite(queries).all():
        raise ValueError("a query embedding holds non-finite values")
    faiss_index = index.searcher(entity)
    if len(index) == 0:
        return [[] for _ in range(len(queries))]
    queries = F.normalize(queries.float(), dim=-1).cpu().numpy()
    scores, rows = search_index(faiss_index, queries, min(top_k, len(index)))
    items = index.items
    return [_hits(query_scores, query_rows, items) for query_scores, query_rows in zip(scores, rows)]


def _hits(scores: np.ndarray, rows: np.ndarray, items: list[IndexItem]) -> list[SearchHit]:
    found = rows >= 0  # FAISS marks missing results with -1
    return [SearchHit(rank=rank, row=int(row), score=float(score), item=items[int(row)])
            for rank, (score, row) in enumerate(zip(scores[found], rows[found]), start=1)]  # fmt: skip


def search_embedding(index: EmbeddingIndex, query: torch.Tensor, entity: str | None = None,
                     top_k: int = 10) -> list[SearchHit]:  # fmt: skip
    """`search_embeddings` for one query vector (`[dim]`)."""
    if query.ndim != 1:
        raise EmbeddingIndexError(f"the query embedding has shape {tuple(query.shape)}, the index stores {index.dim}")
    return search_embeddings(index, query[None], entity, top_k)[0]


def _embedder(model: E2CLIPModel, processor: E2CLIPProcessor) -> E2CLIPEmbedder:
    return E2CLIPEmbedder(model, processor, device=next(model.parameters()).device, progress=False)


def text_query_embeddings(model: E2CLIPModel, processor: E2CLIPProcessor, queries: Sequence[str]) -> torch.Tensor:
    """`[q, dim]` float32 CPU text embeddings of `queries` (what the tags were contrasted with)."""
    for position, query in enumerate(queries):
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"query {position + 1} is empty" if isinstance(query, str) else
                             f"query {position + 1} is a {type(query).__name__}, not a text")  # fmt: skip
    return _embedder(model, processor).embed_texts(list(queries))


def text_query_embedding(model: E2CLIPModel, processor: E2CLIPProcessor, query: str) -> torch.Tensor:
    """`[dim]` float32 CPU text embedding of `query`."""
    return text_query_embeddings(model, processor, [query])[0]


def image_query_embeddings(model: E2CLIPModel, processor: E2CLIPProcessor, images: Sequence[Any],
                           entity: str | None = None) -> torch.Tensor:  # fmt: skip
    """`[q, dim]` embeddings of query images (paths, PIL images or arrays): the global image
    embedding, or `entity`'s regional embedding, so that "the same brand as this photo" searches
    brand regions with the photo's brand region."""
    embeddings = _embedder(model, processor).embed_images(images)
    return (embeddings.image_embeds if entity is None else embeddings.region(entity)).float().cpu()


def _checked_index(model: E2CLIPModel, index: EmbeddingIndex) -> EmbeddingIndex:
    index.check_model(model_fingerprint(model), str(model.name_or_path))
    return index


def search_texts(model: E2CLIPModel, processor: E2CLIPProcessor, index: EmbeddingIndex, queries: Sequence[str],
                 entity: str | None = None, top_k: int = 10) -> list[list[SearchHit]]:  # fmt: skip
    """Text search, a batch of queries: `entity=None` matches whole images, `entity="brand"` brand regions."""
    _checked_index(model, index)
    return search_embeddings(index, text_query_embeddings(model, processor, queries), entity, top_k)


def search_text(model: E2CLIPModel, processor: E2CLIPProcessor, index: EmbeddingIndex, query: str,
                entity: str | None = None, top_k: int = 10) -> list[SearchHit]:  # fmt: skip
    """Text search: `entity=None` matches the whole image, `entity="brand"` its brand region."""
    return search_texts(model, processor, index, [query], entity, top_k)[0]


def search_images(model: E2CLIPModel, processor: E2CLIPProcessor, index: EmbeddingIndex, images: Sequence[Any],
                  entity: str | None = None, top_k: int = 10) -> list[list[SearchHit]]:  # fmt: skip
    """Image search, a batch of query images: by the global embedding, or image region to stored
    region of `entity` (products whose brand region looks like the query photo's)."""
    _checked_index(model, index)
    return search_embeddings(index, image_query_embeddings(model, processor, images, entity), entity, top_k)


@dataclass
class SearchQuery:
    """One query of a batch: a text or an image (path), against the global embedding or `entity`'s region."""

    text: str | None = None
    image: str | None = None
    entity: str | None = None
    id: str | None = None  # the caller's name for it, echoed in the results

    def __post_init__(self) -> None:
        if (self.text is None) == (self.image is None):
            raise ValueError("a query has either a text or an image")

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in vars(self).items() if value is not None}


QUERY_FIELDS = ("text", "image", "entity", "id")  # all strings


def read_queries(path: str | Path, default_entity: str | None = None) -> list[SearchQuery]:
    """The queries of a JSON-lines file, one object a line: `{"text": ...}` or `{"image": PATH}`
    (relative to the file), optionally `"entity"` (else `default_entity`) and `"id"`. Errors name the line."""
    path = Path(path)
    queries = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            record = json_object(line, where, "one query", ValueError)
            unknown = sorted(set(record) - set(QUERY_FIELDS))
            wrong = [name for name in QUERY_FIELDS if name in record and not isinstance(record[name], str)]
            if unknown or wrong or ("text" in record) == ("image" in record):
                raise ValueError(f'{where}: a query is {{"text": ...}} or {{"image": PATH}}, optionally with "entity" '
                                 f'and "id" (all strings); unknown fields {unknown}, not strings {wrong}')  # fmt: skip
            if "image" in record:
                record["image"] = str(path.parent / record["image"])
            queries.append(SearchQuery(**{"entity": default_entity, **record}))
    if not queries:
        raise ValueError(f"{path} holds no query")
    return queries


def run_queries(model: E2CLIPModel, processor: E2CLIPProcessor, index: EmbeddingIndex, queries: Sequence[SearchQuery],
                top_k: int = 10) -> list[list[SearchHit]]:  # fmt: skip
    """The hits of each query, in order; queries of one kind and target are embedded and searched as one batch."""
    _checked_index(model, index)
    results: list[list[SearchHit] | None] = [None] * len(queries)
    groups: dict[tuple[bool, str | None], list[int]] = {}
    for position, query in enumerate(queries):
        groups.setdefault((query.text is not None, query.entity), []).append(position)
    for (is_text, entity), positions in groups.items():
        if is_text:
            vectors = text_query_embeddings(model, processor, [queries[position].text for position in positions])
        else:
            vectors = image_query_embeddings(
                model, processor, [queries[position].image for position in positions], entity
            )
        for position, hits in zip(positions, search_embeddings(index, vectors, entity, top_k)):
            results[position] = hits
    return results
