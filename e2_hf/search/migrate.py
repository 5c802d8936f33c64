"""`e2-hf index --migrate FROM TO`: every row of one index into a new one, folder to Milvus or back,
then the row counts and a sample of vectors checked on both sides."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import EmbeddingIndexError
from .engine import SearchSettings
from .index import EmbeddingIndex, check_new_index_folder, writer_lock
from .milvus import MilvusIndex, is_milvus_address, open_store

SAMPLE_ROWS = 200  # rows whose vectors are compared after a migration
FLOAT32_TOLERANCE = 1e-6  # a float32 store to a float32 store: the same numbers
HALF_TOLERANCE = 1e-2  # from float16 / bfloat16 storage


@dataclass
class MigrationReport:
    rows: int
    checked: int
    max_difference: float


def migrate(source: str, target: str, settings: SearchSettings | None = None,
            batch_rows: int = 1000) -> MigrationReport:  # fmt: skip
    """Copies the index at `source` into a new index at `target` (a folder or a Milvus store;
    `settings` choose the new index's type) with the same model record, entities, sizes, rows, row
    order, items and thumbnails; then checks both hold the same number of rows and the same vectors
    on a sample of rows. Nothing is written when `target` exists already."""
    origin = open_store(source)
    try:
        destination = _create_like(origin, target, settings)
        try:
            if destination.folder is None:
                _copy(origin, destination, batch_rows)
                destination.commit_search_indices()
            else:
                with writer_lock(destination.folder):
                    _copy(origin, destination, batch_rows)
                    destination.commit_search_indices()
                destination.reload()
            if len(destination) != len(origin):
                raise EmbeddingIndexError(f"{target} holds {len(destination)} rows after the migration, {source} "
                                          f"{len(origin)}")  # fmt: skip
            checked, difference = _compare_sample(origin, destination)
            rows = len(destination)
        finally:
            destination.close()
    finally:
        origin.close()
    tolerance = FLOAT32_TOLERANCE if origin.storage_dtype == destination.storage_dtype == "float32" else HALF_TOLERANCE
    if difference > tolerance:
        raise EmbeddingIndexError(f"{target}: sampled vectors differ from {source}'s by up to {difference:.2e}")
    return MigrationReport(rows=rows, checked=checked, max_difference=difference)


def _create_like(origin, target: str, settings: SearchSettings | None):
    record = origin.metadata
    arguments = (record["model"], record["model_fingerprint"], origin.entities, origin.dim, origin.thumbnail_size)
    if is_milvus_address(target):
        return MilvusIndex.create(target, *arguments, search_settings=settings)
    check_new_index_folder(target)
    with writer_lock(target):
        return EmbeddingIndex.create(target, *arguments, "float32", settings)


def _copy(origin, destination, batch_rows: int) -> None:
    with tqdm(total=len(origin), desc=f"migrating to {destination}", unit="row") as progress:
        for items, image, regions, thumbnails in origin.read_rows(batch_rows):
            destination.add(image, regions, thumbnails, items, items[0].source if items else "", normalize=False)
            progress.update(len(items))


def _compare_sample(origin, destination) -> tuple[int, float]:
    """`(rows compared, largest absolute difference)` of every target's vectors on up to
    `SAMPLE_ROWS` rows drawn with a fixed seed, matched by product id."""
    if len(origin) == 0:
        return 0, 0.0
    chosen = set(np.random.default_rng(0).choice(len(origin), min(SAMPLE_ROWS, len(origin)), replace=False).tolist())
    first, second = _vectors_of(origin, chosen), _vectors_of(destination, None)
    difference = 0.0
    for product_id, vectors in first.items():
        if product_id not in second:
            raise EmbeddingIndexError(f"{destination}: product {product_id} is missing after the migration")
        difference = max(difference, float(np.abs(vectors - second[product_id]).max()))
    return len(first), difference


def _vectors_of(index, rows: set[int] | None) -> dict[str, np.ndarray]:
    """`{product id: [targets, dim]}` of the rows whose position is in `rows` (all with None)."""
    found = {}
    for items, image, regions, _ in index.read_rows(1000, with_thumbnails=False):
        for position, item in enumerate(items):
            if rows is None or item.row in rows:
                stacked = torch.cat([image[position : position + 1], regions[position]], dim=0)
                found[item.product_id] = stacked.float().numpy()
    return found
