"""The embedding index (round trip, incremental adds), entity-aware search and its PNG / HTML output."""

import importlib.util
import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from e2_hf import E2CLIPModel, E2CLIPProcessor, from_clip
from e2_hf.data import open_catalog
from e2_hf.evaluation.embedding import embed_catalog
from e2_hf.search import (
    EmbeddingIndex,
    EmbeddingIndexError,
    IndexItem,
    add_catalog,
    model_fingerprint,
    open_or_create_index,
    search_embedding,
    search_text,
    text_query_embedding,
)

from .browser import chromium_page
from .conftest import catalog_with_a_broken_image


def run_cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "e2_hf.cli", *arguments], capture_output=True, text=True, timeout=600)


# the stores the search tests run on: the index folder, and a Milvus Lite file where the milvus extra
# is installed (tests/test_milvus.py compares them, and a Milvus server, on the commands)
STORES = ["folder", pytest.param("milvus-lite", marks=pytest.mark.skipif(
    importlib.util.find_spec("milvus_lite") is None, reason="the milvus extra is not installed"))]  # fmt: skip


def new_store(kind: str, path, *arguments):
    """An empty index at `path`: a folder, or a Milvus Lite file `path.db` (`EmbeddingIndex.create`'s arguments)."""
    if kind == "folder":
        return EmbeddingIndex.create(path, *arguments)
    from e2_hf.search.milvus import MilvusIndex

    return MilvusIndex.create(f"milvus-lite:{path}.db", *arguments)


def store_address(kind: str, path) -> str:
    return str(path) if kind == "folder" else f"milvus-lite:{path}.db"


@pytest.fixture(scope="module")
def model_and_processor(e2_model_dir):
    return E2CLIPModel.from_pretrained(e2_model_dir).eval(), E2CLIPProcessor.from_pretrained(e2_model_dir)


@pytest.fixture(scope="module")
def cli_index(e2_model_dir, catalog, tmp_path_factory):
    """Built with the command in two steps: the training products, then the validation products added."""
    folder = tmp_path_factory.mktemp("index") / "index"
    for split in ("train", "validation"):
        data = f"jsonl:{catalog / 'catalog.jsonl'}:{split}"
        completed = run_cli("index", "--model", str(e2_model_dir), "--data", data, "--output", str(folder),
                            "--thumbnail-size", "48", "--batch-size", "16")  # fmt: skip
        assert completed.returncode == 0, completed.stderr[-3000:]
        assert re.search(r"added \d+ products; the index has \d+", completed.stdout)
    return folder


def read_regions(index: EmbeddingIndex) -> np.ndarray:
    """`[rows, entities, dim]`: each entity's regional embeddings, stored apart, side by side."""
    return np.stack([index.read_all(index.tensor_name(entity)) for entity in index.entities], axis=1)


def by_product_id(index: EmbeddingIndex) -> dict[str, tuple]:
    images, regions = index.read_all("image_embeds"), read_regions(index)
    return {item.product_id: (images[item.row], regions[item.row], item.description, item.tags) for item in index.items}


def test_index_round_trips_the_models_embeddings(model_and_processor, catalog, cli_index):
    model, processor = model_and_processor
    index = EmbeddingIndex(cli_index)
    region_tensors = {f"region_embeds.{entity}" for entity in model.config.entities}  # each entity contiguous
    assert all(set(shard.keys()) == {"image_embeds", "thumbnails", *region_tensors} for shard in index.shards)
    assert len(index.metadata["shards"]) == 2 and index.entities == model.config.entities
    files = index.metadata["search"]["files"]  # one committed FAISS index per target, holding every row
    assert [recorded["type"] for recorded in files] == ["flat"] * 5 and all(f["rows"] == 50 for f in files)
    stored = by_product_id(index)
    for split in ("train", "validation"):
        expected = embed_catalog(model, processor, open_catalog(f"jsonl:{catalog / 'catalog.jsonl'}:{split}"))
        for row, product in enumerate(expected.catalog.products):
            image, region, description, tags = stored[product.product_id]
            np.testing.assert_allclose(image, expected.image_embeds[row].numpy(), atol=1e-5)
            np.testing.assert_allclose(region, expected.region_embeds[row].numpy(), atol=1e-5)
            assert description == product.description and tags == product.tags
    assert index.thumbnail(0).shape == (48, 48, 3) and index.thumbnail(0).dtype == np.uint8


