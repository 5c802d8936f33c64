"""Benchmark 8: search at scale. Brute force (e2-hf 0.1's search) vs FAISS flat (exact) vs FAISS
approximate (HNSW, IVF-PQ), and the cost of float16 / bfloat16 storage.

Synthetic unit vectors, dim 512, drawn around 1,000 cluster centres as real product embeddings
cluster (queries come from the same distribution and are not in the index). Per size and side:
build time, index memory, query latency p50 / p99 at batch 1 and batch 64, and recall@10 against
exact search. At 100k rows the global target and the four entity targets are each measured; at
1M one target is measured (the other four are the same size and cost the same: build time and
memory x5 for an index). The brute force is 0.1's algorithm: a scan of all rows in blocks per
query, one query per call.

    python benchmarks/search_scale.py [--sizes 100000 1000000]
"""

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parser, write_result  # noqa: E402
from report import table  # noqa: E402

from e2_hf.search import engine  # noqa: E402

DIMENSION = 512
CENTRES = 1000
TOP_K = 10
BATCH = 64
TARGETS = ("global", "brand", "season", "subcategory", "composition")
GOAL_SPEEDUP, GOAL_RECALL = 100.0, 0.95
SWEEPS = {"hnsw": ("hnsw_ef_search", (32, 64, 128, 256, 512)), "ivfpq": ("refine_factor", (16, 32, 64, 128, 256))}


def clustered_unit_vectors(rows: int, seed: int, spread: float = 1.0, block: int = 100_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345).standard_normal((CENTRES, DIMENSION)).astype(np.float32)
    vectors = np.empty((rows, DIMENSION), dtype=np.float32)
    for start in range(0, rows, block):
        stop = min(start + block, rows)
        part = centres[rng.integers(0, CENTRES, stop - start)]
        part += spread * rng.standard_normal((stop - start, DIMENSION), dtype=np.float32)
        vectors[start:stop] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return vectors


def brute_force_top_k(vectors: np.ndarray, query: np.ndarray, block_rows: int = 65536) -> np.ndarray:
    """0.1's search for one query: blocks of `vectors @ query`, keeping the best `TOP_K` (ties by row)."""
    best_scores, best_rows = torch.empty(0), torch.empty(0, dtype=torch.long)
    for start in range(0, len(vectors), block_rows):
        scores = torch.from_numpy(vectors[start : start + block_rows] @ query)
        rows = torch.arange(start, start + len(scores))
        scores, rows = torch.cat([best_scores, scores]), torch.cat([best_rows, rows])
        order = torch.from_numpy(np.lexsort((rows.numpy(), -scores.numpy()))[:TOP_K])
        best_scores, best_rows = scores[order], rows[order]
    return best_rows.numpy()


def latencies(search, queries: np.ndarray, batch: int, calls: int) -> dict[str, float]:
    """p50 / p99 seconds per call of `search(queries[i : i + batch])`, over `calls` calls."""
    times = []
    for call in range(calls):
        chunk = queries[(call * batch) % len(queries) :][:batch]
        start = time.perf_counter()
        search(chunk)
        times.append(time.perf_counter() - start)
    return {"p50_s": float(np.percentile(times, 50)), "p99_s": float(np.percentile(times, 99)), "calls": calls}


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / TOP_K for a, b in zip(found, exact)]))


def index_bytes(index) -> int:
    with tempfile.NamedTemporaryFile(suffix=".index") as handle:
        engine.write_index(index, Path(handle.name))
        return Path(handle.name).stat().st_size


