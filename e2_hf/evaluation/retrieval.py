"""Retrieval metrics: the full-candidate protocol (every product is a candidate) and sample-100
(the positive against 100 candidates of the query's sub-category).

Ranks come from tiled matrix products and counting: memory is one tile of scores, never a
per-query sort, and one product serves both directions. Tie rule: a candidate
scoring as the positive (within float rounding, `TIE_TOLERANCE`) ranks ahead of it (the positive
does not win a tie), so a degenerate model cannot score well by giving equal scores.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

DIRECTIONS = ("image_to_text", "text_to_image")
TIE_TOLERANCE = 1e-6  # scores this close to the positive's count as ties (float rounding)
# From this many products, ranking compiles its counting (`FusedCounter`): about where the time the
# fused count saves equals the warm compile, which a process pays once however often it evaluates
# (both measured in BENCHMARKS.md, section 3).
COMPILED_COUNTING_FROM = 40_000
TILE_SIZE = 1024  # rows and columns of one score tile: 4 MiB of float32

logger = logging.getLogger(__name__)


def count_at_least(
    scores: torch.Tensor, row_thresholds: torch.Tensor, column_thresholds: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores `[rows, columns]` reaching their row's threshold, per row, and their column's, per column."""
    return (scores >= row_thresholds[:, None]).sum(dim=1), (scores >= column_thresholds[None, :]).sum(dim=0)


class FusedCounter:
    """`count_at_least` as one compiled kernel that reads each score once for both directions.

    Eager PyTorch writes a boolean tile per comparison and reads it back to sum it; the fused kernel
    reads each score once. What ranking costs against the bare product, eager and fused, and what the
    kernel itself costs, are measured in BENCHMARKS.md, section 3: most of what remains is handing
    each fresh tile from the matrix product to the kernel, which only a product with the count fused
    into it would avoid. Building it needs torch.compile's toolchain (a C++ compiler on CPU); where
    that fails the same count runs eagerly.
    """

    def __init__(self) -> None:
        self.compiled = torch.compile(count_at_least, dynamic=False)
        self.failed = False

    def __call__(self, scores, row_thresholds, column_thresholds) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.failed:
            try:
                return self.compiled(scores, row_thresholds, column_thresholds)
            except Exception as error:  # a compiler failure of any kind: the eager count is the same computation
                self.failed = True
                logger.warning("torch.compile could not build the fused rank counting (%s); counting eagerly", error)
        return count_at_least(scores, row_thresholds, column_thresholds)


@functools.cache
def fused_counter() -> FusedCounter:
    return FusedCounter()


