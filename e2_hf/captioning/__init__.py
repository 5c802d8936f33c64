"""Zero-shot product captioning on E2 embeddings (CapDec and DeCap), trained on texts only."""

from ..lazy import lazy_exports

# public name -> the module it lives in, imported when the name is first used
_EXPORTS = {
    "RECIPES": ".arguments",
    "CaptionerTrainingArguments": ".arguments",
    "CaptionerConfig": ".captioner",
    "CaptionerError": ".captioner",
    "E2Captioner": ".captioner",
    "CaptionedProduct": ".inference",
    "caption_catalog": ".inference",
    "caption_images": ".inference",
    "load_captioner": ".inference",
    "score_captions": ".inference",
    "attribute_accuracy": ".metrics",
    "caption_metrics": ".metrics",
    "train_captioner": ".training",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
