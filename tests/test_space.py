"""`e2-hf build-space` and the Gradio Space app, served on 127.0.0.1 and used in headless Chromium."""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from PIL import Image

from e2_hf import E2CLIPModel, E2CLIPProcessor
from e2_hf.local_paths import local_path_leaks
from e2_hf.search import EmbeddingIndex
from e2_hf.visualization import render_selection_figure, selection_maps

from .browser import chromium_page, chromium_path

STARTUP_SECONDS = 180


@pytest.fixture(scope="module")
def space_dir(e2_model_dir, catalog, tmp_path_factory):
    folder = tmp_path_factory.mktemp("space") / "space"
    completed = subprocess.run(
        [sys.executable, "-m", "e2_hf.cli", "build-space", "--model", str(e2_model_dir),
         "--data", f"jsonl:{catalog / 'catalog.jsonl'}:validation", "--output", str(folder), "--thumbnail-size", "64"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    return folder


def test_build_space_lays_out_a_self_contained_space(space_dir, e2_model_dir, catalog, tmp_path):
    expected = ["app.py", "requirements.txt", "README.md", "model/config.json", "index/index.json",
                "e2_hf/modeling/modeling_e2clip.py", "e2_hf/space/app.py",
                "e2_hf/conversion/model_card.md"]  # fmt: skip
    for name in expected:
        assert (space_dir / name).is_file(), name
    card = (space_dir / "README.md").read_text()
    assert card.startswith("---\n") and "sdk: gradio" in card and "app_file: app.py" in card
    requirements = (space_dir / "requirements.txt").read_text().split()
    assert any(line.startswith("transformers") for line in requirements) and not any(
        "pytest" in r for r in requirements
    )
    assert any(line.startswith("faiss-cpu") for line in requirements)  # the search extra: the Space searches
    assert len(EmbeddingIndex(space_dir / "index")) == 10  # the catalog's validation products
    assert local_path_leaks(space_dir) == [] and f"Model: `{e2_model_dir.name}`" in card
    assert EmbeddingIndex(space_dir / "index").metadata["shards"][0]["source"] == "jsonl:catalog.jsonl:validation"
    imported = subprocess.run([sys.executable, "-c", "import e2_hf; print(e2_hf.__file__)"], cwd=space_dir,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert imported.stdout.strip() == str(space_dir / "e2_hf" / "__init__.py")  # the Space runs its own copy
    refused = subprocess.run([sys.executable, "-m", "e2_hf.cli", "build-space", "--model", str(space_dir / "model"),
                              "--data", "jsonl:x.jsonl", "--output", str(space_dir)],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert refused.returncode != 0 and "is not empty" in refused.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def space_url(space_dir, tmp_path_factory):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install '.[test]')")
    chromium_path()  # skip before starting the app where there is no browser to check it with
    port = free_port()
    log = tmp_path_factory.mktemp("space-log") / "app.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as handle:
        command = [sys.executable, str(space_dir / "app.py"), "--host", "127.0.0.1", "--port", str(port)]
        process = subprocess.Popen(command, cwd=space_dir, env=env, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"the Space app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the Space app did not answer within {STARTUP_SECONDS} s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_space_page_returns_a_selection_map_and_search_results(space_url, space_dir, catalog, tmp_path):
    image_path = catalog / "images" / "000045_0.png"
    model = E2CLIPModel.from_pretrained(space_dir / "model").eval()
    processor = E2CLIPProcessor.from_pretrained(space_dir / "model")
    with Image.open(image_path) as image:
        expected = render_selection_figure(selection_maps(model, processor, [image.convert("RGB")])).image
    brands = {item.tags["brand"] for item in EmbeddingIndex(space_dir / "index").items}

    with chromium_page(height=1100) as page:
        page.goto(space_url)
        page.get_by_text("E2: what a fashion model looks at").wait_for(timeout=60_000)
        page.set_input_files("#upload-image input[type=file]", str(image_path))
        page.locator("#upload-preview img").wait_for(timeout=60_000)
        page.click("#look-button")
        page.locator("#selection-map img").wait_for(timeout=120_000)
        loaded = "(() => { const i = document.querySelector('#selection-map img'); return i && i.complete })()"
        page.wait_for_function(loaded, timeout=60_000)
        size = page.evaluate("(() => { const i = document.querySelector('#selection-map img'); "
                             "return [i.naturalWidth, i.naturalHeight] })()")  # fmt: skip
        assert tuple(size) == expected.size  # the figure the app drew for the uploaded image
        page.get_by_text("%").first.wait_for(timeout=60_000)
        brand_tags = page.locator("#tags-brand").inner_text()
        assert any(brand in brand_tags for brand in brands)
        page.screenshot(path=str(tmp_path / "space-selection.png"), full_page=True)

        page.get_by_role("tab", name="Search").click()
        page.fill("#query textarea", "black wool coat")
        page.click("#search-button")
        page.wait_for_function("document.querySelectorAll('#results img').length >= 8", timeout=120_000)
        captions = page.locator("#results").inner_text()
        assert "#1 (" in captions and "#8 (" in captions
        page.screenshot(path=str(tmp_path / "space-search.png"), full_page=True)


def test_uploads_the_app_cannot_use_get_a_message_the_visitor_can_act_on(space_url, tmp_path):
    not_an_image = tmp_path / "photo.png"
    not_an_image.write_text("these are notes, not a photo")
    with chromium_page(height=1100) as page:
        page.goto(space_url)
        page.get_by_text("E2: what a fashion model looks at").wait_for(timeout=60_000)
        page.set_input_files("#upload-image input[type=file]", str(not_an_image))
        page.get_by_text("photo.png is not an image this app can read").first.wait_for(timeout=60_000)


def test_oversized_and_unreadable_uploads_are_refused_by_their_header(tmp_path):
    gradio = pytest.importorskip("gradio", reason="gradio is not installed (pip install '.[test]')")
    from e2_hf.space.app import UPLOAD_LIMITS, open_upload

    side = int(UPLOAD_LIMITS.max_pixels**0.5) + 100
    Image.new("1", (side, side)).save(tmp_path / "huge.png")  # 1-bit: a small file with a huge size
    with pytest.raises(gradio.Error, match=rf"huge.png is {side}x{side} pixels .*the limit is"):
        open_upload(tmp_path / "huge.png")
    # between 1x and 2x Pillow's own limit, where Pillow only warns
    side = int((1.5 * Image.MAX_IMAGE_PIXELS) ** 0.5)
    Image.new("1", (side, side)).save(tmp_path / "bomb.png")
    with pytest.raises(gradio.Error, match=rf"bomb.png is {side}x{side} pixels"):
        open_upload(tmp_path / "bomb.png")
    Image.new("1", (1_000_000, 1)).save(tmp_path / "strip.png")
    with pytest.raises(gradio.Error, match="strip.png is 1000000x1 pixels, an aspect ratio over"):
        open_upload(tmp_path / "strip.png")
    (tmp_path / "notes.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(gradio.Error, match="notes.jpg is not an image this app can read"):
        open_upload(tmp_path / "notes.jpg")
    Image.new("L", (64, 48)).save(tmp_path / "fine.png")
    assert open_upload(tmp_path / "fine.png").mode == "RGB"
