"""Product catalogs: the same `Product` view of FashionGen, AmazonFashion, JSONL/CSV and datasets.

A data spec string names one:

    fashiongen:PATH.h5        the FashionGen HDF5 layout (lazy h5py reads, a handle per process)
    amazon:ROOT[:SPLIT]       AmazonFashion: ROOT/meta-fashion.json, ROOT/split.json, ROOT/Fashion/<asin>/<file>
    jsonl:FILE[:SPLIT]        one product per line; image paths relative to the file
    csv:FILE[:SPLIT]          the same as CSV (several images separated by ';')
    hf:PATH[:SPLIT]           a `datasets` dataset saved with save_to_disk, or local data files

JSONL / CSV / dataset columns: `images` (list, or ';'-separated) or `image`, `description` (or
`text`), optional `product_id`, `split` (filtered by `:SPLIT`), and one column per entity name;
`details` (ground-truth detail boxes per view, as `e2-hf make-synthetic` writes) is not a tag.
For datasets, `column_map` renames columns first, e.g. `{"caption": "description"}`.
A missing, empty or whitespace-only tag is missing (masked in the region loss); an empty
description is an error naming the file and row.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

FASHIONGEN_TAG_FIELDS = {
    "brand": "input_brand",
    "season": "input_season",
    "subcategory": "input_subcategory",
    "composition": "input_composition",
    "category": "input_category",
    "gender": "input_gender",
    "department": "input_department",
    "name": "input_name",
}
KINDS = ("fashiongen", "amazon", "jsonl", "csv", "hf")


class ImageLoadError(ValueError):
    """An unreadable or corrupt image; the message names the file (and row)."""


@dataclass
class Product:
    """One product: its description, tags by entity name, and how many views (images) it has."""

    product_id: str
    description: str
    tags: dict[str, str | None]
    num_views: int
    source: str  # where it comes from, for error messages: "catalog.jsonl row 12"


def clean_tag(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


class Catalog:
    """Products with lazily loaded images. Subclasses fill `self.products` and `_open_image`."""

    name: str
    products: list[Product]

    def __len__(self) -> int:
        return len(self.products)

    def __getitem__(self, index: int) -> Product:
        return self.products[index]

    def load_image(self, index: int, view: int = 0) -> Image.Image:
        product = self.products[index]
        try:
            image = self._open_image(index, view)
            image.load()
            return image
        except ImageLoadError:
            raise
        except Exception as error:  # PIL raises many kinds for broken files
            raise ImageLoadError(f"{product.source}, view {view}: unreadable image ({error})") from error

    def _open_image(self, index: int, view: int) -> Image.Image:
        raise NotImplementedError

    def tag_values(self, entity: str) -> list[str | None]:
        return [product.tags.get(entity) for product in self.products]


class FashionGenCatalog(Catalog):
    """The FashionGen HDF5 layout: rows of one product are contiguous (grouped by `input_productID`)."""

    def __init__(self, path: str | Path):
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"FashionGen file not found: {self.path}")
        self.name = self.path.name
        self._handle = None
        self._handle_pid = None
        with h5py.File(self.path, "r") as handle:
            missing = [key for key in ("input_image", "input_productID", "input_description") if key not in handle]
            if missing:
                raise ValueError(f"{self.path}: not the FashionGen layout, missing {missing}")
            product_ids = handle["input_productID"][:, 0]
            descriptions = handle["input_description"][:, 0]
            tag_columns = {entity: handle[key][:, 0] for entity, key in FASHIONGEN_TAG_FIELDS.items() if key in handle}
        self.row_ranges: list[tuple[int, int]] = []
        self.products = []
        start = 0
        for row in range(1, len(product_ids) + 1):
            if row == len(product_ids) or product_ids[row] != product_ids[start]:
                self._add_product(start, row, product_ids[start], descriptions[start], tag_columns)
                start = row

    def _add_product(self, start, end, product_id, description, tag_columns) -> None:
        source = f"{self.name} rows {start}-{end - 1}"
        text = description.decode("latin-1").strip()
        if not text:
            raise ValueError(f"{source}: field 'input_description' is empty")
        tags = {entity: clean_tag(column[start].decode("latin-1")) for entity, column in tag_columns.items()}
        self.row_ranges.append((start, end))
        self.products.append(Product(str(int(product_id)), text, tags, end - start, source))

    def _file(self):
        """One h5py handle per process (dataloader workers are forked)."""
        import h5py

        if self._handle is None or self._handle_pid != os.getpid():
            self._handle = h5py.File(self.path, "r")
            self._handle_pid = os.getpid()
        return self._handle

    def _open_image(self, index: int, view: int) -> Image.Image:
        start, end = self.row_ranges[index]
        return Image.fromarray(self._file()["input_image"][start + min(view, end - start - 1)])

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handle"] = state["_handle_pid"] = None  # handles do not travel to workers
        return state


class FileCatalog(Catalog):
    """Products whose images are files; `image_root` resolves relative paths."""

    image_paths: list[list[Path]]

    def _open_image(self, index: int, view: int) -> Image.Image:
        paths = self.image_paths[index]
        path = paths[min(view, len(paths) - 1)]
        if not path.is_file():
            raise ImageLoadError(f"{self.products[index].source}, view {view}: image file not found: {path}")
        return Image.open(path)

    def _add_record(self, record: Mapping[str, Any], source: str, image_root: Path, images: Sequence[str]) -> None:
        description = clean_tag(record.get("description", record.get("text")))
        if description is None:
            raise ValueError(f"{source}: field 'description' (or 'text') is empty")
        if not images:
            raise ValueError(f"{source}: no image (fields 'images' or 'image')")
        reserved = {"images", "image", "description", "text", "product_id", "split", "details"}  # details: boxes
        tags = {key: clean_tag(value) for key, value in record.items() if key not in reserved}
        product_id = str(record.get("product_id", len(self.products)))
        self.products.append(Product(product_id, description, tags, len(images), source))
        self.image_paths.append([image_root / path for path in images])


def _images_of(record: Mapping[str, Any], separator: str | None = None) -> list[str]:
    images = record.get("images", record.get("image"))
    if images is None or images == "":
        return []
    if isinstance(images, str):
        return [part.strip() for part in images.split(separator or "\n") if part.strip()] if separator else [images]
    return [str(image) for image in images]


class TabularCatalog(FileCatalog):
    """One product per row of a file; image paths relative to the file; `split` filters rows."""

    kind = "tabular"

    def __init__(self, path: str | Path, split: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.kind} catalog not found: {self.path}")
        self.name, self.products, self.image_paths = self.path.name, [], []
        with open(self.path, encoding="utf-8", newline="") as handle:
            for source, record, images in self._rows(handle):
                if split is None or record.get("split") == split:
                    self._add_record(record, source, self.path.parent, images)
        if not self.products:
            raise ValueError(f"{self.path}: no products" + (f" in split {split!r}" if split else ""))

    def _rows(self, handle):
        """Yields `(source for error messages, record, image paths)`."""
        raise NotImplementedError


class JsonlCatalog(TabularCatalog):
    kind = "JSONL"

    def _rows(self, handle):
        for row, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            source = f"{self.path.name} row {row}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{source}: not valid JSON ({error})") from None
            yield source, record, _images_of(record)


class CsvCatalog(TabularCatalog):
    kind = "CSV"

    def _rows(self, handle):
        for row, record in enumerate(csv.DictReader(handle), start=2):  # row 1 is the header
            yield f"{self.path.name} row {row}", record, _images_of(record, ";")


class AmazonCatalog(FileCatalog):
    """AmazonFashion: text is the title, the only tag is the brand."""

    def __init__(self, root: str | Path, split: str = "train"):
        self.root = Path(root)
        meta_path, split_path = self.root / "meta-fashion.json", self.root / "split.json"
        for path in (meta_path, split_path):
            if not path.is_file():
                raise FileNotFoundError(f"AmazonFashion file not found: {path}")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        splits = json.loads(split_path.read_text(encoding="utf-8"))
        if split not in splits:
            raise ValueError(f"{split_path}: no split {split!r} (has {sorted(splits)})")
        self.name, self.products, self.image_paths = f"AmazonFashion {split}", [], []
        for asin in splits[split]:
            if asin not in meta:
                raise ValueError(f"{split_path}: {asin} is not in {meta_path.name}")
            item = meta[asin]
            record = {"product_id": asin, "description": item.get("title"), "brand": item.get("brand")}
            images = [f"Fashion/{asin}/{name}" for name in item.get("images", [])]
            self._add_record(record, f"{meta_path.name} {asin}", self.root, images)


class HFDatasetCatalog(Catalog):
    """A `datasets` dataset: `image` column of PIL images (or paths), `description`, entity columns."""

    def __init__(self, path: str | Path, split: str | None = None, column_map: Mapping[str, str] | None = None):
        import datasets

        self.path = Path(path)
        if (self.path / "dataset_info.json").exists() or (self.path / "dataset_dict.json").exists():
            dataset = datasets.load_from_disk(str(self.path))
            if isinstance(dataset, datasets.DatasetDict):
                dataset = dataset[split or "train"]
        else:
            dataset = datasets.load_dataset(str(self.path), split=split or "train")
        if column_map:
            dataset = dataset.rename_columns(dict(column_map))
        self.dataset = dataset
        self.name, self.products = f"{self.path.name}[{split or 'train'}]", []
        image_column = "images" if "images" in dataset.column_names else "image"
        if image_column not in dataset.column_names:
            raise ValueError(f"{self.path}: no 'image' or 'images' column (columns {dataset.column_names})")
        self.image_column = image_column
        text_columns = [name for name in dataset.column_names if name != image_column]
        for row, record in enumerate(dataset.select_columns(text_columns)):
            source = f"{self.name} row {row}"
            description = clean_tag(record.get("description", record.get("text")))
            if description is None:
                raise ValueError(f"{source}: field 'description' (or 'text') is empty")
            tags = {key: clean_tag(value) for key, value in record.items() if key not in ("description", "text")}
            self.products.append(Product(str(record.get("product_id", row)), description, tags, 1, source))

    def _open_image(self, index: int, view: int) -> Image.Image:
        value = self.dataset[index][self.image_column]
        if isinstance(value, list):
            value = value[min(view, len(value) - 1)]
        if isinstance(value, str):
            return Image.open(value)
        return value


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """`kind:path[:split]` -> (kind, path, split)."""
    kind, separator, rest = spec.partition(":")
    if not separator or kind not in KINDS:
        raise ValueError(f"data spec {spec!r} must start with one of {', '.join(k + ':' for k in KINDS)}")
    path, split = rest, None
    if ":" in rest and not os.path.exists(rest):
        head, _, tail = rest.rpartition(":")
        path, split = head, tail
    return kind, path, split


def open_catalog(spec: str, column_map: Mapping[str, str] | None = None) -> Catalog:
    """The catalog a data spec string names (see module doc)."""
    kind, path, split = parse_spec(spec)
    if kind == "fashiongen":
        return FashionGenCatalog(path)
    if kind == "amazon":
        return AmazonCatalog(path, split or "train")
    if kind == "jsonl":
        return JsonlCatalog(path, split)
    if kind == "csv":
        return CsvCatalog(path, split)
    return HFDatasetCatalog(path, split, column_map)
