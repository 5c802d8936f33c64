"""The index under concurrent writers, damaged files and repeated product ids: nothing is lost or
mislabelled silently, and every damaged file is named."""

import hashlib
import json
import shutil
import struct
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch

from e2_hf import E2CLIPModel, E2CLIPProcessor
from e2_hf.data import open_catalog
from e2_hf.evaluation.embedding import embed_catalog
from e2_hf.search import EmbeddingIndex, EmbeddingIndexError, add_catalog, open_or_create_index, search_embedding
from e2_hf.search.index import writer_lock

FAISS_FILE = "faiss-00001-0.index"  # built_index's global FAISS index (its first commit of FAISS files)


def index_command(model_dir, data: str, folder) -> list[str]:
    return [sys.executable, "-m", "e2_hf.cli", "index", "--model", str(model_dir), "--data", data,
            "--output", str(folder), "--thumbnail-size", "16", "--batch-size", "4"]  # fmt: skip


@pytest.fixture(scope="module")
def model_and_processor(e2_model_dir):
    return E2CLIPModel.from_pretrained(e2_model_dir).eval(), E2CLIPProcessor.from_pretrained(e2_model_dir)


@pytest.fixture(scope="module")
def built_index(model_and_processor, catalog, tmp_path_factory):
    """The training products in two shards."""
    model, processor = model_and_processor
    index = open_or_create_index(tmp_path_factory.mktemp("index") / "index", model, "e2", thumbnail_size=16)
    add_catalog(index, model, processor, f"jsonl:{catalog / 'catalog.jsonl'}:train", shard_rows=20, batch_size=10)
    return index.folder


@pytest.fixture
def index_copy(built_index, tmp_path):
    return shutil.copytree(built_index, tmp_path / "index")


