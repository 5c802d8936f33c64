"""Benchmark 3: full-candidate retrieval metrics, ours vs a per-query sort loop like the reference.

d = 512, random unit embeddings (image i paired with a noisy copy as text i), N = 32,528 (the
FashionGen validation size) and N = 100,000. Ours: tiled matrix products and counting, one
product for both directions, timed with eager and with compiled counting (`retrieval_metrics`
picks one by N), and the compiled count alone on one tile kept in cache (what counting costs
without reading the tiles back from memory); compiling is timed apart, in fresh processes with
an empty and with a warm torch.compile cache (not with --toy). The reference-style loop scores
and sorts all N candidates per query, both directions; it is timed on a subset of queries and
scaled to N (stated in the output). The bare N x N x d matrix product (once; the faster of row
blocks against all columns and our tiles) is the lower bound. Targets: at least 50x faster than
the loop at N = 32,528; ranking at most 1.1x the bare product.

    python benchmarks/bench_retrieval.py
"""

import math
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, parser, write_result  # noqa: E402
from report import heading, table, verdict  # noqa: E402

from e2_hf.evaluation import retrieval_metrics  # noqa: E402
from e2_hf.evaluation.retrieval import COMPILED_COUNTING_FROM, TILE_SIZE, fused_counter  # noqa: E402

TARGET = 50.0
DIMENSION = 512


