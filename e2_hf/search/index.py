"""An on-disk index of global and regional image embeddings, with incremental adds and
memory-mapped reads.

Layout of an index folder:

    index.json                   format, model, entities, dimension, thumbnail size, shards, row count
    items.jsonl                  one line per row: product id, description, tags, source
    shard-00000.safetensors      image_embeds [rows, dim] float32 (L2-normalised)
                                 region_embeds [rows, entities, dim] float32 (L2-normalised)
                                 thumbnails [rows, size, size, 3] uint8 (letterboxed on white)

`index.json` is written last, atomically: it is the commit point of an add. Rows a failed add left
in `items.jsonl`, or a shard it left behind, are ignored and cleaned up by the next add. A writer
holds an exclusive lock on the folder (`.lock`) for a whole add, so concurrent adds queue up instead
of overwriting each other. Each shard's size and SHA-256 are recorded in `index.json`: the size is
checked whenever the index is opened, the checksum by `verify()` (`e2-hf index --verify`).
Reads map the shards into memory (`numpy.memmap`), so embeddings larger than RAM can be searched;
the item texts are read into memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from ..data.catalogs import json_object, values_of
from .safetensors_mmap import memory_map

INDEX_FORMAT = "e2-hf-embedding-index"
INDEX_VERSION = 1
METADATA_FILE = "index.json"
ITEMS_FILE = "items.jsonl"
SHARD_PATTERN = "shard-{:05d}.safetensors"
LOCK_FILE = ".lock"
# index.json's fields and their JSON types
METADATA_FIELDS = {"format": str, "version": int, "model": str, "model_fingerprint": str, "entities": list,
                   "dim": int, "thumbnail_size": int, "rows": int, "shards": list}  # fmt: skip
SHARD_FIELDS = {"file": str, "rows": int, "source": str}
ITEM_FIELDS = ("product_id", "description", "tags", "source")
OPTIONAL_ITEM_FIELDS = ("multi_values",)


class EmbeddingIndexError(ValueError):
    """A missing, corrupt or mismatched index; the message names the folder and the problem."""


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


def letterbox(image: Image.Image, size: int) -> np.ndarray:
    """`[size, size, 3]` uint8: the image scaled to fit, centred on white."""
    image = image.convert("RGB")
    scale = size / max(image.size)
    resized = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BICUBIC)
    canvas = Image.new("RGB", (size, size), "white")
    canvas.paste(resized, ((size - resized.width) // 2, (size - resized.height) // 2))
    return np.array(canvas)  # writable: torch.from_numpy takes it as is


class EmbeddingIndex:
    """Read and extend an index folder. Create one with `EmbeddingIndex.create`, open with `EmbeddingIndex(folder)`."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        metadata_path = self.folder / METADATA_FILE
        if not metadata_path.is_file():
            raise EmbeddingIndexError(
                f"{self.folder} is not an E2 index: {METADATA_FILE} is missing (build one with e2-hf index)"
            )
        self.metadata = read_metadata(metadata_path)
        self._shards: list[dict[str, np.memmap]] | None = None
        self._items: list[IndexItem] | None = None

    # ------------------------------------------------------------------ creating
    @classmethod
    def create(cls, folder: str | Path, model_name: str, fingerprint: str, entities: Sequence[str], dim: int,
               thumbnail_size: int) -> EmbeddingIndex:  # fmt: skip
        """A new, empty index in `folder` (the caller holds `writer_lock(folder)`)."""
        folder = Path(folder)
        if (folder / METADATA_FILE).exists():
            raise EmbeddingIndexError(f"{folder} already holds an index")
        folder.mkdir(parents=True, exist_ok=True)
        metadata = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "model": model_name,
                    "model_fingerprint": fingerprint, "entities": list(entities), "dim": dim,
                    "thumbnail_size": thumbnail_size, "rows": 0, "shards": []}  # fmt: skip
        _write_json_atomically(folder / METADATA_FILE, metadata)
        (folder / ITEMS_FILE).write_text("", encoding="utf-8")
        return cls(folder)

    # ------------------------------------------------------------------ properties
    @property
    def entities(self) -> list[str]:
        return list(self.metadata["entities"])

    @property
    def dim(self) -> int:
        return int(self.metadata["dim"])

    @property
    def thumbnail_size(self) -> int:
        return int(self.metadata["thumbnail_size"])

    def __len__(self) -> int:
        return int(self.metadata["rows"])

    def check_model(self, fingerprint: str, model_name: str) -> None:
        if fingerprint != self.metadata["model_fingerprint"]:
            raise EmbeddingIndexError(
                f"{self.folder} was built with another model ({self.metadata['model']}, fingerprint "
                f"{self.metadata['model_fingerprint']}); {model_name} has fingerprint {fingerprint}. "
                "Embeddings of different models cannot be mixed: build a new index."
            )

    def entity_index(self, entity: str) -> int:
        if entity not in self.metadata["entities"]:
            known = ", ".join(self.metadata["entities"]) or "none"
            raise EmbeddingIndexError(f"unknown entity {entity!r}; this index has regional embeddings for: {known}")
        return self.metadata["entities"].index(entity)

    # ------------------------------------------------------------------ reading
    @property
    def shards(self) -> list[dict[str, np.memmap]]:
        """Each shard's tensors, memory-mapped (read-only)."""
        if self._shards is None:
            self._shards = [self._open_shard(shard) for shard in self.metadata["shards"]]
        return self._shards

    def _open_shard(self, shard: dict[str, Any]) -> dict[str, np.memmap]:
        """Maps one shard after checking its size and its row count against `index.json`."""
        path = self.folder / shard["file"]
        if "bytes" in shard and path.is_file() and path.stat().st_size != shard["bytes"]:
            raise EmbeddingIndexError(
                f"{path} has {path.stat().st_size} bytes, index.json recorded {shard['bytes']}: the shard was "
                "changed or truncated after it was written; rebuild the index"
            )
        try:
            tensors = memory_map(path)
        except ValueError as error:
            raise EmbeddingIndexError(f"{error}; rebuild the index") from None
        expected = {"image_embeds": (shard["rows"], self.dim),
                    "region_embeds": (shard["rows"], len(self.entities), self.dim),
                    "thumbnails": (shard["rows"], self.thumbnail_size, self.thumbnail_size, 3)}  # fmt: skip
        for name, shape in expected.items():
            actual = tuple(tensors[name].shape) if name in tensors else None
            if actual != shape:
                raise EmbeddingIndexError(
                    f"{path}: {name} has shape {actual}, index.json ({shard['rows']} rows) needs {shape}"
                )
        return tensors

    def _read_all_metadata(self) -> tuple[list[IndexItem], list[dict[str, np.memmap]]]:
        """Parses `items.jsonl` and checks every shard's header and shapes (the open-time checks)."""
        return self.items, self.shards

    def verify(self) -> list[str]:
        """Problems found by re-reading every shard against its recorded SHA-256 (empty when sound)."""
        problems = []
        for shard in self.metadata["shards"]:
            path = self.folder / shard["file"]
            if not path.is_file():
                problems.append(f"{path} is missing")
            elif "sha256" not in shard:
                problems.append(f"{path}: index.json records no checksum (written by an older version)")
            elif file_sha256(path) != shard["sha256"]:
                problems.append(f"{path}: its bytes differ from the SHA-256 recorded when it was written")
        try:
            self._read_all_metadata()
        except (EmbeddingIndexError, FileNotFoundError) as error:
            problems.append(str(error))
        return problems

    @property
    def items(self) -> list[IndexItem]:
        if self._items is None:
            self._items = []
            path = self.folder / ITEMS_FILE
            with open(path, encoding="utf-8") as handle:
                for row, line in zip(range(len(self)), handle):
                    self._items.append(IndexItem(row=row, **parse_item(line, path, row + 1)))
            if len(self._items) != len(self):
                raise EmbeddingIndexError(
                    f"{self.folder / ITEMS_FILE} has {len(self._items)} rows, index.json says {len(self)}"
                )
        return self._items

    def tag_values(self, entity: str) -> list[str | None]:
        """Each row's tag of `entity` (as `Catalog.tag_values`)."""
        return [item.tags.get(entity) for item in self.items]

    def value_sets(self, entity: str) -> list[tuple[str, ...]]:
        """Each row's values of `entity` (as `Catalog.value_sets`)."""
        return [item.values_of(entity) for item in self.items]

    def product_ids(self) -> set[str]:
        return {item.product_id for item in self.items}

    def iter_blocks(self, name: str, block_rows: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        """`(first row, array)` blocks of one stored tensor, read from the memory maps."""
        offset = 0
        for shard in self.shards:
            array = shard[name]
            for start in range(0, array.shape[0], block_rows):
                yield offset + start, array[start : start + block_rows]
            offset += array.shape[0]

    def _row_location(self, row: int) -> tuple[dict[str, np.memmap], int]:
        if not 0 <= row < len(self):
            raise EmbeddingIndexError(f"row {row} is outside the index ({len(self)} rows)")
        for shard, info in zip(self.shards, self.metadata["shards"]):
            if row < info["rows"]:
                return shard, row
            row -= info["rows"]
        raise AssertionError("index.json row counts disagree with its shards")

    def thumbnail(self, row: int) -> np.ndarray:
        shard, local_row = self._row_location(row)
        return np.array(shard["thumbnails"][local_row])

    def read_all(self, name: str) -> np.ndarray:
        """One stored tensor of every row, in memory (for tests and small indexes)."""
        blocks = [np.array(block) for _, block in self.iter_blocks(name)]
        return np.concatenate(blocks) if blocks else np.zeros((0,))

    # ------------------------------------------------------------------ writing
    def add(self, image_embeds: torch.Tensor, region_embeds: torch.Tensor, thumbnails: np.ndarray,
            items: Sequence[IndexItem | dict[str, Any]], source: str) -> None:  # fmt: skip
        """Appends one shard: `image_embeds [n, dim]`, `region_embeds [n, entities, dim]` (both are
        L2-normalised here), `thumbnails [n, size, size, 3]` uint8 and one item per row."""
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
        if rows == 0:
            return
        records = [item.to_json() if isinstance(item, IndexItem) else dict(item) for item in items]
        self._discard_uncommitted()
        shard_file = SHARD_PATTERN.format(len(self.metadata["shards"]))
        tensors = {
            "image_embeds": torch.nn.functional.normalize(image_embeds.float(), dim=-1).contiguous(),
            "region_embeds": torch.nn.functional.normalize(region_embeds.float(), dim=-1).contiguous(),
            "thumbnails": torch.from_numpy(np.ascontiguousarray(thumbnails, dtype=np.uint8)),
        }
        shard_path = self.folder / shard_file
        save_file(tensors, str(shard_path), metadata={"source": source})
        with open(self.folder / ITEMS_FILE, "a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
            handle.flush()
            os.fsync(handle.fileno())
        metadata = dict(self.metadata)
        shard = {"file": shard_file, "rows": rows, "source": source, "bytes": shard_path.stat().st_size,
                 "sha256": file_sha256(shard_path)}  # fmt: skip
        metadata["shards"] = [*self.metadata["shards"], shard]
        metadata["rows"] = len(self) + rows
        _write_json_atomically(self.folder / METADATA_FILE, metadata)
        self.metadata, self._shards, self._items = metadata, None, None

    def reload(self) -> None:
        """Re-reads `index.json` (another writer may have committed since this object was opened)."""
        self.metadata = read_metadata(self.folder / METADATA_FILE)
        self._shards, self._items = None, None

    def _discard_uncommitted(self) -> None:
        """Drops what an interrupted add left: item lines past the committed rows, unlisted shards."""
        with open(self.folder / ITEMS_FILE, encoding="utf-8") as handle:
            lines = [line for _, line in zip(range(len(self)), handle)]
        (self.folder / ITEMS_FILE).write_text("".join(lines), encoding="utf-8")
        listed = {shard["file"] for shard in self.metadata["shards"]}
        for path in self.folder.glob("shard-*.safetensors"):
            if path.name not in listed:
                path.unlink()


@contextmanager
def writer_lock(folder: str | Path) -> Iterator[None]:
    """Holds the folder's exclusive writer lock; a second writer waits (and says so) until it is free.
    The lock is the operating system's (`flock`), so a killed writer never leaves it held."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a+b") as handle:
        if not _try_lock(handle):
            print(f"{folder} is being written by another process; waiting for it to finish", file=sys.stderr)
            _lock(handle)
        try:
            yield
        finally:
            _unlock(handle)


if os.name == "nt":
    import msvcrt

    def _try_lock(handle) -> bool:
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _lock(handle) -> None:
        while not _try_lock(handle):  # LK_LOCK gives up after 10 s; keep waiting
            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)

    def _unlock(handle) -> None:
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(handle) -> bool:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _lock(handle) -> None:
        fcntl.flock(handle, fcntl.LOCK_EX)

    def _unlock(handle) -> None:
        fcntl.flock(handle, fcntl.LOCK_UN)


def read_metadata(path: Path) -> dict[str, Any]:
    """`index.json`, checked field by field."""
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise EmbeddingIndexError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(metadata, dict):
        raise EmbeddingIndexError(f"{path} holds a JSON {type(metadata).__name__}, not an object")
    if metadata.get("format") != INDEX_FORMAT or metadata.get("version") != INDEX_VERSION:
        raise EmbeddingIndexError(f"{path}: not an {INDEX_FORMAT} version {INDEX_VERSION} file")
    _check_fields(metadata, METADATA_FIELDS, f"{path}")
    for position, shard in enumerate(metadata["shards"]):
        if not isinstance(shard, dict):
            raise EmbeddingIndexError(f"{path}: shards[{position}] is not an object")
        _check_fields(shard, SHARD_FIELDS, f"{path}: shards[{position}]")
    if sum(shard["rows"] for shard in metadata["shards"]) != metadata["rows"]:
        raise EmbeddingIndexError(f"{path}: 'rows' is {metadata['rows']}, its shards hold a different number")
    return metadata


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
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json_atomically(path: Path, content: dict[str, Any]) -> None:
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)
