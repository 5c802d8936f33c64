"""Opening image files the way a viewer shows them: the one place that reads an image file.

Phone and camera photos often store their pixels sideways with an EXIF orientation tag saying how
to turn them; viewers (and transformers' `load_image`) apply it, so E2 does too, wherever it
reads a file: catalogs (training, evaluation, indexing), `visualize`, `tag`, the Space, and
`E2CLIPEmbedder` and the Inference Endpoints handler. The functions live in the Hub code
(`modeling/image_processing_e2clip.py`), so a saved model folder opens images the same way.
"""

from __future__ import annotations

from .modeling.image_processing_e2clip import (
    EXIF_ORIENTATION,
    ImageLimits,
    ImageSizeError,
    letterbox,
    open_image,
    upright,
)

__all__ = ["EXIF_ORIENTATION", "ImageLimits", "ImageSizeError", "letterbox", "open_image", "upright"]