def test_concurrent_adds_queue_up_and_lose_nothing(model_and_processor, e2_model_dir, catalog, tmp_path):
    folder = tmp_path / "index"
    splits = ("train", "validation")
    processes = [
        subprocess.Popen(
            index_command(e2_model_dir, f"jsonl:{catalog / 'catalog.jsonl'}:{split}", folder),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for split in splits
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    index = EmbeddingIndex(folder)
    model, processor = model_and_processor
    expected = embed_catalog(model, processor, open_catalog(f"jsonl:{catalog / 'catalog.jsonl'}"))
    expected_rows = {product.product_id: row for row, product in enumerate(expected.catalog.products)}
    assert sorted(item.product_id for item in index.items) == sorted(expected_rows)  # both catalogs, once each
    images = index.read_all("image_embeds")
    for item in index.items:  # every row's embedding belongs to the product its item names
        np.testing.assert_allclose(images[item.row], expected.image_embeds[expected_rows[item.product_id]], atol=1e-5)
    assert index.verify() == []
    files = index.metadata["search"]["files"]  # the FAISS indices the lock covered hold both adds' rows
    assert len(files) == 5 and all(index.search_index(target).ntotal == 50 for target in index.targets)


def test_a_second_writer_waits_for_the_lock(e2_model_dir, catalog, tmp_path):
    folder = tmp_path / "index"
    with writer_lock(folder):
        process = subprocess.Popen(index_command(e2_model_dir, f"jsonl:{catalog / 'catalog.jsonl'}:train", folder),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        waited = ""
        while "waiting for it to finish" not in waited and process.poll() is None:
            waited += process.stderr.readline()
        assert "is being written by another process" in waited
        time.sleep(1)
        assert process.poll() is None and not (folder / "index.json").exists()  # nothing written meanwhile
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    assert len(EmbeddingIndex(folder)) == 40


def test_product_ids_repeated_in_one_catalog_are_refused_like_ids_in_the_index(model_and_processor, catalog, tmp_path):
    records = [json.loads(line) for line in (catalog / "catalog.jsonl").read_text().splitlines()][:6]
    for record in records:
        record["images"] = [str(catalog / image) for image in record["images"]]
    records.append(dict(records[2], description="the same id again"))
    path = tmp_path / "repeated.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    model, processor = model_and_processor
    index = open_or_create_index(tmp_path / "index", model, "e2", thumbnail_size=16)
    with pytest.raises(
        EmbeddingIndexError, match=rf"appear more than once in it \({records[2]['product_id']} \(row 7\)"
    ):
        add_catalog(index, model, processor, f"jsonl:{path}")
    assert len(EmbeddingIndex(index.folder)) == 0
    report = add_catalog(index, model, processor, f"jsonl:{path}", skip_existing=True)
    assert report.added == 6 and report.skipped_existing == 1
    kept = [item for item in EmbeddingIndex(index.folder).items if item.product_id == str(records[2]["product_id"])]
    assert len(kept) == 1 and kept[0].description == records[2]["description"]  # the first one


def overwrite(path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def tensor_offset(path, name: str) -> int:
    """Where tensor `name`'s bytes start in a safetensors file (8-byte header length, JSON header, data)."""
    with open(path, "rb") as handle:
        (header_length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_length))
    return 8 + header_length + header[name]["data_offsets"][0]


def test_a_shard_with_overwritten_bytes_is_found_and_never_indexed(index_copy):
    shard = index_copy / "shard-00000.safetensors"
    committed = EmbeddingIndex(index_copy).metadata["search"]
    first_row = EmbeddingIndex(index_copy).read_all("image_embeds")[0]
    overwrite(shard, tensor_offset(shard, "image_embeds"), np.full(4, np.nan, dtype=np.float32).tobytes())
    completed = subprocess.run([sys.executable, "-m", "e2_hf.cli", "index", "--rebuild", "--verify",
                                "--output", str(index_copy)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert completed.returncode != 0 and "Traceback" not in completed.stderr
    assert "shard-00000.safetensors: its bytes differ from the SHA-256" in completed.stderr
    with pytest.raises(EmbeddingIndexError, match=r"shard-00000.safetensors: image_embeds has 1 rows with non-finite"):
        with writer_lock(index_copy):
            EmbeddingIndex(index_copy).commit_search_indices(rebuild=True)
    index = EmbeddingIndex(index_copy)  # the committed FAISS indices stay, built before the damage
    assert index.metadata["search"] == committed
    hits = search_embedding(index, torch.from_numpy(first_row), top_k=5)
    assert [hit.row for hit in hits][:1] == [0] and len(hits) == 5


def test_a_corrupt_faiss_file_is_named_and_rebuild_recreates_it(index_copy):
    recorded = EmbeddingIndex(index_copy).metadata["search"]["files"][2]
    overwrite(index_copy / recorded["file"], 0, b"\xff" * 8)
    entity = EmbeddingIndex(index_copy).entities[1]
    with pytest.raises(EmbeddingIndexError, match=rf"{recorded['file']}: its bytes differ from the SHA-256.*--rebuild"):
        EmbeddingIndex(index_copy).search_index(entity)
    # with a checksum that matches the damaged bytes, FAISS's own refusal is named
    sha256 = hashlib.sha256((index_copy / recorded["file"]).read_bytes()).hexdigest()
    rewrite_metadata(index_copy, lambda m: {**m, "search": {**m["search"], "files": [
        dict(f, sha256=sha256) if f["file"] == recorded["file"] else f for f in m["search"]["files"]]}})  # fmt: skip
    with pytest.raises(EmbeddingIndexError, match=rf"{recorded['file']} is not a readable FAISS index.*--rebuild"):
        EmbeddingIndex(index_copy).search_index(entity)
    assert any(recorded["file"] in problem for problem in EmbeddingIndex(index_copy).verify())
    completed = subprocess.run([sys.executable, "-m", "e2_hf.cli", "index", "--rebuild", "--index-type", "hnsw",
                                "--output", str(index_copy)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    index = EmbeddingIndex(index_copy)
    assert index.verify() == [] and [f["type"] for f in index.metadata["search"]["files"]] == ["hnsw"] * 5
    assert index.search_settings.index_type == "hnsw"


def test_a_sound_index_verifies(built_index):
    completed = subprocess.run([sys.executable, "-m", "e2_hf.cli", "index", "--verify", "--output", str(built_index)],
                               capture_output=True, text=True, timeout=300)  # fmt: skip
    assert completed.returncode == 0 and "all checksums match" in completed.stdout


def rewrite_metadata(folder, change) -> None:
    path = folder / "index.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda folder: (folder / "index.json").write_text("[1, 2]"), r"index.json holds a JSON list, not an object"),
        (lambda folder: rewrite_metadata(folder, lambda m: {k: v for k, v in m.items() if k != "shards"}),
         r"index.json lacks the field 'shards'"),
        (lambda folder: rewrite_metadata(folder, lambda m: {**m, "rows": "many"}), r"field 'rows' is not a int"),
        (lambda folder: rewrite_metadata(folder, lambda m: {**m, "shards": [dict(m["shards"][0], rows=3),
                                                                          *m["shards"][1:]], "rows": m["rows"] - 17,
                                                     "search": {**m["search"], "files": []}}),
         r"shard-00000.safetensors: image_embeds is \(\(20, 16\), 'F32'\), index.json \(3 rows\) needs \(\(3, 16\)"),
        (lambda folder: (folder / "items.jsonl").write_text("{not json\n" * 40),
         r"items.jsonl line 1: not valid JSON"),
        (lambda folder: (folder / "items.jsonl").write_text(
            "".join(json.dumps({"product_id": "p", "description": "", "tags": {}, "source": "s", "colour": "red"})
                    + "\n" for _ in range(40))),
         r"items.jsonl line 1: unknown fields \['colour'\]"),
        (lambda folder: overwrite(folder / "shard-00001.safetensors", 0, b"\xff" * 16),
         r"shard-00001.safetensors is not a readable safetensors file"),
        (lambda folder: (folder / "shard-00001.safetensors").write_bytes(
            (folder / "shard-00001.safetensors").read_bytes()[:-100]),
         r"shard-00001.safetensors has \d+ bytes, index.json recorded \d+"),
        (lambda folder: (folder / FAISS_FILE).write_bytes((folder / FAISS_FILE).read_bytes()[:-9]),
         rf"{FAISS_FILE} has \d+ bytes, index.json recorded \d+"),
        (lambda folder: (folder / FAISS_FILE).unlink(), rf"FAISS index .*{FAISS_FILE} is missing"),
        (lambda folder: rewrite_metadata(folder, lambda m: {**m, "version": 1}),
         r"an index of e2-hf 0.1.*build it again"),
    ],
    ids=["list", "no-shards", "rows-type", "rows-fewer", "items-json", "items-key", "garbage-header", "truncated",
         "faiss-truncated", "faiss-missing", "version-1"],
)  # fmt: skip
def test_damaged_index_files_are_named(index_copy, damage, message):
    damage(index_copy)
    with pytest.raises(EmbeddingIndexError, match=message):
        index = EmbeddingIndex(index_copy)
        index.items, index.shards, index.search_index(None)  # noqa: B018 (reading them runs the checks)


def test_a_truncated_shard_without_a_recorded_size_is_still_named(index_copy):
    rewrite_metadata(index_copy, lambda m: {**m, "shards": [{k: v for k, v in s.items() if k != "bytes"}
                                                            for s in m["shards"]]})  # fmt: skip
    shard = index_copy / "shard-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(
        EmbeddingIndexError, match=r"shard-00001.safetensors is not a readable safetensors file.*covered"
    ):
        EmbeddingIndex(index_copy).shards  # noqa: B018
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert any("shard-00001" in problem for problem in EmbeddingIndex(index_copy).verify())


def test_model_folders_without_config_or_with_truncated_weights_are_named(e2_model_dir, catalog, tmp_path):
    no_config = shutil.copytree(e2_model_dir, tmp_path / "no-config")
    (no_config / "config.json").unlink()
    truncated = shutil.copytree(e2_model_dir, tmp_path / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for model, message in ((no_config, "is not a model folder: config.json is missing"),
                           (truncated, "model.safetensors is damaged or truncated")):  # fmt: skip
        for command in (index_command(model, f"jsonl:{catalog / 'catalog.jsonl'}", tmp_path / "index"),
                        [sys.executable, "-m", "e2_hf.cli", "train", "--model", str(model), "--train-data",
                         f"fashiongen:{catalog / 'train.h5'}", "--output-dir", str(tmp_path / "run")]):  # fmt: skip
            completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
            assert completed.returncode != 0 and message in completed.stderr, completed.stderr[-2000:]
            assert "Traceback" not in completed.stderr
