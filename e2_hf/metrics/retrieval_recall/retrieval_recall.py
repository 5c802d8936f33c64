"""Recall@K for cross-modal retrieval, as an `evaluate` metric (loads offline by path).

    import evaluate
    recall = evaluate.load("path/to/e2_hf/metrics/retrieval_recall")
    recall.compute(predictions=image_embeddings, references=text_embeddings, ks=[1, 5, 10])

Row i of `predictions` (query-side embeddings, e.g. images) matches row i of `references`
(candidate-side embeddings, e.g. texts). Both directions are ranked by cosine similarity with
e2-hf's own ranking (`e2_hf.evaluation.retrieval_metrics`, the one `e2-hf evaluate` uses): a
candidate scoring as the positive, up to float rounding, ranks ahead of it (the positive does not
win a tie). Returns recalls in percent for both directions and their sum.
"""

import datasets
import evaluate
import torch

from e2_hf.evaluation import retrieval_metrics

_DESCRIPTION = "Recall@K of cross-modal retrieval (full-candidate protocol) from paired embeddings."
_KWARGS_DESCRIPTION = """
Args:
    predictions: query-side embeddings, one list of floats per item.
    references: candidate-side embeddings, one list of floats per item; row i matches row i.
    ks: the K values (default [1, 5, 10]).
    chunk_size: rows and columns of one score tile (bounds memory to chunk_size^2 scores).
Returns:
    query_to_candidate_R@K, candidate_to_query_R@K (percent) and sumr.
"""
_CITATION = "E2: Easy Regional Contrastive Learning of Expressive Fashion Representations (NeurIPS 2024)."
# this metric's names of retrieval_metrics' directions
_DIRECTION_NAMES = {"image_to_text": "query_to_candidate", "text_to_image": "candidate_to_query"}


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
        queries = torch.tensor(predictions, dtype=torch.float32)
        candidates = torch.tensor(references, dtype=torch.float32)
        if queries.shape != candidates.shape:
            raise ValueError(
                f"predictions {tuple(queries.shape)} and references {tuple(candidates.shape)} must pair row by row"
            )
        metrics = retrieval_metrics(queries, candidates, ks, chunk_size)
        results = {f"{name}_{key}": value for direction, name in _DIRECTION_NAMES.items()
                   for key, value in metrics[direction].items()}  # fmt: skip
        results["sumr"] = metrics["sumr"]
        return results