def paired_embeddings(size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.nn.functional.normalize(torch.randn(size, DIMENSION, generator=generator), dim=-1)
    texts = torch.nn.functional.normalize(images + 0.9 * torch.randn(size, DIMENSION, generator=generator), dim=-1)
    return images, texts


def sort_loop_seconds(images: torch.Tensor, texts: torch.Tensor, queries: int) -> float:
    """Reference style: for each query, score all candidates, sort, find the positive's rank."""
    start = time.perf_counter()
    for index in range(queries):
        for query, candidates in ((images, texts), (texts, images)):
            scores = candidates @ query[index]
            order = torch.argsort(scores, descending=True)
            int((order == index).nonzero()[0])
    return time.perf_counter() - start


def bare_product_by_rows(images: torch.Tensor, texts: torch.Tensor, chunk: int = 1024) -> None:
    """The N x N x d product once (one product serves both directions), row blocks against all columns."""
    for begin in range(0, len(images), chunk):
        images[begin : begin + chunk] @ texts.t()


def bare_product_by_tiles(images: torch.Tensor, texts: torch.Tensor) -> None:
    """The same product in the tiles our ranking uses."""
    for row in range(0, len(images), TILE_SIZE):
        for column in range(0, len(texts), TILE_SIZE):
            images[row : row + TILE_SIZE] @ texts[column : column + TILE_SIZE].t()


def counting_in_cache(size: int) -> None:
    """The compiled count alone, of one tile kept in the CPU cache, as many times as ranking counts tiles."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(TILE_SIZE, TILE_SIZE, generator=generator)
    row_thresholds, column_thresholds = torch.randn(2, TILE_SIZE, generator=generator)
    counter = fused_counter()
    for _ in range(math.ceil(size / TILE_SIZE) ** 2):
        counter(scores, row_thresholds, column_thresholds)


FIRST_COMPILED_CALL = f"""
import time, torch
from e2_hf.evaluation.retrieval import ranks_both_ways
embeddings = torch.randn({TILE_SIZE}, {DIMENSION})
start = time.perf_counter()
ranks_both_ways(embeddings, embeddings, compile_counting=True)
print(time.perf_counter() - start)
"""


def compile_seconds() -> dict[str, float]:
    """The first compiled ranking of one tile in a fresh process: with an empty torch.compile cache, then warm."""
    with tempfile.TemporaryDirectory() as cache:
        environment = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        return {
            state: float(
                subprocess.run(
                    [sys.executable, "-c", FIRST_COMPILED_CALL],
                    env=environment,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.split()[-1]
            )
            for state in ("empty_cache_s", "warm_cache_s")
        }


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    sizes, loop_queries, repeats = ([1_500, 2_500], 20, 1) if args.toy else ([32_528, 100_000], 100, 3)
    compiling = None if args.toy else compile_seconds()  # two fresh processes, one compiling from nothing: ~20 s
    if compiling:
        print(f"compiling the fused counting: {compiling['empty_cache_s']:.1f} s cold, "
              f"{compiling['warm_cache_s']:.1f} s warm")  # fmt: skip
    # compiled here, outside the timings: tiles on and off the diagonal, and the count alone
    retrieval_metrics(*paired_embeddings(2 * TILE_SIZE), compile_counting=True)
    counting_in_cache(TILE_SIZE)
    results = {}
    for size in sizes:
        images, texts = paired_embeddings(size)
        queries = min(loop_queries, size)
        sides = {
            "eager_counting": partial(retrieval_metrics, images, texts, compile_counting=False),
            "compiled_counting": partial(retrieval_metrics, images, texts, compile_counting=True),
            "bare_matmul_rows": partial(bare_product_by_rows, images, texts),
            "bare_matmul_tiles": partial(bare_product_by_tiles, images, texts),
            "compiled_counting_in_cache": partial(counting_in_cache, size),
            "sort_loop_subset": partial(sort_loop_seconds, images, texts, queries),
        }
        timings = interleaved(sides, repeats=repeats, warmup=0)
        default = "compiled_counting" if size >= COMPILED_COUNTING_FROM else "eager_counting"
        ours = timings[default]["median_s"]
        bare = min(timings["bare_matmul_rows"]["median_s"], timings["bare_matmul_tiles"]["median_s"])
        loop = timings["sort_loop_subset"]["median_s"] * size / queries
        results[str(size)] = {
            "default_counting": default,
            "ours_s": ours,
            "bare_matmul_s": bare,
            "sort_loop_s_scaled": loop,
            "sort_loop_queries_timed": queries,
            "speedup_over_sort_loop": loop / ours,
            "ours_over_bare_matmul": ours / bare,
            **{
                f"{side}_over_bare_matmul": timings[side]["median_s"] / bare
                for side in sides
                if side.endswith("_counting")
            },
            "floor_over_bare_matmul": 1 + timings["compiled_counting_in_cache"]["median_s"] / bare,
            "sumr": retrieval_metrics(images, texts)["sumr"],
            "timings": timings,
        }
        print(
            f"N={size}: ours ({default}) {ours:.1f} s, bare product {bare:.1f} s, sort loop ~{loop:.0f} s "
            f"(timed on {queries} queries, scaled): {loop / ours:.0f}x faster, {ours / bare:.2f}x the bare product; "
            f"eager {results[str(size)]['eager_counting_over_bare_matmul']:.2f}x, "
            f"compiled {results[str(size)]['compiled_counting_over_bare_matmul']:.2f}x"
        )
    first = results[str(sizes[0])]["speedup_over_sort_loop"]
    write_result(
        "retrieval",
        {
            "setting": f"d={DIMENSION}, float32, CPU, both directions; medians of {repeats} interleaved runs of the "
            f"three sides; the sort loop is timed on {loop_queries} queries per run and scaled linearly to N",
            "compile_counting_from": COMPILED_COUNTING_FROM,
            "tile_size": TILE_SIZE,
            "compile_first_call": compiling,
            "sizes": results,
            "target_min_speedup_at_32528": TARGET,
            "target_met": first >= TARGET,
        },
        args.output,
    )


# ---------------------------------------------------------------- its section of BENCHMARKS.md
RANKING_COST_GOAL = 1.1  # the counting on top of the N x N x d product


def render(result: dict) -> list[str]:
    headers = ["N", "ours s", "bare N x N x d product s", "per-query sort loop s (scaled)", "speed-up", "ours / bare"]
    rows = [
        [
            f"{int(size):,}",
            f"{row['ours_s']:.1f}",
            f"{row['bare_matmul_s']:.1f}",
            f"{row['sort_loop_s_scaled']:.0f} ({row['sort_loop_queries_timed']} queries timed)",
            f"{row['speedup_over_sort_loop']:.0f}x",
            f"{row['ours_over_bare_matmul']:.2f}x",
        ]  # fmt: skip
        for size, row in result["sizes"].items()
    ]
    return [
        *heading("3. Full-candidate retrieval metrics", result["setting"]),
        *table(headers, rows, first_column_numeric=True),
        "",
        f"Target: at least {result['target_min_speedup_at_32528']:.0f}x faster than the loop at N = 32,528: "
        f"{verdict(result)}.",
        "",
        *profile_lines(result),
    ]


def profile_lines(result: dict) -> list[str]:
    """Where our time goes: the product itself, and counting ranks on top of it, eager and compiled."""
    names = {"eager_counting": "eager", "compiled_counting": "compiled"}
    lines = []
    for size, row in result["sizes"].items():
        seconds = {side: timing["median_s"] for side, timing in row["timings"].items()}
        lines.append(
            f"- N = {int(size):,}: the bare product takes {row['bare_matmul_s']:.1f} s (row blocks "
            f"{seconds['bare_matmul_rows']:.1f} s, our tiles {seconds['bare_matmul_tiles']:.1f} s); "
            f"ranking with eager counting {seconds['eager_counting']:.1f} s "
            f"({row['eager_counting_over_bare_matmul']:.2f}x), with compiled counting "
            f"{seconds['compiled_counting']:.1f} s ({row['compiled_counting_over_bare_matmul']:.2f}x); "
            f"the default at this N counts {names[row['default_counting']]}. The compiled count alone, of a tile "
            f"kept in cache, takes {seconds['compiled_counting_in_cache']:.1f} s: product plus counting without "
            f"reading the tiles back from memory is {row['floor_over_bare_matmul']:.2f}x."
        )
    compiling = result["compile_first_call"]
    compile_time = (
        f"{compiling['empty_cache_s']:.1f} s with an empty torch.compile cache (the first run on a machine), "
        f"{compiling['warm_cache_s']:.1f} s with a warm one"
        if compiling
        else "not measured in a --toy run"
    )
    lines += [
        f"- Compiling the fused counting, once per process: {compile_time}; not in the timings above. "
        f"The default compiles from N = {result['compile_counting_from']:,}.",
    ]
    ratios = ", ".join(
        f"{row['ours_over_bare_matmul']:.2f}x at N = {int(size):,}" for size, row in result["sizes"].items()
    )
    met = all(row["ours_over_bare_matmul"] <= RANKING_COST_GOAL for row in result["sizes"].values())
    lines += [
        "",
        f"Goal: ranking (the default counting) costs at most {RANKING_COST_GOAL}x the bare product: {ratios}: "
        f"**{'met' if met else 'missed'}**.",
    ]
    if not met:
        floor = max(row["floor_over_bare_matmul"] for row in result["sizes"].values())
        spread = max(max(side["runs"]) / min(side["runs"]) - 1 for row in result["sizes"].values()
                     for side in row["timings"].values())  # fmt: skip
        lines += [
            "",
            f"What remains: counting itself costs at most {floor:.2f}x with the compiled kernel (a tile in "
            "cache); the rest is handing each freshly computed tile from the matrix product to the counting "
            "kernel. Only a matrix product that counts as it writes its output (the count fused into its "
            "epilogue) would remove it, and PyTorch's CPU product offers none. The runs of one side on this "
            f"shared 2-core machine differ by up to {100 * spread:.0f}%, more than the goal's margin.",
        ]
    return lines + [""]


if __name__ == "__main__":
    main()
