"""Batch embedding with E2: images (paths, PIL images, arrays) or texts in, global and regional
embeddings out, in batches with a progress bar, on the device and in the dtype asked for.

    embedder = E2CLIPEmbedder.from_pretrained("e2-fashion", device="cuda", dtype="bfloat16")
    images = embedder.embed_images(["shirt.jpg", pil_image, array])  # E2CLIPImageEmbeddings
    texts = embedder.embed_texts(["a shirt by Gucci"])  # [n, dim]

This file is copied into every Hub checkpoint (its `handler.py` uses it): it imports only the
standard library, torch and transformers (and PIL, which transformers' image processing uses).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from transformers.utils.logging import tqdm

from .image_processing_e2clip import DEFAULT_IMAGE_LIMITS, ImageLimits, open_image, to_rgb_image
from .modeling_e2clip import E2CLIPModel
from .processing_e2clip import E2CLIPProcessor

# the floating-point types E2 runs and stores in: the one table of their names (and short aliases)
DTYPE_NAMES = ("float32", "bfloat16", "float16")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}  # fmt: skip


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """`"fp32"`, `"bfloat16"`, ... or a torch dtype -> the torch dtype (None: float32)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


@dataclass
class E2CLIPImageEmbeddings:
    """L2-normalised float32 embeddings on the CPU, one row per image (input order)."""

    image_embeds: torch.Tensor  # [images, dim]
    region_embeds: torch.Tensor | None  # [images, entities, dim]; None without entities
    selection_indices: torch.Tensor | None  # [images, fusion blocks, selection tokens]: the chosen patches
    entities: list[str]
    entity_token_slices: list[tuple[int, int]]  # each entity's selection tokens

    @classmethod
    def concatenate(cls, parts: Sequence[E2CLIPImageEmbeddings]) -> E2CLIPImageEmbeddings:
        """The rows of several batches, in order."""

        def joined(name: str) -> torch.Tensor | None:
            return None if getattr(parts[0], name) is None else torch.cat([getattr(part, name) for part in parts])

        fields = ("image_embeds", "region_embeds", "selection_indices")
        return cls(*(joined(name) for name in fields), parts[0].entities, parts[0].entity_token_slices)

    def _entity_index(self, entity: str) -> int:
        if self.region_embeds is None or entity not in self.entities:
            raise KeyError(f"no regional embedding for {entity!r}; the model's entities are {self.entities}")
        return self.entities.index(entity)

    def region(self, entity: str) -> torch.Tensor:
        """One entity's regional embeddings `[images, dim]`."""
        return self.region_embeds[:, self._entity_index(entity)]

    def selected_patches(self, entity: str) -> torch.Tensor:
        """The patches (row-major index in the patch grid) the entity's selection tokens chose in
        each fusion block: `[images, fusion blocks, the entity's tokens]`."""
        start, end = self.entity_token_slices[self._entity_index(entity)]
        if self.selection_indices is None:
            raise KeyError("no patches were chosen: this model has no fusion blocks (fusion_layers is empty)")
        return self.selection_indices[:, :, start:end]


def decoded(image: Any, limits: ImageLimits | None = None) -> Any:
    """A path or the bytes of an image file -> the decoded, upright RGB image (an unreadable one is
    a ValueError naming it); PIL images and arrays are returned as they are (the processor converts
    them). With `limits`, an image outside them is an `ImageSizeError` (a file's size is read from
    its header, before its pixels are decoded)."""
    if isinstance(image, (str, os.PathLike)):
        return open_image(image, limits)
    if isinstance(image, (bytes, bytearray)):
        return open_image(io.BytesIO(image), limits)
    if limits is not None:
        image = image if isinstance(image, Image.Image) else to_rgb_image(image)
        limits.check(*image.size)
    return image


