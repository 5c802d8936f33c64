"""An on-disk index of global and regional image embeddings: safetensors shards, FAISS indices for
search, incremental adds.

Layout of an index folder:

    index.json                   format, model, entities, dimension, storage dtype, shards, FAISS files, rows
    items.jsonl                  one line per row: product id, description, tags, source
    shard-00000.safetensors      image_embeds [rows, dim]               (L2-normalised, storage dtype)
                                 region_embeds.<entity> [rows, dim]     one contiguous tensor per entity
                                 thumbnails [rows, size, size, 3] uint8 (letterboxed on white)
    faiss-00003-0.index          FAISS index of the global embeddings (commit 3)
    faiss-00003-1.index ...      FAISS index of each entity's regional embeddings

`index.json` is written last, atomically: it is the commit point. An add commits each shard as it
is written, then the FAISS indices, extended with the new rows (or rebuilt, when the index type
changes with the size), under new file names. Rows a failed add left in `items.jsonl`, and shards
or FAISS files no commit lists, are ignored and cleaned up by the next add; committed rows that
the committed FAISS files do not hold yet (an add interrupted between the two commits) are added
to the FAISS index in memory when it is loaded, so every committed row is searchable. A writer
holds an exclusive lock on the folder (`.lock`) for a whole add, FAISS files included, so
concurrent adds queue up instead of overwriting each other. Every file a reader opens is
replaced atomically or never rewritten (shards and FAISS files get new names; `items.jsonl` is
only appended to past the committed rows, or replaced whole), so a reader sees one commit or the
next, never a mix; a reader whose FAISS files were cleaned up by two later commits re-reads
`index.json` and loads the newest one.

Each file's size and SHA-256 are recorded in `index.json`, and every file it names must be a
plain name that resolves inside the folder. Sizes are checked whenever a file is opened; a FAISS
file's SHA-256 is checked before FAISS parses it (FAISS trusts its input: a crafted file can make
it allocate without bound or abort), every shard's by `verify()` (`e2-hf index --verify`). Shards
are read through safetensors' memory map, a block or a row at a time, after their header is checked
against `index.json`; the item texts are read into memory.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..data.catalogs import json_object, values_of
from ..errors import EmbeddingIndexError
from ..images import letterbox
from ..locking import exclusive_lock
from ..modeling.embedding_e2clip import resolve_dtype
from . import engine
from .engine import STORAGE_DTYPES, SearchSettings

INDEX_FORMAT = "e2-hf-embedding-index"
INDEX_VERSION = 2
METADATA_FILE = "index.json"
ITEMS_FILE = "items.jsonl"
SHARD_PATTERN = "shard-{:05d}.safetensors"
FAISS_PATTERN = "faiss-{:05d}-{}.index"  # commit number, target position (0: global, 1...: the entities)
LOCK_FILE = ".lock"
GLOBAL = None  # the target of the global image embedding (an entity name targets its region)
SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}  # its header's spelling
# index.json's fields and their JSON types
METADATA_FIELDS = {"format": str, "version": int, "model": str, "model_fingerprint": str, "entities": list,
                   "dim": int, "thumbnail_size": int, "storage_dtype": str, "rows": int, "shards": list,
                   "search": dict}  # fmt: skip
SHARD_FIELDS = {"file": str, "rows": int, "source": str}
SEARCH_FIELDS = {"settings": dict, "commit": int, "files": list}
FAISS_FILE_FIELDS = {"file": str, "rows": int, "type": str}
# bounds of index.json's sizes: beyond them a file is damaged or crafted, not a real index
METADATA_BOUNDS = {"dim": (1, 65_536), "thumbnail_size": (1, 4_096), "rows": (0, 2**40)}
ITEM_FIELDS = ("product_id", "description", "tags", "source")
OPTIONAL_ITEM_FIELDS = ("multi_values",)


@dataclass
class IndexItem:
    """What is stored about one indexed product besides its embeddings."""

    row: int  # position in the index; not stored (-1 for an item not yet added)
    product_id: str
    description: str
    tags: dict[str, str | None]
    source: str
    multi_values: dict[str, list[str]] = field(default_factory=dict)  # values of multi-value tags

    def to_json(self) -> dict[str, Any]:
        record = {"product_id": self.product_id, "description": self.description, "tags": self.tags,
                  "source": self.source}  # fmt: skip
        if self.multi_values:
            record["multi_values"] = {entity: list(values) for entity, values in self.multi_values.items()}
        return record

    def values_of(self, entity: str) -> tuple[str, ...]:
        return values_of(self.tags, self.multi_values, entity)


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of the projections and selection tokens: equal models give equal fingerprints."""
    digest = hashlib.sha256()
    for name, parameter in sorted(model.state_dict().items()):
        if name.startswith(("visual_projection", "text_projection", "region_head", "vision_model.selection_tokens")):
            digest.update(name.encode())
            digest.update(parameter.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def thumbnail_image(image: Image.Image, size: int) -> np.ndarray:
    """`[size, size, 3]` uint8: the image scaled to fit `size`, then letterboxed on white."""
    image = image.convert("RGB")
    scale = size / max(image.size)
    resized = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BICUBIC)
    return np.array(letterbox(resized))  # writable: torch.from_numpy takes it as is


