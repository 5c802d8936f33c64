"""E2CLIPImageProcessor: CLIP's image preprocessing, robust to real product images, with a choice of framing.

Two things are added to CLIP's image processor, both applied before CLIP's own resize, centre crop,
rescale and normalisation:

- every input becomes an RGB image first: any PIL mode (transparent pixels composited on white,
  16-bit scaled), or an array/tensor `[H, W]`, `[H, W, C]`, `[C, H, W]`;
- `image_fit` chooses how a non-square photo becomes the square the model sees. `"crop"` is CLIP's
  centre crop (the default: what pretrained CLIP and the paper use); it removes the parts of the
  long side outside the central square (a 1080x1340 portrait photo loses 19% of its height).
  `"pad"` letterboxes the photo onto a square of `pad_color` first, so the whole product is kept
  at a lower resolution.

The setting is part of `preprocessor_config.json`, so a saved or pushed model preprocesses the same
way in every tool that loads its processor.

This file is copied into every Hub checkpoint: it imports only the standard library, torch,
numpy/PIL (transformers' own image dependencies) and transformers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import torch
import transformers
from PIL import Image, ImageOps

# transformers 5.x splits CLIP's image processor into a torchvision and a PIL backend; the PIL one
# needs nothing beyond transformers' own dependencies. 4.x has only `CLIPImageProcessor` (PIL).
_CLIPImageProcessorPil = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor

IMAGE_FITS = ("crop", "pad")
WHITE = (255, 255, 255)


class E2CLIPImageProcessor(_CLIPImageProcessorPil):
    """CLIP's image processor that accepts any image mode and frames photos by `image_fit`.

    Args:
        image_fit: `"crop"` (CLIP's centre crop) or `"pad"` (letterbox to a square of `pad_color`).
        pad_color: RGB background of the letterbox, white by default (studio product photos).
        **kwargs: CLIP's image-processor settings (`size`, `crop_size`, `image_mean`, ...).
    """

    def __init__(self, image_fit: str = "crop", pad_color: Sequence[int] = WHITE, **kwargs: Any):
        super().__init__(**kwargs)
        self.image_fit = checked_image_fit(image_fit)
        self.pad_color = _checked_color(pad_color)

    def preprocess(self, images: Any, *args: Any, image_fit: str | None = None, pad_color=None, **kwargs: Any):
        """CLIP's `preprocess` on the framed RGB images; `image_fit`/`pad_color` override the saved setting."""
        image_fit = checked_image_fit(image_fit or self.image_fit)
        pad_color = _checked_color(pad_color or self.pad_color)
        rgb_images = [to_rgb_image(image) for image in _as_image_list(images)]
        if image_fit == "pad":
            rgb_images = [letterbox(image, pad_color) for image in rgb_images]
        return super().preprocess(rgb_images, *args, **kwargs)

    def view_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The square of a `width` x `height` photo that becomes the model's input, in the photo's
        pixels `(left, top, right, bottom)`: inside the photo for `crop`, beyond it (the letterbox
        bands) for `pad`."""
        canvas_left = canvas_top = 0.0
        if self.image_fit == "pad":  # the photo is centred on a square canvas first
            side = max(width, height)
            canvas_left, canvas_top = -((side - width) // 2), -((side - height) // 2)
            width = height = side
        shortest_edge = self.size.get("shortest_edge") or min(self.size["height"], self.size["width"])
        scale = shortest_edge / min(width, height)
        resized_width, resized_height = round(width * scale), round(height * scale)
        crop_width, crop_height = self.crop_size["width"], self.crop_size["height"]
        left, top = (resized_width - crop_width) // 2, (resized_height - crop_height) // 2
        return (
            canvas_left + left / scale,
            canvas_top + top / scale,
            canvas_left + (left + crop_width) / scale,
            canvas_top + (top + crop_height) / scale,
        )


def clip_image_processor(image_size: int = 224, image_fit: str = "crop") -> E2CLIPImageProcessor:
    """CLIP's preprocessing for square inputs of `image_size` pixels: resize the short side, centre-crop,
    rescale to [0, 1], normalise with CLIP's mean and std (the class defaults); `image_fit="pad"`
    letterboxes first."""
    return E2CLIPImageProcessor(
        image_fit=image_fit,
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    )


def letterbox(image: Image.Image, color: Sequence[int] = WHITE) -> Image.Image:
    """The image centred on a square canvas of `color` whose side is the image's long side."""
    width, height = image.size
    side = max(width, height)
    if width == height:
        return image
    canvas = Image.new("RGB", (side, side), tuple(color))
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def to_rgb_image(image: Any) -> Image.Image:
    """Any PIL image (L, LA, P, RGBA, CMYK, I;16, ...) or array -> an RGB PIL image.

    Transparent pixels are composited on white (product photos on a transparent background).
    Arrays may be `[H, W]`, `[H, W, C]` or `[C, H, W]` with C in 1, 3, 4; integers (uint8, or
    16-bit) or floats in [0, 1].
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        image = _array_to_pil(image)
    if not isinstance(image, Image.Image):
        raise ValueError(f"images must be PIL images or numpy arrays, got {type(image).__name__}.")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        pixels = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(_scale_to_uint8(pixels), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (*WHITE, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


EXIF_ORIENTATION = 0x0112  # 1 = upright; 2-8 = mirrored and/or turned


def upright(image: Image.Image) -> Image.Image:
    """`image` with its EXIF orientation applied (phone photos often store pixels sideways and say
    how to turn them, as viewers and transformers' `load_image` do); without one it is returned as is."""
    if image.getexif().get(EXIF_ORIENTATION, 1) == 1:
        return image
    return ImageOps.exif_transpose(image)


class ImageSizeError(ValueError):
    """An image outside the size limits of the path that received it (`ImageLimits`)."""


@dataclass(frozen=True)
class ImageLimits:
    """The largest images a serving path decodes: what one request may cost in memory.

    The pixel count is checked from the file's header, before its pixels are decoded; the aspect
    ratio bounds the resize to the model's square input (a 1 x 1,000,000 strip would become
    224 x 224,000,000 pixels). Pillow's own decompression-bomb limit (about 89 megapixels) only
    warns below twice its value, so it is no limit on its own.

    Args:
        max_pixels: width x height at most (default 50 megapixels, more than a 48 MP phone photo).
        max_aspect_ratio: long side / short side at most.
    """

    max_pixels: int = 50_000_000
    max_aspect_ratio: float = 20.0

    ENVIRONMENT = {"max_pixels": "E2_MAX_IMAGE_PIXELS", "max_aspect_ratio": "E2_MAX_IMAGE_ASPECT_RATIO"}

    def __post_init__(self) -> None:
        if self.max_pixels < 1 or self.max_aspect_ratio < 1:
            raise ValueError(f"image limits must be at least 1, got {self}")

    @classmethod
    def from_environment(cls, environment: Mapping[str, str] = os.environ) -> ImageLimits:
        """The defaults, with `E2_MAX_IMAGE_PIXELS` / `E2_MAX_IMAGE_ASPECT_RATIO` where they are set."""
        values = {}
        for name, variable in cls.ENVIRONMENT.items():
            if environment.get(variable):
                kind = int if name == "max_pixels" else float
                try:
                    values[name] = kind(environment[variable])
                except ValueError:
                    raise ValueError(f"{variable} must be a number, got {environment[variable]!r}") from None
        return cls(**values)

    def check(self, width: int, height: int, name: str = "the image") -> None:
        """Raises `ImageSizeError` naming `name` for an empty, too large or too elongated image."""
        if width < 1 or height < 1:
            raise ImageSizeError(f"{name} is {width}x{height} pixels: an image needs at least one pixel each way")
        if width * height > self.max_pixels:
            raise ImageSizeError(
                f"{name} is {width}x{height} pixels ({width * height / 1e6:.1f} MP); the limit is "
                f"{self.max_pixels / 1e6:g} MP (the model sees it at a few hundred pixels anyway)"
            )
        if max(width, height) / min(width, height) > self.max_aspect_ratio:
            raise ImageSizeError(
                f"{name} is {width}x{height} pixels, an aspect ratio over {self.max_aspect_ratio:g}:1; "
                "crop it to the product first"
            )


DEFAULT_IMAGE_LIMITS = ImageLimits()


def open_image(source: str | os.PathLike | BinaryIO, limits: ImageLimits | None = None) -> Image.Image:
    """An image file (a path, or an open binary file such as `io.BytesIO`), decoded, upright and
    RGB; a missing or unreadable file is an error naming it. With `limits`, an image outside them
    is an `ImageSizeError`, raised from the header before any pixel is decoded."""
    name = getattr(source, "name", None) or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else "data")
    try:
        with Image.open(source) as image:
            if limits is not None:
                limits.check(*image.size, name=f"image {name}")
            image.load()
            return to_rgb_image(upright(image))
    except FileNotFoundError:
        raise FileNotFoundError(f"image {name} does not exist") from None
    except ImageSizeError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"image {name} cannot be read as an image: {error}") from None


