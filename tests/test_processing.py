import json

import numpy as np
import pytest
import torch
from PIL import Image

from e2_hf import E2CLIPImageProcessor, E2CLIPProcessor, build_product_text, clip_image_processor
from e2_hf.modeling.image_processing_e2clip import to_rgb_image
from e2_hf.tokenization import build_clip_tokenizer, byte_symbols

from .conftest import BPE_PATH, TAG_ENTITIES, make_images, require_shared


def test_outputs_of_a_full_call(tiny_processor):
    batch = tiny_processor(
        text=["a red silk shirt", "jeans"],
        images=make_images(2),
        tags=[{"brand": "gucci", "season": "fw2016"}, {"brand": "levi", "subcategory": "jeans"}],
    )
    assert set(batch) == {"input_ids", "attention_mask", "pixel_values", "tag_input_ids", "tag_attention_mask"}
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    assert batch["tag_input_ids"].shape[:2] == (2, len(TAG_ENTITIES))
    tokenizer = tiny_processor.tokenizer
    gucci = tokenizer("gucci")["input_ids"]
    row = batch["tag_input_ids"][0, 0][batch["tag_attention_mask"][0, 0].bool()]
    assert row.tolist() == gucci
    # tags are padded to the longest tag of the batch, not to the context length
    longest = max(len(tokenizer(tag)["input_ids"]) for tag in ("gucci", "fw2016", "levi", "jeans"))
    assert batch["tag_input_ids"].shape[2] == longest


def test_missing_tags_have_all_zero_masks(tiny_processor):
    batch = tiny_processor(tags=[{"brand": "gucci", "season": None}, {"brand": "  ", "composition": "cotton"}])
    present = batch["tag_attention_mask"].any(-1)
    assert present.tolist() == [[True, False, False, False], [False, False, False, True]]


def test_tags_as_a_dict_of_lists_equal_a_list_of_dicts(tiny_processor):
    as_rows = tiny_processor(tags=[{"brand": "gucci", "season": "ss2017"}, {"brand": "prada", "season": None}])
    as_columns = tiny_processor(tags={"brand": ["gucci", "prada"], "season": ["ss2017", None]})
    for key in ("tag_input_ids", "tag_attention_mask"):
        assert torch.equal(as_rows[key], as_columns[key])


def test_unknown_entity_is_named(tiny_processor):
    with pytest.raises(ValueError, match=r"tags\[1\] has unknown entities \['colour'\].*'brand', 'season'"):
        tiny_processor(tags=[{"brand": "gucci"}, {"colour": "red"}])
    with pytest.raises(ValueError, match="one length"):
        tiny_processor(tags={"brand": ["a", "b"], "season": ["c"]})


def test_long_text_is_truncated_not_an_error(tiny_processor):
    batch = tiny_processor(text=["cotton " * 200])
    assert batch["input_ids"].shape == (1, tiny_processor.max_length)
    assert batch["input_ids"][0, -1] == tiny_processor.tokenizer.eos_token_id


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "1", "RGB"])
def test_every_pil_mode_becomes_rgb(tiny_processor, mode):
    image = make_images(1)[0].convert(mode) if mode != "I;16" else Image.new("I;16", (40, 46), 40000)
    assert to_rgb_image(image).mode == "RGB"
    assert tiny_processor(images=image)["pixel_values"].shape == (1, 3, 32, 32)


def test_transparent_pixels_become_white_and_16_bit_scales():
    transparent = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert to_rgb_image(transparent).getpixel((0, 0)) == (255, 255, 255)
    sixteen_bit = Image.new("I;16", (4, 4), 65535)
    assert to_rgb_image(sixteen_bit).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize(
    "shape, dtype",
    [
        ((40, 46), np.uint8),
        ((40, 46, 1), np.uint8),
        ((40, 46, 3), np.uint8),
        ((40, 46, 4), np.uint8),
        ((3, 40, 46), np.float32),
    ],
)
def test_numpy_arrays_become_rgb(tiny_processor, shape, dtype):
    rng = np.random.default_rng(0)
    array = rng.random(shape).astype(dtype) if dtype == np.float32 else rng.integers(0, 256, shape, dtype=dtype)
    assert tiny_processor(images=array)["pixel_values"].shape == (1, 3, 32, 32)


