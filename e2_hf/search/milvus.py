"""A Milvus collection as the store of an index: a Milvus Lite file in the process, or a Milvus
server (standalone or cluster), behind the interface the commands use of the folder index.

Store addresses (`open_store`):

    FOLDER                      the folder index (`EmbeddingIndex`), the embedded default
    milvus-lite:FILE.db         Milvus Lite in this process (a conformance stand-in for a server)
    milvus://HOST:PORT          a Milvus server (`http://HOST:PORT`); `http(s)://...` too
    ...#NAME                    the collection (default `e2_index`)

A server's token (`user:password` or an API key) comes from the `MILVUS_TOKEN` environment
variable; it is passed to the client only, never written to a file or a message. An `https://`
server is verified against the system's certificate authorities, or against the PEM file named by
`MILVUS_CA_CERT` (a private authority, or the server's own certificate).

One collection holds one row per product: `product_id` (the primary key: adding a product again
replaces it, so re-running an add changes nothing), `row` (its position, in the order products were
added), `description`, `item` (its tags, multi-value tags and source, as JSON), `tag_<entity>`
(filterable scalars), `thumbnail` (a PNG, base64) and one float vector field per search target:
`global`, then `region_<entity>` for each entity. A server allows 4 vector fields per collection by
default (`proxy.maxVectorFieldNum`, at most 10): E2 with 4 entities needs 5, so raise it to at least
1 + the number of entities; creating the collection says so when the server refuses. The model's
name and fingerprint, the entities, the embedding size and the thumbnail size are the collection's
properties, checked before anything is written.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import EmbeddingIndexError
from ..extras import require
from .engine import SearchSettings
from .index import GLOBAL, EmbeddingIndex, EmbeddingStore, IndexItem

LITE_PREFIX = "milvus-lite:"
SERVER_PREFIXES = ("milvus://", "http://", "https://")
DEFAULT_COLLECTION = "e2_index"
TOKEN_VARIABLE = "MILVUS_TOKEN"
CA_VARIABLE = "MILVUS_CA_CERT"  # a PEM file to trust for an https:// server with a private certificate
FORMAT = "e2-hf milvus 1"
TEXT_LIMIT = 65_535  # Milvus' longest VARCHAR
ID_LIMIT = 1_024
DEFAULT_VECTOR_FIELD_LIMIT = 4  # a server's proxy.maxVectorFieldNum unless raised
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ROW_FIELDS = ("row", "product_id", "description", "item")
# reads that decide what is written (row numbers, products present) see every write made before them;
# searches keep the collection's own level (a server's default, Bounded, shows a write within seconds)
READ_CONSISTENCY = "Strong"


def is_milvus_address(address: str | os.PathLike) -> bool:
    return str(address).startswith((LITE_PREFIX, *SERVER_PREFIXES))


def open_store(address: str | os.PathLike, faiss_gpu: bool = False):
    """The index at `address`: a folder (`EmbeddingIndex`) or a Milvus collection (`MilvusIndex`)."""
    if is_milvus_address(address):
        if faiss_gpu:
            raise EmbeddingIndexError("--faiss-gpu searches an index folder's FAISS indices; Milvus searches on its "
                                      "own servers")  # fmt: skip
        return MilvusIndex(str(address))
    return EmbeddingIndex(address, faiss_gpu=faiss_gpu)


def vector_field(target: str | None) -> str:
    return "global" if target is GLOBAL else f"region_{target}"


class MilvusIndex(EmbeddingStore):
    """An index in a Milvus collection. Open an existing one with `MilvusIndex(address)`; make one
    with `MilvusIndex.create`."""

    def __init__(self, address: str, client: Any = None):
        self.address = address
        self.uri, self.collection = _parse_address(address)
        self.client = client or _connect(self.uri, address)
        if not self._call("reading", self.client.has_collection, self.collection):
            raise EmbeddingIndexError(f"{address}: no collection {self.collection!r} (build one with e2-hf index)")
        description = self._call("reading", self.client.describe_collection, self.collection)
        properties = description.get("properties") or {}
        if properties.get("e2.format") != FORMAT:
            raise EmbeddingIndexError(f"{address}: collection {self.collection!r} was not made by e2-hf (its "
                                      "properties lack e2.format)")  # fmt: skip
        self.metadata = {
            "model": properties["e2.model"],
            "model_fingerprint": properties["e2.model_fingerprint"],
            "entities": json.loads(properties["e2.entities"]),
            "dim": int(properties["e2.dim"]),
            "thumbnail_size": int(properties["e2.thumbnail_size"]),
            "index_type": properties.get("e2.index_type", "FLAT"),
        }
        self.search_settings = SearchSettings.from_json(json.loads(properties.get("e2.search_settings", "{}")),
                                                        address)  # fmt: skip
        self._fields = {field["name"] for field in description["fields"]}
        self._check_schema()
        self._call("loading", self.client.load_collection, self.collection)  # a new client finds it released
        self.faiss_gpu = False
        self.folder = None  # not a folder: no lock file, no shards

    # ------------------------------------------------------------------ creating
    @classmethod
    def open_or_create(cls, address: str, model_name: str, fingerprint: str, entities: Sequence[str], dim: int,
                       thumbnail_size: int, search_settings: SearchSettings | None = None) -> MilvusIndex:  # fmt: skip
        """The collection at `address`, or a new one made with these settings where there is none."""
        uri, collection = _parse_address(address)
        client = _connect(uri, address)
        if _call(address, "reading", client.has_collection, collection):
            return cls(address, client)
        return cls.create(address, model_name, fingerprint, entities, dim, thumbnail_size, search_settings, client)

    @classmethod
    def create(cls, address: str, model_name: str, fingerprint: str, entities: Sequence[str], dim: int,
               thumbnail_size: int, search_settings: SearchSettings | None = None,
               client: Any = None) -> MilvusIndex:  # fmt: skip
        """A new, empty collection at `address` (refused if it exists)."""
        uri, collection = _parse_address(address)
        for entity in entities:
            if not NAME.match(entity) or len(entity) > 200:
                raise EmbeddingIndexError(f"entity {entity!r} cannot name a Milvus field: use letters, digits and _")
        client = client or _connect(uri, address)
        if _call(address, "reading", client.has_collection, collection):
            raise EmbeddingIndexError(f"{address}: collection {collection!r} exists already")
        settings = search_settings or SearchSettings()
        schema = _schema(client, entities, dim)
        index_params = client.prepare_index_params()
        kind = _milvus_index(settings, lite=uri.endswith(".db"))
        for target in [GLOBAL, *entities]:
            index_params.add_index(vector_field(target), metric_type="IP", **kind)
        properties = {"e2.format": FORMAT, "e2.model": model_name, "e2.model_fingerprint": fingerprint,
                      "e2.entities": json.dumps(list(entities)), "e2.dim": str(dim),
                      "e2.thumbnail_size": str(thumbnail_size), "e2.index_type": kind["index_type"],
                      "e2.search_settings": json.dumps(settings.to_json())}  # fmt: skip
        try:
            client.create_collection(collection, schema=schema, index_params=index_params, properties=properties)
        except Exception as error:  # noqa: BLE001 - pymilvus raises its own types; the message says what happened
            _drop_half_made(client, collection)
            vectors = 1 + len(entities)
            hint = ""
            if vectors > DEFAULT_VECTOR_FIELD_LIMIT and "vector" in str(error).lower():
                hint = (f" This index needs {vectors} vector fields (global + {len(entities)} entities); a Milvus "
                        f"server allows {DEFAULT_VECTOR_FIELD_LIMIT} per collection unless proxy.maxVectorFieldNum "
                        f"is raised (to at most 10).")  # fmt: skip
            raise EmbeddingIndexError(f"{address}: cannot create collection {collection!r}: {_describe(error)}.{hint}"
                                      ) from None  # fmt: skip
        return cls(address, client)

    # ------------------------------------------------------------------ properties
    @property
    def storage_dtype(self) -> str:
        return "float32"

    def __len__(self) -> int:
        counted = self._call("reading", self.client.query, self.collection, filter="", output_fields=["count(*)"],
                             consistency_level=READ_CONSISTENCY)  # fmt: skip
        return int(counted[0]["count(*)"])

    def __str__(self) -> str:
        return self.address

    def close(self) -> None:
        """Closes the client, and for a Milvus Lite file the server this process ran for it, so that
        another process can open the file (one process at a time can)."""
        self.client.close()
        if self.uri.endswith(".db"):
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.uri)

    def reload(self) -> None:
        """Nothing to re-read: every call asks the server."""

    def commit_search_indices(self, rebuild: bool = False, settings: SearchSettings | None = None) -> list[str]:
        """Milvus indexes the rows as they come: make them durable and searchable now."""
        self._call("writing", self.client.flush, self.collection)
        return []

    # ------------------------------------------------------------------ rows
    def product_ids(self) -> set[str]:
        return set(self.row_numbers())

    def row_numbers(self) -> dict[str, int]:
        """`{product id: row}` of every stored product."""
        return {row["product_id"]: int(row["row"]) for row in self._all_rows(["product_id", "row"])}

    @property
    def items(self) -> list[IndexItem]:
        """Every stored product's item in row order (read from the store each time: for catalogs
        that fit in memory, e.g. the tag vocabulary of compose-search)."""
        rows = sorted(self._all_rows(list(ROW_FIELDS)), key=lambda row: row["row"])
        return [_item(row) for row in rows]

    def has_tag(self, entity: str) -> bool:
        """Whether any stored product has a tag of `entity` (one filtered query, not a scan)."""
        found = self._call("reading", self.client.query, self.collection, filter=f'tag_{entity} != ""', limit=1,
                           output_fields=["product_id"], consistency_level=READ_CONSISTENCY)  # fmt: skip
        return bool(found)

    def thumbnail(self, row: int) -> np.ndarray:
        found = self._call("reading", self.client.query, self.collection, filter=f"row == {int(row)}",
                           output_fields=["thumbnail"], consistency_level=READ_CONSISTENCY)  # fmt: skip
        if not found:
            raise EmbeddingIndexError(f"{self.address}: no row {row}")
        return _decode_thumbnail(found[0]["thumbnail"])

    def read_rows(self, batch_size: int = 1000, with_thumbnails: bool = True):
        """Every row in `row` order, in batches: `(items, image_embeds [n, dim], region_embeds
        [n, entities, dim], thumbnails [n, s, s, 3])`."""
        fields = [*ROW_FIELDS, *(vector_field(target) for target in self.targets)]
        fields += ["thumbnail"] if with_thumbnails else []
        rows = sorted(self._all_rows(fields), key=lambda row: row["row"])
        for start in range(0, len(rows), batch_size):
            part = rows[start : start + batch_size]
            image = torch.tensor([row["global"] for row in part], dtype=torch.float32).reshape(len(part), self.dim)
            regions = torch.tensor([[row[vector_field(entity)] for entity in self.entities] for row in part],
                                   dtype=torch.float32).reshape(len(part), len(self.entities), self.dim)  # fmt: skip
            thumbnails = (np.stack([_decode_thumbnail(row["thumbnail"]) for row in part]) if with_thumbnails
                          else None)  # fmt: skip
            yield [_item(row) for row in part], image, regions, thumbnails

    def _all_rows(self, fields: list[str]) -> list[dict[str, Any]]:
        iterator = self._call("reading", self.client.query_iterator, self.collection, batch_size=1000,
                              output_fields=fields, consistency_level=READ_CONSISTENCY)  # fmt: skip
        rows = []
        while True:
            batch = self._call("reading", iterator.next)
            if not batch:
                iterator.close()
                return rows
            rows += batch

    # ------------------------------------------------------------------ writing
    def add(self, image_embeds: torch.Tensor, region_embeds: torch.Tensor, thumbnails: np.ndarray,
            items: Sequence[IndexItem | dict[str, Any]], source: str, normalize: bool = True) -> None:  # fmt: skip
        """Upserts one batch by product id (`image_embeds [n, dim]`, `region_embeds [n, entities, dim]`,
        L2-normalised here unless `normalize=False`, `thumbnails [n, size, size, 3]` uint8, one item
        per row). Each row keeps its item's `row` when it has one (>= 0); the others are numbered
        after the rows there."""
        self.check_batch(image_embeds, region_embeds, thumbnails, items)
        if len(items) == 0:
            return
        next_row = None
        unit = (lambda values: F.normalize(values, dim=-1)) if normalize else (lambda values: values)
        image, regions = (unit(values.float()).cpu().numpy() for values in (image_embeds, region_embeds))
        records = []
        for position, item in enumerate(items):
            row = item.row if isinstance(item, IndexItem) else int(item.get("row", -1))
            if row < 0:
                next_row = len(self) if next_row is None else next_row
                row, next_row = next_row, next_row + 1
            record = item.to_json() if isinstance(item, IndexItem) else dict(item)
            records.append(self._record(row, record, image[position], regions[position], thumbnails[position],
                                        source))  # fmt: skip
        self._call("writing", self.client.upsert, self.collection, records)

    def _record(self, row: int, item: dict[str, Any], image: np.ndarray, regions: np.ndarray,
                thumbnail: np.ndarray, source: str) -> dict[str, Any]:  # fmt: skip
        product_id = str(item["product_id"])
        if len(product_id.encode()) > ID_LIMIT:
            raise EmbeddingIndexError(f"product id {product_id[:40]!r}... is longer than {ID_LIMIT} bytes")
        extra = {"tags": item.get("tags", {}), "source": item.get("source", source)}
        if item.get("multi_values"):
            extra["multi_values"] = item["multi_values"]
        record = {"product_id": product_id, "row": row, "description": _bounded(item.get("description", ""), product_id,
                  "description"), "item": _bounded(json.dumps(extra, ensure_ascii=False), product_id, "tags"),
                  "thumbnail": _bounded(_encode_thumbnail(thumbnail), product_id, "thumbnail"),
                  "global": image.tolist()}  # fmt: skip
        for position, entity in enumerate(self.entities):
            record[vector_field(entity)] = regions[position].tolist()
            record[f"tag_{entity}"] = _bounded(str(extra["tags"].get(entity) or ""), product_id, f"tag {entity}")
        return record

    # ------------------------------------------------------------------ searching
    def nearest(self, queries: np.ndarray, target: str | None, top_k: int,
                where: Mapping[str, str] | None = None) -> list[list[tuple[float, IndexItem]]]:  # fmt: skip
        """For each query (`[q, dim]`, L2-normalised), the `top_k` most similar rows of `target`'s
        vectors (cosine), optionally only those whose tags equal `where`."""
        if target is not GLOBAL:
            self.entity_index(target)
        found = self._call("searching", self.client.search, self.collection, data=queries.tolist(),
                           anns_field=vector_field(target), limit=top_k, output_fields=list(ROW_FIELDS),
                           filter=self._filter(where), search_params=self._search_params(top_k))  # fmt: skip
        return [[(float(hit["distance"]), _item(hit["entity"])) for hit in hits] for hits in found]

    def nearest_weighted(self, queries: Mapping[str | None, np.ndarray], weights: Mapping[str | None, float],
                         top_k: int, candidates: int,
                         where: Mapping[str, str] | None = None) -> list[list[tuple[float, IndexItem]]]:  # fmt: skip
        """Milvus' `hybrid_search`: each target's `candidates` nearest rows, fused by the weighted sum
        of their cosines (`WeightedRanker` without score normalisation); see `fuse_weighted`."""
        pymilvus = require("pymilvus", "searching a Milvus index")
        targets = list(weights)
        for target in targets:
            if target is not GLOBAL:
                self.entity_index(target)
        requests = [pymilvus.AnnSearchRequest(queries[target].tolist(), vector_field(target),
                                              self._search_params(candidates), limit=candidates,
                                              expr=self._filter(where))
                    for target in targets]  # fmt: skip
        ranker = pymilvus.WeightedRanker(*(float(weights[target]) for target in targets), norm_score=False)
        found = self._call("searching", self.client.hybrid_search, self.collection, requests, ranker, limit=top_k,
                           output_fields=list(ROW_FIELDS))  # fmt: skip
        return [[(float(hit["distance"]), _item(hit["entity"])) for hit in hits] for hits in found]

    def _search_params(self, top_k: int) -> dict[str, Any]:
        """The query-time settings of the index type, from the index's search settings (as the folder
        index's): HNSW's candidate list `ef` and DiskANN's `search_list` (--hnsw-ef-search, at least
        `top_k`), IVF's lists probed."""
        settings = self.search_settings
        params = {"HNSW": {"ef": max(settings.hnsw_ef_search, top_k)},
                  "DISKANN": {"search_list": max(settings.hnsw_ef_search, top_k)},
                  "IVF_SQ8": {"nprobe": settings.ivf_probes}, "IVF_PQ": {"nprobe": settings.ivf_probes}}  # fmt: skip
        return {"metric_type": "IP", "params": params.get(self.metadata["index_type"], {})}

    def _filter(self, where: Mapping[str, str] | None) -> str:
        if not where:
            return ""
        for entity in where:
            self.entity_index(entity)
        return " and ".join(f"tag_{entity} == {json.dumps(value)}" for entity, value in where.items())

    # ------------------------------------------------------------------ errors
    def _call(self, doing: str, function, *args, **kwargs):
        return _call(self.address, doing, function, *args, **kwargs)

    def _check_schema(self) -> None:
        fields = self._fields
        needed = {"product_id", "row", "description", "item", "thumbnail", *map(vector_field, self.targets)}
        needed |= {f"tag_{entity}" for entity in self.entities}
        missing = sorted(needed - fields)
        if missing:
            raise EmbeddingIndexError(f"{self.address}: collection {self.collection!r} lacks the fields "
                                      f"{missing} its properties promise: it was changed outside e2-hf; build a new "
                                      "index")  # fmt: skip


