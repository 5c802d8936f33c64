"""Serving: the batch-embedding API and the Inference Endpoints handler shipped in every folder."""

import base64
import io
import json
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from e2_hf import E2CLIPEmbedder, E2CLIPModel

from .conftest import TAG_ENTITIES, make_images, run_without_the_project

TEXTS = ["a red silk shirt by gucci", "blue denim jeans"]


@pytest.fixture
def embedder(tokenized_tester, tiny_processor) -> E2CLIPEmbedder:
    torch.manual_seed(0)
    return E2CLIPEmbedder(E2CLIPModel(tokenized_tester.get_config()), tiny_processor, device="cpu", batch_size=2)


def test_images_as_paths_pil_and_arrays_embed_like_one_forward_pass(embedder, tmp_path):
    images = make_images(3)
    images[0].save(tmp_path / "first.png")
    inputs = [str(tmp_path / "first.png"), images[1], np.asarray(images[2])]
    embeddings = embedder.embed_images(inputs)  # two batches of at most 2

    with torch.no_grad():
        expected = embedder.model(pixel_values=embedder.processor(images=images)["pixel_values"])
    torch.testing.assert_close(embeddings.image_embeds, expected.image_embeds)
    torch.testing.assert_close(embeddings.region_embeds, expected.region_embeds)
    assert torch.equal(embeddings.selection_indices, expected.selection_indices)
    brand_tokens = embeddings.selected_patches("brand")
    assert torch.equal(brand_tokens, expected.selection_indices[:, :, 0:2])
    torch.testing.assert_close(embeddings.region("season"), expected.region_embeds[:, 1])
    with pytest.raises(KeyError, match="entities are"):
        embeddings.region("colour")


def test_texts_embed_normalised_in_batches(embedder):
    embeddings = embedder.embed_texts([*TEXTS, "a black leather jacket"])
    encoded = embedder.processor(text=[*TEXTS, "a black leather jacket"])
    with torch.no_grad():
        expected = embedder.model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
    torch.testing.assert_close(embeddings, expected.text_embeds)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(3))


def test_reduced_precision_and_bad_input(embedder, tmp_path):
    bf16 = E2CLIPEmbedder(embedder.model, embedder.processor, device="cpu", dtype="bf16")
    assert bf16.embed_images(make_images(1)).image_embeds.dtype == torch.float32  # outputs stay float32
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.jpg cannot be read as an image"):
        embedder.embed_images([str(tmp_path / "broken.jpg")])
    with pytest.raises(ValueError, match="dtype must be one of"):
        E2CLIPEmbedder(embedder.model, embedder.processor, dtype="int8")


