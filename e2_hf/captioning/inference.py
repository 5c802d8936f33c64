"""Captions for images and whole catalogs, from a backbone and a captioner trained on its embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..data import Catalog, open_catalog
from ..modeling import E2CLIPEmbedder, E2CLIPModel, E2CLIPProcessor
from ..modeling.image_processing_e2clip import DEFAULT_IMAGE_LIMITS, ImageLimits
from ..search.index import model_fingerprint
from .captioner import E2Captioner
from .metrics import attribute_accuracy, caption_metrics


@dataclass
class CaptionedProduct:
    product_id: str
    caption: str
    reference: str  # the product text the captioner would ideally write
    values: dict[str, tuple[str, ...]]  # the product's tag values per entity

    def to_json(self) -> dict[str, Any]:
        return {"product_id": self.product_id, "caption": self.caption, "reference": self.reference,
                "tags": {entity: list(values) for entity, values in self.values.items()}}  # fmt: skip


def checked_captioner(captioner: E2Captioner, model: E2CLIPModel) -> E2Captioner:
    """`captioner`, after refusing a backbone it was not trained on."""
    captioner.check_backbone(model.config.projection_dim, model_fingerprint(model), str(model.name_or_path))
    return captioner


def caption_images(captioner: E2Captioner, model: E2CLIPModel, processor: E2CLIPProcessor, images: Sequence[Any],
                   num_beams: int = 1, max_new_tokens: int | None = None, batch_size: int = 32,
                   image_limits: ImageLimits | None = DEFAULT_IMAGE_LIMITS) -> list[str]:  # fmt: skip
    """One caption per image (paths, file bytes, PIL images or arrays), from its global embedding;
    images beyond `image_limits` are refused (None: a catalog's own images, read without a limit)."""
    checked_captioner(captioner, model)
    embedder = E2CLIPEmbedder(model, processor, device=next(model.parameters()).device, batch_size=batch_size,
                              progress=False, image_limits=image_limits)  # fmt: skip
    captions = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc="captioning", unit="batch", disable=len(starts) < 2, leave=False):
        embeds = embedder.embed_images(list(images[start : start + batch_size])).image_embeds
        captions.extend(captioner.generate(embeds, num_beams=num_beams, max_new_tokens=max_new_tokens))
    return captions


class FirstViews(Sequence):
    """A catalog's first product images, read when a slice of them is asked for (not all at once)."""

    def __init__(self, catalog: Catalog, count: int):
        self.catalog, self.count = catalog, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self.catalog.load_image(position) for position in range(*index.indices(self.count))]
        return self.catalog.load_image(range(self.count)[index])


def caption_catalog(captioner: E2Captioner, model: E2CLIPModel, processor: E2CLIPProcessor, data_spec: str,
                    num_beams: int = 1, max_new_tokens: int | None = None, batch_size: int = 32,
                    limit: int | None = None, **catalog_options) -> list[CaptionedProduct]:  # fmt: skip
    """Each product's first view captioned, beside its product text and tags."""
    catalog = open_catalog(data_spec, **catalog_options)
    count = len(catalog) if limit is None else min(limit, len(catalog))
    captions = caption_images(captioner, model, processor, FirstViews(catalog, count), num_beams, max_new_tokens,
                              batch_size, image_limits=None)  # fmt: skip
    products = [catalog[index] for index in range(count)]
    return [
        CaptionedProduct(str(product.product_id), caption,
                         processor.build_product_text(product.description, product.tags),
                         {entity: product.values_of(entity) for entity in model.config.entities or product.tags})
        for product, caption in zip(products, captions)
    ]  # fmt: skip


def score_captions(captioned: Sequence[CaptionedProduct], entities: Sequence[str]) -> dict[str, Any]:
    """Caption metrics against the product texts, and attribute accuracy per entity."""
    scores = caption_metrics([item.caption for item in captioned], [[item.reference] for item in captioned])
    accuracy = attribute_accuracy([item.caption for item in captioned], [item.values for item in captioned], entities)
    return {**scores, "attribute_accuracy": accuracy, "captions": len(captioned)}


def load_captioner(folder: str | Path, model: E2CLIPModel) -> E2Captioner:
    """A captioner folder, on the backbone's device, checked against the backbone."""
    return checked_captioner(E2Captioner.from_pretrained(folder, next(model.parameters()).device), model)