def _parse_address(address: str) -> tuple[str, str]:
    """`(client uri, collection)` of a store address."""
    location, _, collection = address.partition("#")
    collection = collection or DEFAULT_COLLECTION
    if not NAME.match(collection) or len(collection) > 255:
        raise EmbeddingIndexError(f"{address}: {collection!r} cannot name a Milvus collection (letters, digits, _)")
    if location.startswith(LITE_PREFIX):
        path = location[len(LITE_PREFIX) :]
        if not path.endswith(".db"):
            raise EmbeddingIndexError(f"{address}: a Milvus Lite file ends in .db, e.g. milvus-lite:catalog.db")
        return path, collection
    if location.startswith("milvus://"):
        return "http://" + location[len("milvus://") :], collection
    return location, collection


# Milvus Lite's in-process server does not implement the timestamp call pymilvus' query iterator
# starts with; both log a traceback for it although the reads succeed (the iterator falls back)
LITE_NOISE = ("grpc._server", "pymilvus.client.iterator.query_iterator")
# pymilvus logs each failed call with its traceback before raising it; the error is reported once, here
CLIENT_NOISE = "pymilvus.decorators"


def _connect(uri: str, address: str):
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # gRPC's own log lines would repeat the error reported here
    pymilvus = require("pymilvus", "a Milvus index")
    logging.getLogger(CLIENT_NOISE).setLevel(logging.CRITICAL)
    if uri.endswith(".db"):
        require("milvus_lite", "a Milvus Lite file")
        for name in LITE_NOISE:
            logging.getLogger(name).setLevel(logging.CRITICAL)
        return _call(address, "opening", pymilvus.MilvusClient, uri)
    token = os.environ.get(TOKEN_VARIABLE, "")
    tls = {}
    if uri.startswith("https://") and os.environ.get(CA_VARIABLE):
        if not os.path.isfile(os.environ[CA_VARIABLE]):
            raise EmbeddingIndexError(f"{CA_VARIABLE}={os.environ[CA_VARIABLE]}: no such certificate file")
        tls = {"server_pem_path": os.environ[CA_VARIABLE]}
    return _call(address, "connecting to", pymilvus.MilvusClient, uri=uri, token=token, timeout=10, **tls)


