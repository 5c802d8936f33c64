"""E2 (Easy Regional Contrastive Learning of Expressive Fashion Representations) for transformers.

Importing this package registers E2 with the transformers Auto classes, so that
`AutoModel.from_pretrained(folder)` works without `trust_remote_code` for locally installed code.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
)

from .modeling import (
    E2CLIPConfig,
    E2CLIPEmbedder,
    E2CLIPImageEmbeddings,
    E2CLIPImageProcessor,
    E2CLIPModel,
    E2CLIPOutput,
    E2CLIPProcessor,
    E2CLIPTextConfig,
    E2CLIPVisionConfig,
    build_product_text,
    clip_image_processor,
)

__version__ = "0.1.0"


def _register_auto_classes() -> None:
    AutoConfig.register(E2CLIPConfig.model_type, E2CLIPConfig, exist_ok=True)
    AutoModel.register(E2CLIPConfig, E2CLIPModel, exist_ok=True)
    AutoModelForZeroShotImageClassification.register(E2CLIPConfig, E2CLIPModel, exist_ok=True)
    AutoImageProcessor.register(E2CLIPConfig, slow_image_processor_class=E2CLIPImageProcessor, exist_ok=True)
    AutoProcessor.register(E2CLIPConfig, E2CLIPProcessor, exist_ok=True)
    # Saving copies the code files and writes an auto_map, so checkpoints load with remote code.
    E2CLIPConfig.register_for_auto_class()
    E2CLIPModel.register_for_auto_class("AutoModel")


_register_auto_classes()

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