def measure_faiss(kind: str, vectors: np.ndarray, queries: np.ndarray, exact: np.ndarray, storage: str,
                  calls: dict[int, int]) -> dict:  # fmt: skip
    settings = engine.SearchSettings(index_type=kind)
    start = time.perf_counter()
    sample = vectors[:: max(1, len(vectors) // 200_000)] if kind == "ivfpq" else None
    index = engine.build_index(iter([vectors]), len(vectors), DIMENSION, kind, settings, storage, sample)
    build = time.perf_counter() - start
    engine.configure_for_search(index, settings)
    found = engine.search_index(index, queries, TOP_K)[1]
    result = {"build_s": build, "memory_bytes": index_bytes(index), "recall_at_10": recall_at_k(found, exact),
              "factory": settings.factory_string(kind, DIMENSION, len(vectors), storage)}  # fmt: skip
    for batch, count in calls.items():
        result[f"batch_{batch}"] = latencies(
            lambda chunk: engine.search_index(index, chunk, TOP_K), queries, batch, count
        )
    if kind in SWEEPS:  # the query-time setting: recall against speed, on the same index
        name, values = SWEEPS[kind]
        result["sweep"] = {"setting": name, "rows": [sweep_row(index, settings, name, value, queries, exact, calls)
                                                     for value in values]}  # fmt: skip
        for row in result["sweep"]["rows"]:
            print(f"    {name} {row[name]}: recall@10 {row['recall_at_10']:.3f}, "
                  f"batch 1 p50 {1000 * row['batch_1']['p50_s']:.2f} ms", flush=True)  # fmt: skip
        engine.configure_for_search(index, settings)
    return result


def sweep_row(index, settings, name: str, value: int, queries, exact, calls: dict[int, int]) -> dict:
    engine.configure_for_search(index, engine.SearchSettings(**{**settings.to_json(), name: value}))
    found = engine.search_index(index, queries, TOP_K)[1]
    row = {name: value, "recall_at_10": recall_at_k(found, exact)}
    for batch, count in calls.items():
        row[f"batch_{batch}"] = latencies(lambda chunk: engine.search_index(index, chunk, TOP_K), queries, batch, count)
    return row


def measure_target(rows: int, seed: int, query_count: int, brute_calls: dict[int, int], fast_calls: dict[int, int],
                   storage_variants: bool) -> dict:  # fmt: skip
    vectors = clustered_unit_vectors(rows, seed)
    queries = clustered_unit_vectors(query_count, seed + 1000)
    flat = engine.build_index(iter([vectors]), rows, DIMENSION, "flat", engine.SearchSettings(), "float32")
    exact = engine.search_index(flat, queries, TOP_K)[1]
    del flat
    sides = {"brute_force": {"memory_bytes": vectors.nbytes, "build_s": 0.0}}
    brute = sides["brute_force"]
    brute["recall_at_10"] = recall_at_k([brute_force_top_k(vectors, query) for query in queries[:20]], exact[:20])
    for batch, count in brute_calls.items():  # 0.1 searched one query per call: a batch is `batch` calls
        brute[f"batch_{batch}"] = latencies(lambda chunk: [brute_force_top_k(vectors, q) for q in chunk], queries,
                                            batch, count)  # fmt: skip
    for kind in ("flat", "hnsw", "ivfpq"):
        sides[kind] = measure_faiss(
            kind, vectors, queries, exact, "float32", brute_calls if kind == "flat" else fast_calls
        )
        measured = sides[kind]
        print(f"  {rows:,} rows {kind}: build {measured['build_s']:.1f} s, recall@10 {measured['recall_at_10']:.3f}, "
              f"batch 1 p50 {1000 * measured['batch_1']['p50_s']:.2f} ms", flush=True)  # fmt: skip
    if storage_variants:
        for storage in ("float16", "bfloat16"):
            sides[f"flat_{storage}"] = measure_faiss("flat", vectors, queries, exact, storage, brute_calls)
            sides[f"hnsw_{storage}"] = measure_faiss("hnsw", vectors, queries, exact, storage, fast_calls)
    return sides


def main() -> None:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = arguments.parse_args()
    sizes = [3_000] if args.toy else args.sizes
    query_count = 64 if args.toy else 256
    results = {}
    for size in sizes:
        large = size >= 1_000_000
        targets = TARGETS[:1] if large or args.toy else TARGETS
        brute_calls = {1: 5, BATCH: 2} if args.toy else ({1: 20, BATCH: 3} if large else {1: 50, BATCH: 5})
        fast_calls = {1: 50, BATCH: 5} if args.toy else {1: 200, BATCH: 20}
        per_target = {}
        for number, target in enumerate(targets):
            print(f"{size:,} rows, target {target}", flush=True)
            per_target[target] = measure_target(size, number, query_count, brute_calls, fast_calls,
                                                storage_variants=number == 0 and not large)  # fmt: skip
        first = per_target[targets[0]]
        brute = first["brute_force"]["batch_1"]["p50_s"]
        summary = {side: {"speedup_batch_1": brute / values["batch_1"]["p50_s"], "recall_at_10": values["recall_at_10"]}
                   for side, values in first.items()}  # fmt: skip
        results[str(size)] = {"targets_measured": list(targets), "targets": per_target, "summary": summary}
        for side, values in summary.items():
            print(f"{size:,} rows {side}: {values['speedup_batch_1']:.1f}x brute force at batch 1, "
                  f"recall@10 {values['recall_at_10']:.3f}")  # fmt: skip
    largest = results[str(sizes[-1])]["summary"]
    met = {side: largest[side]["speedup_batch_1"] >= GOAL_SPEEDUP and largest[side]["recall_at_10"] >= GOAL_RECALL
           for side in ("hnsw", "ivfpq")}  # fmt: skip
    write_result(
        "search_scale",
        {
            "setting": f"synthetic unit vectors, dim {DIMENSION}, around {CENTRES} cluster centres (spread 1.0 per "
            f"dimension); {query_count} held-out queries; top {TOP_K}; FAISS {engine.import_faiss().__version__}; "
            "CPU; latencies are wall-clock p50 / p99 per call, recall against exact search",
            "sizes": results,
            "goal": {"speedup": GOAL_SPEEDUP, "recall_at_10": GOAL_RECALL, "at_rows": sizes[-1]},
            "goal_met_by": met,
            "goal_met": any(met.values()),
            "default_settings": engine.SearchSettings().to_json(),
        },
        args.output,
    )


# ---------------------------------------------------------------- its section of BENCHMARKS.md
SEARCH_SIDES = {"brute_force": "brute force (0.1)", "flat": "FAISS flat (exact)", "hnsw": "FAISS HNSW",
                "ivfpq": "FAISS IVF-PQ + refine", "flat_float16": "flat, float16 storage",
                "flat_bfloat16": "flat, bfloat16 storage", "hnsw_float16": "HNSW, float16 storage",
                "hnsw_bfloat16": "HNSW, bfloat16 storage"}  # fmt: skip


def render(result: dict) -> list[str]:
    headers = ["rows", "side", "build s", "memory MB", "batch 1 p50 / p99 ms", "batch 64 p50 / p99 ms",
               "recall@10", "speed-up at batch 1"]  # fmt: skip
    rows = []
    for size, measured in result["sizes"].items():
        first = measured["targets"][measured["targets_measured"][0]]
        for side, name in SEARCH_SIDES.items():
            if side not in first:
                continue
            values, summary = first[side], measured["summary"][side]
            rows.append([f"{int(size):,}", name, f"{values['build_s']:.1f}", f"{values['memory_bytes'] / 1e6:,.0f}",
                         f"{1000 * values['batch_1']['p50_s']:.2f} / {1000 * values['batch_1']['p99_s']:.2f}",
                         f"{1000 * values['batch_64']['p50_s']:.1f} / {1000 * values['batch_64']['p99_s']:.1f}",
                         f"{values['recall_at_10']:.3f}", f"{summary['speedup_batch_1']:.1f}x"])  # fmt: skip
    goal = result["goal"]
    largest = result["sizes"][str(goal["at_rows"])]["summary"]
    verdicts = [f"{SEARCH_SIDES[side]} {largest[side]['speedup_batch_1']:.0f}x, recall@10 "
                f"{largest[side]['recall_at_10']:.3f} ({'met' if met else 'missed'})"
                for side, met in result["goal_met_by"].items()]  # fmt: skip
    sweeps = []
    for size, measured in result["sizes"].items():
        first = measured["targets"][measured["targets_measured"][0]]
        for side in ("hnsw", "ivfpq"):
            name = first[side]["sweep"]["setting"]
            for row in first[side]["sweep"]["rows"]:
                speedup = brute_force_seconds(measured) / row["batch_1"]["p50_s"]
                sweeps.append([f"{int(size):,}", SEARCH_SIDES[side], f"{name} = {row[name]}",
                               f"{row['recall_at_10']:.3f}", f"{1000 * row['batch_1']['p50_s']:.2f}",
                               f"{1000 * row['batch_64']['p50_s']:.1f}", f"{speedup:.0f}x"])  # fmt: skip
    per_target = []
    for size, measured in result["sizes"].items():
        for target in measured["targets_measured"]:
            sides = measured["targets"][target]
            cells = [f"{sides[side]['build_s']:.1f} s, {sides[side]['recall_at_10']:.3f}"
                     for side in ("flat", "hnsw", "ivfpq")]  # fmt: skip
            per_target.append([f"{int(size):,}", target, *cells])
    return [
        "## 8. Search at scale",
        "",
        f"Setting: {result['setting']}. The brute force is e2-hf 0.1's search (a block scan per query, one query "
        "per call, so a batch of 64 is 64 calls); speed-ups are against it at batch 1, in the same run. Memory: the "
        "FAISS index file (brute force: the float32 vectors). One target per row (the global one); an index holds "
        "5 (global + 4 entities), so its build time and memory are 5x these.",
        "",
        *table(headers, rows, first_column_numeric=True),
        "",
        f"Goal: at {goal['at_rows']:,} rows, approximate search at least {goal['speedup']:.0f}x faster per query "
        f"than brute force with recall@10 >= {goal['recall_at_10']}, at the default settings: "
        + "; ".join(verdicts)
        + f": **{'met' if result['goal_met'] else 'missed'}**.",
        "",
        "The query-time setting of each approximate index, swept on the same index (global target):",
        "",
        *table(
            ["rows", "side", "setting", "recall@10", "batch 1 p50 ms", "batch 64 p50 ms", "speed-up at batch 1"],
            sweeps,
            first_column_numeric=True,
        ),
        "",
        "Per target (build, recall@10 of flat / HNSW / IVF-PQ):",
        "",
        *table(["rows", "target", "flat", "hnsw", "ivfpq"], per_target, first_column_numeric=True),
        "",
        f"Default search settings (these measurements chose them): `{json.dumps(result['default_settings'])}`.",
        "",
    ]


def brute_force_seconds(measured: dict) -> float:
    """Brute force's batch-1 p50 seconds on the first measured target."""
    return measured["targets"][measured["targets_measured"][0]]["brute_force"]["batch_1"]["p50_s"]


if __name__ == "__main__":
    main()
