"""What E2 looks at: the patches each entity's selection tokens chose, and CLS attention for contrast.

    maps = selection_maps(model, processor, images)       # one SelectionMap per image
    maps[0].patches["brand"]                               # per fusion block: the patch each token chose
    maps[0].boxes("brand")                                 # the same as pixel boxes on maps[0].image
    render_selection_figure(maps).image.save("map.png")    # the paper's attention figure

`e2-hf visualize --model NAME_OR_PATH --image IMG [--image IMG ...] --output FILE.png` does the same.

Boxes are in the pixels of the model's input view (`SelectionMap.image`: the image resized and
framed by the processor, exactly what the model saw), `(left, top, right, bottom)` with right and
bottom exclusive. When the processor's `crop` framing cut part of a photo, the figure adds a last
panel: the whole photo with the square the model saw outlined and the cropped-away parts dimmed
(with `pad` the view already holds the whole photo, on its letterbox bands).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .evaluation.embedding import evaluating
from .images import open_image
from .modeling import E2CLIPModel, E2CLIPProcessor

ENTITY_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))
# A perceptually ordered dark-to-bright ramp for the CLS heat map (anchors of a magma-like map).
HEAT_ANCHORS = np.array([(0, 0, 4), (81, 18, 124), (183, 55, 121), (252, 137, 97), (252, 253, 191)], dtype=np.float64)
MIN_PANEL_SIDE = 224  # display pixels; small model inputs are scaled up by an integer factor
MIN_CELL_SIDE = 48  # display pixels per patch, so that nested boxes stay visible
BOX_WIDTH = 2
BOX_STEP = 3  # inset between boxes of tokens that chose the same patch
TITLE_HEIGHT = 22
PADDING = 8


def entity_colour(entity_index: int) -> tuple[int, int, int]:
    return ENTITY_COLOURS[entity_index % len(ENTITY_COLOURS)]


@dataclass
class SelectionMap:
    """Where one image's selection tokens looked.

    `patches[entity][block]` lists, for each of the entity's selection tokens, the patch index
    (row-major over the `grid` x `grid` patch grid) it chose in fusion block `block`.
    `cls_attention` is the CLS token's attention over the patches, `[grid, grid]`, averaged over
    heads, in `cls_attention_layer` (0-based): the last layer that still sees the patches.
    """

    image: Image.Image  # the model's input view, RGB, side = grid * patch_size
    patch_size: int
    grid: int
    entities: list[str]
    fusion_layers: list[int]
    patches: dict[str, list[list[int]]]
    cls_attention: np.ndarray
    cls_attention_layer: int
    photo: Image.Image | None = None  # the image as given
    view_box: tuple[int, int, int, int] | None = None  # the square of `photo` the model saw (photo pixels)

    @property
    def cropped(self) -> bool:
        """True when the model saw only part of the photo (the `crop` framing of a non-square photo;
        `pad` keeps it whole)."""
        if self.photo is None:
            return False
        left, top, right, bottom = self.view_box
        return left > 0 or top > 0 or right < self.photo.width or bottom < self.photo.height

    def patch_box(self, patch: int) -> tuple[int, int, int, int]:
        row, column = divmod(patch, self.grid)
        size = self.patch_size
        return (column * size, row * size, (column + 1) * size, (row + 1) * size)

    def boxes(self, entity: str, block: int = -1) -> list[tuple[int, int, int, int]]:
        """Pixel boxes of the patches `entity`'s tokens chose in fusion block `block` (default: the last)."""
        return [self.patch_box(patch) for patch in self.patches[entity][block]]


@torch.no_grad()
def selection_maps(model: E2CLIPModel, processor: E2CLIPProcessor, images: Sequence[Image.Image]) -> list[SelectionMap]:
    """Runs the image tower once on `images` (eval mode: argmax choices) and returns their maps."""
    config = model.config
    if not config.entities or not config.active_fusion_layers:
        raise ValueError(
            "This model has no selection tokens or fusion blocks (config.entities or fusion_layers is empty)."
        )
    if not images:
        raise ValueError("No images given.")
    parameter = next(model.parameters())
    pixel_values = processor(images=list(images))["pixel_values"]  # [batch, 3, size, size]
    with evaluating(model):
        outputs = model.vision_model(pixel_values.to(parameter.device, parameter.dtype), output_attentions=True)

    vision_config = config.vision_config
    grid = vision_config.image_size // vision_config.patch_size
    chosen = outputs.selection_indices.cpu()  # [batch, fusion blocks, selection tokens]
    cls_layer, cls_attention = _cls_patch_attention(outputs.attentions, config.token_layout, grid)
    views = _input_views(pixel_values, processor.image_processor)
    maps = []
    for index, (view, photo) in enumerate(zip(views, images)):
        patches = {
            entity: [chosen[index, block, start:end].tolist() for block in range(chosen.shape[1])]
            for entity, (start, end) in zip(config.entities, config.entity_token_slices)
        }
        maps.append(
            SelectionMap(
                image=view,
                patch_size=vision_config.patch_size,
                grid=grid,
                entities=list(config.entities),
                fusion_layers=list(config.active_fusion_layers),
                patches=patches,
                cls_attention=cls_attention[index],
                cls_attention_layer=cls_layer,
                photo=photo if isinstance(photo, Image.Image) else None,
                view_box=_view_box(processor.image_processor, photo) if isinstance(photo, Image.Image) else None,
            )
        )
    return maps


