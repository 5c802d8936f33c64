"""E2's training loss: CLIP's symmetric contrastive loss on the global embeddings plus the region
contrastive loss per entity, optionally over the whole batch of every process.

Part of the Hub code (copied into every checkpoint with `modeling_e2clip.py`, which imports it):
it imports only the standard library and torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from .configuration_e2clip import E2CLIPConfig


def contrastive_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross entropy of a square logit matrix whose diagonal holds the positives."""
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def symmetric_contrastive_loss(logits_per_text: torch.Tensor) -> torch.Tensor:
    """CLIP's loss: the mean of the text-to-image and image-to-text cross entropies."""
    return (contrastive_loss(logits_per_text) + contrastive_loss(logits_per_text.t())) / 2.0


def multi_positive_contrastive_loss(logits_per_image: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Contrastive loss where items with equal tag texts (equal `groups`) are positives of each other.

    Image -> tag: each image is scored against the batch's *distinct* tags (duplicates merged into
    one class), its own tag being the target. Tag -> image: each distinct tag is scored against all
    images, and every image carrying it is a positive (the mean of their log-probabilities). With
    no duplicates this is exactly the symmetric InfoNCE.

    Args:
        logits_per_image: `[n, n]` scaled similarities, image i against the tag of item j.
        groups: `[n]` ids, equal for equal tag texts.
    """
    _, local_groups = torch.unique(groups, return_inverse=True)  # [n] in 0..num_distinct-1
    num_distinct, num_items = int(local_groups.max()) + 1, local_groups.shape[0]
    item_index = torch.arange(num_items, device=groups.device)
    representative = torch.full((num_distinct,), num_items, device=groups.device)
    representative = representative.scatter_reduce(0, local_groups, item_index, reduce="amin")  # first item per tag
    image_to_tag = logits_per_image[:, representative]  # [n, num_distinct]
    image_loss = F.cross_entropy(image_to_tag, local_groups)
    tag_to_image = image_to_tag.t()  # [num_distinct, n]
    positives = (local_groups[None, :] == torch.arange(num_distinct, device=groups.device)[:, None]).to(
        logits_per_image.dtype
    )
    tag_loss = -((positives * F.log_softmax(tag_to_image, dim=1)).sum(dim=1) / positives.sum(dim=1)).mean()
    return (image_loss + tag_loss) / 2.0


def region_contrastive_loss(
    region_embeds: torch.Tensor,
    tag_embeds: torch.Tensor,
    tag_present: torch.Tensor,
    logit_scale: torch.Tensor,
    variant: str = "clip",
    tag_groups: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """E2's region loss: per entity, symmetric InfoNCE between regional embeddings and tag texts.

    Args:
        region_embeds: `[batch, num_entities, dim]` regional image embeddings.
        tag_embeds: `[batch, num_entities, dim]` text embeddings of each item's tag of each entity.
        tag_present: `[batch, num_entities]` bool; items without a tag are left out of that
            entity's loss.
        logit_scale: the (already exponentiated) temperature multiplier.
        variant: `"clip"` (in-batch negatives, as the paper) or `"multi_positive"` (items with the
            same tag text are positives of each other).
        tag_groups: `[batch, num_entities]` ids equal for equal tag texts; needed by
            `"multi_positive"`.

    Returns:
        The mean over entities that have at least one tag in the batch, or `None` if none has.
    """
    region_embeds = F.normalize(region_embeds, dim=-1)
    tag_embeds = F.normalize(tag_embeds, dim=-1)
    losses = []
    for entity in range(region_embeds.shape[1]):
        present = tag_present[:, entity]
        if not bool(present.any()):
            continue
        logits_per_image = logit_scale * region_embeds[present, entity] @ tag_embeds[present, entity].t()  # [n, n]
        if variant == "clip":
            losses.append(symmetric_contrastive_loss(logits_per_image))
        elif variant == "multi_positive":
            if tag_groups is None:
                raise ValueError("region loss 'multi_positive' needs tag_groups.")
            losses.append(multi_positive_contrastive_loss(logits_per_image, tag_groups[present, entity]))
        else:
            raise ValueError(f"Unknown region loss variant {variant!r}; use 'clip' or 'multi_positive'.")
    if not losses:
        return None
    return torch.stack(losses).mean()


def _world_size() -> int:
    distributed = torch.distributed
    return distributed.get_world_size() if distributed.is_available() and distributed.is_initialized() else 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """`[local, ...]` -> `[world * local, ...]` in rank order, differentiable (the backward sums each
    rank's gradient into the rank that produced the features); the tensor itself on one process."""
    if _world_size() == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


def gather_without_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All ranks' tensors concatenated, without gradient (booleans travel as uint8)."""
    if _world_size() == 1:
        return tensor
    sent = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor
    parts = [torch.empty_like(sent) for _ in range(_world_size())]
    torch.distributed.all_gather(parts, sent.contiguous())
    return torch.cat(parts, dim=0).to(tensor.dtype)


class E2CLIPLoss(nn.Module):
    """E2's training loss: `global_weight * global + region_weight * mean over entities of region`.

    Takes normalised embeddings (`[batch, dim]` text and image, `[batch, entities, dim]` region and
    tag), the tag groups (-1 = missing, see `E2CLIPModel.encode_tags`) and the exponentiated logit
    scale; returns `(loss, global_loss, region_loss)` (region `None` when no tag is present anywhere).

    With `gather_across_ranks` (off by default; the trainers turn it on), every process gathers the
    whole global batch *with gradient* and computes the loss over it, as open_clip's `ClipLoss`:
    in-batch negatives then span all ranks, and with DDP averaging parameter gradients, W
    processes with batch b train exactly like one process with batch W*b. Every rank must then
    pass batches of the same size (drop the last incomplete batch).
    """

    def __init__(self, global_weight: float = 0.5, region_weight: float = 0.5, region_variant: str = "clip",
                 gather_across_ranks: bool = False):  # fmt: skip
        super().__init__()
        self.global_weight = global_weight
        self.region_weight = region_weight
        self.region_variant = region_variant
        self.gather_across_ranks = gather_across_ranks

    @classmethod
    def from_config(cls, config: E2CLIPConfig, gather_across_ranks: bool = False) -> E2CLIPLoss:
        return cls(config.global_loss_weight, config.region_loss_weight, config.region_loss, gather_across_ranks)

    def forward(self, text_embeds, image_embeds, region_embeds, tag_embeds, tag_groups, logit_scale):
        gather = gather_with_grad if self.gather_across_ranks else (lambda tensor: tensor)
        gather_flags = gather_without_grad if self.gather_across_ranks else (lambda tensor: tensor)
        text_embeds, image_embeds = gather(text_embeds), gather(image_embeds)  # [global batch, dim]
        global_loss = symmetric_contrastive_loss(logit_scale * text_embeds @ image_embeds.t())
        region_loss = None
        if region_embeds is not None and tag_embeds is not None:
            tag_groups = gather_flags(tag_groups)
            region_loss = region_contrastive_loss(
                gather(region_embeds), gather(tag_embeds), tag_groups >= 0, logit_scale, self.region_variant, tag_groups
            )
        if region_loss is None:
            return global_loss, global_loss, None
        return self.global_weight * global_loss + self.region_weight * region_loss, global_loss, region_loss


__all__ = [
    "E2CLIPLoss",
    "contrastive_loss",
    "gather_with_grad",
    "gather_without_grad",
    "multi_positive_contrastive_loss",
    "region_contrastive_loss",
    "symmetric_contrastive_loss",
]
