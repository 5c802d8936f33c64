"""Catalog readers, the synthetic catalog, batching, the BPE learner and retrieval metrics."""

import csv
import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from e2_hf.data import E2Collator, ImageLoadError, ProductDataset, open_catalog, parse_spec
from e2_hf.evaluation import retrieval_metrics, sample100_candidates, sample100_metrics
from e2_hf.synthetic import make_synthetic
from e2_hf.tokenization import learn_bpe_merges

from .conftest import TAG_ENTITIES


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    make_synthetic(folder, products=20, seed=3, views=3, image_size=32, progress=False)
    return folder


def digest(folder) -> str:
    hasher = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix != ".h5":  # HDF5 files carry creation times
            hasher.update(path.name.encode() + path.read_bytes())
    return hasher.hexdigest()


def test_synthetic_catalog_is_deterministic_and_in_both_layouts(synthetic, tmp_path):
    make_synthetic(tmp_path / "again", products=20, seed=3, views=3, image_size=32, progress=False)
    assert digest(tmp_path / "again") == digest(synthetic)
    h5 = open_catalog(f"fashiongen:{synthetic / 'train.h5'}")
    jsonl = open_catalog(f"jsonl:{synthetic / 'catalog.jsonl'}:train")
    assert len(h5) == len(jsonl) == 16 and h5[0].num_views == 3
    for index in (0, 7):
        assert h5[index].description == jsonl[index].description
        assert {e: h5[index].tags[e] for e in TAG_ENTITIES} == {e: jsonl[index].tags[e] for e in TAG_ENTITIES}
        assert np.array_equal(np.asarray(h5.load_image(index, 2)), np.asarray(jsonl.load_image(index, 2)))
    assert not np.array_equal(np.asarray(h5.load_image(0, 0)), np.asarray(h5.load_image(0, 1)))  # views differ


def test_hard_catalog_collides_on_all_but_the_details(tmp_path):
    make_synthetic(tmp_path, products=60, seed=0, views=1, image_size=32, hard=True, progress=False)
    catalog = open_catalog(f"jsonl:{tmp_path / 'catalog.jsonl'}")
    assert len({p.tags["subcategory"] for p in catalog.products}) <= 2
    assert len({p.tags["composition"] for p in catalog.products}) <= 3
    assert len({p.tags["brand"] for p in catalog.products}) > 20  # tags repeat across a batch, details differ


def test_fashiongen_groups_rows_by_product_id(tmp_path):
    import h5py

    path = tmp_path / "fashiongen_256_256_validation.h5"
    with h5py.File(path, "w") as handle:
        handle["input_image"] = (np.zeros((5, 8, 8, 3)) + np.arange(5)[:, None, None, None]).astype(np.uint8)
        handle["input_productID"] = np.array([[7], [7], [9], [4], [4]])
        handle["input_description"] = np.array([[b"Caf\xe9 shirt"]] * 5)
        handle["input_brand"] = np.array([[b"Gucci"], [b"Gucci"], [b" "], [b"Prada"], [b"Prada"]])
    catalog = open_catalog(f"fashiongen:{path}")
    assert [p.product_id for p in catalog.products] == ["7", "9", "4"]
    assert [p.num_views for p in catalog.products] == [2, 1, 2]
    assert catalog[0].description == "Café shirt"  # latin-1
    assert catalog[1].tags["brand"] is None  # blank tag = missing
    assert np.asarray(catalog.load_image(2, 1)).max() == 4


def test_csv_amazon_and_datasets_readers(tmp_path):
    image = Image.new("RGB", (8, 8), "red")
    image.save(tmp_path / "a.png")
    image.save(tmp_path / "b.png")
    with open(tmp_path / "items.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["images", "description", "brand", "split"])
        writer.writeheader()
        writer.writerow({"images": "a.png;b.png", "description": "red shirt", "brand": "Gucci", "split": "train"})
        writer.writerow({"images": "b.png", "description": "red skirt", "brand": "", "split": "test"})
    catalog = open_catalog(f"csv:{tmp_path / 'items.csv'}:train")
    assert len(catalog) == 1 and catalog[0].num_views == 2 and catalog[0].tags == {"brand": "Gucci"}
    assert open_catalog(f"csv:{tmp_path / 'items.csv'}:test")[0].tags["brand"] is None

    (tmp_path / "Fashion" / "B01").mkdir(parents=True)
    image.save(tmp_path / "Fashion" / "B01" / "1.jpg")
    (tmp_path / "meta-fashion.json").write_text(json.dumps({"B01": {"title": "Red dress", "brand": "Zara",
                                                                      "images": ["1.jpg"]}}))  # fmt: skip
    (tmp_path / "split.json").write_text(json.dumps({"train": ["B01"], "test": []}))
    amazon = open_catalog(f"amazon:{tmp_path}:train")
    assert amazon[0].description == "Red dress" and amazon[0].tags == {"brand": "Zara"}
    assert amazon.load_image(0).size == (8, 8)

    datasets = pytest.importorskip("datasets")
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"image": [image, image], "caption": ["red shirt", "red skirt"],
                                "brand": ["Gucci", None]}).save_to_disk(str(saved))  # fmt: skip
    from e2_hf.data import HFDatasetCatalog

    hf = HFDatasetCatalog(saved, column_map={"caption": "description"})
    assert [p.description for p in hf.products] == ["red shirt", "red skirt"] and hf[1].tags["brand"] is None
    assert hf.load_image(0).size == (8, 8)