def _view_box(image_processor, photo: Image.Image) -> tuple[int, int, int, int]:
    """The square of `photo` the model saw, in whole photo pixels (beyond the photo with `pad`)."""
    return tuple(round(value) for value in image_processor.view_box(*photo.size))


def _cls_patch_attention(attentions: tuple[torch.Tensor, ...], layout, grid: int):
    """`(layer, [batch, grid, grid])`: CLS-to-patch attention of the last layer that sees all patches."""
    layer = max(index for index, weights in enumerate(attentions) if weights.shape[-1] == layout.length)
    cls_to_all = layout.cls(attentions[layer].transpose(1, 2)).float().mean(dim=1)  # [batch, sequence]
    cls_row = layout.patches(cls_to_all)  # [batch, patches]
    cls_row = cls_row / cls_row.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return layer, cls_row.reshape(-1, grid, grid).cpu().numpy()


def _input_views(pixel_values: torch.Tensor, image_processor) -> list[Image.Image]:
    """Undo the processor's normalisation: the RGB images the model saw."""
    mean = torch.tensor(image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(1, 3, 1, 1)
    pixels = (pixel_values.float() * std + mean).clamp(0, 1) * 255  # [batch, 3, size, size]
    arrays = pixels.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(array, mode="RGB") for array in arrays]


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------
def display_scale(selection_map: SelectionMap) -> int:
    """Integer upscaling so that panels are at least MIN_PANEL_SIDE and patches MIN_CELL_SIDE wide."""
    side = selection_map.image.width
    return max(1, math.ceil(MIN_PANEL_SIDE / side), math.ceil(MIN_CELL_SIDE / selection_map.patch_size))


def box_outlines(selection_map: SelectionMap, block: int, scale: int) -> list[tuple[int, tuple[int, int, int, int]]]:
    """`(entity index, display box)` for each selection token in `block`; tokens that chose the same
    patch get nested boxes (each BOX_STEP pixels further in), so every choice stays visible."""
    outlines, seen = [], {}
    for entity_index, entity in enumerate(selection_map.entities):
        for patch in selection_map.patches[entity][block]:
            inset = BOX_STEP * seen.get(patch, 0)
            seen[patch] = seen.get(patch, 0) + 1
            left, top, right, bottom = (value * scale for value in selection_map.patch_box(patch))
            outlines.append((entity_index, (left + inset, top + inset, right - 1 - inset, bottom - 1 - inset)))
    return outlines


def draw_selection_panel(selection_map: SelectionMap, block: int = -1) -> Image.Image:
    """The input view, scaled up, with one box per selection token in its entity's colour."""
    scale = display_scale(selection_map)
    panel = selection_map.image.resize((selection_map.image.width * scale,) * 2, Image.NEAREST)
    draw = ImageDraw.Draw(panel)
    for entity_index, box in box_outlines(selection_map, block, scale):
        draw.rectangle(box, outline=entity_colour(entity_index), width=BOX_WIDTH)
    return panel