def test_incremental_add_equals_a_rebuild(model_and_processor, catalog, cli_index, tmp_path):
    model, processor = model_and_processor
    rebuilt = open_or_create_index(tmp_path / "rebuilt", model, "e2", thumbnail_size=48)
    report = add_catalog(rebuilt, model, processor, f"jsonl:{catalog / 'catalog.jsonl'}", batch_size=7)
    assert report.added == report.total == 50
    incremental, rebuilt = by_product_id(EmbeddingIndex(cli_index)), by_product_id(EmbeddingIndex(rebuilt.folder))
    assert incremental.keys() == rebuilt.keys()
    for product_id, (image, region, description, tags) in rebuilt.items():
        np.testing.assert_allclose(incremental[product_id][0], image, atol=1e-5)
        np.testing.assert_allclose(incremental[product_id][1], region, atol=1e-5)
        assert incremental[product_id][2:] == (description, tags)
    thumbnails = {item.product_id: EmbeddingIndex(tmp_path / "rebuilt").thumbnail(item.row)
                  for item in EmbeddingIndex(tmp_path / "rebuilt").items}  # fmt: skip
    index = EmbeddingIndex(cli_index)
    for item in index.items:
        assert np.array_equal(index.thumbnail(item.row), thumbnails[item.product_id])


def test_adding_products_twice_is_refused_unless_skipped(model_and_processor, catalog, tmp_path):
    model, processor = model_and_processor
    index = open_or_create_index(tmp_path / "index", model, "e2", thumbnail_size=16)
    train, everything = f"jsonl:{catalog / 'catalog.jsonl'}:train", f"jsonl:{catalog / 'catalog.jsonl'}"
    first = add_catalog(index, model, processor, train)
    with pytest.raises(EmbeddingIndexError, match="already in .*--skip-existing"):
        add_catalog(index, model, processor, everything)
    assert len(index) == first.added  # nothing half-added
    second = add_catalog(index, model, processor, everything, skip_existing=True)
    assert second.skipped_existing == first.added and second.total == 50 == len(EmbeddingIndex(index.folder))


@pytest.mark.parametrize("kind", STORES)
def test_an_index_refuses_another_model(model_and_processor, small_clip, tmp_path, kind):
    model = model_and_processor[0]
    address = store_address(kind, tmp_path / "index")
    open_or_create_index(address, model, "e2", thumbnail_size=16).close()
    other = from_clip(str(small_clip), fusion_layers=[1, 2])  # new random E2 weights
    assert model_fingerprint(other) != model_fingerprint(model)
    with pytest.raises(EmbeddingIndexError, match="built with another model"):
        open_or_create_index(address, other, "other")


def test_an_interrupted_add_leaves_the_committed_index_intact(model_and_processor, catalog, tmp_path):
    model, processor = model_and_processor
    index = open_or_create_index(tmp_path / "index", model, "e2", thumbnail_size=16)
    add_catalog(index, model, processor, f"jsonl:{catalog / 'catalog.jsonl'}:train")
    committed = len(index)
    with open(index.folder / "items.jsonl", "a", encoding="utf-8") as handle:  # what a crash mid-add leaves
        handle.write(json.dumps({"product_id": "x", "description": "x", "tags": {}, "source": "x"}) + "\n")
    (index.folder / "shard-00099.safetensors").write_bytes(b"partial")
    (index.folder / "faiss-00099-0.index").write_bytes(b"partial")  # a FAISS file no commit lists
    reopened = EmbeddingIndex(index.folder)
    assert len(reopened.items) == committed and reopened.search_index(None).ntotal == committed
    add_catalog(reopened, model, processor, f"jsonl:{catalog / 'catalog.jsonl'}:validation")
    assert len(EmbeddingIndex(index.folder).items) == 50 and not (index.folder / "shard-00099.safetensors").exists()
    assert not (index.folder / "faiss-00099-0.index").exists()


def planted_index(folder, entities, dim, rows_per_shard=(30, 25), kind="folder"):
    """Random unit vectors in two shards; tests overwrite chosen rows to plant matches."""
    generator = torch.Generator().manual_seed(0)
    index = new_store(kind, folder, "planted", "fingerprint", entities, dim, 8)
    shards = []
    for shard, rows in enumerate(rows_per_shard):
        image = torch.randn(rows, dim, generator=generator)
        region = torch.randn(rows, len(entities), dim, generator=generator)
        items = [IndexItem(-1, f"p{shard}-{row}", f"product {row}", {}, "planted") for row in range(rows)]
        shards.append((image, region, np.zeros((rows, 8, 8, 3), np.uint8), items))
    return index, shards


