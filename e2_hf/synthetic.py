"""A synthetic fashion catalog whose tags are visual details, as in real product photos.

    e2-hf make-synthetic --output-dir catalog --products 600 --seed 0 [--views 3] [--image-size 64] [--hard]
        [--brands 48] [--logo-size PX] [--framing tight|varied]

Each tag entity is drawn into the picture:

- sub-category: the silhouette (shirt, dress, trousers, bag, ...);
- composition: the fabric texture inside the silhouette (stripes, knit, twill, dots, ...);
- brand: a small logo glyph (a bitmap unique to the brand, in its colour) at a varying position;
- season: the colour of a trim band at the hem.

Views of a product differ by jitter, scale, horizontal flip and logo placement (`--framing
varied` also moves and shrinks the garment, so the hem lands on different patch rows). With
`--hard` products collide on everything but the small details: few silhouettes, colours and
textures, so only the logo and the trim tell items apart, which is where plain CLIP fine-tuning
struggles.

Written files (deterministic for a seed):
- `train.h5`, `validation.h5`: the FashionGen HDF5 layout, plus each view's detail boxes
  (`input_logo_box`, `input_trim_box`, `input_garment_box`);
- `catalog.jsonl`: one product per line, with `split`, image paths (PNGs under `images/`),
  description, one column per entity and `details`: per view, the pixel boxes
  `(left, top, right, bottom)` (right and bottom exclusive) of the `logo`, the `trim` and the
  `garment`, the ground truth where each entity's selection tokens should look;
- `interventions.jsonl` (images under `edits/`): for each validation product's first view, edited copies with one detail
  changed and everything else equal (`logo_moved`, `logo_removed`, `trim_removed`), with their
  boxes: does a token's choice follow the detail?
"""

from __future__ import annotations

import colorsys
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from .extras import require

ENTITIES = ("brand", "season", "subcategory", "composition")
SEASONS = tuple(f"{half}{year}" for year in range(2014, 2019) for half in ("SS", "FW"))
SEASON_TRIMS = ((230, 57, 70), (29, 53, 87), (42, 157, 143), (233, 196, 106), (244, 162, 97),
                (131, 56, 236), (6, 214, 160), (17, 138, 178), (239, 71, 111), (60, 60, 60))  # fmt: skip
COLOURS = {"black": (35, 35, 40), "navy": (30, 45, 95), "camel": (190, 150, 100), "olive": (95, 105, 60),
           "burgundy": (120, 30, 45), "grey": (130, 130, 135), "cream": (235, 225, 200), "red": (200, 40, 40),
           "sky blue": (120, 170, 220), "forest green": (35, 90, 55)}  # fmt: skip
BRAND_STEMS = ("Aurel", "Bexley", "Corvin", "Dalia", "Evren", "Fauve", "Galen", "Helio", "Ines", "Jory", "Kato",
               "Lumen", "Mira", "Nolan", "Oren", "Pavo", "Quill", "Rhea", "Sable", "Tamsin", "Ulla", "Vesper",
               "Wren", "Xeno")  # fmt: skip
BRAND_SUFFIXES = ("", " Studio")
# Silhouettes as polygons in unit coordinates (x, y), drawn inside the central area of the image.
SILHOUETTES = {
    "SHIRTS": [(0.3, 0.15), (0.7, 0.15), (0.9, 0.35), (0.78, 0.45), (0.72, 0.38), (0.72, 0.9), (0.28, 0.9),
               (0.28, 0.38), (0.22, 0.45), (0.1, 0.35)],
    "DRESSES": [(0.4, 0.1), (0.6, 0.1), (0.64, 0.4), (0.85, 0.92), (0.15, 0.92), (0.36, 0.4)],
    "JEANS": [(0.3, 0.1), (0.7, 0.1), (0.74, 0.92), (0.56, 0.92), (0.5, 0.4), (0.44, 0.92), (0.26, 0.92)],
    "SKIRTS": [(0.35, 0.25), (0.65, 0.25), (0.82, 0.8), (0.18, 0.8)],
    "JACKETS": [(0.28, 0.12), (0.72, 0.12), (0.92, 0.5), (0.8, 0.55), (0.74, 0.45), (0.74, 0.9), (0.26, 0.9),
                (0.26, 0.45), (0.2, 0.55), (0.08, 0.5)],
    "BAGS": [(0.25, 0.4), (0.35, 0.4), (0.38, 0.2), (0.62, 0.2), (0.65, 0.4), (0.75, 0.4), (0.8, 0.85),
             (0.2, 0.85)],
    "SNEAKERS": [(0.12, 0.55), (0.45, 0.45), (0.6, 0.5), (0.88, 0.62), (0.88, 0.75), (0.12, 0.75)],
    "SHORTS": [(0.28, 0.3), (0.72, 0.3), (0.78, 0.7), (0.55, 0.7), (0.5, 0.5), (0.45, 0.7), (0.22, 0.7)],
}  # fmt: skip
NOUNS = {"SHIRTS": "shirt", "DRESSES": "dress", "JEANS": "trousers", "SKIRTS": "skirt", "JACKETS": "jacket",
         "BAGS": "bag", "SNEAKERS": "sneakers", "SHORTS": "shorts"}  # fmt: skip
