"""E2 (Easy Regional Contrastive Learning of Expressive Fashion Representations) for transformers.

Importing this package is light: its classes, and with them torch and transformers, are imported
when first used (`from e2_hf import E2CLIPModel`, `e2_hf.E2CLIPEmbedder`, `import e2_hf.modeling`),
so the `e2-hf` command line starts without them. Importing the classes registers E2 with the
transformers Auto classes, so that `AutoModel.from_pretrained(folder)` works without
`trust_remote_code` for locally installed code.
"""

from __future__ import annotations

from .lazy import lazy_exports

__version__ = "0.1.0"

# public name -> the module it lives in (the model's classes in e2_hf.modeling, whose import registers
# them with the Auto classes), imported when the name is first used
_EXPORTS = {
    **dict.fromkeys(
        [
            "E2CLIPConfig",
            "E2CLIPEmbedder",
            "E2CLIPImageEmbeddings",
            "E2CLIPImageProcessor",
            "E2CLIPModel",
            "E2CLIPOutput",
            "E2CLIPProcessor",
            "E2CLIPTextConfig",
            "E2CLIPVisionConfig",
            "build_product_text",
            "clip_image_processor",
        ],
        ".modeling",
    ),
    "from_clip": ".conversion.convert_clip_to_e2",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
