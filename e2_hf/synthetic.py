"""A synthetic fashion catalog whose tags are visual details, as in real product photos.

    e2-hf make-synthetic --output-dir catalog --products 600 --seed 0 [--views 3] [--image-size 64] [--hard]

Each tag entity is drawn into the picture:

- sub-category: the silhouette (shirt, dress, trousers, bag, ...);
- composition: the fabric texture inside the silhouette (stripes, knit, twill, dots, ...);
- brand: a small logo glyph (a bitmap unique to the brand, in its colour) at a varying position;
- season: the colour of a trim band at the hem.

Views of a product differ by jitter, scale, horizontal flip and logo placement. With `--hard`
products collide on everything but the small details: few silhouettes, colours and textures, so
only the logo and the trim tell items apart, which is where plain CLIP fine-tuning struggles.

Written files (deterministic for a seed):
- `train.h5`, `validation.h5`: the FashionGen HDF5 layout (spec, section 3);
- `catalog.jsonl`: one product per line, with `split`, image paths (PNGs under `images/`),
  description and one column per entity.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

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

    @property
    def brand_name(self) -> str:
        return brand_names()[self.brand]

    def tags(self) -> dict[str, str]:
        return {"brand": self.brand_name, "season": SEASONS[self.season], "subcategory": self.subcategory,
                "composition": self.composition}  # fmt: skip

    def description(self) -> str:
        noun = NOUNS[self.subcategory]
        fabric = FABRIC_WORDS[self.composition]
        sentence = f"{self.colour.capitalize()} {noun} in {fabric} with a contrast trim and a small logo."
        return " ".join([sentence, *self.extras])


def brand_names() -> list[str]:
    return [stem + suffix for suffix in BRAND_SUFFIXES for stem in BRAND_STEMS]


def brand_glyph(brand: int, rng_seed: int = 1234) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A 4x4 bitmap (at least 6 cells on) and a colour, unique per brand index."""
    rng = np.random.default_rng(rng_seed + brand)
    while True:
        bitmap = rng.random((4, 4)) < 0.5
        if 6 <= bitmap.sum() <= 12:
            break
    colour = tuple(int(value) for value in rng.integers(0, 256, 3))
    return bitmap, colour


def sample_products(count: int, rng: np.random.Generator, hard: bool) -> list[ProductSpec]:
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
            brand=int(rng.integers(len(brand_names()))),
            season=int(rng.integers(len(SEASONS))),
            subcategory=subcategories[int(rng.integers(len(subcategories)))],
            composition=compositions[int(rng.integers(len(compositions)))],
            colour=colours[int(rng.integers(len(colours)))],
            extras=list(rng.choice(EXTRAS, size=int(rng.integers(1, 3)), replace=False)),
        ))  # fmt: skip
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


