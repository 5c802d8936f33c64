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
description is an error naming the file and row. Texts and tags are cleaned: HTML is reduced to its
text (tags dropped, entities decoded, one sentence per block) and whitespace runs become single
spaces; `keep_html=True` (`--keep-html`) leaves them as they are.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from PIL import Image

from ..extras import require
from ..images import upright

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
    # entities read with a value separator: their values, sorted; `tags` then holds them joined
    multi_values: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def values_of(self, entity: str) -> tuple[str, ...]:
        """The product's values of `entity`: one for an ordinary tag, several for a multi-value one."""
        return values_of(self.tags, self.multi_values, entity)


def values_of(
    tags: Mapping[str, str | None], multi_values: Mapping[str, Sequence[str]], entity: str
) -> tuple[str, ...]:
    """An entity's values from a product's `tags` and `multi_values` (as `Product` and the index store them)."""
    if entity in multi_values:
        return tuple(multi_values[entity])
    tag = tags.get(entity)
    return (tag,) if tag else ()


def clean_tag(value: Any, keep_html: bool = False) -> str | None:
    """A text field as the model reads it, or `None` when it is missing or blank. Unless
    `keep_html`, HTML markup is reduced to its text (see `html_to_text`) and whitespace runs,
    newlines included, become single spaces."""
    if value is None:
        return None
    text = str(value)
    if not keep_html:
        text = html_to_text(text) if HTML_MARKUP.search(text) else " ".join(text.split())
    text = text.strip()
    return text or None


MULTI_VALUE_JOINER = ", "  # how a product's values of one entity are written as one tag text


def split_tag(value: Any, separators: str, keep_html: bool = False) -> tuple[str, ...]:
    """A multi-value tag -> its cleaned, distinct values, sorted (so that the order a catalog lists
    them in does not matter): `"Spring|All-weather|spring "` with `"|"` -> `("All-weather", "Spring")`."""
    if value is None:
        return ()
    parts = re.split("[" + re.escape(separators) + "]", str(value))
    values: dict[str, str] = {}
    for part in parts:
        cleaned = clean_tag(part, keep_html)
        if cleaned:
            values.setdefault(cleaned.casefold(), cleaned)
    return tuple(sorted(values.values(), key=str.casefold))