def test_bad_image_is_a_clear_error(tiny_processor):
    with pytest.raises(ValueError, match="images must be PIL images or numpy arrays, got str"):
        tiny_processor(images=["photo.jpg"])
    with pytest.raises(ValueError, match=r"image arrays must be"):
        tiny_processor(images=np.zeros((2, 3, 4, 5, 6)))
    # a 4-d array is a batch, as in transformers: [batch, channels, height, width]
    assert tiny_processor(images=np.zeros((2, 3, 40, 46)))["pixel_values"].shape == (2, 3, 32, 32)


def test_product_text_puts_tags_before_the_description(tiny_processor):
    tags = {"composition": "100% cotton", "subcategory": "SHIRTS", "brand": "Gucci", "season": "FW2016"}
    assert build_product_text("Slim shirt.", tags) == "100% cotton. SHIRTS. Gucci. FW2016. Slim shirt."
    assert build_product_text("Slim shirt", {"brand": "Gucci", "season": ""}) == "Gucci. Slim shirt"
    assert build_product_text("Slim shirt", {"brand": "Gucci"}, fields=["description", "brand"]) == "Slim shirt. Gucci"
    assert tiny_processor.build_product_text("Slim shirt", {"season": "SS2017"}) == "SS2017. Slim shirt"


def test_save_and_load_round_trip(tiny_processor, tmp_path):
    """transformers' own layout (the processor config, the tokenizer files) plus the two code files."""
    tiny_processor.save_pretrained(tmp_path)
    for name in (
        "processor_config.json",
        "tokenizer_config.json",
        "processing_e2clip.py",
        "image_processing_e2clip.py",
    ):
        assert (tmp_path / name).exists(), name
    loaded = E2CLIPProcessor.from_pretrained(tmp_path)
    assert loaded.entities == TAG_ENTITIES and loaded.max_length == tiny_processor.max_length
    assert isinstance(loaded.image_processor, E2CLIPImageProcessor)
    inputs = dict(text=["a gucci shirt"], images=make_images(1), tags=[{"brand": "gucci"}])
    for key, value in tiny_processor(**inputs).items():
        assert torch.equal(loaded(**inputs)[key], value), key


def test_real_clip_tokenizer_from_the_shared_bpe(tmp_path):
    tokenizer = build_clip_tokenizer(require_shared(BPE_PATH), tmp_path)
    assert len(tokenizer) == 49408
    assert tokenizer.eos_token_id == 49407 and tokenizer.bos_token_id == 49406
    ids = tokenizer("a photo of a cat")["input_ids"]
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]  # CLIP's published tokenization
    assert tokenizer.convert_ids_to_tokens(ids[1:-1]) == ["a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>"]
    assert len(set(byte_symbols())) == 256


def test_loading_a_plain_clip_folder_with_entities(tiny_processor, tmp_path):
    """A CLIP repo (tokenizer + image processor, no E2 settings) plus `entities=` gives a processor."""
    tiny_processor.tokenizer.save_pretrained(tmp_path)
    tiny_processor.image_processor.save_pretrained(tmp_path)
    processor = E2CLIPProcessor.from_pretrained(tmp_path, entities=["brand", "season"])
    assert processor.entities == ["brand", "season"]
    assert processor(tags=[{"brand": "gucci"}])["tag_input_ids"].shape[:2] == (1, 2)


