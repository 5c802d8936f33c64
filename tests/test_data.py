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


def write_csv(path, rows: list[str], encoding: str = "utf-8") -> str:
    path.write_bytes(("\n".join(["product_id,images,description,brand", *rows]) + "\n").encode(encoding))
    return f"csv:{path}"


def good_rows(count: int = 16) -> list[str]:
    return [f"{index},a.png,plain shirt number {index},Brand {index}" for index in range(count)]


def test_a_csv_quote_that_swallows_rows_is_named_not_loaded(tmp_path):
    rows = good_rows()
    rows[3] = '3,a.png,"a 12 inch bag,Brand 3'  # opened, never closed: the reader would take the rest as one field
    with pytest.raises(ValueError, match=r"items.csv line 5: malformed CSV .*unbalanced or stray quote"):
        open_catalog(write_csv(tmp_path / "items.csv", rows))
    rows[8] = '8,a.png,the "classic" fit,Brand 8'  # a second stray quote closes the first: rows 4-8 become one field
    with pytest.raises(ValueError, match=r"items.csv row 5 \(line 5\): .*malformed CSV|line 5: malformed CSV"):
        open_catalog(write_csv(tmp_path / "items.csv", rows))
    rows = good_rows()
    rows[3] = '3,a.png,"a 12 inch bag,Brand 3'
    rows[5] = '5,a.png,plain shirt",Brand 5'  # a stray quote that closes it: 4 fields, rows 4-6 in one field
    with pytest.raises(ValueError, match=r"items.csv row 5: a quoted field spans 3 lines that look like CSV rows"):
        open_catalog(write_csv(tmp_path / "items.csv", rows))
    rows = good_rows()
    rows[2] = '2,a.png,"a long description\nover two lines",Brand 2'  # legal: kept as one product
    catalog = open_catalog(write_csv(tmp_path / "items.csv", rows))
    assert len(catalog) == 16 and catalog[2].description == "a long description over two lines"  # whitespace cleaned


def test_csv_rows_with_other_field_counts_and_other_encodings_are_named(tmp_path):
    rows = good_rows()
    rows[6] = "6,a.png,plain shirt,Brand 6,extra"
    with pytest.raises(ValueError, match=r"items.csv row 8: 5 fields, the header has 4"):
        open_catalog(write_csv(tmp_path / "items.csv", rows))
    rows[6] = "6,a.png,plain shirt"
    with pytest.raises(ValueError, match=r"items.csv row 8: 3 fields, the header has 4"):
        open_catalog(write_csv(tmp_path / "items.csv", rows))
    rows = good_rows()
    rows[4] = "4,a.png,Café shirt,Brand 4"
    with pytest.raises(ValueError, match=r"items.csv line 6 is not UTF-8 \(byte 0xe9 at column 12\).*save the file as"):
        open_catalog(write_csv(tmp_path / "items.csv", rows, encoding="latin-1"))
    assert open_catalog(write_csv(tmp_path / "items.csv", rows, encoding="utf-8-sig"))[4].description == "Café shirt"


def test_jsonl_records_of_the_wrong_shape_are_named(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"image": "a.png", "description": "ok"}\n["a.png", "a list"]\n')
    with pytest.raises(ValueError, match=r"items.jsonl row 2: a JSON list, not an object"):
        open_catalog(f"jsonl:{path}")
    path.write_text('{"images": 5, "description": "ok"}\n')
    with pytest.raises(ValueError, match=r"items.jsonl row 1: field 'images' must be an image path or a list of paths"):
        open_catalog(f"jsonl:{path}")


def test_hdf5_files_of_the_wrong_kind_or_shape_are_named(tmp_path):
    import h5py

    (tmp_path / "empty.h5").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.h5 is not an HDF5 file \(it is empty\)"):
        open_catalog(f"fashiongen:{tmp_path / 'empty.h5'}")
    (tmp_path / "text.h5").write_text("product_id,description\n")
    with pytest.raises(ValueError, match=r"text.h5 is not an HDF5 file$"):
        open_catalog(f"fashiongen:{tmp_path / 'text.h5'}")

    def fashiongen(name, images, product_ids):
        with h5py.File(tmp_path / name, "w") as handle:
            handle["input_image"] = images
            handle["input_productID"] = product_ids
            handle["input_description"] = np.array([[b"a shirt"]] * len(images))
        return f"fashiongen:{tmp_path / name}"

    images = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    flat_ids = open_catalog(fashiongen("flat_ids.h5", images, np.array([1, 1, 2])))  # 1-D ids: read as they are
    assert [product.product_id for product in flat_ids.products] == ["1", "2"]
    with pytest.raises(ValueError, match=r"dataset 'input_productID' has shape \(2, 1\); one value per image \(3\)"):
        open_catalog(fashiongen("short_ids.h5", images, np.array([[1], [2]])))
    with pytest.raises(ValueError, match=r"'input_image' has shape \(3, 8, 8, 3\) and dtype float64; .* are uint8 RGB"):
        open_catalog(fashiongen("float.h5", images.astype(np.float64), np.array([[1], [1], [2]])))


def test_multi_value_tags_are_split_cleaned_and_order_free(tmp_path):
    from e2_hf.data.catalogs import parse_tag_separators, split_tag

    assert split_tag("Spring|All-weather| spring |", "|") == ("All-weather", "Spring")
    assert split_tag("Nylon\nPolyester", "|\n") == ("Nylon", "Polyester")
    assert split_tag("Cocona&reg; fabric|Polyester", "|") == ("Cocona® fabric", "Polyester")
    assert parse_tag_separators(["season=|", "composition=|\\n"]) == {"season": "|", "composition": "|\n"}
    with pytest.raises(ValueError, match="write ENTITY=CHARACTERS"):
        parse_tag_separators(["season"])
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    records = [{"image": "a.png", "description": "a", "season": "Spring|Cool", "composition": "Nylon\nPolyester"},
               {"image": "a.png", "description": "b", "season": "Cool|Spring", "composition": "Wool"},
               {"image": "a.png", "description": "c", "season": None, "composition": "Wool"}]  # fmt: skip
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    catalog = open_catalog(f"jsonl:{tmp_path / 'items.jsonl'}", tag_separators={"season": "|", "composition": "|\n"})
    assert catalog.value_sets("season") == [("Cool", "Spring"), ("Cool", "Spring"), ()]
    assert catalog[0].tags["season"] == catalog[1].tags["season"] == "Cool, Spring"  # one tag text, any order
    assert catalog[2].tags["season"] is None and catalog.value_sets("composition")[0] == ("Nylon", "Polyester")
    single = open_catalog(f"jsonl:{tmp_path / 'items.jsonl'}")
    assert single.value_sets("season") == [("Spring|Cool",), ("Cool|Spring",), ()]  # without: one value each
