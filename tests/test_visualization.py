"""`e2-hf visualize` and `selection_maps`: the figure marks the patches the model really chose."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from e2_hf import E2CLIPProcessor, clip_image_processor
from e2_hf.visualization import (
    BOX_STEP,
    box_outlines,
    display_scale,
    draw_selection_panel,
    entity_colour,
    render_selection_figure,
    selection_maps,
)

from .conftest import make_images


def grey_images(count: int, size: int = 40) -> list[Image.Image]:
    """Grey-level images: no pixel can be mistaken for an entity colour."""
    return [image.convert("L").convert("RGB") for image in make_images(count, size)]


@pytest.fixture
def maps(tiny_model, tiny_processor):
    return selection_maps(tiny_model, tiny_processor, grey_images(3))


def test_maps_hold_the_models_own_selection_indices(tiny_model, tiny_processor, maps):
    images = grey_images(3)
    with torch.no_grad():
        chosen = tiny_model(pixel_values=tiny_processor(images=images)["pixel_values"]).selection_indices
    config = tiny_model.config
    for index, selection_map in enumerate(maps):
        for entity, (start, end) in zip(config.entities, config.entity_token_slices):
            for block in range(len(config.fusion_layers)):
                assert selection_map.patches[entity][block] == chosen[index, block, start:end].tolist()
        side = config.vision_config.image_size
        assert selection_map.image.size == (side, side)
        grid = side // config.vision_config.patch_size
        assert selection_map.cls_attention.shape == (grid, grid)
        assert np.isclose(selection_map.cls_attention.sum(), 1.0)
        assert selection_map.cls_attention_layer == max(config.fusion_layers)  # patches dropped after it


def test_boxes_are_the_chosen_patches_pixels(maps):
    selection_map = maps[0]
    size, grid = selection_map.patch_size, selection_map.grid
    for entity in selection_map.entities:
        for patch, box in zip(selection_map.patches[entity][-1], selection_map.boxes(entity)):
            row, column = divmod(patch, grid)
            assert box == (column * size, row * size, (column + 1) * size, (row + 1) * size)


def test_the_view_is_what_the_model_saw(tiny_processor, maps):
    restored = tiny_processor(images=[maps[0].image])["pixel_values"]
    original = tiny_processor(images=grey_images(1))["pixel_values"]
    torch.testing.assert_close(restored, original, atol=0.02, rtol=0)  # uint8 rounding only


def outline_pixel(panel: Image.Image, box) -> tuple[int, int, int]:
    left, top, right, bottom = box
    return panel.getpixel(((left + right) // 2, top))  # the middle of the box's top edge


def test_panels_outline_exactly_the_selected_patches_in_entity_colours(maps):
    for selection_map in maps:
        for block in range(len(selection_map.fusion_layers)):
            panel = draw_selection_panel(selection_map, block)
            scale = display_scale(selection_map)
            outlines = box_outlines(selection_map, block, scale)
            assert len(outlines) == sum(len(selection_map.patches[e][block]) for e in selection_map.entities)
            for entity_index, box in outlines:
                assert panel.getpixel((box[0], (box[1] + box[3]) // 2)) == entity_colour(entity_index)
                assert outline_pixel(panel, box) == entity_colour(entity_index)
            chosen = {patch for e in selection_map.entities for patch in selection_map.patches[e][block]}
            for patch in set(range(selection_map.grid**2)) - chosen:
                box = tuple(value * scale for value in selection_map.patch_box(patch))
                red, green, blue = outline_pixel(panel, box)
                assert red == green == blue  # still the grey image: nothing drawn on unchosen patches


def test_tokens_on_the_same_patch_get_nested_boxes(maps):
    selection_map = maps[0]
    first_entity, second_entity = selection_map.entities[:2]
    selection_map.patches[first_entity][-1] = [5, 5]
    selection_map.patches[second_entity][-1] = [5, 6]
    scale = display_scale(selection_map)
    outlines = box_outlines(selection_map, -1, scale)
    left, top, right, bottom = (value * scale for value in selection_map.patch_box(5))
    for order, (_, box) in enumerate(outlines[:3]):  # three tokens on patch 5
        inset = order * BOX_STEP
        assert box == (left + inset, top + inset, right - 1 - inset, bottom - 1 - inset)
    assert outlines[3][1][0] == selection_map.patch_box(6)[0] * scale  # patch 6: no inset
    panel = draw_selection_panel(selection_map, -1)
    for entity_index, box in outlines[:4]:
        assert panel.getpixel((box[0], (box[1] + box[3]) // 2)) == entity_colour(entity_index)


def test_figure_places_each_panel_and_the_cls_map(maps):
    figure = render_selection_figure(maps, titles=["a", "b", "c"])
    blocks = len(maps[0].fusion_layers)
    # the test images are 46x40: a last panel shows each whole photo and the square the model saw
    assert len(figure.panel_origins) == 3 and len(figure.panel_origins[0]) == blocks + 2
    for row, selection_map in enumerate(maps):
        for block in range(blocks):
            expected = draw_selection_panel(selection_map, block)
            assert np.array_equal(np.asarray(figure.panel(row, block)), np.asarray(expected))
        cls_panel = np.asarray(figure.panel(row, blocks)).astype(int)
        assert (np.abs(cls_panel[..., 0] - cls_panel[..., 2]) > 10).any()  # coloured by the heat map


def test_visualize_command_writes_the_figure(e2_model_dir, tmp_path):
    paths = []
    for index, image in enumerate(grey_images(2, size=48)):
        paths += ["--image", str(tmp_path / f"item{index}.png")]
        image.save(paths[-1])
    output = tmp_path / "figure.png"
    command = [sys.executable, "-m", "e2_hf.cli", "visualize", "--model", str(e2_model_dir), *paths]
    completed = subprocess.run([*command, "--output", str(output)], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "item0.png: last fusion block chose patches brand [" in completed.stdout
    with Image.open(output) as figure:
        assert figure.width > 2 * 224 and figure.height > 2 * 224

    missing = subprocess.run([*command, "--image", str(tmp_path / "nope.png"), "--output", str(output)],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert missing.returncode != 0
    assert "nope.png does not exist" in missing.stderr and "Traceback" not in missing.stderr


def test_maps_use_eval_mode_and_give_the_model_back_in_its_mode(tiny_model, tiny_processor, maps):
    tiny_model.train()  # training mode draws Gumbel noise; the map must show the deterministic choice
    again = selection_maps(tiny_model, tiny_processor, grey_images(3))
    assert tiny_model.training
    assert [m.patches for m in again] == [m.patches for m in maps]


def test_a_portrait_photo_is_shown_whole_with_the_square_the_model_saw(tiny_model, tiny_processor):
    pixels = np.full((60, 40, 3), 90, dtype=np.uint8)  # 40 wide, 60 high; the model sees rows 10-49
    pixels[:10] = 20  # the top and bottom strips the centre crop removes, darker than the rest
    pixels[50:] = 20
    portrait = Image.fromarray(pixels)
    square = grey_images(1)[0].crop((0, 0, 40, 40))
    (portrait_map, square_map) = selection_maps(tiny_model, tiny_processor, [portrait, square])
    assert portrait_map.view_box == (0, 10, 40, 50) and portrait_map.cropped and not square_map.cropped
    assert len(render_selection_figure([square_map]).panel_origins[0]) == len(square_map.fusion_layers) + 1
    figure = render_selection_figure([portrait_map, square_map])
    blocks = len(portrait_map.fusion_layers)
    assert len(figure.panel_origins[0]) == blocks + 2  # fusion blocks, CLS attention, then the photo
    frame = np.asarray(figure.panel(0, blocks + 1)).astype(int)
    side = figure.panel_side
    scale = side / 60
    inside = frame[int(30 * scale), side // 2]  # the middle of the photo: shown as it is
    removed = frame[int(3 * scale), side // 2]  # the top strip: dimmed towards white
    assert abs(inside - 90).max() <= 3
    assert (removed > 20 + 100).all()  # 20 blended 60% with white is about 161


def test_with_pad_framing_the_view_holds_the_whole_portrait(tiny_model, tiny_processor):
    pad_processor = E2CLIPProcessor(
        clip_image_processor(32, "pad"), tiny_processor.tokenizer, entities=tiny_processor.entities
    )
    portrait = Image.fromarray(np.full((60, 40, 3), 90, dtype=np.uint8))
    (portrait_map,) = selection_maps(tiny_model, pad_processor, [portrait])
    assert portrait_map.view_box == (-10, 0, 50, 60) and not portrait_map.cropped
    view = np.asarray(portrait_map.image).astype(int)
    assert (view[:, 0] > 240).all() and abs(view[16, 16] - 90).max() <= 2  # white bands beside the photo
    assert len(render_selection_figure([portrait_map]).panel_origins[0]) == len(portrait_map.fusion_layers) + 1
