"""Recall@K for cross-modal retrieval, as an `evaluate` metric (loads offline by path).

    import evaluate
    recall = evaluate.load("path/to/e2_hf/metrics/retrieval_recall")
    recall.compute(predictions=image_embeddings, references=text_embeddings, ks=[1, 5, 10])

Row i of `predictions` (query-side embeddings, e.g. images) matches row i of `references`
(candidate-side embeddings, e.g. texts). Both directions are ranked by cosine similarity; a
candidate scoring exactly as the positive ranks ahead of it (the positive does not win a tie).
Returns recalls in percent for both directions and their sum.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Recall@K of cross-modal retrieval (full-candidate protocol) from paired embeddings."
_KWARGS_DESCRIPTION = """
Args:
    predictions: query-side embeddings, one list of floats per item.
    references: candidate-side embeddings, one list of floats per item; row i matches row i.
    ks: the K values (default [1, 5, 10]).
    chunk_size: queries ranked at once (bounds memory to chunk_size x N scores).
Returns:
    query_to_candidate_R@K, candidate_to_query_R@K (percent) and sumr.
"""
_CITATION = "E2: Easy Regional Contrastive Learning of Expressive Fashion Representations (NeurIPS 2024)."


def _normalise(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def _positive_ranks(queries: np.ndarray, candidates: np.ndarray, chunk_size: int) -> np.ndarray:
    ranks = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk_size):
        end = min(start + chunk_size, len(queries))
        scores = queries[start:end] @ candidates.T  # [chunk, N]
        positive = scores[np.arange(end - start), np.arange(start, end)][:, None]
        ranks[start:end] = (scores >= positive).sum(axis=1) - 1
    return ranks


class RetrievalRecall(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("float32")),
                }
            ),
        )

    def _compute(self, predictions, references, ks=(1, 5, 10), chunk_size=1024):
        queries = _normalise(np.asarray(predictions, dtype=np.float32))
        candidates = _normalise(np.asarray(references, dtype=np.float32))
        if queries.shape != candidates.shape:
            raise ValueError(f"predictions {queries.shape} and references {candidates.shape} must pair row by row")
        results = {}
        for name, (left, right) in {"query_to_candidate": (queries, candidates),
                                    "candidate_to_query": (candidates, queries)}.items():  # fmt: skip
            ranks = _positive_ranks(left, right, chunk_size)
            for k in ks:
                results[f"{name}_R@{k}"] = 100.0 * float((ranks < k).mean())
        results["sumr"] = sum(results.values())
        return results
