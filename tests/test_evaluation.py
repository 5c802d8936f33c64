"""Evaluation: region retrieval, linear probes, `e2-hf evaluate` and the `evaluate` metric module."""

import json
import subprocess
import sys

import pytest
import torch

from e2_hf.evaluation import (
    distinct_tags,
    linear_probe_accuracy,
    region_retrieval_metrics,
    retrieval_metrics,
    tag_value_matrix,
)
from e2_hf.evaluation.retrieval import TIE_TOLERANCE, FusedCounter, ranks_both_ways
from e2_hf.metrics import metric_path

from .conftest import catalog_with_a_broken_image


def ranks_from_the_whole_matrix(queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Other candidates scoring at least the positive (ties against it), from the untiled score matrix."""
    scores = queries @ candidates.t()
    positives = scores.diagonal().clone()
    scores.fill_diagonal_(float("-inf"))
    return (scores >= positives[:, None] - TIE_TOLERANCE).sum(dim=1)


@pytest.mark.parametrize("compile_counting", [False, True], ids=["eager", "compiled"])
def test_tiled_ranks_equal_the_whole_matrix_in_both_directions(compile_counting):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(150, 16, generator=generator)
    texts = images + 2 * torch.randn(150, 16, generator=generator)
    texts[7] = texts[3]  # exact ties across tiles
    image_ranks, text_ranks = ranks_both_ways(
        images, texts, chunk_size=32, column_chunk=64, compile_counting=compile_counting
    )  # 150 is no multiple of either: full tiles and edge tiles
    assert torch.equal(image_ranks, ranks_from_the_whole_matrix(images, texts))
    assert torch.equal(text_ranks, ranks_from_the_whole_matrix(texts, images))
    assert 0 < int((image_ranks > 0).sum()) < 150  # some positives win, some lose


def test_fused_counting_falls_back_to_eager_when_it_cannot_compile(monkeypatch, caplog):
    def no_compiler(*args):
        raise RuntimeError("no C++ compiler")

    counter = FusedCounter()
    monkeypatch.setattr(counter, "compiled", no_compiler)
    scores, thresholds = torch.tensor([[0.5, 0.1], [0.9, 0.3]]), torch.tensor([0.2, 0.4])
    with caplog.at_level("WARNING"):
        row_counts, column_counts = counter(scores, thresholds, thresholds)
    assert row_counts.tolist() == [1, 1] and column_counts.tolist() == [2, 0]
    assert counter.failed and "no C++ compiler" in caplog.text


def test_region_retrieval_on_planted_embeddings():
    tags = ["Gucci", "Prada", None, "Gucci", "Zara"]
    names, labels, present = distinct_tags(tags)
    assert names == ["Gucci", "Prada", "Zara"] and labels.tolist() == [0, 1, -1, 0, 2]
    tag_embeds = torch.eye(3, 4)
    regions = tag_embeds[labels.clamp_min(0)] + 0.01 * torch.randn(5, 4)  # each item near its tag
    metrics = region_retrieval_metrics(regions, tag_embeds, labels)
    assert metrics["image_to_tag"]["R@1"] == 100.0 and metrics["tag_to_image"]["R@1"] == 100.0
    assert metrics["items"] == 4 and metrics["distinct_tags"] == 3
    swapped = region_retrieval_metrics(regions, tag_embeds[[1, 2, 0]], labels)  # wrong texts
    assert swapped["image_to_tag"]["R@1"] == 0.0


def test_region_retrieval_with_multi_value_tags_counts_any_carried_value():
    names, carried = tag_value_matrix([("Cool", "Spring"), (), ("Spring",), ("Windy", "Cool")])
    assert names == ["Cool", "Spring", "Windy"]
    assert carried.tolist() == [[True, True, False], [False, False, False], [False, True, False], [True, False, True]]
    tag_embeds = torch.eye(3, 4)
    regions = tag_embeds[[1, 0, 1, 2]]  # each item (but the untagged one) on one of its own values
    metrics = region_retrieval_metrics(regions, tag_embeds, carried)
    assert metrics["items"] == 3 and metrics["distinct_tags"] == 3
    assert metrics["image_to_tag"]["R@1"] == 100.0
    assert metrics["tag_to_image"]["R@1"] == pytest.approx(200 / 3)  # no carrier of Cool looks like Cool
    as_one_label = region_retrieval_metrics(regions, tag_embeds, torch.tensor([0, -1, 1, 0]))  # first value only
    assert as_one_label["image_to_tag"]["R@1"] < 100.0  # the multi-value reading is what credits item 0


def test_linear_probe_learns_a_planted_label_and_not_noise():
    generator = torch.Generator().manual_seed(0)
    labels = [f"class {i % 4}" for i in range(200)]
    centres = torch.randn(4, 16, generator=generator)
    features = centres[torch.tensor([i % 4 for i in range(200)])] + 0.3 * torch.randn(200, 16, generator=generator)
    assert linear_probe_accuracy(features, labels)["accuracy"] > 95
    noise = torch.randn(200, 16, generator=generator)
    assert linear_probe_accuracy(noise, labels)["accuracy"] < 50


def test_evaluate_command(e2_model_dir, catalog, tmp_path):
    model_dir = e2_model_dir
    output = tmp_path / "metrics.json"
    data = f"jsonl:{catalog / 'catalog.jsonl'}"
    for protocol in ("full", "sample100"):
        command = [
            sys.executable,
            "-m",
            "e2_hf.cli",
            "evaluate",
            "--model",
            str(model_dir),
            "--data",
            data,
            "--protocol",
            protocol,
            "--queries",
            "20",
            "--seeds",
            "2",
            "--output",
            str(output),
            "--regions",
            "--linear-probe",
        ]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert completed.returncode == 0, completed.stderr[-3000:]
        results = json.loads(output.read_text())
        assert set(results[protocol]["image_to_text"]) == {"R@1", "R@5", "R@10"}
        assert f"| {protocol} | image_to_text |" in completed.stdout
        assert (
            set(results["region"]) == set(results["linear_probe"]) == {"brand", "season", "subcategory", "composition"}
        )


def test_evaluate_metric_module_loads_offline_by_path():
    evaluate = pytest.importorskip("evaluate")
    metric = evaluate.load(metric_path("retrieval_recall"))
    generator = torch.Generator().manual_seed(0)
    images, texts = torch.randn(30, 8, generator=generator), torch.randn(30, 8, generator=generator)
    result = metric.compute(predictions=images.tolist(), references=texts.tolist())
    expected = retrieval_metrics(images, texts)
    assert result["query_to_candidate_R@5"] == pytest.approx(expected["image_to_text"]["R@5"])
    assert result["candidate_to_query_R@1"] == pytest.approx(expected["text_to_image"]["R@1"])
    assert result["sumr"] == pytest.approx(expected["sumr"])


def test_the_metric_module_and_evaluate_agree_on_data_with_ties():
    """Exact ties (repeated products) and near-ties (the same vector scaled: equal after normalising,
    up to float rounding) rank ahead of the positive in both, as the whole-matrix count says."""
    evaluate = pytest.importorskip("evaluate")
    generator = torch.Generator().manual_seed(1)
    texts = torch.randn(12, 8, generator=generator)
    texts = torch.cat([texts, texts[:4], 3.7 * texts[4:8]])  # rows 12-19 repeat rows 0-7
    images = texts + 0.05 * torch.randn(texts.shape, generator=generator)
    images[12:16] = images[:4]  # repeated images too
    normalised = [torch.nn.functional.normalize(side, dim=-1) for side in (images, texts)]
    image_ranks = ranks_from_the_whole_matrix(*normalised)
    assert (image_ranks > 0).sum() >= 8  # the ties are there, and each costs its positive a rank
    expected = retrieval_metrics(images, texts, ks=(1, 2, 5))
    assert expected["image_to_text"]["R@1"] == pytest.approx(100.0 * float((image_ranks < 1).float().mean()))
    result = evaluate.load(metric_path("retrieval_recall")).compute(
        predictions=images.tolist(), references=texts.tolist(), ks=[1, 2, 5]
    )
    for k in (1, 2, 5):
        assert result[f"query_to_candidate_R@{k}"] == pytest.approx(expected["image_to_text"][f"R@{k}"])
        assert result[f"candidate_to_query_R@{k}"] == pytest.approx(expected["text_to_image"][f"R@{k}"])


@pytest.mark.parametrize("num_workers", [0, 1])
def test_embedding_stops_at_an_unreadable_image_with_its_file_and_row(e2_model_dir, tmp_path, num_workers):
    from e2_hf import E2CLIPModel, E2CLIPProcessor
    from e2_hf.data import ImageLoadError, open_catalog
    from e2_hf.evaluation.embedding import embed_catalog

    spec = catalog_with_a_broken_image(tmp_path)
    model, processor = E2CLIPModel.from_pretrained(e2_model_dir).eval(), E2CLIPProcessor.from_pretrained(e2_model_dir)
    with pytest.raises(ImageLoadError) as raised:
        embed_catalog(model, processor, open_catalog(spec), num_workers=num_workers)
    assert str(raised.value).startswith("catalog.jsonl row 2, view 0: unreadable image")
    assert "Traceback" not in str(raised.value)
