"""The Milvus stores against the folder index: a Milvus Lite file, and a Milvus server on 127.0.0.1
(the Milvus protocol over TCP, with a token and the vector-field limit; see milvus_server.py). Same
answers, idempotent upserts, resumable adds, several processes upserting at once, lossless
migration both ways, one-line errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from e2_hf import E2CLIPModel, E2CLIPProcessor
from e2_hf.errors import EmbeddingIndexError
from e2_hf.search import EmbeddingIndex, SearchSettings, open_store
from e2_hf.search.index import IndexItem
from e2_hf.search.migrate import migrate
from e2_hf.search.query import search_embeddings, search_texts, search_weighted, text_query_embeddings

pytest.importorskip("pymilvus", reason="the milvus extra (pymilvus) is not installed")
pytest.importorskip("milvus_lite", reason="the milvus extra (milvus-lite) is not installed")

from e2_hf.search.milvus import CA_VARIABLE, TOKEN_VARIABLE, MilvusIndex  # noqa: E402

from .milvus_server import milvus_server, self_signed_certificate  # noqa: E402
from .test_distributed import free_port  # noqa: E402

QUERIES = ["Lumen", "FW2016", "DRESSES", "100% wool", "navy dress with a small logo"]
MILVUS_STORES = ("milvus-lite", "milvus-server")
TOKEN = "root:not-the-default-1"


def run_cli(*arguments: str, token: str | None = TOKEN, **variables: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != TOKEN_VARIABLE}
    environment.update({TOKEN_VARIABLE: token} if token is not None else {}, **variables)
    return subprocess.run([sys.executable, "-m", "e2_hf.cli", *arguments], capture_output=True, text=True, timeout=600,
                          env=environment)  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A Milvus server that allows the 5 vector fields E2 needs (proxy.maxVectorFieldNum raised)."""
    with milvus_server(tmp_path_factory.mktemp("milvus-server"), token=TOKEN, max_vector_fields=10) as running:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(TOKEN_VARIABLE, TOKEN)  # for the stores this process opens
            yield running


@pytest.fixture(scope="module")
def model_and_processor(e2_model_dir):
    return E2CLIPModel.from_pretrained(str(e2_model_dir)).eval(), E2CLIPProcessor.from_pretrained(str(e2_model_dir))


@pytest.fixture(scope="module")
def stores(e2_model_dir, catalog, server, tmp_path_factory):
    """The catalog indexed by the command into a folder, a Milvus Lite file and a Milvus server, all exact."""
    folder = tmp_path_factory.mktemp("stores")
    stores = {"folder": str(folder / "index"), "milvus-lite": f"milvus-lite:{folder / 'catalog.db'}#shop",
              "milvus-server": f"{server.address}#shop"}  # fmt: skip
    for store in stores.values():
        built = run_cli("index", "--model", str(e2_model_dir), "--data", f"jsonl:{catalog / 'catalog.jsonl'}",
                        "--output", store, "--index-type", "flat", "--batch-size", "16")  # fmt: skip
        assert built.returncode == 0, built.stderr[-3000:]
    return stores


def answers(hits_per_query):
    return [[(hit.item.product_id, round(hit.score, 4)) for hit in hits] for hits in hits_per_query]


@pytest.mark.parametrize("kind", MILVUS_STORES)
def test_flat_search_gives_the_same_ids_in_the_same_order_as_the_folder(model_and_processor, stores, kind):
    model, processor = model_and_processor
    with MilvusIndex(stores[kind]) as milvus:
        same_flat_answers(model, processor, EmbeddingIndex(stores["folder"]), milvus)


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


@pytest.mark.parametrize("kind", MILVUS_STORES)
def test_weighted_and_filtered_queries_rank_as_on_the_folder(model_and_processor, stores, kind):
    model, processor = model_and_processor
    with MilvusIndex(stores[kind]) as milvus:
        same_weighted_answers(model, processor, EmbeddingIndex(stores["folder"]), milvus)


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