def _call(address: str, doing: str, function, *args, **kwargs):
    """`function(...)`, with any client error as one line naming the store (the token never appears)."""
    try:
        return function(*args, **kwargs)
    except EmbeddingIndexError:
        raise
    except Exception as error:  # noqa: BLE001 - pymilvus and grpc raise many types
        message = _describe(error).replace(os.environ.get(TOKEN_VARIABLE) or "\0", "***")
        raise EmbeddingIndexError(f"Milvus error {doing} {address}: {message}") from None


def _describe(error: Exception) -> str:
    """The error in one line. pymilvus reports any failed connection as "illegal connection params
    or server unavailable"; the gRPC status it wraps says which."""
    cause = error.__cause__
    status = cause.code().name if callable(getattr(cause, "code", None)) else ""
    if status == "UNAUTHENTICATED":
        if os.environ.get(TOKEN_VARIABLE):
            return f"the server refused the token in {TOKEN_VARIABLE} ({cause.details()})"
        return f"the server needs a token: set {TOKEN_VARIABLE} to user:password or an API key ({cause.details()})"
    if status == "UNAVAILABLE" and "CERTIFICATE_VERIFY_FAILED" in cause.details():
        return (f"the server's TLS certificate is not trusted: set {CA_VARIABLE} to the PEM file of its certificate "
                f"authority ({cause.details()})")  # fmt: skip
    if status == "UNAVAILABLE":
        return f"cannot reach the server ({cause.details()})"
    return " ".join(str(getattr(error, "message", None) or error).split())


