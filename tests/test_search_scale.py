"""Search at scale: FAISS index types and their switch, float16 / bfloat16 storage, batch and image
queries, the multi-process add (2 gloo processes equal one), the export as a datasets dataset, and
searching on GPUs (`--faiss-gpu`)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from e2_hf import E2CLIPModel, E2CLIPProcessor
from e2_hf.search import (
    EmbeddingIndex,
    SearchQuery,
    SearchSettings,
    add_catalog,
    open_or_create_index,
    read_queries,
    run_queries,
    search_embeddings,
    search_images,
    search_texts,
)
from e2_hf.search.export import export_dataset
from e2_hf.search.index import EmbeddingIndexError, IndexItem, writer_lock

from .test_distributed import free_port
from .test_search import by_product_id, planted_index, run_cli


@pytest.fixture(scope="module")
def model_and_processor(e2_model_dir):
    return E2CLIPModel.from_pretrained(e2_model_dir).eval(), E2CLIPProcessor.from_pretrained(e2_model_dir)


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, top_k: int) -> list[list[int]]:
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :top_k].tolist()


def test_flat_is_exact_and_auto_turns_approximate_past_its_limit(tmp_path):
    index, shards = planted_index(tmp_path / "index", ["brand", "season"], dim=16)
    settings = SearchSettings(exact_up_to=40, ivf_lists=4, ivf_probes=4)  # past 40 rows: ivfpq, every list probed
    index.metadata["search"]["settings"] = settings.to_json()
    queries = torch.nn.functional.normalize(torch.randn(6, 16, generator=torch.Generator().manual_seed(2)), dim=-1)
    image, region, thumbnails, items = shards[0]  # 30 rows: under the limit, exact
    index.add(image, region, thumbnails, items, source="planted")
    with writer_lock(index.folder):
        index.commit_search_indices()
    assert [recorded["type"] for recorded in index.metadata["search"]["files"]] == ["flat"] * 3
    found = [[hit.row for hit in hits] for hits in search_embeddings(index, queries, "season", top_k=5)]
    assert found == exact_top_k(region[:, 1].numpy(), queries.numpy(), 5)
    index.add(*shards[1][:3], shards[1][3], source="planted")  # 55 rows: past the limit
    with writer_lock(index.folder):
        assert index.commit_search_indices() == ["global: ivfpq, built", "brand: ivfpq, built", "season: ivfpq, built"]
    all_regions = torch.cat([region[:, 0], shards[1][1][:, 0]]).numpy()
    found = [[hit.row for hit in hits] for hits in search_embeddings(index, queries, "brand", top_k=5)]
    assert found == exact_top_k(all_regions, queries.numpy(), 5)  # re-scored from 8-bit vectors: the exact top 5
    index.add(*shards[1][:3], [{**item.to_json(), "product_id": item.product_id + "b"} for item in shards[1][3]],
              source="planted")  # fmt: skip
    with writer_lock(index.folder):
        assert index.commit_search_indices()[0] == "global: ivfpq, extended"
        assert index.commit_search_indices() == []  # nothing new: no file is rewritten
    assert EmbeddingIndex(index.folder).search_index(None).ntotal == 80


@pytest.mark.parametrize("storage_dtype", ["float16", "bfloat16"])
def test_reduced_precision_storage_halves_the_shards_and_finds_the_planted_rows(tmp_path, storage_dtype):
    index = EmbeddingIndex.create(tmp_path / "index", "planted", "fingerprint", ["brand"], 64, 8, storage_dtype)
    vectors = torch.nn.functional.normalize(torch.randn(40, 64, generator=torch.Generator().manual_seed(3)), dim=-1)
    items = [{"product_id": f"p{row}", "description": "", "tags": {}, "source": "s"} for row in range(40)]
    index.add(vectors, vectors[:, None], np.zeros((40, 8, 8, 3), np.uint8), items, source="planted")
    with writer_lock(index.folder):
        index.commit_search_indices()
    stored = index.read_all("image_embeds")
    assert (
        next(iter(index.shards)).get_slice("image_embeds").get_dtype()
        == {"float16": "F16", "bfloat16": "BF16"}[storage_dtype]
    )
    assert 0 < np.abs(stored - vectors.numpy()).max() < 1e-2  # rounded, not lost
    hits = search_embeddings(EmbeddingIndex(index.folder), vectors[:10], "brand", top_k=1)
    assert [found[0].row for found in hits] == list(range(10))


def test_batch_text_and_image_queries_from_a_file(e2_model_dir, model_and_processor, catalog, tmp_path):
    model, processor = model_and_processor
    index = open_or_create_index(tmp_path / "index", model, "e2", thumbnail_size=16)
    add_catalog(index, model, processor, f"jsonl:{catalog / 'catalog.jsonl'}:validation")
    records = [json.loads(line) for line in (catalog / "catalog.jsonl").read_text().splitlines()]
    photo = str(catalog / records[-1]["images"][0])  # a validation product's own photo
    queries_file = tmp_path / "queries.jsonl"
    queries_file.write_text("\n".join(json.dumps(query) for query in [
        {"text": "black wool coat", "id": "coat"}, {"text": "Gucci", "entity": "brand"},
        {"image": os.path.relpath(photo, tmp_path)}, {"image": photo, "entity": "season"}]) + "\n")  # fmt: skip
    completed = run_cli("search", "--model", str(e2_model_dir), "--index", str(index.folder), "--queries-file",
                        str(queries_file), "--output", str(tmp_path / "results.jsonl"), "--top-k", "3")  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [result["query"].get("id") for result in results] == ["coat", None, None, None]
    expected = [
        *search_texts(model, processor, index, ["black wool coat"], top_k=3),
        *search_texts(model, processor, index, ["Gucci"], "brand", top_k=3),
        *search_images(model, processor, index, [photo], top_k=3),
        *search_images(model, processor, index, [photo], "season", top_k=3),
    ]
    for result, hits in zip(results, expected):
        assert [hit["product_id"] for hit in result["hits"]] == [hit.item.product_id for hit in hits]
    assert results[2]["hits"][0]["product_id"] == str(records[-1]["product_id"])  # its own photo ranks first
    queries = [SearchQuery(image=photo, entity="season"), SearchQuery(text="Gucci", entity="brand")]
    assert [[hit.row for hit in hits] for hits in run_queries(model, processor, index, queries, 3)] == [
        [hit.row for hit in expected[3]], [hit.row for hit in expected[1]]]  # fmt: skip


@pytest.mark.parametrize(
    ("line", "message"),
    [('{"text": "coat", "image": "a.png"}', "line 2: a query is"), ('{"txt": "coat"}', r"unknown fields \['txt'\]"),
     ('{"text": 3}', r"not strings \['text'\]"), ("coat", "line 2: not valid JSON")],
)  # fmt: skip
def test_a_bad_queries_file_names_the_line(tmp_path, line, message):
    path = tmp_path / "queries.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(ValueError, match=message):
        read_queries(path)


def test_two_processes_add_what_one_process_adds(e2_model_dir, model_and_processor, catalog, tmp_path):
    """`torchrun --nproc_per_node 2 -m e2_hf.cli index ...` (gloo on CPU) after a one-process add of the
    training products, with --skip-existing: only the new products, in the order one process adds them."""
    model, processor = model_and_processor
    data = f"jsonl:{catalog / 'catalog.jsonl'}"
    one = open_or_create_index(tmp_path / "one", model, "e2", thumbnail_size=16)
    add_catalog(one, model, processor, data)
    two = open_or_create_index(tmp_path / "two", model, "e2", thumbnail_size=16)
    add_catalog(two, model, processor, f"{data}:train")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), "-m", "e2_hf.cli", "index", "--model", str(e2_model_dir),
               "--data", data, "--output", str(two.folder), "--skip-existing", "--batch-size", "4"]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ,
                               "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "added 10 products, 40 already there; the index has 50" in completed.stdout
    one, two = EmbeddingIndex(one.folder), EmbeddingIndex(two.folder)
    assert [item.product_id for item in two.items] == [item.product_id for item in one.items]
    expected, found = by_product_id(one), by_product_id(two)
    for product_id, (image, region, *_) in expected.items():
        np.testing.assert_allclose(found[product_id][0], image, atol=1e-5)
        np.testing.assert_allclose(found[product_id][1], region, atol=1e-5)
    assert two.verify() == [] and not (two.folder / ".parts").exists()
    queries = torch.from_numpy(one.read_all("image_embeds")[:5])
    assert [[hit.row for hit in hits] for hits in search_embeddings(two, queries, "brand")] == [
        [hit.row for hit in hits] for hits in search_embeddings(one, queries, "brand")]  # fmt: skip


def test_export_dataset_loads_with_datasets_and_its_faiss_index(e2_model_dir, model_and_processor, catalog, tmp_path):
    datasets = pytest.importorskip("datasets", reason="the export is read with datasets (the test extra has it)")
    model, processor = model_and_processor
    index = open_or_create_index(tmp_path / "index", model, "e2", thumbnail_size=16)
    add_catalog(index, model, processor, f"jsonl:{catalog / 'catalog.jsonl'}:validation", shard_rows=4)
    completed = run_cli("index", "--output", str(index.folder), "--export-dataset", str(tmp_path / "dataset"))
    assert completed.returncode == 0, completed.stderr[-3000:]
    products = datasets.load_dataset(str(tmp_path / "dataset"), split="train")
    assert products["product_id"] == [item.product_id for item in index.items]
    assert products[0]["tags"] == {entity: index.items[0].tags.get(entity) for entity in index.entities}
    np.testing.assert_allclose(np.array(products["region_embeds_brand"]), index.read_all("region_embeds.brand"))
    import faiss

    products.add_faiss_index(column="image_embeds", metric_type=faiss.METRIC_INNER_PRODUCT)
    _, nearest = products.get_nearest_examples("image_embeds", index.read_all("image_embeds")[3], k=1)
    assert nearest["product_id"] == [index.items[3].product_id]
    with pytest.raises(FileExistsError, match="dataset is not empty"):
        export_dataset(index, tmp_path / "dataset")


def committed_planted_index(folder, settings: SearchSettings | None = None) -> EmbeddingIndex:
    index, shards = planted_index(folder, ["brand", "season"], dim=16)
    if settings is not None:
        index.metadata["search"]["settings"] = settings.to_json()
    for image, region, thumbnails, items in shards:
        index.add(image, region, thumbnails, items, source="planted")
    with writer_lock(index.folder):
        index.commit_search_indices()
    return index


def test_faiss_gpu_is_refused_clearly_where_faiss_sees_no_gpu(e2_model_dir, tmp_path):
    import faiss

    if faiss.get_num_gpus() > 0:
        pytest.skip("this FAISS sees a GPU: the refusal cannot happen here")
    index = committed_planted_index(tmp_path / "index")
    with pytest.raises(EmbeddingIndexError, match="FAISS sees no GPU here.*GPU build of FAISS"):
        search_embeddings(EmbeddingIndex(index.folder, faiss_gpu=True), torch.randn(1, 16), "brand")
    completed = run_cli("search", "--model", str(e2_model_dir), "--index", str(index.folder), "--query", "x",
                        "--faiss-gpu", "--output", str(tmp_path / "r.html"))  # fmt: skip
    assert completed.returncode != 0 and "FAISS sees no GPU here" in completed.stderr
    assert "Traceback" not in completed.stderr


class FakeGpuFaiss:
    """Stands in for a GPU build's cloner (no GPU here): the 'GPU copy' is a CPU clone, so the test checks
    which index is searched, moved and committed, not FAISS's GPU kernels."""

    def __init__(self, faiss):
        self.faiss, self.moved = faiss, []
        self.refuse: type | None = None  # a FAISS class this cloner refuses, as a GPU build refuses HNSW

    def options(self):
        return type("GpuMultipleClonerOptions", (), {"shard": False})()

    def to_all_gpus(self, index, co):
        concrete = self.faiss.downcast_index(index)
        if self.refuse is not None and isinstance(concrete, self.refuse):
            raise RuntimeError("Error in index_cpu_to_gpu: this index type is not implemented on GPU")
        self.moved.append((concrete, co.shard))
        return self.faiss.clone_index(index)