COMPOSITIONS = ("100% cotton", "100% wool", "100% silk", "100% linen", "polyester", "100% leather", "cotton denim",
                "cashmere blend", "nylon", "viscose")  # fmt: skip
FABRIC_WORDS = {
    "100% cotton": "crisp striped cotton",
    "100% wool": "chunky knit wool",
    "100% silk": "smooth silk",
    "100% linen": "crosshatched linen",
    "polyester": "dotted technical fabric",
    "100% leather": "grained leather",
    "cotton denim": "diagonal twill denim",
    "cashmere blend": "soft brushed cashmere",
    "nylon": "ripstop nylon",
    "viscose": "wavy viscose",
}
EXTRAS = ("Relaxed fit.", "Slim fit.", "Made in Italy.", "Button closure.", "Zip fastening.", "Two pockets.",
          "Tonal stitching.", "Unlined.", "Regular fit.", "Dry clean only.")  # fmt: skip
LOGO_CORNERS = ("at the chest", "at the hip", "at the hem", "near the collar")


@dataclass
class ProductSpec:
    product_id: int
    brand: int
    season: int
    subcategory: str
    composition: str
    colour: str
    extras: list[str] = field(default_factory=list)
    caption: str | None = None  # set for `captions="varied"`: the text used instead of the description

    @property
    def brand_name(self) -> str:
        return brand_names()[self.brand]

    def tags(self) -> dict[str, str]:
        return {"brand": self.brand_name, "season": SEASONS[self.season], "subcategory": self.subcategory,
                "composition": self.composition}  # fmt: skip

    def description(self) -> str:
        if self.caption is not None:
            return self.caption
        noun = NOUNS[self.subcategory]
        fabric = FABRIC_WORDS[self.composition]
        sentence = f"{self.colour.capitalize()} {noun} in {fabric} with a contrast trim and a small logo."
        return " ".join([sentence, *self.extras])


CAPTIONS = ("product", "varied")
# Alt-text-like captions of `captions="varied"`: a tag alone, a few words, or the full product text.
CAPTION_TEMPLATES = ("{brand}", "{season}", "{subcategory}", "{composition}", "{brand} {noun}",
                     "{colour} {noun} by {brand}, {season}",
                     "{composition}. {subcategory}. {brand}. {season}. {description}")  # fmt: skip


def varied_caption(product: ProductSpec, rng: np.random.Generator) -> str:
    template = CAPTION_TEMPLATES[int(rng.integers(len(CAPTION_TEMPLATES)))]
    return template.format(noun=NOUNS[product.subcategory], colour=product.colour, description=product.description(),
                           **product.tags())  # fmt: skip


def brand_names() -> list[str]:
    return [stem + suffix for suffix in BRAND_SUFFIXES for stem in BRAND_STEMS]


LOGO_COLOURS = ("random", "palette")