def render_view(product: ProductSpec, size: int, rng: np.random.Generator) -> np.ndarray:
    """One `[size, size, 3]` uint8 photo of the product."""
    scale = rng.uniform(0.85, 1.05)
    shift = rng.uniform(-0.06, 0.06, size=2)
    points = [((x - 0.5) * scale + 0.5 + shift[0], (y - 0.5) * scale + 0.5 + shift[1])
              for x, y in SILHOUETTES[product.subcategory]]  # fmt: skip
    if rng.random() < 0.5:
        points = [(1 - x, y) for x, y in points]
    mask_image = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask_image).polygon([(x * size, y * size) for x, y in points], fill=255)
    mask = np.asarray(mask_image) > 0

    background = 245 + rng.normal(0, 2, (size, size, 1))
    picture = np.repeat(background, 3, axis=2)
    base = np.array(COLOURS[product.colour], dtype=np.float64)
    fabric = base + 28 * _texture(product.composition, size)[..., None]
    picture[mask] = fabric[mask]

    rows = np.nonzero(mask.any(axis=1))[0]
    if len(rows):  # season: a trim band at the hem
        hem = rows[-1]
        band = max(2, size // 16)
        trim_rows = np.zeros_like(mask)
        trim_rows[max(0, hem - band + 1) : hem + 1] = True
        picture[mask & trim_rows] = SEASON_TRIMS[product.season]
    _draw_logo(picture, mask, product.brand, size, rng)
    return np.clip(picture + rng.normal(0, 1.5, picture.shape), 0, 255).astype(np.uint8)


def _draw_logo(picture: np.ndarray, mask: np.ndarray, brand: int, size: int, rng: np.random.Generator) -> None:
    bitmap, colour = brand_glyph(brand)
    cell = max(1, size // 32)
    glyph = np.kron(bitmap, np.ones((cell, cell), dtype=bool))  # [4 * cell, 4 * cell]
    extent = glyph.shape[0]
    inside = np.argwhere(mask[: size - extent, : size - extent])
    if len(inside) == 0:
        return
    top, left = inside[int(rng.integers(len(inside)))]
    box = picture[top : top + extent, left : left + extent]
    box[:] = 250  # a light label behind the glyph
    box[glyph] = colour


def _fixed_bytes(values: list[str]) -> np.ndarray:
    encoded = [value.encode("latin-1", errors="replace") for value in values]
    width = max(1, max(len(value) for value in encoded))
    return np.array(encoded, dtype=f"S{width}").reshape(-1, 1)


def write_fashiongen_h5(path: Path, rows: list[tuple[ProductSpec, int, np.ndarray]]) -> None:
    """Rows `(product, view index, image)` -> the FashionGen HDF5 layout; a product's rows contiguous."""
    import h5py

    def text(values):
        return _fixed_bytes(values)

    with h5py.File(path, "w") as handle:
        images = np.stack([image for _, _, image in rows])
        # one image per chunk: a random read decompresses only that image
        handle.create_dataset("input_image", data=images, chunks=(1, *images.shape[1:]), compression="gzip")
        products = [product for product, _, _ in rows]
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
        handle["input_pose"] = text([f"id_gridfs_{view + 1}" for _, view, _ in rows])
        handle["input_department"] = text(["SYNTHETIC"] * len(rows))
        handle["input_concat_description"] = text([product.description() for product in products])
        handle["input_productID"] = np.array([p.product_id for p in products], dtype=np.int64).reshape(-1, 1)
        handle["input_msrpUSD"] = np.array([100.0 + p.product_id % 50 for p in products]).reshape(-1, 1)
        handle["index"] = np.arange(len(rows), dtype=np.int64).reshape(-1, 1)
        handle["index_2"] = np.arange(len(rows), dtype=np.int64).reshape(-1, 1)


def make_synthetic(
    output_dir: str | Path,
    products: int = 600,
    seed: int = 0,
    views: int = 3,
    image_size: int = 64,
    hard: bool = False,
    eval_fraction: float = 0.2,
    progress: bool = True,
) -> dict[str, int | str]:
    """Writes the catalog (see module doc); returns a summary."""
    if products < 2 or views < 1 or image_size < 16 or not 0 < eval_fraction < 1:
        raise ValueError("need products >= 2, views >= 1, image_size >= 16 and 0 < eval_fraction < 1")
    output_dir = Path(output_dir)
    (output_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    specs = sample_products(products, rng, hard)
    num_eval = max(1, round(products * eval_fraction))
    splits = {"train": specs[: products - num_eval], "validation": specs[products - num_eval :]}
    with open(output_dir / "catalog.jsonl", "w", encoding="utf-8") as catalog:
        for split, split_specs in splits.items():
            rows = []
            for product in tqdm(split_specs, desc=f"rendering {split}", disable=not progress):
                paths = []
                for view in range(views):
                    image = render_view(product, image_size, rng)
                    rows.append((product, view, image))
                    path = f"images/{product.product_id:06d}_{view}.png"
                    Image.fromarray(image).save(output_dir / path)
                    paths.append(path)
                record = {"product_id": product.product_id, "split": split, "images": paths,
                          "description": product.description(), **product.tags()}  # fmt: skip
                catalog.write(json.dumps(record) + "\n")
            write_fashiongen_h5(output_dir / f"{split}.h5", rows)
    return {"output_dir": str(output_dir), "products": products, "train_products": len(splits["train"]),
            "validation_products": num_eval, "views": views, "image_size": image_size, "hard": hard}  # fmt: skip


def all_texts(output_dir: str | Path) -> list[str]:
    """Every description and tag of a written catalog (to learn a tokenizer from)."""
    texts = []
    with open(Path(output_dir) / "catalog.jsonl", encoding="utf-8") as catalog:
        for line in catalog:
            record = json.loads(line)
            texts.append(record["description"])
            texts += [record[entity] for entity in ENTITIES]
    return texts
