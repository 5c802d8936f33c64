"""Embedding a catalog once, in batches, with a progress bar, on any device and dtype."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data import E2Collator, ProductDataset, open_catalog
from ..modeling import E2CLIPModel, E2CLIPProcessor


@torch.no_grad()
def embed_products(
    model_dir: str | Path,
    catalog_spec: str,
    batch_size: int = 128,
    device: str | None = None,
    dtype: torch.dtype = torch.float32,
    num_workers: int = 0,
):
    """Global image and text embeddings (normalised, float32 on the CPU) of every product's first
    view; returns `(image_embeds, text_embeds, catalog)`, rows in catalog order. Products whose
    image cannot be read are an error here: evaluation must not silently drop items."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = E2CLIPModel.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    processor = E2CLIPProcessor.from_pretrained(model_dir)
    catalog = open_catalog(catalog_spec)
    dataset = ProductDataset(catalog, model.config.entities, training=False)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                        collate_fn=E2Collator(processor, strict=True))  # fmt: skip
    images, texts = [], []
    for batch in tqdm(loader, desc=f"embedding {catalog.name}", leave=False):
        outputs = model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            pixel_values=batch["pixel_values"].to(device, dtype),
        )
        images.append(outputs.image_embeds.float().cpu())
        texts.append(outputs.text_embeds.float().cpu())
    return torch.cat(images), torch.cat(texts), catalog
