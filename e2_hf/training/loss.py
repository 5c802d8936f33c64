"""E2's training loss, the one the model computes: `E2CLIPLoss` with `gather_across_ranks`.

Both trainers (the Accelerate script and `transformers.Trainer`) use the model's own loss
(`forward(..., return_loss=True)`) with the gathering turned on, so in-batch negatives span every
process in both (see `E2CLIPLoss`).
"""

from __future__ import annotations

from ..modeling.loss_e2clip import E2CLIPLoss, gather_with_grad, gather_without_grad


def enable_cross_rank_loss(model) -> None:
    """Makes `model(..., return_loss=True)` gather the global batch across processes (a no-op on one)."""
    model.contrastive_loss.gather_across_ranks = True


__all__ = ["E2CLIPLoss", "enable_cross_rank_loss", "gather_with_grad", "gather_without_grad"]