def test_a_folder_saved_by_version_0_1_still_loads(tiny_processor, tmp_path):
    """0.1 wrote its own layout: a flat CLIP `preprocessor_config.json` and E2's settings alone in
    `processor_config.json`. It loads as CLIP's framing (`crop`) with its entities."""
    from transformers import CLIPImageProcessor

    tiny_processor.tokenizer.save_pretrained(tmp_path)
    clip_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    clip_processor.save_pretrained(tmp_path)
    settings = {"processor_class": "E2CLIPProcessor", "entities": ["brand", "season"], "max_length": 12}
    settings.update(product_text_fields=["brand", "description"], auto_map={"AutoProcessor": "x.E2CLIPProcessor"})
    (tmp_path / "processor_config.json").write_text(json.dumps(settings))
    loaded = E2CLIPProcessor.from_pretrained(tmp_path)
    assert (loaded.entities, loaded.max_length, loaded.product_text_fields) == (
        ["brand", "season"],
        12,
        ["brand", "description"],
    )
    assert isinstance(loaded.image_processor, E2CLIPImageProcessor) and loaded.image_processor.image_fit == "crop"
    assert loaded(images=make_images(1))["pixel_values"].shape == (1, 3, 32, 32)


def test_return_tensors_and_typed_kwargs(tiny_processor):
    texts, tags = ["a red silk shirt", "jeans"], [{"brand": "gucci"}, {"season": "fw2016"}]
    as_torch = tiny_processor(text=texts, images=make_images(2), tags=tags)
    as_numpy = tiny_processor(text=texts, images=make_images(2), tags=tags, return_tensors="np")
    as_lists = tiny_processor(text=texts, tags=tags, return_tensors=None)
    for key, value in as_torch.items():
        assert isinstance(as_numpy[key], np.ndarray) and np.array_equal(as_numpy[key], value.numpy()), key
    assert as_lists["input_ids"] == as_torch["input_ids"].tolist()
    assert as_lists["tag_input_ids"] == as_torch["tag_input_ids"].tolist()
    # per-modality kwargs, the way transformers passes them
    padded = tiny_processor(text=texts, text_kwargs={"padding": "max_length"})
    assert padded["input_ids"].shape == (2, tiny_processor.max_length)
    striped = _portrait_stripes()
    padded_images = tiny_processor(images=striped, images_kwargs={"image_fit": "pad"})
    assert torch.equal(
        padded_images["pixel_values"], clip_image_processor(32, "pad")(striped, return_tensors="pt")["pixel_values"]
    )


def _portrait_stripes() -> Image.Image:
    """A 32x96 portrait photo: red top third, green middle, blue bottom third."""
    pixels = np.zeros((96, 32, 3), dtype=np.uint8)
    pixels[:32, :, 0] = pixels[32:64, :, 1] = pixels[64:, :, 2] = 255
    return Image.fromarray(pixels)


def _unnormalized(pixel_values: torch.Tensor, image_processor) -> np.ndarray:
    mean, std = (
        torch.tensor(values).view(3, 1, 1) for values in (image_processor.image_mean, image_processor.image_std)
    )
    return ((pixel_values * std + mean) * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def test_crop_cuts_a_portrait_and_pad_keeps_it_whole():
    crop, pad = clip_image_processor(32, "crop"), clip_image_processor(32, "pad")
    cropped = _unnormalized(crop(_portrait_stripes(), return_tensors="pt")["pixel_values"][0], crop)
    padded = _unnormalized(pad(_portrait_stripes(), return_tensors="pt")["pixel_values"][0], pad)
    assert cropped[..., 1].min() > 200 and cropped[..., 0].max() < 30  # only the green middle is left
    assert padded[2, 16, 0] > 200 and padded[2, 16, 1] < 30  # the red top is kept...
    assert padded[29, 16, 2] > 200 and padded[29, 16, 0] < 30  # ...and the blue bottom
    assert (padded[:, 1] > 240).all() and (padded[:, 30] > 240).all()  # on white side bands
    with pytest.raises(ValueError, match="image_fit must be one of"):
        clip_image_processor(32, "stretch")


def test_image_fit_is_saved_with_the_processor(tiny_processor, tmp_path):
    processor = E2CLIPProcessor(clip_image_processor(32, "pad"), tiny_processor.tokenizer, entities=TAG_ENTITIES)
    processor.save_pretrained(tmp_path)
    loaded = E2CLIPProcessor.from_pretrained(tmp_path)
    assert loaded.image_processor.image_fit == "pad" and loaded.image_processor.pad_color == (255, 255, 255)
    striped = _portrait_stripes()
    assert torch.equal(loaded(images=striped)["pixel_values"], processor(images=striped)["pixel_values"])
