"""An on-disk index of global and regional image embeddings, with incremental adds and
memory-mapped reads.

Layout of an index folder:

    index.json                   format, model, entities, dimension, thumbnail size, shards, row count
    items.jsonl                  one line per row: product id, description, tags, source
    shard-00000.safetensors      image_embeds [rows, dim] float32 (L2-normalised)
                                 region_embeds [rows, entities, dim] float32 (L2-normalised)
                                 thumbnails [rows, size, size, 3] uint8 (letterboxed on white)

`index.json` is written last, atomically: it is the commit point of an add. Rows a failed add left
in `items.jsonl`, or a shard it left behind, are ignored and cleaned up by the next add.
Reads map the shards into memory (`numpy.memmap`), so embeddings larger than RAM can be searched;
the item texts are read into memory.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from .safetensors_mmap import memory_map

INDEX_FORMAT = "e2-hf-embedding-index"
INDEX_VERSION = 1
METADATA_FILE = "index.json"
ITEMS_FILE = "items.jsonl"
SHARD_PATTERN = "shard-{:05d}.safetensors"


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

    def to_json(self) -> dict[str, Any]:
        return {"product_id": self.product_id, "description": self.description, "tags": self.tags,
                "source": self.source}  # fmt: skip


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
        try:
            self.metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise EmbeddingIndexError(f"{metadata_path} is not valid JSON: {error}") from None
        if self.metadata.get("format") != INDEX_FORMAT or self.metadata.get("version") != INDEX_VERSION:
            raise EmbeddingIndexError(f"{metadata_path}: not an {INDEX_FORMAT} version {INDEX_VERSION} file")
        self._shards: list[dict[str, np.memmap]] | None = None
        self._items: list[IndexItem] | None = None

    # ------------------------------------------------------------------ creating
    @classmethod
    def create(cls, folder: str | Path, model_name: str, fingerprint: str, entities: Sequence[str], dim: int,
               thumbnail_size: int) -> EmbeddingIndex:  # fmt: skip
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
            self._shards = [memory_map(self.folder / shard["file"]) for shard in self.metadata["shards"]]
        return self._shards

    @property
    def items(self) -> list[IndexItem]:
        if self._items is None:
            self._items = []
            with open(self.folder / ITEMS_FILE, encoding="utf-8") as handle:
                for row, line in zip(range(len(self)), handle):
                    record = json.loads(line)
                    self._items.append(IndexItem(row=row, **record))
            if len(self._items) != len(self):
                raise EmbeddingIndexError(
                    f"{self.folder / ITEMS_FILE} has {len(self._items)} rows, index.json says {len(self)}"
                )
        return self._items

    def tag_values(self, entity: str) -> list[str | None]:
        """Each row's tag of `entity` (as `Catalog.tag_values`)."""
        return [item.tags.get(entity) for item in self.items]

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
        save_file(tensors, str(self.folder / shard_file), metadata={"source": source})
        with open(self.folder / ITEMS_FILE, "a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
            handle.flush()
            os.fsync(handle.fileno())
        metadata = dict(self.metadata)
        metadata["shards"] = [*self.metadata["shards"], {"file": shard_file, "rows": rows, "source": source}]
        metadata["rows"] = len(self) + rows
        _write_json_atomically(self.folder / METADATA_FILE, metadata)
        self.metadata, self._shards, self._items = metadata, None, None

    def _discard_uncommitted(self) -> None:
        """Drops what an interrupted add left: item lines past the committed rows, unlisted shards."""
        with open(self.folder / ITEMS_FILE, encoding="utf-8") as handle:
            lines = [line for _, line in zip(range(len(self)), handle)]
        (self.folder / ITEMS_FILE).write_text("".join(lines), encoding="utf-8")
        listed = {shard["file"] for shard in self.metadata["shards"]}
        for path in self.folder.glob("shard-*.safetensors"):
            if path.name not in listed:
                path.unlink()


def _write_json_atomically(path: Path, content: dict[str, Any]) -> None:
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)
