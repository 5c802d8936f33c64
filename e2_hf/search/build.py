"""Embedding catalogs into an index: images in batches, with a progress bar, any device and dtype."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..cli_options import print_notice
from ..data import Catalog, ImageLoadError, open_catalog, untagged_entities_notice
from ..evaluation.embedding import evaluating
from ..local_paths import portable_name, portable_spec
from ..modeling import E2CLIPEmbedder, E2CLIPModel, E2CLIPProcessor
from .index import EmbeddingIndex, EmbeddingIndexError, IndexItem, letterbox, model_fingerprint, writer_lock

DEFAULT_THUMBNAIL_SIZE = 128
DEFAULT_SHARD_ROWS = 20_000


class _CatalogImages(Dataset):
    """`{"pixel_values": [3, size, size], "thumbnail": [t, t, 3] uint8}` of each chosen product's
    first view, or `{"error": message}` for an unreadable image, so that the error is raised in the
    main process (a clean message naming the file and row), not inside a loader worker."""

    def __init__(self, catalog: Catalog, positions: list[int], processor: E2CLIPProcessor, thumbnail_size: int):
        self.catalog, self.positions, self.processor = catalog, positions, processor
        self.thumbnail_size = thumbnail_size

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            image = self.catalog.load_image(self.positions[index])
        except ImageLoadError as error:
            return {"error": str(error)}
        return {
            "pixel_values": self.processor(images=image)["pixel_values"][0],
            "thumbnail": torch.from_numpy(letterbox(image, self.thumbnail_size)),
        }


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    errors = [item["error"] for item in items if "error" in item]
    if errors:
        return {"errors": errors}
    return {key: torch.stack([item[key] for item in items]) for key in ("pixel_values", "thumbnail")}


@dataclass
class IndexingReport:
    added: int
    skipped_existing: int
    total: int


def open_or_create_index(folder: str | Path, model: E2CLIPModel, model_name: str,
                         thumbnail_size: int = DEFAULT_THUMBNAIL_SIZE) -> EmbeddingIndex:  # fmt: skip
    """The index in `folder`, checked to come from `model`; a new one where there is none."""
    fingerprint = model_fingerprint(model)
    with writer_lock(folder):
        if (Path(folder) / "index.json").exists():
            index = EmbeddingIndex(folder)
            index.check_model(fingerprint, model_name)
            return index
        if not model.config.entities:
            raise EmbeddingIndexError(f"{model_name} has no entities, so no regional embeddings to index")
        return EmbeddingIndex.create(folder, portable_name(model_name), fingerprint, model.config.entities,
                                     model.config.projection_dim, thumbnail_size)  # fmt: skip


@torch.no_grad()
def add_catalog(
    index: EmbeddingIndex,
    model: E2CLIPModel,
    processor: E2CLIPProcessor,
    spec: str,
    batch_size: int = 64,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    num_workers: int = 0,
    skip_existing: bool = False,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    keep_html: bool = False,
    tag_separators: Sequence[str] | Mapping[str, str] | None = None,
) -> IndexingReport:
    """Embeds every product of the catalog `spec` (first view) and appends it to `index`.

    The whole add holds the index folder's writer lock (a concurrent add waits for it). A product id
    already in the index, or repeated within the catalog, is an error, unless `skip_existing`, which
    leaves those products out (so that re-running on a grown catalog adds only the new products; of
    ids repeated in the catalog the first is kept)."""
    catalog = open_catalog(spec, keep_html=keep_html, tag_separators=tag_separators)
    print_notice(untagged_entities_notice(catalog, index.entities, spec, "its regional embeddings are stored, but "
                                          "no tag of the catalog can show what they match"))  # fmt: skip
    with writer_lock(index.folder):
        index.reload()  # another writer may have committed while this one waited
        positions = _new_positions(catalog, index.product_ids(), index.folder, spec, skip_existing)
        _embed_and_add(index, model, processor, catalog, positions, portable_spec(spec), batch_size, device, dtype,
                       num_workers, shard_rows)  # fmt: skip
    return IndexingReport(added=len(positions), skipped_existing=len(catalog) - len(positions), total=len(index))


def _new_positions(catalog: Catalog, existing: set[str], folder: Path, spec: str, skip_existing: bool) -> list[int]:
    """Rows of the catalog to add: all of them, or (with `skip_existing`) those whose id is new."""
    positions, seen, in_index, repeated = [], set(), [], []
    for row, product in enumerate(catalog.products):
        if product.product_id in existing:
            in_index.append(product.product_id)
        elif product.product_id in seen:
            repeated.append(f"{product.product_id} (row {row + 1})")
        else:
            positions.append(row)
        seen.add(product.product_id)
    if (in_index or repeated) and not skip_existing:
        problems = []
        if in_index:
            problems.append(f"{len(in_index)} products are already in {folder} (product ids {_first(in_index)})")
        if repeated:
            problems.append(f"{len(repeated)} product ids appear more than once in it ({_first(repeated)})")
        raise EmbeddingIndexError(
            f"{spec}: " + "; ".join(problems) + ". Pass --skip-existing to add each product id once"
        )
    return positions


def _first(values: list[str], shown: int = 5) -> str:
    return ", ".join(values[:shown]) + (", ..." if len(values) > shown else "")


def _embed_and_add(index, model, processor, catalog, positions, spec, batch_size, device, dtype, num_workers,
                   shard_rows) -> None:  # fmt: skip
    dataset = _CatalogImages(catalog, positions, processor, index.thumbnail_size)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)
    pending: dict[str, list] = {"image_embeds": [], "region_embeds": [], "thumbnails": [], "items": []}
    done = 0
    with evaluating(model):  # the embedder puts the model in eval mode; the caller's mode comes back after
        embedder = E2CLIPEmbedder(model, processor, device, dtype, progress=False)
        for batch in tqdm(loader, desc=f"indexing {catalog.name}", unit="batch"):
            if "errors" in batch:  # shards flushed before stay; rerun with skip_existing to go on
                raise ImageLoadError(batch["errors"][0])
            thumbnails = batch["thumbnail"]
            embeddings = embedder.embed_pixel_values(batch["pixel_values"])
            pending["image_embeds"].append(embeddings.image_embeds)
            pending["region_embeds"].append(embeddings.region_embeds)
            pending["thumbnails"].append(thumbnails.numpy())
            pending["items"] += [_item(catalog, position) for position in positions[done : done + len(thumbnails)]]
            done += len(thumbnails)
            if len(pending["items"]) >= shard_rows:
                _flush(index, pending, spec)
    _flush(index, pending, spec)


def _item(catalog: Catalog, position: int) -> IndexItem:
    product = catalog.products[position]
    multi_values = {entity: list(values) for entity, values in product.multi_values.items()}
    return IndexItem(row=-1, product_id=product.product_id, description=product.description,
                     tags=dict(product.tags), source=product.source, multi_values=multi_values)  # fmt: skip


def _flush(index: EmbeddingIndex, pending: dict[str, list], source: str) -> None:
    if not pending["items"]:
        return
    index.add(
        torch.cat(pending["image_embeds"]),
        torch.cat(pending["region_embeds"]),
        np.concatenate(pending["thumbnails"]),
        pending["items"],
        source=source,
    )
    for values in pending.values():
        values.clear()