def ranks_both_ways(
    images: torch.Tensor,
    texts: torch.Tensor,
    chunk_size: int = TILE_SIZE,
    column_chunk: int = TILE_SIZE,
    tolerance: float = TIE_TOLERANCE,
    compile_counting: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """0-based rank of the positive for every image (among texts) and every text (among images).

    One pass over tiles `images[rows] @ texts[columns].T` serves both directions: row counts give
    the image ranks, column counts the text ranks. rank = number of *other* candidates scoring at
    least the positive's score minus `tolerance` (ties, up to float rounding, count against the
    positive). Memory is one tile of `chunk_size x column_chunk` scores. `compile_counting` counts
    each full tile with one compiled kernel (`FusedCounter`); None compiles from
    `COMPILED_COUNTING_FROM` products, where it repays its compile time. The ranks are the same
    either way.
    """
    count = images.shape[0]
    if compile_counting is None:
        compile_counting = count >= COMPILED_COUNTING_FROM
    full_tile = (chunk_size, column_chunk)
    thresholds = (images * texts).sum(dim=-1) - tolerance  # [N]: positive score of item i, minus the tolerance
    image_ranks = torch.zeros(count, dtype=torch.long, device=images.device)
    text_ranks = torch.zeros(count, dtype=torch.long, device=images.device)
    for row in range(0, count, chunk_size):
        row_end = min(row + chunk_size, count)
        for column in range(0, count, column_chunk):
            column_end = min(column + column_chunk, count)
            scores = images[row:row_end] @ texts[column:column_end].t()  # [rows, columns]
            first, last = max(row, column), min(row_end, column_end)
            if first < last:  # this tile holds some positives: leave them out
                diagonal = torch.arange(first, last, device=images.device)
                scores[diagonal - row, diagonal - column] = float("-inf")
            # edge tiles are counted eagerly, so the compiled kernel has one shape to build
            counter = fused_counter() if compile_counting and scores.shape == full_tile else count_at_least
            row_counts, column_counts = counter(scores, thresholds[row:row_end], thresholds[column:column_end])
            image_ranks[row:row_end] += row_counts
            text_ranks[column:column_end] += column_counts
    return image_ranks.cpu(), text_ranks.cpu()


def positive_ranks(queries: torch.Tensor, candidates: torch.Tensor, chunk_size: int = TILE_SIZE) -> torch.Tensor:
    """0-based rank of candidate i for query i, for every i: `[N]` (see `ranks_both_ways`)."""
    return ranks_both_ways(queries, candidates, chunk_size)[0]


def recalls(ranks: torch.Tensor, ks: Sequence[int]) -> dict[str, float]:
    return {f"R@{k}": 100.0 * float((ranks < k).float().mean()) for k in ks}


def retrieval_metrics(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = TILE_SIZE,
    compile_counting: bool | None = None,
) -> dict:
    """Full-candidate protocol: row i of each matrix is one product. Recalls in percent.
    `compile_counting`: see `ranks_both_ways`.

    Returns `{"image_to_text": {"R@1", ...}, "text_to_image": {...}, "sumr"}`.
    """
    if image_embeds.shape[0] != text_embeds.shape[0]:
        raise ValueError(f"{image_embeds.shape[0]} images but {text_embeds.shape[0]} texts: row i must match row i")
    images = F.normalize(image_embeds.float(), dim=-1)
    texts = F.normalize(text_embeds.float(), dim=-1)
    image_ranks, text_ranks = ranks_both_ways(images, texts, chunk_size, compile_counting=compile_counting)
    metrics = {"image_to_text": recalls(image_ranks, ks), "text_to_image": recalls(text_ranks, ks)}
    metrics["sumr"] = sum(value for direction in DIRECTIONS for value in metrics[direction].values())
    return metrics


def sample100_candidates(
    subcategories: Sequence[str], query: int, num_negatives: int, rng: np.random.Generator
) -> np.ndarray:
    """The positive (first) plus `num_negatives` others of the same sub-category, topped up at
    random from other sub-categories when there are too few."""
    labels = np.asarray(subcategories)
    same = np.flatnonzero((labels == labels[query]) & (np.arange(len(labels)) != query))
    others = np.flatnonzero(labels != labels[query])
    if len(same) >= num_negatives:
        negatives = rng.choice(same, num_negatives, replace=False)
    else:
        top_up = rng.choice(others, min(num_negatives - len(same), len(others)), replace=False)
        negatives = np.concatenate([same, top_up])
    return np.concatenate([[query], negatives]).astype(np.int64)


def sample100_metrics(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    subcategories: Sequence[str],
    num_negatives: int = 100,
    queries: int = 1000,
    seeds: int = 5,
    ks: Sequence[int] = (1, 5, 10),
) -> dict:
    """Sample-100 protocol: per query, the positive and 100 same-sub-category negatives; recalls
    averaged over `seeds` draws of `queries` random queries (all items when fewer)."""
    images = F.normalize(image_embeds.float(), dim=-1)
    texts = F.normalize(text_embeds.float(), dim=-1)
    count = images.shape[0]
    per_seed = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        chosen = rng.choice(count, min(queries, count), replace=False)
        ranks = {direction: [] for direction in DIRECTIONS}
        for query in chosen:
            candidates = torch.from_numpy(sample100_candidates(subcategories, int(query), num_negatives, rng))
            for direction, (query_side, candidate_side) in zip(DIRECTIONS, ((images, texts), (texts, images))):
                scores = candidate_side[candidates] @ query_side[query]  # [1 + negatives]
                ranks[direction].append(int((scores[1:] >= scores[0] - TIE_TOLERANCE).sum()))
        per_seed.append({direction: recalls(torch.tensor(values), ks) for direction, values in ranks.items()})
    metrics = {
        direction: {key: float(np.mean([run[direction][key] for run in per_seed])) for key in per_seed[0][direction]}
        for direction in DIRECTIONS
    }
    metrics["sumr"] = sum(value for direction in DIRECTIONS for value in metrics[direction].values())
    return metrics