def _schema(client, entities: Sequence[str], dim: int):
    pymilvus = require("pymilvus", "a Milvus index")
    types = pymilvus.DataType
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("product_id", types.VARCHAR, is_primary=True, max_length=ID_LIMIT)
    schema.add_field("row", types.INT64)
    schema.add_field("description", types.VARCHAR, max_length=TEXT_LIMIT)
    schema.add_field("item", types.VARCHAR, max_length=TEXT_LIMIT)
    schema.add_field("thumbnail", types.VARCHAR, max_length=TEXT_LIMIT)
    for entity in entities:
        schema.add_field(f"tag_{entity}", types.VARCHAR, max_length=ID_LIMIT)
    for target in [GLOBAL, *entities]:
        schema.add_field(vector_field(target), types.FLOAT_VECTOR, dim=dim)
    return schema


def _milvus_index(settings: SearchSettings, lite: bool) -> dict[str, Any]:
    """Milvus' index for the index type, fixed when the collection is made: flat is FLAT (exact);
    hnsw, and auto (a Milvus index is not rebuilt as it grows), HNSW with the same degree and build
    width; ivfpq IVF_PQ on a server, IVF_SQ8 on Milvus Lite (which has no PQ); diskann DISKANN on a
    server only."""
    kind = settings.index_type
    if kind == "flat":
        return {"index_type": "FLAT", "params": {}}
    if kind in ("hnsw", "auto"):
        return {"index_type": "HNSW", "params": {"M": settings.hnsw_neighbours,
                                                  "efConstruction": settings.hnsw_ef_construction}}  # fmt: skip
    if kind == "diskann":
        if lite:
            raise EmbeddingIndexError("Milvus Lite has no DiskANN (a Milvus server's index type): use hnsw")
        return {"index_type": "DISKANN", "params": {}}
    lists = settings.ivf_lists or 1024
    if lite:
        return {"index_type": "IVF_SQ8", "params": {"nlist": lists}}
    return {"index_type": "IVF_PQ", "params": {"nlist": lists, "m": settings.pq_subvectors or 64, "nbits": 8}}


def _drop_half_made(client, collection: str) -> None:
    """pymilvus makes a collection, then its indexes: where an index is refused, the empty
    collection it made is dropped, so a failed create leaves nothing (it did not exist before)."""
    try:
        if client.has_collection(collection):
            client.drop_collection(collection)
    except Exception:  # noqa: BLE001, S110 - the create's own error is the one to report
        pass


def _bounded(text: str, product_id: str, what: str) -> str:
    if len(text.encode()) > TEXT_LIMIT:
        raise EmbeddingIndexError(f"product {product_id}: its {what} is {len(text.encode()):,} bytes, more than a "
                                  f"Milvus text field holds ({TEXT_LIMIT:,})")  # fmt: skip
    return text


def _encode_thumbnail(thumbnail: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(thumbnail, dtype=np.uint8)).save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _decode_thumbnail(text: str) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB"))


def _item(row: Mapping[str, Any]) -> IndexItem:
    extra = json.loads(row["item"])
    return IndexItem(row=int(row["row"]), product_id=row["product_id"], description=row["description"],
                     tags=extra.get("tags", {}), source=extra.get("source", ""),
                     multi_values=extra.get("multi_values", {}))  # fmt: skip