def draw_frame_panel(selection_map: SelectionMap, side: int, dimming: float = 0.6) -> Image.Image:
    """The whole photo fitted into a `side` square: the part the model saw outlined, the rest dimmed."""
    photo = selection_map.photo.convert("RGB")
    scale = side / max(photo.size)
    shown = photo.resize((max(1, round(photo.width * scale)), max(1, round(photo.height * scale))), Image.BICUBIC)
    offset = ((side - shown.width) // 2, (side - shown.height) // 2)
    box = tuple(round(value * scale) + offset[index % 2] for index, value in enumerate(selection_map.view_box))
    panel = Image.new("RGB", (side, side), "white")
    panel.paste(Image.blend(shown, Image.new("RGB", shown.size, "white"), dimming), offset)
    panel.paste(shown.crop(tuple(value - offset[index % 2] for index, value in enumerate(box))), box[:2])
    ImageDraw.Draw(panel).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), outline=(0, 0, 0), width=BOX_WIDTH)
    return panel


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB along HEAT_ANCHORS."""
    position = np.clip(values, 0, 1) * (len(HEAT_ANCHORS) - 1)
    low = np.floor(position).astype(int).clip(max=len(HEAT_ANCHORS) - 2)
    fraction = (position - low)[..., None]
    return (HEAT_ANCHORS[low] * (1 - fraction) + HEAT_ANCHORS[low + 1] * fraction).round().astype(np.uint8)


def draw_cls_attention_panel(selection_map: SelectionMap, opacity: float = 0.6) -> Image.Image:
    """The input view in grey under the CLS attention heat map (scaled to its maximum)."""
    scale = display_scale(selection_map)
    side = selection_map.image.width * scale
    attention = selection_map.cls_attention / max(float(selection_map.cls_attention.max()), 1e-12)
    heat = Image.fromarray(heat_colours(attention), mode="RGB").resize((side, side), Image.NEAREST)
    grey = selection_map.image.convert("L").convert("RGB").resize((side, side), Image.NEAREST)
    return Image.blend(grey, heat, opacity)


@dataclass
class SelectionFigure:
    """The rendered figure and where each panel sits in it (for tests and for cropping)."""

    image: Image.Image
    panel_origins: list[list[tuple[int, int]]] = field(default_factory=list)  # [row][column] -> (x, y)
    panel_side: int = 0

    def panel(self, row: int, column: int) -> Image.Image:
        x, y = self.panel_origins[row][column]
        return self.image.crop((x, y, x + self.panel_side, y + self.panel_side))


def load_font(size: int) -> ImageFont.ImageFont:
    """PIL's default font at `size` pixels (a fixed bitmap font on Pillow < 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def render_selection_figure(maps: Sequence[SelectionMap], titles: Sequence[str] | None = None) -> SelectionFigure:
    """One row per image: a panel per fusion block, then the CLS attention panel, then (when some
    photo is not square) the whole photo with the part the model saw; a legend below."""
    if not maps:
        raise ValueError("No selection maps to draw.")
    first = maps[0]
    panel_side = first.image.width * display_scale(first)
    blocks = len(first.fusion_layers)
    show_frames = any(selection_map.cropped for selection_map in maps)
    columns = blocks + 1 + show_frames
    font = load_font(13)
    legend_height = 24 * (len(first.entities) + 1) + PADDING
    title_height = TITLE_HEIGHT if titles else 0
    row_height = title_height + TITLE_HEIGHT + panel_side + PADDING
    width = PADDING + columns * (panel_side + PADDING)
    height = PADDING + len(maps) * row_height + legend_height
    figure = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(figure)
    captions = [
        f"fusion block {block + 1} (after layer {layer + 1})" for block, layer in enumerate(first.fusion_layers)
    ]
    origins = []
    for row, selection_map in enumerate(maps):
        top = PADDING + row * row_height
        if titles:
            draw.text((PADDING, top + 3), str(titles[row]), fill="black", font=load_font(15))
            top += title_height
        panels = [draw_selection_panel(selection_map, block) for block in range(blocks)]
        panels.append(draw_cls_attention_panel(selection_map))
        row_captions = [*captions, f"CLS attention (layer {selection_map.cls_attention_layer + 1})"]
        if show_frames and selection_map.photo is not None:
            panels.append(draw_frame_panel(selection_map, panel_side))
            row_captions.append(f"the photo ({selection_map.photo.width}x{selection_map.photo.height}); model's view")
        row_origins = []
        for column, (panel, caption) in enumerate(zip(panels, row_captions)):
            x = PADDING + column * (panel_side + PADDING)
            draw.text((x, top + 3), caption, fill="black", font=font)
            figure.paste(panel, (x, top + TITLE_HEIGHT))
            row_origins.append((x, top + TITLE_HEIGHT))
        origins.append(row_origins)
    _draw_legend(draw, first, top=PADDING + len(maps) * row_height, font=font)
    return SelectionFigure(image=figure, panel_origins=origins, panel_side=panel_side)


def _draw_legend(draw: ImageDraw.ImageDraw, selection_map: SelectionMap, top: int, font) -> None:
    for entity_index, entity in enumerate(selection_map.entities):
        y = top + 24 * entity_index
        tokens = len(selection_map.patches[entity][0])
        draw.rectangle((PADDING, y + 2, PADDING + 14, y + 16), outline=entity_colour(entity_index), width=BOX_WIDTH)
        draw.text(
            (PADDING + 22, y), f"{entity}: the patches its {tokens} selection tokens chose", fill="black", font=font
        )
    y = top + 24 * len(selection_map.entities)
    ramp = heat_colours(np.linspace(0, 1, 60))
    for offset, colour in enumerate(ramp):
        draw.line((PADDING + offset, y + 2, PADDING + offset, y + 16), fill=tuple(int(c) for c in colour))
    draw.text((PADDING + 68, y), "CLS attention to each patch, low to high", fill="black", font=font)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def load_images(paths: Sequence[str | Path]) -> list[Image.Image]:
    """RGB images from files, upright; a missing or unreadable file is an error naming it."""
    return [open_image(path) for path in paths]


def run(args: argparse.Namespace) -> None:
    from .evaluation.embedding import load_for_inference

    if Path(args.output).suffix.lower() != ".png":
        raise ValueError(f"--output must be a .png file, got {args.output}")
    images = load_images(args.image)
    model, processor, _, _ = load_for_inference(args.model, args.device)
    maps = selection_maps(model, processor, images)
    figure = render_selection_figure(maps, titles=[Path(path).name for path in args.image])
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    figure.image.save(args.output)
    for path, selection_map in zip(args.image, maps):
        chosen = ", ".join(f"{entity} {selection_map.patches[entity][-1]}" for entity in selection_map.entities)
        print(f"{path}: last fusion block chose patches {chosen}")
    print(f"wrote {args.output}")