def brand_glyph(
    brand: int, logo_colours: str = "random", rng_seed: int = 1234
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A 4x4 bitmap (at least 6 cells on) and a colour, unique per brand index.

    `random` colours are any RGB; `palette` colours are saturated hues spread around the colour
    wheel by the golden ratio (the first brands are far apart, as printed logos usually are)."""
    rng = np.random.default_rng(rng_seed + brand)
    while True:
        bitmap = rng.random((4, 4)) < 0.5
        if 6 <= bitmap.sum() <= 12:
            break
    colour = tuple(int(value) for value in rng.integers(0, 256, 3))
    if logo_colours == "palette":
        hue = (brand * 0.618034) % 1.0
        colour = tuple(int(round(255 * value)) for value in colorsys.hsv_to_rgb(hue, 0.9, 0.85 - 0.25 * (brand % 2)))
    return bitmap, colour


def sample_products(
    count: int, rng: np.random.Generator, hard: bool, brands: int = 48, captions: str = "product"
) -> list[ProductSpec]:
    subcategories = list(SILHOUETTES)
    colours = list(COLOURS)
    if hard:  # collide on everything but the small details
        subcategories, colours, compositions = subcategories[:2], colours[:2], list(COMPOSITIONS[:3])
    else:
        compositions = list(COMPOSITIONS)
    products = []
    for product_id in range(count):
        products.append(ProductSpec(
            product_id=product_id,
            brand=int(rng.integers(brands)),
            season=int(rng.integers(len(SEASONS))),
            subcategory=subcategories[int(rng.integers(len(subcategories)))],
            composition=compositions[int(rng.integers(len(compositions)))],
            colour=colours[int(rng.integers(len(colours)))],
            extras=list(rng.choice(EXTRAS, size=int(rng.integers(1, 3)), replace=False)),
        ))  # fmt: skip
        if captions == "varied":
            products[-1].caption = varied_caption(products[-1], rng)
    return products


def _texture(composition: str, size: int) -> np.ndarray:
    """A `[size, size]` brightness pattern in [-1, 1] for the fabric."""
    y, x = np.mgrid[0:size, 0:size] / size
    patterns = {
        "100% cotton": np.sign(np.sin(y * np.pi * 16)),
        "100% wool": np.sign(np.sin(x * np.pi * 12) * np.sin(y * np.pi * 24)),
        "100% silk": np.sin((x + y) * np.pi * 2),
        "100% linen": np.sign(np.sin(x * np.pi * 20)) * np.sign(np.sin(y * np.pi * 20)),
        "polyester": (((x * 10) % 1 - 0.5) ** 2 + ((y * 10) % 1 - 0.5) ** 2 < 0.06) * 2.0 - 1,
        "100% leather": np.sin(x * 57.0) * np.sin(y * 43.0) * np.sin((x + y) * 31.0),
        "cotton denim": np.sign(np.sin((x + y) * np.pi * 18)),
        "cashmere blend": np.sin(x * np.pi * 3) * 0.5,
        "nylon": np.sign(np.sin(x * np.pi * 8)) * np.sign(np.sin(y * np.pi * 8)) * 0.5,
        "viscose": np.sign(np.sin(y * np.pi * 10 + np.sin(x * np.pi * 6) * 2)),
    }
    return patterns[composition]


FRAMINGS = ("tight", "varied")
DETAILS = ("logo", "trim", "garment")
# Where each entity's tag is drawn: the ground truth a selection token can be scored against.
ENTITY_DETAILS = {"brand": "logo", "season": "trim", "subcategory": "garment", "composition": "garment"}


@dataclass(frozen=True)
class ViewLayout:
    """Everything random about one view; drawing a layout twice gives the same pixels."""

    scale: float
    shift: tuple[float, float]
    flipped: bool
    logo_at: tuple[int, int] | None  # (top, left) of the logo label, pixels; None: no room on the garment
    noise_seed: int


def silhouette_mask(product: ProductSpec, layout: ViewLayout, size: int) -> np.ndarray:
    """`[size, size]` bool: the garment's pixels in this view."""
    points = [((x - 0.5) * layout.scale + 0.5 + layout.shift[0], (y - 0.5) * layout.scale + 0.5 + layout.shift[1])
              for x, y in SILHOUETTES[product.subcategory]]  # fmt: skip
    if layout.flipped:
        points = [(1 - x, y) for x, y in points]
    mask_image = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask_image).polygon([(x * size, y * size) for x, y in points], fill=255)
    return np.asarray(mask_image) > 0


def logo_anchors(mask: np.ndarray, logo_size: int) -> np.ndarray:
    """`[n, 2]` (top, left) positions whose label starts on the garment and fits in the image."""
    size = mask.shape[0]
    return np.argwhere(mask[: size - logo_size, : size - logo_size])