@pytest.mark.parametrize("kind", STORES)
def test_search_finds_planted_matches_in_the_targeted_embedding(tmp_path, kind):
    index, shards = planted_index(tmp_path / "index", ["brand", "season"], dim=16, kind=kind)
    query = torch.randn(16, generator=torch.Generator().manual_seed(1))
    shards[0][1][4, 0] = query  # row 4: brand region == query
    shards[1][1][7, 0] = query + 0.05 * torch.randn(16)  # row 37: brand region near the query
    shards[1][0][3] = query  # row 33: global embedding == query
    shards[0][1][9, 1] = query  # row 9: season region == query (must not count for brand)
    for image, region, thumbnails, items in shards:
        index.add(image, region, thumbnails, items, source="planted")
    brand = search_embedding(index, query, entity="brand", top_k=3)
    assert [hit.row for hit in brand[:2]] == [4, 37] and brand[0].score == pytest.approx(1.0, abs=1e-6)
    assert brand[1].item.product_id == "p1-7" and 9 not in [hit.row for hit in brand]
    assert search_embedding(index, query, entity="season", top_k=1)[0].row == 9
    assert search_embedding(index, query, top_k=1)[0].row == 33
    assert [hit.rank for hit in brand] == [1, 2, 3] and brand[1].score >= brand[2].score
    with pytest.raises(EmbeddingIndexError, match="unknown entity 'colour'.*brand, season"):
        search_embedding(index, query, entity="colour")


@pytest.mark.parametrize("kind", STORES)
def test_text_search_goes_through_the_text_tower(model_and_processor, tmp_path, kind):
    model, processor = model_and_processor
    dim = model.config.projection_dim
    index, shards = planted_index(tmp_path / "index", model.config.entities, dim, kind=kind)
    index.metadata["model_fingerprint"] = model_fingerprint(model)
    gucci = text_query_embedding(model, processor, "Gucci")
    shards[1][1][11, 0] = gucci  # brand region of row 41 matches "Gucci"
    for image, region, thumbnails, items in shards:
        index.add(image, region, thumbnails, items, source="planted")
    assert search_text(model, processor, index, "Gucci", entity="brand", top_k=1)[0].row == 41
    assert search_text(model, processor, index, "Gucci", top_k=1)[0].row != 41


def test_search_command_writes_ranked_png_and_html(e2_model_dir, model_and_processor, cli_index, tmp_path):
    model, processor = model_and_processor
    query, top_k = "black wool coat", 6
    index = EmbeddingIndex(cli_index)
    scores = torch.from_numpy(index.read_all(index.tensor_name("season"))) @ torch.nn.functional.normalize(
        text_query_embedding(model, processor, query), dim=-1
    )
    expected_rows = scores.argsort(descending=True)[:top_k].tolist()
    expected_ids = [index.items[row].product_id for row in expected_rows]

    page = tmp_path / "results.html"
    completed = run_cli("search", "--model", str(e2_model_dir), "--index", str(cli_index), "--query", query,
                        "--entity", "season", "--top-k", str(top_k), "--output", str(page))  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    printed_ids = [line.split()[2] for line in completed.stdout.splitlines() if line.startswith("#")]
    assert printed_ids == expected_ids
    html = page.read_text()
    assert re.findall(r'data-product-id="([^"]+)"', html) == expected_ids
    assert "season region" in html and index.items[expected_rows[0]].description in html
    assert "http://" not in html and "https://" not in html and "<script" not in html  # self-contained

    grid = tmp_path / "results.png"
    completed = run_cli("search", "--model", str(e2_model_dir), "--index", str(cli_index), "--query", query,
                        "--top-k", str(top_k), "--output", str(grid))  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    with Image.open(grid) as picture:
        assert picture.width >= 5 * 160 and picture.height >= 2 * 160  # 6 results: two rows of up to 5


def test_search_command_errors_are_clear(e2_model_dir, cli_index, tmp_path):
    wrong_entity = run_cli("search", "--model", str(e2_model_dir), "--index", str(cli_index), "--query", "x",
                           "--entity", "colour", "--output", str(tmp_path / "r.html"))  # fmt: skip
    assert wrong_entity.returncode != 0 and "unknown entity 'colour'" in wrong_entity.stderr
    no_index = run_cli("search", "--model", str(e2_model_dir), "--index", str(tmp_path / "none"), "--query", "x",
                       "--output", str(tmp_path / "r.html"))  # fmt: skip
    assert no_index.returncode != 0 and "is not an E2 index" in no_index.stderr
    wrong_output = run_cli("search", "--model", str(e2_model_dir), "--index", str(cli_index), "--query", "x",
                           "--output", str(tmp_path / "r.txt"))  # fmt: skip
    assert wrong_output.returncode != 0 and "must end in .png or .html" in wrong_output.stderr
    for completed in (wrong_entity, no_index, wrong_output):
        assert "Traceback" not in completed.stderr


