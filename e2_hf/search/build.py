"""Embedding catalogs into an index: images in batches, with a progress bar, any device and dtype."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..cli_options import print_notice
from ..data import Catalog, ImageLoadError, open_catalog, untagged_entities_notice
from ..evaluation.embedding import evaluating
from ..local_paths import portable_name, portable_spec
from ..modeling import E2CLIPEmbedder, E2CLIPModel, E2CLIPProcessor
from .engine import DEFAULT_THUMBNAIL_SIZE, SearchSettings
from .index import (
    EmbeddingIndex,
    EmbeddingIndexError,
    IndexItem,
    check_new_index_folder,
    model_fingerprint,
    thumbnail_image,
    writer_lock,
)
from .milvus import MilvusIndex, is_milvus_address

if TYPE_CHECKING:  # accelerate (the train extra) only where a multi-process launch passes its state
    from accelerate import PartialState

DEFAULT_SHARD_ROWS = 20_000
PARTS_FOLDER = ".parts"  # a multi-process add's per-process parts, inside the index folder


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
            "thumbnail": torch.from_numpy(thumbnail_image(image, self.thumbnail_size)),
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
                         thumbnail_size: int = DEFAULT_THUMBNAIL_SIZE, storage_dtype: str = "float32",
                         search_settings: SearchSettings | None = None) -> EmbeddingIndex:  # fmt: skip
    """The index in `folder` (or the Milvus store it names), checked to come from `model`; a new one
    where there is none (`storage_dtype` and `search_settings` apply to a new index)."""
    fingerprint = model_fingerprint(model)
    if is_milvus_address(folder):
        return _open_or_create_milvus(str(folder), model, model_name, fingerprint, thumbnail_size, storage_dtype,
                                      search_settings)  # fmt: skip
    check_new_index_folder(folder)  # before the lock file is written into someone else's folder
    with writer_lock(folder):
        if (Path(folder) / "index.json").exists():
            index = EmbeddingIndex(folder)
            index.check_model(fingerprint, model_name)
            return index
        return EmbeddingIndex.create(folder, portable_name(model_name), fingerprint, model.config.entities,
                                     model.config.projection_dim, thumbnail_size, storage_dtype,
                                     search_settings)  # fmt: skip


def _open_or_create_milvus(address: str, model: E2CLIPModel, model_name: str, fingerprint: str, thumbnail_size: int,
                           storage_dtype: str, search_settings: SearchSettings | None) -> MilvusIndex:  # fmt: skip
    if storage_dtype != "float32":
        raise EmbeddingIndexError(f"{address}: a Milvus store keeps float32 vectors; --storage-dtype applies to "
                                  "index folders")  # fmt: skip
    index = MilvusIndex.open_or_create(address, portable_name(model_name), fingerprint, model.config.entities,
                                       model.config.projection_dim, thumbnail_size, search_settings)  # fmt: skip
    index.check_model(fingerprint, model_name)
    missing = [entity for entity in model.config.entities if entity not in index.entities]
    if missing:
        raise EmbeddingIndexError(f"{address} has no regional embeddings for {missing}, which the model makes")
    return index


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
    processes: PartialState | None = None,
) -> IndexingReport:
    """Embeds every product of the catalog `spec` (first view), appends it to `index` and commits
    the FAISS indices extended with it.

    The whole add holds the index folder's writer lock (a concurrent add waits for it). A product id
    already in the index, or repeated within the catalog, is an error, unless `skip_existing`, which
    leaves those products out (so that re-running on a grown catalog adds only the new products; of
    ids repeated in the catalog the first is kept).

    `processes` (accelerate's `PartialState` of a multi-process launch): every process calls this
    with the same arguments; each embeds a contiguous slice of the new products into its own part
    folder, and the main process, holding the lock throughout, appends the parts in order, so the
    index equals a one-process build."""
    catalog = open_catalog(spec, keep_html=keep_html, tag_separators=tag_separators)
    main = processes is None or processes.is_main_process
    if main:
        print_notice(untagged_entities_notice(catalog, index.entities, spec, "its regional embeddings are stored, "
                                              "but no tag of the catalog can show what they match"))  # fmt: skip
    embed = partial(_embed_and_add, model=model, processor=processor, catalog=catalog, spec=portable_spec(spec),
                    batch_size=batch_size, device=device, dtype=dtype, num_workers=num_workers,
                    shard_rows=shard_rows)  # fmt: skip
    if index.folder is None:  # a Milvus store: no folder lock, every process upserts its own share
        if processes is not None and processes.num_processes > 1 and index.uri.endswith(".db"):
            raise EmbeddingIndexError(f"{index}: a Milvus Lite file is open in one process at a time; index with "
                                      "several processes into a Milvus server")  # fmt: skip
        added = _add_to_milvus(index, catalog, spec, embed, skip_existing, processes)
        return IndexingReport(added=added, skipped_existing=len(catalog) - added, total=len(index))
    with writer_lock(index.folder) if main else nullcontext():
        _wait_for_everyone(processes)  # the main process holds the lock
        index.reload()  # another writer may have committed while this one waited
        positions = _new_positions(catalog, index.product_ids(), index.folder, spec, skip_existing)
        if processes is None or processes.num_processes == 1:
            embed(index, positions)
        else:
            _embed_in_parts(index, positions, embed, processes)
        if main:
            index.commit_search_indices()
        _wait_for_everyone(processes)
    index.reload()
    return IndexingReport(added=len(positions), skipped_existing=len(catalog) - len(positions), total=len(index))


def _add_to_milvus(index, catalog: Catalog, spec: str, embed, skip_existing: bool,
                   processes: PartialState | None) -> int:  # fmt: skip
    """Upserts the catalog's products into a Milvus store; returns how many were written. Every
    process reads the store's rows before any writes, then embeds and upserts its contiguous share
    directly (nothing passes through one process). A product already there keeps its row and is
    written again (the same values: re-running an add changes nothing), or with `skip_existing` is
    left out (a resumed add writes only what is missing)."""
    existing = index.row_numbers()
    rows_before = len(existing)
    positions = _new_positions(catalog, set(), str(index), spec, skip_existing)  # an id repeated in the catalog
    if skip_existing:
        positions = [position for position in positions if catalog.products[position].product_id not in existing]
    rows, new = {}, 0
    for position in positions:
        product_id = catalog.products[position].product_id
        rows[position] = existing[product_id] if product_id in existing else rows_before + (new := new + 1) - 1
    _wait_for_everyone(processes)  # every process has read the store before any writes
    rank, count = (0, 1) if processes is None else (processes.process_index, processes.num_processes)
    share = positions[len(positions) * rank // count : len(positions) * (rank + 1) // count]
    embed(index, share, rows=rows)
    _wait_for_everyone(processes)
    if processes is None or processes.is_main_process:
        index.commit_search_indices()
    _wait_for_everyone(processes)
    return len(positions)


def _wait_for_everyone(processes: PartialState | None) -> None:
    if processes is not None:
        processes.wait_for_everyone()


def _embed_in_parts(index: EmbeddingIndex, positions: list[int], embed, processes: PartialState) -> None:
    """Each process embeds its contiguous slice of `positions` into `PARTS_FOLDER/<rank>` (an index
    of its own); the main process appends the parts in rank order. An error in any process (an
    unreadable image) is raised in every process, after all reached the same point."""
    parts = index.folder / PARTS_FOLDER
    if processes.is_main_process:
        shutil.rmtree(parts, ignore_errors=True)  # what an interrupted run left
    _wait_for_everyone(processes)
    rank, count = processes.process_index, processes.num_processes
    slices = [positions[len(positions) * part // count : len(positions) * (part + 1) // count] for part in range(count)]
    folder = parts / str(rank)
    try:
        part = EmbeddingIndex.create(folder, index.metadata["model"], index.metadata["model_fingerprint"],
                                     index.entities, index.dim, index.thumbnail_size, index.storage_dtype)  # fmt: skip
        embed(part, slices[rank])
    except (ImageLoadError, EmbeddingIndexError) as error:
        (parts / f"{rank}.error").write_text(str(error), encoding="utf-8")
    _wait_for_everyone(processes)
    errors = sorted(parts.glob("*.error"))
    if errors:
        message = errors[0].read_text(encoding="utf-8")
        _wait_for_everyone(processes)  # every process has read it before the main one cleans up
        if processes.is_main_process:
            shutil.rmtree(parts)
        raise ImageLoadError(message)
    if processes.is_main_process:
        for part in range(count):
            index.append_index(EmbeddingIndex(parts / str(part)))
        shutil.rmtree(parts)


def _new_positions(
    catalog: Catalog, existing: set[str], store: Path | str, spec: str, skip_existing: bool
) -> list[int]:
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
            problems.append(f"{len(in_index)} products are already in {store} (product ids {_first(in_index)})")
        if repeated:
            problems.append(f"{len(repeated)} product ids appear more than once in it ({_first(repeated)})")
        raise EmbeddingIndexError(
            f"{spec}: " + "; ".join(problems) + ". Pass --skip-existing to add each product id once"
        )
    return positions


def _first(values: list[str], shown: int = 5) -> str:
    return ", ".join(values[:shown]) + (", ..." if len(values) > shown else "")


def _embed_and_add(index, positions, *, model, processor, catalog, spec, batch_size, device, dtype, num_workers,
                   shard_rows, rows: dict[int, int] | None = None) -> None:  # fmt: skip
    """Embeds the catalog's products at `positions` and adds them to `index` (a batch of `shard_rows`
    at a time); `rows` (a Milvus store) gives each position its row number."""
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
            regions = embeddings.region_embeds  # [batch, entities, dim]; no entities: a global-only index
            if regions is None:
                regions = embeddings.image_embeds.new_zeros(len(embeddings.image_embeds), 0, index.dim)
            pending["region_embeds"].append(regions)
            pending["thumbnails"].append(thumbnails.numpy())
            pending["items"] += [
                _item(catalog, position, rows) for position in positions[done : done + len(thumbnails)]
            ]
            done += len(thumbnails)
            if len(pending["items"]) >= shard_rows:
                _flush(index, pending, spec)
    _flush(index, pending, spec)


def _item(catalog: Catalog, position: int, rows: dict[int, int] | None = None) -> IndexItem:
    product = catalog.products[position]
    multi_values = {entity: list(values) for entity, values in product.multi_values.items()}
    return IndexItem(row=(rows or {}).get(position, -1), product_id=product.product_id, description=product.description,
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