@pytest.fixture
def fake_gpu_faiss(monkeypatch):
    import faiss

    fake = FakeGpuFaiss(faiss)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 2)
    monkeypatch.setattr(faiss, "GpuMultipleClonerOptions", fake.options, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", fake.to_all_gpus)
    return fake


def test_faiss_gpu_searches_a_sharded_copy_and_commits_the_cpu_index(fake_gpu_faiss, tmp_path):
    index = committed_planted_index(tmp_path / "index")
    queries = torch.randn(4, 16, generator=torch.Generator().manual_seed(3))
    on_gpus = EmbeddingIndex(index.folder, faiss_gpu=True)
    for entity in (None, "brand"):
        found = [[hit.row for hit in hits] for hits in search_embeddings(on_gpus, queries, entity, top_k=5)]
        assert found == [[hit.row for hit in hits] for hits in search_embeddings(index, queries, entity, top_k=5)]
        search_embeddings(on_gpus, queries, entity)  # the copy is made once per target
        assert on_gpus.searcher(entity) is not on_gpus.search_index(entity)
    assert [shard for _, shard in fake_gpu_faiss.moved] == [True, True]  # rows split between the GPUs
    index.add(*planted_index(tmp_path / "more", ["brand", "season"], dim=16)[1][0][:3],
              [IndexItem(-1, f"new-{row}", "new", {}, "planted") for row in range(30)], source="planted")  # fmt: skip
    with writer_lock(index.folder):
        assert index.commit_search_indices()[0] == "global: flat, extended"  # the CPU index is written


def test_faiss_gpu_names_an_index_type_faiss_cannot_move(fake_gpu_faiss, tmp_path):
    import faiss

    fake_gpu_faiss.refuse = faiss.IndexHNSW
    index = committed_planted_index(tmp_path / "index", SearchSettings(index_type="hnsw"))
    with pytest.raises(EmbeddingIndexError, match=r"season index of .* \(IndexHNSWFlat\) cannot run on a GPU.*"
                                                  r"not implemented on GPU.*--index-type flat"):  # fmt: skip
        search_embeddings(EmbeddingIndex(index.folder, faiss_gpu=True), torch.randn(1, 16), "season")
