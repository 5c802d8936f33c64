"""Searching an index with a text query, against the global or one entity's regional embeddings."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..compat import projected_features
from ..modeling import E2CLIPModel, E2CLIPProcessor
from .index import EmbeddingIndex, EmbeddingIndexError, IndexItem, model_fingerprint


@dataclass
class SearchHit:
    rank: int  # 1-based
    row: int
    score: float  # cosine similarity
    item: IndexItem


def search_embedding(index: EmbeddingIndex, query: torch.Tensor, entity: str | None = None,
                     top_k: int = 10) -> list[SearchHit]:  # fmt: skip
    """The `top_k` rows most similar to `query` (`[dim]`, any norm): by the global image embedding,
    or by the regional embedding of `entity`. Streams the memory-mapped shards block by block;
    equal scores rank by row. Rows whose stored embedding is not finite (a damaged shard) are never
    returned; a warning counts them."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if query.shape != (index.dim,):
        raise EmbeddingIndexError(f"the query embedding has shape {tuple(query.shape)}, the index stores {index.dim}")
    query = torch.nn.functional.normalize(query.float(), dim=-1).numpy()
    entity_position = None if entity is None else index.entity_index(entity)
    name = "image_embeds" if entity is None else "region_embeds"
    best_scores, best_rows = torch.empty(0), torch.empty(0, dtype=torch.long)
    broken_rows = 0
    for first_row, block in index.iter_blocks(name):
        vectors = block if entity_position is None else block[:, entity_position]  # [rows, dim]
        scores = torch.from_numpy(vectors @ query)  # [rows]; numpy reads the memory map in place
        broken = ~torch.isfinite(scores)
        if broken.any():
            broken_rows += int(broken.sum())
            scores = scores.masked_fill(broken, -torch.inf)
        rows = torch.arange(first_row, first_row + len(scores))
        best_scores, best_rows = _keep_best(torch.cat([best_scores, scores]), torch.cat([best_rows, rows]), top_k)
    if broken_rows:
        warnings.warn(
            f"{index.folder}: {broken_rows} rows have non-finite embeddings and were left out of the results; "
            "the index is damaged (check it with e2-hf index --verify)",
            stacklevel=2,
        )
    keep = torch.isfinite(best_scores)
    items = index.items
    return [
        SearchHit(rank=rank, row=int(row), score=float(score), item=items[int(row)])
        for rank, (score, row) in enumerate(zip(best_scores[keep].tolist(), best_rows[keep].tolist()), start=1)
    ]


def _keep_best(scores: torch.Tensor, rows: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `top_k` highest scores, ordered by score, then row."""
    order = np.lexsort((rows.numpy(), -scores.numpy()))[:top_k]
    order = torch.from_numpy(order)
    return scores[order], rows[order]


@torch.no_grad()
def text_query_embedding(model: E2CLIPModel, processor: E2CLIPProcessor, query: str) -> torch.Tensor:
    """`[dim]` float32 CPU text embedding of `query` (what the tags were contrasted with)."""
    if not query.strip():
        raise ValueError("the query is empty")
    parameter = next(model.parameters())
    encoded = processor(text=[query])
    features = model.get_text_features(encoded["input_ids"].to(parameter.device),
                                       encoded["attention_mask"].to(parameter.device))  # fmt: skip
    features = projected_features(features)
    return features[0].float().cpu()


def search_text(model: E2CLIPModel, processor: E2CLIPProcessor, index: EmbeddingIndex, query: str,
                entity: str | None = None, top_k: int = 10) -> list[SearchHit]:  # fmt: skip
    """Text search: `entity=None` matches the whole image, `entity="brand"` its brand region."""
    index.check_model(model_fingerprint(model), str(model.name_or_path))
    return search_embedding(index, text_query_embedding(model, processor, query), entity, top_k)
