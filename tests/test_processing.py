import numpy as np
import pytest
import torch
from PIL import Image

from e2_hf import E2CLIPProcessor, build_product_text
from e2_hf.modeling.processing_e2clip import to_rgb_image
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
        tiny_processor(images=np.zeros((2, 3, 4, 5)))


def test_product_text_puts_tags_before_the_description(tiny_processor):
    tags = {"composition": "100% cotton", "subcategory": "SHIRTS", "brand": "Gucci", "season": "FW2016"}
    assert build_product_text("Slim shirt.", tags) == "100% cotton. SHIRTS. Gucci. FW2016. Slim shirt."
    assert build_product_text("Slim shirt", {"brand": "Gucci", "season": ""}) == "Gucci. Slim shirt"
    assert build_product_text("Slim shirt", {"brand": "Gucci"}, fields=["description", "brand"]) == "Slim shirt. Gucci"
    assert tiny_processor.build_product_text("Slim shirt", {"season": "SS2017"}) == "SS2017. Slim shirt"


def test_save_and_load_keep_the_4_57_file_layout(tiny_processor, tmp_path):
    tiny_processor.save_pretrained(tmp_path)
    for name in (
        "preprocessor_config.json",
        "processor_config.json",
        "vocab.json",
        "merges.txt",
        "tokenizer_config.json",
        "processing_e2clip.py",
    ):
        assert (tmp_path / name).exists(), name
    loaded = E2CLIPProcessor.from_pretrained(tmp_path)
    assert loaded.entities == TAG_ENTITIES and loaded.max_length == tiny_processor.max_length
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