class EmbeddingStore:
    """What every store of an index shares (the folder, `EmbeddingIndex`; a Milvus collection,
    `MilvusIndex`): `metadata` holds the model's name and fingerprint, the entities, the embedding
    size and the thumbnail size; `items` every row's item in row order."""

    metadata: dict[str, Any]
    items: list[IndexItem]

    @property
    def entities(self) -> list[str]:
        return list(self.metadata["entities"])

    @property
    def dim(self) -> int:
        return int(self.metadata["dim"])

    @property
    def thumbnail_size(self) -> int:
        return int(self.metadata["thumbnail_size"])

    @property
    def targets(self) -> list[str | None]:
        """What can be searched: `GLOBAL` (None), then each entity."""
        return [GLOBAL, *self.entities]

    def check_model(self, fingerprint: str, model_name: str) -> None:
        if fingerprint != self.metadata["model_fingerprint"]:
            raise EmbeddingIndexError(
                f"{self} was built with another model ({self.metadata['model']}, fingerprint "
                f"{self.metadata['model_fingerprint']}); {model_name} has fingerprint {fingerprint}. "
                "Embeddings of different models cannot be mixed: build a new index."
            )

    def entity_index(self, entity: str) -> int:
        if entity not in self.metadata["entities"]:
            known = ", ".join(self.metadata["entities"]) or "none"
            raise EmbeddingIndexError(f"unknown entity {entity!r}; this index has regional embeddings for: {known}")
        return self.metadata["entities"].index(entity)

    def check_batch(self, image_embeds: torch.Tensor, region_embeds: torch.Tensor, thumbnails: np.ndarray,
                    items: Sequence[IndexItem | dict[str, Any]]) -> None:  # fmt: skip
        """A batch to add must fit this index: shapes, one item per row, finite values."""
        rows = image_embeds.shape[0]
        expected = {"image_embeds": (rows, self.dim), "region_embeds": (rows, len(self.entities), self.dim),
                    "thumbnails": (rows, self.thumbnail_size, self.thumbnail_size, 3)}  # fmt: skip
        actual = {"image_embeds": tuple(image_embeds.shape), "region_embeds": tuple(region_embeds.shape),
                  "thumbnails": tuple(thumbnails.shape)}  # fmt: skip
        for name, shape in expected.items():
            if actual[name] != shape:
                raise EmbeddingIndexError(f"{name} has shape {actual[name]}, this index needs {shape}")
        if len(items) != rows:
            raise EmbeddingIndexError(f"{len(items)} items for {rows} embeddings")
        for name, values in (("image_embeds", image_embeds), ("region_embeds", region_embeds)):
            if not torch.isfinite(values).all():
                raise EmbeddingIndexError(f"{name} holds non-finite values: the model produced NaN or infinity")

    @property
    def tag_entities(self) -> list[str]:
        """The entities whose tags the items carry: the model's, or for a model without entities
        (a global-only index) every tag name found in the items."""
        if self.entities:
            return list(self.entities)
        return sorted({entity for item in self.items for entity in item.tags})

    def tag_values(self, entity: str) -> list[str | None]:
        """Each row's tag of `entity` (as `Catalog.tag_values`)."""
        return [item.tags.get(entity) for item in self.items]

    def has_tag(self, entity: str) -> bool:
        """Whether any row has a tag of `entity`."""
        return any(self.tag_values(entity))

    def value_sets(self, entity: str) -> list[tuple[str, ...]]:
        """Each row's values of `entity` (as `Catalog.value_sets`)."""
        return [item.values_of(entity) for item in self.items]

    def product_ids(self) -> set[str]:
        return {item.product_id for item in self.items}

    def close(self) -> None:
        """Releases what the store holds open."""

    def __enter__(self):
        return self

    def __exit__(self, *exception) -> None:
        self.close()