def parse_tag_separators(items: Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    """`["season=|", "composition=|\\n"]` (command-line form) or a mapping -> `{entity: separator characters}`;
    `\\n` and `\\t` stand for newline and tab."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        pairs = list(items.items())
    else:
        pairs = []
        for item in items:
            entity, equals, separators = item.partition("=")
            if not equals or not entity.strip() or not separators:
                raise ValueError(
                    f"--tag-separator {item!r}: write ENTITY=CHARACTERS, e.g. season='|' or composition='|\\n'"
                )
            pairs.append((entity.strip(), separators))
    return {entity: separators.replace("\\n", "\n").replace("\\t", "\t") for entity, separators in pairs}


# A tag (`<p>`, `</li>`, `<br />`, `<!-- -->`) or a character reference (`&bull;`, `&#174;`).
HTML_MARKUP = re.compile(r"<[A-Za-z/!][^>]*>|&(?:#\d+|#x[0-9A-Fa-f]+|[A-Za-z][A-Za-z0-9]*);")
BLOCK_TAGS = {"p", "br", "li", "ul", "ol", "div", "tr", "td", "th", "table", "h1", "h2", "h3", "h4", "h5", "h6",
              "section", "article", "dd", "dt", "hr", "blockquote"}  # fmt: skip
LIST_MARKERS = " \t•·◦▪‣-*"
SENTENCE_ENDS = ".!?:;,"


class _HtmlText(HTMLParser):
    """Collects the text of an HTML fragment (character references decoded), a line per block."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0  # inside <script> or <style>

    def handle_starttag(self, tag, attrs):
        self.skipping += tag in ("script", "style")
        if tag in BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        self.skipping -= tag in ("script", "style") and self.skipping > 0
        if tag in BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


def html_to_text(fragment: str) -> str:
    """`<p>Soft.</p><ul><li>Machine wash</li></ul>` -> `Soft. Machine wash`: tags dropped (unclosed
    ones too), entities decoded, each block a sentence, list markers (`&bull;`) removed."""
    parser = _HtmlText()
    parser.feed(fragment)
    parser.close()
    lines = [" ".join(line.split()).strip(LIST_MARKERS) for line in "".join(parser.parts).split("\n")]
    lines = [line for line in lines if line]
    sentences = [line if line[-1] in SENTENCE_ENDS else f"{line}." for line in lines[:-1]]  # blocks end sentences
    return " ".join(sentences + lines[-1:])


class Catalog:
    """Products with lazily loaded images. Subclasses fill `self.products` and `_open_image`;
    their texts and tags go through `clean_tag` (HTML reduced to text unless `keep_html`)."""

    keep_html: bool = False
    tag_separators: dict[str, str] = {}  # entity -> characters separating its values

    def _clean(self, value: Any) -> str | None:
        return clean_tag(value, self.keep_html)

    def _tags(self, raw: Mapping[str, Any]) -> tuple[dict[str, str | None], dict[str, tuple[str, ...]]]:
        """Raw tag fields -> `(tags, multi_values)`: multi-value entities are split into their values
        (before cleaning, since a newline may separate them) and joined into one tag text."""
        tags, multi_values = {}, {}
        for entity, value in raw.items():
            if entity in self.tag_separators:
                multi_values[entity] = split_tag(value, self.tag_separators[entity], self.keep_html)
                tags[entity] = MULTI_VALUE_JOINER.join(multi_values[entity]) or None
            else:
                tags[entity] = self._clean(value)
        return tags, multi_values

    def value_sets(self, entity: str) -> list[tuple[str, ...]]:
        """Each product's values of `entity` (empty when it has none)."""
        return [product.values_of(entity) for product in self.products]

    name: str
    products: list[Product]

    def __len__(self) -> int:
        return len(self.products)

    def __getitem__(self, index: int) -> Product:
        return self.products[index]

    def load_image(self, index: int, view: int = 0) -> Image.Image:
        """The view's image, upright (its EXIF orientation applied); unreadable -> `ImageLoadError`."""
        product = self.products[index]
        try:
            image = self._open_image(index, view)
            image.load()
            return upright(image)
        except ImageLoadError:
            raise
        except Exception as error:  # PIL raises many kinds for broken files
            raise ImageLoadError(f"{product.source}, view {view}: unreadable image ({error})") from error

    def _open_image(self, index: int, view: int) -> Image.Image:
        raise NotImplementedError

    def tag_values(self, entity: str) -> list[str | None]:
        return [product.tags.get(entity) for product in self.products]

    def untagged_entities(self, entities: Sequence[str]) -> list[str]:
        """The entities no product of this catalog has a tag for."""
        return [entity for entity in entities if not any(product.tags.get(entity) for product in self.products)]


def untagged_entities_notice(catalog: Catalog, entities: Sequence[str], spec: str, consequence: str,
                             untagged: Sequence[str] | None = None) -> str | None:  # fmt: skip
    """One line naming the entities without any tag in the catalog and what that means, or `None`
    (`untagged`: `catalog.untagged_entities(entities)` when the caller has it already)."""
    untagged = catalog.untagged_entities(entities) if untagged is None else untagged
    if not untagged:
        return None
    names = ", ".join(untagged)
    return f"no product of {spec} has a {names} tag ({len(catalog)} products): {consequence}"


class FashionGenCatalog(Catalog):
    """The FashionGen HDF5 layout: rows of one product are contiguous (grouped by `input_productID`)."""

    def __init__(self, path: str | Path, keep_html: bool = False, tag_separators: Mapping[str, str] | None = None):
        h5py = require("h5py", "reading a FashionGen HDF5 catalog")
        self.path, self.keep_html, self.tag_separators = Path(path), keep_html, dict(tag_separators or {})
        if not self.path.is_file():
            raise FileNotFoundError(f"FashionGen file not found: {self.path}")
        self.name = self.path.name
        self._handle = None
        self._handle_pid = None
        if not h5py.is_hdf5(self.path):
            size = self.path.stat().st_size
            raise ValueError(f"{self.path} is not an HDF5 file" + (" (it is empty)" if size == 0 else ""))
        with h5py.File(self.path, "r") as handle:
            missing = [key for key in ("input_image", "input_productID", "input_description") if key not in handle]
            if missing:
                raise ValueError(f"{self.path}: not the FashionGen layout, missing {missing}")
            rows = _check_images(self.path, handle["input_image"])
            product_ids = _column(self.path, handle, "input_productID", rows)
            descriptions = _column(self.path, handle, "input_description", rows)
            tag_columns = {entity: _column(self.path, handle, key, rows)
                           for entity, key in FASHIONGEN_TAG_FIELDS.items() if key in handle}  # fmt: skip
        self.row_ranges: list[tuple[int, int]] = []
        self.products = []
        start = 0
        for row in range(1, len(product_ids) + 1):
            if row == len(product_ids) or product_ids[row] != product_ids[start]:
                self._add_product(start, row, product_ids[start], descriptions[start], tag_columns)
                start = row

    def _add_product(self, start, end, product_id, description, tag_columns) -> None:
        source = f"{self.name} rows {start}-{end - 1}"
        text = self._clean(_text(description))
        if not text:
            raise ValueError(f"{source}: field 'input_description' is empty")
        tags, multi_values = self._tags({entity: _text(column[start]) for entity, column in tag_columns.items()})
        self.row_ranges.append((start, end))
        product_id = _text(product_id) if isinstance(product_id, bytes) else str(int(product_id))
        self.products.append(Product(product_id, text, tags, end - start, source, multi_values))

    def _file(self):
        """One h5py handle per process (dataloader workers are forked)."""
        h5py = require("h5py", "reading a FashionGen HDF5 catalog")
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


def _check_images(path: Path, images) -> int:
    """The number of rows of `input_image`, which must hold uint8 RGB images `[rows, height, width, 3]`."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != "uint8":
        raise ValueError(
            f"{path}: dataset 'input_image' has shape {images.shape} and dtype {images.dtype}; FashionGen images "
            "are uint8 RGB, [rows, height, width, 3] (convert float images with (x * 255).round().astype('uint8'))"
        )
    return images.shape[0]


def _column(path: Path, handle, key: str, rows: int):
    """One value per row of a `[rows, 1]` (FashionGen) or `[rows]` dataset."""
    dataset = handle[key]
    if dataset.shape not in ((rows,), (rows, 1)):
        raise ValueError(f"{path}: dataset {key!r} has shape {dataset.shape}; one value per image ({rows}) expected")
    values = dataset[:]
    return values.reshape(rows)


def _text(value) -> str:
    """FashionGen strings are latin-1 bytes; newer files may store str."""
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


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
        description = self._clean(record.get("description", record.get("text")))
        if description is None:
            raise ValueError(f"{source}: field 'description' (or 'text') is empty")
        if not images:
            raise ValueError(f"{source}: no image (fields 'images' or 'image')")
        reserved = {"images", "image", "description", "text", "product_id", "split", "details"}  # details: boxes
        tags, multi_values = self._tags({key: value for key, value in record.items() if key not in reserved})
        product_id = str(record.get("product_id", len(self.products)))
        self.products.append(Product(product_id, description, tags, len(images), source, multi_values))
        self.image_paths.append([image_root / path for path in images])


def _images_of(record: Mapping[str, Any], source: str, separator: str | None = None) -> list[str]:
    key = "images" if "images" in record else "image"
    images = record.get(key)
    if images is None or images == "":
        return []
    if isinstance(images, str):
        return [part.strip() for part in images.split(separator or "\n") if part.strip()] if separator else [images]
    if not isinstance(images, list) or not all(isinstance(image, str) for image in images):
        raise ValueError(f"{source}: field {key!r} must be an image path or a list of paths, got {images!r}")
    return images


class TabularCatalog(FileCatalog):
    """One product per row of a file; image paths relative to the file; `split` filters rows."""

    kind = "tabular"

    def __init__(self, path: str | Path, split: str | None = None, keep_html: bool = False,
                 tag_separators: Mapping[str, str] | None = None):  # fmt: skip
        self.path, self.keep_html, self.tag_separators = Path(path), keep_html, dict(tag_separators or {})
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.kind} catalog not found: {self.path}")
        self.name, self.products, self.image_paths = self.path.name, [], []
        with open(self.path, "rb") as handle:
            for source, record, images in self._rows(_utf8_lines(handle, self.path)):
                if split is None or record.get("split") == split:
                    self._add_record(record, source, self.path.parent, images)
        if not self.products:
            raise ValueError(f"{self.path}: no products" + (f" in split {split!r}" if split else ""))

    def _rows(self, lines):
        """Yields `(source for error messages, record, image paths)` from the file's text lines."""
        raise NotImplementedError


def json_object(line: str, where: str, holding: str, error: type[ValueError] = ValueError) -> dict[str, Any]:
    """One JSON line that must be an object; `error` names `where` (file and row) otherwise."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as decode_error:
        raise error(f"{where}: not valid JSON ({decode_error})") from None
    if not isinstance(record, dict):
        raise error(f"{where}: a JSON {type(record).__name__}, not an object with {holding}")
    return record


def _utf8_lines(handle, path: Path):
    """The file's lines as text; a line that is not UTF-8 is an error naming it."""
    for number, raw in enumerate(handle, start=1):
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(
                f"{path} line {number} is not UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1}); "
                "save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`"
            ) from None


class JsonlCatalog(TabularCatalog):
    kind = "JSONL"

    def _rows(self, lines):
        for row, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            source = f"{self.path.name} row {row}"
            record = json_object(line, source, "one product's fields")
            yield source, record, _images_of(record, source)


class CsvCatalog(TabularCatalog):
    """Strict CSV: a stray or unbalanced quote, or a row with more or fewer fields than the header,
    is an error naming the line, never a row that silently swallows the rows after it."""

    kind = "CSV"

    def _rows(self, lines):
        reader = csv.reader(lines, strict=True)
        header = self._next_record(reader, 1)
        if header is None:
            return
        row = 1
        while True:
            first_line = reader.line_num + 1
            fields = self._next_record(reader, first_line)
            if fields is None:
                return
            if not any(field.strip() for field in fields):
                continue
            row += 1
            source = f"{self.path.name} row {row}" + (f" (line {first_line})" if first_line != row else "")
            if len(fields) != len(header):
                raise ValueError(f"{source}: {len(fields)} fields, the header has {len(header)} ({', '.join(header)})")
            if reader.line_num > first_line:
                self._check_not_swallowed(fields, len(header), source)
            record = dict(zip(header, fields))
            yield source, record, _images_of(record, source, ";")

    def _next_record(self, reader, first_line: int) -> list[str] | None:
        try:
            return next(reader)
        except StopIteration:
            return None
        except csv.Error as error:
            raise ValueError(
                f'{self.path} line {first_line}: malformed CSV ({error}); look for an unbalanced or stray quote (") '
                "in this row or the rows above it"
            ) from None

    def _check_not_swallowed(self, fields: list[str], columns: int, source: str) -> None:
        """A quoted field spanning lines is legal; one whose lines look like whole rows is a quote
        opened by mistake that took the following rows into one field."""
        for value in fields:
            swallowed = [line for line in value.splitlines()[1:] if line.count(",") >= columns - 1]
            if swallowed:
                raise ValueError(
                    f"{source}: a quoted field spans {len(value.splitlines())} lines that look like CSV rows "
                    f'({swallowed[0][:60]!r}); an unbalanced quote (") made them one field'
                )


class AmazonCatalog(FileCatalog):
    """AmazonFashion: text is the title, the only tag is the brand."""

    def __init__(self, root: str | Path, split: str = "train", keep_html: bool = False,
                 tag_separators: Mapping[str, str] | None = None):  # fmt: skip
        self.root, self.keep_html, self.tag_separators = Path(root), keep_html, dict(tag_separators or {})
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

    def __init__(self, path: str | Path, split: str | None = None, column_map: Mapping[str, str] | None = None,
                 keep_html: bool = False, tag_separators: Mapping[str, str] | None = None):  # fmt: skip
        import datasets

        self.path, self.keep_html, self.tag_separators = Path(path), keep_html, dict(tag_separators or {})
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
            description = self._clean(record.get("description", record.get("text")))
            if description is None:
                raise ValueError(f"{source}: field 'description' (or 'text') is empty")
            tags, multi_values = self._tags({key: value for key, value in record.items()
                                             if key not in ("description", "text")})  # fmt: skip
            self.products.append(
                Product(str(record.get("product_id", row)), description, tags, 1, source, multi_values)
            )

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


def open_catalog(
    spec: str,
    column_map: Mapping[str, str] | None = None,
    keep_html: bool = False,
    tag_separators: Sequence[str] | Mapping[str, str] | None = None,
) -> Catalog:
    """The catalog a data spec string names (see module doc); `keep_html` leaves texts as they are;
    `tag_separators` (`{"season": "|"}` or `["season=|"]`) reads those entities as multi-value tags."""
    kind, path, split = parse_spec(spec)
    separators = parse_tag_separators(tag_separators)
    if kind == "fashiongen":
        return FashionGenCatalog(path, keep_html, separators)
    if kind == "amazon":
        return AmazonCatalog(path, split or "train", keep_html, separators)
    if kind == "jsonl":
        return JsonlCatalog(path, split, keep_html, separators)
    if kind == "csv":
        return CsvCatalog(path, split, keep_html, separators)
    return HFDatasetCatalog(path, split, column_map, keep_html, separators)
