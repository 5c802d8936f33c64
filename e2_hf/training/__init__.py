"""Fine-tuning E2 with Accelerate, and the loss over all processes."""

from ..lazy import lazy_exports

# public name -> the module it lives in, imported when the name is first used
_EXPORTS = {
    "TrainingError": "..errors",
    "E2CLIPLoss": ".loss",
    "enable_cross_rank_loss": ".loss",
    "gather_with_grad": ".loss",
    "TrainingArguments": ".arguments",
    "train": ".trainer",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