class EmbeddingIndex(EmbeddingStore):
    """Read and extend an index folder. Create one with `EmbeddingIndex.create`, open with `EmbeddingIndex(folder)`.
    `faiss_gpu`: searches run on copies of the FAISS indices on every GPU FAISS sees (see `searcher`)."""

    def __init__(self, folder: str | Path, faiss_gpu: bool = False):
        self.folder = Path(folder)
        self.faiss_gpu = faiss_gpu
        metadata_path = self.folder / METADATA_FILE
        if not metadata_path.is_file():
            raise EmbeddingIndexError(
                f"{self.folder} is not an E2 index: {METADATA_FILE} is missing (build one with e2-hf index)"
            )
        self.metadata = read_metadata(metadata_path)
        self._forget_loaded()

    def _forget_loaded(self) -> None:
        self._shards: list[Any] | None = None  # safetensors handles, one per shard
        self._items: list[IndexItem] | None = None
        self._search_indices: dict[str | None, Any] = {}  # loaded FAISS indices by target
        self._gpu_searchers: dict[str | None, Any] = {}  # their GPU copies, with faiss_gpu

    # ------------------------------------------------------------------ creating
    @classmethod
    def create(cls, folder: str | Path, model_name: str, fingerprint: str, entities: Sequence[str], dim: int,
               thumbnail_size: int, storage_dtype: str = "float32",
               search_settings: SearchSettings | None = None) -> EmbeddingIndex:  # fmt: skip
        """A new, empty index in `folder` (the caller holds `writer_lock(folder)`)."""
        folder = Path(folder)
        if (folder / METADATA_FILE).exists():
            raise EmbeddingIndexError(f"{folder} already holds an index")
        check_new_index_folder(folder)
        if storage_dtype not in STORAGE_DTYPES:
            raise EmbeddingIndexError(f"unknown storage dtype {storage_dtype!r}; choose one of {STORAGE_DTYPES}")
        settings = search_settings or SearchSettings()
        settings.check_folder(str(folder))
        folder.mkdir(parents=True, exist_ok=True)
        search = {"settings": settings.to_json(), "commit": 0, "files": []}
        metadata = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "model": model_name,
                    "model_fingerprint": fingerprint, "entities": list(entities), "dim": dim,
                    "thumbnail_size": thumbnail_size, "storage_dtype": storage_dtype, "rows": 0, "shards": [],
                    "search": search}  # fmt: skip
        (folder / ITEMS_FILE).write_text("", encoding="utf-8")
        _write_json_atomically(folder / METADATA_FILE, metadata)  # last: the commit point
        return cls(folder)

    # ------------------------------------------------------------------ properties
    @property
    def storage_dtype(self) -> str:
        return self.metadata["storage_dtype"]

    @property
    def search_settings(self) -> SearchSettings:
        return SearchSettings.from_json(self.metadata["search"]["settings"], str(self.folder / METADATA_FILE))

    def __len__(self) -> int:
        return int(self.metadata["rows"])

    def tensor_name(self, target: str | None) -> str:
        """The shard tensor holding `target`'s vectors: the global one, or an entity's region."""
        if target is GLOBAL:
            return "image_embeds"
        self.entity_index(target)
        return f"region_embeds.{target}"

    # ------------------------------------------------------------------ reading shards
    @property
    def shards(self) -> list[Any]:
        """Each shard's safetensors handle (memory-mapped, read-only), checked against `index.json`."""
        if self._shards is None:
            self._shards = [self._open_shard(shard) for shard in self.metadata["shards"]]
        return self._shards

    def _expected_tensors(self, rows: int) -> dict[str, tuple[tuple[int, ...], str]]:
        """`{name: (shape, safetensors dtype)}` of one shard of `rows` rows."""
        vectors = ((rows, self.dim), SAFETENSORS_DTYPES[resolve_dtype(self.storage_dtype)])
        expected = {self.tensor_name(target): vectors for target in self.targets}
        expected["thumbnails"] = ((rows, self.thumbnail_size, self.thumbnail_size, 3), "U8")
        return expected

    def _open_shard(self, shard: dict[str, Any]) -> Any:
        """Opens one shard after checking its size, and its tensors against `index.json`."""
        path = self.file_path(shard)
        _check_recorded_size(path, shard)
        try:
            handle = safe_open(str(path), framework="pt")
        except FileNotFoundError:
            raise EmbeddingIndexError(f"index shard {path} is missing; rebuild the index") from None
        except SafetensorError as error:
            raise EmbeddingIndexError(
                f"{path} is not a readable safetensors file ({error}); rebuild the index"
            ) from None
        stored = set(handle.keys())
        for name, (shape, dtype) in self._expected_tensors(shard["rows"]).items():
            tensor = handle.get_slice(name) if name in stored else None
            found = (tuple(tensor.get_shape()), tensor.get_dtype()) if tensor is not None else None
            if found != (shape, dtype):
                raise EmbeddingIndexError(
                    f"{path}: {name} is {found or 'missing'}, index.json ({shard['rows']} rows) needs {(shape, dtype)}"
                )
        return handle

    def iter_vectors(self, target: str | None, first_row: int = 0,
                     block_rows: int = 65536) -> Iterator[tuple[int, np.ndarray]]:  # fmt: skip
        """`(first row, float32 [n, dim] block)` of `target`'s vectors from row `first_row` on, read
        a block at a time. A block holding non-finite values (a damaged shard) is an error naming it."""
        name, offset = self.tensor_name(target), 0
        for handle, shard in zip(self.shards, self.metadata["shards"]):
            rows = shard["rows"]
            for start in range(max(first_row - offset, 0), rows, block_rows):
                block = handle.get_slice(name)[start : start + block_rows].float().numpy()
                if not np.isfinite(block).all():
                    broken = int((~np.isfinite(block).all(axis=1)).sum())
                    raise EmbeddingIndexError(
                        f"{self.folder / shard['file']}: {name} has {broken} rows with non-finite values; the "
                        "shard is damaged (e2-hf index --verify checks every file; rebuild the index from the catalog)"
                    )
                yield offset + start, block
            offset += rows

    def read_rows(self, batch_size: int = 1000, with_thumbnails: bool = True):
        """Every row in row order, in batches: `(items, image_embeds [n, dim], region_embeds
        [n, entities, dim], thumbnails [n, s, s, 3] or None)`, as stored."""
        items = self.items
        vectors = {target: self.iter_vectors(target, block_rows=batch_size) for target in self.targets}
        for first, image in vectors[GLOBAL]:
            regions = [next(vectors[entity])[1] for entity in self.entities]
            rows = range(first, first + len(image))
            region_tensor = (torch.from_numpy(np.stack(regions, axis=1)) if regions
                             else torch.zeros(len(image), 0, self.dim))  # fmt: skip
            thumbnails = np.stack([self.thumbnail(row) for row in rows]) if with_thumbnails else None
            yield [items[row] for row in rows], torch.from_numpy(image), region_tensor, thumbnails

    def read_all(self, name: str) -> np.ndarray:
        """One stored tensor of every row, in memory (for tests and small indexes); embeddings as float32."""
        blocks = [handle.get_slice(name)[:] for handle in self.shards]
        if not blocks:
            return np.zeros((0,))
        stacked = torch.cat(blocks)
        return (stacked if stacked.dtype == torch.uint8 else stacked.float()).numpy()

    def _row_location(self, row: int) -> tuple[Any, int]:
        if not 0 <= row < len(self):
            raise EmbeddingIndexError(f"row {row} is outside the index ({len(self)} rows)")
        for handle, shard in zip(self.shards, self.metadata["shards"]):
            if row < shard["rows"]:
                return handle, row
            row -= shard["rows"]
        raise AssertionError("index.json row counts disagree with its shards")

    def thumbnail(self, row: int) -> np.ndarray:
        handle, local_row = self._row_location(row)
        return handle.get_slice("thumbnails")[local_row : local_row + 1][0].numpy()

    @property
    def items(self) -> list[IndexItem]:
        if self._items is None:
            self._items = []
            path = self.folder / ITEMS_FILE
            for row, line in enumerate(self._committed_item_lines()):
                self._items.append(IndexItem(row=row, **parse_item(line, path, row + 1)))
            if len(self._items) != len(self):
                raise EmbeddingIndexError(
                    f"{self.folder / ITEMS_FILE} has {len(self._items)} rows, index.json says {len(self)}"
                )
        return self._items

    def _committed_item_lines(self) -> list[str]:
        """The first `len(self)` lines of `items.jsonl` (what lies past them is uncommitted, unread)."""
        path = self.folder / ITEMS_FILE
        lines = []
        with open(path, "rb") as handle:
            for number, raw in zip(range(1, len(self) + 1), handle):
                try:
                    lines.append(raw.decode("utf-8"))
                except UnicodeDecodeError as error:
                    raise EmbeddingIndexError(
                        f"{path} line {number} is not UTF-8 (byte 0x{raw[error.start]:02x} at column "
                        f"{error.start + 1}): the file is damaged; rebuild the index from the catalog"
                    ) from None
        return lines

    # ------------------------------------------------------------------ searching
    def nearest(self, queries: np.ndarray, target: str | None, top_k: int,
                where: Mapping[str, str] | None = None) -> list[list[tuple[float, IndexItem]]]:  # fmt: skip
        """For each query (`[q, dim]` float32, L2-normalised), the `top_k` most similar rows of
        `target`'s vectors: FAISS's answer (exact or approximate, the index's type). With `where`
        (`{entity: tag}`), only rows whose tags equal it, ranked exactly."""
        if where:
            return self._nearest_where(queries, target, top_k, where)
        searcher = self.searcher(target)
        if len(self) == 0:
            return [[] for _ in range(len(queries))]
        scores, rows = engine.search_index(searcher, queries, min(top_k, len(self)))
        items = self.items
        return [[(float(score), items[int(row)]) for score, row in zip(query_scores, query_rows) if row >= 0]
                for query_scores, query_rows in zip(scores, rows)]  # fmt: skip

    def _nearest_where(self, queries: np.ndarray, target: str | None, top_k: int,
                       where: Mapping[str, str]) -> list[list[tuple[float, IndexItem]]]:  # fmt: skip
        for entity in where:
            self.entity_index(entity)
        kept = np.array([all(item.tags.get(entity) == value for entity, value in where.items())
                         for item in self.items], dtype=bool)  # fmt: skip
        rows = np.flatnonzero(kept)
        scores = np.zeros((len(queries), 0), dtype=np.float32)
        for first, block in self.iter_vectors(target):
            chosen = rows[(rows >= first) & (rows < first + len(block))] - first
            scores = np.concatenate([scores, queries @ block[chosen].T], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
        items = self.items
        return [[(float(query_scores[column]), items[int(rows[column])]) for column in columns]
                for query_scores, columns in zip(scores, order)]  # fmt: skip

    def __str__(self) -> str:
        return str(self.folder)

    # ------------------------------------------------------------------ FAISS indices
    def _search_file(self, target: str | None) -> dict[str, Any] | None:
        position = self.targets.index(target)
        files = self.metadata["search"]["files"]
        return files[position] if position < len(files) else None

    def search_index(self, target: str | None):
        """`target`'s FAISS index, loaded once, holding every committed row: rows committed after
        its file was written (an interrupted add) are added in memory."""
        self.tensor_name(target)  # an unknown entity is an error
        if target not in self._search_indices:
            recorded = self._search_file(target)
            if recorded is None:  # no FAISS commit yet: build it in memory
                index = self._build_search_index(target)
            else:
                path = self.file_path(recorded)
                try:  # opened once: the bytes checked are the bytes FAISS reads, whatever a writer removes
                    handle = open(path, "rb")
                except FileNotFoundError:
                    if self._committed_since():  # cleaned up by two later commits: load the newest
                        self.reload()
                        return self.search_index(target)
                    raise EmbeddingIndexError(
                        f"FAISS index {path} is missing; recreate it with e2-hf index --rebuild"
                    ) from None
                with handle:
                    _check_recorded_size(path, recorded, os.fstat(handle.fileno()).st_size)
                    _check_recorded_checksum(path, recorded, handle)
                    index = engine.read_index(path, recorded["rows"], self.dim, handle)
                index = engine.extend_index(index, (block for _, block in self.iter_vectors(target, recorded["rows"])))
            engine.configure_for_search(index, self.search_settings)
            self._search_indices[target] = index
        return self._search_indices[target]

    def _committed_since(self) -> bool:
        """Whether a writer committed FAISS files since this object read `index.json`."""
        on_disk = read_metadata(self.folder / METADATA_FILE)
        return on_disk["search"]["commit"] != self.metadata["search"]["commit"]

    def file_path(self, recorded: dict[str, Any]) -> Path:
        """The path of a file `index.json` records, refused unless it resolves inside the folder
        (a link pointing elsewhere included)."""
        path = self.folder / recorded["file"]
        resolved, inside = path.resolve(), self.folder.resolve()
        if not resolved.is_relative_to(inside):
            raise EmbeddingIndexError(
                f"{path} resolves to {resolved}, outside the index folder {inside}: an index reads only its own "
                "files; rebuild it from the catalog"
            )
        return path

    def searcher(self, target: str | None):
        """The FAISS index that answers `target`'s queries: `search_index`, or with `faiss_gpu` its copy on
        the GPUs (made once; the CPU index stays the one extended and committed)."""
        index = self.search_index(target)
        if not self.faiss_gpu:
            return index
        if target not in self._gpu_searchers:
            self._gpu_searchers[target] = engine.to_gpus(index, f"{target or 'global'} index of {self.folder}")
        return self._gpu_searchers[target]

    def _build_search_index(self, target: str | None, settings: SearchSettings | None = None):
        """A new FAISS index of every row of `target`, of the type `settings` choose at this size."""
        settings = settings or self.search_settings
        kind = settings.resolved_type(len(self))
        sample = self._training_sample(target, settings, kind)
        blocks = (block for _, block in self.iter_vectors(target))
        return engine.build_index(blocks, len(self), self.dim, kind, settings, self.storage_dtype, sample)

    def _training_sample(self, target: str | None, settings: SearchSettings, kind: str,
                         per_list: int = 64) -> np.ndarray | None:  # fmt: skip
        """Evenly spaced rows to train an IVF index on (`per_list` rows per list, up to every row)."""
        if kind != "ivfpq":
            return None
        step = max(1, len(self) // (settings.lists(len(self)) * per_list))
        return np.concatenate([block[(-first) % step :: step] for first, block in self.iter_vectors(target)] or
                              [np.zeros((0, self.dim), dtype=np.float32)])  # fmt: skip

    def commit_search_indices(self, rebuild: bool = False, settings: SearchSettings | None = None) -> list[str]:
        """Writes every target's FAISS index holding all committed rows, and commits them: each
        extended from its last file, or built anew from the shards when `rebuild`, when `settings`
        change, or when the index type this size calls for differs from the file's (e.g. `auto`
        passing `exact_up_to`). The caller holds `writer_lock`. Returns what was done, per target
        (nothing when the committed files hold every row already)."""
        settings = settings or self.search_settings
        rebuild = rebuild or settings != self.search_settings
        kind = settings.resolved_type(len(self))
        recorded_files = [self._search_file(target) for target in self.targets]
        if not rebuild and all(file and file["rows"] == len(self) and file["type"] == kind for file in recorded_files):
            return []  # every committed row is in the committed files already
        commit = self.metadata["search"]["commit"] + 1
        files, done = [], []
        for position, (target, recorded) in enumerate(zip(self.targets, recorded_files)):
            fresh = rebuild or recorded is None or recorded["type"] != kind
            index = self._build_search_index(target, settings) if fresh else self.search_index(target)
            path = self.folder / FAISS_PATTERN.format(commit, position)
            with _writing(path, f"the rows are committed ({len(self)}); the next add or --rebuild writes the "
                          "FAISS files, and searches add the missing rows in memory until then"):  # fmt: skip
                engine.write_index(index, path)
            files.append({"file": path.name, "rows": len(self), "type": kind, "bytes": path.stat().st_size,
                          "sha256": file_sha256(path)})  # fmt: skip
            done.append(f"{target or 'global'}: {kind}, {'built' if fresh else 'extended'}")
        metadata = dict(self.metadata, search={"settings": settings.to_json(), "commit": commit, "files": files})
        _write_json_atomically(self.folder / METADATA_FILE, metadata)
        self.metadata = metadata
        self._forget_loaded()
        self._remove_files("faiss-*.index", lambda path: _faiss_commit(path) < commit - 1)  # readers may load the last
        return done

    def verify(self) -> list[str]:
        """Problems found by re-reading every shard and FAISS file against its recorded SHA-256 (empty
        when sound). Shards are hashed here; each FAISS file is hashed by loading it (`search_index`)."""
        problems = []
        shards = self.metadata["shards"]
        for recorded in tqdm(shards, desc="verifying checksums", unit="shard", leave=False, disable=len(shards) < 4):
            try:
                path = self.file_path(recorded)
            except EmbeddingIndexError as error:
                problems.append(str(error))
                continue
            if not path.is_file():
                problems.append(f"{path} is missing")
            elif "sha256" not in recorded:
                problems.append(f"{path}: index.json records no checksum")
            elif file_sha256(path) != recorded["sha256"]:
                problems.append(f"{path}: its bytes differ from the SHA-256 recorded when it was written")
        checks = [lambda: self.items, lambda: self.shards,  # reading them runs the open-time checks
                  *(partial(self.search_index, target) for target in self.targets)]  # fmt: skip
        for check in checks:
            try:
                check()
            except (EmbeddingIndexError, FileNotFoundError) as error:
                if str(error) not in problems:  # a damaged shard is met again by each target that reads it
                    problems.append(str(error))
        return problems

    # ------------------------------------------------------------------ writing
    def add(self, image_embeds: torch.Tensor, region_embeds: torch.Tensor, thumbnails: np.ndarray,
            items: Sequence[IndexItem | dict[str, Any]], source: str, normalize: bool = True) -> None:  # fmt: skip
        """Appends and commits one shard: `image_embeds [n, dim]`, `region_embeds [n, entities, dim]`
        (both L2-normalised here unless `normalize=False`: rows copied from another index as stored),
        `thumbnails [n, size, size, 3]` uint8 and one item per row. The FAISS indices take the rows
        at the next `commit_search_indices` (searches see them at once)."""
        self.check_batch(image_embeds, region_embeds, thumbnails, items)
        rows = image_embeds.shape[0]
        if rows == 0:
            return
        records = [item.to_json() if isinstance(item, IndexItem) else dict(item) for item in items]
        self._discard_uncommitted()
        shard_file = SHARD_PATTERN.format(len(self.metadata["shards"]))
        shard_path = self.folder / shard_file
        kept = f"the index keeps its last commit ({len(self)} rows)"
        with _writing(shard_path, kept):
            save_file(self._shard_tensors(image_embeds, region_embeds, thumbnails, normalize), str(shard_path),
                      metadata={"source": source})  # fmt: skip
        with _writing(self.folder / ITEMS_FILE, kept, remove=False), \
                open(self.folder / ITEMS_FILE, "a", encoding="utf-8") as handle:  # fmt: skip
            handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
            handle.flush()
            os.fsync(handle.fileno())
        shard = {"file": shard_file, "rows": rows, "source": source, "bytes": shard_path.stat().st_size,
                 "sha256": file_sha256(shard_path)}  # fmt: skip
        metadata = dict(self.metadata, shards=[*self.metadata["shards"], shard], rows=len(self) + rows)
        with _writing(self.folder / METADATA_FILE, kept, remove=False):
            _write_json_atomically(self.folder / METADATA_FILE, metadata)
        self.metadata = metadata
        self._forget_loaded()

    def append_index(self, other: EmbeddingIndex) -> None:
        """Appends every shard of `other` (same model, entities and sizes), one commit per shard."""
        for name in ("model_fingerprint", "entities", "dim", "thumbnail_size", "storage_dtype"):
            if other.metadata[name] != self.metadata[name]:
                raise EmbeddingIndexError(f"{other.folder} differs from {self.folder} in {name}")
        first_row = 0
        for handle, shard in zip(other.shards, other.metadata["shards"]):
            regions = torch.stack([handle.get_slice(other.tensor_name(entity))[:] for entity in other.entities], dim=1)
            items = other.items[first_row : first_row + shard["rows"]]
            self.add(handle.get_slice("image_embeds")[:], regions, handle.get_slice("thumbnails")[:].numpy(), items,
                     shard["source"])  # fmt: skip
            first_row += shard["rows"]

    def _shard_tensors(self, image_embeds: torch.Tensor, region_embeds: torch.Tensor, thumbnails: np.ndarray,
                       normalize: bool = True) -> dict[str, torch.Tensor]:  # fmt: skip
        """Each target's vectors as its own contiguous tensor, normalised, in the storage dtype."""
        dtype = resolve_dtype(self.storage_dtype)
        vectors = [image_embeds, *region_embeds.unbind(dim=1)]  # [n, dim] each
        unit = partial(F.normalize, dim=-1) if normalize else (lambda values: values)
        tensors = {self.tensor_name(target): unit(values.float()).to(dtype).contiguous()
                   for target, values in zip(self.targets, vectors)}  # fmt: skip
        tensors["thumbnails"] = torch.from_numpy(np.ascontiguousarray(thumbnails, dtype=np.uint8))
        return tensors

    def reload(self) -> None:
        """Re-reads `index.json` (another writer may have committed since this object was opened)."""
        self.metadata = read_metadata(self.folder / METADATA_FILE)
        self._forget_loaded()

    def _discard_uncommitted(self) -> None:
        """Drops what an interrupted add left: item lines past the committed rows, unlisted shards and FAISS files."""
        path = self.folder / ITEMS_FILE
        lines = self._committed_item_lines()
        if path.stat().st_size > sum(len(line.encode("utf-8")) for line in lines):
            temporary = path.with_suffix(".jsonl.tmp")  # replaced whole, never rewritten in place: readers read it
            temporary.write_text("".join(lines), encoding="utf-8")
            os.replace(temporary, path)
        committed = self.metadata["search"]["commit"]
        listed = {shard["file"] for shard in self.metadata["shards"]}
        self._remove_files("shard-*.safetensors", lambda path: path.name not in listed)
        self._remove_files("faiss-*.index", lambda path: _faiss_commit(path) > committed)

    def _remove_files(self, pattern: str, condition) -> None:
        for path in self.folder.glob(pattern):
            if condition(path):
                path.unlink(missing_ok=True)


def _faiss_commit(path: Path) -> int:
    """The commit number in a FAISS file's name (`faiss-00003-1.index`: 3)."""
    parts = path.name.split("-")
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else -1


def check_new_index_folder(folder: Path) -> None:
    """Refuses to create an index in a folder that holds anything but an index (a model folder,
    say): the index's files would be mixed with others, and its clean-ups could remove them."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise EmbeddingIndexError(f"{folder} is a file; give a folder for the index")
    others = sorted(path.name for path in folder.iterdir() if path.name != LOCK_FILE) if folder.is_dir() else []
    if others and not (folder / METADATA_FILE).exists():
        raise EmbeddingIndexError(
            f"{folder} is not empty and holds no index ({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}): "
            "give a new or empty folder for the index"
        )


@contextmanager
def _writing(path: Path, kept: str, remove: bool = True) -> Iterator[None]:
    """Turns a failed write of `path` (a full disk, a read-only folder) into an `EmbeddingIndexError`
    that names it and says what was kept; the partly written file is removed (`remove`)."""
    try:
        yield
    except (OSError, SafetensorError, RuntimeError) as error:
        if remove:
            path.unlink(missing_ok=True)
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise EmbeddingIndexError(f"writing {path} failed ({reason}): {kept}") from None


def _check_recorded_checksum(path: Path, recorded: dict[str, Any], handle: BinaryIO) -> None:
    """A FAISS file's bytes (read from `handle`, which is left at the start) against the SHA-256
    recorded when it was written, before FAISS parses them."""
    if "sha256" not in recorded:
        raise EmbeddingIndexError(
            f"index.json records no checksum for {path}; recreate the FAISS files with e2-hf index --rebuild"
        )
    digest = _sha256_of(handle)
    handle.seek(0)
    if digest != recorded["sha256"]:
        raise EmbeddingIndexError(
            f"{path}: its bytes differ from the SHA-256 recorded when it was written (changed or damaged); "
            "recreate it with e2-hf index --rebuild"
        )


def _check_recorded_size(path: Path, recorded: dict[str, Any], size: int | None = None) -> None:
    """The file's size (`size`, of the file already open, or of `path` now) against `index.json`'s."""
    if size is None:
        size = path.stat().st_size if path.is_file() else None
    if "bytes" in recorded and size is not None and size != recorded["bytes"]:
        raise EmbeddingIndexError(
            f"{path} has {size} bytes, index.json recorded {recorded['bytes']}: the file was "
            "changed or truncated after it was written; rebuild the index"
        )


@contextmanager
def writer_lock(folder: str | Path) -> Iterator[None]:
    """Holds the folder's exclusive writer lock; a second writer waits (and says so) until it is free.
    The lock is the operating system's (`flock`), so a killed writer never leaves it held."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    waiting = f"{folder} is being written by another process; waiting for it to finish"
    with exclusive_lock(folder / LOCK_FILE, waiting_message=waiting):
        yield


def read_metadata(path: Path) -> dict[str, Any]:
    """`index.json`, checked field by field."""
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise EmbeddingIndexError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(metadata, dict):
        raise EmbeddingIndexError(f"{path} holds a JSON {type(metadata).__name__}, not an object")
    if metadata.get("format") == INDEX_FORMAT and metadata.get("version") == 1:
        raise EmbeddingIndexError(
            f"{path}: an index of e2-hf 0.1 (brute-force search, interleaved regional embeddings); this version "
            "searches with FAISS and stores each entity apart: build it again from the catalog with e2-hf index"
        )
    if metadata.get("format") != INDEX_FORMAT or metadata.get("version") != INDEX_VERSION:
        raise EmbeddingIndexError(f"{path}: not an {INDEX_FORMAT} version {INDEX_VERSION} file")
    _check_fields(metadata, METADATA_FIELDS, f"{path}")
    for name, (low, high) in METADATA_BOUNDS.items():
        if not low <= metadata[name] <= high:
            raise EmbeddingIndexError(f"{path}: {name} is {metadata[name]}, outside {low}..{high}")
    if not all(isinstance(entity, str) and entity for entity in metadata["entities"]):
        raise EmbeddingIndexError(f"{path}: entities must be names (non-empty strings)")
    if metadata["storage_dtype"] not in STORAGE_DTYPES:
        raise EmbeddingIndexError(f"{path}: unknown storage_dtype {metadata['storage_dtype']!r}")
    _check_records(metadata["shards"], SHARD_FIELDS, f"{path}: shards")
    _check_fields(metadata["search"], SEARCH_FIELDS, f"{path}: search")
    _check_records(metadata["search"]["files"], FAISS_FILE_FIELDS, f"{path}: search files")
    if sum(shard["rows"] for shard in metadata["shards"]) != metadata["rows"]:
        raise EmbeddingIndexError(f"{path}: 'rows' is {metadata['rows']}, its shards hold a different number")
    if metadata["search"]["files"] and len(metadata["search"]["files"]) != 1 + len(metadata["entities"]):
        raise EmbeddingIndexError(f"{path}: search files must be one per target (global, then each entity)")
    if any(recorded["rows"] > metadata["rows"] for recorded in metadata["search"]["files"]):
        raise EmbeddingIndexError(f"{path}: a FAISS file records more rows than the index has")
    SearchSettings.from_json(metadata["search"]["settings"], f"{path}: search settings")
    return metadata


def _check_records(records: list, fields: dict[str, type], where: str) -> None:
    for position, record in enumerate(records):
        if not isinstance(record, dict):
            raise EmbeddingIndexError(f"{where}[{position}] is not an object")
        _check_fields(record, fields, f"{where}[{position}]")
        if record["rows"] < 0:
            raise EmbeddingIndexError(f"{where}[{position}]: rows is negative ({record['rows']})")
        _check_file_name(record["file"], f"{where}[{position}]")
        for name, kind in (("bytes", int), ("sha256", str)):
            if name in record and (not isinstance(record[name], kind) or isinstance(record[name], bool)):
                raise EmbeddingIndexError(f"{where}[{position}]: field {name!r} is not a {kind.__name__}")


def _check_file_name(name: str, where: str) -> None:
    """A file an index names is a plain name in its folder: no folder part, not absolute, not `..`."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or Path(name).is_absolute() or "\0" in name:
        raise EmbeddingIndexError(
            f"{where}: file {name!r} is not a plain file name in the index folder; an index reads only its own files"
        )


def _check_fields(record: dict[str, Any], fields: dict[str, type], where: str) -> None:
    for name, kind in fields.items():
        if name not in record:
            raise EmbeddingIndexError(f"{where} lacks the field {name!r}")
        if not isinstance(record[name], kind) or isinstance(record[name], bool) and kind is int:
            raise EmbeddingIndexError(f"{where}: field {name!r} is not a {kind.__name__}: {record[name]!r}")


def parse_item(line: str, path: Path, line_number: int) -> dict[str, Any]:
    """One `items.jsonl` line -> the `IndexItem` fields; errors name the file and line."""
    record = json_object(line, f"{path} line {line_number}", "one indexed product's fields", EmbeddingIndexError)
    unknown = sorted(set(record) - set(ITEM_FIELDS) - set(OPTIONAL_ITEM_FIELDS))
    missing = [name for name in ITEM_FIELDS if name not in record]
    if unknown or missing:
        raise EmbeddingIndexError(f"{path} line {line_number}: unknown fields {unknown}, missing fields {missing}")
    return record


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return _sha256_of(handle)


def _sha256_of(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _write_json_atomically(path: Path, content: dict[str, Any]) -> None:
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)
