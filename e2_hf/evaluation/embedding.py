"""Embedding a catalog once, in batches, with a progress bar, on any device and dtype."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data import Catalog, E2Collator, ImageLoadError, ProductDataset, open_catalog
from ..modeling import E2CLIPEmbedder, E2CLIPModel, E2CLIPProcessor
from ..modeling.embedding_e2clip import resolve_dtype


@dataclass
class CatalogEmbeddings:
    """L2-normalised float32 embeddings on the CPU, one row per product (catalog order)."""

    image_embeds: torch.Tensor  # [products, dim]
    text_embeds: torch.Tensor  # [products, dim]
    region_embeds: torch.Tensor | None  # [products, entities, dim]
    catalog: Catalog
    entities: list[str]


@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode (argmax patch selection, no dropout) inside the block, the model's own mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def check_model_folder(model_name_or_path: str | Path) -> None:
    """A local model folder must hold `config.json` and readable safetensors weights; the error names
    the file. (A name that is not a local path is a Hub id, checked by the download.)"""
    from safetensors import SafetensorError, safe_open

    path = Path(model_name_or_path)
    if not path.exists():
        if _names_a_path(str(model_name_or_path)):
            raise ValueError(f"{path} does not exist: give a model folder, or a Hub repo id such as owner/name")
        return  # a Hub id
    if not path.is_dir():
        raise ValueError(f"{path} is a file; give the model's folder (with config.json and model.safetensors)")
    if not (path / "config.json").is_file():
        raise ValueError(f"{path} is not a model folder: config.json is missing (a folder written by save_pretrained)")
    for weights in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt"):
                pass
        except SafetensorError as error:
            raise ValueError(f"{weights} is damaged or truncated ({error}); save or download the model again") from None


def _names_a_path(name: str) -> bool:
    """Whether `name` can only be a local path, never a Hub repo id (`owner/name` or `name`)."""
    return os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name


def load_for_inference(
    model_name_or_path: str | Path, device: str | None = None, dtype: str | torch.dtype = torch.float32
) -> tuple[E2CLIPModel, E2CLIPProcessor, str, torch.dtype]:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = resolve_dtype(dtype)
    check_model_folder(model_name_or_path)
    model = E2CLIPModel.from_pretrained(model_name_or_path, dtype=dtype).to(device).eval()
    return model, E2CLIPProcessor.from_pretrained(model_name_or_path), device, dtype


@torch.no_grad()
def embed_catalog(
    model: E2CLIPModel,
    processor: E2CLIPProcessor,
    catalog: Catalog,
    batch_size: int = 128,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    num_workers: int = 0,
) -> CatalogEmbeddings:
    """Every product's first view and product text. An unreadable image is an error here
    (evaluation must not silently drop items), raised in this process with its file and row, also
    when loader workers read the images."""
    dataset = ProductDataset(catalog, model.config.entities, training=False)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=E2Collator(processor))
    images, texts, regions = [], [], []
    with evaluating(model):  # the embedder puts the model in eval mode; the caller's mode comes back after
        embedder = E2CLIPEmbedder(model, processor, device, dtype, progress=False)
        for batch in tqdm(loader, desc=f"embedding {catalog.name}", leave=False):
            if batch["skipped_images"]:
                raise ImageLoadError(batch["skipped_images"][0])
            embedded = embedder.embed_pixel_values(batch["pixel_values"])
            images.append(embedded.image_embeds)
            texts.append(embedder.embed_token_ids(batch["input_ids"], batch["attention_mask"]))
            if embedded.region_embeds is not None:
                regions.append(embedded.region_embeds)
    return CatalogEmbeddings(
        torch.cat(images), torch.cat(texts), torch.cat(regions) if regions else None, catalog, model.config.entities
    )


def embed_texts(
    model: E2CLIPModel, processor: E2CLIPProcessor, texts: Sequence[str], batch_size: int = 256, device: str = "cpu"
) -> torch.Tensor:
    """L2-normalised text embeddings `[len(texts), dim]` (float32, CPU); see `E2CLIPEmbedder`."""
    with evaluating(model):
        return E2CLIPEmbedder(model, processor, device, batch_size=batch_size, progress=False).embed_texts(texts)


def embed_products(model_dir: str | Path, catalog_spec: str, batch_size: int = 128, device: str | None = None,
                   dtype: str | torch.dtype = torch.float32):  # fmt: skip
    """`(image_embeds, text_embeds, catalog)` of a saved model on a catalog spec."""
    model, processor, device, dtype = load_for_inference(model_dir, device, dtype)
    embeddings = embed_catalog(model, processor, open_catalog(catalog_spec), batch_size, device, dtype)
    return embeddings.image_embeds, embeddings.text_embeds, embeddings.catalog
