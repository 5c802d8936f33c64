"""Benchmark 12: the folder index against a Milvus Lite store, on the same rows.

Products with a global and four regional embeddings (synthetic unit vectors, dim 512, clustered
as in benchmark 8), an 8 px thumbnail each. Per store and index type: add throughput (products
per second, the vectors given: embedding them costs the same for both), query latency p50 / p99
(one query per call, by the global embedding), and recall@10 against exact search. Milvus Lite is
the in-process stand-in for a Milvus server, not a measure of one.

    python benchmarks/milvus_store.py [--products 100000]
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parser, write_result  # noqa: E402
from report import table  # noqa: E402
from search_scale import clustered_unit_vectors  # noqa: E402

from e2_hf.search import EmbeddingIndex, SearchSettings  # noqa: E402
from e2_hf.search.index import IndexItem, writer_lock  # noqa: E402
from e2_hf.search.milvus import MilvusIndex  # noqa: E402

DIMENSION, TOP_K, QUERIES, BATCH_ROWS, THUMBNAIL = 512, 10, 200, 2_000, 8
ENTITIES = ("brand", "season", "subcategory", "composition")
SIDES = {"folder, flat": ("folder", "flat"), "folder, hnsw": ("folder", "hnsw"),
         "Milvus Lite, flat": ("milvus", "flat"), "Milvus Lite, hnsw": ("milvus", "hnsw")}  # fmt: skip


def catalog(products: int) -> tuple[np.ndarray, np.ndarray]:
    """`[products, dim]` global and `[products, entities, dim]` regional unit vectors."""
    vectors = [clustered_unit_vectors(products, seed) for seed in range(1 + len(ENTITIES))]
    return vectors[0], np.stack(vectors[1:], axis=1)


def items(first: int, count: int) -> list[IndexItem]:
    return [IndexItem(row=row, product_id=f"p{row:08d}", description=f"product {row}",
                      tags={entity: f"{entity}-{row % 50}" for entity in ENTITIES}, source="synthetic")
            for row in range(first, first + count)]  # fmt: skip


def build(side: tuple[str, str], folder: Path, image: np.ndarray, regions: np.ndarray):
    """The store filled with every product; returns it and the seconds the adds took."""
    kind, index_type = side
    settings = SearchSettings(index_type=index_type)
    thumbnails = np.zeros((BATCH_ROWS, THUMBNAIL, THUMBNAIL, 3), dtype=np.uint8)
    if kind == "milvus":
        store = MilvusIndex.create(f"milvus-lite:{folder / 'store.db'}", "synthetic", "0" * 16, ENTITIES, DIMENSION,
                                   THUMBNAIL, settings)  # fmt: skip
    else:
        with writer_lock(folder / "index"):
            store = EmbeddingIndex.create(folder / "index", "synthetic", "0" * 16, ENTITIES, DIMENSION, THUMBNAIL,
                                          "float32", settings)  # fmt: skip
    start = time.perf_counter()
    for first in range(0, len(image), BATCH_ROWS):
        count = min(BATCH_ROWS, len(image) - first)
        store.add(torch.from_numpy(image[first : first + count]), torch.from_numpy(regions[first : first + count]),
                  thumbnails[:count], items(first, count), "synthetic")  # fmt: skip
    store.commit_search_indices()
    return store, time.perf_counter() - start


def measure(store, queries: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    latencies, found = [], 0
    store.nearest(queries[:1], None, TOP_K)  # warm: loads the index
    for query, truth in zip(queries, exact):
        start = time.perf_counter()
        hits = store.nearest(query[None], None, TOP_K)[0]
        latencies.append(time.perf_counter() - start)
        found += len({item.row for _, item in hits} & set(truth.tolist()))
    return {"p50_ms": 1000 * float(np.percentile(latencies, 50)), "p99_ms": 1000 * float(np.percentile(latencies, 99)),
            "recall_at_10": found / (TOP_K * len(queries))}  # fmt: skip


def main() -> None:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--products", type=int, default=100_000)
    args = arguments.parse_args()
    products = 400 if args.toy else args.products
    image, regions = catalog(products)
    queries = clustered_unit_vectors(QUERIES if not args.toy else 20, seed=99)
    exact = np.argsort(-(queries @ image.T), axis=1, kind="stable")[:, :TOP_K]
    sides = {}
    for name, side in SIDES.items():
        with tempfile.TemporaryDirectory() as scratch:
            store, seconds = build(side, Path(scratch), image, regions)
            with store:  # closed before its folder is removed: Milvus Lite writes into it until then
                sides[name] = {"add_s": seconds, "products_per_s": products / seconds,
                               **measure(store, queries, exact)}  # fmt: skip
            print(name, {key: round(value, 3) for key, value in sides[name].items()}, flush=True)
    write_result("milvus_store", {
        "setting": f"{products:,} products x 5 vectors of {DIMENSION} (global + 4 entities), {THUMBNAIL} px "
                   f"thumbnails, adds of {BATCH_ROWS:,}; {len(queries)} single queries by the global embedding; "
                   "Milvus Lite in the process",
        "products": products, "sides": sides,
    }, args.output)  # fmt: skip


def render(result: dict) -> list[str]:
    rows = [[name, f"{side['products_per_s']:,.0f}", f"{side['add_s']:.1f}", f"{side['p50_ms']:.2f}",
             f"{side['p99_ms']:.2f}", f"{side['recall_at_10']:.3f}"]
            for name, side in result["sides"].items()]  # fmt: skip
    sides = result["sides"]
    ratio = sides["folder, hnsw"]["products_per_s"] / sides["Milvus Lite, hnsw"]["products_per_s"]
    latency = sides["Milvus Lite, hnsw"]["p50_ms"] / sides["folder, hnsw"]["p50_ms"]
    return [
        "## 12. The folder index and a Milvus Lite store",
        "",
        f"Setting: {result['setting']}.",
        "",
        *table(
            ["store, index type", "products / s added", "add s", "query p50 ms", "query p99 ms", "recall@10"], rows
        ),  # fmt: skip
        "",
        f"With HNSW on both, the folder index adds {ratio:.1f}x as many products per second and answers a query "
        f"{latency:.1f}x as fast as Milvus Lite. Pick the folder index on one machine (the default); pick a Milvus "
        "server when the catalog or the writers outgrow one machine (Milvus Lite is for trying that path out and "
        "for tests, not for production).",
        "",
    ]


if __name__ == "__main__":
    main()