# each command runs on the folder and one Milvus store (in turn Lite and the server); the search
# functions themselves are compared on all three above
def test_the_search_command_reads_a_milvus_store(e2_model_dir, stores, tmp_path):
    outputs = {}
    for name in ("folder", "milvus-server"):
        store = stores[name]
        output = tmp_path / f"{name}.html"
        searched = run_cli("search", "--model", str(e2_model_dir), "--index", store, "--query", "Lumen",
                           "--weights", "global=0.5,brand=0.5", "--output", str(output))  # fmt: skip
        assert searched.returncode == 0, searched.stderr[-3000:]
        outputs[name] = [line.split()[2] for line in searched.stdout.splitlines() if line.startswith("#")]
        assert output.read_text().count("<img") == 10  # thumbnails come from the store
    assert outputs["folder"] == outputs["milvus-server"] and len(outputs["folder"]) == 10


def test_a_queries_file_of_texts_and_images_gives_the_same_hits_on_both(e2_model_dir, catalog, stores, tmp_path):
    queries = tmp_path / "queries.jsonl"
    image = next((catalog / "images").rglob("*.png"))
    queries.write_text(json.dumps({"text": "Lumen", "entity": "brand"}) + "\n"
                       + json.dumps({"image": str(image), "entity": "season", "id": "photo"}) + "\n"
                       + json.dumps({"image": str(image)}) + "\n")  # fmt: skip
    hits = {}
    for name in ("folder", "milvus-lite"):
        store, output = stores[name], tmp_path / f"{name}.jsonl"
        searched = run_cli("search", "--model", str(e2_model_dir), "--index", store, "--queries-file", str(queries),
                           "--output", str(output), "--top-k", "5")  # fmt: skip
        assert searched.returncode == 0, searched.stderr[-3000:]
        hits[name] = [
            [hit["product_id"] for hit in json.loads(line)["hits"]] for line in output.read_text().splitlines()
        ]
    assert hits["milvus-lite"] == hits["folder"]
    assert all(len(found) == 5 for found in hits["folder"])


def test_compose_search_reads_a_milvus_store(e2_model_dir, decap_folder, catalog, stores, tmp_path):
    image = next((catalog / "images").rglob("*.png"))
    found = {}
    for name in ("folder", "milvus-server"):
        store, output = stores[name], tmp_path / f"{name}.json"
        composed = run_cli("compose-search", "--model", str(e2_model_dir), "--captioner", str(decap_folder), "--index",
                           store, "--image", str(image), "--modify", "in FW2016", "--output", str(output))  # fmt: skip
        assert composed.returncode == 0, composed.stderr[-3000:]
        result = json.loads(output.read_text())
        found[name] = (result["rewritten"], [hit["product_id"] for hit in result["hits"]])
    assert found["milvus-server"] == found["folder"] and len(found["folder"][1]) == 10


def test_the_space_searches_a_milvus_store(e2_model_dir, stores):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install '.[test]')")
    from e2_hf.space.app import E2Space

    galleries = {}
    for name, store in stores.items():
        space = E2Space(str(e2_model_dir), store)
        assert space.candidates and len(space.index) == 50
        galleries[name] = space.search("Lumen", "brand", 6)
        space.index.close()
    for kind in MILVUS_STORES:
        assert [caption for _, caption in galleries[kind]] == [caption for _, caption in galleries["folder"]]
        for (milvus_thumbnail, _), (folder_thumbnail, _) in zip(galleries[kind], galleries["folder"]):
            np.testing.assert_array_equal(milvus_thumbnail, folder_thumbnail)


def test_adding_again_changes_nothing_and_a_resumed_add_writes_only_what_is_missing(model_and_processor, e2_model_dir,
                                                                                     catalog, tmp_path):  # fmt: skip
    from e2_hf.search import add_catalog, open_or_create_index

    model, processor = model_and_processor
    store = f"milvus-lite:{tmp_path / 'catalog.db'}"
    common = ["--model", str(e2_model_dir), "--output", store, "--index-type", "flat"]
    first = run_cli("index", *common, "--data", f"jsonl:{catalog / 'catalog.jsonl'}:train")
    assert first.returncode == 0, first.stderr[-3000:]
    before = {item.product_id: (item.row, vectors) for item, vectors in stored_rows(store)}
    with open_or_create_index(store, model, str(e2_model_dir)) as index:  # the same add again, in this process
        again = add_catalog(index, model, processor, f"jsonl:{catalog / 'catalog.jsonl'}:train")
    assert again.added == 40 and again.total == 40
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
    """`[(item, [targets, dim] vectors)]` of every row of a folder or a Milvus store."""
    with open_store(address) as index:
        return list(_stored_rows(index))


