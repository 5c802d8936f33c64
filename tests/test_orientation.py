"""Photos stored sideways with an EXIF orientation are read upright everywhere a file is opened:
the catalog loader (training, evaluation), the index, `visualize`, `tag` and the Space."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from e2_hf import E2CLIPModel, E2CLIPProcessor
from e2_hf.data import open_catalog
from e2_hf.images import EXIF_ORIENTATION, open_image
from e2_hf.search import EmbeddingIndex, add_catalog, open_or_create_index
from e2_hf.visualization import load_images

# EXIF orientation 6: the stored pixels must be turned 90 degrees clockwise to be seen upright.
TURNED_CLOCKWISE = 6


def portrait_product_photo() -> Image.Image:
    """40x60, red top half and blue bottom half with a black mark at the top left: no turn or flip
    of it equals it."""
    pixels = np.zeros((60, 40, 3), dtype=np.uint8)
    pixels[:30] = (200, 30, 30)
    pixels[30:] = (30, 30, 200)
    pixels[2:8, 2:8] = 0
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The same photo stored upright, and sideways with orientation 6, as a phone would save it."""
    folder = tmp_path_factory.mktemp("photos")
    upright = portrait_product_photo()
    upright.save(folder / "upright.jpg", quality=95)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = TURNED_CLOCKWISE
    upright.rotate(90, expand=True).save(folder / "sideways.jpg", quality=95, exif=exif)  # pixels turned back
    records = [{"product_id": name, "images": [f"{name}.jpg"], "description": "a red and blue shirt",
                "brand": "Aurel", "season": "SS2017", "subcategory": "SHIRTS", "composition": "100% cotton"}
               for name in ("upright", "sideways")]  # fmt: skip
    (folder / "catalog.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    return folder


def close(first: Image.Image, second: Image.Image) -> bool:
    """Equal up to JPEG noise (a sideways copy compared upright differs by far more)."""
    if first.size != second.size:
        return False
    return float(np.abs(np.asarray(first, dtype=float) - np.asarray(second, dtype=float)).mean()) < 4


def test_the_sideways_file_really_is_stored_sideways(photos):
    with Image.open(photos / "sideways.jpg") as raw:
        assert raw.size == (60, 40) and raw.getexif()[EXIF_ORIENTATION] == TURNED_CLOCKWISE


def test_files_are_opened_upright(photos):
    assert close(open_image(photos / "sideways.jpg"), open_image(photos / "upright.jpg"))
    assert close(*load_images([photos / "sideways.jpg", photos / "upright.jpg"]))  # visualize and tag
    catalog = open_catalog(f"jsonl:{photos / 'catalog.jsonl'}")  # training, evaluation, indexing
    assert close(catalog.load_image(1), catalog.load_image(0))


def test_the_index_stores_the_upright_view(photos, e2_model_dir, tmp_path):
    model, processor = E2CLIPModel.from_pretrained(e2_model_dir).eval(), E2CLIPProcessor.from_pretrained(e2_model_dir)
    index = open_or_create_index(tmp_path / "index", model, "e2", thumbnail_size=30)
    add_catalog(index, model, processor, f"jsonl:{photos / 'catalog.jsonl'}")
    index = EmbeddingIndex(index.folder)
    assert close(Image.fromarray(index.thumbnail(1)), Image.fromarray(index.thumbnail(0)))
    images = index.read_all("image_embeds")
    np.testing.assert_allclose(images[1], images[0], atol=0.02)


def test_visualize_and_tag_commands_see_the_upright_photo(photos, e2_model_dir, tmp_path):
    candidates = tmp_path / "candidates.json"
    candidates.write_text(json.dumps({"brand": ["Aurel", "Kato"], "season": ["SS2017", "FW2016"]}))
    tags = {}
    for name in ("upright", "sideways"):
        output = tmp_path / f"{name}.json"
        command = [sys.executable, "-m", "e2_hf.cli", "tag", "--model", str(e2_model_dir), "--image",
                   str(photos / f"{name}.jpg"), "--candidates", str(candidates), "--output", str(output)]  # fmt: skip
        completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert completed.returncode == 0, completed.stderr[-3000:]
        tags[name] = json.loads(output.read_text())[0]["tags"]
    for entity, scores in tags["upright"].items():
        turned = {score["tag"]: score["probability"] for score in tags["sideways"][entity]}
        for score in scores:
            assert abs(turned[score["tag"]] - score["probability"]) < 0.02


def test_the_space_turns_an_uploaded_photo_upright(photos):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install '.[test]')")
    from e2_hf.space.app import open_upload

    assert close(open_upload(photos / "sideways.jpg"), open_upload(photos / "upright.jpg"))