def test_html_results_render_as_a_grid_in_headless_chromium(model_and_processor, cli_index, tmp_path):
    from e2_hf.search import render_html

    model, processor = model_and_processor
    index = EmbeddingIndex(cli_index)
    hits = search_text(model, processor, index, "navy dress", entity="brand", top_k=8)
    page = tmp_path / "results.html"
    page.write_text(render_html(hits, index, "navy dress", "brand"), encoding="utf-8")
    with chromium_page() as browser:
        browser.goto(page.as_uri())
        cards = browser.locator(".card")
        assert cards.count() == 8
        assert browser.evaluate("[...document.images].every(i => i.complete && i.naturalWidth === 48)")
        boxes = [cards.nth(position).bounding_box() for position in range(8)]
        assert boxes[0]["y"] == boxes[1]["y"] and boxes[1]["x"] > boxes[0]["x"] + boxes[0]["width"]  # side by side
        assert any(box["y"] > boxes[0]["y"] + boxes[0]["height"] for box in boxes)  # and wrapped into rows
        screenshot = Image.open(io.BytesIO(browser.screenshot(full_page=True))).convert("RGB")
        screenshot.save(tmp_path / "results.png")
        first_image = browser.locator(".card img").first.bounding_box()
    crop = screenshot.crop(tuple(round(v) for v in (first_image["x"], first_image["y"],
                                                      first_image["x"] + first_image["width"],
                                                      first_image["y"] + first_image["height"])))  # fmt: skip
    expected = Image.fromarray(index.thumbnail(hits[0].row)).resize(crop.size, Image.BILINEAR)
    difference = np.abs(np.asarray(crop, dtype=float) - np.asarray(expected, dtype=float)).mean()
    assert difference < 25  # the screenshot shows the top hit's picture where its card's image is


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("num_workers", [0, 1])
def test_an_unreadable_image_stops_indexing_with_its_file_and_row(model_and_processor, tmp_path, num_workers, kind):
    from e2_hf.data import ImageLoadError
    from e2_hf.search import open_store

    model, processor = model_and_processor
    spec = catalog_with_a_broken_image(tmp_path)
    address = store_address(kind, tmp_path / "index")
    with open_or_create_index(address, model, "e2", thumbnail_size=16) as index:
        with pytest.raises(ImageLoadError) as raised:
            add_catalog(index, model, processor, spec, num_workers=num_workers)
    assert str(raised.value).startswith("catalog.jsonl row 2, view 0: unreadable image")
    assert "Traceback" not in str(raised.value)  # raised in this process, also with loader workers
    with open_store(address) as reopened:
        assert len(reopened) == 0  # nothing of the catalog committed


def test_a_model_without_entities_gets_a_global_only_index(small_clip, catalog, tmp_path):
    """CLIP-FT (E2 without entities): its global embeddings are indexed, searched and exported; the
    items keep their tags; a search by region is refused by name."""
    from e2_hf.search.export import export_dataset

    model = from_clip(str(small_clip), entities=[]).eval()
    processor = E2CLIPProcessor.from_pretrained(str(small_clip))
    index = open_or_create_index(tmp_path / "index", model, "clip-ft", thumbnail_size=16)
    add_catalog(index, model, processor, f"jsonl:{catalog / 'catalog.jsonl'}:validation", batch_size=8)
    index = EmbeddingIndex(tmp_path / "index")
    assert len(index) == 10 and index.entities == [] and index.targets == [None]
    assert index.tag_entities == ["brand", "composition", "season", "subcategory"]
    first = index.items[0]
    hits = search_text(model, processor, index, first.description)
    assert len(hits) == 10 and sorted(hit.item.product_id for hit in hits) == sorted(i.product_id for i in index.items)
    with pytest.raises(
        EmbeddingIndexError, match="unknown entity 'brand'; this index has regional embeddings for: none"
    ):
        search_text(model, processor, index, "Aurel", entity="brand")
    export_dataset(index, tmp_path / "dataset")
    from datasets import load_dataset

    rows = load_dataset(str(tmp_path / "dataset"), split="train", cache_dir=str(tmp_path / "cache"))
    assert "region_embeds_brand" not in rows.column_names and rows[0]["tags"]["brand"] == first.tags["brand"]
