"""Small index folders of random vectors, written through the project's own API (no model): what
the hostile-input and fuzz tests damage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from e2_hf.search.engine import SearchSettings
from e2_hf.search.index import EmbeddingIndex, writer_lock
from e2_hf.search.query import search_embeddings

ENTITIES = ("brand", "season")
DIM = 16
THUMBNAIL_SIZE = 4


def add_random_rows(index: EmbeddingIndex, rows: int, seed: int) -> None:
    """`rows` random products (ids `p<seed>-<n>`) appended and committed, FAISS files included."""
    generator = torch.Generator().manual_seed(seed)
    items = [{"product_id": f"p{seed}-{row}", "description": f"product {row}", "tags": {"brand": f"b{row % 3}"},
              "source": "random"} for row in range(rows)]  # fmt: skip
    with writer_lock(index.folder):
        index.reload()
        thumbnails = np.full((rows, THUMBNAIL_SIZE, THUMBNAIL_SIZE, 3), seed % 256, dtype=np.uint8)
        index.add(torch.randn(rows, DIM, generator=generator),
                  torch.randn(rows, len(ENTITIES), DIM, generator=generator), thumbnails, items, "random")  # fmt: skip
        index.commit_search_indices()


def random_index(folder: Path, shards: tuple[int, ...] = (40, 30), settings: SearchSettings | None = None,
                 ) -> EmbeddingIndex:  # fmt: skip
    """A committed index of `sum(shards)` random rows in `len(shards)` shards."""
    with writer_lock(folder):
        index = EmbeddingIndex.create(folder, "random", "0" * 16, ENTITIES, DIM, THUMBNAIL_SIZE,
                                      search_settings=settings)  # fmt: skip
    for seed, rows in enumerate(shards):
        add_random_rows(index, rows, seed)
    return EmbeddingIndex(folder)


def open_and_search(folder: Path, top_k: int = 5) -> int:
    """What `e2-hf search` does with an index: open it, load every target's FAISS index, search it,
    look up each hit's item and thumbnail. Returns the hits found."""
    index = EmbeddingIndex(folder)
    found = 0
    query = np.ones((1, index.dim), dtype=np.float32) / np.sqrt(index.dim)
    for target in index.targets:
        for hits in search_embeddings(index, torch.from_numpy(query), target, top_k):
            for hit in hits:
                assert hit.item is index.items[hit.row]
                index.thumbnail(hit.row)
                found += 1
    return found