def sample_layout(
    product: ProductSpec, size: int, logo_size: int, framing: str, rng: np.random.Generator
) -> ViewLayout:
    """Jitter, scale, flip and logo placement of one view. `varied` framing also moves and shrinks
    the garment (the hem, and so the trim, then lands on different patch rows)."""
    if framing == "varied":
        scale = rng.uniform(0.6, 1.05)
        limit = max(0.0, 0.48 - 0.45 * scale)  # keeps the garment inside the picture
        shift = rng.uniform(-limit, limit, size=2)
    else:
        scale = rng.uniform(0.85, 1.05)
        shift = rng.uniform(-0.06, 0.06, size=2)
    flipped = bool(rng.random() < 0.5)
    noise_seed = int(rng.integers(2**31))
    layout = ViewLayout(float(scale), (float(shift[0]), float(shift[1])), flipped, None, noise_seed)
    anchors = logo_anchors(silhouette_mask(product, layout, size), logo_size)
    if len(anchors) == 0:
        return layout
    top, left = anchors[int(rng.integers(len(anchors)))]
    return ViewLayout(layout.scale, layout.shift, flipped, (int(top), int(left)), noise_seed)


def moved_logo(product: ProductSpec, layout: ViewLayout, size: int, logo_size: int, rng) -> ViewLayout | None:
    """The same view with the logo elsewhere on the garment, at least two logo sides away."""
    if layout.logo_at is None:
        return None
    anchors = logo_anchors(silhouette_mask(product, layout, size), logo_size)
    far = np.abs(anchors - np.array(layout.logo_at)).max(axis=1) >= 2 * logo_size
    if not far.any():
        return None
    top, left = anchors[far][int(rng.integers(int(far.sum())))]
    return ViewLayout(layout.scale, layout.shift, layout.flipped, (int(top), int(left)), layout.noise_seed)


def _box(rows: np.ndarray, columns: np.ndarray) -> list[int] | None:
    """(left, top, right, bottom), right and bottom exclusive; None when empty."""
    if len(rows) == 0:
        return None
    return [int(columns.min()), int(rows.min()), int(columns.max()) + 1, int(rows.max()) + 1]


