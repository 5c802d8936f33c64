"""From catalogs to model batches: a torch Dataset of product views and a collator."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..modeling import E2CLIPProcessor
from ..modeling.processing_e2clip import DEFAULT_PRODUCT_TEXT_FIELDS, build_product_text
from .catalogs import Catalog, ImageLoadError


class ProductDataset(Dataset):
    """One item per product: an image, the product text (tags before the description) and tags.

    Training draws one random view per product per epoch (call `set_epoch`); evaluation uses each
    product's first view. An unreadable image gives an item with `error` set instead of `image`,
    so the collator can skip and count it.
    """

    def __init__(
        self,
        catalog: Catalog,
        entities: Sequence[str],
        training: bool,
        seed: int = 0,
        text_fields: Sequence[str] = DEFAULT_PRODUCT_TEXT_FIELDS,
    ):
        self.catalog = catalog
        self.entities = list(entities)
        self.training = training
        self.seed = seed
        self.text_fields = list(text_fields)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.catalog)

    def view_of(self, index: int) -> int:
        if not self.training:
            return 0
        generator = np.random.default_rng((self.seed, self.epoch, index))
        return int(generator.integers(self.catalog[index].num_views))

    def text_of(self, index: int) -> str:
        product = self.catalog[index]
        return build_product_text(product.description, product.tags, self.text_fields)

    def __getitem__(self, index: int) -> dict[str, Any]:
        product = self.catalog[index]
        item = {
            "index": index,
            "text": self.text_of(index),
            "tags": {entity: product.tags.get(entity) for entity in self.entities},
        }
        try:
            item["image"] = self.catalog.load_image(index, self.view_of(index))
        except ImageLoadError as error:
            item["error"] = str(error)
        return item


class E2Collator:
    """Items of `ProductDataset` -> processor outputs with `return_loss=True`.

    Items whose image failed are left out and named in `skipped_images` (with `report_skipped`);
    with `strict=True` the first one raises instead.
    """

    def __init__(self, processor: E2CLIPProcessor, strict: bool = False, report_skipped: bool = True):
        self.processor = processor
        self.strict = strict
        self.report_skipped = report_skipped

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any] | None:
        skipped = [item["error"] for item in items if "error" in item]
        if skipped and self.strict:
            raise ImageLoadError(skipped[0])
        items = [item for item in items if "error" not in item]
        if not items:
            return {"skipped_images": skipped} if self.report_skipped else None
        batch = dict(
            self.processor(
                text=[item["text"] for item in items],
                images=[item["image"] for item in items],
                tags=[item["tags"] for item in items] if self.processor.entities else None,
            )
        )
        batch["return_loss"] = True
        if self.report_skipped:
            batch["skipped_images"] = skipped
            batch["indices"] = torch.tensor([item["index"] for item in items])
        return batch


@dataclass
class TruncationReport:
    """How many texts are longer than the text tower's context, and by how many tokens."""

    texts: int
    truncated: int
    context: int
    median_excess: int = 0  # tokens cut from a truncated text (median, max)
    max_excess: int = 0

    def message(self, what: str) -> str | None:
        """One line for the user, or `None` when nothing is cut."""
        if not self.truncated:
            return None
        return (
            f"{self.truncated} of {self.texts} {what} ({100 * self.truncated / self.texts:.0f}%) are longer than "
            f"the {self.context}-token context and are truncated: a median of {self.median_excess} tokens cut "
            f"(at most {self.max_excess}); what comes first is kept (--text-fields sets the order)"
        )


def truncation_report(texts: Sequence[str], tokenizer, context: int, batch_size: int = 1024) -> TruncationReport:
    """Tokenizes `texts` without truncation (special tokens included) and compares with `context`."""
    excess = []
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(list(texts[start : start + batch_size]), truncation=False)["input_ids"]
        excess += [len(ids) - context for ids in encoded if len(ids) > context]
    excess.sort()
    report = TruncationReport(texts=len(texts), truncated=len(excess), context=context)
    if excess:
        report.median_excess, report.max_excess = excess[len(excess) // 2], excess[-1]
    return report


def dataset_truncation(dataset: ProductDataset, processor) -> TruncationReport:
    """`truncation_report` of every product text of the dataset, at the processor's context length."""
    texts = [dataset.text_of(index) for index in range(len(dataset))]
    return truncation_report(texts, processor.tokenizer, processor.max_length)
