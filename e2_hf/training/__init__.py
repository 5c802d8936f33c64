"""Fine-tuning E2 with Accelerate, and the loss over all processes."""

from ..errors import TrainingError
from .loss import E2CLIPLoss, enable_cross_rank_loss, gather_with_grad
from .trainer import TrainingArguments, train

__all__ = ["E2CLIPLoss", "TrainingArguments", "TrainingError", "enable_cross_rank_loss", "gather_with_grad", "train"]
