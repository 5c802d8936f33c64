"""FAISS indices of an embedding index: one per search target (the global embedding, each entity's
regional embedding), exact or approximate, written to and read from files with clear errors.

Index types (inner product on L2-normalised vectors, i.e. cosine similarity):

    flat    exact (`IndexFlatIP`, or scalar-quantised to float16 / bfloat16 with that storage)
    hnsw    approximate graph search (`IndexHNSW*`): fast queries, vectors kept in full
    ivfpq   approximate, compressed: inverted lists of 4-bit product-quantised codes, the best
            candidates re-scored from 8-bit scalar-quantised vectors (less memory than flat)
    auto    flat up to `exact_up_to` rows, ivfpq beyond

The defaults below are the choices benchmark 8 measured (BENCHMARKS.md, "Search at scale").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..choices import DTYPE_NAMES
from ..errors import EmbeddingIndexError
from ..extras import require

INDEX_TYPES = ("auto", "flat", "hnsw", "ivfpq", "diskann")
SERVER_ONLY_TYPES = ("diskann",)  # a Milvus server's own: neither FAISS (the folder) nor Milvus Lite has it
STORAGE_DTYPES = DTYPE_NAMES  # how an index stores its vectors
DEFAULT_THUMBNAIL_SIZE = 128  # side in pixels of the thumbnail an index keeps of each product
# how a storage dtype is kept inside a FAISS index (index_factory's spelling)
FAISS_VECTOR_CODES = {"float32": "Flat", "float16": "SQfp16", "bfloat16": "SQbf16"}


def import_faiss():
    """FAISS (the `search` extra's faiss-cpu, or a GPU build of faiss installed in its place)."""
    return require("faiss", "searching an index")


# the largest value of each setting: beyond them an index.json is damaged or crafted (a refine factor
# of 10^9 would make one query allocate terabytes)
SETTING_MAXIMA = {"exact_up_to": 2**40, "hnsw_neighbours": 1024, "hnsw_ef_construction": 65_536,
                  "hnsw_ef_search": 65_536, "ivf_lists": 65_536, "ivf_probes": 65_536, "pq_subvectors": 65_536,
                  "refine_factor": 4_096}  # fmt: skip


@dataclass
class SearchSettings:
    """How the FAISS indices of an index are built and searched; stored in its `index.json`."""

    index_type: str = "auto"
    exact_up_to: int = 100_000  # auto: exact search up to this many rows (flat's latency there: BENCHMARKS.md 8)
    hnsw_neighbours: int = 32  # HNSW's M: graph degree
    hnsw_ef_construction: int = 40
    hnsw_ef_search: int = 256  # candidates kept while searching: recall against speed
    ivf_lists: int = 0  # 0: 4 * sqrt(rows), between 16 and 65536
    ivf_probes: int = 16  # lists searched per query
    pq_subvectors: int = 0  # 0: dim / 4 (4-bit codes: dim / 8 bytes per vector)
    refine_factor: int = 64  # ivfpq: re-score refine_factor * top_k candidates from 8-bit vectors

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_TYPES:
            raise EmbeddingIndexError(f"unknown index type {self.index_type!r}; choose one of {', '.join(INDEX_TYPES)}")
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "index_type":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= SETTING_MAXIMA[item.name]:
                maximum = SETTING_MAXIMA[item.name]
                raise EmbeddingIndexError(f"search setting {item.name} must be an integer from 0 to {maximum}, "
                                          f"got {value!r}")  # fmt: skip

    @classmethod
    def from_json(cls, record: dict[str, Any], where: str) -> SearchSettings:
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise EmbeddingIndexError(f"{where}: unknown search settings {unknown}")
        return cls(**record)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def check_folder(self, where: str) -> None:
        """An index folder searches with FAISS: a Milvus server's own index type is refused by name."""
        if self.index_type in SERVER_ONLY_TYPES:
            choices = ", ".join(kind for kind in INDEX_TYPES if kind not in SERVER_ONLY_TYPES)
            raise EmbeddingIndexError(f"{where}: {self.index_type} is a Milvus server's index type; an index folder "
                                      f"takes {choices}")  # fmt: skip

    def resolved_type(self, rows: int) -> str:
        """The index type used at `rows` rows: `auto` picks flat or ivfpq by size."""
        self.check_folder("the index folder")
        if self.index_type != "auto":
            return self.index_type
        return "flat" if rows <= self.exact_up_to else "ivfpq"

    def factory_string(self, kind: str, dim: int, rows: int, storage_dtype: str) -> str:
        """FAISS `index_factory` description of a `kind` index over `rows` vectors."""
        vectors = FAISS_VECTOR_CODES[storage_dtype]
        if kind == "flat":
            return vectors
        if kind == "hnsw":
            return f"HNSW{self.hnsw_neighbours},{vectors}"
        subvectors = self.pq_subvectors or max(1, dim // 4)
        if dim % subvectors:
            raise EmbeddingIndexError(f"pq_subvectors {subvectors} must divide the embedding size {dim}")
        return f"IVF{self.lists(rows)},PQ{subvectors}x4fs,Refine(SQ8)"

    def lists(self, rows: int) -> int:
        """IVF lists at `rows` rows: `ivf_lists`, or 4 * sqrt(rows) between 16 and 65536."""
        return self.ivf_lists or min(65536, max(16, round(4 * math.sqrt(max(rows, 1)))))


def build_index(blocks: Iterable[np.ndarray], rows: int, dim: int, kind: str, settings: SearchSettings,
                storage_dtype: str, training_sample: np.ndarray | None = None):  # fmt: skip
    """A FAISS index of `kind` holding `blocks` (float32 `[n, dim]`, `rows` in all), in order.
    An IVF index is trained on `training_sample` first."""
    faiss = import_faiss()
    index = faiss.index_factory(
        dim, settings.factory_string(kind, dim, rows, storage_dtype), faiss.METRIC_INNER_PRODUCT
    )
    if kind == "hnsw":
        index.hnsw.efConstruction = settings.hnsw_ef_construction
    if not index.is_trained:
        index.train(_trainable(training_sample, index))
    return extend_index(index, blocks)


def _trainable(sample: np.ndarray | None, index) -> np.ndarray:
    lists = import_faiss().extract_index_ivf(index).nlist
    if sample is None or len(sample) < lists:
        count = 0 if sample is None else len(sample)
        raise EmbeddingIndexError(
            f"an IVF index with {lists} lists needs at least {lists} rows to train on, got {count}: "
            "use --index-type flat or hnsw for an index this small"
        )
    return np.ascontiguousarray(sample, dtype=np.float32)


def extend_index(index, blocks: Iterable[np.ndarray]):
    """Adds each float32 `[n, dim]` block to `index`, in order; returns it."""
    for block in blocks:
        index.add(np.ascontiguousarray(block, dtype=np.float32))
    return index


def configure_for_search(index, settings: SearchSettings) -> None:
    """Applies the query-time settings (HNSW's efSearch, IVF's probes) to a loaded index."""
    faiss = import_faiss()
    parameters, concrete = faiss.ParameterSpace(), faiss.downcast_index(index)
    if hasattr(concrete, "hnsw"):
        parameters.set_index_parameter(index, "efSearch", settings.hnsw_ef_search)
    if isinstance(concrete, faiss.IndexRefine):
        parameters.set_index_parameter(index, "nprobe", settings.ivf_probes)
        concrete.k_factor = settings.refine_factor


def search_index(index, queries: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """`(scores [q, k], rows [q, k])` of the `top_k` nearest rows per query; row -1 where fewer exist."""
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), top_k)


def to_gpus(index, name: str):
    """`index` copied onto every GPU FAISS sees, its rows split between them (a GPU build of FAISS).
    Searches of the copy give the hits of `index`; `index` itself stays on the CPU, where it is
    extended and written. Every GPU build moves exact float32 indices (`flat`, storage float32);
    a type it cannot move is an `EmbeddingIndexError` naming it."""
    faiss = import_faiss()
    if faiss.get_num_gpus() == 0:
        raise EmbeddingIndexError(
            "--faiss-gpu: FAISS sees no GPU here (faiss-cpu has no GPU support: install a GPU build of FAISS, "
            "e.g. faiss-gpu-cu12, on a machine with a CUDA GPU)"
        )
    options = faiss.GpuMultipleClonerOptions()
    options.shard = True  # each GPU holds a share of the rows: memory scales with the GPUs
    try:
        return faiss.index_cpu_to_all_gpus(index, co=options)
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1]
        raise EmbeddingIndexError(
            f"the {name} ({type(faiss.downcast_index(index)).__name__}) cannot run on a GPU: {reason}. Exact "
            "float32 indices move: --rebuild --index-type flat on an index stored as float32, "
            "or search without --faiss-gpu"
        ) from None


def write_index(index, path: Path) -> None:
    import_faiss().write_index(index, str(path))


def read_index(path: Path, rows: int, dim: int, handle: BinaryIO | None = None):
    """The FAISS index in `path` (read from `handle`, the file already open, when given: then what
    was checked is what FAISS reads, even if a writer removes the file meanwhile), checked to hold
    `rows` vectors of size `dim`; a missing, corrupt or mismatched file is an `EmbeddingIndexError`
    naming it."""
    faiss = import_faiss()
    if handle is None and not path.is_file():
        raise EmbeddingIndexError(f"FAISS index {path} is missing; recreate it with e2-hf index --rebuild")
    try:
        index = faiss.read_index(faiss.PyCallbackIOReader(handle.read) if handle is not None else str(path))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1]
        raise EmbeddingIndexError(
            f"{path} is not a readable FAISS index ({reason}); recreate it with e2-hf index --rebuild"
        ) from None
    if index.ntotal != rows or index.d != dim:
        raise EmbeddingIndexError(
            f"{path} holds {index.ntotal} vectors of size {index.d}, index.json recorded {rows} of size {dim}; "
            "recreate it with e2-hf index --rebuild"
        )
    return index