def _stored_rows(index):
    for items, image, regions, _ in index.read_rows(with_thumbnails=False):
        for position, item in enumerate(items):
            yield item, torch.cat([image[position : position + 1], regions[position]]).numpy()


@pytest.mark.parametrize("kind", MILVUS_STORES)
def test_migration_is_lossless_both_ways(stores, server, tmp_path, kind):
    to_milvus = {
        "milvus-lite": f"milvus-lite:{tmp_path / 'migrated.db'}",
        "milvus-server": f"{server.address}#migrated",
    }[kind]
    report = migrate(stores["folder"], to_milvus)
    assert report.rows == 50 and report.checked == 50 and report.max_difference == 0.0
    back = tmp_path / "back"
    migrate(to_milvus, str(back))
    original, returned = EmbeddingIndex(stores["folder"]), EmbeddingIndex(back)
    assert [item.to_json() for item in returned.items] == [item.to_json() for item in original.items]
    for target in original.targets:
        name = original.tensor_name(target)
        np.testing.assert_array_equal(returned.read_all(name), original.read_all(name))
    np.testing.assert_array_equal(returned.read_all("thumbnails"), original.read_all("thumbnails"))
    refused = run_cli("index", "--migrate", stores["folder"], to_milvus)
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


def test_bad_stores_are_one_line_errors_before_anything_is_written(e2_model_dir, small_clip, stores, tmp_path):
    other = tmp_path / "other-model"
    torch.manual_seed(1)
    from e2_hf import from_clip

    from_clip(str(small_clip), fusion_layers=[1, 2]).save_pretrained(other)
    E2CLIPProcessor.from_pretrained(str(e2_model_dir)).save_pretrained(other)
    cases = {
        "another model": (["index", "--model", str(other), "--data", "jsonl:unused.jsonl", "--output",
                           stores["milvus-lite"]], "was built with another model"),
        "unreachable": (["search", "--model", str(e2_model_dir), "--index", "milvus://127.0.0.1:9", "--query", "x",
                         "--output", str(tmp_path / "x.png")], "Milvus error connecting to milvus://127.0.0.1:9"),
    }  # fmt: skip
    with MilvusIndex(stores["milvus-lite"]) as index:
        count = len(index)
    for name, (arguments, message) in cases.items():
        completed = run_cli(*arguments)
        assert completed.returncode != 0 and message in completed.stderr, (name, completed.stderr[-2000:])
        assert "Traceback" not in completed.stderr, name
    with pytest.raises(EmbeddingIndexError, match="no collection 'nothing'"):
        MilvusIndex(stores["milvus-lite"].replace("#shop", "#nothing"))
    with pytest.raises(EmbeddingIndexError, match="ends in .db"):
        open_store("milvus-lite:catalog.sqlite")
    with MilvusIndex(stores["milvus-lite"]) as index:
        assert len(index) == count
        with pytest.raises(EmbeddingIndexError, match="unknown entity 'colour'"):
            zeros = torch.zeros(1, index.dim)
            search_weighted(index, {None: zeros, "colour": zeros}, {None: 1.0, "colour": 1.0}, 5, 50)


def test_a_collection_lacking_an_entity_field_is_refused(stores, tmp_path):
    with MilvusIndex(stores["milvus-lite"]) as index:
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


def test_two_processes_upsert_their_shares_into_a_server_directly(e2_model_dir, model_and_processor, catalog, stores,
                                                                  server):  # fmt: skip
    """`torchrun --nproc_per_node 2 -m e2_hf.cli index --output milvus://...` (gloo on CPU) after a
    one-process add of the training products, with --skip-existing: each process upserts its half of
    the new products into the server, and the collection equals the one-process folder build."""
    from e2_hf.search import add_catalog, open_or_create_index

    model, processor = model_and_processor
    data = f"jsonl:{catalog / 'catalog.jsonl'}"
    address = f"{server.address}#two_processes"
    with open_or_create_index(address, model, "e2", thumbnail_size=48, search_settings=SearchSettings("flat")) as index:
        add_catalog(index, model, processor, f"{data}:train")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), "-m", "e2_hf.cli", "index", "--model", str(e2_model_dir),
               "--data", data, "--output", address, "--skip-existing", "--batch-size", "4"]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600,
                               env={**os.environ, "OMP_NUM_THREADS": "1", TOKEN_VARIABLE: TOKEN})  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "added 10 products, 40 already there; the index has 50" in completed.stdout
    expected = {item.product_id: (item.row, vectors) for item, vectors in stored_rows(stores["folder"])}
    found = {item.product_id: (item.row, vectors) for item, vectors in stored_rows(address)}
    assert found.keys() == expected.keys()
    for product_id, (row, vectors) in expected.items():
        assert found[product_id][0] == row  # the rows a one-process add numbers
        np.testing.assert_allclose(found[product_id][1], vectors, atol=1e-5)