def _as_image_list(images: Any) -> list[Any]:
    """One image (PIL, `[H, W(, C)]` array, `[C, H, W]` tensor) or a batch -> a flat list of images."""
    single = isinstance(images, (Image.Image, np.ndarray)) and not (isinstance(images, np.ndarray) and images.ndim == 4)
    if single or (isinstance(images, torch.Tensor) and images.ndim <= 3):
        return [images]
    if isinstance(images, (list, tuple)) and images and isinstance(images[0], (list, tuple)):
        return [image for group in images for image in group]  # transformers' nested batches
    return list(images)


def _scale_to_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype.kind == "f" and pixels.max(initial=0.0) <= 1.0:
        return np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if pixels.max(initial=0) > 255:  # 16-bit data
        return np.clip(pixels / 257.0 + 0.5, 0, 255).astype(np.uint8)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _array_to_pil(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # [C, H, W] -> [H, W, C]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"image arrays must be [H, W], [H, W, C] or [C, H, W] with C in (1, 3, 4); got {array.shape}.")
    pixels = _scale_to_uint8(np.asarray(array))
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[pixels.ndim if pixels.ndim == 2 else pixels.shape[-1]]
    return Image.fromarray(pixels, mode=mode)


def checked_image_fit(image_fit: str) -> str:
    if image_fit not in IMAGE_FITS:
        raise ValueError(f"image_fit must be one of {IMAGE_FITS}, got {image_fit!r}.")
    return image_fit


def _checked_color(color: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(color)
    if len(values) != 3 or not all(isinstance(value, int) and 0 <= value <= 255 for value in values):
        raise ValueError(f"pad_color must be three integers in 0..255 (R, G, B), got {color!r}.")
    return values


__all__ = [
    "IMAGE_FITS",
    "E2CLIPImageProcessor",
    "DEFAULT_IMAGE_LIMITS",
    "ImageLimits",
    "ImageSizeError",
    "checked_image_fit",
    "clip_image_processor",
    "letterbox",
    "open_image",
    "to_rgb_image",
]
