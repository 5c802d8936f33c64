"""Searching an index with text or image queries, one or a batch, against the global embedding or
one entity's regional embedding."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.catalogs import json_object
from ..modeling import E2CLIPEmbedder, E2CLIPModel, E2CLIPProcessor
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
                      top_k: int = 10, where: Mapping[str, str] | None = None) -> list[list[SearchHit]]:  # fmt: skip
    """For each query vector (`[q, dim]`, any norm), the `top_k` rows most similar to it: by the
    global image embedding, or by the regional embedding of `entity`; with `where` (`{entity: tag}`)
    only among products carrying those tags. One search serves the batch; the index type (exact or
    approximate) is the index's: FAISS for a folder (on the GPUs with `index.faiss_gpu`), Milvus for
    a Milvus store."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    queries = _checked_queries(index, queries)
    return [_hits(found) for found in index.nearest(queries, entity, top_k, where)]


def search_weighted(index: EmbeddingIndex, queries: Mapping[str | None, torch.Tensor],
                    weights: Mapping[str | None, float], top_k: int = 10, candidates: int | None = None,
                    where: Mapping[str, str] | None = None) -> list[list[SearchHit]]:  # fmt: skip
    """Global and regional search in one ranking: each target's `candidates` nearest rows (default
    `10 * top_k`) to its query vectors (`queries[target]`, `[q, dim]`), scored by the weighted sum
    of their cosines (a row missing from a target's candidates adds nothing for it). A Milvus store
    answers with `hybrid_search` and a `WeightedRanker` without score normalisation, which fuses the
    same way, so both stores rank alike where their per-target answers agree (exact indexes)."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if set(queries) != set(weights) or not weights:
        raise ValueError(f"weights {sorted(map(str, weights))} and query targets {sorted(map(str, queries))} differ")
    candidates = candidates or 10 * top_k
    vectors = {target: _checked_queries(index, values) for target, values in queries.items()}
    if hasattr(index, "nearest_weighted"):
        found = index.nearest_weighted(vectors, weights, top_k, candidates, where)
    else:
        per_target = {target: index.nearest(values, target, candidates, where) for target, values in vectors.items()}
        found = [fuse_weighted([per_target[target][query] for target in weights], list(weights.values()), top_k)
                 for query in range(len(next(iter(vectors.values()))))]  # fmt: skip
    return [_hits(hits) for hits in found]


def fuse_weighted(answers: Sequence[list[tuple[float, IndexItem]]], weights: Sequence[float],
                  top_k: int) -> list[tuple[float, IndexItem]]:  # fmt: skip
    """One ranking from several targets' `(score, item)` lists: the weighted sum of each item's
    scores, best first (ties by product id)."""
    fused: dict[str, list] = {}
    for answer, weight in zip(answers, weights):
        for score, item in answer:
            fused.setdefault(item.product_id, [0.0, item])[0] += weight * score
    ranked = sorted(fused.values(), key=lambda entry: (-entry[0], entry[1].product_id))
    return [(score, item) for score, item in ranked[:top_k]]


def _checked_queries(index: EmbeddingIndex, queries: torch.Tensor) -> np.ndarray:
    if queries.ndim != 2 or queries.shape[1] != index.dim:
        raise EmbeddingIndexError(f"the query embeddings have shape {tuple(queries.shape)}, need [q, {index.dim}]")
    if not torch.isfinite(queries).all():
        raise ValueError("a query embedding holds non-finite values")
    return F.normalize(queries.float(), dim=-1).cpu().numpy()


def _hits(found: list[tuple[float, IndexItem]]) -> list[SearchHit]:
    return [SearchHit(rank=rank, row=item.row, score=score, item=item)
            for rank, (score, item) in enumerate(found, start=1)]  # fmt: skip


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
                top_k: int = 10, where: Mapping[str, str] | None = None) -> list[list[SearchHit]]:  # fmt: skip
    """The hits of each query, in order; queries of one kind and target are embedded and searched as one batch
    (with `where`, only among products carrying those tags)."""
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
        for position, hits in zip(positions, search_embeddings(index, vectors, entity, top_k, where)):
            results[position] = hits
    return results


def run_weighted(model: E2CLIPModel, processor: E2CLIPProcessor, index: EmbeddingIndex, query: SearchQuery,
                 weights: Mapping[str | None, float], top_k: int = 10,
                 where: Mapping[str, str] | None = None) -> list[SearchHit]:  # fmt: skip
    """One query ranked by several targets at once (`search_weighted`): a text's embedding against
    each target; an image's global embedding against the global one and its region of each entity
    against that entity's."""
    _checked_index(model, index)
    if query.text is not None:
        vector = text_query_embeddings(model, processor, [query.text])
        vectors = dict.fromkeys(weights, vector)
    else:
        embeddings = _embedder(model, processor).embed_images([query.image])
        vectors = {target: (embeddings.image_embeds if target is None else embeddings.region(target)).float().cpu()
                   for target in weights}  # fmt: skip
    return search_weighted(index, vectors, weights, top_k, where=where)[0]
