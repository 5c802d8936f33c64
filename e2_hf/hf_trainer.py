"""Fine-tuning E2 with `transformers.Trainer`: the collator and the retrieval metrics.

    enable_cross_rank_loss(model)  # e2_hf.training: under DDP, negatives from every process
    trainer = Trainer(
        model=model,
        args=TrainingArguments(..., remove_unused_columns=False,  # keep tags and pixel values
                               dataloader_drop_last=True),        # equal batches for the gathering
        train_dataset=ProductDataset(catalog, model.config.entities, training=True),
        eval_dataset=ProductDataset(eval_catalog, model.config.entities, training=False),
        data_collator=trainer_collator(processor),                 # sets return_loss=True
        compute_metrics=retrieval_compute_metrics,
    )

`E2CLIPConfig.keys_to_ignore_at_inference` leaves `(text_embeds, image_embeds)` as the
Trainer's predictions, which `retrieval_compute_metrics` ranks (full-candidate protocol).
"""

from __future__ import annotations

import torch

from .data import E2Collator
from .evaluation import retrieval_metrics
from .modeling import E2CLIPProcessor


def trainer_collator(processor: E2CLIPProcessor, strict: bool = False) -> E2Collator:
    """Batches of `ProductDataset` items with `return_loss=True` (unreadable images are dropped)."""
    return E2Collator(processor, strict=strict, report_skipped=False)


def retrieval_compute_metrics(eval_prediction) -> dict[str, float]:
    """`compute_metrics` for Trainer: full-candidate recall@1/5/10 both ways, in percent, and SumR."""
    text_embeds, image_embeds = eval_prediction.predictions[:2]
    metrics = retrieval_metrics(torch.as_tensor(image_embeds), torch.as_tensor(text_embeds))
    flat = {"sumr": metrics["sumr"]}
    for direction in ("image_to_text", "text_to_image"):
        for name, value in metrics[direction].items():
            flat[f"{direction}_{name.replace('@', '_at_')}"] = value
    return flat