# The Inference Endpoints runtime imports handler.py from the repository folder and calls
# EndpointHandler(path)(data) with the deserialised JSON body; this project is not installed there.
ENDPOINT_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys
    sys.modules["e2_hf"] = None  # this project must not be importable
    folder, requests_path, output_path = sys.argv[1:4]
    spec = importlib.util.spec_from_file_location("handler", f"{folder}/handler.py")
    handler_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handler_module)
    handler = handler_module.EndpointHandler(path=folder)
    responses = [handler(request) for request in json.load(open(requests_path))]
    json.dump(responses, open(output_path, "w"))
    """
)


def _base64_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_saved_handler_serves_requests_in_a_process_without_the_project(embedder, tmp_path):
    folder = tmp_path / "e2-tiny"
    embedder.model.save_pretrained(folder)
    embedder.processor.save_pretrained(folder)
    assert (folder / "handler.py").is_file()
    image = make_images(1)[0]
    candidates = {"brand": ["gucci", "levi", "prada"], "composition": ["silk", "denim"]}
    requests = [
        {"inputs": {"image": _base64_png(image), "texts": TEXTS, "candidates": candidates}},
        {"inputs": _base64_png(image)},  # the image alone
        {"inputs": {"image": "this is not base64!"}},
        {"inputs": {"image": base64.b64encode(b"not an image").decode()}},
        {"inputs": {"image": _base64_png(image), "candidates": {"colour": ["red"]}}},
        {"inputs": {}},
        {"inputs": {"image": base64.b64encode(_png_bytes(Image.new("1", (1_000_000, 1)))).decode()}},
        {"inputs": {"texts": TEXTS[:1]}},  # still serving after the bad requests
    ]
    (tmp_path / "requests.json").write_text(json.dumps(requests))
    run_without_the_project(ENDPOINT_SCRIPT, tmp_path, folder, tmp_path / "requests.json", tmp_path / "responses.json")
    full, image_only, not_base64, not_an_image, unknown_entity, empty, strip, text_only = json.loads(
        (tmp_path / "responses.json").read_text()
    )

    local = embedder.embed_images([image])
    torch.testing.assert_close(torch.tensor(full["image_embeds"]), local.image_embeds[0], rtol=1e-5, atol=1e-6)
    for entity in local.entities:
        torch.testing.assert_close(torch.tensor(full["region_embeds"][entity]), local.region(entity)[0])
        assert full["selected_patches"][entity] == local.selected_patches(entity)[0].tolist()
    torch.testing.assert_close(torch.tensor(full["text_embeds"]), embedder.embed_texts(TEXTS), rtol=1e-5, atol=1e-6)
    probabilities = embedder.tag_probabilities(local, candidates)
    for entity, ranked in full["tags"].items():
        scores = dict(zip(candidates[entity], probabilities[entity][0].tolist()))
        assert [entry["tag"] for entry in ranked] == sorted(scores, key=scores.get, reverse=True)
        assert [entry["score"] for entry in ranked] == pytest.approx(sorted(scores.values(), reverse=True), abs=1e-5)
    assert image_only["image_embeds"] == pytest.approx(full["image_embeds"], abs=1e-6) and "tags" not in image_only
    assert not_base64 == {"error": "'image' is not valid base64"}
    assert not_an_image["error"].startswith("'image' is not a readable image")
    assert "unknown entity 'colour'" in unknown_entity["error"]
    assert "send an 'image'" in empty["error"]
    assert strip["error"].startswith("'image' is refused: image data is 1000000x1 pixels, an aspect ratio over 20:1")
    torch.testing.assert_close(torch.tensor(text_only["text_embeds"]), torch.tensor(full["text_embeds"][:1]))


def test_a_model_without_fusion_blocks_serves_regions_without_patch_choices(tokenized_tester, tiny_processor, tmp_path):
    from e2_hf.modeling.handler import EndpointHandler

    tokenized_tester.config_kwargs["fusion_layers"] = []
    folder = tmp_path / "no-fusion"
    E2CLIPModel(tokenized_tester.get_config()).save_pretrained(folder)
    tiny_processor.save_pretrained(folder)
    embedder = E2CLIPEmbedder.from_pretrained(folder, device="cpu")
    embeddings = embedder.embed_images(make_images(2))
    assert embeddings.region("brand").shape == (2, 16) and embeddings.selection_indices is None
    with pytest.raises(KeyError, match="no patches were chosen"):
        embeddings.selected_patches("brand")
    response = EndpointHandler(path=str(folder))({"inputs": _base64_png(make_images(1)[0])})
    assert set(response) == {"image_embeds", "region_embeds"} and set(response["region_embeds"]) == set(TAG_ENTITIES)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _hostile_images() -> dict[str, Image.Image]:
    """Small files that decode to huge or empty images (1-bit PNGs compress a blank strip to a few KB)."""
    side = int((1.5 * Image.MAX_IMAGE_PIXELS) ** 0.5)  # Pillow only warns between 1x and 2x its limit
    return {"strip": Image.new("1", (1_000_000, 1)), "bomb": Image.new("1", (side, side))}


def test_the_embedder_refuses_empty_huge_and_elongated_images_before_decoding(embedder, tmp_path):
    from e2_hf.images import ImageLimits, ImageSizeError

    hostile = _hostile_images()
    hostile["bomb"].save(tmp_path / "bomb.png")
    with pytest.raises(ImageSizeError, match=r"bomb.png is \d+x\d+ pixels \(134.2 MP\); the limit is 50 MP"):
        embedder.embed_images([str(tmp_path / "bomb.png")])
    with pytest.raises(ImageSizeError, match="1000000x1 pixels, an aspect ratio over 20:1"):
        embedder.embed_images([_png_bytes(hostile["strip"])])
    with pytest.raises(ImageSizeError, match="0x0 pixels"):
        embedder.embed_images([Image.new("RGB", (0, 0))])
    with pytest.raises(ImageSizeError, match="1x30 pixels"):
        embedder.embed_images([np.zeros((30, 1, 3), dtype=np.uint8)])
    sixteen_bit = Image.fromarray(np.full((48, 64), 40000, dtype=np.uint16))
    assert embedder.embed_images([_png_bytes(sixteen_bit)]).image_embeds.shape[0] == 1
    relaxed = E2CLIPEmbedder(embedder.model, embedder.processor, device="cpu", image_limits=ImageLimits(200, 40))
    assert relaxed.embed_images([Image.new("RGB", (30, 2))]).image_embeds.shape[0] == 1
    assert ImageLimits.from_environment({"E2_MAX_IMAGE_PIXELS": "1000"}) == ImageLimits(max_pixels=1000)
    with pytest.raises(ValueError, match="E2_MAX_IMAGE_ASPECT_RATIO must be a number"):
        ImageLimits.from_environment({"E2_MAX_IMAGE_ASPECT_RATIO": "wide"})


def test_the_handler_refuses_requests_beyond_its_limits_and_keeps_serving(embedder, tmp_path):
    from e2_hf.modeling.handler import EndpointHandler, RequestLimits

    folder = tmp_path / "e2-tiny"
    embedder.model.save_pretrained(folder)
    embedder.processor.save_pretrained(folder)
    handler = EndpointHandler(path=str(folder), limits=RequestLimits(max_texts=3, max_candidates=4))
    hostile = _hostile_images()
    image = _base64_png(make_images(1)[0])

    def error_of(inputs) -> str:
        response = handler({"inputs": inputs})
        assert set(response) == {"error"}, response
        return response["error"]

    strip = error_of({"image": base64.b64encode(_png_bytes(hostile["strip"])).decode()})
    assert strip == ("'image' is refused: image data is 1000000x1 pixels, an aspect ratio over 20:1; crop it to the "
                     "product first (limits: E2_MAX_IMAGE_PIXELS, E2_MAX_IMAGE_ASPECT_RATIO)")  # fmt: skip
    assert error_of({"image": _base64_png(hostile["bomb"])}).startswith(
        "'image' is refused: image data is 11585x11585 pixels (134.2 MP); the limit is 50 MP"
    )
    assert error_of(Image.new("RGB", (0, 0))).startswith("'image' is refused: the image is 0x0 pixels")  # PIL input
    assert "'texts' has too many texts: 4, more than this endpoint's limit of 3 (E2_MAX_TEXTS)" == error_of(
        {"texts": ["a"] * 4}
    )
    assert "(E2_MAX_CANDIDATES)" in error_of({"image": image, "candidates": {"brand": ["a", "b", "c"],
                                                                             "season": ["d", "e"]}})  # fmt: skip
    assert "(E2_MAX_TEXT_CHARACTERS)" in error_of({"texts": ["x" * 100_000]})

    def broken(texts):
        raise RuntimeError("CUDA out of memory")

    handler.embedder.embed_texts, working = broken, handler.embedder.embed_texts
    assert error_of({"texts": ["a"]}) == "the request could not be served (RuntimeError: CUDA out of memory)"
    handler.embedder.embed_texts = working
    assert len(handler({"inputs": {"texts": ["a", "b", "c"]}})["text_embeds"]) == 3  # still serving
    assert RequestLimits.from_environment({"E2_MAX_TEXTS": "7"}) == RequestLimits(max_texts=7)
