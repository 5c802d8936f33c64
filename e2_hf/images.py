"""Opening image files the way a viewer shows them: the one place that reads an image file.

Phone and camera photos often store their pixels sideways with an EXIF orientation tag saying how
to turn them; viewers (and transformers' `load_image`) apply it, so E2 does too, wherever it
reads a file: catalogs (training, evaluation, indexing), `visualize`, `tag` and the Space.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps

EXIF_ORIENTATION = 0x0112  # 1 = upright; 2-8 = mirrored and/or turned


def upright(image: Image.Image) -> Image.Image:
    """`image` with its EXIF orientation applied; an image without one is returned as it is."""
    if image.getexif().get(EXIF_ORIENTATION, 1) == 1:
        return image
    return ImageOps.exif_transpose(image)


def open_image(path: str | Path) -> Image.Image:
    """The file's image, decoded, upright and RGB; a missing or unreadable file is an error naming it."""
    from .modeling.image_processing_e2clip import to_rgb_image

    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb_image(upright(image))
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path} does not exist") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"image {path} cannot be read as an image: {error}") from None
