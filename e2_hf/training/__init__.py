"""Fine-tuning E2 with Accelerate, and the loss over all processes."""

from ..errors import TrainingError
from .loss import E2ContrastiveLoss, gather_with_grad
from .trainer import TrainingArguments, train

__all__ = ["E2ContrastiveLoss", "TrainingArguments", "TrainingError", "gather_with_grad", "train"]
