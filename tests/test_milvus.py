"""The Milvus store (a Milvus Lite file here) against the folder index: same answers, idempotent
upserts, resumable adds, lossless migration both ways, one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from e2_hf import E2CLIPModel, E2CLIPProcessor
from e2_hf.errors import EmbeddingIndexError
from e2_hf.search import EmbeddingIndex, SearchSettings
from e2_hf.search.index import IndexItem
from e2_hf.search.migrate import migrate
from e2_hf.search.query import search_embeddings, search_texts, search_weighted, text_query_embeddings

pytest.importorskip("pymilvus", reason="the milvus extra (pymilvus) is not installed")
pytest.importorskip("milvus_lite", reason="the milvus extra (milvus-lite) is not installed")

from e2_hf.search.milvus import MilvusIndex  # noqa: E402

QUERIES = ["Lumen", "FW2016", "DRESSES", "100% wool", "navy dress with a small logo"]


def run_cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "e2_hf.cli", *arguments], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def model_and_processor(e2_model_dir):
    return E2CLIPModel.from_pretrained(str(e2_model_dir)).eval(), E2CLIPProcessor.from_pretrained(str(e2_model_dir))


@pytest.fixture(scope="module")
def both_stores(e2_model_dir, catalog, tmp_path_factory):
    """The catalog indexed by the command into a folder and into a Milvus Lite file, both exact."""
    folder = tmp_path_factory.mktemp("stores")
    stores = {"folder": str(folder / "index"), "milvus": f"milvus-lite:{folder / 'catalog.db'}#shop"}
    for store in stores.values():
        built = run_cli("index", "--model", str(e2_model_dir), "--data", f"jsonl:{catalog / 'catalog.jsonl'}",
                        "--output", store, "--index-type", "flat", "--batch-size", "16")  # fmt: skip
        assert built.returncode == 0, built.stderr[-3000:]
    return stores


def answers(hits_per_query):
    return [[(hit.item.product_id, round(hit.score, 4)) for hit in hits] for hits in hits_per_query]


def test_flat_search_gives_the_same_ids_in_the_same_order_on_both(model_and_processor, both_stores):
    model, processor = model_and_processor
    with MilvusIndex(both_stores["milvus"]) as milvus:
        same_flat_answers(model, processor, EmbeddingIndex(both_stores["folder"]), milvus)


def same_flat_answers(model, processor, folder, milvus):
    assert len(folder) == len(milvus) == 50
    for entity in (None, *model.config.entities):
        expected = search_texts(model, processor, folder, QUERIES, entity, top_k=10)
        actual = search_texts(model, processor, milvus, QUERIES, entity, top_k=10)
        assert [[hit.item.product_id for hit in hits] for hits in actual] == [
            [hit.item.product_id for hit in hits] for hits in expected
        ], entity
        for hits, reference in zip(actual, expected):
            assert [hit.score for hit in hits] == pytest.approx([hit.score for hit in reference], abs=1e-5)
            assert [hit.row for hit in hits] == [hit.row for hit in reference]  # rows in the order added


def test_weighted_and_filtered_queries_rank_alike_on_both(model_and_processor, both_stores):
    model, processor = model_and_processor
    with MilvusIndex(both_stores["milvus"]) as milvus:
        same_weighted_answers(model, processor, EmbeddingIndex(both_stores["folder"]), milvus)


def same_weighted_answers(model, processor, folder, milvus):
    vector = text_query_embeddings(model, processor, QUERIES)
    weights = {None: 0.5, "brand": 0.3, "season": 0.2}
    queries = dict.fromkeys(weights, vector)
    expected = search_weighted(folder, queries, weights, top_k=10, candidates=40)
    actual = search_weighted(milvus, queries, weights, top_k=10, candidates=40)
    assert answers(actual) == answers(expected)
    where = {"brand": folder.items[0].tags["brand"]}
    expected = search_embeddings(folder, vector, "season", top_k=5, where=where)
    actual = search_embeddings(milvus, vector, "season", top_k=5, where=where)
    assert answers(actual) == answers(expected) and all(actual)
    assert all(hit.item.tags["brand"] == where["brand"] for hits in actual for hit in hits)


def test_the_search_command_reads_a_milvus_store(e2_model_dir, both_stores, tmp_path):
    outputs = {}
    for name, store in both_stores.items():
        output = tmp_path / f"{name}.html"
        searched = run_cli("search", "--model", str(e2_model_dir), "--index", store, "--query", "Lumen",
                           "--weights", "global=0.5,brand=0.5", "--output", str(output))  # fmt: skip
        assert searched.returncode == 0, searched.stderr[-3000:]
        outputs[name] = [line.split()[2] for line in searched.stdout.splitlines() if line.startswith("#")]
        assert output.read_text().count("<img") == 10  # thumbnails come from the store
    assert outputs["folder"] == outputs["milvus"] and len(outputs["folder"]) == 10


def test_a_queries_file_of_texts_and_images_gives_the_same_hits_on_both(e2_model_dir, catalog, both_stores, tmp_path):
    queries = tmp_path / "queries.jsonl"
    image = next((catalog / "images").rglob("*.png"))
    queries.write_text(json.dumps({"text": "Lumen", "entity": "brand"}) + "\n"
                       + json.dumps({"image": str(image), "entity": "season", "id": "photo"}) + "\n"
                       + json.dumps({"image": str(image)}) + "\n")  # fmt: skip
    hits = {}
    for name, store in both_stores.items():
        output = tmp_path / f"{name}.jsonl"
        searched = run_cli("search", "--model", str(e2_model_dir), "--index", store, "--queries-file", str(queries),
                           "--output", str(output), "--top-k", "5")  # fmt: skip
        assert searched.returncode == 0, searched.stderr[-3000:]
        hits[name] = [
            [hit["product_id"] for hit in json.loads(line)["hits"]] for line in output.read_text().splitlines()
        ]
    assert hits["milvus"] == hits["folder"] and all(len(found) == 5 for found in hits["folder"])


def test_compose_search_reads_a_milvus_store(e2_model_dir, decap_folder, catalog, both_stores, tmp_path):
    image = next((catalog / "images").rglob("*.png"))
    found = {}
    for name, store in both_stores.items():
        output = tmp_path / f"{name}.json"
        composed = run_cli("compose-search", "--model", str(e2_model_dir), "--captioner", str(decap_folder), "--index",
                           store, "--image", str(image), "--modify", "in FW2016", "--output", str(output))  # fmt: skip
        assert composed.returncode == 0, composed.stderr[-3000:]
        result = json.loads(output.read_text())
        found[name] = (result["rewritten"], [hit["product_id"] for hit in result["hits"]])
    assert found["milvus"] == found["folder"] and len(found["folder"][1]) == 10


def test_the_space_searches_a_milvus_store(e2_model_dir, both_stores):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install '.[test]')")
    from e2_hf.space.app import E2Space

    galleries = {}
    for name, store in both_stores.items():
        space = E2Space(str(e2_model_dir), store)
        assert space.candidates and len(space.index) == 50
        galleries[name] = space.search("Lumen", "brand", 6)
        space.index.close()
    assert [caption for _, caption in galleries["milvus"]] == [caption for _, caption in galleries["folder"]]
    for (milvus_thumbnail, _), (folder_thumbnail, _) in zip(galleries["milvus"], galleries["folder"]):
        np.testing.assert_array_equal(milvus_thumbnail, folder_thumbnail)


def test_adding_again_changes_nothing_and_a_resumed_add_writes_only_what_is_missing(e2_model_dir, catalog, tmp_path):
    store = f"milvus-lite:{tmp_path / 'catalog.db'}"
    common = ["--model", str(e2_model_dir), "--output", store, "--index-type", "flat"]
    first = run_cli("index", *common, "--data", f"jsonl:{catalog / 'catalog.jsonl'}:train")
    assert first.returncode == 0, first.stderr[-3000:]
    before = {item.product_id: (item.row, vectors) for item, vectors in stored_rows(store)}
    again = run_cli("index", *common, "--data", f"jsonl:{catalog / 'catalog.jsonl'}:train")
    assert again.returncode == 0, again.stderr[-3000:]
    after = {item.product_id: (item.row, vectors) for item, vectors in stored_rows(store)}
    assert after.keys() == before.keys() and len(after) == 40
    for product_id, (row, vectors) in after.items():
        assert row == before[product_id][0]
        np.testing.assert_allclose(vectors, before[product_id][1], atol=1e-5)
    resumed = run_cli("index", *common, "--data", f"jsonl:{catalog / 'catalog.jsonl'}", "--skip-existing")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "added 10 products, 40 already there; the index has 50" in resumed.stdout
    rows = sorted(item.row for item, _ in stored_rows(store))
    assert rows == list(range(50))


def stored_rows(address):
    with MilvusIndex(address) as index:
        return list(_stored_rows(index))


def _stored_rows(index):
    for items, image, regions, _ in index.read_rows(with_thumbnails=False):
        for position, item in enumerate(items):
            yield item, torch.cat([image[position : position + 1], regions[position]]).numpy()


def test_migration_is_lossless_both_ways(both_stores, tmp_path):
    to_milvus = f"milvus-lite:{tmp_path / 'migrated.db'}"
    report = migrate(both_stores["folder"], to_milvus)
    assert report.rows == 50 and report.checked == 50 and report.max_difference == 0.0
    back = tmp_path / "back"
    migrate(to_milvus, str(back))
    original, returned = EmbeddingIndex(both_stores["folder"]), EmbeddingIndex(back)
    assert [item.to_json() for item in returned.items] == [item.to_json() for item in original.items]
    for target in original.targets:
        name = original.tensor_name(target)
        np.testing.assert_array_equal(returned.read_all(name), original.read_all(name))
    np.testing.assert_array_equal(returned.read_all("thumbnails"), original.read_all("thumbnails"))
    refused = run_cli("index", "--migrate", both_stores["folder"], to_milvus)
    assert refused.returncode != 0 and "exists already" in refused.stderr and "Traceback" not in refused.stderr


def planted(rows: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, dim, generator=generator), torch.randn(rows, 1, dim, generator=generator)


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])  # on Milvus Lite: HNSW, and IVF_SQ8 (Lite has no PQ)
def test_an_approximate_milvus_index_keeps_recall_against_flat(tmp_path, kind):
    rows, dim = 3000, 32
    image, regions = planted(rows, dim)
    thumbnails = np.zeros((rows, 8, 8, 3), dtype=np.uint8)
    items = [IndexItem(row=row, product_id=f"p{row}", description="", tags={"brand": f"b{row % 7}"}, source="s")
             for row in range(rows)]  # fmt: skip
    answers = {}
    queries = torch.nn.functional.normalize(torch.randn(50, dim, generator=torch.Generator().manual_seed(1)), dim=-1)
    for name in ("flat", kind):
        settings = SearchSettings(name, ivf_lists=32, ivf_probes=16)
        with MilvusIndex.create(f"milvus-lite:{tmp_path / name}.db", "planted", "f" * 16, ["brand"], dim, 8,
                                settings) as store:  # fmt: skip
            store.add(image, regions, thumbnails, items, "s")
            store.commit_search_indices()
            answers[name] = [{item.product_id for _, item in hits} for hits in store.nearest(queries.numpy(), None, 10)]
    found = sum(len(approximate & exact) for approximate, exact in zip(answers[kind], answers["flat"]))
    assert found / (10 * len(queries)) >= 0.95


def test_bad_stores_are_one_line_errors_before_anything_is_written(e2_model_dir, small_clip, both_stores, tmp_path):
    other = tmp_path / "other-model"
    torch.manual_seed(1)
    from e2_hf import from_clip

    from_clip(str(small_clip), fusion_layers=[1, 2]).save_pretrained(other)
    E2CLIPProcessor.from_pretrained(str(e2_model_dir)).save_pretrained(other)
    cases = {
        "another model": (["index", "--model", str(other), "--data", "jsonl:unused.jsonl", "--output",
                           both_stores["milvus"]], "was built with another model"),
        "no collection": (["search", "--model", str(e2_model_dir), "--index", both_stores["milvus"].replace(
            "#shop", "#nothing"), "--query", "x", "--output", str(tmp_path / "x.png")], "no collection 'nothing'"),
        "unreachable": (["search", "--model", str(e2_model_dir), "--index", "milvus://127.0.0.1:9", "--query", "x",
                         "--output", str(tmp_path / "x.png")], "Milvus error connecting to milvus://127.0.0.1:9"),
        "unknown entity": (["search", "--model", str(e2_model_dir), "--index", both_stores["milvus"], "--query", "x",
                            "--weights", "global=1,colour=1", "--output", str(tmp_path / "x.png")],
                           "unknown entity 'colour'"),
        "not a lite file": (["search", "--model", str(e2_model_dir), "--index", "milvus-lite:catalog.sqlite",
                             "--query", "x", "--output", str(tmp_path / "x.png")], "ends in .db"),
    }  # fmt: skip
    with MilvusIndex(both_stores["milvus"]) as index:
        count = len(index)
    for name, (arguments, message) in cases.items():
        completed = run_cli(*arguments)
        assert completed.returncode != 0 and message in completed.stderr, (name, completed.stderr[-2000:])
        assert "Traceback" not in completed.stderr, name
    with MilvusIndex(both_stores["milvus"]) as index:
        assert len(index) == count


def test_a_collection_lacking_an_entity_field_is_refused(both_stores, tmp_path):
    with MilvusIndex(both_stores["milvus"]) as index:
        index.metadata["entities"] = [*index.entities, "colour"]
        with pytest.raises(EmbeddingIndexError, match=r"lacks the fields \['region_colour', 'tag_colour'\]"):
            index._check_schema()


def test_a_model_without_entities_gets_a_global_only_collection(small_clip, catalog, tmp_path):
    from e2_hf import from_clip
    from e2_hf.search import add_catalog, open_or_create_index, search_text

    model = from_clip(str(small_clip), entities=[]).eval()
    processor = E2CLIPProcessor.from_pretrained(str(small_clip))
    address = f"milvus-lite:{tmp_path / 'clip-ft.db'}"
    with open_or_create_index(address, model, "clip-ft", thumbnail_size=16) as index:
        report = add_catalog(index, model, processor, f"jsonl:{catalog / 'catalog.jsonl'}:validation", batch_size=8)
        assert report.added == len(index) == 10 and index.entities == [] and index.targets == [None]
        first = index.items[0]
        hits = search_text(model, processor, index, first.description)
        assert sorted(hit.item.product_id for hit in hits) == sorted(item.product_id for item in index.items)
        with pytest.raises(EmbeddingIndexError, match="unknown entity 'brand'; this index has regional embeddings"):
            search_text(model, processor, index, "Aurel", entity="brand")
