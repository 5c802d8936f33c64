"""Zero-shot tagging per entity: the function, its accuracy measure and `e2-hf tag`."""

import json
import subprocess
import sys

import pytest
import torch

from e2_hf import E2CLIPModel, E2CLIPProcessor
from e2_hf.data import open_catalog
from e2_hf.evaluation.embedding import CatalogEmbeddings, embed_texts
from e2_hf.tagging import (
    candidate_embeddings,
    catalog_candidates,
    check_candidates,
    tagging_accuracy,
    zero_shot_tags,
)

from .conftest import make_images


@pytest.fixture(scope="module")
def model_and_processor(e2_model_dir):
    return E2CLIPModel.from_pretrained(e2_model_dir).eval(), E2CLIPProcessor.from_pretrained(e2_model_dir)


CANDIDATES = {"brand": ["Gucci", "Prada", "Zara"], "season": ["FW2016", "SS2017"]}


def test_tags_rank_the_candidates_by_the_entitys_regional_embedding(model_and_processor):
    model, processor = model_and_processor
    images = make_images(3)
    predictions = zero_shot_tags(model, processor, images, CANDIDATES)
    with torch.no_grad():
        regions = model(pixel_values=processor(images=images)["pixel_values"]).region_embeds
    for entity, tags in CANDIDATES.items():
        expected = regions[:, model.config.entities.index(entity)] @ embed_texts(model, processor, tags).T
        for row, prediction in enumerate(predictions):
            ranked = [score.tag for score in prediction[entity]]
            assert ranked == [tags[i] for i in expected[row].argsort(descending=True).tolist()]
            assert sum(score.probability for score in prediction[entity]) == pytest.approx(1.0, abs=1e-5)
            assert prediction[entity][0].similarity == pytest.approx(expected[row].max().item(), abs=1e-5)
    top_one = zero_shot_tags(model, processor, images, CANDIDATES, top_k=1, source="global")
    assert all(len(prediction["brand"]) == 1 for prediction in top_one)
    reused = zero_shot_tags(
        model, processor, images, CANDIDATES, tag_embeds=candidate_embeddings(model, processor, CANDIDATES)
    )
    assert reused == predictions


def test_candidates_are_checked():
    entities = ["brand", "season"]
    with pytest.raises(ValueError, match="unknown entities \\['colour'\\]"):
        check_candidates({"colour": ["red"]}, entities)
    with pytest.raises(ValueError, match="non-empty list"):
        check_candidates({"brand": []}, entities)
    with pytest.raises(ValueError, match="repeat a tag"):
        check_candidates({"brand": ["Gucci", "Gucci "]}, entities)


def test_accuracy_is_100_for_planted_regions_and_compares_with_the_global_embedding(model_and_processor, catalog):
    model, processor = model_and_processor
    catalog_view = open_catalog(f"jsonl:{catalog / 'catalog.jsonl'}")
    entities = model.config.entities
    candidates = catalog_candidates(catalog_view, entities)
    brands = candidates["brand"]
    brand_embeds = embed_texts(model, processor, brands)
    truth = torch.tensor([brands.index(tag) for tag in catalog_view.tag_values("brand")])
    generator = torch.Generator().manual_seed(0)
    regions = torch.randn(len(catalog_view), len(entities), brand_embeds.shape[1], generator=generator)
    regions[:, entities.index("brand")] = brand_embeds[truth]  # each brand region is its tag's text embedding
    planted = CatalogEmbeddings(
        image_embeds=torch.randn(len(catalog_view), brand_embeds.shape[1], generator=generator),
        text_embeds=torch.zeros(0),
        region_embeds=regions,
        catalog=catalog_view,
        entities=entities,
    )
    results = tagging_accuracy(model, processor, planted)
    assert set(results) == set(candidates)
    assert results["brand"]["region"] == 100.0 and results["brand"]["items"] == len(catalog_view)
    assert results["brand"]["global"] < 50.0  # random global embeddings
    assert results["brand"]["candidates"] == len(brands) and results["brand"]["chance"] == pytest.approx(
        100 / len(brands)
    )
    only_two = tagging_accuracy(model, processor, planted, {"brand": brands[:2]})
    assert only_two["brand"]["items"] == int((truth < 2).sum()) and only_two["brand"]["region"] == 100.0


def run_cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "e2_hf.cli", "tag", *arguments], capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def test_tag_command_on_images_and_on_a_catalog(e2_model_dir, catalog, tmp_path):
    image = tmp_path / "item.png"
    make_images(1)[0].save(image)
    candidates = tmp_path / "candidates.json"
    candidates.write_text(json.dumps(CANDIDATES))
    output = tmp_path / "tags.json"
    completed = run_cli("--model", str(e2_model_dir), "--image", str(image), "--candidates", str(candidates),
                        "--top-k", "2", "--output", str(output))  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "  brand: " in completed.stdout and "  season: " in completed.stdout
    tags = json.loads(output.read_text())[0]["tags"]
    assert len(tags["brand"]) == 2 and {score["tag"] for score in tags["season"]} == set(CANDIDATES["season"])

    completed = run_cli("--model", str(e2_model_dir), "--data", f"jsonl:{catalog / 'catalog.jsonl'}:validation",
                        "--entity", "brand", "--entity", "season", "--output", str(output))  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    accuracy = json.loads(output.read_text())["accuracy"]
    assert set(accuracy) == {"brand", "season"}
    assert all(0 <= accuracy[entity][source] <= 100 for entity in accuracy for source in ("region", "global"))
    assert "| brand |" in completed.stdout

    missing = run_cli("--model", str(e2_model_dir), "--image", str(image))
    assert missing.returncode != 0 and "--image needs --candidates" in missing.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('["Gucci"]')
    wrong = run_cli("--model", str(e2_model_dir), "--image", str(image), "--candidates", str(bad))
    assert wrong.returncode != 0 and "must hold an object of lists" in wrong.stderr


def test_search_precision_counts_the_tag_carriers_among_the_top_items():
    from e2_hf.tagging import search_precision

    truth = torch.tensor([0, 0, 1, 1, 1, 2])
    perfect = torch.nn.functional.one_hot(truth, 3).float()  # each item scores 1 for its own tag
    assert search_precision(perfect, truth, top_k=10) == 100.0
    swapped = perfect[:, [1, 0, 2]]  # tags 0 and 1 find each other's items
    assert search_precision(swapped, truth, top_k=2) == pytest.approx(100 * (0 + 0 + 1) / 3)
    assert search_precision(perfect, torch.zeros(6, dtype=torch.long), top_k=3) == 100.0  # tags 1, 2: no carriers