def test_bad_specs_and_rows_are_named(tmp_path):
    assert parse_spec("jsonl:/data/items.jsonl:validation") == ("jsonl", "/data/items.jsonl", "validation")
    with pytest.raises(ValueError, match="must start with one of"):
        open_catalog("parquet:items.parquet")
    (tmp_path / "items.jsonl").write_text('{"image": "a.png", "description": "ok"}\n{"image": "a.png"\n')
    with pytest.raises(ValueError, match="items.jsonl row 2: not valid JSON"):
        open_catalog(f"jsonl:{tmp_path / 'items.jsonl'}")
    with pytest.raises(FileNotFoundError):
        open_catalog(f"fashiongen:{tmp_path / 'missing.h5'}")


def test_dataset_views_and_collator(synthetic, tiny_processor):
    catalog = open_catalog(f"jsonl:{synthetic / 'catalog.jsonl'}:train")
    training = ProductDataset(catalog, TAG_ENTITIES, training=True, seed=0)
    views = set()
    for epoch in range(6):
        training.set_epoch(epoch)
        views.add(training.view_of(0))
    assert len(views) > 1  # one random view per product per epoch
    assert ProductDataset(catalog, TAG_ENTITIES, training=False).view_of(0) == 0
    assert training[0]["text"].startswith(catalog[0].tags["composition"])  # tags before the description

    (synthetic / catalog.image_paths[1][0]).write_bytes(b"broken")
    items = [ProductDataset(catalog, TAG_ENTITIES, training=False)[index] for index in range(3)]
    batch = E2Collator(tiny_processor)(items)
    assert batch["pixel_values"].shape[0] == 2 and len(batch["skipped_images"]) == 1
    assert "catalog.jsonl row 2, view 0" in batch["skipped_images"][0]
    assert batch["tag_input_ids"].shape[:2] == (2, 4) and batch["return_loss"] is True
    with pytest.raises(ImageLoadError, match="row 2"):
        E2Collator(tiny_processor, strict=True)(items)


def test_bpe_learner_is_deterministic_and_merges_frequent_pairs():
    texts = ["cotton shirt", "cotton dress", "silk shirt"] * 5
    merges = learn_bpe_merges(texts, num_merges=50)
    assert merges == learn_bpe_merges(texts, num_merges=50)
    assert ("c", "o") in merges[:10] or ("o", "t") in merges[:10]
    assert "".join(merges[-1]).endswith("</w>") or len(merges) <= 50


def test_retrieval_ties_do_not_favour_the_positive():
    embeds = torch.eye(4)
    assert retrieval_metrics(embeds, embeds)["image_to_text"]["R@1"] == 100.0
    constant = torch.ones(4, 3)  # every candidate ties with the positive: rank = N - 1
    metrics = retrieval_metrics(constant, constant, ks=(1, 4))
    assert metrics["image_to_text"] == {"R@1": 0.0, "R@4": 100.0}
    planted = torch.randn(50, 8)
    shuffled = planted[torch.randperm(50)]
    assert retrieval_metrics(planted, shuffled, chunk_size=7)["text_to_image"]["R@1"] < 20


def test_sample100_uses_same_subcategory_negatives_then_tops_up():
    labels = ["A"] * 150 + ["B"] * 30
    rng = np.random.default_rng(0)
    candidates = sample100_candidates(labels, 0, 100, rng)
    assert candidates[0] == 0 and len(set(candidates)) == 101 and all(labels[i] == "A" for i in candidates)
    topped = sample100_candidates(labels, 160, 100, rng)
    assert sum(labels[i] == "B" for i in topped[1:]) == 29 and len(topped) == 101
    embeds = torch.randn(180, 16)
    metrics = sample100_metrics(embeds, embeds, labels, queries=50, seeds=2)
    assert metrics["image_to_text"]["R@1"] == 100.0 and metrics["sumr"] == 600.0
