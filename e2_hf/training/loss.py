"""E2's training loss over all processes: in-batch negatives span every rank.

Embeddings are gathered *with gradient* (`torch.distributed.nn.functional.all_gather`, whose
backward sums each rank's gradient into the rank that produced the features), and every rank
computes the loss over the whole global batch. With DDP averaging the parameter gradients, W
processes with batch b then train exactly like one process with batch W*b.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..modeling import E2CLIPConfig
from ..modeling.modeling_e2clip import region_contrastive_loss, symmetric_contrastive_loss


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """`[local, ...]` -> `[world * local, ...]`, differentiable; rank order."""
    if world_size() == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


def gather_without_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All ranks' tensors concatenated, without gradient (booleans travel as uint8)."""
    if world_size() == 1:
        return tensor
    sent = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor
    parts = [torch.empty_like(sent) for _ in range(world_size())]
    dist.all_gather(parts, sent.contiguous())
    return torch.cat(parts, dim=0).to(tensor.dtype)


class E2ContrastiveLoss(nn.Module):
    """`global_weight * global + region_weight * region` over the global batch (see module doc).

    Takes the model's output (normalised embeddings, tag embeddings, presence and groups) and the
    exponentiated logit scale; returns `{"loss", "global_loss", "region_loss"}` (region `None`
    when no tag is present anywhere).
    """

    def __init__(self, global_weight: float = 0.5, region_weight: float = 0.5, region_variant: str = "clip"):
        super().__init__()
        self.global_weight = global_weight
        self.region_weight = region_weight
        self.region_variant = region_variant

    @classmethod
    def from_config(cls, config: E2CLIPConfig) -> E2ContrastiveLoss:
        return cls(config.global_loss_weight, config.region_loss_weight, config.region_loss)

    def forward(self, outputs, logit_scale: torch.Tensor) -> dict[str, torch.Tensor | None]:
        image_embeds = gather_with_grad(outputs.image_embeds)  # [global batch, dim]
        text_embeds = gather_with_grad(outputs.text_embeds)
        global_loss = symmetric_contrastive_loss(logit_scale * text_embeds @ image_embeds.t())
        region_loss = None
        if outputs.region_embeds is not None and outputs.tag_embeds is not None:
            region_loss = region_contrastive_loss(
                gather_with_grad(outputs.region_embeds),
                gather_with_grad(outputs.tag_embeds),
                gather_without_grad(outputs.tag_present),
                logit_scale,
                self.region_variant,
                gather_without_grad(outputs.tag_groups),
            )
        if region_loss is None:
            return {"loss": global_loss, "global_loss": global_loss, "region_loss": None}
        loss = self.global_weight * global_loss + self.region_weight * region_loss
        return {"loss": loss, "global_loss": global_loss, "region_loss": region_loss}