def draw_view(
    product: ProductSpec,
    layout: ViewLayout,
    size: int,
    logo_size: int,
    logo: bool = True,
    trim: bool = True,
    logo_colours: str = "random",
) -> tuple[np.ndarray, dict[str, list[int] | None]]:
    """One `[size, size, 3]` uint8 photo of the product and the pixel boxes of its details:
    `logo` (the brand's label), `trim` (the season's band at the hem) and `garment`."""
    rng = np.random.default_rng(layout.noise_seed)
    mask = silhouette_mask(product, layout, size)
    background = 245 + rng.normal(0, 2, (size, size, 1))
    picture = np.repeat(background, 3, axis=2)
    base = np.array(COLOURS[product.colour], dtype=np.float64)
    fabric = base + 28 * _texture(product.composition, size)[..., None]
    picture[mask] = fabric[mask]
    details: dict[str, list[int] | None] = {"logo": None, "trim": None, "garment": _box(*np.nonzero(mask))}

    rows = np.nonzero(mask.any(axis=1))[0]
    if len(rows) and trim:  # season: a trim band at the hem
        hem = rows[-1]
        band = np.zeros_like(mask)
        band[max(0, hem - max(2, size // 16) + 1) : hem + 1] = True
        picture[mask & band] = SEASON_TRIMS[product.season]
        details["trim"] = _box(*np.nonzero(mask & band))
    if layout.logo_at is not None and logo:
        details["logo"] = _draw_logo(picture, layout.logo_at, brand_glyph(product.brand, logo_colours), logo_size)
    noise = rng.normal(0, 1.5, picture.shape)
    return np.clip(picture + noise, 0, 255).astype(np.uint8), details


def default_logo_size(image_size: int) -> int:
    return 4 * max(1, image_size // 32)


def _draw_logo(picture: np.ndarray, at: tuple[int, int], glyph_and_colour, logo_size: int) -> list[int]:
    """Draws a brand's glyph on a light label at `at` (top, left); returns the label's box."""
    bitmap, colour = glyph_and_colour
    cell = max(1, logo_size // 4)
    glyph = np.kron(bitmap, np.ones((cell, cell), dtype=bool))  # [4 * cell, 4 * cell]
    top, left = at
    extent = glyph.shape[0]
    box = picture[top : top + extent, left : left + extent]
    box[:] = 250  # a light label behind the glyph
    box[glyph] = colour
    return [left, top, left + extent, top + extent]


def _fixed_bytes(values: list[str]) -> np.ndarray:
    encoded = [value.encode("latin-1", errors="replace") for value in values]
    width = max(1, max(len(value) for value in encoded))
    return np.array(encoded, dtype=f"S{width}").reshape(-1, 1)


def write_fashiongen_h5(path: Path, rows: list[RenderedView]) -> None:
    """Rendered views -> the FashionGen HDF5 layout (a product's rows contiguous), plus the
    detail boxes as `input_logo_box`, `input_trim_box`, `input_garment_box`: `[N, 4]` int32
    (left, top, right, bottom), -1 where a view has no such detail."""
    h5py = require("h5py", "writing the synthetic catalog's FashionGen HDF5 file")

    def text(values):
        return _fixed_bytes(values)

    with h5py.File(path, "w") as handle:
        images = np.stack([row.image for row in rows])
        # one image per chunk: a random read decompresses only that image
        handle.create_dataset("input_image", data=images, chunks=(1, *images.shape[1:]), compression="gzip")
        products = [row.product for row in rows]
        tags = [product.tags() for product in products]
        handle["input_description"] = text([product.description() for product in products])
        handle["input_brand"] = text([tag["brand"] for tag in tags])
        handle["input_season"] = text([tag["season"] for tag in tags])
        handle["input_subcategory"] = text([tag["subcategory"] for tag in tags])
        handle["input_composition"] = text([tag["composition"] for tag in tags])
        handle["input_category"] = text(["CLOTHING" if p.subcategory not in ("BAGS", "SNEAKERS") else "ACCESSORIES"
                                         for p in products])  # fmt: skip
        handle["input_gender"] = text(["UNISEX"] * len(rows))
        handle["input_name"] = text([f"{tag['brand']} {NOUNS[tag['subcategory']]}" for tag in tags])
        handle["input_pose"] = text([f"id_gridfs_{row.view + 1}" for row in rows])
        handle["input_department"] = text(["SYNTHETIC"] * len(rows))
        handle["input_concat_description"] = text([product.description() for product in products])
        handle["input_productID"] = np.array([p.product_id for p in products], dtype=np.int64).reshape(-1, 1)
        handle["input_msrpUSD"] = np.array([100.0 + p.product_id % 50 for p in products]).reshape(-1, 1)
        for detail in DETAILS:
            boxes = [row.details[detail] or [-1, -1, -1, -1] for row in rows]
            handle[f"input_{detail}_box"] = np.array(boxes, dtype=np.int32)
        handle["index"] = np.arange(len(rows), dtype=np.int64).reshape(-1, 1)
        handle["index_2"] = np.arange(len(rows), dtype=np.int64).reshape(-1, 1)


@dataclass
class RenderedView:
    product: ProductSpec
    view: int
    image: np.ndarray
    details: dict[str, list[int] | None]


def make_synthetic(
    output_dir: str | Path,
    products: int = 600,
    seed: int = 0,
    views: int = 3,
    image_size: int = 64,
    hard: bool = False,
    eval_fraction: float = 0.2,
    progress: bool = True,
    brands: int = 48,
    logo_size: int | None = None,
    framing: str = "tight",
    logo_colours: str = "random",
    captions: str = "product",
) -> dict[str, int | str]:
    """Writes the catalog (see module doc); returns a summary.

    `brands` (at most 48) draws the products' brands from the first `brands` names; `logo_size`
    is the side of the logo label in pixels (default `image_size // 8`, a multiple of 4);
    `framing` is `tight` (the garment fills the picture, the hem always near the bottom) or
    `varied` (the garment's size and place vary, so the trim's position does too);
    `logo_colours` is `random` (any RGB per brand) or `palette` (saturated, well separated hues);
    `captions` is `product` (a product description) or `varied` (alt-text-like captions: a tag
    alone, a few words or the full text, as web captions are; for pretraining a base model).
    """
    logo_size = logo_size or default_logo_size(image_size)
    if products < 2 or views < 1 or image_size < 16 or not 0 < eval_fraction < 1:
        raise ValueError("need products >= 2, views >= 1, image_size >= 16 and 0 < eval_fraction < 1")
    if not 1 <= brands <= len(brand_names()):
        raise ValueError(f"brands must be between 1 and {len(brand_names())}, got {brands}")
    if logo_size % 4 or not 4 <= logo_size <= image_size // 2:
        raise ValueError(f"logo_size must be a multiple of 4 between 4 and {image_size // 2}, got {logo_size}")
    if captions not in CAPTIONS:
        raise ValueError(f"captions must be one of {CAPTIONS}, got {captions!r}")
    if logo_colours not in LOGO_COLOURS:
        raise ValueError(f"logo_colours must be one of {LOGO_COLOURS}, got {logo_colours!r}")
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {FRAMINGS}, got {framing!r}")
    output_dir = Path(output_dir)
    (output_dir / "images").mkdir(parents=True, exist_ok=True)
    (output_dir / "edits").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    specs = sample_products(products, rng, hard, brands, captions)
    num_eval = max(1, round(products * eval_fraction))
    splits = {"train": specs[: products - num_eval], "validation": specs[products - num_eval :]}
    edits = []
    with open(output_dir / "catalog.jsonl", "w", encoding="utf-8") as catalog:
        for split, split_specs in splits.items():
            rows = []
            for product in tqdm(split_specs, desc=f"rendering {split}", disable=not progress):
                layouts = [sample_layout(product, image_size, logo_size, framing, rng) for _ in range(views)]
                for view, layout in enumerate(layouts):
                    image, details = draw_view(product, layout, image_size, logo_size, logo_colours=logo_colours)
                    rows.append(RenderedView(product, view, image, details))
                    Image.fromarray(image).save(output_dir / _image_path(product, view))
                record = {"product_id": product.product_id, "split": split,
                          "images": [_image_path(product, view) for view in range(views)],
                          "description": product.description(), **product.tags(),
                          "details": [row.details for row in rows[-views:]]}  # fmt: skip
                catalog.write(json.dumps(record) + "\n")
                if split == "validation":
                    edits += _write_edits(output_dir, product, layouts[0], image_size, logo_size, logo_colours, rng)
            write_fashiongen_h5(output_dir / f"{split}.h5", rows)
    with open(output_dir / "interventions.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(edit) + "\n" for edit in edits)
    return {"output_dir": str(output_dir), "products": products, "train_products": len(splits["train"]),
            "validation_products": num_eval, "views": views, "image_size": image_size, "hard": hard,
            "brands": brands, "logo_size": logo_size, "framing": framing, "logo_colours": logo_colours,
            "captions": captions}  # fmt: skip


def _image_path(product: ProductSpec, view: int, edit: str | None = None) -> str:
    if edit:
        return f"edits/{product.product_id:06d}_{view}_{edit}.png"
    return f"images/{product.product_id:06d}_{view}.png"


def _write_edits(output_dir: Path, product: ProductSpec, layout: ViewLayout, size: int, logo_size: int,
                 logo_colours: str, rng) -> list:  # fmt: skip
    """Edited copies of a validation product's first view, one detail changed and all else equal:
    the logo moved elsewhere on the garment, the logo removed, the trim removed."""
    moved = moved_logo(product, layout, size, logo_size, rng)
    variants = {"logo_moved": (moved, True, True), "logo_removed": (layout, False, True),
                "trim_removed": (layout, True, False)}  # fmt: skip
    edits = []
    for edit, (edited_layout, logo, trim) in variants.items():
        if edited_layout is None or (edit == "logo_removed" and layout.logo_at is None):
            continue
        image, details = draw_view(product, edited_layout, size, logo_size, logo=logo, trim=trim,
                                   logo_colours=logo_colours)  # fmt: skip
        path = _image_path(product, 0, edit)
        Image.fromarray(image).save(output_dir / path)
        edits.append({"product_id": product.product_id, "view": 0, "edit": edit, "image": path, "details": details})
    return edits


def all_texts(output_dir: str | Path) -> list[str]:
    """Every description and tag of a written catalog (to learn a tokenizer from)."""
    texts = []
    with open(Path(output_dir) / "catalog.jsonl", encoding="utf-8") as catalog:
        for line in catalog:
            record = json.loads(line)
            texts.append(record["description"])
            texts += [record[entity] for entity in ENTITIES]
    return texts