class E2CLIPEmbedder:
    """Embeds images and texts with an E2 (or CLIP-mode E2) model in eval mode.

    Args:
        model / processor: an `E2CLIPModel` and its `E2CLIPProcessor`.
        device: where the model runs (default: CUDA if available, else CPU).
        dtype: the model's dtype (`"float32"`, `"bfloat16"`, `"float16"` or a torch dtype);
            default: the dtype the model has.
        batch_size: images or texts per forward pass.
        progress: show a progress bar for inputs longer than one batch.
        image_limits: the largest image decoded (pixels, aspect ratio); larger ones, and empty
            ones, are an `ImageSizeError`. Default: `ImageLimits()`; None: no limit.
    """

    def __init__(self, model: E2CLIPModel, processor: E2CLIPProcessor, device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None, batch_size: int = 32, progress: bool = True,
                 image_limits: ImageLimits | None = DEFAULT_IMAGE_LIMITS):  # fmt: skip
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = resolve_dtype(dtype) if dtype is not None else next(model.parameters()).dtype
        self.model = model.to(self.device, self.dtype).eval()
        self.processor = processor
        self.batch_size = batch_size
        self.progress = progress
        self.image_limits = image_limits

    @classmethod
    def from_pretrained(cls, model_name_or_path: str | os.PathLike, device: str | torch.device | None = None,
                        dtype: str | torch.dtype | None = None, trust_remote_code: bool = False,
                        **kwargs: Any) -> E2CLIPEmbedder:  # fmt: skip
        """Loads the model and processor of a folder or Hub repo. `trust_remote_code` lets the
        processor load the folder's own image-processor code when this package is not installed
        (the folder's `handler.py` sets it); `kwargs` go to the constructor."""
        model = E2CLIPModel.from_pretrained(model_name_or_path, dtype=resolve_dtype(dtype))
        processor = E2CLIPProcessor.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
        return cls(model, processor, device, dtype, **kwargs)

    @property
    def entities(self) -> list[str]:
        return list(self.model.config.entities)

    def _batches(self, items: Sequence[Any], batch_size: int | None, what: str):
        batch_size = batch_size or self.batch_size
        starts = range(0, len(items), batch_size)
        show = self.progress and len(items) > batch_size
        for start in tqdm(starts, desc=f"embedding {what}", unit="batch", disable=not show, leave=False):
            yield items[start : start + batch_size]

    @torch.no_grad()
    def embed_pixel_values(self, pixel_values: torch.Tensor) -> E2CLIPImageEmbeddings:
        """One preprocessed batch `[batch, 3, size, size]` (the processor's `pixel_values`)."""
        outputs = self.model(pixel_values=pixel_values.to(self.device, self.dtype))
        regions, chosen = outputs.region_embeds, outputs.selection_indices  # None without entities / fusion blocks
        return E2CLIPImageEmbeddings(
            outputs.image_embeds.float().cpu(),
            regions.float().cpu() if regions is not None else None,
            chosen.cpu() if chosen is not None else None,
            self.entities,
            self.model.config.entity_token_slices,
        )

    def embed_images(self, images: Sequence[Any] | Any, batch_size: int | None = None) -> E2CLIPImageEmbeddings:
        """Global and regional embeddings and the chosen patches of images: paths, file bytes, PIL
        images or arrays (one, or a sequence)."""
        if isinstance(images, (str, os.PathLike, bytes, bytearray, Image.Image)) or getattr(images, "ndim", 4) < 4:
            images = [images]
        images = list(images)
        if not images:
            raise ValueError("embed_images needs at least one image")
        parts = []
        for batch in self._batches(images, batch_size, "images"):
            decoded_batch = [decoded(image, self.image_limits) for image in batch]
            parts.append(self.embed_pixel_values(self.processor(images=decoded_batch)["pixel_values"]))
        return E2CLIPImageEmbeddings.concatenate(parts)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str] | str, batch_size: int | None = None) -> torch.Tensor:
        """L2-normalised text embeddings `[texts, dim]` (float32, CPU)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ValueError("embed_texts needs at least one text")
        rows = []
        for batch in self._batches(texts, batch_size, "texts"):
            encoded = self.processor(text=batch)
            rows.append(self.embed_token_ids(encoded["input_ids"], encoded["attention_mask"]))
        return torch.cat(rows)

    @torch.no_grad()
    def embed_token_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One tokenized batch `[batch, tokens]` (the processor's `input_ids`, `attention_mask`) ->
        L2-normalised text embeddings `[batch, dim]` (float32, CPU)."""
        outputs = self.model(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device))
        return outputs.text_embeds.float().cpu()

    def tag_probabilities(
        self, embeddings: E2CLIPImageEmbeddings, candidates: Mapping[str, Sequence[str]]
    ) -> dict[str, torch.Tensor]:
        """Zero-shot tagging: `{entity: [images, candidates]}` probabilities, the softmax of the
        model's logit scale times the cosine between the entity's regional embedding and each
        candidate tag text (embedded as a text, as the region loss embeds tags)."""
        scale = self.model.logit_scale.exp().float().cpu()
        probabilities = {}
        for entity, tags in candidates.items():
            similarities = embeddings.region(entity) @ self.embed_texts(list(tags)).T
            probabilities[entity] = (scale * similarities).softmax(dim=-1)
        return probabilities


__all__ = [
    "DTYPES",
    "DTYPE_NAMES",
    "E2CLIPEmbedder",
    "E2CLIPImageEmbeddings",
    "ImageLimits",
    "decoded",
    "resolve_dtype",
]
