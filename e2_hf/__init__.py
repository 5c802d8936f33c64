"""E2 (Easy Regional Contrastive Learning of Expressive Fashion Representations) for transformers.

Importing this package is light: its classes, and with them torch and transformers, are imported
when first used (`from e2_hf import E2CLIPModel`, `e2_hf.E2CLIPEmbedder`, `import e2_hf.modeling`),
so the `e2-hf` command line starts without them. Importing the classes registers E2 with the
transformers Auto classes, so that `AutoModel.from_pretrained(folder)` works without
`trust_remote_code` for locally installed code.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# the public names, each in e2_hf.modeling (imported, and the Auto classes registered, on first use)
__all__ = [
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
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module(".modeling", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