def test_a_wrong_or_missing_token_is_one_line_that_never_shows_the_token(e2_model_dir, stores, tmp_path, monkeypatch):
    arguments = ["search", "--model", str(e2_model_dir), "--index", stores["milvus-server"], "--query", "x",
                 "--output", str(tmp_path / "x.png")]  # fmt: skip
    wrong = run_cli(*arguments, token="root:a-wrong-secret")
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
    assert f"the server refused the token in {TOKEN_VARIABLE}" in wrong.stderr and "a-wrong-secret" not in wrong.stderr
    monkeypatch.delenv(TOKEN_VARIABLE)
    with pytest.raises(EmbeddingIndexError, match=f"the server needs a token: set {TOKEN_VARIABLE}"):
        MilvusIndex(stores["milvus-server"])


def test_tag_reads_a_store_as_its_catalog_and_as_its_candidates(model_and_processor, e2_model_dir, catalog, stores,
                                                                  tmp_path):  # fmt: skip
    """`tag --index STORE` scores the stored embeddings against the stored tags: the accuracy of
    `tag --data` on the catalog the store was built from. `--candidates STORE` takes its tags."""
    from e2_hf.data import open_catalog
    from e2_hf.evaluation.embedding import embed_catalog
    from e2_hf.tagging import StoredEmbeddings, catalog_candidates, tagging_accuracy, zero_shot_tags
    from e2_hf.visualization import load_images

    model, processor = model_and_processor
    spec = f"jsonl:{catalog / 'catalog.jsonl'}"
    expected = tagging_accuracy(model, processor, embed_catalog(model, processor, open_catalog(spec)))
    assert set(expected) == {"brand", "season", "subcategory", "composition"}
    measured = {}
    for kind in ("folder", "milvus-lite"):
        with open_store(stores[kind]) as store:
            measured[kind] = tagging_accuracy(model, processor, StoredEmbeddings.read(store))
    output = tmp_path / "server.json"
    tagged = run_cli("tag", "--model", str(e2_model_dir), "--index", stores["milvus-server"], "--output", str(output))
    assert tagged.returncode == 0, tagged.stderr[-3000:]
    measured["milvus-server"] = json.loads(output.read_text())["accuracy"]
    for kind, results in measured.items():
        for entity, result in expected.items():
            assert (results[entity]["items"], results[entity]["candidates"]) == (result["items"], result["candidates"])
            for source in ("region", "global"):
                assert results[entity][source] == pytest.approx(result[source], abs=1e-9), (kind, entity)
    image = next((catalog / "images").rglob("*.png"))
    candidates = catalog_candidates(open_catalog(spec), model.config.entities)
    reference = zero_shot_tags(model, processor, load_images([str(image)]), candidates, top_k=2)[0]
    output = tmp_path / "image.json"
    tagged = run_cli("tag", "--model", str(e2_model_dir), "--image", str(image), "--candidates",
                     stores["milvus-server"], "--top-k", "2", "--output", str(output))  # fmt: skip
    assert tagged.returncode == 0, tagged.stderr[-3000:]
    predicted = json.loads(output.read_text())[0]["tags"]
    assert {entity: [score["tag"] for score in scores] for entity, scores in predicted.items()} == {
        entity: [score.tag for score in scores] for entity, scores in reference.items()}  # fmt: skip
    wrong = run_cli("tag", "--model", str(e2_model_dir), "--index", stores["milvus-lite"].replace("#shop", "#none"))
    assert wrong.returncode != 0 and "no collection 'none'" in wrong.stderr and "Traceback" not in wrong.stderr


