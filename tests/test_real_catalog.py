"""Every command on a real catalog (../shared/data/real_catalog: 170 products of a public sample
store, portrait studio photos, HTML descriptions, multi-value attributes, no brand) at toy model
size: the texts are cleaned, truncation and the untagged brand are reported, nothing crashes."""

import json
import re
import subprocess
import sys

import pytest

from e2_hf.data import clean_tag, open_catalog

from .conftest import SHARED, require_shared

REAL_CATALOG = SHARED / "data" / "real_catalog" / "catalog.jsonl"
MARKUP = re.compile(r"<[a-z/][^>]*>|&[a-z]+;")


def run_cli(*arguments: str) -> subprocess.CompletedProcess:
    completed = subprocess.run([sys.executable, "-m", "e2_hf.cli", *arguments], capture_output=True, text=True,
                               timeout=900)  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr
    return completed


@pytest.fixture(scope="module")
def real_catalog():
    return f"jsonl:{require_shared(REAL_CATALOG)}"


def test_html_texts_are_reduced_to_readable_text(real_catalog):
    catalog = open_catalog(real_catalog)
    raw = open_catalog(real_catalog, keep_html=True)
    assert sum(bool(MARKUP.search(product.description)) for product in raw.products) > 100  # the export is HTML
    assert not any(MARKUP.search(product.description) for product in catalog.products)
    hoodie = next(product for product in catalog.products if product.product_id == "MH01")
    assert (
        "superior warmth with every wear." in hoodie.description and "Drawstring-adjustable hood." in hoodie.description
    )
    assert "•" not in hoodie.description and "  " not in hoodie.description
    compositions = {product.tags["composition"] for product in catalog.products if product.tags["composition"]}
    assert any("Cocona®" in c for c in compositions) and not any("&reg;" in c for c in compositions)


def test_html_to_text_on_the_markup_real_exports_use():
    assert clean_tag("<p>Soft cotton.<br />&bull; Machine wash<ul><li>Slim fit</li></ul>") == (
        "Soft cotton. Machine wash. Slim fit"
    )
    assert clean_tag("<p>Unclosed paragraph<p>Second") == "Unclosed paragraph. Second"
    assert clean_tag("Cocona&reg; performance fabric") == "Cocona® performance fabric"
    assert clean_tag("Hoodies & Sweatshirts") == "Hoodies & Sweatshirts"  # a bare ampersand is not markup
    assert clean_tag("a  long\n description") == "a long description"
    assert clean_tag("<p>kept</p>", keep_html=True) == "<p>kept</p>"
    assert clean_tag("<p> </p>") is None


def test_commands_end_to_end_on_the_real_catalog(real_catalog, e2_model_dir, tmp_path):
    separators = ["--tag-separator", "season=|", "--tag-separator", "composition=|\\n"]
    evaluated = run_cli("evaluate", "--model", str(e2_model_dir), "--data", real_catalog, "--regions", *separators,
                        "--output", str(tmp_path / "e.json"))  # fmt: skip
    assert re.search(r"\d+ of 170 product texts of .* are longer than the \d+-token context", evaluated.stderr)
    assert "has a brand tag (170 products): left out of the region metrics" in evaluated.stderr
    assert json.loads((tmp_path / "e.json").read_text())["region"]["season"]["distinct_tags"] == 11

    index = tmp_path / "index"
    indexed = run_cli("index", "--model", str(e2_model_dir), "--data", real_catalog, *separators,
                      "--output", str(index))  # fmt: skip
    assert "has a brand tag (170 products): its regional embeddings are stored" in indexed.stderr
    from e2_hf.search import EmbeddingIndex
    from e2_hf.tagging import catalog_candidates

    assert len(catalog_candidates(EmbeddingIndex(index), ["season"])["season"]) == 11  # the Space's candidates
    page = tmp_path / "brand.html"
    searched = run_cli("search", "--model", str(e2_model_dir), "--index", str(index), "--query", "Luma",
                       "--entity", "brand", "--output", str(page))  # fmt: skip
    assert "warning: no product in" in searched.stderr and "has a brand tag" in searched.stderr
    html = page.read_text()
    assert "&lt;p&gt;" not in html and "&amp;bull;" not in html

    photo = sorted((REAL_CATALOG.parent / "images").glob("*.jpg"))[0]
    run_cli("visualize", "--model", str(e2_model_dir), "--image", str(photo), "--output", str(tmp_path / "map.png"))
    assert (tmp_path / "map.png").stat().st_size > 0
    tagged = run_cli("tag", "--model", str(e2_model_dir), "--data", real_catalog, "--output", str(tmp_path / "t.json"))
    assert "has a brand tag (170 products): no tagging accuracy can be measured" in tagged.stderr
    assert json.loads((tmp_path / "t.json").read_text())["accuracy"]["season"]["candidates"] == 61  # as one label
    run_cli(
        "tag", "--model", str(e2_model_dir), "--data", real_catalog, *separators, "--output", str(tmp_path / "m.json")
    )
    season = json.loads((tmp_path / "m.json").read_text())["accuracy"]["season"]
    assert season["candidates"] == 11 and season["items"] == 147  # the climate values, on the apparel


def test_training_a_few_steps_records_the_untagged_entity(real_catalog, e2_model_dir, tmp_path):
    trained = run_cli("train", "--model", str(e2_model_dir), "--train-data", f"{real_catalog}:train",
                      "--output-dir", str(tmp_path / "run"), "--warmup-epochs", "0", "--epochs", "1",
                      "--batch-size", "32", "--save-steps", "100")  # fmt: skip
    assert "has a brand tag (123 products): its region loss is masked for every product" in trained.stderr
    assert re.search(r"product texts of .* are longer than the \d+-token context", trained.stderr)
    model = tmp_path / "run" / "model"
    assert json.loads((model / "training_args.json").read_text())["untagged_entities"] == ["brand"]
    index = tmp_path / "index"
    run_cli("index", "--model", str(model), "--data", f"{real_catalog}:val", "--output", str(index))
    searched = run_cli("search", "--model", str(model), "--index", str(index), "--query", "Luma", "--entity",
                       "brand", "--output", str(tmp_path / "brand.png"))  # fmt: skip
    assert "was trained on data without any brand tag" in searched.stderr
