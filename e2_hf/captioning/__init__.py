"""Zero-shot product captioning on E2 embeddings (CapDec and DeCap), trained on texts only."""

from .captioner import RECIPES, CaptionerConfig, CaptionerError, E2Captioner
from .inference import CaptionedProduct, caption_catalog, caption_images, load_captioner, score_captions
from .metrics import attribute_accuracy, caption_metrics
from .training import CaptionerTrainingArguments, train_captioner

__all__ = [
    "RECIPES",
    "CaptionedProduct",
    "CaptionerConfig",
    "CaptionerError",
    "CaptionerTrainingArguments",
    "E2Captioner",
    "attribute_accuracy",
    "caption_catalog",
    "caption_images",
    "caption_metrics",
    "load_captioner",
    "score_captions",
    "train_captioner",
]