def test_build_space_points_a_space_at_a_server_collection(e2_model_dir, stores, server, tmp_path):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install '.[test]')")
    space = tmp_path / "space"
    built = run_cli("build-space", "--model", str(e2_model_dir), "--index", stores["milvus-server"], "--output",
                    str(space))  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    assert (space / "index.txt").read_text().strip() == stores["milvus-server"] and not (space / "index").exists()
    assert TOKEN not in "".join(path.read_text(errors="ignore") for path in space.rglob("*") if path.is_file())
    requirements = (space / "requirements.txt").read_text().split()
    assert any(line.startswith("pymilvus") for line in requirements)
    assert "50 products of its index" in (space / "README.md").read_text()
    found = subprocess.run([sys.executable, "-c", "import app; print(app.parse_arguments([]).index)"], cwd=space,
                           capture_output=True, text=True, timeout=300, env={**os.environ, "E2_INDEX": ""})  # fmt: skip
    assert found.stdout.strip() == stores["milvus-server"], found.stderr[-2000:]
    from e2_hf.space_bundle import build_space

    with pytest.raises(ValueError, match="a Space searches a Milvus server"):
        build_space(str(e2_model_dir), None, tmp_path / "lite-space", store=stores["milvus-lite"])
    assert not (tmp_path / "lite-space").exists()  # refused before anything is loaded or written


def test_an_https_server_with_a_private_certificate_is_trusted_through_the_ca_variable(e2_model_dir, catalog,
                                                                                       tmp_path):  # fmt: skip
    key, certificate = self_signed_certificate()
    (tmp_path / "ca.pem").write_bytes(certificate)
    with milvus_server(tmp_path / "tls-server", token=TOKEN, certificate=(key, certificate)) as secure:
        arguments = ["index", "--model", str(e2_model_dir), "--data", f"jsonl:{catalog / 'catalog.jsonl'}:validation",
                     "--output", secure.address]  # fmt: skip
        untrusted = run_cli(*arguments)
        assert untrusted.returncode != 0 and "Traceback" not in untrusted.stderr
        assert f"the server's TLS certificate is not trusted: set {CA_VARIABLE}" in untrusted.stderr
        assert "ssl_transport_security" not in untrusted.stderr  # gRPC's own log line of the failure is silenced
        trusted = run_cli(*arguments, **{CA_VARIABLE: str(tmp_path / "ca.pem")})
        assert trusted.returncode == 0, trusted.stderr[-3000:]
        assert "the index has 10" in trusted.stdout


def test_diskann_and_ivf_pq_are_asked_of_a_server_and_diskann_refused_by_name_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv(TOKEN_VARIABLE, TOKEN)
    settings = SearchSettings("diskann", hnsw_ef_search=300)
    arguments = ("planted", "f" * 16, ["brand"], 16, 8)
    with pytest.raises(EmbeddingIndexError, match="diskann is a Milvus server's index type; an index folder takes"):
        EmbeddingIndex.create(tmp_path / "folder", *arguments, "float32", settings)
    assert not (tmp_path / "folder").exists()
    with pytest.raises(EmbeddingIndexError, match="Milvus Lite has no DiskANN"):
        MilvusIndex.create(f"milvus-lite:{tmp_path / 'lite.db'}", *arguments, settings)
    with milvus_server(tmp_path / "server", token=TOKEN) as server:
        with MilvusIndex.create(f"{server.address}#disk", *arguments, settings) as store:
            assert store.metadata["index_type"] == "DISKANN" and set(server.index_types_asked) == {"DISKANN"}
            assert store._search_params(top_k=10) == {"metric_type": "IP", "params": {"search_list": 300}}
        server.index_types_asked.clear()  # ivfpq is IVF_PQ on a server (IVF_SQ8 on Milvus Lite)
        with MilvusIndex.create(f"{server.address}#pq", *arguments, SearchSettings("ivfpq", ivf_probes=7)) as store:
            assert store.metadata["index_type"] == "IVF_PQ" and set(server.index_types_asked) == {"IVF_PQ"}
            assert store._search_params(top_k=10) == {"metric_type": "IP", "params": {"nprobe": 7}}
    with milvus_server(tmp_path / "diskless", token=TOKEN, refused_index_types=frozenset({"DISKANN"})) as diskless:
        with pytest.raises(EmbeddingIndexError, match="index type DISKANN needs disk"):
            MilvusIndex.create(f"{diskless.address}#disk", *arguments, settings)
        with pytest.raises(EmbeddingIndexError, match="no collection 'disk'"):  # the half-made collection is gone
            MilvusIndex(f"{diskless.address}#disk")
